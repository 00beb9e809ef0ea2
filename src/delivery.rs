//! The delivery worker: POSTs notifications from the durable outbox to each call's callback URL.
//!
//! Per call, notifications go out strictly in order: the next waits until the one before it was
//! delivered or marked dead. Across calls, up to `concurrency` POSTs run at once, and each
//! receiver (an app's callback scheme, host and port: a *lane*) and each app get only a share of
//! them (`per_receiver_concurrency`, `per_app_concurrency`), so one slow or dead receiver holds up
//! only its own app's notifications to it, never another bot's. A failed attempt
//! (connection error, timeout, non-2xx) is retried with exponential backoff and jitter on the call
//! clock, honouring `Retry-After`; after `max_attempts` or `max_age` the notification is marked
//! dead and stays visible in the deliveries log. Every attempt is committed to the store.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::KeyRing;
use crate::auth::tokens::sign_notification_token;
use crate::clock::{Clock, Timestamp};
use crate::config::{DeliverySettings, NotificationSettings};
use crate::domain::CallId;
use crate::graph::notification::envelope;
use crate::store::committer::Committer;
use crate::store::{Attempt, AttemptOutcome, Change, DeliveryStatus, OutboxItem};

type CachedToken = (String, i64, String);

/// Signs the bearer token of each notification, reusing a token per app while it is young.
pub struct Signer {
    keys: Arc<RwLock<KeyRing>>,
    settings: NotificationSettings,
    /// (app, tenant) → (token, expiry, signing key id).
    cache: Mutex<HashMap<(String, String), CachedToken>>,
}

