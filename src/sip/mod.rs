//! Real calls over SIP: a fabric that places calls to phone numbers through trunks and to users
//! at their `sip_uri`, and takes calls to configured numbers, as `CONTRACT.md` ("Real calls over
//! SIP") describes.
//!
//! The fabric keeps one entry per SIP leg (by its participant id) with the leg's dialog, and one
//! task per leg that turns the dialog's progress ([`stack::Progress`]) into [`FabricEvent`]s.
//! Commands (ring, cancel, hang up, accept, refuse, redirect) arrive only once the change that
//! decided them is durable. A leg's dialog lives in memory only: after a restart the engine ends
//! the calls whose dialogs were lost (`Engine::end_lost_dialogs`).
//!
//! Each leg has its media (`media.rs`): prompts heard as G.711, recordings of what the party
//! said, keys both ways as RFC 4733 events, and the media timeout. A prompt's operation completes
//! when its last packet has left ([`FabricEvent::Played`]); recordings on the call clock.

pub mod codes;
pub mod media;
pub mod numbers;
pub mod rtp;
pub mod sdp;
pub mod stack;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::call::party_key;
use crate::domain::fabric::Listen;
use crate::domain::operation::{MediaEnd, results};
use crate::domain::{CallId, EndReason, PartyKind, Peer};
use crate::fabric::{AppRef, EventSink, FabricCommand, FabricEvent, LegRef};
use stack::{Dialog, Incoming, Invite, Progress, ProgressRx, SipStack};

/// `[sip]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipSettings {
    /// Where SIP listens, UDP and TCP (port 0 picks one).
    pub listen: String,
    /// No RTP for this long (not on hold) ends a call: BYE, and 410/301005 for the bot.
    pub media_timeout_secs: u64,
    /// No response at all to an INVITE for this long ends it: 408/500001 (phone targets).
    pub trunk_timeout_secs: u64,
    /// RFC 3261 T1 in milliseconds (500); 64·T1 bounds every transaction (how long a caller
    /// may take to acknowledge our answer). Tests shorten it.
    pub rtt_estimate_ms: u64,
    /// The UDP ports legs take for RTP, inclusive (both 0: any free port).
    pub rtp_port_min: u16,
    pub rtp_port_max: u16,
    pub trunks: Vec<TrunkConfig>,
    pub numbers: Vec<NumberConfig>,
}

impl Default for SipSettings {
    fn default() -> Self {
        SipSettings {
            listen: "127.0.0.1:5060".into(),
            media_timeout_secs: 30,
            trunk_timeout_secs: 10,
            rtt_estimate_ms: 500,
            rtp_port_min: 0,
            rtp_port_max: 0,
            trunks: vec![],
            numbers: vec![],
        }
    }
}

/// `[[sip.trunks]]`: where calls to phone numbers go.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    pub name: String,
    /// The peer that takes our INVITEs, `HOST:PORT`.
    pub address: String,
    /// The E.164 prefixes it carries (plain string prefixes, `+` included); empty: all.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Digest credentials for when it challenges.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

/// `[[sip.numbers]]`: an INVITE to this number rings this app.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberConfig {
    pub number: String,
    pub app_id: String,
}

/// An app that takes calls to a number: who it is, and where its incoming calls are notified.
#[derive(Clone, Debug)]
pub struct NumberApp {
    pub app: AppRef,
    pub incoming_call_uri: Option<String>,
}

/// Where an INVITE for a party goes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Route {
    /// The Request-URI.
    target: String,
    destination: SocketAddr,
    credential: Option<(String, String)>,
}

/// How far a leg has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Our INVITE rings, or a caller waits for the bot.
    Ringing,
    /// Answered (or accepted, for a caller).
    Up,
    /// We ended it (CANCEL, BYE, a refusal): what the dialog reports now is not news.
    Ending,
}

struct LegEntry {
    kind: PartyKind,
    dialog: Arc<dyn Dialog>,
    phase: Phase,
    /// The party called us (we answer its INVITE).
    caller: bool,
    /// The caller's offer, answered when the bot answers.
    offer: Vec<u8>,
    local: sdp::Local,
    media: media::Media,
}

