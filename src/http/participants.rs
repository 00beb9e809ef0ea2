//! The participants of a call: list, get, invite, remove, mute, hold music.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{GraphCall, call_id, client_context};
use super::respond::{json_response, operation_response};
use super::route::ParticipantAction;
use crate::domain::CallId;
use crate::engine::Invitee;
use crate::graph::call::parse_target;
use crate::graph::participant::{render, roster};

fn context(cx: &GraphCall, call: CallId) -> String {
    let at = cx.addressing();
    format!(
        "{}/$metadata#{}('{call}')/participants",
        at.base, at.collection
    )
}

/// `GET .../participants`: everyone who has joined, the bot included.
pub async fn list(cx: &GraphCall, id: &str) -> Result<Response, ApiError> {
    let cid = call_id(id)?;
    let value = cx
        .state
        .engine
        .with_conversation(&cx.app.app_id, cid, |_, c, apps| roster(c, apps))
        .await?;
    let body = json!({"@odata.context": context(cx, cid), "value": value});
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET .../participants/{id}`.
pub async fn get(cx: &GraphCall, id: &str, participant_id: &str) -> Result<Response, ApiError> {
    let cid = call_id(id)?;
    let found = cx
        .state
        .engine
        .with_conversation(&cx.app.app_id, cid, |_, c, apps| {
            c.leg(participant_id).map(|i| render(&c.legs[i], apps))
        })
        .await?;
    let mut body = found.ok_or_else(|| ApiError::not_found("Participant not found."))?;
    body["@odata.context"] = json!(format!("{}/$entity", context(cx, cid)));
    Ok(json_response(StatusCode::OK, &body))
}

/// `DELETE .../participants/{id}`.
pub async fn remove(cx: &GraphCall, id: &str, participant_id: &str) -> Result<Response, ApiError> {
    cx.state
        .engine
        .remove_participant(&cx.app.app_id, call_id(id)?, participant_id)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST .../participants/invite`.
pub async fn invite(cx: &GraphCall, id: &str, body: Value) -> Result<Response, ApiError> {
    let (state, principal, app) = (&cx.state, &cx.principal, &cx.app);
    let cid = call_id(id)?;
    state.engine.with_call(&app.app_id, cid, |_| ()).await?;
    const ROLE: &str = "Calls.InitiateGroupCall.All";
    if !principal.has_role(ROLE) {
        return Err(ApiError::forbidden(
            "7504",
            format!(
                "Insufficient enterprise tenant permissions, cannot access this API. To invite participants the application needs the {ROLE} application permission."
            ),
        ));
    }
    let list = match &body["participants"] {
        Value::Array(a) if !a.is_empty() => a,
        _ => {
            return Err(ApiError::bad_request(
                "participants must name at least one invitationParticipantInfo.",
            ));
        }
    };
    let mut invitees = vec![];
    let mut normalized = vec![];
    for p in list {
        let (peer, norm) = parse_target(p).map_err(|e| ApiError::bad_request(e.0))?;
        let replaces = match &p["replacesCallId"] {
            Value::Null => None,
            Value::String(s) => Some(CallId::parse(s).ok_or_else(|| {
                ApiError::bad_request(format!("replacesCallId '{s}' is not a call id."))
            })?),
            _ => return Err(ApiError::bad_request("replacesCallId must be a string.")),
        };
        let participant_id = match &p["participantId"] {
            Value::Null => None,
            Value::String(s) => Some(uuid::Uuid::parse_str(s.trim()).map_err(|_| {
                ApiError::bad_request(format!("participantId '{s}' is not a GUID."))
            })?),
            _ => return Err(ApiError::bad_request("participantId must be a string.")),
        };
        invitees.push(Invitee {
            peer,
            replaces,
            participant_id,
        });
        normalized.push(norm);
    }
    let ctx = client_context(&body)?;
    let op = state
        .engine
        .invite(&app.app_id, cid, invitees, normalized, ctx)
        .await?;
    Ok(operation_response(cx, cid, &op))
}

/// A hold music's `customPrompt`: refused as a prompt would be; one that cannot be had is
/// logged, and the held party hears the default music (a real line's own).
async fn custom_prompt(cx: &GraphCall, uri: &str) -> Result<String, ApiError> {
    let state = &cx.state;
    match state.prompts.duration_ms(&state.http, uri).await {
        Err(crate::media::prompts::PromptError::Refused(why)) => {
            Err(ApiError::bad_request(format!("customPrompt: {why}")))
        }
        Err(e) => {
            tracing::warn!(
                "hold music {}: {e}; the default music plays",
                crate::media::prompts::redact(uri)
            );
            Ok(uri.to_string())
        }
        Ok(_) => Ok(uri.to_string()),
    }
}

/// `POST .../participants/{id}/mute`, `admit`, `startHoldMusic`, `stopHoldMusic`.
pub async fn act(
    cx: &GraphCall,
    id: &str,
    participant_id: &str,
    action: ParticipantAction,
    body: Value,
) -> Result<Response, ApiError> {
    let cid = call_id(id)?;
    let e = &cx.state.engine;
    let me = cx.app.app_id.as_str();
    e.with_call(me, cid, |_| ()).await?;
    let ctx = client_context(&body)?;
    match action {
        ParticipantAction::Mute => {
            let op = e.mute_participant(me, cid, participant_id, ctx).await?;
            Ok(operation_response(cx, cid, &op))
        }
        ParticipantAction::Admit => {
            e.admit_from_lobby(me, cid, participant_id).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        ParticipantAction::StartHoldMusic | ParticipantAction::StopHoldMusic => {
            if !body["customPrompt"].is_null() && !body["customPrompt"].is_object() {
                return Err(ApiError::bad_request("customPrompt must be a mediaPrompt."));
            }
            let start = action == ParticipantAction::StartHoldMusic;
            let prompt = match body["customPrompt"]["mediaInfo"]["uri"].as_str() {
                Some(uri) if start => Some(custom_prompt(cx, uri).await?),
                _ => None,
            };
            let op = e
                .hold_music(me, cid, participant_id, ctx, (start, prompt))
                .await?;
            let mut resp = operation_response(cx, cid, &op);
            *resp.status_mut() = StatusCode::ACCEPTED;
            Ok(resp)
        }
    }
}
