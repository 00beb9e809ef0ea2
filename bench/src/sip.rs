//! The `sip` phase: real calls through Switchboard's SIP side with sipp at the far end, at
//! rising rates, and in the same run sipp calling sipp directly, the ceiling of this machine's
//! SIP harness (`docs/BENCHMARKS.md`, "Calls over SIP").
//!
//! - ceiling: `sipp -sn uac` → `sipp -sn uas`, each call held `hold`;
//! - outgoing: bots create calls to a phone number the trunk (`sipp -sn uas`) carries, wait for
//!   `established`, hold, hang up, wait for `terminated`;
//! - incoming: `sipp -sn uac` calls a number of app A; a bot answers each incoming call; sipp
//!   hangs up after `hold`.
//!
//! A step is clean with no failed call, no retransmission (either side of sipp) and no
//! notification lost. Each kind rises until its first step that is not clean.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::bots::{Bot, Gate, Tally, Target, Workload, start_receiver};
use crate::server::{self, Server};
use crate::stats::{Samples, Summary};

/// The phone number the trunk carries.
const PHONE: &str = "+15557000";
/// App A's number.
const APP_NUMBER: &str = "+15550123";

/// One rate of one kind.
#[derive(Clone, Debug, Default)]
pub struct Step {
    pub rate: f64,
    pub secs: f64,
    /// Calls that completed.
    pub calls: u64,
    pub failed: u64,
    pub retransmissions: u64,
    pub lost_notes: u64,
    /// Call setup: INVITE → 200 for the sipp caller (incoming, ceiling), POST → `established`
    /// notification for the bots (outgoing).
    pub setup: Summary,
    /// Server CPU per completed call, µs.
    pub cpu_per_call_us: Option<f64>,
    pub first_failure: Option<String>,
}

impl Step {
    pub fn clean(&self) -> bool {
        self.calls > 0 && self.failed == 0 && self.retransmissions == 0 && self.lost_notes == 0
    }

    /// Completed calls per second.
    pub fn achieved(&self) -> f64 {
        self.calls as f64 / self.secs.max(0.001)
    }
}

#[derive(Clone, Debug, Default)]
pub struct SipResult {
    pub hold_ms: u64,
    pub ceiling: Vec<Step>,
    pub outgoing: Vec<Step>,
    pub incoming: Vec<Step>,
}

/// The highest rate of a rising series that was clean, with every rate below it.
pub fn sustained(steps: &[Step]) -> Option<&Step> {
    steps.iter().take_while(|s| s.clean()).last()
}

/// Runs the three kinds at `rates` (ascending), `secs` each, calls held `hold_ms`.
pub async fn run(
    binary: &Path,
    dir: &Path,
    store: &str,
    rates: &[f64],
    secs: f64,
    hold_ms: u64,
) -> anyhow::Result<SipResult> {
    let mut r = SipResult {
        hold_ms,
        ..SipResult::default()
    };
    r.ceiling = rise("sipp → sipp", rates, |i, rate| {
        let dir = dir.join(format!("ceiling-{i}"));
        async move { ceiling(&dir, rate, secs, hold_ms).await }
    })
    .await?;
    r.outgoing = rise("bots → Switchboard → sipp", rates, |i, rate| {
        let dir = dir.join(format!("out-{i}"));
        async move { outgoing(binary, &dir, store, rate, secs, hold_ms).await }
    })
    .await?;
    r.incoming = rise("sipp → Switchboard → bots", rates, |i, rate| {
        let dir = dir.join(format!("in-{i}"));
        async move { incoming(binary, &dir, store, rate, secs, hold_ms).await }
    })
    .await?;
    Ok(r)
}

