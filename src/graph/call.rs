//! The `call` resource on the wire: reading a create request, writing a call back.

use serde_json::{Map, Value, json};

use super::{is_odata_type, odata_type};
use crate::domain::{Call, CallState, PartyKind, Peer};

/// A create-call request after parsing, before any permission is checked.
#[derive(Debug)]
pub struct CreateCall {
    pub callback_uri: String,
    pub kind: CallKind,
    /// `mediaConfig` is app-hosted (needs `Calls.AccessMedia.All`).
    pub app_hosted_media: bool,
    /// The `tenantId` the request named, if any.
    pub tenant_id: Option<String>,
    /// A `callChainId` the client asked to copy.
    pub call_chain_id: Option<String>,
    /// Client-supplied properties, normalized, to echo back (`source` is filled in later).
    pub wire: Map<String, Value>,
    /// `callOptions.isDeltaRosterEnabled`.
    pub delta_roster: bool,
    /// The bot joins as a guest (`source.identity.guest`, or an app that may join meetings only
    /// as a guest): a meeting may hold it in its lobby.
    pub guest: bool,
}

/// What sort of call a create request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum CallKind {
    PeerToPeer(Peer),
    /// Several targets and no meeting: a new group call.
    Group(Vec<Peer>),
    /// A `meetingInfo` was given: join a meeting.
    Meeting,
}

/// A request body that is not a valid call; the message says what is wrong.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub String);

fn bad(msg: impl Into<String>) -> WireError {
    WireError(msg.into())
}

/// Properties only the server sets; a client's values for them are dropped.
const SERVER_OWNED: &[&str] = &[
    "@odata.context",
    "@odata.type",
    "@odata.id",
    "@odata.etag",
    "id",
    "state",
    "direction",
    "myParticipantId",
    "callChainId",
    "resultInfo",
    "tenantId",
    "callbackUri",
    "mediaState",
    "toneInfo",
    "incomingContext",
    "callRoutes",
    "transcription",
    "participants",
    "operations",
];

const MODALITIES: &[&str] = &["audio", "video", "videoBasedScreenSharing", "data"];

/// Reads a callback URL: absolute `http`/`https` with a host.
pub fn parse_callback_uri(v: Option<&Value>) -> Result<String, WireError> {
    let s = match v {
        None | Some(Value::Null) => return Err(bad("The callbackUri property is required.")),
        Some(Value::String(s)) => s.trim(),
        Some(_) => return Err(bad("The callbackUri property must be a string.")),
    };
    let url = url::Url::parse(s)
        .map_err(|_| bad(format!("The callbackUri '{s}' is not an absolute URL.")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(bad(format!(
            "The callbackUri '{s}' must be an absolute http or https URL."
        )));
    }
    Ok(s.to_string())
}

/// Reads `requestedModalities` in any casing into Graph's spelling.
pub fn parse_modalities(v: Option<&Value>) -> Result<Vec<Value>, WireError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(vec![json!("audio")]),
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err(bad(
                "requestedModalities must be an array of modality values.",
            ));
        }
    };
    if list.is_empty() {
        return Err(bad("requestedModalities must name at least one modality."));
    }
    list.iter()
        .map(|m| {
            let s = m.as_str().unwrap_or_default();
            MODALITIES
                .iter()
                .find(|known| known.eq_ignore_ascii_case(s))
                .map(|known| json!(known))
                .ok_or_else(|| {
                    bad(format!(
                        "'{}' is not a modality; use audio, video, videoBasedScreenSharing or data.",
                        if s.is_empty() { m.to_string() } else { s.to_string() }
                    ))
                })
        })
        .collect()
}

