//! The connection limit: at most `[limits] max_connections` connections are served at once, so
//! idle clients cannot take every file descriptor.
//!
//! Every accepted connection is registered ([`Connections::register`]) with what the request path
//! tells about it ([`Track`]): whether a request is in flight (from the moment hyper hands it
//! over until the response body is written) and when it was last active. When a connection
//! arrives and the limit is reached, the one idle longest is asked to close
//! ([`Connections::wait_for_room`]); a connection in the middle of a request is never chosen.
//! If every connection is busy, the newcomer waits (and later ones wait in the kernel's backlog)
//! until one finishes. The same shedding frees a descriptor when `accept` itself runs out.
//! Warnings about it are written at most once per [`LOG_EVERY`], with a count.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Request, Response};
use hyper::body::{Frame, SizeHint};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The default limit when the open-file limit allows it.
pub const DEFAULT_MAX: usize = 4096;
/// How often a repeated warning is written.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The limit to serve with: the configured one, or [`DEFAULT_MAX`] capped at three quarters of
/// the open-file limit (the rest is for the store, notification POSTs, prompt fetches). Warns
/// when a configured limit is above what the open-file limit allows.
pub fn resolve_limit(configured: Option<usize>) -> usize {
    let fds = open_file_limit();
    let room = fds.map(|n| usize::try_from(n / 4 * 3).unwrap_or(usize::MAX));
    match configured {
        Some(n) => {
            if let (Some(room), Some(fds)) = (room, fds)
                && n > room
            {
                tracing::warn!(
                    "[limits] max_connections = {n}, but the open-file limit is {fds}: accepting \
                     may run out of descriptors first (raise `ulimit -n`)"
                );
            }
            n.max(1)
        }
        None => default_limit(fds),
    }
}

/// [`DEFAULT_MAX`], or three quarters of `fds` when that is lower (at least 16).
pub fn default_limit(fds: Option<u64>) -> usize {
    let room = fds.map_or(usize::MAX, |n| {
        usize::try_from(n / 4 * 3).unwrap_or(usize::MAX)
    });
    DEFAULT_MAX.min(room).max(16)
}

/// The soft `RLIMIT_NOFILE` of this process, when it has one.
fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Whether an `accept` error means the process or the system is out of file descriptors.
pub fn out_of_descriptors(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    {
        use rustix::io::Errno;
        matches!(Errno::from_io_error(e), Some(Errno::MFILE | Errno::NFILE))
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// Lets a repeated warning through once per `every`, counting the ones held back.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        Throttle {
            every,
            last: None,
            held_back: 0,
        }
    }

    /// `Some(n)` when the warning is to be written now, `n` being how many were held back since
    /// the last one.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|l| now.saturating_duration_since(l) < self.every)
        {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

/// " (and N more in the last 10 s)" when some were held back.
pub fn more(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more in the last {} s)", LOG_EVERY.as_secs())
    }
}

/// The live connections.
pub struct Connections {
    max: usize,
    epoch: Instant,
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Entry>>,
    /// A connection closed or went idle.
    changed: Arc<Notify>,
    shed_log: Mutex<Throttle>,
    busy_log: Mutex<Throttle>,
}

struct Entry {
    conn: Arc<ConnState>,
    close: CancellationToken,
}

impl Connections {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Connections {
            max: max.max(1),
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            live: Mutex::new(HashMap::new()),
            changed: Arc::new(Notify::new()),
            shed_log: Mutex::new(Throttle::new(LOG_EVERY)),
            busy_log: Mutex::new(Throttle::new(LOG_EVERY)),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections open now (those asked to close count until they have).
    pub fn len(&self) -> usize {
        self.live.lock().expect("connections lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers an accepted connection; it is asked to close when `stop` fires or it is shed.
    pub fn register(self: &Arc<Self>, stop: &CancellationToken) -> Slot {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(ConnState {
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_active_ms: AtomicU64::new(0),
            epoch: self.epoch,
            changed: self.changed.clone(),
        });
        conn.touch();
        let close = stop.child_token();
        self.live.lock().expect("connections lock").insert(
            id,
            Entry {
                conn: conn.clone(),
                close: close.clone(),
            },
        );
        Slot {
            id,
            registry: self.clone(),
            conn,
            close,
        }
    }

    /// Asks the connection idle longest to close; `false` when none is idle.
    pub fn shed_oldest_idle(&self) -> bool {
        let live = self.live.lock().expect("connections lock");
        // Ties (the same millisecond) go to the one accepted first.
        let oldest = live
            .iter()
            .filter(|(_, e)| !e.close.is_cancelled() && e.conn.is_idle())
            .min_by_key(|(id, e)| (e.conn.last_active_ms.load(Ordering::Relaxed), **id));
        match oldest {
            Some((_, e)) => {
                e.close.cancel();
                true
            }
            None => false,
        }
    }

    /// After `accept` ran out of descriptors: asks the connection idle longest to close (unless
    /// one is closing already) and waits up to `within` for a connection to close. `false` when
    /// none is idle or closing, so there is nothing to wait for.
    pub async fn reclaim_descriptor(&self, within: Duration) -> bool {
        let changed = self.changed.notified();
        let closing = {
            let live = self.live.lock().expect("connections lock");
            live.values().any(|e| e.close.is_cancelled())
        };
        if !closing && !self.shed_oldest_idle() {
            return false;
        }
        let _ = tokio::time::timeout(within, changed).await;
        true
    }

    /// Waits until one more connection may be served: while the limit is reached, sheds the
    /// connection idle longest, or, when all are busy, waits for one to finish.
    pub async fn wait_for_room(&self) {
        loop {
            let changed = self.changed.notified();
            let (open, closing) = {
                let live = self.live.lock().expect("connections lock");
                let closing = live.values().filter(|e| e.close.is_cancelled()).count();
                (live.len(), closing)
            };
            if open < self.max {
                return;
            }
            // One shed at a time: once it has closed there is room.
            if closing == 0 {
                let now = Instant::now();
                if self.shed_oldest_idle() {
                    if let Some(n) = self.shed_log.lock().expect("log lock").hit(now) {
                        tracing::warn!(
                            "{} connections open, the limit: closed the one idle longest{}",
                            self.max,
                            more(n)
                        );
                    }
                } else if let Some(n) = self.busy_log.lock().expect("log lock").hit(now) {
                    tracing::warn!(
                        "{} connections open, the limit, all busy: new connections wait{}",
                        self.max,
                        more(n)
                    );
                }
            }
            changed.await;
        }
    }
}

/// An accepted connection's place in [`Connections`]; it leaves when this is dropped.
pub struct Slot {
    id: u64,
    registry: Arc<Connections>,
    conn: Arc<ConnState>,
    close: CancellationToken,
}

impl Slot {
    pub fn state(&self) -> Arc<ConnState> {
        self.conn.clone()
    }

    /// Fires when the connection is to close (shed, or the server stops).
    pub fn close_requested(&self) -> &CancellationToken {
        &self.close
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry
            .live
            .lock()
            .expect("connections lock")
            .remove(&self.id);
        self.registry.changed.notify_one();
    }
}

/// What the request path records about one connection.
pub struct ConnState {
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// When it was accepted, or last started or finished a request (ms since the registry began).
    last_active_ms: AtomicU64,
    epoch: Instant,
    changed: Arc<Notify>,
}

impl ConnState {
    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// Requests started on this connection so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Acquire)
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.touch();
        Busy(self.clone())
    }
}

/// Held while a request is in flight.
struct Busy(Arc<ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_one();
    }
}

/// A service wrapper that marks its connection busy from the request until the response body
/// has been written (or dropped).
#[derive(Clone)]
pub struct Track<S> {
    inner: S,
    conn: Arc<ConnState>,
}

impl<S> Track<S> {
    pub fn new(inner: S, conn: Arc<ConnState>) -> Self {
        Track { inner, conn }
    }
}

impl<S, B> tower::Service<Request<B>> for Track<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let busy = self.conn.begin();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|inner| Body::new(Guarded { inner, _busy: busy })))
        })
    }
}

