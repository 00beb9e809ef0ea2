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
//!
//! - `mod.rs`: the worker ([`Delivery`]): claim what is due from the [`Outbox`], POST, settle;
//! - `queue.rs`: the outbox of one node, in memory ([`queue::LocalOutbox`]);
//! - `retry.rs`: what an attempt leaves a notification as ([`outcome`], [`backoff`]).

pub mod queue;
mod retry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use retry::{backoff, outcome};

pub use crate::auth::signer::Signer;
use crate::clock::Clock;
use crate::config::DeliverySettings;
use crate::domain::CallId;
use crate::faults::NotificationDraw;
use crate::graph::notification::envelope;
use crate::store::outbox::{Claim, Outbox};
use crate::store::{AttemptOutcome, DeliveryStatus, OutboxItem, StoreError};
use crate::telemetry::Metrics;

pub struct Delivery {
    outbox: Arc<dyn Outbox>,
    metrics: Arc<Metrics>,
    wake: Notify,
    clock: Clock,
    signer: Signer,
    http: reqwest::Client,
    policy: DeliverySettings,
    /// Where a bot redirected a call's notifications (302 on its first incoming-call
    /// notification, for region affinity): (call, the URI it answered on) → the new URI.
    redirects: std::sync::Mutex<std::collections::HashMap<(CallId, String), String>>,
    /// Told of each redirect, so that the call's later notifications go there too.
    on_redirect: std::sync::OnceLock<OnRedirect>,
    /// The callback policy a redirect's `Location` must pass, as a `callbackUri` does.
    callbacks: std::sync::OnceLock<crate::config::CallbackPolicy>,
    /// Faults to inject (set once, at start).
    faults: std::sync::OnceLock<Arc<crate::faults::Faults>>,
    /// Each live call's `callChainId` (a GUID), as its call notifications say, sent as the
    /// chain-id headers of all its notifications: 32 bytes a call, dropped with its last
    /// notification.
    chains: std::sync::Mutex<std::collections::HashMap<CallId, uuid::Uuid>>,
}

/// Chain ids remembered at most; past this the map starts over (a notification whose call's
/// chain is not known is sent without the chain-id headers).
const CHAINS: usize = 100_000;

/// The `callChainId` a notification body states, found without parsing the whole body.
fn chain_in(body: &str) -> Option<&str> {
    let at = body.find("\"callChainId\":\"")? + "\"callChainId\":\"".len();
    let rest = &body[at..];
    Some(&rest[..rest.find('"')?]).filter(|c| !c.is_empty())
}

/// What learns of a redirect: (call, from, to).
pub type OnRedirect = Box<dyn Fn(CallId, String, String) + Send + Sync>;

/// What one POST came back with: an HTTP status (and its `Retry-After`), or why there was none.
#[derive(Clone, Debug, Default)]
pub struct PostResult {
    pub status: Option<u16>,
    pub error: Option<String>,
    pub retry_after: Option<Duration>,
    pub latency_ms: u64,
    /// A 3xx answer's `Location`, resolved against the URI posted to.
    pub location: Option<String>,
}