/// Reads `mediaConfig`, defaulting a missing discriminator (`blob` means app-hosted). Returns the
/// normalized value and whether it is app-hosted.
pub fn parse_media_config(v: Option<&Value>) -> Result<(Value, bool), WireError> {
    let mut obj = match v {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(bad("mediaConfig must be an object.")),
    };
    let app_hosted = match obj.get("@odata.type").and_then(Value::as_str) {
        Some(t) if is_odata_type(t, "appHostedMediaConfig") => true,
        Some(t) if is_odata_type(t, "serviceHostedMediaConfig") => false,
        Some(t) => {
            return Err(bad(format!(
                "'{t}' is not a media configuration; use #microsoft.graph.serviceHostedMediaConfig or #microsoft.graph.appHostedMediaConfig."
            )));
        }
        None => obj.contains_key("blob"),
    };
    let name = if app_hosted {
        "appHostedMediaConfig"
    } else {
        "serviceHostedMediaConfig"
    };
    obj.insert("@odata.type".into(), json!(odata_type(name)));
    Ok((Value::Object(with_type_first(obj)), app_hosted))
}

/// Moves `@odata.type` to the front of an object, as Graph writes it.
fn with_type_first(obj: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::with_capacity(obj.len());
    if let Some(t) = obj.get("@odata.type") {
        out.insert("@odata.type".into(), t.clone());
    }
    for (k, v) in obj {
        if k != "@odata.type" {
            out.insert(k, v);
        }
    }
    out
}

/// Adds `@odata.type` where a client left it out.
fn typed(v: &Value, name: &str) -> Value {
    match v {
        Value::Object(o) => {
            let mut o = o.clone();
            o.entry("@odata.type")
                .or_insert_with(|| json!(odata_type(name)));
            Value::Object(with_type_first(o))
        }
        other => other.clone(),
    }
}

/// Normalizes an identitySet: its own type and that of each identity in it.
fn typed_identity_set(v: &Value) -> Value {
    let Value::Object(o) = v else {
        return v.clone();
    };
    let mut out = Map::new();
    for (k, inner) in o {
        let inner = if k.starts_with('@') {
            inner.clone()
        } else {
            typed(inner, "identity")
        };
        out.insert(k.clone(), inner);
    }
    typed(&Value::Object(out), "identitySet")
}

/// Reads one `invitationParticipantInfo` into the party it names.
pub fn parse_target(v: &Value) -> Result<(Peer, Value), WireError> {
    let Value::Object(o) = v else {
        return Err(bad(
            "Each target must be an invitationParticipantInfo object.",
        ));
    };
    let Some(Value::Object(identity)) = o.get("identity") else {
        return Err(bad("Each target needs an identity."));
    };
    let id_of = |key: &str| -> Option<Result<String, WireError>> {
        let entry = identity.get(key)?;
        if entry.is_null() {
            return None;
        }
        Some(
            entry
                .get("id")
                .and_then(Value::as_str)
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().to_string())
                .ok_or_else(|| bad(format!("The target's {key} identity needs an id."))),
        )
    };
    let kinds = [
        ("user", PartyKind::User),
        ("phone", PartyKind::Phone),
        ("application", PartyKind::Application),
        ("applicationInstance", PartyKind::ApplicationInstance),
    ];
    let Some((id, kind)) = kinds
        .into_iter()
        .find_map(|(key, kind)| id_of(key).map(|id| (id, kind)))
    else {
        return Err(bad(
            "The target's identity must name a user, a phone, an application or an applicationInstance; other identity kinds are not supported.",
        ));
    };
    let peer = Peer { id: id?, kind };
    let mut norm = o.clone();
    norm.insert(
        "identity".into(),
        typed_identity_set(&Value::Object(identity.clone())),
    );
    Ok((
        peer,
        typed(&Value::Object(norm), "invitationParticipantInfo"),
    ))
}