pub struct SipFabric {
    stack: Arc<dyn SipStack>,
    settings: SipSettings,
    /// Parties reached over SIP (`[[parties]]` with `sip_uri`), by party key.
    users: HashMap<String, String>,
    /// Incoming numbers (E.164) and their apps.
    numbers: HashMap<String, NumberApp>,
    legs: Mutex<HashMap<Uuid, LegEntry>>,
    /// Transfer targets we asked a party to call (REFER), by the target's leg: the party's leg.
    referrals: Mutex<HashMap<Uuid, LegRef>>,
    sink: OnceLock<EventSink>,
    /// INVITEs that arrive before the engine is connected wait here (ringing at the caller's
    /// side only once taken).
    incoming: Mutex<Option<mpsc::UnboundedReceiver<Incoming>>>,
    /// Where prompts' audio comes from (the same fetcher, limits and cache as their durations).
    prompts: Arc<crate::media::prompts::Prompts>,
    http: reqwest::Client,
    /// Where what legs record goes (served at the operations' `recordingLocation`).
    recordings: Arc<crate::media::recordings::Archive>,
    stop: CancellationToken,
}

/// What a SIP fabric's media needs from the server: the prompt fetcher, the HTTP client it uses,
/// and the store of what legs record.
pub type MediaParts = (
    Arc<crate::media::prompts::Prompts>,
    reqwest::Client,
    Arc<crate::media::recordings::Archive>,
);

impl SipFabric {
    /// Starts SIP on `settings.listen`. `users` are the parties with a `sip_uri` (party id,
    /// URI); `numbers` the apps behind `[[sip.numbers]]`. Nothing is reported until
    /// [`SipFabric::connect`].
    pub async fn start(
        settings: SipSettings,
        users: Vec<(String, String)>,
        numbers: HashMap<String, NumberApp>,
        (prompts, http, recordings): MediaParts,
        stop: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let listen: SocketAddr = settings
            .listen
            .parse()
            .map_err(|e| anyhow::anyhow!("[sip] listen = {:?}: {e}", settings.listen))?;
        let options = stack::Options {
            t1: Duration::from_millis(settings.rtt_estimate_ms.max(1)),
            user_agent: format!("Switchboard/{}", env!("CARGO_PKG_VERSION")),
            call_id_domain: "switchboard".into(),
        };
        let (stack, incoming) = stack::Rsip::bind(listen, options, stop.clone()).await?;
        let fabric = Arc::new(SipFabric {
            stack,
            settings,
            users: users
                .into_iter()
                .map(|(id, uri)| (party_key(&id), uri))
                .collect(),
            numbers,
            legs: Mutex::default(),
            referrals: Mutex::default(),
            sink: OnceLock::new(),
            incoming: Mutex::new(Some(incoming)),
            prompts,
            http,
            recordings,
            stop,
        });
        Ok(fabric)
    }

    /// The address peers reach SIP at (in Via, Contact and SDP).
    pub fn local_addr(&self) -> SocketAddr {
        self.stack.local_addr()
    }

    /// Where SIP listens, UDP and TCP, as configured (port 0 resolved).
    pub fn listen_addr(&self) -> SocketAddr {
        self.stack.listen_addr()
    }

    /// Gives the fabric the engine's event sink; calls are taken from then on.
    pub fn connect(self: &Arc<Self>, sink: EventSink) {
        let _ = self.sink.set(sink);
        if let Some(incoming) = self.incoming.lock().expect("incoming lock").take() {
            tokio::spawn(self.clone().take_calls(incoming));
        }
    }

    fn report(&self, event: FabricEvent) {
        match self.sink.get() {
            Some(sink) => sink(event),
            None => tracing::warn!("SIP event before the engine is connected: {event:?}"),
        }
    }

    /// How many SIP legs are live (their dialogs are in memory).
    pub fn live_legs(&self) -> usize {
        self.legs.lock().expect("legs lock").len()
    }

    /// Whether this leg is one of ours (a dialog, or a transfer target we referred).
    pub fn has_leg(&self, leg: Uuid) -> bool {
        self.legs.lock().expect("legs lock").contains_key(&leg)
            || self
                .referrals
                .lock()
                .expect("referrals lock")
                .contains_key(&leg)
    }

