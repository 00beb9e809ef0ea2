//! The call handlers: create, get, hang up.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::ApiError;
use super::extract::{GraphCall, call_id, check_callback_policy};
use super::respond::{json_text_response, with_location};
use crate::graph::call::{CallKind, parse_create, render};

/// The roles a create request needs, as (what it is, roles of which one is enough).
fn required_roles(kind: &CallKind) -> (&'static str, &'static [&'static str]) {
    match kind {
        CallKind::PeerToPeer(_) => ("create a peer-to-peer call", &["Calls.Initiate.All"]),
        CallKind::Group(_) => ("create a group call", &["Calls.InitiateGroupCall.All"]),
        CallKind::Meeting => (
            "join a meeting",
            &["Calls.JoinGroupCall.All", "Calls.JoinGroupCallAsGuest.All"],
        ),
    }
}

pub async fn create_call(cx: &GraphCall, body: Value) -> Result<Response, ApiError> {
    let (state, principal, app) = (&cx.state, &cx.principal, &cx.app);
    let req = parse_create(&body).map_err(|e| ApiError::bad_request(e.0))?;
    check_callback_policy(&state.settings.callbacks, &req.callback_uri)?;
    if let Some(t) = &req.tenant_id
        && !t.eq_ignore_ascii_case(&principal.tenant_id)
    {
        return Err(ApiError::forbidden(
            "7505",
            "Request authorization tenant mismatch.",
        ));
    }
    let (what, roles) = required_roles(&req.kind);
    if !roles.iter().any(|r| principal.has_role(r)) {
        return Err(ApiError::insufficient(what, roles));
    }
    if req.app_hosted_media && !principal.has_role("Calls.AccessMedia.All") {
        return Err(ApiError::insufficient(
            "use app-hosted media",
            &["Calls.AccessMedia.All"],
        ));
    }
    let mut req = req;
    req.guest |= !principal.has_role("Calls.JoinGroupCall.All");
    let (targets, meeting) = match &req.kind {
        CallKind::PeerToPeer(p) => (vec![p.clone()], None),
        CallKind::Group(peers) => (peers.clone(), None),
        CallKind::Meeting => (vec![], Some(join_meeting(state, &body)?)),
    };
    let call = state.engine.create_call(app, req, targets, meeting).await?;
    let at = cx.addressing();
    let location = format!("{}/{}/{}", at.base, at.collection, call.id);
    Ok(with_location(
        json_text_response(StatusCode::CREATED, render(&call, &at)),
        &location,
    ))
}

/// The meeting a join asks for, as (`joinMeetingId`, passcode), by any of the three ways Graph
/// has: a `joinMeetingIdMeetingInfo` (join id and passcode, checked by the engine); an
/// `organizerMeetingInfo` with the call's `chatInfo.threadId` (the samples' way, from a join
/// link); a `tokenMeetingInfo`. An unknown meeting is `404`; an organizer other than the one the
/// meeting names, `403`.
fn join_meeting(
    state: &super::state::AppState,
    body: &Value,
) -> Result<(String, Option<String>), ApiError> {
    let info = &body["meetingInfo"];
    let typed = info["@odata.type"].as_str().unwrap_or_default();
    let is = |name: &str| crate::graph::is_odata_type(typed, name);
    let meetings = &state.settings.meetings;
    // Joined by the meeting's own thread or token: its passcode is not asked for.
    let found = |m: &crate::config::MeetingConfig| (m.join_meeting_id.clone(), m.passcode.clone());
    if is("organizerMeetingInfo") {
        let thread = body["chatInfo"]["threadId"]
            .as_str()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "An organizerMeetingInfo join needs the meeting's chatInfo.threadId.",
                )
            })?;
        let organizer = info["organizer"]["user"]["id"].as_str().ok_or_else(|| {
            ApiError::bad_request("organizerMeetingInfo.organizer needs a user with an id.")
        })?;
        let m = meetings
            .iter()
            .find(|m| m.thread_id() == thread)
            .ok_or_else(|| {
                ApiError::from(crate::domain::Refusal::NoSuchMeeting(thread.to_string()))
            })?;
        // The organizer vouches for the join in place of the passcode: a meeting that has a
        // passcode must name its organizer for that.
        let vouched = match m.organizer.as_deref() {
            Some(o) => o.eq_ignore_ascii_case(organizer),
            None => m.passcode.is_none(),
        };
        if !vouched {
            return Err(crate::domain::Refusal::WrongOrganizer.into());
        }
        return Ok(found(m));
    }
    if is("tokenMeetingInfo") {
        let token = info["token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::bad_request("A tokenMeetingInfo needs a token."))?;
        let m = meetings
            .iter()
            .find(|m| m.token.as_deref() == Some(token))
            .ok_or_else(|| ApiError::not_found("No meeting has this token."))?;
        return Ok(found(m));
    }
    if !typed.is_empty() && !is("joinMeetingIdMeetingInfo") {
        return Err(ApiError::bad_request(format!(
            "Switchboard joins meetings by joinMeetingIdMeetingInfo, organizerMeetingInfo (with chatInfo.threadId) or tokenMeetingInfo; '{typed}' is not one of them."
        )));
    }
    match info["joinMeetingId"].as_str().map(str::trim) {
        Some(id) if !id.is_empty() => {
            let passcode = match &info["passcode"] {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                _ => {
                    return Err(ApiError::bad_request(
                        "meetingInfo.passcode must be a string.",
                    ));
                }
            };
            Ok((id.to_string(), passcode))
        }
        _ => Err(ApiError::bad_request(
            "A joinMeetingIdMeetingInfo needs a joinMeetingId.",
        )),
    }
}

pub async fn get_call(cx: &GraphCall, id: &str) -> Result<Response, ApiError> {
    let at = cx.addressing();
    let body = cx
        .state
        .engine
        .with_call(&cx.app.app_id, call_id(id)?, |c| render(c, &at))
        .await?;
    Ok(json_text_response(StatusCode::OK, body))
}

pub async fn delete_call(cx: &GraphCall, id: &str) -> Result<Response, ApiError> {
    cx.state
        .engine
        .hang_up(&cx.app.app_id, call_id(id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
