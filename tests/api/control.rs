//! The control API's list, reset, redelivery and settling clock.

use serde_json::json;

use crate::helpers::*;

const CALLS: &str = "/v1.0/communications/calls";
const SLOW: &str = "5e9f0000-0000-4000-8000-0000000005a0";

fn slow_party() -> String {
    format!("[[parties]]\nid = \"{SLOW}\"\nbehavior = \"answer\"\nanswer_after_ms = 2000\n")
}

#[tokio::test]
async fn live_calls_are_listed_and_filtered_by_state_and_app() {
    let app = spawn_app_with(Backend::Suite, &slow_party()).await;
    let token = app.token().await;
    let up = app.established(&token).await;
    app.advance(1.0).await;
    let ringing = app.create(&token, SLOW).await;
    let ids = |body: &serde_json::Value| -> Vec<String> {
        body["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    let all = app.admin("GET", "/calls", None).await;
    assert_eq!(all.status, 200, "{}", all.text);
    assert_eq!(
        ids(&all.body),
        [up.clone(), ringing.clone()],
        "oldest first"
    );
    let first = &all.body["value"][0];
    assert_eq!(
        (
            first["appId"].as_str(),
            first["state"].as_str(),
            first["direction"].as_str()
        ),
        (Some(APP_A), Some("established"), Some("outgoing"))
    );
    assert!(first["createdAt"].is_string() && first["callbackUri"].is_string());
    let est = app.admin("GET", "/calls?state=Established", None).await;
    assert_eq!(ids(&est.body), vec![up.clone()], "states in any case");
    let b = app
        .admin("GET", &format!("/calls?appId={APP_B}"), None)
        .await;
    assert_eq!(ids(&b.body), Vec::<String>::new());
    let bad = app.admin("GET", "/calls?state=ringing", None).await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    let d = app
        .send("DELETE", &format!("{CALLS}/{up}"), Some(&token), None)
        .await;
    assert_eq!(d.status, 204);
    let after = app.admin("GET", "/calls", None).await;
    assert_eq!(ids(&after.body), [ringing], "only live calls");
}

#[tokio::test]
async fn a_reset_leaves_what_a_fresh_start_has_and_the_clock_where_it_is() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let id = app.established(&token).await;
    let (incoming, _) = app.incoming(BOB).await;
    app.advance(30.0).await;
    let before = app.admin("GET", "/clock", None).await.body["now"].clone();
    let r = app.admin("POST", "/reset", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["now"], before, "the clock stays");
    let calls = app.admin("GET", "/calls", None).await;
    assert_eq!(calls.body["value"], json!([]));
    for call in [&id, &incoming] {
        let g = app
            .send("GET", &format!("{CALLS}/{call}"), Some(&token), None)
            .await;
        assert_eq!(g.status, 404, "{}", g.text);
        assert!(app.queued(call).await.is_empty(), "its log is gone");
    }
    let alice = app.party(ALICE).await;
    assert_eq!(
        (alice["calls"].clone(), alice["heard"].clone()),
        (json!([]), json!([]))
    );
    let m = app
        .admin("GET", &format!("/meetings/{MEETING}"), None)
        .await;
    assert_eq!(
        m.body["participants"].as_array().map(Vec::len),
        Some(2),
        "the meeting as configured: {}",
        m.text
    );
    // It goes on as new: a call is placed and numbered from 1.
    let again = app.established(&token).await;
    let log = app
        .admin("GET", &format!("/calls/{again}/deliveries"), None)
        .await;
    assert_eq!(log.body["notifications"][0]["sequence"], 1);
}

#[tokio::test]
async fn a_notification_is_sent_again_on_request_as_a_new_attempt() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let id = app.established(&token).await;
    let posts = app.receiver.received().len();
    let r = app
        .admin("POST", &format!("/calls/{id}/deliveries/1/redeliver"), None)
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["attempt"]["status"], 202);
    assert_eq!(r.body["status"], "delivered");
    let received = app.receiver.received();
    assert_eq!(received.len(), posts + 1, "sent again, now");
    let again = received.last().unwrap();
    assert_eq!(again.headers["switchboard-notification-sequence"], "1");
    assert_eq!(again.notes()[0]["resourceData"]["state"], "establishing");
    let log = app
        .admin("GET", &format!("/calls/{id}/deliveries"), None)
        .await;
    assert_eq!(
        log.body["notifications"][0]["attempts"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{}",
        log.text
    );
    let missing = app
        .admin(
            "POST",
            &format!("/calls/{id}/deliveries/99/redeliver"),
            None,
        )
        .await;
    assert_eq!(missing.status, 404, "{}", missing.text);
}