/// Reads a create-call body.
pub fn parse_create(body: &Value) -> Result<CreateCall, WireError> {
    let Value::Object(o) = body else {
        return Err(bad(
            "The request body must be a JSON object describing the call.",
        ));
    };
    if let Some(t) = o.get("@odata.type").and_then(Value::as_str)
        && !is_odata_type(t, "call")
    {
        return Err(bad(format!("'{t}' is not #microsoft.graph.call.")));
    }
    let callback_uri = parse_callback_uri(o.get("callbackUri"))?;
    let modalities = parse_modalities(o.get("requestedModalities"))?;
    let (media, app_hosted_media) = parse_media_config(o.get("mediaConfig"))?;
    let tenant_id = match o.get("tenantId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(_) => return Err(bad("tenantId must be a non-empty string.")),
    };
    let call_chain_id = o
        .get("callChainId")
        .and_then(Value::as_str)
        .map(str::to_string);
    let targets = match o.get("targets") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a.clone(),
        Some(_) => {
            return Err(bad(
                "targets must be an array of invitationParticipantInfo.",
            ));
        }
    };
    let is_meeting = o.get("meetingInfo").is_some_and(|m| !m.is_null());
    let mut peers = vec![];
    let mut norm_targets = vec![];
    for t in &targets {
        let (peer, norm) = parse_target(t)?;
        let key = crate::domain::call::party_key(&peer.id);
        if peers
            .iter()
            .any(|p: &Peer| crate::domain::call::party_key(&p.id) == key)
        {
            return Err(bad(format!(
                "{} is a target twice; the same identity cannot be invited twice.",
                peer.id
            )));
        }
        peers.push(peer);
        norm_targets.push(norm);
    }
    let kind = if is_meeting {
        CallKind::Meeting
    } else {
        match peers.len() {
            0 => {
                return Err(bad(
                    "The call has no target: give one target for a peer-to-peer call, several for a group call, or a meetingInfo to join a meeting.",
                ));
            }
            1 => CallKind::PeerToPeer(peers.remove(0)),
            _ => CallKind::Group(peers),
        }
    };
    let mut wire = Map::new();
    for (k, v) in o {
        if !SERVER_OWNED.contains(&k.as_str()) {
            wire.insert(k.clone(), v.clone());
        }
    }
    wire.insert("targets".into(), Value::Array(norm_targets));
    wire.insert("requestedModalities".into(), Value::Array(modalities));
    wire.insert("mediaConfig".into(), media);
    if let Some(s) = o.get("source").filter(|s| s.is_object()) {
        wire.insert("source".into(), s.clone());
    }
    let delta_roster = delta_roster(o.get("callOptions"))?;
    Ok(CreateCall {
        callback_uri,
        kind,
        app_hosted_media,
        tenant_id,
        call_chain_id,
        guest: !body["source"]["identity"]["guest"].is_null(),
        wire,
        delta_roster,
    })
}

/// Whether `callOptions` (of a create or an answer) asks for delta rosters.
pub fn delta_roster(options: Option<&Value>) -> Result<bool, WireError> {
    let Some(o) = options.filter(|o| !o.is_null()) else {
        return Ok(false);
    };
    if !o.is_object() {
        return Err(bad("callOptions must be an object."));
    }
    match &o["isDeltaRosterEnabled"] {
        Value::Null => Ok(false),
        Value::Bool(b) => Ok(*b),
        _ => Err(bad(
            "callOptions.isDeltaRosterEnabled must be true or false.",
        )),
    }
}

/// The chat a group call or meeting has: the client's, with the thread filled in.
pub fn chat_info(given: Option<&Value>, thread_id: &str) -> Value {
    let mut chat = given
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    chat.insert("@odata.type".into(), json!(odata_type("chatInfo")));
    if chat.get("threadId").is_none_or(Value::is_null) {
        chat.insert("threadId".into(), json!(thread_id));
    }
    if chat.get("messageId").is_none_or(Value::is_null) {
        chat.insert("messageId".into(), json!("0"));
    }
    chat.entry("replyChainMessageId").or_insert(Value::Null);
    Value::Object(chat)
}

