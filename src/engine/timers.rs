//! Timers falling due (ringing, keep-alive, operations), and the virtual clock's advance.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Engine, EngineError};
use crate::clock::Timestamp;
use crate::store::committer::{self};

impl Engine {
    /// Runs every timer, ring and operation due at the clock's current time. Returns how many
    /// fired.
    pub async fn run_due_timers(&self) -> Result<usize, EngineError> {
        let mut tx = self.begin().await?;
        let now = self.clock.now();
        let due = tx.due(now).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut scenes = vec![];
        let mut fired = 0;
        for id in due {
            if let Some(mut scene) = tx.scene(id).await? {
                fired += scene.run_due(now, &self.rules);
                scenes.push(scene);
            }
        }
        let done = tx.stage(scenes, &[]);
        committer::wait(done).await?;
        Ok(fired)
    }

    /// Moves a virtual clock and runs every timer that fell due; returns the new time.
    pub async fn advance(&self, by: chrono::Duration) -> Result<Timestamp, anyhow::Error> {
        // Timers falling due are changes: the clock does not move while they cannot be stored.
        if !self.health.writable() {
            return Err(self.unavailable().into());
        }
        let now = self.clock.advance(by)?;
        self.run_due_timers().await?;
        Ok(now)
    }

    /// Runs timers as they fall due until `stop` is cancelled.
    pub async fn run_timers(self: Arc<Self>, stop: CancellationToken) {
        loop {
            match self.run_due_timers().await {
                Ok(_) => {}
                // Timers that fell due run once the store writes again.
                Err(EngineError::Unavailable(_) | EngineError::Store(_)) => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = self.health.wait_writable() => {}
                    }
                    continue;
                }
                Err(e) => tracing::error!("running timers failed: {e}"),
            }
            let next = self.state.lock().await.timers.first().map(|(t, _)| *t);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.timers_changed.notified() => {}
                _ = async {
                    match next {
                        Some(t) => self.clock.sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
    }
}
