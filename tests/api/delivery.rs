//! Retries, Retry-After, dead notifications and the deliveries log.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn a_failing_receiver_gets_retries_in_order_and_the_log_shows_every_attempt() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let token = app.token().await;
        app.receiver.fail_next(&[(503, None), (500, None)]);
        let id = app.create(&token, ALICE).await;
        let mut states = vec![];
        for _ in 0..20 {
            states = app.receiver.states(&id);
            if states.len() >= 2 {
                break;
            }
            app.advance(5.0).await;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(
            states,
            vec![
                ("updated".into(), "establishing".into()),
                ("updated".into(), "established".into())
            ],
            "{backend:?}"
        );
        let log = app
            .admin("GET", &format!("/calls/{id}/deliveries"), None)
            .await;
        assert_eq!(log.status, 200);
        let first = &log.body["notifications"][0];
        assert_eq!(first["status"], "delivered");
        let codes: Vec<i64> = first["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["status"].as_i64().unwrap())
            .collect();
        assert_eq!(codes, vec![503, 500, 202], "{backend:?}");
        assert!(first["attempts"][0]["latencyMs"].is_u64());
        assert_eq!(
            first["body"]["value"][0]["resourceData"]["state"],
            "establishing"
        );
    }
}

/// The first attempt is answered 429 with `Retry-After: value` (120 s from now): the retry waits
/// for it, on the call clock.
async fn retry_after_is_honoured(value: &'static str) {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    app.receiver.fail_next(&[(429, Some(value))]);
    let id = app.create(&token, ALICE).await;
    // The first attempt is made before the clock moves.
    for _ in 0..250 {
        if !app.receiver.received().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(app.receiver.received().len(), 1);
    app.advance(100.0).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        app.receiver.states(&id).is_empty(),
        "retried before Retry-After {value}"
    );
    app.advance(25.0).await;
    let s = app.receiver.wait_for(&id, |s| s.len() >= 2).await;
    assert_eq!(s.len(), 2, "{s:?}");
}

#[tokio::test]
async fn retry_after_is_honoured_on_the_call_clock() {
    retry_after_is_honoured("120").await;
}

