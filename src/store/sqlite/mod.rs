//! The SQLite store: one embedded database file, WAL mode, every [`Change`] in one transaction.
//!
//! Live calls and conversations are rows of JSON; the outbox and its attempts are tables of their own so the
//! deliveries log survives the call, for as long as the retention policy keeps it (`ended_calls`
//! says in which order calls ended; `pruned_calls` remembers whose log was cut). Migrations are
//! numbered `.sql` files in `migrations/`, tracked in `user_version`.
//!
//! The write-ahead log is checkpointed from a thread of its own (passive checkpoints never make a
//! commit wait); once it holds more than `[store] wal_limit_mb`, that thread syncs what it copied,
//! then pauses commits for the last few frames (well under a millisecond) and starts the WAL over,
//! so it stays bounded under any steady load. At a clean stop it is emptied.
//!
//! One server at a time: the store holds a lock on a file beside the database (`lock.rs`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    Attempt, Change, DeliveryLog, DeliveryRecord, DeliveryStatus, Durability, OutboxItem,
    PRUNE_BATCH, PRUNE_ROWS, Pruned, PrunedCall, Retention, Snapshot, Store, StoreError,
    StoreSettings,
};
use crate::clock::Timestamp;
use crate::domain::conversation::Conversation;
use crate::domain::{Call, CallId};

/// Each entry moves the schema one version up (`user_version` counts them); the files are beside
/// this module. (The benchmark's SQLite baseline runs these too.)
mod lock;

pub use lock::{LockError, StoreLock, lock_path};

pub const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_conversations.sql"),
    include_str!("migrations/0003_retention.sql"),
    include_str!("migrations/0004_next_due.sql"),
    include_str!("migrations/0005_notification_without_envelope.sql"),
    include_str!("migrations/0006_sequence_per_call.sql"),
];

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// The row (`n`) of each pending notification, by `(call, seq)`: a delivery attempt updates
    /// its row by row id, as cheap as when the sequence number was the row id. Filled at load
    /// and by commits; a row leaves it once delivered or dead.
    rows: Arc<Mutex<HashMap<(CallId, i64), i64>>>,
    /// Tells the checkpointer thread to stop.
    stop: Arc<std::sync::atomic::AtomicBool>,
    checkpointer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// This process's claim on the file, given up at `close` (or when dropped).
    lock: Mutex<Option<StoreLock>>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Copies the WAL back into the database from a thread of its own, so that commits never wait
/// for a checkpoint's fsync (with SQLite's automatic checkpoints they did: one commit in a few
/// hundred paid for it, and every commit queued behind that one).
///
/// Passive checkpoints alone never let the WAL start over under a steady stream of commits (one
/// always lands while the last frames are copied), so it grew without bound. Once it holds more
/// than `limit` bytes, this thread copies what it can passively, syncs the database and the WAL
/// itself (commits go on meanwhile), then takes the store's connection (so no commit is running:
/// the next ones queue in the committer for this short moment) and restarts the WAL, which by then
/// has only the frames of the last few commits left to copy and sync. The next commit writes from
/// the WAL's start again. The file keeps its size (rewriting it in place costs less than cutting
/// it back and growing it anew); `journal_size_limit` cuts it back only past twice the limit.
struct Checkpointer {
    conn: Connection,
    store_conn: Arc<Mutex<Connection>>,
    db: std::path::PathBuf,
    wal: std::path::PathBuf,
    /// Bytes of one WAL frame: a page and its 24-byte header.
    frame_bytes: u64,
    limit: u64,
    /// Warned that another process's reader keeps the WAL from being copied.
    pinned: bool,
    /// Warned that commits outpace the copy.
    outpaced: bool,
    /// When the last round ended, and the frames the WAL held then.
    seen: (std::time::Instant, i64),
}

