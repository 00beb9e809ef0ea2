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

/// A configuration file in `dir` with `text`.
fn write_config(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

const APP: &str = "[[apps]]
app_id = \"3f1b0000-0000-4000-8000-000000000001\"
tenant_id = \"9a7c0000-0000-4000-8000-000000000001\"
client_secret = \"s3cret\"
";

#[test]
fn config_check_points_at_a_mistyped_role_and_exits_1() {
    let dir = TempDir::new();
    let file = write_config(
        &dir.0,
        "bot.toml",
        &format!("{APP}roles = [\"Calls.Initiate.All\", \"Calls.Initate.All\"]\n"),
    );
    let out = run(&["config", "check", &file], &[]);
    assert_eq!(out.status.code(), Some(1));
    let said = stderr(&out);
    assert!(
        said.starts_with(&format!(
            "{file}:5:32: apps[0].roles[1]: unknown role \"Calls.Initate.All\"; did you mean \"Calls.Initiate.All\"?"
        )),
        "{said}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn config_check_reports_every_mistake_with_its_line_and_serve_refuses_them_alike() {
    let dir = TempDir::new();
    let text = format!(
        "public_url = \"ftp://switchboard.example.com\"
{APP}incoming_call_uri = \"bot.example.com/api/calls\"
{APP}
[[parties]]
id = \"+15550100\"
kind = \"phone\"

[[parties]]
id = \"tel:+1 555-0100\"
kind = \"phone\"

[[meetings]]
join_meeting_id = \"1234567890\"
parties = [\"+15550100\", \"5e9f0000-0000-4000-8000-0000000000ff\"]

[[meetings]]
join_meeting_id = \"1234567890\"
"
    );
    let file = write_config(&dir.0, "bot.toml", &text);
    let out = run(&["config", "check", &file], &[]);
    assert_eq!(out.status.code(), Some(1));
    let said = stderr(&out);
    let lines: Vec<&str> = said.lines().collect();
    let expected = [
        "bot.toml:1:14: public_url: ftp://switchboard.example.com/ is not an http or https URL",
        "bot.toml:6:21: apps[0].incoming_call_uri: \"bot.example.com/api/calls\" is not a URL",
        "bot.toml:8:10: apps[1].app_id: app 3f1b0000-0000-4000-8000-000000000001 is configured twice (first at line 3)",
        "bot.toml:17:6: parties[1].id: party tel:+1 555-0100 is configured twice",
        "bot.toml:22:25: meetings[0].parties[1]: no [[parties]] entry has the id \"5e9f0000-0000-4000-8000-0000000000ff\"",
        "bot.toml:25:19: meetings[1].join_meeting_id: meeting 1234567890 is configured twice (first at line 21)",
    ];
    assert_eq!(lines.len(), expected.len() + 1, "{said}");
    for (line, want) in lines.iter().zip(expected) {
        assert!(
            line.starts_with(&format!("{}/{want}", dir.0.display())),
            "{line}\nwanted {want}"
        );
    }
    assert!(lines[6].ends_with("bot.toml: 6 problems"), "{said}");

    // serve refuses the file at start with the same lines, before it listens.
    let served = run(
        &[
            "serve",
            "--config",
            &file,
            "--store",
            "memory",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert!(!served.status.success());
    assert!(!String::from_utf8_lossy(&served.stdout).contains("listening"));
    let refused = stderr(&served);
    for line in &lines[..6] {
        assert!(refused.contains(line), "serve said: {refused}\nnot: {line}");
    }
}

#[test]
fn config_check_reports_an_unknown_key_and_a_syntax_error_where_they_are() {
    let dir = TempDir::new();
    let file = write_config(&dir.0, "typo.toml", &format!("{APP}rols = []\n"));
    let said = stderr(&run(&["config", "check", &file], &[]));
    assert!(
        said.starts_with(&format!("{file}:5:1: unknown field `rols`")),
        "{said}"
    );
    let file = write_config(&dir.0, "broken.toml", "[[apps]]\napp_id = \"a\n");
    let out = run(&["config", "check", &file], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(&format!("{file}:2:")),
        "{}",
        stderr(&out)
    );
    let missing = dir.0.join("nowhere.toml").display().to_string();
    let out = run(&["config", "check", &missing], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));
}

#[test]
fn config_check_accepts_a_good_file_and_says_what_it_holds() {
    let dir = TempDir::new();
    let file = write_config(&dir.0, "switchboard.toml", &config_toml(""));
    let out = run(&["config", "check", &file], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("{file}: OK (3 apps, 12 parties, 1 meeting, 0 trusted issuers)")
    );
}

/// A port free now (bound, then let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn every_serve_flag_can_come_from_the_environment_and_a_flag_wins() {
    let dir = TempDir::new();
    let config = write_config(&dir.0, "switchboard.toml", &config_toml(""));
    let other = write_config(
        &dir.0,
        "other.toml",
        &config_toml("").replace(ADMIN, "other-admin-token"),
    );
    let listen = format!("127.0.0.1:{}", free_port());
    let db = dir.0.join("from-env.db");
    let store = format!("sqlite://{}", db.display());
    let env = [
        ("SWITCHBOARD_LISTEN", listen.as_str()),
        ("SWITCHBOARD_STORE", store.as_str()),
        ("SWITCHBOARD_CONFIG", config.as_str()),
        ("SWITCHBOARD_CLOCK", "virtual"),
    ];
    // Whether the clock is virtual, read with the admin token the server's config has.
    let clock = |base: String, admin: &'static str| async move {
        let r = reqwest::Client::new()
            .get(format!("{base}/_switchboard/v1/clock"))
            .bearer_auth(admin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "the admin token of the config in force");
        r.json::<serde_json::Value>().await.unwrap()["virtual"].clone()
    };
    let server = Running::start(&["serve"], &env);
    assert_eq!(server.base, format!("http://{listen}"));
    assert_eq!(clock(server.base.clone(), ADMIN).await, true);
    assert!(db.exists(), "the store is the environment's");
    drop(server);
    std::fs::remove_file(&db).unwrap();

    let flags = Running::start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "memory",
            "--clock",
            "real",
            "--config",
            &other,
        ],
        &env,
    );
    assert_ne!(flags.base, format!("http://{listen}"));
    assert_eq!(clock(flags.base.clone(), "other-admin-token").await, false);
    assert!(!db.exists(), "the memory store of the flag was used");
}

