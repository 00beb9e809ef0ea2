//! The virtual clock at the end of its range.

use serde_json::json;

use crate::helpers::*;

const TEN_YEARS: f64 = 10.0 * 365.0 * 86400.0;

#[tokio::test]
async fn the_virtual_clock_refuses_to_pass_year_9999_and_everything_still_works() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let before = app.established(&token).await;
    // Each step is allowed on its own; together they run out of calendar.
    let mut refused = None;
    for _ in 0..1000 {
        let r = app
            .admin(
                "POST",
                "/clock/advance",
                Some(json!({"seconds": TEN_YEARS})),
            )
            .await;
        if r.status != 200 {
            refused = Some(r);
            break;
        }
    }
    let refused = refused.expect("refused within 10,000 years");
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert_eq!(refused.graph_error().as_deref(), Some("BadRequest"));
    assert!(
        refused.text.contains("9999-12-31T23:59:59.999Z"),
        "{}",
        refused.text
    );

    // The clock stayed where it was, in year 9990-something, and still reads.
    let clock = app.admin("GET", "/clock", None).await;
    assert_eq!(clock.status, 200, "{}", clock.text);
    let now = clock.body["now"].as_str().unwrap().to_string();
    assert!(now.starts_with("99"), "{now}");
    let again = app
        .admin(
            "POST",
            "/clock/advance",
            Some(json!({"seconds": TEN_YEARS})),
        )
        .await;
    assert_eq!(again.status, 400);
    assert_eq!(
        app.admin("GET", "/clock", None).await.body["now"],
        now.as_str()
    );

    // Graph still answers: the old call ended long ago, a new one works in year 99xx.
    let r = app
        .send(
            "GET",
            &format!("/v1.0/communications/calls/{before}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let id = app.established(&token).await;
    let r = app
        .send(
            "GET",
            &format!("/v1.0/communications/calls/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    app.advance(60.0).await;
    let r = app
        .send(
            "DELETE",
            &format!("/v1.0/communications/calls/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
}
