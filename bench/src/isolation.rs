//! The `isolation` phase: does a slow or dead receiver cost only its own app?
//!
//! On one server, app A's normal bots run the `rate` phase's paced lifecycles several times,
//! alternately alone (a baseline) and beside a misbehaving receiver (a variant):
//! - `hang`: the calls of app B point at a receiver that accepts the connection, reads the
//!   request and never answers, so each POST to it holds its slot until the server's timeout
//!   (`[delivery] timeout_ms`, 10 s by default);
//! - `slow`: app B's receiver answers `202`, but only after 5 s;
//! - `hang-same-app`: the hanging receiver's calls are app A's own (another receiver of the same
//!   app beside the bots' receivers: only a per-receiver share can keep it from the others).
//!
//! Before a variant's run the misbehaving side creates `--hanging-calls` calls and waits until
//! its receiver's count of POSTs in flight has stopped growing (its share of the server's
//! delivery slots is full). During the run it creates one more call every 10 s / hanging-calls,
//! so it always has more due notifications than slots, however many of its POSTs time out or
//! back off; the receiver's in-flight count is sampled throughout to show that its POSTs were
//! hanging during the whole measurement. After the run its receiver answers everything at once,
//! its calls are deleted and the phase waits until each one's `terminated` notification arrived,
//! so its queues are empty again before the next baseline.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use clap::ValueEnum;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::bots::{Note, Target, Workload, parse_notes};
use crate::server::{APP_A, APP_B, App, Server};
use crate::{PhaseRun, run_phase};

/// How long the `slow` receiver takes to answer.
pub const SLOW_ANSWER: Duration = Duration::from_secs(5);
/// The server's default POST timeout: the misbehaving side creates `hanging_calls` calls per this
/// much time, so it has at least as many new POSTs as time out.
const REFILL_PERIOD: Duration = Duration::from_secs(10);
/// How long the misbehaving side's in-flight count must stay put to count as settled.
const SETTLED_AFTER: Duration = Duration::from_millis(500);
/// ... but no longer than this is waited for it.
const SETTLE_LIMIT: Duration = Duration::from_secs(5);
/// How long the drain after a variant may take before the phase moves on regardless.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
/// The longest unmeasured run before the first baseline.
const WARM_UP_LIMIT: Duration = Duration::from_secs(3);
/// How often the receiver's in-flight count is read during a run.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// A misbehaving receiver beside the normal bots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Variant {
    /// App B's receiver never answers.
    Hang,
    /// App B's receiver answers after 5 s.
    Slow,
    /// A receiver of app A itself never answers.
    HangSameApp,
}

impl Variant {
    pub fn describe(self) -> &'static str {
        match self {
            Variant::Hang => "app B's receiver never answers",
            Variant::Slow => "app B's receiver answers after 5 s",
            Variant::HangSameApp => "a second receiver of app A never answers",
        }
    }

    /// Whether the misbehaving receiver is another app's (the case the 2 × target is about: a
    /// receiver of the bots' own app may cost them some of their app's share, by design).
    pub fn other_app(self) -> bool {
        self.app().id != APP_A.id
    }

    /// "beside ..." in a few words.
    pub fn beside(self) -> &'static str {
        match self {
            Variant::Hang => "beside B's hanging receiver",
            Variant::Slow => "beside B's slow receiver",
            Variant::HangSameApp => "beside its own hanging receiver",
        }
    }

    fn app(self) -> App {
        match self {
            Variant::Hang | Variant::Slow => APP_B,
            Variant::HangSameApp => APP_A,
        }
    }

    fn mode(self) -> Mode {
        match self {
            Variant::Hang | Variant::HangSameApp => Mode::Hang,
            Variant::Slow => Mode::Delay(SLOW_ANSWER),
        }
    }
}

/// What the misbehaving receiver does with a POST.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Answer,
    Hang,
    Delay(Duration),
}

/// The misbehaving side of one variant run, as measured.
#[derive(Clone, Debug, Default)]
pub struct Load {
    /// Calls created before the normal bots started.
    pub calls_before: u64,
    /// Calls created while they ran.
    pub calls_during: u64,
    /// POSTs the receiver held when the normal bots started.
    pub in_flight_at_start: usize,
    /// Fewest, mean and most POSTs it held at once while they ran (sampled every 100 ms).
    pub in_flight_min: usize,
    pub in_flight_mean: f64,
    pub in_flight_max: usize,
    /// POSTs that reached the receiver while they ran.
    pub posts_during: u64,
    pub failed_requests: u64,
    pub first_failure: Option<String>,
    /// How long emptying its queues took afterwards (`None`: not within 60 s).
    pub drained_in: Option<Duration>,
    /// Calls whose `terminated` notification had not arrived when the drain gave up.
    pub undrained: usize,
}

