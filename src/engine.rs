//! The engine: applies domain transitions to live conversations and the bots' calls in them,
//! commits each change together with the notifications it causes, hands those to the delivery
//! worker, and runs the timers.
//!
//! Live calls and conversations are held in memory and written through the [`Store`] before any
//! answer goes out; one lock orders every change, so the store, memory and the outbox always
//! agree. Every change loads a [`Scene`] (a conversation with its bots' calls), lets the domain
//! change it, and stages the result.
//!
//! When a commit fails, memory may be ahead of the store: [`Engine::watch_store`] then reloads it
//! from the store (reads wait for that; changes answer "unavailable" until the store writes
//! again), probes the store, and resumes by itself once a write succeeds.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Timestamp};
use crate::config::MeetingConfig;
use crate::delivery::Delivery;
use crate::domain::call::{Rules, TransitionError, Wire, party_key};
use crate::domain::conversation::{Conversation, Emit, Kind, Leg, LegState, Purpose, Scene, Who};
use crate::domain::ids::new_guid;
use crate::domain::operation::{OpKind, OpStatus, Operation, RecordPlan, Recording, results};
use crate::domain::{
    Call, CallId, CallState, ChangeType, Direction, EndReason, Event, Notice, PartyKind, Peer,
};
use crate::fabric::{DialPlan, Fabric};
use crate::graph::call::{CreateCall, View, fill_source, write as write_call};
use crate::graph::notification::Notification;
use crate::graph::odata_type;
use crate::graph::participant::Names;
use crate::store::committer::{self, Committer};
use crate::store::{
    Change, DeliveryLog, DeliveryStatus, Health, OutboxItem, Retention, Snapshot, Store, StoreError,
};
use uuid::Uuid;

/// How many ended call legs are remembered for `GET /_switchboard/v1/parties/{id}`.
const ENDED_MEMORY: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No such call, or not this app's call: the two answer the same.
    #[error("Call not found.")]
    NotFound,
    /// Something else the request names does not exist (a participant, a meeting).
    #[error("{0}")]
    Missing(String),
    /// The request is refused (a wrong meeting passcode).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NotAllowed(String),
    #[error("The application has reached its limit of {0} concurrent calls.")]
    TooManyCalls(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store cannot take changes now (or memory is being reloaded from it).
    #[error("{0}")]
    Unavailable(String),
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
    /// The conversation: for a call the bot placed or answered, that call's id.
    pub call_id: CallId,
    pub state: CallState,
    pub result: Option<EndReason>,
    pub tones_received: String,
}

impl PartyLeg {
    fn of(conversation: CallId, leg: &Leg) -> Self {
        PartyLeg {
            call_id: conversation,
            state: leg.state.call_state(),
            result: leg.result,
            tones_received: leg.tones_received.clone(),
        }
    }
}

/// Who is in a meeting (the control API's `GET /meetings/{id}`).
#[derive(Clone, Debug)]
pub struct MeetingView {
    pub active: bool,
    /// (id, kind, the bot's call id): a party's id and `user`/`phone`, or an app id and `bot`.
    pub participants: Vec<(String, &'static str, Option<CallId>)>,
}

/// An invitee of `participants/invite`.
#[derive(Clone, Debug)]
pub struct Invitee {
    pub peer: Peer,
    /// A peer-to-peer call of the invitee that ends once it joins.
    pub replaces: Option<CallId>,
    /// The participant id the client chose for the invitee, if any.
    pub participant_id: Option<Uuid>,
}

struct State {
    /// Boxed: a call is a few hundred bytes, and a map of boxes wastes less on empty slots.
    calls: HashMap<CallId, Box<Call>>,
    conversations: HashMap<CallId, Box<Conversation>>,
    /// Meetings by join id: (conversation, passcode).
    meetings: HashMap<String, (CallId, Option<String>)>,
    /// (due time, conversation) for every conversation with a pending timer, ring or operation.
    timers: BTreeSet<(Timestamp, CallId)>,
    live_per_app: HashMap<String, usize>,
    /// App and tenant ids, shared by the calls that name them.
    names: HashSet<Arc<str>>,
    /// Party legs that ended (party key, leg, the ticket of the change that ended it).
    ended: VecDeque<(String, PartyLeg, u64)>,
    /// Finished recordings by operation id, with the ticket of the change that made them.
    recordings: HashMap<String, (Recording, u64)>,
    /// Recording ids, oldest first, so that the oldest are dropped past [`RECORDINGS_KEPT`].
    recording_order: VecDeque<String>,
    /// Conversation -> the ticket of the last change staged for it, while it may not be settled:
    /// a reader waits for it before answering (see [`Committer::durable`]).
    pending: HashMap<CallId, u64>,
    next_seq: i64,
}

/// Settled tickets are dropped from `State::pending` once it holds this many.
const PENDING_SWEEP: usize = 1024;

/// How many finished recordings are kept for download.
const RECORDINGS_KEPT: usize = 10_000;

pub struct Engine {
    state: Mutex<State>,
    store: Arc<dyn Store>,
    committer: Committer,
    health: Arc<Health>,
    retention: Retention,
    meetings: Vec<MeetingConfig>,
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

fn not_allowed(msg: impl Into<String>) -> EngineError {
    EngineError::NotAllowed(msg.into())
}

fn participant_not_found() -> EngineError {
    EngineError::Missing("Participant not found.".into())
}

/// The call must be up for actions in it.
fn check_up(call: &Call, what: &str) -> Result<(), EngineError> {
    if !matches!(call.state, CallState::Established | CallState::Hold) {
        return Err(not_allowed(format!(
            "The {what} cannot run while the call is {}.",
            call.state.as_str()
        )));
    }
    Ok(())
}

/// Operations need a call that is up; media ones also need service-hosted media.
fn check_can_operate(call: &Call, kind: OpKind) -> Result<(), EngineError> {
    check_up(call, kind.type_name())?;
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

/// Participants are managed in group calls and meetings.
fn check_group(scene: &Scene, what: &str) -> Result<(), EngineError> {
    if !scene.conversation.is_group() {
        return Err(not_allowed(format!(
            "{what} is possible in group calls and meetings; this is a peer-to-peer call."
        )));
    }
    Ok(())
}

/// The chat a group call or meeting has: the client's, with the thread filled in.
fn chat_info(given: Option<&Value>, thread_id: &str) -> Value {
    let mut chat = given
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    chat.insert("@odata.type".into(), json!(odata_type("chatInfo")));
    if chat.get("threadId").is_none_or(Value::is_null) {
        chat.insert("threadId".into(), json!(thread_id));
    }
    if chat.get("messageId").is_none_or(Value::is_null) {
        chat.insert("messageId".into(), json!("0"));
    }
    chat.entry("replyChainMessageId").or_insert(Value::Null);
    Value::Object(chat)
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
    /// The meetings bots can join.
    pub meetings: Vec<MeetingConfig>,
    /// What is kept of ended calls' deliveries logs.
    pub retention: Retention,
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
            meetings,
            retention,
        } = parts;
        let state = State::build(snapshot, &meetings, fabric.as_ref(), clock.now());
        Engine {
            state: Mutex::new(state),
            store,
            health: committer.health().clone(),
            committer,
            retention,
            meetings,
            clock,
            fabric,
            rules,
            delivery,
            public_url,
            timers_changed: Notify::new(),
        }
    }

