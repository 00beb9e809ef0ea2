//! The outbox of one node ([`LocalOutbox`]): committed notifications in memory, one FIFO per
//! call, handed over by the committer's after-commit step (and read back from the store at
//! start), claimed by the delivery worker.
//!
//! Heads of calls wait in *lanes* (an app's receiver: scheme, host and port), and a claim takes
//! the earliest due head of a lane below its share (`per_receiver_concurrency`) and its app's
//! (`per_app_concurrency`), so one slow receiver holds up only its own app's notifications to it.
//! A settled claim's attempts are committed in the background, in order.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::clock::Timestamp;
use crate::config::DeliverySettings;
use crate::domain::CallId;
use crate::store::committer::Committer;
use crate::store::outbox::{Claim, Claimed, Outbox};
use crate::store::{AttemptOutcome, Change, DeliveryStatus, OutboxItem, StoreError};

/// Notifications sent in one POST at most.
pub const MAX_BATCH: usize = 16;

/// A receiver of one app: deliveries to it share its slots.
type LaneId = u64;

struct Lane {
    app: Arc<str>,
    /// Its key in [`Queues::lane_ids`].
    receiver: String,
    /// Heads of this lane's calls that wait for their time or a slot, by (due, seq).
    ready: BTreeSet<(Timestamp, i64, CallId)>,
    in_flight: usize,
    /// This lane's entry in [`Queues::open`], if it has one.
    open_at: Option<(Timestamp, i64)>,
}

/// How many POSTs may run at once, in all, per app, and per lane.
#[derive(Clone, Copy)]
struct Shares {
    app: usize,
    lane: usize,
}

struct Queues {
    per_call: HashMap<CallId, VecDeque<OutboxItem>>,
    lanes: HashMap<LaneId, Lane>,
    lane_ids: HashMap<(Arc<str>, String), LaneId>,
    next_lane: LaneId,
    /// Per app: POSTs in flight, and its lanes.
    apps: HashMap<Arc<str>, (usize, HashSet<LaneId>)>,
    /// The earliest head of every lane that may start a POST now (below its and its app's share).
    open: BTreeSet<(Timestamp, i64, LaneId)>,
    /// Calls with a POST in flight: the lane it counts against, and its claim's fence.
    busy: HashMap<CallId, (LaneId, u64)>,
    /// The last fence given.
    fences: u64,
    shares: Shares,
}

/// The receiver a callback URL names: scheme, host and port.
fn receiver(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(u) => format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or_default(),
            u.port_or_known_default().unwrap_or(0)
        ),
        Err(_) => uri.to_string(),
    }
}

impl Queues {
    fn new(shares: Shares) -> Self {
        Queues {
            per_call: HashMap::new(),
            lanes: HashMap::new(),
            lane_ids: HashMap::new(),
            next_lane: 0,
            apps: HashMap::new(),
            open: BTreeSet::new(),
            busy: HashMap::new(),
            fences: 0,
            shares,
        }
    }

    fn push(&mut self, item: OutboxItem) {
        let call = item.call_id;
        let q = self.per_call.entry(call).or_default();
        q.push_back(item);
        if q.len() == 1 && !self.busy.contains_key(&call) {
            self.make_ready(call);
        }
    }

    fn lane_of(&mut self, item: &OutboxItem) -> LaneId {
        let key = (
            Arc::<str>::from(item.app_id.as_str()),
            receiver(&item.callback_uri),
        );
        if let Some(id) = self.lane_ids.get(&key) {
            return *id;
        }
        let id = self.next_lane;
        self.next_lane += 1;
        self.apps.entry(key.0.clone()).or_default().1.insert(id);
        self.lanes.insert(
            id,
            Lane {
                app: key.0.clone(),
                receiver: key.1.clone(),
                ready: BTreeSet::new(),
                in_flight: 0,
                open_at: None,
            },
        );
        self.lane_ids.insert(key, id);
        id
    }

    /// Puts a call's head into its lane, to go out when due and a slot is free.
    fn make_ready(&mut self, call: CallId) {
        let Some(head) = self.per_call.get(&call).and_then(|q| q.front()).cloned() else {
            self.per_call.remove(&call);
            return;
        };
        let lane = self.lane_of(&head);
        if let Some(l) = self.lanes.get_mut(&lane) {
            l.ready.insert((head.next_attempt_at, head.seq, call));
        }
        self.refresh(lane);
    }

