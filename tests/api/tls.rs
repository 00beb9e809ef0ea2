//! TLS on the same listener: HTTPS and plain HTTP on one port, the local certificate authority
//! (made once, kept beside the store, served at `/_switchboard/v1/ca.pem`), `[tls]` files, and
//! `https` public URLs in what the API writes.

use serde_json::{Value, json};

use crate::helpers::*;

/// A client that trusts only `ca_pem` (no system roots), as a bot's machine told to trust it.
fn trusting(ca_pem: &str) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap()
}

/// The authority, fetched over plain HTTP as a first-time user would.
async fn ca_of(app: &TestApp) -> String {
    let r = app
        .http
        .get(format!("{}/_switchboard/v1/ca.pem", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-pem-file");
    let pem = r.text().await.unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    pem
}

fn port_of(app: &TestApp) -> u16 {
    app.base.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn one_port_answers_https_and_http_with_a_certificate_from_the_local_authority() {
    let app = spawn_app(Backend::Memory).await;
    let ca = ca_of(&app).await;
    let client = trusting(&ca);
    let port = port_of(&app);
    for host in ["127.0.0.1", "localhost"] {
        let r = client
            .get(format!("https://{host}:{port}/healthz"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("https://{host}: {e:?}"));
        assert_eq!(r.status(), 200, "{host}");
    }
    // The token endpoint, as MSAL calls it, over TLS.
    let r = token_response(&client, &format!("https://127.0.0.1:{port}"), APP_A).await;
    assert_eq!(r.status(), 200);
    // Plain HTTP still works on the same port, and a client that does not trust the authority
    // is refused by its own TLS check.
    let r = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let stranger = reqwest::Client::builder()
        .tls_certs_only([])
        .build()
        .unwrap();
    assert!(
        stranger
            .get(format!("https://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_authority_is_kept_beside_the_store_and_survives_a_restart() {
    let dir = TempDir::new();
    let store = format!("sqlite://{}/sb.db", dir.0.display());
    let app = spawn_app_at(&store, "", |_| {}).await.unwrap();
    let first = ca_of(&app).await;
    app.stop().await;
    let on_disk = std::fs::read_to_string(dir.0.join("ca.pem")).unwrap();
    assert_eq!(on_disk, first);
    let again = spawn_app_at(&store, "", |_| {}).await.unwrap();
    assert_eq!(ca_of(&again).await, first, "the same authority");
    // Its new certificate is trusted through the same authority.
    let r = trusting(&first)
        .get(format!("https://localhost:{}/healthz", port_of(&again)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn with_an_https_public_url_locations_and_metadata_say_https() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let app = spawn_app_on(Backend::Memory, "", &listen, |s| {
        s.public_url = Some(format!("https://127.0.0.1:{port}"));
    })
    .await
    .unwrap();
    let https = format!("https://127.0.0.1:{port}");
    let client = trusting(&ca_of(&app).await);
    let token = app.token().await;
    let r = client
        .post(format!("{https}/v1.0/communications/calls"))
        .bearer_auth(&token)
        .json(&json!({
            "@odata.type": "#microsoft.graph.call",
            "callbackUri": app.receiver.url(),
            "targets": [{"@odata.type": "#microsoft.graph.invitationParticipantInfo",
                "identity": {"@odata.type": "#microsoft.graph.identitySet",
                    "user": {"@odata.type": "#microsoft.graph.identity", "id": ALICE}}}],
            "requestedModalities": ["audio"],
            "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(&format!("{https}/v1.0/")),
        "{location}"
    );
    let body: Value = r.json().await.unwrap();
    let context = body["@odata.context"].as_str().unwrap();
    assert!(context.starts_with(&https), "{context}");
    let meta: Value = client
        .get(format!(
            "{https}/{TENANT}/v2.0/.well-known/openid-configuration"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwks = meta["jwks_uri"].as_str().unwrap();
    assert!(jwks.starts_with("https://"), "{jwks}");
}

#[tokio::test]
async fn tls_files_replace_the_local_authority() {
    // The operator's own certificate, issued here by a throwaway authority.
    let dir = TempDir::new();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::default();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["bot-host.test".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.0.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.0.join("key.pem"), key.serialize_pem()).unwrap();
    let config = format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        dir.0.join("cert.pem").display(),
        dir.0.join("key.pem").display()
    );
    let app = spawn_app_with(Backend::Memory, &config).await;
    let port = port_of(&app);
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_cert.pem().as_bytes()).unwrap()])
        .resolve("bot-host.test", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let r = client
        .get(format!("https://bot-host.test:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // No local authority to hand out.
    let r = app
        .http
        .get(format!("{}/_switchboard/v1/ca.pem", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn half_a_tls_pair_or_a_missing_file_is_refused_at_start() {
    for config in [
        "[tls]\ncert_file = \"/nowhere/cert.pem\"\n",
        "[tls]\ncert_file = \"/nowhere/cert.pem\"\nkey_file = \"/nowhere/key.pem\"\n",
    ] {
        let built = spawn_app_on(Backend::Memory, config, "127.0.0.1:0", |_| {}).await;
        let err = built.err().expect("refused");
        assert!(format!("{err:#}").contains("tls"), "{err:#}");
    }
}
