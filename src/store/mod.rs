//! Storage behind one trait.
//!
//! The engine keeps live calls in memory and writes every change through a [`Store`] before it
//! answers: a [`Change`] holds the calls and conversations it touched, the notifications it
//! caused and the delivery attempts it recorded, and a backend commits it atomically. At start the engine reads back a
//! [`Snapshot`]. Backends: [`memory`] (keeps nothing) and [`sqlite`] (the default). PostgreSQL
//! will be a third module implementing the same trait. What is kept of ended calls is bounded by
//! a [`Retention`] policy ([`Store::prune`]); whether the store can write now is its [`Health`].

pub mod committer;
pub mod health;
pub mod memory;
pub mod outbox;
pub mod scenes;
pub mod sqlite;

pub use health::Health;

use std::path::{Path, PathBuf};
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
    /// The call's own sequence number (1, 2, 3, …): its notifications go out in this order.
    /// A notification is `(call_id, seq)`.
    pub seq: i64,
    pub call_id: CallId,
    pub app_id: String,
    pub tenant_id: String,
    pub callback_uri: String,
    pub change_type: String,
    pub resource_url: String,
    /// One `commsNotification` (JSON); the envelope around one or more is added when POSTed.
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
    /// The notification it was for: `(call_id, seq)`.
    #[serde(skip)]
    pub call_id: CallId,
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
    /// Calls that ended, with when (the call clock): their rows go, their deliveries log stays
    /// as long as the [`Retention`] policy keeps it.
    pub remove_calls: Vec<(CallId, Timestamp)>,
    pub put_conversations: Vec<Conversation>,
    pub remove_conversations: Vec<CallId>,
    /// When a live conversation is next due (a timer, a ring, an operation; `None`: nothing
    /// pending), for every conversation whose due time changed: what a sweeper of several nodes
    /// looks for. Applied after the puts.
    pub due: Vec<(CallId, Option<Timestamp>)>,
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
            due,
            enqueue,
            attempts,
        } = later;
        self.put_calls.extend(put_calls);
        self.remove_calls.extend(remove_calls);
        self.put_conversations.extend(put_conversations);
        self.remove_conversations.extend(remove_conversations);
        self.due.extend(due);
        self.enqueue.extend(enqueue);
        self.attempts.extend(attempts);
    }

    pub fn is_empty(&self) -> bool {
        self.put_calls.is_empty()
            && self.remove_calls.is_empty()
            && self.put_conversations.is_empty()
            && self.remove_conversations.is_empty()
            && self.due.is_empty()
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
    /// When each live conversation is next due, as last committed.
    pub due: std::collections::HashMap<CallId, Timestamp>,
    /// Notifications not yet delivered nor dead, in the order they were committed.
    pub pending: Vec<OutboxItem>,
}

/// A notification with every attempt made to deliver it.
#[derive(Clone, Debug)]
pub struct DeliveryRecord {
    pub item: OutboxItem,
    pub attempts: Vec<Attempt>,
}

/// A call's deliveries log: what is left of it, and what the retention policy removed.
#[derive(Clone, Debug, Default)]
pub struct DeliveryLog {
    pub records: Vec<DeliveryRecord>,
    /// Set once the retention policy removed some of this call's notifications.
    pub pruned: Option<PrunedCall>,
}

/// What the retention policy removed of one call's log, and when (the call clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrunedCall {
    pub at: Timestamp,
    pub notifications: u64,
}

/// How long the deliveries logs of ended calls, and delivered or dead notifications, are kept.
/// Pending notifications are never removed (they end as delivered or dead first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// Age on the call clock after which an ended call's log, and any delivered or dead
    /// notification of a call still going on, is removed.
    pub keep_secs: u64,
    /// At most this many ended calls keep their log; past it, the oldest-ended go first.
    pub max_ended_calls: usize,
    /// How often the policy is applied (real time).
    pub interval_ms: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_secs: 24 * 3600,
            max_ended_calls: 10_000,
            interval_ms: 1000,
        }
    }
}

impl Retention {
    /// Notifications created before this (on the call clock) are old enough to go.
    pub fn cutoff(&self, now: Timestamp) -> Timestamp {
        let keep = chrono::Duration::seconds(self.keep_secs.min(i64::MAX as u64 / 1000) as i64);
        now.checked_sub_signed(keep)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
    }

