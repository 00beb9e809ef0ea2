//! Request bodies a handler did not read to the end.
//!
//! A handler may answer without reading the body (a `401` or `429` is decided from the headers)
//! or stop reading it (a `413`). hyper then cannot reuse the connection unless the rest of the
//! body is already in its read buffer: when the body is dropped unfinished it reads once more and,
//! if the body is still not over, closes the connection — but only after it has written the
//! response, which so far says nothing. A client that sends its next request on that connection
//! then finds it closed.
//!
//! [`middleware`] makes that explicit. The handler gets the body wrapped so that, dropped before
//! its end, it is handed back; the middleware then reads the rest itself when it is small (at
//! most [`DRAIN_LIMIT`] bytes, within [`DRAIN_TIME`]) so the connection stays usable, and
//! otherwise answers with `Connection: close` (hyper closes the connection after it).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::sync::oneshot;

/// The most of an unread body read after the answer is ready, to keep the connection.
pub const DRAIN_LIMIT: u64 = 64 * 1024;
/// How long reading that rest may take.
pub const DRAIN_TIME: Duration = Duration::from_millis(500);

/// See the module docs.
pub async fn middleware(req: Request, next: Next) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    // A client that waits for `100 Continue` has not sent the body; reading it would ask for it.
    let waits_to_send = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let (tx, mut rx) = oneshot::channel();
    let req = req.map(|inner| {
        Body::new(Watched {
            inner: Some(inner),
            back: Some(tx),
        })
    });
    let mut resp = next.run(req).await;
    // The handler has returned, so its body is dropped: handed back if unfinished.
    if let Ok(rest) = rx.try_recv()
        && (waits_to_send || !drain(rest).await)
    {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Reads what is left of a body if it is small and comes quickly; whether it reached the end.
async fn drain(mut body: Body) -> bool {
    if body.size_hint().lower() > DRAIN_LIMIT {
        return false;
    }
    let read = async {
        let mut total = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            if let Some(data) = frame.data_ref() {
                total += data.len() as u64;
                if total > DRAIN_LIMIT {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, read)
        .await
        .unwrap_or(false)
}

/// A request body that gives itself back when dropped before its end.
struct Watched {
    inner: Option<Body>,
    back: Option<oneshot::Sender<Body>>,
}

impl hyper::body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        match &polled {
            // Read to the end; an error means the connection is broken anyway.
            Poll::Ready(None | Some(Err(_))) => self.back = None,
            Poll::Ready(Some(Ok(_))) if self.is_end_stream() => self.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let (Some(back), Some(inner)) = (self.back.take(), self.inner.take())
            && !inner.is_end_stream()
        {
            let _ = back.send(inner);
        }
    }
}
