//! App tokens (issued as Entra issues client-credentials tokens for Graph), notification tokens
//! (signed as the calling platform signs callbacks), and the validation of bearer tokens.
//!
//! Tokens always use real time, never the call clock: bots check them against their own clocks.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{GRAPH_AUDIENCES, KeyRing};
use crate::config::{AppConfig, TrustedIssuerConfig};
use crate::net_policy::Outbound;

/// Lifetime of an app token, as Entra gives it.
pub const APP_TOKEN_LIFETIME_SECS: i64 = 3599;
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 60;

/// Claims of an app-only access token for Graph.
#[derive(Debug, Serialize, Deserialize)]
pub struct AppClaims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub tid: String,
    pub appid: String,
    pub azp: String,
    pub appidacr: String,
    pub roles: Vec<String>,
    pub idtyp: String,
    pub oid: String,
    pub sub: String,
    pub ver: String,
}

/// `https://sts.windows.net/{tid}/`, the issuer of v1 tokens for Graph.
pub fn sts_issuer(tenant: &str) -> String {
    format!("https://sts.windows.net/{tenant}/")
}

/// Issues an app token for `app`.
pub fn issue_app_token(keys: &KeyRing, app: &AppConfig) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = AppClaims {
        aud: GRAPH_AUDIENCES[0].into(),
        iss: sts_issuer(&app.tenant_id),
        iat: now,
        nbf: now,
        exp: now + APP_TOKEN_LIFETIME_SECS,
        tid: app.tenant_id.clone(),
        appid: app.app_id.clone(),
        azp: app.app_id.clone(),
        appidacr: "1".into(),
        roles: app.roles.clone(),
        idtyp: "app".into(),
        oid: app.app_id.clone(),
        sub: app.app_id.clone(),
        ver: "1.0".into(),
    };
    sign(keys, &claims)
}

fn sign(keys: &KeyRing, claims: &impl Serialize) -> String {
    let key = keys.active();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    header.x5t = Some(key.x5t.clone());
    header.typ = Some("JWT".into());
    jsonwebtoken::encode(&header, claims, &key.encoding).expect("RS256 signing with a valid key")
}

/// Claims of the JWT on a notification.
#[derive(Debug, Serialize, Deserialize)]
pub struct NotificationClaims {
    pub iss: String,
    pub aud: String,
    pub tid: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
}

/// Signs the bearer token for a notification to `app_id` in `tenant_id`. Returns it with its
/// expiry (unix seconds).
pub fn sign_notification_token(
    keys: &KeyRing,
    issuer: &str,
    app_id: &str,
    tenant_id: &str,
    lifetime_secs: i64,
) -> (String, i64) {
    let now = chrono::Utc::now().timestamp();
    let claims = NotificationClaims {
        iss: issuer.into(),
        aud: app_id.into(),
        tid: tenant_id.into(),
        iat: now,
        nbf: now - 5,
        exp: now + lifetime_secs,
    };
    (sign(keys, &claims), claims.exp)
}

/// Who a valid token speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub app_id: String,
    pub tenant_id: String,
    pub roles: Vec<String>,
}

impl Principal {
    /// Role names compare case-insensitively.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r.eq_ignore_ascii_case(role))
    }
}

/// Why a token was refused. `Delegated` is a 403; the rest are 401.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Access token is empty.")]
    Missing,
    #[error("Access token validation failure: the token is malformed.")]
    Malformed,
    #[error("Access token validation failure: only RS256-signed tokens are accepted.")]
    Algorithm,
    #[error("Access token validation failure: the token's issuer is not trusted.")]
    UntrustedIssuer,
    #[error("Access token validation failure: the token was signed by an unknown key.")]
    UnknownKey,
    #[error("Access token validation failure: invalid signature.")]
    BadSignature,
    #[error("Lifetime validation failed, the token is expired.")]
    Expired,
    #[error("Lifetime validation failed, the token is not yet valid.")]
    NotYetValid,
    #[error("Access token validation failure. Invalid audience.")]
    BadAudience,
    #[error("Access token validation failure: the token has no tenant or application id.")]
    MissingClaims,
    #[error(
        "The calls API supports application permissions only; delegated (user) tokens are not accepted."
    )]
    Delegated,
    #[error(
        "Access token validation failure: only app-only tokens are accepted (idtyp, when present, must be app)."
    )]
    NotAppOnly,
    #[error(
        "Access token validation failure: the token's issuer may not issue tokens for this application."
    )]
    IssuerNotForApp,
    #[error(
        "Access token validation failure: the token's tenant (tid) is not the application's tenant."
    )]
    TenantMismatch,
}

