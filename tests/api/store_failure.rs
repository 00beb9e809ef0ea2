//! A store that cannot write: a full disk and a read-only file system, made for real with a small
//! tmpfs (these tests need root to mount one, and say so and pass when they cannot).
//!
//! The last tests hold a commit of a store of their own and then fail it (or not), to see what
//! a reader is told meanwhile.
//!
//! What a client is told must match what is stored: while the store cannot write, changes are
//! answered `503` with `Retry-After` and nothing in memory runs ahead of the store; once it can
//! write again, Switchboard takes changes again by itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use switchboard::store::{Change, DeliveryLog, Pruned, Retention, Snapshot, Store, StoreError};

use crate::helpers::*;

const CALLS: &str = "/v1.0/communications/calls";

/// A tmpfs of `size` mounted on a fresh folder, unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn new(size: &str) -> Option<Mount> {
        let dir = std::env::temp_dir().join(format!("sb-mnt-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here (needs root); the full-disk test did not run"
            );
            std::fs::remove_dir(&dir).ok();
            return None;
        }
        Some(Mount(dir))
    }

    /// Remounts with `opts`; a file still open for writing (a store closing) makes a read-only
    /// remount busy for a moment.
    fn remount(&self, opts: &str) {
        for _ in 0..50 {
            let ok = Command::new("mount")
                .args(["-o", &format!("remount,{opts}")])
                .arg(&self.0)
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap()
                .success();
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("cannot remount {opts}");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// Writes zeros into `path` until the file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let small = vec![0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
}

async fn healthz(app: &TestApp) -> u16 {
    app.http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls `f` every 100 ms until it holds or `secs` pass.
async fn eventually<F: std::future::Future<Output = bool>>(
    secs: u64,
    mut f: impl FnMut() -> F,
) -> bool {
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < end {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_keeps_memory_true_to_the_store_and_recovers_by_itself() {
    let Some(mnt) = Mount::new("6m") else {
        return;
    };
    let store = format!("sqlite://{}/sb.db", mnt.0.display());
    let extra = "[store]\nwal_limit_mb = 1\n";
    let app = spawn_app_at(&store, extra, |s| s.apps[0].max_concurrent_calls = 2)
        .await
        .unwrap();
    let token = app.token().await;
    let id = app.established(&token).await;

    fill(&mnt.0.join("filler"));
    // SQLite may still find room in pages it has; keep the call alive until a write fails.
    let mut refused = None;
    for _ in 0..500 {
        let k = app
            .send(
                "POST",
                &format!("{CALLS}/{id}/keepAlive"),
                Some(&token),
                None,
            )
            .await;
        if k.status != 200 {
            refused = Some(k);
            break;
        }
    }
    let refused = refused.expect("a write failed on the full disk");
    assert_eq!(refused.status, 503, "{}", refused.text);
    // The call cannot be hung up while nothing can be stored: 503, and again 503 (not 404).
    for _ in 0..2 {
        let d = app
            .send("DELETE", &format!("{CALLS}/{id}"), Some(&token), None)
            .await;
        assert_eq!(d.status, 503, "{}", d.text);
        assert_eq!(d.graph_error().as_deref(), Some("serviceNotAvailable"));
        assert!(d.headers.contains_key("retry-after"), "{:?}", d.headers);
    }
    // What is answered is what is stored: the call is still established.
    assert!(
        eventually(3, || async {
            let g = app
                .send("GET", &format!("{CALLS}/{id}"), Some(&token), None)
                .await;
            g.status == 200 && g.body["state"] == "established"
        })
        .await,
        "the call reads back as stored"
    );
    assert_eq!(healthz(&app).await, 503);
    let ready = app
        .http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let ready: serde_json::Value = ready.json().await.unwrap();
    let why = ready["checks"]["store"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(why.contains("full"), "readyz says why: {ready}");
    assert!(why.len() < 300, "the message does not nest: {why}");
    // Creates fail while full, and do not use up the app's two concurrent calls.
    for _ in 0..3 {
        let c = app
            .send("POST", CALLS, Some(&token), Some(app.p2p(ALICE)))
            .await;
        assert_eq!(c.status, 503, "{}", c.text);
    }

    std::fs::remove_file(mnt.0.join("filler")).unwrap();
    assert!(
        eventually(15, || async { healthz(&app).await == 200 }).await,
        "the server recovers by itself once the disk has room"
    );
    let second = app.create(&token, ALICE).await;
    let d = app
        .send("DELETE", &format!("{CALLS}/{id}"), Some(&token), None)
        .await;
    assert_eq!(d.status, 204, "{}", d.text);
    let states = app
        .receiver
        .wait_for(&id, |s| has(s, "deleted", "terminated"))
        .await;
    assert!(has(&states, "deleted", "terminated"), "{states:?}");
    let g = app
        .send("GET", &format!("{CALLS}/{id}"), Some(&token), None)
        .await;
    assert_eq!(g.status, 404);

    // After a restart the store says the same: the first call is over, the second is live.
    app.stop().await;
    let again = spawn_app_at(&store, extra, |_| {}).await.unwrap();
    let token = again.token().await;
    let g = again
        .send("GET", &format!("{CALLS}/{id}"), Some(&token), None)
        .await;
    assert_eq!(g.status, 404, "{}", g.text);
    let g = again
        .send("GET", &format!("{CALLS}/{second}"), Some(&token), None)
        .await;
    assert_eq!(g.status, 200, "{}", g.text);
    again.stop().await;
}

#[tokio::test]
async fn a_read_only_store_is_refused_at_start_with_the_reason() {
    let Some(mnt) = Mount::new("4m") else {
        return;
    };
    let store = format!("sqlite://{}/sb.db", mnt.0.display());
    // A store made by Switchboard, closed again.
    drop(switchboard::store::open(&store, Default::default()).unwrap());
    mnt.remount("ro");
    let err = match spawn_app_at(&store, "", |_| {}).await {
        Ok(_) => panic!("a read-only store was accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("cannot be written"), "{err}");
    assert!(err.contains("sb.db"), "names the file: {err}");
    mnt.remount("rw");
}

#[tokio::test]
async fn health_says_ok_while_the_store_writes() {
    let app = spawn_app(Backend::Sqlite).await;
    assert_eq!(healthz(&app).await, 200);
    let r = app
        .http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["checks"]["store"],
        json!({"ready": true, "writable": true, "readable": true})
    );
}

/// A memory store whose next commit can be held until the test lets it go, then fail or pass.
#[derive(Default)]
struct Held {
    inner: switchboard::store::memory::MemoryStore,
    /// Some(fail): hold the next commit; when let go, fail it (and the probes) or not.
    hold: Mutex<Option<bool>>,
    broken: std::sync::atomic::AtomicBool,
    /// The next commit happens but is reported failed (the store breaks after writing it).
    lie: std::sync::atomic::AtomicBool,
    holding: tokio::sync::Notify,
    go: tokio::sync::Notify,
}

/// A request from a task of its own.
async fn request(http: &reqwest::Client, method: &str, url: &str, token: &str) -> Resp {
    let rb = http
        .request(method.parse().unwrap(), url)
        .bearer_auth(token);
    into_resp(rb.send().await.unwrap()).await
}

fn full() -> StoreError {
    StoreError::failed("database or disk is full")
}

#[async_trait::async_trait]
impl Store for Held {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load().await
    }
    async fn commit(&self, change: Change) -> Result<(), StoreError> {
        let hold = self.hold.lock().unwrap().take();
        if let Some(fail) = hold {
            self.holding.notify_one();
            self.go.notified().await;
            if fail {
                self.broken.store(true, Ordering::SeqCst);
            }
        }
        if self.broken.load(Ordering::SeqCst) {
            return Err(full());
        }
        let lie = self.lie.swap(false, Ordering::SeqCst);
        self.inner.commit(change).await?;
        if lie {
            self.broken.store(true, Ordering::SeqCst);
            return Err(full());
        }
        Ok(())
    }
    async fn deliveries(&self, id: switchboard::domain::CallId) -> Result<DeliveryLog, StoreError> {
        self.inner.deliveries(id).await
    }
    async fn probe(&self) -> Result<(), StoreError> {
        match self.broken.load(Ordering::SeqCst) {
            true => Err(full()),
            false => Ok(()),
        }
    }
    async fn prune(
        &self,
        policy: Retention,
        now: switchboard::clock::Timestamp,
    ) -> Result<Pruned, StoreError> {
        self.inner.prune(policy, now).await
    }
}

/// An established call's hang-up whose commit the store holds, a GET of the call sent meanwhile
/// (checked to wait for that commit, not to answer from memory), then the commit let go:
/// failed if `fail`. Returns the app, its token, the call's path, and what the DELETE and the GET
/// were answered.
async fn read_during_held_hang_up(
    store: &Arc<Held>,
    fail: bool,
) -> (TestApp, String, String, Resp, Resp) {
    let app = spawn_app_over(store.clone()).await;
    let token = app.token().await;
    let id = app.established(&token).await;
    let path = format!("{CALLS}/{id}");
    let spawn = |method: &'static str| {
        let (http, url, token) = (
            app.http.clone(),
            format!("{}{path}", app.base),
            token.clone(),
        );
        tokio::spawn(async move { request(&http, method, &url, &token).await })
    };
    *store.hold.lock().unwrap() = Some(fail);
    let holding = store.holding.notified();
    let delete = spawn("DELETE");
    holding.await;
    // The hang-up is in memory, its commit held: a reader now must wait for it.
    let get = spawn("GET");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !get.is_finished(),
        "the GET waits for the hang-up's commit instead of answering from memory"
    );
    store.go.notify_one();
    let (d, g) = (delete.await.unwrap(), get.await.unwrap());
    (app, token, path, d, g)
}

/// A GET while a hang-up is staged but not yet durable waits for it: it must not answer from
/// memory what the store may never hold (before, it answered 404 at once, and after the failed
/// commit the call was still there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_never_shows_a_change_whose_commit_then_fails() {
    let store = Arc::new(Held::default());
    let (app, token, path, d, g) = read_during_held_hang_up(&store, true).await;
    assert_eq!(d.status, 503, "{}", d.text);
    assert_eq!(
        g.status, 503,
        "the reader is told to retry, not 404: {}",
        g.text
    );

    // The store writes again: Switchboard resumes by itself and the call is there, as stored.
    store.broken.store(false, Ordering::SeqCst);
    let back = eventually(15, || async {
        app.send("GET", &path, Some(&token), None).await.status == 200
    })
    .await;
    assert!(back, "the call is read back once the store writes again");
    let g = app.send("GET", &path, Some(&token), None).await;
    assert_eq!(g.body["state"], "established", "{}", g.text);
}

/// The same with a commit that succeeds: the reader waits, then sees the hang-up (404).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_during_a_commit_answers_once_it_is_durable() {
    let store = Arc::new(Held::default());
    let (_app, _, _, d, g) = read_during_held_hang_up(&store, false).await;
    assert_eq!(d.status, 204, "{}", d.text);
    assert_eq!(g.status, 404, "{}", g.text);
}

/// A commit reported failed that did happen: once memory is reloaded from the store, the
/// notifications it wrote are delivered and its fabric commands carried out, though neither
/// was done after the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_a_failed_commit_wrote_after_all_are_delivered_after_the_reload() {
    let store = Arc::new(Held::default());
    let app = spawn_app_over(store.clone()).await;
    let token = app.token().await;
    let id = app.established(&token).await;
    store.lie.store(true, Ordering::SeqCst);
    let d = app
        .send("DELETE", &format!("{CALLS}/{id}"), Some(&token), None)
        .await;
    assert_eq!(d.status, 503, "the client is told it failed: {}", d.text);
    store.broken.store(false, Ordering::SeqCst);
    let states = app
        .receiver
        .wait_for(&id, |s| has(s, "deleted", "terminated"))
        .await;
    assert!(
        has(&states, "deleted", "terminated"),
        "the hang-up the store holds is notified: {states:?}"
    );
    let heard = app.party(ALICE).await["heard"].clone();
    let commands: Vec<_> = heard
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["command"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(commands, ["dial", "hangUp"], "its fabric commands ran too");
    let path = format!("{CALLS}/{id}");
    let gone = eventually(15, || async {
        app.send("GET", &path, Some(&token), None).await.status == 404
    })
    .await;
    assert!(gone, "memory agrees with the store once it writes again");
}

/// A trunk's event that comes while the store cannot write is not lost: it is applied once the
/// store writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunks_hang_up_during_a_store_failure_is_applied_once_it_writes_again() {
    use switchboard::fabric::{FabricCommand, FabricEvent};
    let store = Arc::new(Held::default());
    let (trunk, mut commands) = crate::fabric::Trunk::new();
    let app = spawn_app_with_fabric(trunk, Some(store.clone())).await;
    let sink = app.state.engine.event_sink();
    let token = app.token().await;
    let id = app.create(&token, ALICE).await;
    let FabricCommand::Dial { leg, .. } = crate::fabric::next(&mut commands).await else {
        panic!("ringing first");
    };
    sink(FabricEvent::Answered(leg));
    app.receiver
        .wait_for(&id, |s| has(s, "updated", "established"))
        .await;
    store.broken.store(true, Ordering::SeqCst);
    sink(FabricEvent::HungUp(leg));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !has(&app.receiver.states(&id), "deleted", "terminated"),
        "nothing can be stored yet"
    );
    store.broken.store(false, Ordering::SeqCst);
    let states = app
        .receiver
        .wait_for(&id, |s| has(s, "deleted", "terminated"))
        .await;
    assert!(has(&states, "deleted", "terminated"), "{states:?}");
    assert_eq!(app.receiver.end_reason(&id), Some((200, 4521)));
}