/// A response body that keeps its connection busy until it is done.
struct Guarded {
    inner: Body,
    _busy: Busy,
}

impl hyper::body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_limit_leaves_a_quarter_of_the_descriptors() {
        assert_eq!(default_limit(None), DEFAULT_MAX);
        assert_eq!(default_limit(Some(1_048_576)), DEFAULT_MAX);
        assert_eq!(default_limit(Some(1024)), 768);
        assert_eq!(default_limit(Some(8)), 16);
    }

    #[test]
    fn a_throttled_warning_is_written_once_per_period_with_a_count() {
        let mut t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.hit(t0), Some(0));
        for ms in [50, 100, 9_999] {
            assert_eq!(t.hit(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(t.hit(t0 + Duration::from_secs(10)), Some(3));
        assert_eq!(t.hit(t0 + Duration::from_secs(11)), None);
    }

    #[test]
    fn the_connection_idle_longest_is_shed_and_a_busy_one_never() {
        let reg = Connections::new(3);
        let stop = CancellationToken::new();
        let a = reg.register(&stop);
        std::thread::sleep(Duration::from_millis(5));
        let b = reg.register(&stop);
        std::thread::sleep(Duration::from_millis(5));
        let c = reg.register(&stop);
        // `a` is oldest but busy; `b` is the one idle longest.
        let busy = a.state().begin();
        assert!(reg.shed_oldest_idle());
        assert!(b.close_requested().is_cancelled());
        assert!(!a.close_requested().is_cancelled());
        // `b` is closing; `c` goes next, then nobody is idle.
        assert!(reg.shed_oldest_idle());
        assert!(c.close_requested().is_cancelled());
        assert!(!reg.shed_oldest_idle());
        drop(busy);
        assert!(reg.shed_oldest_idle());
        assert!(a.close_requested().is_cancelled());
        drop((a, b, c));
        assert!(reg.is_empty());
    }

    #[tokio::test]
    async fn out_of_descriptors_one_idle_connection_at_a_time_is_closed() {
        let reg = Connections::new(10);
        let stop = CancellationToken::new();
        let (a, b) = (reg.register(&stop), reg.register(&stop));
        let wait = Duration::from_millis(10);
        assert!(reg.reclaim_descriptor(wait).await);
        assert!(a.close_requested().is_cancelled());
        // `a` has not closed yet: wait for it rather than close `b` too.
        assert!(reg.reclaim_descriptor(wait).await);
        assert!(!b.close_requested().is_cancelled());
        drop(a);
        let _busy = b.state().begin();
        assert!(!reg.reclaim_descriptor(wait).await, "nothing idle to close");
    }

    #[tokio::test]
    async fn room_is_made_by_shedding_or_waits_for_a_busy_connection_to_finish() {
        let reg = Connections::new(1);
        let stop = CancellationToken::new();
        let only = reg.register(&stop);
        let busy = only.state().begin();
        let waiter = tokio::spawn({
            let reg = reg.clone();
            async move { reg.wait_for_room().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "a busy connection is not shed");
        assert!(!only.close_requested().is_cancelled());
        drop(busy);
        tokio::time::timeout(Duration::from_secs(1), only.close_requested().cancelled())
            .await
            .expect("shed once idle");
        assert!(!waiter.is_finished(), "room only once it has closed");
        drop(only);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("room")
            .unwrap();
    }
}
