//! The command line as a user meets it: the real binary started with flags and environment
//! variables, a second server on a store already in use, the `token` and `keys` commands on a
//! store with no keys.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use crate::helpers::*;

/// The binary with `args`, its environment cleared of Switchboard's variables (the suite's own
/// environment must not change what a test sees) and then given `envs`.
fn switchboard(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("SWITCHBOARD_") {
            cmd.env_remove(name);
        }
    }
    cmd.envs(envs.iter().copied());
    cmd
}

/// Runs the binary to its end.
fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    switchboard(args, envs).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A `serve` that said it listens; killed when dropped.
struct Running {
    child: Child,
    base: String,
}

impl Running {
    fn start(args: &[&str], envs: &[(&str, &str)]) -> Running {
        let mut child = switchboard(args, envs)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("the server printed its listening line")
                .unwrap();
            if let Some(url) = line.strip_prefix("switchboard listening on ") {
                break url.trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Running { child, base }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sqlite(dir: &Path) -> String {
    format!("sqlite://{}/sb.db", dir.display())
}

#[test]
fn a_second_server_on_the_same_sqlite_store_is_refused_and_told_who_holds_it() {
    let dir = TempDir::new();
    let store = sqlite(&dir.0);
    let first = Running::start(
        &["serve", "--listen", "127.0.0.1:0", "--store", &store],
        &[],
    );
    let second = run(
        &["serve", "--listen", "127.0.0.1:0", "--store", &store],
        &[],
    );
    assert!(!second.status.success(), "the second server started");
    let said = stderr(&second);
    assert!(
        said.contains(&format!("{}/sb.db", dir.0.display())),
        "{said}"
    );
    assert!(said.contains("another Switchboard"), "{said}");
    assert!(
        said.contains(&format!("(process {})", first.child.id())),
        "names the holder: {said}"
    );
    assert!(
        !String::from_utf8_lossy(&second.stdout).contains("listening"),
        "the refused server never listened"
    );
    // A server that dies (SIGKILL) leaves no stale lock behind.
    drop(first);
    let _third = Running::start(
        &["serve", "--listen", "127.0.0.1:0", "--store", &store],
        &[],
    );
}

#[test]
fn token_and_keys_rotate_refuse_a_store_with_no_keys_and_create_none() {
    let dir = TempDir::new();
    let store = sqlite(&dir.0);
    for args in [
        &["token", "--app-id", switchboard::config::DEV_APP_ID][..],
        &["keys", "rotate"][..],
    ] {
        let out = run(&[args, &["--store", store.as_str()][..]].concat(), &[]);
        assert!(!out.status.success(), "{args:?} succeeded");
        let said = stderr(&out);
        assert!(said.contains("no signing keys"), "{args:?}: {said}");
        assert!(
            said.contains(&dir.0.display().to_string()),
            "{args:?} names the folder: {said}"
        );
        assert!(out.stdout.is_empty(), "{args:?} printed a token");
    }
    assert_eq!(
        std::fs::read_dir(&dir.0).unwrap().count(),
        0,
        "nothing was created"
    );
}

#[tokio::test]
async fn token_says_which_keys_signed_it_and_the_server_accepts_it() {
    let dir = TempDir::new();
    let store = sqlite(&dir.0);
    let server = Running::start(
        &["serve", "--listen", "127.0.0.1:0", "--store", &store],
        &[],
    );
    let out = run(
        &[
            "token",
            "--app-id",
            switchboard::config::DEV_APP_ID,
            "--store",
            &store,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let token = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(
        token.trim().split('.').count(),
        3,
        "only the token: {token}"
    );
    let said = stderr(&out);
    let key_file = dir.0.join("signing-keys.json");
    assert!(
        said.contains(&key_file.display().to_string()),
        "names the key file: {said}"
    );
    assert!(said.contains("development setup"), "{said}");
    let r = reqwest::Client::new()
        .get(format!(
            "{}/v1.0/communications/calls/{}",
            server.base,
            uuid::Uuid::new_v4()
        ))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "the token is accepted; the call is unknown"
    );
}
