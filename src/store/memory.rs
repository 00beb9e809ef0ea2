//! The memory store: keeps everything in this process and nothing on disk. A restart starts
//! empty. Useful for tests and for CI runs that need no history. It applies the same retention
//! policy as SQLite, so a long run does not grow without bound.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{
    Change, DeliveryLog, DeliveryRecord, DeliveryStatus, PRUNE_BATCH, PRUNE_ROWS, Pruned,
    PrunedCall, Retention, Snapshot, Store, StoreError,
};
use crate::clock::Timestamp;
use crate::domain::conversation::Conversation;
use crate::domain::{Call, CallId};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    calls: HashMap<CallId, Call>,
    conversations: HashMap<CallId, Conversation>,
    /// When each live conversation is next due.
    due: HashMap<CallId, Timestamp>,
    notifications: BTreeMap<i64, DeliveryRecord>,
    by_call: HashMap<CallId, Vec<i64>>,
    /// Ended calls whose log is still kept, oldest-ended first.
    ended: VecDeque<(CallId, Timestamp)>,
    /// Calls the retention policy removed notifications of, oldest first.
    pruned: HashMap<CallId, PrunedCall>,
    pruned_order: VecDeque<CallId>,
    /// The next sequence number can never be below this, even once every row is gone.
    seq_floor: i64,
}

impl Inner {
    /// Removes up to `limit` of `call`'s delivered and dead notifications, oldest first; returns
    /// (notifications, attempts).
    fn remove_done(&mut self, call: CallId, limit: usize, now: Timestamp) -> (u64, u64) {
        let Some(seqs) = self.by_call.get_mut(&call) else {
            return (0, 0);
        };
        let (mut n, mut a) = (0, 0);
        let notifications = &mut self.notifications;
        seqs.retain(|seq| {
            let Some(rec) = notifications.get(seq) else {
                return false;
            };
            if rec.item.status == DeliveryStatus::Pending || n as usize >= limit {
                return true;
            }
            a += rec.attempts.len() as u64;
            n += 1;
            notifications.remove(seq);
            false
        });
        if seqs.is_empty() {
            self.by_call.remove(&call);
        }
        if n > 0 {
            self.tombstone(call, n, now);
        }
        (n, a)
    }

    fn tombstone(&mut self, call: CallId, removed: u64, now: Timestamp) {
        let entry = self.pruned.entry(call).or_insert_with(|| {
            self.pruned_order.push_back(call);
            PrunedCall {
                at: now,
                notifications: 0,
            }
        });
        entry.at = now;
        entry.notifications += removed;
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        let inner = self.inner.lock().expect("memory store lock");
        let next = inner.notifications.keys().next_back().map_or(1, |s| s + 1);
        Ok(Snapshot {
            calls: inner.calls.values().cloned().collect(),
            conversations: inner.conversations.values().cloned().collect(),
            due: inner.due.clone(),
            pending: inner
                .notifications
                .values()
                .filter(|r| r.item.status == DeliveryStatus::Pending)
                .map(|r| r.item.clone())
                .collect(),
            next_seq: next.max(inner.seq_floor),
        })
    }

    async fn commit(&self, change: Change) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().expect("memory store lock");
        for call in change.put_calls {
            inner.calls.insert(call.id, call);
        }
        for (id, at) in change.remove_calls {
            inner.calls.remove(&id);
            inner.ended.push_back((id, at));
        }
        for c in change.put_conversations {
            inner.conversations.insert(c.id, c);
        }
        for (id, due) in change.due {
            match due {
                Some(t) if inner.conversations.contains_key(&id) => {
                    inner.due.insert(id, t);
                }
                _ => {
                    inner.due.remove(&id);
                }
            }
        }
        for id in change.remove_conversations {
            inner.conversations.remove(&id);
            inner.due.remove(&id);
        }
        for item in change.enqueue {
            inner
                .by_call
                .entry(item.call_id)
                .or_default()
                .push(item.seq);
            inner.notifications.insert(
                item.seq,
                DeliveryRecord {
                    item,
                    attempts: vec![],
                },
            );
        }
        for outcome in change.attempts {
            if let Some(rec) = inner.notifications.get_mut(&outcome.attempt.seq) {
                rec.item.status = outcome.status;
                rec.item.attempts = outcome.attempts;
                rec.item.next_attempt_at = outcome.next_attempt_at;
                rec.attempts.push(outcome.attempt);
            }
        }
        Ok(())
    }

    async fn deliveries(&self, call_id: CallId) -> Result<DeliveryLog, StoreError> {
        let inner = self.inner.lock().expect("memory store lock");
        let records = inner
            .by_call
            .get(&call_id)
            .map(|seqs| {
                seqs.iter()
                    .filter_map(|s| inner.notifications.get(s).cloned())
                    .collect()
            })
            .unwrap_or_default();
        Ok(DeliveryLog {
            records,
            pruned: inner.pruned.get(&call_id).copied(),
        })
    }

    async fn probe(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn prune(&self, policy: Retention, now: Timestamp) -> Result<Pruned, StoreError> {
        let mut inner = self.inner.lock().expect("memory store lock");
        let cutoff = policy.cutoff(now);
        if let Some(last) = inner.notifications.keys().next_back() {
            inner.seq_floor = inner.seq_floor.max(last + 1);
        }
        let mut out = Pruned::default();
        let mut budget = PRUNE_ROWS;
        // Ended calls past the count or the age go whole (a long log over several rounds).
        while let Some(&(call, ended_at)) = inner.ended.front() {
            if inner.ended.len() <= policy.max_ended_calls && ended_at >= cutoff {
                break;
            }
            if out.calls as usize >= PRUNE_BATCH || budget == 0 {
                out.more = true;
                break;
            }
            let (n, a) = inner.remove_done(call, budget, now);
            budget -= n as usize;
            out.notifications += n;
            out.attempts += a;
            if budget == 0 {
                out.more = true;
                break;
            }
            inner.ended.pop_front();
            out.calls += 1;
        }
        // Old delivered or dead notifications of calls still going on (or still retrying).
        let window: Vec<(i64, CallId, bool)> = inner
            .notifications
            .values()
            .take(budget)
            .take_while(|r| r.item.created_at < cutoff)
            .map(|r| {
                let done = r.item.status != DeliveryStatus::Pending;
                (r.item.seq, r.item.call_id, done)
            })
            .collect();
        if budget > 0 && window.len() == budget {
            out.more = true;
        }
        let mut per_call: HashMap<CallId, Vec<i64>> = HashMap::new();
        for (seq, call, done) in window {
            if done && let Some(rec) = inner.notifications.remove(&seq) {
                out.notifications += 1;
                out.attempts += rec.attempts.len() as u64;
                per_call.entry(call).or_default().push(seq);
            }
        }
        for (call, gone) in per_call {
            if let Some(seqs) = inner.by_call.get_mut(&call) {
                seqs.retain(|s| gone.binary_search(s).is_err());
                if seqs.is_empty() {
                    inner.by_call.remove(&call);
                }
            }
            inner.tombstone(call, gone.len() as u64, now);
        }
        while inner.pruned_order.len() > policy.tombstones() {
            if let Some(old) = inner.pruned_order.pop_front() {
                inner.pruned.remove(&old);
            }
        }
        Ok(out)
    }
}