impl PostResult {
    /// The receiver accepted the POST (a 2xx answer).
    pub fn accepted(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

impl Delivery {
    pub fn new(
        outbox: Arc<dyn Outbox>,
        clock: Clock,
        signer: Signer,
        http: reqwest::Client,
        policy: DeliverySettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Delivery {
            outbox,
            metrics,
            wake: Notify::new(),
            clock,
            signer,
            http,
            policy,
            redirects: Default::default(),
            on_redirect: std::sync::OnceLock::new(),
            chains: Default::default(),
            callbacks: std::sync::OnceLock::new(),
            faults: std::sync::OnceLock::new(),
        }
    }

    /// The faults notifications may draw (set once, at start; unset: none).
    pub fn faults(&self, faults: Arc<crate::faults::Faults>) {
        let _ = self.faults.set(faults);
    }

    /// The callback policy redirects are held to (set once, at start; unset: the default).
    pub fn callback_policy(&self, policy: crate::config::CallbackPolicy) {
        let _ = self.callbacks.set(policy);
    }

    /// The call's chain id, learnt from the first of its notifications that states it (one
    /// that is not a GUID is sent only with notifications that state it). Forgotten with the
    /// call's `deleted` notification.
    fn chain_of(&self, batch: &[OutboxItem]) -> Option<String> {
        let call = batch[0].call_id;
        let ended = batch
            .iter()
            .any(|i| i.change_type == "deleted" && !i.resource_url.contains("/operations/"));
        let mut chains = self.chains.lock().expect("chains lock");
        let known = if ended {
            chains.remove(&call)
        } else {
            chains.get(&call).copied()
        };
        if let Some(c) = known {
            return Some(c.to_string());
        }
        // Read from the bodies only until it is known.
        let chain = batch.iter().find_map(|i| chain_in(&i.body))?;
        // Kept as 16 bytes only when that gives back the same text.
        if let Ok(guid) = uuid::Uuid::parse_str(chain)
            && guid.to_string() == chain
            && !ended
        {
            if chains.len() >= CHAINS {
                chains.clear();
            }
            chains.insert(call, guid);
        }
        Some(chain.to_string())
    }

    /// Sets what learns of redirects (once; the engine, which moves the call's callback).
    pub fn on_redirect(&self, f: OnRedirect) {
        let _ = self.on_redirect.set(f);
    }

    /// Where notifications of `item` go: its callback, unless the bot redirected it.
    fn target(&self, item: &OutboxItem) -> String {
        let redirects = self.redirects.lock().expect("redirects lock");
        redirects
            .get(&(item.call_id, item.callback_uri.clone()))
            .cloned()
            .unwrap_or_else(|| item.callback_uri.clone())
    }

    /// Queues notifications that are already committed to the store.
    pub fn enqueue(&self, items: Vec<OutboxItem>) {
        self.outbox.committed(items);
        self.wake.notify_one();
    }

    /// Forgets every queued notification (the store was emptied).
    pub fn reset(&self) {
        self.outbox.reset();
    }

    /// POSTs `item` again now, outside its queue, and records the attempt: it leaves the
    /// notification delivered on a 2xx, as it was otherwise.
    pub async fn redeliver(&self, item: OutboxItem) -> Result<AttemptOutcome, StoreError> {
        let target = self.target(&item);
        let result = self.post(std::slice::from_ref(&item), &target).await;
        self.metrics
            .delivery(Duration::from_millis(result.latency_ms));
        let mut o = outcome(&item, &result, self.clock.now(), &self.policy, || 1.0);
        if o.status != DeliveryStatus::Delivered {
            (o.status, o.next_attempt_at) = (item.status, item.next_attempt_at);
        }
        self.log_attempt(&item, &o, &host_of(&item.callback_uri));
        self.outbox.redelivered(o.clone()).await?;
        Ok(o)
    }

    /// Attempts every notification due now, and those that fall due behind them, until none is
    /// due or in flight (each has had its attempt: delivered, or failed and rescheduled), or
    /// until `within` has passed. Returns whether it got there.
    ///
    /// The worker makes the attempts (this only wakes it and watches): a caller that gives up
    /// waiting, or goes away, leaves no claim half done.
    pub async fn settle_due(&self, within: Duration) -> Result<bool, StoreError> {
        let deadline = Instant::now() + within;
        loop {
            self.wake.notify_one();
            if !self.outbox.has_due(self.clock.now()).await? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Claims what is due now, up to `room` POSTs; also when the next head falls due.
    async fn claim(&self, room: usize) -> (Vec<Claim>, Option<crate::clock::Timestamp>) {
        if room == 0 {
            return (vec![], None);
        }
        match self.outbox.claim(self.clock.now(), room).await {
            Ok(c) => (c.claims, c.next_due),
            Err(e) => {
                tracing::warn!("claiming due notifications failed: {e}");
                // Looked at again in a moment.
                (
                    vec![],
                    Some(self.clock.now() + chrono::Duration::seconds(1)),
                )
            }
        }
    }

    /// Delivers until `stop` is cancelled, then lets in-flight POSTs finish (up to 5 s).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let tracker = TaskTracker::new();
        let in_flight = Arc::new(tokio::sync::Semaphore::new(self.policy.concurrency.max(1)));
        loop {
            let room = in_flight.available_permits();
            let (due, next) = self.claim(room).await;
            for claim in due {
                let permit = in_flight
                    .clone()
                    .try_acquire_owned()
                    .expect("room was counted");
                let me = self.clone();
                tracker.spawn(async move {
                    me.attempt(claim).await;
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

    async fn post(&self, batch: &[OutboxItem], target: &str) -> PostResult {
        let started = Instant::now();
        let item = &batch[0];
        let token = self.signer.token(&item.app_id, &item.tenant_id);
        let seqs: Vec<String> = batch.iter().map(|i| i.seq.to_string()).collect();
        let mut request = self.http.post(target);
        // As the real service's callbacks: the call's chain id, and again as `Scenario-Id`.
        if let Some(chain) = self.chain_of(batch) {
            request = request
                .header("X-Microsoft-Skype-Chain-ID", &chain)
                .header("Scenario-Id", chain);
        }
        let result = request
            .timeout(Duration::from_millis(self.policy.timeout_ms))
            .bearer_auth(token)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .header(
                "User-Agent",
                concat!(
                    "Microsoft-Skype/3.0,(Calling/1.0) Switchboard/",
                    env!("CARGO_PKG_VERSION")
                ),
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
                location: resp
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| url::Url::parse(target).ok()?.join(l).ok())
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .map(|u| u.to_string()),
                status: Some(resp.status().as_u16()),
                retry_after: resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry::retry_after(v, std::time::SystemTime::now())),
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
        let (due, _) = self.claim(self.policy.concurrency.max(1)).await;
        let posts = due.len();
        let mut set = tokio::task::JoinSet::new();
        for claim in due {
            let me = self.clone();
            set.spawn(async move { me.attempt(claim).await });
        }
        set.join_all().await;
        posts
    }

    /// One log line and one count per notification attempted.
    fn log_attempt(&self, item: &OutboxItem, o: &AttemptOutcome, host: &str) {
        let outcome = match o.status {
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Pending => "retried",
            DeliveryStatus::Dead => "dead",
        };
        self.metrics.notification(outcome);
        let a = &o.attempt;
        let next = (o.status == DeliveryStatus::Pending).then(|| {
            o.next_attempt_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        });
        // A notification an injected fault gave up is what the test asked for: not a warning.
        let injected = a
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("injected fault"));
        if o.status == DeliveryStatus::Dead && !injected {
            tracing::warn!(
                target: "switchboard::delivery",
                call_id = %item.call_id,
                seq = item.seq,
                host,
                outcome,
                status = a.status,
                error = a.error.as_deref(),
                latency_ms = a.latency_ms,
                attempts = o.attempts,
                "notification dead"
            );
        } else {
            tracing::info!(
                target: "switchboard::delivery",
                call_id = %item.call_id,
                seq = item.seq,
                host,
                outcome,
                status = a.status,
                error = a.error.as_deref(),
                latency_ms = a.latency_ms,
                attempts = o.attempts,
                next_attempt = next.as_deref(),
                "delivery attempt"
            );
        }
    }

    /// One attempt at the head of a call's queue (one or more notifications in one POST):
    /// POST, then settle the claim with an attempt for each.
    #[tracing::instrument(level = "debug", name = "deliver", skip_all, fields(call = %claim.call_id, fence = claim.fence))]
    async fn attempt(&self, claim: Claim) {
        let target = self.target(&claim.batch[0]);
        let host = host_of(&target);
        // A fault the head of the batch drew applies to the whole POST.
        let head = &claim.batch[0];
        let fault = self
            .faults
            .get()
            .and_then(|f| f.notification(&head.app_id, head.call_id, head.seq, head.attempts));
        let mut result = match fault {
            Some(NotificationDraw::Fail { attempts }) => PostResult {
                error: Some(format!(
                    "injected fault: fail_first (attempt {} of the {attempts} that fail; not sent)",
                    head.attempts + 1
                )),
                ..PostResult::default()
            },
            Some(NotificationDraw::Drop { attempts }) => PostResult {
                error: Some(format!(
                    "injected fault: drop_after (attempt {} of {attempts}; not sent)",
                    head.attempts + 1
                )),
                ..PostResult::default()
            },
            Some(NotificationDraw::Delay(d)) => {
                tokio::time::sleep(d).await;
                let r = self.post(&claim.batch, &target).await;
                noted(r, format!("injected fault: delay ({} ms)", d.as_millis()))
            }
            Some(NotificationDraw::Duplicate) => {
                let r = self.post(&claim.batch, &target).await;
                match r.accepted() {
                    true => {
                        let again = self.post(&claim.batch, &target).await;
                        let said = again.status.map_or_else(
                            || again.error.unwrap_or_default(),
                            |s| format!("answered {s}"),
                        );
                        noted(r, format!("injected fault: duplicate (sent again: {said})"))
                    }
                    false => r,
                }
            }
            Some(NotificationDraw::Reorder) if claim.batch.len() > 1 => {
                // Those behind first, then the head: each its own POST.
                let (head, rest) = claim.batch.split_at(1);
                let later = self.post(rest, &target).await;
                let first = self.post(head, &target).await;
                let worse = match later.accepted() {
                    true => first,
                    false => later,
                };
                let n = claim.batch.len() - 1;
                noted(
                    worse,
                    format!("injected fault: reorder (sent after the {n} behind it)"),
                )
            }
            Some(NotificationDraw::Reorder) | None => self.post(&claim.batch, &target).await,
        };
        // A bot answering its first incoming-call notification with 302 and a Location takes
        // the call's notifications there (Teams docs, "Redirects for region affinity").
        let first = &claim.batch[0];
        // The callback policy applies to where it leads, as to any callbackUri.
        if let Some(to) = result.location.as_deref()
            && let Some(why) = crate::net_policy::callback_refusal(
                self.callbacks.get().unwrap_or(&Default::default()),
                to,
            )
        {
            result.location = None;
            result.error = Some(format!("a redirect the callback policy refuses: {why}"));
        }
        if result.status == Some(302)
            && first.change_type == "created"
            && let Some(to) = result.location.clone()
        {
            result.error = Some(format!("redirected to {}", host_of(&to)));
            let mut redirects = self.redirects.lock().expect("redirects lock");
            if redirects.len() >= CHAINS {
                // The calls' own callbacks moved with them; this map only speeds up the rest.
                redirects.clear();
            }
            redirects.insert((first.call_id, first.callback_uri.clone()), to.clone());
            drop(redirects);
            if let Some(tell) = self.on_redirect.get() {
                tell(first.call_id, first.callback_uri.clone(), to);
            }
        } else if result.status == Some(204)
            && first.change_type == "created"
            && first.attempts == 0
        {
            result.error =
                Some("asked for again (204 to the first incoming-call notification)".into());
        }
        self.metrics
            .delivery(Duration::from_millis(result.latency_ms));
        let now = self.clock.now();
        let outcomes: Vec<AttemptOutcome> = claim
            .batch
            .iter()
            .map(|item| {
                let jitter = || rand::rng().random_range(0.8..1.2);
                let mut o = outcome(item, &result, now, &self.policy, jitter);
                if let Some(NotificationDraw::Drop { attempts }) = fault
                    && o.attempts >= attempts
                {
                    o.status = DeliveryStatus::Dead;
                }
                self.log_attempt(item, &o, &host);
                o
            })
            .collect();
        let call = claim.call_id;
        match self.outbox.settle(claim, outcomes).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(%call, "an attempt's claim no longer held; another took the call over")
            }
            Err(e) => tracing::warn!(%call, "recording a delivery attempt failed: {e}"),
        }
    }
}

/// An attempt's result with a note of the fault that shaped it (after any error it had).
fn noted(mut r: PostResult, note: String) -> PostResult {
    r.error = Some(match r.error.take() {
        Some(e) => format!("{note}; {e}"),
        None => note,
    });
    r
}

/// The host (and port, if not the scheme's) a callback URL names: what a log line may say of it
/// (a URL's path or query may hold a secret).
fn host_of(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => "-".into(),
        },
        Err(_) => "-".into(),
    }
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

/// What the delivery tests share.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::clock::Timestamp;
    use crate::domain::CallId;
    use crate::graph::notification::Notification;

    pub fn policy() -> DeliverySettings {
        DeliverySettings {
            max_attempts: 4,
            max_age_secs: 3600,
            initial_backoff_ms: 1000,
            max_backoff_secs: 30,
            ..DeliverySettings::default()
        }
    }

    /// A notification of `call` to `uri`, as the engine stores it.
    pub fn item(seq: i64, call: CallId, uri: &str, now: Timestamp) -> OutboxItem {
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
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use crate::domain::CallId;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::testing::{item, policy};
    use super::*;
    use crate::auth::KeyRing;
    use crate::config::NotificationSettings;
    use crate::store::committer::Committer;
    use crate::store::memory::MemoryStore;

    fn delivery(clock: &Clock) -> Arc<Delivery> {
        let committer = Committer::start(Arc::new(MemoryStore::default()), Arc::default());
        let keys = Arc::new(std::sync::RwLock::new(KeyRing::ephemeral().unwrap()));
        let signer = Signer::new(keys, NotificationSettings::default());
        let outbox = Arc::new(queue::LocalOutbox::new(committer, &policy()));
        Arc::new(Delivery::new(
            outbox,
            clock.clone(),
            signer,
            reqwest::Client::new(),
            policy(),
            Arc::default(),
        ))
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

    /// A receiver that records the sequence header of every POST, and its address.
    async fn sequences() -> (String, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(vec![]));
        let app = {
            let seen = seen.clone();
            axum::Router::new().route(
                "/cb",
                axum::routing::post(move |headers: axum::http::HeaderMap| async move {
                    let seq = headers["switchboard-notification-sequence"]
                        .to_str()
                        .unwrap();
                    seen.lock().unwrap().push(seq.to_string());
                    axum::http::StatusCode::ACCEPTED
                }),
            )
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}/cb", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (uri, seen)
    }

    fn faulted(clock: &Clock, fault: crate::faults::NotificationFaultKind) -> Arc<Delivery> {
        use crate::faults::{FaultSettings, Faults, NotificationFault};
        let d = delivery(clock);
        d.faults(Arc::new(Faults::new(FaultSettings {
            seed: Some(3),
            api: vec![],
            notifications: vec![NotificationFault {
                app_id: None,
                call_id: None,
                fault,
                probability: 1.0,
                attempts: None,
                delay_ms: None,
            }],
        })));
        d
    }

    #[tokio::test]
    async fn injected_duplicates_and_reorders_reach_the_receiver_so() {
        use crate::faults::NotificationFaultKind::{Duplicate, Reorder};
        let clock = Clock::virtual_at(chrono::Utc::now());
        let now = clock.now();

        let (uri, seen) = sequences().await;
        let d = faulted(&clock, Reorder);
        let call = CallId::new();
        d.enqueue(vec![item(1, call, &uri, now), item(2, call, &uri, now)]);
        d.run_due().await;
        assert_eq!(
            *seen.lock().unwrap(),
            ["2", "1"],
            "the one behind went first"
        );

        let (uri, seen) = sequences().await;
        let d = faulted(&clock, Duplicate);
        let call = CallId::new();
        d.enqueue(vec![item(1, call, &uri, now)]);
        d.run_due().await;
        assert_eq!(
            *seen.lock().unwrap(),
            ["1", "1"],
            "the same notification twice"
        );
    }
}
