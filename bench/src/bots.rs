//! The simulated bots. Each has its own token and its own callback receiver (an axum server on a
//! free loopback port) and loops over one of three workloads:
//! - a full P2P lifecycle against Switchboard: create → wait for `established` → GET → DELETE →
//!   wait for `terminated`;
//! - the same three requests against the bare baseline server, with nothing to wait for;
//! - GETs of one call, again and again.
//!
//! A [`Gate`] decides when the next iteration may start (until a deadline, for a number of
//! iterations, or at a fixed total rate). A bot times every request and remembers when each
//! notification arrived; once it stops, it waits a grace period for stragglers and counts every
//! expected notification that never came as lost.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::serve::ListenerExt;
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::server::{ANSWERER, APP_A, App, TENANT};
use crate::stats::Samples;

/// How long a bot waits for one notification before it moves on (and the notification will
/// count as lost unless it arrives during the grace period).
const NOTE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long bots wait for late notifications after the run.
const GRACE: Duration = Duration::from_secs(10);

/// The call states a lifecycle is notified of, in order.
pub const STATES: [&str; 4] = ["establishing", "established", "terminating", "terminated"];

/// The server the bots talk to and the HTTP client they share.
pub struct Target {
    pub base: String,
    pub client: reqwest::Client,
}

impl Target {
    pub fn new(base: &str) -> anyhow::Result<Arc<Self>> {
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Arc::new(Target {
            base: base.trim_end_matches('/').to_string(),
            client,
        }))
    }

    fn calls_url(&self) -> String {
        format!("{}/v1.0/communications/calls", self.base)
    }

    /// A client-credentials token of app A from the server's token endpoint.
    pub async fn token(&self) -> anyhow::Result<String> {
        self.token_for(APP_A).await
    }

    /// A client-credentials token of `app` from the server's token endpoint.
    pub async fn token_for(&self, app: App) -> anyhow::Result<String> {
        let resp = self
            .client
            .post(format!("{}/{TENANT}/oauth2/v2.0/token", self.base))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", app.id),
                ("client_secret", app.secret),
                ("scope", "https://graph.microsoft.com/.default"),
            ])
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or_default();
        body["access_token"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("token endpoint answered {status}: {body}"))
    }

    /// The body of a P2P create request to the answering party.
    pub fn create_body(callback: &str) -> Vec<u8> {
        Self::create_body_to(
            callback,
            json!({"user": {"id": ANSWERER, "displayName": "Bench answerer"}}),
        )
    }

    /// The body of a P2P create request to `identity` (an identitySet).
    pub fn create_body_to(callback: &str, identity: Value) -> Vec<u8> {
        json!({
            "@odata.type": "#microsoft.graph.call",
            "callbackUri": callback,
            "targets": [{
                "@odata.type": "#microsoft.graph.invitationParticipantInfo",
                "identity": identity
            }],
            "requestedModalities": ["audio"],
            "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"},
            "tenantId": TENANT,
        })
        .to_string()
        .into_bytes()
    }

    /// POSTs a create request; the new call's id.
    pub async fn create(&self, token: &str, body: &[u8]) -> Result<String, String> {
        let resp = self
            .client
            .post(self.calls_url())
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| format!("create: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| format!("create: {e}"))?;
        if status != 201 {
            return Err(format!("create answered {status}: {text}"));
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("create: {e}"))?;
        v["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("create answered without an id: {text}"))
    }

    /// GET or DELETE of one call, expecting `expect`.
    pub async fn call_request(
        &self,
        method: reqwest::Method,
        token: &str,
        id: &str,
        expect: u16,
    ) -> Result<(), String> {
        let resp = self
            .client
            .request(method.clone(), format!("{}/{id}", self.calls_url()))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| format!("{method}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| format!("{method}: {e}"))?;
        if status != expect {
            return Err(format!("{method} answered {status}: {text}"));
        }
        Ok(())
    }
}

/// When the next iteration may start.
pub struct Gate {
    start: Instant,
    deadline: Option<Instant>,
    remaining: Option<AtomicI64>,
    rate: Option<f64>,
    slot: AtomicU64,
}

impl Gate {
    /// Open from now until `duration` has passed or `count` iterations have started, at most
    /// `rate` starts per second across all bots.
    pub fn new(duration: Option<Duration>, count: Option<u64>, rate: Option<f64>) -> Arc<Self> {
        let start = Instant::now();
        Arc::new(Gate {
            start,
            deadline: duration.map(|d| start + d),
            remaining: count.map(|c| AtomicI64::new(c as i64)),
            rate: rate.filter(|r| *r > 0.0),
            slot: AtomicU64::new(0),
        })
    }

    /// Waits for the next start slot; `false` once the gate is closed.
    pub async fn next(&self) -> bool {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        if let Some(r) = &self.remaining
            && r.fetch_sub(1, Ordering::Relaxed) <= 0
        {
            return false;
        }
        if let Some(rate) = self.rate {
            let k = self.slot.fetch_add(1, Ordering::Relaxed);
            let at = self.start + Duration::from_secs_f64(k as f64 / rate);
            if self.deadline.is_some_and(|d| at >= d) {
                return false;
            }
            tokio::time::sleep_until(at).await;
        }
        true
    }
}

/// One call notification as a receiver saw it.
#[derive(Debug)]
pub struct Note {
    pub call_id: String,
    pub state: String,
    pub seq: Option<i64>,
    pub at: Instant,
}

/// The call notifications in one callback POST (none if the body is not JSON).
pub fn parse_notes(headers: &HeaderMap, body: &[u8]) -> Option<Vec<Note>> {
    let at = Instant::now();
    // One number per notification in the POST, in order; each call numbers its own.
    let seqs: Vec<Option<i64>> = headers
        .get("switchboard-notification-sequence")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(',').map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_default();
    let v = serde_json::from_slice::<Value>(body).ok()?;
    let notes = v["value"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, n)| {
            let seq = seqs.get(i).copied().flatten();
            let id = n["resourceUrl"]
                .as_str()
                .and_then(|u| u.strip_prefix("/communications/calls/"))
                .filter(|id| !id.contains('/'))?;
            Some(Note {
                call_id: id.to_string(),
                state: n["resourceData"]["state"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                seq,
                at,
            })
        })
        .collect();
    Some(notes)
}

async fn receive(
    State(tx): State<UnboundedSender<Note>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let Some(notes) = parse_notes(&headers, &body) else {
        return StatusCode::BAD_REQUEST;
    };
    for note in notes {
        let _ = tx.send(note);
    }
    StatusCode::ACCEPTED
}

/// Starts a callback receiver on a free loopback port that forwards every call notification to
/// `tx` and answers 202. Returns its URL and the task serving it.
pub async fn start_receiver(tx: UnboundedSender<Note>) -> anyhow::Result<(String, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/api/calls", listener.local_addr()?);
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = axum::Router::new()
        .route("/api/calls", axum::routing::post(receive))
        .with_state(tx);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, task))
}