/// One run of app A's bots: alone (`variant` = `None`) or beside a misbehaving receiver.
pub struct Run {
    pub variant: Option<Variant>,
    pub a: PhaseRun,
    pub load: Option<Load>,
}

pub struct IsolationResult {
    pub hanging_calls: usize,
    pub runs: Vec<Run>,
}

impl IsolationResult {
    fn mean_p99(&self, variant: Option<Variant>) -> Option<f64> {
        let p99s: Vec<f64> = self
            .runs
            .iter()
            .filter(|r| r.variant == variant)
            .map(|r| r.a.tally.all_notes().summary().p99)
            .collect();
        (!p99s.is_empty()).then(|| p99s.iter().sum::<f64>() / p99s.len() as f64)
    }

    /// The variants that ran, in the order they first ran.
    pub fn variants(&self) -> Vec<Variant> {
        let mut v = vec![];
        for r in &self.runs {
            if let Some(x) = r.variant
                && !v.contains(&x)
            {
                v.push(x);
            }
        }
        v
    }

    /// The largest share of a core other processes on the machine used during one of the runs.
    pub fn busiest_others(&self) -> f64 {
        self.runs
            .iter()
            .filter_map(|r| Some(r.a.others_cpu? / r.a.elapsed.as_secs_f64().max(1e-9)))
            .fold(0.0, f64::max)
    }

    /// App A's notification p99 beside `variant` ÷ alone, each the mean over its runs.
    pub fn ratio(&self, variant: Variant) -> Option<f64> {
        let base = self.mean_p99(None)?;
        Some(self.mean_p99(Some(variant))? / base.max(1e-3))
    }
}

/// Counts the POSTs a receiver holds: one per handler running.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Shared {
    mode: watch::Sender<Mode>,
    in_flight: Arc<AtomicUsize>,
    posts: AtomicU64,
    tx: UnboundedSender<Note>,
}

/// Answers as the mode says: at once, never (until the mode becomes `Answer`), or after a delay
/// (cut short likewise). hyper drops the handler when the server gives up on the POST and
/// closes the connection, so `in_flight` counts the POSTs really held.
async fn misbehave(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let _held = InFlight::enter(&s.in_flight);
    s.posts.fetch_add(1, Ordering::Relaxed);
    let mut mode = s.mode.subscribe();
    let answer = async {
        let _ = mode.wait_for(|m| *m == Mode::Answer).await;
    };
    let current = *s.mode.borrow();
    match current {
        Mode::Answer => {}
        Mode::Hang => answer.await,
        Mode::Delay(d) => {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = answer => {}
            }
        }
    }
    for note in parse_notes(&headers, &body).unwrap_or_default() {
        let _ = s.tx.send(note);
    }
    StatusCode::ACCEPTED
}

/// The misbehaving receiver and the calls pointed at it.
struct Misbehaving {
    target: Arc<Target>,
    shared: Arc<Shared>,
    notes: UnboundedReceiver<Note>,
    callback: String,
    task: JoinHandle<()>,
}

