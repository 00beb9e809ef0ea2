//! Faults on demand: read the rules in force, or replace them (`[faults]` in the configuration
//! holds the ones a reset brings back).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::read_json;
use super::schema::ErrorResponse;
use crate::faults::FaultSettings;
use crate::http::error::ApiError;
use crate::http::respond::json_response;
use crate::http::state::AppState;

/// `GET /faults`: the fault rules in force, with the seed their choices are drawn from.
#[utoipa::path(get, path = "/_switchboard/v1/faults", tag = "faults",
    responses((status = 200, body = FaultSettings)))]
pub async fn get_faults(State(state): State<Arc<AppState>>) -> Response {
    json_response(StatusCode::OK, &state.faults.current())
}

/// `PUT /faults`: replaces the fault rules (and starts their random choices again from `seed`).
#[utoipa::path(put, path = "/_switchboard/v1/faults", tag = "faults",
    request_body = FaultSettings,
    responses((status = 200, body = FaultSettings),
              (status = 400, body = ErrorResponse)))]
pub async fn put_faults(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, ApiError> {
    let body = read_json(&state, req).await?;
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "The body must be an object of fault rules ({} clears them).",
        ));
    }
    let settings: FaultSettings = serde_json::from_value(body)
        .map_err(|e| ApiError::bad_request(format!("Not a set of fault rules: {e}.")))?;
    if let Some(why) = settings.problem() {
        return Err(ApiError::bad_request(format!("{why}.")));
    }
    Ok(json_response(
        StatusCode::OK,
        &state.faults.replace(settings),
    ))
}