    /// Tombstones (which calls were pruned, and when) are kept for this many calls.
    pub fn tombstones(&self) -> usize {
        self.max_ended_calls.saturating_mul(10).max(1000)
    }
}

/// What one [`Store::prune`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Ended calls whose whole log went.
    pub calls: u64,
    pub notifications: u64,
    pub attempts: u64,
    /// There is more to remove: call again.
    pub more: bool,
}

/// How many calls (or old notifications) one prune removes at most, so that it never holds the
/// store for long.
pub const PRUNE_BATCH: usize = 50;
/// How many notifications one prune removes at most (a call's log can be long).
pub const PRUNE_ROWS: usize = 2000;

/// Why a store could not do what it was asked. `NotFound` and `Conflict` are what a store
/// shared by several nodes answers (another node removed the row, or changed it first: a version
/// or fencing check failed); the memory and SQLite stores, which one process owns, never do.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// What the change or read names is not in the store.
    #[error("not in the store: {0}")]
    NotFound(String),
    /// Another writer changed it first; retry on fresh data.
    #[error("changed by another writer: {0}")]
    Conflict(String),
    /// The backend failed (I/O, a full disk, a read-only file system, a lost connection).
    #[error("storage failed: {0}")]
    Backend(#[source] Cause),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// A backend failure described in words, with no error behind it.
    pub fn failed(message: impl Into<String>) -> Self {
        StoreError::Backend(Cause {
            message: message.into(),
            source: None,
        })
    }

    /// A backend failure caused by `e`, which stays reachable as the error's source.
    pub fn caused_by(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Backend(Cause {
            message: e.to_string(),
            source: Some(Arc::new(e)),
        })
    }

    /// What went wrong, in words, without the variant's prefix (for the health view and logs).
    pub fn message(&self) -> &str {
        match self {
            StoreError::NotFound(m) | StoreError::Conflict(m) | StoreError::Corrupt(m) => m,
            StoreError::Backend(c) => &c.message,
        }
    }
}

/// A backend failure: what happened, and the error it came from, kept (not turned into text) so
/// that a log can show the whole chain.
#[derive(Clone, Debug)]
pub struct Cause {
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads back the live state.
    async fn load(&self) -> Result<Snapshot, StoreError>;
    /// Commits a change atomically: all of it or none of it.
    async fn commit(&self, change: Change) -> Result<(), StoreError>;
    /// Every notification of a call still kept, in order, with its attempts.
    async fn deliveries(&self, call_id: CallId) -> Result<DeliveryLog, StoreError>;
    /// Writes a little and makes it durable: `Ok` when the store can take writes now.
    async fn probe(&self) -> Result<(), StoreError>;
    /// Removes what `policy` no longer keeps at `now` (the call clock), a batch at a time.
    async fn prune(&self, policy: Retention, now: Timestamp) -> Result<Pruned, StoreError>;
    /// Removes every call, conversation, notification and attempt, and what retention kept of
    /// them: the store as at a first start (`POST /_switchboard/v1/reset`).
    async fn reset(&self) -> Result<(), StoreError> {
        Err(StoreError::failed("this store cannot be reset"))
    }
    /// At a clean stop, after the last commit (SQLite: empties the WAL into the database).
    async fn close(&self) {}
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

/// The `[store]` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    pub durability: Durability,
    /// SQLite: once the write-ahead log holds more than this, it is copied into the database and
    /// started over (the background checkpoint pauses commits for its last few frames).
    pub wal_limit_mb: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            durability: Durability::Normal,
            wal_limit_mb: 64,
        }
    }
}

/// The data folder of the store a `--store` URL names, where its signing keys live: the folder
/// of a `sqlite://` file; `None` for any other store.
pub fn data_dir(url: &str) -> Option<PathBuf> {
    let path = Path::new(url.strip_prefix("sqlite://")?);
    Some(match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    })
}

