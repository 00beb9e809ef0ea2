//! `bench`: Switchboard's load generator and its baselines (see `docs/BENCHMARKS.md`).
//!
//! It starts Switchboard's release binary (or targets a running one with `--url`) and runs the
//! phases chosen with `--phases`, then prints a Markdown report:
//! - `sqlite`: SQLite's own commit rate with Switchboard's settings;
//! - `bare`: a bare HTTP server answering the same request mix (and a GET-only run);
//! - `lifecycle`: bots looping full P2P lifecycles as fast as they can;
//! - `get`: bots reading one established call each, again and again;
//! - `rate`: full lifecycles at a fixed total rate (`--rate`), for notification latency;
//! - `isolation`: the `rate` phase's lifecycles alone and beside a receiver of another app that
//!   never answers (or answers slowly), alternately on one server: the bots' notification
//!   latency should not notice it;
//! - `memory`: RSS with many established calls held open, on a virtual clock;
//! - `media`: how many SIP calls stream a prompt at once with steady timing (`media.rs`);
//! - `sip`: real calls over SIP at rising rates, bots → Switchboard → sipp and sipp →
//!   Switchboard → bots, beside sipp → sipp, the harness's own ceiling (`sip.rs`).
//!
//! `--smoke` is a few seconds of each, and exits non-zero if a request failed or a notification
//! was lost (as does a full run, which also fails if the isolation target is not met).

mod bare;
mod bots;
mod isolation;
mod media;
mod memory;
mod report;
mod server;
mod sip;
mod sqlite;
mod stats;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::time::Instant;

use bots::{Bot, Gate, Tally, Target, Workload};
use server::Server;

#[derive(Parser)]
#[command(name = "bench", about = "Load generator and baselines for Switchboard")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    opts: Opts,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the bare baseline HTTP server (used by the `bare` phase).
    BareServer,
    /// Prints the Switchboard configuration the bench uses (for a server run by hand, `--url`).
    PrintConfig,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Phase {
    Sqlite,
    Bare,
    Lifecycle,
    Get,
    Rate,
    Isolation,
    Memory,
    Sip,
    Media,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    Sqlite,
    Memory,
}

#[derive(clap::Args, Clone, Debug)]
struct Opts {
    /// A short run for CI: few bots, a couple of seconds per phase, a small memory phase.
    #[arg(long)]
    smoke: bool,
    /// Phases to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "sqlite,bare,lifecycle,get,rate,isolation,memory,sip,media"
    )]
    phases: Vec<Phase>,
    /// Target a running Switchboard (configured with `bench print-config`) instead of starting
    /// one; the memory phase then needs `--server-pid` (and the server a virtual clock).
    #[arg(long)]
    url: Option<String>,
    /// With `--url`: the server's pid, to report its CPU and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Switchboard binary to start (default: the workspace's release build, built if missing).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Store the started servers use.
    #[arg(long, value_enum, default_value = "sqlite")]
    store: StoreKind,
    /// Concurrent bots.
    #[arg(long, default_value_t = 64)]
    bots: usize,
    /// Seconds each throughput phase runs.
    #[arg(long, default_value_t = 15.0)]
    duration: f64,
    /// Lifecycles the `lifecycle` phase runs (instead of running for `--duration`).
    #[arg(long)]
    calls: Option<u64>,
    /// Lifecycles per second in the `rate` phase.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Calls of the misbehaving receiver in the isolation phase (created before each of its
    /// runs; during the run, as many more per 10 s).
    #[arg(long, default_value_t = 100)]
    hanging_calls: usize,
    /// Rounds of the isolation phase: each runs, for every variant, the bots alone, then beside
    /// the variant's receiver.
    #[arg(long, default_value_t = 2)]
    isolation_rounds: usize,
    /// The isolation phase's misbehaving receivers, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "hang,slow")]
    isolation_variants: Vec<isolation::Variant>,
    /// Established calls at which the memory phase reads RSS, comma-separated, ascending.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    memory_calls: Vec<u64>,
    /// Calls per second the `sip` phase tries, comma-separated, ascending (each kind stops at its
    /// first rate with a failure).
    #[arg(long, value_delimiter = ',', default_value = "25,50,100,200,400,800")]
    sip_rates: Vec<f64>,
    /// Concurrent streaming calls the `media` phase tries, comma-separated, ascending (it stops
    /// at the first with a lost packet or a jitter p99 over 2 ms).
    #[arg(long, value_delimiter = ',', default_value = "100,200,300,400,500")]
    media_calls: Vec<usize>,
    /// How long each call of the `sip` phase is held once answered, ms.
    #[arg(long, default_value_t = 1000)]
    sip_hold_ms: u64,
    /// Folder for databases, configs and server logs (default: a new one in the temp folder,
    /// removed at the end).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

