//! Settings: documented defaults, then the TOML file (`--config`), then `SWITCHBOARD_*`
//! environment variables. Secrets are redacted when printed. Every mistake a file can hold is
//! found by one check (`check.rs`), which `serve` and `switchboard config check` share; the
//! starter file `switchboard config init` writes is `starter.toml`.

mod check;
mod starter;

pub use check::{ConfigError, Problem};
pub use starter::Starter;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::fabric::simulated::{Behavior, PartyConfig};
pub use crate::net_policy::CallbackPolicy;
use crate::store::{Retention, StoreSettings};

/// A secret string: compared in constant time, never printed.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison, so timing does not reveal how much of a guess was right.
    pub fn matches(&self, candidate: &str) -> bool {
        use subtle::ConstantTimeEq;
        let (a, b) = (self.0.as_bytes(), candidate.as_bytes());
        a.len() == b.len() && bool::from(a.ct_eq(b))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Base URL used in `Location` headers, `@odata.context` and metadata documents. Defaults to
    /// `http://` + the listening address.
    pub public_url: Option<String>,
    pub admin: AdminSettings,
    pub apps: Vec<AppConfig>,
    pub trusted_issuers: Vec<TrustedIssuerConfig>,
    pub parties: Vec<PartyConfig>,
    pub meetings: Vec<MeetingConfig>,
    pub calls: CallSettings,
    pub delivery: DeliverySettings,
    pub notifications: NotificationSettings,
    pub limits: LimitSettings,
    pub callbacks: CallbackPolicy,
    pub token_throttle: TokenThrottleSettings,
    pub store: StoreSettings,
    pub retention: Retention,
    pub media: MediaSettings,
    /// `[sip]`: real calls over SIP; absent, every party is simulated.
    pub sip: Option<crate::sip::SipSettings>,
    /// `[tls]`: the certificate HTTPS connections get (the local authority's by default).
    pub tls: crate::tls::TlsSettings,
    /// `[faults]`: faults injected on Graph requests and notifications, reproducibly.
    pub faults: crate::faults::FaultSettings,
    /// The folder of the `--config` file (set by [`Settings::from_file`]); relative paths in the
    /// `[media]` section start there.
    #[serde(skip)]
    pub config_dir: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaSettings {
    /// No longer used: a prompt that cannot be fetched or read fails its operation. Still
    /// read, so that older files load; the server warns when it is set.
    pub default_prompt_secs: Option<f64>,
    /// Finished recordings kept for download, in the store's data folder (`recordings/`) when
    /// it has one, else in memory; past this many, the oldest go.
    pub keep_recordings: usize,
    /// The folder `file://` prompts are read from (nothing outside it); relative to the config
    /// file's folder. Unset: the config file's folder, or the working directory without
    /// `--config`. Empty: no `file://` prompts.
    pub prompt_folder: Option<String>,
    /// The most bytes read of one prompt (a file's header is read, its size is the file
    /// system's; an http body is streamed, never kept).
    pub max_prompt_bytes: u64,
    /// How long fetching or reading one prompt may take, waiting for a free slot included.
    pub fetch_timeout_secs: f64,
    /// Prompts fetched over http at the same time (and, apart, files read at the same time).
    pub fetch_concurrency: usize,
}

impl Default for MediaSettings {
    fn default() -> Self {
        MediaSettings {
            default_prompt_secs: None,
            keep_recordings: 1000,
            prompt_folder: None,
            max_prompt_bytes: 50 * 1024 * 1024,
            fetch_timeout_secs: 5.0,
            fetch_concurrency: 16,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Bearer token for `/_switchboard`; unset: only loopback clients are served.
    pub token: Option<Secret>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub app_id: String,
    pub tenant_id: String,
    pub client_secret: Secret,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub incoming_call_uri: Option<String>,
    #[serde(default = "default_max_concurrent_calls")]
    pub max_concurrent_calls: usize,
    /// Optional Graph requests per second this app may make; beyond it, 429 with `Retry-After`.
    #[serde(default)]
    pub requests_per_second: Option<f64>,
    #[serde(default)]
    pub display_name: Option<String>,
    /// Ids of the app's application instances (resource accounts): another bot's
    /// `applicationInstance` target with one of them calls this app.
    #[serde(default)]
    pub application_instances: Vec<String>,
}

impl AppConfig {
    /// The app as the engine and the fabrics know it.
    pub fn app_ref(&self) -> crate::domain::AppRef {
        crate::domain::AppRef {
            app_id: self.app_id.clone(),
            tenant_id: self.tenant_id.clone(),
            display_name: self.display_name.clone(),
            max_concurrent_calls: self.max_concurrent_calls,
        }
    }
}

fn default_max_concurrent_calls() -> usize {
    100
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuerConfig {
    pub issuer: String,
    #[serde(default)]
    pub jwks_file: Option<String>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub audience: Option<String>,
    /// The apps (by app id) this issuer may speak for; absent: every configured app.
    #[serde(default)]
    pub app_ids: Option<Vec<String>>,
    /// Fetch `jwks_uri` even when it is on a private network while `[callbacks]` forbids
    /// private addresses (an issuer inside the operator's own network).
    #[serde(default)]
    pub allow_private_network: bool,
}

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MeetingConfig {
    pub join_meeting_id: String,
    #[serde(default)]
    pub passcode: Option<String>,
    #[serde(default)]
    pub parties: Vec<String>,
    /// The meeting's chat thread (`chatInfo.threadId`); default: one made from the join id.
    #[serde(default)]
    pub thread_id: Option<String>,
    /// The organizer's user id: a join by `organizerMeetingInfo` must name this one.
    #[serde(default)]
    pub organizer: Option<String>,
    /// The organizer's tenant (in the `joinWebUrl`); default: the first app's.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// What a `tokenMeetingInfo` join gives.
    #[serde(default)]
    pub token: Option<String>,
    /// Parties waiting in the lobby at start, until a bot admits them.
    #[serde(default)]
    pub lobby: Vec<String>,
    /// A bot joining as a guest waits in the lobby until another bot admits it.
    #[serde(default)]
    pub lobby_for_guests: bool,
}

impl MeetingConfig {
    /// `chatInfo.threadId`: the configured one, or `19:meeting_…@thread.v2` made from the join
    /// id (the base64 of a GUID-shaped digest, as Teams' own look), the same at every start.
    pub fn thread_id(&self) -> String {
        if let Some(t) = &self.thread_id {
            return t.clone();
        }
        use base64::Engine as _;
        let fnv = |seed: u64| {
            self.join_meeting_id.bytes().fold(seed, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            })
        };
        let (a, b) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4));
        let guid = uuid::Uuid::from_u64_pair(a, b).to_string();
        format!(
            "19:meeting_{}@thread.v2",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(guid)
        )
    }

    /// A Teams-style join link, which the samples' join-URL parsers read: the thread, message
    /// `0`, and a context with the tenant (`Tid`) and organizer (`Oid`).
    pub fn join_web_url(&self, default_tenant: &str) -> String {
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let context = serde_json::json!({
            "Tid": self.tenant_id.as_deref().unwrap_or(default_tenant),
            "Oid": self.organizer.as_deref().unwrap_or_default(),
        });
        format!(
            "https://teams.microsoft.com/l/meetup-join/{}/0?context={}",
            enc(&self.thread_id()),
            enc(&context.to_string())
        )
        .replace('+', "%20")
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallSettings {
    /// How long an outgoing call rings before it ends with 408/10057.
    pub ringing_timeout_secs: u64,
    /// How long a call may go without a successful keepAlive before 408/8537.
    pub keep_alive_timeout_secs: u64,
}

impl Default for CallSettings {
    fn default() -> Self {
        CallSettings {
            ringing_timeout_secs: 60,
            keep_alive_timeout_secs: 45 * 60,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    /// Attempts before a notification is marked dead.
    pub max_attempts: u32,
    /// Age (call clock) after which a notification that keeps failing is marked dead.
    pub max_age_secs: u64,
    /// First retry delay; each later one doubles, with jitter.
    pub initial_backoff_ms: u64,
    /// Longest delay between attempts, `Retry-After` included.
    pub max_backoff_secs: u64,
    /// How long one POST may take (real time).
    pub timeout_ms: u64,
    /// Notifications POSTed at the same time, across calls.
    pub concurrency: usize,
    /// Of those, at most this many for one app...
    pub per_app_concurrency: usize,
    /// ...and this many to one receiver of an app (its callback URLs' scheme, host and port),
    /// so that a slow or dead receiver holds up only its own notifications.
    pub per_receiver_concurrency: usize,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            max_attempts: 12,
            max_age_secs: 24 * 3600,
            initial_backoff_ms: 1000,
            max_backoff_secs: 300,
            timeout_ms: 10_000,
            concurrency: 256,
            per_app_concurrency: 64,
            per_receiver_concurrency: 32,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationSettings {
    /// `iss` of the JWT on every notification.
    pub issuer: String,
    /// Lifetime of that JWT.
    pub token_lifetime_secs: u64,
}

impl Default for NotificationSettings {
    fn default() -> Self {
        NotificationSettings {
            issuer: "https://api.botframework.com".into(),
            token_lifetime_secs: 3900,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Longest a request may take before 408... and the connection is dropped.
    pub request_timeout_secs: u64,
    /// How long a connection may sit idle, or take to send its headers.
    pub idle_timeout_secs: u64,
    /// Largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// Connections served at once; at the limit the one idle longest is closed. Unset: 4096, or
    /// three quarters of the open-file limit when that is lower.
    pub max_connections: Option<usize>,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            max_body_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            idle_timeout_secs: 60,
            max_header_bytes: 64 * 1024,
            max_connections: None,
        }
    }
}

/// Throttling of wrong client secrets at the token endpoint, per client id and per peer address.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenThrottleSettings {
    /// Failed attempts (a wrong secret, or an unknown client id for the peer) within
    /// `window_secs` that lock the client id, or the peer, out; `0` turns throttling off.
    pub max_failures: u32,
    /// How long failures are counted for.
    pub window_secs: u64,
    /// How long a lock-out lasts (`429` with `Retry-After`, the secret not even checked).
    pub lockout_secs: u64,
}

impl Default for TokenThrottleSettings {
    fn default() -> Self {
        TokenThrottleSettings {
            max_failures: 10,
            window_secs: 60,
            lockout_secs: 60,
        }
    }
}

/// The development app used when no `--config` is given.
pub const DEV_APP_ID: &str = "5b0d0000-0000-4000-8000-000000000a99";
pub const DEV_TENANT_ID: &str = "5b0d0000-0000-4000-8000-0000000000e1";
pub const DEV_SECRET: &str = "switchboard-dev-secret";

pub const ALL_ROLES: [&str; 5] = [
    "Calls.Initiate.All",
    "Calls.InitiateGroupCall.All",
    "Calls.JoinGroupCall.All",
    "Calls.JoinGroupCallAsGuest.All",
    "Calls.AccessMedia.All",
];

impl Settings {
    /// Reads a TOML file and checks it, then applies the environment: what `serve` runs with.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::read_file(path)?.with_environment()
    }

    /// Reads a TOML file and checks it, without the environment: what `config check` reads.
    /// Every mistake is reported with the file's name, line and column.
    pub fn read_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut s = Self::parse(&text, Some(&path.display().to_string()))?;
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        s.config_dir = Some(dir.map_or_else(|| PathBuf::from("."), Path::to_path_buf));
        Ok(s)
    }

    /// Reads settings from TOML text and checks them, then applies the environment.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::parse(text, None)?.with_environment()
    }

    /// The file's text read and checked; `source` names it in the problems.
    fn parse(text: &str, source: Option<&str>) -> Result<Self, ConfigError> {
        let s: Settings = toml::from_str(text).map_err(|e| check::unreadable(text, source, &e))?;
        let findings = check::findings(&s);
        if findings.is_empty() {
            Ok(s)
        } else {
            Err(ConfigError::Invalid(check::locate(text, source, findings)))
        }
    }

    /// Checks settings made in code (the file's are checked as it is read).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let findings = check::findings(self);
        if findings.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(check::unplaced(findings)))
        }
    }

    /// The documented development setup: one app with every role, one party per behaviour.
    pub fn development() -> Self {
        Settings {
            apps: vec![AppConfig {
                app_id: DEV_APP_ID.into(),
                tenant_id: DEV_TENANT_ID.into(),
                client_secret: Secret::new(DEV_SECRET),
                roles: ALL_ROLES.iter().map(|r| r.to_string()).collect(),
                incoming_call_uri: None,
                max_concurrent_calls: default_max_concurrent_calls(),
                requests_per_second: None,
                display_name: Some("Switchboard development bot".into()),
                application_instances: vec![],
            }],
            parties: dev_parties(),
            meetings: vec![MeetingConfig {
                join_meeting_id: DEV_MEETING_ID.into(),
                passcode: Some(DEV_MEETING_PASSCODE.into()),
                parties: vec![DEV_ALICE.into(), DEV_BOB.into()],
                ..MeetingConfig::default()
            }],
            ..Settings::default()
        }
    }

    /// `SWITCHBOARD_PUBLIC_URL` and `SWITCHBOARD_ADMIN_TOKEN` override the file (an empty
    /// variable counts as unset, as for the command line's variables).
    pub fn with_environment(mut self) -> Result<Self, ConfigError> {
        let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(v) = var("SWITCHBOARD_PUBLIC_URL") {
            if let Some(why) = check::not_http_url(&v) {
                return Err(ConfigError::Invalid(vec![Problem {
                    source: Some("SWITCHBOARD_PUBLIC_URL".into()),
                    position: None,
                    key: String::new(),
                    message: why,
                }]));
            }
            self.public_url = Some(v);
        }
        if let Some(v) = var("SWITCHBOARD_ADMIN_TOKEN") {
            self.admin.token = Some(Secret::new(v));
        }
        Ok(self)
    }

    /// What the settings hold, in a few words: `2 apps, 10 parties, 1 meeting, 0 trusted issuers`.
    pub fn summary(&self) -> String {
        let n = |count: usize, one: &str, many: &str| {
            format!("{count} {}", if count == 1 { one } else { many })
        };
        format!(
            "{}, {}, {}, {}",
            n(self.apps.len(), "app", "apps"),
            n(self.parties.len(), "party", "parties"),
            n(self.meetings.len(), "meeting", "meetings"),
            n(
                self.trusted_issuers.len(),
                "trusted issuer",
                "trusted issuers"
            ),
        )
    }
}