impl Misbehaving {
    /// Starts the receiver (answering at once until told otherwise) for calls on `server`.
    async fn start(server: &str) -> anyhow::Result<Self> {
        let (tx, notes) = unbounded_channel();
        let shared = Arc::new(Shared {
            mode: watch::Sender::new(Mode::Answer),
            in_flight: Arc::new(AtomicUsize::new(0)),
            posts: AtomicU64::new(0),
            tx,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let callback = format!("http://{}/api/calls", listener.local_addr()?);
        let app = axum::Router::new()
            .route("/api/calls", axum::routing::post(misbehave))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Misbehaving {
            target: Target::new(server)?,
            shared,
            notes,
            callback,
            task,
        })
    }

    fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Waits until the in-flight count has stayed put for a while (at most [`SETTLE_LIMIT`]).
    async fn settle(&self) -> usize {
        let limit = Instant::now() + SETTLE_LIMIT;
        let mut last = (self.in_flight(), Instant::now());
        while Instant::now() < limit {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.in_flight();
            if now != last.0 {
                last = (now, Instant::now());
            } else if now > 0 && last.1.elapsed() >= SETTLED_AFTER {
                break;
            }
        }
        self.in_flight()
    }
}

/// Creates calls for the misbehaving side until told to stop; their ids.
struct Creator {
    target: Arc<Target>,
    token: Arc<String>,
    body: Arc<Vec<u8>>,
    ids: Vec<String>,
    failed: u64,
    first_failure: Option<String>,
}

impl Creator {
    async fn create(&mut self, n: usize) {
        let mut tasks = Vec::with_capacity(n);
        let limit = Arc::new(Semaphore::new(32));
        for _ in 0..n {
            let (target, token, body, limit) = (
                self.target.clone(),
                self.token.clone(),
                self.body.clone(),
                limit.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let _permit = limit.acquire_owned().await;
                target.create(&token, &body).await
            }));
        }
        for t in tasks {
            let result = t.await.unwrap_or_else(|e| Err(e.to_string()));
            self.note(result);
        }
    }

    fn note(&mut self, result: Result<String, String>) {
        match result {
            Ok(id) => self.ids.push(id),
            Err(e) => {
                self.failed += 1;
                self.first_failure.get_or_insert(e);
            }
        }
    }

    /// One create per `period` until `stop` turns true; how many succeeded.
    async fn steadily(mut self, period: Duration, mut stop: watch::Receiver<bool>) -> Self {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stopped(&mut stop) => break,
                _ = tick.tick() => {
                    let result = self.target.create(&self.token, &self.body).await;
                    self.note(result);
                }
            }
        }
        self
    }

    /// Deletes every call created, 32 at a time; the ids deleted.
    async fn delete_all(&mut self) -> Vec<String> {
        let limit = Arc::new(Semaphore::new(32));
        let mut tasks = vec![];
        for id in std::mem::take(&mut self.ids) {
            let (target, token, limit) = (self.target.clone(), self.token.clone(), limit.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = limit.acquire_owned().await;
                target
                    .call_request(reqwest::Method::DELETE, &token, &id, 204)
                    .await
                    .map(|()| id)
            }));
        }
        let mut deleted = vec![];
        for t in tasks {
            match t.await.unwrap_or_else(|e| Err(e.to_string())) {
                Ok(id) => deleted.push(id),
                Err(e) => {
                    self.failed += 1;
                    self.first_failure.get_or_insert(e);
                }
            }
        }
        deleted
    }
}

/// Resolves once `stop` is true (without keeping its guard: the future stays `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Samples the in-flight count until `stop` turns true: (fewest, mean, most).
async fn sample(count: Arc<AtomicUsize>, mut stop: watch::Receiver<bool>) -> (usize, f64, usize) {
    let (mut lo, mut sum, mut n, mut hi) = (usize::MAX, 0, 0, 0);
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            _ = tick.tick() => {
                let held = count.load(Ordering::Relaxed);
                (lo, hi) = (lo.min(held), hi.max(held));
                (sum, n) = (sum + held, n + 1);
            }
        }
    }
    (lo.min(hi), sum as f64 / n.max(1) as f64, hi)
}

/// One run of app A's bots (`a`, not started yet) beside `variant`: load the misbehaving
/// receiver, run, drain.
async fn beside(
    side: &mut Misbehaving,
    variant: Variant,
    hanging_calls: usize,
    a: impl Future<Output = anyhow::Result<PhaseRun>>,
) -> anyhow::Result<(PhaseRun, Load)> {
    let app = variant.app();
    let mut creator = Creator {
        target: side.target.clone(),
        token: Arc::new(side.target.token_for(app).await?),
        body: Arc::new(Target::create_body(&side.callback)),
        ids: vec![],
        failed: 0,
        first_failure: None,
    };
    side.shared.mode.send_replace(variant.mode());
    creator.create(hanging_calls).await;
    let mut load = Load {
        calls_before: creator.ids.len() as u64,
        in_flight_at_start: side.settle().await,
        ..Load::default()
    };

    let (stop_tx, stop) = watch::channel(false);
    let period = REFILL_PERIOD / hanging_calls.max(1) as u32;
    let steady = tokio::spawn(creator.steadily(period, stop.clone()));
    let sampler = tokio::spawn(sample(side.shared.in_flight.clone(), stop));
    let posts0 = side.shared.posts.load(Ordering::Relaxed);
    let run = a.await;
    load.posts_during = side.shared.posts.load(Ordering::Relaxed) - posts0;
    stop_tx.send_replace(true);
    let mut creator = steady.await?;
    (load.in_flight_min, load.in_flight_mean, load.in_flight_max) = sampler.await?;
    load.calls_during = creator.ids.len() as u64 - load.calls_before;

    // Drain: answer everything at once, end the calls, wait for each one's last notification.
    let started = Instant::now();
    side.shared.mode.send_replace(Mode::Answer);
    let mut waiting: HashSet<String> = creator.delete_all().await.into_iter().collect();
    let deadline = started + DRAIN_LIMIT;
    while !waiting.is_empty() {
        match tokio::time::timeout_at(deadline, side.notes.recv()).await {
            Ok(Some(note)) => {
                if note.state == "terminated" {
                    waiting.remove(&note.call_id);
                }
            }
            _ => break,
        }
    }
    // Anything left in the channel is from this run.
    while side.notes.try_recv().is_ok() {}
    load.undrained = waiting.len();
    load.drained_in = waiting.is_empty().then(|| started.elapsed());
    load.failed_requests = creator.failed;
    load.first_failure = creator.first_failure;
    Ok((run?, load))
}