    /// Whether a party is reached over SIP: a user with a `sip_uri`, or a phone number a trunk
    /// carries. (The router gives simulated phone parties precedence.)
    pub fn reaches(&self, peer: &Peer) -> bool {
        self.route(peer).is_some()
    }

    /// Whether the party is a user with a `sip_uri`.
    pub fn is_sip_user(&self, peer: &Peer) -> bool {
        self.users.contains_key(&party_key(&peer.id))
    }

    fn route(&self, peer: &Peer) -> Option<Route> {
        if let Some(uri) = self.users.get(&party_key(&peer.id)) {
            return Some(Route {
                target: uri.clone(),
                destination: uri_address(uri)?,
                credential: None,
            });
        }
        let number = numbers::e164(&peer.id).filter(|_| peer.kind == PartyKind::Phone)?;
        let trunk = self.settings.trunks.iter().find(|t| {
            t.prefixes.is_empty() || t.prefixes.iter().any(|p| number.starts_with(p.as_str()))
        })?;
        let destination = trunk.address.parse().ok()?;
        Some(Route {
            target: format!("sip:{number}@{destination};user=phone"),
            destination,
            credential: trunk.username.clone().zip(trunk.password.clone()),
        })
    }

    /// Carries out commands for legs of ours (or dials parties we reach).
    pub fn execute(self: &Arc<Self>, commands: Vec<FabricCommand>) {
        for c in commands {
            match c {
                FabricCommand::Dial {
                    leg,
                    peer,
                    via: Some(via),
                } if self.legs.lock().expect("legs lock").contains_key(&via.leg) => {
                    tokio::spawn(self.clone().refer(via, leg, peer));
                }
                FabricCommand::Dial { leg, peer, .. } => match self.route(&peer) {
                    Some(route) => {
                        tokio::spawn(self.clone().dial(leg, peer, route));
                    }
                    None => self.report(FabricEvent::Failed(leg, EndReason::NOT_FOUND)),
                },
                FabricCommand::Attach { .. } => {}
                FabricCommand::Accept { leg, .. } => self.accept(leg),
                FabricCommand::Cancel { leg, .. } if self.forget_referral(leg) => {}
                FabricCommand::Cancel { leg, reason, .. } => self.end(leg, Some(reason), None),
                FabricCommand::Redirect { leg, targets, .. } => {
                    let contact = targets.first().map(|t| self.contact_for(t));
                    self.end(leg, Some(EndReason::REDIRECTED), contact)
                }
                FabricCommand::HangUp { leg, .. } => self.end(leg, None, None),
                FabricCommand::SendDtmf {
                    leg, keys, gap_ms, ..
                } => self.with_media(leg, |m| m.send_dtmf(&keys, gap_ms)),
                FabricCommand::Play {
                    leg,
                    call,
                    op_id,
                    prompts,
                    looped,
                    muted,
                    ..
                } => self.queue(leg, (op_id, call), prompts, looped, None, muted),
                FabricCommand::Record {
                    leg,
                    call,
                    op_id,
                    prompts,
                    listen,
                    muted,
                    ..
                } => self.queue(leg, (op_id, call), prompts, false, Some(listen), muted),
                FabricCommand::Mute {
                    leg, call, muted, ..
                } => self.with_media(leg, |m| m.mute(call, muted)),
                FabricCommand::HoldMusic {
                    leg, on, prompt, ..
                } => self.hold_music(leg, on, prompt),
                FabricCommand::StopMedia { leg, op_ids, .. } => {
                    self.with_media(leg, |m| m.stop_ops(op_ids))
                }
            }
        }
    }

    /// The Contact a redirect to `target` names: where we would send it ourselves, else its
    /// `tel:` number or a SIP address at our host.
    fn contact_for(&self, target: &Peer) -> String {
        if let Some(route) = self.route(target) {
            return route.target;
        }
        match numbers::e164(&target.id) {
            Some(n) if target.kind == PartyKind::Phone => format!("tel:{n}"),
            _ => format!("sip:{}@{}", target.id, self.local_addr()),
        }
    }

