//! The connection layer seen from a raw TCP client: unread bodies, the connection limit, and a
//! dual-stack listener.

use crate::helpers::*;

#[tokio::test]
async fn an_ipv4_client_of_a_dual_stack_listener_is_served_the_control_api_as_loopback() {
    let app = match spawn_app_on(Backend::Memory, "", "[::]:0", |s| s.admin.token = None).await {
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
