//! The engine and its store over time: reload memory after a failed commit, probe and resume,
//! and the retention rounds.

use std::collections::HashSet;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Engine, EngineError, State};
use crate::domain::CallId;
use crate::store::Snapshot;

/// Sleeps for `backoff` (then doubles it, up to 5 s); `true` if stopped meanwhile.
pub(super) async fn sleep_or_stop(
    stop: &CancellationToken,
    backoff: &mut std::time::Duration,
) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(std::time::Duration::from_secs(5));
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(wait) => false,
    }
}

impl Engine {
    /// Watches the store's health until `stop`: after a failed commit, reloads memory from the
    /// store (what clients are told must match what is stored), then probes the store until it
    /// writes again and resumes.
    pub async fn watch_store(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.health.wait_failed() => {}
            }
            let started = std::time::Instant::now();
            let mut backoff = std::time::Duration::from_millis(200);
            // Reload: nothing is staged while the lock is held, and the barrier lets every change
            // staged before it be refused first.
            loop {
                let reloaded = {
                    let mut st = self.state.lock().await;
                    self.committer.barrier().await;
                    match self.store.load().await {
                        Ok(snapshot) => {
                            self.reload(&mut st, &snapshot);
                            true
                        }
                        Err(e) => {
                            self.health.probe_failed(&e.to_string());
                            false
                        }
                    }
                };
                self.health.reloaded(reloaded);
                if reloaded {
                    break;
                }
                if sleep_or_stop(&stop, &mut backoff).await {
                    return;
                }
            }
            tracing::info!("memory reloaded from the store; waiting for the store to write again");
            loop {
                if sleep_or_stop(&stop, &mut backoff).await {
                    return;
                }
                if let Err(e) = self.store.probe().await {
                    self.health.probe_failed(&e.to_string());
                    continue;
                }
                let st = self.state.lock().await;
                // The committer marks the store writable itself, before it takes another job.
                match self.committer.resume().await {
                    Ok(()) => {
                        drop(st);
                        self.timers_changed.notify_one();
                        tracing::info!(
                            "the store writes again; changes are taken again after {:.1} s",
                            started.elapsed().as_secs_f64()
                        );
                        break;
                    }
                    Err(e) => self.health.probe_failed(&e.to_string()),
                }
            }
        }
    }

    /// Replaces memory with what the store holds. Memory-only views (ended party legs,
    /// recordings) are kept; notifications committed but never handed to delivery (a commit
    /// reported failed that did happen) are handed over now.
    pub(super) fn reload(&self, st: &mut State, snapshot: &Snapshot) {
        let mut fresh = State::build(
            snapshot,
            &self.meetings,
            self.fabric.as_ref(),
            self.clock.now(),
        );
        // Every change staged before the reload is settled: drop the views of refused ones.
        let refused = |t: u64| self.committer.refused(t);
        fresh.ended = std::mem::take(&mut st.ended);
        fresh.ended.retain(|(_, _, t)| !refused(*t));
        fresh.recordings = std::mem::take(&mut st.recordings);
        fresh.recordings.retain(|_, (_, t)| !refused(*t));
        fresh.recording_order = std::mem::take(&mut st.recording_order);
        fresh
            .recording_order
            .retain(|id| fresh.recordings.contains_key(id));
        *st = fresh;
        self.after_uncertain(snapshot);
    }

    /// Runs the after-commit steps of commits reported failed that the store holds after all
    /// (one of their notifications is there): their notifications go to delivery, their fabric
    /// commands to the fabric. A commit with no notification cannot be told apart, and its
    /// steps are dropped (logged).
    fn after_uncertain(&self, snapshot: &Snapshot) {
        let pending: HashSet<(CallId, i64)> = snapshot
            .pending
            .iter()
            .map(|i| (i.call_id, i.seq))
            .collect();
        for u in self.committer.take_uncertain() {
            if u.notified.iter().any(|k| pending.contains(k)) {
                tracing::warn!(
                    "a commit reported failed had happened: its {} notifications and fabric commands go out now",
                    u.notified.len()
                );
                for after in u.after {
                    after();
                }
            } else if u.notified.is_empty() && !u.after.is_empty() {
                tracing::warn!(
                    "a commit reported failed had no notification to tell whether it happened; its fabric commands were not carried out"
                );
            }
        }
    }

    /// Back to a fresh start with the same configuration: no calls, no notifications queued or
    /// logged, the meetings as configured, no party views or recordings. The clock stays.
    pub async fn reset(&self) -> Result<(), EngineError> {
        let mut st = self.state.lock().await;
        if !self.health.writable() {
            return Err(self.unavailable());
        }
        // Everything staged before is committed; nothing more is staged while the lock is held.
        self.committer.barrier().await;
        self.store.reset().await?;
        self.delivery.reset();
        self.recordings.clear();
        let _ = self.committer.take_uncertain();
        *st = State::build(
            &Snapshot::default(),
            &self.meetings,
            self.fabric.as_ref(),
            self.clock.now(),
        );
        self.timers_changed.notify_one();
        tracing::info!("reset: every call, notification and log is gone");
        Ok(())
    }

    /// Applies the retention policy every `[retention] interval_ms` until `stop`.
    pub async fn run_retention(self: Arc<Self>, stop: CancellationToken) {
        let every = std::time::Duration::from_millis(self.retention.interval_ms.max(100));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if self.health.writable() {
                self.prune_now().await;
            }
        }
    }

    /// Applies the retention policy now, in batches; logs what went.
    pub async fn prune_now(&self) {
        let mut total = crate::store::Pruned::default();
        loop {
            match self.committer.prune(self.retention, self.clock.now()).await {
                Ok(p) => {
                    total.calls += p.calls;
                    total.notifications += p.notifications;
                    total.attempts += p.attempts;
                    if !p.more {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    tracing::warn!("applying the retention policy failed: {e}");
                    break;
                }
            }
        }
        if total.notifications > 0 || total.calls > 0 {
            tracing::info!(
                calls = total.calls,
                notifications = total.notifications,
                attempts = total.attempts,
                "retention: removed the deliveries logs of ended calls and old notifications ([retention] keep_secs = {}, max_ended_calls = {})",
                self.retention.keep_secs,
                self.retention.max_ended_calls
            );
        }
    }
}
