//! The SIP stack behind Switchboard's own types: the only module that knows rsipstack (pinned
//! exactly in Cargo.toml, because it releases often). The fabric sees a [`SipStack`] that places
//! INVITEs and hands over incoming ones, a [`Dialog`] per call, and each call's progress as
//! [`Progress`] events in order.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::{DialogState, TerminatedReason, TransactionHandle};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::{self as rsip, HeadersExt, Method, SipMessage, StatusCode, ToTypedHeader};
use rsipstack::transaction::endpoint::{EndpointOption, MessageInspector};
use rsipstack::transaction::{Endpoint, EndpointBuilder, TransactionReceiver};
use rsipstack::transport::tcp_listener::TcpListenerConnection;
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{SipAddr, TransportLayer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What happens on one call's dialog, in order.
#[derive(Debug)]
pub enum Progress {
    /// The far end sent a provisional response (100, 180, 183) to our INVITE.
    Provisional(u16),
    /// The far end answered our INVITE (2xx, which the stack acknowledged), with its SDP.
    Answered(Vec<u8>),
    /// Our INVITE ended with this final status (408 when the stack gave up waiting).
    Refused(u16),
    /// The caller acknowledged our 200 OK.
    Acknowledged,
    /// The caller never acknowledged our 200 OK (the stack sent BYE).
    NotAcknowledged,
    /// The caller cancelled before we answered (the stack answered 487).
    Cancelled,
    /// The far end hung up (BYE).
    HungUp,
    /// The far end offers a new session description (re-INVITE or UPDATE): answer it.
    Reoffer(Vec<u8>, Reply),
    /// The far end pressed a key, told by SIP INFO (`application/dtmf-relay`).
    InfoKey(char),
    /// The far end reports how the call we referred it to goes (a NOTIFY's sipfrag status),
    /// and whether that was its last report.
    Transfer { status: u16, done: bool },
    /// The dialog is over for any other reason (we ended it).
    Ended,
}

/// How a re-INVITE or UPDATE is answered.
#[derive(Debug)]
pub struct Reply(TransactionHandle);

impl Reply {
    /// Answers `status`, with an SDP body if given.
    pub async fn send(self, status: u16, sdp: Option<Vec<u8>>) {
        let headers = sdp.as_ref().map(|_| vec![content_type_sdp()]);
        let _ = self.0.respond(StatusCode::from(status), headers, sdp).await;
    }
}

/// A call's progress, as [`Progress`] events.
pub type ProgressRx = mpsc::UnboundedReceiver<Progress>;

/// An INVITE to place.
#[derive(Clone, Debug)]
pub struct Invite {
    /// The Request-URI and To: `sip:+15550100@trunk` or a user's `sip_uri`.
    pub target: String,
    /// Where to send it (the trunk, or the host of `sip_uri`).
    pub destination: SocketAddr,
    /// Our From user (the bot's number or name).
    pub from_user: String,
    pub from_display: Option<String>,
    pub offer: Vec<u8>,
    /// Digest credentials for a challenging trunk.
    pub credential: Option<(String, String)>,
}

/// An INVITE that arrived (not within a dialog).
pub struct Incoming {
    /// The Request-URI's user (the number dialled).
    pub to_user: String,
    /// The From URI's user (the caller's number or name) and display name.
    pub from_user: String,
    pub from_display: Option<String>,
    pub offer: Vec<u8>,
    pub dialog: Arc<dyn Dialog>,
    pub progress: ProgressRx,
}

/// One call's dialog, on either side.
#[async_trait]
pub trait Dialog: Send + Sync {
    /// 180 Ringing to a caller.
    fn ringing(&self);
    /// 200 OK with our SDP answer to a caller.
    fn accept(&self, sdp: Vec<u8>);
    /// A final refusal to a caller; `contact` is the target of a redirect (3xx).
    fn refuse(&self, status: u16, contact: Option<String>);
    /// Ends the call: CANCEL while our INVITE rings, BYE once answered.
    async fn hang_up(&self);
    /// Asks the far end to call `target` (REFER); its response's status (408 with none).
    async fn refer(&self, target: String) -> u16;
}

/// A SIP user agent that places and receives calls.
pub trait SipStack: Send + Sync + 'static {
    /// The address peers reach it at (Via, Contact, SDP).
    fn local_addr(&self) -> SocketAddr;
    /// The address it listens on, UDP and TCP, as configured (port 0 resolved).
    fn listen_addr(&self) -> SocketAddr;
    /// Sends an INVITE; its progress comes on the receiver.
    fn invite(&self, invite: Invite) -> Result<(Arc<dyn Dialog>, ProgressRx), String>;
}

