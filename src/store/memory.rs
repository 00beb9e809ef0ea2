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
    /// Every notification kept, by the order it was committed in (the retention policy reads
    /// the oldest first).
    notifications: BTreeMap<u64, DeliveryRecord>,
    next_order: u64,
    /// A notification's place in `notifications`, by `(call, seq)`.
    index: HashMap<(CallId, i64), u64>,
    by_call: HashMap<CallId, Vec<u64>>,
    /// Ended calls whose log is still kept, oldest-ended first.
    ended: VecDeque<(CallId, Timestamp)>,
    /// Calls the retention policy removed notifications of, oldest first.
    pruned: HashMap<CallId, PrunedCall>,
    pruned_order: VecDeque<CallId>,
}

impl Inner {
    /// Removes up to `limit` of `call`'s delivered and dead notifications, oldest first; returns
    /// (notifications, attempts).
    fn remove_done(&mut self, call: CallId, limit: usize, now: Timestamp) -> (u64, u64) {
        let Some(orders) = self.by_call.get_mut(&call) else {
            return (0, 0);
        };
        let (mut n, mut a) = (0, 0);
        let (notifications, index) = (&mut self.notifications, &mut self.index);
        orders.retain(|order| {
            let Some(rec) = notifications.get(order) else {
                return false;
            };
            if rec.item.status == DeliveryStatus::Pending || n as usize >= limit {
                return true;
            }
            a += rec.attempts.len() as u64;
            n += 1;
            index.remove(&(call, rec.item.seq));
            notifications.remove(order);
            false
        });
        if orders.is_empty() {
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
            let order = inner.next_order;
            inner.next_order += 1;
            inner.by_call.entry(item.call_id).or_default().push(order);
            inner.index.insert((item.call_id, item.seq), order);
            inner.notifications.insert(
                order,
                DeliveryRecord {
                    item,
                    attempts: vec![],
                },
            );
        }
        for outcome in change.attempts {
            let key = (outcome.attempt.call_id, outcome.attempt.seq);
            let Some(&order) = inner.index.get(&key) else {
                continue;
            };
            if let Some(rec) = inner.notifications.get_mut(&order) {
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
            .map(|orders| {
                orders
                    .iter()
                    .filter_map(|o| inner.notifications.get(o).cloned())
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

    async fn reset(&self) -> Result<(), StoreError> {
        *self.inner.lock().expect("memory store lock") = Inner::default();
        Ok(())
    }

    async fn prune(&self, policy: Retention, now: Timestamp) -> Result<Pruned, StoreError> {
        let mut inner = self.inner.lock().expect("memory store lock");
        let cutoff = policy.cutoff(now);
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
        let window: Vec<(u64, CallId, bool)> = inner
            .notifications
            .iter()
            .take(budget)
            .take_while(|(_, r)| r.item.created_at < cutoff)
            .map(|(order, r)| {
                let done = r.item.status != DeliveryStatus::Pending;
                (*order, r.item.call_id, done)
            })
            .collect();
        if budget > 0 && window.len() == budget {
            out.more = true;
        }
        let mut per_call: HashMap<CallId, Vec<u64>> = HashMap::new();
        for (order, call, done) in window {
            if done && let Some(rec) = inner.notifications.remove(&order) {
                inner.index.remove(&(call, rec.item.seq));
                out.notifications += 1;
                out.attempts += rec.attempts.len() as u64;
                per_call.entry(call).or_default().push(order);
            }
        }
        for (call, gone) in per_call {
            if let Some(orders) = inner.by_call.get_mut(&call) {
                orders.retain(|o| gone.binary_search(o).is_err());
                if orders.is_empty() {
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
