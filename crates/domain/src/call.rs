//! The call state machine.
//!
//! A call moves `establishing` → `established` → `terminating` → `terminated` (or fails on the way),
//! one [`Event`] at a time. [`transition`] is the whole table: it takes a state and an event and
//! gives the next state, the notifications to send and the end reason, or says why the event does
//! not apply. [`Call::apply`] runs it and keeps the call's timers in step.

use chrono::Duration;
use serde::{Deserialize, Serialize};

use super::{CallId, EndReason};
use crate::Timestamp;

/// Graph's `callState`, in declaration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CallState {
    Incoming,
    Establishing,
    Established,
    Hold,
    Transferring,
    TransferAccepted,
    Redirecting,
    Terminating,
    Terminated,
}

impl CallState {
    pub const ALL: [CallState; 9] = [
        CallState::Incoming,
        CallState::Establishing,
        CallState::Established,
        CallState::Hold,
        CallState::Transferring,
        CallState::TransferAccepted,
        CallState::Redirecting,
        CallState::Terminating,
        CallState::Terminated,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Incoming => "incoming",
            CallState::Establishing => "establishing",
            CallState::Established => "established",
            CallState::Hold => "hold",
            CallState::Transferring => "transferring",
            CallState::TransferAccepted => "transferAccepted",
            CallState::Redirecting => "redirecting",
            CallState::Terminating => "terminating",
            CallState::Terminated => "terminated",
        }
    }

    /// A call in this state still exists for the bot.
    pub fn is_live(self) -> bool {
        !matches!(self, CallState::Terminating | CallState::Terminated)
    }
}

/// Graph's `changeType` for notifications.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ChangeType {
    Created,
    Updated,
    Deleted,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Created => "created",
            ChangeType::Updated => "updated",
            ChangeType::Deleted => "deleted",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    Incoming,
    Outgoing,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Incoming => "incoming",
            Direction::Outgoing => "outgoing",
        }
    }
}

/// What kind of party is on the other end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartyKind {
    User,
    Phone,
    /// Another bot, by its app id (a bot-to-bot call).
    Application,
    /// Another bot, by one of its application instances (resource accounts).
    ApplicationInstance,
}

impl PartyKind {
    /// A bot, reached through the engine rather than a fabric.
    pub fn is_bot(self) -> bool {
        matches!(
            self,
            PartyKind::Application | PartyKind::ApplicationInstance
        )
    }
}

/// A party: a user, a phone, or another bot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// A user object id, or an E.164 number for phones.
    pub id: String,
    pub kind: PartyKind,
}

/// The key a party is found by: user ids in lower case, phone numbers as `+` and digits.
pub fn party_key(id: &str) -> String {
    let id = id.trim();
    if id.starts_with('+') || id.starts_with("tel:") {
        let digits: String = id.chars().filter(|c| c.is_ascii_digit()).collect();
        format!("+{digits}")
    } else {
        id.to_ascii_lowercase()
    }
}

/// The end reason a party's hang-up gives: by its kind and, for a phone, by who placed the call
/// (`None`: no bot call, as after a transfer).
pub fn hang_up_reason(kind: PartyKind, direction: Option<Direction>) -> EndReason {
    match (kind, direction) {
        (PartyKind::Phone, Some(Direction::Outgoing)) => EndReason::PSTN_HANG_UP_OUTGOING,
        (PartyKind::Phone, Some(Direction::Incoming)) => EndReason::PSTN_HANG_UP_INCOMING,
        _ => EndReason::PEER_HANG_UP,
    }
}

