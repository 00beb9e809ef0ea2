//! A call, seen from the control API: fail it with a given end reason, read its deliveries log.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::{read_json, result_info};
use crate::domain::{CallId, EndReason};
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