#[test]
fn serve_help_describes_every_option_with_its_variable_default_and_an_example() {
    let out = run(&["serve", "--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needed in [
        "--listen <ADDR>",
        "[env: SWITCHBOARD_LISTEN=]",
        "[default: 127.0.0.1:8080]",
        "--store <URL>",
        "[env: SWITCHBOARD_STORE=]",
        "[default: sqlite://switchboard-data/switchboard.db]",
        "--config <FILE>",
        "[env: SWITCHBOARD_CONFIG=]",
        "--clock <CLOCK>",
        "[env: SWITCHBOARD_CLOCK=]",
        "[default: real]",
        "SWITCHBOARD_PUBLIC_URL",
        "SWITCHBOARD_ADMIN_TOKEN",
        "SWITCHBOARD_LOG",
        "SWITCHBOARD_LOG_FORMAT",
    ] {
        assert!(help.contains(needed), "no {needed} in:\n{help}");
    }
    assert!(
        help.matches("(e.g. ").count() >= 4,
        "an example per option:\n{help}"
    );
}

#[tokio::test]
async fn config_init_writes_a_starter_that_passes_the_check_and_serves() {
    let dir = TempDir::new();
    let file = dir.0.join("switchboard.toml").display().to_string();
    let out = run(&["config", "init", &file], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8(out.stdout).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the file holds a secret: mode {mode:o}");

    let checked = run(&["config", "check", &file], &[]);
    assert!(checked.status.success(), "{}", stderr(&checked));

    // The app it wrote gets a token from a server started on it.
    let text: toml::Table = toml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let app = text["apps"].as_array().unwrap()[0].as_table().unwrap();
    let (app_id, tenant, secret) = (
        app["app_id"].as_str().unwrap(),
        app["tenant_id"].as_str().unwrap(),
        app["client_secret"].as_str().unwrap(),
    );
    assert!(said.contains(app_id), "says the app id: {said}");
    assert!(
        !said.contains(secret),
        "the secret stays in the file: {said}"
    );
    let server = Running::start(
        &[
            "serve",
            "--config",
            &file,
            "--store",
            "memory",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let r = reqwest::Client::new()
        .post(format!("{}/{tenant}/oauth2/v2.0/token", server.base))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", app_id),
            ("client_secret", secret),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

#[test]
fn config_init_leaves_an_existing_file_alone_unless_forced() {
    let dir = TempDir::new();
    let file = write_config(&dir.0, "switchboard.toml", "# mine\n");
    let out = run(&["config", "init", &file], &[]);
    assert_eq!(out.status.code(), Some(1));
    let said = stderr(&out);
    assert!(
        said.contains("exists") && said.contains("--force"),
        "{said}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "# mine\n");

    let out = run(&["config", "init", "--force", &file], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(run(&["config", "check", &file], &[]).status.success());

    let printed = run(&["config", "init", "-"], &[]);
    assert!(printed.status.success());
    assert!(
        String::from_utf8(printed.stdout)
            .unwrap()
            .contains("[[apps]]")
    );
}

#[test]
fn serve_refuses_a_public_url_from_the_environment_that_is_not_a_url() {
    let out = run(
        &["serve", "--store", "memory", "--listen", "127.0.0.1:0"],
        &[("SWITCHBOARD_PUBLIC_URL", "localhost:8080")],
    );
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(
        said.contains("SWITCHBOARD_PUBLIC_URL: localhost:8080 is not an http or https URL; did you mean \"http://localhost:8080\"?"),
        "{said}"
    );
}

#[test]
fn exec_runs_a_command_against_a_server_made_for_it_and_passes_its_exit_status_on() {
    // The command checks what a test suite relies on: the server answers on both schemes (the
    // HTTPS one trusted through the variables exec sets), the token is the app's, the virtual
    // clock moves only when told; then it exits 7.
    let script = r#"
set -eu
curl -sf "$SWITCHBOARD_URL/healthz" >/dev/null
curl -sf "$SWITCHBOARD_HTTPS_URL/healthz" >/dev/null
curl -sf --cacert "$SWITCHBOARD_CA_FILE" "$SWITCHBOARD_HTTPS_URL/healthz" >/dev/null
python3 -c 'import os, urllib.request; urllib.request.urlopen(os.environ["SWITCHBOARD_HTTPS_URL"] + "/healthz")'
test "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $SWITCHBOARD_TOKEN" \
  "$SWITCHBOARD_URL/v1.0/communications/calls/00000000-0000-4000-8000-000000000000")" = 404
test "$(curl -s -o /dev/null -w '%{http_code}' -d grant_type=client_credentials \
  -d client_id="$SWITCHBOARD_APP_ID" -d client_secret="$SWITCHBOARD_CLIENT_SECRET" \
  --data-urlencode scope=https://graph.microsoft.com/.default \
  "$SWITCHBOARD_HTTPS_URL/$SWITCHBOARD_TENANT_ID/oauth2/v2.0/token")" = 200
before=$(curl -s "$SWITCHBOARD_URL/_switchboard/v1/clock" | python3 -c 'import json,sys; print(json.load(sys.stdin)["now"])')
sleep 1.1
after=$(curl -s "$SWITCHBOARD_URL/_switchboard/v1/clock" | python3 -c 'import json,sys; print(json.load(sys.stdin)["now"])')
test "$before" = "$after"
curl -s "$SWITCHBOARD_URL/_switchboard/v1/ca.pem" | grep -q 'BEGIN CERTIFICATE'
echo "$SWITCHBOARD_URL" > "$OUT"
exit 7
"#;
    let dir = TempDir::new();
    let out_file = dir.0.join("url");
    let out = switchboard(
        &["exec", "--", "sh", "-c", script],
        &[("OUT", out_file.to_str().unwrap())],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let url = std::fs::read_to_string(&out_file).unwrap();
    // Once the command is done, so is the server.
    let gone = std::net::TcpStream::connect(url.trim().trim_start_matches("http://"));
    assert!(gone.is_err(), "the server still listens at {url}");

    // A command that cannot be run is exec's own failure, said once.
    let out = run(&["exec", "--", "/no/such/command"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot run /no/such/command"),
        "{}",
        stderr(&out)
    );
    // No command at all: a usage error.
    let out = run(&["exec"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
