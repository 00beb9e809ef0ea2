//! The HTTP layer: one listener answers for the three hosts a bot talks to (Graph, the token
//! authority, the notification-signing metadata) and for the control API.
//!
//! - [`route`]: the Graph path grammar (`/v1.0` and `/beta` paths, parsed case-insensitively);
//! - [`dispatch`]: the Graph dispatcher, the router's fallback (`crate::graph` is the wire format);
//! - [`calls`]: the call handlers;
//! - [`identity`]: the token endpoint and the metadata documents;
//! - [`throttle`]: the token endpoint's throttling of wrong client secrets;
//! - [`control`]: `/_switchboard/v1`, the emulator's control API;
//! - [`error`]: the one error type, rendered as Graph's error body;
//! - `drain`: `Connection: close` when a request body was left unread.

pub mod actions;
pub mod calls;
pub mod control;
pub mod dispatch;
mod drain;
pub mod error;
pub mod extract;
pub mod identity;
mod participants;
pub mod respond;
pub mod route;
pub mod throttle;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::auth::{AuthError, KeyRing, Principal, Validator};
use crate::config::{AppConfig, Settings};
use crate::engine::{AppRef, Engine};
use error::{ApiError, ErrorBody};

/// Everything a handler may need.
pub struct AppState {
    pub engine: Arc<Engine>,
    pub validator: Validator,
    pub keys: Arc<RwLock<KeyRing>>,
    pub settings: Settings,
    /// Base URL for Location headers, contexts and metadata, without a trailing slash.
    pub public_url: String,
    /// The client for fetching prompt files (`net_policy::Outbound::fetches`: redirects are
    /// followed, each hop and every address checked by the callback policy).
    pub http: reqwest::Client,
    /// How long prompts play (fetching them within the `[media]` limits).
    pub prompts: crate::prompts::Prompts,
    /// Failed client-secret attempts at the token endpoint.
    pub secret_throttle: throttle::SecretThrottle,
    apps: HashMap<String, AppConfig>,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// The peer address of a connection, put into every request by the server loop.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

impl PeerAddr {
    /// Whether the peer is on this host. On a `[::]` listener an IPv4 client arrives as
    /// `::ffff:127.0.0.1`, which is loopback too.
    pub fn is_loopback(&self) -> bool {
        self.0.ip().to_canonical().is_loopback()
    }
}

impl AppState {
    pub fn new(
        engine: Arc<Engine>,
        validator: Validator,
        keys: Arc<RwLock<KeyRing>>,
        settings: Settings,
        public_url: String,
        http: reqwest::Client,
        prompts: crate::prompts::Prompts,
    ) -> Self {
        let apps = settings
            .apps
            .iter()
            .map(|a| (a.app_id.to_ascii_lowercase(), a.clone()))
            .collect();
        let secret_throttle = throttle::SecretThrottle::new(settings.token_throttle.clone());
        AppState {
            secret_throttle,
            engine,
            validator,
            keys,
            settings,
            public_url: public_url.trim_end_matches('/').to_string(),
            http,
            prompts,
            apps,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn app(&self, app_id: &str) -> Option<&AppConfig> {
        self.apps.get(&app_id.to_ascii_lowercase())
    }

    /// Checks the bearer token of a Graph request, that its app is registered here, and the
    /// app's request rate.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<(Principal, AppRef), ApiError> {
        let raw = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let token = match raw.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t,
            _ if raw.is_empty() => "",
            _ => "\u{0}",
        };
        let principal = self
            .validator
            .validate(token)
            .await
            .map_err(|e| ApiError::unauthorized(&e))?;
        let Some(app) = self.app(&principal.app_id) else {
            return Err(ApiError::forbidden(
                "7503",
                "Application is not registered in our store.",
            ));
        };
        // An app token speaks for its app in the app's own tenant only.
        if !principal.tenant_id.eq_ignore_ascii_case(&app.tenant_id) {
            return Err(ApiError::unauthorized(&AuthError::TenantMismatch));
        }
        if let Some(rate) = app.requests_per_second {
            self.take_request_token(&app.app_id, rate)?;
        }
        let app_ref = AppRef {
            app_id: app.app_id.clone(),
            tenant_id: principal.tenant_id.clone(),
            display_name: app.display_name.clone(),
            max_concurrent_calls: app.max_concurrent_calls,
        };
        Ok((principal, app_ref))
    }

