//! The `media` phase: how many calls can stream a prompt at once. N calls over SIP to a sipp
//! trunk whose SDP answer names a socket of the bench's own, each playing a long prompt; the
//! bench reads every stream for a few seconds and reports, per N, the packets' timing jitter
//! (how far each packet's arrival strays from 20 ms after the one before it, p99), packets lost
//! (gaps in sequence numbers) and the server's CPU per streaming call, beside sipp's own CPU in
//! the same window (it answers the calls and nothing else). N rises until jitter p99 passes
//! 2 ms or a packet is lost (Switchboard's figures alone decide).
//!
//! The baseline, at each N in the same run: sipp streaming N RTP streams itself
//! (`tests/sip/scenarios/uac_stream.xml`, N calls to `uas_answer_to.xml`, which names a socket
//! of the bench bound as Switchboard's is), read by the same `listen` for the same window. That is what a real RTP peer's own
//! pacing gives on this machine at the same N.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::net::UdpSocket;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::bots::{Target, start_receiver};
use crate::server::{self, Server};
use crate::stats::{Samples, Summary, cpu_seconds};

/// One N.
#[derive(Clone, Debug, Default)]
pub struct Step {
    pub calls: usize,
    /// Calls that streamed (some packet arrived).
    pub streaming: usize,
    pub packets: u64,
    pub lost: u64,
    /// |arrival gap − 20 ms|, ms.
    pub jitter: Summary,
    /// Server CPU per streaming call, in % of a core.
    pub server_core_pct_per_call: Option<f64>,
    /// sipp's CPU in the same window, % of a core (it only answered).
    pub sipp_core_pct: Option<f64>,
    /// sipp → sipp at the same N, read by the same `listen` (`None` if it could not run).
    pub baseline: Option<Baseline>,
}

/// sipp streaming N RTP streams (`uac_stream.xml`) to the bench's socket, no Switchboard.
#[derive(Clone, Debug, Default)]
pub struct Baseline {
    /// Calls whose stream arrived in the window (N is asked; fewer is reported as it is).
    pub streaming: usize,
    pub packets: u64,
    pub lost: u64,
    /// |arrival gap − 20 ms|, ms.
    pub jitter: Summary,
    /// The streaming sipp's CPU in the window, % of a core.
    pub sipp_core_pct: Option<f64>,
}

impl Step {
    /// Switchboard's streams alone: the baseline does not enter it.
    pub fn clean(&self) -> bool {
        self.streaming == self.calls && self.lost == 0 && self.jitter.p99 <= 2.0
    }

    /// Switchboard's jitter p50 and p99 over sipp's at the same N (`None` without a baseline or
    /// with a zero baseline figure).
    pub fn ratios(&self) -> Option<(Option<f64>, Option<f64>)> {
        let b = self.baseline.as_ref()?;
        let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        Some((
            ratio(self.jitter.p50, b.jitter.p50),
            ratio(self.jitter.p99, b.jitter.p99),
        ))
    }
}

#[derive(Clone, Debug, Default)]
pub struct MediaResult {
    pub secs: f64,
    pub steps: Vec<Step>,
}

/// The largest N that streamed clean (and every N below it).
pub fn sustained(steps: &[Step]) -> Option<&Step> {
    steps.iter().take_while(|s| s.clean()).last()
}

pub async fn run(
    binary: &Path,
    dir: &Path,
    store: &str,
    counts: &[usize],
    secs: f64,
) -> anyhow::Result<MediaResult> {
    let mut r = MediaResult {
        secs,
        ..MediaResult::default()
    };
    for (i, &n) in counts.iter().enumerate() {
        let mut step = one(binary, &dir.join(format!("media-{i}")), store, n, secs).await?;
        eprintln!(
            "media: {n} calls: {} streaming, {} packets, {} lost, jitter p50/p99/max {:.2}/{:.2}/{:.2} ms, server {} % of a core per call",
            step.streaming,
            step.packets,
            step.lost,
            step.jitter.p50,
            step.jitter.p99,
            step.jitter.max,
            step.server_core_pct_per_call
                .map_or("–".into(), |c| format!("{c:.2}"))
        );
        match baseline(&dir.join(format!("media-{i}/baseline")), n, secs).await {
            Ok(b) => {
                eprintln!(
                    "media: baseline sipp → sipp, {n} calls: {} streaming, {} packets, {} lost, jitter p50/p99/max {:.2}/{:.2}/{:.2} ms, sipp {} % of a core",
                    b.streaming,
                    b.packets,
                    b.lost,
                    b.jitter.p50,
                    b.jitter.p99,
                    b.jitter.max,
                    b.sipp_core_pct.map_or("–".into(), |c| format!("{c:.1}"))
                );
                step.baseline = Some(b);
            }
            Err(e) => eprintln!("media: baseline sipp → sipp, {n} calls: failed: {e:#}"),
        }
        let clean = step.clean();
        r.steps.push(step);
        if !clean {
            break;
        }
    }
    Ok(r)
}

