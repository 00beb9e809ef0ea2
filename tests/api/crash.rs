//! The real binary: killed with SIGKILL while notifications are queued, restarted on the same
//! store; and its logs, read for secrets.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

struct Server {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Server {
    fn start(dir: &std::path::Path, listen: &str, log: &str) -> Server {
        Server::start_with(dir, listen, log, &[("SWITCHBOARD_LOG", "debug")])
    }

    /// The server with `env` set (the log's level and format, say), its log in `dir/log`.
    fn start_with(dir: &std::path::Path, listen: &str, log: &str, env: &[(&str, &str)]) -> Server {
        let cfg = dir.join("switchboard.toml");
        std::fs::write(&cfg, config_toml("")).unwrap();
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(log))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args([
                "serve", "--listen", listen, "--clock", "virtual", "--config",
            ])
            .arg(&cfg)
            .arg("--store")
            .arg(format!("sqlite://{}/sb.db", dir.display()))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
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
        Server {
            child,
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Resp {
        let mut rb = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        into_resp(rb.send().await.unwrap()).await
    }

    async fn token(&self) -> String {
        let r = token_response(&self.http, &self.base, APP_A).await;
        r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn advance(&self, seconds: f64) {
        let r = self
            .send(
                "POST",
                "/_switchboard/v1/clock/advance",
                ADMIN,
                Some(json!({"seconds": seconds})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }

    fn port(&self) -> u16 {
        self.base.rsplit(':').next().unwrap().parse().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn p2p(callback: &str) -> Value {
    json!({
        "callbackUri": callback,
        "targets": [{"identity": {"user": {"id": ALICE}}}],
        "requestedModalities": ["audio"],
        "mediaConfig": {},
        "tenantId": TENANT,
    })
}

#[tokio::test]
async fn nothing_is_lost_when_the_server_is_killed_with_notifications_queued() {
    let dir = TempDir::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let callback = format!("http://127.0.0.1:{port}/api/calls");
    let srv = Server::start(&dir.0, "127.0.0.1:0", "server.log");
    let token = srv.token().await;
    let mut ids = vec![];
    for _ in 0..5 {
        let r = srv
            .send(
                "POST",
                "/v1.0/communications/calls",
                &token,
                Some(p2p(&callback)),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    srv.advance(1.0).await;
    for id in &ids[..3] {
        assert_eq!(
            srv.send(
                "DELETE",
                &format!("/v1.0/communications/calls/{id}"),
                &token,
                None
            )
            .await
            .status,
            204
        );
    }
    srv.advance(1.0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let srv_port = srv.port();
    drop(srv); // SIGKILL

    let receiver = Receiver::start_on(&format!("127.0.0.1:{port}")).await;
    let srv = Server::start(&dir.0, &format!("127.0.0.1:{srv_port}"), "server.log");
    let want_live = ["establishing", "established"];
    let want_ended = ["establishing", "established", "terminating", "terminated"];
    let delivered = |i: usize, id: &str| {
        let mut s: Vec<String> = receiver.states(id).into_iter().map(|(_, s)| s).collect();
        s.dedup();
        s == if i < 3 {
            &want_ended[..]
        } else {
            &want_live[..]
        }
    };
    for _ in 0..40 {
        if ids.iter().enumerate().all(|(i, id)| delivered(i, id)) {
            break;
        }
        srv.advance(60.0).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, id) in ids.iter().enumerate() {
        assert!(delivered(i, id), "call {i}: {:?}", receiver.states(id));
    }
    let token = srv.token().await;
    let g = srv
        .send(
            "GET",
            &format!("/v1.0/communications/calls/{}", ids[4]),
            &token,
            None,
        )
        .await;
    assert_eq!(
        (g.status, g.body["state"].as_str()),
        (200, Some("established"))
    );
    // A live call read back is a working call: the bot can still hang it up.
    let path = format!("/v1.0/communications/calls/{}", ids[4]);
    assert_eq!(srv.send("DELETE", &path, &token, None).await.status, 204);
    receiver
        .wait_for(&ids[4], |s| has(s, "deleted", "terminated"))
        .await;
    assert_eq!(receiver.end_reason(&ids[4]), Some((200, 5001)));
}

#[tokio::test]
async fn the_logs_hold_no_secret_token_or_key() {
    let dir = TempDir::new();
    let srv = Server::start(&dir.0, "127.0.0.1:0", "server.log");
    let token = srv.token().await;
    let receiver = Receiver::start().await;
    let r = srv
        .send(
            "POST",
            "/v1.0/communications/calls",
            &token,
            Some(p2p(&receiver.url())),
        )
        .await;
    let id = r.body["id"].as_str().unwrap().to_string();
    srv.advance(1.0).await;
    srv.send(
        "DELETE",
        &format!("/v1.0/communications/calls/{id}"),
        &token,
        None,
    )
    .await;
    srv.send(
        "GET",
        "/v1.0/communications/calls/x",
        "garbage-token-value",
        None,
    )
    .await;
    let bad = srv
        .http
        .post(format!("{}/{TENANT}/oauth2/v2.0/token", srv.base))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", APP_A),
            ("client_secret", "guessed-secret-value"),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    receiver
        .wait_for(&id, |s| has(s, "deleted", "terminated"))
        .await;
    let jwt = receiver.received()[0].headers["authorization"]
        .to_str()
        .unwrap()
        .to_string();
    drop(srv);
    let log = std::fs::read_to_string(dir.0.join("server.log")).unwrap();
    assert!(log.len() > 100, "debug logging produced lines: {log}");
    for secret in [
        "secret-a",
        ADMIN,
        "guessed-secret-value",
        "garbage-token-value",
        &token[token.len() - 40..],
        &jwt[jwt.len() - 40..],
        "PRIVATE KEY",
    ] {
        assert!(!log.contains(secret), "the log contains {secret}");
    }
}

#[tokio::test]
async fn the_token_command_prints_a_token_the_server_accepts_and_rotation_keeps_it_valid() {
    let dir = TempDir::new();
    let srv = Server::start(&dir.0, "127.0.0.1:0", "server.log");
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(args)
            .arg("--store")
            .arg(format!("sqlite://{}/sb.db", dir.0.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let cfg = dir.0.join("switchboard.toml");
    let token = cli(&[
        "token",
        "--app-id",
        APP_A,
        "--config",
        cfg.to_str().unwrap(),
    ]);
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let receiver = Receiver::start().await;
    let r = srv
        .send(
            "POST",
            "/v1.0/communications/calls",
            token,
            Some(p2p(&receiver.url())),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // After a rotation the old token still works and a new one is signed with the new key.
    let said = cli(&["keys", "rotate"]);
    assert!(said.contains("new signing key"), "{said}");
    // The server re-reads the key file within a few seconds.
    let jwks_url = format!("{}/{TENANT}/discovery/v2.0/keys", srv.base);
    let mut published = 0;
    for _ in 0..100 {
        let keys: Value = srv
            .http
            .get(&jwks_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        published = keys["keys"].as_array().unwrap().len();
        if published == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(published, 2, "both keys are published");
    let again = srv
        .send(
            "POST",
            "/v1.0/communications/calls",
            token,
            Some(p2p(&receiver.url())),
        )
        .await;
    assert_eq!(again.status, 201, "{}", again.text);
    let fresh = srv.token().await;
    let old_kid = jsonwebtoken::decode_header(token).unwrap().kid;
    let new_kid = jsonwebtoken::decode_header(&fresh).unwrap().kid;
    assert_ne!(old_kid, new_kid);
}

#[tokio::test]
async fn a_group_call_and_a_meeting_carry_on_after_the_server_is_killed() {
    let dir = TempDir::new();
    let receiver = Receiver::start().await;
    let callback = receiver.url_for("/api/calls");
    let srv = Server::start(&dir.0, "127.0.0.1:0", "server.log");
    let token = srv.token().await;
    let mut group = p2p(&callback);
    group["targets"] = json!([
        {"identity": {"user": {"id": ALICE}}},
        {"identity": {"user": {"id": BOB}}},
    ]);
    let r = srv
        .send("POST", "/v1.0/communications/calls", &token, Some(group))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let group_id = r.body["id"].as_str().unwrap().to_string();
    let mut join = p2p(&callback);
    join.as_object_mut().unwrap().remove("targets");
    join["meetingInfo"] = json!({
        "@odata.type": "#microsoft.graph.joinMeetingIdMeetingInfo",
        "joinMeetingId": MEETING, "passcode": MEETING_PASSCODE,
    });
    let r = srv
        .send("POST", "/v1.0/communications/calls", &token, Some(join))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let meeting_call = r.body["id"].as_str().unwrap().to_string();
    srv.advance(1.0).await;
    let srv_port = srv.port();
    drop(srv); // SIGKILL

    let srv = Server::start(&dir.0, &format!("127.0.0.1:{srv_port}"), "server.log");
    let token = srv.token().await;
    let meeting = srv
        .send(
            "GET",
            &format!("/_switchboard/v1/meetings/{MEETING}"),
            ADMIN,
            None,
        )
        .await;
    let kinds: Vec<&str> = meeting.body["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["user", "user", "bot"], "{}", meeting.text);
    let listed = srv
        .send(
            "GET",
            &format!("/v1.0/communications/calls/{group_id}/participants"),
            &token,
            None,
        )
        .await;
    assert_eq!(listed.body["value"].as_array().map(Vec::len), Some(3));
    for party in [BOB, ALICE] {
        let r = srv
            .send(
                "POST",
                &format!("/_switchboard/v1/parties/{party}/hangup"),
                ADMIN,
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    srv.advance(1.0).await;
    receiver
        .wait_for(&group_id, |s| has(s, "deleted", "terminated"))
        .await;
    assert_eq!(receiver.end_reason(&group_id), Some((200, 5002)));
    let still = srv
        .send(
            "GET",
            &format!("/v1.0/communications/calls/{meeting_call}"),
            &token,
            None,
        )
        .await;
    assert_eq!(still.body["state"], "established", "{}", still.text);
}

/// The log at its default level, as JSON: one line per Graph request (method, route, status,
/// latency, call id, app id, request id) and one per delivery attempt (call id, sequence, host,
/// outcome, latency); no token or secret.
#[tokio::test]
async fn each_graph_request_and_delivery_attempt_is_one_log_line_without_secrets() {
    let dir = TempDir::new();
    let env = [
        ("SWITCHBOARD_LOG", "info"),
        ("SWITCHBOARD_LOG_FORMAT", "json"),
    ];
    let server = Server::start_with(&dir.0, "127.0.0.1:0", "server.log", &env);
    let receiver = Receiver::start().await;
    let token = server.token().await;
    let r = server
        .send(
            "POST",
            "/v1.0/communications/calls",
            &token,
            Some(p2p(&receiver.url())),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    receiver
        .wait_for(&id, |s| has(s, "updated", "established"))
        .await;
    let path = format!("/v1.0/communications/calls/{id}");
    assert_eq!(server.send("DELETE", &path, &token, None).await.status, 204);
    receiver
        .wait_for(&id, |s| has(s, "deleted", "terminated"))
        .await;
    assert_eq!(server.send("GET", &path, &token, None).await.status, 404);
    // The attempt of the last notification is logged once it is back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = std::fs::read_to_string(dir.0.join("server.log")).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let of = |message: &str| -> Vec<&Value> {
        lines.iter().filter(|l| l["message"] == message).collect()
    };
    let requests: Vec<_> = of("graph request")
        .iter()
        .map(|l| {
            assert_eq!(l["app_id"], APP_A, "{l}");
            assert!(
                l["request_id"].as_str().is_some_and(|r| r.len() == 36),
                "{l}"
            );
            assert!(l["latency_ms"].as_f64().is_some(), "{l}");
            (
                l["method"].as_str().unwrap().to_string(),
                l["route"].as_str().unwrap().to_string(),
                l["status"].as_u64().unwrap(),
                l["call_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let req = |m: &str, route: &str, status| (m.to_string(), route.to_string(), status, id.clone());
    assert_eq!(
        requests,
        vec![
            req("POST", "Calls", 201),
            req("DELETE", "Call", 204),
            req("GET", "Call", 404)
        ]
    );
    let attempts: Vec<_> = of("delivery attempt")
        .iter()
        .map(|l| {
            assert_eq!(l["call_id"], id, "{l}");
            assert_eq!(l["outcome"], "delivered", "{l}");
            assert_eq!(l["status"], 202, "{l}");
            assert!(l["host"].as_str().unwrap().starts_with("127.0.0.1:"), "{l}");
            l["seq"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(
        attempts,
        vec![1, 2, 3, 4],
        "one line per notification attempted"
    );
    for secret in [token.as_str(), "secret-a", ADMIN] {
        assert!(!log.contains(secret), "the log holds a secret");
    }
}