    /// Whether the store can write now.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The state, to read: refused while memory may be ahead of the store.
    async fn read_state(&self) -> Result<tokio::sync::MutexGuard<'_, State>, EngineError> {
        let st = self.state.lock().await;
        if !self.health.readable() {
            return Err(self.unavailable());
        }
        Ok(st)
    }

    /// The state, to change: refused while the store cannot write.
    async fn write_state(&self) -> Result<tokio::sync::MutexGuard<'_, State>, EngineError> {
        let st = self.state.lock().await;
        if !self.health.writable() {
            return Err(self.unavailable());
        }
        Ok(st)
    }

    fn unavailable(&self) -> EngineError {
        let why = self
            .health
            .failure()
            .map(|f| f.error)
            .unwrap_or_else(|| "the store failed".into());
        EngineError::Unavailable(format!(
            "The service cannot store changes right now ({why}); retry later."
        ))
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

    fn new_call(
        &self,
        app: &AppRef,
        direction: Direction,
        state: CallState,
        callback_uri: String,
        now: Timestamp,
    ) -> Call {
        let mut call = Call::new(
            &app.app_id,
            &app.tenant_id,
            direction,
            state,
            callback_uri,
            now,
        );
        call.timers.keep_alive_deadline = Some(now + self.rules.keep_alive_window);
        call
    }

    /// The bot's own leg of a conversation, waiting to connect.
    fn bot_leg(call: &Call) -> Leg {
        let who = Who::Bot { call_id: call.id };
        Leg::new(call.my_participant_id, who, LegState::Ringing)
    }

    /// A party's leg, rung now: it answers, fails or rings out as the fabric says, and gives up
    /// after `timeout`.
    fn ring(
        &self,
        peer: &Peer,
        purpose: Purpose,
        now: Timestamp,
        timeout: chrono::Duration,
    ) -> Leg {
        let mut leg = Leg::new(Uuid::new_v4(), Who::Party(peer.clone()), LegState::Ringing);
        leg.purpose = purpose;
        let at = |d: std::time::Duration| now + chrono::Duration::from_std(d).unwrap_or_default();
        match self.fabric.dial(peer) {
            DialPlan::Answer { after } => leg.start_ringing(Some(at(after)), None, now + timeout),
            DialPlan::Fail { after, reason } => {
                leg.start_ringing(None, Some((at(after), reason)), now + timeout)
            }
            DialPlan::Ring => leg.start_ringing(None, None, now + timeout),
        }
        leg
    }

    /// Places an outgoing call: to one party (peer-to-peer), several (a group call), or into a
    /// meeting (`meeting`: its join id and the passcode given).
    pub async fn create_call(
        &self,
        app: &AppRef,
        req: CreateCall,
        targets: Vec<Peer>,
        meeting: Option<(String, Option<String>)>,
    ) -> Result<Call, EngineError> {
        let now = self.clock.now();
        let mut call = self.new_call(
            app,
            Direction::Outgoing,
            CallState::Establishing,
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
            &call.my_participant_id.to_string(),
        );
        wire.insert("source".into(), source);
        let st = self.write_state().await?;
        let mut scene = match meeting {
            Some((join_id, passcode)) => {
                let (conv, expected) = st.meetings.get(&join_id).cloned().ok_or_else(|| {
                    EngineError::Missing(format!(
                        "No meeting with joinMeetingId '{join_id}' exists."
                    ))
                })?;
                if expected.is_some() && expected != passcode {
                    return Err(EngineError::Refused(
                        "The passcode does not match the meeting's passcode.".into(),
                    ));
                }
                let mut scene = st.scene(conv).ok_or(EngineError::NotFound)?;
                call.conversation = conv;
                // The meeting lets the bot in at once.
                call.timers.answer_at = Some(now);
                let thread = scene.conversation.thread_id();
                wire.insert("chatInfo".into(), chat_info(wire.get("chatInfo"), &thread));
                scene.conversation.add(Self::bot_leg(&call));
                scene
            }
            None => {
                let kind = if targets.len() > 1 {
                    Kind::Group
                } else {
                    Kind::PeerToPeer
                };
                let mut conv = Conversation::new(call.id, kind, now);
                if conv.is_group() {
                    let thread = conv.thread_id();
                    wire.insert("chatInfo".into(), chat_info(wire.get("chatInfo"), &thread));
                }
                conv.add(Self::bot_leg(&call));
                for t in &targets {
                    let leg = self.ring(t, Purpose::Member, now, self.rules.ringing_timeout);
                    conv.add(leg);
                }
                Scene::new(conv, vec![])
            }
        };
        call.wire = Wire::from_map(wire);
        scene.calls.push(call.clone());
        let first = Notice {
            change: ChangeType::Updated,
            state: CallState::Establishing,
        };
        scene.emit(call.id, Emit::State(first));
        self.insert(st, app, scene).await.map(|_| call)
    }

    /// Stages a scene with a new call, if the app may have one more.
    /// The lock is let go before waiting for the commit.
    async fn insert(
        &self,
        mut st: tokio::sync::MutexGuard<'_, State>,
        app: &AppRef,
        scene: Scene,
    ) -> Result<(), EngineError> {
        let live = st.live_per_app.get(&app.app_id).copied().unwrap_or(0);
        if live >= app.max_concurrent_calls {
            return Err(EngineError::TooManyCalls(app.max_concurrent_calls));
        }
        *st.live_per_app.entry(app.app_id.clone()).or_default() += 1;
        let done = self.stage(&mut st, vec![scene]);
        drop(st);
        committer::wait(done).await?;
        Ok(())
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
            callback_uri,
            now,
        );
        call.timers.acknowledge_deadline = Some(now + chrono::Duration::seconds(15));
        let caller_pid = Uuid::new_v4();
        let kind = crate::domain::conversation::identity_key(party.kind);
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
        call.wire = Wire::from_map(wire);
        let mut conv = Conversation::new(call.id, Kind::PeerToPeer, now);
        conv.add(Self::bot_leg(&call));
        conv.legs
            .push(Leg::new(caller_pid, Who::Party(party), LegState::Ringing));
        let mut scene = Scene::new(conv, vec![call.clone()]);
        let first = Notice {
            change: ChangeType::Created,
            state: CallState::Incoming,
        };
        scene.emit(call.id, Emit::State(first));
        let st = self.write_state().await?;
        self.insert(st, app, scene).await.map(|_| call)
    }

    /// The call, if it is live and `app_id` owns it.
    pub async fn get_call(&self, app_id: &str, id: CallId) -> Result<Call, EngineError> {
        self.with_call(app_id, id, Call::clone).await
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
        event: Event,
    ) -> Result<Call, EngineError> {
        self.update(owner, id, |s, now, r| {
            s.apply(id, event, now, r).map_err(transition_error)
        })
        .await
        .map(|(c, _)| c)
    }

    /// The bot hangs up (`DELETE`): in a group call or meeting only its own leg ends.
    pub async fn hang_up(&self, app_id: &str, id: CallId) -> Result<Call, EngineError> {
        self.event(Some(app_id), id, Event::BotHungUp).await
    }

    /// The bot proves it is alive.
    pub async fn keep_alive(&self, app_id: &str, id: CallId) -> Result<Call, EngineError> {
        self.event(Some(app_id), id, Event::KeepAlive).await
    }

    /// Ends a call now with `reason` (fault injection), whoever owns it.
    pub async fn fail_call(&self, id: CallId, reason: EndReason) -> Result<Call, EngineError> {
        self.event(None, id, Event::Failed(reason)).await
    }

    /// The bot acts on an incoming call (answer, reject, redirect): only incoming calls, an
    /// optional new callback URL, then `prepare` and the event.
    async fn incoming_action(
        &self,
        app_id: &str,
        id: CallId,
        callback_uri: Option<String>,
        event: Event,
        prepare: impl FnOnce(&mut Scene, Timestamp),
    ) -> Result<Call, EngineError> {
        self.update(Some(app_id), id, move |s, now, r| {
            let c = s.call_mut(id).ok_or(EngineError::NotFound)?;
            if c.direction != Direction::Incoming {
                return Err(not_allowed(
                    "Only incoming calls can be answered, rejected or redirected; hang up with DELETE.",
                ));
            }
            if let Some(cb) = callback_uri {
                c.callback_uri = cb;
            }
            // On error the scene is dropped, with whatever `prepare` did.
            prepare(s, now);
            s.apply(id, event, now, r).map_err(transition_error)
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
        self.incoming_action(app_id, id, callback_uri, Event::BotAnswered, |s, _| {
            if let Some(c) = s.call_mut(id) {
                c.wire.insert("mediaConfig", media_config);
                c.app_hosted_media = app_hosted;
            }
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

    /// The bot redirects an incoming call to `targets`, rung at once: the first that answers
    /// wins.
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
            |s, now| {
                for t in &targets {
                    let leg = self.ring(t, Purpose::Dial { call_id: id }, now, timeout);
                    s.conversation.add(leg);
                }
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
        self.update(Some(app_id), id, move |s, now, r| {
            let leg = self.ring(
                &target,
                Purpose::Dial { call_id: id },
                now,
                r.ringing_timeout,
            );
            s.conversation.add(leg);
            s.apply(id, Event::TransferRequested, now, r)
                .map_err(transition_error)
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
        self.update(Some(app_id), id, move |s, now, _| {
            let c = s.call_mut(id).ok_or(EngineError::NotFound)?;
            check_can_operate(c, kind)?;
            let (op, emits) = start(c, Operation::new(new_guid(), kind, client_context), now)?;
            for e in emits {
                s.emit(id, e);
            }
            Ok(op)
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

    /// Sends DTMF keys to the parties.
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
            op.result = Some(results::COMPLETED);
            Ok((op, vec![]))
        })
        .await
    }

    /// The bot mutes or unmutes itself; in a group call or meeting the others see it.
    pub async fn mute_self(
        &self,
        app_id: &str,
        id: CallId,
        ctx: Option<String>,
        muted: bool,
    ) -> Result<Operation, EngineError> {
        let kind = if muted { OpKind::Mute } else { OpKind::Unmute };
        self.update(Some(app_id), id, move |s, now, r| {
            let c = s.call_mut(id).ok_or(EngineError::NotFound)?;
            check_can_operate(c, kind)?;
            c.muted = muted;
            let mut op = Operation::new(new_guid(), kind, ctx);
            op.result = Some(results::COMPLETED);
            if let Some(i) = s.conversation.bot_leg(id) {
                s.change_leg(|c| c.set_muted(i, muted), now, r);
            }
            Ok(op)
        })
        .await
        .map(|(_, op)| op)
    }

    /// Changes something about a call that is up without an operation or a notification.
    pub async fn modify(
        &self,
        app_id: &str,
        id: CallId,
        change: impl FnOnce(&mut Call) + Send,
    ) -> Result<Call, EngineError> {
        self.update(Some(app_id), id, |s, _, _| {
            let c = s.call_mut(id).ok_or(EngineError::NotFound)?;
            if !matches!(c.state, CallState::Established | CallState::Hold) {
                return Err(not_allowed(format!(
                    "The call is {}; it must be established.",
                    c.state.as_str()
                )));
            }
            change(c);
            Ok(())
        })
        .await
        .map(|(c, _)| c)
    }

    /// Reads a call the app owns with its conversation.
    pub async fn with_conversation<T>(
        &self,
        app_id: &str,
        id: CallId,
        read: impl FnOnce(&Call, &Conversation, Names) -> T,
    ) -> Result<T, EngineError> {
        let st = self.read_state().await?;
        let found = st
            .calls
            .get(&id)
            .filter(|c| *c.app_id == *app_id)
            .and_then(|call| {
                let conv = st.conversations.get(&call.conversation)?;
                let names = |w: &Who| self.names(w, |id| st.calls.get(&id).map(|c| &**c));
                Some((read(call, conv, &names), st.ticket_of(conv.id)))
            });
        let (out, ticket) = match found {
            Some((out, ticket)) => (Some(out), ticket),
            None => (None, self.committer.last_ticket()),
        };
        drop(st);
        self.settled(out, ticket)
            .await?
            .ok_or(EngineError::NotFound)
    }

    /// Answers `out`, read from memory, once the change it may show (`ticket`, 0: none) is
    /// durable: nobody is told of a change the store refused (they get a 503, and memory is
    /// reloaded from the store).
    async fn settled<T>(&self, out: T, ticket: u64) -> Result<T, EngineError> {
        self.committer.durable(ticket).await?;
        Ok(out)
    }

    /// The party a recording of this call hears.
    pub async fn speaker(&self, app_id: &str, id: CallId) -> Result<Option<Peer>, EngineError> {
        self.with_conversation(app_id, id, |_, c, _| c.speaker().cloned())
            .await
    }

    /// Invites parties into the call's conversation (`participants/invite`). A peer-to-peer
    /// call becomes a group call.
    pub async fn invite(
        &self,
        app_id: &str,
        id: CallId,
        invitees: Vec<Invitee>,
        mut participants: Vec<Value>,
        ctx: Option<String>,
    ) -> Result<Operation, EngineError> {
        let replaced = invitees.first().and_then(|i| i.replaces);
        if let Some(old) = replaced {
            self.check_replaceable(app_id, id, old, &invitees[0].peer)
                .await?;
        }
        self.update(Some(app_id), id, move |s, now, _| {
            let c = s.call(id).ok_or(EngineError::NotFound)?;
            check_up(c, "inviteParticipantsOperation")?;
            for (k, inv) in invitees.iter().enumerate() {
                let key = party_key(&inv.peer.id);
                if invitees[..k].iter().any(|o| party_key(&o.peer.id) == key) {
                    return Err(not_allowed(format!(
                        "{} is invited twice; the same identity cannot be invited twice.",
                        inv.peer.id
                    )));
                }
                if s.conversation.has_party(&key) {
                    return Err(not_allowed(format!(
                        "{} is already in the call.",
                        inv.peer.id
                    )));
                }
            }
            let mut op = Operation::new(new_guid(), OpKind::InviteParticipants, ctx);
            op.status = OpStatus::Running;
            if s.conversation.kind == Kind::PeerToPeer {
                s.conversation.kind = Kind::Group;
            }
            for (k, inv) in invitees.iter().enumerate() {
                let purpose = Purpose::Invite(Box::new(crate::domain::conversation::Invite {
                    call_id: id,
                    op_id: op.id.clone(),
                    replaces: if k == 0 { inv.replaces } else { None },
                    outcome: None,
                }));
                let mut leg = self.ring(&inv.peer, purpose, now, self.rules.ringing_timeout);
                if k == 0 && inv.replaces.is_some() {
                    // Already in a call with the bot: it moves over at once.
                    leg.start_ringing(Some(now), None, now + self.rules.ringing_timeout);
                }
                if let Some(pid) = inv.participant_id {
                    if s.conversation.position(pid).is_some() {
                        return Err(not_allowed(format!("The participant id {pid} is taken.")));
                    }
                    leg.id = pid;
                }
                if let Some(p) = participants.get_mut(k) {
                    p["participantId"] = json!(leg.id.to_string());
                }
                s.conversation.add(leg);
            }
            op.participants = Some(Value::Array(participants).to_string());
            if let Some(c) = s.call_mut(id) {
                c.operations.push(op.clone());
            }
            Ok(op)
        })
        .await
        .map(|(_, op)| op)
    }

    /// `replacesCallId` must name a live peer-to-peer call of the same app with the invitee in
    /// it.
    async fn check_replaceable(
        &self,
        app_id: &str,
        id: CallId,
        old: CallId,
        invitee: &Peer,
    ) -> Result<(), EngineError> {
        let bad = |why: &str| not_allowed(format!("replacesCallId {old}: {why}"));
        if old == id {
            return Err(bad("it is the call being invited into."));
        }
        let ok = self
            .with_conversation(app_id, old, |_, c, _| {
                c.kind == Kind::PeerToPeer && c.has_party(&party_key(&invitee.id))
            })
            .await
            .map_err(|_| bad("no such live call of this application."))?;
        if !ok {
            return Err(bad("not a peer-to-peer call with the invitee."));
        }
        Ok(())
    }

    /// Finds a participant of the call's conversation and changes it with `change`, which may
    /// also give an operation to answer with.
    async fn participant<T>(
        &self,
        app_id: &str,
        id: CallId,
        participant_id: &str,
        change: impl FnOnce(&mut Scene, usize, Timestamp, &Rules) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        self.update(Some(app_id), id, |s, now, r| {
            let i = s
                .conversation
                .leg(participant_id)
                .ok_or_else(participant_not_found)?;
            change(s, i, now, r)
        })
        .await
        .map(|(_, t)| t)
    }

    /// Removes a participant (`DELETE .../participants/{id}`); a ringing invitee's invite is
    /// cancelled.
    pub async fn remove_participant(
        &self,
        app_id: &str,
        id: CallId,
        participant_id: &str,
    ) -> Result<(), EngineError> {
        self.participant(app_id, id, participant_id, |s, i, now, r| {
            check_group(s, "Removing a participant")?;
            s.change_leg(|c| c.remove(i), now, r);
            Ok(())
        })
        .await
    }

    /// Server-mutes a participant.
    pub async fn mute_participant(
        &self,
        app_id: &str,
        id: CallId,
        participant_id: &str,
        ctx: Option<String>,
    ) -> Result<Operation, EngineError> {
        self.participant(app_id, id, participant_id, |s, i, now, r| {
            check_group(s, "Muting a participant")?;
            check_up(
                s.call(id).ok_or(EngineError::NotFound)?,
                "muteParticipantOperation",
            )?;
            if s.conversation.legs[i].state != LegState::Connected {
                return Err(not_allowed("The participant has not joined yet."));
            }
            if let Some(bot) = s.conversation.legs[i].bot_call()
                && let Some(c) = s.call_mut(bot)
            {
                c.muted = true;
            }
            s.change_leg(|c| c.set_muted(i, true), now, r);
            let mut op = Operation::new(new_guid(), OpKind::Mute, ctx);
            op.result = Some(results::COMPLETED);
            Ok(op)
        })
        .await
    }

    /// Starts or stops hold music for a participant; the operation completes right after.
    pub async fn hold_music(
        &self,
        app_id: &str,
        id: CallId,
        participant_id: &str,
        ctx: Option<String>,
        start: bool,
    ) -> Result<Operation, EngineError> {
        self.participant(app_id, id, participant_id, |s, i, now, r| {
            let kind = if start {
                OpKind::StartHoldMusic
            } else {
                OpKind::StopHoldMusic
            };
            check_up(s.call(id).ok_or(EngineError::NotFound)?, kind.type_name())?;
            let leg = &s.conversation.legs[i];
            if leg.party().is_none() || leg.state != LegState::Connected {
                return Err(not_allowed(
                    "Hold music is for a party that has joined the call.",
                ));
            }
            let held = s.conversation.legs.iter().position(|l| l.on_hold);
            match (start, held) {
                (true, Some(h)) if h != i => {
                    return Err(not_allowed(
                        "Another participant is on hold; only one participant can be on hold at a time.",
                    ));
                }
                (false, h) if h != Some(i) => {
                    return Err(not_allowed("The participant is not on hold."));
                }
                _ => {}
            }
            s.change_leg(|c| c.set_on_hold(i, start), now, r);
            let mut op = Operation::new(new_guid(), kind, ctx);
            op.status = OpStatus::Running;
            op.result = Some(results::COMPLETED);
            op.completes_at = Some(now);
            if let Some(c) = s.call_mut(id) {
                c.operations.push(op.clone());
            }
            Ok(op)
        })
        .await
    }

    /// A party presses keys in its current call(s). Returns the calls that heard them.
    pub async fn party_tones(
        &self,
        party_id: &str,
        keys: &str,
    ) -> Result<Vec<CallId>, EngineError> {
        let key = party_key(party_id);
        let mut heard = vec![];
        for conv in self.conversations_of(&key).await? {
            let keys = keys.to_string();
            let key = key.clone();
            let calls = self
                .update_conversation(conv, move |s, now, _| {
                    let joined = s
                        .conversation
                        .party_legs(&key)
                        .any(|i| s.conversation.legs[i].state == LegState::Connected);
                    let mut heard = vec![];
                    if !joined {
                        return Ok(heard);
                    }
                    let bots: Vec<CallId> = s.conversation.bot_calls().collect();
                    for id in bots {
                        let Some(c) = s.call_mut(id).filter(|c| c.state == CallState::Established)
                        else {
                            continue;
                        };
                        let mut emits = vec![];
                        for k in keys.chars() {
                            let (tone, stopped) = c.press(k, now);
                            emits.extend(tone.map(|(t, seq)| Emit::Tone(t, seq)));
                            emits.extend(stopped.into_iter().map(Emit::operation));
                        }
                        for e in emits {
                            s.emit(id, e);
                        }
                        heard.push(id);
                    }
                    Ok(heard)
                })
                .await?;
            heard.extend(calls);
        }
        Ok(heard)
    }

    /// A party hangs up every call leg it is in. Returns the bots' calls that ended.
    pub async fn party_hang_up(&self, party_id: &str) -> Result<Vec<CallId>, EngineError> {
        let key = party_key(party_id);
        let mut ended = vec![];
        for conv in self.conversations_of(&key).await? {
            let key = key.clone();
            let calls = self
                .update_conversation(conv, move |s, now, r| {
                    s.party_hangs_up(&key, now, r);
                    Ok(s.calls
                        .iter()
                        .filter(|c| !c.state.is_live())
                        .map(|c| c.id)
                        .collect::<Vec<_>>())
                })
                .await?;
            ended.extend(calls);
        }
        Ok(ended)
    }

    /// The live conversations a party is in, oldest first.
    async fn conversations_of(&self, key: &str) -> Result<Vec<CallId>, EngineError> {
        let st = self.read_state().await?;
        let mut found: Vec<(Timestamp, CallId)> = st
            .conversations
            .values()
            .filter(|c| c.has_party(key))
            .map(|c| (c.created_at, c.id))
            .collect();
        found.sort();
        let ticket = self.committer.last_ticket();
        drop(st);
        self.settled(found.into_iter().map(|(_, id)| id).collect(), ticket)
            .await
    }

    /// The calls a party is or was in: ended ones first, then live ones.
    pub async fn party_legs(&self, party_id: &str) -> Result<Vec<PartyLeg>, EngineError> {
        let key = party_key(party_id);
        let st = self.read_state().await?;
        let mut out: Vec<PartyLeg> = st
            .ended
            .iter()
            .filter(|(k, _, _)| *k == key)
            .map(|(_, l, _)| l.clone())
            .collect();
        let mut live: Vec<(Timestamp, PartyLeg)> = vec![];
        for c in st.conversations.values() {
            for i in c.party_legs(&key) {
                live.push((c.created_at, PartyLeg::of(c.id, &c.legs[i])));
            }
        }
        live.sort_by_key(|(t, _)| *t);
        out.extend(live.into_iter().map(|(_, l)| l));
        let ticket = self.committer.last_ticket();
        drop(st);
        self.settled(out, ticket).await
    }

    /// Who is in a meeting now, if there is such a meeting.
    pub async fn meeting(&self, join_meeting_id: &str) -> Result<Option<MeetingView>, EngineError> {
        let st = self.read_state().await?;
        let Some(c) = st
            .meetings
            .get(join_meeting_id)
            .and_then(|(id, _)| st.conversations.get(id))
        else {
            return Ok(None);
        };
        let participants = c
            .legs
            .iter()
            .filter(|l| l.state == LegState::Connected)
            .map(|l| match &l.who {
                Who::Bot { call_id } => {
                    let app = st.calls.get(call_id).map(|c| c.app_id.to_string());
                    (app.unwrap_or_default(), "bot", Some(*call_id))
                }
                Who::Party(p) => (
                    p.id.clone(),
                    crate::domain::conversation::identity_key(p.kind),
                    None,
                ),
            })
            .collect();
        let view = MeetingView {
            active: c.is_active(),
            participants,
        };
        let ticket = self.committer.last_ticket();
        drop(st);
        self.settled(Some(view), ticket).await
    }

    /// A leg's identity on a roster: a party's id and configured name, or a bot's app id and
    /// display name (`call` finds the bot's call).
    fn names<'a>(
        &self,
        who: &Who,
        call: impl Fn(CallId) -> Option<&'a Call>,
    ) -> (String, Option<String>) {
        match who {
            Who::Party(p) => (
                p.id.clone(),
                self.fabric.party(&p.id).and_then(|i| i.display_name),
            ),
            Who::Bot { call_id } => match call(*call_id) {
                Some(c) => (c.app_id.to_string(), c.app_display_name()),
                None => (String::new(), None),
            },
        }
    }

    /// A finished recording, by its operation id.
    pub async fn recording(&self, op_id: &str) -> Option<Recording> {
        let (rec, ticket) = self.state.lock().await.recordings.get(op_id).cloned()?;
        // One whose change the store refused never existed.
        self.committer.durable(ticket).await.ok().map(|()| rec)
    }

    /// Every notification of a call with its delivery attempts, ended calls included (as long
    /// as the retention policy keeps them).
    pub async fn deliveries(&self, id: CallId) -> Result<DeliveryLog, EngineError> {
        // Everything submitted before this point is committed (or refused) after the barrier.
        self.committer.barrier().await;
        Ok(self.store.deliveries(id).await?)
    }

    /// Reads a live call the app owns without copying it.
    pub async fn with_call<T>(
        &self,
        app_id: &str,
        id: CallId,
        read: impl FnOnce(&Call) -> T,
    ) -> Result<T, EngineError> {
        let st = self.read_state().await?;
        let (out, ticket) = match st.calls.get(&id).filter(|c| *c.app_id == *app_id) {
            Some(c) => (Some(read(c)), st.ticket_of(c.conversation)),
            // Not found may be a change not yet durable (a hang-up): wait for everything staged.
            None => (None, self.committer.last_ticket()),
        };
        drop(st);
        self.settled(out, ticket)
            .await?
            .ok_or(EngineError::NotFound)
    }

    /// Changes a live call (owned by `owner`, or by anyone) in its conversation, and commits
    /// that with what it notifies. On error nothing changes. Returns the call as it is after.
    async fn update<T>(
        &self,
        owner: Option<&str>,
        id: CallId,
        f: impl FnOnce(&mut Scene, Timestamp, &Rules) -> Result<T, EngineError>,
    ) -> Result<(Call, T), EngineError> {
        let st = self.write_state().await?;
        let conv = st
            .calls
            .get(&id)
            .filter(|c| owner.is_none_or(|o| *c.app_id == *o) && c.state.is_live())
            .map(|c| c.conversation)
            .ok_or(EngineError::NotFound)?;
        self.change_scene(st, conv, |s, now, r| {
            let out = f(s, now, r)?;
            let call = s.call(id).cloned().ok_or(EngineError::NotFound)?;
            Ok((call, out))
        })
        .await
    }

    /// Changes a conversation and commits it.
    async fn update_conversation<T>(
        &self,
        conv: CallId,
        f: impl FnOnce(&mut Scene, Timestamp, &Rules) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let st = self.write_state().await?;
        self.change_scene(st, conv, f).await
    }

    /// Loads a conversation's scene, lets `f` change it and stages it; the lock is let go
    /// before waiting for the commit. On error nothing changes.
    async fn change_scene<T>(
        &self,
        mut st: tokio::sync::MutexGuard<'_, State>,
        conv: CallId,
        f: impl FnOnce(&mut Scene, Timestamp, &Rules) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let mut scene = st.scene(conv).ok_or(EngineError::NotFound)?;
        let out = f(&mut scene, self.clock.now(), &self.rules)?;
        let done = self.stage(&mut st, vec![scene]);
        drop(st);
        committer::wait(done).await?;
        Ok(out)
    }

    /// Applies changed scenes to memory and submits them, with what they notify, for commit.
    /// [`committer::wait`] answers once they are durable; their notifications go to the
    /// delivery worker then, in commit order. Until then, readers of these conversations wait.
    fn stage(&self, st: &mut State, scenes: Vec<Scene>) -> committer::Pending {
        let now = self.clock.now();
        let mut change = Change::default();
        let mut touched = vec![];
        let mut queue: VecDeque<Scene> = scenes.into();
        while let Some(mut scene) = queue.pop_front() {
            scene.settle();
            touched.push(scene.conversation.id);
            let replaced = std::mem::take(&mut scene.replaced);
            self.stage_scene(st, scene, now, &mut change);
            // Invitees that moved over from a peer-to-peer call: that call ends.
            for old in replaced {
                let end = Event::Failed(EndReason::BOT_HANG_UP);
                // Its scene may be waiting in this batch: change that one, not a stale copy.
                if let Some(s) = queue.iter_mut().find(|s| s.call(old).is_some()) {
                    let _ = s.apply(old, end, now, &self.rules);
                    continue;
                }
                let conv = st.calls.get(&old).map(|c| c.conversation);
                if let Some(mut s) = conv.and_then(|c| st.scene(c)) {
                    let _ = s.apply(old, end, now, &self.rules);
                    queue.push_back(s);
                }
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
        let pending = self.committer.submit(change, after);
        if st.pending.len() >= PENDING_SWEEP {
            let through = self.committer.settled_through();
            st.pending.retain(|_, t| *t > through);
        }
        for conv in touched {
            st.pending.insert(conv, pending.ticket);
        }
        st.ticket_views(pending.ticket);
        pending
    }

    /// One scene into memory and into `change`.
    fn stage_scene(&self, st: &mut State, scene: Scene, now: Timestamp, change: &mut Change) {
        let due = scene.next_due();
        let Scene {
            conversation,
            calls,
            out,
            gone,
            ..
        } = scene;
        let names = |w: &Who| self.names(w, |id| calls.iter().find(|c| c.id == id));
        for (id, emit) in &out {
            if let Some(call) = calls.iter().find(|c| c.id == *id) {
                let item = st.outbox_item(call, &conversation, &names, emit, now, self);
                change.enqueue.push(item);
            }
            if let Emit::Operation(op) = emit
                && let Some(rec) = &op.recording
                && !rec.access_token.is_empty()
                && op.completes_at.is_none()
            {
                st.keep_recording(&op.id, rec);
            }
        }
        for leg in gone {
            if let Some(p) = leg.party() {
                st.remember(party_key(&p.id), PartyLeg::of(conversation.id, &leg));
            }
        }
        for mut call in calls {
            if call.state.is_live() {
                st.share_names(&mut call);
                change.put_calls.push(call.clone());
                st.calls.insert(call.id, Box::new(call));
            } else {
                change.remove_calls.push((call.id, now));
                if st.calls.remove(&call.id).is_some()
                    && let Some(n) = st.live_per_app.get_mut(&*call.app_id)
                {
                    *n = n.saturating_sub(1);
                }
            }
        }
        let id = conversation.id;
        if conversation.is_over() {
            change.remove_conversations.push(id);
            st.schedule(id, None);
            st.conversations.remove(&id);
        } else {
            let mut conversation = conversation;
            conversation.compact();
            // Most changes (operations, keep-alives) leave the conversation as it was.
            let stored = st.conversations.get(&id);
            if stored.is_none_or(|c| **c != conversation) {
                change.put_conversations.push(conversation.clone());
            }
            conversation.scheduled = st.conversations.get(&id).and_then(|c| c.scheduled);
            st.conversations.insert(id, Box::new(conversation));
            st.schedule(id, due);
        }
    }

    /// Runs every timer, ring and operation due at the clock's current time. Returns how many
    /// fired.
    pub async fn run_due_timers(&self) -> Result<usize, EngineError> {
        let mut st = self.write_state().await?;
        let now = self.clock.now();
        let due: Vec<(Timestamp, CallId)> = st
            .timers
            .iter()
            .take_while(|(t, _)| *t <= now)
            .copied()
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        let mut scenes = vec![];
        let mut fired = 0;
        for (t, id) in due {
            let Some(mut scene) = st.scene(id) else {
                st.timers.remove(&(t, id));
                continue;
            };
            fired += scene.run_due(now, &self.rules);
            scenes.push(scene);
        }
        let done = self.stage(&mut st, scenes);
        drop(st);
        committer::wait(done).await?;
        Ok(fired)
    }

    /// Moves a virtual clock and runs every timer that fell due; returns the new time.
    pub async fn advance(&self, by: chrono::Duration) -> Result<Timestamp, anyhow::Error> {
        // Timers falling due are changes: the clock does not move while they cannot be stored.
        if !self.health.writable() {
            return Err(self.unavailable().into());
        }
        let now = self.clock.advance(by)?;
        self.run_due_timers().await?;
        Ok(now)
    }

    /// Runs timers as they fall due until `stop` is cancelled.
    pub async fn run_timers(self: Arc<Self>, stop: CancellationToken) {
        loop {
            match self.run_due_timers().await {
                Ok(_) => {}
                // Timers that fell due run once the store writes again.
                Err(EngineError::Unavailable(_) | EngineError::Store(_)) => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = self.health.wait_writable() => {}
                    }
                    continue;
                }
                Err(e) => tracing::error!("running timers failed: {e}"),
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

impl Engine {
    /// Watches the store's health until `stop`: after a failed commit, reloads memory from the
    /// store (what clients are told must match what is stored), then probes the store until it
    /// writes again and resumes.
    pub async fn watch_store(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.health.wait_failed() => {}
            }
            let started = std::time::Instant::now();
            let mut backoff = std::time::Duration::from_millis(200);
            // Reload: nothing is staged while the lock is held, and the barrier lets every change
            // staged before it be refused first.
            loop {
                let reloaded = {
                    let mut st = self.state.lock().await;
                    self.committer.barrier().await;
                    match self.store.load().await {
                        Ok(snapshot) => {
                            self.reload(&mut st, &snapshot);
                            true
                        }
                        Err(e) => {
                            self.health.probe_failed(&e.to_string());
                            false
                        }
                    }
                };
                self.health.reloaded(reloaded);
                if reloaded {
                    break;
                }
                if sleep_or_stop(&stop, &mut backoff).await {
                    return;
                }
            }
            tracing::info!("memory reloaded from the store; waiting for the store to write again");
            loop {
                if sleep_or_stop(&stop, &mut backoff).await {
                    return;
                }
                if let Err(e) = self.store.probe().await {
                    self.health.probe_failed(&e.to_string());
                    continue;
                }
                let st = self.state.lock().await;
                // The committer marks the store writable itself, before it takes another job.
                match self.committer.resume().await {
                    Ok(()) => {
                        drop(st);
                        self.timers_changed.notify_one();
                        tracing::info!(
                            "the store writes again; changes are taken again after {:.1} s",
                            started.elapsed().as_secs_f64()
                        );
                        break;
                    }
                    Err(e) => self.health.probe_failed(&e.to_string()),
                }
            }
        }
    }

    /// Replaces memory with what the store holds. Memory-only views (ended party legs,
    /// recordings) are kept; notifications committed but never handed to delivery (a commit
    /// reported failed that did happen) are handed over now.
    fn reload(&self, st: &mut State, snapshot: &Snapshot) {
        let mut fresh = State::build(
            snapshot,
            &self.meetings,
            self.fabric.as_ref(),
            self.clock.now(),
        );
        // Every change staged before the reload is settled: drop the views of refused ones.
        let refused = |t: u64| self.committer.refused(t);
        fresh.ended = std::mem::take(&mut st.ended);
        fresh.ended.retain(|(_, _, t)| !refused(*t));
        fresh.recordings = std::mem::take(&mut st.recordings);
        fresh.recordings.retain(|_, (_, t)| !refused(*t));
        fresh.recording_order = std::mem::take(&mut st.recording_order);
        fresh
            .recording_order
            .retain(|id| fresh.recordings.contains_key(id));
        *st = fresh;
        self.delivery.enqueue_missing(snapshot.pending.clone());
    }

    /// Waits until everything submitted so far was committed (or refused).
    pub async fn flush(&self) {
        self.committer.barrier().await;
    }

    /// Applies the retention policy every `[retention] interval_ms` until `stop`.
    pub async fn run_retention(self: Arc<Self>, stop: CancellationToken) {
        let every = std::time::Duration::from_millis(self.retention.interval_ms.max(100));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if self.health.writable() {
                self.prune_now().await;
            }
        }
    }

    /// Applies the retention policy now, in batches; logs what went.
    pub async fn prune_now(&self) {
        let mut total = crate::store::Pruned::default();
        loop {
            match self.committer.prune(self.retention, self.clock.now()).await {
                Ok(p) => {
                    total.calls += p.calls;
                    total.notifications += p.notifications;
                    total.attempts += p.attempts;
                    if !p.more {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    tracing::warn!("applying the retention policy failed: {e}");
                    break;
                }
            }
        }
        if total.notifications > 0 || total.calls > 0 {
            tracing::info!(
                calls = total.calls,
                notifications = total.notifications,
                attempts = total.attempts,
                "retention: removed the deliveries logs of ended calls and old notifications ([retention] keep_secs = {}, max_ended_calls = {})",
                self.retention.keep_secs,
                self.retention.max_ended_calls
            );
        }
    }
}

/// Sleeps for `backoff` (then doubles it, up to 5 s); `true` if stopped meanwhile.
async fn sleep_or_stop(stop: &CancellationToken, backoff: &mut std::time::Duration) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(std::time::Duration::from_secs(5));
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(wait) => false,
    }
}

impl State {
    /// The state a snapshot of the store holds, with the configured meetings (a meeting that was
    /// never stored starts as configured).
    fn build(
        snapshot: &Snapshot,
        meetings: &[MeetingConfig],
        fabric: &dyn Fabric,
        now: Timestamp,
    ) -> State {
        let mut state = State {
            calls: HashMap::new(),
            conversations: HashMap::new(),
            meetings: HashMap::new(),
            timers: BTreeSet::new(),
            live_per_app: HashMap::new(),
            names: HashSet::new(),
            ended: VecDeque::new(),
            recordings: HashMap::new(),
            pending: HashMap::new(),
            recording_order: VecDeque::new(),
            next_seq: snapshot.next_seq,
        };
        for call in &snapshot.calls {
            *state
                .live_per_app
                .entry(call.app_id.to_string())
                .or_default() += 1;
            let mut call = call.clone();
            state.share_names(&mut call);
            state.calls.insert(call.id, Box::new(call));
        }
        for c in &snapshot.conversations {
            state.conversations.insert(c.id, Box::new(c.clone()));
        }
        for m in meetings {
            let stored = state.conversations.values().find(
                |c| matches!(&c.kind, Kind::Meeting { join_meeting_id } if *join_meeting_id == m.join_meeting_id),
            );
            let id = match stored {
                Some(c) => c.id,
                None => {
                    let kind = Kind::Meeting {
                        join_meeting_id: m.join_meeting_id.clone(),
                    };
                    let mut c = Conversation::new(CallId::new(), kind, now);
                    for p in &m.parties {
                        let info = fabric.party(p);
                        let peer = Peer {
                            id: p.clone(),
                            kind: info.as_ref().map_or(PartyKind::User, |i| i.kind),
                        };
                        c.add(Leg::new(
                            Uuid::new_v4(),
                            Who::Party(peer),
                            LegState::Connected,
                        ));
                    }
                    let id = c.id;
                    state.conversations.insert(id, Box::new(c));
                    id
                }
            };
            state
                .meetings
                .insert(m.join_meeting_id.clone(), (id, m.passcode.clone()));
        }
        let ids: Vec<CallId> = state.conversations.keys().copied().collect();
        for id in ids {
            let due = state.scene(id).and_then(|s| s.next_due());
            state.schedule(id, due);
        }
        state
    }

    /// A conversation with its bots' live calls, to change.
    fn scene(&self, id: CallId) -> Option<Scene> {
        let conv = self.conversations.get(&id)?;
        let calls = conv
            .bot_calls()
            .filter_map(|c| self.calls.get(&c))
            .map(|c| Call::clone(c))
            .collect();
        Some(Scene::new(Conversation::clone(conv), calls))
    }

    /// Makes the call hold the app's and tenant's ids that every other call of theirs holds.
    fn share_names(&mut self, call: &mut Call) {
        for name in [&mut call.app_id, &mut call.tenant_id] {
            match self.names.get(&**name) {
                Some(shared) => *name = shared.clone(),
                None => {
                    self.names.insert(name.clone());
                }
            }
        }
    }

    /// Sets when a conversation is next due (`None`: nothing pending).
    fn schedule(&mut self, id: CallId, due: Option<Timestamp>) {
        let Some(c) = self.conversations.get_mut(&id) else {
            return;
        };
        if let Some(old) = std::mem::replace(&mut c.scheduled, due) {
            self.timers.remove(&(old, id));
        }
        if let Some(t) = due {
            self.timers.insert((t, id));
        }
    }

    /// The ticket a reader of this conversation waits for (0: nothing pending).
    fn ticket_of(&self, conv: CallId) -> u64 {
        self.pending.get(&conv).copied().unwrap_or(0)
    }

    /// Gives the memory-only views this change made (ended legs and recordings, the newest
    /// without a ticket) the change's ticket.
    fn ticket_views(&mut self, ticket: u64) {
        for (_, _, t) in self.ended.iter_mut().rev().take_while(|(_, _, t)| *t == 0) {
            *t = ticket;
        }
        for id in self.recording_order.iter().rev() {
            match self.recordings.get_mut(id) {
                Some((_, t)) if *t == 0 => *t = ticket,
                _ => break,
            }
        }
    }

    fn remember(&mut self, party: String, leg: PartyLeg) {
        if self.ended.len() >= ENDED_MEMORY {
            self.ended.pop_front();
        }
        // Its ticket once the change is submitted (`Engine::stage`).
        self.ended.push_back((party, leg, 0));
    }

    fn keep_recording(&mut self, op_id: &str, rec: &Recording) {
        if self.recording_order.len() >= RECORDINGS_KEPT
            && let Some(oldest) = self.recording_order.pop_front()
        {
            self.recordings.remove(&oldest);
        }
        self.recording_order.push_back(op_id.to_string());
        // Its ticket once the change is submitted (`Engine::stage`).
        self.recordings.insert(op_id.to_string(), (rec.clone(), 0));
    }

    /// Builds the outbox entry for one emit about `call`, taking the next sequence number.
    fn outbox_item(
        &mut self,
        call: &Call,
        conversation: &Conversation,
        names: Names,
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
            Emit::Roster => Notification {
                change: ChangeType::Updated,
                resource: format!("calls/{}/participants", call.id),
                callback_uri: call.callback_uri.clone(),
                data: Value::Array(crate::graph::participant::roster(conversation, names))
                    .to_string(),
            },
        };
        let change_type = n.change.as_str().to_string();
        OutboxItem {
            seq,
            call_id: call.id,
            app_id: call.app_id.to_string(),
            tenant_id: call.tenant_id.to_string(),
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
