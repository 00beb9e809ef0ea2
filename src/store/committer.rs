//! Group commit: one task commits changes in the order they were submitted, merging those that
//! queue up while a commit runs into one transaction.
//!
//! The engine stages a change in memory under its lock, submits it here (keeping the order), lets
//! go of the lock, and answers its client only once the change is durable. What must happen after
//! a commit and in commit order (handing notifications to the delivery worker) rides along as a
//! hook. If a commit fails, the committer stops: every later change fails too, since memory may
//! now be ahead of the store (fail-stop; the store is read back at the next start).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Change, Store, StoreError};

/// Runs after a commit succeeds, in commit order.
pub type AfterCommit = Box<dyn FnOnce() + Send>;

struct Job {
    change: Change,
    after: Option<AfterCommit>,
    done: Option<oneshot::Sender<Result<(), StoreError>>>,
}

#[derive(Clone)]
pub struct Committer {
    tx: mpsc::UnboundedSender<Job>,
}

/// How many queued changes one transaction may take.
const MAX_BATCH: usize = 512;

impl Committer {
    /// Starts the commit task on the current runtime.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, rx));
        Committer { tx }
    }

    /// Queues `change`; the returned receiver answers once it is durable (or failed).
    pub fn submit(
        &self,
        change: Change,
        after: Option<AfterCommit>,
    ) -> oneshot::Receiver<Result<(), StoreError>> {
        let (done, rx) = oneshot::channel();
        let job = Job {
            change,
            after,
            done: Some(done),
        };
        if let Err(mpsc::error::SendError(job)) = self.tx.send(job)
            && let Some(done) = job.done
        {
            let _ = done.send(Err(StoreError::Backend("the store has stopped".into())));
        }
        rx
    }

    /// Queues `change` without waiting for it (delivery attempts: a lost one is only a retry).
    pub fn record(&self, change: Change) {
        let _ = self.tx.send(Job {
            change,
            after: None,
            done: None,
        });
    }
}

/// Waits for a submitted change.
pub async fn wait(rx: oneshot::Receiver<Result<(), StoreError>>) -> Result<(), StoreError> {
    rx.await
        .unwrap_or_else(|_| Err(StoreError::Backend("the store has stopped".into())))
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut failed: Option<String> = None;
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let result = match &failed {
            Some(why) => Err(StoreError::Backend(why.clone())),
            None => {
                let mut merged = Change::default();
                for j in &mut jobs {
                    merged.absorb(std::mem::take(&mut j.change));
                }
                store.commit(merged).await
            }
        };
        match &result {
            Ok(()) => {
                for j in &mut jobs {
                    if let Some(after) = j.after.take() {
                        after();
                    }
                }
            }
            Err(e) => {
                if failed.is_none() {
                    tracing::error!(
                        "a commit failed; refusing every later change until restart: {e}"
                    );
                }
                failed = Some(format!("an earlier commit failed: {e}"));
            }
        }
        for j in jobs {
            if let Some(done) = j.done {
                let _ = done.send(match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(StoreError::Backend(e.to_string())),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::domain::CallId;
    use crate::store::{DeliveryRecord, Snapshot};

    /// Counts commits; fails from the `fail_from`-th on.
    struct Counting {
        commits: AtomicUsize,
        fail_from: usize,
    }

    #[async_trait]
    impl Store for Counting {
        async fn load(&self) -> Result<Snapshot, StoreError> {
            Ok(Snapshot::default())
        }
        async fn commit(&self, _: Change) -> Result<(), StoreError> {
            let n = self.commits.fetch_add(1, Ordering::SeqCst) + 1;
            if n >= self.fail_from {
                return Err(StoreError::Backend("disk full".into()));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            Ok(())
        }
        async fn deliveries(&self, _: CallId) -> Result<Vec<DeliveryRecord>, StoreError> {
            Ok(vec![])
        }
    }

    #[tokio::test]
    async fn changes_queued_during_a_commit_share_the_next_one_and_hooks_run_in_order() {
        let store = Arc::new(Counting {
            commits: AtomicUsize::new(0),
            fail_from: usize::MAX,
        });
        let c = Committer::start(store.clone());
        let order = Arc::new(Mutex::new(vec![]));
        let mut waits = vec![];
        for i in 0..10 {
            let order = order.clone();
            waits.push(c.submit(
                Change::default(),
                Some(Box::new(move || order.lock().unwrap().push(i))),
            ));
        }
        for w in waits {
            wait(w).await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (0..10).collect::<Vec<_>>());
        assert!(store.commits.load(Ordering::SeqCst) < 10, "batched");
    }

    #[tokio::test]
    async fn after_a_failed_commit_every_later_change_fails_and_no_hook_runs() {
        let store = Arc::new(Counting {
            commits: AtomicUsize::new(0),
            fail_from: 1,
        });
        let c = Committer::start(store);
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        assert!(
            wait(c.submit(
                Change::default(),
                Some(Box::new(move || {
                    r.fetch_add(1, Ordering::SeqCst);
                }))
            ))
            .await
            .is_err()
        );
        assert!(wait(c.submit(Change::default(), None)).await.is_err());
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }
}