    /// Puts a lane into `open` (or takes it out) as its head and its shares say.
    fn refresh(&mut self, id: LaneId) {
        let Some(lane) = self.lanes.get_mut(&id) else {
            return;
        };
        if let Some((t, seq)) = lane.open_at.take() {
            self.open.remove(&(t, seq, id));
        }
        let app_busy = self.apps.get(&lane.app).map_or(0, |a| a.0);
        if lane.in_flight < self.shares.lane
            && app_busy < self.shares.app
            && let Some(&(t, seq, _)) = lane.ready.first()
        {
            lane.open_at = Some((t, seq));
            self.open.insert((t, seq, id));
        } else if lane.ready.is_empty() && lane.in_flight == 0 {
            // Forget lanes with nothing to do: callback URLs are the clients' to choose.
            let app = lane.app.clone();
            let receiver = std::mem::take(&mut lane.receiver);
            self.lanes.remove(&id);
            self.lane_ids.remove(&(app.clone(), receiver));
            if let Some(a) = self.apps.get_mut(&app) {
                a.1.remove(&id);
                if a.1.is_empty() && a.0 == 0 {
                    self.apps.remove(&app);
                }
            }
        }
    }

    /// Refreshes every lane of an app (its share filled up or freed).
    fn refresh_app(&mut self, app: &Arc<str>) {
        let lanes: Vec<LaneId> = self
            .apps
            .get(app)
            .map(|a| a.1.iter().copied().collect())
            .unwrap_or_default();
        for l in lanes {
            self.refresh(l);
        }
    }

    /// Takes the earliest due head that may go now, and counts it in flight under a new fence.
    fn take(&mut self, now: Timestamp) -> Option<(CallId, u64)> {
        let &(due, _, id) = self.open.first()?;
        if due > now {
            return None;
        }
        let lane = self.lanes.get_mut(&id)?;
        let (_, _, call) = lane.ready.pop_first()?;
        lane.in_flight += 1;
        let app = lane.app.clone();
        let app_busy = {
            let a = self.apps.entry(app.clone()).or_default();
            a.0 += 1;
            a.0
        };
        self.fences += 1;
        self.busy.insert(call, (id, self.fences));
        if app_busy >= self.shares.app {
            self.refresh_app(&app);
        } else {
            self.refresh(id);
        }
        Some((call, self.fences))
    }

    /// A call's POST is over: its slot is free again.
    fn release(&mut self, call: CallId) {
        let Some((id, _)) = self.busy.remove(&call) else {
            return;
        };
        let Some(lane) = self.lanes.get_mut(&id) else {
            return;
        };
        lane.in_flight -= 1;
        let app = lane.app.clone();
        let was_full = match self.apps.get_mut(&app) {
            Some(a) => {
                a.0 -= 1;
                a.0 + 1 >= self.shares.app
            }
            None => false,
        };
        if was_full {
            self.refresh_app(&app);
        } else {
            self.refresh(id);
        }
    }

    /// When the next head in an open lane falls due.
    fn next_due(&self) -> Option<Timestamp> {
        self.open.first().map(|(t, _, _)| *t)
    }
}

/// The outbox of one process: [`Queues`] in memory, attempts committed through the committer.
pub struct LocalOutbox {
    queues: Mutex<Queues>,
    committer: Committer,
}

impl LocalOutbox {
    pub fn new(committer: Committer, policy: &DeliverySettings) -> Self {
        let shares = Shares {
            app: policy.per_app_concurrency.max(1),
            lane: policy.per_receiver_concurrency.max(1),
        };
        LocalOutbox {
            queues: Mutex::new(Queues::new(shares)),
            committer,
        }
    }
}

#[async_trait]
impl Outbox for LocalOutbox {
    fn committed(&self, items: Vec<OutboxItem>) {
        let mut q = self.queues.lock().expect("queues lock");
        for item in items {
            q.push(item);
        }
    }

