//! The engine: applies domain transitions to live calls, commits each change together with the
//! notifications it causes, hands those to the delivery worker, and runs the call timers.
//!
//! Live calls are held in memory and written through the [`Store`] before any answer goes out;
//! one lock orders every change, so the store, memory and the outbox always agree.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Timestamp};
use crate::delivery::Delivery;
use crate::domain::call::{PendingDial, Rules, Timers, TransitionError};
use crate::domain::ids::new_guid;
use crate::domain::operation::{OpKind, Operation, RecordPlan, Recording};
use crate::domain::{
    Call, CallId, CallState, ChangeType, Direction, EndReason, Event, Notice, Peer,
};
use crate::fabric::{DialPlan, Fabric, simulated::party_key};
use crate::graph::call::{CreateCall, View, fill_source, write as write_call};
use crate::graph::notification::Notification;
use crate::graph::odata_type;
use crate::store::committer::{self, Committer};
use crate::store::{
    Change, DeliveryRecord, DeliveryStatus, OutboxItem, Snapshot, Store, StoreError,
};

/// How many ended call legs are remembered for `GET /_switchboard/v1/parties/{id}`.
const ENDED_MEMORY: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No such call, or not this app's call: the two answer the same.
    #[error("Call not found.")]
    NotFound,
    #[error("{0}")]
    NotAllowed(String),
    #[error("The application has reached its limit of {0} concurrent calls.")]
    TooManyCalls(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The app a request acts for, as far as the engine cares.
#[derive(Clone, Debug)]
pub struct AppRef {
    pub app_id: String,
    pub tenant_id: String,
    pub display_name: Option<String>,
    pub max_concurrent_calls: usize,
}

/// A call leg as a party sees it (the control API's `GET /parties/{id}`).
#[derive(Clone, Debug)]
pub struct PartyLeg {
    pub call_id: CallId,
    pub state: CallState,
    pub result: Option<EndReason>,
    pub tones_received: String,
}

/// Something a change asks to notify.
#[derive(Clone, Debug)]
pub enum Emit {
    /// A change of the call's state.
    State(Notice),
    /// An operation finished (`deleted` on its URL).
    Operation(Box<Operation>),
    /// The party pressed a key and the bot subscribed: (tone, sequence id).
    Tone(&'static str, i64),
}

impl Emit {
    fn operation(op: Operation) -> Self {
        Emit::Operation(Box::new(op))
    }
}

/// Two parties left talking after a transfer or redirect took the bot out of the call.
#[derive(Clone, Debug)]
struct Detached {
    conversation: CallId,
    parties: [Peer; 2],
}

struct State {
    /// Boxed: a call is a few hundred bytes, and a map of boxes wastes less on empty slots.
    calls: HashMap<CallId, Box<Call>>,
    /// (due time, call) for every call with a pending timer, dial or operation.
    timers: BTreeSet<(Timestamp, CallId)>,
    live_per_app: HashMap<String, usize>,
    ended: VecDeque<(String, PartyLeg)>,
    detached: Vec<Detached>,
    recordings: HashMap<String, Recording>,
    /// Recording ids, oldest first, so that the oldest are dropped past [`RECORDINGS_KEPT`].
    recording_order: VecDeque<String>,
    next_seq: i64,
}

/// How many finished recordings are kept for download.
const RECORDINGS_KEPT: usize = 10_000;

pub struct Engine {
    state: Mutex<State>,
    store: Arc<dyn Store>,
    committer: Committer,
    clock: Clock,
    fabric: Arc<dyn Fabric>,
    rules: Rules,
    delivery: Arc<Delivery>,
    public_url: String,
    timers_changed: Notify,
}

fn transition_error(e: TransitionError) -> EngineError {
    match e {
        TransitionError::Gone => EngineError::NotFound,
        e @ TransitionError::NotAllowed { .. } => EngineError::NotAllowed(e.to_string()),
    }
}

/// Applies a state event and turns its notices into emits.
fn step(
    call: &mut Call,
    event: Event,
    now: Timestamp,
    rules: &Rules,
) -> Result<Vec<Emit>, EngineError> {
    Ok(call
        .apply(event, now, rules)
        .map_err(transition_error)?
        .into_iter()
        .map(Emit::State)
        .collect())
}

fn not_allowed(msg: impl Into<String>) -> EngineError {
    EngineError::NotAllowed(msg.into())
}

/// Operations need a call that is up; media ones also need service-hosted media.
fn check_can_operate(call: &Call, kind: OpKind) -> Result<(), EngineError> {
    if !matches!(call.state, CallState::Established | CallState::Hold) {
        return Err(not_allowed(format!(
            "The {} cannot run while the call is {}.",
            kind.type_name(),
            call.state.as_str()
        )));
    }
    let media = kind.is_media()
        || matches!(
            kind,
            OpKind::SubscribeToTone | OpKind::SendDtmfTones | OpKind::CancelMediaProcessing
        );
    if media && call.app_hosted_media {
        return Err(not_allowed(
            "This action is supported only for calls with service-hosted media (serviceHostedMediaConfig); the call uses app-hosted media.",
        ));
    }
    Ok(())
}

/// What the engine is built from, besides the snapshot.
pub struct Parts {
    pub store: Arc<dyn Store>,
    pub committer: Committer,
    pub clock: Clock,
    pub fabric: Arc<dyn Fabric>,
    pub rules: Rules,
    pub delivery: Arc<Delivery>,
    /// Base URL of recordings.
    pub public_url: String,
}

impl Engine {
    /// Builds the engine from what the store held at start.
    pub fn new(snapshot: &Snapshot, parts: Parts) -> Self {
        let Parts {
            store,
            committer,
            clock,
            fabric,
            rules,
            delivery,
            public_url,
        } = parts;
        let mut state = State {
            calls: HashMap::new(),
            timers: BTreeSet::new(),
            live_per_app: HashMap::new(),
            ended: VecDeque::new(),
            detached: vec![],
            recordings: HashMap::new(),
            recording_order: VecDeque::new(),
            next_seq: snapshot.next_seq,
        };
        for call in &snapshot.calls {
            state.index(call);
            *state.live_per_app.entry(call.app_id.clone()).or_default() += 1;
            state.calls.insert(call.id, Box::new(call.clone()));
        }
        Engine {
            state: Mutex::new(state),
            store,
            committer,
            clock,
            fabric,
            rules,
            delivery,
            public_url,
            timers_changed: Notify::new(),
        }
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn fabric(&self) -> &dyn Fabric {
        self.fabric.as_ref()
    }

    /// Where a finished recording is served.
    pub fn recording_url(&self, op_id: &str) -> String {
        format!("{}/recordings/{op_id}.wav", self.public_url)
    }

    /// Adds a new call and its first notification.
    async fn insert(&self, app: &AppRef, call: Call, first: Notice) -> Result<Call, EngineError> {
        let mut st = self.state.lock().await;
        let live = st.live_per_app.get(&app.app_id).copied().unwrap_or(0);
        if live >= app.max_concurrent_calls {
            return Err(EngineError::TooManyCalls(app.max_concurrent_calls));
        }
        *st.live_per_app.entry(app.app_id.clone()).or_default() += 1;
        let done = self.stage(&mut st, vec![(call.clone(), vec![Emit::State(first)])]);
        drop(st);
        committer::wait(done).await?;
        Ok(call)
    }

    fn new_call(
        &self,
        app: &AppRef,
        direction: Direction,
        state: CallState,
        peer: Peer,
        callback_uri: String,
        now: Timestamp,
    ) -> Call {
        Call {
            id: CallId::new(),
            app_id: app.app_id.clone(),
            tenant_id: app.tenant_id.clone(),
            direction,
            state,
            result: None,
            callback_uri,
            my_participant_id: new_guid(),
            call_chain_id: new_guid(),
            peer,
            created_at: now,
            version: 1,
            timers: Timers {
                keep_alive_deadline: Some(now + self.rules.keep_alive_window),
                ..Timers::default()
            },
            wire: Default::default(),
            app_hosted_media: false,
            peer_leg: Default::default(),
            pending_dial: None,
            operations: vec![],
            tone_subscribed: false,
            tone_sequence: 0,
            muted: false,
        }
    }

    /// Places an outgoing peer-to-peer call.
    pub async fn create_call(
        &self,
        app: &AppRef,
        req: CreateCall,
        peer: Peer,
    ) -> Result<Call, EngineError> {
        let now = self.clock.now();
        let mut call = self.new_call(
            app,
            Direction::Outgoing,
            CallState::Establishing,
            peer.clone(),
            req.callback_uri,
            now,
        );
        if let Some(chain) = req.call_chain_id {
            call.call_chain_id = chain;
        }
        call.app_hosted_media = req.app_hosted_media;
        let mut wire = req.wire;
        let source = fill_source(
            wire.get("source"),
            &app.app_id,
            app.display_name.as_deref(),
            &call.my_participant_id,
        );
        wire.insert("source".into(), source);
        call.wire = crate::domain::call::Wire::from_map(wire);
        call.peer_leg.state = Some(CallState::Establishing);
        let at = |d: std::time::Duration| now + chrono::Duration::from_std(d).unwrap_or_default();
        match self.fabric.dial(&peer) {
            DialPlan::Answer { after } => {
                call.timers.answer_at = Some(at(after));
                call.timers.ringing_deadline = Some(now + self.rules.ringing_timeout);
            }
            DialPlan::Fail { after, reason } => {
                call.timers.setup_fails_at = Some((at(after), reason))
            }
            DialPlan::Ring => call.timers.ringing_deadline = Some(now + self.rules.ringing_timeout),
        }
        let first = Notice {
            change: ChangeType::Updated,
            state: CallState::Establishing,
        };
        self.insert(app, call, first).await
    }

    /// A simulated party calls the app: a call in state `incoming`, notified to `callback_uri`.
    pub async fn dial_in(
        &self,
        app: &AppRef,
        party: Peer,
        display_name: Option<&str>,
        callback_uri: String,
    ) -> Result<Call, EngineError> {
        let now = self.clock.now();
        let mut call = self.new_call(
            app,
            Direction::Incoming,
            CallState::Incoming,
            party.clone(),
            callback_uri,
            now,
        );
        call.timers.acknowledge_deadline = Some(now + chrono::Duration::seconds(15));
        call.peer_leg.state = Some(CallState::Establishing);
        let caller_pid = new_guid();
        let kind = match party.kind {
            crate::domain::PartyKind::User => "user",
            crate::domain::PartyKind::Phone => "phone",
        };
        let caller = json!({
            "@odata.type": odata_type("participantInfo"),
            "identity": {
                "@odata.type": odata_type("identitySet"),
                kind: {"@odata.type": odata_type("identity"), "id": party.id, "displayName": display_name},
            },
            "endpointType": "default", "region": null, "languageId": null, "countryCode": null,
            "participantId": caller_pid,
        });
        let me = json!({
            "@odata.type": odata_type("invitationParticipantInfo"),
            "identity": {
                "@odata.type": odata_type("identitySet"),
                "application": {"@odata.type": odata_type("identity"), "id": app.app_id, "displayName": app.display_name},
            },
            "endpointType": null, "replacesCallId": null, "hidden": null, "participantId": call.my_participant_id,
        });
        let mut wire = serde_json::Map::new();
        wire.insert("source".into(), caller);
        wire.insert("targets".into(), json!([me]));
        wire.insert("requestedModalities".into(), json!(["audio"]));
        wire.insert(
            "incomingContext".into(),
            json!({
                "@odata.type": odata_type("incomingContext"),
                "sourceParticipantId": caller_pid,
                "observedParticipantId": caller_pid,
                "onBehalfOf": null,
                "transferor": null,
            }),
        );
        call.wire = crate::domain::call::Wire::from_map(wire);
        let first = Notice {
            change: ChangeType::Created,
            state: CallState::Incoming,
        };
        self.insert(app, call, first).await
    }

    /// The call, if it is live and `app_id` owns it.
    pub async fn get_call(&self, app_id: &str, id: CallId) -> Result<Call, EngineError> {
        let st = self.state.lock().await;
        st.calls
            .get(&id)
            .filter(|c| c.app_id == app_id)
            .map(|c| Call::clone(c))
            .ok_or(EngineError::NotFound)
    }

    /// An operation of a live call the app owns.
    pub async fn get_operation(
        &self,
        app_id: &str,
        id: CallId,
        op_id: &str,
    ) -> Result<Operation, EngineError> {
        self.with_call(app_id, id, |c| {
            c.operations
                .iter()
                .find(|o| o.id.eq_ignore_ascii_case(op_id))
                .cloned()
        })
        .await?
        .ok_or(EngineError::NotFound)
    }

    /// Applies one state event to a call (owned by `owner`, or by anyone).
    async fn event(
        &self,
        owner: Option<&str>,
        id: CallId,
        event: impl FnOnce(&Call) -> Event,
    ) -> Result<Call, EngineError> {
        self.update(owner, id, |c, now, r| {
            let e = event(c);
            Ok(((), step(c, e, now, r)?))
        })
        .await
        .map(|(c, _)| c)
    }

    /// The bot hangs up (`DELETE`).
    pub async fn hang_up(&self, app_id: &str, id: CallId) -> Result<Call, EngineError> {
        self.event(Some(app_id), id, |_| Event::BotHungUp).await
    }

    /// The bot proves it is alive.
    pub async fn keep_alive(&self, app_id: &str, id: CallId) -> Result<Call, EngineError> {
        self.event(Some(app_id), id, |_| Event::KeepAlive).await
    }

    /// Ends a call now with `reason` (fault injection), whoever owns it.
    pub async fn fail_call(&self, id: CallId, reason: EndReason) -> Result<Call, EngineError> {
        self.event(None, id, |_| Event::Failed(reason)).await
    }

    /// The bot acts on an incoming call (answer, reject, redirect): only incoming calls, an
    /// optional new callback URL, then `prepare` and the event.
    async fn incoming_action(
        &self,
        app_id: &str,
        id: CallId,
        callback_uri: Option<String>,
        event: Event,
        prepare: impl FnOnce(&mut Call, Timestamp),
    ) -> Result<Call, EngineError> {
        self.update(Some(app_id), id, move |c, now, r| {
            if c.direction != Direction::Incoming {
                return Err(not_allowed(
                    "Only incoming calls can be answered, rejected or redirected; hang up with DELETE.",
                ));
            }
            if let Some(cb) = callback_uri {
                c.callback_uri = cb;
            }
            prepare(c, now);
            Ok(((), step(c, event, now, r)?))
        })
        .await
        .map(|(c, _)| c)
    }

    /// The bot answers an incoming call.
    pub async fn answer(
        &self,
        app_id: &str,
        id: CallId,
        callback_uri: Option<String>,
        media_config: Value,
        app_hosted: bool,
    ) -> Result<Call, EngineError> {
        self.incoming_action(app_id, id, callback_uri, Event::BotAnswered, |c, _| {
            c.wire.insert("mediaConfig", media_config);
            c.app_hosted_media = app_hosted;
        })
        .await
    }

    /// The bot rejects an incoming call.
    pub async fn reject(
        &self,
        app_id: &str,
        id: CallId,
        reason: EndReason,
        callback_uri: Option<String>,
    ) -> Result<Call, EngineError> {
        self.incoming_action(
            app_id,
            id,
            callback_uri,
            Event::BotRejected(reason),
            |_, _| {},
        )
        .await
    }

    /// Rings `targets` at once; the first that answers wins.
    fn ring(&self, targets: &[Peer], now: Timestamp, timeout: chrono::Duration) -> PendingDial {
        let at = |d: std::time::Duration| now + chrono::Duration::from_std(d).unwrap_or_default();
        let mut answer: Option<(Timestamp, &Peer)> = None;
        let mut last_fail: Option<(Timestamp, EndReason)> = None;
        let mut rings = false;
        for t in targets {
            match self.fabric.dial(t) {
                DialPlan::Answer { after } => {
                    if answer.is_none_or(|(a, _)| at(after) < a) {
                        answer = Some((at(after), t));
                    }
                }
                DialPlan::Fail { after, reason } => {
                    if last_fail.is_none_or(|(f, _)| at(after) >= f) {
                        last_fail = Some((at(after), reason));
                    }
                }
                DialPlan::Ring => rings = true,
            }
        }
        PendingDial {
            target: answer.map_or_else(|| targets[0].clone(), |(_, p)| p.clone()),
            answer_at: answer.map(|(t, _)| t),
            fails_at: if answer.is_none() && !rings {
                last_fail
            } else {
                None
            },
            deadline: now + timeout,
        }
    }

    /// The bot redirects an incoming call to `targets`.
    pub async fn redirect(
        &self,
        app_id: &str,
        id: CallId,
        targets: Vec<Peer>,
        timeout: chrono::Duration,
        callback_uri: Option<String>,
    ) -> Result<Call, EngineError> {
        self.incoming_action(
            app_id,
            id,
            callback_uri,
            Event::RedirectRequested,
            |c, now| {
                c.pending_dial = Some(self.ring(&targets, now, timeout));
            },
        )
        .await
    }

    /// The bot transfers the other party to `target`.
    pub async fn transfer(
        &self,
        app_id: &str,
        id: CallId,
        target: Peer,
    ) -> Result<Call, EngineError> {
        self.update(Some(app_id), id, move |c, now, r| {
            c.pending_dial = Some(self.ring(std::slice::from_ref(&target), now, r.ringing_timeout));
            Ok(((), step(c, Event::TransferRequested, now, r)?))
        })
        .await
        .map(|(c, _)| c)
    }

    /// Starts an operation on a call that is up. `start` fills it in and gives the
    /// notifications it causes at once.
    pub async fn operate(
        &self,
        app_id: &str,
        id: CallId,
        kind: OpKind,
        client_context: Option<String>,
        start: impl FnOnce(
            &mut Call,
            Operation,
            Timestamp,
        ) -> Result<(Operation, Vec<Emit>), EngineError>,
    ) -> Result<Operation, EngineError> {
        self.update(Some(app_id), id, move |c, now, _| {
            check_can_operate(c, kind)?;
            start(c, Operation::new(new_guid(), kind, client_context), now)
        })
        .await
        .map(|(_, op)| op)
    }

    /// Queues prompts lasting `duration_ms`.
    pub async fn play_prompt(
        &self,
        app_id: &str,
        id: CallId,
        ctx: Option<String>,
        duration_ms: u64,
    ) -> Result<Operation, EngineError> {
        self.operate(app_id, id, OpKind::PlayPrompt, ctx, |c, op, now| {
            Ok((c.play_prompt(op, duration_ms, now), vec![]))
        })
        .await
    }

    /// Records the party's answer. `plan` is completed with the party's speech.
    pub async fn record(
        &self,
        app_id: &str,
        id: CallId,
        ctx: Option<String>,
        plan: RecordPlan,
    ) -> Result<Operation, EngineError> {
        self.operate(app_id, id, OpKind::RecordResponse, ctx, |c, op, now| {
            let (op, cancelled) = c.record(op, plan, now);
            Ok((op, cancelled.into_iter().map(Emit::operation).collect()))
        })
        .await
    }

    /// Cancels running and queued prompts and recordings.
    pub async fn cancel_media(
        &self,
        app_id: &str,
        id: CallId,
        ctx: Option<String>,
    ) -> Result<Operation, EngineError> {
        self.operate(
            app_id,
            id,
            OpKind::CancelMediaProcessing,
            ctx,
            |c, op, _| {
                Ok((
                    op,
                    c.cancel_media().into_iter().map(Emit::operation).collect(),
                ))
            },
        )
        .await
    }

    /// Sends DTMF keys to the party.
    pub async fn send_dtmf(
        &self,
        app_id: &str,
        id: CallId,
        ctx: Option<String>,
        keys: String,
        delay_ms: u64,
    ) -> Result<Operation, EngineError> {
        self.operate(app_id, id, OpKind::SendDtmfTones, ctx, |c, op, now| {
            Ok((c.send_dtmf(op, keys, delay_ms, now), vec![]))
        })
        .await
    }

    /// Operations that complete at once and change a flag of the call.
    pub async fn instant(
        &self,
        app_id: &str,
        id: CallId,
        kind: OpKind,
        ctx: Option<String>,
        change: impl FnOnce(&mut Call) + Send,
    ) -> Result<Operation, EngineError> {
        self.operate(app_id, id, kind, ctx, |c, mut op, _| {
            change(c);
            op.result = Some(crate::domain::operation::results::COMPLETED);
            Ok((op, vec![]))
        })
        .await
    }

    /// Changes something about a call that is up without an operation or a notification.
    pub async fn modify(
        &self,
        app_id: &str,
        id: CallId,
        change: impl FnOnce(&mut Call) + Send,
    ) -> Result<Call, EngineError> {
        self.update(Some(app_id), id, |c, _, _| {
            if !matches!(c.state, CallState::Established | CallState::Hold) {
                return Err(not_allowed(format!(
                    "The call is {}; it must be established.",
                    c.state.as_str()
                )));
            }
            change(c);
            Ok(((), vec![]))
        })
        .await
        .map(|(c, _)| c)
    }

    /// A party presses keys in its current call(s). Returns the calls that heard them.
    pub async fn party_tones(
        &self,
        party_id: &str,
        keys: &str,
    ) -> Result<Vec<CallId>, EngineError> {
        let key = party_key(party_id);
        let ids: Vec<CallId> = {
            let st = self.state.lock().await;
            st.calls
                .values()
                .filter(|c| party_key(&c.peer.id) == key && c.state == CallState::Established)
                .map(|c| c.id)
                .collect()
        };
        let mut heard = vec![];
        for id in ids {
            let keys = keys.to_string();
            let r = self
                .update(None, id, move |c, now, _| {
                    let mut emits = vec![];
                    for k in keys.chars() {
                        let (tone, stopped) = c.press(k, now);
                        emits.extend(tone.map(|(t, seq)| Emit::Tone(t, seq)));
                        emits.extend(stopped.into_iter().map(Emit::operation));
                    }
                    Ok(((), emits))
                })
                .await;
            match r {
                Ok(_) => heard.push(id),
                Err(EngineError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(heard)
    }

    /// A party hangs up every call leg it is in. Returns the calls that ended.
    pub async fn party_hang_up(&self, party_id: &str) -> Result<Vec<CallId>, EngineError> {
        let key = party_key(party_id);
        let ids: Vec<CallId> = {
            let mut st = self.state.lock().await;
            let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut st.detached)
                .into_iter()
                .partition(|d| d.parties.iter().any(|p| party_key(&p.id) == key));
            st.detached = kept;
            for d in gone {
                for p in &d.parties {
                    let result = if party_key(&p.id) == key {
                        EndReason::BOT_HANG_UP
                    } else {
                        EndReason::PEER_HANG_UP
                    };
                    let leg = PartyLeg {
                        call_id: d.conversation,
                        state: CallState::Terminated,
                        result: Some(result),
                        tones_received: String::new(),
                    };
                    st.remember(party_key(&p.id), leg);
                }
            }
            st.calls
                .values()
                .filter(|c| party_key(&c.peer.id) == key)
                .map(|c| c.id)
                .collect()
        };
        let mut ended = vec![];
        for id in ids {
            match self
                .event(None, id, |c| Event::PeerHungUp(c.peer_hang_up_reason()))
                .await
            {
                Ok(_) => ended.push(id),
                Err(EngineError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ended)
    }

    /// The calls a party is or was in: ended ones first, then live ones.
    pub async fn party_legs(&self, party_id: &str) -> Vec<PartyLeg> {
        let key = party_key(party_id);
        let st = self.state.lock().await;
        let mut out: Vec<PartyLeg> = st
            .ended
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, l)| l.clone())
            .collect();
        for d in &st.detached {
            if d.parties.iter().any(|p| party_key(&p.id) == key) {
                out.push(PartyLeg {
                    call_id: d.conversation,
                    state: CallState::Established,
                    result: None,
                    tones_received: String::new(),
                });
            }
        }
        let mut live: Vec<(Timestamp, PartyLeg)> = vec![];
        for c in st.calls.values() {
            if party_key(&c.peer.id) == key {
                let leg = PartyLeg {
                    call_id: c.id,
                    state: c.peer_leg.state.unwrap_or(c.state),
                    result: c.peer_leg.result,
                    tones_received: c.peer_leg.tones_received.clone(),
                };
                live.push((c.created_at, leg));
            }
            if let Some(d) = &c.pending_dial
                && party_key(&d.target.id) == key
            {
                let leg = PartyLeg {
                    call_id: c.id,
                    state: CallState::Establishing,
                    result: None,
                    tones_received: String::new(),
                };
                live.push((c.created_at, leg));
            }
        }
        live.sort_by_key(|(t, _)| *t);
        out.extend(live.into_iter().map(|(_, l)| l));
        out
    }

    /// A finished recording, by its operation id.
    pub async fn recording(&self, op_id: &str) -> Option<Recording> {
        self.state.lock().await.recordings.get(op_id).cloned()
    }

    /// Every notification of a call with its delivery attempts, ended calls included.
    pub async fn deliveries(&self, id: CallId) -> Result<Vec<DeliveryRecord>, EngineError> {
        // Everything submitted before this point is committed once this empty change is.
        committer::wait(self.committer.submit(Change::default(), None)).await?;
        Ok(self.store.deliveries(id).await?)
    }

    /// Reads a live call the app owns without copying it.
    pub async fn with_call<T>(
        &self,
        app_id: &str,
        id: CallId,
        read: impl FnOnce(&Call) -> T,
    ) -> Result<T, EngineError> {
        let st = self.state.lock().await;
        st.calls
            .get(&id)
            .filter(|c| c.app_id == app_id)
            .map(|c| read(c))
            .ok_or(EngineError::NotFound)
    }

    /// Changes one call and commits it with what it notifies. On error nothing changes.
    async fn update<T>(
        &self,
        owner: Option<&str>,
        id: CallId,
        f: impl FnOnce(&mut Call, Timestamp, &Rules) -> Result<(T, Vec<Emit>), EngineError>,
    ) -> Result<(Call, T), EngineError> {
        let mut st = self.state.lock().await;
        let mut call = st
            .calls
            .get(&id)
            .filter(|c| owner.is_none_or(|o| c.app_id == o))
            .map(|c| Call::clone(c))
            .ok_or(EngineError::NotFound)?;
        if !call.state.is_live() {
            return Err(EngineError::NotFound);
        }
        let (out, emits) = f(&mut call, self.clock.now(), &self.rules)?;
        let done = self.stage(&mut st, vec![(call.clone(), emits)]);
        drop(st);
        committer::wait(done).await?;
        Ok((call, out))
    }

    /// Applies changed calls to memory and submits them, with what they notify, for commit.
    /// The receiver answers once they are durable; their notifications go to the delivery
    /// worker then, in commit order.
    fn stage(
        &self,
        st: &mut State,
        changed: Vec<(Call, Vec<Emit>)>,
    ) -> tokio::sync::oneshot::Receiver<Result<(), StoreError>> {
        let now = self.clock.now();
        let mut change = Change::default();
        for (call, emits) in &changed {
            for e in emits {
                let item = st.outbox_item(call, e, now, self);
                change.enqueue.push(item);
            }
            if call.state.is_live() {
                change.put_calls.push(call.clone());
            } else {
                change.remove_calls.push(call.id);
            }
        }
        for (call, emits) in changed {
            for e in &emits {
                if let Emit::Operation(op) = e
                    && let Some(rec) = &op.recording
                    && !rec.access_token.is_empty()
                    && op.completes_at.is_none()
                {
                    if st.recording_order.len() >= RECORDINGS_KEPT
                        && let Some(oldest) = st.recording_order.pop_front()
                    {
                        st.recordings.remove(&oldest);
                    }
                    st.recording_order.push_back(op.id.clone());
                    st.recordings.insert(op.id.clone(), rec.clone());
                }
            }
            st.unindex(call.id);
            if call.state.is_live() {
                st.index(&call);
                st.calls.insert(call.id, Box::new(call));
            } else {
                st.calls.remove(&call.id);
                if let Some(n) = st.live_per_app.get_mut(&call.app_id) {
                    *n = n.saturating_sub(1);
                }
                st.end(&call);
            }
        }
        let after: Option<committer::AfterCommit> = if change.enqueue.is_empty() {
            None
        } else {
            let items = change.enqueue.clone();
            let delivery = self.delivery.clone();
            Some(Box::new(move || delivery.enqueue(items)))
        };
        self.timers_changed.notify_one();
        self.committer.submit(change, after)
    }

    /// Runs every timer, dial and operation due at the clock's current time. Returns how many
    /// fired.
    pub async fn run_due_timers(&self) -> Result<usize, EngineError> {
        let mut st = self.state.lock().await;
        let now = self.clock.now();
        let due: Vec<CallId> = st
            .timers
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, id)| *id)
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        let mut changed = vec![];
        let mut fired = 0;
        for id in due {
            let Some(mut call) = st.calls.get(&id).map(|c| Call::clone(c)) else {
                continue;
            };
            let mut emits = vec![];
            loop {
                let done = call.complete_due_operations(now);
                fired += done.len();
                emits.extend(done.into_iter().map(Emit::operation));
                let Some(event) = call.take_due_event(now) else {
                    break;
                };
                fired += 1;
                let target = call.pending_dial.as_ref().map(|d| d.target.clone());
                match call.apply(event, now, &self.rules) {
                    Ok(notices) => emits.extend(notices.into_iter().map(Emit::State)),
                    Err(e) => {
                        tracing::debug!(call = %id, "timer event {event:?} ignored: {e}");
                        call.pending_dial = None;
                    }
                }
                if let (Event::DialFailed(reason), Some(t)) = (event, target) {
                    let leg = PartyLeg {
                        call_id: id,
                        state: CallState::Terminated,
                        result: Some(reason),
                        tones_received: String::new(),
                    };
                    st.remember(party_key(&t.id), leg);
                }
                if !call.state.is_live() {
                    break;
                }
            }
            changed.push((call, emits));
        }
        let done = self.stage(&mut st, changed);
        drop(st);
        committer::wait(done).await?;
        Ok(fired)
    }

    /// Moves a virtual clock and runs every timer that fell due; returns the new time.
    pub async fn advance(&self, by: chrono::Duration) -> Result<Timestamp, anyhow::Error> {
        let now = self.clock.advance(by)?;
        self.run_due_timers().await?;
        Ok(now)
    }

    /// Runs timers as they fall due until `stop` is cancelled.
    pub async fn run_timers(self: Arc<Self>, stop: CancellationToken) {
        loop {
            if let Err(e) = self.run_due_timers().await {
                tracing::error!("running timers failed: {e}");
            }
            let next = self.state.lock().await.timers.first().map(|(t, _)| *t);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.timers_changed.notified() => {}
                _ = async {
                    match next {
                        Some(t) => self.clock.sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
    }
}

impl State {
    fn index(&mut self, call: &Call) {
        if let Some(t) = call.next_due() {
            self.timers.insert((t, call.id));
        }
    }

    fn unindex(&mut self, id: CallId) {
        if let Some(call) = self.calls.get(&id)
            && let Some(t) = call.next_due()
        {
            self.timers.remove(&(t, id));
        }
    }

    fn remember(&mut self, party: String, leg: PartyLeg) {
        if self.ended.len() >= ENDED_MEMORY {
            self.ended.pop_front();
        }
        self.ended.push_back((party, leg));
    }

    /// A call ended: its party's leg ends too, unless a transfer or redirect left the party
    /// talking to someone else.
    fn end(&mut self, call: &Call) {
        match (&call.peer_leg.connected_to, call.peer_leg.state) {
            (Some(target), Some(CallState::Established)) => self.detached.push(Detached {
                conversation: call.id,
                parties: [call.peer.clone(), target.clone()],
            }),
            _ => {
                let leg = PartyLeg {
                    call_id: call.id,
                    state: CallState::Terminated,
                    result: call.result,
                    tones_received: call.peer_leg.tones_received.clone(),
                };
                self.remember(party_key(&call.peer.id), leg);
            }
        }
    }

    /// Builds the outbox entry for one emit about `call`, taking the next sequence number.
    fn outbox_item(
        &mut self,
        call: &Call,
        emit: &Emit,
        now: Timestamp,
        engine: &Engine,
    ) -> OutboxItem {
        let seq = self.next_seq;
        self.next_seq += 1;
        let n = match emit {
            Emit::State(notice) => {
                let view = View {
                    notification: true,
                    state: Some(notice.state),
                    hide_result: notice.state == CallState::Terminating,
                    ..View::default()
                };
                let data = write_call(call, &view);
                Notification::for_call(notice.change, call.id, &call.callback_uri, data)
            }
            Emit::Tone(tone, seq) => {
                let view = View {
                    notification: true,
                    tone: Some((tone, *seq)),
                    ..View::default()
                };
                let data = write_call(call, &view);
                Notification::for_call(ChangeType::Updated, call.id, &call.callback_uri, data)
            }
            Emit::Operation(op) => {
                let resource = crate::graph::operation::resource(call.id, &op.id);
                let mut data =
                    crate::graph::operation::render(op, Some(&engine.recording_url(&op.id)));
                data["@odata.id"] = json!(format!("/communications/{resource}"));
                Notification {
                    change: ChangeType::Deleted,
                    resource,
                    callback_uri: call.callback_uri.clone(),
                    data: data.to_string(),
                }
            }
        };
        let change_type = n.change.as_str().to_string();
        OutboxItem {
            seq,
            call_id: call.id,
            app_id: call.app_id.clone(),
            tenant_id: call.tenant_id.clone(),
            callback_uri: call.callback_uri.clone(),
            change_type,
            resource_url: n.resource_url(),
            body: n.envelope(),
            created_at: now,
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at: now,
        }
    }
}