/// The development meeting, with Alice and Bob in it.
pub const DEV_MEETING_ID: &str = "1234567890";
pub const DEV_MEETING_PASSCODE: &str = "switchboard";
const DEV_ALICE: &str = "5b0d0000-0000-4000-8000-00000000a11c";
const DEV_BOB: &str = "5b0d0000-0000-4000-8000-000000000b0b";

/// One party per behaviour, with ids that are easy to type.
fn dev_parties() -> Vec<PartyConfig> {
    use crate::domain::PartyKind::{Phone, User};
    let p = |id: &str, kind, name: &str, behavior, after| PartyConfig {
        id: id.into(),
        kind,
        display_name: Some(name.into()),
        behavior,
        answer_after_ms: after,
        record_seconds: None,
        record_wav: None,
        sip_uri: None,
    };
    vec![
        p(DEV_ALICE, User, "Alice", Behavior::Answer, Some(1000)),
        p(DEV_BOB, User, "Bob", Behavior::Answer, Some(3000)),
        p(
            "5b0d0000-0000-4000-8000-00000000ca01",
            User,
            "Carol (declines)",
            Behavior::Reject,
            Some(2000),
        ),
        p(
            "5b0d0000-0000-4000-8000-00000000da1e",
            User,
            "Dave (busy)",
            Behavior::Busy,
            None,
        ),
        p(
            "5b0d0000-0000-4000-8000-00000000e1e0",
            User,
            "Erin (never answers)",
            Behavior::NoAnswer,
            None,
        ),
        p(
            "5b0d0000-0000-4000-8000-00000000f00d",
            User,
            "Frank (unreachable)",
            Behavior::Unreachable,
            None,
        ),
        p(
            "+15550100",
            Phone,
            "Front desk phone",
            Behavior::Answer,
            Some(1000),
        ),
        p(
            "+15550199",
            Phone,
            "Unanswered phone",
            Behavior::NoAnswer,
            None,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_example_config_parses() {
        let text = r#"
public_url = "http://127.0.0.1:8080"
[admin]
token = "secret-admin-token"
[[apps]]
app_id = "3f1b0000-0000-4000-8000-000000000001"
tenant_id = "9a7c0000-0000-4000-8000-000000000001"
client_secret = "s3cret"
roles = ["Calls.Initiate.All"]
incoming_call_uri = "http://127.0.0.1:9000/api/calls"
max_concurrent_calls = 100
[[trusted_issuers]]
issuer = "https://login.example.com/tenant/v2.0"
jwks_file = "keys.json"
audience = "https://graph.microsoft.com"
[[parties]]
id = "5e9f0000-0000-4000-8000-000000000001"
kind = "user"
display_name = "Alice"
behavior = "answer"
answer_after_ms = 200
[[parties]]
id = "+15550100"
kind = "phone"
behavior = "private_calling_disabled"
[[meetings]]
join_meeting_id = "1234567890"
passcode = "abc123"
parties = ["5e9f0000-0000-4000-8000-000000000001", "+15550100"]
"#;
        let s: Settings = toml::from_str(text).unwrap();
        s.validate().unwrap();
        assert_eq!(s.apps[0].max_concurrent_calls, 100);
        assert_eq!(s.parties[1].behavior, Behavior::PrivateCallingDisabled);
        assert!(s.admin.token.unwrap().matches("secret-admin-token"));
    }

    #[test]
    fn durations_longer_than_ten_years_are_refused() {
        let err = Settings::from_toml("[calls]\nkeep_alive_timeout_secs = 18446744073709551615\n")
            .unwrap_err();
        assert!(
            err.to_string().contains("calls.keep_alive_timeout_secs"),
            "{err}"
        );
        let err = Settings::from_toml(
            "[[parties]]\nid = \"p\"\nbehavior = \"answer\"\nanswer_after_ms = 400000000000000\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("parties[0].answer_after_ms"),
            "{err}"
        );
        Settings::from_toml("[calls]\nkeep_alive_timeout_secs = 315360000\n").unwrap();
    }

    #[test]
    fn secrets_are_redacted_when_printed() {
        let s = Settings::development();
        let printed = format!("{s:?}");
        assert!(!printed.contains(DEV_SECRET), "{printed}");
    }

    #[test]
    fn secret_comparison_needs_the_whole_secret() {
        let s = Secret::new("abc");
        assert!(s.matches("abc"));
        assert!(!s.matches("ab"));
        assert!(!s.matches("abcd"));
    }
}
