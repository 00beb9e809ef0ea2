//! Memory at scale: a fresh Switchboard on a virtual clock (so no keep-alive is ever due) holds
//! more and more established calls; its resident set is read at each step and turned into bytes
//! per call: (RSS at the step − RSS before the first call) / calls held.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc::unbounded_channel;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::bots::{Target, start_receiver};
use crate::server::Server;

/// RSS with this many established calls held open.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    pub calls: u64,
    pub rss: u64,
    pub bytes_per_call: f64,
    /// Creates per second while getting here.
    pub create_rate: f64,
}

#[derive(Debug, Default)]
pub struct MemoryResult {
    pub rss_before: u64,
    pub steps: Vec<Step>,
    pub peak_rss: u64,
    pub failed_requests: u64,
    pub lost_notes: u64,
}

/// How long to wait for the last `established` notification of a step.
const SETTLE: Duration = Duration::from_secs(300);

/// Creates calls until `steps[i]` are established, for each step in turn, reading the server's
/// RSS at each. `concurrency` create requests are in flight at once.
pub async fn run(
    server: &Server,
    steps: &[u64],
    concurrency: usize,
) -> anyhow::Result<MemoryResult> {
    let target = Target::new(&server.url)?;
    let token = Arc::new(target.token().await?);
    let (tx, mut rx) = unbounded_channel();
    let (callback, receiver) = start_receiver(tx).await?;
    let body = Arc::new(Target::create_body(&callback));

    // Counts distinct calls that reached `established`.
    let (established_tx, established_rx) = watch::channel(0u64);
    let counter = tokio::spawn(async move {
        let mut seen = HashSet::new();
        while let Some(note) = rx.recv().await {
            if note.state == "established" && seen.insert(note.call_id) {
                established_tx.send_replace(seen.len() as u64);
            }
        }
    });

    // Let the server settle after start, then read the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut result = MemoryResult {
        rss_before: server.vm_bytes("VmRSS").unwrap_or(0),
        ..MemoryResult::default()
    };
    let created = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    for &goal in steps {
        let started = Instant::now();
        let from = created.load(Ordering::Relaxed);
        let mut tasks = vec![];
        for _ in 0..concurrency {
            let (target, token, body) = (target.clone(), token.clone(), body.clone());
            let (created, failed) = (created.clone(), failed.clone());
            tasks.push(tokio::spawn(async move {
                while created.fetch_add(1, Ordering::Relaxed) < goal {
                    if target.create(&token, &body).await.is_err() {
                        created.fetch_sub(1, Ordering::Relaxed);
                        if failed.fetch_add(1, Ordering::Relaxed) > 100 {
                            return;
                        }
                    }
                }
                created.fetch_sub(1, Ordering::Relaxed);
            }));
        }
        for t in tasks {
            t.await?;
        }
        let total = created.load(Ordering::Relaxed);
        let mut rx = established_rx.clone();
        let reached = tokio::time::timeout(SETTLE, rx.wait_for(|n| *n >= total)).await;
        let create_rate = (total - from) as f64 / started.elapsed().as_secs_f64();
        if reached.is_err() {
            result.lost_notes += total - *established_rx.borrow();
            eprintln!(
                "memory: only {} of {total} calls were established after {SETTLE:?}",
                *established_rx.borrow()
            );
        }
        // Let in-flight deliveries and their commits finish before reading.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = server.vm_bytes("VmRSS").unwrap_or(0);
        let step = Step {
            calls: total,
            rss,
            bytes_per_call: rss.saturating_sub(result.rss_before) as f64 / total.max(1) as f64,
            create_rate,
        };
        eprintln!(
            "memory: {} calls established, RSS {:.1} MiB, {:.0} bytes per call ({:.0} creates/s)",
            step.calls,
            rss as f64 / 1048576.0,
            step.bytes_per_call,
            create_rate
        );
        result.steps.push(step);
    }
    result.peak_rss = server.vm_bytes("VmHWM").unwrap_or(0);
    result.failed_requests = failed.load(Ordering::Relaxed);
    receiver.abort();
    counter.abort();
    Ok(result)
}

/// Starts the virtual-clock server for [`run`] in `dir`.
pub async fn start_server(binary: &Path, dir: &Path, store: &str) -> anyhow::Result<Server> {
    Server::switchboard(binary, dir, store, true).await
}