/// Timers and names the stack uses.
#[derive(Clone, Debug)]
pub struct Options {
    /// RFC 3261 T1 (500 ms); 64·T1 bounds every transaction.
    pub t1: Duration,
    pub user_agent: String,
    /// The domain our Call-IDs end with.
    pub call_id_domain: String,
}

/// rsipstack: UDP and TCP on one port, a dialog layer, and the loop that routes what arrives.
pub struct Rsip {
    endpoint: Endpoint,
    layer: Arc<DialogLayer>,
    addr: SocketAddr,
    /// The address it listens on, as configured (port 0 resolved).
    bound: SocketAddr,
    redirects: Arc<Redirects>,
    /// 64·T1: how long a transaction lives.
    t1x64: Duration,
}

impl std::fmt::Debug for Rsip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rsip").field("addr", &self.addr).finish()
    }
}

/// Contact targets of redirects on their way out, by Call-ID: rsipstack's reject cannot carry a
/// Contact, so the outgoing 3xx gets it on its way out ([`MessageInspector`]).
#[derive(Default)]
struct Redirects(Mutex<HashMap<String, String>>);

impl MessageInspector for Redirects {
    fn before_send(&self, mut msg: SipMessage, _: Option<&SipAddr>) -> SipMessage {
        if let SipMessage::Response(resp) = &mut msg
            && resp.status_code.kind() == rsip::StatusCodeKind::Redirection
            && let Ok(call_id) = resp.call_id_header().map(|c| c.value().to_string())
            && let Some(contact) = self.0.lock().expect("redirects lock").get(&call_id)
        {
            // The redirect's target replaces our own Contact (RFC 3261 §21.3).
            resp.headers
                .retain(|h| !matches!(h, rsip::Header::Contact(_)));
            resp.headers
                .push(rsip::Header::Contact(format!("<{contact}>").into()));
        }
        msg
    }

    fn after_received(&self, msg: SipMessage, _: Option<&SipAddr>) -> SipMessage {
        msg
    }
}

fn content_type_sdp() -> rsip::Header {
    rsip::Header::ContentType("application/sdp".into())
}