impl Signer {
    pub fn new(keys: Arc<RwLock<KeyRing>>, settings: NotificationSettings) -> Self {
        Signer {
            keys,
            settings,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// A token for `app_id` in `tenant_id` with at least half its lifetime left.
    pub fn token(&self, app_id: &str, tenant_id: &str) -> String {
        let keys = self.keys.read().expect("key ring lock");
        let kid = keys.active().kid.clone();
        let lifetime = self.settings.token_lifetime_secs as i64;
        let now = chrono::Utc::now().timestamp();
        let key = (app_id.to_string(), tenant_id.to_string());
        let mut cache = self.cache.lock().expect("token cache lock");
        if let Some((t, exp, k)) = cache.get(&key)
            && *k == kid
            && exp - now > lifetime / 2
        {
            return t.clone();
        }
        let (t, exp) =
            sign_notification_token(&keys, &self.settings.issuer, app_id, tenant_id, lifetime);
        cache.insert(key, (t.clone(), exp, kid));
        t
    }
}

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
    /// Calls with a POST in flight, and the lane it counts against.
    busy: HashMap<CallId, LaneId>,
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

    /// Takes the earliest due head that may go now, and counts it in flight.
    fn take(&mut self, now: Timestamp) -> Option<CallId> {
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
        self.busy.insert(call, id);
        if app_busy >= self.shares.app {
            self.refresh_app(&app);
        } else {
            self.refresh(id);
        }
        Some(call)
    }

    /// A call's POST is over: its slot is free again.
    fn release(&mut self, call: CallId) {
        let Some(id) = self.busy.remove(&call) else {
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

pub struct Delivery {
    queues: Mutex<Queues>,
    wake: Notify,
    committer: Committer,
    clock: Clock,
    signer: Signer,
    http: reqwest::Client,
    policy: DeliverySettings,
}

/// What one POST came back with: an HTTP status (and its `Retry-After`), or why there was none.
#[derive(Clone, Debug, Default)]
pub struct PostResult {
    pub status: Option<u16>,
    pub error: Option<String>,
    pub retry_after: Option<Duration>,
    pub latency_ms: u64,
}

impl Delivery {
    pub fn new(
        committer: Committer,
        clock: Clock,
        signer: Signer,
        http: reqwest::Client,
        policy: DeliverySettings,
    ) -> Self {
        let shares = Shares {
            app: policy.per_app_concurrency.max(1),
            lane: policy.per_receiver_concurrency.max(1),
        };
        Delivery {
            queues: Mutex::new(Queues::new(shares)),
            wake: Notify::new(),
            committer,
            clock,
            signer,
            http,
            policy,
        }
    }

    /// Queues notifications that are already committed to the store.
    pub fn enqueue(&self, items: Vec<OutboxItem>) {
        let mut q = self.queues.lock().expect("queues lock");
        for item in items {
            q.push(item);
        }
        drop(q);
        self.wake.notify_one();
    }

    /// Queues the pending notifications among `items` that a commit reported failed (`uncertain`,
    /// as `(call, seq)`) had written after all: delivery was never told of them. After a reload.
    pub fn enqueue_missing(&self, items: Vec<OutboxItem>, uncertain: &[(CallId, i64)]) {
        if uncertain.is_empty() {
            return;
        }
        let uncertain: HashSet<(CallId, i64)> = uncertain.iter().copied().collect();
        let missing: Vec<OutboxItem> = items
            .into_iter()
            .filter(|i| uncertain.contains(&(i.call_id, i.seq)))
            .collect();
        if !missing.is_empty() {
            tracing::warn!(
                "{} committed notifications had not been queued; queued now",
                missing.len()
            );
            self.enqueue(missing);
        }
    }

    /// Takes the calls whose head is due now and whose lane has a free slot, up to `room`,
    /// marking them busy. For each, the head and, on a first attempt, the notifications right
    /// behind it that are due too and go to the same URL: they go out in one POST
    /// (`commsNotifications` is a collection for that).
    fn take_due(&self, room: usize) -> (Vec<Vec<OutboxItem>>, Option<Timestamp>) {
        let now = self.clock.now();
        let mut q = self.queues.lock().expect("queues lock");
        let mut out = vec![];
        while out.len() < room {
            let Some(call) = q.take(now) else {
                break;
            };
            if let Some(queue) = q.per_call.get(&call)
                && let Some(head) = queue.front()
            {
                // A retry goes alone, so one failing notification does not use up the attempts
                // of those behind it.
                let batch: Vec<OutboxItem> = if head.attempts > 0 {
                    vec![head.clone()]
                } else {
                    queue
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
                out.push(batch);
            }
        }
        (out, q.next_due())
    }

    /// Delivers until `stop` is cancelled, then lets in-flight POSTs finish (up to 5 s).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let tracker = TaskTracker::new();
        let in_flight = Arc::new(tokio::sync::Semaphore::new(self.policy.concurrency.max(1)));
        loop {
            let room = in_flight.available_permits();
            let (due, next) = self.take_due(room);
            for batch in due {
                let permit = in_flight
                    .clone()
                    .try_acquire_owned()
                    .expect("room was counted");
                let me = self.clone();
                tracker.spawn(async move {
                    me.attempt(batch).await;
                    drop(permit);
                    me.wake.notify_one();
                });
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = async {
                    match next {
                        Some(t) if in_flight.available_permits() > 0 => self.clock.sleep_until(t).await,
                        _ => std::future::pending().await,
                    }
                } => {}
            }
        }
        tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    }

    async fn post(&self, batch: &[OutboxItem]) -> PostResult {
        let started = Instant::now();
        let item = &batch[0];
        let token = self.signer.token(&item.app_id, &item.tenant_id);
        let seqs: Vec<String> = batch.iter().map(|i| i.seq.to_string()).collect();
        let result = self
            .http
            .post(&item.callback_uri)
            .timeout(Duration::from_millis(self.policy.timeout_ms))
            .bearer_auth(token)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .header(
                "User-Agent",
                concat!("Switchboard/", env!("CARGO_PKG_VERSION")),
            )
            .header("Client-Request-Id", uuid::Uuid::new_v4().to_string())
            .header(
                "X-Microsoft-Skype-Message-ID",
                uuid::Uuid::new_v4().to_string(),
            )
            .header("X-Microsoft-Tenant", &item.tenant_id)
            .header("Switchboard-Notification-Sequence", seqs.join(","))
            .body(envelope(batch.iter().map(|i| i.body.as_str())))
            .send()
            .await;
        let latency_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(resp) => PostResult {
                status: Some(resp.status().as_u16()),
                retry_after: resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry_after(v, std::time::SystemTime::now())),
                error: None,
                latency_ms,
            },
            Err(e) => PostResult {
                error: Some(describe(&e)),
                latency_ms,
                ..PostResult::default()
            },
        }
    }

    /// The delivery step, for tests and for a clock that was just moved: attempts every call's
    /// head that is due now (as many as `concurrency` allows, each lane within its share), waits
    /// for those POSTs and records their attempts. Returns how many POSTs it made.
    pub async fn run_due(self: &Arc<Self>) -> usize {
        let (due, _) = self.take_due(self.policy.concurrency.max(1));
        let posts = due.len();
        let mut set = tokio::task::JoinSet::new();
        for batch in due {
            let me = self.clone();
            set.spawn(async move { me.attempt(batch).await });
        }
        set.join_all().await;
        posts
    }

    /// One attempt at the head of a call's queue (one or more notifications in one POST):
    /// POST, record an attempt for each, then move the queue on.
    async fn attempt(&self, batch: Vec<OutboxItem>) {
        let result = self.post(&batch).await;
        let now = self.clock.now();
        let outcomes: Vec<AttemptOutcome> = batch
            .iter()
            .map(|item| {
                let jitter = || rand::rng().random_range(0.8..1.2);
                let o = settle(item, &result, now, &self.policy, jitter);
                if o.status == DeliveryStatus::Dead {
                    tracing::warn!(seq = item.seq, call = %item.call_id, "notification marked dead after {} attempts", o.attempts);
                }
                o
            })
            .collect();
        let call_id = batch[0].call_id;
        let mut q = self.queues.lock().expect("queues lock");
        if let Some(queue) = q.per_call.get_mut(&call_id) {
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
    }
}

/// The outcome of one attempt at `item` that came back with `result`: delivered on a 2xx; dead
/// once `max_attempts` are used or the notification is older than `max_age_secs`; otherwise
/// pending until the backoff (with a `jitter` of 0.8 to 1.2, drawn only then) has passed.
pub fn settle(
    item: &OutboxItem,
    result: &PostResult,
    now: Timestamp,
    policy: &DeliverySettings,
    jitter: impl FnOnce() -> f64,
) -> AttemptOutcome {
    let attempts = item.attempts + 1;
    let delivered = result.status.is_some_and(|s| (200..300).contains(&s));
    let (status, next_attempt_at) = if delivered {
        (DeliveryStatus::Delivered, now)
    } else if attempts >= policy.max_attempts
        || (now - item.created_at).num_seconds() >= policy.max_age_secs as i64
    {
        (DeliveryStatus::Dead, now)
    } else {
        let wait = backoff(policy, attempts, result.retry_after, jitter());
        (DeliveryStatus::Pending, now + wait)
    };
    AttemptOutcome {
        attempt: Attempt {
            call_id: item.call_id,
            seq: item.seq,
            at: now,
            status: result.status,
            error: result.error.clone(),
            latency_ms: result.latency_ms,
        },
        status,
        attempts,
        next_attempt_at,
    }
}

/// The wait before attempt `attempts + 1`: exponential from `initial_backoff`, times `jitter`
/// (0.8 to 1.2), at least `Retry-After`, at most `max_backoff`.
pub fn backoff(
    policy: &DeliverySettings,
    attempts: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> chrono::Duration {
    let base =
        policy.initial_backoff_ms as f64 * 2f64.powi(attempts.saturating_sub(1).min(30) as i32);
    let max_ms = (policy.max_backoff_secs * 1000) as f64;
    let mut ms = (base * jitter).min(max_ms);
    if let Some(ra) = retry_after {
        ms = ms.max((ra.as_millis() as f64).min(max_ms));
    }
    chrono::Duration::milliseconds(ms as i64)
}

/// Notifications sent in one POST at most.
const MAX_BATCH: usize = 16;

/// Reads `Retry-After`: delay-seconds, or an HTTP date (a date in the past means now).
fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// A short description of why a POST failed, without URLs' secrets or tokens.
fn describe(e: &reqwest::Error) -> String {
    if let Some(refusal) = crate::net_policy::policy_refusal(e) {
        return refusal.to_string();
    }
    // The innermost I/O error says what happened (refused, reset, ...) and holds no URL.
    let mut io = None;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(i) = s.downcast_ref::<std::io::Error>() {
            io = Some(i.to_string());
        }
        source = s.source();
    }
    let what = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_request() {
        "request failed"
    } else if e.is_body() || e.is_decode() {
        "reading the response failed"
    } else {
        "error"
    };
    match io {
        Some(io) => format!("{what}: {io}"),
        None => what.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::graph::notification::Notification;
    use crate::store::memory::MemoryStore;

    fn policy() -> DeliverySettings {
        DeliverySettings {
            max_attempts: 4,
            max_age_secs: 3600,
            initial_backoff_ms: 1000,
            max_backoff_secs: 30,
            ..DeliverySettings::default()
        }
    }

    /// A notification of `call` to `uri`, as the engine stores it.
    fn item(seq: i64, call: CallId, uri: &str, now: Timestamp) -> OutboxItem {
        let n = Notification::for_call(
            crate::domain::ChangeType::Updated,
            call,
            uri,
            format!("{{\"seq\":{seq}}}"),
        );
        OutboxItem {
            seq,
            call_id: call,
            app_id: "app".into(),
            tenant_id: "tenant".into(),
            callback_uri: uri.into(),
            change_type: "updated".into(),
            resource_url: n.resource_url(),
            body: n.item(),
            created_at: now,
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at: now,
        }
    }

    fn failed(status: u16) -> PostResult {
        PostResult {
            status: Some(status),
            ..PostResult::default()
        }
    }

    #[test]
    fn backoff_doubles_from_the_first_wait_within_its_jitter_and_stops_at_the_cap() {
        let p = policy();
        let ms = |attempts, jitter| backoff(&p, attempts, None, jitter).num_milliseconds();
        assert_eq!(ms(1, 1.0), 1000);
        assert_eq!(ms(2, 1.0), 2000);
        assert_eq!(ms(4, 1.0), 8000);
        assert_eq!(ms(3, 0.8), 3200);
        assert_eq!(ms(3, 1.2), 4800);
        assert_eq!(ms(10, 1.0), 30_000, "at most max_backoff");
        assert_eq!(ms(u32::MAX, 1.2), 30_000, "no overflow");
    }

    #[test]
    fn retry_after_raises_the_wait_but_not_past_the_cap() {
        let p = policy();
        let ra = |secs| backoff(&p, 1, Some(Duration::from_secs(secs)), 1.0);
        assert_eq!(ra(7).num_milliseconds(), 7000);
        assert_eq!(ra(0).num_milliseconds(), 1000, "never below the backoff");
        assert_eq!(ra(3600).num_milliseconds(), 30_000);
    }

    #[test]
    fn a_2xx_delivers_a_failure_retries_later_and_the_last_attempt_or_old_age_is_dead() {
        let (p, now) = (policy(), chrono::Utc::now());
        let it = item(1, CallId::new(), "http://127.0.0.1:9/cb", now);
        let ok = settle(&it, &failed(202), now, &p, || 1.0);
        assert_eq!((ok.status, ok.attempts), (DeliveryStatus::Delivered, 1));
        let retry = settle(&it, &failed(500), now, &p, || 1.0);
        assert_eq!(retry.status, DeliveryStatus::Pending);
        assert_eq!(retry.next_attempt_at, now + chrono::Duration::seconds(1));
        assert_eq!(retry.attempt.status, Some(500));
        let refused = PostResult {
            error: Some("connection failed: refused".into()),
            ..PostResult::default()
        };
        let third = OutboxItem {
            attempts: 3,
            ..it.clone()
        };
        let dead = settle(&third, &refused, now, &p, || 1.0);
        assert_eq!((dead.status, dead.attempts), (DeliveryStatus::Dead, 4));
        assert_eq!(
            dead.attempt.error.as_deref(),
            Some("connection failed: refused")
        );
        let old = settle(
            &it,
            &failed(503),
            now + chrono::Duration::hours(1),
            &p,
            || 1.0,
        );
        assert_eq!(old.status, DeliveryStatus::Dead, "max_age_secs");
    }

    fn delivery(clock: &Clock) -> Arc<Delivery> {
        let committer = Committer::start(Arc::new(MemoryStore::default()), Arc::default());
        let keys = Arc::new(RwLock::new(KeyRing::ephemeral().unwrap()));
        let signer = Signer::new(keys, NotificationSettings::default());
        Arc::new(Delivery::new(
            committer,
            clock.clone(),
            signer,
            reqwest::Client::new(),
            policy(),
        ))
    }

    #[tokio::test]
    async fn first_attempts_of_a_call_to_one_url_share_a_post_of_at_most_sixteen() {
        let clock = Clock::virtual_at(chrono::Utc::now());
        let now = clock.now();
        let d = delivery(&clock);
        let (a, b) = (CallId::new(), CallId::new());
        let mut items: Vec<OutboxItem> = (1..=20)
            .map(|seq| item(seq, a, "http://127.0.0.1:9/a", now))
            .collect();
        items.push(item(21, a, "http://127.0.0.1:9/elsewhere", now));
        items.push(item(22, b, "http://127.0.0.1:9/b", now));
        d.enqueue(items);
        let (due, _) = d.take_due(10);
        let seqs: Vec<Vec<i64>> = due
            .iter()
            .map(|batch| batch.iter().map(|i| i.seq).collect())
            .collect();
        assert_eq!(seqs.len(), 2, "one POST per call at a time: {seqs:?}");
        assert!(seqs.contains(&(1..=16).collect()), "{seqs:?}");
        assert!(seqs.contains(&vec![22]), "{seqs:?}");
        assert_eq!(
            d.take_due(10).0.len(),
            0,
            "a call with a POST in flight waits"
        );
    }

    #[tokio::test]
    async fn a_retry_goes_alone_once_due() {
        let clock = Clock::virtual_at(chrono::Utc::now());
        let now = clock.now();
        let d = delivery(&clock);
        let call = CallId::new();
        let mut head = item(1, call, "http://127.0.0.1:9/a", now);
        head.attempts = 1;
        head.next_attempt_at = now + chrono::Duration::seconds(5);
        d.enqueue(vec![head, item(2, call, "http://127.0.0.1:9/a", now)]);
        let (due, next) = d.take_due(10);
        assert!(due.is_empty(), "not before its time");
        assert_eq!(next, Some(now + chrono::Duration::seconds(5)));
        clock.advance(chrono::Duration::seconds(5)).unwrap();
        let (due, _) = d.take_due(10);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].iter().map(|i| i.seq).collect::<Vec<_>>(), vec![1]);
    }

    #[tokio::test]
    async fn the_step_posts_what_is_due_and_moves_each_call_on() {
        let hits = Arc::new(AtomicUsize::new(0));
        let bodies = Arc::new(Mutex::new(vec![]));
        let app = {
            let (hits, bodies) = (hits.clone(), bodies.clone());
            axum::Router::new().route(
                "/cb",
                axum::routing::post(move |body: String| async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    bodies.lock().unwrap().push(body);
                    axum::http::StatusCode::ACCEPTED
                }),
            )
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}/cb", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let clock = Clock::virtual_at(chrono::Utc::now());
        let now = clock.now();
        let d = delivery(&clock);
        let (a, b) = (CallId::new(), CallId::new());
        d.enqueue(vec![
            item(1, a, &uri, now),
            item(2, a, &uri, now),
            item(3, b, &uri, now),
        ]);
        assert_eq!(d.run_due().await, 2, "one POST per call");
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        let batched = bodies.lock().unwrap().iter().any(|b| {
            let v: serde_json::Value = serde_json::from_str(b).unwrap();
            v["value"].as_array().map(Vec::len) == Some(2)
        });
        assert!(batched, "call a's two notifications went in one envelope");
        assert_eq!(d.run_due().await, 0, "nothing left");
    }
}
