//! The `switchboard` binary: parses flags and calls the library.

use std::io::Write;
use std::path::PathBuf;

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

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "A self-hosted server for the Microsoft Graph calls API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum ClockKind {
    Real,
    Virtual,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the server.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        #[arg(long, default_value = DEFAULT_STORE)]
        store: String,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "real")]
        clock: ClockKind,
    },
    /// Prints an app token, signed with the keys in the store's data folder.
    Token {
        #[arg(long)]
        app_id: String,
        #[arg(long, default_value = DEFAULT_STORE)]
        store: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Manages the signing keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Adds a new signing key; the old one stays published until its tokens expire.
    Rotate {
        #[arg(long, default_value = DEFAULT_STORE)]
        store: String,
    },
}

fn settings(config: Option<&PathBuf>) -> anyhow::Result<Settings> {
    match config {
        Some(path) => Settings::from_file(path),
        None => Ok(Settings::development()),
    }
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
    };
    let app = Application::build(s, &opts).await?;
    let addr = app.local_addr();
    println!("switchboard listening on http://{addr}");
    std::io::stdout().flush().ok();
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            wait_for_signal().await;
            tracing::info!("stopping");
            stop.cancel();
        }
    });
    app.run_until_stopped(stop).await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn main() -> anyhow::Result<()> {
    switchboard::telemetry::init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            listen,
            store,
            config,
            clock,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(serve(listen, store, config, clock)),
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
            Ok(())
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
            Ok(())
        }
    }
}
