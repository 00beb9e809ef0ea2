//! Telemetry: what the server tells its operator about itself.
//!
//! - The log: a `tracing` subscriber writing to standard error, filtered by `SWITCHBOARD_LOG` (an
//!   `EnvFilter` directive such as `debug` or `switchboard::store=debug`; `info` when unset or
//!   unreadable), as text (`pretty`: colours only on a terminal) or one JSON object per line. At
//!   `info` it has one line per Graph request and one per delivery attempt (`http::middleware`,
//!   `delivery`); never a secret or a token.
//! - Metrics ([`Metrics`]): Prometheus series, one registry per server (no global state), served
//!   at `GET /metrics`.

use std::io::IsTerminal;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

/// The log filter without `SWITCHBOARD_LOG`: the SIP stack logs every message it sends at
/// `info` (digest credentials included), so it says only what goes wrong.
pub const DEFAULT_FILTER: &str = "info,rsipstack=warn";

/// The environment variable that holds the log filter.
pub const LOG_ENV: &str = "SWITCHBOARD_LOG";

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text, with colours only when standard error is a terminal.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Installs the log subscriber for the whole process (`default_filter` unless `SWITCHBOARD_LOG`
/// says otherwise). Call it once, first thing in `main`.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new(default_filter));
    // A log nobody reads any more (a closed pipe) is not worth a panic: without this the
    // subscriber reports a failed write with `eprintln!`, which panics on that same pipe.
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .with_env_filter(filter);
    match format {
        LogFormat::Pretty => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The server's metrics. Cheap to update from any task; [`Metrics::render`] writes the
/// Prometheus text format.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram>,
    live_calls: Gauge,
    notifications: Family<OutcomeLabels, Counter>,
    delivery_seconds: Histogram,
    commit_seconds: Histogram,
    commit_batch: Histogram,
}

/// Bucket bounds in seconds, from 0.5 ms to about 16 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16)
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("switchboard");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route (the parsed Graph route, or the router's path), method and status",
            requests.clone(),
        );
        let request_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its answer, by route",
            request_seconds.clone(),
        );
        let live_calls = Gauge::default();
        registry.register("live_calls", "Calls not yet terminated", live_calls.clone());
        let notifications = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notification delivery attempts by outcome: delivered, retried (failed, tried again later) or dead (failed for good)",
            notifications.clone(),
        );
        let delivery_seconds = Histogram::new(latency_buckets());
        registry.register(
            "delivery_duration_seconds",
            "Time a notification POST took, answered or not",
            delivery_seconds.clone(),
        );
        let commit_seconds = Histogram::new(latency_buckets());
        registry.register(
            "commit_duration_seconds",
            "Time one store transaction took (changes that queued up share one)",
            commit_seconds.clone(),
        );
        let commit_batch = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 10),
        );
        registry.register(
            "commit_batch_size",
            "Changes committed in one store transaction",
            commit_batch.clone(),
        );
        Metrics {
            registry,
            requests,
            request_seconds,
            live_calls,
            notifications,
            delivery_seconds,
            commit_seconds,
            commit_batch,
        }
    }
}

impl Metrics {
    /// A request answered.
    pub fn request(&self, route: &str, method: &str, status: u16, took: Duration) {
        // Clients choose the method's text: only the known ones get a series of their own.
        let method = match method {
            "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => method,
            _ => "other",
        };
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// A notification's attempt ended so (`delivered`, `retried` or `dead`).
    pub fn notification(&self, outcome: &'static str) {
        self.notifications
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// A notification POST took this long.
    pub fn delivery(&self, took: Duration) {
        self.delivery_seconds.observe(took.as_secs_f64());
    }

    /// A store transaction of `changes` changes took this long.
    pub fn commit(&self, took: Duration, changes: usize) {
        self.commit_seconds.observe(took.as_secs_f64());
        self.commit_batch.observe(changes as f64);
    }

    /// The Prometheus text format, with `live_calls` as given.
    pub fn render(&self, live_calls: usize) -> String {
        self.live_calls.set(live_calls as i64);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
