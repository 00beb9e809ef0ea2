//! The report: the machine, a Markdown table of every figure with its baseline and ratio, and
//! the targets met or not. Also the list of problems that make the run fail (lost
//! notifications, failed requests).

use std::fmt::Write;

use crate::stats::Summary;
use crate::{Opts, PhaseRun, Results};

/// Store changes one lifecycle causes: create, the answer, the hang-up, and the record of each
/// delivery of its four notifications. Committed one transaction each, they would cap
/// lifecycles/s at SQLite's commit rate / 7; group commit (several changes per transaction)
/// lifts that cap.
pub const CHANGES_PER_LIFECYCLE: f64 = 7.0;

/// The targets of issue 6.
const TARGET_LIFECYCLES: f64 = 2000.0;
const TARGET_GET_RATIO: f64 = 0.5;
const TARGET_NOTE_P99_MS: f64 = 10.0;
const TARGET_BYTES_PER_CALL: f64 = 2048.0;

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn memory_total() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let kb: f64 = s
                .lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some(format!("{:.1} GiB", kb / 1048576.0))
        })
        .unwrap_or_else(|| "unknown".into())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

fn ms(s: Summary) -> String {
    format!("{:.2} / {:.2} / {:.2}", s.p50, s.p99, s.max)
}

fn pct(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.1} %", 100.0 * a / b)
    } else {
        "–".into()
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "MET" } else { "NOT MET" }
}

/// CPU use of a phase: seconds, share of one core, per iteration.
fn cpu(run: &PhaseRun, cpu: Option<f64>) -> String {
    match cpu {
        Some(c) => format!(
            "{c:.1} s ({:.0} % of a core, {:.0} µs per op)",
            100.0 * c / run.elapsed.as_secs_f64(),
            1e6 * c / run.tally.iterations.max(1) as f64
        ),
        None => "–".into(),
    }
}

