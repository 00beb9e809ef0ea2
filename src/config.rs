//! Settings: documented defaults, then the TOML file (`--config`), then `SWITCHBOARD_*`
//! environment variables. Secrets are redacted when printed.

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
    /// The folder of the `--config` file (set by [`Settings::from_file`]); relative paths in the
    /// `[media]` section start there.
    #[serde(skip)]
    pub config_dir: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaSettings {
    /// How long a prompt plays when its WAV file cannot be fetched or read.
    pub default_prompt_secs: f64,
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
            default_prompt_secs: 5.0,
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

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeetingConfig {
    pub join_meeting_id: String,
    #[serde(default)]
    pub passcode: Option<String>,
    #[serde(default)]
    pub parties: Vec<String>,
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
    /// Reads a TOML file, then applies the environment.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let mut s =
            Self::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        s.config_dir = Some(dir.map_or_else(|| PathBuf::from("."), Path::to_path_buf));
        Ok(s)
    }

    /// Reads settings from TOML text, then applies the environment.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let mut s: Settings = toml::from_str(text)?;
        s.apply_env();
        s.validate()?;
        Ok(s)
    }

    /// The documented development setup: one app with every role, one party per behaviour.
    pub fn development() -> Self {
        let mut s = Settings {
            apps: vec![AppConfig {
                app_id: DEV_APP_ID.into(),
                tenant_id: DEV_TENANT_ID.into(),
                client_secret: Secret::new(DEV_SECRET),
                roles: ALL_ROLES.iter().map(|r| r.to_string()).collect(),
                incoming_call_uri: None,
                max_concurrent_calls: default_max_concurrent_calls(),
                requests_per_second: None,
                display_name: Some("Switchboard development bot".into()),
            }],
            parties: dev_parties(),
            meetings: vec![MeetingConfig {
                join_meeting_id: DEV_MEETING_ID.into(),
                passcode: Some(DEV_MEETING_PASSCODE.into()),
                parties: vec![DEV_ALICE.into(), DEV_BOB.into()],
            }],
            ..Settings::default()
        };
        s.apply_env();
        s
    }

    /// `SWITCHBOARD_PUBLIC_URL` and `SWITCHBOARD_ADMIN_TOKEN` override the file.
    fn apply_env(&mut self) {
        if let Ok(v) = std::env::var("SWITCHBOARD_PUBLIC_URL") {
            self.public_url = Some(v);
        }
        if let Ok(v) = std::env::var("SWITCHBOARD_ADMIN_TOKEN") {
            self.admin.token = Some(Secret::new(v));
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        let media = &self.media;
        if !(media.fetch_timeout_secs > 0.0 && media.fetch_timeout_secs <= 3600.0) {
            anyhow::bail!("[media] fetch_timeout_secs must be more than 0 and at most 3600");
        }
        if media.fetch_concurrency == 0 {
            anyhow::bail!("[media] fetch_concurrency must be at least 1");
        }
        for t in &self.trusted_issuers {
            if t.jwks_file.is_none() == t.jwks_uri.is_none() {
                anyhow::bail!(
                    "trusted issuer {}: give exactly one of jwks_file and jwks_uri",
                    t.issuer
                );
            }
            if let Some(uri) = &t.jwks_uri
                && self.callbacks.forbids_private()
                && !t.allow_private_network
                && let Some(r) = private_literal(uri)
            {
                anyhow::bail!(
                    "trusted issuer {}: jwks_uri {}: {r}; set allow_private_network = true on this issuer if it is meant",
                    t.issuer,
                    crate::net_policy::redact_url(uri)
                );
            }
        }
        for t in &self.trusted_issuers {
            for id in t.app_ids.iter().flatten() {
                if !self.apps.iter().any(|a| a.app_id.eq_ignore_ascii_case(id)) {
                    anyhow::bail!(
                        "trusted issuer {}: app_ids names {id}, which is not a configured app",
                        t.issuer
                    );
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for a in &self.apps {
            if !seen.insert(a.app_id.to_ascii_lowercase()) {
                anyhow::bail!("app {} is configured twice", a.app_id);
            }
            if let Some(uri) = &a.incoming_call_uri
                && self.callbacks.forbids_private()
                && let Some(r) = private_literal(uri)
            {
                anyhow::bail!(
                    "app {}: incoming_call_uri {}: {r}, so no incoming call could be delivered",
                    a.app_id,
                    crate::net_policy::redact_url(uri)
                );
            }
        }
        if self.limits.max_connections == Some(0) {
            anyhow::bail!("limits.max_connections must be at least 1");
        }
        self.check_durations()
    }

    /// Every configured duration is at most ten years ([`crate::clock::MAX_SPAN_SECS`]), so
    /// timers computed from the call clock stay far inside the range of time arithmetic.
    fn check_durations(&self) -> anyhow::Result<()> {
        let max = crate::clock::MAX_SPAN_SECS;
        let mut spans = vec![
            (
                "calls.ringing_timeout_secs",
                self.calls.ringing_timeout_secs,
            ),
            (
                "calls.keep_alive_timeout_secs",
                self.calls.keep_alive_timeout_secs,
            ),
            ("delivery.max_backoff_secs", self.delivery.max_backoff_secs),
            (
                "delivery.initial_backoff_ms",
                self.delivery.initial_backoff_ms / 1000,
            ),
            (
                "notifications.token_lifetime_secs",
                self.notifications.token_lifetime_secs,
            ),
        ];
        for p in &self.parties {
            if let Some(ms) = p.answer_after_ms {
                spans.push(("parties.answer_after_ms", ms / 1000));
            }
        }
        match spans.into_iter().find(|(_, secs)| *secs > max) {
            Some((name, _)) => anyhow::bail!("{name} is longer than ten years ({max} s)"),
            None => Ok(()),
        }
    }
}

/// The refusal the callback policy would give a URL on its text alone, if any.
fn private_literal(uri: &str) -> Option<crate::net_policy::PolicyRefusal> {
    url::Url::parse(uri)
        .ok()
        .and_then(|u| crate::net_policy::literal_refusal(&u))
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
        assert!(err.to_string().contains("parties.answer_after_ms"), "{err}");
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
