//! The fabric seam: a fabric reports progress as events and is told what to do only once the
//! change that decided it is durable; the simulated parties go through the same seam.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard::domain::{EndReason, Peer};
use switchboard::fabric::{DialPlan, Fabric, FabricCommand, FabricEvent, LegRef, PartyInfo};
use tokio::sync::mpsc;

use crate::helpers::*;

const CALLS: &str = "/v1.0/communications/calls";

/// A trunk that knows nothing in advance: it rings, and the test says what happened.
pub(crate) struct Trunk {
    commands: Mutex<mpsc::UnboundedSender<FabricCommand>>,
}

impl Trunk {
    /// A trunk, and the commands it is given.
    pub(crate) fn new() -> (Arc<Trunk>, mpsc::UnboundedReceiver<FabricCommand>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let trunk = Trunk {
            commands: Mutex::new(tx),
        };
        (Arc::new(trunk), rx)
    }
}

impl Fabric for Trunk {
    fn plan(&self, _: &Peer) -> DialPlan {
        DialPlan::Ring
    }
    fn execute(&self, commands: Vec<FabricCommand>) {
        let tx = self.commands.lock().unwrap();
        for c in commands {
            tx.send(c).unwrap();
        }
    }
    fn party(&self, _: &str) -> Option<PartyInfo> {
        None
    }
}

pub(crate) async fn next(rx: &mut mpsc::UnboundedReceiver<FabricCommand>) -> FabricCommand {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a command within 5 s")
        .expect("the fabric is still there")
}

#[tokio::test]
async fn a_trunk_reports_answers_and_failures_as_events_and_hears_hang_ups_after_commit() {
    let (trunk, mut rx) = Trunk::new();
    let app = spawn_app_with_fabric(trunk, None).await;
    let sink = app.state.engine.event_sink();
    let token = app.token().await;

    // The bot calls: the trunk is told to ring, and the call waits for it.
    let id = app.create(&token, ALICE).await;
    let FabricCommand::Dial { leg, peer, .. } = next(&mut rx).await else {
        panic!("the first command rings the target");
    };
    assert_eq!(peer.id, ALICE);
    assert_eq!(leg.conversation.to_string(), id);
    app.advance(30.0).await;
    let g = app
        .send("GET", &format!("{CALLS}/{id}"), Some(&token), None)
        .await;
    assert_eq!(
        g.body["state"], "establishing",
        "nothing answers for the trunk"
    );

    // It answers; the bot hangs up; the trunk is told to hang up that leg.
    sink(FabricEvent::Answered(leg));
    app.receiver
        .wait_for(&id, |s| has(s, "updated", "established"))
        .await;
    let d = app
        .send("DELETE", &format!("{CALLS}/{id}"), Some(&token), None)
        .await;
    assert_eq!(d.status, 204);
    assert_eq!(
        next(&mut rx).await,
        FabricCommand::HangUp {
            leg,
            peer: peer.clone(),
            reason: EndReason::BOT_HANG_UP
        }
    );
    // A late event about a leg that is gone changes nothing.
    sink(FabricEvent::HungUp(leg));
    sink(FabricEvent::Answered(leg));

    // Busy: the call fails with the trunk's reason, and nothing is sent back to that leg.
    let id = app.create(&token, BOB).await;
    let FabricCommand::Dial { leg, .. } = next(&mut rx).await else {
        panic!("ringing first");
    };
    sink(FabricEvent::Failed(leg, EndReason::BUSY));
    app.receiver
        .wait_for(&id, |s| has(s, "deleted", "terminated"))
        .await;
    assert_eq!(app.receiver.end_reason(&id), Some((486, 8539)));

    // A leg the trunk never answers is cancelled when ringing times out.
    let id = app.create(&token, ALICE).await;
    let FabricCommand::Dial { leg, .. } = next(&mut rx).await else {
        panic!("ringing first");
    };
    app.advance(120.0).await;
    app.receiver
        .wait_for(&id, |s| has(s, "deleted", "terminated"))
        .await;
    assert!(matches!(next(&mut rx).await, FabricCommand::Cancel { leg: l, .. } if l == leg));
    assert!(
        rx.try_recv().is_err(),
        "no command for the busy leg or stale events"
    );

    // The party hangs up a call the bot placed: the bot hears it, the trunk is not told back.
    let id = app.create(&token, BOB).await;
    let FabricCommand::Dial { leg, .. } = next(&mut rx).await else {
        panic!("ringing first");
    };
    sink(FabricEvent::Answered(leg));
    app.receiver
        .wait_for(&id, |s| has(s, "updated", "established"))
        .await;
    let tones = app
        .state
        .engine
        .report(FabricEvent::Tones(leg, "5".into()))
        .await
        .unwrap();
    assert!(
        matches!(&tones, switchboard::engine::Outcome::Calls(c) if c.len() == 1),
        "{tones:?}"
    );
    sink(FabricEvent::HungUp(leg));
    app.receiver
        .wait_for(&id, |s| has(s, "deleted", "terminated"))
        .await;
    assert_eq!(app.receiver.end_reason(&id), Some((200, 4521)));
    app.state.engine.flush().await;
    assert!(
        rx.try_recv().is_err(),
        "nothing is sent to a party that hung up"
    );
    let stale = LegRef {
        conversation: leg.conversation,
        leg: uuid::Uuid::new_v4(),
    };
    let r = app.state.engine.report(FabricEvent::HungUp(stale)).await;
    assert!(
        matches!(r, Ok(switchboard::engine::Outcome::Stale)),
        "{r:?}"
    );
    app.stop().await;
}