impl Rsip {
    /// Binds UDP and TCP on `listen` (port 0: a free port, the same for both) and starts
    /// serving until `stop`. Incoming calls come on the receiver.
    pub async fn bind(
        listen: SocketAddr,
        options: Options,
        stop: CancellationToken,
    ) -> anyhow::Result<(Arc<Rsip>, mpsc::UnboundedReceiver<Incoming>)> {
        let transport = TransportLayer::new(stop.child_token());
        let (udp, addr) = bind_udp_and_tcp(listen, &stop).await?;
        // Bound as asked (an unspecified address listens on every interface); `addr` is the
        // address peers reach us at, for Via, Contact and SDP.
        let bound = SocketAddr::new(listen.ip(), addr.port());
        transport.add_transport(udp.into());
        let tcp = TcpListenerConnection::new(bound, None)
            .await
            .map_err(|e| anyhow::anyhow!("SIP over TCP on {bound}: {e}"))?;
        transport.add_transport(tcp.into());
        let redirects = Arc::new(Redirects::default());
        let endpoint = EndpointBuilder::new()
            .with_cancel_token(stop.child_token())
            .with_transport_layer(transport)
            .with_user_agent(&options.user_agent)
            .with_inspector(Box::new(InspectorRef(redirects.clone())))
            .with_option(EndpointOption {
                t1: options.t1,
                t1x64: options.t1 * 64,
                callid_suffix: Some(options.call_id_domain.clone()),
                ..EndpointOption::default()
            })
            .build();
        let incoming_tx = endpoint
            .incoming_transactions()
            .map_err(|e| anyhow::anyhow!("SIP endpoint: {e}"))?;
        let layer = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        let rsip = Arc::new(Rsip {
            endpoint,
            layer,
            addr,
            bound,
            redirects,
            t1x64: options.t1 * 64,
        });
        let (calls, calls_rx) = mpsc::unbounded_channel();
        let serving = rsip.clone();
        let stopping = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = serving.endpoint.serve() => {}
                _ = stopping.cancelled() => {}
            }
            serving.endpoint.shutdown();
        });
        tokio::spawn(rsip.clone().route(incoming_tx, calls, stop));
        Ok((rsip, calls_rx))
    }

    /// Routes every request that is not part of a transaction already: in-dialog requests to
    /// their dialog, new INVITEs to the fabric, OPTIONS answered, anything else refused.
    async fn route(
        self: Arc<Self>,
        mut incoming: TransactionReceiver,
        calls: mpsc::UnboundedSender<Incoming>,
        stop: CancellationToken,
    ) {
        loop {
            let mut tx = tokio::select! {
                _ = stop.cancelled() => return,
                next = incoming.recv() => match next {
                    Some(tx) => tx,
                    None => return,
                },
            };
            let in_dialog = tx
                .original
                .to_header()
                .ok()
                .and_then(|t| t.tag().ok().flatten())
                .is_some();
            if in_dialog {
                match self.layer.match_dialog(&tx) {
                    Some(mut dialog) => {
                        tokio::spawn(async move {
                            let _ = dialog.handle(&mut tx).await;
                        });
                    }
                    None => {
                        let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
                    }
                }
                continue;
            }
            match tx.original.method {
                Method::Invite => {
                    if let Some(call) = self.clone().incoming(tx) {
                        let _ = calls.send(call);
                    }
                }
                Method::Options => {
                    let _ = tx.reply(StatusCode::OK).await;
                }
                Method::Ack => {}
                Method::Bye | Method::Cancel => {
                    let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
                }
                _ => {
                    let _ = tx.reply(StatusCode::MethodNotAllowed).await;
                }
            }
        }
    }

    /// A new INVITE: its dialog, whose handling runs on its own task.
    fn incoming(
        self: Arc<Self>,
        mut tx: rsipstack::transaction::transaction::Transaction,
    ) -> Option<Incoming> {
        let req = tx.original.clone();
        let from = req.from_header().ok().and_then(|f| f.typed().ok());
        let (states, states_rx) = self.layer.new_dialog_state_channel();
        let contact = self.contact_uri();
        let dialog = match self
            .layer
            .get_or_create_server_invite(&tx, states, None, Some(contact))
        {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!("SIP INVITE refused: {e}");
                tokio::spawn(async move {
                    let _ = tx.reply(StatusCode::BadRequest).await;
                });
                return None;
            }
        };
        let mut handled = dialog.clone();
        tokio::spawn(async move {
            let _ = handled.handle(&mut tx).await;
        });
        let (progress, progress_rx) = mpsc::unbounded_channel();
        tokio::spawn(
            self.clone()
                .follow(dialog.clone(), states_rx, progress, Side::Server),
        );
        Some(Incoming {
            to_user: super::numbers::uri_user(&req.uri.to_string()).to_string(),
            from_user: from
                .as_ref()
                .map(|f| super::numbers::uri_user(&f.uri.to_string()).to_string())
                .unwrap_or_default(),
            from_display: from.and_then(|f| f.display_name).filter(|d| !d.is_empty()),
            offer: req.body.clone(),
            dialog: Arc::new(ServerDialog {
                dialog,
                redirects: self.redirects.clone(),
                t1x64: self.t1x64,
            }),
            progress: progress_rx,
        })
    }

    fn contact_uri(&self) -> rsip::Uri {
        rsip::Uri {
            scheme: Some(rsip::Scheme::Sip),
            auth: Some(rsip::Auth {
                user: "switchboard".into(),
                password: None,
            }),
            host_with_port: self.addr.into(),
            params: vec![],
            headers: vec![],
        }
    }

    /// Turns a dialog's states into [`Progress`] until it ends, then forgets the dialog.
    async fn follow(
        self: Arc<Self>,
        dialog: InviteDialog,
        mut states: rsipstack::dialog::dialog::DialogStateReceiver,
        progress: mpsc::UnboundedSender<Progress>,
        side: Side,
    ) {
        let mut confirmed = false;
        while let Some(state) = states.recv().await {
            let event = match state {
                DialogState::Trying(_) if side == Side::Client => Some(Progress::Provisional(100)),
                DialogState::Early(_, resp) if side == Side::Client => {
                    Some(Progress::Provisional(resp.status_code.code()))
                }
                DialogState::Confirmed(..) if side == Side::Server && !confirmed => {
                    confirmed = true;
                    Some(Progress::Acknowledged)
                }
                DialogState::Confirmed(..) => {
                    confirmed = true;
                    None
                }
                DialogState::Terminated(id, reason) => {
                    self.layer.remove_dialog(&id);
                    let remote_bye = matches!(
                        (side, &reason),
                        (Side::Client, TerminatedReason::UasBye)
                            | (Side::Server, TerminatedReason::UacBye)
                    );
                    let event = match reason {
                        _ if remote_bye => Progress::HungUp,
                        TerminatedReason::UacCancel if side == Side::Server => Progress::Cancelled,
                        TerminatedReason::Timeout if side == Side::Server && !confirmed => {
                            Progress::NotAcknowledged
                        }
                        _ => Progress::Ended,
                    };
                    let _ = progress.send(event);
                    // Whatever follows is of a dialog that is over.
                    break;
                }
                other => in_dialog(other).await,
            };
            if let Some(e) = event {
                let _ = progress.send(e);
            }
        }
        // The dialog layer may still hold it (under its early id, or if the channel closed).
        self.layer.remove_dialog(&dialog.id());
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

/// Binds a UDP socket on `listen`, and checks that TCP can take the same port (port 0: retries
/// until a free port is free for both).
async fn bind_udp_and_tcp(
    listen: SocketAddr,
    stop: &CancellationToken,
) -> anyhow::Result<(UdpConnection, SocketAddr)> {
    for _ in 0..20 {
        let udp = UdpConnection::create_connection(listen, None, Some(stop.child_token()))
            .await
            .map_err(|e| anyhow::anyhow!("SIP over UDP on {listen}: {e}"))?;
        let addr = udp
            .get_addr()
            .get_socketaddr()
            .map_err(|e| anyhow::anyhow!("SIP over UDP on {listen}: {e}"))?;
        // The TCP listener binds later (rsipstack binds when it serves): try the port now.
        match std::net::TcpListener::bind((listen.ip(), addr.port())) {
            Ok(probe) => {
                drop(probe);
                return Ok((udp, addr));
            }
            Err(e) if listen.port() != 0 => {
                anyhow::bail!("SIP over TCP on {addr}: {e}")
            }
            Err(_) => continue,
        }
    }
    anyhow::bail!(
        "no port on {} was free for both SIP over UDP and TCP",
        listen.ip()
    )
}

/// Shares the redirect table with the endpoint, which owns its inspector.
struct InspectorRef(Arc<Redirects>);

impl MessageInspector for InspectorRef {
    fn before_send(&self, msg: SipMessage, dest: Option<&SipAddr>) -> SipMessage {
        self.0.before_send(msg, dest)
    }
    fn after_received(&self, msg: SipMessage, from: Option<&SipAddr>) -> SipMessage {
        self.0.after_received(msg, from)
    }
}

impl SipStack for Rsip {
    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn listen_addr(&self) -> SocketAddr {
        self.bound
    }

    fn invite(&self, invite: Invite) -> Result<(Arc<dyn Dialog>, ProgressRx), String> {
        let uri = |s: &str| rsip::Uri::try_from(s).map_err(|e| format!("{s}: {e}"));
        let caller = uri(&format!("sip:{}@{}", invite.from_user, self.addr))?;
        let option = InviteOption {
            caller_display_name: invite.from_display.clone(),
            caller,
            callee: uri(&invite.target)?,
            destination: Some(SipAddr {
                r#type: Some(rsip::Transport::Udp),
                addr: invite.destination.into(),
            }),
            content_type: Some("application/sdp".into()),
            offer: Some(invite.offer),
            contact: self.contact_uri(),
            credential: invite.credential.map(|(username, password)| Credential {
                username,
                password,
                realm: None,
                auth_username: None,
            }),
            ..Default::default()
        };
        let (states, states_rx) = self.layer.new_dialog_state_channel();
        let (dialog, outcome) = self
            .layer
            .do_invite_async(option, states)
            .map_err(|e| e.to_string())?;
        let (progress, progress_rx) = mpsc::unbounded_channel();
        // The final response comes from the INVITE's own transaction; what follows an answer
        // (BYE, re-INVITE) from the dialog's states.
        let final_progress = progress.clone();
        let followed = dialog.clone();
        let (answered_tx, answered_rx) = tokio::sync::oneshot::channel::<bool>();
        tokio::spawn(async move {
            let event = match outcome.await {
                Ok(Ok((_, Some(resp))))
                    if resp.status_code.kind() == rsip::StatusCodeKind::Successful =>
                {
                    Progress::Answered(resp.body.clone())
                }
                Ok(Ok((_, Some(resp)))) => Progress::Refused(resp.status_code.code()),
                Ok(Ok((_, None))) | Ok(Err(_)) | Err(_) => Progress::Refused(408),
            };
            let answered = matches!(event, Progress::Answered(_));
            let _ = final_progress.send(event);
            let _ = answered_tx.send(answered);
        });
        let rsip = RsipHandle {
            layer: self.layer.clone(),
        };
        // Provisional responses first; once the INVITE is over, the dialog only if answered.
        tokio::spawn(async move {
            rsip.follow_client(followed, states_rx, progress, answered_rx)
                .await
        });
        Ok((Arc::new(ClientDialog { dialog }), progress_rx))
    }
}

/// What a client dialog's follower needs of the stack.
struct RsipHandle {
    layer: Arc<DialogLayer>,
}

impl RsipHandle {
    async fn follow_client(
        &self,
        dialog: InviteDialog,
        mut states: rsipstack::dialog::dialog::DialogStateReceiver,
        progress: mpsc::UnboundedSender<Progress>,
        mut answered: tokio::sync::oneshot::Receiver<bool>,
    ) {
        let mut settled: Option<bool> = None;
        loop {
            let state = tokio::select! {
                a = &mut answered, if settled.is_none() => {
                    settled = Some(a.unwrap_or(false));
                    if settled == Some(false) {
                        break;
                    }
                    continue;
                }
                s = states.recv() => match s {
                    Some(s) => s,
                    None => break,
                },
            };
            // What the dialog reports after the final response (a BYE, a re-INVITE) must not
            // overtake the outcome ([`Progress::Answered`]), which another task sends first.
            let provisional = matches!(
                state,
                DialogState::Calling(_) | DialogState::Trying(_) | DialogState::Early(..)
            );
            if settled.is_none() && !provisional {
                settled = Some((&mut answered).await.unwrap_or(false));
                if settled == Some(false) && !matches!(state, DialogState::Terminated(..)) {
                    break;
                }
            }
            match state {
                DialogState::Trying(_) if settled.is_none() => {
                    let _ = progress.send(Progress::Provisional(100));
                }
                DialogState::Early(_, resp) if settled.is_none() => {
                    let _ = progress.send(Progress::Provisional(resp.status_code.code()));
                }
                DialogState::Terminated(id, reason) => {
                    self.layer.remove_dialog(&id);
                    // An INVITE that was not answered ends with its outcome, already sent.
                    if settled == Some(true) {
                        let event = match reason {
                            TerminatedReason::UasBye => Progress::HungUp,
                            _ => Progress::Ended,
                        };
                        let _ = progress.send(event);
                    }
                    break;
                }
                other => {
                    if let Some(e) = in_dialog(other).await {
                        let _ = progress.send(e);
                    }
                }
            }
        }
        self.layer.remove_dialog(&dialog.id());
    }
}

/// A request within an answered dialog: a new offer or a transfer's progress for the fabric;
/// OPTIONS and INFO answered 200; anything else 501.
async fn in_dialog(state: DialogState) -> Option<Progress> {
    match state {
        DialogState::Updated(_, req, handle) => {
            Some(Progress::Reoffer(req.body.clone(), Reply(handle)))
        }
        DialogState::Notify(_, req, handle) => match refer_progress(&req) {
            Some((status, done)) => {
                let _ = handle.reply(StatusCode::OK).await;
                Some(Progress::Transfer { status, done })
            }
            None => {
                let _ = handle.reply(StatusCode::from(489)).await;
                None
            }
        },
        DialogState::Info(_, req, handle) => {
            let _ = handle.reply(StatusCode::OK).await;
            let dtmf_relay = req.headers.iter().any(|h| {
                h.name().eq_ignore_ascii_case("content-type")
                    && h.value()
                        .to_ascii_lowercase()
                        .contains("application/dtmf-relay")
            });
            dtmf_relay
                .then(|| dtmf_relay_key(&req.body))
                .flatten()
                .map(Progress::InfoKey)
        }
        DialogState::Options(_, _, handle) => {
            let _ = handle.reply(StatusCode::OK).await;
            None
        }
        DialogState::Refer(_, _, handle)
        | DialogState::Message(_, _, handle)
        | DialogState::Publish(_, _, handle) => {
            let _ = handle.reply(StatusCode::NotImplemented).await;
            None
        }
        _ => None,
    }
}

/// The key of an `application/dtmf-relay` body (`Signal=5`, `Signal=#`; 10 and 11 for `*` and
/// `#`, as some send them).
fn dtmf_relay_key(body: &[u8]) -> Option<char> {
    let text = std::str::from_utf8(body).ok()?;
    let signal = text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("signal")
            .then(|| v.trim().to_string())
    })?;
    match signal.as_str() {
        "10" => Some('*'),
        "11" => Some('#'),
        s if s.len() == 1 => {
            let c = s.chars().next()?.to_ascii_uppercase();
            matches!(c, '0'..='9' | '*' | '#' | 'A'..='D').then_some(c)
        }
        _ => None,
    }
}

