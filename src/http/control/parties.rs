//! The simulated parties: list them, read one with the calls it is in and the commands it
//! received, and make one hang up, call an app, or press keys. Each action becomes the fabric
//! events a trunk would report, applied by the engine like any other.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::{read_json, schema};
use crate::domain::{CallId, Peer};
use crate::engine::Outcome;
use crate::fabric::simulated::Party;
use crate::fabric::{FabricEvent, LegRef};
use crate::http::error::ApiError;
use crate::http::respond::json_response;
use crate::http::state::AppState;

fn kind_of(k: crate::domain::PartyKind) -> String {
    crate::domain::conversation::identity_key(k).to_string()
}

fn behavior_of(p: &Party) -> String {
    serde_json::to_value(p.behavior)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn party_view(p: &Party) -> schema::Party {
    schema::Party {
        id: p.info.id.clone(),
        kind: kind_of(p.info.kind),
        display_name: p.info.display_name.clone(),
        behavior: behavior_of(p),
    }
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
#[utoipa::path(get, path = "/_switchboard/v1/parties", tag = "parties",
    responses((status = 200, description = "The configured parties", body = schema::PartyList)))]
pub async fn list_parties(State(state): State<Arc<AppState>>) -> Response {
    let value = state.parties.parties().map(party_view).collect();
    json_response(StatusCode::OK, &schema::PartyList { value })
}

/// `GET /parties/{id}`: a party, with the calls it is or was in and the commands it received.
#[utoipa::path(get, path = "/_switchboard/v1/parties/{id}", tag = "parties",
    params(("id" = String, Path, description = "A party's id (a user id, or a phone number in any common spelling)")),
    responses((status = 200, body = schema::PartyDetail),
              (status = 404, description = "No such party, and none in a call", body = schema::ErrorResponse)))]
pub async fn get_party(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let party = state.parties.get(&id);
    let legs = state.engine.party_legs(&id).await?;
    if party.is_none() && legs.is_empty() {
        return Err(no_such_party(&id));
    }
    let calls = legs
        .iter()
        .map(|l| schema::PartyCall {
            call_id: l.call_id.to_string(),
            state: l.state.as_str().to_string(),
            result_info: l.result.map(schema::ResultInfo::from),
            tones_received: l.tones_received.clone(),
        })
        .collect();
    let heard = state
        .parties
        .heard(&id)
        .into_iter()
        .map(|h| schema::Heard {
            at: schema::time(h.at),
            command: h.command.to_string(),
            call_id: h.call_id,
            participant_id: h.participant_id,
            tones: h.tones,
            operation_ids: h.operation_ids,
            prompts: h.prompts,
            reason: h.reason.map(|(c, s)| [c, s]),
        })
        .collect();
    let body = schema::PartyDetail {
        id: party.map_or(id.clone(), |p| p.info.id.clone()),
        kind: party.map(|p| kind_of(p.info.kind)),
        display_name: party.and_then(|p| p.info.display_name.clone()),
        behavior: party.map(behavior_of),
        calls,
        heard,
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// `POST /parties/{id}/hangup`: the party hangs up every call it is in.
#[utoipa::path(post, path = "/_switchboard/v1/parties/{id}/hangup", tag = "parties",
    params(("id" = String, Path, description = "A party's id")),
    responses((status = 200, body = schema::HungUp),
              (status = 404, body = schema::ErrorResponse)))]
pub async fn hang_up_party(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if state.parties.get(&id).is_none() && state.engine.party_legs(&id).await?.is_empty() {
        return Err(no_such_party(&id));
    }
    let legs = state.engine.live_legs_of(&id).await?;
    let ended = on_each_leg(&state, legs, FabricEvent::HungUp).await?;
    let calls_ended = ended.iter().map(CallId::to_string).collect();
    Ok(json_response(
        StatusCode::OK,
        &schema::HungUp {
            party_id: id,
            calls_ended,
        },
    ))
}

/// `POST /parties/{id}/dial {"appId", "incomingCallUri"?}`: the party calls the app.
#[utoipa::path(post, path = "/_switchboard/v1/parties/{id}/dial", tag = "parties",
    params(("id" = String, Path, description = "A configured party's id")),
    request_body = schema::DialRequest,
    responses((status = 201, body = schema::Dialled),
              (status = 400, body = schema::ErrorResponse),
              (status = 404, body = schema::ErrorResponse),
              (status = 429, description = "The app is at its limit of concurrent calls", body = schema::ErrorResponse)))]
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
        call: crate::domain::CallId::new(),
        leg: uuid::Uuid::new_v4(),
        dialog: false,
        from: Peer {
            id: party.info.id.clone(),
            kind: party.info.kind,
        },
        display_name: party.info.display_name.clone(),
        app: app.app_ref(),
        callback_uri: uri,
    };
    let Outcome::Created(call) = state.engine.report(event).await? else {
        return Err(ApiError::internal("the incoming call was not created"));
    };
    Ok(json_response(
        StatusCode::CREATED,
        &schema::Dialled {
            call_id: call.id.to_string(),
        },
    ))
}

/// `POST /parties/{id}/tones {"tones": "12#"}`: the party presses keys.
#[utoipa::path(post, path = "/_switchboard/v1/parties/{id}/tones", tag = "parties",
    params(("id" = String, Path, description = "A party's id")),
    request_body = schema::TonesRequest,
    responses((status = 200, body = schema::TonesHeard),
              (status = 400, body = schema::ErrorResponse),
              (status = 409, description = "The party is in no established call", body = schema::ErrorResponse)))]
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
    let call_ids = heard.iter().map(CallId::to_string).collect();
    Ok(json_response(
        StatusCode::OK,
        &schema::TonesHeard {
            party_id: id,
            call_ids,
        },
    ))
}
