//! The Graph dispatcher: the router's fallback, which serves every Graph path. It parses the
//! path ([`super::route`]), authenticates the request, checks the method and calls the handler the
//! route names.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use super::extract::{json_body, optional_json_body, owned_call};
use super::route::{Route, allowed, parse};
use super::{actions, calls, participants};

/// The fallback handler: every request that no other route took.
pub async fn dispatch(State(state): State<Arc<AppState>>, req: Request) -> Response {
    match serve(state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn serve(state: Arc<AppState>, req: Request) -> Result<Response, ApiError> {
    let (parts, body): (_, Body) = req.into_parts();
    let target = parse(parts.uri.path()).map_err(|seg| {
        if parts.uri.path().trim_matches('/').is_empty() {
            ApiError::not_found(
                "Nothing is served at /; the calls API is at /v1.0/communications/calls.",
            )
        } else {
            ApiError::bad_request(format!("Resource not found for the segment '{seg}'."))
        }
    })?;
    let (principal, app) = state.authenticate(&parts.headers).await?;
    let methods = allowed(&target.route);
    if !methods.contains(&parts.method) {
        let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
        return Err(ApiError::method_not_allowed(&names.join(", ")));
    }
    // Past this point the method is one of `allowed(route)`; `HEAD` is served as `GET` (hyper
    // sends no body with it).
    let delete = parts.method == Method::DELETE;
    match &target.route {
        Route::Calls => {
            let body = json_body(&state, &parts.headers, body).await?;
            calls::create_call(&state, &target, &principal, &app, body).await
        }
        Route::Call(id) if delete => calls::delete_call(&state, &app, id).await,
        Route::Call(id) => calls::get_call(&state, &target, &app, id).await,
        Route::CallAction(id, action) => {
            let body = optional_json_body(&state, &parts.headers, body).await?;
            actions::run(&state, &target, &principal, &app, id, *action, body).await
        }
        Route::Operation(id, op) => actions::get_operation(&state, &target, &app, id, op).await,
        Route::Participants(id) => participants::list(&state, &target, &app, id).await,
        Route::Participant(id, pid) if delete => participants::remove(&state, &app, id, pid).await,
        Route::Participant(id, pid) => participants::get(&state, &target, &app, id, pid).await,
        Route::Invite(id) => {
            let body = json_body(&state, &parts.headers, body).await?;
            participants::invite(&state, &target, &principal, &app, id, body).await
        }
        Route::ParticipantAction(id, pid, action) => {
            let body = optional_json_body(&state, &parts.headers, body).await?;
            participants::act(&state, &target, &app, id, pid, *action, body).await
        }
        Route::Unbuilt(id, what) => {
            owned_call(&state, &app, id).await?;
            Err(ApiError::not_implemented(what.what()))
        }
    }
}