/// A NOTIFY of a REFER's progress (RFC 3515 §2.4.4): the status in its `message/sipfrag` body,
/// and whether the subscription ended.
fn refer_progress(req: &rsip::Request) -> Option<(u16, bool)> {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name().eq_ignore_ascii_case(name))
            .map(|h| h.value().to_ascii_lowercase())
    };
    let event = header("event").or_else(|| header("o"))?;
    if !event.trim_start().starts_with("refer") {
        return None;
    }
    let done = header("subscription-state").is_some_and(|s| s.contains("terminated"));
    let body = std::str::from_utf8(&req.body).ok()?;
    let status = body
        .lines()
        .find_map(|l| l.trim().strip_prefix("SIP/2.0 "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((status, done))
}

/// Our INVITE's dialog.
struct ClientDialog {
    dialog: InviteDialog,
}

#[async_trait]
impl Dialog for ClientDialog {
    fn ringing(&self) {}
    fn accept(&self, _: Vec<u8>) {}
    fn refuse(&self, _: u16, _: Option<String>) {}
    async fn hang_up(&self) {
        if let Err(e) = self.dialog.hangup().await {
            tracing::debug!("SIP hang-up of {}: {e}", self.dialog.id());
        }
    }
    async fn refer(&self, target: String) -> u16 {
        refer(&self.dialog, target).await
    }
}

async fn refer(dialog: &InviteDialog, target: String) -> u16 {
    match dialog
        .refer(rsip::ReferTo::new(format!("<{target}>")), None, None)
        .await
    {
        Ok(Some(resp)) => resp.status_code.code(),
        Ok(None) => 408,
        Err(e) => {
            tracing::debug!("SIP REFER in {}: {e}", dialog.id());
            500
        }
    }
}

/// A caller's dialog.
struct ServerDialog {
    dialog: InviteDialog,
    redirects: Arc<Redirects>,
    t1x64: Duration,
}

#[async_trait]
impl Dialog for ServerDialog {
    fn ringing(&self) {
        let _ = self.dialog.ringing(None, None);
    }
    fn accept(&self, sdp: Vec<u8>) {
        let _ = self
            .dialog
            .accept(Some(vec![content_type_sdp()]), Some(sdp));
    }
    fn refuse(&self, status: u16, contact: Option<String>) {
        let call_id = self.dialog.id().call_id.clone();
        if let Some(c) = contact {
            self.redirects
                .0
                .lock()
                .expect("redirects lock")
                .insert(call_id.clone(), c);
        }
        let _ = self.dialog.reject(Some(StatusCode::from(status)), None);
        if status / 100 == 3 {
            // The 3xx is retransmitted until the caller's ACK, at most 64·T1: its Contact is
            // kept for as long.
            let (redirects, keep) = (self.redirects.clone(), self.t1x64);
            tokio::spawn(async move {
                tokio::time::sleep(keep).await;
                redirects.0.lock().expect("redirects lock").remove(&call_id);
            });
        }
    }
    async fn hang_up(&self) {
        if let Err(e) = self.dialog.hangup().await {
            tracing::debug!("SIP hang-up of {}: {e}", self.dialog.id());
        }
    }
    async fn refer(&self, target: String) -> u16 {
        refer(&self.dialog, target).await
    }
}

#[cfg(test)]
mod tests {
    use super::dtmf_relay_key;

    #[test]
    fn a_dtmf_relay_body_names_its_key() {
        assert_eq!(dtmf_relay_key(b"Signal=5\r\nDuration=160\r\n"), Some('5'));
        assert_eq!(dtmf_relay_key(b"signal= #\r\n"), Some('#'));
        assert_eq!(dtmf_relay_key(b"Signal=10\r\n"), Some('*'));
        assert_eq!(dtmf_relay_key(b"Signal=a\r\n"), Some('A'));
        assert_eq!(dtmf_relay_key(b"Duration=160\r\n"), None);
        assert_eq!(dtmf_relay_key(b"Signal=x\r\n"), None);
        assert_eq!(dtmf_relay_key(&[0xff, 0xfe]), None);
    }
}
