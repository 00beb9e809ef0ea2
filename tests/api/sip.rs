//! Real calls over SIP against a real peer: sipp (Debian package `sip-tester`) plays the trunk
//! that takes Switchboard's INVITEs and the phone that calls in, with the scenario files in
//! `tests/sip/scenarios/` (each documents what it expects). Each test checks sipp's verdict (its
//! exit status: 0 when every message it expected came, in order, with the checks in the file)
//! and the bot's notifications with their end reasons.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::helpers::*;

const CALLS: &str = "/v1.0/communications/calls";
/// The number `[[sip.numbers]]` gives app A in these tests.
const APP_NUMBER: &str = "+15550123";
/// A phone number the trunk carries (no simulated party names it).
const TRUNK_NUMBER: &str = "+15557000";
/// A user reached over SIP (`sip_uri`).
const SIP_USER: &str = "5e9f0000-0000-4000-8000-0000000000a1";

/// A sipp process playing one scenario once.
struct Sipp {
    child: Child,
    name: String,
    trace: TempDir,
    /// Its SIP port.
    port: u16,
}

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/sip/scenarios/{name}.xml"))
}

/// `n` consecutive free UDP ports on loopback (sipp binds its media port and the next ones),
/// taken below Linux's ephemeral range (32768 and up), where the servers' own sockets land: a
/// port probed free there could be taken by a server's RTP socket before sipp binds it.
fn free_ports(n: u16) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..2000 {
        let k = NEXT.fetch_add(u32::from(n.max(2)), Ordering::Relaxed);
        let base = (20_000 + (start.wrapping_add(k) % 12_000)) as u16 & !1;
        let held: Vec<_> = (0..n)
            .map_while(|i| UdpSocket::bind(("127.0.0.1", base + i)).ok())
            .collect();
        let tcp = std::net::TcpListener::bind(("127.0.0.1", base));
        if held.len() == n as usize && tcp.is_ok() {
            return base;
        }
    }
    panic!("no {n} free consecutive ports on 127.0.0.1");
}

impl Sipp {
    /// Starts sipp on `scenario`; `peer` is where it sends its first request (a UAC), `args`
    /// what else the scenario takes (`-set name value`, `-s number`).
    fn start(name: &str, peer: Option<SocketAddr>, args: &[&str]) -> Sipp {
        Self::start_with(name, peer, args, &[])
    }

