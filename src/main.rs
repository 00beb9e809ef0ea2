//! The `switchboard` binary: parses flags and calls the library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use switchboard::app::{Application, ServeOptions};
use switchboard::auth::KeyRing;
use switchboard::auth::keys::KEY_FILE;
use switchboard::config::{self, Settings};
use tokio_util::sync::CancellationToken;

/// mimalloc: the server allocates many small, short-lived blocks (JSON text, HTTP buffers), and
/// glibc's allocator spent about a third of a lifecycle's CPU on them (see docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_STORE: &str = "sqlite://switchboard-data/switchboard.db";

/// What `serve --help` adds after the options: the settings that only the environment gives.
const SERVE_AFTER_HELP: &str = "\
Every option can also be set by its environment variable; an option given on the command line wins.
Other environment variables: SWITCHBOARD_PUBLIC_URL and SWITCHBOARD_ADMIN_TOKEN override the
configuration file's public_url and [admin] token; SWITCHBOARD_LOG sets the log filter (default
info,rsipstack=warn; e.g. debug, or switchboard::delivery=debug) and SWITCHBOARD_LOG_FORMAT its format (pretty,
json).

Examples:
  switchboard serve --store memory --clock virtual
  switchboard serve --config switchboard.toml --listen 0.0.0.0:8080
  SWITCHBOARD_CONFIG=switchboard.toml SWITCHBOARD_STORE=sqlite:///var/lib/switchboard/sb.db switchboard serve";

/// What `exec --help` adds after the options.
const EXEC_AFTER_HELP: &str = "\
The server's log goes to standard error at warn unless SWITCHBOARD_LOG says otherwise; the
public_url it writes (Location headers, metadata) is https://127.0.0.1:PORT unless the
configuration sets one.

