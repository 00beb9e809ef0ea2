//! The connection layer seen from a raw TCP client: unread bodies, the connection limit, and a
//! dual-stack listener.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

const CALLS: &str = "/v1.0/communications/calls";

/// One HTTP/1.1 response read off a raw connection.
struct RawResponse {
    status: u16,
    /// Header lines, lower-cased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Reads one response (head, then a `Content-Length` body).
async fn read_response(s: &mut (impl AsyncRead + Unpin)) -> RawResponse {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("a response within 5 s")
            .unwrap();
        assert!(n > 0, "connection closed before a response head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let mut chunk = vec![0u8; len - body.len()];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed inside a response body");
        body.extend_from_slice(&chunk[..n]);
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

/// Whether the server has closed `s`: a read sees the end within `within`.
async fn closed_within(s: &mut (impl AsyncRead + Unpin), within: Duration) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(within, s.read(&mut b)).await,
        Ok(Ok(0) | Err(_))
    )
}

fn host(app: &TestApp) -> &str {
    app.base.trim_start_matches("http://")
}

fn post_head(app: &TestApp, path: &str, token: &str, len: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n",
        host(app)
    )
}

#[tokio::test]
async fn an_answer_that_leaves_a_large_body_unread_says_connection_close() {
    let app = spawn_app(Backend::Suite).await;
    let (mut rd, mut wr) = TcpStream::connect(host(&app)).await.unwrap().into_split();
    let body = vec![b'x'; 100 * 1024];
    wr.write_all(post_head(&app, CALLS, "not-a-token", body.len()).as_bytes())
        .await
        .unwrap();
    // The client sends all of it, as clients do, while the answer comes from the headers alone.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&body).await;
        wr
    });
    let r = read_response(&mut rd).await;
    assert_eq!(r.status, 401);
    assert!(r.closes(), "{:?}", r.headers);
    // And the server does close it after the answer.
    assert!(closed_within(&mut rd, Duration::from_secs(5)).await);
    drop(writer.await);
}

#[tokio::test]
async fn a_small_unread_body_is_drained_and_the_connection_kept() {
    let app = spawn_app(Backend::Suite).await;
    let mut s = TcpStream::connect(host(&app)).await.unwrap();
    let body = vec![b'x'; 1024];
    for _ in 0..2 {
        s.write_all(post_head(&app, CALLS, "not-a-token", body.len()).as_bytes())
            .await
            .unwrap();
        s.write_all(&body).await.unwrap();
        let r = read_response(&mut s).await;
        assert_eq!(r.status, 401);
        assert!(!r.closes(), "{:?}", r.headers);
    }
    // A body that is read to its end keeps the connection too (here: not JSON, 400).
    let token = app.token().await;
    let big = vec![b'x'; 100 * 1024];
    s.write_all(post_head(&app, CALLS, &token, big.len()).as_bytes())
        .await
        .unwrap();
    s.write_all(&big).await.unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(!r.closes(), "{:?}", r.headers);
}

#[tokio::test]
async fn an_ipv4_client_of_a_dual_stack_listener_is_served_the_control_api_as_loopback() {
    let app = match spawn_app_on(Backend::Suite, "", "[::]:0", |s| s.admin.token = None).await {
        Ok(app) => app,
        Err(e) => {
            println!("skipped: cannot listen on [::] here ({e:#})");
            return;
        }
    };
    let port = app.base.rsplit(':').next().unwrap().to_string();
    let url = format!("http://127.0.0.1:{port}/_switchboard/v1/clock");
    let r = match app.http.get(&url).send().await {
        Ok(r) => r,
        Err(e) => {
            println!("skipped: [::] does not take IPv4 clients here ({e})");
            return;
        }
    };
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // Loopback in IPv6 too; and no token is still needed for it.
    let url6 = format!("http://[::1]:{port}/_switchboard/v1/clock");
    if let Ok(r) = app.http.get(&url6).send().await {
        assert_eq!(r.status(), 200);
    }
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(host(app)).await.unwrap()
}

/// A keep-alive `GET /healthz` on `s`, answered 200.
async fn healthz(app: &TestApp, s: &mut TcpStream) {
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", host(app));
    s.write_all(req.as_bytes()).await.unwrap();
    let r = read_response(s).await;
    assert_eq!(r.status, 200);
}

/// Starts `POST /_switchboard/v1/clock/advance` on `s` and sends only part of its body, so the
/// request stays in flight until [`finish_advance`].
async fn start_advance(app: &TestApp, s: &mut TcpStream) {
    let head = format!(
        "POST /_switchboard/v1/clock/advance HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Length: 14\r\n\r\n{{\"sec",
        host(app)
    );
    s.write_all(head.as_bytes()).await.unwrap();
}

async fn finish_advance(s: &mut TcpStream) -> RawResponse {
    s.write_all(b"onds\": 1}").await.unwrap();
    read_response(s).await
}

const SMALL_LIMIT: &str = "[limits]\nmax_connections = 8\n";

#[tokio::test]
async fn at_the_connection_limit_the_connection_idle_longest_is_closed_for_a_new_one() {
    let app = spawn_app_with(Backend::Suite, SMALL_LIMIT).await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(connect(&app).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A ninth client is served...
    let r = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // ...because the oldest idle connection was closed, and only that one.
    assert!(closed_within(&mut idle[0], Duration::from_secs(2)).await);
    for s in &mut idle[1..] {
        assert!(!closed_within(s, Duration::from_millis(50)).await);
    }
}

#[tokio::test]
async fn a_connection_in_the_middle_of_a_request_is_not_shed() {
    let app = spawn_app_with(Backend::Suite, SMALL_LIMIT).await;
    let mut busy = connect(&app).await;
    start_advance(&app, &mut busy).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Seven more that each made a request and now idle, kept alive.
    let mut idle = Vec::new();
    for _ in 0..7 {
        let mut s = connect(&app).await;
        healthz(&app, &mut s).await;
        idle.push(s);
    }
    let r = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The one shed is the oldest idle one, not the older busy one...
    assert!(closed_within(&mut idle[0], Duration::from_secs(2)).await);
    for s in &mut idle[1..] {
        assert!(!closed_within(s, Duration::from_millis(50)).await);
    }
    // ...whose request completes.
    let r = finish_advance(&mut busy).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[tokio::test]
async fn when_every_connection_is_busy_a_new_one_waits_for_one_to_finish() {
    let app = spawn_app_with(Backend::Suite, "[limits]\nmax_connections = 2\n").await;
    let mut a = connect(&app).await;
    start_advance(&app, &mut a).await;
    let mut b = connect(&app).await;
    start_advance(&app, &mut b).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let third = tokio::spawn({
        let url = format!("{}/healthz", app.base);
        let http = app.http.clone();
        async move { http.get(url).send().await.map(|r| r.status()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "served beyond the limit");
    // `a` finishes its request, goes idle, and is closed to make room.
    assert_eq!(finish_advance(&mut a).await.status, 200);
    let status = tokio::time::timeout(Duration::from_secs(2), third)
        .await
        .expect("served once a connection was free")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    assert!(closed_within(&mut a, Duration::from_secs(2)).await);
    assert_eq!(finish_advance(&mut b).await.status, 200);
}