    /// A token bucket per app, one second deep.
    fn take_request_token(&self, app_id: &str, rate: f64) -> Result<(), ApiError> {
        let mut buckets = self.buckets.lock().expect("buckets lock");
        let now = Instant::now();
        let (tokens, at) = buckets
            .entry(app_id.to_string())
            .or_insert((rate.max(1.0), now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(rate.max(1.0));
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(ApiError::throttled(
                (1.0 - *tokens) / rate,
                &format!("The application is limited to {rate} requests per second."),
            ))
        }
    }
}

/// Request ids on every response, the Graph error body where a handler failed, and the request
/// timeout.
async fn request_context(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_request_id = req
        .headers()
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 200)
        .map(str::to_string)
        .unwrap_or_else(|| request_id.clone());
    let timeout = Duration::from_secs(state.settings.limits.request_timeout_secs.max(1));
    let mut resp = match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "requestTimeout",
            "The request took too long and was abandoned.",
        )
        .into_response(),
    };
    if let Some(err) = resp.extensions_mut().remove::<ErrorBody>() {
        let mut inner = serde_json::Map::new();
        inner.insert(
            "date".into(),
            json!(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string()),
        );
        inner.insert("request-id".into(), json!(request_id));
        inner.insert("client-request-id".into(), json!(client_request_id));
        for (k, v) in err.inner {
            inner.insert(k, v);
        }
        let body =
            json!({"error": {"code": err.code, "message": err.message, "innerError": inner}});
        let (mut parts, _) = resp.into_parts();
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        parts.headers.remove(header::CONTENT_LENGTH);
        resp = Response::from_parts(parts, Body::from(body.to_string()));
    }
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&client_request_id) {
        h.insert("client-request-id", v);
    }
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("private"));
    resp
}

/// `GET /recordings/{opId}.wav` with the operation's `recordingAccessToken` as bearer.
async fn recording(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(file): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let op_id = file.strip_suffix(".wav").unwrap_or(&file);
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string());
    let Some(rec) = state.engine.recording(op_id).await else {
        return Err(ApiError::not_found(
            "No such recording; recordings are kept while the server runs.",
        ));
    };
    let token = crate::config::Secret::new(rec.access_token.clone());
    if !presented.is_some_and(|p| token.matches(&p)) {
        return Err(ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "A recording is fetched with its recordingAccessToken as bearer token.",
        )
        .with_header(header::WWW_AUTHENTICATE, "Bearer"));
    }
    let from_file = match &rec.source_wav {
        Some(path) => match state.prompts.read_operator_file(Path::new(path)).await {
            Ok(b) => crate::media::recording_from_wav(&b, rec.length_ms),
            Err(e) => {
                tracing::warn!("record_wav {path}: {e}; the recording is generated tones");
                None
            }
        },
        None => None,
    };
    let wav = from_file
        .unwrap_or_else(|| crate::media::recording_wav(rec.length_ms, rec.speech_ms, rec.beep));
    let mut resp = (axum::http::StatusCode::OK, wav).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(resp)
}

/// `200 {"status": "ok"}` while Switchboard can take changes; `503` (with the reason) while its
/// store cannot write.
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let health = state.engine.health();
    match health.failure() {
        None => axum::Json(json!({"status": "ok"})).into_response(),
        Some(f) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, error::RETRY_UNAVAILABLE_SECS.to_string())],
            axum::Json(json!({"status": "unavailable", "reason": format!("the store cannot write: {}", f.error)})),
        )
            .into_response(),
    }
}

/// `GET /readyz`: whether Switchboard is ready, and each check behind the answer.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
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

/// The whole router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
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
        .route("/recordings/{file}", get(recording))
        .nest("/_switchboard/v1", control::router(state.clone()))
        .fallback(dispatch::dispatch)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_context,
        ))
        .layer(middleware::from_fn(drain::middleware))
        .with_state(state)
}
