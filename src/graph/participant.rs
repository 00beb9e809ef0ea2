//! The `participant` resource on the wire: roster entries of a call's conversation.

use serde_json::{Value, json};

use super::odata_type;
use crate::domain::conversation::{Conversation, Leg, LegState, Who, identity_key};

/// One participant as Graph writes it.
pub fn render(leg: &Leg) -> Value {
    let (key, id) = match &leg.who {
        Who::Bot { app_id, .. } => ("application", app_id.as_str()),
        Who::Party(p) => (identity_key(p.kind), p.id.as_str()),
    };
    let identity = json!({
        "@odata.type": odata_type("identitySet"),
        key: {"@odata.type": odata_type("identity"), "id": id, "displayName": leg.display_name},
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
            "sourceId": leg.roster_sequence.to_string(),
            "direction": if leg.on_hold { "receiveOnly" } else { "sendReceive" },
            "serverMuted": leg.muted,
        }],
        "isMuted": leg.muted,
        "isInLobby": false,
        "metadata": null,
        "recordingInfo": null,
        "removedState": null,
        "restrictedExperience": null,
        "rosterSequenceNumber": leg.roster_sequence,
    })
}

/// Everyone in the conversation now (joined; not those still ringing), in the order they came.
pub fn roster(conversation: &Conversation) -> Vec<Value> {
    conversation
        .legs
        .iter()
        .filter(|l| l.state == LegState::Connected)
        .map(render)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::conversation::Kind;
    use crate::domain::{CallId, PartyKind, Peer};

    #[test]
    fn the_roster_lists_who_joined_with_their_identity_kind() {
        let mut c = Conversation::new(CallId::new(), Kind::Group, chrono::Utc::now());
        let bot = Who::Bot {
            call_id: CallId::new(),
            app_id: "app-1".into(),
        };
        c.legs
            .push(Leg::new("b".into(), bot, None, LegState::Connected));
        let phone = Peer {
            id: "+15550100".into(),
            kind: PartyKind::Phone,
        };
        c.legs.push(Leg::new(
            "p".into(),
            Who::Party(phone),
            None,
            LegState::Connected,
        ));
        let ringing = Peer {
            id: "u".into(),
            kind: PartyKind::User,
        };
        c.legs.push(Leg::new(
            "r".into(),
            Who::Party(ringing),
            None,
            LegState::Ringing,
        ));
        let r = roster(&c);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0]["info"]["identity"]["application"]["id"], "app-1");
        assert_eq!(r[1]["info"]["identity"]["phone"]["id"], "+15550100");
        assert_eq!(r[1]["id"], r[1]["info"]["participantId"]);
        assert_eq!(r[1]["isInLobby"], false);
    }
}
