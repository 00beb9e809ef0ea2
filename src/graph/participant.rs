//! The `participant` resource on the wire: roster entries of a call's conversation.

use serde_json::{Value, json};

use super::odata_type;
use crate::domain::conversation::{Conversation, Leg, LegState, Purpose, Who, identity_key};

/// Who a leg is on a roster: its identity's id and display name (a bot's are its app's).
pub type Names<'a> = &'a dyn Fn(&Who) -> (String, Option<String>);

/// One participant as Graph writes it.
pub fn render(leg: &Leg, names: Names) -> Value {
    let key = match &leg.who {
        Who::Bot { .. } => "application",
        Who::Party(p) => identity_key(p.kind),
    };
    let (identity_id, display_name) = names(&leg.who);
    let identity = json!({
        "@odata.type": odata_type("identitySet"),
        key: {"@odata.type": odata_type("identity"), "id": identity_id, "displayName": display_name},
    });
    json!({
        "@odata.type": odata_type("participant"),
        "id": leg.id,
        "info": {
            "@odata.type": odata_type("participantInfo"),
            "identity": identity,
            "endpointType": "default",
            "region": null,
            "languageId": null,
            "countryCode": null,
            "participantId": leg.id,
        },
        "mediaStreams": [{
            "@odata.type": odata_type("mediaStream"),
            "mediaType": "audio",
            "label": "main-audio",
            "sourceId": leg.source.to_string(),
            "direction": if leg.on_hold { "receiveOnly" } else { "sendReceive" },
            "serverMuted": leg.muted,
        }],
        "isMuted": leg.muted,
        "isInLobby": leg.state == LegState::Lobby,
        "metadata": null,
        "recordingInfo": null,
        "removedState": removed_state(leg),
        "restrictedExperience": null,
        "rosterSequenceNumber": leg.roster_sequence,
    })
}

/// Why a participant that left is gone (a delta roster's removed entries); `null` for one
/// still here.
fn removed_state(leg: &Leg) -> Value {
    match (leg.state, leg.result) {
        (LegState::Gone, Some(r)) => json!({
            "@odata.type": odata_type("removedState"),
            "reason": r.message(),
        }),
        (LegState::Gone, None) => {
            json!({"@odata.type": odata_type("removedState"), "reason": null})
        }
        _ => Value::Null,
    }
}

/// Everyone in the conversation now, in the order they came.
pub fn roster(conversation: &Conversation, names: Names) -> Vec<Value> {
    conversation
        .legs
        .iter()
        .filter(|l| l.is_listed())
        .map(|l| render(l, names))
        .collect()
}

/// A leg that is gone and was on the roster before: not an invitee that never joined.
fn left(leg: &Leg) -> bool {
    let never_joined =
        matches!(&leg.purpose, Purpose::Invite(i) if matches!(i.outcome, Some(Err(_))));
    leg.state == LegState::Gone && !never_joined
}

/// A delta roster (`deltaParticipants`): the participants whose entry changed after roster
/// sequence number `since`, those who left with `removedState`; `None`: everyone.
pub fn delta(conversation: &Conversation, names: Names, since: Option<u32>) -> Value {
    let participants: Vec<Value> = conversation
        .legs
        .iter()
        .filter(|l| match since {
            None => l.is_listed(),
            Some(s) => l.roster_sequence > s && (l.is_listed() || left(l)),
        })
        .map(|l| render(l, names))
        .collect();
    json!({
        "@odata.type": odata_type("deltaParticipants"),
        "sequenceNumber": conversation.roster_sequence,
        "participants": participants,
    })
}

/// An invitation's entry as the invite operation echoes it, with the participant id its leg
/// took.
pub fn name_invitee(invitee: &mut Value, participant_id: uuid::Uuid) {
    invitee["participantId"] = Value::String(participant_id.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::conversation::Kind;
    use crate::domain::{CallId, PartyKind, Peer};
    use uuid::Uuid;

    #[test]
    fn the_roster_lists_who_joined_with_their_identity_kind() {
        let mut c = Conversation::new(CallId::new(), Kind::Group, chrono::Utc::now());
        let bot = Who::Bot {
            call_id: CallId::new(),
        };
        c.add(Leg::new(Uuid::new_v4(), bot, LegState::Connected));
        let phone = Peer {
            id: "+15550100".into(),
            kind: PartyKind::Phone,
        };
        c.add(Leg::new(
            Uuid::new_v4(),
            Who::Party(phone),
            LegState::Connected,
        ));
        let ringing = Peer {
            id: "u".into(),
            kind: PartyKind::User,
        };
        c.add(Leg::new(
            Uuid::new_v4(),
            Who::Party(ringing),
            LegState::Ringing,
        ));
        let names = |w: &Who| match w {
            Who::Bot { .. } => ("app-1".to_string(), Some("Bot".to_string())),
            Who::Party(p) => (p.id.clone(), None),
        };
        let r = roster(&c, &names);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0]["info"]["identity"]["application"]["id"], "app-1");
        assert_eq!(
            r[0]["info"]["identity"]["application"]["displayName"],
            "Bot"
        );
        assert_eq!(r[1]["info"]["identity"]["phone"]["id"], "+15550100");
        assert_eq!(r[1]["id"], r[1]["info"]["participantId"]);
        assert_eq!(r[1]["isInLobby"], false);
        assert_eq!(r[1]["mediaStreams"][0]["sourceId"], "2");
    }
}
