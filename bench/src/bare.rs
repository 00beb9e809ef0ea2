//! The bare HTTP baseline: an axum server that answers the bench's request mix with no work
//! behind it (`POST` → 201 with a small JSON body, `GET` → 200 with a small JSON body,
//! `DELETE` → 204), served the way Switchboard serves (hyper HTTP/1, multi-threaded tokio). Its
//! throughput is the HTTP ceiling of this machine for the bench's client and concurrency.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::serve::ListenerExt;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn json(status: StatusCode, body: String) -> impl IntoResponse {
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}

async fn create() -> impl IntoResponse {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    json(
        StatusCode::CREATED,
        format!(r#"{{"id":"00000000-0000-4000-8000-{n:012}","state":"establishing"}}"#),
    )
}

async fn get(Path(id): Path<String>) -> impl IntoResponse {
    json(
        StatusCode::OK,
        format!(r#"{{"id":"{id}","state":"established"}}"#),
    )
}

async fn delete() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// Serves on a free loopback port until killed; prints the same ready line as Switchboard.
pub async fn serve() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("bare server listening on http://{}", listener.local_addr()?);
    // Switchboard turns Nagle off on every connection; so does the baseline.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = Router::new()
        .route("/v1.0/communications/calls", post(create))
        .route(
            "/v1.0/communications/calls/{id}",
            axum::routing::get(get).delete(delete),
        );
    axum::serve(listener, app).await?;
    Ok(())
}
