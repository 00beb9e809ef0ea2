//! The middleware around every route: request ids, the Graph error body, the request timeout.
//! (`drain` is the other one: what to do with a body a handler left unread.)

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::{ApiError, ErrorBody};
use super::state::AppState;

/// Request ids on every response, the Graph error body where a handler failed, and the request
/// timeout.
pub async fn request_context(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
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