    /// As [`Sipp::start`], with `files` (name, bytes) put in sipp's working folder first: sipp
    /// reads what a scenario streams (`rtp_stream`) when it loads it.
    fn start_with(
        name: &str,
        peer: Option<SocketAddr>,
        args: &[&str],
        files: &[(&str, &[u8])],
    ) -> Sipp {
        let which = std::process::Command::new("sipp").arg("-v").output();
        assert!(
            which.is_ok(),
            "sipp is not installed: `apt-get install sip-tester` (.ci/run does)"
        );
        let port = free_ports(1);
        let media = free_ports(4);
        let control = free_ports(1);
        let trace = TempDir::new();
        for (file, bytes) in files {
            std::fs::write(trace.0.join(file), bytes).unwrap();
        }
        let mut cmd = Command::new("sipp");
        cmd.arg("-sf").arg(scenario(name));
        if let Some(p) = peer {
            cmd.arg(p.to_string());
        }
        cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-mp", &media.to_string()])
            .args(["-ci", "127.0.0.1", "-cp", &control.to_string()])
            .args(["-m", "1", "-nostdin", "-timeout", "30", "-timeout_error"])
            .args(["-trace_msg", "-message_file"])
            .arg(trace.0.join("messages.log"))
            .args(["-trace_err", "-error_file"])
            .arg(trace.0.join("errors.log"))
            .args(args)
            .env("TERM", "dumb")
            .current_dir(&trace.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = cmd.spawn().expect("sipp starts");
        Sipp {
            child,
            name: name.into(),
            trace,
            port,
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Waits for sipp to finish (at most `secs`) and asserts it passed; returns what it traced.
    async fn passes(mut self, secs: u64) -> String {
        let status = tokio::time::timeout(Duration::from_secs(secs), self.child.wait()).await;
        let log = |f: &str| std::fs::read_to_string(self.trace.0.join(f)).unwrap_or_default();
        let (messages, errors) = (log("messages.log"), log("errors.log"));
        match status {
            Ok(Ok(s)) if s.success() => messages,
            other => panic!(
                "sipp {} did not pass ({other:?}).\nerrors:\n{errors}\nmessages:\n{messages}",
                self.name
            ),
        }
    }
}

/// Switchboard with SIP on a free port, a trunk at `trunk` (if any) for every number, app A
/// behind [`APP_NUMBER`], and [`SIP_USER`] at `user` (if any); `extra` adds to `[sip]`.
async fn sip_app(trunk: Option<SocketAddr>, user: Option<SocketAddr>, extra: &str) -> TestApp {
    let app = spawn_app_with(Backend::Memory, &sip_config(trunk, user, extra)).await;
    assert!(app.sip.is_some(), "SIP listens");
    app
}

/// The `[sip]` configuration of [`sip_app`].
fn sip_config(trunk: Option<SocketAddr>, user: Option<SocketAddr>, extra: &str) -> String {
    let mut config = format!("[sip]\nlisten = \"127.0.0.1:0\"\n{extra}\n");
    if let Some(t) = trunk {
        config += &format!("[[sip.trunks]]\nname = \"sipp\"\naddress = \"{t}\"\n\n");
    }
    config += &format!("[[sip.numbers]]\nnumber = \"{APP_NUMBER}\"\napp_id = \"{APP_A}\"\n\n");
    if let Some(u) = user {
        config += &format!(
            "[[parties]]\nid = \"{SIP_USER}\"\nkind = \"user\"\ndisplay_name = \"Sipp\"\nsip_uri = \"sip:sipp@{u}\"\n\n"
        );
    }
    config
}

/// The (changeType, state) pairs of a call's notifications, and its end reason, once it ended.
async fn ended(app: &TestApp, id: &str) -> (Vec<(String, String)>, Option<(i64, i64)>) {
    let states = wait_long(app, id, |s| has(s, "deleted", "terminated")).await;
    (states, app.receiver.end_reason(id))
}

/// As `Receiver::wait_for`, for up to 20 s (SIP takes real time).
async fn wait_long(
    app: &TestApp,
    id: &str,
    pred: impl Fn(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    for _ in 0..1000 {
        let s = app.receiver.states(id);
        if pred(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.receiver.states(id)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The bot calls [`TRUNK_NUMBER`] and waits until the trunk answered: its token and the call.
async fn established(app: &TestApp) -> (String, String) {
    let token = app.token().await;
    let id = app.create(&token, TRUNK_NUMBER).await;
    let states = wait_long(app, &id, |s| {
        has(s, "updated", "established") || has(s, "deleted", "terminated")
    })
    .await;
    assert!(
        has(&states, "updated", "established"),
        "{states:?}, ended {:?}",
        app.receiver.end_reason(&id)
    );
    (token, id)
}

/// The bot hangs up (`DELETE`).
async fn hang_up(app: &TestApp, token: &str, id: &str) {
    let r = app
        .send("DELETE", &format!("{CALLS}/{id}"), Some(token), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
}

/// The bot answers an incoming call, callbacks to the receiver.
async fn answer(app: &TestApp, token: &str, id: &str) {
    act(
        app,
        token,
        id,
        "answer",
        app.answer_body(&app.receiver.url()),
    )
    .await;
}

/// The resource of the `deleted` notification that finished call `id`'s operation of type
/// `odata_type`, waiting up to `tries` × 20 ms (`null` if none came).
async fn finished_op(app: &TestApp, id: &str, odata_type: &str, tries: usize) -> Value {
    for _ in 0..tries {
        let found = app
            .receiver
            .notes(id)
            .into_iter()
            .map(|(_, n)| n)
            .find(|n| {
                n["changeType"] == "deleted" && n["resourceData"]["@odata.type"] == odata_type
            });
        if let Some(n) = found {
            return n["resourceData"].clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Value::Null
}

/// The SIP messages sipp traced, as their first lines (`INVITE sip:...`, `SIP/2.0 200 OK`).
fn first_lines(messages: &str) -> Vec<String> {
    let mut out = vec![];
    let mut next_is_first = false;
    for line in messages.lines() {
        if line.contains("message sent") || line.contains("message received") {
            next_is_first = true;
            continue;
        }
        if next_is_first && !line.trim().is_empty() {
            out.push(line.trim().to_string());
            next_is_first = false;
        }
    }
    out
}

#[tokio::test]
async fn the_bot_calls_a_phone_over_the_trunk_and_hangs_up() {
    let trunk = Sipp::start("uas_answer", None, &[]);
    let app = sip_app(Some(trunk.addr()), None, "").await;
    let token = app.token().await;
    let id = app.create(&token, TRUNK_NUMBER).await;
    let states = wait_long(&app, &id, |s| has(s, "updated", "established")).await;
    assert!(has(&states, "updated", "established"), "{states:?}");
    hang_up(&app, &token, &id).await;
    let (states, reason) = ended(&app, &id).await;
    assert_eq!(
        states,
        pairs(&[
            ("updated", "establishing"),
            ("updated", "established"),
            ("updated", "terminating"),
            ("deleted", "terminated"),
        ])
    );
    assert_eq!(reason, Some((200, 5001)));
    let messages = trunk.passes(15).await;
    let lines = first_lines(&messages);
    assert!(
        lines[0].starts_with(&format!("INVITE sip:{TRUNK_NUMBER}@")),
        "{lines:?}"
    );
    assert!(messages.contains("User-Agent: Switchboard/"), "{messages}");
    assert!(
        messages.contains("@switchboard"),
        "our own Call-ID domain: {messages}"
    );
    assert!(lines.iter().any(|l| l.starts_with("BYE ")), "{lines:?}");
}

#[tokio::test]
async fn a_phone_that_hangs_up_ends_the_call_with_the_pstn_reason() {
    let trunk = Sipp::start("uas_bye", None, &["-set", "hold_ms", "300"]);
    let app = sip_app(Some(trunk.addr()), None, "").await;
    let token = app.token().await;
    let id = app.create(&token, TRUNK_NUMBER).await;
    let (states, reason) = ended(&app, &id).await;
    assert!(has(&states, "updated", "established"), "{states:?}");
    assert_eq!(reason, Some((200, 560000)));
    trunk.passes(15).await;
}

#[tokio::test]
async fn each_final_failure_of_a_phone_call_has_its_pstn_end_reason() {
    for (status, code, subcode) in [
        (486, 486, 560486),
        (603, 603, 560603),
        (404, 404, 560404),
        (480, 480, 560480),
        (403, 403, 560403),
        (500, 500, 560500),
    ] {
        let trunk = Sipp::start(&format!("uas_{status}"), None, &[]);
        let app = sip_app(Some(trunk.addr()), None, "").await;
        let token = app.token().await;
        let id = app.create(&token, TRUNK_NUMBER).await;
        let (states, reason) = ended(&app, &id).await;
        assert_eq!(
            states,
            pairs(&[("updated", "establishing"), ("deleted", "terminated")]),
            "{status}"
        );
        assert_eq!(reason, Some((code, subcode)), "{status}");
        trunk.passes(15).await;
    }
}

#[tokio::test]
async fn a_user_reached_over_sip_fails_with_the_users_codes() {
    let peer = Sipp::start("uas_486", None, &[]);
    let app = sip_app(None, Some(peer.addr()), "").await;
    let token = app.token().await;
    let id = app.create(&token, SIP_USER).await;
    let (_, reason) = ended(&app, &id).await;
    assert_eq!(reason, Some((486, 8539)));
    let messages = peer.passes(15).await;
    assert!(
        first_lines(&messages)[0].starts_with("INVITE sip:sipp@"),
        "{messages}"
    );
}

#[tokio::test]
async fn ringing_past_the_timeout_cancels_the_invite() {
    let trunk = Sipp::start("uas_ring_forever", None, &[]);
    let app = sip_app(Some(trunk.addr()), None, "").await;
    let token = app.token().await;
    let id = app.create(&token, TRUNK_NUMBER).await;
    // Let the INVITE reach the trunk and ring, then move the call clock past the timeout.
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.advance(61.0).await;
    let (states, reason) = ended(&app, &id).await;
    assert_eq!(
        states,
        pairs(&[("updated", "establishing"), ("deleted", "terminated")])
    );
    assert_eq!(reason, Some((408, 10057)));
    let lines = first_lines(&trunk.passes(15).await);
    assert!(lines.iter().any(|l| l.starts_with("CANCEL ")), "{lines:?}");
}

#[tokio::test]
async fn the_bot_hanging_up_while_it_rings_cancels_the_invite() {
    let trunk = Sipp::start("uas_ring_forever", None, &[]);
    let app = sip_app(Some(trunk.addr()), None, "").await;
    let token = app.token().await;
    let id = app.create(&token, TRUNK_NUMBER).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    hang_up(&app, &token, &id).await;
    let (states, reason) = ended(&app, &id).await;
    assert_eq!(
        states,
        pairs(&[
            ("updated", "establishing"),
            ("updated", "terminating"),
            ("deleted", "terminated"),
        ])
    );
    assert_eq!(reason, Some((200, 5001)));
    let lines = first_lines(&trunk.passes(15).await);
    assert!(lines.iter().any(|l| l.starts_with("CANCEL ")), "{lines:?}");
}

#[tokio::test]
async fn a_trunk_that_never_responds_fails_the_call_after_the_trunk_timeout() {
    let trunk = Sipp::start("uas_silent", None, &["-set", "silent_ms", "3000"]);
    let app = sip_app(Some(trunk.addr()), None, "trunk_timeout_secs = 1\n").await;
    let token = app.token().await;
    let id = app.create(&token, TRUNK_NUMBER).await;
    let (states, reason) = ended(&app, &id).await;
    assert_eq!(
        states,
        pairs(&[("updated", "establishing"), ("deleted", "terminated")])
    );
    assert_eq!(reason, Some((408, 500001)));
    // Nothing but the INVITE's retransmissions reached the trunk: no CANCEL before a
    // provisional response (RFC 3261 §9.1).
    trunk.passes(15).await;
}

/// Waits for the incoming-call notification of a SIP call to app A; returns the call id and it.
async fn incoming_call(app: &TestApp) -> (String, Value) {
    for _ in 0..500 {
        let created = app
            .receiver
            .received()
            .iter()
            .flat_map(|r| r.notes())
            .find(|n| n["changeType"] == "created");
        if let Some(n) = created {
            let id = n["resourceData"]["id"].as_str().unwrap().to_string();
            return (id, n);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "no incoming-call notification: {:?}",
        app.receiver.received().len()
    );
}

/// Asks for an action on a call (`200` or `202`); the operation's id, if it answers one.
async fn act(app: &TestApp, token: &str, id: &str, action: &str, body: Value) -> String {
    let r = app
        .send(
            "POST",
            &format!("{CALLS}/{id}/{action}"),
            Some(token),
            Some(body),
        )
        .await;
    assert!(
        r.status == 202 || r.status == 200,
        "{action}: {} {}",
        r.status,
        r.text
    );
    r.body["id"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_phone_calls_the_app_the_bot_answers_and_the_phone_hangs_up() {
    let app = sip_app(None, None, "").await;
    let phone = Sipp::start(
        "uac_basic",
        app.sip,
        &["-s", APP_NUMBER, "-set", "hold_ms", "300"],
    );
    let token = app.token().await;
    let (id, created) = incoming_call(&app).await;
    let data = &created["resourceData"];
    assert_eq!(data["state"], "incoming");
    assert_eq!(data["direction"], "incoming");
    assert!(
        data["source"]["identity"]["phone"]["id"].is_string(),
        "the caller's phone identity: {data}"
    );
    answer(&app, &token, &id).await;
    let (states, reason) = ended(&app, &id).await;
    assert_eq!(
        states,
        pairs(&[
            ("created", "incoming"),
            ("updated", "establishing"),
            ("updated", "established"),
            ("deleted", "terminated"),
        ])
    );
    assert_eq!(reason, Some((200, 540000)));
    let lines = first_lines(&phone.passes(15).await);
    assert!(
        lines.iter().any(|l| l.starts_with("SIP/2.0 180")),
        "the caller hears ringing: {lines:?}"
    );
}

#[tokio::test]
async fn the_bot_rejects_a_phone_call_with_the_status_its_reason_names() {
    for (reason, status, code) in [
        ("none", 603, (603, 8538)),
        ("busy", 486, (486, 8539)),
        ("forbidden", 403, (403, 8540)),
    ] {
        let app = sip_app(None, None, "").await;
        let phone = Sipp::start(
            &format!("uac_reject_{status}"),
            app.sip,
            &["-s", APP_NUMBER],
        );
        let token = app.token().await;
        let (id, _) = incoming_call(&app).await;
        act(&app, &token, &id, "reject", json!({"reason": reason})).await;
        let (_, got) = ended(&app, &id).await;
        assert_eq!(got, Some(code), "{reason}");
        phone.passes(15).await;
    }
}

#[tokio::test]
async fn a_call_the_bot_lets_ring_is_turned_away_with_480() {
    let app = sip_app(None, None, "").await;
    let phone = Sipp::start("uac_unanswered", app.sip, &["-s", APP_NUMBER]);
    let (id, _) = incoming_call(&app).await;
    app.advance(16.0).await;
    let (_, reason) = ended(&app, &id).await;
    assert_eq!(reason, Some((408, 1106)));
    phone.passes(15).await;
}

#[tokio::test]
async fn a_caller_that_cancels_ends_the_call_with_540487() {
    let app = sip_app(None, None, "").await;
    let phone = Sipp::start("uac_cancel", app.sip, &["-s", APP_NUMBER]);
    let (id, _) = incoming_call(&app).await;
    let (states, reason) = ended(&app, &id).await;
    assert_eq!(
        states,
        pairs(&[("created", "incoming"), ("deleted", "terminated")])
    );
    assert_eq!(reason, Some((487, 540487)));
    phone.passes(15).await;
}

#[tokio::test]
async fn a_call_to_an_unknown_number_gets_404() {
    let app = sip_app(None, None, "").await;
    let phone = Sipp::start("uac_unknown_number", app.sip, &["-s", "+15559999"]);
    phone.passes(15).await;
    assert!(app.receiver.received().is_empty(), "no bot hears of it");
}

#[tokio::test]
async fn a_phone_that_puts_the_call_on_hold_moves_it_to_hold_and_back() {
    let trunk = Sipp::start("uas_hold", None, &[]);
    let app = sip_app(Some(trunk.addr()), None, "").await;
    let token = app.token().await;
    let id = app.create(&token, TRUNK_NUMBER).await;
    let states = wait_long(&app, &id, |s| {
        s.iter().filter(|(_, st)| st == "established").count() == 2
    })
    .await;
    assert_eq!(
        states,
        pairs(&[
            ("updated", "establishing"),
            ("updated", "established"),
            ("updated", "hold"),
            ("updated", "established"),
        ])
    );
    hang_up(&app, &token, &id).await;
    let (_, reason) = ended(&app, &id).await;
    assert_eq!(reason, Some((200, 5001)));
    // sipp checked that each answer mirrored its offer's direction.
    trunk.passes(15).await;
}

#[tokio::test]
async fn a_caller_on_hold_is_answered_recvonly_and_its_call_is_on_hold() {
    let app = sip_app(None, None, "").await;
    let phone = Sipp::start(
        "uac_hold",
        app.sip,
        &["-s", APP_NUMBER, "-set", "hold_ms", "500"],
    );
    let token = app.token().await;
    let (id, _) = incoming_call(&app).await;
    answer(&app, &token, &id).await;
    let (states, reason) = ended(&app, &id).await;
    assert_eq!(
        states,
        pairs(&[
            ("created", "incoming"),
            ("updated", "establishing"),
            ("updated", "established"),
            ("updated", "hold"),
            ("deleted", "terminated"),
        ])
    );
    assert_eq!(reason, Some((200, 540000)));
    phone.passes(15).await;
}

#[tokio::test]
async fn the_bot_redirects_a_phone_call_with_302_naming_the_target() {
    let app = sip_app(None, None, "").await;
    let log = TempDir::new();
    let log_file = log.0.join("redirect.log");
    let phone = Sipp::start(
        "uac_redirect",
        app.sip,
        &[
            "-s",
            APP_NUMBER,
            "-trace_logs",
            "-log_file",
            log_file.to_str().unwrap(),
        ],
    );
    let token = app.token().await;
    let (id, _) = incoming_call(&app).await;
    let target = json!({"@odata.type": "#microsoft.graph.invitationParticipantInfo",
        "identity": {"@odata.type": "#microsoft.graph.identitySet",
            "phone": {"@odata.type": "#microsoft.graph.identity", "id": "+15557777"}}});
    act(&app, &token, &id, "redirect", json!({"targets": [target]})).await;
    let (states, reason) = ended(&app, &id).await;
    assert_eq!(
        states,
        pairs(&[
            ("created", "incoming"),
            ("updated", "redirecting"),
            ("deleted", "terminated"),
        ])
    );
    assert_eq!(reason, Some((200, 5001)));
    phone.passes(15).await;
    let logged = std::fs::read_to_string(&log_file).unwrap_or_default();
    assert!(logged.contains("redirect_target=tel:+15557777"), "{logged}");
}

#[tokio::test]
async fn a_caller_that_never_acknowledges_the_answer_is_hung_up_with_408_1106() {
    // T1 of 50 ms: the caller has 64·T1 = 3.2 s to acknowledge.
    let app = sip_app(None, None, "rtt_estimate_ms = 50\n").await;
    let phone = Sipp::start("uac_noack", app.sip, &["-s", APP_NUMBER]);
    let token = app.token().await;
    let (id, _) = incoming_call(&app).await;
    answer(&app, &token, &id).await;
    let (states, reason) = ended(&app, &id).await;
    assert_eq!(
        states,
        pairs(&[
            ("created", "incoming"),
            ("updated", "establishing"),
            ("deleted", "terminated"),
        ])
    );
    assert_eq!(reason, Some((408, 1106)));
    phone.passes(20).await;
}

/// A `transfer` body to phone number `to`.
fn transfer_to(to: &str) -> Value {
    json!({"transferTarget": {
        "@odata.type": "#microsoft.graph.invitationParticipantInfo",
        "identity": {"@odata.type": "#microsoft.graph.identitySet",
            "phone": {"@odata.type": "#microsoft.graph.identity", "id": to}}}})
}

#[tokio::test]
async fn a_transfer_refers_the_phone_to_the_target_and_ends_with_7015() {
    let log = TempDir::new();
    let log_file = log.0.join("refer.log");
    let trunk = Sipp::start(
        "uas_refer_ok",
        None,
        &["-trace_logs", "-log_file", log_file.to_str().unwrap()],
    );
    let app = sip_app(Some(trunk.addr()), None, "").await;
    let (token, id) = established(&app).await;
    act(&app, &token, &id, "transfer", transfer_to("+15558888")).await;
    let (states, reason) = ended(&app, &id).await;
    assert_eq!(
        states,
        pairs(&[
            ("updated", "establishing"),
            ("updated", "established"),
            ("updated", "transferring"),
            ("updated", "transferAccepted"),
            ("deleted", "terminated"),
        ])
    );
    assert_eq!(reason, Some((200, 7015)));
    trunk.passes(15).await;
    let logged = std::fs::read_to_string(&log_file).unwrap_or_default();
    assert!(
        logged.contains("+15558888"),
        "the REFER names the target: {logged}"
    );
}

#[tokio::test]
async fn a_transfer_the_phone_reports_failed_puts_the_call_back_with_500_7000() {
    let trunk = Sipp::start("uas_refer_fail", None, &[]);
    let app = sip_app(Some(trunk.addr()), None, "").await;
    let (token, id) = established(&app).await;
    act(&app, &token, &id, "transfer", transfer_to("+15558888")).await;
    let states = wait_long(&app, &id, |s| {
        s.iter().filter(|(_, st)| st == "established").count() == 2
    })
    .await;
    assert_eq!(
        states,
        pairs(&[
            ("updated", "establishing"),
            ("updated", "established"),
            ("updated", "transferring"),
            ("updated", "established"),
        ])
    );
    let notes = app.receiver.notes(&id);
    let back = &notes.last().unwrap().1["resourceData"]["resultInfo"];
    assert_eq!(
        (back["code"].as_i64(), back["subcode"].as_i64()),
        (Some(500), Some(7000))
    );
    hang_up(&app, &token, &id).await;
    ended(&app, &id).await;
    trunk.passes(15).await;
}

#[tokio::test]
async fn after_a_restart_a_call_whose_dialog_was_lost_ends_with_410_301005() {
    let trunk = Sipp::start("uas_answer", None, &[]);
    let dir = TempDir::new();
    let store = format!("sqlite://{}/sb.db", dir.0.display());
    let config = sip_config(Some(trunk.addr()), None, "");
    let app = spawn_app_at(&store, &config, |_| {}).await.unwrap();
    let (_, id) = established(&app).await;
    // The bot's receiver outlives this run of the server.
    let receiver = app.receiver.clone();
    app.stop().await;

    let again = spawn_app_at(&store, &config, |_| {}).await.unwrap();
    let mut states = vec![];
    for _ in 0..500 {
        states = receiver.states(&id);
        if has(&states, "deleted", "terminated") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        states,
        pairs(&[
            ("updated", "establishing"),
            ("updated", "established"),
            ("deleted", "terminated"),
        ])
    );
    assert_eq!(receiver.end_reason(&id), Some((410, 301005)));
    let r = again.admin("GET", "/calls", None).await;
    assert_eq!(
        r.body["value"].as_array().map(Vec::len),
        Some(0),
        "{}",
        r.text
    );
    drop(trunk);
}

#[tokio::test]
async fn a_trunk_that_challenges_gets_the_digest_credentials_configured() {
    let trunk = Sipp::start("uas_auth", None, &[]);
    let app = spawn_app_with(
        Backend::Memory,
        &format!(
            "[sip]\nlisten = \"127.0.0.1:0\"\n\n[[sip.trunks]]\nname = \"carrier\"\naddress = \"{}\"\nusername = \"bot\"\npassword = \"s3cret\"\n",
            trunk.addr()
        ),
    )
    .await;
    let token = app.token().await;
    let id = app.create(&token, TRUNK_NUMBER).await;
    let states = wait_long(&app, &id, |s| {
        has(s, "updated", "established") || has(s, "deleted", "terminated")
    })
    .await;
    assert!(
        has(&states, "updated", "established"),
        "the trunk took the credentials: {states:?} {:?}",
        app.receiver.end_reason(&id)
    );
    hang_up(&app, &token, &id).await;
    ended(&app, &id).await;
    trunk.passes(15).await;
}

#[tokio::test]
async fn garbage_on_the_sip_port_crashes_nothing_and_an_invite_with_unreadable_sdp_gets_488() {
    let app = sip_app(None, None, "").await;
    let sip = app.sip.unwrap();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for junk in [
        &b"\x00\x01\x02 not sip at all"[..],
        b"INVITE\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: nowhere\r\n\r\n",
        &[0xff; 1400][..],
    ] {
        socket.send_to(junk, sip).await.unwrap();
    }
    // An INVITE whose SDP is not SDP: a SIP error (488), and no call for the bot.
    let me = socket.local_addr().unwrap();
    let body = "this is not a session description";
    let bad = format!(
        "INVITE sip:{APP_NUMBER}@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-bad-1\r\n\
         From: <sip:x@{me}>;tag=bad1\r\nTo: <sip:{APP_NUMBER}@{sip}>\r\nCall-ID: bad-1@test\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:x@{me}>\r\nMax-Forwards: 70\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.send_to(bad.as_bytes(), sip).await.unwrap();
    let mut buf = [0u8; 4096];
    let mut finals = vec![];
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await
    {
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        if !text.starts_with("SIP/2.0 1") {
            finals.push(text);
            break;
        }
    }
    assert!(
        finals.first().is_some_and(|t| t.starts_with("SIP/2.0 488")),
        "{finals:?}"
    );
    assert!(app.receiver.received().is_empty(), "no bot hears of it");
    // Whatever came before, a good call still works.
    let phone = Sipp::start("uac_reject_486", app.sip, &["-s", APP_NUMBER]);
    let token = app.token().await;
    let (id, _) = incoming_call(&app).await;
    act(&app, &token, &id, "reject", json!({"reason": "busy"})).await;
    phone.passes(15).await;
    assert_eq!(app.send("GET", "/healthz", None, None).await.status, 200);
}

#[tokio::test]
async fn a_group_call_rings_a_phone_over_the_trunk_beside_a_simulated_user() {
    let trunk = Sipp::start("uas_answer", None, &[]);
    let app = sip_app(Some(trunk.addr()), None, "").await;
    let token = app.token().await;
    let r = app
        .send(
            "POST",
            CALLS,
            Some(&token),
            Some(app.group(&[TRUNK_NUMBER, CAROL])),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    wait_long(&app, &id, |s| has(s, "updated", "established")).await;
    // The phone joins once the trunk answers: the roster names it.
    let mut joined = false;
    for _ in 0..250 {
        joined = app.receiver.rosters(&id).iter().any(|roster| {
            roster
                .iter()
                .any(|p| identity_id(p).as_deref() == Some(TRUNK_NUMBER))
        });
        if joined {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(joined, "{:#?}", app.receiver.rosters(&id));
    hang_up(&app, &token, &id).await;
    ended(&app, &id).await;
    // The group call goes on without the bot, Carol and the phone talking; once Carol leaves,
    // the phone is alone and its leg ends: the trunk gets our BYE.
    let r = app
        .admin("POST", &format!("/parties/{CAROL}/hangup"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let lines = first_lines(&trunk.passes(15).await);
    assert!(lines.iter().any(|l| l.starts_with("BYE ")), "{lines:?}");
}

/// The tones (`toneInfo.tone`, in order) a call's notifications carried, with their sequence ids.
fn tones(app: &TestApp, id: &str) -> Vec<(String, i64)> {
    app.receiver
        .notes(id)
        .iter()
        .map(|(_, n)| &n["resourceData"]["toneInfo"])
        .filter(|t| !t.is_null())
        .map(|t| {
            (
                t["tone"].as_str().unwrap_or_default().to_string(),
                t["sequenceId"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

async fn wait_tones(app: &TestApp, id: &str, n: usize) -> Vec<(String, i64)> {
    for _ in 0..400 {
        if tones(app, id).len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A little longer: a duplicate would show now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    tones(app, id)
}

#[tokio::test]
async fn keys_a_phone_presses_reach_the_bot_once_each_in_order() {
    let trunk = Sipp::start("uas_dtmf", None, &[]);
    let app = sip_app(Some(trunk.addr()), None, "").await;
    let (token, id) = established(&app).await;
    act(&app, &token, &id, "subscribeToTone", json!({})).await;
    let got = wait_tones(&app, &id, 2).await;
    let names: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(names, ["tone1", "pound"], "{got:?}");
    assert_eq!(got[1].1, got[0].1 + 1, "consecutive sequence ids: {got:?}");
    hang_up(&app, &token, &id).await;
    trunk.passes(15).await;
}

#[tokio::test]
async fn keys_a_caller_presses_with_its_own_payload_type_reach_the_bot() {
    let app = sip_app(None, None, "").await;
    let phone = Sipp::start("uac_dtmf", app.sip, &["-s", APP_NUMBER]);
    let token = app.token().await;
    let (id, _) = incoming_call(&app).await;
    answer(&app, &token, &id).await;
    wait_long(&app, &id, |s| has(s, "updated", "established")).await;
    act(&app, &token, &id, "subscribeToTone", json!({})).await;
    let got = wait_tones(&app, &id, 3).await;
    let names: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(names, ["tone1", "tone2", "pound"], "{got:?}");
    phone.passes(15).await;
}

#[tokio::test]
async fn a_call_without_rtp_ends_after_the_media_timeout_with_410_301005() {
    let trunk = Sipp::start("uas_answer", None, &[]);
    let app = sip_app(Some(trunk.addr()), None, "media_timeout_secs = 1\n").await;
    let token = app.token().await;
    let id = app.create(&token, TRUNK_NUMBER).await;
    let (states, reason) = ended(&app, &id).await;
    assert_eq!(
        states,
        pairs(&[
            ("updated", "establishing"),
            ("updated", "established"),
            ("deleted", "terminated"),
        ])
    );
    assert_eq!(reason, Some((410, 301005)));
    // We sent BYE.
    trunk.passes(15).await;
}

#[tokio::test]
async fn tones_the_bot_sends_leave_as_rfc_4733_events_once_each() {
    let rtp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = rtp.local_addr().unwrap().port().to_string();
    let trunk = Sipp::start("uas_answer_to", None, &["-set", "rtp_port", &port]);
    let app = sip_app(Some(trunk.addr()), None, "").await;
    let (token, id) = established(&app).await;
    act(
        &app,
        &token,
        &id,
        "sendDtmfTones",
        json!({"tones": ["tone4", "star", "pound"], "delayBetweenTonesMs": 100}),
    )
    .await;
    // Read RFC 4733 by hand: payload type 101 (our offer's, echoed), event, E bit, timestamp.
    let mut keys = String::new();
    let mut ends: Vec<u32> = vec![];
    let mut buf = [0u8; 1500];
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_secs(2), rtp.recv_from(&mut buf)).await
    {
        let p = &buf[..n];
        assert!(n >= 16 && p[0] >> 6 == 2, "RTP version 2: {p:?}");
        assert_eq!(p[1] & 0x7f, 101, "telephone-event's payload type");
        let timestamp = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
        let (event, end) = (p[12], p[13] & 0x80 != 0);
        if end && !ends.contains(&timestamp) {
            ends.push(timestamp);
            keys.push(match event {
                0..=9 => char::from(b'0' + event),
                10 => '*',
                11 => '#',
                _ => '?',
            });
        }
        if keys.len() == 3 {
            break;
        }
    }
    assert_eq!(keys, "4*#");
    hang_up(&app, &token, &id).await;
    trunk.passes(15).await;
}

/// A `mediaPrompt` playing the file at `uri`.
fn media_prompt(uri: &str) -> Value {
    json!({"@odata.type": "#microsoft.graph.mediaPrompt",
        "mediaInfo": {"@odata.type": "#microsoft.graph.mediaInfo", "uri": uri}})
}

/// A WAV file: `secs` of a `hz` sine at `rate`, 16-bit mono.
fn sine_wav(rate: u32, hz: f64, secs: f64) -> Vec<u8> {
    let samples: Vec<i16> = (0..(f64::from(rate) * secs) as usize)
        .map(|i| {
            (10000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin()) as i16
        })
        .collect();
    let mut out = wav_header(rate, 1, 16, (samples.len() * 2) as u32);
    out.extend(samples.iter().flat_map(|s| s.to_le_bytes()));
    out
}

/// G.711 μ-law to linear, written from the standard here so the test does not lean on the
/// server's own codec.
fn ulaw(byte: u8) -> f64 {
    let b = !byte;
    let exponent = i32::from((b >> 4) & 7);
    let magnitude = ((((i32::from(b & 0x0f)) << 3) + 0x84) << exponent) - 0x84;
    f64::from(if b & 0x80 != 0 { -magnitude } else { magnitude })
}

#[tokio::test]
async fn a_prompt_is_heard_on_the_line_as_a_steady_g711_stream() {
    let mut phone = Phone::bind().await;
    let trunk = Sipp::start("uas_answer_to", None, &["-set", "rtp_port", &phone.port()]);
    let app = sip_app(Some(trunk.addr()), None, "").await;
    let uri = app.receiver.serve("tone.wav", sine_wav(16_000, 440.0, 1.0));
    let (token, id) = established(&app).await;
    act(
        &app,
        &token,
        &id,
        "playPrompt",
        json!({"prompts": [media_prompt(&uri)]}),
    )
    .await;
    let packets = phone
        .hear(Duration::from_millis(500), Duration::from_secs(5))
        .await;
    assert!(
        packets.iter().all(|p| p.0 == 0),
        "PCMU, the codec sipp answered"
    );
    // One second of audio: 50 packets of 20 ms (160 samples), numbered and timed by the sample
    // count, sent over about a second rather than in a burst.
    assert_eq!(packets.len(), 50, "packets");
    for w in packets.windows(2) {
        assert_eq!(w[1].1, w[0].1.wrapping_add(1), "sequence");
        assert_eq!(w[1].2, w[0].2.wrapping_add(160), "timestamp");
    }
    assert!(packets.iter().all(|p| p.3.len() == 160));
    let span = packets[49].4 - packets[0].4;
    assert!(span >= Duration::from_millis(900), "paced over {span:?}");
    // The line carries the prompt: its energy is at 440 Hz.
    let share = share_at(&audio_of(&packets), 440.0);
    assert!(share > 0.9, "share of the energy at 440 Hz: {share}");
    // The operation completed once the last packet left: the call clock never moved.
    let done = finished_op(&app, &id, "#microsoft.graph.playPromptOperation", 100).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["resultInfo"]["code"], 200, "{done}");
    hang_up(&app, &token, &id).await;
    trunk.passes(15).await;
}

/// G.711 μ-law of a sample, written from the standard here (see [`ulaw`]).
fn to_ulaw(sample: i16) -> u8 {
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(32635) + 0x84;
    let mut exponent = 7;
    while exponent > 0 && s & (0x4000 >> (7 - exponent)) == 0 {
        exponent -= 1;
    }
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// The share of `audio`'s energy at `hz` (8 kHz samples).
fn share_at(audio: &[f64], hz: f64) -> f64 {
    let (mut s, mut c) = (0.0, 0.0);
    for (i, x) in audio.iter().enumerate() {
        let w = 2.0 * std::f64::consts::PI * hz * i as f64 / 8000.0;
        s += x * w.sin();
        c += x * w.cos();
    }
    let total: f64 = audio.iter().map(|x| x * x).sum();
    2.0 * (s * s + c * c) / audio.len() as f64 / total.max(1.0)
}

#[tokio::test]
async fn a_recording_holds_what_the_phone_said_and_outlives_a_restart() {
    // Five seconds of a 300 Hz tone, the phone's "speech".
    let speech: Vec<u8> = (0..40_000)
        .map(|i| {
            to_ulaw(
                (9000.0 * (2.0 * std::f64::consts::PI * 300.0 * f64::from(i) / 8000.0).sin())
                    as i16,
            )
        })
        .collect();
    let trunk = Sipp::start_with("uas_speak", None, &[], &[("speech.ulaw", &speech)]);
    let dir = TempDir::new();
    let store = format!("sqlite://{}/sb.db", dir.0.display());
    let config = sip_config(Some(trunk.addr()), None, "");
    let app = spawn_app_at(&store, &config, |_| {}).await.unwrap();
    let (token, id) = established(&app).await;
    act(
        &app,
        &token,
        &id,
        "recordResponse",
        json!({"maxRecordDurationInSeconds": 2, "initialSilenceTimeoutInSeconds": 5,
               "maxSilenceTimeoutInSeconds": 5, "playBeep": false}),
    )
    .await;
    // The phone speaks in real time; the call clock moves on once it has.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    app.advance(2.0).await;
    let done = finished_op(&app, &id, "#microsoft.graph.recordOperation", 250).await;
    let location = done["recordingLocation"]
        .as_str()
        .expect("a recording")
        .to_string();
    let access = done["recordingAccessToken"].as_str().unwrap().to_string();
    let wav = app
        .http
        .get(&location)
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(wav.status(), 200);
    let wav = wav.bytes().await.unwrap();
    assert_eq!(code_of(&done), (200, 8515), "{done}");
    // 8 kHz, 16-bit, mono, two seconds: the maximum the bot asked for.
    assert_eq!(u32::from_le_bytes(wav[24..28].try_into().unwrap()), 8000);
    let samples: Vec<f64> = wav[44..]
        .chunks_exact(2)
        .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])))
        .collect();
    assert_eq!(samples.len(), 16_000);
    // It is what the phone said: most of it carries sound, and that sound is the 300 Hz tone.
    let loud = samples
        .chunks(160)
        .filter(|f| f.iter().any(|x| x.abs() > 1000.0))
        .count();
    assert!(loud >= 90, "{loud} of 100 frames carry sound");
    let share = share_at(&samples, 300.0);
    assert!(share > 0.8, "share of the energy at 300 Hz: {share}");
    hang_up(&app, &token, &id).await;
    trunk.passes(15).await;

    // The server restarts: the bot can still fetch the same file, with the same token.
    let path = location.split_once("/recordings/").unwrap().1.to_string();
    app.stop().await;
    let again = spawn_app_at(&store, &config, |_| {}).await.unwrap();
    let later = again
        .http
        .get(format!("{}/recordings/{path}", again.base))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(later.status(), 200);
    assert_eq!(later.bytes().await.unwrap(), wav, "the same recording");
    let refused = again
        .http
        .get(format!("{}/recordings/{path}", again.base))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
}

#[tokio::test]
async fn rtp_ports_come_from_the_configured_range() {
    let trunk = Sipp::start("uas_answer", None, &[]);
    let min = free_ports(8);
    let app = sip_app(
        Some(trunk.addr()),
        None,
        &format!("rtp_port_min = {min}\nrtp_port_max = {}\n", min + 7),
    )
    .await;
    let (token, id) = established(&app).await;
    hang_up(&app, &token, &id).await;
    let messages = trunk.passes(15).await;
    let port: u16 = messages
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("our offer's m= line");
    assert!(
        (min..=min + 7).contains(&port) && port % 2 == 0,
        "{port} in {min}..={}",
        min + 7
    );
}

#[tokio::test]
async fn keys_sent_by_sip_info_reach_the_bot_when_no_telephone_event_was_negotiated() {
    let app = sip_app(None, None, "").await;
    let phone = Sipp::start("uac_info_dtmf", app.sip, &["-s", APP_NUMBER]);
    let token = app.token().await;
    let (id, _) = incoming_call(&app).await;
    answer(&app, &token, &id).await;
    wait_long(&app, &id, |s| has(s, "updated", "established")).await;
    act(&app, &token, &id, "subscribeToTone", json!({})).await;
    let got = wait_tones(&app, &id, 2).await;
    let names: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(names, ["tone5", "pound"], "{got:?}");
    phone.passes(15).await;
}

// --- media on the line: recordings that end as the phone does, loops, failures, hold, mute ----

/// An RTP packet (version 2, no CSRC) written by hand.
fn rtp(pt: u8, marker: bool, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt | if marker { 0x80 } else { 0 }];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&0x5eed_u32.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// The phone's side of a call's RTP: the test's own socket, named in sipp's SDP answer.
struct Phone {
    socket: tokio::net::UdpSocket,
    /// Where Switchboard's RTP comes from (learned from its first packet).
    switchboard: Option<SocketAddr>,
    seq: u16,
    ts: u32,
}

/// A packet Switchboard sent: payload type, sequence, timestamp, payload, when it came.
type Packet = (u8, u16, u32, Vec<u8>, tokio::time::Instant);

impl Phone {
    async fn bind() -> Phone {
        Phone {
            socket: tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            switchboard: None,
            seq: 1,
            ts: 0,
        }
    }

    fn port(&self) -> String {
        self.socket.local_addr().unwrap().port().to_string()
    }

    /// What Switchboard sends until nothing comes for `quiet`, or `most` has passed.
    async fn hear(&mut self, quiet: Duration, most: Duration) -> Vec<Packet> {
        let mut out = vec![];
        let mut buf = [0u8; 1500];
        let until = tokio::time::Instant::now() + most;
        while let Ok(Ok((n, from))) =
            tokio::time::timeout(quiet, self.socket.recv_from(&mut buf)).await
        {
            self.switchboard.get_or_insert(from);
            let p = &buf[..n];
            let seq = u16::from_be_bytes([p[2], p[3]]);
            let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
            out.push((
                p[1] & 0x7f,
                seq,
                ts,
                p[12..].to_vec(),
                tokio::time::Instant::now(),
            ));
            if tokio::time::Instant::now() >= until {
                break;
            }
        }
        out
    }

    /// Says `secs` of a `hz` tone in PCMU, in real time, to Switchboard.
    async fn say(&mut self, hz: f64, secs: f64) {
        let to = self.switchboard.expect("Switchboard's RTP address");
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for _ in 0..(secs * 50.0) as usize {
            tick.tick().await;
            let frame: Vec<u8> = (0..160)
                .map(|i| {
                    let t = f64::from(self.ts + i) / 8000.0;
                    to_ulaw((9000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16)
                })
                .collect();
            let packet = rtp(0, false, self.seq, self.ts, &frame);
            self.socket.send_to(&packet, to).await.unwrap();
            (self.seq, self.ts) = (self.seq.wrapping_add(1), self.ts.wrapping_add(160));
        }
    }

    /// Presses `#` as RFC 4733 events (payload type 101, our offer's), the end packet thrice.
    async fn press_pound(&mut self) {
        let to = self.switchboard.expect("Switchboard's RTP address");
        for (k, end) in [false, false, true, true, true].into_iter().enumerate() {
            let duration = (k as u16 + 1) * 160;
            let [d0, d1] = duration.to_be_bytes();
            let payload = [11, if end { 0x80 | 10 } else { 10 }, d0, d1];
            let packet = rtp(101, k == 0, self.seq, self.ts, &payload);
            self.socket.send_to(&packet, to).await.unwrap();
            self.seq = self.seq.wrapping_add(1);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.ts = self.ts.wrapping_add(800);
    }
}

/// The audio of some PCMU packets.
fn audio_of(packets: &[Packet]) -> Vec<f64> {
    packets
        .iter()
        .flat_map(|p| p.3.iter().map(|&b| ulaw(b)))
        .collect()
}

/// A finished operation's notification, waited for in real time: the line decides when.
async fn op_done(app: &TestApp, id: &str, op: &str) -> Value {
    let url = format!("/communications/calls/{id}/operations/{op}");
    for _ in 0..500 {
        let found = app
            .receiver
            .notes(id)
            .into_iter()
            .map(|(_, n)| n)
            .find(|n| n["changeType"] == "deleted" && n["resourceUrl"] == url);
        if let Some(n) = found {
            return n["resourceData"].clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("operation {op} never finished");
}

/// The samples of a finished recording, downloaded as the bot would.
async fn recording_of(app: &TestApp, done: &Value) -> Vec<f64> {
    let location = done["recordingLocation"].as_str().expect("a recording");
    let token = done["recordingAccessToken"].as_str().unwrap();
    let wav = app
        .http
        .get(location)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(wav.status(), 200);
    let wav = wav.bytes().await.unwrap();
    assert_eq!(u32::from_le_bytes(wav[24..28].try_into().unwrap()), 8000);
    wav[44..]
        .chunks_exact(2)
        .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])))
        .collect()
}

fn code_of(done: &Value) -> (i64, i64) {
    let ri = &done["resultInfo"];
    (
        ri["code"].as_i64().unwrap_or(-1),
        ri["subcode"].as_i64().unwrap_or(-1),
    )
}

#[tokio::test]
async fn a_recording_on_the_line_begins_after_a_beep_and_ends_at_silence_or_a_stop_key() {
    let mut phone = Phone::bind().await;
    let trunk = Sipp::start("uas_answer_to", None, &["-set", "rtp_port", &phone.port()]);
    let app = sip_app(Some(trunk.addr()), None, "").await;
    let (token, id) = established(&app).await;

    // 1. A beep, then the phone speaks for a second and falls silent: over one second later.
    let body = json!({"playBeep": true, "initialSilenceTimeoutInSeconds": 5,
        "maxSilenceTimeoutInSeconds": 1, "maxRecordDurationInSeconds": 20});
    let op = act(&app, &token, &id, "recordResponse", body).await;
    let beep = phone
        .hear(Duration::from_millis(200), Duration::from_secs(2))
        .await;
    assert!(
        (9..=11).contains(&beep.len()),
        "200 ms of beep: {} packets",
        beep.len()
    );
    let share = share_at(&audio_of(&beep), 1000.0);
    assert!(share > 0.8, "the beep is 1 kHz: {share}");
    phone.say(300.0, 1.0).await;
    let silent_from = tokio::time::Instant::now();
    let done = op_done(&app, &id, &op).await;
    let waited = silent_from.elapsed();
    assert_eq!(
        (done["status"].as_str(), code_of(&done)),
        (Some("completed"), (200, 0)),
        "{done}"
    );
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_millis(2500),
        "ended {waited:?} after the phone fell silent"
    );
    let heard = recording_of(&app, &done).await;
    let secs = heard.len() as f64 / 8000.0;
    assert!(
        (1.8..2.8).contains(&secs),
        "a second of speech and one of silence: {secs} s"
    );
    let share = share_at(&heard[..8000], 300.0);
    assert!(share > 0.8, "it holds what the phone said: {share}");

    // 2. The phone says nothing: it ends at the initial silence timeout, silent throughout.
    let body = json!({"playBeep": false, "initialSilenceTimeoutInSeconds": 1,
        "maxSilenceTimeoutInSeconds": 5, "maxRecordDurationInSeconds": 20});
    let started = tokio::time::Instant::now();
    let op = act(&app, &token, &id, "recordResponse", body).await;
    let done = op_done(&app, &id, &op).await;
    let took = started.elapsed();
    assert_eq!(code_of(&done), (200, 0), "{done}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    let heard = recording_of(&app, &done).await;
    assert!(heard.iter().all(|x| x.abs() < 100.0), "nothing was said");

    // 3. The phone speaks and presses the stop key: it ends at once, before its maximum.
    let body = json!({"playBeep": false, "stopTones": ["#"], "maxRecordDurationInSeconds": 20,
        "initialSilenceTimeoutInSeconds": 5, "maxSilenceTimeoutInSeconds": 5});
    let op = act(&app, &token, &id, "recordResponse", body).await;
    phone.say(300.0, 0.6).await;
    let pressed = tokio::time::Instant::now();
    phone.press_pound().await;
    let done = op_done(&app, &id, &op).await;
    assert!(
        pressed.elapsed() < Duration::from_millis(800),
        "{:?}",
        pressed.elapsed()
    );
    assert_eq!(code_of(&done), (200, 0), "{done}");
    let secs = recording_of(&app, &done).await.len() as f64 / 8000.0;
    assert!((0.5..1.2).contains(&secs), "about the 0.6 s said: {secs} s");

    // The call clock never moved: the line ended each one.
    hang_up(&app, &token, &id).await;
    trunk.passes(15).await;
}

#[tokio::test]
async fn a_looped_prompt_plays_until_cancelled_and_one_that_cannot_be_had_fails_in_its_turn() {
    let mut phone = Phone::bind().await;
    let trunk = Sipp::start("uas_answer_to", None, &["-set", "rtp_port", &phone.port()]);
    let app = sip_app(Some(trunk.addr()), None, "").await;
    let short = app.receiver.serve("short.wav", sine_wav(8_000, 440.0, 0.2));
    let missing = app.receiver.url_for("/files/missing.wav");
    let (token, id) = established(&app).await;

    let body = json!({"prompts": [media_prompt(&short)], "loop": true});
    let looped = act(&app, &token, &id, "playPrompt", body).await;
    // Five times the 200 ms prompt at least, as one unbroken stream.
    let packets = phone
        .hear(Duration::from_millis(300), Duration::from_secs(1))
        .await;
    assert!(packets.len() >= 45, "{} packets in a second", packets.len());
    for w in packets.windows(2) {
        assert_eq!(w[1].1, w[0].1.wrapping_add(1), "sequence");
        assert_eq!(w[1].2, w[0].2.wrapping_add(160), "timestamp");
    }
    act(&app, &token, &id, "cancelMediaProcessing", json!({})).await;
    let done = op_done(&app, &id, &looped).await;
    assert_eq!(
        (done["status"].as_str(), code_of(&done)),
        (Some("failed"), (400, 8508))
    );
    // It stops: what is still in flight, then nothing.
    let after = phone
        .hear(Duration::from_millis(300), Duration::from_secs(2))
        .await;
    assert!(after.len() <= 3, "{} packets after the cancel", after.len());

    // The good prompt plays, then the operation fails on the missing one.
    let body =
        json!({"prompts": [media_prompt(&short), media_prompt(&missing), media_prompt(&short)]});
    let op = act(&app, &token, &id, "playPrompt", body).await;
    let packets = phone
        .hear(Duration::from_millis(300), Duration::from_secs(2))
        .await;
    assert_eq!(packets.len(), 10, "the 200 ms before the missing prompt");
    let done = op_done(&app, &id, &op).await;
    assert_eq!(
        (done["status"].as_str(), code_of(&done)),
        (Some("failed"), (400, 8536))
    );
    assert_eq!(
        done["resultInfo"]["message"],
        "Action failed, file could not be downloaded."
    );

    // A looped prompt with no audio at all ends at once instead of spinning, and the line goes on.
    let empty = app.receiver.serve("empty.wav", sine_wav(8_000, 440.0, 0.0));
    let body = json!({"prompts": [media_prompt(&empty)], "loop": true});
    let op = act(&app, &token, &id, "playPrompt", body).await;
    assert_eq!(code_of(&op_done(&app, &id, &op).await), (200, 0));
    let body = json!({"prompts": [media_prompt(&short)]});
    act(&app, &token, &id, "playPrompt", body).await;
    let packets = phone
        .hear(Duration::from_millis(300), Duration::from_secs(2))
        .await;
    assert_eq!(packets.len(), 10, "the next prompt plays");
    hang_up(&app, &token, &id).await;
    trunk.passes(15).await;
}

#[tokio::test]
async fn a_held_phone_hears_hold_music_and_a_muted_bot_is_not_heard() {
    let mut phone = Phone::bind().await;
    let trunk = Sipp::start("uas_answer_to", None, &["-set", "rtp_port", &phone.port()]);
    let app = sip_app(Some(trunk.addr()), None, "").await;
    let (token, id) = established(&app).await;
    let list = app
        .send(
            "GET",
            &format!("{CALLS}/{id}/participants"),
            Some(&token),
            None,
        )
        .await;
    let pid = list.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["info"]["identity"]["phone"].is_object())
        .and_then(|p| p["id"].as_str())
        .expect("the phone's participant")
        .to_string();
    let hold_music = |action: &'static str, body: Value| {
        let (app, token) = (&app, &token);
        let path = format!("{CALLS}/{id}/participants/{pid}/{action}");
        async move {
            let r = app.send("POST", &path, Some(token), Some(body)).await;
            assert_eq!(r.status, 202, "{action}: {}", r.text);
        }
    };

    hold_music("startHoldMusic", json!({})).await;
    let music = phone
        .hear(Duration::from_millis(300), Duration::from_millis(800))
        .await;
    assert!(music.len() >= 35, "{} packets of music", music.len());
    // Its first note is C5.
    let share = share_at(&audio_of(&music[2..18]), 523.25);
    assert!(share > 0.7, "C5: {share}");
    hold_music("stopHoldMusic", json!({})).await;
    let after = phone
        .hear(Duration::from_millis(300), Duration::from_secs(2))
        .await;
    assert!(
        after.len() <= 3,
        "{} packets after the music stopped",
        after.len()
    );

    // The bot's own music, looped: its 400 ms prompt plays over and over.
    let tone = app.receiver.serve("tone.wav", sine_wav(8_000, 440.0, 0.4));
    let prompt = media_prompt(&tone);
    hold_music("startHoldMusic", json!({"customPrompt": prompt.clone()})).await;
    let music = phone
        .hear(Duration::from_millis(300), Duration::from_millis(1000))
        .await;
    assert!(
        music.len() >= 45,
        "{} packets of the bot's music",
        music.len()
    );
    let share = share_at(&audio_of(&music), 440.0);
    assert!(share > 0.8, "the custom prompt: {share}");
    hold_music("stopHoldMusic", json!({})).await;
    phone
        .hear(Duration::from_millis(300), Duration::from_secs(2))
        .await;

    // Muted, the bot's prompt takes its time but nothing reaches the line.
    act(&app, &token, &id, "mute", json!({})).await;
    let op = act(
        &app,
        &token,
        &id,
        "playPrompt",
        json!({"prompts": [prompt.clone()]}),
    )
    .await;
    let heard = phone
        .hear(Duration::from_millis(700), Duration::from_secs(2))
        .await;
    assert!(heard.is_empty(), "{} packets from a muted bot", heard.len());
    assert_eq!(code_of(&op_done(&app, &id, &op).await), (200, 0));
    act(&app, &token, &id, "unmute", json!({})).await;
    act(
        &app,
        &token,
        &id,
        "playPrompt",
        json!({"prompts": [prompt]}),
    )
    .await;
    let heard = phone
        .hear(Duration::from_millis(300), Duration::from_secs(2))
        .await;
    assert_eq!(heard.len(), 20, "the 400 ms prompt, unmuted");
    hang_up(&app, &token, &id).await;
    trunk.passes(15).await;
}

#[tokio::test]
async fn an_offer_with_video_and_srtp_streams_is_answered_with_them_rejected_in_place() {
    let app = sip_app(None, None, "").await;
    let phone = Sipp::start("uac_video", app.sip, &["-s", APP_NUMBER]);
    let token = app.token().await;
    let (id, _) = incoming_call(&app).await;
    answer(&app, &token, &id).await;
    // sipp checks the answer's three m= lines; it hangs up after a second.
    phone.passes(15).await;
    ended(&app, &id).await;
}
