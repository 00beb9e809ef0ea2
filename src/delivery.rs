//! The delivery worker: POSTs notifications from the durable outbox to each call's callback URL.
//!
//! Per call, notifications go out strictly in order: the next waits until the one before it was
//! delivered or marked dead. Across calls, up to `concurrency` POSTs run at once. A failed attempt
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
use crate::graph::notification::{ENVELOPE_HEAD, ENVELOPE_TAIL};
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

#[derive(Default)]
struct Queues {
    per_call: HashMap<CallId, VecDeque<OutboxItem>>,
    /// Heads of queues that wait for their time, by (due, seq).
    ready: BTreeSet<(Timestamp, i64, CallId)>,
    busy: HashSet<CallId>,
}

impl Queues {
    fn push(&mut self, item: OutboxItem) {
        let q = self.per_call.entry(item.call_id).or_default();
        q.push_back(item);
        if q.len() == 1 && !self.busy.contains(&q[0].call_id) {
            let h = &q[0];
            self.ready.insert((h.next_attempt_at, h.seq, h.call_id));
        }
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

/// What a POST came back with.
enum Response {
    Status(u16, Option<Duration>),
    Error(String),
}

impl Delivery {
    pub fn new(
        committer: Committer,
        clock: Clock,
        signer: Signer,
        http: reqwest::Client,
        policy: DeliverySettings,
    ) -> Self {
        Delivery {
            queues: Mutex::new(Queues::default()),
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

    /// Takes the calls whose head is due now, up to `room`, marking them busy. For each, the head
    /// and, on a first attempt, the notifications right behind it that are due too and go to the
    /// same URL: they go out in one POST (`commsNotifications` is a collection for that).
    fn take_due(&self, room: usize) -> (Vec<Vec<OutboxItem>>, Option<Timestamp>) {
        let now = self.clock.now();
        let mut q = self.queues.lock().expect("queues lock");
        let mut out = vec![];
        while out.len() < room {
            let Some(&(due, seq, call)) = q.ready.first() else {
                break;
            };
            if due > now {
                break;
            }
            q.ready.remove(&(due, seq, call));
            q.busy.insert(call);
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
        let next = q.ready.first().map(|(t, _, _)| *t);
        (out, next)
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

    async fn post(&self, batch: &[OutboxItem]) -> Response {
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
            .body(merged_body(batch))
            .send()
            .await;
        match result {
            Ok(resp) => {
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.trim().parse::<f64>().ok())
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(Duration::from_secs_f64);
                Response::Status(resp.status().as_u16(), retry_after)
            }
            Err(e) => Response::Error(describe(&e)),
        }
    }

    /// One attempt at the head of a call's queue (one or more notifications in one POST):
    /// POST, record an attempt for each, then move the queue on.
    async fn attempt(&self, batch: Vec<OutboxItem>) {
        let started = Instant::now();
        let response = self.post(&batch).await;
        let latency_ms = started.elapsed().as_millis() as u64;
        let now = self.clock.now();
        let (status_code, error, retry_after) = match response {
            Response::Status(s, ra) => (Some(s), None, ra),
            Response::Error(e) => (None, Some(e), None),
        };
        let delivered = status_code.is_some_and(|s| (200..300).contains(&s));
        let mut outcomes = Vec::with_capacity(batch.len());
        for item in &batch {
            let attempts = item.attempts + 1;
            let (status, next_attempt_at) = if delivered {
                (DeliveryStatus::Delivered, now)
            } else if attempts >= self.policy.max_attempts
                || (now - item.created_at).num_seconds() >= self.policy.max_age_secs as i64
            {
                tracing::warn!(seq = item.seq, call = %item.call_id, "notification marked dead after {attempts} attempts");
                (DeliveryStatus::Dead, now)
            } else {
                (
                    DeliveryStatus::Pending,
                    now + self.backoff(attempts, retry_after),
                )
            };
            outcomes.push(AttemptOutcome {
                attempt: Attempt {
                    seq: item.seq,
                    at: now,
                    status: status_code,
                    error: error.clone(),
                    latency_ms,
                },
                status,
                attempts,
                next_attempt_at,
            });
        }
        let call_id = batch[0].call_id;
        let mut q = self.queues.lock().expect("queues lock");
        q.busy.remove(&call_id);
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
            match queue.front() {
                Some(h) => {
                    let key = (h.next_attempt_at, h.seq, h.call_id);
                    q.ready.insert(key);
                }
                None => {
                    q.per_call.remove(&call_id);
                }
            }
        }
        drop(q);
        // Recorded in the background, in order: the call's next notification need not wait for
        // it. If the process dies before it commits, the notification is sent again at restart
        // (at least once; the sequence header tells a duplicate).
        self.committer.record(Change {
            attempts: outcomes,
            ..Change::default()
        });
    }

    /// The wait before attempt `attempts + 1`: exponential from `initial_backoff`, ±20 % jitter,
    /// at least `Retry-After`, at most `max_backoff`.
    fn backoff(&self, attempts: u32, retry_after: Option<Duration>) -> chrono::Duration {
        let base = self.policy.initial_backoff_ms as f64
            * 2f64.powi(attempts.saturating_sub(1).min(30) as i32);
        let jittered = base * rand::rng().random_range(0.8..1.2);
        let max_ms = (self.policy.max_backoff_secs * 1000) as f64;
        let mut ms = jittered.min(max_ms);
        if let Some(ra) = retry_after {
            ms = ms.max((ra.as_millis() as f64).min(max_ms));
        }
        chrono::Duration::milliseconds(ms as i64)
    }
}

/// Notifications sent in one POST at most.
const MAX_BATCH: usize = 16;

/// One `commsNotifications` envelope holding the notifications of `batch`, in order: the
/// envelopes' `value` lists spliced as text (a body from elsewhere is parsed instead).
fn merged_body(batch: &[OutboxItem]) -> String {
    if let [one] = batch {
        return one.body.clone();
    }
    let mut parts = Vec::with_capacity(batch.len());
    for item in batch {
        let inner = item
            .body
            .strip_prefix(ENVELOPE_HEAD)
            .and_then(|b| b.strip_suffix(ENVELOPE_TAIL))
            .map(str::to_string)
            .or_else(|| {
                let v: serde_json::Value = serde_json::from_str(&item.body).ok()?;
                let list = v.get("value")?.as_array()?;
                Some(
                    list.iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                )
            });
        parts.extend(inner);
    }
    format!("{ENVELOPE_HEAD}{}{ENVELOPE_TAIL}", parts.join(","))
}

/// A short description of why a POST failed, without URLs' secrets or tokens.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else if e.is_request() {
        "request failed".into()
    } else {
        "error".into()
    }
}