    /// Takes the calls whose head is due now and whose lane has a free slot, up to `room`. A
    /// retry goes alone, so one failing notification does not use up the attempts of those
    /// behind it; a first attempt takes along those right behind it that are due too and go to
    /// the same URL (`commsNotifications` is a collection for that).
    async fn claim(&self, now: Timestamp, room: usize) -> Result<Claimed, StoreError> {
        let mut q = self.queues.lock().expect("queues lock");
        let mut claims = vec![];
        while claims.len() < room {
            let Some((call_id, fence)) = q.take(now) else {
                break;
            };
            // Heads a redelivery already delivered are done: they go without a POST, and the
            // call waits for its next turn.
            let mut skipped = false;
            if let Some(queue) = q.per_call.get_mut(&call_id) {
                while queue
                    .front()
                    .is_some_and(|i| i.status == DeliveryStatus::Delivered)
                {
                    queue.pop_front();
                    skipped = true;
                }
            }
            let Some(head) = q
                .per_call
                .get(&call_id)
                .and_then(|c| c.front())
                .filter(|_| !skipped)
            else {
                if q.per_call.get(&call_id).is_some_and(|c| !c.is_empty()) {
                    q.make_ready(call_id);
                } else {
                    q.per_call.remove(&call_id);
                }
                q.release(call_id);
                continue;
            };
            let batch: Vec<OutboxItem> = if head.attempts > 0 {
                vec![head.clone()]
            } else {
                q.per_call[&call_id]
                    .iter()
                    .take(MAX_BATCH)
                    .take_while(|i| {
                        i.attempts == 0
                            && i.callback_uri == head.callback_uri
                            && i.next_attempt_at <= now
                    })
                    .cloned()
                    .collect()
            };
            claims.push(Claim {
                call_id,
                batch,
                fence,
            });
        }
        Ok(Claimed {
            claims,
            next_due: q.next_due(),
        })
    }

    async fn settle(
        &self,
        claim: Claim,
        mut outcomes: Vec<AttemptOutcome>,
    ) -> Result<bool, StoreError> {
        let call_id = claim.call_id;
        let mut q = self.queues.lock().expect("queues lock");
        if q.busy.get(&call_id).map(|(_, f)| *f) != Some(claim.fence) {
            return Ok(false);
        }
        if let Some(queue) = q.per_call.get_mut(&call_id) {
            // A notification a redelivery delivered meanwhile stays delivered, whatever this
            // attempt got.
            for o in &mut outcomes {
                let redelivered = queue
                    .iter()
                    .any(|i| i.seq == o.attempt.seq && i.status == DeliveryStatus::Delivered);
                if redelivered {
                    o.status = DeliveryStatus::Delivered;
                }
            }
            // The batch is the front of the queue, in order. A younger notification never dies
            // before an older one, so what stays pending is a tail of the batch.
            for o in &outcomes {
                match o.status {
                    DeliveryStatus::Pending => {
                        if let Some(i) = queue.iter_mut().find(|i| i.seq == o.attempt.seq) {
                            i.attempts = o.attempts;
                            i.next_attempt_at = o.next_attempt_at;
                        }
                    }
                    _ => {
                        if queue.front().is_some_and(|i| i.seq == o.attempt.seq) {
                            queue.pop_front();
                        }
                    }
                }
            }
            if queue.is_empty() {
                q.per_call.remove(&call_id);
            } else {
                q.make_ready(call_id);
            }
        }
        // Freed after the call's next head is in its lane, so the lane is not forgotten and
        // made again in between.
        q.release(call_id);
        drop(q);
        // Recorded in the background, in order: the call's next notification need not wait for
        // it. If the process dies before it commits, the notification is sent again at restart
        // (at least once; the sequence header tells a duplicate).
        self.committer.record(Change {
            attempts: outcomes,
            ..Change::default()
        });
        Ok(true)
    }

    async fn redelivered(&self, outcome: AttemptOutcome) -> Result<(), StoreError> {
        {
            // The queued copy keeps count, and once delivered it is not sent again.
            let mut q = self.queues.lock().expect("queues lock");
            let a = &outcome.attempt;
            if let Some(i) = q
                .per_call
                .get_mut(&a.call_id)
                .and_then(|c| c.iter_mut().find(|i| i.seq == a.seq))
            {
                i.attempts = i.attempts.max(outcome.attempts);
                if outcome.status == DeliveryStatus::Delivered {
                    i.status = DeliveryStatus::Delivered;
                }
            }
        }
        self.committer.record(Change {
            attempts: vec![outcome],
            ..Change::default()
        });
        Ok(())
    }

    async fn has_due(&self, now: Timestamp) -> Result<bool, StoreError> {
        let q = self.queues.lock().expect("queues lock");
        Ok(!q.busy.is_empty()
            || q.per_call
                .values()
                .any(|c| c.front().is_some_and(|h| h.next_attempt_at <= now)))
    }