/// What Graph says of an incoming call besides its state: the caller (`source`, a participant
/// with `participantId`), the bot as the invited target, `requestedModalities` and the
/// `incomingContext`. `caller`: the party, its display name and participant id; `app`: the
/// app's id, display name and the call's own participant id.
pub fn incoming(
    (party, caller_name, caller_pid): (&Peer, Option<&str>, uuid::Uuid),
    (app_id, app_name, my_pid): (&str, Option<&str>, uuid::Uuid),
) -> Map<String, Value> {
    let kind = crate::domain::conversation::identity_key(party.kind);
    let caller = json!({
        "@odata.type": odata_type("participantInfo"),
        "identity": {
            "@odata.type": odata_type("identitySet"),
            kind: {"@odata.type": odata_type("identity"), "id": party.id, "displayName": caller_name},
        },
        "endpointType": "default", "region": null, "languageId": null, "countryCode": null,
        "participantId": caller_pid,
    });
    let me = json!({
        "@odata.type": odata_type("invitationParticipantInfo"),
        "identity": {
            "@odata.type": odata_type("identitySet"),
            "application": {"@odata.type": odata_type("identity"), "id": app_id, "displayName": app_name},
        },
        "endpointType": null, "replacesCallId": null, "hidden": null, "participantId": my_pid,
    });
    let mut wire = Map::new();
    wire.insert("source".into(), caller);
    wire.insert("targets".into(), json!([me]));
    wire.insert("requestedModalities".into(), json!(["audio"]));
    wire.insert(
        "incomingContext".into(),
        json!({
            "@odata.type": odata_type("incomingContext"),
            "sourceParticipantId": caller_pid,
            "observedParticipantId": caller_pid,
            "onBehalfOf": null,
            "transferor": null,
        }),
    );
    wire
}

/// The `source` of an outgoing call: what the client gave, with the app's identity filled in.
pub fn fill_source(
    given: Option<&Value>,
    app_id: &str,
    display_name: Option<&str>,
    participant_id: &str,
) -> Value {
    let mut source = match given {
        Some(Value::Object(o)) => o.clone(),
        _ => Map::new(),
    };
    let mut identity = match source.get("identity") {
        Some(Value::Object(o)) => o.clone(),
        _ => Map::new(),
    };
    identity.insert(
        "application".into(),
        json!({"@odata.type": odata_type("identity"), "displayName": display_name, "id": app_id}),
    );
    source.insert(
        "identity".into(),
        typed_identity_set(&Value::Object(identity)),
    );
    for k in ["endpointType", "region", "languageId", "countryCode"] {
        source.entry(k).or_insert(Value::Null);
    }
    source.insert("participantId".into(), json!(participant_id));
    typed(&Value::Object(source), "participantInfo")
}

/// Where a call is addressed: the versioned base URL and the collection path the client used.
#[derive(Clone, Debug)]
pub struct Addressing {
    /// e.g. `http://127.0.0.1:8080/v1.0`
    pub base: String,
    /// `communications/calls` or `app/calls`
    pub collection: &'static str,
}

/// What a rendering of a call shows besides the call itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct View<'a> {
    /// A response body: `@odata.context` at this address.
    pub context: Option<&'a Addressing>,
    /// A notification: `@odata.id` and `@odata.etag`.
    pub notification: bool,
    /// The state to report, when not the call's own (a notice of an earlier step).
    pub state: Option<CallState>,
    /// Leave `resultInfo` (and `terminationReason`) out: the notice is of a state before the
    /// end.
    pub hide_result: bool,
    /// A DTMF key to report as `toneInfo`: (tone, sequence id).
    pub tone: Option<(&'a str, i64)>,
}

/// Properties every rendering has, `null` (or `[]`) unless the client or the server set them.
const DEFAULTED: [(&str, &str); 10] = [
    ("subject", "null"),
    ("requestedModalities", "null"),
    ("mediaConfig", "null"),
    ("source", "null"),
    ("targets", "null"),
    ("chatInfo", "null"),
    ("meetingInfo", "null"),
    ("callOptions", "null"),
    ("callRoutes", "[]"),
    ("incomingContext", "null"),
];

/// Appends `s` as a JSON string.
fn push_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