/// Where a trusted issuer's keys come from.
enum JwksSource {
    File(String),
    Uri(String),
}

struct TrustedIssuer {
    issuer: String,
    audience: String,
    /// The apps (lower-case app ids) it may speak for; `None`: every app.
    app_ids: Option<Vec<String>>,
    source: JwksSource,
    /// The client its JWKS is fetched with (guarded by the callback policy unless the issuer is
    /// allowed on a private network).
    http: reqwest::Client,
    keys: RwLock<HashMap<String, DecodingKey>>,
    last_fetch: std::sync::Mutex<Option<Instant>>,
}

/// Validates bearer tokens: Switchboard's own, and those of configured trusted issuers.
pub struct Validator {
    own: Arc<RwLock<KeyRing>>,
    trusted: Vec<TrustedIssuer>,
    /// Tokens already validated, with their expiry: a bot sends the same token for an hour, and
    /// checking an RS256 signature is the costliest part of a request.
    seen: std::sync::Mutex<HashMap<String, (Principal, i64)>>,
}

/// How many validated tokens are remembered (the cache is emptied when full).
const SEEN_TOKENS: usize = 4096;

/// An error and its causes, one after the other (reqwest's own text says little).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// Reads the RSA keys of a JWKS document by `kid`.
pub fn parse_jwks(doc: &Value) -> HashMap<String, DecodingKey> {
    let mut out = HashMap::new();
    for k in doc
        .get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(kid), Some(n), Some(e)) = (
            k.get("kid").and_then(Value::as_str),
            k.get("n").and_then(Value::as_str),
            k.get("e").and_then(Value::as_str),
        ) else {
            continue;
        };
        if k.get("kty").and_then(Value::as_str) != Some("RSA") {
            continue;
        }
        if let Ok(key) = DecodingKey::from_rsa_components(n, e) {
            out.insert(kid.to_string(), key);
        }
    }
    out
}

/// The payload of a JWT, read without checking anything (to pick the issuer's keys).
fn peek_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[derive(Deserialize)]
struct ValidatedClaims {
    exp: i64,
    tid: Option<String>,
    appid: Option<String>,
    azp: Option<String>,
    roles: Option<Vec<String>>,
    scp: Option<Value>,
    idtyp: Option<String>,
}

impl ValidatedClaims {
    /// Entra's marks of an app-only token: no `scp` (delegated tokens carry it, with or without
    /// `roles`), and `idtyp` = `app` when the optional claim is there.
    fn check_app_only(&self) -> Result<(), AuthError> {
        if self.scp.is_some() {
            return Err(AuthError::Delegated);
        }
        match self.idtyp.as_deref() {
            None => Ok(()),
            Some(t) if t.eq_ignore_ascii_case("app") => Ok(()),
            Some(t) if t.eq_ignore_ascii_case("user") => Err(AuthError::Delegated),
            Some(_) => Err(AuthError::NotAppOnly),
        }
    }
}