/// Something that happens to a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The callee picked up.
    Answered,
    /// The callee could not be reached, declined or was busy.
    SetupFailed(EndReason),
    /// The bot hung up (`DELETE`).
    BotHungUp,
    /// The other party hung up, with the reason that fits its kind and the call's direction.
    PeerHungUp(EndReason),
    /// The bot proved it is alive (`keepAlive`).
    KeepAlive,
    /// No keepAlive came within the window.
    KeepAliveExpired,
    /// The call failed for a reason from outside (fault injection, media failure).
    Failed(EndReason),
    /// The bot answered an incoming call.
    BotAnswered,
    /// The bot rejected an incoming call.
    BotRejected(EndReason),
    /// The bot asked for an incoming call to be redirected (its targets are rung).
    RedirectRequested,
    /// The bot let the answer window of an incoming call pass.
    NotAcknowledged,
    /// The bot asked for the call to be transferred (the target is rung).
    TransferRequested,
    /// The transfer or redirect target answered.
    DialAnswered,
    /// The transfer or redirect target did not answer or could not be reached.
    DialFailed(EndReason),
    /// The other party put the call on hold (`true`) or took it off (`false`).
    PeerHold(bool),
}

impl Event {
    fn name(&self) -> &'static str {
        match self {
            Event::Answered => "answer",
            Event::SetupFailed(_) => "setup failure",
            Event::BotHungUp => "hang-up",
            Event::PeerHungUp(_) => "remote hang-up",
            Event::KeepAlive => "keepAlive",
            Event::KeepAliveExpired => "keep-alive timeout",
            Event::Failed(_) => "failure",
            Event::BotAnswered => "answer",
            Event::BotRejected(_) => "reject",
            Event::RedirectRequested => "redirect",
            Event::PeerHold(_) => "hold",
            Event::NotAcknowledged => "answer timeout",
            Event::TransferRequested => "transfer",
            Event::DialAnswered => "target answer",
            Event::DialFailed(_) => "target failure",
        }
    }
}

/// One notification a transition asks for: its change type and the state it reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notice {
    pub change: ChangeType,
    pub state: CallState,
}

/// The outcome of a transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub next: CallState,
    pub notices: Vec<Notice>,
    pub end: Option<EndReason>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The call has ended; for the bot it no longer exists.
    #[error("the call has ended")]
    Gone,
    /// The event makes no sense in this state.
    #[error("a {event} is not possible while the call is {state}")]
    NotAllowed {
        state: &'static str,
        event: &'static str,
    },
}

fn notice(change: ChangeType, state: CallState) -> Notice {
    Notice { change, state }
}

fn ended(reason: EndReason, via_terminating: bool) -> Step {
    let mut notices = Vec::with_capacity(2);
    if via_terminating {
        notices.push(notice(ChangeType::Updated, CallState::Terminating));
    }
    notices.push(notice(ChangeType::Deleted, CallState::Terminated));
    Step {
        next: CallState::Terminated,
        notices,
        end: Some(reason),
    }
}