/// Opens the store a `--store` URL names: `memory`, `sqlite://PATH` or (later) `postgres://...`.
pub fn open(url: &str, settings: StoreSettings) -> Result<Opened, StoreError> {
    if url == "memory" {
        return Ok(Opened {
            store: Arc::new(memory::MemoryStore::default()),
            data_dir: None,
        });
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        let store = sqlite::SqliteStore::open(Path::new(path), settings)?;
        return Ok(Opened {
            store: Arc::new(store),
            data_dir: data_dir(url),
        });
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(StoreError::failed(
            "the PostgreSQL store is not built yet; use sqlite://PATH or memory",
        ));
    }
    Err(StoreError::failed(format!(
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
        let t =
            |secs: i64| chrono::DateTime::<chrono::Utc>::from_timestamp(1_900_000_000 + secs, 0);
        store
            .commit(Change {
                put_calls: vec![call(a), call(b)],
                put_conversations: vec![conversation(a), conversation(b)],
                due: vec![(a, t(60)), (b, t(5))],
                enqueue: vec![item(1, a), item(1, b), item(2, a)],
                ..Change::default()
            })
            .await
            .unwrap();
        let due = store.load().await.unwrap().due;
        assert_eq!((due.get(&a), due.get(&b)), (t(60).as_ref(), t(5).as_ref()));
        // A due time moves without the conversation changing; the same row put again keeps
        // the due time it is given with it.
        store
            .commit(Change {
                put_conversations: vec![conversation(a)],
                due: vec![(a, t(30)), (a, t(45))],
                ..Change::default()
            })
            .await
            .unwrap();
        let now = chrono::Utc::now();
        store
            .commit(Change {
                remove_calls: vec![(b, now)],
                remove_conversations: vec![b],
                attempts: vec![
                    AttemptOutcome {
                        attempt: Attempt {
                            call_id: a,
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
                            call_id: b,
                            seq: 1,
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
            snap.due.into_iter().collect::<Vec<_>>(),
            vec![(a, t(45).unwrap())],
            "the last due time of a, none for the removed b"
        );
        assert_eq!(
            snap.pending
                .iter()
                .map(|i| (i.call_id, i.seq))
                .collect::<Vec<_>>(),
            vec![(a, 1), (a, 2)],
            "b's 1 was delivered; each call numbers its own"
        );
        assert_eq!(snap.pending[0].attempts, 1);
        let log = store.deliveries(a).await.unwrap().records;
        assert_eq!(
            log.iter().map(|r| r.item.seq).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(log[0].attempts.len(), 1);
        assert_eq!(log[0].attempts[0].status, Some(503));
        let log_b = store.deliveries(b).await.unwrap().records;
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
            let store = sqlite::SqliteStore::open(&path, StoreSettings::default()).unwrap();
            exercise(&store).await;
        }
        let full = StoreSettings {
            durability: Durability::Full,
            ..StoreSettings::default()
        };
        let again = sqlite::SqliteStore::open(&path, full).unwrap();
        let snap = again.load().await.unwrap();
        assert_eq!(snap.pending.len(), 2);
        // An attempt at a notification committed before the reopening finds its row.
        let now = chrono::Utc::now();
        let a = snap.pending[1].call_id;
        let delivered = AttemptOutcome {
            attempt: Attempt {
                call_id: a,
                seq: 2,
                at: now,
                status: Some(202),
                error: None,
                latency_ms: 4,
            },
            status: DeliveryStatus::Delivered,
            attempts: 1,
            next_attempt_at: now,
        };
        again
            .commit(Change {
                attempts: vec![delivered],
                ..Change::default()
            })
            .await
            .unwrap();
        let log = again.deliveries(a).await.unwrap().records;
        assert_eq!(log[1].item.status, DeliveryStatus::Delivered);
        assert_eq!(log[1].attempts[0].latency_ms, 4);
        assert_eq!(again.load().await.unwrap().pending.len(), 1);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Five calls end one second apart, each with a delivered notification; a sixth is live
    /// with an old delivered one and a pending one.
    #[tokio::test]
    async fn a_second_sqlite_store_on_the_same_file_is_refused_until_the_first_is_closed() {
        let dir = std::env::temp_dir().join(format!("sb-store-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}/sb.db", dir.display());
        let first = open(&url, StoreSettings::default()).unwrap();
        let refused = match open(&url, StoreSettings::default()) {
            Ok(_) => panic!("two stores opened one file"),
            Err(e) => e.to_string(),
        };
        assert!(refused.contains("sb.db"), "names the file: {refused}");
        assert!(refused.contains("another Switchboard"), "{refused}");
        first.store.close().await;
        let again = open(&url, StoreSettings::default()).expect("free once the first is closed");
        again.store.close().await;
        std::fs::remove_dir_all(&dir).ok();
    }

    async fn retention(store: &dyn Store) {
        let t0 = chrono::Utc::now();
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        let ended: Vec<CallId> = (0..5).map(|_| CallId::new()).collect();
        let live = CallId::new();
        let mut seq = 0;
        let mut delivered = vec![];
        for (i, id) in ended.iter().chain([&live]).enumerate() {
            seq += 1;
            let mut it = item(seq, *id);
            it.created_at = at(i as i64);
            delivered.push(AttemptOutcome {
                attempt: Attempt {
                    call_id: *id,
                    seq,
                    at: at(i as i64),
                    status: Some(202),
                    error: None,
                    latency_ms: 1,
                },
                status: DeliveryStatus::Delivered,
                attempts: 1,
                next_attempt_at: at(i as i64),
            });
            store
                .commit(Change {
                    enqueue: vec![it],
                    ..Change::default()
                })
                .await
                .unwrap();
        }
        seq += 1;
        let mut pending = item(seq, live);
        pending.created_at = at(0);
        store
            .commit(Change {
                enqueue: vec![pending],
                attempts: delivered,
                remove_calls: ended
                    .iter()
                    .enumerate()
                    .map(|(i, id)| (*id, at(i as i64)))
                    .collect(),
                ..Change::default()
            })
            .await
            .unwrap();
        // Keep three ended calls, and everything younger than 100 s: the two oldest go.
        let policy = Retention {
            keep_secs: 100,
            max_ended_calls: 3,
            ..Retention::default()
        };
        let p = store.prune(policy, at(10)).await.unwrap();
        assert_eq!((p.calls, p.notifications, p.more), (2, 2, false));
        let gone = store.deliveries(ended[0]).await.unwrap();
        assert!(gone.records.is_empty());
        assert_eq!(
            gone.pruned.map(|p| p.notifications),
            Some(1),
            "the log says it was pruned"
        );
        assert_eq!(store.deliveries(ended[2]).await.unwrap().records.len(), 1);
        assert!(store.deliveries(ended[2]).await.unwrap().pruned.is_none());
        // Much later: every ended call and the live call's old delivered one go; pending stays.
        let p = store.prune(policy, at(1000)).await.unwrap();
        assert_eq!((p.calls, p.notifications), (3, 4));
        let log = store.deliveries(live).await.unwrap();
        assert_eq!(
            log.records.iter().map(|r| r.item.seq).collect::<Vec<_>>(),
            vec![seq]
        );
        assert_eq!(log.pruned.map(|p| p.notifications), Some(1));
        // Nothing is removed twice.
        assert_eq!(
            store.prune(policy, at(1000)).await.unwrap(),
            Pruned::default()
        );
    }

    /// An ended call with a long log goes over several rounds, never more than `PRUNE_ROWS`
    /// notifications in one.
    async fn long_log(store: &dyn Store) {
        let t0 = chrono::Utc::now();
        let call = CallId::new();
        let total = PRUNE_ROWS + 500;
        let mut change = Change::default();
        for seq in 1..=total as i64 {
            let mut it = item(seq, call);
            it.created_at = t0;
            it.status = DeliveryStatus::Delivered;
            change.enqueue.push(it);
        }
        change.remove_calls.push((call, t0));
        store.commit(change).await.unwrap();
        let policy = Retention {
            keep_secs: 10,
            ..Retention::default()
        };
        let later = t0 + chrono::Duration::seconds(60);
        let first = store.prune(policy, later).await.unwrap();
        assert_eq!(
            (first.notifications, first.calls, first.more),
            (PRUNE_ROWS as u64, 0, true)
        );
        let second = store.prune(policy, later).await.unwrap();
        assert_eq!((second.notifications, second.calls), (500, 1));
        let log = store.deliveries(call).await.unwrap();
        assert!(log.records.is_empty());
        assert_eq!(log.pruned.map(|p| p.notifications), Some(total as u64));
    }

    #[tokio::test]
    async fn the_memory_store_keeps_what_its_retention_policy_says() {
        retention(&memory::MemoryStore::default()).await;
        long_log(&memory::MemoryStore::default()).await;
    }

    #[tokio::test]
    async fn the_sqlite_store_keeps_what_its_retention_policy_says() {
        let dir = std::env::temp_dir().join(format!("sb-store-{}", uuid::Uuid::new_v4()));
        let store =
            sqlite::SqliteStore::open(&dir.join("sb.db"), StoreSettings::default()).unwrap();
        retention(&store).await;
        let other =
            sqlite::SqliteStore::open(&dir.join("long.db"), StoreSettings::default()).unwrap();
        long_log(&other).await;
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sqlite_wal_starts_over_while_commits_go_on_and_is_emptied_at_close() {
        let dir = std::env::temp_dir().join(format!("sb-wal-{}", uuid::Uuid::new_v4()));
        let path = dir.join("sb.db");
        let settings = StoreSettings {
            wal_limit_mb: 1,
            ..StoreSettings::default()
        };
        let store = Arc::new(sqlite::SqliteStore::open(&path, settings).unwrap());
        let wal = dir.join("sb.db-wal");
        let size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        // The WAL header's checkpoint sequence number (bytes 12..16, big-endian) goes up by one
        // each time the WAL starts over (SQLite's file format, "WAL File Format").
        let restarts = || {
            std::fs::read(&wal)
                .ok()
                .and_then(|b| {
                    b.get(12..16)
                        .map(|s| u32::from_be_bytes(s.try_into().unwrap()))
                })
                .unwrap_or(0)
        };
        let limit = 1024 * 1024;
        let started = std::time::Instant::now();
        let (mut seq, mut largest) = (0, 0);
        let first = restarts();
        // Steady commits for three seconds, with a notification of 4 KB each, at up to 500
        // commits of 32 KB a second (16 MB/s: a busy server's rate, not a firehose that a
        // machine under load could not copy as fast as it writes).
        let mut pace = tokio::time::interval(std::time::Duration::from_millis(2));
        while started.elapsed() < std::time::Duration::from_secs(3) {
            pace.tick().await;
            let mut change = Change::default();
            for _ in 0..8 {
                seq += 1;
                let mut it = item(seq, CallId::new());
                it.body = "x".repeat(4096);
                change.enqueue.push(it);
            }
            store.commit(change).await.unwrap();
            largest = largest.max(size());
        }
        let written = seq as u64 * 4096;
        assert!(
            written > 20 * limit,
            "the test wrote enough to pass the limit many times ({written} bytes)"
        );
        assert!(
            restarts() >= first + 2,
            "the WAL started over while commits went on (sequence {first} -> {})",
            restarts()
        );
        assert!(
            largest < written / 2,
            "the WAL file stayed bounded: at most {largest} bytes for {written} written"
        );
        store.close().await;
        assert_eq!(size(), 0, "a clean stop leaves an empty WAL");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn rows_stored_with_their_envelope_are_read_back_as_one_notification() {
        let dir = std::env::temp_dir().join(format!("sb-env-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sb.db");
        let call = CallId::new();
        let n = crate::graph::notification::Notification::for_call(
            crate::domain::ChangeType::Updated,
            call,
            "https://bot.example/cb",
            serde_json::json!({"state": "establishing", "note": "a/b é \"q\""}).to_string(),
        );
        let old_body = crate::graph::notification::envelope([n.item().as_str()]);
        {
            // A store as the version before wrote it: schema 4, the envelope in the row.
            let conn = rusqlite::Connection::open(&path).unwrap();
            for (i, sql) in sqlite::MIGRATIONS[..4].iter().enumerate() {
                conn.execute_batch(&format!("{sql}; PRAGMA user_version = {};", i + 1))
                    .unwrap();
            }
            let mut it = item(1, call);
            it.body = old_body.clone();
            conn.execute(
                "INSERT INTO notifications (seq, call_id, app_id, tenant_id, callback_uri, \
                 change_type, resource_url, body, created_at, status, attempts, next_attempt_at) \
                 VALUES (1, ?1, 'app', 'tenant', 'https://bot.example/cb', 'updated', 'r', ?2, 0, 0, 0, 0)",
                rusqlite::params![call.to_string(), it.body],
            )
            .unwrap();
        }
        let store = sqlite::SqliteStore::open(&path, StoreSettings::default()).unwrap();
        let pending = store.load().await.unwrap().pending;
        let body = &pending[0].body;
        let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        assert_eq!(
            parse(body),
            parse(&n.item()),
            "one notification, not an envelope"
        );
        assert_eq!(
            parse(&crate::graph::notification::envelope([body.as_str()])),
            parse(&old_body),
            "POSTed as before"
        );
        store.close().await;
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn a_store_numbered_globally_goes_on_per_call_above_every_number_given() {
        let dir = std::env::temp_dir().join(format!("sb-seq-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sb.db");
        let (a, b) = (CallId::new(), CallId::new());
        {
            // Schema 5: one global sequence; call a has 1 and 3 (3 pending), b has 2.
            let conn = rusqlite::Connection::open(&path).unwrap();
            for (i, sql) in sqlite::MIGRATIONS[..5].iter().enumerate() {
                conn.execute_batch(&format!("{sql}; PRAGMA user_version = {};", i + 1))
                    .unwrap();
            }
            for (seq, id, status) in [(1, a, 1), (2, b, 1), (3, a, 0)] {
                conn.execute(
                    "INSERT INTO notifications (seq, call_id, app_id, tenant_id, callback_uri, \
                     change_type, resource_url, body, created_at, status, attempts, next_attempt_at) \
                     VALUES (?1, ?2, 'app', 'tenant', 'https://bot.example/cb', 'updated', 'r', '{}', 0, ?3, 1, 0)",
                    rusqlite::params![seq, id.to_string(), status],
                )
                .unwrap();
                conn.execute(
                    "INSERT INTO attempts (seq, at, http_status, latency_ms) VALUES (?1, 0, ?2, 1)",
                    rusqlite::params![seq, if status == 1 { 202 } else { 503 }],
                )
                .unwrap();
            }
            let body = serde_json::to_string(&call(a)).unwrap();
            conn.execute(
                "INSERT INTO calls (id, app_id, body) VALUES (?1, 'app', ?2)",
                rusqlite::params![a.to_string(), body],
            )
            .unwrap();
            // Retention had removed rows up to 9: numbers up to 9 were given.
            conn.execute("INSERT INTO meta (key, value) VALUES ('seq_floor', 10)", [])
                .unwrap();
        }
        let store = sqlite::SqliteStore::open(&path, StoreSettings::default()).unwrap();
        let snap = store.load().await.unwrap();
        assert_eq!(
            snap.calls[0].last_seq, 9,
            "a goes on above every number ever given, though its rows were pruned"
        );
        let pending: Vec<_> = snap.pending.iter().map(|i| (i.call_id, i.seq)).collect();
        assert_eq!(pending, vec![(a, 3)]);
        let log = store.deliveries(a).await.unwrap().records;
        let statuses: Vec<_> = log
            .iter()
            .map(|r| {
                (
                    r.item.seq,
                    r.attempts.iter().map(|t| t.status).collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(
            statuses,
            vec![(1, vec![Some(202)]), (3, vec![Some(503)])],
            "each attempt stays with its notification"
        );
        // b's 2 and a new call's 2 are two notifications.
        let c = CallId::new();
        store
            .commit(Change {
                enqueue: vec![item(1, c), item(2, c), item(10, a)],
                ..Change::default()
            })
            .await
            .unwrap();
        let seqs = |log: DeliveryLog| log.records.iter().map(|r| r.item.seq).collect::<Vec<_>>();
        assert_eq!(seqs(store.deliveries(b).await.unwrap()), vec![2]);
        assert_eq!(seqs(store.deliveries(c).await.unwrap()), vec![1, 2]);
        assert_eq!(seqs(store.deliveries(a).await.unwrap()), vec![1, 3, 10]);
        store.close().await;
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_backend_failure_keeps_its_cause_and_says_it_once() {
        let io = std::io::Error::other("No space left on device");
        let e = StoreError::caused_by(io);
        assert_eq!(e.to_string(), "storage failed: No space left on device");
        assert_eq!(e.message(), "No space left on device");
        let cause = std::error::Error::source(&e).expect("the cause");
        let io = cause.source().expect("the I/O error behind it");
        assert!(io.downcast_ref::<std::io::Error>().is_some());
        let plain = StoreError::failed("the store has stopped");
        assert!(
            std::error::Error::source(&plain)
                .unwrap()
                .source()
                .is_none()
        );
    }

    #[test]
    fn store_urls_name_their_backend() {
        assert!(
            open("memory", StoreSettings::default())
                .unwrap()
                .data_dir
                .is_none()
        );
        assert!(open("postgres://localhost/x", StoreSettings::default()).is_err());
        assert!(open("redis://x", StoreSettings::default()).is_err());
    }

    #[test]
    fn a_sqlite_stores_keys_live_in_the_folder_of_its_file() {
        assert_eq!(
            data_dir("sqlite://switchboard-data/switchboard.db"),
            Some(PathBuf::from("switchboard-data"))
        );
        assert_eq!(data_dir("sqlite://sb.db"), Some(PathBuf::from(".")));
        assert_eq!(data_dir("memory"), None);
    }
}
