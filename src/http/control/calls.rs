//! Calls, seen from the control API: list the live ones, fail one with a given end reason, read
//! its deliveries log, send one of its notifications again.

use std::sync::Arc;

use std::collections::HashMap;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::{read_json, schema};
use crate::domain::{CallId, CallState, EndReason};
use crate::graph::notification::envelope;
use crate::http::error::ApiError;
use crate::http::respond::json_response;
use crate::http::state::AppState;
use crate::store::{Attempt, DeliveryRecord, DeliveryStatus};

fn int_field(v: &Value, name: &str) -> Result<i32, ApiError> {
    let f = &v[name];
    f.as_i64()
        .or_else(|| f.as_str().and_then(|s| s.trim().parse().ok()))
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| ApiError::bad_request(format!("'{name}' must be an integer.")))
}

/// `GET /calls?state=&appId=`: every live call, oldest first.
#[utoipa::path(get, path = "/_switchboard/v1/calls", tag = "calls",
    params(("state" = Option<String>, Query, description = "Only calls in this state (any case): incoming, establishing, established, hold, transferring, transferAccepted, redirecting"),
           ("appId" = Option<String>, Query, description = "Only this app's calls")),
    responses((status = 200, body = schema::CallList),
              (status = 400, description = "Not a call state", body = schema::ErrorResponse)))]
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
    let value = calls
        .iter()
        .map(|c| schema::CallSummary {
            id: c.id.to_string(),
            app_id: c.app_id.to_string(),
            tenant_id: c.tenant_id.to_string(),
            state: c.state.as_str().to_string(),
            direction: c.direction.as_str().to_string(),
            created_at: schema::time(c.created_at),
            callback_uri: c.callback_uri.clone(),
            my_participant_id: c.my_participant_id.to_string(),
            conversation_id: c.conversation.to_string(),
        })
        .collect();
    Ok(json_response(StatusCode::OK, &schema::CallList { value }))
}

/// `POST /calls/{id}/deliveries/{sequence}/redeliver`: that notification is POSTed again now,
/// a new attempt in its log (`202`, with the attempt).
#[utoipa::path(post, path = "/_switchboard/v1/calls/{id}/deliveries/{sequence}/redeliver", tag = "calls",
    params(("id" = String, Path, description = "The call's id"),
           ("sequence" = i64, Path, description = "The notification's sequence number")),
    responses((status = 202, body = schema::Redelivered),
              (status = 400, body = schema::ErrorResponse),
              (status = 404, description = "No such notification in the call's log", body = schema::ErrorResponse)))]
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
        &schema::Redelivered {
            call_id: call.to_string(),
            sequence: seq,
            status: status_word(o.status),
            attempt: attempt_view(&o.attempt),
        },
    ))
}

/// `POST /calls/{id}/fail {"code", "subcode"}`: the call ends with that reason.
#[utoipa::path(post, path = "/_switchboard/v1/calls/{id}/fail", tag = "calls",
    params(("id" = String, Path, description = "A live call's id")),
    request_body = schema::FailRequest,
    responses((status = 200, body = schema::Failed),
              (status = 400, body = schema::ErrorResponse),
              (status = 404, body = schema::ErrorResponse)))]
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
        &schema::Failed {
            call_id: call.id.to_string(),
            result_info: reason.into(),
        },
    ))
}

/// A status on the wire: `pending`, `delivered`, `dead`.
fn status_word(s: DeliveryStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn attempt_view(a: &Attempt) -> schema::AttemptView {
    schema::AttemptView {
        at: schema::time(a.at),
        status: a.status,
        error: a.error.clone(),
        latency_ms: a.latency_ms,
    }
}

fn delivery_view(r: &DeliveryRecord) -> schema::DeliveryView {
    let i = &r.item;
    schema::DeliveryView {
        sequence: i.seq,
        change_type: i.change_type.clone(),
        resource_url: i.resource_url.clone(),
        callback_uri: i.callback_uri.clone(),
        created_at: schema::time(i.created_at),
        status: status_word(i.status),
        attempt_count: i.attempts,
        next_attempt_at: (i.status == DeliveryStatus::Pending)
            .then(|| schema::time(i.next_attempt_at)),
        // As POSTed (alone, or with the notifications behind it in one envelope).
        body: serde_json::from_str::<Value>(&envelope([i.body.as_str()])).unwrap_or(Value::Null),
        attempts: r.attempts.iter().map(attempt_view).collect(),
    }
}

/// `GET /calls/{id}/deliveries`: the call's notifications and every attempt to deliver them.
#[utoipa::path(get, path = "/_switchboard/v1/calls/{id}/deliveries", tag = "calls",
    params(("id" = String, Path, description = "A call's id (live or ended)")),
    responses((status = 200, body = schema::DeliveriesLog),
              (status = 404, body = schema::ErrorResponse)))]
pub async fn deliveries(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = CallId::parse(&id).ok_or_else(ApiError::call_not_found)?;
    let log = state.engine.deliveries(id).await?;
    if log.records.is_empty() && log.pruned.is_none() {
        return Err(ApiError::call_not_found());
    }
    let body = schema::DeliveriesLog {
        call_id: id.to_string(),
        notifications: log.records.iter().map(delivery_view).collect(),
        // Said only when the retention policy removed some of this call's log.
        pruned: log.pruned.map(|p| schema::PrunedView {
            at: schema::time(p.at),
            notifications: p.notifications,
            message: format!(
                "{} delivered or dead notifications of this call were removed by the retention policy ([retention] in the configuration).",
                p.notifications
            ),
        }),
    };
    Ok(json_response(StatusCode::OK, &body))
}
