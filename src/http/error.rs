//! One error type for every Graph and control route. It renders Graph's error body
//! (`{"error":{"code","message","innerError":{...}}}`); the request-context middleware fills in
//! `innerError` with the date and request ids, since only it knows them. Internal causes are
//! logged, never sent.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::auth::AuthError;
use crate::domain::Refusal;
use crate::domain::refusal::ReplaceProblem;
use crate::engine::EngineError;

#[derive(Debug)]
pub struct ApiError(Box<Details>);

/// `Retry-After` of a 503: about how often the store is probed once it failed.
pub const RETRY_UNAVAILABLE_SECS: u64 = 5;

#[derive(Debug)]
struct Details {
    status: StatusCode,
    code: String,
    message: String,
    headers: Vec<(HeaderName, String)>,
    /// Extra members of `innerError` (the throttling body carries some).
    inner: Map<String, Value>,
}

/// Carried from [`ApiError::into_response`] to the middleware that writes the body.
#[derive(Clone, Debug)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    pub inner: Map<String, Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError(Box::new(Details {
            status,
            code: code.into(),
            message: message.into(),
            headers: vec![],
            inner: Map::new(),
        }))
    }

    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    pub fn with_header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.0.headers.push((name, value.into()));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// An unknown call, an ended call and another app's call all answer the same.
    pub fn call_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "8522", "Call not found.")
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "itemNotFound", message)
    }

    pub fn method_not_allowed(allowed: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("The HTTP method is not allowed on this resource; use {allowed}."),
        )
        .with_header(axum::http::header::ALLOW, allowed)
    }

    pub fn forbidden(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// Graph's `403` for an app without the application permission `what` needs (any of
    /// `roles`).
    pub fn insufficient(what: &str, roles: &[&str]) -> Self {
        Self::forbidden(
            "7504",
            format!(
                "Insufficient enterprise tenant permissions, cannot access this API. To {what} the application needs the {} application permission.",
                roles.join(" or ")
            ),
        )
    }

    pub fn unauthorized(e: &AuthError) -> Self {
        if *e == AuthError::Delegated {
            return Self::forbidden("accessDenied", e.to_string());
        }
        Self::new(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", e.to_string()).with_header(
            axum::http::header::WWW_AUTHENTICATE,
            "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("The request body is larger than the limit of {limit} bytes."),
        )
    }

    /// Graph's throttling answer.
    pub fn throttled(retry_after_secs: f64, why: &str) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            format!("Please retry again later. {why}"),
        )
        .with_header(
            HeaderName::from_static("retry-after"),
            format!("{}", (retry_after_secs.max(0.001) * 1000.0).ceil() / 1000.0),
        );
        let inner = &mut e.0.inner;
        inner.insert("code".into(), Value::from("429"));
        inner.insert("message".into(), Value::from("Please retry after"));
        inner.insert("status".into(), Value::from("429"));
        e
    }

    pub fn not_implemented(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            format!("{what} is not implemented in this version of Switchboard."),
        )
    }

    /// Graph's answer while the service cannot take the request for now (the store cannot
    /// write): `503` with `Retry-After`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "serviceNotAvailable",
            message,
        )
        .with_header(
            HeaderName::from_static("retry-after"),
            RETRY_UNAVAILABLE_SECS.to_string(),
        )
    }

    /// A failure of ours: logged with its cause, answered without it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {cause}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "generalException",
            "An internal error occurred; the request can be retried.",
        )
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound => ApiError::call_not_found(),
            EngineError::Refused(r) => ApiError::from(r),
            EngineError::TooManyCalls(n) => ApiError::throttled(
                1.0,
                &format!("The application has reached its limit of {n} concurrent calls."),
            ),
            EngineError::Store(e) => {
                tracing::debug!("answering 503: the store failed: {e}");
                ApiError::unavailable("The service cannot store changes right now; retry later.")
            }
            EngineError::Unavailable(m) => ApiError::unavailable(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let d = *self.0;
        let mut resp = d.status.into_response();
        for (name, value) in d.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        resp.extensions_mut().insert(ErrorBody {
            code: d.code,
            message: d.message,
            inner: d.inner,
        });
        resp
    }
}

/// What a client reads when the domain refuses its request: every such sentence is here.
impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let bad = |m: String| ApiError::bad_request(m);
        match r {
            Refusal::NotUp { what, state } => bad(format!(
                "The {what} cannot run while the call is {}.",
                state.as_str()
            )),
            Refusal::NotEstablished { state } => bad(format!(
                "The call is {}; it must be established.",
                state.as_str()
            )),
            Refusal::AppHostedMedia => bad(
                "This action is supported only for calls with service-hosted media (serviceHostedMediaConfig); the call uses app-hosted media.".into(),
            ),
            Refusal::NotIncoming => bad(
                "Only incoming calls can be answered, rejected or redirected; hang up with DELETE."
                    .into(),
            ),
            Refusal::NotGroup { what } => bad(format!(
                "{what} is possible in group calls and meetings; this is a peer-to-peer call."
            )),
            Refusal::InvitedTwice(id) => bad(format!(
                "{id} is invited twice; the same identity cannot be invited twice."
            )),
            Refusal::AlreadyInCall(id) => bad(format!("{id} is already in the call.")),
            Refusal::ParticipantIdTaken(id) => bad(format!("The participant id {id} is taken.")),
            Refusal::ParticipantIdForBot => bad(
                "An application or applicationInstance invitee gets its participantId from the service; leave participantId out."
                    .into(),
            ),
            Refusal::NotReplaceable { call, problem } => {
                let why = match problem {
                    ReplaceProblem::SameCall => "it is the call being invited into or transferred.",
                    ReplaceProblem::NoSuchCall => "no such live call of this application.",
                    ReplaceProblem::NotPeerToPeerWithInvitee => {
                        "not a peer-to-peer call with the invitee or transfer target."
                    }
                    ReplaceProblem::NotJoined => "the transfer target has not joined it.",
                    ReplaceProblem::NotMovable => {
                        return ApiError::not_implemented(
                            "Moving a SIP party or another bot from one call to another (replacesCallId)",
                        );
                    }
                    ReplaceProblem::FromGroup => {
                        return ApiError::not_implemented(
                            "A consultative transfer out of a group call",
                        );
                    }
                };
                bad(format!("replacesCallId {call}: {why}"))
            }
            Refusal::NotJoined => bad("The participant has not joined yet.".into()),
            Refusal::HoldMusicNotForParty => {
                bad("Hold music is for a party that has joined the call.".into())
            }
            Refusal::AnotherOnHold => bad(
                "Another participant is on hold; only one participant can be on hold at a time."
                    .into(),
            ),
            Refusal::NotOnHold => bad("The participant is not on hold.".into()),
            Refusal::NoSuchMeeting(id) if id.starts_with("19:") => {
                ApiError::not_found(format!("No meeting has the chat thread '{id}'."))
            }
            Refusal::NoSuchMeeting(id) => {
                ApiError::not_found(format!("No meeting with joinMeetingId '{id}' exists."))
            }
            Refusal::WrongPasscode => ApiError::forbidden(
                "accessDenied",
                "The passcode does not match the meeting's passcode.",
            ),
            Refusal::WrongOrganizer => ApiError::forbidden(
                "accessDenied",
                "The organizer given is not the meeting's organizer.",
            ),
            Refusal::NoSuchParticipant => ApiError::not_found("Participant not found."),
            Refusal::NotInLobby => bad("The participant is not waiting in the lobby.".into()),
            Refusal::Transition(e) => bad(e.to_string()),
        }
    }
}