Examples:
  switchboard exec -- pytest -q
  switchboard exec --config switchboard.toml -- npm test
  switchboard exec -- sh -c 'curl -s $SWITCHBOARD_URL/healthz'";

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "A self-hosted server for the Microsoft Graph calls API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines on standard error are written: pretty (text, coloured only on a terminal)
    /// or json (one object per line) (e.g. json).
    #[arg(
        long,
        global = true,
        env = "SWITCHBOARD_LOG_FORMAT",
        value_name = "FORMAT",
        value_enum,
        default_value = "pretty"
    )]
    log_format: switchboard::telemetry::LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum ClockKind {
    /// The system's clock.
    Real,
    /// Starts at the real time, then moves only through POST /_switchboard/v1/clock/advance
    /// (tokens always use real time).
    Virtual,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the server; prints `switchboard listening on http://HOST:PORT` once ready.
    #[command(after_help = SERVE_AFTER_HELP)]
    Serve {
        /// The address to listen on, HOST:PORT; port 0 picks a free port (e.g. 0.0.0.0:8080).
        #[arg(
            long,
            env = "SWITCHBOARD_LISTEN",
            value_name = "ADDR",
            default_value = "127.0.0.1:8080"
        )]
        listen: String,
        /// Where calls, notifications and delivery attempts are kept: sqlite://PATH (the file and
        /// its folder are made on first start; the signing keys live in that folder) or memory
        /// (nothing is kept) (e.g. sqlite:///var/lib/switchboard/sb.db).
        #[arg(long, env = "SWITCHBOARD_STORE", value_name = "URL", default_value = DEFAULT_STORE)]
        store: String,
        /// The TOML configuration file (`switchboard config init` writes a starter one); without
        /// it, the development setup is used and printed (e.g. switchboard.toml).
        #[arg(long, env = "SWITCHBOARD_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// The call clock: timers, durations, retry backoff, timestamps in call data (e.g. virtual).
        #[arg(
            long,
            env = "SWITCHBOARD_CLOCK",
            value_name = "CLOCK",
            value_enum,
            default_value = "real"
        )]
        clock: ClockKind,
    },
    /// Runs COMMAND against a server started for it, then stops the server: by default on a free
    /// port of 127.0.0.1, with a memory store and a virtual clock. COMMAND finds
    /// SWITCHBOARD_URL, SWITCHBOARD_HTTPS_URL, SWITCHBOARD_APP_ID, SWITCHBOARD_TENANT_ID,
    /// SWITCHBOARD_CLIENT_SECRET, SWITCHBOARD_TOKEN and SWITCHBOARD_CA_FILE (and
    /// SSL_CERT_FILE, REQUESTS_CA_BUNDLE and NODE_EXTRA_CA_CERTS set to trust the server) in
    /// its environment; its exit status is exec's.
    #[command(after_help = EXEC_AFTER_HELP)]
    Exec {
        /// The address to listen on, HOST:PORT; port 0 picks a free port.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
        listen: String,
        /// Where calls are kept: memory (nothing is kept) or sqlite://PATH.
        #[arg(long, value_name = "URL", default_value = "memory")]
        store: String,
        /// The TOML configuration file; without it, the development setup.
        #[arg(long, env = "SWITCHBOARD_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// The call clock.
        #[arg(long, value_name = "CLOCK", value_enum, default_value = "virtual")]
        clock: ClockKind,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<std::ffi::OsString>,
    },
    /// Prints an app token, signed with the keys in the store's data folder (a server must have
    /// started on that store once: it makes the keys).
    Token {
        /// The app's id: an [[apps]] entry of --config, or the development app (e.g.
        /// 5b0d0000-0000-4000-8000-000000000a99).
        #[arg(long, value_name = "ID")]
        app_id: String,
        /// The store of the server the token is for; its folder holds the signing keys (e.g.
        /// sqlite://switchboard-data/switchboard.db).
        #[arg(long, env = "SWITCHBOARD_STORE", value_name = "URL", default_value = DEFAULT_STORE)]
        store: String,
        /// The configuration file the app is in; without it, the development setup (e.g.
        /// switchboard.toml).
        #[arg(long, env = "SWITCHBOARD_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Manages the signing keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Writes and checks configuration files.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Writes a starter configuration file: every section and key, commented, with a new app
    /// (its id, tenant id and secret made for the file), the development setup's parties and
    /// meeting, and an admin token ready to be uncommented. The file is readable by its owner only.
    Init {
        /// Where to write it; `-` prints it instead (e.g. switchboard.toml).
        #[arg(default_value = "switchboard.toml")]
        file: PathBuf,
        /// Replace FILE if it exists (without it, an existing file is left alone).
        #[arg(long)]
        force: bool,
    },
    /// Checks a configuration file as `serve` reads it: TOML syntax, unknown keys, roles that do
    /// not exist, ids configured twice, URLs that are not http(s), meetings naming parties that
    /// are not configured. Prints each problem as FILE:LINE:COLUMN: KEY: MESSAGE and exits 1;
    /// otherwise says what the file holds and exits 0. The environment is not read.
    Check {
        /// The file to check (e.g. switchboard.toml).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Adds a new signing key; the old one stays published until its tokens expire. A running
    /// server picks it up within seconds.
    Rotate {
        /// The store whose folder holds the keys: the server's --store (e.g.
        /// sqlite://switchboard-data/switchboard.db).
        #[arg(long, env = "SWITCHBOARD_STORE", value_name = "URL", default_value = DEFAULT_STORE)]
        store: String,
    },
}

fn settings(config: Option<&PathBuf>) -> Result<Settings, config::ConfigError> {
    match config {
        Some(path) => Settings::from_file(path),
        None => Settings::development().with_environment(),
    }
}

/// `config init [FILE] [--force]`: the starter file, and what to do with it.
fn init_config(file: &Path, force: bool) -> anyhow::Result<ExitCode> {
    let starter = config::Starter::new();
    if file == Path::new("-") {
        print!("{}", starter.text);
        return Ok(ExitCode::SUCCESS);
    }
    starter.write(file, force).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => anyhow::anyhow!(
            "{} exists; it was left as it is (--force replaces it)",
            file.display()
        ),
        _ => anyhow::anyhow!("cannot write {}: {e}", file.display()),
    })?;
    let f = file.display();
    println!("wrote {f} (readable by you only: it holds the app's secret)");
    println!("  app id:    {}", starter.app_id);
    println!("  tenant id: {}", starter.tenant_id);
    println!("  the client secret, and an admin token to uncomment, are in the file");
    println!("check it:    switchboard config check {f}");
    println!("run it:      switchboard serve --config {f}");
    Ok(ExitCode::SUCCESS)
}

/// `config check FILE`: the problems on standard error, one a line, and exit status 1; or a
/// summary on standard output.
fn check_config(file: &Path) -> ExitCode {
    match Settings::read_file(file) {
        Ok(s) => {
            println!("{}: OK ({})", file.display(), s.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            let problems = e.problems();
            for p in &problems {
                eprintln!("{p}");
            }
            if problems.len() > 1 {
                eprintln!("{}: {} problems", file.display(), problems.len());
            }
            ExitCode::FAILURE
        }
    }
}

/// An error for a person: its causes after it, each said once (a cause that repeats what the
/// message already says is left out).
fn report(e: &anyhow::Error) -> String {
    let mut said = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !said.contains(&cause) {
            said.push_str(": ");
            said.push_str(&cause);
        }
    }
    said
}

