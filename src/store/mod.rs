//! Storage behind one trait.
//!
//! The engine keeps live calls in memory and writes every change through a [`Store`] before it
//! answers: a [`Change`] holds the calls and conversations it touched, the notifications it
//! caused and the delivery attempts it recorded, and a backend commits it atomically. At start the engine reads back a
//! [`Snapshot`]. Backends: [`memory`] (keeps nothing) and [`sqlite`] (the default). PostgreSQL
//! will be a third module implementing the same trait.

pub mod committer;
pub mod memory;
pub mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use crate::clock::Timestamp;
use crate::domain::conversation::Conversation;
use crate::domain::{Call, CallId};

/// Where a notification stands. Stored as a small integer, written on the wire as a word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Dead,
}

impl DeliveryStatus {
    pub fn to_i64(self) -> i64 {
        match self {
            DeliveryStatus::Pending => 0,
            DeliveryStatus::Delivered => 1,
            DeliveryStatus::Dead => 2,
        }
    }

    pub fn from_i64(v: i64) -> Self {
        match v {
            1 => DeliveryStatus::Delivered,
            2 => DeliveryStatus::Dead,
            _ => DeliveryStatus::Pending,
        }
    }
}

/// One notification in the outbox.
#[derive(Clone, Debug)]
pub struct OutboxItem {
    /// Global sequence number; per call, notifications go out in this order.
    pub seq: i64,
    pub call_id: CallId,
    pub app_id: String,
    pub tenant_id: String,
    pub callback_uri: String,
    pub change_type: String,
    pub resource_url: String,
    /// The `commsNotifications` JSON, exactly as it is POSTed.
    pub body: String,
    pub created_at: Timestamp,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
}

/// One POST of a notification and how it went.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    #[serde(skip)]
    pub seq: i64,
    pub at: Timestamp,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    /// What went wrong, when it did not answer (connection refused, timeout, ...).
    pub error: Option<String>,
    pub latency_ms: u64,
}

/// An attempt and what it leaves the notification as.
#[derive(Clone, Debug)]
pub struct AttemptOutcome {
    pub attempt: Attempt,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
}

/// Everything one step changed, committed atomically.
#[derive(Clone, Debug, Default)]
pub struct Change {
    pub put_calls: Vec<Call>,
    pub remove_calls: Vec<CallId>,
    pub put_conversations: Vec<Conversation>,
    pub remove_conversations: Vec<CallId>,
    pub enqueue: Vec<OutboxItem>,
    pub attempts: Vec<AttemptOutcome>,
}

impl Change {
    /// Appends `later` to this change, to commit both in one transaction (puts are applied
    /// before removals, and an id is never removed and then put again).
    pub fn absorb(&mut self, later: Change) {
        // Destructured so that a new field cannot be forgotten here.
        let Change {
            put_calls,
            remove_calls,
            put_conversations,
            remove_conversations,
            enqueue,
            attempts,
        } = later;
        self.put_calls.extend(put_calls);
        self.remove_calls.extend(remove_calls);
        self.put_conversations.extend(put_conversations);
        self.remove_conversations.extend(remove_conversations);
        self.enqueue.extend(enqueue);
        self.attempts.extend(attempts);
    }

    pub fn is_empty(&self) -> bool {
        self.put_calls.is_empty()
            && self.remove_calls.is_empty()
            && self.put_conversations.is_empty()
            && self.remove_conversations.is_empty()
            && self.enqueue.is_empty()
            && self.attempts.is_empty()
    }
}

/// What the engine and the delivery worker need at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Calls that have not ended.
    pub calls: Vec<Call>,
    /// Conversations that have not ended (meetings always).
    pub conversations: Vec<Conversation>,
    /// Notifications not yet delivered nor dead, in sequence order.
    pub pending: Vec<OutboxItem>,
    /// The next free notification sequence number.
    pub next_seq: i64,
}

/// A notification with every attempt made to deliver it.
#[derive(Clone, Debug)]
pub struct DeliveryRecord {
    pub item: OutboxItem,
    pub attempts: Vec<Attempt>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage failed: {0}")]
    Backend(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads back the live state.
    async fn load(&self) -> Result<Snapshot, StoreError>;
    /// Commits a change atomically: all of it or none of it.
    async fn commit(&self, change: Change) -> Result<(), StoreError>;
    /// Every notification of a call, in order, with its attempts.
    async fn deliveries(&self, call_id: CallId) -> Result<Vec<DeliveryRecord>, StoreError>;
}

/// An opened store and the folder beside it where keys live (none for `memory`).
pub struct Opened {
    pub store: Arc<dyn Store>,
    pub data_dir: Option<PathBuf>,
}

/// How hard SQLite works to survive a power cut (a process crash loses nothing either way).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// `synchronous = NORMAL` in WAL mode: safe against a crash of the process.
    #[default]
    Normal,
    /// `synchronous = FULL`: also safe against a power cut, slower.
    Full,
}

