//! A call's `audioRoutingGroups` (list, create, get, update, delete; kept with the call) and
//! `contentSharingSessions` (Switchboard's parties share no screens: always none).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{GraphCall, call_id};
use super::respond::{json_response, with_location};
use crate::domain::call::RoutingGroup;
use crate::graph::odata_type;

/// Who may touch routing groups: apps that join or place group calls (the docs' permissions).
const ROLES: [&str; 2] = ["Calls.JoinGroupCall.All", "Calls.InitiateGroupCall.All"];

fn may_route(cx: &GraphCall) -> Result<(), ApiError> {
    if ROLES.iter().any(|r| cx.principal.has_role(r)) {
        return Ok(());
    }
    Err(ApiError::insufficient(
        "manage audio routing groups",
        &ROLES,
    ))
}

/// A routing group as Graph writes it.
fn render(cx: &GraphCall, g: &RoutingGroup) -> Value {
    let at = cx.addressing();
    json!({
        "@odata.context": format!("{}/$metadata#audioRoutingGroup", at.base),
        "@odata.type": odata_type("audioRoutingGroup"),
        "id": g.id,
        "routingMode": g.routing_mode,
        "sources": g.sources,
        "receivers": g.receivers,
    })
}

fn not_found(gid: &str) -> ApiError {
    ApiError::not_found(format!("No audio routing group '{gid}' on this call."))
}

/// A participant-id list of `body[name]`, when given.
fn ids(body: &Value, name: &str) -> Result<Option<Vec<String>>, ApiError> {
    match &body[name] {
        Value::Null => Ok(None),
        Value::Array(a) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("{name} must be participant ids (strings)."))
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        _ => Err(ApiError::bad_request(format!(
            "{name} must be an array of participant ids."
        ))),
    }
}

/// Checks a group's shape: `oneToOne` routes one source to one receiver, `multicast` one
/// source to one or more receivers.
fn check(g: &RoutingGroup) -> Result<(), ApiError> {
    let ok = match g.routing_mode.as_str() {
        "oneToOne" => g.sources.len() == 1 && g.receivers.len() == 1,
        "multicast" => g.sources.len() == 1 && !g.receivers.is_empty(),
        other => {
            return Err(ApiError::bad_request(format!(
                "routingMode must be oneToOne or multicast, not '{other}'."
            )));
        }
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "A {} audio routing group has one source and {} receiver.",
            g.routing_mode,
            if g.routing_mode == "oneToOne" {
                "one"
            } else {
                "at least one"
            }
        )))
    }
}

/// `GET .../audioRoutingGroups`.
pub async fn list(cx: &GraphCall, id: &str) -> Result<Response, ApiError> {
    may_route(cx)?;
    let cid = call_id(id)?;
    let groups = cx
        .state
        .engine
        .with_call(&cx.app.app_id, cid, |c| {
            c.routing_groups.as_deref().cloned().unwrap_or_default()
        })
        .await?;
    let at = cx.addressing();
    let value: Vec<Value> = groups
        .iter()
        .map(|g| {
            let mut v = render(cx, g);
            v.as_object_mut().map(|o| o.remove("@odata.context"));
            v
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "@odata.context": format!("{}/$metadata#{}('{cid}')/audioRoutingGroups", at.base, at.collection),
            "value": value,
        }),
    ))
}

/// `POST .../audioRoutingGroups`: `200 OK` with the group, as the docs' examples answer.
pub async fn create(cx: &GraphCall, id: &str, body: Value) -> Result<Response, ApiError> {
    may_route(cx)?;
    let cid = call_id(id)?;
    let gid = match &body["id"] {
        Value::Null => crate::domain::ids::new_guid(),
        Value::String(s) if !s.trim().is_empty() => s.trim().to_string(),
        _ => return Err(ApiError::bad_request("id must be a non-empty string.")),
    };
    let group = RoutingGroup {
        id: gid.clone(),
        routing_mode: body["routingMode"]
            .as_str()
            .ok_or_else(|| {
                ApiError::bad_request("routingMode is required: oneToOne or multicast.")
            })?
            .to_string(),
        sources: ids(&body, "sources")?.unwrap_or_default(),
        receivers: ids(&body, "receivers")?.unwrap_or_default(),
    };
    check(&group)?;
    let kept = group.clone();
    let added = cx
        .state
        .engine
        .change_routing_groups(&cx.app.app_id, cid, move |groups| {
            if groups.iter().any(|g| g.id == kept.id) {
                return false;
            }
            groups.push(kept);
            true
        })
        .await?;
    if !added {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!("An audio routing group '{gid}' exists on this call."),
        ));
    }
    let at = cx.addressing();
    let location = format!(
        "{}/{}/{cid}/audioRoutingGroups/{gid}",
        at.base, at.collection
    );
    Ok(with_location(
        json_response(StatusCode::OK, &render(cx, &group)),
        &location,
    ))
}

