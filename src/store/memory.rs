//! The memory store: keeps everything in this process and nothing on disk. A restart starts
//! empty. Useful for tests and for CI runs that need no history.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Change, DeliveryRecord, DeliveryStatus, Snapshot, Store, StoreError};
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
    notifications: BTreeMap<i64, DeliveryRecord>,
    by_call: HashMap<CallId, Vec<i64>>,
}

#[async_trait]
impl Store for MemoryStore {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        let inner = self.inner.lock().expect("memory store lock");
        Ok(Snapshot {
            calls: inner.calls.values().cloned().collect(),
            conversations: inner.conversations.values().cloned().collect(),
            pending: inner
                .notifications
                .values()
                .filter(|r| r.item.status == DeliveryStatus::Pending)
                .map(|r| r.item.clone())
                .collect(),
            next_seq: inner.notifications.keys().next_back().map_or(1, |s| s + 1),
        })
    }

    async fn commit(&self, change: Change) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().expect("memory store lock");
        for call in change.put_calls {
            inner.calls.insert(call.id, call);
        }
        for id in change.remove_calls {
            inner.calls.remove(&id);
        }
        for c in change.put_conversations {
            inner.conversations.insert(c.id, c);
        }
        for id in change.remove_conversations {
            inner.conversations.remove(&id);
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

    async fn deliveries(&self, call_id: CallId) -> Result<Vec<DeliveryRecord>, StoreError> {
        let inner = self.inner.lock().expect("memory store lock");
        Ok(inner
            .by_call
            .get(&call_id)
            .map(|seqs| {
                seqs.iter()
                    .filter_map(|s| inner.notifications.get(s).cloned())
                    .collect()
            })
            .unwrap_or_default())
    }
}
