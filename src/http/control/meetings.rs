//! The configured meetings: whether one is active and who is in it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use crate::http::error::ApiError;
use crate::http::respond::json_response;
use crate::http::state::AppState;

/// `GET /meetings/{id}`: whether the meeting is active, and its participants.
pub async fn get_meeting(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let m = state
        .engine
        .meeting(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No meeting '{id}' is configured.")))?;
    let participants: Vec<Value> = m
        .participants
        .iter()
        .map(|(id, kind, call)| match call {
            Some(c) => json!({"id": id, "kind": kind, "callId": c.to_string()}),
            None => json!({"id": id, "kind": kind}),
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"joinMeetingId": id, "active": m.active, "participants": participants}),
    ))
}
