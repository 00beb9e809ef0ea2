//! Incoming calls (answer, reject, redirect, the 15-second window) and the actions a bot takes on
//! a call: prompts, recordings, tones, mute, transfer, and the errors when an action does not fit.

use serde_json::{Value, json};

use crate::helpers::*;

pub(crate) const CALLS: &str = "/v1.0/communications/calls";

/// Two parties who answer redirects after a while, for "the first who answers wins".
const SLOW: &str = "5e9f0000-0000-4000-8000-000000000021";
const QUICK: &str = "5e9f0000-0000-4000-8000-000000000022";

fn extra_parties() -> String {
    format!(
        "[[parties]]\nid = \"{SLOW}\"\nkind = \"user\"\ndisplay_name = \"Slow\"\nbehavior = \"answer\"\nanswer_after_ms = 3000\n\n\
         [[parties]]\nid = \"{QUICK}\"\nkind = \"user\"\ndisplay_name = \"Quick\"\nbehavior = \"answer\"\nanswer_after_ms = 1000\n\n"
    )
}

pub(crate) async fn act(app: &TestApp, token: &str, id: &str, action: &str, body: Value) -> Resp {
    app.send(
        "POST",
        &format!("{CALLS}/{id}/{action}"),
        Some(token),
        Some(body),
    )
    .await
}

fn op_url(id: &str, op: &str) -> String {
    format!("/communications/calls/{id}/operations/{op}")
}

/// The `deleted` notifications that finished operation `op`, with the path they went to.
fn op_done(notes: &[(String, Value)], id: &str, op: &str) -> Vec<(String, Value)> {
    notes
        .iter()
        .filter(|(_, n)| n["changeType"] == "deleted" && n["resourceUrl"] == op_url(id, op))
        .cloned()
        .collect()
}

/// Whether the deliveries log holds a notification finishing `op`, delivered or not.
pub(crate) async fn op_queued(app: &TestApp, id: &str, op: &str) -> bool {
    app.queued(id)
        .await
        .iter()
        .any(|n| n["changeType"] == "deleted" && n["resourceUrl"] == op_url(id, op))
}

/// Waits for the notification finishing `op` and returns its path and resource data.
pub(crate) async fn wait_op(app: &TestApp, id: &str, op: &str) -> (String, Value) {
    let notes = app
        .receiver
        .wait_notes(id, |n| !op_done(n, id, op).is_empty())
        .await;
    let done = op_done(&notes, id, op);
    assert_eq!(done.len(), 1, "one completion for {op}: {notes:#?}");
    (done[0].0.clone(), done[0].1["resourceData"].clone())
}

/// The operation id of a 200 operation response, after checking its Location header.
pub(crate) fn op_id(app: &TestApp, id: &str, r: &Resp) -> String {
    assert_eq!(r.status, 200, "{}", r.text);
    let op = r.body["id"].as_str().expect("operation id").to_string();
    assert_eq!(
        r.headers["location"],
        format!("{}{CALLS}/{id}/operations/{op}", app.base),
        "{}",
        r.text
    );
    op
}

pub(crate) fn result_of(data: &Value) -> (i64, i64) {
    let ri = &data["resultInfo"];
    (
        ri["code"].as_i64().unwrap_or(-1),
        ri["subcode"].as_i64().unwrap_or(-1),
    )
}

pub(crate) fn prompts(uris: &[&str]) -> Value {
    let list: Vec<Value> = uris
        .iter()
        .map(|u| {
            json!({
                "@odata.type": "#microsoft.graph.mediaPrompt",
                "mediaInfo": {
                    "@odata.type": "#microsoft.graph.mediaInfo",
                    "uri": u,
                    "resourceId": uuid::Uuid::new_v4().to_string(),
                }
            })
        })
        .collect();
    Value::Array(list)
}

/// Writes a silent WAV file of `seconds` into `dir` and gives its `file://` URI.
fn wav_file(dir: &TempDir, name: &str, seconds: f64) -> String {
    let path = dir.0.join(name);
    std::fs::write(&path, wav_bytes(seconds)).unwrap();
    format!("file://{}", path.display())
}

fn target(party: &str) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.invitationParticipantInfo",
        "endpointType": "default",
        "identity": {
            "@odata.type": "#microsoft.graph.identitySet",
            "user": {"@odata.type": "#microsoft.graph.identity", "id": party},
        },
    })
}

/// The leg a party sees for `call_id`.
async fn leg(app: &TestApp, party: &str, call_id: &str) -> Option<Value> {
    app.party(party).await["calls"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|c| c["callId"] == call_id)
        .cloned()
}

/// Length in milliseconds of a WAV file, from its header and data chunk.
fn wav_ms(bytes: &[u8]) -> u64 {
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..12], b"WAVE");
    let mut pos = 12;
    let mut byte_rate = 0u64;
    while pos + 8 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        if &bytes[pos..pos + 4] == b"fmt " {
            byte_rate = u32::from_le_bytes(bytes[pos + 16..pos + 20].try_into().unwrap()) as u64;
        }
        if &bytes[pos..pos + 4] == b"data" {
            return size.min(bytes.len() - pos - 8) as u64 * 1000 / byte_rate;
        }
        pos += 8 + size + (size & 1);
    }
    panic!("no data chunk");
}

/// The party presses keys in its current call.
async fn press(app: &TestApp, party: &str, keys: &str) -> Resp {
    app.admin(
        "POST",
        &format!("/parties/{party}/tones"),
        Some(json!({"tones": keys})),
    )
    .await
}

async fn get_state(app: &TestApp, token: &str, id: &str) -> (u16, String) {
    let g = app
        .send("GET", &format!("{CALLS}/{id}"), Some(token), None)
        .await;
    (g.status, g.body["state"].as_str().unwrap_or("").to_string())
}

// --- the incoming call --------------------------------------------------------------------------

