//! Every Graph route against every method: what a route does not serve is `405` with `Allow`;
//! `501` is only for what Graph serves and Switchboard does not build yet.

use serde_json::json;

use crate::helpers::*;

const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

#[tokio::test]
async fn every_route_answers_every_method_with_405_and_allow_unless_it_serves_it() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let live = app.established(&token).await;
    let gone = "00000000-0000-4000-8000-000000000000";
    let c = "/v1.0/communications/calls";
    // (path, the methods it serves, what those methods answer when they are not 501: `None`
    // means "served", checked as neither 405 nor 501).
    let table: Vec<(String, &[&str], Option<u16>)> = vec![
        (c.to_string(), &["POST"], None),
        (format!("{c}/{gone}"), &["GET", "HEAD", "DELETE"], None),
        (format!("{c}/{gone}/keepAlive"), &["POST"], None),
        (
            format!("{c}/{gone}/microsoft.graph.playPrompt"),
            &["POST"],
            None,
        ),
        (
            format!("{c}/{gone}/operations/op-1"),
            &["GET", "HEAD"],
            None,
        ),
        (format!("{c}/{gone}/participants"), &["GET", "HEAD"], None),
        (
            format!("{c}/{gone}/participants/p-1"),
            &["GET", "HEAD", "DELETE"],
            None,
        ),
        (format!("{c}/{gone}/participants/invite"), &["POST"], None),
        (format!("{c}/{gone}/participants/p-1/mute"), &["POST"], None),
        (
            format!("/beta/app/calls/{gone}"),
            &["GET", "HEAD", "DELETE"],
            None,
        ),
        // Graph has these; Switchboard does not build them yet.
        (
            format!("{c}/{live}/operations"),
            &["GET", "HEAD"],
            Some(501),
        ),
        (
            format!("{c}/{live}/participants/muteAll"),
            &["POST"],
            Some(501),
        ),
        (
            format!("{c}/{live}/participants/configureMixer"),
            &["POST"],
            Some(501),
        ),
        (
            format!("{c}/{live}/addLargeGalleryView"),
            &["POST"],
            Some(501),
        ),
    ];
    let mut wrong = vec![];
    for (path, serves, served_status) in &table {
        let allow = serves.join(", ");
        for method in METHODS {
            let mut rb = app
                .http
                .request(method.parse().unwrap(), format!("{}{path}", app.base))
                .bearer_auth(&token);
            if !matches!(method, "GET" | "HEAD" | "OPTIONS") {
                rb = rb.json(&json!({}));
            }
            let r = into_resp(rb.send().await.unwrap()).await;
            let got = (
                r.status,
                r.headers
                    .get("allow")
                    .map(|v| v.to_str().unwrap().to_string()),
            );
            let ok = if serves.contains(&method) {
                match served_status {
                    Some(s) => got.0 == *s,
                    None => got.0 != 405 && got.0 != 501,
                }
            } else {
                // HEAD has no body to carry the Graph error; every other 405 does.
                got == (405, Some(allow.clone()))
                    && (method == "HEAD" || r.graph_error().as_deref() == Some("MethodNotAllowed"))
            };
            if !ok {
                wrong.push(format!("{method} {path} -> {got:?} ({})", r.text));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test]
async fn head_on_a_call_answers_like_get_without_a_body() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let id = app.established(&token).await;
    let path = format!("/v1.0/communications/calls/{id}");
    let get = app.send("GET", &path, Some(&token), None).await;
    let head = app.send("HEAD", &path, Some(&token), None).await;
    assert_eq!((get.status, head.status), (200, 200));
    assert_eq!(head.text, "");
    assert_eq!(
        head.headers.get("content-type"),
        get.headers.get("content-type")
    );
}