/// The whole state table.
pub fn transition(state: CallState, event: Event) -> Result<Step, TransitionError> {
    use CallState as S;
    if !state.is_live() {
        return Err(TransitionError::Gone);
    }
    let not_allowed = Err(TransitionError::NotAllowed {
        state: state.as_str(),
        event: event.name(),
    });
    match event {
        Event::Answered => match state {
            S::Establishing => Ok(Step {
                next: S::Established,
                notices: vec![notice(ChangeType::Updated, S::Established)],
                end: None,
            }),
            _ => not_allowed,
        },
        Event::SetupFailed(reason) => match state {
            S::Establishing => Ok(ended(reason, false)),
            _ => not_allowed,
        },
        Event::BotHungUp => Ok(ended(EndReason::BOT_HANG_UP, true)),
        Event::PeerHungUp(reason) => Ok(ended(reason, false)),
        Event::KeepAlive => Ok(Step {
            next: state,
            notices: vec![],
            end: None,
        }),
        Event::KeepAliveExpired => Ok(ended(EndReason::KEEP_ALIVE_TIMEOUT, false)),
        Event::Failed(reason) => Ok(ended(reason, false)),
        Event::BotAnswered => match state {
            S::Incoming => Ok(Step {
                next: S::Establishing,
                notices: vec![notice(ChangeType::Updated, S::Establishing)],
                end: None,
            }),
            _ => not_allowed,
        },
        Event::BotRejected(reason) => match state {
            S::Incoming => Ok(ended(reason, false)),
            _ => not_allowed,
        },
        Event::RedirectRequested => match state {
            S::Incoming => Ok(Step {
                next: S::Redirecting,
                notices: vec![notice(ChangeType::Updated, S::Redirecting)],
                end: None,
            }),
            _ => not_allowed,
        },
        Event::NotAcknowledged => match state {
            S::Incoming => Ok(ended(EndReason::NOT_ACKNOWLEDGED, false)),
            _ => not_allowed,
        },
        Event::PeerHold(on) => match (state, on) {
            (S::Established, true) => Ok(Step {
                next: S::Hold,
                notices: vec![notice(ChangeType::Updated, S::Hold)],
                end: None,
            }),
            (S::Hold, false) => Ok(Step {
                next: S::Established,
                notices: vec![notice(ChangeType::Updated, S::Established)],
                end: None,
            }),
            // Said again: nothing changes.
            (S::Hold, true) | (S::Established, false) => Ok(Step {
                next: state,
                notices: vec![],
                end: None,
            }),
            _ => not_allowed,
        },
        Event::TransferRequested => match state {
            S::Established => Ok(Step {
                next: S::Transferring,
                notices: vec![notice(ChangeType::Updated, S::Transferring)],
                end: None,
            }),
            _ => not_allowed,
        },
        Event::DialAnswered => match state {
            S::Transferring => Ok(Step {
                next: S::Terminated,
                notices: vec![
                    notice(ChangeType::Updated, S::TransferAccepted),
                    notice(ChangeType::Deleted, S::Terminated),
                ],
                end: Some(EndReason::TRANSFERRED),
            }),
            S::Redirecting => Ok(ended(EndReason::REDIRECTED, false)),
            _ => not_allowed,
        },
        Event::DialFailed(reason) => match state {
            S::Transferring => Ok(Step {
                next: S::Established,
                notices: vec![notice(ChangeType::Updated, S::Established)],
                end: None,
            }),
            S::Redirecting => Ok(ended(reason, false)),
            _ => not_allowed,
        },
    }
}

/// The rules the state machine's timers follow.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// How long a call may go without a successful keepAlive (Graph: 45 minutes).
    pub keep_alive_window: Duration,
    /// How long an outgoing call rings before it ends with 408/10057 (default 60 s).
    pub ringing_timeout: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            keep_alive_window: Duration::minutes(45),
            ringing_timeout: Duration::seconds(60),
        }
    }
}

/// The call's own pending timers (a party's ringing is timed on its leg of the conversation).
/// Each one, when due, becomes an [`Event`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timers {
    /// The bot's media connects (an answered incoming call, a meeting joined).
    pub answer_at: Option<Timestamp>,
    /// The keep-alive window closes.
    pub keep_alive_deadline: Option<Timestamp>,
    /// An incoming call must be answered, rejected or redirected by then.
    #[serde(default)]
    pub acknowledge_deadline: Option<Timestamp>,
}

impl Timers {
    /// When the next timer falls due.
    pub fn next_due(&self) -> Option<Timestamp> {
        [
            self.answer_at,
            self.keep_alive_deadline,
            self.acknowledge_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Takes the earliest timer that is due at `now` and gives its event. On a tie the answer
    /// comes first, then the acknowledgement window, then keep-alive.
    pub fn take_due(&mut self, now: Timestamp) -> Option<Event> {
        let due = self.next_due().filter(|t| *t <= now)?;
        if self.answer_at == Some(due) {
            self.answer_at = None;
            return Some(Event::Answered);
        }
        if self.acknowledge_deadline == Some(due) {
            self.acknowledge_deadline = None;
            return Some(Event::NotAcknowledged);
        }
        self.keep_alive_deadline = None;
        Some(Event::KeepAliveExpired)
    }
}

/// Client-supplied properties of a call, kept as compact JSON text: a parsed map of them costs
/// several times the memory, and a server holds many calls. Stored and written as a JSON object.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Wire(Box<serde_json::value::RawValue>);

impl Default for Wire {
    fn default() -> Self {
        Wire::from_map(serde_json::Map::new())
    }
}

impl Wire {
    pub fn from_map(map: serde_json::Map<String, serde_json::Value>) -> Self {
        let text = serde_json::Value::Object(map).to_string();
        Wire(serde_json::value::RawValue::from_string(text).expect("a map is valid JSON"))
    }

    /// The properties, parsed.
    pub fn to_map(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(self.0.get()).unwrap_or_default()
    }

    /// The properties as compact JSON text.
    pub fn raw(&self) -> &str {
        self.0.get()
    }

    /// Sets one property.
    pub fn insert(&mut self, key: &str, value: serde_json::Value) {
        let mut map = self.to_map();
        map.insert(key.to_string(), value);
        *self = Wire::from_map(map);
    }
}

/// An `audioRoutingGroup` of a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutingGroup {
    pub id: String,
    /// `oneToOne` or `multicast`.
    pub routing_mode: String,
    /// Participant ids.
    pub sources: Vec<String>,
    pub receivers: Vec<String>,
}

/// What a call's roster notifications carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Rosters {
    /// Everyone on the roster, every time.
    #[default]
    Full,
    /// Delta rosters; none sent yet (the first carries everyone).
    Delta,
    /// Delta rosters; the first was sent.
    DeltaSent,
}

