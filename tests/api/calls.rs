//! The P2P call lifecycle, its end reasons and timers, and bad input.

use serde_json::json;

use crate::helpers::*;

const CALLS: &str = "/v1.0/communications/calls";

#[tokio::test]
async fn a_call_is_created_established_and_hung_up_with_notifications_in_order() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let token = app.token().await;
        let r = app
            .send("POST", CALLS, Some(&token), Some(app.p2p(ALICE)))
            .await;
        assert_eq!(r.status, 201, "{backend:?}: {}", r.text);
        let id = r.body["id"].as_str().unwrap().to_string();
        assert_eq!(id, id.to_lowercase());
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().to_string(), id);
        assert_eq!(
            r.headers["location"],
            format!("{}/v1.0/communications/calls/{id}", app.base)
        );
        assert_eq!(r.body["state"], "establishing");
        assert_eq!(r.body["direction"], "outgoing");
        assert_eq!(r.body["tenantId"], TENANT);
        assert_eq!(r.body["callbackUri"], app.receiver.url());
        assert_eq!(r.body["source"]["identity"]["application"]["id"], APP_A);
        assert_eq!(r.body["targets"][0]["identity"]["user"]["id"], ALICE);
        assert_eq!(r.body["requestedModalities"], json!(["audio"]));
        assert_eq!(
            r.body["@odata.context"],
            format!("{}/v1.0/$metadata#communications/calls/$entity", app.base)
        );
        assert!(r.body["myParticipantId"].is_string() && r.body["callChainId"].is_string());

        let states = app
            .receiver
            .wait_for(&id, |s| has(s, "updated", "established"))
            .await;
        assert_eq!(
            states,
            vec![
                ("updated".into(), "establishing".into()),
                ("updated".into(), "established".into())
            ],
            "{backend:?}"
        );
        let g = app
            .send("GET", &format!("{CALLS}/{id}"), Some(&token), None)
            .await;
        assert_eq!(
            (g.status, g.body["state"].as_str()),
            (200, Some("established"))
        );

        let d = app
            .send("DELETE", &format!("{CALLS}/{id}"), Some(&token), None)
            .await;
        assert_eq!((d.status, d.text.as_str()), (204, ""));
        let states = app
            .receiver
            .wait_for(&id, |s| has(s, "deleted", "terminated"))
            .await;
        assert_eq!(
            &states[2..],
            &[
                ("updated".into(), "terminating".into()),
                ("deleted".into(), "terminated".into())
            ],
            "{backend:?}"
        );
        assert_eq!(app.receiver.end_reason(&id), Some((200, 5001)));
        let note = app
            .receiver
            .received()
            .last()
            .unwrap()
            .notes()
            .last()
            .unwrap()
            .clone();
        assert_eq!(note["@odata.type"], "#microsoft.graph.commsNotification");
        assert_eq!(note["resource"], format!("/app/calls/{id}"));
        assert_eq!(
            note["resourceData"]["resultInfo"]["message"],
            "The conversation has ended."
        );
    }
}

#[tokio::test]
async fn an_ended_call_is_gone_for_every_verb() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let id = app.established(&token).await;
    assert_eq!(
        app.send("DELETE", &format!("{CALLS}/{id}"), Some(&token), None)
            .await
            .status,
        204
    );
    for (method, path) in [
        ("GET", format!("{CALLS}/{id}")),
        ("DELETE", format!("{CALLS}/{id}")),
        ("POST", format!("{CALLS}/{id}/keepAlive")),
    ] {
        let r = app.send(method, &path, Some(&token), None).await;
        assert_eq!(r.status, 404, "{method} {path}");
        assert_eq!(r.graph_error().as_deref(), Some("8522"), "{}", r.text);
    }
    let states = app.receiver.states(&id);
    assert_eq!(states.iter().filter(|(_, s)| s == "terminated").count(), 1);
}