fn spawn_checkpointer(
    path: &Path,
    store_conn: Arc<Mutex<Connection>>,
    limit: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    let conn = Connection::open(path).map_err(backend)?;
    // None: the restart runs while commits wait, so it gives up at once when busy.
    conn.execute_batch("PRAGMA busy_timeout = 0;")
        .map_err(backend)?;
    let page: u64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(backend)?;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let mut checkpointer = Checkpointer {
        conn,
        store_conn,
        db: path.to_owned(),
        wal: wal.into(),
        frame_bytes: page + 24,
        limit,
        pinned: false,
        outpaced: false,
        seen: (std::time::Instant::now(), 0),
    };
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            let mut failing = false;
            let mut wait = ROUND_MIN;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(wait);
                wait = match checkpointer.round() {
                    Err(e) => {
                        if !failing {
                            tracing::warn!("WAL checkpoint failed: {e}");
                        }
                        failing = true;
                        ROUND_MAX
                    }
                    Ok(next) => {
                        failing = false;
                        next
                    }
                };
            }
        })
        .map_err(backend)
}

/// Frames (of 4 KiB pages) left to copy at most when commits are paused for the restart.
const PAUSE_FRAMES: i64 = 256;
/// The checkpointer's rounds come at most this far apart, and at least...
const ROUND_MAX: std::time::Duration = std::time::Duration::from_millis(200);
/// ...this far apart: sooner when commits would fill the WAL to its limit before then.
const ROUND_MIN: std::time::Duration = std::time::Duration::from_millis(5);

impl Checkpointer {
    /// A passive checkpoint: (frames in the WAL, frames copied into the database).
    fn passive(&self) -> rusqlite::Result<(i64, i64)> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })
    }

    /// One round, and how long until the next: when commits fill the WAL quickly, the next round
    /// comes before they would fill it to the limit.
    fn round(&mut self) -> Result<std::time::Duration, Box<dyn std::error::Error>> {
        let (found, left) = self.restart_if_full()?;
        let (at, before) = std::mem::replace(&mut self.seen, (std::time::Instant::now(), left));
        let grown = (found - before).max(0) as u64 * self.frame_bytes;
        let room = self
            .limit
            .saturating_sub(left.max(0) as u64 * self.frame_bytes);
        Ok(if grown == 0 {
            ROUND_MAX
        } else {
            // At the rate it grew since the last round, until it is full.
            at.elapsed()
                .mul_f64(room as f64 / grown as f64)
                .clamp(ROUND_MIN, ROUND_MAX)
        })
    }

    /// A passive checkpoint, and a restart when the WAL holds more than the limit; returns the
    /// frames the WAL held at first and holds now.
    fn restart_if_full(&mut self) -> Result<(i64, i64), Box<dyn std::error::Error>> {
        let (mut frames, mut copied) = self.passive()?;
        let found = frames;
        // What the WAL holds since it last started over (its file is not cut back).
        if frames.max(0) as u64 * self.frame_bytes <= self.limit {
            return Ok((found, frames));
        }
        // Copy what came in meanwhile, without stopping commits, until little is left...
        let over = |frames: i64| frames.max(0) as u64 * self.frame_bytes > 2 * self.limit;
        for _ in 0..20 {
            let left = frames - copied;
            if left <= PAUSE_FRAMES {
                break;
            }
            let before = copied;
            (frames, copied) = self.passive()?;
            if copied <= before && frames - copied > PAUSE_FRAMES {
                // Another connection (a backup, a sqlite3 shell) reads an old snapshot: nothing
                // after it can be copied until it is done. Stopping commits would not help.
                if !self.pinned {
                    tracing::warn!(
                        "the WAL cannot be checkpointed past a reader of an old snapshot (another process has the database open); it grows until that reader is done"
                    );
                    self.pinned = true;
                }
                return Ok((found, frames));
            }
            if over(frames) {
                break; // past twice the limit: no more rounds while commits go on
            }
        }
        self.pinned = false;
        if frames - copied > PAUSE_FRAMES {
            if !over(frames) {
                return Ok((found, frames)); // writes outpace the copy; the next round may catch up
            }
            // Writes outpace the copy: commits wait for all of it (backpressure), or the WAL
            // would grow without bound.
            if !self.outpaced {
                tracing::warn!(
                    "commits write faster than the WAL is copied into the database; they are paused while it catches up (this is logged once)"
                );
                self.outpaced = true;
            }
        }
        // A passive checkpoint syncs the database only when it reaches the WAL's end, which
        // under steady commits only the restart does: sync what the passive rounds wrote into
        // it, and the WAL's newest frames, now, while commits go on.
        // Twice: the second time, only what came in during the first is left.
        let synced = std::time::Instant::now();
        for again in [false, true] {
            if again {
                self.passive()?;
            }
            std::fs::File::open(&self.db)?.sync_data()?;
            std::fs::File::open(&self.wal)?.sync_data()?;
        }
        let synced = synced.elapsed();
        // ...then, between two commits, the rest (a few frames), and start over.
        let paused = std::time::Instant::now();
        let pause = self.store_conn.lock();
        let busy: i64 = self
            .conn
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get(0))?;
        tracing::debug!(
            busy,
            "WAL restart: commits paused for {:?} (synced beforehand in {synced:?})",
            paused.elapsed()
        );
        drop(pause);
        // Nothing written since (commits waited): a busy restart leaves the WAL as it was.
        Ok((found, if busy == 0 { 0 } else { frames }))
    }
}

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::caused_by(e)
}

