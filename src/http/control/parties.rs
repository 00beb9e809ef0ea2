//! The simulated parties: list them, read one with the calls it is in, and make one hang up,
//! call an app, or press keys.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::{read_json, result_info};
use crate::domain::CallId;
use crate::fabric::PartyInfo;
use crate::http::error::ApiError;
use crate::http::respond::json_response;
use crate::http::state::AppState;

fn party_json(p: &PartyInfo) -> Value {
    json!({
        "id": p.id,
        "kind": p.kind,
        "displayName": p.display_name,
        "behavior": p.behavior,
    })
}

/// `GET /parties`: the configured parties.
pub async fn list_parties(State(state): State<Arc<AppState>>) -> Response {
    let parties: Vec<Value> = state
        .engine
        .fabric()
        .parties()
        .iter()
        .map(party_json)
        .collect();
    json_response(StatusCode::OK, &json!({"value": parties}))
}

/// `GET /parties/{id}`: a party, with the calls it is or was in.
pub async fn get_party(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let party = state.engine.fabric().party(&id);
    let legs = state.engine.party_legs(&id).await?;
    if party.is_none() && legs.is_empty() {
        return Err(ApiError::not_found(format!(
            "No party '{id}' is configured."
        )));
    }
    let calls: Vec<Value> = legs
        .iter()
        .map(|l| {
            json!({
                "callId": l.call_id.to_string(),
                "state": l.state.as_str(),
                "resultInfo": l.result.map(result_info),
                "tonesReceived": l.tones_received,
            })
        })
        .collect();
    let mut body = party
        .as_ref()
        .map(party_json)
        .unwrap_or_else(|| json!({"id": id}));
    body["calls"] = Value::Array(calls);
    Ok(json_response(StatusCode::OK, &body))
}

/// `POST /parties/{id}/hangup`: the party hangs up every call it is in.
pub async fn hang_up_party(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if state.engine.fabric().party(&id).is_none() && state.engine.party_legs(&id).await?.is_empty()
    {
        return Err(ApiError::not_found(format!(
            "No party '{id}' is configured."
        )));
    }
    let ended = state.engine.party_hang_up(&id).await?;
    let ids: Vec<String> = ended.iter().map(CallId::to_string).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"partyId": id, "callsEnded": ids}),
    ))
}

/// `POST /parties/{id}/dial {"appId"}`: the party calls the app.
pub async fn dial(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let body = read_json(&state, req).await?;
    let party = state
        .engine
        .fabric()
        .party(&id)
        .ok_or_else(|| ApiError::not_found(format!("No party '{id}' is configured.")))?;
    let app_id = body["appId"]
        .as_str()
        .ok_or_else(|| ApiError::bad_request("appId is required."))?;
    let app = state
        .app(app_id)
        .ok_or_else(|| ApiError::not_found(format!("No app '{app_id}' is configured.")))?;
    let uri = app.incoming_call_uri.clone().ok_or_else(|| {
        ApiError::bad_request(format!(
            "The app '{app_id}' has no incoming_call_uri to notify."
        ))
    })?;
    let app_ref = crate::engine::AppRef {
        app_id: app.app_id.clone(),
        tenant_id: app.tenant_id.clone(),
        display_name: app.display_name.clone(),
        max_concurrent_calls: app.max_concurrent_calls,
    };
    let peer = crate::domain::Peer {
        id: party.id.clone(),
        kind: party.kind,
    };
    let call = state
        .engine
        .dial_in(&app_ref, peer, party.display_name.as_deref(), uri)
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"callId": call.id.to_string()}),
    ))
}

/// `POST /parties/{id}/tones {"tones": "12#"}`: the party presses keys.
pub async fn tones(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let body = read_json(&state, req).await?;
    let keys = body["tones"]
        .as_str()
        .filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| crate::domain::operation::tone_name(c).is_some())
        })
        .ok_or_else(|| ApiError::bad_request("tones must be a string of keys: 0-9, *, #, A-D."))?;
    let heard = state.engine.party_tones(&id, keys).await?;
    if heard.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "notInCall",
            format!("The party '{id}' is in no established call."),
        ));
    }
    let ids: Vec<String> = heard.iter().map(CallId::to_string).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"partyId": id, "callIds": ids}),
    ))
}
