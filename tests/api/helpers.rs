//! `spawn_app()` and the callback receiver.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use switchboard::app::{Application, ServeOptions};
use switchboard::config::Settings;
use tokio_util::sync::CancellationToken;

pub const TENANT: &str = "8e4c2a5b-6f0d-4c1e-9a3b-2d7f1e0c9b11";
pub const APP_A: &str = "1a2b3c4d-0000-4000-8000-00000000000a";
pub const APP_B: &str = "1a2b3c4d-0000-4000-8000-00000000000b";
pub const APP_NOROLE: &str = "1a2b3c4d-0000-4000-8000-00000000000c";
pub const ADMIN: &str = "test-admin-token";
pub const ALICE: &str = "5e9f0000-0000-4000-8000-000000000001";
/// A second user who answers at once.
pub const BOB: &str = "5e9f0000-0000-4000-8000-000000000002";
/// A user who never answers.
pub const SILENT: &str = "5e9f0000-0000-4000-8000-000000000011";
pub const PHONE: &str = "+15550100";
/// Two users who answer at once and sit in the test meeting (only group tests use them).
pub const CAROL: &str = "5e9f0000-0000-4000-8000-000000000031";
pub const DAVE: &str = "5e9f0000-0000-4000-8000-000000000032";
/// The test meeting's join id and passcode; CAROL and DAVE are in it.
pub const MEETING: &str = "4410029387";
pub const MEETING_PASSCODE: &str = "s3cret-pass";

/// The store a test runs on.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Memory,
    Sqlite,
    /// The store this run of the suite is on: `SWITCHBOARD_TEST_STORE` (`memory`, the default,
    /// or `sqlite`). `scripts/test` runs the suite once on each.
    Suite,
}

impl Backend {
    /// `Suite` made concrete.
    fn resolve(self) -> Backend {
        match self {
            Backend::Suite => match std::env::var("SWITCHBOARD_TEST_STORE").as_deref() {
                Ok("sqlite") => Backend::Sqlite,
                Ok("memory") | Err(_) => Backend::Memory,
                Ok(other) => panic!("SWITCHBOARD_TEST_STORE={other}: expected memory or sqlite"),
            },
            b => b,
        }
    }
}

pub const BACKENDS: [Backend; 2] = [Backend::Memory, Backend::Sqlite];

/// Parties of every behaviour: (id, kind, behaviour).
pub const PARTIES: &[(&str, &str, &str)] = &[
    (ALICE, "user", "answer"),
    ("5e9f0000-0000-4000-8000-000000000002", "user", "answer"),
    ("5e9f0000-0000-4000-8000-000000000005", "user", "not_found"),
    (
        "5e9f0000-0000-4000-8000-000000000006",
        "user",
        "unreachable",
    ),
    ("5e9f0000-0000-4000-8000-000000000007", "user", "unroutable"),
    (
        "5e9f0000-0000-4000-8000-000000000008",
        "user",
        "private_calling_disabled",
    ),
    ("5e9f0000-0000-4000-8000-000000000009", "user", "reject"),
    ("5e9f0000-0000-4000-8000-000000000010", "user", "busy"),
    ("5e9f0000-0000-4000-8000-000000000011", "user", "no_answer"),
    (PHONE, "phone", "answer"),
];

pub fn config_toml(extra: &str) -> String {
    config_toml_with(extra, None)
}