fn millis(t: Timestamp) -> i64 {
    t.timestamp_millis()
}

fn from_millis(ms: i64) -> Timestamp {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default()
}

impl SqliteStore {
    /// Opens (or creates, with its folder) the database at `path` and brings its schema up to
    /// date.
    pub fn open(path: &Path, settings: StoreSettings) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::failed(format!("cannot create {}: {e}", dir.display())))?;
        }
        let cannot_write = |e: &dyn std::fmt::Display| {
            StoreError::failed(format!(
                "the store {} cannot be written ({e}); Switchboard needs a writable store: check the permissions of the file and its folder, the free space, and that the file system is not mounted read-only",
                path.display()
            ))
        };
        let lock = StoreLock::acquire(path).map_err(|e| match e {
            LockError::Held { .. } => StoreError::failed(e.to_string()),
            LockError::Io { .. } => cannot_write(&e),
        })?;
        let conn = Connection::open(path).map_err(|e| cannot_write(&e))?;
        let sync = match settings.durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        // WAL mode needs to write beside the file: on a read-only folder this is what fails.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA busy_timeout = 5000; PRAGMA wal_autocheckpoint = 0;"
        ))
        .map_err(|e| cannot_write(&e))?;
        if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
            return Err(cannot_write(&"it opened read-only"));
        }
        let limit = settings.wal_limit_mb.max(1) * 1024 * 1024;
        conn.execute_batch(&format!("PRAGMA journal_size_limit = {};", limit * 2))
            .map_err(backend)?;
        migrate(&conn).map_err(|e| cannot_write(&e))?;
        probe(&conn).map_err(|e| cannot_write(&e))?;
        let conn = Arc::new(Mutex::new(conn));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let checkpointer = spawn_checkpointer(path, conn.clone(), limit, stop.clone())?;
        Ok(SqliteStore {
            rows: Arc::default(),
            conn,
            stop,
            checkpointer: Mutex::new(Some(checkpointer)),
            lock: Mutex::new(Some(lock)),
        })
    }

    async fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn
                .lock()
                .map_err(|_| StoreError::failed("connection lock poisoned"))?;
            f(&mut conn)
        })
        .await
        .map_err(backend)?
    }
}

/// A small write that must reach the WAL: `Ok` when the store takes writes.
fn probe(conn: &Connection) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('probe', ?1) \
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![Utc::now().timestamp_millis()],
    )
    .map(|_| ())
    .map_err(backend)
}

/// Remembers that `removed` notifications of `call` were pruned at `at`.
fn tombstone(tx: &Connection, call: &str, removed: u64, at: i64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO pruned_calls (call_id, at, notifications) VALUES (?1, ?2, ?3) \
         ON CONFLICT(call_id) DO UPDATE SET at = excluded.at, \
         notifications = notifications + excluded.notifications",
    )
    .and_then(|mut st| st.execute(params![call, at, removed as i64]))
    .map(|_| ())
    .map_err(backend)
}

