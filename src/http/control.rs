//! The control API (`/_switchboard/v1`): drive simulated parties, inject failures, read the
//! deliveries log, move the virtual clock. It needs the configured admin token; with none
//! configured, only loopback clients are served. App tokens are never accepted.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::PeerAddr;
use super::respond::json_response;
use super::state::AppState;
use crate::clock::ClockError;
use crate::config::Settings;
use crate::domain::{CallId, EndReason};
use crate::fabric::PartyInfo;
use crate::store::DeliveryRecord;

async fn guard(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split_once(' ').map_or(v, |(_, t)| t).trim().to_string());
    let allowed = match (&state.settings.admin.token, presented) {
        (Some(admin), Some(p)) => admin.matches(&p),
        (Some(_), None) => false,
        // No admin token: loopback only, and never with an app token.
        (None, Some(_)) => {
            return ApiError::forbidden(
                "accessDenied",
                "App tokens are not accepted on the control API.",
            )
            .into_response();
        }
        (None, None) => req
            .extensions()
            .get::<PeerAddr>()
            .is_some_and(PeerAddr::is_loopback),
    };
    if !allowed {
        let e = if state.settings.admin.token.is_some() {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "The control API needs the admin token as a bearer token.",
            )
            .with_header(
                header::WWW_AUTHENTICATE,
                "Bearer realm=\"switchboard-control\"",
            )
        } else {
            ApiError::forbidden(
                "accessDenied",
                "Without an admin token configured, the control API serves loopback clients only.",
            )
        };
        return e.into_response();
    }
    next.run(req).await
}

/// Whether to warn at start that the control API is guarded by nothing but the peer address: no
/// admin token is set and the server listens beyond loopback, so other hosts reach it, and any
/// forwarder on this host (a reverse proxy, a port forward) makes their requests look local.
pub fn guarded_by_address_only(listen: SocketAddr, settings: &Settings) -> bool {
    settings.admin.token.is_none() && !listen.ip().to_canonical().is_loopback()
}

fn party_json(p: &PartyInfo) -> Value {
    json!({
        "id": p.id,
        "kind": p.kind,
        "displayName": p.display_name,
        "behavior": p.behavior,
    })
}

async fn list_parties(State(state): State<Arc<AppState>>) -> Response {
    let parties: Vec<Value> = state
        .engine
        .fabric()
        .parties()
        .iter()
        .map(party_json)
        .collect();
    json_response(StatusCode::OK, &json!({"value": parties}))
}

async fn get_party(
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

fn result_info(r: EndReason) -> Value {
    json!({"code": r.code, "subcode": r.subcode, "message": r.message()})
}

async fn hang_up_party(
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

/// Reads a control request's JSON body. Unlike Graph routes, any content type is taken: the
/// control API is ours, and `curl -d` sends JSON labelled as a form.
async fn read_json(state: &AppState, req: Request) -> Result<Value, ApiError> {
    let body = req.into_body();
    let bytes = super::extract::read_body(body, state.settings.limits.max_body_bytes).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!("The request body must be a JSON object. ({e})"))
    })
}

fn int_field(v: &Value, name: &str) -> Result<i32, ApiError> {
    let f = &v[name];
    f.as_i64()
        .or_else(|| f.as_str().and_then(|s| s.trim().parse().ok()))
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| ApiError::bad_request(format!("'{name}' must be an integer.")))
}

async fn fail_call(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let body = read_json(&state, req).await?;
    let reason = EndReason::new(int_field(&body, "code")?, int_field(&body, "subcode")?);
    let id = CallId::parse(&id).ok_or_else(ApiError::call_not_found)?;
    let call = state.engine.fail_call(id, reason).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"callId": call.id.to_string(), "resultInfo": result_info(reason)}),
    ))
}