fn push_field(out: &mut Vec<u8>, key: &str, raw: &str) {
    if out.last() != Some(&b'{') {
        out.push(b',');
    }
    push_str(out, key);
    out.push(b':');
    out.extend_from_slice(raw.as_bytes());
}

fn push_str_field(out: &mut Vec<u8>, key: &str, value: &str) {
    if out.last() != Some(&b'{') {
        out.push(b',');
    }
    push_str(out, key);
    out.push(b':');
    push_str(out, value);
}

/// The call as Graph writes it, as JSON text: server-owned properties, then the client's
/// properties spliced in as stored, then `null`s for the rest. Built without an intermediate
/// `Value` tree: this runs for every notification and every GET.
pub fn write(call: &Call, view: &View) -> String {
    let wire = call.wire.raw();
    let mut out = Vec::with_capacity(640 + wire.len());
    out.push(b'{');
    if let Some(at) = view.context {
        push_str_field(
            &mut out,
            "@odata.context",
            &format!("{}/$metadata#{}/$entity", at.base, at.collection),
        );
    }
    push_str_field(&mut out, "@odata.type", "#microsoft.graph.call");
    if view.notification {
        push_str_field(
            &mut out,
            "@odata.id",
            &format!("/communications/calls/{}", call.id),
        );
        push_str_field(&mut out, "@odata.etag", &format!("W/\"{}\"", call.version));
    }
    push_str_field(&mut out, "id", &call.id.to_string());
    push_str_field(&mut out, "state", view.state.unwrap_or(call.state).as_str());
    push_str_field(&mut out, "direction", call.direction.as_str());
    push_str_field(&mut out, "callbackUri", &call.callback_uri);
    push_str_field(&mut out, "callChainId", &call.call_chain_id);
    push_str_field(
        &mut out,
        "myParticipantId",
        &call.my_participant_id.to_string(),
    );
    push_str_field(&mut out, "tenantId", &call.tenant_id);
    let audio = if call.state == CallState::Established {
        "active"
    } else {
        "inactive"
    };
    push_field(
        &mut out,
        "mediaState",
        &format!("{{\"@odata.type\":\"#microsoft.graph.callMediaState\",\"audio\":\"{audio}\"}}"),
    );
    match call.result.filter(|_| !view.hide_result) {
        Some(r) => {
            let info = json!({
                "@odata.type": odata_type("resultInfo"),
                "code": r.code,
                "subcode": r.subcode,
                "message": r.message(),
            });
            push_field(&mut out, "resultInfo", &info.to_string());
        }
        None => push_field(&mut out, "resultInfo", "null"),
    }
    match view.tone {
        Some((tone, seq)) => {
            let info =
                json!({"@odata.type": odata_type("toneInfo"), "sequenceId": seq, "tone": tone});
            push_field(&mut out, "toneInfo", &info.to_string());
        }
        None => push_field(&mut out, "toneInfo", "null"),
    }
    push_field(&mut out, "transcription", "null");
    let entries: std::collections::BTreeMap<std::borrow::Cow<str>, &serde_json::value::RawValue> =
        serde_json::from_str(wire).unwrap_or_default();
    for (k, v) in &entries {
        if view.hide_result && k == "terminationReason" {
            continue;
        }
        push_field(&mut out, k, v.get());
    }
    for (k, empty) in DEFAULTED {
        if !entries.contains_key(k) {
            push_field(&mut out, k, empty);
        }
    }
    out.push(b'}');
    String::from_utf8(out).expect("JSON text is UTF-8")
}

