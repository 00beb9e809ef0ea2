//! The SQLite store: one embedded database file, WAL mode, every [`Change`] in one transaction.
//!
//! Live calls and conversations are rows of JSON; the outbox and its attempts are tables of their own so the
//! deliveries log survives the call. Migrations are numbered and tracked in `user_version`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    Attempt, Change, DeliveryRecord, DeliveryStatus, Durability, OutboxItem, Snapshot, Store,
    StoreError,
};
use crate::clock::Timestamp;
use crate::domain::conversation::Conversation;
use crate::domain::{Call, CallId};

/// Each entry moves the schema one version up. (The benchmark's SQLite baseline runs these too.)
pub const MIGRATIONS: &[&str] = &[
    "CREATE TABLE calls (
         id TEXT PRIMARY KEY,
         app_id TEXT NOT NULL,
         body TEXT NOT NULL
     );
     CREATE TABLE notifications (
         seq INTEGER PRIMARY KEY,
         call_id TEXT NOT NULL,
         app_id TEXT NOT NULL,
         tenant_id TEXT NOT NULL,
         callback_uri TEXT NOT NULL,
         change_type TEXT NOT NULL,
         resource_url TEXT NOT NULL,
         body TEXT NOT NULL,
         created_at INTEGER NOT NULL,
         status INTEGER NOT NULL,
         attempts INTEGER NOT NULL,
         next_attempt_at INTEGER NOT NULL
     );
     CREATE INDEX notifications_by_call ON notifications (call_id, seq);
     CREATE INDEX notifications_pending ON notifications (seq) WHERE status = 0;
     CREATE TABLE attempts (
         seq INTEGER NOT NULL,
         at INTEGER NOT NULL,
         http_status INTEGER,
         error TEXT,
         latency_ms INTEGER NOT NULL
     );
     CREATE INDEX attempts_by_seq ON attempts (seq);",
    "CREATE TABLE conversations (
         id TEXT PRIMARY KEY,
         body TEXT NOT NULL
     ) WITHOUT ROWID;",
];

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// Tells the checkpointer thread to stop.
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Copies the WAL back into the database from a thread of its own, so that commits never wait
/// for a checkpoint's fsync (with SQLite's automatic checkpoints they did: one commit in a few
/// hundred paid for it, and every commit queued behind that one).
fn spawn_checkpointer(
    path: &Path,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), StoreError> {
    let conn = Connection::open(path).map_err(backend)?;
    conn.execute_batch("PRAGMA busy_timeout = 5000;")
        .map_err(backend)?;
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(200));
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!("WAL checkpoint failed: {e}");
                }
            }
        })
        .map_err(backend)?;
    Ok(())
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
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
    pub fn open(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| backend(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path)
            .map_err(|e| backend(format!("cannot open {}: {e}", path.display())))?;
        let sync = match durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA busy_timeout = 5000; PRAGMA wal_autocheckpoint = 0;"
        ))
        .map_err(backend)?;
        migrate(&conn)?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        spawn_checkpointer(path, stop.clone())?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            stop,
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
                .map_err(|_| backend("connection lock poisoned"))?;
            f(&mut conn)
        })
        .await
        .map_err(backend)?
    }
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
        .map_err(|e| backend(format!("migration {} failed: {e}", i + 1)))?;
    }
    Ok(())
}

fn read_item(r: &rusqlite::Row<'_>) -> rusqlite::Result<(OutboxItem, String)> {
    let call_id: String = r.get(1)?;
    Ok((
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
        self.with_conn(|conn| {
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
            let mut stmt = conn
                .prepare("SELECT body FROM conversations")
                .map_err(backend)?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(backend)?;
            for body in rows {
                let body = body.map_err(backend)?;
                let c: Conversation = serde_json::from_str(&body)
                    .map_err(|e| StoreError::Corrupt(format!("conversation row: {e}")))?;
                conversations.push(c);
            }
            let mut pending = vec![];
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {ITEM_COLUMNS} FROM notifications WHERE status = 0 ORDER BY seq"
                ))
                .map_err(backend)?;
            for row in stmt.query_map([], read_item).map_err(backend)? {
                pending.push(with_call_id(row.map_err(backend)?)?);
            }
            let max: Option<i64> = conn
                .query_row("SELECT MAX(seq) FROM notifications", [], |r| r.get(0))
                .optional()
                .map_err(backend)?
                .flatten();
            Ok(Snapshot {
                calls,
                conversations,
                pending,
                next_seq: max.unwrap_or(0) + 1,
            })
        })
        .await
    }

    async fn commit(&self, change: Change) -> Result<(), StoreError> {
        if change.is_empty() {
            return Ok(());
        }
        self.with_conn(move |conn| {
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
                for id in &change.remove_calls {
                    del.execute(params![id.to_string()]).map_err(backend)?;
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
                }
                let mut att = tx
                    .prepare_cached(
                        "INSERT INTO attempts (seq, at, http_status, error, latency_ms) \
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .map_err(backend)?;
                let mut upd = tx
                    .prepare_cached(
                        "UPDATE notifications SET status = ?2, attempts = ?3, next_attempt_at = ?4 \
                         WHERE seq = ?1",
                    )
                    .map_err(backend)?;
                for o in &change.attempts {
                    let a = &o.attempt;
                    att.execute(params![
                        a.seq,
                        millis(a.at),
                        a.status,
                        a.error,
                        a.latency_ms as i64
                    ])
                    .map_err(backend)?;
                    upd.execute(params![
                        a.seq,
                        o.status.to_i64(),
                        o.attempts,
                        millis(o.next_attempt_at)
                    ])
                    .map_err(backend)?;
                }
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn deliveries(&self, call_id: CallId) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.with_conn(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {ITEM_COLUMNS} FROM notifications WHERE call_id = ?1 ORDER BY seq"
                ))
                .map_err(backend)?;
            let mut records = vec![];
            for row in stmt
                .query_map(params![call_id.to_string()], read_item)
                .map_err(backend)?
            {
                records.push(DeliveryRecord {
                    item: with_call_id(row.map_err(backend)?)?,
                    attempts: vec![],
                });
            }
            let mut att = conn
                .prepare_cached(
                    "SELECT at, http_status, error, latency_ms FROM attempts WHERE seq = ?1 ORDER BY rowid",
                )
                .map_err(backend)?;
            for rec in &mut records {
                let seq = rec.item.seq;
                for a in att
                    .query_map(params![seq], |r| {
                        Ok(Attempt {
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
            Ok(records)
        })
        .await
    }
}