fn delivery_json(r: &DeliveryRecord) -> Value {
    json!({
        "sequence": r.item.seq,
        "changeType": r.item.change_type,
        "resourceUrl": r.item.resource_url,
        "callbackUri": r.item.callback_uri,
        "createdAt": r.item.created_at,
        "status": r.item.status,
        "attemptCount": r.item.attempts,
        "nextAttemptAt": if r.item.status == crate::store::DeliveryStatus::Pending { json!(r.item.next_attempt_at) } else { Value::Null },
        "body": serde_json::from_str::<Value>(&r.item.body).unwrap_or(Value::Null),
        "attempts": r.attempts,
    })
}

async fn deliveries(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = CallId::parse(&id).ok_or_else(ApiError::call_not_found)?;
    let log = state.engine.deliveries(id).await?;
    if log.records.is_empty() && log.pruned.is_none() {
        return Err(ApiError::call_not_found());
    }
    let list: Vec<Value> = log.records.iter().map(delivery_json).collect();
    let mut body = json!({"callId": id.to_string(), "notifications": list});
    // Said only when the retention policy removed some of this call's log.
    if let Some(p) = log.pruned {
        body["pruned"] = json!({
            "at": p.at,
            "notifications": p.notifications,
            "message": format!(
                "{} delivered or dead notifications of this call were removed by the retention policy ([retention] in the configuration).",
                p.notifications
            ),
        });
    }
    Ok(json_response(StatusCode::OK, &body))
}

async fn get_clock(State(state): State<Arc<AppState>>) -> Response {
    let clock = state.engine.clock();
    json_response(
        StatusCode::OK,
        &json!({"now": clock.now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true), "virtual": clock.is_virtual()}),
    )
}

async fn advance_clock(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, ApiError> {
    let body = read_json(&state, req).await?;
    let secs = body["seconds"]
        .as_f64()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 10.0 * 365.0 * 86400.0)
        .ok_or_else(|| {
            ApiError::bad_request("'seconds' must be a number of seconds, zero or more.")
        })?;
    if !state.engine.clock().is_virtual() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "clockIsReal",
            "The clock is real; start the server with --clock virtual to move it.",
        ));
    }
    let by = chrono::Duration::milliseconds((secs * 1000.0).round() as i64);
    let now = state.engine.advance(by).await.map_err(|e| {
        if let Some(ClockError::OutOfRange { .. }) = e.downcast_ref::<ClockError>() {
            return ApiError::bad_request(format!("{e}."));
        }
        match e.downcast::<crate::engine::EngineError>() {
            Ok(engine) => ApiError::from(engine),
            Err(e) => ApiError::internal(e),
        }
    })?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"now": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), "virtual": true}),
    ))
}

/// `POST /parties/{id}/dial {"appId"}`: the party calls the app.
async fn dial(
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
async fn tones(
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

async fn get_meeting(
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

pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/parties", get(list_parties))
        .route("/parties/{id}", get(get_party))
        .route("/parties/{id}/hangup", post(hang_up_party))
        .route("/parties/{id}/dial", post(dial))
        .route("/parties/{id}/tones", post(tones))
        .route("/meetings/{id}", get(get_meeting))
        .route("/calls/{id}/fail", post(fail_call))
        .route("/calls/{id}/deliveries", get(deliveries))
        .route("/clock", get(get_clock))
        .route("/clock/advance", post(advance_clock))
        .fallback(|| async { ApiError::not_found("No such control API route.") })
        .layer(middleware::from_fn_with_state(state, guard))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn a_listener_beyond_loopback_without_an_admin_token_is_warned_about() {
        let mut s = Settings::default();
        for open in [
            "0.0.0.0:8080",
            "[::]:8080",
            "192.168.1.20:8080",
            "[2001:db8::1]:80",
        ] {
            assert!(guarded_by_address_only(open.parse().unwrap(), &s), "{open}");
        }
        for local in [
            "127.0.0.1:8080",
            "127.0.0.2:8080",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert!(
                !guarded_by_address_only(local.parse().unwrap(), &s),
                "{local}"
            );
        }
        s.admin.token = Some(Secret::new("t"));
        assert!(!guarded_by_address_only(
            "0.0.0.0:8080".parse().unwrap(),
            &s
        ));
    }
}
