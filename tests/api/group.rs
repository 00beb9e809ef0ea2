//! Group calls and meetings: joining, the roster and the participants API, invitations, removal,
//! mute, hold music, and how the bot's call ends in a conversation.

use serde_json::{Value, json};

use crate::helpers::*;

const CALLS: &str = "/v1.0/communications/calls";

/// Users who answer after 1 s and 3 s, for "the first who answers establishes the call".
const QUICK: &str = "5e9f0000-0000-4000-8000-000000000041";
const SLOW: &str = "5e9f0000-0000-4000-8000-000000000042";
const NOT_FOUND: &str = "5e9f0000-0000-4000-8000-000000000005";
const REJECT: &str = "5e9f0000-0000-4000-8000-000000000009";
/// An app that may join meetings only as a guest.
const GUEST_APP: &str = "1a2b3c4d-0000-4000-8000-00000000000f";

async fn spawn(backend: Backend) -> TestApp {
    spawn_app_with(
        backend,
        &format!(
            "[[parties]]\nid = \"{QUICK}\"\nkind = \"user\"\ndisplay_name = \"Quick\"\nbehavior = \"answer\"\nanswer_after_ms = 1000\n\n\
             [[parties]]\nid = \"{SLOW}\"\nkind = \"user\"\ndisplay_name = \"Slow\"\nbehavior = \"answer\"\nanswer_after_ms = 3000\n\n\
             [[apps]]\napp_id = \"{GUEST_APP}\"\ntenant_id = \"{TENANT}\"\nclient_secret = \"secret-f\"\nroles = [\"Calls.JoinGroupCallAsGuest.All\"]\n\n"
        ),
    )
    .await
}

// --- creating and joining ------------------------------------------------------------------------

/// Creates a group call to `targets` and returns its id and the 201 body.
async fn create_group(app: &TestApp, token: &str, targets: &[&str]) -> (String, Value) {
    let r = app
        .send("POST", CALLS, Some(token), Some(app.group(targets)))
        .await;
    assert_eq!(r.status, 201, "group call to {targets:?}: {}", r.text);
    assert_eq!(r.body["state"], "establishing", "{}", r.text);
    (r.body["id"].as_str().unwrap().to_string(), r.body)
}

/// A group call in which `parties` (who answer at once) have joined; returns its id.
async fn group_with(app: &TestApp, token: &str, parties: &[&str]) -> String {
    let (id, _) = create_group(app, token, parties).await;
    let mut want = parties.to_vec();
    want.push(APP_A);
    wait_roster(app, &id, &want).await;
    id
}

