//! The simulated parties: list them, read one with the calls it is in and the commands it
//! received, and make one hang up, call an app, or press keys. Each action becomes the fabric
//! events a trunk would report, applied by the engine like any other.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::{read_json, result_info};
use crate::domain::{CallId, Peer};
use crate::engine::Outcome;
use crate::fabric::simulated::Party;
use crate::fabric::{AppRef, FabricEvent, LegRef};
use crate::http::error::ApiError;
use crate::http::respond::json_response;
use crate::http::state::AppState;

fn party_json(p: &Party) -> Value {
    json!({
        "id": p.info.id,
        "kind": p.info.kind,
        "displayName": p.info.display_name,
        "behavior": p.behavior,
    })
}

fn no_such_party(id: &str) -> ApiError {
    ApiError::not_found(format!("No party '{id}' is configured."))
}

/// Reports `event` for each of the party's live legs; returns the bots' calls they reached.
async fn on_each_leg(
    state: &AppState,
    legs: Vec<LegRef>,
    event: impl Fn(LegRef) -> FabricEvent,
) -> Result<Vec<CallId>, ApiError> {
    let mut calls = vec![];
    for leg in legs {
        if let Outcome::Calls(c) = state.engine.report(event(leg)).await? {
            calls.extend(c);
        }
    }
    Ok(calls)
}

/// `GET /parties`: the configured parties.
pub async fn list_parties(State(state): State<Arc<AppState>>) -> Response {
    let parties: Vec<Value> = state.parties.parties().map(party_json).collect();
    json_response(StatusCode::OK, &json!({"value": parties}))
}

/// `GET /parties/{id}`: a party, with the calls it is or was in and the commands it received.
pub async fn get_party(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let party = state.parties.get(&id);
    let legs = state.engine.party_legs(&id).await?;
    if party.is_none() && legs.is_empty() {
        return Err(no_such_party(&id));
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
    let mut body = party.map(party_json).unwrap_or_else(|| json!({"id": id}));
    body["calls"] = Value::Array(calls);
    body["heard"] = json!(state.parties.heard(&id));
    Ok(json_response(StatusCode::OK, &body))
}

/// `POST /parties/{id}/hangup`: the party hangs up every call it is in.
pub async fn hang_up_party(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if state.parties.get(&id).is_none() && state.engine.party_legs(&id).await?.is_empty() {
        return Err(no_such_party(&id));
    }
    let legs = state.engine.live_legs_of(&id).await?;
    let ended = on_each_leg(&state, legs, FabricEvent::HungUp).await?;
    let ids: Vec<String> = ended.iter().map(CallId::to_string).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"partyId": id, "callsEnded": ids}),
    ))
}

/// `POST /parties/{id}/dial {"appId", "incomingCallUri"?}`: the party calls the app.
pub async fn dial(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let body = read_json(&state, req).await?;
    let party = state.parties.get(&id).ok_or_else(|| no_such_party(&id))?;
    let app_id = body["appId"]
        .as_str()
        .ok_or_else(|| ApiError::bad_request("appId is required."))?;
    let app = state
        .app(app_id)
        .ok_or_else(|| ApiError::not_found(format!("No app '{app_id}' is configured.")))?;
    // Where the incoming-call notification goes: the request's `incomingCallUri`, else the
    // app's configured one.
    let uri = match &body["incomingCallUri"] {
        Value::Null => app.incoming_call_uri.clone().ok_or_else(|| {
            ApiError::bad_request(format!(
                "The app '{app_id}' has no incoming_call_uri to notify: configure one, or give \
                 \"incomingCallUri\" in this request."
            ))
        })?,
        uri => {
            let u = crate::graph::call::parse_callback_uri(Some(uri)).map_err(|e| {
                ApiError::bad_request(e.to_string().replace("callbackUri", "incomingCallUri"))
            })?;
            crate::http::extract::check_callback_policy(&state.settings.callbacks, &u)?;
            u
        }
    };
    let event = FabricEvent::Incoming {
        leg: uuid::Uuid::new_v4(),
        from: Peer {
            id: party.info.id.clone(),
            kind: party.info.kind,
        },
        display_name: party.info.display_name.clone(),
        app: AppRef {
            app_id: app.app_id.clone(),
            tenant_id: app.tenant_id.clone(),
            display_name: app.display_name.clone(),
            max_concurrent_calls: app.max_concurrent_calls,
        },
        callback_uri: uri,
    };
    let Outcome::Created(call) = state.engine.report(event).await? else {
        return Err(ApiError::internal("the incoming call was not created"));
    };
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
    let legs = state.engine.live_legs_of(&id).await?;
    let heard = on_each_leg(&state, legs, |leg| {
        FabricEvent::Tones(leg, keys.to_string())
    })
    .await?;
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
