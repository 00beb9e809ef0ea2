//! Graph routes under `/v1.0` and `/beta`, for `/communications/calls` and the legacy
//! `/app/calls`. Segments and action names are case-insensitive and actions may be
//! namespace-qualified (`microsoft.graph.keepAlive`), so paths are parsed here by hand rather
//! than by the router.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::actions::{self, Action};
use super::calls;
use super::error::ApiError;
use super::participants::{self, ParticipantAction};
use crate::graph::call::Addressing;

/// A parsed Graph path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Calls,
    Call(String),
    CallAction(String, Action),
    Operation(String, String),
    Participants(String),
    Participant(String, String),
    Invite(String),
    ParticipantAction(String, String, ParticipantAction),
    /// A call's sub-resource that Graph has and Switchboard does not build yet.
    Unbuilt(String, Unbuilt),
}

/// What Graph serves that Switchboard answers with `501`, each with the one method Graph takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unbuilt {
    ListOperations,
    MuteAll,
    ConfigureMixer,
}

impl Unbuilt {
    fn what(self) -> &'static str {
        match self {
            Unbuilt::ListOperations => "Listing operations",
            Unbuilt::MuteAll => "The participants/muteAll action",
            Unbuilt::ConfigureMixer => "The participants/configureMixer action",
        }
    }
}

/// The methods a route answers to; every other method is `405` with these in `Allow`. `HEAD` is
/// answered wherever `GET` is, as HTTP wants.
pub fn allowed(route: &Route) -> &'static [Method] {
    const GET: &[Method] = &[Method::GET, Method::HEAD];
    const GET_DELETE: &[Method] = &[Method::GET, Method::HEAD, Method::DELETE];
    const POST: &[Method] = &[Method::POST];
    match route {
        Route::Calls | Route::CallAction(..) | Route::Invite(_) | Route::ParticipantAction(..) => {
            POST
        }
        Route::Call(_) | Route::Participant(..) => GET_DELETE,
        Route::Operation(..) | Route::Participants(_) => GET,
        Route::Unbuilt(_, Unbuilt::ListOperations) => GET,
        Route::Unbuilt(_, Unbuilt::MuteAll | Unbuilt::ConfigureMixer) => POST,
    }
}

/// A Graph path with the addressing it was reached by.
#[derive(Clone, Debug)]
pub struct Target {
    pub route: Route,
    pub version: &'static str,
    pub collection: &'static str,
}

impl Target {
    pub fn addressing(&self, public_url: &str) -> Addressing {
        Addressing {
            base: format!("{public_url}/{}", self.version),
            collection: self.collection,
        }
    }
}

/// Parses a path; `Err` carries the first segment that names nothing.
pub fn parse(path: &str) -> Result<Target, String> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let version = match segs.first().map(|s| s.to_ascii_lowercase()).as_deref() {
        Some("v1.0") => "v1.0",
        Some("beta") => "beta",
        _ => return Err(segs.first().copied().unwrap_or_default().to_string()),
    };
    let (collection, rest) = match segs.get(1..3) {
        Some([a, b])
            if a.eq_ignore_ascii_case("communications") && b.eq_ignore_ascii_case("calls") =>
        {
            ("communications/calls", &segs[3..])
        }
        Some([a, b]) if a.eq_ignore_ascii_case("app") && b.eq_ignore_ascii_case("calls") => {
            ("app/calls", &segs[3..])
        }
        _ => {
            let bad = segs.get(1).copied().unwrap_or_default();
            let bad =
                if bad.eq_ignore_ascii_case("communications") || bad.eq_ignore_ascii_case("app") {
                    segs.get(2).copied().unwrap_or(bad)
                } else {
                    bad
                };
            return Err(bad.to_string());
        }
    };
    let route = match rest {
        [] | [""] => Route::Calls,
        [id] => Route::Call(id.to_string()),
        [id, action] => {
            if let Some(a) = Action::parse(action) {
                Route::CallAction(id.to_string(), a)
            } else if action.eq_ignore_ascii_case("participants") {
                Route::Participants(id.to_string())
            } else if action.eq_ignore_ascii_case("operations") {
                Route::Unbuilt(id.to_string(), Unbuilt::ListOperations)
            } else {
                return Err(action.to_string());
            }
        }
        [id, sub, op] if sub.eq_ignore_ascii_case("operations") => {
            Route::Operation(id.to_string(), op.to_string())
        }
        [id, sub, pid] if sub.eq_ignore_ascii_case("participants") => {
            let name = pid.to_ascii_lowercase();
            match name.strip_prefix("microsoft.graph.").unwrap_or(&name) {
                "invite" => Route::Invite(id.to_string()),
                "muteall" => Route::Unbuilt(id.to_string(), Unbuilt::MuteAll),
                "configuremixer" => Route::Unbuilt(id.to_string(), Unbuilt::ConfigureMixer),
                _ => Route::Participant(id.to_string(), pid.to_string()),
            }
        }
        [id, sub, pid, action] if sub.eq_ignore_ascii_case("participants") => {
            match ParticipantAction::parse(action) {
                Some(a) => Route::ParticipantAction(id.to_string(), pid.to_string(), a),
                None => return Err(action.to_string()),
            }
        }
        [_, _, extra, ..] => return Err(extra.to_string()),
    };
    Ok(Target {
        route,
        version,
        collection,
    })
}