/// Joins the test meeting and waits until the call is established; returns its id and the 201
/// body.
async fn join_meeting(app: &TestApp, token: &str) -> (String, Value) {
    let r = app
        .send(
            "POST",
            CALLS,
            Some(token),
            Some(app.meeting(MEETING, MEETING_PASSCODE)),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    app.advance(1.0).await;
    let states = app
        .receiver
        .wait_for(&id, |s| has(s, "updated", "established"))
        .await;
    assert!(has(&states, "updated", "established"), "{states:?}");
    (id, r.body)
}

async fn get_state(app: &TestApp, token: &str, id: &str) -> (u16, String) {
    let g = app
        .send("GET", &format!("{CALLS}/{id}"), Some(token), None)
        .await;
    (g.status, g.body["state"].as_str().unwrap_or("").to_string())
}

// --- the roster and the participants API -----------------------------------------------------------

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// The identities a roster lists, sorted.
fn who(roster: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = roster
        .iter()
        .map(|p| identity_id(p).unwrap_or_else(|| format!("<no identity in {p}>")))
        .collect();
    v.sort();
    v
}

/// Waits until the latest roster notification satisfies `pred` and returns it.
async fn wait_latest_roster(
    app: &TestApp,
    id: &str,
    what: &str,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    for _ in 0..250 {
        if let Some(r) = app.receiver.rosters(id).last().filter(|r| pred(r)) {
            return r.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let seen: Vec<Vec<String>> = app.receiver.rosters(id).iter().map(|r| who(r)).collect();
    panic!("no roster {what} for {id}; rosters so far: {seen:?}");
}

/// Waits until the latest roster notification lists exactly `want` (any order) and returns it.
async fn wait_roster(app: &TestApp, id: &str, want: &[&str]) -> Vec<Value> {
    let want = sorted(want);
    wait_latest_roster(app, id, &format!("of {want:?}"), |r| who(r) == want).await
}

/// `GET .../participants`: checks the status and `@odata.context`, returns the list.
async fn participants(app: &TestApp, token: &str, id: &str) -> Vec<Value> {
    let r = app
        .send(
            "GET",
            &format!("{CALLS}/{id}/participants"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["@odata.context"],
        format!(
            "{}/v1.0/$metadata#communications/calls('{id}')/participants",
            app.base
        ),
        "{}",
        r.text
    );
    r.body["value"].as_array().expect("value").clone()
}

/// The participant id of `party` in a list of participants.
fn pid_of(list: &[Value], party: &str) -> String {
    list.iter()
        .find(|p| identity_id(p).as_deref() == Some(party))
        .and_then(|p| p["id"].as_str())
        .unwrap_or_else(|| panic!("{party} not among {list:#?}"))
        .to_string()
}

fn entry<'a>(list: &'a [Value], party: &str) -> &'a Value {
    list.iter()
        .find(|p| identity_id(p).as_deref() == Some(party))
        .unwrap_or_else(|| panic!("{party} not among {list:#?}"))
}

/// What a bot reads from every roster entry.
fn assert_participant(p: &Value) {
    assert_eq!(p["@odata.type"], "#microsoft.graph.participant", "{p:#}");
    let id = p["id"].as_str().unwrap_or_default();
    assert!(!id.is_empty(), "{p:#}");
    let info = &p["info"];
    assert_eq!(
        info["@odata.type"], "#microsoft.graph.participantInfo",
        "{p:#}"
    );
    assert_eq!(info["participantId"], id, "{p:#}");
    assert_eq!(info["endpointType"], "default", "{p:#}");
    assert_eq!(
        info["identity"]["@odata.type"], "#microsoft.graph.identitySet",
        "{p:#}"
    );
    assert!(p["rosterSequenceNumber"].is_i64(), "{p:#}");
    assert!(p["isMuted"].is_boolean(), "{p:#}");
    assert_eq!(p["isInLobby"], false, "{p:#}");
    let streams = p["mediaStreams"].as_array().expect("mediaStreams");
    assert!(
        streams.iter().any(|s| s["mediaType"] == "audio"
            && s["label"] == "main-audio"
            && s["sourceId"].is_string()
            && s["direction"].is_string()
            && s["serverMuted"].is_boolean()),
        "{p:#}"
    );
}

fn participant_path(id: &str, pid: &str) -> String {
    format!("{CALLS}/{id}/participants/{pid}")
}

async fn on_participant(
    app: &TestApp,
    token: &str,
    id: &str,
    pid: &str,
    action: &str,
    body: Value,
) -> Resp {
    app.send(
        "POST",
        &format!("{}/{action}", participant_path(id, pid)),
        Some(token),
        Some(body),
    )
    .await
}

async fn invite(app: &TestApp, token: &str, id: &str, body: Value) -> Resp {
    app.send(
        "POST",
        &format!("{CALLS}/{id}/participants/invite"),
        Some(token),
        Some(body),
    )
    .await
}

/// The legs a party sees (`GET /_switchboard/v1/parties/{id}`).
async fn legs(app: &TestApp, party: &str) -> Vec<Value> {
    app.party(party).await["calls"].as_array().unwrap().clone()
}

fn ended_with(leg: &Value, code: i64, subcode: i64) -> bool {
    leg["state"] == "terminated"
        && leg["resultInfo"]["code"] == code
        && leg["resultInfo"]["subcode"] == subcode
}

// --- operations ----------------------------------------------------------------------------------

fn op_url(id: &str, op: &str) -> String {
    format!("/communications/calls/{id}/operations/{op}")
}

fn op_done(notes: &[(String, Value)], id: &str, op: &str) -> Vec<Value> {
    notes
        .iter()
        .filter(|(_, n)| n["changeType"] == "deleted" && n["resourceUrl"] == op_url(id, op))
        .map(|(_, n)| n.clone())
        .collect()
}

/// Waits for the one notification finishing `op`; returns its resource data.
async fn wait_op(app: &TestApp, id: &str, op: &str) -> Value {
    let notes = app
        .receiver
        .wait_notes(id, |n| !op_done(n, id, op).is_empty())
        .await;
    let done = op_done(&notes, id, op);
    assert_eq!(done.len(), 1, "one completion for {op}: {notes:#?}");
    done[0]["resourceData"].clone()
}

/// Whether the deliveries log holds a notification finishing `op`.
async fn op_queued(app: &TestApp, id: &str, op: &str) -> bool {
    app.queued(id)
        .await
        .iter()
        .any(|n| n["changeType"] == "deleted" && n["resourceUrl"] == op_url(id, op))
}

/// Checks an operation response (status, `Location`, type, status) and returns the operation id.
fn op_of(app: &TestApp, id: &str, r: &Resp, http: u16, kind: &str, status: &str) -> String {
    assert_eq!(r.status, http, "{kind}: {}", r.text);
    let op = r.body["id"].as_str().expect("operation id").to_string();
    assert_eq!(
        r.headers["location"],
        format!("{}{CALLS}/{id}/operations/{op}", app.base),
        "{kind}"
    );
    assert_eq!(r.body["@odata.type"], format!("#microsoft.graph.{kind}"));
    assert_eq!(r.body["status"], status, "{kind}: {}", r.text);
    op
}

fn result_of(data: &Value) -> (i64, i64) {
    let ri = &data["resultInfo"];
    (
        ri["code"].as_i64().unwrap_or(-1),
        ri["subcode"].as_i64().unwrap_or(-1),
    )
}

// --- meetings --------------------------------------------------------------------------------------

#[tokio::test]
async fn joining_a_meeting_gives_chat_and_meeting_info_and_a_roster_of_everyone_in_it() {
    for backend in BACKENDS {
        let app = spawn(backend).await;
        let token = app.token().await;
        let (id, created) = join_meeting(&app, &token).await;
        let me = created["myParticipantId"].as_str().unwrap().to_string();
        assert_eq!(
            created["meetingInfo"]["joinMeetingId"], MEETING,
            "{created:#}"
        );

        // establishing and established both carry chatInfo and meetingInfo.
        let notes = app.receiver.notes(&id);
        let call_notes: Vec<&Value> = notes
            .iter()
            .map(|(_, n)| n)
            .filter(|n| n["resourceUrl"] == format!("/communications/calls/{id}"))
            .collect();
        let states: Vec<&str> = call_notes
            .iter()
            .map(|n| n["resourceData"]["state"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(states, ["establishing", "established"], "{backend:?}");
        for n in &call_notes {
            let d = &n["resourceData"];
            assert_eq!(
                d["meetingInfo"]["@odata.type"], "#microsoft.graph.joinMeetingIdMeetingInfo",
                "{d:#}"
            );
            assert_eq!(d["meetingInfo"]["joinMeetingId"], MEETING, "{d:#}");
            assert!(
                d["chatInfo"]["threadId"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty()),
                "{d:#}"
            );
        }

        // The roster lists the meeting's parties and the bot, after the call is established.
        let roster = wait_roster(&app, &id, &[CAROL, DAVE, APP_A]).await;
        roster.iter().for_each(assert_participant);
        assert_eq!(entry(&roster, APP_A)["id"], me.as_str(), "{backend:?}");
        assert_eq!(
            entry(&roster, CAROL)["info"]["identity"]["user"]["displayName"],
            "Carol"
        );
        let notes = app.receiver.notes(&id);
        let first_roster = notes
            .iter()
            .position(|(_, n)| {
                n["resourceUrl"]
                    .as_str()
                    .unwrap()
                    .ends_with("/participants")
            })
            .unwrap();
        let established = notes
            .iter()
            .position(|(_, n)| n["resourceData"]["state"] == "established")
            .unwrap();
        assert!(established < first_roster, "{notes:#?}");

        // The participants API agrees, and each entry can be read alone.
        let list = participants(&app, &token, &id).await;
        assert_eq!(who(&list), sorted(&[CAROL, DAVE, APP_A]), "{backend:?}");
        list.iter().for_each(assert_participant);
        assert_eq!(pid_of(&list, APP_A), me);
        let carol = pid_of(&list, CAROL);
        let one = app
            .send("GET", &participant_path(&id, &carol), Some(&token), None)
            .await;
        assert_eq!(one.status, 200, "{}", one.text);
        assert!(one.body["@odata.context"].is_string(), "{}", one.text);
        assert_eq!(identity_id(&one.body).as_deref(), Some(CAROL));
        assert_eq!(one.body["id"], carol.as_str());

        // The control API shows who is in the meeting.
        let m = app
            .admin("GET", &format!("/meetings/{MEETING}"), None)
            .await;
        assert_eq!(m.status, 200, "{}", m.text);
        assert_eq!(m.body["active"], true);
        let mut inside: Vec<(String, String)> = m.body["participants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["id"].as_str().unwrap_or("").into(),
                    p["kind"].as_str().unwrap_or("").into(),
                )
            })
            .collect();
        inside.sort();
        let mut want = vec![
            (CAROL.to_string(), "user".to_string()),
            (DAVE.to_string(), "user".to_string()),
            (APP_A.to_string(), "bot".to_string()),
        ];
        want.sort();
        assert_eq!(inside, want, "{backend:?}");
    }
}

#[tokio::test]
async fn a_meeting_needs_its_id_its_passcode_and_a_join_role() {
    let app = spawn(Backend::Suite).await;
    let token = app.token().await;
    let cases = [
        (
            "unknown meeting",
            APP_A,
            "9999999999",
            MEETING_PASSCODE,
            404,
            None,
        ),
        ("wrong passcode", APP_A, MEETING, "wrong", 403, None),
        (
            "no join role",
            APP_B,
            MEETING,
            MEETING_PASSCODE,
            403,
            Some("7504"),
        ),
    ];
    for (label, who_joins, meeting, passcode, status, code) in cases {
        let t = app.token_for(who_joins).await;
        let r = app
            .send(
                "POST",
                CALLS,
                Some(&t),
                Some(app.meeting(meeting, passcode)),
            )
            .await;
        assert_eq!(r.status, status, "{label}: {}", r.text);
        let err = r.graph_error();
        assert!(err.is_some(), "{label}: {}", r.text);
        if let Some(code) = code {
            assert_eq!(err.as_deref(), Some(code), "{label}: {}", r.text);
        }
    }
    let unknown = app.admin("GET", "/meetings/9999999999", None).await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    // None of that created a call: the meeting holds only its own parties.
    app.advance(1.0).await;
    let m = app
        .admin("GET", &format!("/meetings/{MEETING}"), None)
        .await;
    let ids: Vec<&str> = m.body["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert!(!ids.contains(&APP_A) && !ids.contains(&APP_B), "{}", m.text);
    assert!(
        app.receiver.received().is_empty(),
        "no notification was sent"
    );
    // The right passcode with the role works.
    let ok = app
        .send(
            "POST",
            CALLS,
            Some(&token),
            Some(app.meeting(MEETING, MEETING_PASSCODE)),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.text);
    // Joining as a guest is enough for a meeting, not for a group call.
    let guest = app.token_for(GUEST_APP).await;
    let r = app
        .send(
            "POST",
            CALLS,
            Some(&guest),
            Some(app.meeting(MEETING, MEETING_PASSCODE)),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = app
        .send("POST", CALLS, Some(&guest), Some(app.group(&[ALICE, BOB])))
        .await;
    assert_eq!(
        (r.status, r.graph_error().as_deref()),
        (403, Some("7504")),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn when_everyone_else_leaves_a_meeting_the_bots_call_ends_with_5002() {
    let app = spawn(Backend::Suite).await;
    let token = app.token().await;
    let (id, _) = join_meeting(&app, &token).await;
    wait_roster(&app, &id, &[CAROL, DAVE, APP_A]).await;
    let h = app
        .admin("POST", &format!("/parties/{CAROL}/hangup"), None)
        .await;
    assert_eq!(h.status, 200, "{}", h.text);
    wait_roster(&app, &id, &[DAVE, APP_A]).await;
    assert_eq!(app.receiver.end_reason(&id), None);
    app.admin("POST", &format!("/parties/{DAVE}/hangup"), None)
        .await;
    app.receiver
        .wait_for(&id, |s| has(s, "deleted", "terminated"))
        .await;
    assert_eq!(app.receiver.end_reason(&id), Some((200, 5002)));
    let m = app
        .admin("GET", &format!("/meetings/{MEETING}"), None)
        .await;
    assert_eq!(m.body["active"], false, "{}", m.text);
    assert_eq!(m.body["participants"], json!([]), "{}", m.text);
}

#[tokio::test]
async fn the_bot_leaving_a_meeting_ends_only_its_own_leg() {
    for backend in BACKENDS {
        let app = spawn(backend).await;
        let token = app.token().await;
        let (id, _) = join_meeting(&app, &token).await;
        wait_roster(&app, &id, &[CAROL, DAVE, APP_A]).await;
        let d = app
            .send("DELETE", &format!("{CALLS}/{id}"), Some(&token), None)
            .await;
        assert_eq!((d.status, d.text.as_str()), (204, ""), "{backend:?}");
        let states = app
            .receiver
            .wait_for(&id, |s| has(s, "deleted", "terminated"))
            .await;
        assert_eq!(
            &states[states.len() - 2..],
            &[
                ("updated".into(), "terminating".into()),
                ("deleted".into(), "terminated".into())
            ],
            "{backend:?}"
        );
        assert_eq!(app.receiver.end_reason(&id), Some((200, 5001)));
        assert_eq!(get_state(&app, &token, &id).await.0, 404);

        let m = app
            .admin("GET", &format!("/meetings/{MEETING}"), None)
            .await;
        assert_eq!(m.status, 200, "{}", m.text);
        assert_eq!(m.body["active"], true, "{backend:?}: {}", m.text);
        let mut ids: Vec<&str> = m.body["participants"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["id"].as_str())
            .collect();
        ids.sort();
        let mut want = vec![CAROL, DAVE];
        want.sort();
        assert_eq!(ids, want, "{backend:?}: {}", m.text);
        for party in [CAROL, DAVE] {
            assert!(
                !legs(&app, party)
                    .await
                    .iter()
                    .any(|l| l["state"] == "terminated"),
                "{party} is still in the meeting"
            );
        }
    }
}

// --- group calls -----------------------------------------------------------------------------------

#[tokio::test]
async fn a_group_call_is_established_when_the_first_target_answers() {
    for backend in BACKENDS {
        let app = spawn(backend).await;
        let token = app.token().await;
        let (id, created) = create_group(&app, &token, &[QUICK, SLOW]).await;
        let me = created["myParticipantId"].as_str().unwrap().to_string();
        let chat = &created["chatInfo"];
        assert!(
            chat["threadId"]
                .as_str()
                .is_some_and(|t| t.starts_with("19:") && t.ends_with("@thread.v2")),
            "{backend:?}: chatInfo filled in: {created:#}"
        );
        assert_eq!(chat["messageId"], "0", "{created:#}");
        assert_eq!(created["targets"].as_array().map(Vec::len), Some(2));

        app.advance(0.9).await;
        assert_eq!(
            get_state(&app, &token, &id).await,
            (200, "establishing".into())
        );
        assert!(app.receiver.rosters(&id).is_empty(), "nobody joined yet");
        app.advance(0.1).await;
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
        // A ringing target is not listed.
        let roster = wait_roster(&app, &id, &[QUICK, APP_A]).await;
        assert_eq!(entry(&roster, APP_A)["id"], me.as_str());
        app.advance(2.0).await;
        let roster = wait_roster(&app, &id, &[QUICK, SLOW, APP_A]).await;
        roster.iter().for_each(assert_participant);
        let list = participants(&app, &token, &id).await;
        assert_eq!(who(&list), sorted(&[QUICK, SLOW, APP_A]), "{backend:?}");
        assert_eq!(pid_of(&list, APP_A), me);
        assert_eq!(
            get_state(&app, &token, &id).await,
            (200, "established".into())
        );
    }
}

#[tokio::test]
async fn a_group_call_needs_the_initiate_group_call_role() {
    let app = spawn(Backend::Suite).await;
    let b = app.token_for(APP_B).await;
    let r = app
        .send("POST", CALLS, Some(&b), Some(app.group(&[ALICE, BOB])))
        .await;
    assert_eq!(
        (r.status, r.graph_error().as_deref()),
        (403, Some("7504")),
        "{}",
        r.text
    );
    assert!(legs(&app, ALICE).await.is_empty(), "nobody rang");
    // The same app may still place a P2P call.
    app.create(&b, ALICE).await;
}

#[tokio::test]
async fn a_group_call_nobody_joins_ends_with_5013_at_the_ringing_timeout_and_not_before() {
    let app = spawn(Backend::Suite).await;
    let token = app.token().await;
    let (id, _) = create_group(&app, &token, &[SILENT, NOT_FOUND]).await;
    app.advance(59.0).await;
    assert_eq!(
        get_state(&app, &token, &id).await,
        (200, "establishing".into())
    );
    assert_eq!(app.receiver.end_reason(&id), None);
    app.advance(1.0).await;
    let states = app
        .receiver
        .wait_for(&id, |s| has(s, "deleted", "terminated"))
        .await;
    assert_eq!(
        app.receiver.end_reason(&id),
        Some((200, 5013)),
        "{states:?}"
    );
    assert!(
        !states
            .iter()
            .any(|(_, s)| s == "terminating" || s == "established"),
        "{states:?}"
    );
    assert!(app.receiver.rosters(&id).is_empty());

    // When every target fails, there is nothing to wait for.
    let (id, _) = create_group(&app, &token, &[NOT_FOUND, REJECT]).await;
    app.receiver
        .wait_for(&id, |s| has(s, "deleted", "terminated"))
        .await;
    assert_eq!(app.receiver.end_reason(&id), Some((200, 5013)));
}

// --- removing participants and leaving -----------------------------------------------------------------

#[tokio::test]
async fn a_removed_participant_ends_with_5300_and_when_the_last_other_hangs_up_the_call_ends_5002()
{
    for backend in BACKENDS {
        let app = spawn(backend).await;
        let token = app.token().await;
        let id = group_with(&app, &token, &[ALICE, BOB]).await;
        let alice = pid_of(&participants(&app, &token, &id).await, ALICE);

        let d = app
            .send("DELETE", &participant_path(&id, &alice), Some(&token), None)
            .await;
        assert_eq!((d.status, d.text.as_str()), (204, ""), "{backend:?}");
        let l = legs(&app, ALICE).await;
        assert!(l.iter().any(|l| ended_with(l, 200, 5300)), "{l:#?}");
        wait_roster(&app, &id, &[BOB, APP_A]).await;
        assert_eq!(
            who(&participants(&app, &token, &id).await),
            sorted(&[BOB, APP_A])
        );
        let gone = app
            .send("GET", &participant_path(&id, &alice), Some(&token), None)
            .await;
        assert_eq!(gone.status, 404, "{}", gone.text);
        assert_eq!(
            get_state(&app, &token, &id).await,
            (200, "established".into())
        );

        // BOB, the last one, hangs up: the bot's call ends without passing through terminating.
        let h = app
            .admin("POST", &format!("/parties/{BOB}/hangup"), None)
            .await;
        assert_eq!(h.status, 200, "{}", h.text);
        let states = app
            .receiver
            .wait_for(&id, |s| has(s, "deleted", "terminated"))
            .await;
        assert_eq!(
            app.receiver.end_reason(&id),
            Some((200, 5002)),
            "{backend:?}"
        );
        assert!(!has(&states, "updated", "terminating"), "{states:?}");
    }
}

#[tokio::test]
async fn the_bot_leaving_a_group_call_leaves_the_others_talking() {
    let app = spawn(Backend::Suite).await;
    let token = app.token().await;
    let id = group_with(&app, &token, &[ALICE, BOB]).await;
    let d = app
        .send("DELETE", &format!("{CALLS}/{id}"), Some(&token), None)
        .await;
    assert_eq!(d.status, 204, "{}", d.text);
    let states = app
        .receiver
        .wait_for(&id, |s| has(s, "deleted", "terminated"))
        .await;
    assert!(has(&states, "updated", "terminating"), "{states:?}");
    assert_eq!(app.receiver.end_reason(&id), Some((200, 5001)));
    for party in [ALICE, BOB] {
        let l = legs(&app, party).await;
        assert!(
            l.iter().any(|l| l["state"] == "established"),
            "{party} still talks: {l:#?}"
        );
    }
}

#[tokio::test]
async fn a_party_hanging_up_updates_the_roster_and_the_call_goes_on_until_the_last_leaves() {
    let app = spawn(Backend::Suite).await;
    let token = app.token().await;
    let id = group_with(&app, &token, &[ALICE, BOB, PHONE]).await;
    let list = participants(&app, &token, &id).await;
    assert_eq!(
        entry(&list, PHONE)["info"]["identity"]["phone"]["id"],
        PHONE,
        "a phone is named as one"
    );
    for (party, left) in [(ALICE, vec![BOB, PHONE, APP_A]), (PHONE, vec![BOB, APP_A])] {
        let h = app
            .admin("POST", &format!("/parties/{party}/hangup"), None)
            .await;
        assert_eq!(h.status, 200, "{}", h.text);
        wait_roster(&app, &id, &left).await;
        assert_eq!(app.receiver.end_reason(&id), None, "after {party} left");
        assert_eq!(
            get_state(&app, &token, &id).await,
            (200, "established".into())
        );
    }
    app.admin("POST", &format!("/parties/{BOB}/hangup"), None)
        .await;
    app.receiver
        .wait_for(&id, |s| has(s, "deleted", "terminated"))
        .await;
    assert_eq!(app.receiver.end_reason(&id), Some((200, 5002)));
}

#[tokio::test]
async fn an_unknown_participant_is_404_for_get_delete_and_mute() {
    let app = spawn(Backend::Suite).await;
    let token = app.token().await;
    let id = group_with(&app, &token, &[ALICE, BOB]).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    for pid in [unknown.as_str(), "not-a-guid"] {
        for (method, path, body) in [
            ("GET", participant_path(&id, pid), None),
            ("DELETE", participant_path(&id, pid), None),
            (
                "POST",
                format!("{}/mute", participant_path(&id, pid)),
                Some(json!({"clientContext": "m"})),
            ),
        ] {
            let r = app.send(method, &path, Some(&token), body).await;
            assert_eq!(r.status, 404, "{method} {path}: {}", r.text);
            assert!(r.graph_error().is_some(), "{method} {path}: {}", r.text);
        }
    }
    assert_eq!(
        who(&participants(&app, &token, &id).await),
        sorted(&[ALICE, BOB, APP_A])
    );
}

#[tokio::test]
async fn a_p2p_call_lists_its_two_participants_but_refuses_removal_and_mute() {
    let app = spawn(Backend::Suite).await;
    let token = app.token().await;
    let id = app.established(&token).await;
    let list = participants(&app, &token, &id).await;
    assert_eq!(who(&list), sorted(&[ALICE, APP_A]));
    let alice = pid_of(&list, ALICE);
    let d = app
        .send("DELETE", &participant_path(&id, &alice), Some(&token), None)
        .await;
    assert_eq!(d.status, 400, "{}", d.text);
    assert!(d.graph_error().is_some(), "{}", d.text);
    let m = on_participant(&app, &token, &id, &alice, "mute", json!({})).await;
    assert_eq!(m.status, 400, "{}", m.text);
    assert_eq!(
        get_state(&app, &token, &id).await,
        (200, "established".into())
    );
    app.advance(1.0).await;
    assert!(app.receiver.rosters(&id).is_empty(), "no roster for P2P");
}

// --- invitations -------------------------------------------------------------------------------------

#[tokio::test]
async fn an_invitee_who_answers_completes_the_operation_and_then_joins_the_roster() {
    for backend in BACKENDS {
        let app = spawn(backend).await;
        let token = app.token().await;
        let id = group_with(&app, &token, &[ALICE, BOB]).await;
        let r = invite(
            &app,
            &token,
            &id,
            json!({"participants": [invitee(QUICK)], "clientContext": "inv-1"}),
        )
        .await;
        let op = op_of(&app, &id, &r, 200, "inviteParticipantsOperation", "running");
        assert_eq!(r.body["clientContext"], "inv-1");
        assert!(r.body["resultInfo"].is_null(), "{}", r.text);
        assert_eq!(
            identity_id(&r.body["participants"][0]["identity"]).as_deref(),
            Some(QUICK)
        );

        app.advance(0.9).await;
        assert!(!op_queued(&app, &id, &op).await, "{backend:?}: done early");
        app.advance(0.1).await;
        let done = wait_op(&app, &id, &op).await;
        assert_eq!(
            done["@odata.type"],
            "#microsoft.graph.inviteParticipantsOperation"
        );
        assert_eq!(done["status"], "completed", "{done:#}");
        assert_eq!(done["clientContext"], "inv-1");
        assert_eq!(result_of(&done), (200, 0), "{done:#}");
        wait_roster(&app, &id, &[ALICE, BOB, QUICK, APP_A]).await;

        // The completion comes before the roster that lists the invitee.
        let notes = app.receiver.notes(&id);
        let completed = notes
            .iter()
            .position(|(_, n)| n["resourceUrl"] == op_url(&id, &op))
            .unwrap();
        let listed = notes
            .iter()
            .position(|(_, n)| {
                n["resourceData"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|p| identity_id(p).as_deref() == Some(QUICK)))
            })
            .unwrap();
        assert!(completed < listed, "{backend:?}: {notes:#?}");
        assert_eq!(
            who(&participants(&app, &token, &id).await),
            sorted(&[ALICE, BOB, QUICK, APP_A])
        );
    }
}

#[tokio::test]
async fn an_invitee_who_cannot_be_found_fails_the_operation_with_480_10037() {
    let app = spawn(Backend::Suite).await;
    let token = app.token().await;
    let id = group_with(&app, &token, &[ALICE, BOB]).await;
    let r = invite(
        &app,
        &token,
        &id,
        json!({"participants": [invitee(NOT_FOUND)], "clientContext": "inv-2"}),
    )
    .await;
    let op = op_of(&app, &id, &r, 200, "inviteParticipantsOperation", "running");
    app.advance(1.0).await;
    let done = wait_op(&app, &id, &op).await;
    assert_eq!(done["status"], "failed", "{done:#}");
    assert_eq!(result_of(&done), (480, 10037), "{done:#}");
    assert_eq!(done["clientContext"], "inv-2");
    assert!(
        app.receiver
            .rosters(&id)
            .iter()
            .all(|r| !who(r).contains(&NOT_FOUND.to_string())),
        "never listed"
    );
    assert_eq!(
        who(&participants(&app, &token, &id).await),
        sorted(&[ALICE, BOB, APP_A])
    );
    assert_eq!(
        get_state(&app, &token, &id).await,
        (200, "established".into())
    );
}

#[tokio::test]
async fn an_invite_needs_participants_with_an_identity() {
    let app = spawn(Backend::Suite).await;
    let token = app.token().await;
    let id = group_with(&app, &token, &[ALICE, BOB]).await;
    for (label, body) in [
        ("empty", json!({"participants": []})),
        ("missing", json!({"clientContext": "x"})),
        (
            "no identity",
            json!({"participants": [{"@odata.type": "#microsoft.graph.invitationParticipantInfo"}]}),
        ),
    ] {
        let r = invite(&app, &token, &id, body).await;
        assert_eq!(r.status, 400, "{label}: {}", r.text);
        assert!(r.graph_error().is_some(), "{label}: {}", r.text);
    }
}

#[tokio::test]
async fn removing_a_ringing_invitee_cancels_the_invite_with_8508() {
    let app = spawn(Backend::Suite).await;
    let token = app.token().await;
    let id = group_with(&app, &token, &[ALICE, BOB]).await;
    let mut who_rings = invitee(SILENT);
    let asked = uuid::Uuid::new_v4().to_string();
    who_rings["participantId"] = json!(asked);
    let r = invite(&app, &token, &id, json!({"participants": [who_rings]})).await;
    let op = op_of(&app, &id, &r, 200, "inviteParticipantsOperation", "running");
    let pid = r.body["participants"][0]["participantId"]
        .as_str()
        .unwrap_or(&asked)
        .to_string();
    app.advance(5.0).await;
    assert!(!op_queued(&app, &id, &op).await, "still ringing");

    let d = app
        .send("DELETE", &participant_path(&id, &pid), Some(&token), None)
        .await;
    assert_eq!((d.status, d.text.as_str()), (204, ""), "pid {pid}");
    let done = wait_op(&app, &id, &op).await;
    assert_eq!(done["status"], "failed", "{done:#}");
    assert_eq!(result_of(&done), (400, 8508), "{done:#}");
    let l = legs(&app, SILENT).await;
    assert!(
        !l.is_empty() && l.iter().all(|l| l["state"] == "terminated"),
        "{l:#?}"
    );
    // The ringing timeout that would have ended the invite no longer matters.
    app.advance(60.0).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(op_done(&app.receiver.notes(&id), &id, &op).len(), 1);
    assert!(
        app.receiver
            .rosters(&id)
            .iter()
            .all(|r| !who(r).contains(&SILENT.to_string()))
    );
    assert_eq!(
        get_state(&app, &token, &id).await,
        (200, "established".into())
    );
}

#[tokio::test]
async fn inviting_into_a_p2p_call_makes_it_a_group_call() {
    let app = spawn(Backend::Suite).await;
    let token = app.token().await;
    let id = app.established(&token).await;
    let r = invite(&app, &token, &id, json!({"participants": [invitee(BOB)]})).await;
    let op = op_of(&app, &id, &r, 200, "inviteParticipantsOperation", "running");
    app.advance(1.0).await;
    assert_eq!(wait_op(&app, &id, &op).await["status"], "completed");
    wait_roster(&app, &id, &[ALICE, BOB, APP_A]).await;
    // Now a participant can be removed, which a P2P call refuses.
    let alice = pid_of(&participants(&app, &token, &id).await, ALICE);
    let d = app
        .send("DELETE", &participant_path(&id, &alice), Some(&token), None)
        .await;
    assert_eq!(d.status, 204, "{}", d.text);
    wait_roster(&app, &id, &[BOB, APP_A]).await;
}

#[tokio::test]
async fn an_invite_replacing_a_p2p_call_brings_its_party_in_and_ends_that_call() {
    let app = spawn(Backend::Suite).await;
    let token = app.token().await;
    let p2p = app.established(&token).await;
    let id = group_with(&app, &token, &[BOB, PHONE]).await;
    let mut alice = invitee(ALICE);
    alice["replacesCallId"] = json!(p2p);
    let r = invite(
        &app,
        &token,
        &id,
        json!({"participants": [alice], "clientContext": "escalate"}),
    )
    .await;
    let op = op_of(&app, &id, &r, 200, "inviteParticipantsOperation", "running");
    app.advance(1.0).await;
    let done = wait_op(&app, &id, &op).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    wait_roster(&app, &id, &[ALICE, BOB, PHONE, APP_A]).await;
    app.receiver
        .wait_for(&p2p, |s| has(s, "deleted", "terminated"))
        .await;
    let (code, _) = app.receiver.end_reason(&p2p).expect("the P2P call ended");
    assert_eq!(code, 200, "a normal end");
    let l = legs(&app, ALICE).await;
    assert!(
        l.iter().any(|l| l["state"] == "established"),
        "ALICE talks on in the group: {l:#?}"
    );
    assert_eq!(get_state(&app, &token, &p2p).await.0, 404);
    assert_eq!(
        get_state(&app, &token, &id).await,
        (200, "established".into())
    );
}

// --- mute and hold music --------------------------------------------------------------------------------

#[tokio::test]
async fn muting_a_participant_completes_at_once_and_the_roster_shows_them_muted() {
    let app = spawn(Backend::Suite).await;
    let token = app.token().await;
    let id = group_with(&app, &token, &[ALICE, BOB]).await;
    let alice = pid_of(&participants(&app, &token, &id).await, ALICE);
    let r = on_participant(
        &app,
        &token,
        &id,
        &alice,
        "mute",
        json!({"clientContext": "m1"}),
    )
    .await;
    let op = op_of(&app, &id, &r, 200, "muteParticipantOperation", "completed");
    assert_eq!(r.body["clientContext"], "m1");

    let latest = wait_latest_roster(&app, &id, "with ALICE muted", |r| {
        r.iter()
            .any(|p| identity_id(p).as_deref() == Some(ALICE) && p["isMuted"] == true)
    })
    .await;
    assert_eq!(who(&latest), sorted(&[ALICE, BOB, APP_A]));
    assert_eq!(entry(&latest, BOB)["isMuted"], false, "{latest:#?}");
    let one = app
        .send("GET", &participant_path(&id, &alice), Some(&token), None)
        .await;
    assert_eq!(one.body["isMuted"], true, "{}", one.text);
    app.advance(1.0).await;
    assert!(
        !op_queued(&app, &id, &op).await,
        "a completed operation says no more"
    );
}

#[tokio::test]
async fn hold_music_starts_and_stops_with_completions_and_one_participant_at_a_time() {
    let app = spawn(Backend::Suite).await;
    let token = app.token().await;
    let id = group_with(&app, &token, &[ALICE, BOB]).await;
    let list = participants(&app, &token, &id).await;
    let (alice, bob) = (pid_of(&list, ALICE), pid_of(&list, BOB));
    let music = app.receiver.serve("hold.wav", wav_bytes(2.0));
    let start = json!({
        "clientContext": "hold-1",
        "customPrompt": {
            "@odata.type": "#microsoft.graph.mediaPrompt",
            "mediaInfo": {"@odata.type": "#microsoft.graph.mediaInfo", "uri": music, "resourceId": "hold"},
        },
    });

    let r = on_participant(&app, &token, &id, &alice, "startHoldMusic", start).await;
    let op = op_of(&app, &id, &r, 202, "startHoldMusicOperation", "running");
    assert_eq!(r.body["clientContext"], "hold-1");
    app.advance(1.0).await;
    let done = wait_op(&app, &id, &op).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(done["clientContext"], "hold-1");

    let second = on_participant(&app, &token, &id, &bob, "startHoldMusic", json!({})).await;
    assert_eq!(second.status, 400, "one on hold at a time: {}", second.text);
    let not_held = on_participant(&app, &token, &id, &bob, "stopHoldMusic", json!({})).await;
    assert_eq!(
        not_held.status, 400,
        "BOB is not on hold: {}",
        not_held.text
    );

    let r = on_participant(
        &app,
        &token,
        &id,
        &alice,
        "stopHoldMusic",
        json!({"clientContext": "hold-2"}),
    )
    .await;
    let op = op_of(&app, &id, &r, 202, "stopHoldMusicOperation", "running");
    app.advance(1.0).await;
    let done = wait_op(&app, &id, &op).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(done["clientContext"], "hold-2");

    // With ALICE off hold, BOB may be put on hold.
    let r = on_participant(&app, &token, &id, &bob, "startHoldMusic", json!({})).await;
    op_of(&app, &id, &r, 202, "startHoldMusicOperation", "running");
}

/// A meeting joined the way Microsoft's samples join: from its join link.
const LINKED: &str = "5550001";
const ORGANIZER: &str = "0a0b0c0d-0000-4000-8000-0000000000f1";

#[tokio::test]
async fn a_meeting_is_joined_by_its_thread_and_organizer_as_the_samples_do_or_by_token() {
    let app = spawn_app_with(
        Backend::Suite,
        &format!(
            "[[meetings]]\njoin_meeting_id = \"{LINKED}\"\norganizer = \"{ORGANIZER}\"\ntoken = \"meeting-token-1\"\n\n"
        ),
    )
    .await;
    let token = app.token().await;
    // The control API's view has the thread and a join link the samples' parser reads:
    // URL-decoded, `https://teams.microsoft.com.*/{thread}/{message}?context={json}`.
    let view = app.admin("GET", &format!("/meetings/{LINKED}"), None).await;
    assert_eq!(view.status, 200, "{}", view.text);
    let thread = view.body["threadId"].as_str().unwrap().to_string();
    assert!(
        thread.starts_with("19:meeting_") && thread.ends_with("@thread.v2"),
        "{thread}"
    );
    assert_eq!(view.body["organizer"], ORGANIZER);
    let link = view.body["joinWebUrl"].as_str().unwrap();
    let decoded: String = url::form_urlencoded::parse(format!("x={link}").as_bytes())
        .next()
        .unwrap()
        .1
        .into_owned();
    let rest = decoded
        .strip_prefix("https://teams.microsoft.com/l/meetup-join/")
        .unwrap_or_else(|| panic!("{decoded}"));
    let (path, context) = rest.split_once("?context=").unwrap();
    assert_eq!(path, format!("{thread}/0"));
    let context: Value = serde_json::from_str(context).unwrap();
    assert_eq!(
        (context["Tid"].as_str(), context["Oid"].as_str()),
        (Some(TENANT), Some(ORGANIZER))
    );

    // Joined by organizerMeetingInfo and chatInfo, as IncidentBot's JoinCallAsync does.
    let join = |organizer: &str, thread: &str| {
        let mut b = app.p2p(ALICE);
        b.as_object_mut().unwrap().remove("targets");
        b["chatInfo"] = json!({"@odata.type": "#microsoft.graph.chatInfo",
            "threadId": thread, "messageId": "0"});
        b["meetingInfo"] = json!({"@odata.type": "#microsoft.graph.organizerMeetingInfo",
            "organizer": {"@odata.type": "#microsoft.graph.identitySet",
                "user": {"@odata.type": "#microsoft.graph.identity", "id": organizer,
                    "tenantId": TENANT}},
            "allowConversationWithoutHost": true});
        b
    };
    let r = app
        .send("POST", CALLS, Some(&token), Some(join(ORGANIZER, &thread)))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["chatInfo"]["threadId"], thread.as_str());
    assert_eq!(
        r.body["meetingInfo"]["@odata.type"],
        "#microsoft.graph.organizerMeetingInfo"
    );
    let id = r.body["id"].as_str().unwrap().to_string();
    app.advance(1.0).await;
    let states = app
        .receiver
        .wait_for(&id, |s| has(s, "updated", "established"))
        .await;
    assert!(has(&states, "updated", "established"), "{states:?}");

    // Another organizer: 403. An unknown thread: 404. No thread: 400.
    let other = "0a0b0c0d-0000-4000-8000-0000000000f2";
    let r = app
        .send("POST", CALLS, Some(&token), Some(join(other, &thread)))
        .await;
    assert_eq!(
        (r.status, r.graph_error().as_deref()),
        (403, Some("accessDenied")),
        "{}",
        r.text
    );
    let r = app
        .send(
            "POST",
            CALLS,
            Some(&token),
            Some(join(ORGANIZER, "19:meeting_nope@thread.v2")),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    // A meeting with a passcode and no organizer is not joined without its passcode.
    let guarded = app
        .admin("GET", &format!("/meetings/{MEETING}"), None)
        .await;
    let guarded_thread = guarded.body["threadId"].as_str().unwrap().to_string();
    let r = app
        .send(
            "POST",
            CALLS,
            Some(&token),
            Some(join(ORGANIZER, &guarded_thread)),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let mut no_thread = join(ORGANIZER, &thread);
    no_thread.as_object_mut().unwrap().remove("chatInfo");
    let r = app.send("POST", CALLS, Some(&token), Some(no_thread)).await;
    assert_eq!(r.status, 400, "{}", r.text);

    // By tokenMeetingInfo: the meeting's token joins it; another is 404.
    let by_token = |t: &str| {
        let mut b = app.p2p(ALICE);
        b.as_object_mut().unwrap().remove("targets");
        b["meetingInfo"] = json!({"@odata.type": "#microsoft.graph.tokenMeetingInfo", "token": t});
        b
    };
    let r = app
        .send(
            "POST",
            CALLS,
            Some(&token),
            Some(by_token("meeting-token-1")),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["chatInfo"]["threadId"], thread.as_str());
    let r = app
        .send("POST", CALLS, Some(&token), Some(by_token("other")))
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
}

#[tokio::test]
async fn audio_routing_groups_are_created_listed_changed_and_deleted_as_graph_does() {
    for backend in BACKENDS {
        let app = spawn(backend).await;
        let token = app.token().await;
        let id = group_with(&app, &token, &[ALICE, BOB]).await;
        let list = participants(&app, &token, &id).await;
        let (alice, bob) = (pid_of(&list, ALICE), pid_of(&list, BOB));
        let groups = format!("{CALLS}/{id}/audioRoutingGroups");
        let send = |method: &'static str, path: String, body: Option<Value>| {
            let (app, token) = (&app, &token);
            async move { app.send(method, &path, Some(token), body).await }
        };
        let empty = send("GET", groups.clone(), None).await;
        assert_eq!(
            (empty.status, &empty.body["value"]),
            (200, &json!([])),
            "{}",
            empty.text
        );

        // The docs' example: a client-chosen id, 200 OK with the group.
        let one = json!({"id": "oneToOne", "routingMode": "oneToOne",
            "sources": [alice], "receivers": [bob]});
        let r = send("POST", groups.clone(), Some(one.clone())).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["@odata.type"], "#microsoft.graph.audioRoutingGroup");
        assert_eq!(
            (&r.body["sources"], &r.body["receivers"]),
            (&json!([alice]), &json!([bob]))
        );
        let again = send("POST", groups.clone(), Some(one)).await;
        assert_eq!(again.status, 409, "{}", again.text);
        for bad in [
            json!({"routingMode": "broadcast", "sources": [alice], "receivers": [bob]}),
            json!({"routingMode": "oneToOne", "sources": [alice], "receivers": [alice, bob]}),
            json!({"routingMode": "multicast", "sources": [], "receivers": [bob]}),
            json!({"routingMode": "multicast", "sources": [1], "receivers": [bob]}),
        ] {
            let r = send("POST", groups.clone(), Some(bad.clone())).await;
            assert_eq!(r.status, 400, "{bad}: {}", r.text);
        }
        // A multicast group without an id gets one.
        let multi = json!({"routingMode": "multicast", "sources": [bob], "receivers": [alice]});
        let r = send("POST", groups.clone(), Some(multi)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let multi_id = r.body["id"].as_str().unwrap().to_string();
        let listed = send("GET", groups.clone(), None).await;
        let ids: Vec<&str> = listed.body["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["oneToOne", multi_id.as_str()], "{backend:?}");

        // PATCH changes what it names; the rest stays.
        let path = format!("{groups}/{multi_id}");
        let r = send(
            "PATCH",
            path.clone(),
            Some(json!({"receivers": [alice, bob]})),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(
            (&r.body["sources"], &r.body["receivers"]),
            (&json!([bob]), &json!([alice, bob]))
        );
        let got = send("GET", path.clone(), None).await;
        assert_eq!(got.body["receivers"], json!([alice, bob]));
        let r = send(
            "PATCH",
            path.clone(),
            Some(json!({"routingMode": "oneToOne"})),
        )
        .await;
        assert_eq!(r.status, 400, "one receiver only: {}", r.text);

        let r = send("DELETE", path.clone(), None).await;
        assert_eq!(r.status, 204, "{}", r.text);
        assert_eq!(send("GET", path.clone(), None).await.status, 404);
        assert_eq!(send("DELETE", path, None).await.status, 404);

        // Content sharing: none.
        let r = send("GET", format!("{CALLS}/{id}/contentSharingSessions"), None).await;
        assert_eq!(
            (r.status, &r.body["value"]),
            (200, &json!([])),
            "{}",
            r.text
        );
        let r = send(
            "GET",
            format!("{CALLS}/{id}/contentSharingSessions/abc"),
            None,
        )
        .await;
        assert_eq!(r.status, 404, "{}", r.text);
    }
}

// --- delta rosters and the lobby -------------------------------------------------------------------

/// The `deltaParticipants` of call `id`'s roster notifications so far, oldest first.
fn deltas(app: &TestApp, id: &str) -> Vec<Value> {
    let url = format!("/communications/calls/{id}/participants");
    app.receiver
        .notes(id)
        .into_iter()
        .filter(|(_, n)| n["resourceUrl"] == url.as_str())
        .map(|(_, n)| n["resourceData"].clone())
        .collect()
}

async fn wait_deltas(app: &TestApp, id: &str, n: usize) -> Vec<Value> {
    for _ in 0..250 {
        let d = deltas(app, id);
        if d.len() >= n {
            return d;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!(
        "fewer than {n} roster notifications for {id}: {:?}",
        deltas(app, id)
    );
}

#[tokio::test]
async fn with_delta_rosters_a_bot_hears_everyone_once_then_only_what_changed() {
    let app = spawn(Backend::Suite).await;
    let token = app.token().await;
    let mut body = app.meeting(MEETING, MEETING_PASSCODE);
    body["callOptions"] = json!({
        "@odata.type": "#microsoft.graph.outgoingCallOptions",
        "isDeltaRosterEnabled": true,
    });
    let r = app.send("POST", CALLS, Some(&token), Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["callOptions"]["isDeltaRosterEnabled"], true);
    let id = r.body["id"].as_str().unwrap().to_string();
    app.advance(1.0).await;
    // The first: everyone, as deltaParticipants.
    let first = &wait_deltas(&app, &id, 1).await[0];
    assert_eq!(
        first["@odata.type"], "#microsoft.graph.deltaParticipants",
        "{first}"
    );
    let everyone = first["participants"].as_array().unwrap();
    assert_eq!(who(everyone), sorted(&[CAROL, DAVE, APP_A]));
    let seq0 = first["sequenceNumber"].as_i64().unwrap();
    for p in everyone {
        assert!(p["removedState"].is_null(), "{p}");
        assert!(p["rosterSequenceNumber"].as_i64().unwrap() <= seq0, "{p}");
    }

    // Carol leaves: only she is in the next one, removed.
    let h = app
        .admin("POST", &format!("/parties/{CAROL}/hangup"), None)
        .await;
    assert_eq!(h.status, 200, "{}", h.text);
    let second = &wait_deltas(&app, &id, 2).await[1];
    let changed = second["participants"].as_array().unwrap();
    assert_eq!(who(changed), [CAROL.to_string()], "{second}");
    assert!(changed[0]["removedState"].is_object(), "{second}");
    let seq1 = second["sequenceNumber"].as_i64().unwrap();
    assert!(seq1 > seq0);
    assert_eq!(changed[0]["rosterSequenceNumber"].as_i64(), Some(seq1));

    // Dave is muted: only he is in the next one, still here.
    let dave = pid_of(everyone, DAVE);
    let m = on_participant(&app, &token, &id, &dave, "mute", json!({})).await;
    assert_eq!(m.status, 200, "{}", m.text);
    let third = &wait_deltas(&app, &id, 3).await[2];
    let changed = third["participants"].as_array().unwrap();
    assert_eq!(who(changed), [DAVE.to_string()], "{third}");
    assert_eq!(changed[0]["isMuted"], true);
    assert!(changed[0]["removedState"].is_null());

    // callOptions that are not an object, or a flag that is not a boolean, are the client's
    // mistake.
    for options in [json!("yes"), json!({"isDeltaRosterEnabled": "true"})] {
        let mut body = app.meeting(MEETING, MEETING_PASSCODE);
        body["callOptions"] = options;
        let r = app.send("POST", CALLS, Some(&token), Some(body)).await;
        assert_eq!(r.status, 400, "{}", r.text);
    }
}

#[tokio::test]
async fn a_meeting_holds_parties_and_guests_in_its_lobby_until_a_bot_admits_them() {
    const LOBBY_MEETING: &str = "5550001111";
    let extra = format!(
        "[[apps]]\napp_id = \"{GUEST_APP}\"\ntenant_id = \"{TENANT}\"\nclient_secret = \"secret-f\"\nroles = [\"Calls.JoinGroupCallAsGuest.All\"]\n\n\
         [[meetings]]\njoin_meeting_id = \"{LOBBY_MEETING}\"\nparties = [\"{DAVE}\"]\nlobby = [\"{CAROL}\"]\nlobby_for_guests = true\n\n"
    );
    let app = spawn_app_with(Backend::Suite, &extra).await;
    let token = app.token().await;
    let join = |app: &TestApp| {
        let mut b = app.meeting(LOBBY_MEETING, "");
        b["meetingInfo"]["passcode"] = Value::Null;
        b
    };
    let r = app
        .send("POST", CALLS, Some(&token), Some(join(&app)))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let host = r.body["id"].as_str().unwrap().to_string();
    app.advance(1.0).await;
    let roster = wait_roster(&app, &host, &[DAVE, CAROL, APP_A]).await;
    assert_eq!(entry(&roster, CAROL)["isInLobby"], true);
    assert_eq!(entry(&roster, DAVE)["isInLobby"], false);

    // A guest bot waits in the lobby: its call stays establishing.
    let guest_token = app.token_for(GUEST_APP).await;
    let r = app
        .send("POST", CALLS, Some(&guest_token), Some(join(&app)))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let guest = r.body["id"].as_str().unwrap().to_string();
    app.advance(5.0).await;
    assert_eq!(
        get_state(&app, &guest_token, &guest).await,
        (200, "establishing".into())
    );
    let roster = wait_roster(&app, &host, &[DAVE, CAROL, APP_A, GUEST_APP]).await;
    let waiting = entry(&roster, GUEST_APP);
    assert_eq!(waiting["isInLobby"], true);

    // The host lets both in.
    let carol = pid_of(&roster, CAROL);
    let a = on_participant(&app, &token, &host, &carol, "admit", json!({})).await;
    assert_eq!((a.status, a.text.as_str()), (202, ""));
    let roster = wait_latest_roster(&app, &host, "with Carol in", |r| {
        r.iter()
            .any(|p| identity_id(p).as_deref() == Some(CAROL) && p["isInLobby"] == false)
    })
    .await;
    assert_eq!(entry(&roster, CAROL)["isInLobby"], false);
    let g = pid_of(&roster, GUEST_APP);
    let a = on_participant(&app, &token, &host, &g, "admit", json!({})).await;
    assert_eq!(a.status, 202, "{}", a.text);
    let s = app
        .receiver
        .wait_for(&guest, |s| has(s, "updated", "established"))
        .await;
    assert!(has(&s, "updated", "established"), "{s:?}");

    // Admitting someone who is not waiting is the client's mistake; an unknown one, 404.
    let again = on_participant(&app, &token, &host, &carol, "admit", json!({})).await;
    assert_eq!(again.status, 400, "{}", again.text);
    assert!(again.graph_error().is_some());
    let unknown = on_participant(
        &app,
        &token,
        &host,
        "0b0b0000-0000-4000-8000-0000000000ff",
        "admit",
        json!({}),
    )
    .await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
}

const APP_C: &str = "1a2b3c4d-0000-4000-8000-0000000000cc";
const LOBBY_M: &str = "5550002222";

async fn lobby_app() -> TestApp {
    let extra = format!(
        "[[apps]]\napp_id = \"{APP_C}\"\ntenant_id = \"{TENANT}\"\nclient_secret = \"secret-c\"\nroles = [\"Calls.Initiate.All\", \"Calls.InitiateGroupCall.All\", \"Calls.JoinGroupCall.All\"]\n\n\
         [[meetings]]\njoin_meeting_id = \"{LOBBY_M}\"\nparties = [\"{DAVE}\"]\nlobby = [\"{CAROL}\"]\n\n"
    );
    spawn_app_with(Backend::Suite, &extra).await
}

/// Joins the lobby meeting with `token`'s app; gives the call's id.
async fn join_lobby_meeting(app: &TestApp, token: &str) -> String {
    let r = app
        .send("POST", CALLS, Some(token), Some(lobby_join(app)))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["id"].as_str().unwrap().to_string()
}

fn lobby_join(app: &TestApp) -> Value {
    let mut b = app.meeting(LOBBY_M, "");
    b["meetingInfo"]["passcode"] = Value::Null;
    b
}

#[tokio::test]
async fn removing_a_party_from_the_lobby_updates_the_roster() {
    let app = lobby_app().await;
    let token = app.token().await;
    let host = join_lobby_meeting(&app, &token).await;
    app.advance(1.0).await;
    let roster = wait_roster(&app, &host, &[DAVE, CAROL, APP_A]).await;
    let n = app.receiver.rosters(&host).len();
    let carol = pid_of(&roster, CAROL);
    let d = app
        .send(
            "DELETE",
            &participant_path(&host, &carol),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(d.status, 204, "{}", d.text);
    let p = participants(&app, &token, &host).await;
    assert_eq!(who(&p), sorted(&[DAVE, APP_A]));
    let roster = wait_roster(&app, &host, &[DAVE, APP_A]).await;
    assert!(app.receiver.rosters(&host).len() > n);
    assert!(roster.iter().all(|p| p["isInLobby"] == false));
}

#[tokio::test]
async fn a_transfer_out_of_a_meeting_lets_nobody_in_from_the_lobby() {
    let app = lobby_app().await;
    let token = app.token().await;
    let tc = app.token_for(APP_C).await;
    let host = join_lobby_meeting(&app, &token).await;
    let other = join_lobby_meeting(&app, &tc).await;
    app.advance(1.0).await;
    let roster = wait_roster(&app, &other, &[DAVE, CAROL, APP_A, APP_C]).await;
    let carol = pid_of(&roster, CAROL);
    let m = on_participant(&app, &tc, &other, &carol, "mute", json!({})).await;
    assert_eq!(m.status, 400, "one in the lobby is not muted: {}", m.text);
    let t = app
        .send(
            "POST",
            &format!("{CALLS}/{host}/transfer"),
            Some(&token),
            Some(json!({"transferTarget": invitee(BOB)})),
        )
        .await;
    assert_eq!(t.status, 202, "{}", t.text);
    app.advance(4.0).await;
    app.receiver
        .wait_for(&host, |s| has(s, "deleted", "terminated"))
        .await;
    let m = on_participant(&app, &tc, &other, &carol, "mute", json!({})).await;
    assert_ne!(
        m.status, 200,
        "Carol was let in from the lobby without admit"
    );
}

#[tokio::test]
async fn a_bot_invited_from_a_meeting_sees_the_inviting_bot_as_its_caller() {
    let app = lobby_app().await;
    let token = app.token().await;
    let tc = app.token_for(APP_C).await;
    let _host = join_lobby_meeting(&app, &token).await;
    let other = join_lobby_meeting(&app, &tc).await;
    app.advance(1.0).await;
    app.receiver
        .wait_for(&other, |s| has(s, "updated", "established"))
        .await;
    let inv = json!({
        "@odata.type": "#microsoft.graph.invitationParticipantInfo",
        "identity": {"@odata.type": "#microsoft.graph.identitySet",
                     "application": {"@odata.type": "#microsoft.graph.identity", "id": APP_B}},
    });
    let r = invite(&app, &tc, &other, json!({"participants": [inv]})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    for _ in 0..100 {
        let received = app.receiver.received();
        let mut notes = received.iter().flat_map(|r| r.notes());
        if notes.any(|n| n["changeType"] == "created") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let created: Vec<Value> = app
        .receiver
        .received()
        .iter()
        .flat_map(|r| r.notes())
        .filter(|n| n["changeType"] == "created")
        .collect();
    let src = created
        .last()
        .map(|n| n["resourceData"]["source"]["identity"]["application"]["id"].clone());
    assert_eq!(src, Some(json!(APP_C)));
}
