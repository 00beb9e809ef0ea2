//! Whether the store can write now, shared by the committer (which finds out), the engine (which
//! answers from memory only while memory matches the store) and `/healthz`.
//!
//! A commit that fails puts the store in the `failed` state: the engine answers every change with
//! `503` and reloads its memory from the store (until then, reads are refused too); it probes the
//! store until a write succeeds, then resumes. See `Engine::watch_store`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;

const OK: u8 = 0;
/// A commit failed; memory may be ahead of the store until it is reloaded.
const FAILED: u8 = 1;
/// A commit failed and memory was reloaded from the store: reads are right, writes wait.
const RELOADED: u8 = 2;

/// Why the store cannot write, and since when (real time).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub error: String,
    pub since: DateTime<Utc>,
    /// Probes since the failure that failed too.
    pub probes: u64,
}

pub struct Health {
    state: AtomicU8,
    failure: Mutex<Option<Failure>>,
    /// Ticks on every change of state.
    changed: watch::Sender<u8>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            state: AtomicU8::new(OK),
            failure: Mutex::new(None),
            changed: watch::channel(OK).0,
        }
    }
}

impl Health {
    /// Changes may be committed.
    pub fn writable(&self) -> bool {
        self.state.load(Ordering::Acquire) == OK
    }

    /// Memory matches the store, so reads may be answered from it.
    pub fn readable(&self) -> bool {
        self.state.load(Ordering::Acquire) != FAILED
    }

    /// Why the store cannot write, when it cannot.
    pub fn failure(&self) -> Option<Failure> {
        self.failure.lock().expect("health lock").clone()
    }

    /// A commit failed. Returns whether this is news (the store was writable until now). Once
    /// memory was reloaded, it stays so: nothing is staged after that until the store writes.
    pub fn fail(&self, error: &str) -> bool {
        let mut f = self.failure.lock().expect("health lock");
        let news = f.is_none();
        match f.as_mut() {
            Some(f) => f.error = error.to_string(),
            None => {
                *f = Some(Failure {
                    error: error.to_string(),
                    since: Utc::now(),
                    probes: 0,
                })
            }
        }
        if news || self.state.load(Ordering::Acquire) != RELOADED {
            self.set(FAILED);
        }
        news
    }

    /// Memory was reloaded from the store (or could not be: `false`).
    pub fn reloaded(&self, ok: bool) {
        if self.state.load(Ordering::Acquire) != OK {
            self.set(if ok { RELOADED } else { FAILED });
        }
    }

    /// A probe failed again.
    pub fn probe_failed(&self, error: &str) {
        if let Some(f) = self.failure.lock().expect("health lock").as_mut() {
            f.error = error.to_string();
            f.probes += 1;
        }
    }

    /// The store writes again.
    pub fn recovered(&self) {
        *self.failure.lock().expect("health lock") = None;
        self.set(OK);
    }

    fn set(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        self.changed.send_replace(state);
    }

    /// Waits until a commit has failed.
    pub async fn wait_failed(&self) {
        let mut rx = self.changed.subscribe();
        let _ = rx.wait_for(|s| *s != OK).await;
    }

    /// Waits until the store writes again.
    pub async fn wait_writable(&self) {
        let mut rx = self.changed.subscribe();
        let _ = rx.wait_for(|s| *s == OK).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_stops_writes_and_reads_until_memory_is_reloaded() {
        let h = Health::default();
        assert!(h.writable() && h.readable());
        assert!(h.fail("disk full"));
        assert!(!h.fail("disk full again"), "only the first failure is news");
        assert!(!h.writable() && !h.readable());
        h.reloaded(true);
        assert!(!h.writable() && h.readable());
        h.probe_failed("still full");
        assert_eq!(h.failure().unwrap().probes, 1);
        assert_eq!(h.failure().unwrap().error, "still full");
        h.recovered();
        assert!(h.writable() && h.readable() && h.failure().is_none());
    }
}