/// The call as Graph writes it in a response body (with `@odata.context`).
pub fn render(call: &Call, at: &Addressing) -> String {
    write(
        call,
        &View {
            context: Some(at),
            ..View::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Value {
        json!({
            "@odata.type": "#microsoft.graph.call",
            "callbackUri": "https://bot.example.com/api/calls",
            "targets": [{"identity": {"user": {"id": "5e9f0000-0000-4000-8000-000000000001", "displayName": "Alice"}}}],
            "requestedModalities": ["Audio"],
            "mediaConfig": {},
            "tenantId": "tenant-1",
            "futureThing": {"x": 1}
        })
    }

    #[test]
    fn a_sloppy_p2p_request_is_read_and_normalized() {
        let c = parse_create(&body()).unwrap();
        assert_eq!(
            c.kind,
            CallKind::PeerToPeer(Peer {
                id: "5e9f0000-0000-4000-8000-000000000001".into(),
                kind: PartyKind::User
            })
        );
        assert!(!c.app_hosted_media);
        assert_eq!(c.tenant_id.as_deref(), Some("tenant-1"));
        assert_eq!(c.wire["requestedModalities"], json!(["audio"]));
        assert_eq!(
            c.wire["mediaConfig"]["@odata.type"],
            "#microsoft.graph.serviceHostedMediaConfig"
        );
        assert_eq!(
            c.wire["targets"][0]["@odata.type"],
            "#microsoft.graph.invitationParticipantInfo"
        );
        assert_eq!(
            c.wire["targets"][0]["identity"]["user"]["@odata.type"],
            "#microsoft.graph.identity"
        );
        assert_eq!(c.wire["futureThing"], json!({"x": 1}));
        assert!(!c.wire.contains_key("tenantId"));
    }

    #[test]
    fn a_blob_without_a_type_means_app_hosted_media() {
        let mut b = body();
        b["mediaConfig"] = json!({"blob": "<xml/>"});
        assert!(parse_create(&b).unwrap().app_hosted_media);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        type Edit = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(&str, Edit, &str)> = vec![
            (
                "no callback",
                Box::new(|b| {
                    b.as_object_mut().unwrap().remove("callbackUri");
                }),
                "callbackUri",
            ),
            (
                "relative callback",
                Box::new(|b| b["callbackUri"] = json!("/api/calls")),
                "absolute",
            ),
            (
                "ftp callback",
                Box::new(|b| b["callbackUri"] = json!("ftp://x.example/")),
                "http",
            ),
            (
                "no targets",
                Box::new(|b| b["targets"] = json!([])),
                "no target",
            ),
            (
                "bad modality",
                Box::new(|b| b["requestedModalities"] = json!(["smell"])),
                "smell",
            ),
            (
                "bad media type",
                Box::new(|b| b["mediaConfig"] = json!({"@odata.type": "#microsoft.graph.x"})),
                "media",
            ),
            (
                "target without identity",
                Box::new(|b| b["targets"] = json!([{}])),
                "identity",
            ),
            (
                "other odata type",
                Box::new(|b| b["@odata.type"] = json!("#microsoft.graph.user")),
                "call",
            ),
        ];
        for (label, edit, needle) in cases {
            let mut b = body();
            edit(&mut b);
            let err = parse_create(&b).expect_err(label);
            assert!(err.0.contains(needle), "{label}: {}", err.0);
        }
        assert!(parse_create(&json!([1])).is_err());
    }

    #[test]
    fn several_targets_make_a_group_call_and_a_meeting_info_a_join() {
        let mut b = body();
        let t = b["targets"][0].clone();
        b["targets"] = json!([t.clone(), {"identity": {"phone": {"id": "+15550100"}}}]);
        assert!(matches!(parse_create(&b).unwrap().kind, CallKind::Group(p) if p.len() == 2));
        b["targets"] = json!([]);
        b["meetingInfo"] = json!({"joinMeetingId": "123", "passcode": "x"});
        assert_eq!(parse_create(&b).unwrap().kind, CallKind::Meeting);
    }

    #[test]
    fn the_source_keeps_what_the_client_gave_and_adds_the_app() {
        let given = json!({"identity": {"applicationInstance": {"id": "inst"}}});
        let s = fill_source(Some(&given), "app-1", Some("Bot"), "p-1");
        assert_eq!(s["identity"]["application"]["id"], "app-1");
        assert_eq!(s["identity"]["applicationInstance"]["id"], "inst");
        assert_eq!(s["@odata.type"], "#microsoft.graph.participantInfo");
        assert_eq!(s["participantId"], "p-1");
    }
}

#[cfg(test)]
mod write_tests {
    use super::*;
    use crate::domain::call::Wire;
    use crate::domain::{Direction, EndReason};

    fn call() -> Call {
        let req = parse_create(&json!({
            "callbackUri": "https://bot.example/cb",
            "targets": [{"identity": {"user": {"id": "u-1"}}}],
            "subject": "quote \" and \\ backslash",
            "futureThing": [1, 2]
        }))
        .unwrap();
        let now = chrono::Utc::now();
        let mut c = Call::new(
            "app",
            "t",
            Direction::Outgoing,
            CallState::Terminated,
            req.callback_uri,
            now,
        );
        c.result = Some(EndReason::BOT_HANG_UP);
        c.version = 3;
        c.wire = Wire::from_map(req.wire);
        c
    }

    #[test]
    fn a_written_call_is_valid_json_with_every_property_once() {
        let c = call();
        let at = Addressing {
            base: "http://x/v1.0".into(),
            collection: "communications/calls",
        };
        let text = render(&c, &at);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["@odata.context"],
            "http://x/v1.0/$metadata#communications/calls/$entity"
        );
        assert_eq!(v["subject"], "quote \" and \\ backslash");
        assert_eq!(v["futureThing"], json!([1, 2]));
        assert_eq!(v["callRoutes"], json!([]));
        assert_eq!(v["chatInfo"], Value::Null);
        assert_eq!(v["resultInfo"]["subcode"], 5001);
        assert_eq!(v["targets"][0]["identity"]["user"]["id"], "u-1");
        let keys = text.matches("\"targets\":").count();
        assert_eq!(keys, 1, "{text}");
    }

    #[test]
    fn a_notification_view_reports_its_own_state_and_can_hide_the_result() {
        let c = call();
        let view = View {
            notification: true,
            state: Some(CallState::Terminating),
            hide_result: true,
            ..View::default()
        };
        let v: Value = serde_json::from_str(&write(&c, &view)).unwrap();
        assert_eq!(v["state"], "terminating");
        assert_eq!(v["resultInfo"], Value::Null);
        assert_eq!(v["@odata.etag"], "W/\"3\"");
        assert!(v.get("@odata.context").is_none());
        let tone = View {
            notification: true,
            tone: Some(("pound", 7)),
            ..View::default()
        };
        let v: Value = serde_json::from_str(&write(&c, &tone)).unwrap();
        assert_eq!(v["toneInfo"]["tone"], "pound");
        assert_eq!(v["toneInfo"]["sequenceId"], 7);
    }
}

#[cfg(test)]
mod property_tests {
    use super::*;
    use proptest::prelude::*;

    /// Arbitrary JSON, biased towards the keys a create request has.
    fn json() -> impl Strategy<Value = Value> {
        let key = prop::sample::select(vec![
            "callbackUri",
            "targets",
            "identity",
            "user",
            "phone",
            "id",
            "requestedModalities",
            "mediaConfig",
            "@odata.type",
            "tenantId",
            "meetingInfo",
            "source",
            "blob",
            "x",
        ])
        .prop_map(str::to_string);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            prop::sample::select(vec![
                "https://bot.example/cb",
                "/relative",
                "audio",
                "Video",
                "smell",
                "",
                "#microsoft.graph.appHostedMediaConfig",
                "5e9f0000-0000-4000-8000-000000000001",
            ])
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_json_is_either_a_call_or_a_clear_error(body in json()) {
            match parse_create(&body) {
                Ok(c) => {
                    prop_assert!(c.callback_uri.starts_with("http://") || c.callback_uri.starts_with("https://"));
                    prop_assert!(c.wire.get("requestedModalities").is_some_and(|m| m.is_array()));
                }
                Err(e) => prop_assert!(e.0.ends_with('.') || e.0.ends_with(')'), "{}", e.0),
            }
        }
    }
}