/// Removes up to `limit` of a call's delivered and dead notifications, oldest first, and their
/// attempts; returns how many of each.
fn remove_done(tx: &Connection, call: &str, limit: usize) -> Result<(u64, u64), StoreError> {
    let attempts = tx
        .prepare_cached(
            "DELETE FROM attempts WHERE n IN (SELECT n FROM notifications \
             WHERE call_id = ?1 AND status != 0 ORDER BY seq LIMIT ?2)",
        )
        .and_then(|mut st| st.execute(params![call, limit as i64]))
        .map_err(backend)?;
    let notifications = tx
        .prepare_cached(
            "DELETE FROM notifications WHERE n IN (SELECT n FROM notifications \
             WHERE call_id = ?1 AND status != 0 ORDER BY seq LIMIT ?2)",
        )
        .and_then(|mut st| st.execute(params![call, limit as i64]))
        .map_err(backend)?;
    Ok((notifications as u64, attempts as u64))
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(backend)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        conn.execute_batch(&format!(
            "BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;",
            i + 1
        ))
        .map_err(|e| StoreError::failed(format!("migration {} failed: {e}", i + 1)))?;
    }
    Ok(())
}

/// A notification row read with `SELECT {ITEM_COLUMNS}, n`: the item (its call id still
/// text), and its row id.
fn read_item(r: &rusqlite::Row<'_>) -> rusqlite::Result<((OutboxItem, String), i64)> {
    let call_id: String = r.get(1)?;
    let n: i64 = r.get(12)?;
    Ok((
        (
            OutboxItem {
                seq: r.get(0)?,
                call_id: CallId::default(),
                app_id: r.get(2)?,
                tenant_id: r.get(3)?,
                callback_uri: r.get(4)?,
                change_type: r.get(5)?,
                resource_url: r.get(6)?,
                body: r.get(7)?,
                created_at: from_millis(r.get(8)?),
                status: DeliveryStatus::from_i64(r.get(9)?),
                attempts: r.get(10)?,
                next_attempt_at: from_millis(r.get(11)?),
            },
            call_id,
        ),
        n,
    ))
}

fn with_call_id((mut item, call_id): (OutboxItem, String)) -> Result<OutboxItem, StoreError> {
    item.call_id = CallId::parse(&call_id)
        .ok_or_else(|| StoreError::Corrupt(format!("bad call id {call_id:?}")))?;
    Ok(item)
}

const ITEM_COLUMNS: &str = "seq, call_id, app_id, tenant_id, callback_uri, change_type, \
     resource_url, body, created_at, status, attempts, next_attempt_at";