#[tokio::test]
async fn paths_and_ids_are_case_insensitive_and_actions_may_be_qualified() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let id = app.established(&token).await;
    let upper = id.to_uppercase();
    let undashed = id.replace('-', "");
    for path in [
        format!("/V1.0/Communications/CALLS/{upper}"),
        format!("/beta/app/calls/{undashed}"),
        format!("/v1.0/app/calls/{id}"),
    ] {
        let r = app.send("GET", &path, Some(&token), None).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body["id"], id.as_str());
    }
    for action in ["keepAlive", "KEEPALIVE", "microsoft.graph.keepAlive"] {
        let r = app
            .send(
                "POST",
                &format!("{CALLS}/{id}/{action}"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{action}");
    }
    let r = app
        .send("GET", &format!("/beta/app/calls/{id}"), Some(&token), None)
        .await;
    assert_eq!(
        r.body["@odata.context"],
        format!("{}/beta/$metadata#app/calls/$entity", app.base)
    );
}

#[tokio::test]
async fn each_party_behaviour_ends_the_call_with_its_reason() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let cases = [
        ("5e9f0000-0000-4000-8000-000000000005", (480, 10037)),
        ("5e9f0000-0000-4000-8000-000000000006", (480, 10076)),
        ("5e9f0000-0000-4000-8000-000000000007", (480, 10134)),
        ("5e9f0000-0000-4000-8000-000000000008", (480, 10199)),
        ("5e9f0000-0000-4000-8000-000000000009", (603, 8538)),
        ("5e9f0000-0000-4000-8000-000000000010", (486, 8539)),
        ("5e9f0000-0000-4000-8000-0000000000ff", (480, 10037)),
    ];
    for (party, reason) in cases {
        let id = app.create(&token, party).await;
        let states = app
            .receiver
            .wait_for(&id, |s| has(s, "deleted", "terminated"))
            .await;
        assert_eq!(states[0], ("updated".into(), "establishing".into()));
        assert_eq!(app.receiver.end_reason(&id), Some(reason), "{party}");
        // The party's own view shows why, even for an identity no party names.
        let p = app.admin("GET", &format!("/parties/{party}"), None).await;
        assert_eq!(p.body["calls"][0]["callId"], id.as_str(), "{}", p.text);
        assert_eq!(
            p.body["calls"][0]["resultInfo"]["subcode"], reason.1,
            "{}",
            p.text
        );
    }
}

#[tokio::test]
async fn a_callee_who_never_answers_rings_until_the_ringing_timeout() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let id = app
        .create(&token, "5e9f0000-0000-4000-8000-000000000011")
        .await;
    app.advance(59.0).await;
    assert_eq!(app.receiver.end_reason(&id), None);
    assert_eq!(
        app.send("GET", &format!("{CALLS}/{id}"), Some(&token), None)
            .await
            .body["state"],
        "establishing"
    );
    app.advance(1.0).await;
    app.receiver
        .wait_for(&id, |s| has(s, "deleted", "terminated"))
        .await;
    assert_eq!(app.receiver.end_reason(&id), Some((408, 10057)));
}