/// Runs `rounds` rounds of (baseline, variant) for each variant, on one server.
pub async fn run(
    server: &Server,
    bots: usize,
    duration: Duration,
    rate: f64,
    hanging_calls: usize,
    rounds: usize,
    variants: &[Variant],
) -> anyhow::Result<IsolationResult> {
    let mut side = Misbehaving::start(&server.url).await?;
    // A fresh server's first run is slower (empty caches, the store's first pages): warm it up
    // unmeasured, so that the first baseline is not the slowest run for that reason alone.
    let warm_up = (duration / 2).min(WARM_UP_LIMIT);
    run_phase(
        server,
        bots,
        Workload::Lifecycle,
        Some(warm_up),
        None,
        Some(rate),
    )
    .await?;
    let a = || {
        run_phase(
            server,
            bots,
            Workload::Lifecycle,
            Some(duration),
            None,
            Some(rate),
        )
    };
    let mut runs = vec![];
    for round in 1..=rounds {
        for &variant in variants {
            let base = a().await?;
            crate::describe(&format!("isolation {round}: A alone"), &base);
            runs.push(Run {
                variant: None,
                a: base,
                load: None,
            });
            let (run, load) = beside(&mut side, variant, hanging_calls, a()).await?;
            crate::describe(
                &format!("isolation {round}: A while {}", variant.describe()),
                &run,
            );
            eprintln!(
                "isolation {round}: {} POSTs held at the start, during the run {:.1} on average ({}–{}); {} + {} calls; drained {}",
                load.in_flight_at_start,
                load.in_flight_mean,
                load.in_flight_min,
                load.in_flight_max,
                load.calls_before,
                load.calls_during,
                load.drained_in.map_or_else(
                    || format!("NOT within {DRAIN_LIMIT:?} ({} calls left)", load.undrained),
                    |d| format!("in {:.1} s", d.as_secs_f64())
                )
            );
            runs.push(Run {
                variant: Some(variant),
                a: run,
                load: Some(load),
            });
        }
        if variants.is_empty() {
            let base = a().await?;
            crate::describe(&format!("isolation {round}: A alone"), &base);
            runs.push(Run {
                variant: None,
                a: base,
                load: None,
            });
        }
    }
    side.task.abort();
    Ok(IsolationResult {
        hanging_calls,
        runs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_hanging_receiver_holds_a_post_until_the_client_gives_up() {
        let side = Misbehaving::start("http://127.0.0.1:9").await.unwrap();
        side.shared.mode.send_replace(Mode::Hang);
        let client = reqwest::Client::new();
        let post = client
            .post(&side.callback)
            .timeout(Duration::from_millis(300))
            .body("{}")
            .send();
        let (result, held) = tokio::join!(post, async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            side.in_flight()
        });
        assert!(result.unwrap_err().is_timeout());
        assert_eq!(held, 1);
        // The client closed the connection: the handler is dropped, the POST no longer counted.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(side.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_held_post_is_answered_once_the_receiver_answers_again() {
        let side = Misbehaving::start("http://127.0.0.1:9").await.unwrap();
        side.shared
            .mode
            .send_replace(Mode::Delay(Duration::from_secs(30)));
        let post = reqwest::Client::new()
            .post(&side.callback)
            .timeout(Duration::from_secs(2))
            .body("{}")
            .send();
        let (result, ()) = tokio::join!(post, async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert_eq!(side.in_flight(), 1);
            side.shared.mode.send_replace(Mode::Answer);
        });
        assert_eq!(result.unwrap().status(), 202);
        assert_eq!(side.in_flight(), 0);
        assert_eq!(side.shared.posts.load(Ordering::Relaxed), 1);
    }
}