/// The test config; with `incoming`, apps A and B get that `incoming_call_uri`.
pub fn config_toml_with(extra: &str, incoming: Option<&str>) -> String {
    let mut s = format!("[admin]\ntoken = \"{ADMIN}\"\n\n");
    for (app, roles) in [
        (
            APP_A,
            "\"Calls.Initiate.All\", \"Calls.InitiateGroupCall.All\", \"Calls.JoinGroupCall.All\", \"Calls.JoinGroupCallAsGuest.All\", \"Calls.AccessMedia.All\"",
        ),
        (APP_B, "\"Calls.Initiate.All\""),
        (APP_NOROLE, ""),
    ] {
        s += &format!(
            "[[apps]]\napp_id = \"{app}\"\ntenant_id = \"{TENANT}\"\nclient_secret = \"secret-{}\"\nroles = [{roles}]\n\n",
            &app[app.len() - 1..]
        );
        if let Some(uri) = incoming.filter(|_| app != APP_NOROLE) {
            s += &format!("incoming_call_uri = \"{uri}\"\n\n");
        }
    }
    for (id, kind, behavior) in PARTIES {
        s += &format!(
            "[[parties]]\nid = \"{id}\"\nkind = \"{kind}\"\nbehavior = \"{behavior}\"\n\n"
        );
    }
    for (id, name) in [(CAROL, "Carol"), (DAVE, "Dave")] {
        s += &format!(
            "[[parties]]\nid = \"{id}\"\nkind = \"user\"\ndisplay_name = \"{name}\"\nbehavior = \"answer\"\n\n"
        );
    }
    s += &format!(
        "[[meetings]]\njoin_meeting_id = \"{MEETING}\"\npasscode = \"{MEETING_PASSCODE}\"\nparties = [\"{CAROL}\", \"{DAVE}\"]\n\n"
    );
    s + extra
}

/// A callback receiver: records every POST (on any path, with the path) and answers with the
/// statuses it is told to, then 202. It also serves files for prompts fetched over http.
#[derive(Clone, Default)]
pub struct Receiver {
    pub addr: Option<SocketAddr>,
    inner: Arc<Mutex<ReceiverState>>,
}

#[derive(Default)]
struct ReceiverState {
    received: Vec<Received>,
    plan: VecDeque<(u16, Option<&'static str>)>,
    /// Files served on `GET /files/{name}` (prompts fetched over http).
    files: std::collections::HashMap<String, Vec<u8>>,
    /// How long each POST waits before it is recorded and answered.
    delay: Duration,
}

#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Value,
    pub status: u16,
    /// The path the POST went to (`/api/calls`, `/incoming`, ...).
    pub path: String,
}

impl Received {
    /// The notifications in this POST.
    pub fn notes(&self) -> Vec<Value> {
        self.body["value"].as_array().cloned().unwrap_or_default()
    }
}

async fn receive(
    State(r): State<Receiver>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    let delay = r.inner.lock().unwrap().delay;
    tokio::time::sleep(delay).await;
    let mut st = r.inner.lock().unwrap();
    let (status, retry_after) = st.plan.pop_front().unwrap_or((202, None));
    st.received.push(Received {
        headers,
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
        status,
        path: uri.path().to_string(),
    });
    let mut resp = StatusCode::from_u16(status).unwrap().into_response();
    // With a redirect status the plan's value is its Location, otherwise a Retry-After.
    let header = if (300..400).contains(&status) {
        "location"
    } else {
        "retry-after"
    };
    if let Some(value) = retry_after {
        resp.headers_mut().insert(header, value.parse().unwrap());
    }
    resp
}