    fn accept(&self, leg: LegRef) {
        let mut legs = self.legs.lock().expect("legs lock");
        let Some(e) = legs.get_mut(&leg.leg).filter(|e| e.phase == Phase::Ringing) else {
            return;
        };
        let offer = sdp::parse(&e.offer);
        let answer = match &offer {
            Some(offer) => e.local.answer(offer),
            // No offer in the INVITE: ours goes in the 200 (the answer would come in the ACK).
            None => Some(e.local.offer()),
        };
        if let Some(o) = &offer {
            e.media.start(o);
        }
        match answer {
            Some(sdp) => {
                e.dialog.accept(sdp);
                e.phase = Phase::Up;
            }
            None => {
                // Checked when the INVITE came: cannot happen, but never answer without a codec.
                e.dialog.refuse(488, None);
                e.phase = Phase::Ending;
            }
        }
    }

    /// Ends a leg of ours: a ringing caller is refused (`reason`, `contact` for a redirect),
    /// anything else is cancelled or hung up.
    fn end(&self, leg: LegRef, reason: Option<EndReason>, contact: Option<String>) {
        let mut legs = self.legs.lock().expect("legs lock");
        let Some(e) = legs.get_mut(&leg.leg).filter(|e| e.phase != Phase::Ending) else {
            return;
        };
        let (caller_waiting, dialog) = (e.phase == Phase::Ringing && e.caller, e.dialog.clone());
        e.phase = Phase::Ending;
        drop(legs);
        if caller_waiting {
            let status = match (&contact, reason) {
                (Some(_), _) => 302,
                (None, Some(r)) => codes::refusal_status(r),
                (None, None) => 480,
            };
            dialog.refuse(status, contact);
        } else {
            tokio::spawn(async move { dialog.hang_up().await });
        }
    }

    /// A transfer: asks the party on `via` to call `target` itself (REFER, RFC 3515). Its
    /// NOTIFYs report the new call's progress on the target's leg (`follow`).
    async fn refer(self: Arc<Self>, via: LegRef, leg: LegRef, target: Peer) {
        let Some(dialog) = self
            .legs
            .lock()
            .expect("legs lock")
            .get(&via.leg)
            .filter(|e| e.phase == Phase::Up)
            .map(|e| e.dialog.clone())
        else {
            return self.report(FabricEvent::Failed(leg, EndReason::TRANSFER_FAILED));
        };
        self.referrals
            .lock()
            .expect("referrals lock")
            .insert(leg.leg, via);
        let status = dialog.refer(self.contact_for(&target)).await;
        if status >= 300 && self.forget_referral(leg) {
            tracing::info!("SIP REFER refused with {status}");
            self.report(FabricEvent::Failed(leg, EndReason::TRANSFER_FAILED));
        }
    }

    /// Forgets a transfer target; whether it was one.
    fn forget_referral(&self, leg: LegRef) -> bool {
        self.referrals
            .lock()
            .expect("referrals lock")
            .remove(&leg.leg)
            .is_some()
    }

    /// A NOTIFY about a transfer the party on `via` makes: a final success connects the target
    /// (and we leave the call: BYE), a failure puts the call back.
    async fn transfer_progress(&self, via: LegRef, status: u16, done: bool) {
        let target = {
            let referrals = self.referrals.lock().expect("referrals lock");
            referrals
                .iter()
                .find(|(_, v)| **v == via)
                .map(|(t, _)| LegRef {
                    conversation: via.conversation,
                    leg: *t,
                })
        };
        let Some(target) = target else { return };
        match status {
            100..=199 if !done => {}
            200..=299 => {
                self.forget_referral(target);
                self.report(FabricEvent::Answered(target));
                if let Some((_, dialog)) = self.take_phase(via, Phase::Up, Phase::Ending) {
                    dialog.hang_up().await;
                    self.report(FabricEvent::HungUp(via));
                }
            }
            _ => {
                self.forget_referral(target);
                tracing::info!("SIP transfer failed: the transferee reported {status}");
                self.report(FabricEvent::Failed(target, EndReason::TRANSFER_FAILED));
            }
        }
    }