impl Opts {
    /// `--smoke` scales everything down.
    fn for_smoke(mut self) -> Self {
        self.bots = self.bots.min(8);
        self.duration = self.duration.min(2.0);
        self.calls = None;
        self.rate = self.rate.min(100.0);
        self.memory_calls = vec![1000];
        self.isolation_rounds = 1;
        self.isolation_variants = vec![isolation::Variant::Hang];
        self.sip_rates = vec![5.0];
        self.media_calls = vec![5];
        self.sip_hold_ms = self.sip_hold_ms.min(500);
        self
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration)
    }

    fn store(&self) -> &'static str {
        match self.store {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Memory => "memory",
        }
    }
}

/// What one bot phase measured.
pub struct PhaseRun {
    pub bots: usize,
    pub tally: Tally,
    pub elapsed: Duration,
    pub server_cpu: Option<f64>,
    pub bench_cpu: Option<f64>,
    /// CPU seconds every other process on the machine used meanwhile.
    pub others_cpu: Option<f64>,
    pub peak_rss: Option<u64>,
}

impl PhaseRun {
    /// Completed iterations per second.
    pub fn rate(&self) -> f64 {
        self.tally.iterations as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Everything the run measured.
#[derive(Default)]
pub struct Results {
    /// `/proc/loadavg` when the run started.
    pub load_at_start: String,
    pub sqlite: Option<sqlite::CommitRates>,
    pub bare_mix: Option<PhaseRun>,
    pub bare_get: Option<PhaseRun>,
    pub lifecycle: Option<PhaseRun>,
    pub get: Option<PhaseRun>,
    pub rate: Option<PhaseRun>,
    pub isolation: Option<isolation::IsolationResult>,
    pub memory: Option<memory::MemoryResult>,
    pub sip: Option<sip::SipResult>,
    pub media: Option<media::MediaResult>,
}

/// Sets up `bots` bots against `server`, then runs `workload` through a gate and tallies.
async fn run_phase(
    server: &Server,
    bots: usize,
    workload: Workload,
    duration: Option<Duration>,
    count: Option<u64>,
    rate: Option<f64>,
) -> anyhow::Result<PhaseRun> {
    let target = Target::new(&server.url)?;
    let switchboard = !matches!(
        workload,
        Workload::BareMix | Workload::Gets { switchboard: false }
    );
    let mut setups = vec![];
    for _ in 0..bots {
        let target = target.clone();
        setups.push(tokio::spawn(async move {
            let mut bot = Bot::new(target, switchboard).await?;
            if let Workload::Gets { switchboard } = workload {
                bot.open_call(switchboard).await?;
            }
            anyhow::Ok(bot)
        }));
    }
    let mut ready = vec![];
    for s in setups {
        ready.push(s.await?.context("setting up a bot")?);
    }
    let cpu0 = server.cpu_seconds();
    let me0 = stats::cpu_seconds(None);
    let all0 = stats::machine_busy_seconds();
    let start = Instant::now();
    let gate = Gate::new(duration, count, rate);
    let runs: Vec<_> = ready
        .into_iter()
        .map(|bot| tokio::spawn(bot.run(workload, gate.clone())))
        .collect();
    let mut tally = Tally::default();
    let mut last_stop = start;
    for r in runs {
        let (t, stopped) = r.await?;
        tally.merge(t);
        last_stop = last_stop.max(stopped);
    }
    let diff = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    let server_cpu = diff(cpu0, server.cpu_seconds());
    let bench_cpu = diff(me0, stats::cpu_seconds(None));
    let machine_cpu = diff(all0, stats::machine_busy_seconds());
    Ok(PhaseRun {
        bots,
        tally,
        elapsed: last_stop - start,
        server_cpu,
        bench_cpu,
        others_cpu: machine_cpu
            .map(|m| (m - server_cpu.unwrap_or(0.0) - bench_cpu.unwrap_or(0.0)).max(0.0)),
        peak_rss: server.vm_bytes("VmHWM"),
    })
}

/// Starts a Switchboard for one phase (or uses the one at `--url`).
async fn switchboard(opts: &Opts, dir: &std::path::Path) -> anyhow::Result<Server> {
    match &opts.url {
        Some(url) => Ok(Server::external(url, opts.server_pid)),
        None => {
            let binary = server::switchboard_binary(opts.server_bin.as_deref())?;
            Server::switchboard(&binary, dir, opts.store(), false).await
        }
    }
}

fn describe(name: &str, run: &PhaseRun) {
    let t = &run.tally;
    eprintln!(
        "{name}: {:.0}/s over {:.1} s ({} done, {} requests, {} failed, {} of {} notifications lost)",
        run.rate(),
        run.elapsed.as_secs_f64(),
        t.iterations,
        t.requests,
        t.failed_requests,
        t.lost_notes,
        t.expected_notes
    );
    if let Some(f) = &t.first_failure {
        eprintln!("{name}: first failure: {f}");
    }
}

async fn run(opts: Opts) -> anyhow::Result<Results> {
    let has = |p| opts.phases.contains(&p);
    let dir = opts.work_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("switchboard-bench-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir)?;
    let d = Some(opts.duration());
    let mut r = Results {
        load_at_start: std::fs::read_to_string("/proc/loadavg").unwrap_or_default(),
        ..Results::default()
    };

    if has(Phase::Sqlite) {
        let secs = opts.duration().min(Duration::from_secs(5));
        eprintln!("sqlite: measuring commit rates ({secs:?} each) ...");
        let rates = sqlite::commit_rates(&dir.join("sqlite"), secs).await?;
        eprintln!(
            "sqlite: {:.0} commits/s raw, {:.0} via spawn_blocking",
            rates.raw, rates.via_spawn_blocking
        );
        r.sqlite = Some(rates);
    }
    if has(Phase::Bare) {
        let server = Server::bare(&dir.join("bare")).await?;
        let mix = run_phase(&server, opts.bots, Workload::BareMix, d, None, None).await?;
        describe("bare POST+GET+DELETE", &mix);
        let get = run_phase(
            &server,
            opts.bots,
            Workload::Gets { switchboard: false },
            d,
            None,
            None,
        )
        .await?;
        describe("bare GET", &get);
        server.stop().await;
        (r.bare_mix, r.bare_get) = (Some(mix), Some(get));
    }
    if has(Phase::Lifecycle) {
        let server = switchboard(&opts, &dir.join("lifecycle")).await?;
        let duration = if opts.calls.is_some() { None } else { d };
        let run = run_phase(
            &server,
            opts.bots,
            Workload::Lifecycle,
            duration,
            opts.calls,
            None,
        )
        .await?;
        describe("lifecycles", &run);
        server.stop().await;
        r.lifecycle = Some(run);
    }
    if has(Phase::Get) {
        let server = switchboard(&opts, &dir.join("get")).await?;
        let run = run_phase(
            &server,
            opts.bots,
            Workload::Gets { switchboard: true },
            d,
            None,
            None,
        )
        .await?;
        describe("GET", &run);
        server.stop().await;
        r.get = Some(run);
    }
    if has(Phase::Rate) {
        let server = switchboard(&opts, &dir.join("rate")).await?;
        let run = run_phase(
            &server,
            opts.bots,
            Workload::Lifecycle,
            d,
            None,
            Some(opts.rate),
        )
        .await?;
        describe(&format!("lifecycles at {}/s", opts.rate), &run);
        server.stop().await;
        r.rate = Some(run);
    }
    if has(Phase::Isolation) {
        let server = switchboard(&opts, &dir.join("isolation")).await?;
        let result = isolation::run(
            &server,
            opts.bots,
            opts.duration(),
            opts.rate,
            opts.hanging_calls,
            opts.isolation_rounds,
            &opts.isolation_variants,
        )
        .await;
        server.stop().await;
        r.isolation = Some(result?);
    }
    if has(Phase::Memory) {
        if opts.url.is_some() && opts.server_pid.is_none() {
            eprintln!("memory: skipped (with --url it needs --server-pid to read RSS)");
        } else {
            let server = match &opts.url {
                // Best started with --clock virtual, as the bench does itself.
                Some(url) => Server::external(url, opts.server_pid),
                None => {
                    let binary = server::switchboard_binary(opts.server_bin.as_deref())?;
                    memory::start_server(&binary, &dir.join("memory"), opts.store()).await?
                }
            };
            let result = memory::run(&server, &opts.memory_calls, 64).await;
            server.stop().await;
            r.memory = Some(result?);
        }
    }
    if has(Phase::Sip) {
        if opts.url.is_some() {
            eprintln!("sip: skipped (it starts its own servers, each with a [sip] section)");
        } else {
            let binary = server::switchboard_binary(opts.server_bin.as_deref())?;
            let result = sip::run(
                &binary,
                &dir.join("sip"),
                opts.store(),
                &opts.sip_rates,
                opts.duration,
                opts.sip_hold_ms,
            )
            .await?;
            r.sip = Some(result);
        }
    }
    if has(Phase::Media) {
        if opts.url.is_some() {
            eprintln!("media: skipped (it starts its own servers, each with a [sip] section)");
        } else {
            let binary = server::switchboard_binary(opts.server_bin.as_deref())?;
            let result = media::run(
                &binary,
                &dir.join("media"),
                opts.store(),
                &opts.media_calls,
                opts.duration,
            )
            .await?;
            r.media = Some(result);
        }
    }
    if opts.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(r)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Some(Command::BareServer) => rt.block_on(bare::serve()),
        Some(Command::PrintConfig) => {
            print!("{}", server::config_toml());
            Ok(())
        }
        None => {
            let opts = if cli.opts.smoke {
                cli.opts.for_smoke()
            } else {
                cli.opts
            };
            let results = rt.block_on(run(opts.clone()))?;
            print!("{}", report::render(&opts, &results));
            let problems = report::problems(&opts, &results);
            if !problems.is_empty() {
                for p in &problems {
                    eprintln!("FAILED: {p}");
                }
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
