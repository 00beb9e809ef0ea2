//! `commsNotifications`: the envelope Graph POSTs to a bot's callback URL.

use serde_json::{Value, json};

use super::call::{View, write as write_call};
use super::odata_type;
use super::participant::Names;
use crate::domain::call::Rosters;
use crate::domain::conversation::{Conversation, Emit};
use crate::domain::{Call, CallId, CallState, ChangeType};

/// How every envelope begins: the `value` list follows.
pub const ENVELOPE_HEAD: &str =
    "{\"@odata.type\":\"#microsoft.graph.commsNotifications\",\"value\":[";
/// How every envelope ends.
pub const ENVELOPE_TAIL: &str = "]}";

/// One `commsNotification` inside an envelope.
pub struct Notification {
    pub change: ChangeType,
    /// Path below `/communications`, e.g. `calls/{id}` or `calls/{id}/operations/{opId}`.
    pub resource: String,
    pub callback_uri: String,
    /// `resourceData` as JSON text.
    pub data: String,
}

impl Notification {
    /// A notification about the call itself.
    pub fn for_call(change: ChangeType, id: CallId, callback_uri: &str, data: String) -> Self {
        Notification {
            change,
            resource: format!("calls/{id}"),
            callback_uri: callback_uri.to_string(),
            data,
        }
    }

    /// What a bot's call is told of one thing that happened in its conversation (`emit`):
    /// its state, a tone, an operation finished, or the roster. `recording_url` gives a
    /// recording's download address from its operation id.
    pub fn for_emit(
        call: &Call,
        conversation: &Conversation,
        names: Names,
        emit: &Emit,
        recording_url: impl Fn(&str) -> String,
    ) -> Self {
        match emit {
            Emit::State(notice) => {
                let view = View {
                    notification: true,
                    state: Some(notice.state),
                    // How it ended is not known yet at a state before the end (`terminating`,
                    // or a state the call passed through in the change that ended it).
                    hide_result: (notice.state.is_live() && !call.state.is_live())
                        || notice.state == CallState::Terminating,
                    ..View::default()
                };
                let data = write_call(call, &view);
                Notification::for_call(notice.change, call.id, &call.callback_uri, data)
            }
            Emit::Tone(tone, seq) => {
                let view = View {
                    notification: true,
                    tone: Some((tone, *seq)),
                    ..View::default()
                };
                let data = write_call(call, &view);
                Notification::for_call(ChangeType::Updated, call.id, &call.callback_uri, data)
            }
            Emit::Operation(op) => {
                let resource = super::operation::resource(call.id, &op.id);
                let mut data = super::operation::render(op, Some(&recording_url(&op.id)));
                data["@odata.id"] = json!(format!("/communications/{resource}"));
                Notification {
                    change: ChangeType::Deleted,
                    resource,
                    callback_uri: call.callback_uri.clone(),
                    data: data.to_string(),
                }
            }
            Emit::Roster { since } => {
                let data = match call.rosters {
                    Rosters::Full => Value::Array(super::participant::roster(conversation, names)),
                    _ => super::participant::delta(conversation, names, *since),
                };
                Notification {
                    change: ChangeType::Updated,
                    resource: format!("calls/{}/participants", call.id),
                    callback_uri: call.callback_uri.clone(),
                    data: data.to_string(),
                }
            }
        }
    }

    /// `/communications/...`, as `resourceUrl` carries it.
    pub fn resource_url(&self) -> String {
        format!("/communications/{}", self.resource)
    }

    /// This one `commsNotification`, as the outbox stores it: both `resourceUrl` and the legacy
    /// `resource`. [`envelope`] puts one or more of them in what is POSTed.
    pub fn item(&self) -> String {
        let head = json!({
            "@odata.type": odata_type("commsNotification"),
            "changeType": self.change.as_str(),
            "resource": format!("/app/{}", self.resource),
            "resourceUrl": self.resource_url(),
            "callbackUri": self.callback_uri,
        })
        .to_string();
        // `head` is a JSON object; `resourceData` goes in before its closing brace.
        format!(
            "{},\"resourceData\":{}}}",
            &head[..head.len() - 1],
            self.data
        )
    }
}

/// The `commsNotifications` envelope POSTed to a callback URL, holding these notifications (each
/// as [`Notification::item`] wrote it), in order.
pub fn envelope<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::from(ENVELOPE_HEAD);
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
    out.push_str(ENVELOPE_TAIL);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn the_envelope_carries_both_resource_forms() {
        let id = CallId::parse("57dab8b1-894c-409a-b240-bd8beae78896").unwrap();
        let n = Notification::for_call(
            ChangeType::Deleted,
            id,
            "https://bot/cb",
            json!({"state": "terminated"}).to_string(),
        );
        let item = n.item();
        let e: Value = serde_json::from_str(&envelope([item.as_str(), item.as_str()])).unwrap();
        assert_eq!(e["value"].as_array().map(Vec::len), Some(2));
        assert_eq!(e["@odata.type"], "#microsoft.graph.commsNotifications");
        let v = &e["value"][0];
        assert_eq!(v["changeType"], "deleted");
        assert_eq!(
            v["resourceUrl"],
            "/communications/calls/57dab8b1-894c-409a-b240-bd8beae78896"
        );
        assert_eq!(
            v["resource"],
            "/app/calls/57dab8b1-894c-409a-b240-bd8beae78896"
        );
        assert_eq!(v["resourceData"]["state"], "terminated");
    }
}