/// Runs `step` at each rate in turn until one is not clean (that one included).
async fn rise<F, Fut>(kind: &str, rates: &[f64], mut step: F) -> anyhow::Result<Vec<Step>>
where
    F: FnMut(usize, f64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Step>>,
{
    let mut steps = vec![];
    for (i, &rate) in rates.iter().enumerate() {
        let s = step(i, rate).await?;
        report(kind, &s);
        let clean = s.clean();
        steps.push(s);
        if !clean {
            break;
        }
    }
    Ok(steps)
}

fn report(kind: &str, s: &Step) {
    eprintln!(
        "sip: {kind} at {}/s: {} calls ({:.0}/s), {} failed, {} retransmissions, {} notifications lost, setup p99 {:.1} ms{}",
        s.rate,
        s.calls,
        s.achieved(),
        s.failed,
        s.retransmissions,
        s.lost_notes,
        s.setup.p99,
        s.first_failure
            .as_deref()
            .map(|f| format!("; first failure: {f}"))
            .unwrap_or_default()
    );
}

/// A free UDP port on loopback whose next three are free too (sipp binds its media port and
/// the one two above it), below Linux's ephemeral range, where the servers' own sockets land.
pub fn free_ports() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..2000 {
        let k = NEXT.fetch_add(4, Ordering::Relaxed);
        let base = (20_000 + (start.wrapping_add(k) % 12_000)) as u16 & !1;
        let held: Vec<_> = (0..4)
            .map_while(|i| std::net::UdpSocket::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == 4 {
            return base;
        }
    }
    panic!("no free ports on 127.0.0.1");
}

/// A sipp process of the run.
struct Sipp {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Sipp {
    /// Starts sipp in `dir` with `args`, on its own ports, writing its statistics every second;
    /// tries other ports if it cannot bind (another process took one meanwhile).
    async fn start(dir: &Path, name: &str, args: &[String]) -> anyhow::Result<Sipp> {
        for _ in 0..3 {
            let mut sipp = Self::spawn(dir, name, args)?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            match sipp.child.try_wait()? {
                None => return Ok(sipp),
                // A caller with few calls may already be done.
                Some(s) if s.success() => return Ok(sipp),
                Some(s) => eprintln!(
                    "sip: sipp {name} exited at once ({s}): {}",
                    errors(&sipp.dir)
                ),
            }
        }
        anyhow::bail!(
            "sipp {name} would not start; see {}",
            dir.join(name).display()
        )
    }

    fn spawn(dir: &Path, name: &str, args: &[String]) -> anyhow::Result<Sipp> {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let (port, media, control) = (free_ports(), free_ports(), free_ports());
        let child = Command::new("sipp")
            .args(args)
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-mp", &media.to_string()])
            .args(["-ci", "127.0.0.1", "-cp", &control.to_string()])
            .args(["-nostdin", "-trace_stat", "-fd", "1", "-stf", "stat.csv"])
            .args(["-trace_err", "-error_file", "errors.log"])
            .env("TERM", "dumb")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting sipp (Debian package sip-tester)")?;
        Ok(Sipp { child, dir, port })
    }

    /// Waits for it to exit; `true` if it passed.
    async fn wait(&mut self, limit: Duration) -> bool {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(Ok(s)) => s.success(),
            _ => {
                let _ = self.child.kill().await;
                false
            }
        }
    }

    /// Stops a sipp that runs until told (a UAS), after its statistics caught up.
    async fn stop(mut self) -> SippStats {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let _ = self.child.kill().await;
        self.stats()
    }

    fn stats(&self) -> SippStats {
        SippStats::read(&self.dir.join("stat.csv"))
    }

    /// The INVITE → 200 times its `rtd` measured (`-trace_rtt`).
    fn response_times(&self) -> Samples {
        let mut out = Samples::default();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().ends_with("_rtt.csv") {
                continue;
            }
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            for line in text.lines().skip(1) {
                if let Some(ms) = line
                    .split(';')
                    .nth(1)
                    .and_then(|v| v.trim().parse::<f64>().ok())
                {
                    out.push(Duration::from_secs_f64(ms / 1000.0));
                }
            }
        }
        out
    }
}

/// What sipp's statistics file says at its last line.
#[derive(Clone, Copy, Debug, Default)]
struct SippStats {
    successful: u64,
    failed: u64,
    retransmissions: u64,
}

impl SippStats {
    fn read(path: &Path) -> SippStats {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let Some(header) = lines.next() else {
            return SippStats::default();
        };
        let Some(last) = lines.next_back() else {
            return SippStats::default();
        };
        let names: Vec<&str> = header.split(';').collect();
        let values: Vec<&str> = last.split(';').collect();
        let get = |name: &str| {
            names
                .iter()
                .position(|n| *n == name)
                .and_then(|i| values.get(i)?.trim().parse().ok())
                .unwrap_or(0)
        };
        SippStats {
            successful: get("SuccessfulCall(C)"),
            failed: get("FailedCall(C)"),
            retransmissions: get("Retransmissions(C)"),
        }
    }
}

