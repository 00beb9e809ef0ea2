//! How a change is made: load a conversation's scene, let the domain change it, apply the result
//! to memory and to one store change with its notifications, and wait until it is durable.

use std::collections::VecDeque;

use super::state::PENDING_SWEEP;
use super::views::PartyLeg;
use super::{Engine, EngineError, State};
use crate::clock::Timestamp;
use crate::domain::call::{Rules, party_key};
use crate::domain::conversation::{Conversation, Emit, Scene, Who};
use crate::domain::operation::Recording;
use crate::domain::{Call, CallId, EndReason, Event, FabricCommand};
use crate::graph::notification::Notification;
use crate::graph::participant::Names;
use crate::store::committer::{self};
use crate::store::scenes::SceneTx;
use crate::store::{Change, DeliveryStatus, OutboxItem};

impl Engine {
    /// Changes a live call (owned by `owner`, or by anyone) in its conversation, and commits
    /// that with what it notifies. On error nothing changes. Returns the call as it is after.
    #[tracing::instrument(level = "debug", name = "change", skip_all, fields(call = %id))]
    pub(super) async fn update<T>(
        &self,
        owner: Option<&str>,
        id: CallId,
        f: impl FnOnce(&mut Scene, Timestamp, &Rules) -> Result<T, EngineError>,
    ) -> Result<(Call, T), EngineError> {
        let mut tx = self.begin().await?;
        let conv = tx
            .call(id)
            .await?
            .filter(|c| owner.is_none_or(|o| *c.app_id == *o) && c.live)
            .map(|c| c.conversation)
            .ok_or(EngineError::NotFound)?;
        self.change_scene(tx, conv, |s, now, r| {
            let out = f(s, now, r)?;
            let call = s.call(id).cloned().ok_or(EngineError::NotFound)?;
            Ok((call, out))
        })
        .await
    }

    /// Loads a conversation's scene, lets `f` change it and stages it; the lock is let go
    /// before waiting for the commit. On error nothing changes.
    pub(super) async fn change_scene<T>(
        &self,
        mut tx: Box<dyn SceneTx + '_>,
        conv: CallId,
        f: impl FnOnce(&mut Scene, Timestamp, &Rules) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let mut scene = tx.scene(conv).await?.ok_or(EngineError::NotFound)?;
        let out = f(&mut scene, self.clock.now(), &self.rules)?;
        let done = tx.stage(vec![scene], &[]);
        committer::wait(done).await?;
        Ok(out)
    }

