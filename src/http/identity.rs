//! The token authority and the metadata documents:
//! - `POST /{tenant}/oauth2/v2.0/token`: client-credentials tokens, errors as Entra writes them,
//!   wrong secrets throttled (`throttle`);
//! - `/{tenant}/v2.0/.well-known/openid-configuration` and `/{tenant}/discovery/v2.0/keys`;
//! - `/v1/.well-known/OpenIdConfiguration` and `/v1/keys`: the keys that sign notifications.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use super::extract::{PeerAddr, read_body};
use super::state::AppState;
use crate::auth::tokens::{APP_TOKEN_LIFETIME_SECS, issue_app_token};

const GRAPH_SCOPES: [&str; 2] = [
    "https://graph.microsoft.com/.default",
    "00000003-0000-0000-c000-000000000000/.default",
];

/// An error as Entra writes it.
fn entra_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let trace_id = uuid::Uuid::new_v4().to_string();
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let now = chrono::Utc::now();
    let body = json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {description} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {}",
            now.format("%Y-%m-%d %H:%M:%SZ")
        ),
        "error_codes": [code],
        "timestamp": now.format("%Y-%m-%d %H:%M:%SZ").to_string(),
        "trace_id": trace_id,
        "correlation_id": correlation_id,
    });
    no_store(status, &body)
}

fn no_store(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// The answer to a locked-out client id or peer (`throttle`): Entra answers a throttled
/// client-credentials request with `429` and `Retry-After`; the body is its usual error body.
fn too_many_failures(wait: std::time::Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut resp = entra_error(
        StatusCode::TOO_MANY_REQUESTS,
        "temporarily_unavailable",
        50196,
        &format!(
            "Too many failed client authentication attempts; requests for this client or from this address are refused for {secs} more seconds."
        ),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    resp
}

/// Client id and secret from HTTP Basic, if given.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let raw = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = raw.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let dec = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((dec(id), dec(secret)))
}

pub async fn token(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let peer = peer.map(|Extension(PeerAddr(a))| a.ip());
    let bad = |error, code, desc: &str| entra_error(StatusCode::BAD_REQUEST, error, code, desc);
    let Ok(bytes) = read_body(body, 64 * 1024).await else {
        return bad(
            "invalid_request",
            900144,
            "The request body is too large or unreadable.",
        );
    };
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&bytes).into_owned().collect();
    let Some(grant) = form.get("grant_type") else {
        return bad(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        );
    };
    if grant != "client_credentials" {
        return bad(
            "unsupported_grant_type",
            70003,
            &format!(
                "The app requested an unsupported grant type '{grant}'; only client_credentials is supported."
            ),
        );
    }
    let tenant_known = state
        .settings
        .apps
        .iter()
        .any(|a| a.tenant_id.eq_ignore_ascii_case(&tenant));
    if !tenant_known {
        return bad(
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    let (client_id, secret) = match (form.get("client_id"), form.get("client_secret")) {
        (Some(id), Some(s)) => (id.clone(), s.clone()),
        _ => match basic_credentials(&headers) {
            Some(c) => c,
            None => {
                return bad(
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'client_id' and 'client_secret' (or HTTP Basic credentials).",
                );
            }
        },
    };
    let unauthorized =
        |code, desc: &str| entra_error(StatusCode::UNAUTHORIZED, "invalid_client", code, desc);
    let app = state
        .app(&client_id)
        .filter(|a| a.tenant_id.eq_ignore_ascii_case(&tenant));
    let throttle = &state.secret_throttle;
    let known_id = app.map(|a| a.app_id.as_str());
    if let Some(wait) = throttle.locked(known_id, peer, Instant::now()) {
        return too_many_failures(wait);
    }
    let Some(app) = app else {
        throttle.failed(None, peer, Instant::now());
        return unauthorized(
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
            ),
        );
    };
    if !app.client_secret.matches(&secret) {
        throttle.failed(Some(&app.app_id), peer, Instant::now());
        return unauthorized(
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                app.app_id
            ),
        );
    }
    let scope = form.get("scope").map(|s| s.trim()).unwrap_or_default();
    if !GRAPH_SCOPES.iter().any(|s| s.eq_ignore_ascii_case(scope)) {
        return bad(
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope '{scope}' is not valid. This authority issues tokens for Microsoft Graph only: use scope=https://graph.microsoft.com/.default."
            ),
        );
    }
    throttle.succeeded(&app.app_id, peer, Instant::now());
    let token = issue_app_token(&state.keys.read().expect("key ring lock"), app);
    no_store(
        StatusCode::OK,
        &json!({
            "token_type": "Bearer",
            "expires_in": APP_TOKEN_LIFETIME_SECS,
            "ext_expires_in": APP_TOKEN_LIFETIME_SECS,
            "access_token": token,
        }),
    )
}

pub async fn openid_configuration(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
) -> Response {
    let base = &state.public_url;
    let body = json!({
        // MSAL (Python, Node) refuses metadata without it, though a client-credentials flow
        // never goes there; Switchboard answers it 404.
        "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("https://login.microsoftonline.com/{tenant}/v2.0"),
        "access_token_issuer": crate::auth::tokens::sts_issuer(&tenant),
        "request_uri_parameter_supported": false,
        "tenant_region_scope": null,
        "cloud_instance_name": "microsoftonline.com",
        "grant_types_supported": ["client_credentials"],
    });
    no_store(StatusCode::OK, &body)
}

pub async fn keys(State(state): State<Arc<AppState>>) -> Response {
    let jwks = state.keys.read().expect("key ring lock").jwks();
    no_store(StatusCode::OK, &jwks)
}

/// The document bots read (at `api.aps.skype.com` in production) to validate notifications.
pub async fn notification_metadata(State(state): State<Arc<AppState>>) -> Response {
    let body = json!({
        "issuer": state.settings.notifications.issuer,
        "authorization_endpoint": format!("{}/v1/authorize", state.public_url),
        "jwks_uri": format!("{}/v1/keys", state.public_url),
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
    });
    no_store(StatusCode::OK, &body)
}