#[tokio::test]
async fn a_notification_that_keeps_failing_is_marked_dead_and_the_next_one_goes_out() {
    let app = spawn_app_with(
        Backend::Sqlite,
        "[delivery]\nmax_attempts = 2\ninitial_backoff_ms = 1000\n",
    )
    .await;
    let token = app.token().await;
    app.receiver.fail_next(&[(500, None), (500, None)]);
    let id = app.create(&token, ALICE).await;
    for _ in 0..10 {
        if app.receiver.states(&id).len() == 1 {
            break;
        }
        app.advance(5.0).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.receiver.states(&id),
        vec![("updated".to_string(), "established".to_string())]
    );
    let log = app
        .admin("GET", &format!("/calls/{id}/deliveries"), None)
        .await;
    assert_eq!(log.body["notifications"][0]["status"], "dead");
    assert_eq!(
        log.body["notifications"][0]["attempts"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(log.body["notifications"][1]["status"], "delivered");
}

#[tokio::test]
async fn notifications_due_together_go_out_in_one_post_in_order() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let id = app.established(&token).await;
    let other = app.established(&token).await;
    let r = app
        .send(
            "DELETE",
            &format!("/v1.0/communications/calls/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    app.receiver
        .wait_for(&id, |s| has(s, "deleted", "terminated"))
        .await;
    let last = app.receiver.received().last().unwrap().clone();
    let states: Vec<_> = last
        .notes()
        .iter()
        .map(|n| n["resourceData"]["state"].clone())
        .collect();
    assert_eq!(
        states,
        vec!["terminating", "terminated"],
        "one POST, in order"
    );
    let seqs = last.headers["switchboard-notification-sequence"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(seqs.split(',').count(), 2, "{seqs}");
    let app = &app;
    let logged = |id: String| async move {
        let log = app
            .admin("GET", &format!("/calls/{id}/deliveries"), None)
            .await;
        log.body["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["sequence"].to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs, "3,4", "each call numbers its own notifications");
    assert_eq!(logged(id).await, ["1", "2", "3", "4"]);
    assert_eq!(logged(other).await, ["1", "2"]);
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_honoured() {
    let when = std::time::SystemTime::now() + std::time::Duration::from_secs(120);
    retry_after_is_honoured(Box::leak(httpdate::fmt_http_date(when).into_boxed_str())).await;
}

/// A receiver that takes connections and never answers.
async fn hanging_receiver() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hang", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    (url, task)
}

#[tokio::test]
async fn a_hanging_receiver_of_one_app_does_not_delay_another_apps_notifications() {
    let app = spawn_app_with(
        Backend::Suite,
        "[delivery]\ntimeout_ms = 4000\nconcurrency = 16\nper_app_concurrency = 8\nper_receiver_concurrency = 4\n",
    )
    .await;
    let (hang, _task) = hanging_receiver().await;
    let b = app.token_for(APP_B).await;
    for _ in 0..40 {
        let mut body = app.p2p(ALICE);
        body["callbackUri"] = hang.clone().into();
        let r = app
            .send("POST", "/v1.0/communications/calls", Some(&b), Some(body))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    // B's POSTs now hang for 4 s each. A's notifications go out at once all the same.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let a = app.token().await;
    let started = std::time::Instant::now();
    let mut ids = vec![];
    for _ in 0..10 {
        ids.push(app.create(&a, ALICE).await);
    }
    for id in &ids {
        let s = app
            .receiver
            .wait_for(id, |s| has(s, "updated", "establishing"))
            .await;
        assert!(has(&s, "updated", "establishing"), "{s:?}");
    }
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(2),
        "app A waited {took:?} behind app B's hanging receiver"
    );
}

#[tokio::test]
async fn the_deliveries_log_says_when_the_retention_policy_removed_it() {
    for backend in BACKENDS {
        let app = spawn_app_with(
            backend,
            "[retention]\nmax_ended_calls = 1\ninterval_ms = 100\n",
        )
        .await;
        let token = app.token().await;
        let mut ended = vec![];
        for _ in 0..2 {
            let id = app.established(&token).await;
            let d = app
                .send(
                    "DELETE",
                    &format!("/v1.0/communications/calls/{id}"),
                    Some(&token),
                    None,
                )
                .await;
            assert_eq!(d.status, 204);
            app.receiver
                .wait_for(&id, |s| has(s, "deleted", "terminated"))
                .await;
            ended.push(id);
        }
        let mut log = app
            .admin("GET", &format!("/calls/{}/deliveries", ended[0]), None)
            .await;
        for _ in 0..50 {
            if log.body["pruned"].is_object() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            log = app
                .admin("GET", &format!("/calls/{}/deliveries", ended[0]), None)
                .await;
        }
        assert_eq!(log.status, 200, "{backend:?}: {}", log.text);
        assert_eq!(
            log.body["notifications"],
            serde_json::json!([]),
            "{backend:?}"
        );
        assert!(
            log.body["pruned"]["notifications"].as_u64().unwrap() >= 4,
            "{}",
            log.text
        );
        assert!(log.body["pruned"]["at"].is_string());
        // The newest ended call keeps its log.
        let kept = app
            .admin("GET", &format!("/calls/{}/deliveries", ended[1]), None)
            .await;
        assert!(
            kept.body["notifications"].as_array().unwrap().len() >= 4,
            "{}",
            kept.text
        );
        assert!(kept.body["pruned"].is_null());
    }
}

/// The attempts the deliveries log holds for the notification `changeType`/state of a call.
async fn attempts_of(app: &TestApp, id: &str, change: &str) -> Vec<Value> {
    let log = app
        .admin("GET", &format!("/calls/{id}/deliveries"), None)
        .await;
    assert_eq!(log.status, 200, "{}", log.text);
    log.body["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["body"]["value"][0]["changeType"] == change)
        .map(|n| n["attempts"].as_array().unwrap().clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_bot_that_redirects_its_first_incoming_call_notification_gets_the_call_there() {
    let app = spawn_app(Backend::Suite).await;
    app.receiver.fail_next(&[(302, Some("/region-b/calls"))]);
    let id = app.dial(ALICE).await;
    // The notification comes again at once, at the new location.
    let created = app
        .receiver
        .wait_notes(&id, |n| n.iter().any(|(_, n)| n["changeType"] == "created"))
        .await;
    let (path, _) = created
        .iter()
        .find(|(_, n)| n["changeType"] == "created")
        .unwrap();
    assert_eq!(path, "/region-b/calls");
    let tried: Vec<String> = app
        .receiver
        .received()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(tried, ["/incoming", "/region-b/calls"]);
    // Both attempts are in the deliveries log.
    let attempts = attempts_of(&app, &id, "created").await;
    let codes: Vec<i64> = attempts
        .iter()
        .map(|a| a["status"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [302, 202]);
    let why = attempts[0]["error"].as_str().unwrap_or_default();
    assert!(why.starts_with("redirected to 127.0.0.1:"), "{why}");
    // The call's later notifications go there too: the caller gives up.
    app.admin("POST", &format!("/parties/{ALICE}/hangup"), Some(json!({})))
        .await;
    let notes = app
        .receiver
        .wait_notes(&id, |n| {
            n.iter()
                .any(|(_, n)| n["resourceData"]["state"] == "terminated")
        })
        .await;
    let (path, _) = notes
        .iter()
        .find(|(_, n)| n["resourceData"]["state"] == "terminated")
        .unwrap();
    assert_eq!(path, "/region-b/calls");
}

#[tokio::test]
async fn a_204_to_the_first_incoming_call_notification_has_it_sent_again_once() {
    let app = spawn_app(Backend::Suite).await;
    app.receiver.fail_next(&[(204, None), (204, None)]);
    let id = app.dial(ALICE).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while attempts_of(&app, &id, "created").await.len() < 2 && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // The second 204 counts as delivered: two attempts, no third.
    let attempts = attempts_of(&app, &id, "created").await;
    let codes: Vec<i64> = attempts
        .iter()
        .map(|a| a["status"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [204, 204]);
    let log = app
        .admin("GET", &format!("/calls/{id}/deliveries"), None)
        .await;
    assert_eq!(
        log.body["notifications"][0]["status"], "delivered",
        "{}",
        log.text
    );
}

#[tokio::test]
async fn notifications_carry_the_headers_of_the_real_service_with_the_calls_chain_id() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let id = app.create(&token, ALICE).await;
    app.advance(1.0).await;
    app.receiver
        .wait_for(&id, |s| s.iter().any(|(_, st)| st == "established"))
        .await;
    let call = app
        .send(
            "GET",
            &format!("/v1.0/communications/calls/{id}"),
            Some(&token),
            None,
        )
        .await;
    let chain = call.body["callChainId"].as_str().unwrap().to_string();
    let posts: Vec<_> = app
        .receiver
        .received()
        .into_iter()
        .filter(|r| {
            r.notes()
                .iter()
                .any(|n| n["resourceUrl"].as_str().is_some_and(|u| u.contains(&id)))
        })
        .collect();
    assert!(!posts.is_empty());
    for p in posts {
        let h = |name: &str| {
            p.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        assert!(
            h("user-agent").is_some_and(|ua| ua.starts_with("Microsoft-Skype/3.0,(Calling/1.0)")),
            "{:?}",
            h("user-agent")
        );
        assert_eq!(
            h("x-microsoft-skype-chain-id").as_deref(),
            Some(chain.as_str())
        );
        assert_eq!(h("scenario-id").as_deref(), Some(chain.as_str()));
        assert_eq!(h("x-microsoft-tenant").as_deref(), Some(TENANT));
        assert!(h("client-request-id").is_some() && h("x-microsoft-skype-message-id").is_some());
    }
}
