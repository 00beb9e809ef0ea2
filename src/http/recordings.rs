//! Recording downloads: `GET /recordings/{opId}.wav`, the file a `recordResponse` operation's
//! `recordingLocation` points at, fetched with its `recordingAccessToken`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::state::AppState;

/// `GET /recordings/{opId}.wav` with the operation's `recordingAccessToken` as bearer.
pub async fn get_recording(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(file): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let op_id = file.strip_suffix(".wav").unwrap_or(&file);
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string());
    let Some(rec) = state.engine.recording(op_id).await else {
        return Err(ApiError::not_found(
            "No such recording; the newest [media] keep_recordings are kept.",
        ));
    };
    let token = crate::config::Secret::new(rec.access_token.clone());
    if !presented.is_some_and(|p| token.matches(&p)) {
        return Err(ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "A recording is fetched with its recordingAccessToken as bearer token.",
        )
        .with_header(header::WWW_AUTHENTICATE, "Bearer"));
    }
    let real = {
        let (archive, op, length) = (state.recordings.clone(), op_id.to_string(), rec.length_ms);
        tokio::task::spawn_blocking(move || archive.wav(&op, length))
            .await
            .ok()
            .flatten()
    };
    let wav = match real {
        Some(real) => real,
        None if rec.real => {
            return Err(ApiError::not_found(
                "This recording's audio is no longer kept; the newest [media] keep_recordings are.",
            ));
        }
        None => crate::media::recordings::file(&state.prompts, &rec).await,
    };
    let mut resp = (axum::http::StatusCode::OK, wav).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(resp)
}