impl Rosters {
    fn is_full(&self) -> bool {
        *self == Rosters::Full
    }

    /// What a roster notification about a change after roster sequence number `since`
    /// carries: what changed after `since`, or (`None`) everyone, as a delta roster's first does.
    pub fn start(&mut self, since: u32) -> Option<u32> {
        match self {
            Rosters::Delta => {
                *self = Rosters::DeltaSent;
                None
            }
            _ => Some(since),
        }
    }
}

/// A call as the domain sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    pub id: CallId,
    /// The app that owns the call; no other app can see it. (Shared text: every call of an app
    /// holds the same one.)
    pub app_id: std::sync::Arc<str>,
    pub tenant_id: std::sync::Arc<str>,
    pub direction: Direction,
    pub state: CallState,
    pub result: Option<EndReason>,
    pub callback_uri: String,
    pub my_participant_id: uuid::Uuid,
    pub call_chain_id: String,
    /// The conversation this call is a leg of.
    pub conversation: CallId,
    pub created_at: Timestamp,
    /// Bumped at every change that is notified; rendered as `@odata.etag`.
    pub version: u64,
    pub timers: Timers,
    /// Client-supplied properties echoed back as given (`call` is an open type). The domain does
    /// not read them.
    pub wire: Wire,
    /// The bot hosts the media itself (`appHostedMediaConfig`): no service media operations.
    #[serde(default)]
    pub app_hosted_media: bool,
    /// Operations not yet finished (prompts, recordings, DTMF), in the order they were asked.
    #[serde(default)]
    pub operations: Vec<super::operation::Operation>,
    /// The bot subscribed to the party's DTMF tones.
    #[serde(default)]
    pub tone_subscribed: bool,
    /// The last `toneInfo.sequenceId` sent.
    #[serde(default)]
    pub tone_sequence: i64,
    /// The bot muted itself.
    #[serde(default)]
    pub muted: bool,
    /// What its roster notifications carry: everyone, or (`callOptions.isDeltaRosterEnabled`)
    /// what changed.
    #[serde(default, skip_serializing_if = "Rosters::is_full")]
    pub rosters: Rosters,
    /// `audioRoutingGroups`: how an app-hosted-media bot routes audio between participants
    /// (boxed: few calls have any, and every live call pays for this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_groups: Option<Box<Vec<RoutingGroup>>>,
    /// The sequence number of the last notification about this call: each call numbers its
    /// own notifications 1, 2, 3, … in the order they go out.
    #[serde(default)]
    pub last_seq: i64,
}

impl Call {
    /// Actions in the call need it up (established, or on hold): `what` names the operation.
    pub fn must_be_up(&self, what: &'static str) -> Result<(), crate::Refusal> {
        match self.state {
            CallState::Established | CallState::Hold => Ok(()),
            state => Err(crate::Refusal::NotUp { what, state }),
        }
    }