impl Validator {
    /// JWKS URIs are fetched with `outbound`'s fetch client, so the callback policy applies to
    /// them too (unless an issuer has `allow_private_network`).
    pub fn new(
        own: Arc<RwLock<KeyRing>>,
        trusted: &[TrustedIssuerConfig],
        outbound: &Outbound,
    ) -> Self {
        let trusted = trusted
            .iter()
            .map(|t| {
                if t.app_ids.is_none() {
                    tracing::warn!(
                        issuer = %t.issuer,
                        "trusted issuer has no app_ids: its tokens may speak for every configured app"
                    );
                }
                TrustedIssuer {
                    issuer: t.issuer.clone(),
                    audience: t
                        .audience
                        .clone()
                        .unwrap_or_else(|| GRAPH_AUDIENCES[0].into()),
                    app_ids: t
                        .app_ids
                        .as_ref()
                        .map(|ids| ids.iter().map(|id| id.to_ascii_lowercase()).collect()),
                    source: match (&t.jwks_file, &t.jwks_uri) {
                        (Some(f), _) => JwksSource::File(f.clone()),
                        (None, Some(u)) => JwksSource::Uri(u.clone()),
                        (None, None) => JwksSource::File(String::new()),
                    },
                    http: outbound.jwks_client(t.allow_private_network),
                    keys: RwLock::new(HashMap::new()),
                    last_fetch: std::sync::Mutex::new(None),
                }
            })
            .collect();
        Validator {
            own,
            trusted,
            seen: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Loads every trusted issuer's keys. A file that cannot be read is an error; a URI that
    /// cannot be fetched now is retried when a token needs it.
    pub async fn load_trusted_keys(&self) -> anyhow::Result<()> {
        for t in &self.trusted {
            match &t.source {
                JwksSource::File(path) => {
                    let text = std::fs::read_to_string(path).map_err(|e| {
                        anyhow::anyhow!("trusted issuer {}: cannot read {path}: {e}", t.issuer)
                    })?;
                    let doc: Value = serde_json::from_str(&text).map_err(|e| {
                        anyhow::anyhow!("trusted issuer {}: {path} is not JSON: {e}", t.issuer)
                    })?;
                    *t.keys.write().expect("keys lock") = parse_jwks(&doc);
                }
                JwksSource::Uri(_) => {
                    if let Err(e) = self.refresh(t).await {
                        tracing::warn!(issuer = %t.issuer, "cannot fetch the issuer's keys yet: {e:#}");
                    }
                }
            }
        }
        Ok(())
    }

    async fn refresh(&self, t: &TrustedIssuer) -> anyhow::Result<()> {
        let JwksSource::Uri(uri) = &t.source else {
            return Ok(());
        };
        {
            let mut last = t.last_fetch.lock().expect("fetch lock");
            if last.is_some_and(|at| at.elapsed() < Duration::from_secs(30)) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        // reqwest's errors name the URL, whose query may hold a secret: strip it, and name the
        // URL redacted instead.
        let fetched: Result<Value, reqwest::Error> = async {
            t.http
                .get(uri)
                .timeout(Duration::from_secs(5))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await
        }
        .await;
        let doc = fetched.map_err(|e| {
            let refusal = crate::net_policy::policy_refusal(&e).map(ToString::to_string);
            let e = e.without_url();
            anyhow::anyhow!(
                "GET {}: {}",
                crate::net_policy::redact_url(uri),
                refusal.unwrap_or_else(|| error_chain(&e))
            )
        })?;
        *t.keys.write().expect("keys lock") = parse_jwks(&doc);
        Ok(())
    }

    /// Checks a bearer token and says whose it is.
    pub async fn validate(&self, token: &str) -> Result<Principal, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let now = chrono::Utc::now().timestamp();
        if let Some((p, exp)) = self.seen.lock().expect("token cache lock").get(token)
            && now < exp + LEEWAY_SECS as i64
        {
            return Ok(p.clone());
        }
        let (principal, exp) = self.check(token).await?;
        let mut seen = self.seen.lock().expect("token cache lock");
        if seen.len() >= SEEN_TOKENS {
            seen.clear();
        }
        seen.insert(token.to_string(), (principal.clone(), exp));
        Ok(principal)
    }

    /// Validates a token that is not in the cache; gives whose it is and when it expires.
    async fn check(&self, token: &str) -> Result<(Principal, i64), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Algorithm);
        }
        let peek = peek_claims(token).ok_or(AuthError::Malformed)?;
        let iss = peek.get("iss").and_then(Value::as_str).unwrap_or_default();
        let tid = peek.get("tid").and_then(Value::as_str).unwrap_or_default();
        let kid = header.kid.clone().unwrap_or_default();

        let mut issuer_apps: Option<&[String]> = None;
        let (key, audiences): (DecodingKey, Vec<String>) = if !tid.is_empty()
            && (iss == sts_issuer(tid)
                || iss == format!("https://login.microsoftonline.com/{tid}/v2.0"))
            && self.trusted.iter().all(|t| t.issuer != iss)
        {
            let ring = self.own.read().expect("key ring lock");
            let key = ring.find(&kid).ok_or(AuthError::UnknownKey)?;
            (
                key.decoding.clone(),
                GRAPH_AUDIENCES.iter().map(|s| s.to_string()).collect(),
            )
        } else if let Some(t) = self.trusted.iter().find(|t| t.issuer == iss) {
            issuer_apps = t.app_ids.as_deref();
            let mut found = t.keys.read().expect("keys lock").get(&kid).cloned();
            if found.is_none() && matches!(t.source, JwksSource::Uri(_)) {
                let _ = self.refresh(t).await;
                found = t.keys.read().expect("keys lock").get(&kid).cloned();
            }
            (
                found.ok_or(AuthError::UnknownKey)?,
                vec![t.audience.clone()],
            )
        } else {
            return Err(AuthError::UntrustedIssuer);
        };

