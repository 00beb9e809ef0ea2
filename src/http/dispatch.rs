//! The Graph dispatcher: the router's fallback, which serves every Graph path. It parses the
//! path ([`super::route`]), authenticates the request, checks the method, builds the handlers'
//! context ([`GraphCall`]) and calls the handler the route names. It labels the response with the
//! route's name, for metrics.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::extract::{GraphCall, json_body, optional_json_body};
use super::route::{RequestFacts, Route, Target, allowed, parse};
use super::state::AppState;
use super::{actions, calls, participants, routing};
use crate::faults::ApiDraw;

/// The fallback handler: every request that no other route took.
///
/// Once the path is parsed, the response carries the route's name
/// ([`RouteName`](super::route::RouteName)) in its extensions, whatever the answer (a `401`, a
/// `405`, a handler's error): the label a layer around the router, such as a metrics middleware,
/// reads once the response is made. It cannot be in the request's extensions, where such a layer
/// finds axum's `MatchedPath`: the route is parsed only here, in the fallback, after every layer
/// has seen the request. A path that does not parse has no name.
pub async fn dispatch(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, body): (_, Body) = req.into_parts();
    let target = match parse(parts.uri.path()) {
        Ok(target) => target,
        Err(_) if parts.uri.path().trim_matches('/').is_empty() => {
            return ApiError::not_found(
                "Nothing is served at /; the calls API is at /v1.0/communications/calls.",
            )
            .into_response();
        }
        Err(seg) => {
            return ApiError::bad_request(format!("Resource not found for the segment '{seg}'."))
                .into_response();
        }
    };
    let name = target.route.name();
    let mut facts = RequestFacts {
        call_id: target.route.call_id().map(str::to_string),
        app_id: None,
    };
    let mut resp = match serve(state, &parts, body, target, &mut facts).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    if facts.call_id.is_none() {
        // A created call: its id is the end of the `Location` it answers with.
        facts.call_id = resp
            .headers()
            .get(axum::http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| l.rsplit('/').next())
            .map(str::to_string);
    }
    resp.extensions_mut().insert(name);
    resp.extensions_mut().insert(facts);
    resp
}

/// Authenticates the request, checks its method, and calls the handler its route names with the
/// [`GraphCall`] context.
async fn serve(
    state: Arc<AppState>,
    parts: &Parts,
    body: Body,
    target: Target,
    facts: &mut RequestFacts,
) -> Result<Response, ApiError> {
    let (principal, app) = state.authenticate(&parts.headers).await?;
    facts.app_id = Some(app.app_id.clone());
    let methods = allowed(&target.route);
    if !methods.contains(&parts.method) {
        let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
        return Err(ApiError::method_not_allowed(&names.join(", ")));
    }
    // Past this point the method is one of `allowed(route)`; `HEAD` is served as `GET` (hyper
    // sends no body with it).
    let draw = state.faults.api(&app.app_id, || fault_route(&target.route));
    let cx = GraphCall {
        state,
        target,
        principal,
        app,
    };
    let marked = |e: ApiError, d: ApiDraw| e.with_header(FAULT_HEADER, d.name());
    let resp = match draw {
        Some(d @ ApiDraw::Throttle { retry_after_secs }) => {
            return Err(marked(
                ApiError::throttled(retry_after_secs, "(an injected fault)"),
                d,
            ));
        }
        Some(d @ ApiDraw::Unavailable) => {
            return Err(marked(ApiError::unavailable(INJECTED), d));
        }
        Some(d @ ApiDraw::GatewayTimeout) => {
            let e = ApiError::new(StatusCode::GATEWAY_TIMEOUT, "gatewayTimeout", INJECTED);
            return Err(marked(e, d));
        }
        Some(ApiDraw::Latency(wait)) => {
            tokio::time::sleep(wait).await;
            handle(&cx, parts, body).await
        }
        Some(ApiDraw::CommitThenFail) | None => handle(&cx, parts, body).await,
    };
    match (draw, resp) {
        // It took effect; the client is told otherwise.
        (Some(d @ ApiDraw::CommitThenFail), Ok(_)) => Err(marked(
            ApiError::unavailable(
                "The service is temporarily unavailable (an injected fault: the request took effect).",
            ),
            d,
        )),
        (Some(d @ ApiDraw::Latency(_)), Ok(mut r)) => {
            r.headers_mut()
                .insert(FAULT_HEADER, axum::http::HeaderValue::from_static(d.name()));
            Ok(r)
        }
        (_, resp) => resp,
    }
}

/// The header that marks an answer an injected fault changed.
const FAULT_HEADER: axum::http::HeaderName =
    axum::http::HeaderName::from_static("switchboard-fault");

const INJECTED: &str = "The service is temporarily unavailable (an injected fault); retry later.";

/// What a fault rule's `route` names a route by: a call's action by its own name (`answer`,
/// `playPrompt`), a participant's likewise (`mute`), any other route by its name (`Calls`).
fn fault_route(route: &Route) -> String {
    match route {
        Route::CallAction(_, action) => format!("{action:?}"),
        Route::ParticipantAction(_, _, action) => format!("{action:?}"),
        other => other.name().0.to_string(),
    }
}

/// Calls the handler the route names.
async fn handle(cx: &GraphCall, parts: &Parts, body: Body) -> Result<Response, ApiError> {
    let delete = parts.method == Method::DELETE;
    let headers = &parts.headers;
    match &cx.target.route {
        Route::Calls => {
            let body = json_body(&cx.state, headers, body).await?;
            calls::create_call(cx, body).await
        }
        Route::Call(id) if delete => calls::delete_call(cx, id).await,
        Route::Call(id) => calls::get_call(cx, id).await,
        Route::CallAction(id, action) => {
            let body = optional_json_body(&cx.state, headers, body).await?;
            actions::run(cx, id, *action, body).await
        }
        Route::Operation(id, op) => actions::get_operation(cx, id, op).await,
        Route::Participants(id) => participants::list(cx, id).await,
        Route::Participant(id, pid) if delete => participants::remove(cx, id, pid).await,
        Route::Participant(id, pid) => participants::get(cx, id, pid).await,
        Route::Invite(id) => {
            let body = json_body(&cx.state, headers, body).await?;
            participants::invite(cx, id, body).await
        }
        Route::ParticipantAction(id, pid, action) => {
            let body = optional_json_body(&cx.state, headers, body).await?;
            participants::act(cx, id, pid, *action, body).await
        }
        Route::RoutingGroups(id) if parts.method == Method::POST => {
            let body = json_body(&cx.state, headers, body).await?;
            routing::create(cx, id, body).await
        }
        Route::RoutingGroups(id) => routing::list(cx, id).await,
        Route::RoutingGroup(id, gid) if delete => routing::delete(cx, id, gid).await,
        Route::RoutingGroup(id, gid) if parts.method == Method::PATCH => {
            let body = json_body(&cx.state, headers, body).await?;
            routing::update(cx, id, gid, body).await
        }
        Route::RoutingGroup(id, gid) => routing::get(cx, id, gid).await,
        Route::SharingSessions(id) => routing::sharing_sessions(cx, id).await,
        Route::SharingSession(id, sid) => routing::sharing_session(cx, id, sid).await,
        Route::Unbuilt(id, what) => {
            cx.owned_call(id).await?;
            Err(ApiError::not_implemented(what.what()))
        }
    }
}
