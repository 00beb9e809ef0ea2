//! The call handlers: create, get, hang up, keepAlive.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::AppState;
use super::error::ApiError;
use super::route::Target;
use crate::auth::Principal;
use crate::config::CallbackPolicy;
use crate::domain::{Call, CallId};
use crate::engine::AppRef;
use crate::graph::call::{CallKind, parse_create, render};

/// The content type Graph answers JSON with.
const GRAPH_JSON: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

pub fn json_response(status: StatusCode, value: &Value) -> Response {
    json_text_response(status, value.to_string())
}

/// A JSON body that is already text.
pub fn json_text_response(status: StatusCode, text: String) -> Response {
    let mut resp = (status, text).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(GRAPH_JSON));
    resp
}

/// Reads an action's body: like [`json_body`], but an empty body is an empty object.
pub async fn optional_json_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Value, ApiError> {
    read_json(state, headers, body, true).await
}

/// Reads a JSON request body: the content type must be JSON when one is given, the size within
/// the limit, the text valid JSON.
pub async fn json_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Value, ApiError> {
    read_json(state, headers, body, false).await
}

async fn read_json(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    empty_is_object: bool,
) -> Result<Value, ApiError> {
    let bytes = super::read_body(body, state.settings.limits.max_body_bytes).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        if empty_is_object {
            return Ok(Value::Object(Default::default()));
        }
        return Err(ApiError::bad_request(
            "The request body is empty; a JSON object is required.",
        ));
    }
    parse_json(headers, &bytes)
}

/// Parses a non-empty body; a content type, when given, must be JSON.
fn parse_json(headers: &HeaderMap, bytes: &[u8]) -> Result<Value, ApiError> {
    if let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        let mime = ct
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if mime != "application/json" && !mime.ends_with("+json") {
            return Err(ApiError::bad_request(format!(
                "The Content-Type '{ct}' is not supported; send application/json."
            )));
        }
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format. ({e})"
        ))
    })
}

/// The callback URL policy on a URL's text: always absolute http(s) (checked when parsing);
/// with `strict`, https only, and with `forbid_private` no `localhost` name and no literal
/// non-public address in any spelling (`net_policy::literal_refusal`). Names are checked again,
/// on every address they resolve to, when Switchboard connects.
pub fn check_callback_policy(policy: &CallbackPolicy, uri: &str) -> Result<(), ApiError> {
    if !policy.strict {
        return Ok(());
    }
    let url =
        url::Url::parse(uri).map_err(|_| ApiError::bad_request("The callbackUri is not a URL."))?;
    if url.scheme() != "https" {
        return Err(ApiError::bad_request(
            "The callbackUri must be an https URL.",
        ));
    }
    if policy.forbids_private()
        && let Some(refusal) = crate::net_policy::literal_refusal(&url)
    {
        return Err(ApiError::bad_request(format!(
            "The callbackUri points at a loopback, private or otherwise non-public address, which this server does not call ({refusal})."
        )));
    }
    Ok(())
}