    /// Queues a bot's media operation on a leg: its prompts (fetched meanwhile, each in its
    /// turn), and with `listen` a recording after them. The operation completes once the
    /// leg's media says it is over ([`SipFabric::heard`]).
    fn queue(
        self: &Arc<Self>,
        leg: LegRef,
        (op, call): (String, CallId),
        prompts: Vec<String>,
        looped: bool,
        listen: Option<Listen>,
        muted: bool,
    ) {
        let mut fetched = Vec::with_capacity(prompts.len());
        for uri in prompts {
            let (tx, rx) = tokio::sync::oneshot::channel();
            fetched.push(rx);
            let fabric = self.clone();
            tokio::spawn(async move {
                let audio = fabric.prompts.audio(&fabric.http, &uri).await.map_err(|e| {
                    tracing::info!(
                        "prompt {} cannot be played on a SIP leg: {e}",
                        crate::media::prompts::redact(&uri)
                    );
                    e.failure().unwrap_or(results::PROMPT_UNAVAILABLE)
                });
                let _ = tx.send(audio);
            });
        }
        // One line records an operation (in a call with several SIP parties, the first asked):
        // the others hear its prompts, and their end is not the operation's.
        let records = listen.is_some();
        let listen = listen.and_then(|l| Some((l, self.recordings.start(&op)?)));
        let report = !records || listen.is_some();
        self.with_media(leg, |m| {
            m.queue(media::Queued {
                op,
                call,
                report,
                prompts: fetched,
                looped,
                listen,
                muted,
            })
        });
    }