    fn reset(&self) {
        let mut q = self.queues.lock().expect("queues lock");
        let shares = q.shares;
        *q = Queues::new(shares);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{item, policy};
    use super::*;
    use crate::clock::Clock;
    use crate::store::memory::MemoryStore;

    fn outbox() -> LocalOutbox {
        let committer = Committer::start(Arc::new(MemoryStore::default()), Arc::default());
        LocalOutbox::new(committer, &policy())
    }

    /// The batches claimable now (sequence numbers), and when the next falls due.
    async fn take(
        d: &LocalOutbox,
        clock: &Clock,
        room: usize,
    ) -> (Vec<Vec<i64>>, Option<Timestamp>) {
        let c = d.claim(clock.now(), room).await.unwrap();
        let seqs = c
            .claims
            .iter()
            .map(|c| c.batch.iter().map(|i| i.seq).collect())
            .collect();
        (seqs, c.next_due)
    }

    #[tokio::test]
    async fn first_attempts_of_a_call_to_one_url_share_a_post_of_at_most_sixteen() {
        let clock = Clock::virtual_at(chrono::Utc::now());
        let now = clock.now();
        let d = outbox();
        let (a, b) = (CallId::new(), CallId::new());
        let mut items: Vec<OutboxItem> = (1..=20)
            .map(|seq| item(seq, a, "http://127.0.0.1:9/a", now))
            .collect();
        items.push(item(21, a, "http://127.0.0.1:9/elsewhere", now));
        items.push(item(22, b, "http://127.0.0.1:9/b", now));
        d.committed(items);
        let (seqs, _) = take(&d, &clock, 10).await;
        assert_eq!(seqs.len(), 2, "one POST per call at a time: {seqs:?}");
        assert!(seqs.contains(&(1..=16).collect()), "{seqs:?}");
        assert!(seqs.contains(&vec![22]), "{seqs:?}");
        assert_eq!(
            take(&d, &clock, 10).await.0.len(),
            0,
            "a call with a POST in flight waits"
        );
    }

    #[tokio::test]
    async fn a_settled_claim_moves_its_call_on_and_a_stale_fence_changes_nothing() {
        let clock = Clock::virtual_at(chrono::Utc::now());
        let now = clock.now();
        let d = outbox();
        let call = CallId::new();
        let mut first = item(1, call, "http://127.0.0.1:9/a", now);
        first.attempts = 1;
        d.committed(vec![first, item(2, call, "http://127.0.0.1:9/a", now)]);
        let claimed = d.claim(now, 10).await.unwrap().claims;
        let claim = claimed[0].clone();
        let delivered = |seq| AttemptOutcome {
            attempt: crate::store::Attempt {
                call_id: call,
                seq,
                at: now,
                status: Some(202),
                error: None,
                latency_ms: 1,
            },
            status: DeliveryStatus::Delivered,
            attempts: 2,
            next_attempt_at: now,
        };
        let stale = Claim {
            fence: claim.fence + 1,
            ..claim.clone()
        };
        assert!(!d.settle(stale, vec![delivered(1)]).await.unwrap());
        assert_eq!(
            take(&d, &clock, 10).await.0,
            Vec::<Vec<i64>>::new(),
            "still in flight"
        );
        assert!(d.settle(claim, vec![delivered(1)]).await.unwrap());
        assert_eq!(
            take(&d, &clock, 10).await.0,
            vec![vec![2]],
            "the next one is due"
        );
    }

    #[tokio::test]
    async fn a_retry_goes_alone_once_due() {
        let clock = Clock::virtual_at(chrono::Utc::now());
        let now = clock.now();
        let d = outbox();
        let call = CallId::new();
        let mut head = item(1, call, "http://127.0.0.1:9/a", now);
        head.attempts = 1;
        head.next_attempt_at = now + chrono::Duration::seconds(5);
        d.committed(vec![head, item(2, call, "http://127.0.0.1:9/a", now)]);
        let (due, next) = take(&d, &clock, 10).await;
        assert!(due.is_empty(), "not before its time");
        assert_eq!(next, Some(now + chrono::Duration::seconds(5)));
        clock.advance(chrono::Duration::seconds(5)).unwrap();
        let (due, _) = take(&d, &clock, 10).await;
        assert_eq!(due, vec![vec![1]]);
    }
}