/// The fallback handler: every request that no other route took.
pub async fn dispatch(State(state): State<Arc<AppState>>, req: Request) -> Response {
    match route(state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn route(state: Arc<AppState>, req: Request) -> Result<Response, ApiError> {
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
            let body = calls::json_body(&state, &parts.headers, body).await?;
            calls::create_call(&state, &target, &principal, &app, body).await
        }
        Route::Call(id) if delete => calls::delete_call(&state, &app, id).await,
        Route::Call(id) => calls::get_call(&state, &target, &app, id).await,
        Route::CallAction(id, action) => {
            let body = calls::optional_json_body(&state, &parts.headers, body).await?;
            actions::run(&state, &target, &principal, &app, id, *action, body).await
        }
        Route::Operation(id, op) => actions::get_operation(&state, &target, &app, id, op).await,
        Route::Participants(id) => participants::list(&state, &target, &app, id).await,
        Route::Participant(id, pid) if delete => participants::remove(&state, &app, id, pid).await,
        Route::Participant(id, pid) => participants::get(&state, &target, &app, id, pid).await,
        Route::Invite(id) => {
            let body = calls::json_body(&state, &parts.headers, body).await?;
            participants::invite(&state, &target, &principal, &app, id, body).await
        }
        Route::ParticipantAction(id, pid, action) => {
            let body = calls::optional_json_body(&state, &parts.headers, body).await?;
            participants::act(&state, &target, &app, id, pid, *action, body).await
        }
        Route::Unbuilt(id, what) => {
            calls::owned_call(&state, &app, id).await?;
            Err(ApiError::not_implemented(what.what()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_in_any_case_on_both_prefixes_and_versions() {
        let t = parse("/V1.0/Communications/Calls").unwrap();
        assert_eq!(
            (t.route, t.version, t.collection),
            (Route::Calls, "v1.0", "communications/calls")
        );
        let t = parse("/beta/app/calls/ABC/microsoft.graph.KeepAlive").unwrap();
        assert_eq!(t.route, Route::CallAction("ABC".into(), Action::KeepAlive));
        assert_eq!((t.version, t.collection), ("beta", "app/calls"));
        let t = parse("/v1.0/communications/calls/x/playprompt").unwrap();
        assert_eq!(t.route, Route::CallAction("x".into(), Action::PlayPrompt));
    }

    #[test]
    fn unknown_segments_are_named() {
        assert_eq!(parse("/v2.0/communications/calls").unwrap_err(), "v2.0");
        assert_eq!(
            parse("/v1.0/communications/meetings").unwrap_err(),
            "meetings"
        );
        assert_eq!(
            parse("/v1.0/communications/calls/x/dance").unwrap_err(),
            "dance"
        );
        assert_eq!(parse("/v1.0/me").unwrap_err(), "me");
    }
}

#[cfg(test)]
mod property_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_path_parses_or_names_a_segment(
            segs in prop::collection::vec(prop::sample::select(vec![
                "v1.0", "BETA", "communications", "app", "calls", "keepAlive", "microsoft.graph.answer",
                "participants", "operations", "x", "", "57dab8b1-894c-409a-b240-bd8beae78896",
            ]), 0..7)
        ) {
            let path = format!("/{}", segs.join("/"));
            if let Ok(t) = parse(&path) {
                prop_assert!(t.version == "v1.0" || t.version == "beta");
            }
        }
    }
}