    /// Changes of the call itself (its screen-sharing role) need it established (or on hold).
    pub fn must_be_established(&self) -> Result<(), crate::Refusal> {
        match self.state {
            CallState::Established | CallState::Hold => Ok(()),
            state => Err(crate::Refusal::NotEstablished { state }),
        }
    }

    /// Only incoming calls are answered, rejected or redirected.
    pub fn must_be_incoming(&self) -> Result<(), crate::Refusal> {
        match self.direction {
            Direction::Incoming => Ok(()),
            _ => Err(crate::Refusal::NotIncoming),
        }
    }

    /// A new call of `app_id` in a conversation of its own (same id), with fresh participant
    /// and chain ids, no timers and no client properties yet.
    pub fn new(
        app_id: &str,
        tenant_id: &str,
        direction: Direction,
        state: CallState,
        callback_uri: String,
        now: Timestamp,
    ) -> Self {
        let id = CallId::new();
        Call {
            id,
            app_id: app_id.into(),
            tenant_id: tenant_id.into(),
            direction,
            state,
            result: None,
            callback_uri,
            my_participant_id: uuid::Uuid::new_v4(),
            call_chain_id: super::ids::new_guid(),
            conversation: id,
            created_at: now,
            version: 1,
            timers: Timers::default(),
            wire: Wire::default(),
            app_hosted_media: false,
            operations: vec![],
            tone_subscribed: false,
            tone_sequence: 0,
            last_seq: 0,
            muted: false,
            rosters: Rosters::Full,
            routing_groups: None,
        }
    }

    /// The bot app's display name, as the call's own identity shows it (`source` of a call it
    /// placed, `targets` of one it was called on).
    pub fn app_display_name(&self) -> Option<String> {
        let wire = self.wire.to_map();
        let me = match self.direction {
            Direction::Outgoing => wire.get("source"),
            Direction::Incoming => wire.get("targets").and_then(|t| t.get(0)),
        }?;
        me.pointer("/identity/application/displayName")?
            .as_str()
            .map(str::to_string)
    }

    /// When the next timer or operation of this call falls due.
    pub fn next_due(&self) -> Option<Timestamp> {
        let ops = self
            .operations
            .iter()
            .filter(|o| !o.awaits_media)
            .filter_map(|o| o.completes_at)
            .min();
        [self.timers.next_due(), ops].into_iter().flatten().min()
    }

