//! The control API (`/_switchboard/v1`): drive simulated parties, inject failures, read the
//! deliveries log, move the virtual clock. It needs the configured admin token; with none
//! configured, only loopback clients are served. App tokens are never accepted.
//!
//! This file holds the router, the admin guard and what the resources share; one file per
//! resource: [`parties`], [`calls`] (failures and the deliveries log), [`meetings`], [`clock`].

pub mod calls;
pub mod clock;
pub mod faults;
pub mod meetings;
pub mod openapi;
pub mod parties;
pub mod schema;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;

use super::error::ApiError;
use super::extract::{PeerAddr, read_body};
use super::state::AppState;
use crate::config::Settings;

/// Lets a request through with the admin token as bearer, or, with no admin token configured,
/// from a loopback peer that presents no token.
pub(super) async fn guard(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
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

/// Reads a control request's JSON body. Unlike Graph routes, any content type is taken: the
/// control API is ours, and `curl -d` sends JSON labelled as a form.
async fn read_json(state: &AppState, req: Request) -> Result<Value, ApiError> {
    let body = req.into_body();
    let bytes = read_body(body, state.settings.limits.max_body_bytes).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!("The request body must be a JSON object. ({e})"))
    })
}

/// `POST /reset`: back to a fresh start with the same configuration (the clock stays; the
/// faults are the configured ones again).
#[utoipa::path(post, path = "/_switchboard/v1/reset", tag = "server",
    responses((status = 200, body = schema::Reset),
              (status = 503, description = "The store cannot write now", body = schema::ErrorResponse)))]
pub async fn reset(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    state.engine.reset().await?;
    state.parties.reset();
    state.faults.reset();
    let now = state.engine.clock().now();
    Ok(crate::http::respond::json_response(
        StatusCode::OK,
        &schema::Reset {
            reset: true,
            now: schema::time(now),
        },
    ))
}

/// `GET /metrics` (outside `/_switchboard/v1`, behind the same guard): the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "server",
    responses((status = 200, description = "The Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let body = state.engine.render_metrics().await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// `GET /_switchboard/v1/ca.pem` (open to any client: it is public): the local certificate
/// authority that issued the listener's certificate, for a bot's machine to trust.
#[utoipa::path(get, path = "/_switchboard/v1/ca.pem", tag = "server",
    responses((status = 200, description = "The authority's certificate (PEM)", content_type = "application/x-pem-file", body = String),
              (status = 404, description = "The certificate is `[tls] cert_file`: no local authority", body = schema::ErrorResponse)))]
pub async fn ca_pem(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let pem = state.ca_pem.clone().ok_or_else(|| {
        ApiError::not_found(
            "This server's certificate is [tls] cert_file; there is no local authority to trust.",
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response())
}

/// The control API's routes, behind the guard (`ca.pem` is open).
pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    let open = Router::new().route("/ca.pem", get(ca_pem));
    Router::new()
        .route("/parties", get(parties::list_parties))
        .route("/parties/{id}", get(parties::get_party))
        .route("/parties/{id}/hangup", post(parties::hang_up_party))
        .route("/parties/{id}/dial", post(parties::dial))
        .route("/parties/{id}/tones", post(parties::tones))
        .route("/meetings/{id}", get(meetings::get_meeting))
        .route("/calls", get(calls::list_calls))
        .route("/calls/{id}/fail", post(calls::fail_call))
        .route("/calls/{id}/deliveries", get(calls::deliveries))
        .route(
            "/calls/{id}/deliveries/{sequence}/redeliver",
            post(calls::redeliver),
        )
        .route("/reset", post(reset))
        .route("/faults", get(faults::get_faults).put(faults::put_faults))
        .route("/openapi.json", get(openapi::document))
        .route("/clock", get(clock::get_clock))
        .route("/clock/advance", post(clock::advance_clock))
        .fallback(|| async { ApiError::not_found("No such control API route.") })
        .layer(middleware::from_fn_with_state(state, guard))
        .merge(open)
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
