//! What readers are told: a call, an operation, a party's legs, a meeting, a recording, the
//! deliveries log. A read that finds a change not yet durable waits for it.

use super::{Engine, EngineError};
use crate::clock::Timestamp;
use crate::domain::call::party_key;
use crate::domain::conversation::{Conversation, Leg, LegState, Who};
use crate::domain::operation::{Operation, Recording};
use crate::domain::{Call, CallId, CallState, EndReason, Peer};
use crate::graph::participant::Names;
use crate::store::DeliveryLog;

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
    pub(super) fn of(conversation: CallId, leg: &Leg) -> Self {
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
    /// (id, kind, the bot's call id, waiting in the lobby): a party's id and `user`/`phone`,
    /// or an app id and `bot`.
    pub participants: Vec<(String, &'static str, Option<CallId>, bool)>,
}

impl Engine {
    /// Every live call, oldest first (those created at the same instant in id order); only
    /// `app_id`'s, or only those in `state`, if given.
    pub async fn list_calls(
        &self,
        app_id: Option<&str>,
        state: Option<CallState>,
    ) -> Result<Vec<Call>, EngineError> {
        let st = self.read_state().await?;
        let mut calls: Vec<Call> = st
            .calls
            .values()
            .filter(|c| app_id.is_none_or(|a| c.app_id.eq_ignore_ascii_case(a)))
            .filter(|c| state.is_none_or(|s| c.state == s))
            .map(|c| Call::clone(c))
            .collect();
        let ticket = self.open_ticket()?;
        drop(st);
        calls.sort_by_key(|c| (c.created_at, c.id));
        self.settled(calls, ticket).await
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
            None => (None, self.open_ticket()?),
        };
        drop(st);
        self.settled(out, ticket)
            .await?
            .ok_or(EngineError::NotFound)
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
            None => (None, self.open_ticket()?),
        };
        drop(st);
        self.settled(out, ticket)
            .await?
            .ok_or(EngineError::NotFound)
    }

    /// What a reader holding the engine lock waits for when it cannot tell which change it
    /// depends on: the last change staged, unless settled (see
    /// [`Committer::last_open_ticket`]). If a commit failed since the reader checked the store
    /// (memory may now be ahead of it, not yet reloaded), the reader is refused instead.
    ///
    /// [`Committer::last_open_ticket`]: crate::store::committer::Committer::last_open_ticket
    pub(super) fn open_ticket(&self) -> Result<u64, EngineError> {
        let ticket = self.committer.last_open_ticket();
        if !self.health.readable() {
            return Err(self.unavailable());
        }
        Ok(ticket)
    }

    /// Answers `out`, read from memory, once the change it may show (`ticket`, 0: none) is
    /// durable: nobody is told of a change the store refused (they get a 503, and memory is
    /// reloaded from the store).
    pub(super) async fn settled<T>(&self, out: T, ticket: u64) -> Result<T, EngineError> {
        self.committer.durable(ticket).await?;
        Ok(out)
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

    /// The party a recording of this call hears.
    pub async fn speaker(&self, app_id: &str, id: CallId) -> Result<Option<Peer>, EngineError> {
        self.with_conversation(app_id, id, |_, c, _| c.speaker().cloned())
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
        let ticket = self.open_ticket()?;
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
            .filter(|l| l.is_listed())
            .map(|l| match &l.who {
                Who::Bot { call_id } => {
                    let app = st.calls.get(call_id).map(|c| c.app_id.to_string());
                    let waits = l.state == LegState::Lobby;
                    (app.unwrap_or_default(), "bot", Some(*call_id), waits)
                }
                Who::Party(p) => (
                    p.id.clone(),
                    crate::domain::conversation::identity_key(p.kind),
                    None,
                    l.state == LegState::Lobby,
                ),
            })
            .collect();
        let view = MeetingView {
            active: c.is_active(),
            participants,
        };
        let ticket = self.open_ticket()?;
        drop(st);
        self.settled(Some(view), ticket).await
    }

    /// A finished recording, by its operation id.
    pub async fn recording(&self, op_id: &str) -> Option<Recording> {
        let known = self.state.lock().await.recordings.get(op_id).cloned();
        let Some((rec, ticket)) = known else {
            // One finished before the server restarted (a small file, read off these threads).
            let (archive, op) = (self.recordings.clone(), op_id.to_string());
            return tokio::task::spawn_blocking(move || archive.kept(&op))
                .await
                .ok()
                .flatten();
        };
        // One whose change the store refused never existed.
        self.committer.durable(ticket).await.ok().map(|()| rec)
    }

    /// Every notification of a call with its delivery attempts, ended calls included (as long
    /// as the retention policy keeps them).
    /// Sends a notification again now, outside its queue, and records the attempt.
    pub async fn redeliver(
        &self,
        item: crate::store::OutboxItem,
    ) -> Result<crate::store::AttemptOutcome, EngineError> {
        Ok(self.delivery.redeliver(item).await?)
    }

    /// Waits until every notification due now (and those that fall due behind them) has had its
    /// attempt, for at most `within`; whether it got there.
    pub async fn settle_deliveries(
        &self,
        within: std::time::Duration,
    ) -> Result<bool, EngineError> {
        self.flush().await;
        Ok(self.delivery.settle_due(within).await?)
    }

    pub async fn deliveries(&self, id: CallId) -> Result<DeliveryLog, EngineError> {
        // Everything submitted before this point is committed (or refused) after the barrier.
        self.committer.barrier().await;
        Ok(self.store.deliveries(id).await?)
    }
}
