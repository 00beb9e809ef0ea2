//! The control API's wire types: what its handlers read and answer, from which its OpenAPI
//! document is generated (`openapi.rs`). Names are camelCase on the wire, as in Graph.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::domain::EndReason;

/// An end reason: `resultInfo` as Graph writes it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ResultInfo {
    pub code: i32,
    pub subcode: i32,
    pub message: String,
}

impl From<EndReason> for ResultInfo {
    fn from(r: EndReason) -> Self {
        ResultInfo {
            code: r.code,
            subcode: r.subcode,
            message: r.message(),
        }
    }
}

/// A configured simulated party.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Party {
    pub id: String,
    /// `user` or `phone`.
    pub kind: String,
    pub display_name: Option<String>,
    /// `answer`, `no_answer`, `reject`, `busy`, `not_found`, `unreachable`, `unroutable` or
    /// `private_calling_disabled`.
    pub behavior: String,
}

/// `GET /parties`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PartyList {
    pub value: Vec<Party>,
}

/// A call leg the party is or was in.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartyCall {
    /// The conversation's id: the call the bot placed or answered, or the meeting.
    pub call_id: String,
    pub state: String,
    pub result_info: Option<ResultInfo>,
    /// DTMF keys bots sent to the party.
    pub tones_received: String,
}

/// A command the party received from Switchboard.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Heard {
    pub at: String,
    /// `dial`, `attach`, `cancel`, `hangUp`, `sendDtmf`, `play`, `record` or `stopMedia`.
    pub command: String,
    pub call_id: String,
    pub participant_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tones: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub operation_ids: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<String>,
    /// For `hangUp`: `[code, subcode]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<[i32; 2]>,
}

/// `GET /parties/{id}`: a party (unconfigured ones only by id), its calls and what it heard.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartyDetail {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub behavior: Option<String>,
    pub calls: Vec<PartyCall>,
    pub heard: Vec<Heard>,
}

/// `POST /parties/{id}/hangup`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HungUp {
    pub party_id: String,
    /// The bots' calls that ended.
    pub calls_ended: Vec<String>,
}

/// `POST /parties/{id}/dial`'s body.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DialRequest {
    pub app_id: String,
    /// Where the incoming-call notification goes (default: the app's `incoming_call_uri`).
    pub incoming_call_uri: Option<String>,
}

/// `POST /parties/{id}/dial`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dialled {
    pub call_id: String,
}

/// `POST /parties/{id}/tones`'s body.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TonesRequest {
    /// Keys: `0-9`, `*`, `#`, `A-D`.
    pub tones: String,
}

/// `POST /parties/{id}/tones`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TonesHeard {
    pub party_id: String,
    /// The bots' calls that heard them.
    pub call_ids: Vec<String>,
}

/// A participant of a meeting.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeetingParticipant {
    /// A party's id, or a bot's app id.
    pub id: String,
    /// `user`, `phone` or `bot`.
    pub kind: String,
    /// For a bot: its call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// Waiting in the meeting's lobby until a bot admits it.
    pub in_lobby: bool,
}

/// `GET /meetings/{joinMeetingId}`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Meeting {
    pub join_meeting_id: String,
    /// Its chat thread: the `chatInfo.threadId` bots see, and an `organizerMeetingInfo` join
    /// names.
    pub thread_id: String,
    /// The organizer's user id, when the meeting names one.
    pub organizer: Option<String>,
    /// A Teams-style join link (thread, message `0`, tenant and organizer in its context).
    pub join_web_url: String,
    pub active: bool,
    pub participants: Vec<MeetingParticipant>,
}

/// A live call.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallSummary {
    pub id: String,
    pub app_id: String,
    pub tenant_id: String,
    pub state: String,
    /// `incoming` or `outgoing`.
    pub direction: String,
    pub created_at: String,
    pub callback_uri: String,
    pub my_participant_id: String,
    /// The conversation it is a leg of (for a meeting, the meeting's).
    pub conversation_id: String,
}

/// `GET /calls`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CallList {
    pub value: Vec<CallSummary>,
}

/// `POST /calls/{id}/fail`'s body.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FailRequest {
    pub code: i32,
    pub subcode: i32,
}

/// `POST /calls/{id}/fail`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Failed {
    pub call_id: String,
    pub result_info: ResultInfo,
}

/// One POST of a notification.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    pub at: String,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    /// Why it did not answer (connection refused, timeout, ...).
    pub error: Option<String>,
    pub latency_ms: u64,
}

/// A notification in a call's deliveries log.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    /// The call's own number for it (1, 2, 3, ...).
    pub sequence: i64,
    pub change_type: String,
    pub resource_url: String,
    pub callback_uri: String,
    pub created_at: String,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    pub attempt_count: u32,
    pub next_attempt_at: Option<String>,
    /// As POSTed: a `commsNotifications` envelope.
    #[schema(value_type = Object)]
    pub body: Value,
    pub attempts: Vec<AttemptView>,
}

/// What the retention policy removed of a call's log.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PrunedView {
    pub at: String,
    pub notifications: u64,
    pub message: String,
}

/// `GET /calls/{id}/deliveries`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveriesLog {
    pub call_id: String,
    pub notifications: Vec<DeliveryView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pruned: Option<PrunedView>,
}

/// `POST /calls/{id}/deliveries/{sequence}/redeliver`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Redelivered {
    pub call_id: String,
    pub sequence: i64,
    /// What the notification is now: `delivered` after a 2xx, as it was otherwise.
    pub status: String,
    pub attempt: AttemptView,
}

/// `POST /reset`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Reset {
    pub reset: bool,
    /// The clock, which a reset leaves where it is.
    pub now: String,
}

/// `GET /clock`, `POST /clock/advance`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ClockView {
    /// RFC 3339, milliseconds.
    pub now: String,
    pub r#virtual: bool,
    /// With `settle`: every notification due by `now` had its attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled: Option<bool>,
}

/// `POST /clock/advance`'s body.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AdvanceRequest {
    /// Zero or more, at most ten years.
    pub seconds: f64,
    /// Answer only once every notification due by the new time had its attempt.
    pub settle: Option<bool>,
}

/// Graph's error body, which every error of the control API has too.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[schema(value_type = Object)]
    pub inner_error: Value,
}

/// A time on the wire: RFC 3339 in UTC with milliseconds (what every language's standard
/// parser reads).
pub fn time(t: crate::clock::Timestamp) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
