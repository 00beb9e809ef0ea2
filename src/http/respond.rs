//! How Graph handlers answer: JSON with Graph's content type, an operation with its `Location`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::extract::GraphCall;
use crate::domain::CallId;
use crate::domain::operation::Operation;
use crate::graph::operation::render;

/// The content type Graph answers JSON with.
const GRAPH_JSON: &str = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

/// A JSON body with Graph's content type.
pub fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response {
    // Serializing a value of our own types cannot fail (string keys, finite numbers).
    json_text_response(status, serde_json::to_string(value).unwrap_or_default())
}

/// A JSON body that is already text.
pub fn json_text_response(status: StatusCode, text: String) -> Response {
    let mut resp = (status, text).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(GRAPH_JSON));
    resp
}

/// `resp` with a `Location` header (a URL that is not a valid header value is left out).
pub fn with_location(mut resp: Response, location: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// `200` with the operation and a `Location` to it.
pub fn operation_response(cx: &GraphCall, call: CallId, op: &Operation) -> Response {
    let at = cx.addressing();
    let mut body = render(op, Some(&cx.state.engine.recording_url(&op.id)));
    body["@odata.context"] = json!(format!("{}/$metadata#{}", at.base, op.kind.type_name()));
    let location = format!("{}/{}/{call}/operations/{}", at.base, at.collection, op.id);
    with_location(json_response(StatusCode::OK, &body), &location)
}
