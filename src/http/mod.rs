//! The HTTP layer: one listener answers for the three hosts a bot talks to (Graph, the token
//! authority, the notification-signing metadata) and for the control API. This file is the
//! router; each concern has its own file:
//!
//! - [`state`]: [`AppState`], what every handler shares, and the authentication of Graph requests;
//! - [`middleware`]: request ids, the Graph error body, the request timeout; `drain`:
//!   `Connection: close` when a request body was left unread;
//! - [`route`]: the Graph path grammar (`/v1.0` and `/beta` paths, parsed case-insensitively);
//! - [`dispatch`]: the Graph dispatcher, the router's fallback (`crate::graph` is the wire format);
//! - [`extract`] and [`respond`]: what handlers read from a request (the Graph handlers' context,
//!   bodies, fields) and how they answer, shared so that handler files never import each other;
//! - [`calls`], [`actions`], `participants`, `routing` (audio routing groups, content sharing):
//!   the Graph handlers;
//! - [`identity`]: the token endpoint and the metadata documents; [`throttle`]: its throttling of
//!   wrong client secrets;
//! - [`recordings`]: recording downloads; [`health`]: `/healthz` and `/readyz`;
//! - [`control`]: `/_switchboard/v1`, the emulator's control API;
//! - [`error`]: the one error type, rendered as Graph's error body.

pub mod actions;
pub mod calls;
pub mod control;
pub mod dispatch;
mod drain;
pub mod error;
pub mod extract;
pub mod health;
pub mod identity;
pub mod middleware;
mod participants;
pub mod recordings;
pub mod respond;
pub mod route;
mod routing;
pub mod state;
pub mod throttle;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

pub use extract::PeerAddr;
pub use state::AppState;

/// The whole router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/{tenant}/oauth2/v2.0/token", post(identity::token))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(identity::openid_configuration),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(identity::keys))
        .route("/{tenant}/discovery/keys", get(identity::keys))
        .route(
            "/v1/.well-known/OpenIdConfiguration",
            get(identity::notification_metadata),
        )
        .route("/v1/keys", get(identity::keys))
        .route("/recordings/{file}", get(recordings::get_recording))
        .route(
            "/metrics",
            get(control::metrics).route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                control::guard,
            )),
        )
        .nest("/_switchboard/v1", control::router(state.clone()))
        .fallback(dispatch::dispatch)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::request_context,
        ))
        .layer(axum::middleware::from_fn(drain::middleware))
        .with_state(state)
}
