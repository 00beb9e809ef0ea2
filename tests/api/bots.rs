//! Bot-to-bot calls: a bot calls another configured app by its `application` (or
//! `applicationInstance`) identity; that app gets an incoming call and answers, rejects or lets it
//! ring, and what either bot does reaches the other.

use serde_json::{Value, json};

use crate::helpers::*;
use crate::incoming::{CALLS, act};

/// A create body from app A's bot to an `application` (or other) identity.
fn to_bot(app: &TestApp, key: &str, id: &str) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.call",
        "callbackUri": app.receiver.url(),
        "targets": [{
            "@odata.type": "#microsoft.graph.invitationParticipantInfo",
            "identity": {
                "@odata.type": "#microsoft.graph.identitySet",
                key: {"@odata.type": "#microsoft.graph.identity", "id": id, "displayName": "Responder"},
            },
        }],
        "requestedModalities": ["audio"],
        "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"},
        "tenantId": TENANT,
    })
}

/// The id of the call app B got (and its `created` notification): the incoming call no other
/// test step has seen yet.
async fn callee_call(app: &TestApp, caller: &str) -> (String, Value) {
    let seen = |n: &Value| {
        let id = n["resourceData"]["id"].as_str().unwrap_or_default();
        id == caller || app.receiver.states(id).len() > 1
    };
    for _ in 0..250 {
        let found = app
            .receiver
            .received()
            .iter()
            .flat_map(|r| r.notes())
            .find(|n| n["changeType"] == "created" && !seen(n));
        if let Some(n) = found {
            let id = n["resourceData"]["id"].as_str().unwrap().to_string();
            return (id, n);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no incoming call reached app B");
}

/// App A's bot calls app B; returns A's token and call id, B's token, call id and incoming
/// notification.
async fn ring_b(app: &TestApp) -> (String, String, String, String, Value) {
    let (ta, tb) = (app.token().await, app.token_for(APP_B).await);
    let r = app
        .send(
            "POST",
            CALLS,
            Some(&ta),
            Some(to_bot(app, "application", APP_B)),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["state"], "establishing");
    assert_eq!(r.body["targets"][0]["identity"]["application"]["id"], APP_B);
    let a = r.body["id"].as_str().unwrap().to_string();
    let (b, created) = callee_call(app, &a).await;
    (ta, a, tb, b, created)
}

/// App A's bot (with `token`) calls the `key` identity `id`; gives the call's id.
async fn place(app: &TestApp, token: &str, key: &str, id: &str) -> String {
    let r = app
        .send("POST", CALLS, Some(token), Some(to_bot(app, key, id)))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["id"].as_str().unwrap().to_string()
}

/// Waits until call `id` was notified `change`/`state`, and fails if it was not.
async fn reached(app: &TestApp, id: &str, change: &str, state: &str) {
    let s = app.receiver.wait_for(id, |s| has(s, change, state)).await;
    assert!(has(&s, change, state), "{id}: {s:?}");
}

async fn answer(app: &TestApp, token: &str, id: &str) {
    let r = act(
        app,
        token,
        id,
        "answer",
        app.answer_body(&app.receiver.url()),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
}

#[tokio::test]
async fn a_bot_calls_another_bot_which_answers_and_both_hear_each_other() {
    let app = spawn_app(Backend::Suite).await;
    let (ta, a, tb, b, created) = ring_b(&app).await;
    // B's incoming call: from A's application, to B's.
    let data = &created["resourceData"];
    assert_eq!(data["state"], "incoming");
    assert_eq!(data["direction"], "incoming");
    assert_eq!(data["source"]["identity"]["application"]["id"], APP_A);
    assert_eq!(data["targets"][0]["identity"]["application"]["id"], APP_B);
    let get = app
        .send("GET", &format!("{CALLS}/{b}"), Some(&tb), None)
        .await;
    assert_eq!(get.status, 200, "{}", get.text);
    assert_eq!(get.body["state"], "incoming");
    // Each app sees only its own end.
    let other = app
        .send("GET", &format!("{CALLS}/{b}"), Some(&ta), None)
        .await;
    assert_eq!(other.status, 404, "{}", other.text);

    answer(&app, &tb, &b).await;
    for id in [&a, &b] {
        reached(&app, id, "updated", "established").await;
    }
    // A's participants: itself and B's application.
    let p = app
        .send("GET", &format!("{CALLS}/{a}/participants"), Some(&ta), None)
        .await;
    assert_eq!(p.status, 200, "{}", p.text);
    let ids: Vec<Option<String>> = p.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(identity_id)
        .collect();
    assert!(ids.contains(&Some(APP_B.to_string())), "{ids:?}");

    // Keys B sends reach A, which subscribed to tones.
    let s = act(
        &app,
        &ta,
        &a,
        "subscribeToTone",
        json!({"clientContext": "c"}),
    )
    .await;
    assert_eq!(s.status, 200, "{}", s.text);
    let d = act(
        &app,
        &tb,
        &b,
        "sendDtmfTones",
        json!({"tones": ["tone4", "pound"]}),
    )
    .await;
    assert_eq!(d.status, 200, "{}", d.text);
    let tones = |n: &[(String, Value)]| -> Vec<String> {
        n.iter()
            .filter_map(|(_, n)| n["resourceData"]["toneInfo"]["tone"].as_str())
            .map(String::from)
            .collect()
    };
    let notes = app.receiver.wait_notes(&a, |n| tones(n).len() >= 2).await;
    assert_eq!(tones(&notes), ["tone4", "pound"]);

    // A hangs up: B's call ends as the other side hanging up.
    let r = app
        .send("DELETE", &format!("{CALLS}/{a}"), Some(&ta), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    reached(&app, &b, "deleted", "terminated").await;
    assert_eq!(app.receiver.end_reason(&b), Some((200, 4521)));
    assert_eq!(app.receiver.end_reason(&a), Some((200, 5001)));
}

#[tokio::test]
async fn a_bot_that_rejects_or_never_answers_fails_the_callers_call() {
    let app = spawn_app(Backend::Suite).await;
    let (_, a, tb, b, _) = ring_b(&app).await;
    let r = act(&app, &tb, &b, "reject", json!({"reason": "busy"})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let states = app
        .receiver
        .wait_for(&a, |s| has(s, "deleted", "terminated"))
        .await;
    assert_eq!(
        states,
        [("updated", "establishing"), ("deleted", "terminated")]
            .map(|(c, s)| (c.to_string(), s.to_string()))
    );
    assert_eq!(app.receiver.end_reason(&a), Some((486, 8539)));

    // Left ringing: the callee's answer window passes, and the caller hears no answer.
    let (_, a, _, b, _) = ring_b(&app).await;
    app.advance(16.0).await;
    for id in [&a, &b] {
        reached(&app, id, "deleted", "terminated").await;
    }
    assert_eq!(app.receiver.end_reason(&b), Some((408, 1106)));
    assert_eq!(app.receiver.end_reason(&a), Some((408, 10057)));
}

#[tokio::test]
async fn the_caller_hanging_up_while_it_rings_ends_the_callees_incoming_call() {
    let app = spawn_app(Backend::Suite).await;
    let (ta, a, tb, b, _) = ring_b(&app).await;
    let r = app
        .send("DELETE", &format!("{CALLS}/{a}"), Some(&ta), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    reached(&app, &b, "deleted", "terminated").await;
    let late = act(
        &app,
        &tb,
        &b,
        "answer",
        app.answer_body(&app.receiver.url()),
    )
    .await;
    assert_eq!(late.status, 404, "{}", late.text);
}

#[tokio::test]
async fn an_application_nobody_configured_or_that_takes_no_calls_is_not_found() {
    let app = spawn_app(Backend::Suite).await;
    let ta = app.token().await;
    for target in ["0b0b0000-0000-4000-8000-0000000000ff", APP_NOROLE] {
        let a = place(&app, &ta, "application", target).await;
        reached(&app, &a, "deleted", "terminated").await;
        assert_eq!(app.receiver.end_reason(&a), Some((480, 10037)));
    }
    // An identity with no id is the client's mistake.
    let mut body = to_bot(&app, "application", APP_B);
    body["targets"][0]["identity"]["application"]["id"] = json!("");
    let r = app.send("POST", CALLS, Some(&ta), Some(body)).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "BadRequest", "{}", r.text);
}

#[tokio::test]
async fn an_application_instance_reaches_the_app_that_lists_it() {
    const INSTANCE: &str = "1a2b0000-0000-4000-8000-0000000000aa";
    let app = spawn_app_on(Backend::Suite, "", "127.0.0.1:0", |s| {
        let b = s.apps.iter_mut().find(|a| a.app_id == APP_B).unwrap();
        b.application_instances = vec![INSTANCE.into()];
    })
    .await
    .unwrap();
    let ta = app.token().await;
    let a = place(&app, &ta, "applicationInstance", INSTANCE).await;
    let (b, created) = callee_call(&app, &a).await;
    assert_eq!(
        created["resourceData"]["targets"][0]["identity"]["application"]["id"],
        APP_B
    );
    let tb = app.token_for(APP_B).await;
    answer(&app, &tb, &b).await;
    reached(&app, &a, "updated", "established").await;
}

#[tokio::test]
async fn a_bot_to_bot_call_outlives_a_restart_and_still_ends_on_both_sides() {
    let dir = TempDir::new();
    let store = format!("sqlite://{}/sb.db", dir.0.display());
    let app = spawn_app_at(&store, "", |_| {}).await.unwrap();
    let (_, a, tb, b, _) = ring_b(&app).await;
    answer(&app, &tb, &b).await;
    reached(&app, &a, "updated", "established").await;
    let receiver = app.receiver.clone();
    app.stop().await;

    let again = spawn_app_at(&store, "", |_| {}).await.unwrap();
    let tb = again.token_for(APP_B).await;
    let r = again
        .send("DELETE", &format!("{CALLS}/{b}"), Some(&tb), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let mut ended = None;
    for _ in 0..250 {
        ended = receiver.end_reason(&a);
        if ended.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        ended,
        Some((200, 4521)),
        "the caller hears the callee hang up"
    );
}

#[tokio::test]
async fn an_incoming_call_redirected_to_an_application_rings_that_bot() {
    // call-redirect.md, example 1: the targets name an application.
    let app = spawn_app(Backend::Suite).await;
    let (ta, tb) = (app.token().await, app.token_for(APP_B).await);
    let (a, _) = app.incoming(ALICE).await;
    let target = json!({
        "@odata.type": "#microsoft.graph.invitationParticipantInfo",
        "identity": {"@odata.type": "#microsoft.graph.identitySet",
                     "application": {"@odata.type": "#microsoft.graph.identity", "id": APP_B}},
    });
    let r = act(
        &app,
        &ta,
        &a,
        "redirect",
        json!({"targets": [target], "timeout": 20}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let (b, created) = callee_call(&app, &a).await;
    assert_eq!(created["resourceData"]["state"], "incoming");
    answer(&app, &tb, &b).await;
    let s = app
        .receiver
        .wait_for(&a, |s| has(s, "deleted", "terminated"))
        .await;
    assert!(has(&s, "updated", "redirecting"), "{s:?}");
    reached(&app, &b, "updated", "established").await;
    // Alice, now talking to bot B, hangs up: B's call ends.
    let r = app
        .admin("POST", &format!("/parties/{ALICE}/hangup"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    reached(&app, &b, "deleted", "terminated").await;
}

#[tokio::test]
async fn a_bot_at_its_call_limit_is_busy_to_a_calling_bot() {
    let app = spawn_app_on(Backend::Suite, "", "127.0.0.1:0", |s| {
        let b = s.apps.iter_mut().find(|a| a.app_id == APP_B).unwrap();
        b.max_concurrent_calls = 1;
    })
    .await
    .unwrap();
    let (ta, _, _, _, _) = ring_b(&app).await;
    let a = place(&app, &ta, "application", APP_B).await;
    reached(&app, &a, "deleted", "terminated").await;
    assert_eq!(app.receiver.end_reason(&a), Some((486, 8539)));
}

fn app_invitee(pid: Option<&str>, replaces: Option<&str>) -> Value {
    let mut v = json!({
        "@odata.type": "#microsoft.graph.invitationParticipantInfo",
        "identity": {"@odata.type": "#microsoft.graph.identitySet",
                     "application": {"@odata.type": "#microsoft.graph.identity", "id": APP_B}},
    });
    if let Some(p) = pid {
        v["participantId"] = json!(p);
    }
    if let Some(r) = replaces {
        v["replacesCallId"] = json!(r);
    }
    v
}

fn created_count(app: &TestApp) -> usize {
    app.receiver
        .received()
        .iter()
        .flat_map(|r| r.notes())
        .filter(|n| n["changeType"] == "created")
        .count()
}

#[tokio::test]
async fn another_bots_participant_id_is_not_the_clients_to_choose() {
    // The callee's leg id names its call: a client choosing it could name a call that exists.
    let app = spawn_app(Backend::Suite).await;
    let ta = app.token().await;
    let ended = app.established(&ta).await;
    let r = app
        .send("DELETE", &format!("{CALLS}/{ended}"), Some(&ta), None)
        .await;
    assert_eq!(r.status, 204);
    let mut g = app.p2p(ALICE);
    g["targets"] = json!([invitee(ALICE), invitee(BOB)]);
    let r = app.send("POST", CALLS, Some(&ta), Some(g)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let gid = r.body["id"].as_str().unwrap().to_string();
    app.receiver
        .wait_for(&gid, |s| has(s, "updated", "established"))
        .await;
    let before = created_count(&app);
    let r = app
        .send(
            "POST",
            &format!("{CALLS}/{gid}/participants/invite"),
            Some(&ta),
            Some(json!({"participants": [app_invitee(Some(&ended), None)]})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.graph_error().is_some());
    // Nothing rang, and the server goes on taking changes.
    assert_eq!(created_count(&app), before);
    let c = app.send("POST", CALLS, Some(&ta), Some(app.p2p(BOB))).await;
    assert_eq!(c.status, 201, "{}", c.text);
}

#[tokio::test]
async fn a_callee_bot_redirecting_a_bot_caller_connects_it_to_the_target() {
    let app = spawn_app(Backend::Suite).await;
    let (_ta, a, tb, b, _) = ring_b(&app).await;
    let target = json!({
        "@odata.type": "#microsoft.graph.invitationParticipantInfo",
        "identity": {"@odata.type": "#microsoft.graph.identitySet",
                     "user": {"@odata.type": "#microsoft.graph.identity", "id": BOB}},
    });
    let r = act(
        &app,
        &tb,
        &b,
        "redirect",
        json!({"targets": [target], "timeout": 20}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    app.receiver
        .wait_for(&b, |s| has(s, "deleted", "terminated"))
        .await;
    app.advance(2.0).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    app.advance(61.0).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        has(&app.receiver.states(&a), "updated", "established"),
        "caller never established"
    );
}

#[tokio::test]
async fn inviting_a_bot_to_replace_its_call_is_not_built_and_rings_nothing() {
    let app = spawn_app(Backend::Suite).await;
    let (ta, a, tb, b, _) = ring_b(&app).await;
    answer(&app, &tb, &b).await;
    app.receiver
        .wait_for(&a, |s| has(s, "updated", "established"))
        .await;
    let mut g = app.p2p(ALICE);
    g["targets"] = json!([crate::helpers::invitee(ALICE), crate::helpers::invitee(BOB)]);
    let r = app.send("POST", CALLS, Some(&ta), Some(g)).await;
    let gid = r.body["id"].as_str().unwrap().to_string();
    app.receiver
        .wait_for(&gid, |s| has(s, "updated", "established"))
        .await;
    let before = created_count(&app);
    let r = app
        .send(
            "POST",
            &format!("{CALLS}/{gid}/participants/invite"),
            Some(&ta),
            Some(json!({"participants": [app_invitee(None, Some(&a))]})),
        )
        .await;
    assert_eq!(r.status, 501, "{}", r.text);
    app.advance(1.0).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    app.advance(16.0).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(created_count(&app), before, "B got a second incoming call");
    // B's call with A goes on.
    let s = app.receiver.states(&b);
    assert!(!has(&s, "deleted", "terminated"), "{s:?}");
}