    /// Starts or stops hold music on a leg: the bot's prompt once fetched, else (or if it
    /// cannot be had) the media's own.
    fn hold_music(self: &Arc<Self>, leg: LegRef, on: bool, prompt: Option<String>) {
        let mut ticket = None;
        self.with_media(leg, |m| ticket = Some(m.hold_ticket()));
        let Some(ticket) = ticket else { return };
        let Some(uri) = prompt.filter(|_| on) else {
            return self.with_media(leg, |m| m.hold_music(ticket, on, None));
        };
        let fabric = self.clone();
        tokio::spawn(async move {
            let audio = match fabric.prompts.audio(&fabric.http, &uri).await {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::info!(
                        "hold music {} cannot be played on a SIP leg: {e}",
                        crate::media::prompts::redact(&uri)
                    );
                    None
                }
            };
            fabric.with_media(leg, |m| m.hold_music(ticket, true, audio));
        });
    }

    /// Binds a leg's RTP port; what its media hears comes back to [`SipFabric::heard`].
    async fn bind_media(
        self: &Arc<Self>,
        ip: IpAddr,
        leg: LegRef,
    ) -> std::io::Result<media::Media> {
        let fabric = Arc::downgrade(self);
        let on_heard: media::OnHeard = Arc::new(move |h| {
            if let Some(f) = fabric.upgrade() {
                tokio::spawn(async move { f.heard(leg, h).await });
            }
        });
        let timeout = Duration::from_secs(self.settings.media_timeout_secs.max(1));
        let ports = (self.settings.rtp_port_min, self.settings.rtp_port_max);
        media::Media::bind(ip, ports, timeout, on_heard, &self.stop).await
    }

    /// What a leg's media heard: a key pressed, or silence past the media timeout (BYE and
    /// 410/301005).
    async fn heard(&self, leg: LegRef, heard: media::Heard) {
        match heard {
            media::Heard::Done(op, end) => {
                if matches!(end, MediaEnd::Recorded { .. }) {
                    let recordings = self.recordings.clone();
                    let finished = op.clone();
                    tokio::task::spawn_blocking(move || recordings.finish(&finished));
                }
                self.report(FabricEvent::MediaDone(leg, op, end))
            }
            media::Heard::Key(k) => {
                if self.phase(leg) == Some(Phase::Up) {
                    self.report(FabricEvent::Tones(leg, k.to_string()));
                }
            }
            media::Heard::Silent => {
                if let Some((_, dialog)) = self.take_phase(leg, Phase::Up, Phase::Ending) {
                    tracing::info!("no RTP on a SIP leg for the media timeout: BYE");
                    self.report(FabricEvent::Failed(leg, EndReason::MEDIA_FAILURE));
                    dialog.hang_up().await;
                }
            }
        }
    }

    /// Places a call to `peer` on `leg` and reports how it goes.
    async fn dial(self: Arc<Self>, leg: LegRef, peer: Peer, route: Route) {
        let ip = self.local_addr().ip();
        let Ok(media) = self.bind_media(ip, leg).await else {
            return self.report(FabricEvent::Failed(leg, EndReason::new(500, 560500)));
        };
        let mut local = sdp::Local::new(ip, media.port);
        let invite = Invite {
            target: route.target.clone(),
            destination: route.destination,
            from_user: "switchboard".into(),
            from_display: Some("Switchboard".into()),
            offer: local.offer(),
            credential: route.credential.clone(),
        };
        let (dialog, progress) = match self.stack.invite(invite) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("SIP INVITE to {} failed: {e}", route.target);
                return self.report(FabricEvent::Failed(leg, codes::failure(500, peer.kind)));
            }
        };
        self.legs.lock().expect("legs lock").insert(
            leg.leg,
            LegEntry {
                kind: peer.kind_for_codes(self.is_sip_user(&peer)),
                dialog,
                phase: Phase::Ringing,
                caller: false,
                offer: vec![],
                local,
                media,
            },
        );
        self.follow(leg, progress, true).await;
    }

    /// Takes incoming calls until the stack stops.
    async fn take_calls(self: Arc<Self>, mut incoming: mpsc::UnboundedReceiver<Incoming>) {
        while let Some(call) = incoming.recv().await {
            tokio::spawn(self.clone().answer_call(call));
        }
    }

    /// An INVITE came: to a configured number, it rings the app; otherwise 404.
    async fn answer_call(self: Arc<Self>, call: Incoming) {
        let Incoming {
            to_user,
            from_user,
            from_display,
            offer,
            dialog,
            progress,
        } = call;
        let Some(app) = numbers::e164(&to_user)
            .and_then(|n| self.numbers.get(&n))
            .cloned()
        else {
            tracing::info!("SIP INVITE to {to_user:?}: no [[sip.numbers]] entry, 404");
            return dialog.refuse(404, None);
        };
        if !offer.is_empty() && sdp::parse(&offer).and_then(|o| o.codec).is_none() {
            tracing::info!("SIP INVITE to {to_user}: no codec in common, 488");
            return dialog.refuse(488, None);
        }
        let Some(callback_uri) = app.incoming_call_uri.clone() else {
            tracing::warn!(
                "SIP INVITE to {to_user}: app {} has no incoming_call_uri, 480",
                app.app.app_id
            );
            return dialog.refuse(480, None);
        };
        let ip = self.local_addr().ip();
        let leg = LegRef {
            conversation: CallId::new(),
            leg: Uuid::new_v4(),
        };
        let Ok(media) = self.bind_media(ip, leg).await else {
            return dialog.refuse(503, None);
        };
        dialog.ringing();
        let from = self.caller(&from_user);
        self.legs.lock().expect("legs lock").insert(
            leg.leg,
            LegEntry {
                kind: from.kind_for_codes(self.is_sip_user(&from)),
                dialog,
                phase: Phase::Ringing,
                caller: true,
                offer,
                local: sdp::Local::new(ip, media.port),
                media,
            },
        );
        self.report(FabricEvent::Incoming {
            call: leg.conversation,
            leg: leg.leg,
            dialog: true,
            from,
            display_name: from_display,
            app: app.app,
            callback_uri,
        });
        self.follow(leg, progress, false).await;
    }

    /// Who calls: a configured SIP user by its address, else a phone number.
    fn caller(&self, from_user: &str) -> Peer {
        let user = self
            .users
            .iter()
            .find(|(_, uri)| numbers::uri_user(uri) == from_user);
        match user {
            Some((id, _)) => Peer {
                id: id.clone(),
                kind: PartyKind::User,
            },
            None => Peer {
                id: numbers::e164(from_user).unwrap_or_else(|| from_user.to_string()),
                kind: PartyKind::Phone,
            },
        }
    }

    /// Reports a leg's progress until its dialog is over, then forgets the leg.
    async fn follow(&self, leg: LegRef, mut progress: ProgressRx, outgoing: bool) {
        let trunk_timeout = Duration::from_secs(self.settings.trunk_timeout_secs.max(1));
        let no_response = tokio::time::sleep(trunk_timeout);
        tokio::pin!(no_response);
        let mut responded = !outgoing;
        loop {
            let next = tokio::select! {
                p = progress.recv() => p,
                _ = &mut no_response, if !responded => {
                    responded = true;
                    // The INVITE is given up on: the stack sends CANCEL once a provisional
                    // response comes, if one ever does (RFC 3261 §9.1), and retransmits the
                    // INVITE until then.
                    if let Some((kind, dialog)) = self.take_phase(leg, Phase::Ringing, Phase::Ending) {
                        self.report(FabricEvent::Failed(leg, codes::no_response(kind)));
                        dialog.hang_up().await;
                    }
                    continue;
                }
            };
            let Some(next) = next else { break };
            match next {
                Progress::Provisional(_) => responded = true,
                Progress::Answered(answer) => {
                    let remote = sdp::parse(&answer);
                    let codec = remote.as_ref().and_then(|a| a.codec);
                    if let Some(r) = remote.as_ref().filter(|_| codec.is_some()) {
                        self.with_media(leg, |m| m.start(r));
                    }
                    match self.take_phase(leg, Phase::Ringing, Phase::Up) {
                        Some((kind, dialog)) if codec.is_none() => {
                            self.set_phase(leg, Phase::Ending);
                            dialog.hang_up().await;
                            self.report(FabricEvent::Failed(leg, codes::no_common_codec(kind)));
                        }
                        Some(_) => self.report(FabricEvent::Answered(leg)),
                        // We gave up on it meanwhile (the bot hung up, the ringing or the
                        // trunk timed out): a late answer is ended at once. (After a CANCEL
                        // the stack would BYE it itself; after the trunk timeout nothing was
                        // cancelled.)
                        None => {
                            if let Some(dialog) = self.dialog(leg) {
                                dialog.hang_up().await;
                            }
                        }
                    }
                }
                Progress::Refused(status) => {
                    if let Some((kind, _)) = self.take_phase(leg, Phase::Ringing, Phase::Ending) {
                        self.report(FabricEvent::Failed(leg, codes::failure(status, kind)));
                    }
                    break;
                }
                Progress::Acknowledged => {
                    if self.phase(leg) == Some(Phase::Up) {
                        self.report(FabricEvent::Answered(leg));
                    }
                }
                Progress::NotAcknowledged => {
                    if self.phase(leg) == Some(Phase::Up) {
                        self.report(FabricEvent::Failed(leg, EndReason::NOT_ACKNOWLEDGED));
                    }
                    break;
                }
                Progress::Cancelled => {
                    // Also when the bot's answer crossed the CANCEL: the caller got 487 and
                    // never our 200.
                    if self.phase(leg).is_some_and(|p| p != Phase::Ending) {
                        self.report(FabricEvent::Failed(leg, codes::CALLER_CANCELLED));
                    }
                    break;
                }
                Progress::HungUp => {
                    if self.phase(leg) != Some(Phase::Ending) {
                        self.report(FabricEvent::HungUp(leg));
                    }
                    break;
                }
                Progress::Reoffer(offer, reply) => self.reoffer(leg, &offer, reply).await,
                // Keys by INFO count only where no telephone-event was negotiated: a phone
                // that sends both would otherwise press every key twice.
                Progress::InfoKey(k) => {
                    let events = self
                        .legs
                        .lock()
                        .expect("legs lock")
                        .get(&leg.leg)
                        .map(|e| e.media.has_telephone_event());
                    if events == Some(false) && self.phase(leg) == Some(Phase::Up) {
                        self.with_media(leg, |m| m.pressed(k));
                        self.report(FabricEvent::Tones(leg, k.to_string()));
                    }
                }
                Progress::Transfer { status, done } => {
                    self.transfer_progress(leg, status, done).await
                }
                Progress::Ended => {
                    // The dialog ended without us asking (the stack gave up on an ACK to our
                    // answer of a re-INVITE, and sent BYE): the party is gone.
                    if self.phase(leg) == Some(Phase::Up) {
                        self.report(FabricEvent::HungUp(leg));
                    }
                    break;
                }
            }
        }
        self.legs.lock().expect("legs lock").remove(&leg.leg);
    }

    /// A re-INVITE or UPDATE: answered with the direction mirrored (RFC 3264 §6.1).
    async fn reoffer(&self, leg: LegRef, offer: &[u8], reply: stack::Reply) {
        let held = sdp::parse(offer).map(|o| o.direction.is_hold());
        let answer =
            self.legs
                .lock()
                .expect("legs lock")
                .get_mut(&leg.leg)
                .map(|e| match sdp::parse(offer) {
                    Some(o) => {
                        e.media.update(&o);
                        e.local.answer(&o)
                    }
                    // An offerless re-INVITE: our offer goes in the 200.
                    None if offer.is_empty() => Some(e.local.offer()),
                    None => None,
                });
        match answer {
            None => reply.send(481, None).await,
            Some(Some(sdp)) => {
                reply.send(200, Some(sdp)).await;
                if let Some(on) = held {
                    self.report(FabricEvent::Held(leg, on));
                }
            }
            Some(None) => reply.send(488, None).await,
        }
    }

    fn with_media(&self, leg: LegRef, f: impl FnOnce(&media::Media)) {
        if let Some(e) = self.legs.lock().expect("legs lock").get(&leg.leg) {
            f(&e.media);
        }
    }

    fn dialog(&self, leg: LegRef) -> Option<Arc<dyn Dialog>> {
        let legs = self.legs.lock().expect("legs lock");
        legs.get(&leg.leg).map(|e| e.dialog.clone())
    }

    fn phase(&self, leg: LegRef) -> Option<Phase> {
        self.legs
            .lock()
            .expect("legs lock")
            .get(&leg.leg)
            .map(|e| e.phase)
    }

    fn set_phase(&self, leg: LegRef, phase: Phase) {
        if let Some(e) = self.legs.lock().expect("legs lock").get_mut(&leg.leg) {
            e.phase = phase;
        }
    }

    /// Moves the leg from `from` to `to`; `None` if it was not in `from`.
    fn take_phase(
        &self,
        leg: LegRef,
        from: Phase,
        to: Phase,
    ) -> Option<(PartyKind, Arc<dyn Dialog>)> {
        let mut legs = self.legs.lock().expect("legs lock");
        let e = legs.get_mut(&leg.leg).filter(|e| e.phase == from)?;
        e.phase = to;
        Some((e.kind, e.dialog.clone()))
    }
}

