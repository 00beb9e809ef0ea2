//! Tokens, validation, roles, isolation, signed notifications and the control API's guard.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

use crate::helpers::*;

const CALLS: &str = "/v1.0/communications/calls";

async fn token_request(app: &TestApp, tenant: &str, form: &[(&str, &str)]) -> Resp {
    into_resp(
        app.http
            .post(format!("{}/{tenant}/oauth2/v2.0/token", app.base))
            .form(form)
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn the_token_endpoint_answers_as_entra_does() {
    let app = spawn_app(Backend::Suite).await;
    let ok = [
        ("grant_type", "client_credentials"),
        ("client_id", APP_A),
        ("client_secret", "secret-a"),
        ("scope", "https://graph.microsoft.com/.default"),
    ];
    let r = token_request(&app, TENANT, &ok).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        (r.body["token_type"].as_str(), r.body["expires_in"].as_i64()),
        (Some("Bearer"), Some(3599))
    );
    let header = jsonwebtoken::decode_header(r.body["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    assert!(header.kid.is_some());

    let with = |k: &'static str, v: &'static str| -> Vec<(&'static str, &'static str)> {
        ok.iter()
            .map(|(a, b)| if *a == k { (*a, v) } else { (*a, *b) })
            .collect()
    };
    for (label, tenant, form, status, error) in [
        (
            "wrong secret",
            TENANT,
            with("client_secret", "nope"),
            401,
            "invalid_client",
        ),
        (
            "unknown client",
            TENANT,
            with("client_id", "00000000-0000-0000-0000-000000000000"),
            401,
            "invalid_client",
        ),
        (
            "other scope",
            TENANT,
            with("scope", "https://vault.azure.net/.default"),
            400,
            "invalid_scope",
        ),
        (
            "other grant",
            TENANT,
            with("grant_type", "password"),
            400,
            "unsupported_grant_type",
        ),
        (
            "unknown tenant",
            "11111111-1111-1111-1111-111111111111",
            ok.to_vec(),
            400,
            "invalid_request",
        ),
    ] {
        let r = token_request(&app, tenant, &form).await;
        assert_eq!(r.status, status, "{label}: {}", r.text);
        assert_eq!(r.body["error"], error, "{label}");
        for field in [
            "error_description",
            "error_codes",
            "timestamp",
            "trace_id",
            "correlation_id",
        ] {
            assert!(!r.body[field].is_null(), "{label}: {field}");
        }
        assert!(!r.text.contains("secret-a"), "{label} leaks the secret");
    }
    // HTTP Basic works as well as the form.
    let r = into_resp(
        app.http
            .post(format!("{}/{TENANT}/oauth2/v2.0/token", app.base))
            .basic_auth(APP_A, Some("secret-a"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "https://graph.microsoft.com/.default"),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// A token signed with the server's own key and arbitrary claims.
fn forge(app: &TestApp, claims: Value) -> String {
    let keys = app.state.keys.read().unwrap();
    let key = keys.active();
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&h, &claims, &key.encoding).unwrap()
}

fn claims(roles: Option<Vec<&str>>) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut c = json!({
        "aud": "https://graph.microsoft.com", "iss": format!("https://sts.windows.net/{TENANT}/"),
        "tid": TENANT, "appid": APP_A, "iat": now, "nbf": now, "exp": now + 600,
    });
    if let Some(r) = roles {
        c["roles"] = json!(r);
    }
    c
}

#[tokio::test]
async fn graph_routes_refuse_bad_tokens_with_401_and_delegated_tokens_with_403() {
    let app = spawn_app(Backend::Suite).await;
    let body = app.p2p(ALICE);
    let now = chrono::Utc::now().timestamp();
    let stranger = {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        use aws_lc_rs::encoding::AsDer;
        let der = pair.as_der().unwrap();
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(app.state.keys.read().unwrap().active().kid.clone());
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der.as_ref())
        );
        jsonwebtoken::encode(
            &h,
            &claims(Some(vec!["Calls.Initiate.All"])),
            &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let mut expired = claims(Some(vec!["Calls.Initiate.All"]));
    expired["exp"] = json!(now - 600);
    let mut wrong_aud = claims(Some(vec!["Calls.Initiate.All"]));
    wrong_aud["aud"] = json!("https://management.azure.com");
    let cases = [
        ("no token", None),
        ("garbage", Some("not.a.token".to_string())),
        ("signed by a stranger", Some(stranger)),
        ("expired", Some(forge(&app, expired))),
        ("wrong audience", Some(forge(&app, wrong_aud))),
    ];
    for (label, token) in cases {
        let r = app
            .send("POST", CALLS, token.as_deref(), Some(body.clone()))
            .await;
        assert_eq!(r.status, 401, "{label}: {}", r.text);
        assert_eq!(
            r.graph_error().as_deref(),
            Some("InvalidAuthenticationToken"),
            "{label}"
        );
        assert!(
            r.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"),
            "{label}"
        );
    }
    let mut delegated = claims(None);
    delegated["scp"] = json!("Calls.Read");
    let r = app
        .send(
            "POST",
            CALLS,
            Some(&forge(&app, delegated)),
            Some(body.clone()),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(app.receiver.received().is_empty(), "no call was placed");
}

#[tokio::test]
async fn each_kind_of_call_needs_its_role_at_creation_only() {
    let app = spawn_app(Backend::Suite).await;
    let p2p = app.p2p(ALICE);
    let mut app_hosted = p2p.clone();
    app_hosted["mediaConfig"] =
        json!({"@odata.type": "#microsoft.graph.appHostedMediaConfig", "blob": "<x/>"});
    let mut group = p2p.clone();
    group["targets"] = json!([p2p["targets"][0], app.p2p(PHONE)["targets"][0]]);
    let mut meeting = p2p.clone();
    meeting["targets"] = json!([]);
    meeting["meetingInfo"] = json!({"@odata.type": "#microsoft.graph.joinMeetingIdMeetingInfo", "joinMeetingId": "1", "passcode": "x"});
    for (label, roles, body, missing) in [
        (
            "p2p",
            vec!["Calls.JoinGroupCall.All"],
            &p2p,
            "Calls.Initiate.All",
        ),
        (
            "app-hosted",
            vec!["Calls.Initiate.All"],
            &app_hosted,
            "Calls.AccessMedia.All",
        ),
        (
            "group",
            vec!["Calls.Initiate.All"],
            &group,
            "Calls.InitiateGroupCall.All",
        ),
        (
            "meeting",
            vec!["Calls.Initiate.All"],
            &meeting,
            "Calls.JoinGroupCall.All",
        ),
    ] {
        let r = app
            .send(
                "POST",
                CALLS,
                Some(&forge(&app, claims(Some(roles)))),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, 403, "{label}: {}", r.text);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(missing),
            "{label}: {}",
            r.text
        );
    }
    let no_role = app.token_for(APP_NOROLE).await;
    assert_eq!(
        app.send("POST", CALLS, Some(&no_role), Some(p2p.clone()))
            .await
            .status,
        403
    );
    // Hanging up and keepAlive need no role once the call exists.
    let token = app.token().await;
    let id = app.established(&token).await;
    let bare = forge(&app, claims(Some(vec![])));
    assert_eq!(
        app.send(
            "POST",
            &format!("{CALLS}/{id}/keepAlive"),
            Some(&bare),
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        app.send("DELETE", &format!("{CALLS}/{id}"), Some(&bare), None)
            .await
            .status,
        204
    );
}

#[tokio::test]
async fn another_apps_call_looks_exactly_like_no_call_and_stays_untouched() {
    let app = spawn_app(Backend::Sqlite).await;
    let a = app.token().await;
    let b = app.token_for(APP_B).await;
    let id = app.established(&a).await;
    let unknown = app
        .send(
            "GET",
            &format!("{CALLS}/00000000-0000-4000-8000-000000000000"),
            Some(&b),
            None,
        )
        .await;
    for (method, path) in [
        ("GET", format!("{CALLS}/{id}")),
        ("DELETE", format!("{CALLS}/{id}")),
        ("POST", format!("{CALLS}/{id}/keepAlive")),
    ] {
        let r = app.send(method, &path, Some(&b), None).await;
        assert_eq!(
            (r.status, r.graph_error()),
            (404, unknown.graph_error()),
            "{method}"
        );
        assert_eq!(r.body["error"]["message"], unknown.body["error"]["message"]);
    }
    let g = app
        .send("GET", &format!("{CALLS}/{id}"), Some(&a), None)
        .await;
    assert_eq!(g.body["state"], "established");
    assert_eq!(app.receiver.states(&id).len(), 2);
}

#[tokio::test]
async fn a_request_for_another_tenant_is_refused_with_7505() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let mut body = app.p2p(ALICE);
    body["tenantId"] = json!("00000000-0000-4000-8000-0000000000ff");
    let r = app.send("POST", CALLS, Some(&token), Some(body)).await;
    assert_eq!(
        (r.status, r.graph_error().as_deref()),
        (403, Some("7505")),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn limits_on_concurrent_calls_and_request_rate_answer_429_with_retry_after() {
    let extra = "[[apps]]\napp_id = \"1a2b3c4d-0000-4000-8000-00000000000d\"\ntenant_id = \"8e4c2a5b-6f0d-4c1e-9a3b-2d7f1e0c9b11\"\nclient_secret = \"secret-d\"\nroles = [\"Calls.Initiate.All\"]\nmax_concurrent_calls = 2\n\n[[apps]]\napp_id = \"1a2b3c4d-0000-4000-8000-00000000000e\"\ntenant_id = \"8e4c2a5b-6f0d-4c1e-9a3b-2d7f1e0c9b11\"\nclient_secret = \"secret-e\"\nroles = [\"Calls.Initiate.All\"]\nrequests_per_second = 2\n";
    let app = spawn_app_with(Backend::Suite, extra).await;
    let d = app.token_for("1a2b3c4d-0000-4000-8000-00000000000d").await;
    let first = app.create(&d, ALICE).await;
    app.create(&d, ALICE).await;
    let r = app
        .send("POST", CALLS, Some(&d), Some(app.p2p(ALICE)))
        .await;
    assert_eq!(
        (r.status, r.graph_error().as_deref()),
        (429, Some("TooManyRequests")),
        "{}",
        r.text
    );
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(r.body["error"]["innerError"]["status"], "429");
    app.send("DELETE", &format!("{CALLS}/{first}"), Some(&d), None)
        .await;
    assert_eq!(
        app.send("POST", CALLS, Some(&d), Some(app.p2p(ALICE)))
            .await
            .status,
        201
    );

    let e = app.token_for("1a2b3c4d-0000-4000-8000-00000000000e").await;
    let mut statuses = vec![];
    for _ in 0..5 {
        statuses.push(
            app.send(
                "GET",
                &format!("{CALLS}/00000000-0000-4000-8000-000000000000"),
                Some(&e),
                None,
            )
            .await
            .status,
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[tokio::test]
async fn notifications_carry_a_jwt_that_validates_against_the_published_metadata() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    let id = app.established(&token).await;
    let md = app
        .send("GET", "/v1/.well-known/OpenIdConfiguration", None, None)
        .await;
    assert_eq!(md.body["issuer"], "https://api.botframework.com");
    let jwks_uri = md.body["jwks_uri"].as_str().unwrap();
    let jwks: Value = app
        .http
        .get(jwks_uri)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let received = app.receiver.received();
    assert!(received.iter().map(|r| r.notes().len()).sum::<usize>() >= 2);
    for r in received {
        let auth = r.headers["authorization"].to_str().unwrap();
        let jwt = auth.strip_prefix("Bearer ").unwrap();
        let kid = jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap();
        let k = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .unwrap();
        let key =
            DecodingKey::from_rsa_components(k["n"].as_str().unwrap(), k["e"].as_str().unwrap())
                .unwrap();
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&[APP_A]);
        v.set_issuer(&["https://api.botframework.com"]);
        let c = jsonwebtoken::decode::<Value>(jwt, &key, &v).unwrap().claims;
        assert_eq!(c["tid"], TENANT);
        assert!(c["exp"].as_i64().unwrap() > chrono::Utc::now().timestamp());
    }
    let _ = id;
}

#[tokio::test]
async fn the_control_api_wants_the_admin_token_and_never_an_app_token() {
    let app = spawn_app(Backend::Suite).await;
    let token = app.token().await;
    assert_eq!(
        app.send("GET", "/_switchboard/v1/clock", Some(&token), None)
            .await
            .status,
        401
    );
    assert_eq!(
        app.send("GET", "/_switchboard/v1/clock", None, None)
            .await
            .status,
        401
    );
    assert_eq!(
        app.send(
            "GET",
            "/_switchboard/v1/clock",
            Some("test-admin-tokenX"),
            None
        )
        .await
        .status,
        401
    );
    assert_eq!(app.admin("GET", "/clock", None).await.status, 200);
}

/// A JWKS server for a trusted issuer of the test's own, and a token signer for it.
async fn outside_issuer() -> (String, EncodingKey) {
    let (url, key, _) = counted_outside_issuer().await;
    (url, key)
}

/// [`outside_issuer`], with the number of times its keys were fetched.
async fn counted_outside_issuer() -> (
    String,
    EncodingKey,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::KeyPair as _;
    use base64::Engine as _;
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwks = json!({"keys": [{
        "kty": "RSA", "kid": "outside-1", "use": "sig", "alg": "RS256",
        "n": b64.encode(pair.public_key().modulus().big_endian_without_leading_zero()),
        "e": b64.encode(pair.public_key().exponent().big_endian_without_leading_zero()),
    }]});
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/keys", listener.local_addr().unwrap());
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().route(
        "/keys",
        axum::routing::get(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(pair.as_der().unwrap().as_ref())
    );
    (
        url,
        EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        hits,
    )
}

#[tokio::test]
async fn a_trusted_issuer_with_a_jwks_uri_fronts_the_server() {
    let (jwks_uri, key) = outside_issuer().await;
    let issuer = "https://login.example.test/tenant/v2.0";
    let app = spawn_app_with(
        Backend::Suite,
        &format!("[[trusted_issuers]]\nissuer = \"{issuer}\"\njwks_uri = \"{jwks_uri}\"\n"),
    )
    .await;
    let mut c = claims(Some(vec!["Calls.Initiate.All"]));
    c["iss"] = json!(issuer);
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("outside-1".into());
    let token = jsonwebtoken::encode(&h, &c, &key).unwrap();
    let r = app
        .send("POST", CALLS, Some(&token), Some(app.p2p(ALICE)))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // The same claims signed by Switchboard's own key but naming the outside issuer are refused.
    let forged = forge(&app, c.clone());
    let r = app
        .send("POST", CALLS, Some(&forged), Some(app.p2p(ALICE)))
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
}

#[tokio::test]
async fn without_an_admin_token_the_control_api_serves_loopback_clients_without_credentials() {
    let toml = config_toml("").replace(&format!("[admin]\ntoken = \"{ADMIN}\"\n"), "");
    let settings = switchboard::config::Settings::from_toml(&toml).unwrap();
    let opts = switchboard::app::ServeOptions {
        listen: "127.0.0.1:0".into(),
        store: "memory".into(),
        virtual_clock: true,
        https_public_url: false,
    };
    let server = switchboard::app::Application::build(settings, &opts)
        .await
        .unwrap();
    let base = format!("http://{}", server.local_addr());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(server.run_until_stopped(stop.clone()));
    let http = reqwest::Client::new();
    let open = http
        .get(format!("{base}/_switchboard/v1/clock"))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    let with_app_token = http
        .get(format!("{base}/_switchboard/v1/clock"))
        .bearer_auth("eyJhbGciOiJSUzI1NiJ9.e30.x")
        .send()
        .await
        .unwrap();
    assert_eq!(with_app_token.status(), 403);
    stop.cancel();
}

/// A token of the outside issuer: app A's token with `changes` applied.
fn outside_token(key: &EncodingKey, issuer: &str, changes: Value) -> String {
    let mut c = claims(Some(vec!["Calls.Initiate.All"]));
    c["iss"] = json!(issuer);
    for (k, v) in changes.as_object().unwrap() {
        c[k] = v.clone();
    }
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("outside-1".into());
    jsonwebtoken::encode(&h, &c, key).unwrap()
}

#[tokio::test]
async fn trusted_issuer_tokens_must_be_app_only_in_the_apps_tenant_for_an_app_it_may_speak_for() {
    let (jwks_uri, key) = outside_issuer().await;
    let issuer = "https://login.example.test/tenant/v2.0";
    let app = spawn_app_with(
        Backend::Suite,
        &format!(
            "[[trusted_issuers]]\nissuer = \"{issuer}\"\njwks_uri = \"{jwks_uri}\"\napp_ids = [\"{APP_A}\"]\n"
        ),
    )
    .await;
    let other_tenant = "0b0b0000-0000-4000-8000-0000000000ff";
    for (label, changes, status, code) in [
        ("app-only", json!({}), 201, None),
        ("idtyp app", json!({"idtyp": "app"}), 201, None),
        (
            "scp beside roles",
            json!({"scp": "Calls.Read"}),
            403,
            Some("accessDenied"),
        ),
        (
            "idtyp user with roles",
            json!({"idtyp": "user"}),
            403,
            Some("accessDenied"),
        ),
        (
            "idtyp device",
            json!({"idtyp": "device"}),
            401,
            Some("InvalidAuthenticationToken"),
        ),
        (
            "another tenant",
            json!({"tid": other_tenant}),
            401,
            Some("InvalidAuthenticationToken"),
        ),
        (
            "an app the issuer may not speak for",
            json!({"appid": APP_B}),
            401,
            Some("InvalidAuthenticationToken"),
        ),
    ] {
        let token = outside_token(&key, issuer, changes);
        // No tenantId in the body: the token's own tid is what is checked.
        let mut body = app.p2p(ALICE);
        body.as_object_mut().unwrap().remove("tenantId");
        let r = app.send("POST", CALLS, Some(&token), Some(body)).await;
        assert_eq!(r.status, status, "{label}: {}", r.text);
        assert_eq!(r.graph_error().as_deref(), code, "{label}");
    }
    // Switchboard's own tokens follow the same tenant rule.
    let mut c = claims(Some(vec!["Calls.Initiate.All"]));
    c["tid"] = json!(other_tenant);
    c["iss"] = json!(format!("https://sts.windows.net/{other_tenant}/"));
    let mut body = app.p2p(ALICE);
    body.as_object_mut().unwrap().remove("tenantId");
    let r = app
        .send("POST", CALLS, Some(&forge(&app, c)), Some(body))
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
}

#[tokio::test]
async fn with_the_strict_policy_a_jwks_uri_is_fetched_only_from_public_addresses_unless_allowed() {
    let (jwks_uri, key, hits) = counted_outside_issuer().await;
    let issuer = "https://login.example.test/tenant/v2.0";
    let strict = "[callbacks]\nstrict = true\nforbid_private = true\n";
    let trusted = |uri: &str, extra: &str| {
        format!("{strict}[[trusted_issuers]]\nissuer = \"{issuer}\"\njwks_uri = \"{uri}\"\n{extra}")
    };
    let start = |toml: String| async move {
        let settings = switchboard::config::Settings::from_toml(&config_toml(&toml)).unwrap();
        spawn_app_from(Backend::Suite, |_| settings).await
    };
    let unknown_call = "/v1.0/communications/calls/00000000-0000-4000-8000-000000000001";
    let token = outside_token(&key, issuer, json!({}));

    // Opted out: the issuer on loopback is used (the call is simply not found).
    let app = start(trusted(&jwks_uri, "allow_private_network = true\n")).await;
    let r = app.send("GET", unknown_call, Some(&token), None).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) > 0);
    drop(app);

    // Not opted out, and named by a name that resolves to loopback (the machine's own name, on
    // most hosts): never fetched, so its tokens are refused.
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let loopback_only = tokio::net::lookup_host((hostname.as_str(), 0))
        .await
        .map(|a| {
            let v: Vec<_> = a.collect();
            !v.is_empty() && v.iter().all(|a| a.ip().is_loopback())
        })
        .unwrap_or(false);
    if !loopback_only {
        eprintln!("skipped the by-name case: {hostname:?} does not resolve to loopback only");
        return;
    }
    let by_name = jwks_uri.replace("127.0.0.1", &hostname);
    hits.store(0, std::sync::atomic::Ordering::SeqCst);
    let app = start(trusted(&by_name, "")).await;
    let r = app.send("GET", unknown_call, Some(&token), None).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// A token request from the loopback address `from` (127.0.0.x), for `client` with `secret`.
async fn token_from(app: &TestApp, from: [u8; 4], client: &str, secret: &str) -> Resp {
    let http = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(from))
        .build()
        .unwrap();
    into_resp(
        http.post(format!("{}/{TENANT}/oauth2/v2.0/token", app.base))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client),
                ("client_secret", secret),
                ("scope", "https://graph.microsoft.com/.default"),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn wrong_client_secrets_are_throttled_per_client_id_and_per_peer() {
    let app = spawn_app_with(
        Backend::Suite,
        "[token_throttle]\nmax_failures = 3\nwindow_secs = 60\nlockout_secs = 2\n",
    )
    .await;
    let (x, y, z, w) = (
        [127, 0, 0, 2],
        [127, 0, 0, 3],
        [127, 0, 0, 4],
        [127, 0, 0, 5],
    );
    // Successes are never throttled and do not count.
    for _ in 0..20 {
        assert_eq!(token_from(&app, z, APP_B, "secret-b").await.status, 200);
    }
    for _ in 0..3 {
        let r = token_from(&app, x, APP_B, "wrong").await;
        assert_eq!(r.status, 401, "{}", r.text);
    }
    // Locked out: even the right secret is answered 429, from the guessing peer and from others.
    for (label, from) in [("the guessing peer", x), ("another peer", y)] {
        let r = token_from(&app, from, APP_B, "secret-b").await;
        assert_eq!(r.status, 429, "{label}: {}", r.text);
        let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry), "{label}: Retry-After {retry}");
        assert_eq!(r.body["error"], "temporarily_unavailable", "{label}");
        assert_eq!(r.body["error_codes"], json!([50196]), "{label}");
    }
    // Other apps are not locked out, except from the guessing peer itself.
    assert_eq!(token_from(&app, y, APP_A, "secret-a").await.status, 200);
    assert_eq!(token_from(&app, x, APP_A, "secret-a").await.status, 429);
    // A peer that already got a token for the app is not locked out by someone else's guesses.
    assert_eq!(token_from(&app, z, APP_B, "secret-b").await.status, 200);
    // Unknown client ids count against the peer.
    for _ in 0..3 {
        let r = token_from(&app, w, "00000000-0000-0000-0000-000000000000", "x").await;
        assert_eq!(r.status, 401, "{}", r.text);
    }
    assert_eq!(token_from(&app, w, APP_A, "secret-a").await.status, 429);
    // After the lock-out the right secret works again.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(token_from(&app, x, APP_B, "secret-b").await.status, 200);
    assert_eq!(token_from(&app, w, APP_A, "secret-a").await.status, 200);
}

#[tokio::test]
async fn signing_keys_carry_a_certificate_and_tokens_name_it_by_kid_and_x5t() {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let app = spawn_app(Backend::Suite).await;
    let jwks: Value = app
        .http
        .get(format!("{}/{TENANT}/discovery/v2.0/keys", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    let cert = STANDARD
        .decode(key["x5c"][0].as_str().expect("x5c"))
        .expect("a base64 certificate");
    // x5t is the certificate's SHA-1 thumbprint, as RFC 7517 defines it.
    let thumb = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert);
    assert_eq!(key["x5t"], URL_SAFE_NO_PAD.encode(thumb.as_ref()));
    // The certificate holds the same public key as n and e: its modulus bytes are in it.
    let n = URL_SAFE_NO_PAD.decode(key["n"].as_str().unwrap()).unwrap();
    assert!(cert.windows(n.len()).any(|w| w == n.as_slice()));
    // A token's header names the key both ways.
    let token = app.token().await;
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), key["kid"].as_str());
    assert_eq!(header.x5t.as_deref(), key["x5t"].as_str());
}

#[tokio::test]
async fn the_tenant_metadata_has_what_msal_reads_before_it_asks_for_a_token() {
    let app = spawn_app(Backend::Suite).await;
    let meta: Value = app
        .http
        .get(format!(
            "{}/{TENANT}/v2.0/.well-known/openid-configuration",
            app.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // MSAL Python and msal-node refuse a document without any of these.
    for field in [
        "authorization_endpoint",
        "token_endpoint",
        "issuer",
        "jwks_uri",
    ] {
        assert!(
            meta[field].as_str().is_some_and(|v| v.starts_with("http")),
            "{field}: {meta}"
        );
    }
    assert_eq!(
        meta["token_endpoint"],
        format!("{}/{TENANT}/oauth2/v2.0/token", app.base)
    );
}
