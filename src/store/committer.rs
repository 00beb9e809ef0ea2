//! Group commit: one task commits changes in the order they were submitted, merging those that
//! queue up while a commit runs into one transaction.
//!
//! The engine stages a change in memory under its lock, submits it here (keeping the order), lets
//! go of the lock, and answers its client only once the change is durable. What must happen after
//! a commit and in commit order (handing notifications to the delivery worker) rides along as a
//! hook. If a commit fails, the committer marks the store failed in its [`Health`] and refuses
//! every change after it (they were staged on top of one that did not happen) until the engine,
//! having reloaded its memory from the store, sends [`Committer::resume`]. Delivery attempts
//! recorded meanwhile are held and committed then: they are facts about POSTs already made.
//!
//! Every submitted change gets a ticket (in submission order), and the committer publishes how
//! far it has settled them and which it refused. A reader that found a staged change in memory
//! waits for its ticket with [`Committer::durable`] before answering, so that nobody is told of
//! a change the store never held.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, oneshot, watch};

use super::{Change, Health, Pruned, Retention, Store, StoreError};
use crate::clock::Timestamp;
use crate::domain::CallId;

/// Runs after a commit succeeds, in commit order.
pub type AfterCommit = Box<dyn FnOnce() + Send>;

enum Job {
    Change {
        change: Change,
        after: Option<AfterCommit>,
        done: Option<oneshot::Sender<Result<(), StoreError>>>,
        /// 0 for what nobody reads back (delivery attempts).
        ticket: u64,
    },
    /// Answers once everything submitted before it was committed or refused.
    Barrier(oneshot::Sender<()>),
    /// Takes changes again (and commits the held delivery attempts first).
    Resume(oneshot::Sender<Result<(), StoreError>>),
    /// One round of the retention policy, in a transaction of its own.
    Prune(
        Retention,
        Timestamp,
        oneshot::Sender<Result<Pruned, StoreError>>,
    ),
}

#[derive(Clone)]
pub struct Committer {
    tx: mpsc::UnboundedSender<Job>,
    health: Arc<Health>,
    /// The last ticket given; held while a change is queued, so tickets follow the queue.
    tickets: Arc<Mutex<u64>>,
    settled: watch::Receiver<Settled>,
    /// Commits reported failed: they may have happened all the same.
    uncertain: Arc<Mutex<Vec<Uncertain>>>,
}

/// A commit reported failed, which may have happened all the same: then its notifications are
/// in the store and its after-commit steps (handing them to delivery, fabric commands) are due.
pub struct Uncertain {
    /// Its notifications, as `(call, seq)`: finding one in the store tells that it happened.
    pub notified: Vec<(CallId, i64)>,
    /// Its after-commit steps, in order, not run.
    pub after: Vec<AfterCommit>,
}

/// A submitted change: its ticket, and the answer once it is durable (or failed).
pub struct Pending {
    pub ticket: u64,
    done: oneshot::Receiver<Result<(), StoreError>>,
}

/// How far the committer got: every ticket up to `through` was committed or refused; the
/// refused ones are in `refused` (the latest ranges, first and last ticket).
#[derive(Default)]
struct Settled {
    through: u64,
    refused: VecDeque<(u64, u64, String)>,
}

/// Refused ranges remembered (a reader's ticket is seconds old at most; each range is one
/// outage of the store).
const REFUSALS_KEPT: usize = 64;

impl Settled {
    fn refusal(&self, ticket: u64) -> Option<&str> {
        self.refused
            .iter()
            .find(|(first, last, _)| (*first..=*last).contains(&ticket))
            .map(|(_, _, why)| why.as_str())
    }

    fn settle(&mut self, first: u64, last: u64, refused: Option<&str>) {
        self.through = self.through.max(last);
        let Some(why) = refused else { return };
        match self.refused.back_mut() {
            // The same outage goes on: one range.
            Some((_, end, _)) if *end + 1 >= first => *end = last,
            _ => {
                if self.refused.len() == REFUSALS_KEPT {
                    self.refused.pop_front();
                }
                self.refused.push_back((first, last, why.to_string()));
            }
        }
    }
}

/// How many queued changes one transaction may take.
const MAX_BATCH: usize = 512;
/// Delivery attempts held while the store cannot write, at most (the oldest go first: their
/// notifications are then sent again after a restart, which at-least-once delivery allows).
const MAX_HELD: usize = 100_000;

fn stopped() -> StoreError {
    StoreError::failed("the store has stopped")
}

/// Told of each transaction: how long it took and how many changes it held.
pub type OnCommit = Arc<dyn Fn(std::time::Duration, usize) + Send + Sync>;

impl Committer {
    /// Starts the commit task on the current runtime.
    pub fn start(store: Arc<dyn Store>, health: Arc<Health>) -> Self {
        Self::start_observed(store, health, Arc::new(|_, _| {}))
    }

