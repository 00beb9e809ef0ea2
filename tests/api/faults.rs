//! Faults on demand: Graph requests throttled, failed or slowed, a change made while the client
//! is told it failed, notifications refused, lost or late; all from a seed, by config or at run
//! time, and marked so that a test can tell a fault from a bug.

use serde_json::{Value, json};

use crate::helpers::*;
use crate::incoming::CALLS;

async fn put_faults(app: &TestApp, rules: Value) -> Resp {
    app.admin("PUT", "/faults", Some(rules)).await
}

/// The deliveries log of a call: its notifications, each with its attempts.
async fn log(app: &TestApp, id: &str) -> Vec<Value> {
    let r = app
        .admin("GET", &format!("/calls/{id}/deliveries"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["notifications"].as_array().unwrap().clone()
}

#[tokio::test]
async fn graph_requests_get_the_faults_the_rules_say_and_each_is_marked() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let r = put_faults(
        &app,
        json!({"seed": 7, "api": [
            {"route": "calls", "fault": "throttle", "times": 1, "retry_after_secs": 2.5},
            {"route": "calls", "fault": "unavailable", "times": 1},
            {"route": "calls", "fault": "gateway_timeout", "times": 1},
        ]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["seed"], 7);
    let create = || app.send("POST", CALLS, Some(&token), Some(app.p2p(ALICE)));
    let throttled = create().await;
    assert_eq!(throttled.status, 429, "{}", throttled.text);
    assert_eq!(
        throttled.headers["retry-after"], "3",
        "whole seconds, rounded up"
    );
    assert_eq!(throttled.headers["switchboard-fault"], "throttle");
    assert_eq!(throttled.body["error"]["code"], "TooManyRequests");
    let unavailable = create().await;
    assert_eq!(unavailable.status, 503, "{}", unavailable.text);
    assert!(unavailable.graph_error().is_some());
    let timeout = create().await;
    assert_eq!(timeout.status, 504, "{}", timeout.text);
    assert_eq!(timeout.headers["switchboard-fault"], "gateway_timeout");
    // None of them took effect; each rule had its one time, so the next gets through.
    let calls = app.admin("GET", "/calls", None).await;
    assert_eq!(
        calls.body["value"].as_array().map(Vec::len),
        Some(0),
        "{}",
        calls.text
    );
    let ok = create().await;
    assert_eq!(ok.status, 201, "{}", ok.text);
    assert!(!ok.headers.contains_key("switchboard-fault"));
    // Another route is untouched by rules for `calls`.
    let id = ok.body["id"].as_str().unwrap();
    let get = app
        .send("GET", &format!("{CALLS}/{id}"), Some(&token), None)
        .await;
    assert_eq!(get.status, 200);
}

#[tokio::test]
async fn commit_then_fail_makes_the_change_and_answers_503() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let id = app.established(&token).await;
    let r = put_faults(
        &app,
        json!({"api": [{"route": "playPrompt", "fault": "commit_then_fail"}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let uri = app.receiver.serve("beep.wav", wav_bytes(1.0));
    let prompt = json!({"prompts": [{"@odata.type": "#microsoft.graph.mediaPrompt",
        "mediaInfo": {"uri": uri}}], "clientContext": "c1"});
    let p = app
        .send(
            "POST",
            &format!("{CALLS}/{id}/playPrompt"),
            Some(&token),
            Some(prompt),
        )
        .await;
    assert_eq!(p.status, 503, "{}", p.text);
    assert_eq!(p.headers["switchboard-fault"], "commit_then_fail");
    // The prompt plays all the same: its operation completes.
    app.advance(30.0).await;
    let done = |notes: &[(String, Value)]| {
        notes.iter().any(|(_, n)| {
            n["resourceData"]["@odata.type"] == "#microsoft.graph.playPromptOperation"
                && n["resourceData"]["clientContext"] == "c1"
                && n["resourceData"]["status"] == "completed"
        })
    };
    let notes = app.receiver.wait_notes(&id, done).await;
    assert!(done(&notes), "{notes:#?}");
}

#[tokio::test]
async fn the_same_seed_gives_the_same_faults_and_a_reset_brings_back_the_configured_ones() {
    let app = spawn_app_with(
        Backend::Suite,
        "[faults]\nseed = 99\n\n[[faults.api]]\nroute = \"call\"\nfault = \"throttle\"\nprobability = 0.5\n",
    )
    .await;
    let token = app.token().await;
    let id = app.create(&token, ALICE).await;
    let pattern = || async {
        let mut out = vec![];
        for _ in 0..24 {
            let g = app
                .send("GET", &format!("{CALLS}/{id}"), Some(&token), None)
                .await;
            out.push(g.status);
        }
        out
    };
    let first = pattern().await;
    assert!(first.contains(&429) && first.contains(&200), "{first:?}");
    let r = app.admin("GET", "/faults", None).await;
    assert_eq!(r.body["seed"], 99, "{}", r.text);
    // Replaced by the same rules and seed: the same draws again.
    let same = put_faults(&app, r.body.clone()).await;
    assert_eq!(same.status, 200, "{}", same.text);
    assert_eq!(pattern().await, first);
    // Cleared, then a reset brings back the configured rules, from their seed.
    assert_eq!(put_faults(&app, json!({})).await.status, 200);
    assert!(pattern().await.iter().all(|s| *s == 200));
    assert_eq!(app.admin("POST", "/reset", None).await.status, 200);
    let id2 = app.create(&token, ALICE).await;
    let mut again = vec![];
    for _ in 0..24 {
        let g = app
            .send("GET", &format!("{CALLS}/{id2}"), Some(&token), None)
            .await;
        again.push(g.status);
    }
    assert_eq!(again, first);
}

#[tokio::test]
async fn notifications_fail_first_and_are_retried_or_are_dropped_and_the_log_says_so() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let r = put_faults(
        &app,
        json!({"notifications": [{"fault": "fail_first", "attempts": 2}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = app.create(&token, ALICE).await;
    // Two attempts fail without a POST, then backoff brings the third.
    for _ in 0..4 {
        app.advance(10.0).await;
    }
    let states = app
        .receiver
        .wait_for(&id, |s| has(s, "updated", "establishing"))
        .await;
    assert!(has(&states, "updated", "establishing"), "{states:?}");
    let first = &log(&app, &id).await[0];
    let attempts = first["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 3, "{first}");
    for a in &attempts[..2] {
        assert!(a["status"].is_null(), "{a}");
        let e = a["error"].as_str().unwrap();
        assert!(e.starts_with("injected fault: fail_first"), "{e}");
    }
    assert_eq!(attempts[2]["status"], 202);

    // Dropped after two attempts: neither is sent, then it is dead.
    let r = put_faults(
        &app,
        json!({"notifications": [{"fault": "drop_after", "attempts": 2}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let lost = app.create(&token, ALICE).await;
    app.advance(0.0).await;
    assert_eq!(log(&app, &lost).await[0]["status"], "pending");
    app.advance(10.0).await;
    let first = &log(&app, &lost).await[0];
    assert_eq!(first["status"], "dead", "{first}");
    let attempts = first["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{first}");
    for a in attempts {
        let e = a["error"].as_str().unwrap();
        assert!(e.starts_with("injected fault: drop_after"), "{e}");
    }
    assert!(app.receiver.notes(&lost).is_empty());
}

#[tokio::test]
async fn a_duplicated_notification_comes_twice_with_the_same_sequence_and_is_marked() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let r = put_faults(&app, json!({"notifications": [{"fault": "duplicate"}]})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Alice answers at once: `establishing` and `established`, each POST sent twice.
    let id = app.create(&token, ALICE).await;
    app.receiver
        .wait_for(&id, |s| {
            s.iter().filter(|(_, s)| s == "established").count() == 2
        })
        .await;
    let posts: Vec<(String, String)> = app
        .receiver
        .received()
        .iter()
        .map(|r| {
            let seq = r.headers["switchboard-notification-sequence"]
                .to_str()
                .unwrap();
            (seq.to_string(), r.body.to_string())
        })
        .collect();
    assert_eq!(posts.len() % 2, 0, "{posts:#?}");
    for pair in posts.chunks(2) {
        assert_eq!(
            pair[0], pair[1],
            "each POST came twice, the same sequence and body"
        );
    }
    let first = &log(&app, &id).await[0];
    assert_eq!(first["status"], "delivered");
    let a = &first["attempts"][0];
    assert_eq!(a["status"], 202);
    assert!(
        a["error"]
            .as_str()
            .unwrap()
            .starts_with("injected fault: duplicate"),
        "{a}"
    );
}

#[tokio::test]
async fn fault_rules_that_cannot_be_are_refused_by_the_api_and_by_config_check() {
    let app = spawn_app(Backend::Suite).await;
    for (label, body) in [
        (
            "probability above 1",
            json!({"api": [{"fault": "throttle", "probability": 2}]}),
        ),
        ("unknown fault", json!({"api": [{"fault": "explode"}]})),
        (
            "unknown key",
            json!({"api": [{"fault": "throttle", "when": "now"}]}),
        ),
        (
            "zero attempts",
            json!({"notifications": [{"fault": "fail_first", "attempts": 0}]}),
        ),
        (
            "zero times",
            json!({"api": [{"fault": "throttle", "times": 0}]}),
        ),
        ("not an object", json!([1, 2])),
        ("an empty array", json!([])),
    ] {
        let r = put_faults(&app, body).await;
        assert_eq!(r.status, 400, "{label}: {}", r.text);
        assert!(r.graph_error().is_some(), "{label}");
    }
    let bad = switchboard::config::Settings::from_toml(&config_toml(
        "[faults]\n[[faults.notifications]]\nfault = \"delay\"\nprobability = -1\n",
    ));
    let e = bad.expect_err("a negative probability");
    assert!(e.to_string().contains("probability"), "{e}");
}

#[tokio::test]
async fn reordered_notifications_of_one_change_arrive_last_first_and_are_marked() {
    // A transfer to a party who answers at once is one change: `transferring`,
    // `transferAccepted`, `terminated`, sent together; reordered, the first goes last.
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let id = app.answered(&token, ALICE).await;
    let r = put_faults(
        &app,
        json!({"notifications": [{"fault": "reorder", "call_id": id}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let t = app
        .send(
            "POST",
            &format!("{CALLS}/{id}/transfer"),
            Some(&token),
            Some(json!({"transferTarget": invitee(BOB)})),
        )
        .await;
    assert_eq!(t.status, 202, "{}", t.text);
    app.advance(5.0).await;
    let states = app.receiver.wait_for(&id, |s| s.len() >= 6).await;
    let tail: Vec<&str> = states[3..].iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(
        tail,
        ["transferAccepted", "terminated", "transferring"],
        "{states:?}"
    );
    let log = log(&app, &id).await;
    let head = log
        .iter()
        .find(|n| n["body"]["value"][0]["resourceData"]["state"] == "transferring")
        .unwrap();
    let note = head["attempts"][0]["error"].as_str().unwrap();
    assert!(note.starts_with("injected fault: reorder"), "{note}");
}