/// The roles a create request needs, as (what it is, roles of which one is enough).
fn required_roles(kind: &CallKind) -> (&'static str, &'static [&'static str]) {
    match kind {
        CallKind::PeerToPeer(_) => ("create a peer-to-peer call", &["Calls.Initiate.All"]),
        CallKind::Group(_) => ("create a group call", &["Calls.InitiateGroupCall.All"]),
        CallKind::Meeting => (
            "join a meeting",
            &["Calls.JoinGroupCall.All", "Calls.JoinGroupCallAsGuest.All"],
        ),
    }
}

fn insufficient(what: &str, roles: &[&str]) -> ApiError {
    ApiError::forbidden(
        "7504",
        format!(
            "Insufficient enterprise tenant permissions, cannot access this API. To {what} the application needs the {} application permission.",
            roles.join(" or ")
        ),
    )
}

pub async fn create_call(
    state: &AppState,
    target: &Target,
    principal: &Principal,
    app: &AppRef,
    body: Value,
) -> Result<Response, ApiError> {
    let req = parse_create(&body).map_err(|e| ApiError::bad_request(e.0))?;
    check_callback_policy(&state.settings.callbacks, &req.callback_uri)?;
    if let Some(t) = &req.tenant_id
        && !t.eq_ignore_ascii_case(&principal.tenant_id)
    {
        return Err(ApiError::forbidden(
            "7505",
            "Request authorization tenant mismatch.",
        ));
    }
    let (what, roles) = required_roles(&req.kind);
    if !roles.iter().any(|r| principal.has_role(r)) {
        return Err(insufficient(what, roles));
    }
    if req.app_hosted_media && !principal.has_role("Calls.AccessMedia.All") {
        return Err(insufficient(
            "use app-hosted media",
            &["Calls.AccessMedia.All"],
        ));
    }
    let (targets, meeting) = match &req.kind {
        CallKind::PeerToPeer(p) => (vec![p.clone()], None),
        CallKind::Group(peers) => (peers.clone(), None),
        CallKind::Meeting => (vec![], Some(join_meeting_id(&body)?)),
    };
    let call = state.engine.create_call(app, req, targets, meeting).await?;
    let at = target.addressing(&state.public_url);
    let mut resp = json_text_response(StatusCode::CREATED, render(&call, &at));
    let location = format!("{}/{}/{}", at.base, at.collection, call.id);
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// The meeting a join asks for: (`joinMeetingId`, `passcode`) of a `joinMeetingIdMeetingInfo`.
fn join_meeting_id(body: &Value) -> Result<(String, Option<String>), ApiError> {
    let info = &body["meetingInfo"];
    let typed = info["@odata.type"].as_str();
    let by_join_id =
        typed.is_none_or(|t| crate::graph::is_odata_type(t, "joinMeetingIdMeetingInfo"));
    match info["joinMeetingId"].as_str().map(str::trim) {
        Some(id) if by_join_id && !id.is_empty() => {
            let passcode = match &info["passcode"] {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                _ => {
                    return Err(ApiError::bad_request(
                        "meetingInfo.passcode must be a string.",
                    ));
                }
            };
            Ok((id.to_string(), passcode))
        }
        _ if by_join_id => Err(ApiError::bad_request(
            "A joinMeetingIdMeetingInfo needs a joinMeetingId.",
        )),
        _ => Err(ApiError::bad_request(format!(
            "Switchboard joins meetings by joinMeetingIdMeetingInfo (joinMeetingId and passcode of a configured meeting); '{}' is not supported.",
            typed.unwrap_or_default()
        ))),
    }
}

/// Parses a call id from the path; an id that is not a GUID names no call.
pub fn call_id(id: &str) -> Result<CallId, ApiError> {
    CallId::parse(id).ok_or_else(ApiError::call_not_found)
}

/// The call, if this app owns it and it is live.
pub async fn owned_call(state: &AppState, app: &AppRef, id: &str) -> Result<Call, ApiError> {
    Ok(state.engine.get_call(&app.app_id, call_id(id)?).await?)
}

pub async fn get_call(
    state: &AppState,
    target: &Target,
    app: &AppRef,
    id: &str,
) -> Result<Response, ApiError> {
    let at = target.addressing(&state.public_url);
    let body = state
        .engine
        .with_call(&app.app_id, call_id(id)?, |c| render(c, &at))
        .await?;
    Ok(json_text_response(StatusCode::OK, body))
}

pub async fn delete_call(state: &AppState, app: &AppRef, id: &str) -> Result<Response, ApiError> {
    state.engine.hang_up(&app.app_id, call_id(id)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_strict_policy_wants_https_to_public_hosts() {
        let lax = CallbackPolicy::default();
        assert!(check_callback_policy(&lax, "http://127.0.0.1:9/cb").is_ok());
        let strict = CallbackPolicy {
            strict: true,
            forbid_private: true,
        };
        assert!(check_callback_policy(&strict, "http://bot.example.com/cb").is_err());
        for private in [
            "https://127.0.0.1/cb",
            "https://10.1.2.3/cb",
            "https://localhost/cb",
            "https://[::1]/cb",
            "https://169.254.169.254/",
        ] {
            assert!(
                check_callback_policy(&strict, private).is_err(),
                "{private}"
            );
        }
        assert!(check_callback_policy(&strict, "https://bot.example.com/cb").is_ok());
    }

    #[test]
    fn the_strict_policy_refuses_localhost_spellings_and_embedded_private_addresses() {
        let strict = CallbackPolicy {
            strict: true,
            forbid_private: true,
        };
        for private in [
            "https://localhost./cb",
            "https://LocalHost./cb",
            "https://foo.localhost./cb",
            "https://[::ffff:127.0.0.1]/cb",
            "https://[::ffff:10.0.0.1]/cb",
            "https://[64:ff9b::10.0.0.1]/cb",
            "https://[2002:a00:1::]/cb",
            "https://100.64.0.1/cb",
            "https://0x7f000001/cb",
        ] {
            assert!(
                check_callback_policy(&strict, private).is_err(),
                "{private}"
            );
        }
        let https_only = CallbackPolicy {
            strict: true,
            forbid_private: false,
        };
        assert!(check_callback_policy(&https_only, "https://localhost./cb").is_ok());
    }
}