    /// [`Committer::start`], telling `on_commit` of each transaction (for metrics).
    pub fn start_observed(store: Arc<dyn Store>, health: Arc<Health>, on_commit: OnCommit) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (settle, settled) = watch::channel(Settled::default());
        let uncertain: Arc<Mutex<Vec<Uncertain>>> = Arc::default();
        let task = Task {
            store,
            health: health.clone(),
            settled: settle,
            failed: None,
            held: vec![],
            uncertain: uncertain.clone(),
            on_commit,
        };
        tokio::spawn(run(task, rx));
        Committer {
            tx,
            health,
            tickets: Arc::default(),
            settled,
            uncertain,
        }
    }

    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Queues `change` under the next ticket; [`wait`] answers once it is durable (or failed).
    pub fn submit(&self, change: Change, after: Option<AfterCommit>) -> Pending {
        let (done, rx) = oneshot::channel();
        let mut tickets = self.tickets.lock().unwrap_or_else(PoisonError::into_inner);
        *tickets += 1;
        let ticket = *tickets;
        let job = Job::Change {
            change,
            after,
            done: Some(done),
            ticket,
        };
        if let Err(mpsc::error::SendError(Job::Change {
            done: Some(done), ..
        })) = self.tx.send(job)
        {
            let _ = done.send(Err(stopped()));
        }
        Pending { ticket, done: rx }
    }

    /// The last ticket given: a reader of memory waits for it when it cannot tell which
    /// change it depends on.
    pub fn last_ticket(&self) -> u64 {
        *self.tickets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The last ticket given if it is not settled yet, else 0 (nothing to wait for): what a
    /// reader waits for when it cannot tell which change it depends on. A settled ticket needs no
    /// wait: committed, memory shows it; refused, memory was reloaded since, provided the store
    /// reads as healthy *after* this is called (the store is marked failed before a refusal
    /// settles, and readable again only once memory is reloaded under the engine lock).
    pub fn last_open_ticket(&self) -> u64 {
        let last = self.last_ticket();
        if last <= self.settled_through() {
            0
        } else {
            last
        }
    }

    /// Whether the change with `ticket` was refused (known once it is settled).
    pub fn refused(&self, ticket: u64) -> bool {
        self.settled.borrow().refusal(ticket).is_some()
    }

    /// Every ticket up to this one is settled (committed or refused).
    pub fn settled_through(&self) -> u64 {
        self.settled.borrow().through
    }

    /// Waits until the change with `ticket` (0: none) is settled: `Ok` if it was committed, the
    /// store's error if it was refused. Answers at once for a ticket settled already.
    pub async fn durable(&self, ticket: u64) -> Result<(), StoreError> {
        let refused = |s: &Settled| s.refusal(ticket).map(StoreError::failed);
        {
            let s = self.settled.borrow();
            if s.through >= ticket {
                return refused(&s).map_or(Ok(()), Err);
            }
        }
        let mut rx = self.settled.clone();
        let s = rx
            .wait_for(|s| s.through >= ticket)
            .await
            .map_err(|_| stopped())?;
        refused(&s).map_or(Ok(()), Err)
    }

    /// Queues `change` without waiting for it (delivery attempts: a lost one is only a retry).
    pub fn record(&self, change: Change) {
        let _ = self.tx.send(Job::Change {
            change,
            after: None,
            done: None,
            ticket: 0,
        });
    }

    /// Takes the commits reported failed since the last call: the engine, having reloaded
    /// memory from the store, runs the after-commit steps of those that happened.
    pub fn take_uncertain(&self) -> Vec<Uncertain> {
        std::mem::take(
            &mut *self
                .uncertain
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Waits until everything submitted before this call was committed or refused.
    pub async fn barrier(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Job::Barrier(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// After a failure: takes changes again, once the held attempts are committed.
    pub async fn resume(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Job::Resume(tx)).map_err(|_| stopped())?;
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// One round of the retention policy, between two commits.
    pub async fn prune(&self, policy: Retention, now: Timestamp) -> Result<Pruned, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Job::Prune(policy, now, tx))
            .map_err(|_| stopped())?;
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }
}

/// Waits for a submitted change.
pub async fn wait(pending: Pending) -> Result<(), StoreError> {
    pending.done.await.unwrap_or_else(|_| Err(stopped()))
}

/// A change, its hook, who waits for it, and its ticket.
type Submitted = (
    Change,
    Option<AfterCommit>,
    Option<oneshot::Sender<Result<(), StoreError>>>,
    u64,
);

struct Task {
    store: Arc<dyn Store>,
    health: Arc<Health>,
    settled: watch::Sender<Settled>,
    /// Why the store failed, while changes are refused.
    failed: Option<String>,
    /// Delivery attempts recorded while refusing, to commit on resume.
    held: Vec<crate::store::AttemptOutcome>,
    uncertain: Arc<Mutex<Vec<Uncertain>>>,
    on_commit: OnCommit,
}

async fn run(mut task: Task, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut next: Option<Job> = None;
    loop {
        let first = match next.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut batch = vec![];
        match first {
            Job::Change {
                change,
                after,
                done,
                ticket,
            } => batch.push((change, after, done, ticket)),
            Job::Barrier(tx) => {
                let _ = tx.send(());
                continue;
            }
            Job::Resume(tx) => {
                let _ = tx.send(task.resume().await);
                continue;
            }
            Job::Prune(policy, now, tx) => {
                let result = match &task.failed {
                    // Refused, not failed: nothing new is known about the store.
                    Some(why) => Err(StoreError::failed(why.clone())),
                    None => {
                        let result = task.store.prune(policy, now).await;
                        if let Err(e) = &result {
                            task.fail(e);
                        }
                        result
                    }
                };
                let _ = tx.send(result);
                continue;
            }
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Job::Change {
                    change,
                    after,
                    done,
                    ticket,
                }) => batch.push((change, after, done, ticket)),
                Ok(other) => {
                    next = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        task.commit(batch).await;
    }
}

impl Task {
    async fn commit(&mut self, batch: Vec<Submitted>) {
        let mut merged = Change::default();
        let mut hooks = Vec::with_capacity(batch.len());
        let changes = batch.len();
        let mut waiting = Vec::with_capacity(batch.len());
        let (mut first, mut last) = (u64::MAX, 0);
        for (change, after, done, ticket) in batch {
            merged.absorb(change);
            hooks.extend(after);
            waiting.extend(done);
            if ticket > 0 {
                (first, last) = (first.min(ticket), last.max(ticket));
            }
        }
        let result = match self.failed.clone() {
            Some(why) => {
                if self.health.writable() {
                    // Never refuse while the health says the store writes.
                    self.health.fail(&why);
                }
                self.hold(merged.attempts);
                Err(StoreError::failed(why))
            }
            None => {
                let attempts = merged.attempts.clone();
                let notified: Vec<(CallId, i64)> =
                    merged.enqueue.iter().map(|i| (i.call_id, i.seq)).collect();
                let started = std::time::Instant::now();
                let result = self.store.commit(merged).await;
                (self.on_commit)(started.elapsed(), changes);
                if let Err(e) = &result {
                    self.fail(e);
                    self.hold(attempts);
                    let after = std::mem::take(&mut hooks);
                    self.uncertain
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Uncertain { notified, after });
                }
                result
            }
        };
        if result.is_ok() {
            for after in hooks {
                after();
            }
        }
        if last > 0 {
            let refused = result.as_ref().err().map(|e| e.message().to_string());
            self.settled
                .send_modify(|s| s.settle(first, last, refused.as_deref()));
        }
        for done in waiting {
            let _ = done.send(result.clone());
        }
    }

    fn fail(&mut self, e: &StoreError) {
        let why = e.message().to_string();
        if self.health.fail(&why) {
            tracing::error!(
                "a commit failed: {why}; changes are refused (503) until the store can write again"
            );
        }
        self.failed = Some(why);
    }

    fn hold(&mut self, attempts: Vec<crate::store::AttemptOutcome>) {
        self.held.extend(attempts);
        if self.held.len() > MAX_HELD {
            let excess = self.held.len() - MAX_HELD;
            self.held.drain(..excess);
            tracing::warn!(
                "{excess} delivery attempts could not be recorded while the store cannot write"
            );
        }
    }

    async fn resume(&mut self) -> Result<(), StoreError> {
        let held = std::mem::take(&mut self.held);
        if !held.is_empty() {
            let change = Change {
                attempts: held.clone(),
                ..Change::default()
            };
            if let Err(e) = self.store.commit(change).await {
                self.held = held;
                self.fail(&e);
                return Err(e);
            }
        }
        self.failed = None;
        // Before the next job is taken: a failure of that one must find the health writable,
        // or the health would say "writable" while this refuses.
        self.health.recovered();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::domain::CallId;
    use crate::store::{Attempt, AttemptOutcome, DeliveryLog, DeliveryStatus, Snapshot};

    /// Counts commits and the attempts they carried; fails while `broken` is set.
    #[derive(Default)]
    struct Flaky {
        commits: AtomicUsize,
        attempts: AtomicUsize,
        broken: AtomicBool,
    }

    #[async_trait]
    impl Store for Flaky {
        async fn load(&self) -> Result<Snapshot, StoreError> {
            Ok(Snapshot::default())
        }
        async fn commit(&self, c: Change) -> Result<(), StoreError> {
            if self.broken.load(Ordering::SeqCst) {
                return Err(StoreError::failed("database or disk is full"));
            }
            self.commits.fetch_add(1, Ordering::SeqCst);
            self.attempts.fetch_add(c.attempts.len(), Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            Ok(())
        }
        async fn deliveries(&self, _: CallId) -> Result<DeliveryLog, StoreError> {
            Ok(DeliveryLog::default())
        }
        async fn probe(&self) -> Result<(), StoreError> {
            Ok(())
        }
        async fn prune(&self, _: Retention, _: Timestamp) -> Result<Pruned, StoreError> {
            Ok(Pruned::default())
        }
    }

    fn attempt(seq: i64) -> Change {
        let now = chrono::Utc::now();
        Change {
            attempts: vec![AttemptOutcome {
                attempt: Attempt {
                    call_id: CallId::default(),
                    seq,
                    at: now,
                    status: Some(202),
                    error: None,
                    latency_ms: 1,
                },
                status: DeliveryStatus::Delivered,
                attempts: 1,
                next_attempt_at: now,
            }],
            ..Change::default()
        }
    }

    #[tokio::test]
    async fn changes_queued_during_a_commit_share_the_next_one_and_hooks_run_in_order() {
        let store = Arc::new(Flaky::default());
        let c = Committer::start(store.clone(), Arc::default());
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
    async fn after_a_failed_commit_later_changes_are_refused_until_resumed() {
        let store = Arc::new(Flaky::default());
        let health = Arc::new(Health::default());
        let c = Committer::start(store.clone(), health.clone());
        store.broken.store(true, Ordering::SeqCst);
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let hook: AfterCommit = Box::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        let first = wait(c.submit(Change::default(), Some(hook))).await;
        assert!(first.is_err());
        assert!(!health.writable(), "the failure is visible");
        // The store works again, but what was staged on top of the failure is still refused.
        store.broken.store(false, Ordering::SeqCst);
        c.record(attempt(7));
        let second = wait(c.submit(Change::default(), None)).await.unwrap_err();
        assert_eq!(
            second.to_string(),
            "storage failed: database or disk is full",
            "the message does not nest"
        );
        assert_eq!(ran.load(Ordering::SeqCst), 0, "no hook ran");
        assert_eq!(store.attempts.load(Ordering::SeqCst), 0);
        c.resume().await.unwrap();
        assert_eq!(
            store.attempts.load(Ordering::SeqCst),
            1,
            "the attempt recorded meanwhile is committed on resume"
        );
        assert!(
            health.writable(),
            "resuming marks the store writable itself"
        );
        wait(c.submit(Change::default(), None)).await.unwrap();
        // A failure right after a resume is seen as one.
        store.broken.store(true, Ordering::SeqCst);
        assert!(wait(c.submit(Change::default(), None)).await.is_err());
        assert!(!health.writable());
    }

    #[tokio::test]
    async fn a_reader_waits_for_a_ticket_and_learns_whether_it_was_refused() {
        let store = Arc::new(Flaky::default());
        let c = Committer::start(store.clone(), Arc::default());
        let first = c.submit(Change::default(), None);
        let t1 = first.ticket;
        assert_eq!(c.last_ticket(), t1);
        // Flaky takes 20 ms a commit: this waits for it.
        c.durable(t1).await.unwrap();
        assert!(c.settled_through() >= t1);
        wait(first).await.unwrap();
        store.broken.store(true, Ordering::SeqCst);
        let (second, third) = (
            c.submit(Change::default(), None),
            c.submit(Change::default(), None),
        );
        let (t2, t3) = (second.ticket, third.ticket);
        assert!(t1 < t2 && t2 < t3, "tickets follow the queue");
        let e = c.durable(t3).await.unwrap_err();
        assert_eq!(e.to_string(), "storage failed: database or disk is full");
        assert!(c.durable(t2).await.is_err());
        c.durable(t1).await.unwrap();
        store.broken.store(false, Ordering::SeqCst);
        c.resume().await.unwrap();
        let fourth = c.submit(Change::default(), None);
        let t4 = fourth.ticket;
        c.durable(t4).await.unwrap();
        assert!(c.refused(t2) && c.refused(t3) && !c.refused(t1) && !c.refused(t4));
        assert!(wait(second).await.is_err() && wait(third).await.is_err());
        wait(fourth).await.unwrap();
    }

    #[tokio::test]
    async fn a_barrier_answers_after_what_was_submitted_before_it() {
        let store = Arc::new(Flaky::default());
        let c = Committer::start(store.clone(), Arc::default());
        let w = c.submit(Change::default(), None);
        c.barrier().await;
        assert_eq!(store.commits.load(Ordering::SeqCst), 1);
        wait(w).await.unwrap();
    }
}
