//! Calls, seen from the control API: list the live ones, fail one with a given end reason, read
//! its deliveries log, send one of its notifications again.

use std::sync::Arc;

use std::collections::HashMap;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::{read_json, result_info};
use crate::domain::{CallId, CallState, EndReason};
use crate::graph::notification::envelope;
use crate::http::error::ApiError;
use crate::http::respond::json_response;
use crate::http::state::AppState;
use crate::store::DeliveryRecord;

fn int_field(v: &Value, name: &str) -> Result<i32, ApiError> {
    let f = &v[name];
    f.as_i64()
        .or_else(|| f.as_str().and_then(|s| s.trim().parse().ok()))
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| ApiError::bad_request(format!("'{name}' must be an integer.")))
}

/// `GET /calls?state=&appId=`: every live call, oldest first.
pub async fn list_calls(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let wanted = match query.get("state") {
        None => None,
        Some(s) => Some(
            CallState::ALL
                .into_iter()
                .find(|c| c.as_str().eq_ignore_ascii_case(s))
                .ok_or_else(|| {
                    let all: Vec<&str> = CallState::ALL.iter().map(|c| c.as_str()).collect();
                    ApiError::bad_request(format!(
                        "'{s}' is not a call state; use one of {}.",
                        all.join(", ")
                    ))
                })?,
        ),
    };
    let calls = state
        .engine
        .list_calls(query.get("appId").map(String::as_str), wanted)
        .await?;
    let value: Vec<Value> = calls
        .iter()
        .map(|c| {
            json!({
                "id": c.id.to_string(),
                "appId": &*c.app_id,
                "tenantId": &*c.tenant_id,
                "state": c.state.as_str(),
                "direction": c.direction.as_str(),
                "createdAt": c.created_at,
                "callbackUri": c.callback_uri,
                "myParticipantId": c.my_participant_id.to_string(),
                "conversationId": c.conversation.to_string(),
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"value": value})))
}

/// `POST /calls/{id}/deliveries/{sequence}/redeliver`: that notification is POSTed again now,
/// a new attempt in its log (`202`, with the attempt).
pub async fn redeliver(
    State(state): State<Arc<AppState>>,
    Path((id, seq)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let call = CallId::parse(&id).ok_or_else(ApiError::call_not_found)?;
    let seq: i64 = seq
        .parse()
        .map_err(|_| ApiError::bad_request("The sequence must be a whole number."))?;
    let log = state.engine.deliveries(call).await?;
    let item = log
        .records
        .into_iter()
        .find(|r| r.item.seq == seq)
        .map(|r| r.item)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "The call {call} has no notification {seq} in its deliveries log."
            ))
        })?;
    let o = state.engine.redeliver(item).await?;
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({
            "callId": call.to_string(),
            "sequence": seq,
            "status": o.status,
            "attempt": o.attempt,
        }),
    ))
}

/// `POST /calls/{id}/fail {"code", "subcode"}`: the call ends with that reason.
pub async fn fail_call(
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
        // As POSTed (alone, or with the notifications behind it in one envelope).
        "body": serde_json::from_str::<Value>(&envelope([r.item.body.as_str()]))
            .unwrap_or(Value::Null),
        "attempts": r.attempts,
    })
}

/// `GET /calls/{id}/deliveries`: the call's notifications and every attempt to deliver them.
pub async fn deliveries(
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