    /// Applies `event` at `now`: moves the state, keeps the timers in step and gives the
    /// notifications to send. On error nothing changes.
    pub fn apply(
        &mut self,
        event: Event,
        now: Timestamp,
        rules: &Rules,
    ) -> Result<Vec<Notice>, TransitionError> {
        let step = transition(self.state, event)?;
        self.state = step.next;
        if let Some(reason) = step.end {
            self.result = Some(reason);
        }
        match event {
            Event::Answered => self.timers.answer_at = None,
            Event::BotAnswered => {
                self.timers.acknowledge_deadline = None;
                // Service-hosted media connects at once.
                self.timers.answer_at = Some(now);
            }
            Event::RedirectRequested => self.timers.acknowledge_deadline = None,
            Event::KeepAlive => {
                self.timers.keep_alive_deadline = Some(now + rules.keep_alive_window)
            }
            // A failed transfer leaves the call up, with the failure as its last result.
            Event::DialFailed(_) if self.state.is_live() => {
                self.result = Some(EndReason::TRANSFER_FAILED)
            }
            _ => {}
        }
        if !self.state.is_live() {
            self.timers = Timers::default();
            self.operations.clear();
        }
        if !step.notices.is_empty() {
            self.version += 1;
        }
        Ok(step.notices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const R: EndReason = EndReason::MEDIA_FAILURE;

    fn all_events() -> Vec<Event> {
        vec![
            Event::Answered,
            Event::SetupFailed(EndReason::BUSY),
            Event::BotHungUp,
            Event::PeerHungUp(EndReason::PEER_HANG_UP),
            Event::KeepAlive,
            Event::KeepAliveExpired,
            Event::Failed(R),
            Event::BotAnswered,
            Event::BotRejected(EndReason::DECLINED),
            Event::RedirectRequested,
            Event::NotAcknowledged,
            Event::TransferRequested,
            Event::DialAnswered,
            Event::DialFailed(EndReason::NO_ANSWER),
            Event::PeerHold(true),
            Event::PeerHold(false),
        ]
    }

    /// The table written out by hand: for each state and event, the next state and the
    /// (change, state) notices, or `None` where the event is refused.
    type Expected = (CallState, Vec<(ChangeType, CallState)>, Option<EndReason>);

    fn expected(state: CallState, event: Event) -> Option<Expected> {
        use CallState as S;
        use ChangeType as C;
        let live = state.is_live();
        if !live {
            return None;
        }
        let deleted = |r| Some((S::Terminated, vec![(C::Deleted, S::Terminated)], Some(r)));
        match (state, event) {
            (S::Establishing, Event::Answered) => {
                Some((S::Established, vec![(C::Updated, S::Established)], None))
            }
            (_, Event::Answered) => None,
            (S::Establishing, Event::SetupFailed(r)) => deleted(r),
            (_, Event::SetupFailed(_)) => None,
            (_, Event::BotHungUp) => Some((
                S::Terminated,
                vec![(C::Updated, S::Terminating), (C::Deleted, S::Terminated)],
                Some(EndReason::BOT_HANG_UP),
            )),
            (_, Event::PeerHungUp(r)) => deleted(r),
            (s, Event::KeepAlive) => Some((s, vec![], None)),
            (_, Event::KeepAliveExpired) => deleted(EndReason::KEEP_ALIVE_TIMEOUT),
            (_, Event::Failed(r)) => deleted(r),
            (S::Incoming, Event::BotAnswered) => {
                Some((S::Establishing, vec![(C::Updated, S::Establishing)], None))
            }
            (S::Incoming, Event::BotRejected(r)) => deleted(r),
            (S::Incoming, Event::RedirectRequested) => {
                Some((S::Redirecting, vec![(C::Updated, S::Redirecting)], None))
            }
            (S::Incoming, Event::NotAcknowledged) => deleted(EndReason::NOT_ACKNOWLEDGED),
            (
                _,
                Event::BotAnswered
                | Event::BotRejected(_)
                | Event::RedirectRequested
                | Event::NotAcknowledged,
            ) => None,
            (S::Established, Event::TransferRequested) => {
                Some((S::Transferring, vec![(C::Updated, S::Transferring)], None))
            }
            (_, Event::TransferRequested) => None,
            (S::Transferring, Event::DialAnswered) => Some((
                S::Terminated,
                vec![
                    (C::Updated, S::TransferAccepted),
                    (C::Deleted, S::Terminated),
                ],
                Some(EndReason::TRANSFERRED),
            )),
            (S::Redirecting, Event::DialAnswered) => deleted(EndReason::REDIRECTED),
            (_, Event::DialAnswered) => None,
            (S::Transferring, Event::DialFailed(_)) => {
                Some((S::Established, vec![(C::Updated, S::Established)], None))
            }
            (S::Redirecting, Event::DialFailed(r)) => deleted(r),
            (_, Event::DialFailed(_)) => None,
            (S::Established, Event::PeerHold(true)) => {
                Some((S::Hold, vec![(C::Updated, S::Hold)], None))
            }
            (S::Hold, Event::PeerHold(false)) => {
                Some((S::Established, vec![(C::Updated, S::Established)], None))
            }
            (S::Hold, Event::PeerHold(true)) | (S::Established, Event::PeerHold(false)) => {
                Some((state, vec![], None))
            }
            (_, Event::PeerHold(_)) => None,
        }
    }

    #[test]
    fn every_state_and_event_follows_the_table() {
        for state in CallState::ALL {
            for event in all_events() {
                let got = transition(state, event);
                match expected(state, event) {
                    Some((next, notices, end)) => {
                        let step = got.unwrap_or_else(|e| panic!("{state:?} + {event:?}: {e}"));
                        assert_eq!(step.next, next, "{state:?} + {event:?}");
                        let pairs: Vec<_> =
                            step.notices.iter().map(|n| (n.change, n.state)).collect();
                        assert_eq!(pairs, notices, "{state:?} + {event:?}");
                        assert_eq!(step.end, end, "{state:?} + {event:?}");
                    }
                    None => {
                        let err = got.expect_err(&format!("{state:?} + {event:?} must be refused"));
                        if state.is_live() {
                            assert!(matches!(err, TransitionError::NotAllowed { .. }));
                        } else {
                            assert_eq!(err, TransitionError::Gone);
                        }
                    }
                }
            }
        }
    }

    fn call() -> Call {
        let now = chrono::Utc::now();
        let cb = "https://bot.example/api/calls".to_string();
        let mut c = Call::new(
            "app",
            "tenant",
            Direction::Outgoing,
            CallState::Establishing,
            cb,
            now,
        );
        c.timers = Timers {
            answer_at: Some(now + Duration::seconds(1)),
            keep_alive_deadline: Some(now + Duration::minutes(45)),
            acknowledge_deadline: None,
        };
        c
    }

    #[test]
    fn answering_clears_the_answer_timer_and_keep_alive_moves_its_deadline() {
        let mut c = call();
        let t0 = c.created_at;
        assert_eq!(
            c.timers.take_due(t0 + Duration::seconds(1)),
            Some(Event::Answered)
        );
        c.apply(Event::Answered, t0, &Rules::default()).unwrap();
        assert_eq!(c.timers.answer_at, None);
        c.apply(
            Event::KeepAlive,
            t0 + Duration::minutes(30),
            &Rules::default(),
        )
        .unwrap();
        assert_eq!(c.timers.next_due(), Some(t0 + Duration::minutes(75)));
    }

    #[test]
    fn a_phone_hanging_up_ends_with_the_pstn_reason_for_the_calls_direction() {
        use Direction::{Incoming, Outgoing};
        let reason = hang_up_reason;
        assert_eq!(
            reason(PartyKind::Phone, Some(Outgoing)),
            EndReason::PSTN_HANG_UP_OUTGOING
        );
        assert_eq!(
            reason(PartyKind::Phone, Some(Incoming)),
            EndReason::PSTN_HANG_UP_INCOMING
        );
        assert_eq!(
            reason(PartyKind::User, Some(Incoming)),
            EndReason::PEER_HANG_UP
        );
        assert_eq!(reason(PartyKind::Phone, None), EndReason::PEER_HANG_UP);
    }

    #[test]
    fn a_refused_event_changes_nothing() {
        let mut c = call();
        let before = c.clone();
        assert!(
            c.apply(Event::KeepAliveExpired, c.created_at, &Rules::default())
                .is_ok()
        );
        let mut c2 = before.clone();
        c2.state = CallState::Established;
        let snapshot = format!("{c2:?}");
        assert!(
            c2.apply(
                Event::SetupFailed(EndReason::NO_ANSWER),
                c2.created_at,
                &Rules::default()
            )
            .is_err()
        );
        assert_eq!(format!("{c2:?}"), snapshot);
    }

    fn event_strategy() -> impl Strategy<Value = Event> {
        prop::sample::select(all_events())
    }

    proptest! {
        #[test]
        fn any_run_of_events_ends_at_most_once_and_says_nothing_after(events in prop::collection::vec(event_strategy(), 0..20)) {
            let mut c = call();
            let mut terminated = 0;
            let mut notices_after_end = 0;
            for e in events {
                let was_live = c.state.is_live();
                if let Ok(ns) = c.apply(e, c.created_at, &Rules::default()) {
                    prop_assert!(was_live);
                    if !was_live { notices_after_end += ns.len(); }
                    terminated += ns.iter().filter(|n| n.state == CallState::Terminated).count();
                    if let Some(last) = ns.last() {
                        prop_assert_eq!(last.state, c.state);
                    }
                }
            }
            prop_assert!(terminated <= 1);
            prop_assert_eq!(notices_after_end, 0);
            prop_assert_eq!(terminated == 1, c.state == CallState::Terminated);
            if c.state == CallState::Terminated {
                prop_assert!(c.result.is_some());
                prop_assert_eq!(c.timers.next_due(), None);
            }
        }
    }
}