    /// Applies changed scenes to memory and submits them, with what they notify, for commit.
    /// [`committer::wait`] answers once they are durable; their notifications go to the
    /// delivery worker then, in commit order. Until then, readers of these conversations wait.
    pub(super) fn stage(&self, st: &mut State, scenes: Vec<Scene>) -> committer::Pending {
        let now = self.clock.now();
        let mut change = Change::default();
        let mut commands = vec![];
        let mut touched = vec![];
        let mut finished = vec![];
        let mut queue: VecDeque<Scene> = scenes.into();
        while let Some(mut scene) = queue.pop_front() {
            scene.settle();
            touched.push(scene.conversation.id);
            let replaced = std::mem::take(&mut scene.replaced);
            let before = st.conversations.get(&scene.conversation.id);
            // What concerns another bot is carried out on its end, in this change.
            let (to_bots, to_fabric): (Vec<_>, Vec<_>) = scene
                .take_commands(before.map(|c| &**c))
                .into_iter()
                .partition(|c| c.peer().kind.is_bot());
            commands.extend(to_fabric);
            self.stage_scene(st, scene, now, &mut change, &mut finished);
            for c in to_bots {
                self.relay(st, &mut queue, c, now);
            }
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
        let after = AfterCommit {
            deliver: change.enqueue.clone(),
            fabric: std::mem::take(&mut commands),
            recordings: std::mem::take(&mut finished),
        }
        .hook(self);
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
    pub(super) fn stage_scene(
        &self,
        st: &mut State,
        scene: Scene,
        now: Timestamp,
        change: &mut Change,
        finished: &mut Vec<(String, Recording)>,
    ) {
        let due = scene.next_due();
        let Scene {
            conversation,
            mut calls,
            out,
            gone,
            ..
        } = scene;
        // Each call numbers its own notifications, in the order they go out.
        let mut seqs = Vec::with_capacity(out.len());
        for (id, _) in &out {
            seqs.push(calls.iter_mut().find(|c| c.id == *id).map(|c| {
                c.last_seq += 1;
                c.last_seq
            }));
        }
        let names = |w: &Who| self.names(w, |id| calls.iter().find(|c| c.id == id));
        for ((id, emit), seq) in out.iter().zip(seqs) {
            if let (Some(call), Some(seq)) = (calls.iter().find(|c| c.id == *id), seq) {
                let item = outbox_item(call, seq, &conversation, &names, emit, now, self);
                change.enqueue.push(item);
            }
            if let Emit::Operation(op) = emit
                && let Some(rec) = &op.recording
                && !rec.access_token.is_empty()
                && op.completes_at.is_none()
            {
                st.keep_recording(&op.id, rec);
                finished.push((op.id.clone(), rec.clone()));
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
            let put = stored.is_none_or(|c| **c != conversation);
            if put {
                change.put_conversations.push(conversation.clone());
            }
            st.conversations.insert(id, Box::new(conversation));
            // A row put anew has no due time yet; a due time that moved is written too.
            if st.schedule(id, due) || put {
                change.due.push((id, due));
            }
        }
    }

    /// Waits until everything submitted so far was committed (or refused).
    pub async fn flush(&self) {
        self.committer.barrier().await;
    }
}

/// What happens once a change is durable, in commit order: its notifications go to the delivery
/// worker, and its commands to the fabric.
struct AfterCommit {
    deliver: Vec<OutboxItem>,
    fabric: Vec<FabricCommand>,
    /// Recordings the change finished, for the archive.
    recordings: Vec<(String, Recording)>,
}

impl AfterCommit {
    /// The committer's hook, or none when there is nothing to do.
    fn hook(self, engine: &Engine) -> Option<committer::AfterCommit> {
        if self.deliver.is_empty() && self.fabric.is_empty() && self.recordings.is_empty() {
            return None;
        }
        let delivery = engine.delivery.clone();
        let fabric = engine.fabric.clone();
        let archive = engine.recordings.clone();
        Some(Box::new(move || {
            if !self.deliver.is_empty() {
                delivery.enqueue(self.deliver);
            }
            if !self.fabric.is_empty() {
                fabric.execute(self.fabric);
            }
            if !self.recordings.is_empty() {
                // A few hundred bytes each, off the committer's thread.
                let keep = move || {
                    for (op, rec) in &self.recordings {
                        archive.keep(op, rec);
                    }
                };
                match tokio::runtime::Handle::try_current() {
                    Ok(h) => drop(h.spawn_blocking(keep)),
                    Err(_) => keep(),
                }
            }
        }))
    }
}

/// The outbox entry for one emit about `call`, numbered `seq`.
fn outbox_item(
    call: &Call,
    seq: i64,
    conversation: &Conversation,
    names: Names,
    emit: &Emit,
    now: Timestamp,
    engine: &Engine,
) -> OutboxItem {
    let n = Notification::for_emit(call, conversation, names, emit, |op| {
        engine.recording_url(op)
    });
    let change_type = n.change.as_str().to_string();
    OutboxItem {
        seq,
        call_id: call.id,
        app_id: call.app_id.to_string(),
        tenant_id: call.tenant_id.to_string(),
        callback_uri: call.callback_uri.clone(),
        change_type,
        resource_url: n.resource_url(),
        body: n.item(),
        created_at: now,
        status: DeliveryStatus::Pending,
        attempts: 0,
        next_attempt_at: now,
    }
}