        let mut v = Validation::new(Algorithm::RS256);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.set_audience(&audiences);
        v.set_issuer(&[iss]);
        v.set_required_spec_claims(&["exp", "aud", "iss"]);
        let data = jsonwebtoken::decode::<ValidatedClaims>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => AuthError::Expired,
                K::ImmatureSignature => AuthError::NotYetValid,
                K::InvalidAudience => AuthError::BadAudience,
                K::InvalidSignature => AuthError::BadSignature,
                K::InvalidIssuer => AuthError::UntrustedIssuer,
                _ => AuthError::Malformed,
            }
        })?;
        let c = data.claims;
        c.check_app_only()?;
        let app_id = c.appid.or(c.azp).filter(|s| !s.is_empty());
        let tenant_id = c.tid.filter(|s| !s.is_empty());
        if let (Some(allowed), Some(app_id)) = (issuer_apps, &app_id)
            && !allowed.iter().any(|a| a.eq_ignore_ascii_case(app_id))
        {
            return Err(AuthError::IssuerNotForApp);
        }
        match (app_id, tenant_id) {
            (Some(app_id), Some(tenant_id)) => Ok((
                Principal {
                    app_id,
                    tenant_id,
                    roles: c.roles.unwrap_or_default(),
                },
                c.exp,
            )),
            _ => Err(AuthError::MissingClaims),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CallbackPolicy, Secret};

    fn app() -> AppConfig {
        AppConfig {
            app_id: "app-1".into(),
            tenant_id: "tenant-1".into(),
            client_secret: Secret::new("s"),
            roles: vec!["Calls.Initiate.All".into()],
            incoming_call_uri: None,
            max_concurrent_calls: 100,
            requests_per_second: None,
            display_name: None,
            application_instances: vec![],
        }
    }

    fn validator() -> (Arc<RwLock<KeyRing>>, Validator) {
        let ring = Arc::new(RwLock::new(KeyRing::ephemeral().unwrap()));
        let outbound = Outbound::new(&CallbackPolicy::default()).unwrap();
        let v = Validator::new(ring.clone(), &[], &outbound);
        (ring, v)
    }

    #[tokio::test]
    async fn an_issued_token_validates_as_its_app_with_its_roles() {
        let (ring, v) = validator();
        let t = issue_app_token(&ring.read().unwrap(), &app());
        let p = v.validate(&t).await.unwrap();
        assert_eq!(p.app_id, "app-1");
        assert_eq!(p.tenant_id, "tenant-1");
        assert!(p.has_role("calls.initiate.all"));
    }

    #[tokio::test]
    async fn garbage_and_tampering_are_refused() {
        let (ring, v) = validator();
        let t = issue_app_token(&ring.read().unwrap(), &app());
        assert_eq!(v.validate("").await, Err(AuthError::Missing));
        assert_eq!(v.validate("not.a.token").await, Err(AuthError::Malformed));
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        let mut claims = peek_claims(&t).unwrap();
        claims["roles"] = serde_json::json!(["Everything"]);
        parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
        assert_eq!(
            v.validate(&parts.join(".")).await,
            Err(AuthError::BadSignature)
        );
    }

    #[tokio::test]
    async fn a_token_from_another_key_ring_is_refused() {
        let (_, v) = validator();
        let other = KeyRing::ephemeral().unwrap();
        let t = issue_app_token(&other, &app());
        assert_eq!(v.validate(&t).await, Err(AuthError::UnknownKey));
    }

    #[tokio::test]
    async fn a_failed_jwks_fetch_is_reported_without_the_uris_secrets() {
        let ring = Arc::new(RwLock::new(KeyRing::ephemeral().unwrap()));
        let outbound = Outbound::new(&CallbackPolicy::default()).unwrap();
        let trusted = TrustedIssuerConfig {
            issuer: "https://idp.example.test/".into(),
            jwks_file: None,
            // Port 1 on loopback: nothing listens, the fetch fails at once.
            jwks_uri: Some("http://user:pw@127.0.0.1:1/keys?code=s3cret".into()),
            audience: None,
            app_ids: None,
            allow_private_network: false,
        };
        let v = Validator::new(ring, &[trusted], &outbound);
        let e = format!("{:#}", v.refresh(&v.trusted[0]).await.unwrap_err());
        assert!(!e.contains("s3cret") && !e.contains("pw"), "{e}");
        assert!(e.contains("http://127.0.0.1:1/keys?<redacted>"), "{e}");
    }

    #[test]
    fn notification_tokens_name_the_app_as_audience() {
        let ring = KeyRing::ephemeral().unwrap();
        let (t, exp) = sign_notification_token(
            &ring,
            "https://api.botframework.com",
            "app-1",
            "tenant-1",
            3900,
        );
        let c = peek_claims(&t).unwrap();
        assert_eq!(c["aud"], "app-1");
        assert_eq!(c["tid"], "tenant-1");
        assert_eq!(c["iss"], "https://api.botframework.com");
        assert_eq!(c["exp"], exp);
    }
}
