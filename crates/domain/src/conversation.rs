//! Conversations: who is in a call with whom.
//!
//! Every call the bot has is one leg of a [`Conversation`]; each party in it is another leg. A
//! peer-to-peer call is the two-leg case (the bot and one party), a group call starts with the bot
//! and every target ringing, a meeting exists before any bot joins. Legs ring, connect and go; the
//! rules of what that means for the bots' calls are here, in [`Conversation`]'s methods, which
//! say what follows as [`Effect`]s. A [`Scene`] is a conversation with its bots' calls: it applies
//! call events and conversation effects to each other until both agree.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::call::{Event, party_key};
use super::fabric::{FabricCommand, LegRef};
use super::operation::results;
use super::{CallId, CallState, EndReason, PartyKind, Peer, Refusal};
use crate::Timestamp;
pub use crate::scene::{Emit, Scene};

/// What sort of conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Kind {
    PeerToPeer,
    Group,
    Meeting { join_meeting_id: String },
}

/// Where a leg stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LegState {
    /// Being rung, or (a caller, a bot joining) waiting to be let in.
    Ringing,
    /// Waiting in a meeting's lobby until a bot admits it.
    Lobby,
    Connected,
    Gone,
}

impl LegState {
    /// How the leg's owner sees its call.
    pub fn call_state(self) -> CallState {
        match self {
            LegState::Ringing | LegState::Lobby => CallState::Establishing,
            LegState::Connected => CallState::Established,
            LegState::Gone => CallState::Terminated,
        }
    }
}

/// Who a leg is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Who {
    /// One of a bot's calls.
    Bot { call_id: CallId },
    /// A party (a simulated user or phone; later a SIP endpoint).
    Party(Peer),
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Why a leg was rung.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Purpose {
    /// In the conversation from its start: the bot, a target of the call, the caller, a meeting's
    /// member.
    #[default]
    Member,
    /// Rung by an invite (boxed: few legs are).
    Invite(Box<Invite>),
    /// Rung to take over this call (transfer or redirect).
    Dial { call_id: CallId },
}

impl Purpose {
    fn is_member(&self) -> bool {
        *self == Purpose::Member
    }
}

/// The invite a leg was rung by: the operation finishes when every invitee has answered or
/// failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Invite {
    pub call_id: CallId,
    pub op_id: String,
    /// A peer-to-peer call of the invitee that ends once it joins.
    pub replaces: Option<CallId>,
    /// How this invitee's ringing ended: it joined, or the reason it did not.
    #[serde(default)]
    pub outcome: Option<Result<(), EndReason>>,
}

/// One participant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Leg {
    /// The participant id (for a bot, its call's `myParticipantId`).
    pub id: Uuid,
    pub who: Who,
    pub state: LegState,
    // Stored rows leave out what is at its default: a change writes less.
    #[serde(default, skip_serializing_if = "Purpose::is_member")]
    pub purpose: Purpose,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<EndReason>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub muted: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub on_hold: bool,
    /// The roster sequence number at which this entry last changed.
    pub roster_sequence: u32,
    /// Its media source id: the order in which it came into the conversation.
    #[serde(default)]
    pub source: u32,
    /// DTMF keys bots sent to this party.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tones_received: String,
    /// While it is being rung (boxed: most legs are not, and a server holds many).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring: Option<Box<Ring>>,
    /// The fabric holds this leg's signalling (a SIP dialog) in memory: it reports the leg's
    /// progress itself, and a restart loses it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dialog: bool,
}

/// How a ringing party will respond, on the call clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ring {
    /// It answers then.
    pub answer_at: Option<Timestamp>,
    /// It declines, or turns out unreachable, then.
    pub fails_at: Option<(Timestamp, EndReason)>,
    /// Ringing gives up then.
    pub deadline: Timestamp,
}

impl Ring {
    fn next_due(&self) -> Timestamp {
        [self.answer_at, self.fails_at.map(|(t, _)| t)]
            .into_iter()
            .flatten()
            .fold(self.deadline, Timestamp::min)
    }
}

/// How a party's ringing ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingOutcome {
    /// It answered, as planned.
    Answered,
    /// It declined or could not be reached, as planned.
    Failed(EndReason),
    /// Nobody answered before the ringing timeout.
    TimedOut,
}

impl Leg {
    pub fn new(id: Uuid, who: Who, state: LegState) -> Self {
        Leg {
            id,
            who,
            state,
            purpose: Purpose::Member,
            result: None,
            muted: false,
            on_hold: false,
            roster_sequence: 0,
            source: 0,
            tones_received: String::new(),
            ring: None,
            dialog: false,
        }
    }

    pub fn bot_call(&self) -> Option<CallId> {
        match &self.who {
            Who::Bot { call_id, .. } => Some(*call_id),
            Who::Party(_) => None,
        }
    }

    pub fn party(&self) -> Option<&Peer> {
        match &self.who {
            Who::Party(p) => Some(p),
            Who::Bot { .. } => None,
        }
    }

    pub fn is_live(&self) -> bool {
        self.state != LegState::Gone
    }

    /// On the roster: joined, or waiting in the lobby (not one still being rung).
    pub fn is_listed(&self) -> bool {
        matches!(self.state, LegState::Connected | LegState::Lobby)
    }

    /// Still being dialled (it has a ring timer), as opposed to waiting to be let in.
    pub(crate) fn is_dialled(&self) -> bool {
        self.state == LegState::Ringing && self.ring.is_some()
    }

    fn next_due(&self) -> Option<Timestamp> {
        if self.state != LegState::Ringing {
            return None;
        }
        self.ring.as_ref().map(|r| r.next_due())
    }

    /// Sets the ring timers from how the party will respond.
    pub fn start_ringing(
        &mut self,
        answer_at: Option<Timestamp>,
        fails_at: Option<(Timestamp, EndReason)>,
        deadline: Timestamp,
    ) {
        self.state = LegState::Ringing;
        self.ring = Some(Box::new(Ring {
            answer_at,
            fails_at,
            deadline,
        }));
    }