/// What a simulated party heard, as `(command, callId)` pairs.
async fn heard(app: &TestApp, party: &str) -> Vec<(String, String)> {
    let p = app.party(party).await;
    p["heard"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let command = h["command"].as_str().unwrap().to_string();
            (command, h["callId"].as_str().unwrap().to_string())
        })
        .collect()
}

#[tokio::test]
async fn a_simulated_party_hears_the_commands_of_its_calls_and_none_after_hanging_up() {
    let app = spawn_app(Backend::Memory).await;
    let token = app.token().await;
    // The bot hangs up: Alice hears the ring, the DTMF and the hang-up.
    let id = app.established(&token).await;
    let r = app
        .send(
            "POST",
            &format!("{CALLS}/{id}/sendDtmfTones"),
            Some(&token),
            Some(serde_json::json!({"tones": ["tone1", "pound"]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let d = app
        .send("DELETE", &format!("{CALLS}/{id}"), Some(&token), None)
        .await;
    assert_eq!(d.status, 204);
    let p = app.party(ALICE).await;
    assert_eq!(p["heard"][1]["tones"], "1#", "{p}");
    assert_eq!(
        p["heard"][2]["reason"],
        serde_json::json!([200, 5001]),
        "{p}"
    );
    let one = |c: &str| (c.to_string(), id.clone());
    assert_eq!(
        heard(&app, ALICE).await,
        vec![one("dial"), one("sendDtmf"), one("hangUp")]
    );

    // Alice hangs up herself: no hang-up is sent back to her.
    let second = app.established(&token).await;
    let r = app
        .admin("POST", &format!("/parties/{ALICE}/hangup"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["callsEnded"], serde_json::json!([second]));
    let all = heard(&app, ALICE).await;
    assert_eq!(all[3..], [("dial".to_string(), second.clone())], "{all:?}");

    // A caller's leg is attached when its call is admitted.
    let (incoming, _) = app.incoming(BOB).await;
    assert_eq!(
        heard(&app, BOB).await,
        vec![("attach".to_string(), incoming.clone())]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_party_hears_the_prompts_played_and_the_recording_started_and_stopped() {
    let app = spawn_app(Backend::Memory).await;
    let token = app.token().await;
    let id = app.answered(&token, BOB).await;
    let menu = app.receiver.serve("menu.wav", wav_bytes(2.0));
    let beep = app.receiver.serve("beep.wav", wav_bytes(0.5));
    let act = |action: &'static str, body: serde_json::Value| {
        let (app, token, id) = (&app, &token, &id);
        async move {
            let r = app
                .send(
                    "POST",
                    &format!("{CALLS}/{id}/{action}"),
                    Some(token),
                    Some(body),
                )
                .await;
            assert_eq!(r.status, 200, "{action}: {}", r.text);
            r.body["id"].as_str().unwrap().to_string()
        }
    };
    let media = |uri: &str| crate::incoming::prompts(&[uri]);
    let play = act("playPrompt", serde_json::json!({"prompts": media(&menu)})).await;
    let record = act(
        "recordResponse",
        serde_json::json!({"prompts": media(&beep), "stopTones": ["#"], "maxRecordDurationInSeconds": 10}),
    )
    .await;
    let cancel = act("cancelMediaProcessing", serde_json::json!({})).await;
    assert!(!cancel.is_empty());
    let p = app.party(BOB).await;
    let heard: Vec<_> = p["heard"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["command"].as_str().unwrap().to_string(),
                h["operationIds"].clone(),
                h["prompts"].clone(),
            )
        })
        .collect();
    let s = |v: &str| v.to_string();
    let none = serde_json::Value::Null;
    assert_eq!(
        heard,
        vec![
            (s("attach"), none.clone(), none.clone()),
            (s("accept"), none.clone(), none.clone()),
            (
                s("play"),
                serde_json::json!([play]),
                serde_json::json!([menu])
            ),
            (
                s("record"),
                serde_json::json!([record]),
                serde_json::json!([beep])
            ),
            (s("stopMedia"), serde_json::json!([play, record]), none),
        ],
        "{p}"
    );
    app.stop().await;
}
