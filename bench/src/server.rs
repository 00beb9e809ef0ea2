//! The servers under test: Switchboard's release binary (built first if it is missing or older
//! than its sources) with a configuration the bench writes, or the bare baseline server (this
//! same binary, `bench bare-server`), each as a child process whose CPU and memory `/proc` shows.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const TENANT: &str = "b3c40000-0000-4000-8000-0000000000e1";

/// An app of the bench configuration: its client id and secret.
#[derive(Clone, Copy, Debug)]
pub struct App {
    pub id: &'static str,
    pub secret: &'static str,
}

/// The app every bot of every phase is.
pub const APP_A: App = App {
    id: "b3c40000-0000-4000-8000-000000000a01",
    secret: "bench-secret",
};
/// A second app, only used by the `isolation` phase: its calls' receiver is slow or never
/// answers, beside app A's normal bots.
pub const APP_B: App = App {
    id: "b3c40000-0000-4000-8000-000000000a02",
    secret: "bench-secret-b",
};
pub const ADMIN_TOKEN: &str = "bench-admin-token";
/// The party every bot calls: it answers at once (`answer_after_ms = 0`).
pub const ANSWERER: &str = "b3c40000-0000-4000-8000-0000000000b1";

/// The Switchboard configuration the bench runs with: two apps (A for the bots, B for the
/// `isolation` phase's misbehaving receiver) with every role and no call limit to speak of, one
/// party that answers at once. Delivery settings are the server's defaults, and no key is newer
/// than the server the bench may be pointed at with `--server-bin` needs.
pub fn config_toml() -> String {
    config_toml_with(None)
}

/// The bench configuration, app A's incoming calls notified to `incoming` if given.
pub fn config_toml_with(incoming: Option<&str>) -> String {
    let app = |a: App| {
        let uri = match incoming {
            Some(u) if a.id == APP_A.id => format!("incoming_call_uri = \"{u}\"\n"),
            _ => String::new(),
        };
        format!(
            r#"[[apps]]
app_id = "{}"
tenant_id = "{TENANT}"
client_secret = "{}"
roles = ["Calls.Initiate.All", "Calls.InitiateGroupCall.All", "Calls.JoinGroupCall.All",
         "Calls.JoinGroupCallAsGuest.All", "Calls.AccessMedia.All"]
max_concurrent_calls = 1000000
{uri}"#,
            a.id, a.secret
        )
    };
    format!(
        r#"[admin]
token = "{ADMIN_TOKEN}"

{}
{}
[[parties]]
id = "{ANSWERER}"
kind = "user"
display_name = "Bench answerer"
behavior = "answer"
answer_after_ms = 0
"#,
        app(APP_A),
        app(APP_B)
    )
}

/// A server the bench started; stopped (SIGTERM, then SIGKILL) when dropped or by [`stop`].
///
/// [`stop`]: Server::stop
pub struct Server {
    pub url: String,
    /// Where its SIP side listens (`HOST:PORT`), when it has one.
    pub sip: Option<String>,
    pub pid: Option<u32>,
    child: Option<Child>,
}

impl Server {
    /// A server someone else runs: no process to watch unless its pid is given.
    pub fn external(url: &str, pid: Option<u32>) -> Self {
        Server {
            url: url.trim_end_matches('/').to_string(),
            sip: None,
            pid,
            child: None,
        }
    }

    /// Starts `program args...` and waits for its `... listening on http://HOST:PORT` line.
    async fn spawn(program: &Path, args: &[String], log: &Path) -> anyhow::Result<Self> {
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = Command::new(program)
            .args(args)
            .env("SWITCHBOARD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let pid = child.id();
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut sip = None;
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(i) = line.find("sip on udp://") {
                    sip = Some(line[i + "sip on udp://".len()..].trim().to_string());
                }
                if let Some(i) = line.find("listening on http://") {
                    return Ok(line[i + "listening on ".len()..].trim().to_string());
                }
            }
            bail!(
                "the server exited before it was ready; see {}",
                log.display()
            )
        })
        .await
        .context("the server did not say it was listening within 60 s")??;
        // Keep reading stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Server {
            url,
            sip,
            pid,
            child: Some(child),
        })
    }

    /// Starts Switchboard with the bench configuration on a fresh store in `dir`.
    pub async fn switchboard(
        binary: &Path,
        dir: &Path,
        store: &str,
        virtual_clock: bool,
    ) -> anyhow::Result<Self> {
        Self::switchboard_with(binary, dir, store, virtual_clock, &config_toml()).await
    }

    /// Starts Switchboard with configuration `config` on a fresh store in `dir`.
    pub async fn switchboard_with(
        binary: &Path,
        dir: &Path,
        store: &str,
        virtual_clock: bool,
        config_text: &str,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let config = dir.join("switchboard.toml");
        std::fs::write(&config, config_text)?;
        let store = match store {
            "memory" => "memory".to_string(),
            _ => format!("sqlite://{}", dir.join("sb.db").display()),
        };
        let clock = if virtual_clock { "virtual" } else { "real" };
        let args = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            &store,
            "--config",
            &config.display().to_string(),
            "--clock",
            clock,
        ]
        .map(String::from);
        Self::spawn(binary, &args, &dir.join("switchboard.log")).await
    }

    /// Starts the bare baseline server: this binary's `bare-server` subcommand.
    pub async fn bare(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let me = std::env::current_exe()?;
        Self::spawn(&me, &["bare-server".to_string()], &dir.join("bare.log")).await
    }

    /// CPU seconds the server process has used so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        crate::stats::cpu_seconds(Some(self.pid?))
    }

    pub fn vm_bytes(&self, field: &str) -> Option<u64> {
        crate::stats::vm_bytes(self.pid?, field)
    }

    /// SIGTERM, then up to 15 s for a clean exit, then SIGKILL.
    pub async fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .is_err()
        {
            eprintln!("the server did not stop within 15 s of SIGTERM; killing it");
            let _ = child.kill().await;
        }
    }
}

/// The workspace's release binary of Switchboard, built first if it is missing or older than
/// the server's sources (`src/`, `Cargo.toml`, `Cargo.lock`); checked once per run.
pub fn switchboard_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    static CHECKED: OnceLock<PathBuf> = OnceLock::new();
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = CHECKED.get() {
        return Ok(p.clone());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the bench lives inside the workspace")
        .to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let binary = target.join("release").join("switchboard");
    let built = std::fs::metadata(&binary).and_then(|m| m.modified()).ok();
    let sources = newest_mtime(&root.join("src"))
        .into_iter()
        .chain(["Cargo.toml", "Cargo.lock"].iter().filter_map(|f| {
            std::fs::metadata(root.join(f))
                .and_then(|m| m.modified())
                .ok()
        }))
        .max();
    if built.is_none() || sources > built {
        eprintln!("building {} ...", binary.display());
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let ok = std::process::Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "--release",
                "-p",
                "switchboard",
                "--bin",
                "switchboard",
            ])
            .status()
            .context("cannot run cargo")?
            .success();
        if !ok {
            bail!("cargo build --release -p switchboard failed");
        }
    }
    Ok(CHECKED.get_or_init(|| binary).clone())
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bench_configuration_is_one_switchboard_accepts() {
        let s = switchboard::config::Settings::from_toml(&super::config_toml()).unwrap();
        assert_eq!(s.apps.len(), 2);
        assert_eq!(s.apps[0].max_concurrent_calls, 1_000_000);
        assert_eq!(s.apps[1].max_concurrent_calls, 1_000_000);
        assert_eq!(s.parties[0].answer_after_ms, Some(0));
    }
}