/// A 16 kHz mono WAV of `secs` of a 440 Hz tone.
fn prompt_wav(secs: u32) -> Vec<u8> {
    let n = 16_000 * secs;
    let data: Vec<u8> = (0..n)
        .flat_map(|i| {
            let v = 8000.0 * (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / 16_000.0).sin();
            (v as i16).to_le_bytes()
        })
        .collect();
    switchboard::media::wav::mono_wav(16_000, &data)
}

async fn one(binary: &Path, dir: &Path, store: &str, n: usize, secs: f64) -> anyhow::Result<Step> {
    std::fs::create_dir_all(dir)?;
    let rtp = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let rtp_port = rtp.local_addr()?.port();
    // The trunk: answers every call with an SDP that names the bench's socket.
    let (mut sipp, sipp_port) = start_sipp(dir, &answer_to_args(rtp_port, n)).await?;
    let sipp_pid = sipp.id();
    let prompt_secs = (secs as u32) + 30;
    std::fs::write(dir.join("prompt.wav"), prompt_wav(prompt_secs))?;
    let (tx, mut notes) = tokio::sync::mpsc::unbounded_channel();
    let (callback, receiver) = start_receiver(tx).await?;
    let config = format!(
        "{}\n[media]\nprompt_folder = \"{}\"\n\n[sip]\nlisten = \"127.0.0.1:0\"\nmedia_timeout_secs = 3600\n\n[[sip.trunks]]\nname = \"sipp\"\naddress = \"127.0.0.1:{sipp_port}\"\n",
        server::config_toml(),
        dir.display()
    );
    let server =
        Server::switchboard_with(binary, &dir.join("server"), store, false, &config).await?;
    let target = Target::new(&server.url)?;
    let token = target.token().await?;
    // N calls, at most 100 set up per second.
    let body = Target::create_body_to(&callback, json!({"phone": {"id": "+15557000"}}));
    let mut ids = vec![];
    for i in 0..n {
        match target.create(&token, &body).await {
            Ok(id) => ids.push(id),
            Err(e) => eprintln!("media: create failed: {e}"),
        }
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let mut established = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while established < ids.len() {
        match tokio::time::timeout_at(deadline, notes.recv()).await {
            Ok(Some(note)) if note.state == "established" => established += 1,
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let uri = format!("file://{}", dir.join("prompt.wav").display());
    let play = json!({"prompts": [{"@odata.type": "#microsoft.graph.mediaPrompt",
        "mediaInfo": {"@odata.type": "#microsoft.graph.mediaInfo", "uri": uri}}]});
    for id in &ids {
        let r = target
            .client
            .post(format!(
                "{}/v1.0/communications/calls/{id}/playPrompt",
                target.base
            ))
            .bearer_auth(&token)
            .json(&play)
            .send()
            .await;
        if !r.as_ref().is_ok_and(|r| r.status().is_success()) {
            eprintln!("media: playPrompt failed: {r:?}");
        }
    }
    // Let every stream start, then read them all for `secs`.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu0 = (server.cpu_seconds(), cpu_seconds(sipp_pid));
    let (jitter, streams) = listen(&rtp, Duration::from_secs_f64(secs)).await;
    let cpu1 = (server.cpu_seconds(), cpu_seconds(sipp_pid));
    let core = |a: Option<f64>, b: Option<f64>| Some(100.0 * (b? - a?) / secs);
    let server_pct = core(cpu0.0, cpu1.0);
    let (streaming, packets, lost) = tally(&streams);
    for id in &ids {
        let _ = target
            .client
            .delete(format!("{}/v1.0/communications/calls/{id}", target.base))
            .bearer_auth(&token)
            .send()
            .await;
    }
    server.stop().await;
    receiver.abort();
    let _ = sipp.kill().await;
    Ok(Step {
        calls: n,
        streaming,
        packets,
        lost,
        jitter: jitter.summary(),
        server_core_pct_per_call: server_pct
            .filter(|_| streaming > 0)
            .map(|c| c / streaming as f64),
        sipp_core_pct: core(cpu0.1, cpu1.1),
        baseline: None,
    })
}

/// The phone number sipp → sipp calls dial (any number: `uas_answer_to.xml` answers all).
const PHONE: &str = "+15557000";

fn scenario(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/sip/scenarios")
        .join(file)
}

/// `uas_answer_to.xml` answering up to `n` calls at once, its SDP naming `rtp_port`.
fn answer_to_args(rtp_port: u16, n: usize) -> Vec<String> {
    vec![
        "-sf".into(),
        scenario("uas_answer_to.xml").display().to_string(),
        "-set".into(),
        "rtp_port".into(),
        rtp_port.to_string(),
        "-l".into(),
        (n + 10).to_string(),
    ]
}

/// Starts sipp in `dir` with `args` on ports of `crate::sip::free_ports()`; returns it and its
/// SIP port. Tries other ports if it exits at once (another process took one meanwhile).
async fn start_sipp(dir: &Path, args: &[String]) -> anyhow::Result<(Child, u16)> {
    std::fs::create_dir_all(dir)?;
    for _ in 0..3 {
        let port = crate::sip::free_ports();
        let mut child = Command::new("sipp")
            .args(args)
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-mp", &crate::sip::free_ports().to_string()])
            .args([
                "-ci",
                "127.0.0.1",
                "-cp",
                &crate::sip::free_ports().to_string(),
            ])
            .args(["-nostdin", "-trace_err", "-error_file", "errors.log"])
            .env("TERM", "dumb")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting sipp (Debian package sip-tester)")?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        match child.try_wait()? {
            None => return Ok((child, port)),
            Some(s) => eprintln!("media: sipp in {} exited at once ({s})", dir.display()),
        }
    }
    anyhow::bail!(
        "sipp would not start; see {}",
        dir.join("errors.log").display()
    )
}

/// `secs` seconds of a 440 Hz tone, raw G.711 μ-law at 8 kHz (what `rtp_stream` sends as is).
fn tone_ulaw(secs: u32) -> Vec<u8> {
    (0..8_000 * secs)
        .map(|i| {
            let v = 8000.0 * (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / 8_000.0).sin();
            switchboard::sip::rtp::ulaw_encode(v as i16)
        })
        .collect()
}

/// The baseline at `n`: sipp places `n` calls (`uac_stream.xml`, 100 per second) to a sipp
/// answering with `uas_answer_to.xml`, whose SDP names a socket of the bench bound as the
/// Switchboard measurement's is; each call loops a 4-s tone as PCMU. Once every stream has
/// arrived (or the setup time is up) and 1 s more, the same `listen` reads them for `secs`.
async fn baseline(dir: &Path, n: usize, secs: f64) -> anyhow::Result<Baseline> {
    let rtp = UdpSocket::bind("127.0.0.1:0").await?;
    let rtp_port = rtp.local_addr()?.port();
    let (mut uas, uas_port) = start_sipp(&dir.join("uas"), &answer_to_args(rtp_port, n)).await?;
    let uac_dir = dir.join("uac");
    std::fs::create_dir_all(&uac_dir)?;
    std::fs::write(uac_dir.join("stream.ulaw"), tone_ulaw(4))?;
    // The first call must outlast the wait for the streams (setup, n / 100 s, + 10 s at most),
    // 1 s and the window; 10 s more as a margin. The calls are killed before they hang up.
    let setup = n as f64 / 100.0;
    let hold_ms = ((setup + 10.0 + 1.0 + secs + 10.0) * 1000.0).ceil() as u64;
    let uac_args: Vec<String> = [
        "-sf",
        &scenario("uac_stream.xml").display().to_string(),
        &format!("127.0.0.1:{uas_port}"),
        "-s",
        PHONE,
        "-m",
        &n.to_string(),
        "-r",
        "100",
        "-l",
        &n.to_string(),
        "-set",
        "hold_ms",
        &hold_ms.to_string(),
    ]
    .map(String::from)
    .to_vec();
    let (mut uac, _) = start_sipp(&uac_dir, &uac_args).await?;
    let uac_pid = uac.id();
    // Wait for every stream, then let them run 1 s, read and thrown away.
    let deadline = Instant::now() + Duration::from_secs_f64(setup + 10.0);
    let mut seen = std::collections::HashSet::new();
    let mut buf = [0u8; 1500];
    while seen.len() < n {
        match tokio::time::timeout_at(deadline, rtp.recv_from(&mut buf)).await {
            Ok(Ok((len, _))) if len >= 12 => {
                seen.insert(u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]));
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    if seen.len() < n {
        eprintln!(
            "media: baseline: {} of {n} sipp streams arrived within {:.0} s",
            seen.len(),
            setup + 10.0
        );
    }
    let _ = listen(&rtp, Duration::from_secs(1)).await;
    let cpu0 = cpu_seconds(uac_pid);
    let (jitter, streams) = listen(&rtp, Duration::from_secs_f64(secs)).await;
    let cpu1 = cpu_seconds(uac_pid);
    let _ = uac.kill().await;
    let _ = uas.kill().await;
    let (streaming, packets, lost) = tally(&streams);
    Ok(Baseline {
        streaming,
        packets,
        lost,
        jitter: jitter.summary(),
        sipp_core_pct: cpu0.zip(cpu1).map(|(a, b)| 100.0 * (b - a) / secs),
    })
}

/// Streams that arrived, packets received and packets lost.
fn tally(streams: &HashMap<u32, Stream>) -> (usize, u64, u64) {
    let packets = streams.values().map(|s| s.received).sum();
    let lost = streams
        .values()
        .map(|s| s.expected().saturating_sub(s.received))
        .sum();
    (streams.len(), packets, lost)
}

/// One stream as it arrives.
struct Stream {
    first_seq: u16,
    last_seq: u16,
    received: u64,
    last_at: Instant,
}

impl Stream {
    /// Packets sent from the first seen to the last (a window is far shorter than 65536
    /// packets, so the difference modulo 2^16 is the count, across a wrap too).
    fn expected(&self) -> u64 {
        u64::from(self.last_seq.wrapping_sub(self.first_seq)) + 1
    }
}

/// Reads RTP on `socket` for `window`: each stream (by SSRC), and every packet's arrival gap
/// from 20 ms.
async fn listen(socket: &UdpSocket, window: Duration) -> (Samples, HashMap<u32, Stream>) {
    let mut jitter = Samples::default();
    let mut streams: HashMap<u32, Stream> = HashMap::new();
    let mut buf = [0u8; 1500];
    // What queued before the window is not timed: its arrival times are the bench's, not the
    // server's.
    while socket.try_recv_from(&mut buf).is_ok() {}
    let end = Instant::now() + window;
    while let Ok(Ok((n, _))) = tokio::time::timeout_at(end, socket.recv_from(&mut buf)).await {
        let now = Instant::now();
        if n < 12 || buf[0] >> 6 != 2 {
            continue;
        }
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        match streams.get_mut(&ssrc) {
            None => {
                streams.insert(
                    ssrc,
                    Stream {
                        first_seq: seq,
                        last_seq: seq,
                        received: 1,
                        last_at: now,
                    },
                );
            }
            Some(s) => {
                let gap = now - s.last_at;
                let off = gap.as_secs_f64() * 1000.0 - 20.0;
                jitter.push(Duration::from_secs_f64(off.abs() / 1000.0));
                s.last_seq = seq;
                s.received += 1;
                s.last_at = now;
            }
        }
    }
    (jitter, streams)
}