impl Receiver {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let r = Receiver {
            addr: Some(listener.local_addr().unwrap()),
            ..Receiver::default()
        };
        let app = axum::Router::new()
            .route("/files/{name}", axum::routing::get(serve_file))
            .fallback(axum::routing::post(receive))
            .with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        r
    }

    pub fn url(&self) -> String {
        self.url_for("/api/calls")
    }

    /// A URL on this receiver; notifications POSTed to any path are recorded with it.
    pub fn url_for(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr.unwrap())
    }

    /// Serves `bytes` on `GET /files/{name}` and returns the URL.
    pub fn serve(&self, name: &str, bytes: Vec<u8>) -> String {
        self.inner
            .lock()
            .unwrap()
            .files
            .insert(name.to_string(), bytes);
        self.url_for(&format!("/files/{name}"))
    }

    /// (path, notification) of every accepted notification about `call_id` or one of its
    /// sub-resources, in the order received.
    pub fn notes(&self, call_id: &str) -> Vec<(String, Value)> {
        let own = format!("/communications/calls/{call_id}");
        let sub = format!("{own}/");
        self.received()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .flat_map(|r| r.notes().into_iter().map(|n| (r.path.clone(), n)))
            .filter(|(_, n)| {
                n["resourceUrl"]
                    .as_str()
                    .is_some_and(|u| u == own || u.starts_with(&sub))
            })
            .collect()
    }

    /// Waits until `pred` holds for `call_id`'s notifications (or 5 s pass) and returns them.
    pub async fn wait_notes(
        &self,
        call_id: &str,
        pred: impl Fn(&[(String, Value)]) -> bool,
    ) -> Vec<(String, Value)> {
        for _ in 0..250 {
            let n = self.notes(call_id);
            if pred(&n) {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.notes(call_id)
    }

    /// Makes every POST wait this long before it is recorded and answered.
    pub fn answer_after(&self, delay: Duration) {
        self.inner.lock().unwrap().delay = delay;
    }

    /// Answers the next POSTs with these statuses (and `Retry-After` values, or `Location` for a
    /// 3xx).
    pub fn fail_next(&self, plan: &[(u16, Option<&'static str>)]) {
        self.inner.lock().unwrap().plan.extend(plan.iter().copied());
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// (changeType, state) of the call notifications about `call_id` that were accepted.
    pub fn states(&self, call_id: &str) -> Vec<(String, String)> {
        self.received()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .flat_map(|r| r.notes())
            .filter(|n| n["resourceUrl"] == format!("/communications/calls/{call_id}"))
            .map(|n| {
                (
                    n["changeType"].as_str().unwrap_or_default().to_string(),
                    n["resourceData"]["state"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect()
    }

    /// The `resultInfo` of the terminated notification about `call_id`.
    pub fn end_reason(&self, call_id: &str) -> Option<(i64, i64)> {
        self.received()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .flat_map(|r| r.notes())
            .filter(|n| n["resourceUrl"] == format!("/communications/calls/{call_id}"))
            .find(|n| n["resourceData"]["state"] == "terminated")
            .map(|n| {
                let ri = &n["resourceData"]["resultInfo"];
                (
                    ri["code"].as_i64().unwrap(),
                    ri["subcode"].as_i64().unwrap(),
                )
            })
    }

    /// Waits until `pred` holds for `call_id`'s states (or 5 s pass) and returns them.
    pub async fn wait_for(
        &self,
        call_id: &str,
        pred: impl Fn(&[(String, String)]) -> bool,
    ) -> Vec<(String, String)> {
        for _ in 0..250 {
            let s = self.states(call_id);
            if pred(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.states(call_id)
    }
}

async fn serve_file(
    State(r): State<Receiver>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> axum::response::Response {
    match r.inner.lock().unwrap().files.get(&name) {
        Some(b) => (StatusCode::OK, b.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

pub fn has(states: &[(String, String)], change: &str, state: &str) -> bool {
    states.iter().any(|(c, s)| c == change && s == state)
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub receiver: Receiver,
    pub state: Arc<switchboard::http::AppState>,
    /// Where SIP listens, with a `[sip]` section.
    pub sip: Option<SocketAddr>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: Option<TempDir>,
}

/// A folder removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let p = std::env::temp_dir().join(format!("sb-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, "").await
}

pub async fn spawn_app_with(backend: Backend, extra_config: &str) -> TestApp {
    spawn_app_on(backend, extra_config, "127.0.0.1:0", |_| {})
        .await
        .unwrap()
}

/// The test app listening on `listen`, its settings changed by `tweak`; an error if it cannot
/// start (say, no IPv6 on this machine).
pub async fn spawn_app_on(
    backend: Backend,
    extra_config: &str,
    listen: &str,
    tweak: impl FnOnce(&mut Settings),
) -> anyhow::Result<TestApp> {
    start_app(
        backend,
        None,
        listen,
        test_settings(extra_config, tweak),
        None,
    )
    .await
}

/// The test config with `extra_config`, its apps' incoming_call_uri the receiver's, then
/// `tweak`ed.
fn test_settings(
    extra_config: &str,
    tweak: impl FnOnce(&mut Settings),
) -> impl FnOnce(&str) -> anyhow::Result<Settings> {
    move |incoming: &str| {
        let mut s = Settings::from_toml(&config_toml_with(extra_config, Some(incoming)))?;
        tweak(&mut s);
        Ok(s)
    }
}

/// Starts the app with the settings `settings` makes from the receiver's incoming-call URL.
pub async fn spawn_app_from(backend: Backend, settings: impl FnOnce(&str) -> Settings) -> TestApp {
    start_app(backend, None, "127.0.0.1:0", |i| Ok(settings(i)), None)
        .await
        .unwrap()
}

/// The test app on the SQLite store at `store` (a `sqlite://` URL the caller owns), its
/// settings changed by `tweak`; an error if it cannot start.
pub async fn spawn_app_at(
    store: &str,
    extra_config: &str,
    tweak: impl FnOnce(&mut Settings),
) -> anyhow::Result<TestApp> {
    let settings = test_settings(extra_config, tweak);
    start_app(
        Backend::Sqlite,
        Some(Ok(store.into())),
        "127.0.0.1:0",
        settings,
        None,
    )
    .await
}

/// The test app on a store the test made (one that fails on cue, say).
pub async fn spawn_app_over(store: Arc<dyn switchboard::store::Store>) -> TestApp {
    let opened = switchboard::store::Opened {
        store,
        data_dir: None,
    };
    let settings = test_settings("", |_| {});
    start_app(
        Backend::Memory,
        Some(Err(opened)),
        "127.0.0.1:0",
        settings,
        None,
    )
    .await
    .unwrap()
}

/// The test app with `fabric` behind its calls (a test's own trunk) instead of the simulated
/// parties, on `store` (or a memory store).
pub async fn spawn_app_with_fabric(
    fabric: Arc<dyn switchboard::fabric::Fabric>,
    store: Option<Arc<dyn switchboard::store::Store>>,
) -> TestApp {
    let opened = match store {
        Some(store) => switchboard::store::Opened {
            store,
            data_dir: None,
        },
        None => switchboard::store::open("memory", Default::default()).unwrap(),
    };
    let settings = test_settings("", |_| {});
    start_app(
        Backend::Memory,
        Some(Err(opened)),
        "127.0.0.1:0",
        settings,
        Some(fabric),
    )
    .await
    .unwrap()
}

/// `store`: a URL, or a store already opened; none: the backend's own, fresh.
async fn start_app(
    backend: Backend,
    store: Option<Result<String, switchboard::store::Opened>>,
    listen: &str,
    settings: impl FnOnce(&str) -> anyhow::Result<Settings>,
    fabric: Option<Arc<dyn switchboard::fabric::Fabric>>,
) -> anyhow::Result<TestApp> {
    // The receiver starts first so the apps' incoming_call_uri can point at it.
    let receiver = Receiver::start().await;
    let settings = settings(&receiver.url_for("/incoming"))?;
    let backend = backend.resolve();
    let dir = (store.is_none() && matches!(backend, Backend::Sqlite)).then(TempDir::new);
    let (store, opened) = match (&dir, store) {
        (_, Some(Ok(url))) => (url, None),
        (_, Some(Err(opened))) => ("(the test's)".into(), Some(opened)),
        (Some(d), None) => (format!("sqlite://{}/sb.db", d.0.display()), None),
        (None, None) => ("memory".into(), None),
    };
    let opts = ServeOptions {
        listen: listen.into(),
        store,
        virtual_clock: true,
        https_public_url: false,
    };
    let app = match opened {
        Some(opened) => Application::build_with(settings, &opts, opened, fabric).await?,
        None => Application::build(settings, &opts).await?,
    };
    let base = format!("http://{}", app.local_addr());
    let state = app.state();
    let sip = app.sip_addr();
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(stop.clone()));
    Ok(TestApp {
        base,
        http: reqwest::Client::new(),
        receiver,
        state,
        sip,
        stop,
        task: Some(task),
        _dir: dir,
    })
}

impl TestApp {
    /// Stops the server and waits until it has (its store closed).
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    /// The Graph error code, when the body is a well-formed Graph error.
    pub fn graph_error(&self) -> Option<String> {
        let e = &self.body["error"];
        let inner = &e["innerError"];
        (e["message"].is_string() && inner["request-id"].is_string() && inner["date"].is_string())
            .then(|| e["code"].as_str().unwrap_or_default().to_string())
    }
}

impl TestApp {
    pub async fn token_for(&self, app: &str) -> String {
        let r = token_response(&self.http, &self.base, app).await;
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn token(&self) -> String {
        self.token_for(APP_A).await
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut rb = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        into_resp(rb.send().await.unwrap()).await
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        self.send(
            method,
            &format!("/_switchboard/v1{path}"),
            Some(ADMIN),
            body,
        )
        .await
    }

    pub async fn advance(&self, seconds: f64) {
        let r = self
            .admin("POST", "/clock/advance", Some(json!({"seconds": seconds})))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }

    /// A P2P create body for `target` (a user id, or a phone number starting with `+`).
    pub fn p2p(&self, target: &str) -> Value {
        let identity = if target.starts_with('+') {
            json!({"phone": {"id": target}})
        } else {
            json!({"user": {"id": target, "displayName": "Target"}})
        };
        json!({
            "@odata.type": "#microsoft.graph.call",
            "callbackUri": self.receiver.url(),
            "targets": [{"@odata.type": "#microsoft.graph.invitationParticipantInfo", "identity": identity}],
            "requestedModalities": ["audio"],
            "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"},
            "tenantId": TENANT,
        })
    }

    /// Creates a call to `target` and returns its id.
    pub async fn create(&self, token: &str, target: &str) -> String {
        let r = self
            .send(
                "POST",
                "/v1.0/communications/calls",
                Some(token),
                Some(self.p2p(target)),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.body["id"].as_str().unwrap().to_string()
    }

    /// Creates a call to Alice and waits until it is established.
    pub async fn established(&self, token: &str) -> String {
        let id = self.create(token, ALICE).await;
        let states = self
            .receiver
            .wait_for(&id, |s| has(s, "updated", "established"))
            .await;
        assert!(has(&states, "updated", "established"), "{states:?}");
        id
    }
}

/// An `invitationParticipantInfo` for `target` (a user id, or a phone number starting with `+`).
pub fn invitee(target: &str) -> Value {
    let identity = if target.starts_with('+') {
        json!({"@odata.type": "#microsoft.graph.identitySet",
               "phone": {"@odata.type": "#microsoft.graph.identity", "id": target}})
    } else {
        json!({"@odata.type": "#microsoft.graph.identitySet",
               "user": {"@odata.type": "#microsoft.graph.identity", "id": target}})
    };
    json!({"@odata.type": "#microsoft.graph.invitationParticipantInfo", "identity": identity})
}

/// The id a participant (roster entry) or identity set names: its user, phone or application.
pub fn identity_id(participant: &Value) -> Option<String> {
    let set = if participant["info"].is_object() {
        &participant["info"]["identity"]
    } else {
        participant
    };
    ["user", "phone", "application"]
        .iter()
        .find_map(|k| set[k]["id"].as_str())
        .map(str::to_string)
}

/// Group calls and meetings.
impl TestApp {
    /// A group-call create body with these targets.
    pub fn group(&self, targets: &[&str]) -> Value {
        let mut b = self.p2p(ALICE);
        b["targets"] = targets.iter().map(|t| invitee(t)).collect();
        b
    }

    /// A body joining meeting `join_id` with `passcode`.
    pub fn meeting(&self, join_id: &str, passcode: &str) -> Value {
        let mut b = self.p2p(ALICE);
        b.as_object_mut().unwrap().remove("targets");
        b["meetingInfo"] = json!({
            "@odata.type": "#microsoft.graph.joinMeetingIdMeetingInfo",
            "joinMeetingId": join_id,
            "passcode": passcode,
        });
        b
    }
}

impl Receiver {
    /// The roster notifications about `call_id` accepted so far, oldest first: each the
    /// participant array it carried.
    pub fn rosters(&self, call_id: &str) -> Vec<Vec<Value>> {
        let url = format!("/communications/calls/{call_id}/participants");
        self.notes(call_id)
            .into_iter()
            .filter(|(_, n)| n["resourceUrl"] == url.as_str())
            .map(|(_, n)| n["resourceData"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

/// The token endpoint's answer to `app`'s client-credentials request (its test secret,
/// `secret-` and the last character of its id), through `http` to the server at `base`.
pub async fn token_response(http: &reqwest::Client, base: &str, app: &str) -> reqwest::Response {
    let secret = format!("secret-{}", &app[app.len() - 1..]);
    http.post(format!("{base}/{TENANT}/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", app),
            ("client_secret", &secret),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap()
}

/// Incoming calls: a party dials the app, the bot answers.
impl TestApp {
    /// `POST /parties/{party}/dial` to app A; returns the call id.
    pub async fn dial(&self, party: &str) -> String {
        let r = self
            .admin(
                "POST",
                &format!("/parties/{party}/dial"),
                Some(json!({"appId": APP_A})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.body["callId"].as_str().unwrap().to_string()
    }

    /// Dials the app from `party` and waits for the incoming-call notification; returns the
    /// call id and that notification.
    pub async fn incoming(&self, party: &str) -> (String, Value) {
        let id = self.dial(party).await;
        let notes = self
            .receiver
            .wait_notes(&id, |n| n.iter().any(|(_, n)| n["changeType"] == "created"))
            .await;
        let created = notes
            .iter()
            .find(|(_, n)| n["changeType"] == "created")
            .unwrap_or_else(|| panic!("no incoming-call notification for {id}: {notes:?}"))
            .1
            .clone();
        (id, created)
    }

    /// An answer body with service-hosted media and `callback` as callbackUri.
    pub fn answer_body(&self, callback: &str) -> Value {
        json!({
            "callbackUri": callback,
            "acceptedModalities": ["audio"],
            "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"},
        })
    }

    /// `party` calls the app and the bot answers (callbacks to the receiver's `/api/calls`);
    /// returns the call id once it is established.
    pub async fn answered(&self, token: &str, party: &str) -> String {
        let (id, _) = self.incoming(party).await;
        let r = self
            .send(
                "POST",
                &format!("/v1.0/communications/calls/{id}/answer"),
                Some(token),
                Some(self.answer_body(&self.receiver.url())),
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
        let states = self
            .receiver
            .wait_for(&id, |s| has(s, "updated", "established"))
            .await;
        assert!(has(&states, "updated", "established"), "{states:?}");
        id
    }

    /// The notifications queued for a call so far (from the deliveries log), delivered or not.
    pub async fn queued(&self, call_id: &str) -> Vec<Value> {
        let r = self
            .admin("GET", &format!("/calls/{call_id}/deliveries"), None)
            .await;
        if r.status == 404 {
            return vec![];
        }
        assert_eq!(r.status, 200, "{}", r.text);
        r.body["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|d| d["body"]["value"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// The party's view of its calls (`GET /parties/{id}`).
    pub async fn party(&self, party: &str) -> Value {
        let r = self.admin("GET", &format!("/parties/{party}"), None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body
    }
}

/// A silent WAV file (16 kHz, mono, 16-bit PCM) lasting `seconds`.
pub fn wav_bytes(seconds: f64) -> Vec<u8> {
    let data_len = (seconds * 16_000.0) as u32 * 2;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&16_000u32.to_le_bytes());
    out.extend_from_slice(&32_000u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    out.resize(44 + data_len as usize, 0);
    out
}

pub async fn into_resp(r: reqwest::Response) -> Resp {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    Resp {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

/// The `[media]` section that lets `file://` prompts come from `dir` (and `extra` settings).
pub fn prompt_folder(dir: &TempDir) -> String {
    prompt_folder_with(dir, "")
}

/// [`prompt_folder`] with more `[media]` settings.
pub fn prompt_folder_with(dir: &TempDir, extra_media: &str) -> String {
    format!(
        "[media]\nprompt_folder = {:?}\n{extra_media}\n",
        dir.0.display().to_string()
    )
}

/// A WAV header of `rate` Hz, `channels`, `bits`, declaring `data_len` bytes of audio.
pub fn wav_header(rate: u32, channels: u16, bits: u16, data_len: u32) -> Vec<u8> {
    let block = channels * bits / 8;
    let mut h = b"RIFF".to_vec();
    h.extend_from_slice(&(36u32.saturating_add(data_len)).to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&channels.to_le_bytes());
    h.extend_from_slice(&rate.to_le_bytes());
    h.extend_from_slice(&(rate * block as u32).to_le_bytes());
    h.extend_from_slice(&block.to_le_bytes());
    h.extend_from_slice(&bits.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data_len.to_le_bytes());
    h
}

/// A prompt server that answers every GET with `header` and then zeros without end, paced to
/// about 64 MB/s, with `Content-Length: content_length` when given (else the body ends when the
/// connection does). It counts what it managed to write, and whether the client hung up.
pub struct EndlessPrompt {
    pub url: String,
    pub written: Arc<std::sync::atomic::AtomicU64>,
    pub hung_up: Arc<std::sync::atomic::AtomicBool>,
}

impl EndlessPrompt {
    pub async fn start(header: Vec<u8>, content_length: Option<u64>) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/endless.wav", listener.local_addr().unwrap());
        let written = Arc::new(AtomicU64::new(0));
        let hung_up = Arc::new(AtomicBool::new(false));
        let (w, h) = (written.clone(), hung_up.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (header, w, h) = (header.clone(), w.clone(), h.clone());
                tokio::spawn(async move {
                    let mut req = [0u8; 4096];
                    let _ = sock.read(&mut req).await;
                    let length = content_length
                        .map(|n| format!("Content-Length: {n}\r\n"))
                        .unwrap_or_default();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\n{length}Connection: close\r\n\r\n"
                    );
                    if sock.write_all(head.as_bytes()).await.is_err()
                        || sock.write_all(&header).await.is_err()
                    {
                        h.store(true, Ordering::SeqCst);
                        return;
                    }
                    w.fetch_add(header.len() as u64, Ordering::SeqCst);
                    let zeros = vec![0u8; 64 * 1024];
                    loop {
                        if sock.write_all(&zeros).await.is_err() {
                            h.store(true, Ordering::SeqCst);
                            return;
                        }
                        w.fetch_add(zeros.len() as u64, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                });
            }
        });
        EndlessPrompt {
            url,
            written,
            hung_up,
        }
    }

    pub fn written(&self) -> u64 {
        self.written.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits up to `secs` for the client to hang up.
    pub async fn wait_hung_up(&self, secs: u64) -> bool {
        for _ in 0..secs * 50 {
            if self.hung_up.load(std::sync::atomic::Ordering::SeqCst) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}
