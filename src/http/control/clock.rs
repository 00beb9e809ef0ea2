//! The clock: read it, and move a virtual clock forward (running the timers that fall due).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::schema::{AdvanceRequest, ClockView, ErrorResponse};

use super::read_json;
use crate::clock::ClockError;
use crate::http::error::ApiError;
use crate::http::respond::json_response;
use crate::http::state::AppState;

/// `GET /clock`: the time now, and whether the clock is virtual.
#[utoipa::path(get, path = "/_switchboard/v1/clock", tag = "clock",
    responses((status = 200, body = ClockView)))]
pub async fn get_clock(State(state): State<Arc<AppState>>) -> Response {
    let clock = state.engine.clock();
    json_response(
        StatusCode::OK,
        &ClockView {
            now: super::schema::time(clock.now()),
            r#virtual: clock.is_virtual(),
            settled: None,
        },
    )
}

/// How long `settle` waits for deliveries at most: 60 s, and less than the request timeout, so
/// that the answer says why.
fn settle_within(request_timeout_secs: u64) -> std::time::Duration {
    std::time::Duration::from_secs(60.min(request_timeout_secs.saturating_sub(2).max(1)))
}

/// `POST /clock/advance {"seconds", "settle"}`: moves a virtual clock, running the timers due;
/// with `settle`, answers once every notification due by the new time had its attempt.
#[utoipa::path(post, path = "/_switchboard/v1/clock/advance", tag = "clock",
    request_body = AdvanceRequest,
    responses((status = 200, body = ClockView),
              (status = 400, body = ErrorResponse),
              (status = 409, description = "The clock is real", body = ErrorResponse),
              (status = 504, description = "With settle: notifications were still being attempted after 60 s (or 2 s less than the request timeout)", body = ErrorResponse)))]
pub async fn advance_clock(
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
    let settle = match &body["settle"] {
        Value::Null => false,
        Value::Bool(b) => *b,
        _ => return Err(ApiError::bad_request("'settle' must be true or false.")),
    };
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
    let mut body = ClockView {
        now: super::schema::time(now),
        r#virtual: true,
        settled: None,
    };
    if settle {
        let within = settle_within(state.settings.limits.request_timeout_secs);
        let settled = state.engine.settle_deliveries(within).await?;
        if !settled {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "settleTimeout",
                format!(
                    "The clock moved, but notifications were still being attempted after {} s.",
                    within.as_secs()
                ),
            ));
        }
        body.settled = Some(true);
    }
    Ok(json_response(StatusCode::OK, &body))
}