fn uas_args() -> Vec<String> {
    ["-sn", "uas"].map(String::from).to_vec()
}

/// A caller's arguments: `rate` calls per second for `secs`, each held `hold_ms`.
fn uac_args(to: &str, number: &str, rate: f64, secs: f64, hold_ms: u64) -> Vec<String> {
    let total = (rate * secs).round().max(1.0) as u64;
    let limit = (rate * (hold_ms as f64 / 1000.0 + 5.0)).ceil() as u64 + 10;
    [
        "-sn",
        "uac",
        to,
        "-s",
        number,
        "-r",
        &rate.to_string(),
        "-m",
        &total.to_string(),
        "-d",
        &hold_ms.to_string(),
        "-l",
        &limit.to_string(),
        "-trace_rtt",
        "-rtt_freq",
        "1",
    ]
    .map(String::from)
    .to_vec()
}

async fn ceiling(dir: &Path, rate: f64, secs: f64, hold_ms: u64) -> anyhow::Result<Step> {
    let uas = Sipp::start(dir, "uas", &uas_args()).await?;
    let to = format!("127.0.0.1:{}", uas.port);
    let mut uac = Sipp::start(dir, "uac", &uac_args(&to, PHONE, rate, secs, hold_ms)).await?;
    let t0 = Instant::now();
    let passed = uac.wait(limit(secs, hold_ms)).await;
    let elapsed = t0.elapsed().as_secs_f64() - hold_ms as f64 / 1000.0;
    let (caller, callee) = (uac.stats(), uas.stop().await);
    Ok(Step {
        rate,
        secs: elapsed.max(secs),
        calls: caller.successful,
        failed: caller.failed + u64::from(!passed && caller.failed == 0),
        retransmissions: caller.retransmissions + callee.retransmissions,
        lost_notes: 0,
        setup: uac.response_times().summary(),
        cpu_per_call_us: None,
        first_failure: (!passed).then(|| errors(&uac.dir)),
    })
}

fn limit(secs: f64, hold_ms: u64) -> Duration {
    Duration::from_secs_f64(secs + hold_ms as f64 / 1000.0 + 30.0)
}

fn errors(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("errors.log")).unwrap_or_default();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("sipp failed")
        .to_string()
}

fn sip_config(trunk: Option<u16>, incoming: Option<&str>) -> String {
    let mut c = server::config_toml_with(incoming);
    c += "\n[sip]\nlisten = \"127.0.0.1:0\"\n";
    if let Some(p) = trunk {
        c += &format!("\n[[sip.trunks]]\nname = \"sipp\"\naddress = \"127.0.0.1:{p}\"\n");
    }
    c += &format!(
        "\n[[sip.numbers]]\nnumber = \"{APP_NUMBER}\"\napp_id = \"{}\"\n",
        server::APP_A.id
    );
    c
}

async fn outgoing(
    binary: &Path,
    dir: &Path,
    store: &str,
    rate: f64,
    secs: f64,
    hold_ms: u64,
) -> anyhow::Result<Step> {
    let uas = Sipp::start(dir, "uas", &uas_args()).await?;
    let config = sip_config(Some(uas.port), None);
    let server =
        Server::switchboard_with(binary, &dir.join("server"), store, false, &config).await?;
    let target = Target::new(&server.url)?;
    // Enough bots that each has a call in hand at most every (hold + setup).
    let bots = ((rate * (hold_ms as f64 / 1000.0 + 1.0)).ceil() as usize).max(4);
    let mut ready = vec![];
    for _ in 0..bots {
        let mut bot = Bot::new(target.clone(), true).await?;
        bot.call_phone(PHONE);
        ready.push(bot);
    }
    let cpu0 = server.cpu_seconds();
    let gate = Gate::new(Some(Duration::from_secs_f64(secs)), None, Some(rate));
    let t0 = Instant::now();
    let runs: Vec<_> = ready
        .into_iter()
        .map(|b| tokio::spawn(b.run(Workload::Held { hold_ms }, gate.clone())))
        .collect();
    let mut tally = Tally::default();
    for r in runs {
        tally.merge(r.await?.0);
    }
    let elapsed = t0.elapsed().as_secs_f64() - hold_ms as f64 / 1000.0;
    let cpu = server.cpu_seconds().zip(cpu0).map(|(a, b)| a - b);
    let callee = uas.stop().await;
    server.stop().await;
    let calls = tally.iterations;
    Ok(Step {
        rate,
        secs: elapsed.max(secs),
        calls,
        failed: tally.failed_requests + callee.failed,
        retransmissions: callee.retransmissions,
        lost_notes: tally.lost_notes,
        setup: tally.notes[1].summary(),
        cpu_per_call_us: cpu.filter(|_| calls > 0).map(|c| c * 1e6 / calls as f64),
        first_failure: tally.first_failure.clone(),
    })
}