/// What happened to one call a bot created.
#[derive(Default)]
struct CallRecord {
    /// When the create response arrived (`None`: a notification about a call this bot has not
    /// heard of, yet or at all).
    created: Option<Instant>,
    /// When the DELETE response arrived.
    deleted: Option<Instant>,
    notes: HashMap<String, Instant>,
}

/// Everything a phase measured, summed over its bots.
#[derive(Default)]
pub struct Tally {
    pub create: Samples,
    pub get: Samples,
    pub delete: Samples,
    /// Notification latency per state of [`STATES`].
    pub notes: [Samples; 4],
    /// Iterations that completed without a failure (full lifecycles, or bare request triplets).
    pub iterations: u64,
    pub requests: u64,
    pub failed_requests: u64,
    pub first_failure: Option<String>,
    pub expected_notes: u64,
    pub received_notes: u64,
    pub lost_notes: u64,
    /// Notifications that arrived before the response they are timed from (counted as 0 ms).
    pub early_notes: u64,
    pub duplicate_notes: u64,
    /// Notifications about calls no bot of this phase created.
    pub unexpected_notes: u64,
}

impl Tally {
    pub fn merge(&mut self, o: Tally) {
        self.create.extend(o.create);
        self.get.extend(o.get);
        self.delete.extend(o.delete);
        for (a, b) in self.notes.iter_mut().zip(o.notes) {
            a.extend(b);
        }
        self.iterations += o.iterations;
        self.requests += o.requests;
        self.failed_requests += o.failed_requests;
        if self.first_failure.is_none() {
            self.first_failure = o.first_failure;
        }
        self.expected_notes += o.expected_notes;
        self.received_notes += o.received_notes;
        self.lost_notes += o.lost_notes;
        self.early_notes += o.early_notes;
        self.duplicate_notes += o.duplicate_notes;
        self.unexpected_notes += o.unexpected_notes;
    }

