//! What the server tells its operator: the metrics at `GET /metrics` (the log lines are read in
//! `crash.rs`, from the real binary).

use std::collections::HashMap;

use crate::helpers::*;

const CALLS: &str = "/v1.0/communications/calls";

/// `GET /metrics`, as `series{labels} → value`.
async fn scrape(app: &TestApp) -> HashMap<String, f64> {
    let r = app.send("GET", "/metrics", Some(ADMIN), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
        "Prometheus text format"
    );
    r.text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn metrics_count_requests_by_route_deliveries_by_outcome_commits_and_live_calls() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let id = app.established(&token).await;
    let live = scrape(&app).await;
    assert_eq!(live["switchboard_live_calls"], 1.0);
    let path = format!("{CALLS}/{id}");
    assert_eq!(
        app.send("DELETE", &path, Some(&token), None).await.status,
        204
    );
    assert_eq!(app.send("GET", &path, Some(&token), None).await.status, 404);
    app.receiver
        .wait_for(&id, |s| has(s, "deleted", "terminated"))
        .await;
    let m = eventually_metric(
        &app,
        "switchboard_notifications_total{outcome=\"delivered\"}",
        4.0,
    )
    .await;
    let req = |route: &str, method: &str, status: u16| {
        let key = format!(
            "switchboard_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}}"
        );
        m.get(&key).copied().unwrap_or(0.0)
    };
    assert_eq!(
        req("Calls", "POST", 201),
        1.0,
        "labelled by the parsed route, not the path"
    );
    assert_eq!(req("Call", "DELETE", 204), 1.0);
    assert_eq!(req("Call", "GET", 404), 1.0);
    assert_eq!(
        req("/{tenant}/oauth2/v2.0/token", "POST", 200),
        1.0,
        "other routes by the router's path"
    );
    assert_eq!(m["switchboard_live_calls"], 0.0);
    assert!(
        m["switchboard_commit_duration_seconds_count"] >= 3.0,
        "{m:?}"
    );
    assert!(m["switchboard_commit_batch_size_count"] >= 3.0);
    // Notifications due together go in one POST: at least one POST, at most one per notification.
    let posts = m["switchboard_delivery_duration_seconds_count"];
    assert!((1.0..=4.0).contains(&posts), "{posts}");
    assert!(m["switchboard_http_request_duration_seconds_count{route=\"Call\"}"] >= 2.0);

    // A method the client makes up gets no series of its own.
    let odd = app.send("FROBNICATE", CALLS, Some(&token), None).await;
    assert_eq!(odd.status, 405, "{}", odd.text);
    let m = scrape(&app).await;
    assert!(!m.keys().any(|k| k.contains("FROBNICATE")), "{m:?}");
    assert_eq!(
        m["switchboard_http_requests_total{route=\"Calls\",method=\"other\",status=\"405\"}"],
        1.0
    );

    // The control API's guard applies.
    let r = app.send("GET", "/metrics", Some(&token), None).await;
    assert_eq!(
        r.status, 401,
        "an app token is not the admin token: {}",
        r.text
    );
}

/// Scrapes until `series` reaches `at_least` (the last attempt is counted once it is back).
async fn eventually_metric(app: &TestApp, series: &str, at_least: f64) -> HashMap<String, f64> {
    for _ in 0..50 {
        let m = scrape(app).await;
        if m.get(series).copied().unwrap_or(0.0) >= at_least {
            return m;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{series} never reached {at_least}");
}

#[tokio::test]
async fn a_graph_request_that_times_out_is_counted_under_its_route() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(Backend::Memory, "[limits]\nrequest_timeout_secs = 1\n").await;
    let token = app.token().await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // A body that never comes in full.
    let head = format!(
        "POST /v1.0/communications/calls HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"callbackUri\""
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let n = s.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let m = scrape(&app).await;
    assert_eq!(
        m.get("switchboard_http_requests_total{route=\"Calls\",method=\"POST\",status=\"408\"}"),
        Some(&1.0),
        "{m:?}"
    );
}
