//! `switchboard exec -- COMMAND...`: a server for the length of one command, the way a bot's
//! test suite wants one in any language's CI. The server starts (by default on a free port, with
//! a memory store and a virtual clock), the command runs with what it needs to reach it in its
//! environment, and the command's exit status is the exit status; the server stops after it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::app::{Application, ServeOptions};
use crate::config::Settings;

/// What the command finds in its environment (`docs/TESTING-BOTS.md` lists them).
pub mod vars {
    /// The server's base URL over plain HTTP: `http://127.0.0.1:PORT`.
    pub const URL: &str = "SWITCHBOARD_URL";
    /// The same port over HTTPS: `https://127.0.0.1:PORT` (what the SDKs need).
    pub const HTTPS_URL: &str = "SWITCHBOARD_HTTPS_URL";
    pub const APP_ID: &str = "SWITCHBOARD_APP_ID";
    pub const TENANT_ID: &str = "SWITCHBOARD_TENANT_ID";
    pub const CLIENT_SECRET: &str = "SWITCHBOARD_CLIENT_SECRET";
    /// A Graph app token for that app.
    pub const TOKEN: &str = "SWITCHBOARD_TOKEN";
    /// The local certificate authority's certificate (PEM).
    pub const CA_FILE: &str = "SWITCHBOARD_CA_FILE";
    /// The control API's admin token, when the configuration sets one.
    pub const ADMIN_TOKEN: &str = "SWITCHBOARD_ADMIN_TOKEN";
}

/// Where the system's trusted authorities usually are (Debian and Ubuntu, Fedora and RHEL,
/// Alpine and others, macOS with Homebrew's OpenSSL).
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/usr/local/etc/openssl/cert.pem",
];

/// Runs `command` against a server built from `settings` and `opts`; returns its exit status
/// (128 + the signal's number when a signal ended it).
pub async fn run(
    settings: Settings,
    opts: &ServeOptions,
    command: &[OsString],
) -> anyhow::Result<i32> {
    let (program, args) = command
        .split_first()
        .context("no command given: switchboard exec [OPTIONS] -- COMMAND [ARGS...]")?;
    let app = Application::build(settings.clone(), opts).await?;
    let addr = app.local_addr();
    let state = app.state();
    let dir = Scratch::new()?;
    let mut env: Vec<(&str, String)> = vec![
        (vars::URL, format!("http://{addr}")),
        (vars::HTTPS_URL, format!("https://{addr}")),
    ];
    if let Some(a) = settings.apps.first() {
        let token = {
            let keys = state.keys.read().expect("key ring lock");
            crate::auth::tokens::issue_app_token(&keys, a)
        };
        env.extend([
            (vars::APP_ID, a.app_id.clone()),
            (vars::TENANT_ID, a.tenant_id.clone()),
            (vars::CLIENT_SECRET, a.client_secret.expose().to_string()),
            (vars::TOKEN, token),
        ]);
    }
    if let Some(t) = &settings.admin.token {
        env.push((vars::ADMIN_TOKEN, t.expose().to_string()));
    }
    if let Some(pem) = &state.ca_pem {
        env.extend(trust(&dir.0, pem)?);
    }
    let stop = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(stop.clone()));
    let outcome = async {
        ready(addr).await?;
        eprintln!(
            "switchboard exec: serving http://{addr} (and https on the same port) for {}",
            program.to_string_lossy()
        );
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .spawn()
            .with_context(|| format!("cannot run {}", program.to_string_lossy()))?;
        let status = tokio::select! {
            s = child.wait() => s?,
            _ = crate::app::shutdown_signal() => {
                // Passed on: the command ends first, then the server.
                if let Some(pid) = child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
                child.wait().await?
            }
        };
        anyhow::Ok(exit_code(status))
    }
    .await;
    stop.cancel();
    match server.await {
        Ok(Err(e)) => tracing::warn!("the server stopped with an error: {e:#}"),
        Err(e) => tracing::warn!("the server task failed: {e}"),
        Ok(Ok(())) => {}
    }
    outcome
}

/// Waits until the server answers `/healthz` (at most 30 s).
async fn ready(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/healthz");
    for _ in 0..300 {
        if let Ok(r) = http.get(&url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the server at {addr} did not become ready within 30 s")
}

/// The variables that make the command's TLS clients trust the local authority: its
/// certificate, a bundle of it with the authorities they trusted already (`SSL_CERT_FILE` as it
/// was, or the system's) for clients that take one file in place of the system's, and Node's
/// extra authorities (those it was given already, and the local one).
fn trust(dir: &Path, pem: &str) -> anyhow::Result<Vec<(&'static str, String)>> {
    let before = |var: &str| std::env::var_os(var).map(PathBuf::from);
    let ca = write(dir, "ca.pem", &[], pem)?;
    let system = SYSTEM_BUNDLES.iter().map(PathBuf::from);
    let all = write(
        dir,
        "ca-bundle.pem",
        &before("SSL_CERT_FILE")
            .into_iter()
            .chain(system)
            .collect::<Vec<_>>(),
        pem,
    )?;
    // Node adds these to its own roots: the ones the caller gave it already, and the local one.
    let node = write(
        dir,
        "node-extra-ca.pem",
        &before("NODE_EXTRA_CA_CERTS")
            .into_iter()
            .collect::<Vec<_>>(),
        pem,
    )?;
    Ok(vec![
        (vars::CA_FILE, ca),
        ("SSL_CERT_FILE", all.clone()),
        ("REQUESTS_CA_BUNDLE", all.clone()),
        ("CURL_CA_BUNDLE", all),
        ("NODE_EXTRA_CA_CERTS", node),
    ])
}

/// Writes `dir/name`: the first of `before` that can be read (if any), then `pem`; gives its
/// path.
fn write(dir: &Path, name: &str, before: &[PathBuf], pem: &str) -> anyhow::Result<String> {
    let mut text = before
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(pem);
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.display().to_string())
}

/// The shell's convention: the code, or 128 + the signal that ended the process.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// A folder of the system's temporary folder for this run's files, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "switchboard-exec-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
