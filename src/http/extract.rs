//! What handlers read from a request: the Graph handlers' context ([`GraphCall`]), the peer's
//! address ([`PeerAddr`]), the body (within its limit), JSON bodies as Graph takes them, the fields every action shares, the call a
//! path names. Handlers import these from here, never from each other.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use http_body_util::BodyExt;
use serde_json::Value;

use super::error::ApiError;
use super::route::Target;
use super::state::AppState;
use crate::auth::Principal;
use crate::config::CallbackPolicy;
use crate::domain::{Call, CallId};
use crate::engine::AppRef;
use crate::graph::call::Addressing;

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

/// What every Graph handler is given, built by the dispatcher once the path is parsed and the
/// token accepted. The ids and the body a handler needs come beside it.
pub struct GraphCall {
    pub state: Arc<AppState>,
    /// The parsed path, with the version and collection it was reached by.
    pub target: Target,
    /// The validated token.
    pub principal: Principal,
    /// The registered app the token speaks for.
    pub app: AppRef,
}

impl GraphCall {
    /// Where `Location` headers and `@odata.context` point: the public URL, addressed as this
    /// request was.
    pub fn addressing(&self) -> Addressing {
        self.target.addressing(&self.state.public_url)
    }

    /// The call, if this app owns it and it is live.
    pub async fn owned_call(&self, id: &str) -> Result<Call, ApiError> {
        Ok(self
            .state
            .engine
            .get_call(&self.app.app_id, call_id(id)?)
            .await?)
    }
}

/// Reads a request body up to `limit` bytes. A larger body is drained (so the client can read
/// the answer) and refused with 413.
pub async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut total = 0usize;
    let drain_cap = limit.saturating_mul(64).max(64 * 1024 * 1024);
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|_| ApiError::bad_request("The request body could not be read."))?;
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total <= limit {
                buf.extend_from_slice(&data);
            } else if total > drain_cap {
                break;
            }
        }
    }
    if total > limit {
        return Err(ApiError::payload_too_large(limit));
    }
    Ok(buf.freeze())
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
    let bytes = read_body(body, state.settings.limits.max_body_bytes).await?;
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

/// Parses a call id from the path; an id that is not a GUID names no call.
pub fn call_id(id: &str) -> Result<CallId, ApiError> {
    CallId::parse(id).ok_or_else(ApiError::call_not_found)
}

/// `clientContext`: the bot's own string, echoed on the operation (at most 256 characters).
pub fn client_context(body: &Value) -> Result<Option<String>, ApiError> {
    match &body["clientContext"] {
        Value::Null => Ok(None),
        Value::String(s) if s.chars().count() <= 256 => Ok(Some(s.clone())),
        Value::String(_) => Err(ApiError::bad_request(
            "clientContext must be at most 256 characters.",
        )),
        _ => Err(ApiError::bad_request("clientContext must be a string.")),
    }
}

/// An integer field within `min..=max`, `default` when absent.
pub fn int_in(body: &Value, name: &str, default: i64, min: i64, max: i64) -> Result<i64, ApiError> {
    match &body[name] {
        Value::Null => Ok(default),
        v => v
            .as_i64()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("{name} must be an integer from {min} to {max}."))
            }),
    }
}

/// A boolean field, `default` when absent.
pub fn bool_or(body: &Value, name: &str, default: bool) -> Result<bool, ApiError> {
    match &body[name] {
        Value::Null => Ok(default),
        Value::Bool(b) => Ok(*b),
        _ => Err(ApiError::bad_request(format!(
            "{name} must be true or false."
        ))),
    }
}

/// A string field that must be one of `allowed` (in any case); the value as `allowed` spells it.
pub fn enum_value<'a>(
    body: &Value,
    name: &str,
    allowed: &[&'a str],
) -> Result<Option<&'a str>, ApiError> {
    match &body[name] {
        Value::Null => Ok(None),
        Value::String(s) => allowed
            .iter()
            .find(|a| a.eq_ignore_ascii_case(s))
            .map(|a| Some(*a))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "'{s}' is not a valid {name}; use one of {}.",
                    allowed.join(", ")
                ))
            }),
        _ => Err(ApiError::bad_request(format!("{name} must be a string."))),
    }
}

/// The callback URL policy on a URL's text (`net_policy::callback_refusal`), refused as `400`.
pub fn check_callback_policy(policy: &CallbackPolicy, uri: &str) -> Result<(), ApiError> {
    match crate::net_policy::callback_refusal(policy, uri) {
        Some(why) => Err(ApiError::bad_request(why)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_client_of_a_dual_stack_listener_is_loopback() {
        assert!(PeerAddr("[::ffff:127.0.0.1]:5000".parse().unwrap()).is_loopback());
        assert!(PeerAddr("[::1]:5000".parse().unwrap()).is_loopback());
        assert!(!PeerAddr("[::ffff:10.0.0.1]:5000".parse().unwrap()).is_loopback());
        assert!(!PeerAddr("10.0.0.1:5000".parse().unwrap()).is_loopback());
    }

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
