//! The engine's live registry: what memory holds between two changes.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;

use super::Engine;
use super::views::PartyLeg;
use crate::clock::Timestamp;
use crate::config::MeetingConfig;
use crate::domain::conversation::{Conversation, Kind, Leg, LegState, Scene, Who};
use crate::domain::operation::Recording;
use crate::domain::{Call, CallId, PartyKind, Peer};
use crate::fabric::Fabric;
use crate::store::committer::Pending;
use crate::store::scenes::{CallRef, SceneTx};
use crate::store::{Snapshot, StoreError};
use uuid::Uuid;

/// How many ended call legs are remembered for `GET /_switchboard/v1/parties/{id}`.
pub(super) const ENDED_MEMORY: usize = 10_000;

pub(super) struct State {
    /// Boxed: a call is a few hundred bytes, and a map of boxes wastes less on empty slots.
    pub(super) calls: HashMap<CallId, Box<Call>>,
    pub(super) conversations: HashMap<CallId, Box<Conversation>>,
    /// Meetings by join id: (conversation, passcode).
    pub(super) meetings: HashMap<String, (CallId, Option<String>)>,
    /// (due time, conversation) for every conversation with a pending timer, ring or operation.
    pub(super) timers: BTreeSet<(Timestamp, CallId)>,
    /// When each conversation in `timers` is due (the index's other direction).
    pub(super) due: HashMap<CallId, Timestamp>,
    pub(super) live_per_app: HashMap<String, usize>,
    /// App and tenant ids, shared by the calls that name them.
    pub(super) names: HashSet<Arc<str>>,
    /// Party legs that ended (party key, leg, the ticket of the change that ended it).
    pub(super) ended: VecDeque<(String, PartyLeg, u64)>,
    /// Finished recordings by operation id, with the ticket of the change that made them.
    pub(super) recordings: HashMap<String, (Recording, u64)>,
    /// Recording ids, oldest first, so that the oldest are dropped past [`RECORDINGS_KEPT`].
    pub(super) recording_order: VecDeque<String>,
    /// Conversation -> the ticket of the last change staged for it, while it may not be settled:
    /// a reader waits for it before answering (see [`Committer::durable`]).
    pub(super) pending: HashMap<CallId, u64>,
}

/// Settled tickets are dropped from `State::pending` once it holds this many.
pub(super) const PENDING_SWEEP: usize = 1024;

/// How many finished recordings are kept for download.
pub(super) const RECORDINGS_KEPT: usize = 10_000;