/// The data folder of the store `token` and `keys rotate` work on: where its server keeps its keys.
fn key_dir(store: &str) -> anyhow::Result<PathBuf> {
    switchboard::store::data_dir(store).with_context(|| {
        format!(
            "the store {store} keeps no keys: keys live beside a sqlite:// store (a memory store's key lives and dies with its server)"
        )
    })
}

fn print_development_setup(s: &Settings) {
    let app = &s.apps[0];
    println!("No --config given: using the development setup.");
    println!("  app id:     {}", app.app_id);
    println!("  tenant id:  {}", app.tenant_id);
    println!("  secret:     {}", config::DEV_SECRET);
    println!("  roles:      {}", app.roles.join(", "));
    println!("  parties:");
    for p in &s.parties {
        println!(
            "    {:<40} {:<6} {:<12} {}",
            p.id,
            format!("{:?}", p.kind).to_lowercase(),
            serde_json::to_value(p.behavior)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            p.display_name.as_deref().unwrap_or("")
        );
    }
    for m in &s.meetings {
        println!(
            "  meeting:    joinMeetingId {}, passcode {}, with {}",
            m.join_meeting_id,
            m.passcode.as_deref().unwrap_or("(none)"),
            m.parties.join(", ")
        );
    }
}

async fn serve(
    listen: String,
    store: String,
    config: Option<PathBuf>,
    clock: ClockKind,
) -> anyhow::Result<()> {
    let s = settings(config.as_ref())?;
    if config.is_none() {
        print_development_setup(&s);
    }
    let opts = ServeOptions {
        listen,
        store,
        virtual_clock: matches!(clock, ClockKind::Virtual),
        https_public_url: false,
    };
    let app = Application::build(s, &opts).await?;
    let addr = app.local_addr();
    if let Some(sip) = app.sip_addr() {
        println!("switchboard sip on udp://{sip}");
    }
    println!("switchboard listening on http://{addr}");
    std::io::stdout().flush().ok();
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            switchboard::app::shutdown_signal().await;
            stop.cancel();
            tracing::info!("stopping");
        }
    });
    app.run_until_stopped(stop).await
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A command's own output is what `exec` is run for: the server speaks up only for problems.
    let quiet = matches!(cli.command, Command::Exec { .. });
    switchboard::telemetry::init(
        cli.log_format,
        if quiet {
            "warn"
        } else {
            switchboard::telemetry::DEFAULT_FILTER
        },
    );
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchboard: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve {
            listen,
            store,
            config,
            clock,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(serve(listen, store, config, clock))
            .map(|()| ExitCode::SUCCESS),
        Command::Exec {
            listen,
            store,
            config,
            clock,
            command,
        } => {
            let s = settings(config.as_ref())?;
            let opts = ServeOptions {
                listen,
                store,
                virtual_clock: matches!(clock, ClockKind::Virtual),
                https_public_url: true,
            };
            let code = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(switchboard::exec::run(s, &opts, &command))?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        Command::Token {
            app_id,
            store,
            config,
        } => {
            let s = settings(config.as_ref())?;
            let app = s
                .apps
                .iter()
                .find(|a| a.app_id.eq_ignore_ascii_case(&app_id))
                .with_context(|| format!("no app {app_id} is configured"))?;
            let dir = key_dir(&store)?;
            let keys = KeyRing::load(&dir)?;
            // Standard error, so that `TOKEN=$(switchboard token ...)` takes the token alone.
            eprintln!(
                "token for app {} ({}), signed with key {} of {} (store {store})",
                app.app_id,
                config.as_ref().map_or_else(
                    || "the development setup".to_string(),
                    |c| c.display().to_string()
                ),
                keys.active().kid,
                dir.join(KEY_FILE).display()
            );
            println!("{}", switchboard::auth::tokens::issue_app_token(&keys, app));
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys {
            action: KeysAction::Rotate { store },
        } => {
            let dir = key_dir(&store)?;
            let kid = KeyRing::rotate(&dir)?;
            println!(
                "new signing key {kid} in {}; the previous key stays published for two hours",
                dir.join(KEY_FILE).display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            action: ConfigAction::Init { file, force },
        } => init_config(&file, force),
        Command::Config {
            action: ConfigAction::Check { file },
        } => Ok(check_config(&file)),
    }
}