#[async_trait]
impl Store for SqliteStore {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        let row_ids = self.rows.clone();
        self.with_conn(move |conn| {
            let mut calls = vec![];
            let mut stmt = conn.prepare("SELECT body FROM calls").map_err(backend)?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(backend)?;
            for body in rows {
                let body = body.map_err(backend)?;
                let call: Call = serde_json::from_str(&body)
                    .map_err(|e| {
                        StoreError::Corrupt(format!(
                            "call row: {e} (calls left live by a Switchboard from before conversations were stored cannot be read back; end them with that version, or remove the database)"
                        ))
                    })?;
                calls.push(call);
            }
            let mut conversations = vec![];
            let mut due = std::collections::HashMap::new();
            let mut stmt = conn
                .prepare("SELECT body, next_due FROM conversations")
                .map_err(backend)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?)))
                .map_err(backend)?;
            for row in rows {
                let (body, next_due) = row.map_err(backend)?;
                let c: Conversation = serde_json::from_str(&body)
                    .map_err(|e| StoreError::Corrupt(format!("conversation row: {e}")))?;
                if let Some(ms) = next_due {
                    due.insert(c.id, from_millis(ms));
                }
                conversations.push(c);
            }
            let mut pending = vec![];
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {ITEM_COLUMNS}, n FROM notifications WHERE status = 0 ORDER BY n"
                ))
                .map_err(backend)?;
            let mut ids = HashMap::new();
            for row in stmt.query_map([], read_item).map_err(backend)? {
                let (item, n) = row.map_err(backend)?;
                let item = with_call_id(item)?;
                ids.insert((item.call_id, item.seq), n);
                pending.push(item);
            }
            *row_ids.lock().unwrap_or_else(PoisonError::into_inner) = ids;
            Ok(Snapshot {
                calls,
                conversations,
                due,
                pending,
            })
        })
        .await
    }

    async fn commit(&self, change: Change) -> Result<(), StoreError> {
        if change.is_empty() {
            return Ok(());
        }
        let rows = self.rows.clone();
        self.with_conn(move |conn| {
            let mut ids = rows.lock().unwrap_or_else(PoisonError::into_inner);
            let (mut added, mut settled) = (vec![], vec![]);
            let tx = conn.transaction().map_err(backend)?;
            {
                let mut put = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO calls (id, app_id, body) VALUES (?1, ?2, ?3)",
                    )
                    .map_err(backend)?;
                for call in &change.put_calls {
                    let body = serde_json::to_string(call).map_err(backend)?;
                    put.execute(params![call.id.to_string(), &*call.app_id, body])
                        .map_err(backend)?;
                }
                let mut del = tx
                    .prepare_cached("DELETE FROM calls WHERE id = ?1")
                    .map_err(backend)?;
                let mut ended = tx
                    .prepare_cached("INSERT INTO ended_calls (call_id, ended_at) VALUES (?1, ?2)")
                    .map_err(backend)?;
                for (id, at) in &change.remove_calls {
                    let id = id.to_string();
                    del.execute(params![id]).map_err(backend)?;
                    ended.execute(params![id, millis(*at)]).map_err(backend)?;
                }
                let mut put = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO conversations (id, body) VALUES (?1, ?2)",
                    )
                    .map_err(backend)?;
                for c in &change.put_conversations {
                    let body = serde_json::to_string(c).map_err(backend)?;
                    put.execute(params![c.id.to_string(), body])
                        .map_err(backend)?;
                }
                let mut due = tx
                    .prepare_cached("UPDATE conversations SET next_due = ?2 WHERE id = ?1")
                    .map_err(backend)?;
                for (id, at) in &change.due {
                    due.execute(params![id.to_string(), at.map(millis)])
                        .map_err(backend)?;
                }
                let mut del = tx
                    .prepare_cached("DELETE FROM conversations WHERE id = ?1")
                    .map_err(backend)?;
                for id in &change.remove_conversations {
                    del.execute(params![id.to_string()]).map_err(backend)?;
                }
                let mut ins = tx
                    .prepare_cached(&format!(
                        "INSERT INTO notifications ({ITEM_COLUMNS}) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                    ))
                    .map_err(backend)?;
                for i in &change.enqueue {
                    ins.execute(params![
                        i.seq,
                        i.call_id.to_string(),
                        i.app_id,
                        i.tenant_id,
                        i.callback_uri,
                        i.change_type,
                        i.resource_url,
                        i.body,
                        millis(i.created_at),
                        i.status.to_i64(),
                        i.attempts,
                        millis(i.next_attempt_at),
                    ])
                    .map_err(backend)?;
                    added.push(((i.call_id, i.seq), tx.last_insert_rowid()));
                }
                let mut att = tx
                    .prepare_cached(
                        "INSERT INTO attempts (n, at, http_status, error, latency_ms) \
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .map_err(backend)?;
                let mut upd = tx
                    .prepare_cached(
                        "UPDATE notifications SET status = ?2, attempts = ?3, next_attempt_at = ?4 \
                         WHERE n = ?1",
                    )
                    .map_err(backend)?;
                let mut find = tx
                    .prepare_cached("SELECT n FROM notifications WHERE call_id = ?1 AND seq = ?2")
                    .map_err(backend)?;
                for o in &change.attempts {
                    let a = &o.attempt;
                    let key = (a.call_id, a.seq);
                    let known = ids
                        .get(&key)
                        .copied()
                        .or_else(|| added.iter().find(|(k, _)| *k == key).map(|(_, n)| *n));
                    let n = match known {
                        Some(n) => Some(n),
                        None => find
                            .query_row(params![a.call_id.to_string(), a.seq], |r| r.get(0))
                            .optional()
                            .map_err(backend)?,
                    };
                    // A notification no longer stored (removed by retention) keeps no attempts.
                    let Some(n) = n else {
                        continue;
                    };
                    att.execute(params![
                        n,
                        millis(a.at),
                        a.status,
                        a.error,
                        a.latency_ms as i64
                    ])
                    .map_err(backend)?;
                    upd.execute(params![
                        n,
                        o.status.to_i64(),
                        o.attempts,
                        millis(o.next_attempt_at)
                    ])
                    .map_err(backend)?;
                    if o.status != DeliveryStatus::Pending {
                        settled.push(key);
                    }
                }
            }
            tx.commit().map_err(backend)?;
            for (key, n) in added {
                ids.insert(key, n);
            }
            for key in settled {
                ids.remove(&key);
            }
            Ok(())
        })
        .await
    }

    async fn deliveries(&self, call_id: CallId) -> Result<DeliveryLog, StoreError> {
        self.with_conn(move |conn| {
            let pruned = conn
                .query_row(
                    "SELECT at, notifications FROM pruned_calls WHERE call_id = ?1",
                    params![call_id.to_string()],
                    |r| {
                        Ok(PrunedCall {
                            at: from_millis(r.get(0)?),
                            notifications: r.get::<_, i64>(1)? as u64,
                        })
                    },
                )
                .optional()
                .map_err(backend)?;
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {ITEM_COLUMNS}, n FROM notifications WHERE call_id = ?1 ORDER BY seq"
                ))
                .map_err(backend)?;
            let mut records = vec![];
            let mut rows = vec![];
            for row in stmt
                .query_map(params![call_id.to_string()], read_item)
                .map_err(backend)?
            {
                let (item, n) = row.map_err(backend)?;
                records.push(DeliveryRecord {
                    item: with_call_id(item)?,
                    attempts: vec![],
                });
                rows.push(n);
            }
            let mut att = conn
                .prepare_cached(
                    "SELECT at, http_status, error, latency_ms FROM attempts \
                     WHERE n = ?1 ORDER BY rowid",
                )
                .map_err(backend)?;
            for (rec, n) in records.iter_mut().zip(rows) {
                let seq = rec.item.seq;
                for a in att
                    .query_map(params![n], |r| {
                        Ok(Attempt {
                            call_id,
                            seq,
                            at: from_millis(r.get(0)?),
                            status: r.get(1)?,
                            error: r.get(2)?,
                            latency_ms: r.get::<_, i64>(3)? as u64,
                        })
                    })
                    .map_err(backend)?
                {
                    rec.attempts.push(a.map_err(backend)?);
                }
            }
            Ok(DeliveryLog { records, pruned })
        })
        .await
    }

    async fn probe(&self) -> Result<(), StoreError> {
        self.with_conn(|conn| probe(conn)).await
    }

    async fn reset(&self) -> Result<(), StoreError> {
        let rows = self.rows.clone();
        self.with_conn(move |conn| {
            conn.execute_batch(
                "BEGIN; DELETE FROM calls; DELETE FROM conversations; DELETE FROM notifications; \
                 DELETE FROM attempts; DELETE FROM ended_calls; DELETE FROM pruned_calls; COMMIT;",
            )
            .map_err(backend)?;
            rows.lock().unwrap_or_else(PoisonError::into_inner).clear();
            Ok(())
        })
        .await
    }

    async fn prune(&self, policy: Retention, now: Timestamp) -> Result<Pruned, StoreError> {
        self.with_conn(move |conn| {
            let cutoff = millis(policy.cutoff(now));
            let at = millis(now);
            let tx = conn.transaction().map_err(backend)?;
            let mut out = Pruned::default();
            // Ended calls past the count or the age go whole, oldest-ended first.
            // Rows go from the front only, so their numbers are contiguous.
            let count: i64 = tx
                .query_row(
                    "SELECT COALESCE(MAX(n) - MIN(n) + 1, 0) FROM ended_calls",
                    [],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            let oldest: Vec<(i64, String, i64)> = tx
                .prepare_cached("SELECT n, call_id, ended_at FROM ended_calls ORDER BY n LIMIT ?1")
                .and_then(|mut st| {
                    st.query_map(params![PRUNE_BATCH as i64 + 1], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })?
                    .collect()
                })
                .map_err(backend)?;
            // At most PRUNE_ROWS notifications per transaction, however long a call's log is.
            let mut budget = PRUNE_ROWS;
            for (i, (n, call, ended_at)) in oldest.iter().enumerate() {
                let over = count - i as i64 > policy.max_ended_calls as i64;
                if !over && *ended_at >= cutoff {
                    break;
                }
                if i == PRUNE_BATCH || budget == 0 {
                    out.more = true;
                    break;
                }
                let (removed, attempts) = remove_done(&tx, call, budget)?;
                budget -= removed as usize;
                if removed > 0 {
                    tombstone(&tx, call, removed, at)?;
                }
                out.notifications += removed;
                out.attempts += attempts;
                if budget == 0 {
                    // Maybe more of this call's log is left: its row stays for the next round.
                    out.more = true;
                    break;
                }
                tx.execute("DELETE FROM ended_calls WHERE n = ?1", params![n])
                    .map_err(backend)?;
                out.calls += 1;
            }
            // Old delivered or dead notifications of calls still going on (or still retrying),
            // looked for only when the oldest notification is old enough.
            let oldest: Option<i64> = tx
                .query_row(
                    "SELECT created_at FROM notifications ORDER BY n LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            let scan = if oldest.is_some_and(|t| t < cutoff) {
                budget.min(PRUNE_ROWS)
            } else {
                0
            };
            let window: Vec<(i64, String, i64, i64)> = tx
                .prepare_cached(
                    "SELECT n, call_id, created_at, status FROM notifications ORDER BY n LIMIT ?1",
                )
                .and_then(|mut st| {
                    st.query_map(params![scan as i64], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(backend)?;
            let old = window
                .iter()
                .take_while(|(_, _, created, _)| *created < cutoff)
                .count();
            if scan > 0 && old == window.len() && window.len() == scan {
                out.more = true;
            }
            let mut per_call: std::collections::HashMap<&str, u64> = Default::default();
            {
                let mut del_att = tx
                    .prepare_cached("DELETE FROM attempts WHERE n = ?1")
                    .map_err(backend)?;
                let mut del = tx
                    .prepare_cached("DELETE FROM notifications WHERE n = ?1")
                    .map_err(backend)?;
                for (n, call, _, status) in &window[..old] {
                    if *status == 0 {
                        continue;
                    }
                    out.attempts += del_att.execute(params![n]).map_err(backend)? as u64;
                    out.notifications += del.execute(params![n]).map_err(backend)? as u64;
                    *per_call.entry(call.as_str()).or_default() += 1;
                }
            }
            for (call, removed) in per_call {
                tombstone(&tx, call, removed, at)?;
            }
            tx.execute(
                "DELETE FROM pruned_calls WHERE n <= (SELECT MAX(n) FROM pruned_calls) - ?1",
                params![policy.tombstones() as i64],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(out)
        })
        .await
    }

    async fn close(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // The checkpointer's own round must be over, or the truncation finds it busy (and it
        // must not wait for the connection this holds).
        if let Some(t) = self.checkpointer.lock().ok().and_then(|mut t| t.take()) {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        let result = self
            .with_conn(move |conn| {
                let busy: i64 = conn
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
                    .map_err(backend)?;
                if busy != 0 {
                    return Err(StoreError::failed("the database was busy"));
                }
                Ok(())
            })
            .await;
        if let Err(e) = result {
            tracing::warn!("could not empty the WAL at stop: {e}");
        }
        // Nothing is written after this: another server may have the file (a test restarts on
        // it in the same process while this store may still be referenced).
        self.lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}