impl State {
    /// The state a snapshot of the store holds, with the configured meetings (a meeting that was
    /// never stored starts as configured).
    pub(super) fn build(
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
            due: HashMap::new(),
            live_per_app: HashMap::new(),
            names: HashSet::new(),
            ended: VecDeque::new(),
            recordings: HashMap::new(),
            pending: HashMap::new(),
            recording_order: VecDeque::new(),
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
                    let lobby = m.lobby.iter().map(|p| (p, true));
                    for (p, waits) in m.parties.iter().map(|p| (p, false)).chain(lobby) {
                        let info = fabric.party(p);
                        let peer = Peer {
                            id: p.clone(),
                            kind: info.as_ref().map_or(PartyKind::User, |i| i.kind),
                        };
                        let mut leg =
                            Leg::new(Uuid::new_v4(), Who::Party(peer), LegState::Connected);
                        if waits {
                            leg.state = LegState::Lobby;
                        }
                        c.add(leg);
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
    pub(super) fn scene(&self, id: CallId) -> Option<Scene> {
        let conv = self.conversations.get(&id)?;
        let calls = conv
            .bot_calls()
            .filter_map(|c| self.calls.get(&c))
            .map(|c| Call::clone(c))
            .collect();
        Some(Scene::new(Conversation::clone(conv), calls))
    }

    /// Makes the call hold the app's and tenant's ids that every other call of theirs holds.
    pub(super) fn share_names(&mut self, call: &mut Call) {
        for name in [&mut call.app_id, &mut call.tenant_id] {
            match self.names.get(&**name) {
                Some(shared) => *name = shared.clone(),
                None => {
                    self.names.insert(name.clone());
                }
            }
        }
    }

    /// Sets when a conversation is next due (`None`: nothing pending); `true` if that changed.
    pub(super) fn schedule(&mut self, id: CallId, due: Option<Timestamp>) -> bool {
        let old = match due {
            Some(t) => self.due.insert(id, t),
            None => self.due.remove(&id),
        };
        if old == due {
            return false;
        }
        if let Some(old) = old {
            self.timers.remove(&(old, id));
        }
        if let Some(t) = due {
            self.timers.insert((t, id));
        }
        true
    }

    /// The ticket a reader of this conversation waits for (0: nothing pending).
    pub(super) fn ticket_of(&self, conv: CallId) -> u64 {
        self.pending.get(&conv).copied().unwrap_or(0)
    }

    /// Gives the memory-only views this change made (ended legs and recordings, the newest
    /// without a ticket) the change's ticket.
    pub(super) fn ticket_views(&mut self, ticket: u64) {
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

    pub(super) fn remember(&mut self, party: String, leg: PartyLeg) {
        if self.ended.len() >= ENDED_MEMORY {
            self.ended.pop_front();
        }
        // Its ticket once the change is submitted (`Engine::stage`).
        self.ended.push_back((party, leg, 0));
    }

    pub(super) fn keep_recording(&mut self, op_id: &str, rec: &Recording) {
        if self.recording_order.len() >= RECORDINGS_KEPT
            && let Some(oldest) = self.recording_order.pop_front()
        {
            self.recordings.remove(&oldest);
        }
        self.recording_order.push_back(op_id.to_string());
        // Its ticket once the change is submitted (`Engine::stage`).
        self.recordings.insert(op_id.to_string(), (rec.clone(), 0));
    }
}

/// The local [`SceneTx`]: the live registry under the engine lock, staged through the group
/// committer. The lock is held until [`SceneTx::stage`] (or until it is dropped).
pub(super) struct LocalTx<'a> {
    pub(super) st: tokio::sync::MutexGuard<'a, State>,
    pub(super) engine: &'a Engine,
}

#[async_trait]
impl SceneTx for LocalTx<'_> {
    async fn call(&mut self, id: CallId) -> Result<Option<CallRef>, StoreError> {
        Ok(self.st.calls.get(&id).map(|c| CallRef {
            conversation: c.conversation,
            app_id: c.app_id.clone(),
            live: c.state.is_live(),
        }))
    }

    async fn scene(&mut self, conversation: CallId) -> Result<Option<Scene>, StoreError> {
        Ok(self.st.scene(conversation))
    }

    async fn live_calls(&mut self, app_id: &str) -> Result<usize, StoreError> {
        Ok(self.st.live_per_app.get(app_id).copied().unwrap_or(0))
    }

    async fn meeting(
        &mut self,
        join_meeting_id: &str,
    ) -> Result<Option<(CallId, Option<String>)>, StoreError> {
        Ok(self.st.meetings.get(join_meeting_id).cloned())
    }

    async fn due(&mut self, now: Timestamp) -> Result<Vec<CallId>, StoreError> {
        let st = &mut *self.st;
        let due: Vec<(Timestamp, CallId)> = st
            .timers
            .iter()
            .take_while(|(t, _)| *t <= now)
            .copied()
            .collect();
        let mut out = Vec::with_capacity(due.len());
        for (t, id) in due {
            if st.conversations.contains_key(&id) {
                out.push(id);
            } else {
                // Its conversation is gone: nothing is due there any more.
                st.timers.remove(&(t, id));
            }
        }
        Ok(out)
    }

    fn stage(mut self: Box<Self>, scenes: Vec<Scene>, admitted: &[&str]) -> Pending {
        for app in admitted {
            *self.st.live_per_app.entry(app.to_string()).or_default() += 1;
        }
        self.engine.stage(&mut self.st, scenes)
    }
}