trait CodesKind {
    fn kind_for_codes(&self, sip_user: bool) -> PartyKind;
}

impl CodesKind for Peer {
    /// Which table of end reasons a party's failures use: a user over SIP uses the simulated
    /// parties' codes, anything else the PSTN's.
    fn kind_for_codes(&self, sip_user: bool) -> PartyKind {
        if sip_user {
            PartyKind::User
        } else {
            PartyKind::Phone
        }
    }
}

/// The host and port of a `sip:` URI (port 5060 if it names none); `None` if the host is not an
/// IP address.
pub fn uri_address(uri: &str) -> Option<SocketAddr> {
    let uri = uri.trim().trim_start_matches('<').trim_end_matches('>');
    let rest = uri
        .strip_prefix("sips:")
        .or_else(|| uri.strip_prefix("sip:"))?;
    let host = rest.rsplit('@').next()?.split(';').next()?;
    if let Ok(a) = host.parse::<SocketAddr>() {
        return Some(a);
    }
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    Some(SocketAddr::new(ip, 5060))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sip_uri_names_its_address() {
        assert_eq!(
            uri_address("sip:alice@127.0.0.1:5090"),
            Some("127.0.0.1:5090".parse().unwrap())
        );
        assert_eq!(
            uri_address("<sip:bob@10.0.0.2;transport=udp>"),
            Some("10.0.0.2:5060".parse().unwrap())
        );
        assert_eq!(uri_address("sip:carol@example.com"), None);
    }
}
