//! The Graph path grammar: what a path under `/v1.0` or `/beta` names, for
//! `/communications/calls` and the legacy `/app/calls`. Segments and action names are
//! case-insensitive and actions may be namespace-qualified (`microsoft.graph.keepAlive`), so paths
//! are parsed here by hand rather than by the router; [`super::dispatch`] serves what they name.

use axum::http::Method;

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
    /// `audioRoutingGroups` of a call, and one of them.
    RoutingGroups(String),
    RoutingGroup(String, String),
    /// `contentSharingSessions` of a call, and one of them.
    SharingSessions(String),
    SharingSession(String, String),
    /// A call's sub-resource that Graph has and Switchboard does not build yet.
    Unbuilt(String, Unbuilt),
}

/// A route's name without its ids (the [`Route`] variant's name, such as `CallAction`): a label
/// with few values, for metrics. [`super::dispatch::dispatch`] puts it in the extensions of every
/// response to a path that parses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteName(pub &'static str);

/// What a Graph request's log line says beyond the route: the call it named, the app it was
/// authenticated as. [`super::dispatch::dispatch`] puts it in the response's extensions.
#[derive(Clone, Debug, Default)]
pub struct RequestFacts {
    pub call_id: Option<String>,
    pub app_id: Option<String>,
}

impl Route {
    /// The call id the path names, as written.
    pub fn call_id(&self) -> Option<&str> {
        match self {
            Route::Calls => None,
            Route::Call(id)
            | Route::CallAction(id, _)
            | Route::Operation(id, _)
            | Route::Participants(id)
            | Route::Participant(id, _)
            | Route::Invite(id)
            | Route::ParticipantAction(id, _, _)
            | Route::RoutingGroups(id)
            | Route::RoutingGroup(id, _)
            | Route::SharingSessions(id)
            | Route::SharingSession(id, _)
            | Route::Unbuilt(id, _) => Some(id),
        }
    }

    /// This route's [`RouteName`].
    pub fn name(&self) -> RouteName {
        RouteName(match self {
            Route::Calls => "Calls",
            Route::Call(_) => "Call",
            Route::CallAction(..) => "CallAction",
            Route::Operation(..) => "Operation",
            Route::Participants(_) => "Participants",
            Route::Participant(..) => "Participant",
            Route::Invite(_) => "Invite",
            Route::ParticipantAction(..) => "ParticipantAction",
            Route::RoutingGroups(_) => "AudioRoutingGroups",
            Route::RoutingGroup(..) => "AudioRoutingGroup",
            Route::SharingSessions(_) => "ContentSharingSessions",
            Route::SharingSession(..) => "ContentSharingSession",
            Route::Unbuilt(..) => "Unbuilt",
        })
    }
}

/// What Graph serves that Switchboard answers with `501`, each with the one method Graph takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unbuilt {
    ListOperations,
    MuteAll,
    ConfigureMixer,
}

impl Unbuilt {
    /// What the `501` says is not built.
    pub fn what(self) -> &'static str {
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
        Route::SharingSessions(_) | Route::SharingSession(..) => GET,
        Route::RoutingGroups(_) => &[Method::GET, Method::HEAD, Method::POST],
        Route::RoutingGroup(..) => &[Method::GET, Method::HEAD, Method::PATCH, Method::DELETE],
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
            } else if action.eq_ignore_ascii_case("audioRoutingGroups") {
                Route::RoutingGroups(id.to_string())
            } else if action.eq_ignore_ascii_case("contentSharingSessions") {
                Route::SharingSessions(id.to_string())
            } else if action.eq_ignore_ascii_case("operations") {
                Route::Unbuilt(id.to_string(), Unbuilt::ListOperations)
            } else {
                return Err(action.to_string());
            }
        }
        [id, sub, gid] if sub.eq_ignore_ascii_case("audioRoutingGroups") => {
            Route::RoutingGroup(id.to_string(), gid.to_string())
        }
        [id, sub, sid] if sub.eq_ignore_ascii_case("contentSharingSessions") => {
            Route::SharingSession(id.to_string(), sid.to_string())
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

/// The actions of the Graph surface on a call, with their Graph names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    KeepAlive,
    Answer,
    Reject,
    Redirect,
    Transfer,
    PlayPrompt,
    RecordResponse,
    CancelMediaProcessing,
    SubscribeToTone,
    SendDtmfTones,
    Mute,
    Unmute,
    UpdateRecordingStatus,
    ChangeScreenSharingRole,
    /// Known to Graph, not built yet.
    AddLargeGalleryView,
}

impl Action {
    /// Reads an action name in any case, namespace-qualified or not.
    pub fn parse(segment: &str) -> Option<Action> {
        let lower = segment.to_ascii_lowercase();
        let name = lower.strip_prefix("microsoft.graph.").unwrap_or(&lower);
        Some(match name {
            "keepalive" => Action::KeepAlive,
            "answer" => Action::Answer,
            "reject" => Action::Reject,
            "redirect" => Action::Redirect,
            "transfer" => Action::Transfer,
            "playprompt" => Action::PlayPrompt,
            "recordresponse" | "record" => Action::RecordResponse,
            "cancelmediaprocessing" => Action::CancelMediaProcessing,
            "subscribetotone" => Action::SubscribeToTone,
            "senddtmftones" => Action::SendDtmfTones,
            "mute" => Action::Mute,
            "unmute" => Action::Unmute,
            "updaterecordingstatus" => Action::UpdateRecordingStatus,
            "changescreensharingrole" => Action::ChangeScreenSharingRole,
            "addlargegalleryview" => Action::AddLargeGalleryView,
            _ => return None,
        })
    }
}

/// Actions on one participant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParticipantAction {
    Mute,
    /// Let a participant in from the lobby (beta).
    Admit,
    StartHoldMusic,
    StopHoldMusic,
}

impl ParticipantAction {
    /// Reads an action name in any case, namespace-qualified or not.
    pub fn parse(segment: &str) -> Option<Self> {
        let lower = segment.to_ascii_lowercase();
        match lower.strip_prefix("microsoft.graph.").unwrap_or(&lower) {
            "mute" => Some(ParticipantAction::Mute),
            "admit" => Some(ParticipantAction::Admit),
            "startholdmusic" => Some(ParticipantAction::StartHoldMusic),
            "stopholdmusic" => Some(ParticipantAction::StopHoldMusic),
            _ => None,
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
        assert_eq!(t.route.name(), RouteName("CallAction"));
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
