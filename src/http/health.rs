//! Health and readiness: `GET /healthz` and `GET /readyz`, both answered from the store's health.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::RETRY_UNAVAILABLE_SECS;
use super::state::AppState;

/// `200 {"status": "ok"}` while Switchboard can take changes; `503` (with the reason) while its
/// store cannot write.
pub async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let health = state.engine.health();
    match health.failure() {
        None => axum::Json(json!({"status": "ok"})).into_response(),
        Some(f) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, RETRY_UNAVAILABLE_SECS.to_string())],
            axum::Json(json!({"status": "unavailable", "reason": format!("the store cannot write: {}", f.error)})),
        )
            .into_response(),
    }
}

/// `GET /readyz`: whether Switchboard is ready, and each check behind the answer.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let health = state.engine.health();
    let failure = health.failure();
    let store = match &failure {
        None => json!({"ready": true, "writable": true, "readable": true}),
        Some(f) => json!({
            "ready": false,
            "writable": false,
            "readable": health.readable(),
            "error": f.error,
            "since": f.since,
            "failedProbes": f.probes,
        }),
    };
    let ready = failure.is_none();
    let status = if ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({"ready": ready, "checks": {"store": store}})),
    )
        .into_response()
}