    fn stop_ringing(&mut self) {
        self.ring = None;
    }
}

/// What a change in a conversation means elsewhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// A bot's call gets this event.
    Call(CallId, Event),
    /// An invite's operation is over: `Ok` when every invitee joined, else the first failure.
    InviteDone {
        call_id: CallId,
        op_id: String,
        outcome: Result<(), EndReason>,
    },
    /// A peer-to-peer call an invitee was in ends: the invitee moved into this conversation.
    Replaced(CallId),
    /// Who is in the conversation changed.
    Roster,
    /// A party's leg ended (the party's own view keeps it).
    PartyGone(Box<Leg>),
}

/// A conversation and its legs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    /// For a call the bot placed or answered, the id of that first call; for a meeting, its own.
    pub id: CallId,
    pub kind: Kind,
    pub created_at: Timestamp,
    pub legs: Vec<Leg>,
    /// Some party has joined (a group call with nobody joined ends with 5013).
    pub anyone_joined: bool,
    pub roster_sequence: u32,
    /// Legs ever added (numbers their media sources).
    #[serde(default)]
    pub legs_added: u32,
}

impl Conversation {
    /// Managing participants is for group calls and meetings: `what` names the action.
    pub fn must_be_group(&self, what: &'static str) -> Result<(), Refusal> {
        match self.is_group() {
            true => Ok(()),
            false => Err(Refusal::NotGroup { what }),
        }
    }

    /// Who may be invited: each identity once, and nobody already in the call.
    pub fn may_invite<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Result<(), Refusal> {
        let mut seen: Vec<String> = vec![];
        for id in ids {
            let key = party_key(id);
            if seen.contains(&key) {
                return Err(Refusal::InvitedTwice(id.to_string()));
            }
            if self.has_party(&key) {
                return Err(Refusal::AlreadyInCall(id.to_string()));
            }
            seen.push(key);
        }
        Ok(())
    }

    /// A participant id the client chose must be free.
    pub fn may_take_id(&self, id: Uuid) -> Result<(), Refusal> {
        match self.position(id) {
            None => Ok(()),
            Some(_) => Err(Refusal::ParticipantIdTaken(id)),
        }
    }

    /// Muting a participant needs it joined.
    pub fn must_have_joined(&self, i: usize) -> Result<(), Refusal> {
        match self.legs[i].state {
            LegState::Connected => Ok(()),
            _ => Err(Refusal::NotJoined),
        }
    }

    /// Hold music: for a party that has joined, one participant at a time, and stopped only
    /// where it plays.
    pub fn may_hold(&self, i: usize, start: bool) -> Result<(), Refusal> {
        let leg = &self.legs[i];
        if leg.party().is_none() || leg.state != LegState::Connected {
            return Err(Refusal::HoldMusicNotForParty);
        }
        let held = self.legs.iter().position(|l| l.on_hold);
        match (start, held) {
            (true, Some(h)) if h != i => Err(Refusal::AnotherOnHold),
            (false, h) if h != Some(i) => Err(Refusal::NotOnHold),
            _ => Ok(()),
        }
    }

    pub fn new(id: CallId, kind: Kind, created_at: Timestamp) -> Self {
        Conversation {
            id,
            kind,
            created_at,
            legs: vec![],
            anyone_joined: false,
            roster_sequence: 0,
            legs_added: 0,
        }
    }

    pub fn is_group(&self) -> bool {
        !matches!(self.kind, Kind::PeerToPeer)
    }

    /// Adds a leg; gives its index.
    pub fn add(&mut self, mut leg: Leg) -> usize {
        self.legs_added += 1;
        leg.source = self.legs_added;
        self.legs.push(leg);
        self.legs.len() - 1
    }

    /// Drops legs that are gone and no longer needed (those of an invite still ringing for
    /// others are), and frees spare room: a server holds many conversations, and a meeting
    /// lives as long as the server.
    pub fn compact(&mut self) {
        let pending: Vec<String> = self
            .legs
            .iter()
            .filter(|l| l.state == LegState::Ringing)
            .filter_map(|l| match &l.purpose {
                Purpose::Invite(i) => Some(i.op_id.clone()),
                _ => None,
            })
            .collect();
        self.legs.retain(|l| {
            l.is_live() || matches!(&l.purpose, Purpose::Invite(i) if pending.contains(&i.op_id))
        });
        self.legs.shrink_to_fit();
    }

    /// A conversation ends when nobody is left in it; a meeting stays, to be joined again.
    pub fn is_over(&self) -> bool {
        !matches!(self.kind, Kind::Meeting { .. }) && !self.legs.iter().any(Leg::is_live)
    }

    /// Anyone is in it now.
    pub fn is_active(&self) -> bool {
        self.legs.iter().any(|l| l.state == LegState::Connected)
    }

    /// The chat thread of a group call or meeting.
    pub fn thread_id(&self) -> String {
        format!(
            "19:meeting_{}@thread.v2",
            self.id.to_string().replace('-', "")
        )
    }

    /// The live leg with this participant id, given as text (any case, with or without hyphens).
    pub fn leg(&self, participant_id: &str) -> Option<usize> {
        self.position(Uuid::parse_str(participant_id.trim()).ok()?)
    }

    /// The live leg with this participant id.
    pub fn position(&self, id: Uuid) -> Option<usize> {
        self.legs.iter().position(|l| l.is_live() && l.id == id)
    }

    pub fn bot_leg(&self, call: CallId) -> Option<usize> {
        self.legs
            .iter()
            .position(|l| l.is_live() && l.bot_call() == Some(call))
    }

    /// The live legs of this party.
    pub fn party_legs<'a>(&'a self, key: &'a str) -> impl Iterator<Item = usize> + 'a {
        self.legs.iter().enumerate().filter_map(move |(i, l)| {
            (l.is_live() && l.party().is_some_and(|p| party_key(&p.id) == key)).then_some(i)
        })
    }

