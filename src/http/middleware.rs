//! The middleware around every route: request ids, the Graph error body, the request timeout, and
//! what each request tells the operator (its metrics, and for a Graph request its log line).
//! (`drain` is the other one: what to do with a body a handler left unread.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::{ApiError, ErrorBody};
use super::route::{RequestFacts, RouteName};
use super::state::AppState;

/// Request ids on every response, the Graph error body where a handler failed, the request
/// timeout, the request's metrics and, for a Graph request, one log line.
pub async fn request_context(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let matched = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    // A Graph path (no router entry took it), read again below if the dispatcher never
    // labelled the answer (the request timed out).
    let graph_uri = matched.is_none().then(|| req.uri().clone());
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
    if let Some(uri) = graph_uri
        && resp.extensions().get::<RouteName>().is_none()
        && let Ok(target) = super::route::parse(uri.path())
    {
        let route = target.route;
        let facts = RequestFacts {
            call_id: route.call_id().map(str::to_string),
            app_id: None,
        };
        resp.extensions_mut().insert(route.name());
        resp.extensions_mut().insert(facts);
    }
    observe(
        &state,
        &resp,
        &method,
        matched,
        &request_id,
        started.elapsed(),
    );
    resp
}

/// Counts the request, and writes a Graph request's log line (the parsed route, never the path
/// with its ids, never a header: no token reaches the log).
fn observe(
    state: &AppState,
    resp: &Response,
    method: &Method,
    matched: Option<String>,
    request_id: &str,
    took: Duration,
) {
    let status = resp.status().as_u16();
    let graph = resp.extensions().get::<RouteName>();
    let route = match (graph, &matched) {
        (Some(name), _) => name.0,
        (None, Some(path)) => path.as_str(),
        (None, None) => "unmatched",
    };
    state
        .engine
        .metrics()
        .request(route, method.as_str(), status, took);
    if graph.is_some() {
        let facts = resp.extensions().get::<RequestFacts>();
        let call_id = facts.and_then(|f| f.call_id.as_deref()).unwrap_or("-");
        let app_id = facts.and_then(|f| f.app_id.as_deref()).unwrap_or("-");
        tracing::info!(
            target: "switchboard::request",
            method = %method,
            route,
            status,
            latency_ms = took.as_secs_f64() * 1000.0,
            call_id,
            app_id,
            request_id,
            "graph request"
        );
    }
}