/// `GET .../audioRoutingGroups/{id}`.
pub async fn get(cx: &GraphCall, id: &str, gid: &str) -> Result<Response, ApiError> {
    may_route(cx)?;
    let group = cx
        .state
        .engine
        .with_call(&cx.app.app_id, call_id(id)?, |c| {
            let groups = c.routing_groups.as_deref().map_or(&[][..], Vec::as_slice);
            groups.iter().find(|g| g.id == gid).cloned()
        })
        .await?
        .ok_or_else(|| not_found(gid))?;
    Ok(json_response(StatusCode::OK, &render(cx, &group)))
}

/// `PATCH .../audioRoutingGroups/{id}`: the properties given change (the id does not).
pub async fn update(
    cx: &GraphCall,
    id: &str,
    gid: &str,
    body: Value,
) -> Result<Response, ApiError> {
    may_route(cx)?;
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "The body must be an audioRoutingGroup object.",
        ));
    }
    if body["id"].as_str().is_some_and(|given| given != gid) {
        return Err(ApiError::bad_request(
            "An audio routing group's id cannot change.",
        ));
    }
    let mode = match &body["routingMode"] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        _ => return Err(ApiError::bad_request("routingMode must be a string.")),
    };
    let (sources, receivers) = (ids(&body, "sources")?, ids(&body, "receivers")?);
    let gid_owned = gid.to_string();
    let changed = cx
        .state
        .engine
        .change_routing_groups(&cx.app.app_id, call_id(id)?, move |groups| {
            let g = groups.iter_mut().find(|g| g.id == gid_owned)?;
            let mut next = g.clone();
            if let Some(m) = mode {
                next.routing_mode = m;
            }
            if let Some(s) = sources {
                next.sources = s;
            }
            if let Some(r) = receivers {
                next.receivers = r;
            }
            if let Err(e) = check(&next) {
                return Some(Err(e));
            }
            *g = next.clone();
            Some(Ok(next))
        })
        .await?
        .ok_or_else(|| not_found(gid))??;
    Ok(json_response(StatusCode::OK, &render(cx, &changed)))
}

/// `DELETE .../audioRoutingGroups/{id}`: `204`.
pub async fn delete(cx: &GraphCall, id: &str, gid: &str) -> Result<Response, ApiError> {
    may_route(cx)?;
    let gid_owned = gid.to_string();
    let removed = cx
        .state
        .engine
        .change_routing_groups(&cx.app.app_id, call_id(id)?, move |groups| {
            let before = groups.len();
            groups.retain(|g| g.id != gid_owned);
            groups.len() != before
        })
        .await?;
    if !removed {
        return Err(not_found(gid));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET .../contentSharingSessions`: none (no party of Switchboard's shares its screen).
pub async fn sharing_sessions(cx: &GraphCall, id: &str) -> Result<Response, ApiError> {
    let cid = call_id(id)?;
    cx.owned_call(id).await?;
    let at = cx.addressing();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "@odata.context": format!("{}/$metadata#{}('{cid}')/contentSharingSessions", at.base, at.collection),
            "value": [],
        }),
    ))
}

/// `GET .../contentSharingSessions/{id}`: `404`, there are none.
pub async fn sharing_session(cx: &GraphCall, id: &str, sid: &str) -> Result<Response, ApiError> {
    cx.owned_call(id).await?;
    Err(ApiError::not_found(format!(
        "No content sharing session '{sid}' on this call."
    )))
}