    /// The live bot calls.
    pub fn bot_calls(&self) -> impl Iterator<Item = CallId> + '_ {
        self.legs
            .iter()
            .filter(|l| l.is_live())
            .filter_map(Leg::bot_call)
    }

    /// Whether this party is here (joined or ringing).
    pub fn has_party(&self, key: &str) -> bool {
        self.party_legs(key).next().is_some()
    }

    /// The first party connected, the one a recording hears.
    pub fn speaker(&self) -> Option<&Peer> {
        self.legs
            .iter()
            .filter(|l| l.state == LegState::Connected)
            .find_map(Leg::party)
    }

    pub fn next_due(&self) -> Option<Timestamp> {
        self.legs.iter().filter_map(Leg::next_due).min()
    }

    /// The earliest ring outcome due at `now`: the leg, and how its ringing ends.
    pub fn take_due(&mut self, now: Timestamp) -> Option<(usize, RingOutcome)> {
        let (i, due) = self
            .legs
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.next_due().map(|t| (i, t)))
            .filter(|(_, t)| *t <= now)
            .min_by_key(|(_, t)| *t)?;
        let ring = self.legs[i].ring.as_ref()?;
        let outcome = if ring.answer_at == Some(due) {
            RingOutcome::Answered
        } else if let Some((t, reason)) = ring.fails_at
            && t == due
        {
            RingOutcome::Failed(reason)
        } else {
            RingOutcome::TimedOut
        };
        Some((i, outcome))
    }

    /// What the fabric must be told about the party legs that changed since `before` (`None`
    /// for a conversation that is new): ring the new ones, attach new callers, cancel or hang
    /// up those that went, except the legs in `heard`, whose end the fabric itself reported.
    pub fn commands_since(
        &self,
        before: Option<&Conversation>,
        heard: &[Uuid],
    ) -> Vec<FabricCommand> {
        let mut out = vec![];
        for leg in &self.legs {
            let Some(peer) = leg.party() else {
                continue;
            };
            let at = LegRef {
                conversation: self.id,
                leg: leg.id,
            };
            let was = before.and_then(|b| b.legs.iter().find(|l| l.id == leg.id));
            match (was, leg.state) {
                (None, LegState::Gone) => {}
                (None, _) if leg.is_dialled() => out.push(FabricCommand::Dial {
                    leg: at,
                    peer: peer.clone(),
                    via: self.transferee_of(leg),
                }),
                // Another bot calling, let in without an answer of its own (a redirect target
                // answered for it): its end of the call connects too.
                (Some(w), LegState::Connected)
                    if w.state == LegState::Ringing && !w.is_dialled() && peer.kind.is_bot() =>
                {
                    out.push(FabricCommand::Accept {
                        leg: at,
                        peer: peer.clone(),
                    })
                }
                (None, _) => out.push(FabricCommand::Attach {
                    leg: at,
                    peer: peer.clone(),
                }),
                (Some(w), LegState::Gone) if w.is_live() && !heard.contains(&leg.id) => {
                    out.push(if w.state == LegState::Ringing {
                        FabricCommand::Cancel {
                            leg: at,
                            peer: peer.clone(),
                            reason: leg.result.unwrap_or(EndReason::BOT_HANG_UP),
                        }
                    } else {
                        FabricCommand::HangUp {
                            leg: at,
                            peer: peer.clone(),
                            reason: leg.result.unwrap_or(EndReason::BOT_HANG_UP),
                        }
                    })
                }
                _ => {}
            }
        }
        out
    }

    /// For a transfer target rung in a peer-to-peer call, the party being transferred, when the
    /// fabric holds its signalling (it can be asked to call the target itself).
    pub fn transferee_of(&self, target: &Leg) -> Option<LegRef> {
        if !matches!(target.purpose, Purpose::Dial { .. }) || self.kind != Kind::PeerToPeer {
            return None;
        }
        let t = self.legs.iter().find(|l| {
            l.id != target.id && l.dialog && l.state == LegState::Connected && l.party().is_some()
        })?;
        Some(LegRef {
            conversation: self.id,
            leg: t.id,
        })
    }

    fn touch(&mut self, i: usize) {
        self.roster_sequence += 1;
        self.legs[i].roster_sequence = self.roster_sequence;
    }

    fn gone(&mut self, i: usize, result: EndReason) -> Vec<Effect> {
        let leg = &mut self.legs[i];
        leg.state = LegState::Gone;
        leg.result = Some(result);
        leg.on_hold = false;
        leg.stop_ringing();
        self.touch(i);
        match self.legs[i].who {
            Who::Party(_) => vec![Effect::PartyGone(Box::new(self.legs[i].clone()))],
            Who::Bot { .. } => vec![],
        }
    }

    /// Callers waiting for a bot to answer are let in.
    fn let_callers_in(&mut self) {
        for i in 0..self.legs.len() {
            let l = &self.legs[i];
            if l.state == LegState::Ringing && l.party().is_some() && !l.is_dialled() {
                self.legs[i].state = LegState::Connected;
                self.touch(i);
            }
        }
    }

    /// A party answered.
    pub fn connect(&mut self, i: usize) -> Vec<Effect> {
        self.legs[i].state = LegState::Connected;
        self.legs[i].stop_ringing();
        self.touch(i);
        let mut out = vec![];
        match self.legs[i].purpose.clone() {
            Purpose::Member => {
                self.anyone_joined = true;
                for call in self.waiting_bots() {
                    out.push(Effect::Call(call, Event::Answered));
                }
            }
            Purpose::Invite(inv) => {
                self.anyone_joined = true;
                if let Purpose::Invite(mine) = &mut self.legs[i].purpose {
                    mine.outcome = Some(Ok(()));
                }
                out.extend(inv.replaces.map(Effect::Replaced));
                out.extend(self.invite_outcome(inv.call_id, &inv.op_id));
            }
            Purpose::Dial { call_id } => {
                self.let_callers_in();
                // The first target to answer wins; the others stop ringing.
                for j in 0..self.legs.len() {
                    if j != i
                        && self.legs[j].state == LegState::Ringing
                        && self.legs[j].purpose == (Purpose::Dial { call_id })
                    {
                        out.extend(self.gone(j, EndReason::BOT_HANG_UP));
                    }
                }
                out.push(Effect::Call(call_id, Event::DialAnswered));
            }
        }
        if self.is_group() {
            out.push(Effect::Roster);
        }
        out
    }

    /// Bots whose calls wait for a party to answer (an outgoing call's creator).
    fn waiting_bots(&self) -> Vec<CallId> {
        self.legs
            .iter()
            .filter(|l| l.state == LegState::Ringing)
            .filter_map(Leg::bot_call)
            .collect()
    }

    /// A party being rung did not join: it declined, could not be reached, or rang out.
    pub fn fail(&mut self, i: usize, reason: EndReason) -> Vec<Effect> {
        let purpose = self.legs[i].purpose.clone();
        // A caller (not dialled) whose call fails before it was let in: it cancelled, or never
        // acknowledged the bot's answer.
        let caller = !self.legs[i].is_dialled();
        let mut out = self.gone(i, reason);
        match purpose {
            Purpose::Member => {
                let someone_left = self.legs.iter().any(|l| l.is_live() && l.party().is_some());
                match self.kind {
                    Kind::PeerToPeer if caller => {
                        for call in self.bot_calls().collect::<Vec<_>>() {
                            out.push(Effect::Call(call, Event::Failed(reason)));
                        }
                    }
                    Kind::PeerToPeer => {
                        for call in self.waiting_bots() {
                            out.push(Effect::Call(call, Event::SetupFailed(reason)));
                        }
                    }
                    _ if !self.anyone_joined && !someone_left => {
                        for call in self.waiting_bots() {
                            out.push(Effect::Call(call, Event::Failed(EndReason::NOBODY_JOINED)));
                        }
                    }
                    _ => {}
                }
            }
            Purpose::Invite(inv) => {
                if let Purpose::Invite(mine) = &mut self.legs[i].purpose {
                    mine.outcome = Some(Err(reason));
                }
                out.extend(self.invite_outcome(inv.call_id, &inv.op_id))
            }
            Purpose::Dial { call_id } => {
                let others_ring = self.legs.iter().any(|l| {
                    l.state == LegState::Ringing && l.purpose == (Purpose::Dial { call_id })
                });
                if !others_ring {
                    out.push(Effect::Call(call_id, Event::DialFailed(reason)));
                }
            }
        }
        // The last one still ringing for a bot that everyone else had left did not come.
        if self.is_group() {
            out.extend(self.alone_bots());
            out.extend(self.wind_down());
        }
        out
    }

    /// The invite's outcome once none of its invitees rings any more: joined, or the first
    /// reason one did not (the bot removing a ringing invitee cancels the invite).
    fn invite_outcome(&self, call_id: CallId, op_id: &str) -> Option<Effect> {
        let mut outcome = Ok(());
        for l in &self.legs {
            let Purpose::Invite(inv) = &l.purpose else {
                continue;
            };
            if inv.op_id != op_id {
                continue;
            }
            match inv.outcome? {
                Err(r) if outcome.is_ok() => {
                    outcome = Err(if r == EndReason::REMOVED {
                        results::CANCELLED
                    } else {
                        r
                    })
                }
                _ => {}
            }
        }
        Some(Effect::InviteDone {
            call_id,
            op_id: op_id.to_string(),
            outcome,
        })
    }

    /// A group call with no bot left: those still ringing stop, and a party left alone ends.
    fn wind_down(&mut self) -> Vec<Effect> {
        if self.kind != Kind::Group || self.bot_calls().next().is_some() {
            return vec![];
        }
        let mut out = vec![];
        for j in 0..self.legs.len() {
            if self.legs[j].state == LegState::Ringing {
                out.extend(self.gone(j, EndReason::BOT_HANG_UP));
            }
        }
        let connected: Vec<usize> = (0..self.legs.len())
            .filter(|&j| self.legs[j].state == LegState::Connected)
            .collect();
        if connected.len() == 1 {
            out.extend(self.gone(connected[0], EndReason::EVERYONE_LEFT));
        }
        out
    }

    /// A party hangs up: `result` is what its own leg ends with.
    pub fn leave(&mut self, i: usize, result: EndReason) -> Vec<Effect> {
        if self.legs[i].is_dialled() {
            return self.fail(i, EndReason::DECLINED);
        }
        let mut out = self.gone(i, result);
        match self.kind {
            Kind::PeerToPeer => {
                let bots: Vec<CallId> = self.bot_calls().collect();
                if bots.is_empty() {
                    // Two parties left talking after a transfer: the other one is alone now.
                    for j in 0..self.legs.len() {
                        if self.legs[j].is_live() {
                            out.extend(self.gone(j, EndReason::PEER_HANG_UP));
                        }
                    }
                }
                for call in bots {
                    out.push(Effect::Call(call, Event::PeerHungUp(result)));
                }
            }
            _ => {
                out.push(Effect::Roster);
                out.extend(self.alone_bots());
                out.extend(self.wind_down());
            }
        }
        out
    }

    /// Bots with nobody else left in a group call or meeting end with 5002.
    fn alone_bots(&self) -> Vec<Effect> {
        let live = self.legs.iter().filter(|l| l.is_live()).count();
        if live != 1 {
            return vec![];
        }
        self.legs
            .iter()
            .filter(|l| l.state == LegState::Connected)
            .filter_map(Leg::bot_call)
            .map(|c| Effect::Call(c, Event::Failed(EndReason::EVERYONE_LEFT)))
            .collect()
    }

    /// A bot removes a participant (`DELETE .../participants/{id}`).
    pub fn remove(&mut self, i: usize) -> Vec<Effect> {
        if let Some(call) = self.legs[i].bot_call() {
            return vec![Effect::Call(call, Event::Failed(EndReason::REMOVED))];
        }
        if self.legs[i].state == LegState::Ringing {
            // A pending invite is cancelled.
            return self.fail(i, EndReason::REMOVED);
        }
        let mut out = self.gone(i, EndReason::REMOVED);
        out.push(Effect::Roster);
        out.extend(self.alone_bots());
        out.extend(self.wind_down());
        out
    }

    /// A participant is muted or unmuted.
    pub fn set_muted(&mut self, i: usize, muted: bool) -> Vec<Effect> {
        self.legs[i].muted = muted;
        self.touch(i);
        vec![Effect::Roster]
    }

    /// A bot's call connected.
    pub fn bot_connected(&mut self, call: CallId) -> Vec<Effect> {
        let Some(i) = self.bot_leg(call) else {
            return vec![];
        };
        self.legs[i].state = LegState::Connected;
        self.touch(i);
        if self.is_group() {
            vec![Effect::Roster]
        } else {
            self.let_callers_in();
            vec![]
        }
    }

    /// A bot's call ended with `result`: its leg goes, and in a peer-to-peer conversation the
    /// party's too, unless a transfer or redirect left two parties talking.
    pub fn bot_left(&mut self, call: CallId, result: EndReason) -> Vec<Effect> {
        let Some(i) = self.bot_leg(call) else {
            return vec![];
        };
        let mut out = self.gone(i, result);
        // Transfer or redirect targets still ringing for this call stop.
        for j in 0..self.legs.len() {
            if self.legs[j].state == LegState::Ringing
                && self.legs[j].purpose == (Purpose::Dial { call_id: call })
            {
                out.extend(self.gone(j, result));
            }
        }
        match self.kind {
            Kind::PeerToPeer => {
                let connected = self
                    .legs
                    .iter()
                    .filter(|l| l.state == LegState::Connected)
                    .count();
                if connected < 2 {
                    for j in 0..self.legs.len() {
                        if self.legs[j].is_live() {
                            out.extend(self.gone(j, result));
                        }
                    }
                }
            }
            _ => {
                out.push(Effect::Roster);
                out.extend(self.alone_bots());
                out.extend(self.wind_down());
            }
        }
        out
    }

    /// A participant waits in the meeting's lobby (a guest, or a party the meeting holds there).
    pub fn to_lobby(&mut self, i: usize) -> Vec<Effect> {
        self.legs[i].state = LegState::Lobby;
        self.touch(i);
        vec![Effect::Roster]
    }

    /// Only a participant waiting in the lobby is admitted.
    pub fn may_admit(&self, i: usize) -> Result<(), Refusal> {
        match self.legs[i].state {
            LegState::Lobby => Ok(()),
            _ => Err(Refusal::NotInLobby),
        }
    }

    /// A participant in the lobby is let in: a party joins at once, a bot's call connects.
    pub fn admit(&mut self, i: usize) -> Vec<Effect> {
        if let Some(call) = self.legs[i].bot_call() {
            return vec![Effect::Call(call, Event::Answered)];
        }
        self.legs[i].state = LegState::Connected;
        self.anyone_joined = true;
        self.touch(i);
        vec![Effect::Roster]
    }

    /// Hold music starts or stops for a participant (its stream turns receive-only).
    pub fn set_on_hold(&mut self, i: usize, on_hold: bool) -> Vec<Effect> {
        self.legs[i].on_hold = on_hold;
        self.touch(i);
        vec![Effect::Roster]
    }
}