#[tokio::test]
async fn a_party_dialing_the_app_sends_an_incoming_call_to_its_incoming_call_uri() {
    for backend in BACKENDS {
        let app = spawn_app_with(backend, &extra_parties()).await;
        let token = app.token().await;
        let r = app
            .admin(
                "POST",
                &format!("/parties/{ALICE}/dial"),
                Some(json!({"appId": APP_A})),
            )
            .await;
        assert_eq!(r.status, 201, "{backend:?}: {}", r.text);
        let id = r.body["callId"].as_str().unwrap().to_string();
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().to_string(), id);

        let notes = app.receiver.wait_notes(&id, |n| !n.is_empty()).await;
        assert_eq!(notes.len(), 1, "{backend:?}: {notes:#?}");
        let (path, note) = &notes[0];
        assert_eq!(path, "/incoming", "sent to the app's incoming_call_uri");
        assert_eq!(note["changeType"], "created");
        assert_eq!(note["resourceUrl"], format!("/communications/calls/{id}"));
        let auth = app.receiver.received()[0].headers["authorization"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(auth.starts_with("Bearer "), "{auth}");

        let d = &note["resourceData"];
        assert_eq!(d["@odata.type"], "#microsoft.graph.call");
        assert_eq!(d["id"], id.as_str());
        assert_eq!(d["state"], "incoming");
        assert_eq!(d["direction"], "incoming");
        assert_eq!(d["source"]["identity"]["user"]["id"], ALICE);
        assert_eq!(d["targets"][0]["identity"]["application"]["id"], APP_A);
        assert_eq!(d["tenantId"], TENANT);
        assert_eq!(d["requestedModalities"], json!(["audio"]));
        assert!(d["myParticipantId"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(d["callChainId"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(d["incomingContext"].is_object(), "{d:#}");
        assert_eq!(
            d["incomingContext"]["sourceParticipantId"],
            d["source"]["participantId"]
        );

        // GET shows the same call.
        let g = app
            .send("GET", &format!("{CALLS}/{id}"), Some(&token), None)
            .await;
        assert_eq!(g.status, 200, "{backend:?}: {}", g.text);
        for k in [
            "id",
            "state",
            "direction",
            "source",
            "targets",
            "tenantId",
            "myParticipantId",
            "callChainId",
            "incomingContext",
            "requestedModalities",
        ] {
            assert_eq!(g.body[k], d[k], "{backend:?}: GET differs on {k}");
        }
        // The caller is ringing.
        let l = leg(&app, ALICE, &id).await.expect("the caller's leg");
        assert_eq!(l["state"], "establishing");

        // A caller with a display name shows it.
        let (_, created) = app.incoming(QUICK).await;
        let user = &created["resourceData"]["source"]["identity"]["user"];
        assert_eq!(
            (&user["id"], &user["displayName"]),
            (&json!(QUICK), &json!("Quick"))
        );
    }
}

#[tokio::test]
async fn a_phone_calling_in_is_the_source_and_its_hang_up_ends_with_540000() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let (id, created) = app.incoming(PHONE).await;
    assert_eq!(
        created["resourceData"]["source"]["identity"]["phone"]["id"],
        PHONE
    );
    let r = act(
        &app,
        &token,
        &id,
        "answer",
        app.answer_body(&app.receiver.url()),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    app.receiver
        .wait_for(&id, |s| has(s, "updated", "established"))
        .await;
    let h = app
        .admin("POST", &format!("/parties/{PHONE}/hangup"), None)
        .await;
    assert_eq!(h.body["callsEnded"], json!([id]));
    app.receiver
        .wait_for(&id, |s| has(s, "deleted", "terminated"))
        .await;
    assert_eq!(app.receiver.end_reason(&id), Some((200, 540000)));
}

#[tokio::test]
async fn dialing_needs_a_known_party_a_known_app_and_an_incoming_call_uri() {
    let app = spawn_app(Backend::Suite).await;
    let cases = [
        (
            "unknown party",
            "5e9f0000-0000-4000-8000-0000000000ff",
            json!({"appId": APP_A}),
            404,
        ),
        (
            "unknown app",
            ALICE,
            json!({"appId": "00000000-0000-4000-8000-000000000000"}),
            404,
        ),
        ("no appId", ALICE, json!({}), 400),
        (
            "app without incoming_call_uri",
            ALICE,
            json!({"appId": APP_NOROLE}),
            400,
        ),
    ];
    for (label, party, body, status) in cases {
        let r = app
            .admin("POST", &format!("/parties/{party}/dial"), Some(body))
            .await;
        assert_eq!(r.status, status, "{label}: {}", r.text);
        assert!(r.graph_error().is_some(), "{label}: {}", r.text);
    }
    assert!(app.receiver.received().is_empty(), "no call was offered");
}

// --- answer ---------------------------------------------------------------------------------------

#[tokio::test]
async fn answering_sends_establishing_then_established_to_the_answers_callback_uri() {
    for backend in BACKENDS {
        let app = spawn_app(backend).await;
        let token = app.token().await;
        let (id, _) = app.incoming(ALICE).await;
        let answered = app.receiver.url_for("/answered");
        let r = act(&app, &token, &id, "answer", app.answer_body(&answered)).await;
        assert_eq!((r.status, r.text.as_str()), (202, ""), "{backend:?}");
        app.advance(1.0).await;
        let notes = app
            .receiver
            .wait_notes(&id, |n| {
                n.iter()
                    .any(|(_, n)| n["resourceData"]["state"] == "established")
            })
            .await;
        let seen: Vec<(&str, &str, &str)> = notes
            .iter()
            .map(|(p, n)| {
                (
                    p.as_str(),
                    n["changeType"].as_str().unwrap(),
                    n["resourceData"]["state"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("/incoming", "created", "incoming"),
                ("/answered", "updated", "establishing"),
                ("/answered", "updated", "established"),
            ],
            "{backend:?}"
        );
        let g = app
            .send("GET", &format!("{CALLS}/{id}"), Some(&token), None)
            .await;
        assert_eq!(g.body["state"], "established");
        assert_eq!(g.body["direction"], "incoming");
        assert_eq!(g.body["callbackUri"], answered.as_str());
        assert_eq!(leg(&app, ALICE, &id).await.unwrap()["state"], "established");

        // Hanging up an answered call ends it as any other.
        let d = app
            .send("DELETE", &format!("{CALLS}/{id}"), Some(&token), None)
            .await;
        assert_eq!(d.status, 204);
        app.receiver
            .wait_for(&id, |s| has(s, "deleted", "terminated"))
            .await;
        assert_eq!(app.receiver.end_reason(&id), Some((200, 5001)));
    }
}

#[tokio::test]
async fn answering_twice_or_answering_an_outgoing_call_is_refused_without_a_second_call() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let id = app.answered(&token, ALICE).await;
    let again = act(
        &app,
        &token,
        &id,
        "answer",
        app.answer_body(&app.receiver.url()),
    )
    .await;
    assert_eq!(again.status, 400, "{}", again.text);
    assert_eq!(again.graph_error().as_deref(), Some("BadRequest"));
    app.advance(5.0).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let states = app.receiver.states(&id);
    assert_eq!(
        states,
        vec![
            ("created".into(), "incoming".into()),
            ("updated".into(), "establishing".into()),
            ("updated".into(), "established".into()),
        ]
    );
    let legs = app.party(ALICE).await["calls"].as_array().unwrap().clone();
    assert_eq!(legs.len(), 1, "{legs:#?}");
    assert_eq!(legs[0]["state"], "established");

    let out = app.create(&token, BOB).await;
    app.receiver
        .wait_for(&out, |s| has(s, "updated", "established"))
        .await;
    let r = act(
        &app,
        &token,
        &out,
        "answer",
        app.answer_body(&app.receiver.url()),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.graph_error().is_some());
    assert_eq!(app.receiver.states(&out).len(), 2, "nothing new happened");
    assert_eq!(app.party(BOB).await["calls"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn two_answers_at_once_give_one_call() {
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.token().await;
    let (id, _) = app.incoming(ALICE).await;
    let body = app.answer_body(&app.receiver.url());
    let (a, b) = tokio::join!(
        act(&app, &token, &id, "answer", body.clone()),
        act(&app, &token, &id, "answer", body.clone()),
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [202, 400], "{} / {}", a.text, b.text);
    app.advance(1.0).await;
    app.receiver
        .wait_for(&id, |s| has(s, "updated", "established"))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let states = app.receiver.states(&id);
    assert_eq!(
        states
            .iter()
            .filter(|(_, s)| s == "establishing" || s == "established")
            .count(),
        2,
        "{states:?}"
    );
}

#[tokio::test]
async fn another_apps_incoming_call_cannot_be_seen_or_answered() {
    let app = spawn_app(Backend::Suite).await;
    let other = app.token_for(APP_B).await;
    let (id, _) = app.incoming(ALICE).await;
    let g = app
        .send("GET", &format!("{CALLS}/{id}"), Some(&other), None)
        .await;
    assert_eq!((g.status, g.graph_error().as_deref()), (404, Some("8522")));
    let r = act(
        &app,
        &other,
        &id,
        "answer",
        app.answer_body(&app.receiver.url()),
    )
    .await;
    assert_eq!((r.status, r.graph_error().as_deref()), (404, Some("8522")));
    let token = app.token().await;
    assert_eq!(get_state(&app, &token, &id).await, (200, "incoming".into()));
}

// --- the 15-second window ---------------------------------------------------------------------------

#[tokio::test]
async fn an_incoming_call_left_alone_for_15_seconds_ends_with_408_1106() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let (id, _) = app.incoming(ALICE).await;
    app.advance(14.9).await;
    assert_eq!(get_state(&app, &token, &id).await, (200, "incoming".into()));
    assert!(
        !app.queued(&id)
            .await
            .iter()
            .any(|n| n["resourceData"]["state"] == "terminated"),
        "ended before 15 s"
    );
    app.advance(0.1).await;
    let notes = app
        .receiver
        .wait_notes(&id, |n| n.iter().any(|(_, n)| n["changeType"] == "deleted"))
        .await;
    let (path, end) = notes.last().unwrap();
    assert_eq!(path, "/incoming");
    assert_eq!(end["changeType"], "deleted");
    assert_eq!(end["resourceData"]["state"], "terminated");
    assert_eq!(app.receiver.end_reason(&id), Some((408, 1106)));
    assert!(
        app.queued(&id)
            .await
            .iter()
            .any(|n| n["resourceData"]["state"] == "terminated"),
        "the log shows what was sent"
    );
    assert_eq!(get_state(&app, &token, &id).await.0, 404);
    let l = leg(&app, ALICE, &id).await.unwrap();
    assert_eq!(l["state"], "terminated");
    assert_eq!(
        (&l["resultInfo"]["code"], &l["resultInfo"]["subcode"]),
        (&json!(408), &json!(1106))
    );

    // Acting after the window is a clear error, and nothing starts.
    for (action, body) in [
        ("answer", app.answer_body(&app.receiver.url())),
        ("reject", json!({"reason": "busy"})),
        ("redirect", json!({"targets": [target(BOB)], "timeout": 20})),
    ] {
        let r = act(&app, &token, &id, action, body).await;
        assert!((400..500).contains(&r.status), "{action}: {}", r.text);
        assert!(r.graph_error().is_some(), "{action}: {}", r.text);
    }
    app.advance(5.0).await;
    assert_eq!(app.receiver.states(&id).len(), 2);
    assert!(app.party(BOB).await["calls"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn an_answer_just_inside_the_window_is_in_time() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let (id, _) = app.incoming(ALICE).await;
    app.advance(14.9).await;
    let r = act(
        &app,
        &token,
        &id,
        "answer",
        app.answer_body(&app.receiver.url()),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    app.receiver
        .wait_for(&id, |s| has(s, "updated", "established"))
        .await;
    app.advance(30.0).await;
    assert_eq!(
        get_state(&app, &token, &id).await,
        (200, "established".into())
    );
    assert_eq!(app.receiver.end_reason(&id), None);
}

// --- reject -------------------------------------------------------------------------------------------

#[tokio::test]
async fn each_reject_reason_ends_the_call_and_the_caller_sees_why() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    for (reason, want) in [
        ("none", (603, 8538)),
        ("busy", (486, 8539)),
        ("forbidden", (403, 8540)),
    ] {
        let (id, _) = app.incoming(ALICE).await;
        let r = act(&app, &token, &id, "reject", json!({"reason": reason})).await;
        assert_eq!((r.status, r.text.as_str()), (202, ""), "{reason}");
        app.receiver
            .wait_for(&id, |s| has(s, "deleted", "terminated"))
            .await;
        assert_eq!(app.receiver.end_reason(&id), Some(want), "{reason}");
        assert_eq!(get_state(&app, &token, &id).await.0, 404, "{reason}");
        let l = leg(&app, ALICE, &id).await.unwrap();
        assert_eq!(l["state"], "terminated", "{reason}");
        assert_eq!(
            (
                l["resultInfo"]["code"].as_i64(),
                l["resultInfo"]["subcode"].as_i64()
            ),
            (Some(want.0), Some(want.1)),
            "{reason}: {l}"
        );
    }
}

#[tokio::test]
async fn a_reject_goes_to_its_callback_uri_and_a_bad_reason_is_refused() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let (id, _) = app.incoming(ALICE).await;
    let r = act(&app, &token, &id, "reject", json!({"reason": "maybe"})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.graph_error().is_some());
    assert_eq!(get_state(&app, &token, &id).await, (200, "incoming".into()));

    let r = act(
        &app,
        &token,
        &id,
        "reject",
        json!({"reason": "Busy", "callbackUri": app.receiver.url_for("/rejected")}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let notes = app
        .receiver
        .wait_notes(&id, |n| n.iter().any(|(_, n)| n["changeType"] == "deleted"))
        .await;
    let (path, _) = notes.last().unwrap();
    assert_eq!(path, "/rejected");
    assert_eq!(app.receiver.end_reason(&id), Some((486, 8539)));
}

// --- redirect -----------------------------------------------------------------------------------------

#[tokio::test]
async fn a_redirected_call_connects_the_caller_to_the_first_target_that_answers() {
    let app = spawn_app_with(Backend::Suite, &extra_parties()).await;
    let token = app.token().await;
    let (id, _) = app.incoming(ALICE).await;
    let r = act(
        &app,
        &token,
        &id,
        "redirect",
        json!({
            "targets": [target(SILENT), target(SLOW), target(QUICK)],
            "timeout": 30,
            "callbackUri": app.receiver.url_for("/redirected"),
        }),
    )
    .await;
    assert_eq!((r.status, r.text.as_str()), (202, ""));
    app.advance(0.9).await;
    assert!(
        !app.queued(&id)
            .await
            .iter()
            .any(|n| n["resourceData"]["state"] == "terminated"),
        "ended before anyone answered"
    );
    assert_eq!(get_state(&app, &token, &id).await.0, 200);
    app.advance(0.1).await;
    let notes = app
        .receiver
        .wait_notes(&id, |n| n.iter().any(|(_, n)| n["changeType"] == "deleted"))
        .await;
    let (path, end) = notes.last().unwrap();
    assert_eq!(path, "/redirected");
    assert_eq!(end["resourceData"]["state"], "terminated");
    assert_eq!(end["resourceData"]["resultInfo"]["code"], 200, "{end:#}");
    assert_eq!(
        get_state(&app, &token, &id).await.0,
        404,
        "the bot's call ended"
    );

    assert_eq!(leg(&app, QUICK, &id).await.unwrap()["state"], "established");
    assert_eq!(leg(&app, ALICE, &id).await.unwrap()["state"], "established");
    for other in [SLOW, SILENT] {
        let calls = app.party(other).await["calls"].clone();
        assert!(
            !calls
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["state"] == "established"),
            "{other} got the caller too: {calls}"
        );
    }
    // Later answers by slower targets change nothing.
    app.advance(5.0).await;
    assert_eq!(leg(&app, QUICK, &id).await.unwrap()["state"], "established");
}

#[tokio::test]
async fn a_redirect_nobody_answers_ends_when_its_timeout_passes() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let (id, _) = app.incoming(ALICE).await;
    let r = act(
        &app,
        &token,
        &id,
        "redirect",
        json!({"targets": [target(SILENT)], "timeout": 20}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    app.advance(19.9).await;
    assert_eq!(get_state(&app, &token, &id).await.0, 200, "outlived 15 s");
    assert_eq!(app.receiver.end_reason(&id), None);
    app.advance(0.1).await;
    app.receiver
        .wait_for(&id, |s| has(s, "deleted", "terminated"))
        .await;
    assert_eq!(app.receiver.end_reason(&id), Some((408, 10057)));
    assert_eq!(leg(&app, ALICE, &id).await.unwrap()["state"], "terminated");

    // Without a timeout, one target rings for 55 s.
    let (id, _) = app.incoming(ALICE).await;
    let r = act(
        &app,
        &token,
        &id,
        "redirect",
        json!({"targets": [target(SILENT)]}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    app.advance(54.9).await;
    assert_eq!(get_state(&app, &token, &id).await.0, 200);
    app.advance(0.1).await;
    app.receiver
        .wait_for(&id, |s| has(s, "deleted", "terminated"))
        .await;
    assert_eq!(app.receiver.end_reason(&id), Some((408, 10057)));
}

#[tokio::test]
async fn redirect_needs_targets_and_a_timeout_from_15_to_90_seconds() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let (id, _) = app.incoming(ALICE).await;
    for (label, body) in [
        ("no targets", json!({"timeout": 20})),
        ("empty targets", json!({"targets": [], "timeout": 20})),
        (
            "timeout 14",
            json!({"targets": [target(BOB)], "timeout": 14}),
        ),
        (
            "timeout 91",
            json!({"targets": [target(BOB)], "timeout": 91}),
        ),
        (
            "timeout not a number",
            json!({"targets": [target(BOB)], "timeout": "soon"}),
        ),
    ] {
        let r = act(&app, &token, &id, "redirect", body).await;
        assert_eq!(r.status, 400, "{label}: {}", r.text);
        assert!(r.graph_error().is_some(), "{label}");
    }
    assert_eq!(get_state(&app, &token, &id).await, (200, "incoming".into()));
    for timeout in [15, 90] {
        let (id, _) = app.incoming(ALICE).await;
        let r = act(
            &app,
            &token,
            &id,
            "redirect",
            json!({"targets": [target(BOB)], "timeout": timeout}),
        )
        .await;
        assert_eq!(r.status, 202, "timeout {timeout}: {}", r.text);
    }
}

// --- prompts --------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_prompt_plays_for_the_length_of_its_wav_file_on_the_virtual_clock() {
    for backend in BACKENDS {
        let dir = TempDir::new();
        let app = spawn_app_with(backend, &prompt_folder(&dir)).await;
        let token = app.token().await;
        let id = app.answered(&token, ALICE).await;
        let uri = wav_file(&dir, "three.wav", 3.0);
        let r = act(
            &app,
            &token,
            &id,
            "playPrompt",
            json!({"clientContext": "ctx-play", "prompts": prompts(&[&uri])}),
        )
        .await;
        let op = op_id(&app, &id, &r);
        assert_eq!(
            r.body["@odata.type"],
            "#microsoft.graph.playPromptOperation"
        );
        assert_eq!(r.body["status"], "running", "{backend:?}");
        assert_eq!(r.body["clientContext"], "ctx-play");
        assert!(r.body["resultInfo"].is_null());
        let g = app
            .send(
                "GET",
                &format!("{CALLS}/{id}/operations/{op}"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(
            (g.status, g.body["status"].as_str()),
            (200, Some("running"))
        );

        app.advance(2.9).await;
        assert!(!op_queued(&app, &id, &op).await, "{backend:?}: done early");
        app.advance(0.1).await;
        let (path, done) = wait_op(&app, &id, &op).await;
        assert!(
            op_queued(&app, &id, &op).await,
            "the log shows what was sent"
        );
        assert_eq!(path, "/api/calls", "to the call's callbackUri");
        assert_eq!(done["@odata.type"], "#microsoft.graph.playPromptOperation");
        assert_eq!(done["id"], op.as_str());
        assert_eq!(done["status"], "completed");
        assert_eq!(done["clientContext"], "ctx-play");
        assert_eq!(result_of(&done), (200, 0));
        let g = app
            .send(
                "GET",
                &format!("{CALLS}/{id}/operations/{op}"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(g.status, 404, "a finished operation is gone");
        app.advance(10.0).await;
        assert_eq!(
            op_done(&app.receiver.notes(&id), &id, &op).len(),
            1,
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn prompts_fetched_over_http_are_timed_by_their_files_and_queue_in_order() {
    let dir = TempDir::new();
    let app = spawn_app_with(Backend::Suite, &prompt_folder(&dir)).await;
    let token = app.token().await;
    let id = app.answered(&token, ALICE).await;
    let two = app.receiver.serve("two.wav", wav_bytes(2.0));
    let one = wav_file(&dir, "one.wav", 1.0);
    let first = act(
        &app,
        &token,
        &id,
        "playPrompt",
        json!({"prompts": prompts(&[&two])}),
    )
    .await;
    let first = op_id(&app, &id, &first);
    // Queued behind the first: 1 s + 2 s, from 2 s on.
    let second = act(
        &app,
        &token,
        &id,
        "playPrompt",
        json!({"prompts": prompts(&[&one, &two])}),
    )
    .await;
    let second = op_id(&app, &id, &second);

    app.advance(1.9).await;
    assert!(!op_queued(&app, &id, &first).await);
    app.advance(0.1).await;
    let (_, done) = wait_op(&app, &id, &first).await;
    assert_eq!(done["status"], "completed");
    app.advance(2.9).await;
    assert!(
        !op_queued(&app, &id, &second).await,
        "played over the first"
    );
    app.advance(0.1).await;
    let (_, done) = wait_op(&app, &id, &second).await;
    assert_eq!(
        (done["status"].as_str(), result_of(&done)),
        (Some("completed"), (200, 0))
    );
}

#[tokio::test]
async fn client_context_is_echoed_and_more_than_256_characters_is_refused() {
    let dir = TempDir::new();
    let app = spawn_app_with(Backend::Suite, &prompt_folder(&dir)).await;
    let token = app.token().await;
    let id = app.answered(&token, ALICE).await;
    let uri = wav_file(&dir, "one.wav", 1.0);
    let ok = "x".repeat(256);
    let r = act(
        &app,
        &token,
        &id,
        "playPrompt",
        json!({"clientContext": ok, "prompts": prompts(&[&uri])}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["clientContext"], ok.as_str());
    let long = "y".repeat(257);
    for (action, body) in [
        (
            "playPrompt",
            json!({"clientContext": long, "prompts": prompts(&[&uri])}),
        ),
        ("recordResponse", json!({"clientContext": long})),
        ("subscribeToTone", json!({"clientContext": long})),
        (
            "sendDtmfTones",
            json!({"clientContext": long, "tones": ["tone1"]}),
        ),
        ("mute", json!({"clientContext": long})),
        ("cancelMediaProcessing", json!({"clientContext": long})),
    ] {
        let r = act(&app, &token, &id, action, body).await;
        assert_eq!(r.status, 400, "{action}: {}", r.text);
        assert_eq!(r.graph_error().as_deref(), Some("BadRequest"), "{action}");
    }
    app.advance(10.0).await;
    let notes = app.receiver.wait_notes(&id, |n| n.len() >= 4).await;
    let ops: Vec<&Value> = notes
        .iter()
        .map(|(_, n)| n)
        .filter(|n| n["resourceUrl"].as_str().unwrap().contains("/operations/"))
        .collect();
    assert_eq!(ops.len(), 1, "only the accepted prompt ran: {ops:#?}");
    assert_eq!(ops[0]["resourceData"]["clientContext"], ok.as_str());
}

// --- recordings -----------------------------------------------------------------------------------------

#[tokio::test]
async fn a_recording_stops_at_its_max_duration_and_is_served_as_wav_with_its_token() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let id = app.answered(&token, ALICE).await;
    let r = act(
        &app,
        &token,
        &id,
        "recordResponse",
        json!({
            "clientContext": "rec",
            "bargeInAllowed": true,
            "maxRecordDurationInSeconds": 5,
            "initialSilenceTimeoutInSeconds": 5,
            "maxSilenceTimeoutInSeconds": 5,
            "playBeep": true,
            "stopTones": ["#"],
        }),
    )
    .await;
    let op = op_id(&app, &id, &r);
    assert_eq!(r.body["@odata.type"], "#microsoft.graph.recordOperation");
    assert_eq!(r.body["status"], "running");
    assert_eq!(r.body["clientContext"], "rec");
    assert!(r.body["recordingLocation"].is_null(), "{}", r.text);
    assert!(r.body["recordingAccessToken"].is_null(), "{}", r.text);

    app.advance(4.9).await;
    assert!(!op_queued(&app, &id, &op).await, "stopped before 5 s");
    app.advance(0.1).await;
    let (_, done) = wait_op(&app, &id, &op).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["clientContext"], "rec");
    assert_eq!(result_of(&done), (200, 8515));
    let location = done["recordingLocation"].as_str().unwrap().to_string();
    let access = done["recordingAccessToken"].as_str().unwrap().to_string();
    assert!(location.starts_with("http"), "{location}");
    assert!(!access.is_empty());

    let fetch = |bearer: Option<String>| {
        let mut rb = app.http.get(&location);
        if let Some(b) = bearer {
            rb = rb.bearer_auth(b);
        }
        async move { rb.send().await.unwrap() }
    };
    let none = into_resp(fetch(None).await).await;
    assert_eq!(none.status, 401, "{}", none.text);
    assert!(none.graph_error().is_some());
    let wrong = into_resp(fetch(Some(format!("{access}x"))).await).await;
    assert_eq!(wrong.status, 401);
    let app_token = fetch(Some(token.clone())).await;
    assert_eq!(
        app_token.status(),
        401,
        "the app's Graph token is not the key"
    );
    let ok = fetch(Some(access.clone())).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["content-type"], "application/octet-stream");
    let bytes = ok.bytes().await.unwrap();
    assert_eq!(&bytes[0..4], b"RIFF");
    let ms = wav_ms(&bytes);
    assert!((5000..=6000).contains(&ms), "recording lasts {ms} ms");
}

#[tokio::test]
async fn a_stop_tone_ends_a_recording_early() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let id = app.answered(&token, ALICE).await;
    let r = act(
        &app,
        &token,
        &id,
        "recordResponse",
        json!({"maxRecordDurationInSeconds": 60, "maxSilenceTimeoutInSeconds": 60, "stopTones": ["#"], "playBeep": false}),
    )
    .await;
    let op = op_id(&app, &id, &r);
    app.advance(2.0).await;
    assert!(!op_queued(&app, &id, &op).await);
    let t = press(&app, ALICE, "#").await;
    assert_eq!(t.status, 200, "{}", t.text);
    let (_, done) = wait_op(&app, &id, &op).await;
    assert_eq!(done["status"], "completed");
    let location = done["recordingLocation"].as_str().unwrap();
    let access = done["recordingAccessToken"].as_str().unwrap();
    let wav = app
        .http
        .get(location)
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(wav.status(), 200);
    let ms = wav_ms(&wav.bytes().await.unwrap());
    assert!((1500..=2500).contains(&ms), "recording lasts {ms} ms");
}

#[tokio::test]
async fn a_prompt_queued_behind_a_recording_plays_as_soon_as_a_stop_tone_ends_it() {
    let dir = TempDir::new();
    let app = spawn_app_with(Backend::Suite, &prompt_folder(&dir)).await;
    let token = app.token().await;
    let id = app.answered(&token, ALICE).await;
    let r = act(
        &app,
        &token,
        &id,
        "recordResponse",
        json!({"maxRecordDurationInSeconds": 60, "maxSilenceTimeoutInSeconds": 60, "stopTones": ["#"], "playBeep": false}),
    )
    .await;
    let rec = op_id(&app, &id, &r);
    let one = wav_file(&dir, "one.wav", 1.0);
    let p = act(
        &app,
        &token,
        &id,
        "playPrompt",
        json!({"prompts": prompts(&[&one])}),
    )
    .await;
    let prompt = op_id(&app, &id, &p);
    app.advance(2.0).await;
    assert_eq!(press(&app, ALICE, "#").await.status, 200);
    wait_op(&app, &id, &rec).await;
    // The prompt was waiting for the recording; it plays now, for its one second.
    app.advance(0.9).await;
    assert!(
        !op_queued(&app, &id, &prompt).await,
        "played before the recording ended"
    );
    app.advance(0.1).await;
    assert!(
        op_queued(&app, &id, &prompt).await,
        "the prompt still waits for the recording's planned 60 s"
    );
    let (_, done) = wait_op(&app, &id, &prompt).await;
    assert_eq!(done["status"], "completed");
}

#[tokio::test]
async fn cancel_media_processing_fails_the_running_prompt_and_the_queued_recording() {
    let dir = TempDir::new();
    let app = spawn_app_with(Backend::Suite, &prompt_folder(&dir)).await;
    let token = app.token().await;
    let id = app.answered(&token, ALICE).await;
    let ten = wav_file(&dir, "ten.wav", 10.0);
    let p = act(
        &app,
        &token,
        &id,
        "playPrompt",
        json!({"prompts": prompts(&[&ten])}),
    )
    .await;
    let prompt = op_id(&app, &id, &p);
    let rec = act(
        &app,
        &token,
        &id,
        "recordResponse",
        json!({"maxRecordDurationInSeconds": 5}),
    )
    .await;
    let rec = op_id(&app, &id, &rec);
    app.advance(1.0).await;

    let c = act(
        &app,
        &token,
        &id,
        "cancelMediaProcessing",
        json!({"clientContext": "cancel"}),
    )
    .await;
    let cancel = op_id(&app, &id, &c);
    assert_eq!(
        c.body["@odata.type"],
        "#microsoft.graph.cancelMediaProcessingOperation"
    );
    assert_eq!(c.body["clientContext"], "cancel");
    assert_eq!(c.body["status"], "completed");

    for op in [&prompt, &rec] {
        let (_, done) = wait_op(&app, &id, op).await;
        assert_eq!(done["status"], "failed", "{done:#}");
        assert_eq!(result_of(&done), (400, 8508));
    }
    let (_, rec_done) = wait_op(&app, &id, &rec).await;
    assert!(
        rec_done["recordingLocation"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    );
    assert!(
        rec_done["recordingAccessToken"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    );
    let gone = app
        .http
        .get(app.state.engine.recording_url(&rec))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404, "a cancelled recording is not served");

    // Nothing more about them, and the media queue is free again.
    app.advance(30.0).await;
    let notes = app.receiver.notes(&id);
    assert_eq!(op_done(&notes, &id, &prompt).len(), 1);
    assert_eq!(op_done(&notes, &id, &rec).len(), 1);
    assert!(
        op_done(&notes, &id, &cancel).is_empty(),
        "it completed at once"
    );
    let one = wav_file(&dir, "one.wav", 1.0);
    let p = act(
        &app,
        &token,
        &id,
        "playPrompt",
        json!({"prompts": prompts(&[&one])}),
    )
    .await;
    let next = op_id(&app, &id, &p);
    app.advance(1.0).await;
    let (_, done) = wait_op(&app, &id, &next).await;
    assert_eq!(done["status"], "completed");
}

// --- tones ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn keys_the_party_presses_after_subscribe_to_tone_arrive_as_tone_info() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let id = app.answered(&token, ALICE).await;
    let before = press(&app, ALICE, "5").await;
    assert_eq!(before.status, 200, "{}", before.text);

    let s = act(
        &app,
        &token,
        &id,
        "subscribeToTone",
        json!({"clientContext": "ctx-tone"}),
    )
    .await;
    let op = op_id(&app, &id, &s);
    assert_eq!(
        s.body["@odata.type"],
        "#microsoft.graph.subscribeToToneOperation"
    );
    assert_eq!(s.body["status"], "completed");
    assert_eq!(s.body["clientContext"], "ctx-tone");

    let after = press(&app, ALICE, "12#").await;
    assert_eq!(after.status, 200, "{}", after.text);
    assert_eq!(after.body["callIds"], json!([id]));
    let tone_notes = |n: &[(String, Value)]| -> Vec<Value> {
        n.iter()
            .map(|(_, n)| n.clone())
            .filter(|n| !n["resourceData"]["toneInfo"].is_null())
            .collect()
    };
    let notes = app
        .receiver
        .wait_notes(&id, |n| tone_notes(n).len() >= 3)
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let tones = tone_notes(&app.receiver.notes(&id));
    assert_eq!(
        tones.len(),
        3,
        "the key pressed before subscribing is not reported"
    );
    let names: Vec<&str> = tones
        .iter()
        .map(|n| n["resourceData"]["toneInfo"]["tone"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tone1", "tone2", "pound"]);
    let seqs: Vec<i64> = tones
        .iter()
        .map(|n| {
            n["resourceData"]["toneInfo"]["sequenceId"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    for n in &tones {
        assert_eq!(n["changeType"], "updated");
        assert_eq!(n["resourceUrl"], format!("/communications/calls/{id}"));
        assert_eq!(n["resourceData"]["state"], "established");
    }
    assert!(op_done(&notes, &id, &op).is_empty(), "it completed at once");

    // cancelMediaProcessing does not end the subscription.
    let c = act(&app, &token, &id, "cancelMediaProcessing", json!({})).await;
    assert_eq!(c.status, 200, "{}", c.text);
    assert_eq!(press(&app, ALICE, "*").await.status, 200);
    let notes = app
        .receiver
        .wait_notes(&id, |n| tone_notes(n).len() >= 4)
        .await;
    let last = tone_notes(&notes).last().cloned().unwrap();
    assert_eq!(last["resourceData"]["toneInfo"]["tone"], "star");
}

#[tokio::test]
async fn dtmf_tones_the_bot_sends_reach_the_party_when_the_operation_completes() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let id = app.answered(&token, ALICE).await;
    let bad = act(
        &app,
        &token,
        &id,
        "sendDtmfTones",
        json!({"tones": ["tone12"]}),
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    let r = act(
        &app,
        &token,
        &id,
        "sendDtmfTones",
        json!({"tones": ["tone4", "tone2", "pound"], "delayBetweenTonesMs": 100, "clientContext": "dtmf"}),
    )
    .await;
    let op = op_id(&app, &id, &r);
    assert_eq!(
        r.body["@odata.type"],
        "#microsoft.graph.sendDtmfTonesOperation"
    );
    assert_eq!(r.body["status"], "running");
    assert_eq!(r.body["clientContext"], "dtmf");
    assert_eq!(leg(&app, ALICE, &id).await.unwrap()["tonesReceived"], "");

    app.advance(0.29).await;
    assert!(!op_queued(&app, &id, &op).await);
    app.advance(0.01).await;
    let (_, done) = wait_op(&app, &id, &op).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["completionReason"], "completedSuccessfully");
    assert_eq!(done["clientContext"], "dtmf");
    assert_eq!(leg(&app, ALICE, &id).await.unwrap()["tonesReceived"], "42#");
}

// --- mute, recording status, screen sharing ------------------------------------------------------------------

#[tokio::test]
async fn mute_unmute_recording_status_and_screen_sharing_role_are_accepted() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let id = app.answered(&token, ALICE).await;
    for (action, body, kind) in [
        (
            "mute",
            json!({"clientContext": "m"}),
            "muteParticipantOperation",
        ),
        (
            "unmute",
            json!({"clientContext": "m"}),
            "unmuteParticipantOperation",
        ),
        (
            "updateRecordingStatus",
            json!({"clientContext": "m", "status": "recording"}),
            "updateRecordingStatusOperation",
        ),
    ] {
        let r = act(&app, &token, &id, action, body).await;
        let op = op_id(&app, &id, &r);
        assert_eq!(
            r.body["@odata.type"],
            format!("#microsoft.graph.{kind}"),
            "{action}"
        );
        assert_eq!(r.body["clientContext"], "m", "{action}");
        assert!(
            ["completed", "running"].contains(&r.body["status"].as_str().unwrap()),
            "{action}: {}",
            r.text
        );
        if r.body["status"] == "completed" {
            assert!(!op_queued(&app, &id, &op).await, "{action}");
        }
    }
    let r = act(
        &app,
        &token,
        &id,
        "changeScreenSharingRole",
        json!({"role": "sharer"}),
    )
    .await;
    assert_eq!((r.status, r.text.as_str()), (202, ""));
    for (action, body) in [
        ("updateRecordingStatus", json!({})),
        ("updateRecordingStatus", json!({"status": "paused"})),
        ("changeScreenSharingRole", json!({"role": "boss"})),
        ("changeScreenSharingRole", json!({})),
    ] {
        let r = act(&app, &token, &id, action, body.clone()).await;
        assert_eq!(r.status, 400, "{action} {body}: {}", r.text);
        assert!(r.graph_error().is_some());
    }
    assert_eq!(
        get_state(&app, &token, &id).await,
        (200, "established".into())
    );
}

// --- transfer ---------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_transfer_to_a_party_who_answers_ends_the_bots_call_with_7015() {
    let app = spawn_app_with(Backend::Suite, &extra_parties()).await;
    let token = app.token().await;
    let id = app.answered(&token, ALICE).await;
    let r = act(
        &app,
        &token,
        &id,
        "transfer",
        json!({"transferTarget": target(SLOW)}),
    )
    .await;
    assert_eq!((r.status, r.text.as_str()), (202, ""));
    app.receiver
        .wait_for(&id, |s| has(s, "updated", "transferring"))
        .await;
    assert_eq!(leg(&app, SLOW, &id).await.unwrap()["state"], "establishing");
    // SLOW picks up after 3 s.
    app.advance(2.9).await;
    assert_eq!(
        get_state(&app, &token, &id).await,
        (200, "transferring".into())
    );
    app.advance(0.1).await;
    let states = app
        .receiver
        .wait_for(&id, |s| has(s, "deleted", "terminated"))
        .await;
    assert_eq!(
        &states[3..],
        &[
            ("updated".into(), "transferring".into()),
            ("updated".into(), "transferAccepted".into()),
            ("deleted".into(), "terminated".into()),
        ]
    );
    assert_eq!(app.receiver.end_reason(&id), Some((200, 7015)));
    assert_eq!(get_state(&app, &token, &id).await.0, 404);
    assert_eq!(leg(&app, SLOW, &id).await.unwrap()["state"], "established");
    assert_eq!(leg(&app, ALICE, &id).await.unwrap()["state"], "established");

    // The two talk on without the bot until one hangs up.
    let h = app
        .admin("POST", &format!("/parties/{SLOW}/hangup"), None)
        .await;
    assert_eq!(h.status, 200, "{}", h.text);
    let l = leg(&app, ALICE, &id).await.unwrap();
    assert_eq!(l["state"], "terminated", "{l}");
    assert_eq!(l["resultInfo"]["subcode"], 4521, "{l}");
    assert_eq!(
        app.receiver.states(&id).len(),
        6,
        "the bot hears nothing more"
    );
}

#[tokio::test]
async fn a_transfer_nobody_answers_fails_after_the_ringing_timeout_and_the_call_goes_on() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let id = app.answered(&token, ALICE).await;
    let r = act(
        &app,
        &token,
        &id,
        "transfer",
        json!({"transferTarget": target(SILENT)}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    app.receiver
        .wait_for(&id, |s| has(s, "updated", "transferring"))
        .await;
    app.advance(59.9).await;
    assert_eq!(
        get_state(&app, &token, &id).await,
        (200, "transferring".into())
    );
    assert_eq!(
        app.queued(&id)
            .await
            .iter()
            .filter(|n| n["resourceData"]["state"] == "established")
            .count(),
        1,
        "gave up before 60 s"
    );
    app.advance(0.1).await;
    let notes = app
        .receiver
        .wait_notes(&id, |n| {
            n.iter()
                .filter(|(_, n)| n["resourceData"]["state"] == "established")
                .count()
                == 2
        })
        .await;
    let back = &notes.last().unwrap().1;
    assert_eq!(back["changeType"], "updated");
    assert_eq!(back["resourceData"]["state"], "established");
    let (code, subcode) = result_of(&back["resourceData"]);
    assert_eq!(code, 500, "{back:#}");
    assert!([7000, 7700].contains(&subcode), "{back:#}");
    assert!(
        !app.receiver
            .states(&id)
            .iter()
            .any(|(_, s)| s == "transferAccepted"),
        "nobody accepted"
    );
    assert_eq!(
        get_state(&app, &token, &id).await,
        (200, "established".into())
    );
    assert_eq!(leg(&app, ALICE, &id).await.unwrap()["state"], "established");
    // The call goes on: it takes actions and hangs up as usual.
    let m = act(&app, &token, &id, "mute", json!({})).await;
    assert_eq!(m.status, 200, "{}", m.text);
    let again = act(
        &app,
        &token,
        &id,
        "transfer",
        json!({"transferTarget": target(BOB)}),
    )
    .await;
    assert_eq!(again.status, 202, "{}", again.text);
    app.receiver
        .wait_for(&id, |s| has(s, "deleted", "terminated"))
        .await;
    assert_eq!(app.receiver.end_reason(&id), Some((200, 7015)));
}

// --- actions that do not fit ----------------------------------------------------------------------------------------

/// Every call action with a body that would be valid on an established call.
fn every_action(app: &TestApp) -> Vec<(&'static str, Value)> {
    vec![
        ("answer", app.answer_body(&app.receiver.url())),
        ("reject", json!({"reason": "none"})),
        ("redirect", json!({"targets": [target(BOB)], "timeout": 20})),
        ("transfer", json!({"transferTarget": target(BOB)})),
        (
            "playPrompt",
            json!({"prompts": prompts(&["file:///nonexistent.wav"])}),
        ),
        ("recordResponse", json!({"maxRecordDurationInSeconds": 5})),
        ("cancelMediaProcessing", json!({})),
        ("subscribeToTone", json!({})),
        ("sendDtmfTones", json!({"tones": ["tone1"]})),
        ("mute", json!({})),
        ("unmute", json!({})),
        ("updateRecordingStatus", json!({"status": "recording"})),
        ("changeScreenSharingRole", json!({"role": "viewer"})),
    ]
}

#[tokio::test]
async fn actions_on_an_ended_call_answer_404() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let id = app.answered(&token, ALICE).await;
    let d = app
        .send("DELETE", &format!("{CALLS}/{id}"), Some(&token), None)
        .await;
    assert_eq!(d.status, 204);
    for (action, body) in every_action(&app) {
        let r = act(&app, &token, &id, action, body).await;
        assert_eq!(r.status, 404, "{action}: {}", r.text);
        assert_eq!(r.graph_error().as_deref(), Some("8522"), "{action}");
    }
}

#[tokio::test]
async fn actions_that_make_no_sense_in_the_calls_state_answer_400() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;

    // Not answered yet: only answer, reject and redirect apply.
    let (ringing, _) = app.incoming(ALICE).await;
    for (action, body) in every_action(&app)
        .into_iter()
        .filter(|(a, _)| !["answer", "reject", "redirect"].contains(a))
    {
        let r = act(&app, &token, &ringing, action, body).await;
        assert_eq!(r.status, 400, "{action} on an incoming call: {}", r.text);
        assert!(r.graph_error().is_some(), "{action}");
    }
    assert_eq!(
        get_state(&app, &token, &ringing).await,
        (200, "incoming".into())
    );

    // Established: answer, reject and redirect no longer apply.
    let up = app.answered(&token, BOB).await;
    for (action, body) in every_action(&app)
        .into_iter()
        .filter(|(a, _)| ["answer", "reject", "redirect"].contains(a))
    {
        let r = act(&app, &token, &up, action, body).await;
        assert_eq!(r.status, 400, "{action} on an established call: {}", r.text);
        assert!(r.graph_error().is_some(), "{action}");
    }
    assert_eq!(
        get_state(&app, &token, &up).await,
        (200, "established".into())
    );

    // An outgoing call cannot be rejected or redirected either.
    let out = app.create(&token, PHONE).await;
    for (action, body) in every_action(&app)
        .into_iter()
        .filter(|(a, _)| ["reject", "redirect"].contains(a))
    {
        let r = act(&app, &token, &out, action, body).await;
        assert_eq!(r.status, 400, "{action} on an outgoing call: {}", r.text);
    }

    // While a transfer rings, a second transfer does not fit.
    let t = act(
        &app,
        &token,
        &up,
        "transfer",
        json!({"transferTarget": target(SILENT)}),
    )
    .await;
    assert_eq!(t.status, 202, "{}", t.text);
    let again = act(
        &app,
        &token,
        &up,
        "transfer",
        json!({"transferTarget": target(ALICE)}),
    )
    .await;
    assert_eq!(again.status, 400, "{}", again.text);
    assert!(again.graph_error().is_some());
}

#[tokio::test]
async fn media_actions_on_a_call_with_app_hosted_media_are_refused() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let (id, _) = app.incoming(ALICE).await;
    let r = act(
        &app,
        &token,
        &id,
        "answer",
        json!({
            "callbackUri": app.receiver.url(),
            "acceptedModalities": ["audio"],
            "mediaConfig": {"@odata.type": "#microsoft.graph.appHostedMediaConfig", "blob": "<media config blob>"},
        }),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    app.receiver
        .wait_for(&id, |s| has(s, "updated", "established"))
        .await;
    for (action, body) in every_action(&app).into_iter().filter(|(a, _)| {
        [
            "playPrompt",
            "recordResponse",
            "cancelMediaProcessing",
            "subscribeToTone",
            "sendDtmfTones",
        ]
        .contains(a)
    }) {
        let r = act(&app, &token, &id, action, body).await;
        assert_eq!(r.status, 400, "{action}: {}", r.text);
        assert_eq!(r.graph_error().as_deref(), Some("BadRequest"), "{action}");
    }
    let m = act(&app, &token, &id, "mute", json!({})).await;
    assert_eq!(m.status, 200, "mute is not a media action: {}", m.text);
    assert_eq!(
        get_state(&app, &token, &id).await,
        (200, "established".into())
    );
}

/// A transfer target that replaces the call `replaces` (a consultative transfer).
fn replacing(party: &str, replaces: &str) -> Value {
    let mut t = target(party);
    t["replacesCallId"] = json!(replaces);
    json!({"transferTarget": t})
}

#[tokio::test]
async fn a_consultative_transfer_moves_the_consulted_party_over_and_ends_both_calls() {
    // call-transfer.md, example 2: the bot talks to Alice (call 1), consults Bob (call 2), then
    // transfers Alice to Bob replacing call 2.
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let first = app.answered(&token, ALICE).await;
    let consult = app.create(&token, BOB).await;
    app.receiver
        .wait_for(&consult, |s| has(s, "updated", "established"))
        .await;

    // Mistakes first: each is the client's, and nothing changes.
    let stranger = "e5d39592-99bd-4db8-bca8-30fb894ec51d";
    for (label, body) in [
        ("unknown call", replacing(BOB, stranger)),
        ("the call itself", replacing(ALICE, &first)),
        ("target not in it", replacing(CAROL, &consult)),
        ("not a call id", replacing(BOB, "soon")),
        (
            "not a string",
            json!({"transferTarget": {"identity": {"user": {"id": BOB}}, "replacesCallId": 7}}),
        ),
    ] {
        let r = act(&app, &token, &first, "transfer", body).await;
        assert_eq!(r.status, 400, "{label}: {}", r.text);
        assert!(r.graph_error().is_some(), "{label}");
    }
    assert_eq!(
        get_state(&app, &token, &first).await,
        (200, "established".into())
    );
    assert_eq!(
        get_state(&app, &token, &consult).await,
        (200, "established".into())
    );

    let r = act(&app, &token, &first, "transfer", replacing(BOB, &consult)).await;
    assert_eq!((r.status, r.text.as_str()), (202, ""));
    let states = app
        .receiver
        .wait_for(&first, |s| has(s, "deleted", "terminated"))
        .await;
    assert_eq!(
        &states[3..],
        &[
            ("updated".into(), "transferring".into()),
            ("updated".into(), "transferAccepted".into()),
            ("deleted".into(), "terminated".into()),
        ]
    );
    let notes = app.receiver.notes(&first);
    let last = &notes.last().unwrap().1["resourceData"];
    assert_eq!(last["terminationReason"], "AppTransferred", "{last}");
    assert_eq!(app.receiver.end_reason(&first), Some((200, 7015)));
    for (_, n) in &notes[notes.len() - 3..notes.len() - 1] {
        let data = &n["resourceData"];
        assert!(data["resultInfo"].is_null(), "not ended yet: {data}");
        assert!(data.get("terminationReason").is_none(), "{data}");
    }
    // The consultation call ends for the bot.
    let s = app
        .receiver
        .wait_for(&consult, |s| has(s, "deleted", "terminated"))
        .await;
    assert!(has(&s, "deleted", "terminated"), "{s:?}");
    assert_eq!(app.receiver.end_reason(&consult), Some((200, 7015)));
    assert_eq!(get_state(&app, &token, &consult).await.0, 404);
    // Alice and Bob talk in what was the first call.
    assert_eq!(
        leg(&app, BOB, &first).await.unwrap()["state"],
        "established"
    );
    assert_eq!(
        leg(&app, ALICE, &first).await.unwrap()["state"],
        "established"
    );
    let h = app
        .admin("POST", &format!("/parties/{BOB}/hangup"), None)
        .await;
    assert_eq!(h.status, 200, "{}", h.text);
    let l = leg(&app, ALICE, &first).await.unwrap();
    assert_eq!(l["state"], "terminated", "{l}");
}