    /// Every notification latency, whatever the state.
    pub fn all_notes(&self) -> Samples {
        let mut all = Samples::default();
        for s in &self.notes {
            all.extend(s.clone());
        }
        all
    }

    fn fail(&mut self, e: String) {
        self.failed_requests += 1;
        if self.first_failure.is_none() {
            self.first_failure = Some(e);
        }
    }
}

/// One simulated bot.
pub struct Bot {
    target: Arc<Target>,
    token: String,
    receiver: Option<JoinHandle<()>>,
    rx: Option<UnboundedReceiver<Note>>,
    body: Vec<u8>,
    callback: String,
    calls: HashMap<String, CallRecord>,
    /// `(call id, sequence number)` of every notification received.
    seqs: HashSet<(String, i64)>,
    /// The call a GET loop reads.
    get_call: Option<String>,
    tally: Tally,
}

/// What a bot does in its loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Full lifecycles against Switchboard.
    Lifecycle,
    /// POST, GET, DELETE against the bare server.
    BareMix,
    /// GETs of one call (created, and on Switchboard established, before the clock starts).
    Gets { switchboard: bool },
    /// Lifecycles that hold each call this long between `established` and the DELETE (a real
    /// call over SIP), without the GET.
    Held { hold_ms: u64 },
}

impl Bot {
    /// A bot with a token and, on Switchboard, its own callback receiver.
    pub async fn new(target: Arc<Target>, switchboard: bool) -> anyhow::Result<Self> {
        let (token, callback, receiver, rx) = if switchboard {
            let (tx, rx) = unbounded_channel();
            let (url, task) = start_receiver(tx).await?;
            (target.token().await?, url, Some(task), Some(rx))
        } else {
            (
                "bare-baseline-token".to_string(),
                "http://127.0.0.1:9/api/calls".to_string(),
                None,
                None,
            )
        };
        let body = Target::create_body(&callback);
        Ok(Bot {
            target,
            token,
            receiver,
            rx,
            body,
            callback,
            calls: HashMap::new(),
            seqs: HashSet::new(),
            get_call: None,
            tally: Tally::default(),
        })
    }

    /// Before a GET phase: creates the call to read (and waits until it is established).
    pub async fn open_call(&mut self, switchboard: bool) -> anyhow::Result<()> {
        let id = self
            .target
            .create(&self.token, &self.body)
            .await
            .map_err(anyhow::Error::msg)?;
        if switchboard {
            self.record_created(&id);
            if !self.wait_for(&id, "established").await {
                anyhow::bail!("call {id} was not established within {NOTE_TIMEOUT:?}");
            }
        }
        self.get_call = Some(id);
        Ok(())
    }

    /// Runs `workload` until the gate closes; then, on Switchboard, waits for late
    /// notifications and counts what is missing.
    pub async fn run(mut self, workload: Workload, gate: Arc<Gate>) -> (Tally, Instant) {
        while gate.next().await {
            match workload {
                Workload::Lifecycle => self.lifecycle().await,
                Workload::BareMix => self.bare_mix().await,
                Workload::Gets { .. } => self.one_get().await,
                Workload::Held { hold_ms } => self.held(hold_ms).await,
            }
        }
        let stopped = Instant::now();
        if let (Workload::Gets { switchboard: true }, Some(id)) = (workload, self.get_call.clone())
        {
            self.delete(&id).await;
        }
        if self.rx.is_some() {
            self.settle().await;
        }
        if let Some(task) = self.receiver.take() {
            task.abort();
        }
        (self.tally, stopped)
    }