/// A party of this kind joins as this identity key in a roster (`user`, `phone`,
/// `application`, `applicationInstance`).
pub fn identity_key(kind: PartyKind) -> &'static str {
    match kind {
        PartyKind::User => "user",
        PartyKind::Phone => "phone",
        PartyKind::Application => "application",
        PartyKind::ApplicationInstance => "applicationInstance",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Direction;
    use crate::call::{Call, Rules};
    use crate::operation::{OpKind, OpStatus, Operation};
    use chrono::Duration;
    use proptest::prelude::*;

    fn user(n: u8) -> Peer {
        Peer {
            id: format!("user-{n}"),
            kind: PartyKind::User,
        }
    }

    /// How a target responds: answers after s seconds, or fails with a reason after s.
    type Plan = Result<i64, (i64, EndReason)>;

    /// A bot's outgoing call ringing `targets` (user number, plan).
    fn placed(kind: Kind, targets: &[(u8, Plan)]) -> (Scene, CallId) {
        let now = chrono::Utc::now();
        let cb = "https://bot.example/cb".to_string();
        let call = Call::new(
            "app",
            "t",
            Direction::Outgoing,
            CallState::Establishing,
            cb,
            now,
        );
        let id = call.id;
        let mut conv = Conversation::new(id, kind, now);
        let bot = Leg::new(
            call.my_participant_id,
            Who::Bot { call_id: id },
            LegState::Ringing,
        );
        conv.add(bot);
        for (n, plan) in targets {
            let mut leg = Leg::new(Uuid::new_v4(), Who::Party(user(*n)), LegState::Ringing);
            let deadline = now + Duration::seconds(60);
            match plan {
                Ok(s) => leg.start_ringing(Some(now + Duration::seconds(*s)), None, deadline),
                Err((s, r)) => {
                    leg.start_ringing(None, Some((now + Duration::seconds(*s), *r)), deadline)
                }
            }
            conv.add(leg);
        }
        (Scene::new(conv, vec![call]), id)
    }

    fn at(scene: &Scene, secs: i64) -> Timestamp {
        scene.conversation.created_at + Duration::seconds(secs)
    }

    fn run(scene: &mut Scene, secs: i64) {
        let now = at(scene, secs);
        scene.run_due(now, &Rules::default());
        scene.settle();
    }

    fn call(scene: &Scene, id: CallId) -> &Call {
        scene.call(id).unwrap()
    }

    fn rosters(scene: &Scene) -> usize {
        scene
            .out
            .iter()
            .filter(|(_, e)| matches!(e, Emit::Roster { .. }))
            .count()
    }

    fn hang_up(scene: &mut Scene, n: u8, secs: i64) {
        let now = at(scene, secs);
        let legs: Vec<Uuid> = scene
            .conversation
            .party_legs(&party_key(&user(n).id))
            .map(|i| scene.conversation.legs[i].id)
            .collect();
        for leg in legs {
            scene.leg_hangs_up(leg, now, &Rules::default());
        }
        scene.settle();
    }

    /// Invites user `n`, who rings and never answers; gives its leg.
    fn invite_silent(s: &mut Scene, id: CallId, n: u8) -> usize {
        let mut op = Operation::new("op".into(), OpKind::InviteParticipants, None);
        op.status = OpStatus::Running;
        s.call_mut(id).unwrap().operations.push(op);
        let mut leg = Leg::new(Uuid::new_v4(), Who::Party(user(n)), LegState::Ringing);
        leg.purpose = Purpose::Invite(Box::new(Invite {
            call_id: id,
            op_id: "op".into(),
            replaces: None,
            outcome: None,
        }));
        leg.start_ringing(None, None, at(s, 60));
        s.conversation.add(leg)
    }

    #[test]
    fn the_request_rules_refuse_with_a_reason_a_client_can_act_on() {
        // A group call with users 1 and 2 up, 3 ringing.
        let (mut s, id) = placed(Kind::Group, &[(1, Ok(1)), (2, Ok(1)), (3, Ok(60))]);
        let c = &s.conversation;
        assert_eq!(
            call(&s, id).must_be_up("muteParticipantOperation"),
            Err(Refusal::NotUp {
                what: "muteParticipantOperation",
                state: CallState::Establishing
            })
        );
        assert_eq!(
            c.may_invite(["user-4", "USER-4"]),
            Err(Refusal::InvitedTwice("USER-4".into())),
            "the same identity in any case"
        );
        assert_eq!(
            c.may_invite(["user-1"]),
            Err(Refusal::AlreadyInCall("user-1".into()))
        );
        assert_eq!(c.may_invite(["user-4", "user-5"]), Ok(()));
        run(&mut s, 1);
        assert_eq!(call(&s, id).must_be_up("muteParticipantOperation"), Ok(()));
        let leg = |s: &Scene, n: u8| {
            s.conversation
                .party_legs(&party_key(&user(n).id))
                .next()
                .unwrap()
        };
        let (one, two, three) = (leg(&s, 1), leg(&s, 2), leg(&s, 3));
        assert_eq!(
            s.conversation.must_have_joined(three),
            Err(Refusal::NotJoined)
        );
        assert_eq!(
            s.conversation.may_hold(three, true),
            Err(Refusal::HoldMusicNotForParty)
        );
        assert_eq!(s.conversation.may_hold(one, false), Err(Refusal::NotOnHold));
        assert_eq!(s.conversation.may_hold(one, true), Ok(()));
        let now = at(&s, 2);
        s.change_leg(|c| c.set_on_hold(one, true), now, &Rules::default());
        assert_eq!(
            s.conversation.may_hold(two, true),
            Err(Refusal::AnotherOnHold)
        );
        assert_eq!(s.conversation.may_hold(one, false), Ok(()));
        let taken = s.conversation.legs[one].id;
        assert_eq!(
            s.conversation.may_take_id(taken),
            Err(Refusal::ParticipantIdTaken(taken))
        );
        let (p2p, _) = placed(Kind::PeerToPeer, &[(1, Ok(1))]);
        assert_eq!(
            p2p.conversation.must_be_group("Muting a participant"),
            Err(Refusal::NotGroup {
                what: "Muting a participant"
            })
        );
        let mut media = call(&s, id).clone();
        media.app_hosted_media = true;
        assert_eq!(
            media.may_operate(OpKind::PlayPrompt),
            Err(Refusal::AppHostedMedia)
        );
        assert_eq!(
            media.may_operate(OpKind::Mute),
            Ok(()),
            "not a media action"
        );
        assert_eq!(media.must_be_incoming(), Err(Refusal::NotIncoming));
    }

    #[test]
    fn a_peer_to_peer_call_is_up_when_the_party_answers_and_ends_when_it_hangs_up() {
        let (mut s, id) = placed(Kind::PeerToPeer, &[(1, Ok(2))]);
        run(&mut s, 1);
        assert_eq!(call(&s, id).state, CallState::Establishing);
        run(&mut s, 2);
        assert_eq!(call(&s, id).state, CallState::Established);
        assert_eq!(rosters(&s), 0, "no roster for a peer-to-peer call");
        hang_up(&mut s, 1, 10);
        assert_eq!(call(&s, id).state, CallState::Terminated);
        assert_eq!(call(&s, id).result, Some(EndReason::PEER_HANG_UP));
        assert!(s.conversation.is_over());
        assert_eq!(s.gone.len(), 1, "the party's view keeps its ended leg");
    }

    #[test]
    fn a_group_call_nobody_joins_ends_with_5013_once_the_last_target_gives_up() {
        let busy = Err((0, EndReason::BUSY));
        let (mut s, id) = placed(
            Kind::Group,
            &[(1, busy), (2, Err((90, EndReason::DECLINED)))],
        );
        run(&mut s, 1);
        assert!(call(&s, id).state.is_live(), "one target still rings");
        run(&mut s, 60);
        assert_eq!(call(&s, id).result, Some(EndReason::NOBODY_JOINED));
        assert!(s.conversation.is_over());
    }

    #[test]
    fn a_group_call_goes_on_while_anyone_else_is_in_it_then_ends_with_5002() {
        let (mut s, id) = placed(Kind::Group, &[(1, Ok(1)), (2, Ok(3))]);
        run(&mut s, 1);
        assert_eq!(call(&s, id).state, CallState::Established);
        run(&mut s, 3);
        let before = rosters(&s);
        hang_up(&mut s, 1, 5);
        assert!(rosters(&s) > before, "the bot hears who left");
        assert_eq!(call(&s, id).state, CallState::Established);
        hang_up(&mut s, 2, 6);
        assert_eq!(call(&s, id).result, Some(EndReason::EVERYONE_LEFT));
    }

    #[test]
    fn the_bot_leaving_a_group_call_leaves_the_others_in_it() {
        let (mut s, id) = placed(Kind::Group, &[(1, Ok(0)), (2, Ok(0))]);
        run(&mut s, 0);
        let now = at(&s, 1);
        s.apply(id, Event::BotHungUp, now, &Rules::default())
            .unwrap();
        assert_eq!(call(&s, id).result, Some(EndReason::BOT_HANG_UP));
        assert!(!s.conversation.is_over());
        let connected = s
            .conversation
            .legs
            .iter()
            .filter(|l| l.state == LegState::Connected)
            .count();
        assert_eq!(connected, 2);
    }

    #[test]
    fn removing_a_ringing_invitee_cancels_its_invite() {
        let (mut s, id) = placed(Kind::Group, &[(1, Ok(0)), (2, Ok(0))]);
        run(&mut s, 0);
        let i = invite_silent(&mut s, id, 3);
        s.change_leg(|c| c.remove(i), at(&s, 1), &Rules::default());
        assert_eq!(
            finished_invites(&s),
            vec![(OpStatus::Failed, Some(results::CANCELLED))]
        );
    }

    #[test]
    fn a_bot_left_alone_with_an_invitee_ringing_ends_with_5002_when_it_does_not_come() {
        let (mut s, id) = placed(Kind::Group, &[(1, Ok(0)), (2, Ok(0))]);
        run(&mut s, 0);
        invite_silent(&mut s, id, 3);
        hang_up(&mut s, 1, 5);
        hang_up(&mut s, 2, 6);
        assert_eq!(
            call(&s, id).state,
            CallState::Established,
            "the invitee may still come"
        );
        run(&mut s, 60);
        assert_eq!(call(&s, id).result, Some(EndReason::EVERYONE_LEFT));
    }

    fn finished_invites(s: &Scene) -> Vec<(OpStatus, Option<EndReason>)> {
        s.out
            .iter()
            .filter_map(|(_, e)| match e {
                Emit::Operation(op) => Some((op.status, op.result)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_invite_whose_invitees_all_joined_completes_even_if_one_has_left_since() {
        let (mut s, id) = placed(Kind::Group, &[(1, Ok(0))]);
        run(&mut s, 0);
        let first = invite_silent(&mut s, id, 2);
        let second = invite_silent(&mut s, id, 3);
        let rules = Rules::default();
        s.change_leg(|c| c.connect(first), at(&s, 1), &rules);
        hang_up(&mut s, 2, 2);
        assert!(finished_invites(&s).is_empty(), "one invitee still rings");
        s.change_leg(|c| c.connect(second), at(&s, 3), &rules);
        assert_eq!(
            finished_invites(&s),
            vec![(OpStatus::Completed, Some(results::COMPLETED))]
        );
        s.conversation.compact();
        assert_eq!(s.conversation.legs.len(), 3, "gone legs are dropped");
    }

    #[test]
    fn a_group_call_the_bot_left_stops_ringing_and_ends_a_party_left_alone() {
        let (mut s, id) = placed(Kind::Group, &[(1, Ok(0)), (2, Ok(0)), (3, Ok(30))]);
        run(&mut s, 0);
        s.apply(id, Event::BotHungUp, at(&s, 1), &Rules::default())
            .unwrap();
        let ringing = s
            .gone
            .iter()
            .filter(|l| l.party() == Some(&user(3)))
            .count();
        assert_eq!(ringing, 1, "the target still ringing is stopped");
        hang_up(&mut s, 1, 2);
        assert!(
            s.conversation.is_over(),
            "the last party is not left alone in it"
        );
        let last = s.gone.last().unwrap();
        assert_eq!(last.party(), Some(&user(2)));
        assert_eq!(last.result, Some(EndReason::EVERYONE_LEFT));
    }

    /// The commands a change sends to the fabric, by kind and party number.
    fn commands(s: &mut Scene, before: Option<&Conversation>) -> Vec<(&'static str, String)> {
        s.take_commands(before)
            .iter()
            .map(|c| {
                let kind = match c {
                    FabricCommand::Dial { .. } => "dial",
                    FabricCommand::Attach { .. } => "attach",
                    FabricCommand::Cancel { .. } => "cancel",
                    FabricCommand::Accept { .. } => "accept",
                    FabricCommand::Redirect { .. } => "redirect",
                    FabricCommand::HangUp { .. } => "hangUp",
                    FabricCommand::SendDtmf { .. } => "sendDtmf",
                    FabricCommand::Play { .. } => "play",
                    FabricCommand::Record { .. } => "record",
                    FabricCommand::StopMedia { .. } => "stopMedia",
                    FabricCommand::Mute { .. } => "mute",
                    FabricCommand::HoldMusic { .. } => "holdMusic",
                };
                (kind, c.peer().id.clone())
            })
            .collect()
    }

    #[test]
    fn the_fabric_is_told_to_ring_cancel_and_hang_up_but_not_about_what_it_reported() {
        // User 1 answers at 1 s, user 2 is busy at 1 s, user 3 rings until the 60 s timeout.
        let busy = (1, EndReason::BUSY);
        let (mut s, id) = placed(Kind::Group, &[(1, Ok(1)), (2, Err(busy)), (3, Ok(90))]);
        let dialled = commands(&mut s, None);
        let want = |k: &'static str, ns: &[u8]| -> Vec<(&'static str, String)> {
            ns.iter().map(|n| (k, user(*n).id)).collect()
        };
        assert_eq!(dialled, want("dial", &[1, 2, 3]), "each target is rung");
        let step = |s: &mut Scene, f: &dyn Fn(&mut Scene)| {
            let before = s.conversation.clone();
            s.heard.clear();
            f(s);
            commands(s, Some(&before))
        };
        let answered_and_busy = step(&mut s, &|s| run(s, 1));
        assert_eq!(
            answered_and_busy,
            vec![],
            "the party's own answer and decline"
        );
        let timed_out = step(&mut s, &|s| run(s, 60));
        assert_eq!(timed_out, want("cancel", &[3]), "ringing timed out");
        s.to_parties(|leg, peer| {
            Some(FabricCommand::SendDtmf {
                leg,
                peer,
                keys: "12".into(),
                gap_ms: 100,
            })
        });
        let tones = step(&mut s, &|_| {});
        assert_eq!(
            tones,
            want("sendDtmf", &[1]),
            "only a connected party hears"
        );
        let bot_left = step(&mut s, &|s| {
            s.apply(id, Event::BotHungUp, at(s, 70), &Rules::default())
                .unwrap();
        });
        assert_eq!(
            bot_left,
            want("hangUp", &[1]),
            "user 1, left alone, is hung up on"
        );

        // A peer-to-peer call: the party hanging up is not told to hang up; the bot's is.
        for bot_hangs_up in [false, true] {
            let (mut s, id) = placed(Kind::PeerToPeer, &[(1, Ok(0))]);
            run(&mut s, 0);
            let ended = step(&mut s, &|s| {
                if bot_hangs_up {
                    s.apply(id, Event::BotHungUp, at(s, 5), &Rules::default())
                        .unwrap();
                } else {
                    hang_up(s, 1, 5);
                }
            });
            let want = if bot_hangs_up {
                want("hangUp", &[1])
            } else {
                vec![]
            };
            assert_eq!(ended, want, "bot hangs up: {bot_hangs_up}");
        }
    }

    #[test]
    fn after_a_transfer_the_two_parties_talk_on_until_one_hangs_up() {
        let (mut s, id) = placed(Kind::PeerToPeer, &[(1, Ok(0))]);
        run(&mut s, 0);
        let now = at(&s, 1);
        let mut target = Leg::new(Uuid::new_v4(), Who::Party(user(2)), LegState::Ringing);
        target.purpose = Purpose::Dial { call_id: id };
        target.start_ringing(Some(at(&s, 3)), None, at(&s, 60));
        s.conversation.add(target);
        s.apply(id, Event::TransferRequested, now, &Rules::default())
            .unwrap();
        run(&mut s, 3);
        assert_eq!(call(&s, id).result, Some(EndReason::TRANSFERRED));
        assert!(!s.conversation.is_over());
        hang_up(&mut s, 2, 10);
        assert!(s.conversation.is_over());
        let results: Vec<_> = s.gone.iter().map(|l| l.result).collect();
        assert_eq!(
            results,
            vec![Some(EndReason::PEER_HANG_UP), Some(EndReason::PEER_HANG_UP)]
        );
    }

    /// Something that can happen in a conversation, for the property below.
    #[derive(Clone, Debug)]
    enum Step {
        Clock(i64),
        HangUp(u8),
        Remove(usize),
        BotHangsUp,
        KeepAliveExpires,
        Mute(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0i64..70).prop_map(Step::Clock),
            (1u8..4).prop_map(Step::HangUp),
            (0usize..5).prop_map(Step::Remove),
            Just(Step::BotHangsUp),
            Just(Step::KeepAliveExpires),
            (0usize..5).prop_map(Step::Mute),
        ]
    }

    fn plan() -> impl Strategy<Value = Plan> {
        prop_oneof![
            (0i64..80).prop_map(Ok),
            (0i64..10).prop_map(|s| Err((s, EndReason::BUSY))),
        ]
    }

    proptest! {
        /// Whatever happens, the bot's call and its leg agree (live together, ended together),
        /// a call ends at most once, and a conversation is over exactly when nobody is left.
        #[test]
        fn calls_and_legs_always_agree(
            group in any::<bool>(),
            plans in prop::collection::vec(plan(), 1..4),
            steps in prop::collection::vec(step(), 0..25),
        ) {
            let kind = if group || plans.len() > 1 { Kind::Group } else { Kind::PeerToPeer };
            let targets: Vec<_> = plans.into_iter().enumerate().map(|(i, p)| (i as u8 + 1, p)).collect();
            let p2p = kind == Kind::PeerToPeer;
            let (mut s, id) = placed(kind, &targets);
            let rules = Rules::default();
            let mut clock = 0;
            for st in steps {
                let now = at(&s, clock);
                match st {
                    Step::Clock(d) => { clock += d; run(&mut s, clock); }
                    Step::HangUp(n) => hang_up(&mut s, n, clock),
                    Step::Remove(i) if i < s.conversation.legs.len()
                        && s.conversation.legs[i].is_live()
                        && s.conversation.is_group() => {
                        s.change_leg(|c| c.remove(i), now, &rules);
                    }
                    Step::Mute(i) if i < s.conversation.legs.len() && s.conversation.legs[i].is_live() => {
                        s.change_leg(|c| c.set_muted(i, true), now, &rules);
                    }
                    Step::BotHangsUp => { let _ = s.apply(id, Event::BotHungUp, now, &rules); }
                    Step::KeepAliveExpires => { let _ = s.apply(id, Event::KeepAliveExpired, now, &rules); }
                    _ => {}
                }
                s.settle();
                let c = call(&s, id);
                let leg_live = s.conversation.legs.iter().any(|l| l.bot_call() == Some(id) && l.is_live());
                prop_assert_eq!(c.state.is_live(), leg_live, "call {:?} vs its leg", c.state);
                let ends = s.out.iter().filter(|(_, e)| matches!(e, Emit::State(n) if n.state == CallState::Terminated)).count();
                prop_assert!(ends <= 1);
                prop_assert_eq!(s.conversation.is_over(), !s.conversation.legs.iter().any(Leg::is_live));
                if p2p && !c.state.is_live() {
                    prop_assert!(s.conversation.is_over(), "a P2P call's party goes with the bot");
                }
            }
        }
    }
}