async fn incoming(
    binary: &Path,
    dir: &Path,
    store: &str,
    rate: f64,
    secs: f64,
    hold_ms: u64,
) -> anyhow::Result<Step> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (callback, receiver) = start_receiver(tx).await?;
    let config = sip_config(None, Some(&callback));
    let server =
        Server::switchboard_with(binary, &dir.join("server"), store, false, &config).await?;
    let sip = server
        .sip
        .clone()
        .context("the server did not say where SIP listens")?;
    let target = Target::new(&server.url)?;
    let token = Arc::new(target.token().await?);
    // The bot: answers every incoming call, and keeps what it was told of each.
    let answering = {
        let (target, token, callback) = (target.clone(), token.clone(), callback.clone());
        tokio::spawn(async move {
            let mut seen: std::collections::HashMap<String, Vec<String>> = Default::default();
            let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
            while let Some(note) = rx.recv().await {
                if note.state == "incoming" {
                    let (target, token, callback, failures) = (
                        target.clone(),
                        token.clone(),
                        callback.clone(),
                        failures.clone(),
                    );
                    let id = note.call_id.clone();
                    tokio::spawn(async move {
                        let body = json!({
                            "callbackUri": callback,
                            "acceptedModalities": ["audio"],
                            "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"},
                        });
                        let r = target
                            .client
                            .post(format!(
                                "{}/v1.0/communications/calls/{id}/answer",
                                target.base
                            ))
                            .bearer_auth(token.as_str())
                            .json(&body)
                            .send()
                            .await;
                        if !r.is_ok_and(|r| r.status().as_u16() == 202) {
                            failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    });
                }
                seen.entry(note.call_id).or_default().push(note.state);
            }
            (seen, failures.load(std::sync::atomic::Ordering::Relaxed))
        })
    };
    let cpu0 = server.cpu_seconds();
    let mut uac = Sipp::start(dir, "uac", &uac_args(&sip, APP_NUMBER, rate, secs, hold_ms)).await?;
    let t0 = Instant::now();
    let passed = uac.wait(limit(secs, hold_ms)).await;
    let elapsed = t0.elapsed().as_secs_f64() - hold_ms as f64 / 1000.0;
    // Late notifications.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = server.cpu_seconds().zip(cpu0).map(|(a, b)| a - b);
    server.stop().await;
    receiver.abort();
    let (seen, answer_failures) = answering.await?;
    let want = ["incoming", "establishing", "established", "terminated"];
    let lost = seen
        .values()
        .map(|states| {
            want.iter()
                .filter(|w| !states.iter().any(|s| s == *w))
                .count() as u64
        })
        .sum();
    let caller = uac.stats();
    Ok(Step {
        rate,
        secs: elapsed.max(secs),
        calls: caller.successful,
        failed: caller.failed + answer_failures + u64::from(!passed && caller.failed == 0),
        retransmissions: caller.retransmissions,
        lost_notes: lost,
        setup: uac.response_times().summary(),
        cpu_per_call_us: cpu
            .filter(|_| caller.successful > 0)
            .map(|c| c * 1e6 / caller.successful as f64),
        first_failure: (!passed).then(|| errors(&uac.dir)),
    })
}