/// Opens the store a `--store` URL names: `memory`, `sqlite://PATH` or (later) `postgres://...`.
pub fn open(url: &str, durability: Durability) -> Result<Opened, StoreError> {
    if url == "memory" {
        return Ok(Opened {
            store: Arc::new(memory::MemoryStore::default()),
            data_dir: None,
        });
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = PathBuf::from(path);
        let store = sqlite::SqliteStore::open(&path, durability)?;
        let dir = path.parent().map(|p| {
            if p.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                p.to_path_buf()
            }
        });
        return Ok(Opened {
            store: Arc::new(store),
            data_dir: dir,
        });
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(StoreError::Backend(
            "the PostgreSQL store is not built yet; use sqlite://PATH or memory".into(),
        ));
    }
    Err(StoreError::Backend(format!(
        "unknown store {url:?}: use memory or sqlite://PATH"
    )))
}

#[cfg(test)]
mod contract_tests {
    //! The same checks against every backend.

    use super::*;
    use crate::domain::conversation::{Kind, Leg, LegState, Who};
    use crate::domain::{CallState, Direction, PartyKind, Peer};

    fn conversation(id: CallId) -> Conversation {
        let mut c = Conversation::new(id, Kind::PeerToPeer, chrono::Utc::now());
        let peer = Peer {
            id: "+15550100".into(),
            kind: PartyKind::Phone,
        };
        c.legs.push(Leg::new(
            uuid::Uuid::nil(),
            Who::Party(peer),
            LegState::Ringing,
        ));
        c
    }

    fn call(id: CallId) -> Call {
        let cb = "http://127.0.0.1:9/cb".to_string();
        let now = chrono::Utc::now();
        let mut c = Call::new(
            "app",
            "tenant",
            Direction::Outgoing,
            CallState::Establishing,
            cb,
            now,
        );
        c.id = id;
        c.conversation = id;
        c
    }

    fn item(seq: i64, call_id: CallId) -> OutboxItem {
        let now = chrono::Utc::now();
        OutboxItem {
            seq,
            call_id,
            app_id: "app".into(),
            tenant_id: "tenant".into(),
            callback_uri: "http://127.0.0.1:9/cb".into(),
            change_type: "updated".into(),
            resource_url: format!("/communications/calls/{call_id}"),
            body: format!("{{\"seq\":{seq}}}"),
            created_at: now,
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at: now,
        }
    }

    async fn exercise(store: &dyn Store) {
        let (a, b) = (CallId::new(), CallId::new());
        store
            .commit(Change {
                put_calls: vec![call(a), call(b)],
                put_conversations: vec![conversation(a), conversation(b)],
                enqueue: vec![item(1, a), item(2, b), item(3, a)],
                ..Change::default()
            })
            .await
            .unwrap();
        let now = chrono::Utc::now();
        store
            .commit(Change {
                remove_calls: vec![b],
                remove_conversations: vec![b],
                attempts: vec![
                    AttemptOutcome {
                        attempt: Attempt {
                            seq: 1,
                            at: now,
                            status: Some(503),
                            error: None,
                            latency_ms: 3,
                        },
                        status: DeliveryStatus::Pending,
                        attempts: 1,
                        next_attempt_at: now,
                    },
                    AttemptOutcome {
                        attempt: Attempt {
                            seq: 2,
                            at: now,
                            status: Some(202),
                            error: None,
                            latency_ms: 1,
                        },
                        status: DeliveryStatus::Delivered,
                        attempts: 1,
                        next_attempt_at: now,
                    },
                ],
                ..Change::default()
            })
            .await
            .unwrap();
        let snap = store.load().await.unwrap();
        assert_eq!(snap.calls.iter().map(|c| c.id).collect::<Vec<_>>(), vec![a]);
        let convs: Vec<_> = snap
            .conversations
            .iter()
            .map(|c| (c.id, c.legs[0].id))
            .collect();
        assert_eq!(convs, vec![(a, uuid::Uuid::nil())]);
        assert_eq!(
            snap.pending.iter().map(|i| i.seq).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(snap.pending[0].attempts, 1);
        assert_eq!(snap.next_seq, 4);
        let log = store.deliveries(a).await.unwrap();
        assert_eq!(
            log.iter().map(|r| r.item.seq).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(log[0].attempts.len(), 1);
        assert_eq!(log[0].attempts[0].status, Some(503));
        let log_b = store.deliveries(b).await.unwrap();
        assert_eq!(
            log_b[0].item.status,
            DeliveryStatus::Delivered,
            "the log outlives the call"
        );
    }

    #[tokio::test]
    async fn the_memory_store_keeps_what_was_committed() {
        exercise(&memory::MemoryStore::default()).await;
    }

    #[tokio::test]
    async fn the_sqlite_store_keeps_what_was_committed_across_reopening() {
        let dir = std::env::temp_dir().join(format!("sb-store-{}", uuid::Uuid::new_v4()));
        let path = dir.join("nested").join("sb.db");
        {
            let store = sqlite::SqliteStore::open(&path, Durability::Normal).unwrap();
            exercise(&store).await;
        }
        let again = sqlite::SqliteStore::open(&path, Durability::Full).unwrap();
        let snap = again.load().await.unwrap();
        assert_eq!(snap.pending.len(), 2);
        assert_eq!(snap.next_seq, 4);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn store_urls_name_their_backend() {
        assert!(
            open("memory", Durability::Normal)
                .unwrap()
                .data_dir
                .is_none()
        );
        assert!(open("postgres://localhost/x", Durability::Normal).is_err());
        assert!(open("redis://x", Durability::Normal).is_err());
    }
}
