//! Operations on the wire: the `commsOperation` subtypes Graph returns and notifies.

use serde_json::{Map, Value, json};

use super::odata_type;
use crate::domain::CallId;
use crate::domain::operation::{OpKind, Operation};

/// The operation as Graph writes it. `recording_url` is where a finished recording is served.
pub fn render(op: &Operation, recording_url: Option<&str>) -> Value {
    let mut out = Map::new();
    out.insert("@odata.type".into(), json!(odata_type(op.kind.type_name())));
    out.insert("id".into(), json!(op.id));
    out.insert("status".into(), json!(op.status.as_str()));
    out.insert("clientContext".into(), json!(op.client_context));
    let done = op.completes_at.is_none();
    let result = op.result.filter(|_| done).map(|r| {
        json!({"@odata.type": odata_type("resultInfo"), "code": r.code, "subcode": r.subcode, "message": r.message()})
    });
    out.insert("resultInfo".into(), result.unwrap_or(Value::Null));
    // beta's `completionReason` of a prompt or recording: once it is over.
    let reason = match &op.completion_reason {
        Some(r) if done => json!(r),
        _ => Value::Null,
    };
    match op.kind {
        OpKind::RecordResponse => {
            let ready = done
                && op
                    .recording
                    .as_ref()
                    .is_some_and(|r| !r.access_token.is_empty());
            let (location, token) = match (&op.recording, recording_url) {
                (Some(r), Some(url)) if ready => (json!(url), json!(r.access_token)),
                _ if done => (json!(""), json!("")),
                _ => (Value::Null, Value::Null),
            };
            out.insert("recordingLocation".into(), location);
            out.insert("recordingAccessToken".into(), token);
            if op.beta {
                out.insert("completionReason".into(), reason);
            }
        }
        OpKind::PlayPrompt if op.beta => {
            out.insert("completionReason".into(), reason);
        }
        OpKind::SendDtmfTones => {
            out.insert("completionReason".into(), json!(op.completion_reason));
        }
        OpKind::InviteParticipants => {
            let list = op
                .participants
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or_else(|| json!([]));
            out.insert("participants".into(), list);
        }
        _ => {}
    }
    Value::Object(out)
}

/// The path of an operation below `/communications`.
pub fn resource(call: CallId, op_id: &str) -> String {
    format!("calls/{call}/operations/{op_id}")
}