    async fn lifecycle(&mut self) {
        let Some(id) = self.create().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            return;
        };
        let mut ok = self.wait_for(&id, "established").await;
        ok &= self.get(&id).await;
        ok &= self.delete(&id).await;
        ok &= self.wait_for(&id, "terminated").await;
        if ok {
            self.tally.iterations += 1;
        }
    }

    async fn held(&mut self, hold_ms: u64) {
        let Some(id) = self.create().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            return;
        };
        let mut ok = self.wait_for(&id, "established").await;
        tokio::time::sleep(Duration::from_millis(hold_ms)).await;
        ok &= self.delete(&id).await;
        ok &= self.wait_for(&id, "terminated").await;
        if ok {
            self.tally.iterations += 1;
        }
    }

    /// Calls go to this phone number instead of the answering party.
    pub fn call_phone(&mut self, number: &str) {
        let callback = self.callback.clone();
        self.body = Target::create_body_to(&callback, json!({"phone": {"id": number}}));
    }

    async fn bare_mix(&mut self) {
        let Some(id) = self.create().await else {
            return;
        };
        let got = self.get(&id).await;
        let deleted = self.delete(&id).await;
        if got && deleted {
            self.tally.iterations += 1;
        }
    }

    async fn one_get(&mut self) {
        if let Some(id) = self.get_call.clone()
            && self.get(&id).await
        {
            self.tally.iterations += 1;
        }
    }

    async fn create(&mut self) -> Option<String> {
        let t0 = Instant::now();
        let result = self.target.create(&self.token, &self.body).await;
        self.tally.requests += 1;
        match result {
            Ok(id) => {
                self.tally.create.push(t0.elapsed());
                if self.rx.is_some() {
                    self.record_created(&id);
                }
                Some(id)
            }
            Err(e) => {
                self.tally.fail(e);
                None
            }
        }
    }

    async fn get(&mut self, id: &str) -> bool {
        let t0 = Instant::now();
        let result = self
            .target
            .call_request(reqwest::Method::GET, &self.token, id, 200)
            .await;
        self.tally.requests += 1;
        match result {
            Ok(()) => {
                self.tally.get.push(t0.elapsed());
                true
            }
            Err(e) => {
                self.tally.fail(e);
                false
            }
        }
    }

    async fn delete(&mut self, id: &str) -> bool {
        let t0 = Instant::now();
        let result = self
            .target
            .call_request(reqwest::Method::DELETE, &self.token, id, 204)
            .await;
        self.tally.requests += 1;
        match result {
            Ok(()) => {
                let now = Instant::now();
                self.tally.delete.push(now - t0);
                if let Some(c) = self.calls.get_mut(id) {
                    c.deleted = Some(now);
                }
                true
            }
            Err(e) => {
                self.tally.fail(e);
                false
            }
        }
    }

    fn record_created(&mut self, id: &str) {
        self.calls.entry(id.to_string()).or_default().created = Some(Instant::now());
    }

    fn record(&mut self, note: Note) {
        self.tally.received_notes += 1;
        if let Some(seq) = note.seq
            && !self.seqs.insert((note.call_id.clone(), seq))
        {
            self.tally.duplicate_notes += 1;
            return;
        }
        self.calls
            .entry(note.call_id)
            .or_default()
            .notes
            .entry(note.state)
            .or_insert(note.at);
    }

    fn has(&self, id: &str, state: &str) -> bool {
        self.calls
            .get(id)
            .is_some_and(|c| c.notes.contains_key(state))
    }

    /// Waits until the notification that call `id` is in `state` has arrived.
    async fn wait_for(&mut self, id: &str, state: &str) -> bool {
        let deadline = Instant::now() + NOTE_TIMEOUT;
        while !self.has(id, state) {
            let Some(rx) = self.rx.as_mut() else {
                return false;
            };
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(note)) => self.record(note),
                _ => return false,
            }
        }
        true
    }

    /// The notifications each call should have had: both setup states once created, both
    /// teardown states once the DELETE was accepted.
    fn expected(c: &CallRecord) -> impl Iterator<Item = (usize, Instant)> + '_ {
        STATES.iter().enumerate().filter_map(|(i, _)| {
            let base = if i < 2 { c.created } else { c.deleted };
            base.map(|b| (i, b))
        })
    }

    fn missing(&self) -> usize {
        self.calls
            .values()
            .flat_map(|c| Self::expected(c).filter(|(i, _)| !c.notes.contains_key(STATES[*i])))
            .count()
    }

    /// Waits up to [`GRACE`] for every expected notification, then tallies latencies and losses.
    async fn settle(&mut self) {
        let deadline = Instant::now() + GRACE;
        while self.missing() > 0 {
            let Some(rx) = self.rx.as_mut() else { break };
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(note)) => self.record(note),
                _ => break,
            }
        }
        let t = &mut self.tally;
        for c in self.calls.values() {
            if c.created.is_none() {
                t.unexpected_notes += c.notes.len() as u64;
                continue;
            }
            for (i, base) in Self::expected(c) {
                t.expected_notes += 1;
                match c.notes.get(STATES[i]) {
                    Some(&at) => {
                        if at < base {
                            t.early_notes += 1;
                        }
                        t.notes[i].push(at.saturating_duration_since(base));
                    }
                    None => t.lost_notes += 1,
                }
            }
        }
    }
}