#[tokio::test]
async fn a_call_without_keep_alive_for_45_minutes_is_cleaned_up_and_a_kept_one_is_not() {
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.token().await;
    let quiet = app.established(&token).await;
    let kept = app.established(&token).await;
    app.advance(30.0 * 60.0).await;
    let r = app
        .send(
            "POST",
            &format!("{CALLS}/{kept}/keepAlive"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    app.advance(15.0 * 60.0 - 1.0).await;
    assert_eq!(app.receiver.end_reason(&quiet), None);
    app.advance(1.0).await;
    app.receiver
        .wait_for(&quiet, |s| has(s, "deleted", "terminated"))
        .await;
    assert_eq!(app.receiver.end_reason(&quiet), Some((408, 8537)));
    assert_eq!(
        app.send("GET", &format!("{CALLS}/{kept}"), Some(&token), None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn the_other_side_hanging_up_ends_with_the_reason_for_its_kind() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    for (party, reason) in [(ALICE, (200, 4521)), (PHONE, (200, 560000))] {
        let id = app.create(&token, party).await;
        app.receiver
            .wait_for(&id, |s| has(s, "updated", "established"))
            .await;
        let h = app
            .admin("POST", &format!("/parties/{party}/hangup"), None)
            .await;
        assert_eq!(h.status, 200, "{}", h.text);
        assert_eq!(h.body["callsEnded"], json!([id]));
        app.receiver
            .wait_for(&id, |s| has(s, "deleted", "terminated"))
            .await;
        assert_eq!(app.receiver.end_reason(&id), Some(reason), "{party}");
        let states = app.receiver.states(&id);
        assert!(
            !has(&states, "updated", "terminating"),
            "only the bot's hang-up passes through terminating"
        );
    }
}

#[tokio::test]
async fn an_injected_failure_ends_the_call_with_the_given_reason() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let id = app.established(&token).await;
    let f = app
        .admin(
            "POST",
            &format!("/calls/{id}/fail"),
            Some(json!({"code": 410, "subcode": 301005})),
        )
        .await;
    assert_eq!(f.status, 200, "{}", f.text);
    app.receiver
        .wait_for(&id, |s| has(s, "deleted", "terminated"))
        .await;
    assert_eq!(app.receiver.end_reason(&id), Some((410, 301005)));
    let again = app
        .admin(
            "POST",
            &format!("/calls/{id}/fail"),
            Some(json!({"code": 410, "subcode": 301005})),
        )
        .await;
    assert_eq!(again.status, 404);
}

#[tokio::test]
async fn bad_input_gets_a_graph_error_with_the_right_status() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let good = app.p2p(ALICE);
    let mut cases = vec![];
    let mut edit = |label: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let mut b = good.clone();
        f(&mut b);
        cases.push((label.to_string(), b));
    };
    edit("no callbackUri", &|b| {
        b.as_object_mut().unwrap().remove("callbackUri");
    });
    edit("relative callbackUri", &|b| {
        b["callbackUri"] = json!("/api/calls")
    });
    edit("no targets", &|b| b["targets"] = json!([]));
    edit("unknown modality", &|b| {
        b["requestedModalities"] = json!(["smell"])
    });
    edit("the same target twice", &|b| {
        b["targets"] = json!([b["targets"][0], b["targets"][0]])
    });
    edit("array body", &|b| *b = json!([1, 2]));
    for (label, body) in cases {
        let r = app.send("POST", CALLS, Some(&token), Some(body)).await;
        assert_eq!(r.status, 400, "{label}: {}", r.text);
        assert_eq!(r.graph_error().as_deref(), Some("BadRequest"), "{label}");
    }
    let raw = |body: &'static str, ct: &'static str| {
        app.http
            .post(format!("{}{CALLS}", app.base))
            .bearer_auth(&token)
            .header("content-type", ct)
            .body(body)
    };
    let r = into_resp(raw("{not json", "application/json").send().await.unwrap()).await;
    assert_eq!(
        (r.status, r.graph_error().is_some()),
        (400, true),
        "{}",
        r.text
    );
    let r = into_resp(raw("{}", "text/plain").send().await.unwrap()).await;
    assert_eq!(
        (r.status, r.graph_error().is_some()),
        (400, true),
        "{}",
        r.text
    );

    let big = "x".repeat(8 * 1024 * 1024);
    let r = into_resp(
        app.http
            .post(format!("{}{CALLS}", app.base))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(big)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 413);
    assert!(r.graph_error().is_some());

    let r = app
        .send(
            "PUT",
            &format!("{CALLS}/00000000-0000-0000-0000-000000000000"),
            Some(&token),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 405);
    let r = app
        .send("GET", &format!("{CALLS}/not-a-guid"), Some(&token), None)
        .await;
    assert_eq!((r.status, r.graph_error().as_deref()), (404, Some("8522")));
    let r = app
        .send("GET", "/v1.0/communications/meetings", Some(&token), None)
        .await;
    assert_eq!(r.status, 400);
    // Nothing stored was touched by all that.
    let id = app.established(&token).await;
    assert_eq!(
        app.send("GET", &format!("{CALLS}/{id}"), Some(&token), None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn sloppy_but_valid_requests_are_accepted_and_unknown_properties_kept() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let body = json!({
        "callbackUri": app.receiver.url(),
        "targets": [{"identity": {"user": {"id": ALICE.to_uppercase()}}}],
        "requestedModalities": ["AUDIO", "Video"],
        "mediaConfig": {},
        "someFutureProperty": {"x": 1}
    });
    let r = app.send("POST", CALLS, Some(&token), Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["requestedModalities"], json!(["audio", "video"]));
    assert_eq!(
        r.body["mediaConfig"]["@odata.type"],
        "#microsoft.graph.serviceHostedMediaConfig"
    );
    assert_eq!(r.body["someFutureProperty"], json!({"x": 1}));
    assert_eq!(r.body["tenantId"], TENANT);
    let id = r.body["id"].as_str().unwrap();
    let g = app
        .send("GET", &format!("{CALLS}/{id}"), Some(&token), None)
        .await;
    assert_eq!(g.body["someFutureProperty"], json!({"x": 1}));
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_echoes_the_client_request_id() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let r = app
        .http
        .get(format!(
            "{}{CALLS}/00000000-0000-0000-0000-000000000000",
            app.base
        ))
        .bearer_auth(&token)
        .header("client-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    let r = into_resp(r).await;
    assert_eq!(r.headers["client-request-id"], "abc-123");
    let rid = r.headers["request-id"].to_str().unwrap().to_string();
    assert_eq!(r.body["error"]["innerError"]["request-id"], rid.as_str());
    assert_eq!(
        r.body["error"]["innerError"]["client-request-id"],
        "abc-123"
    );
    let ok = app
        .send("POST", CALLS, Some(&token), Some(app.p2p(ALICE)))
        .await;
    assert!(ok.headers.contains_key("request-id"));
    assert_eq!(ok.headers["request-id"], ok.headers["client-request-id"]);
}

#[tokio::test]
async fn the_control_api_reads_json_whatever_the_content_type_says() {
    // `curl -d '{"seconds": 1}'` labels its JSON as a form.
    let app = spawn_app(Backend::Suite).await;
    let before = app.admin("GET", "/clock", None).await.body["now"].clone();
    let r = app
        .http
        .post(format!("{}/_switchboard/v1/clock/advance", app.base))
        .bearer_auth(ADMIN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"seconds": 60}"#)
        .send()
        .await
        .unwrap();
    let r = into_resp(r).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_ne!(r.body["now"], before);
    let bad = app
        .admin("POST", "/clock/advance", Some(json!({"seconds": -1})))
        .await;
    assert_eq!(bad.status, 400);
}

/// The store knows when each live conversation is next due (what a sweeper of several nodes
/// will look for): here, the ringing timeout of a party that does not answer; once the call
/// ends, the row is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_holds_each_conversations_next_due_time() {
    let dir = TempDir::new();
    let db = dir.0.join("sb.db");
    let app = spawn_app_at(&format!("sqlite://{}", db.display()), "", |_| {})
        .await
        .unwrap();
    let token = app.token().await;
    let before = chrono::Utc::now().timestamp_millis();
    let id = app
        .create(&token, "5e9f0000-0000-4000-8000-000000000011")
        .await;
    let next_due = || {
        let conn =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap();
        conn.query_row(
            "SELECT next_due FROM conversations WHERE id = ?1",
            [&id],
            |r| r.get::<_, Option<i64>>(0),
        )
    };
    let due = next_due()
        .unwrap()
        .expect("a ringing call is due for its timeout");
    let ringing_timeout = 60_000;
    assert!(
        due > before && due <= chrono::Utc::now().timestamp_millis() + ringing_timeout,
        "due {due} ms, created after {before}"
    );
    let d = app
        .send("DELETE", &format!("{CALLS}/{id}"), Some(&token), None)
        .await;
    assert_eq!(d.status, 204, "{}", d.text);
    assert!(
        matches!(next_due(), Err(rusqlite::Error::QueryReturnedNoRows)),
        "the ended conversation's row is gone"
    );
}
