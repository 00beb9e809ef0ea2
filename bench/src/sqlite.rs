//! The SQLite baseline: how many commits per second SQLite itself manages on this machine with
//! Switchboard's settings (bundled SQLite, WAL, `synchronous = NORMAL`), each commit one
//! transaction inserting one row shaped like a row of Switchboard's outbox (`notifications`).
//!
//! Measured twice: in a plain loop on one thread (the ceiling), and the way Switchboard's store
//! calls it (each commit handed from async code to `spawn_blocking`, the connection behind a
//! mutex, one commit at a time), which adds the cost of the hand-off between threads.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

/// Switchboard's own schema: the outbox table (`notifications`) with its indexes, among others.
const SCHEMA: &str = switchboard::store::sqlite::MIGRATIONS[0];

const INSERT: &str = "INSERT INTO notifications (seq, call_id, app_id, tenant_id, callback_uri, \
     change_type, resource_url, body, created_at, status, attempts, next_attempt_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

/// Commits per second, both ways.
#[derive(Clone, Copy, Debug)]
pub struct CommitRates {
    pub raw: f64,
    pub via_spawn_blocking: f64,
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let _ = std::fs::remove_file(path);
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;",
    )?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// A notification body of the size Switchboard writes (about 1 KB).
fn sample_body(call_id: &str) -> String {
    serde_json::json!({
        "@odata.type": "#microsoft.graph.commsNotifications",
        "value": [{
            "@odata.type": "#microsoft.graph.commsNotification",
            "changeType": "updated",
            "resource": format!("/app/calls/{call_id}"),
            "resourceUrl": format!("/communications/calls/{call_id}"),
            "callbackUri": "http://127.0.0.1:40000/api/calls",
            "resourceData": {
                "@odata.type": "#microsoft.graph.call",
                "id": call_id,
                "state": "established",
                "direction": "outgoing",
                "callbackUri": "http://127.0.0.1:40000/api/calls",
                "requestedModalities": ["audio"],
                "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"},
                "source": {"@odata.type": "#microsoft.graph.participantInfo",
                    "identity": {"application": {"id": "b3c40000-0000-4000-8000-000000000a01"}},
                    "participantId": "0f2a0000-0000-4000-8000-000000000001"},
                "targets": [{"@odata.type": "#microsoft.graph.invitationParticipantInfo",
                    "identity": {"user": {"id": "b3c40000-0000-4000-8000-0000000000b1",
                        "displayName": "Bench answerer"}}}],
                "tenantId": "b3c40000-0000-4000-8000-0000000000e1",
                "myParticipantId": "0f2a0000-0000-4000-8000-000000000001",
                "callChainId": "0f2a0000-0000-4000-8000-000000000002",
                "resultInfo": null
            }
        }]
    })
    .to_string()
}

/// Inserts outbox row number `seq` in its own transaction.
fn commit_one(conn: &mut Connection, seq: i64, body: &str) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.prepare_cached(INSERT)?.execute(params![
        seq,
        format!("0f2a0000-0000-4000-8000-{seq:012}"),
        "b3c40000-0000-4000-8000-000000000a01",
        "b3c40000-0000-4000-8000-0000000000e1",
        "http://127.0.0.1:40000/api/calls",
        "updated",
        "/communications/calls/0f2a0000-0000-4000-8000-000000000000",
        body,
        seq,
        0,
        0,
        seq,
    ])?;
    tx.commit()
}

/// Measures both rates, each for `duration`, with database files in `dir`.
pub async fn commit_rates(dir: &Path, duration: Duration) -> anyhow::Result<CommitRates> {
    std::fs::create_dir_all(dir)?;
    let body = sample_body("0f2a0000-0000-4000-8000-000000000000");

    let raw = {
        let path = dir.join("raw.db");
        let body = body.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
            let mut conn = open(&path)?;
            let start = Instant::now();
            let mut n = 0;
            while start.elapsed() < duration {
                n += 1;
                commit_one(&mut conn, n, &body)?;
            }
            Ok(n as f64 / start.elapsed().as_secs_f64())
        })
        .await??
    };

    let conn = Arc::new(Mutex::new(open(&dir.join("blocking.db"))?));
    let body = Arc::new(body);
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < duration {
        n += 1;
        let (conn, body) = (conn.clone(), body.clone());
        tokio::task::spawn_blocking(move || {
            commit_one(&mut conn.lock().expect("connection lock"), n, &body)
        })
        .await??;
    }
    let via_spawn_blocking = n as f64 / start.elapsed().as_secs_f64();
    Ok(CommitRates {
        raw,
        via_spawn_blocking,
    })
}
