//! The configured meetings: whether one is active and who is in it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::schema::{Meeting, MeetingParticipant};

use crate::http::error::ApiError;
use crate::http::respond::json_response;
use crate::http::state::AppState;

/// `GET /meetings/{id}`: whether the meeting is active, and its participants (those in its
/// lobby too).
#[utoipa::path(get, path = "/_switchboard/v1/meetings/{id}", tag = "meetings",
    params(("id" = String, Path, description = "A configured meeting's joinMeetingId")),
    responses((status = 200, body = super::schema::Meeting),
              (status = 404, body = super::schema::ErrorResponse)))]
pub async fn get_meeting(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let m = state
        .engine
        .meeting(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No meeting '{id}' is configured.")))?;
    let participants = m
        .participants
        .iter()
        .map(|(id, kind, call, in_lobby)| MeetingParticipant {
            id: id.clone(),
            kind: kind.to_string(),
            call_id: call.map(|c| c.to_string()),
            in_lobby: *in_lobby,
        })
        .collect();
    let config = state
        .settings
        .meetings
        .iter()
        .find(|c| c.join_meeting_id == id)
        .ok_or_else(|| ApiError::not_found(format!("No meeting '{id}' is configured.")))?;
    let tenant = state
        .settings
        .apps
        .first()
        .map_or("", |a| a.tenant_id.as_str());
    Ok(json_response(
        StatusCode::OK,
        &Meeting {
            thread_id: config.thread_id(),
            organizer: config.organizer.clone(),
            join_web_url: config.join_web_url(tenant),
            join_meeting_id: id,
            active: m.active,
            participants,
        },
    ))
}