#[tokio::test]
async fn a_settling_advance_answers_once_every_due_notification_had_its_attempt() {
    let app = spawn_app_with(Backend::Suite, &slow_party()).await;
    let token = app.token().await;
    let id = app.create(&token, SLOW).await;
    app.receiver
        .wait_for(&id, |s| has(s, "updated", "establishing"))
        .await;
    // A slow receiver: without settling, the answer would come long before the delivery.
    app.receiver
        .answer_after(std::time::Duration::from_millis(400));
    let r = app
        .admin(
            "POST",
            "/clock/advance",
            Some(json!({"seconds": 3, "settle": true})),
        )
        .await;
    assert_eq!(
        (r.status, &r.body["settled"]),
        (200, &json!(true)),
        "{}",
        r.text
    );
    assert!(
        has(&app.receiver.states(&id), "updated", "established"),
        "delivered before the answer, with no waiting"
    );
    // A receiver that fails: the attempt was made, and rescheduled, by the time it answers.
    app.receiver.fail_next(&[(503, None)]);
    let d = app
        .send("DELETE", &format!("{CALLS}/{id}"), Some(&token), None)
        .await;
    assert_eq!(d.status, 204);
    let r = app
        .admin(
            "POST",
            "/clock/advance",
            Some(json!({"seconds": 0, "settle": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let log = app
        .admin("GET", &format!("/calls/{id}/deliveries"), None)
        .await;
    let third = &log.body["notifications"][2];
    assert_eq!(
        (third["attemptCount"].as_u64(), third["status"].as_str()),
        (Some(1), Some("pending")),
        "{}",
        log.text
    );
    let bad = app
        .admin(
            "POST",
            "/clock/advance",
            Some(json!({"seconds": 1, "settle": "yes"})),
        )
        .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn a_dial_may_say_where_the_incoming_call_goes_when_the_app_has_no_uri() {
    let app = spawn_app(Backend::Suite).await;
    let dial = |body: serde_json::Value| {
        let app = &app;
        async move {
            app.admin("POST", &format!("/parties/{BOB}/dial"), Some(body))
                .await
        }
    };
    let none = dial(json!({"appId": APP_NOROLE})).await;
    assert_eq!(none.status, 400, "{}", none.text);
    assert!(
        none.text.contains("incomingCallUri"),
        "says how to fix it: {}",
        none.text
    );
    let bad = dial(json!({"appId": APP_NOROLE, "incomingCallUri": "not a url"})).await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    let uri = app.receiver.url_for("/elsewhere");
    let ok = dial(json!({"appId": APP_NOROLE, "incomingCallUri": uri})).await;
    assert_eq!(ok.status, 201, "{}", ok.text);
    let id = ok.body["callId"].as_str().unwrap().to_string();
    let notes = app
        .receiver
        .wait_notes(&id, |n| n.iter().any(|(_, n)| n["changeType"] == "created"))
        .await;
    assert_eq!(notes[0].0, "/elsewhere", "{notes:?}");
}

#[tokio::test]
async fn the_openapi_document_describes_every_control_route() {
    let app = spawn_app(Backend::Memory).await;
    let r = app.admin("GET", "/openapi.json", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let doc = &r.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    let routes = [
        ("get", "/_switchboard/v1/parties"),
        ("get", "/_switchboard/v1/parties/{id}"),
        ("post", "/_switchboard/v1/parties/{id}/hangup"),
        ("post", "/_switchboard/v1/parties/{id}/dial"),
        ("post", "/_switchboard/v1/parties/{id}/tones"),
        ("get", "/_switchboard/v1/meetings/{id}"),
        ("get", "/_switchboard/v1/calls"),
        ("post", "/_switchboard/v1/calls/{id}/fail"),
        ("get", "/_switchboard/v1/calls/{id}/deliveries"),
        (
            "post",
            "/_switchboard/v1/calls/{id}/deliveries/{sequence}/redeliver",
        ),
        ("get", "/_switchboard/v1/clock"),
        ("post", "/_switchboard/v1/clock/advance"),
        ("post", "/_switchboard/v1/reset"),
        ("get", "/_switchboard/v1/faults"),
        ("put", "/_switchboard/v1/faults"),
        ("get", "/_switchboard/v1/openapi.json"),
        ("get", "/_switchboard/v1/ca.pem"),
        ("get", "/metrics"),
    ];
    for (method, path) in routes {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} undocumented"
        );
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        routes.len(),
        "no route documented that is not served"
    );
    // Each response schema it names is defined.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let text = r.text.clone();
    for name in text.split("#/components/schemas/").skip(1) {
        let name = name.split('"').next().unwrap();
        assert!(
            schemas.contains_key(name),
            "{name} is referenced and not defined"
        );
    }
    // A documented answer matches what is served: GET /calls's fields.
    let token = app.token().await;
    app.established(&token).await;
    let calls = app.admin("GET", "/calls", None).await;
    let props = schemas["CallSummary"]["properties"].as_object().unwrap();
    let served = calls.body["value"][0].as_object().unwrap();
    let mut documented: Vec<&String> = props.keys().collect();
    let mut answered: Vec<&String> = served.keys().collect();
    documented.sort();
    answered.sort();
    assert_eq!(documented, answered);
}

#[tokio::test]
async fn a_redelivered_notification_stays_delivered_and_is_not_sent_again_by_its_queue() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let id = app.established(&token).await;
    // The hang-up's two notifications fail once: both wait for a retry.
    app.receiver.fail_next(&[(500, None)]);
    let d = app
        .send("DELETE", &format!("{CALLS}/{id}"), Some(&token), None)
        .await;
    assert_eq!(d.status, 204);
    let r = app
        .admin(
            "POST",
            "/clock/advance",
            Some(json!({"seconds": 0, "settle": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app
        .admin("POST", &format!("/calls/{id}/deliveries/3/redeliver"), None)
        .await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (202, Some("delivered")),
        "{}",
        r.text
    );
    // The retry comes: only the one not redelivered goes, and its failure changes nothing of 3.
    app.receiver.fail_next(&[(500, None)]);
    let posts = app.receiver.received().len();
    let r = app
        .admin(
            "POST",
            "/clock/advance",
            Some(json!({"seconds": 60, "settle": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let sent: Vec<String> = app.receiver.received()[posts..]
        .iter()
        .map(|p| {
            p.headers["switchboard-notification-sequence"]
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(sent, ["4"], "3 is not sent again");
    let log = app
        .admin("GET", &format!("/calls/{id}/deliveries"), None)
        .await;
    let third = &log.body["notifications"][2];
    assert_eq!(third["status"], "delivered", "{}", log.text);
    let statuses: Vec<_> = third["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_u64())
        .collect();
    assert_eq!(statuses, [Some(500), Some(202)]);
}