pub fn render(opts: &Opts, r: &Results) -> String {
    let mut o = String::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(o, "\n## Switchboard benchmark\n");
    let _ = writeln!(
        o,
        "Machine: {cores} cores ({}), {} memory. Generator and servers share it.",
        cpu_model(),
        memory_total()
    );
    let _ = writeln!(
        o,
        "Run: {} bots, {} s per phase, store {}, rate phase {}/s{}.",
        opts.bots,
        opts.duration,
        opts.store(),
        opts.rate,
        if opts.smoke { " (smoke)" } else { "" }
    );
    let _ = writeln!(
        o,
        "Load average at start: {}.",
        r.load_at_start
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let busiest_others = [&r.lifecycle, &r.get, &r.rate, &r.bare_mix, &r.bare_get]
        .into_iter()
        .flatten()
        .filter_map(|x| Some(x.others_cpu? / x.elapsed.as_secs_f64()))
        .fold(0.0, f64::max);
    if busiest_others > 0.2 {
        let _ = writeln!(
            o,
            "**Other processes used up to {:.0} % of a core during a phase (see Resources): the \
             figures of that phase understate what this machine can do.**",
            100.0 * busiest_others
        );
    }
    let _ = writeln!(o);

    let _ = writeln!(o, "### Throughput\n");
    let _ = writeln!(o, "| Measure | Switchboard | Baseline | Ratio |");
    let _ = writeln!(o, "|---|---|---|---|");
    let bare_mix = r.bare_mix.as_ref().map(PhaseRun::rate);
    if let Some(l) = &r.lifecycle {
        let _ = writeln!(
            o,
            "| Full P2P lifecycles/s (create, GET, DELETE + 4 notifications) | {:.0} | {} | {} |",
            l.rate(),
            bare_mix.map_or("–".into(), |b| format!(
                "bare server: {b:.0} POST+GET+DELETE/s ({:.0} requests/s)",
                3.0 * b
            )),
            bare_mix.map_or("–".into(), |b| pct(l.rate(), b)),
        );
    }
    if let Some(g) = &r.get {
        let bare = r.bare_get.as_ref().map(PhaseRun::rate);
        let _ = writeln!(
            o,
            "| GET /calls/{{id}} per second | {:.0} | {} | {} |",
            g.rate(),
            bare.map_or("–".into(), |b| format!("bare server: {b:.0} GET/s")),
            bare.map_or("–".into(), |b| pct(g.rate(), b)),
        );
    }
    if let Some(s) = &r.sqlite {
        let l = r.lifecycle.as_ref().map(PhaseRun::rate);
        let _ = writeln!(
            o,
            "| Store changes/s ({CHANGES_PER_LIFECYCLE} per lifecycle) vs SQLite commits/s | {} | SQLite: {:.0} commits/s raw, {:.0}/s through spawn_blocking; one change per commit would cap lifecycles at {:.0}/s | {} |",
            l.map_or("–".into(), |l| format!(
                "≈ {:.0}",
                l * CHANGES_PER_LIFECYCLE
            )),
            s.raw,
            s.via_spawn_blocking,
            s.raw / CHANGES_PER_LIFECYCLE,
            l.map_or("–".into(), |l| pct(l * CHANGES_PER_LIFECYCLE, s.raw)),
        );
    }
    let _ = writeln!(o, "\n### Latency (ms, p50 / p99 / max)\n");
    let _ = writeln!(
        o,
        "| Request | Lifecycle phase | At {}/s | Bare server |",
        opts.rate
    );
    let _ = writeln!(o, "|---|---|---|---|");
    let col = |run: &Option<PhaseRun>, f: &dyn Fn(&PhaseRun) -> Summary| {
        run.as_ref().map_or("–".into(), |x| ms(f(x)))
    };
    for (name, f) in [
        (
            "create (POST)",
            &(|x: &PhaseRun| x.tally.create.summary()) as &dyn Fn(&PhaseRun) -> Summary,
        ),
        ("GET", &|x: &PhaseRun| x.tally.get.summary()),
        ("DELETE", &|x: &PhaseRun| x.tally.delete.summary()),
    ] {
        let _ = writeln!(
            o,
            "| {name} | {} | {} | {} |",
            col(&r.lifecycle, f),
            col(&r.rate, f),
            col(&r.bare_mix, f)
        );
    }
    let _ = writeln!(
        o,
        "| GET-only phase | {} (Switchboard) | | {} |",
        col(&r.get, &|x| x.tally.get.summary()),
        col(&r.bare_get, &|x| x.tally.get.summary())
    );

    let _ = writeln!(o, "\n### Notifications (ms, p50 / p99 / max)\n");
    let _ = writeln!(
        o,
        "Latency = callback received − response to the causing request received (create for \
         establishing/established, DELETE for terminating/terminated); one that arrives before \
         that response counts as 0.\n"
    );
    let _ = writeln!(o, "| | Lifecycle phase | At {}/s |", opts.rate);
    let _ = writeln!(o, "|---|---|---|");
    for (i, state) in crate::bots::STATES.iter().enumerate() {
        let _ = writeln!(
            o,
            "| {state} | {} | {} |",
            col(&r.lifecycle, &|x| x.tally.notes[i].summary()),
            col(&r.rate, &|x| x.tally.notes[i].summary())
        );
    }
    let _ = writeln!(
        o,
        "| all | {} | {} |",
        col(&r.lifecycle, &|x| x.tally.all_notes().summary()),
        col(&r.rate, &|x| x.tally.all_notes().summary())
    );
    let count = |run: &Option<PhaseRun>, f: &dyn Fn(&PhaseRun) -> String| {
        run.as_ref().map_or("–".into(), f)
    };
    let _ = writeln!(
        o,
        "| lost / expected | {} | {} |",
        count(&r.lifecycle, &|x| format!(
            "{} / {}",
            x.tally.lost_notes, x.tally.expected_notes
        )),
        count(&r.rate, &|x| format!(
            "{} / {}",
            x.tally.lost_notes, x.tally.expected_notes
        ))
    );
    let _ = writeln!(
        o,
        "| before the response / duplicates / unexpected | {} | {} |",
        count(&r.lifecycle, &|x| format!(
            "{} / {} / {}",
            x.tally.early_notes, x.tally.duplicate_notes, x.tally.unexpected_notes
        )),
        count(&r.rate, &|x| format!(
            "{} / {} / {}",
            x.tally.early_notes, x.tally.duplicate_notes, x.tally.unexpected_notes
        ))
    );
    if let Some(x) = &r.rate {
        let _ = writeln!(o, "\nAchieved rate in the rate phase: {:.0}/s.", x.rate());
    }

    let _ = writeln!(o, "\n### Resources\n");
    let _ = writeln!(
        o,
        "| Phase | Server CPU | Bench CPU | Other processes' CPU | Server peak RSS | Failed requests |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|");
    for (name, run) in [
        ("lifecycles", &r.lifecycle),
        ("GET", &r.get),
        ("lifecycles at rate", &r.rate),
        ("bare POST+GET+DELETE", &r.bare_mix),
        ("bare GET", &r.bare_get),
    ] {
        if let Some(x) = run {
            let _ = writeln!(
                o,
                "| {name} | {} | {} | {} | {} | {} |",
                cpu(x, x.server_cpu),
                cpu(x, x.bench_cpu),
                x.others_cpu.map_or("–".into(), |c| format!(
                    "{c:.1} s ({:.0} % of a core)",
                    100.0 * c / x.elapsed.as_secs_f64()
                )),
                x.peak_rss.map_or("–".into(), mib),
                x.tally.failed_requests
            );
        }
    }

    if let Some(m) = &r.memory {
        let _ = writeln!(o, "\n### Memory with established calls held open\n");
        let _ = writeln!(
            o,
            "RSS before the first call: {}; peak RSS: {}.\n",
            mib(m.rss_before),
            mib(m.peak_rss)
        );
        let _ = writeln!(
            o,
            "| Established calls | RSS | Bytes per call | Creates/s getting there |"
        );
        let _ = writeln!(o, "|---|---|---|---|");
        for s in &m.steps {
            let _ = writeln!(
                o,
                "| {} | {} | {:.0} | {:.0} |",
                s.calls,
                mib(s.rss),
                s.bytes_per_call,
                s.create_rate
            );
        }
    }

    let _ = writeln!(o, "\n### Targets\n");
    let lost_total = r.lifecycle.as_ref().map_or(0, |x| x.tally.lost_notes);
    if let Some(l) = &r.lifecycle {
        let _ = writeln!(
            o,
            "- ≥ {TARGET_LIFECYCLES:.0} lifecycles/s on the {} store with 0 lost: {:.0}/s, {} lost — {}",
            opts.store(),
            l.rate(),
            lost_total,
            met(l.rate() >= TARGET_LIFECYCLES && lost_total == 0)
        );
    }
    if let (Some(g), Some(b)) = (&r.get, &r.bare_get) {
        let ratio = g.rate() / b.rate().max(1e-9);
        let _ = writeln!(
            o,
            "- GET throughput ≥ 50 % of the bare server's: {:.1} % — {}",
            100.0 * ratio,
            met(ratio >= TARGET_GET_RATIO)
        );
    }
    if let Some(x) = &r.rate {
        let p99 = x.tally.all_notes().summary().p99;
        let _ = writeln!(
            o,
            "- notification latency p99 ≤ {TARGET_NOTE_P99_MS} ms at {}/s: {p99:.2} ms (achieved {:.0}/s) — {}",
            opts.rate,
            x.rate(),
            met(p99 <= TARGET_NOTE_P99_MS && x.rate() >= 0.95 * opts.rate)
        );
        if x.rate() < 0.95 * opts.rate {
            let _ = writeln!(
                o,
                "  (the server did not sustain {}/s, so this latency is that of a saturated server)",
                opts.rate
            );
        }
    }
    if let Some(m) = &r.memory
        && let Some(last) = m.steps.last()
    {
        let _ = writeln!(
            o,
            "- ≤ 2 KiB RSS per established call: {:.0} bytes at {} calls — {}",
            last.bytes_per_call,
            last.calls,
            met(last.bytes_per_call <= TARGET_BYTES_PER_CALL)
        );
    }
    o
}

/// What makes the run fail: lost notifications and failed requests, in any phase.
pub fn problems(r: &Results) -> Vec<String> {
    let mut p = vec![];
    for (name, run) in [
        ("lifecycle", &r.lifecycle),
        ("get", &r.get),
        ("rate", &r.rate),
        ("bare mix", &r.bare_mix),
        ("bare get", &r.bare_get),
    ] {
        let Some(x) = run else { continue };
        if x.tally.lost_notes > 0 {
            p.push(format!("{name}: {} notifications lost", x.tally.lost_notes));
        }
        if x.tally.failed_requests > 0 {
            p.push(format!(
                "{name}: {} requests failed (first: {})",
                x.tally.failed_requests,
                x.tally.first_failure.as_deref().unwrap_or("?")
            ));
        }
        if x.tally.iterations == 0 {
            p.push(format!("{name}: nothing completed"));
        }
    }
    if let Some(m) = &r.memory {
        if m.lost_notes > 0 {
            p.push(format!("memory: {} calls never established", m.lost_notes));
        }
        if m.failed_requests > 0 {
            p.push(format!("memory: {} creates failed", m.failed_requests));
        }
    }
    p
}
