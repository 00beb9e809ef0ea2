//! The state every handler shares ([`AppState`]), and how a Graph request is let in: the bearer
//! token validated, the app registered here and in the token's tenant, the app's request rate
//! (a token bucket per app).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::http::{HeaderMap, header};

use super::error::ApiError;
use super::throttle;
use crate::auth::{AuthError, KeyRing, Principal, Validator};
use crate::config::{AppConfig, Settings};
use crate::engine::{AppRef, Engine};
use crate::fabric::simulated::SimulatedFabric;

/// Everything a handler may need.
pub struct AppState {
    pub engine: Arc<Engine>,
    pub validator: Validator,
    pub keys: Arc<RwLock<KeyRing>>,
    pub settings: Settings,
    /// Base URL for Location headers, contexts and metadata, without a trailing slash.
    pub public_url: String,
    /// The client for fetching prompt files (`net_policy::Outbound::fetches`: redirects are
    /// followed, each hop and every address checked by the callback policy).
    pub http: reqwest::Client,
    /// How long prompts play (fetching them within the `[media]` limits).
    pub prompts: Arc<crate::media::prompts::Prompts>,
    /// What real calls recorded (SIP legs), served in place of generated recordings.
    pub recordings: Arc<crate::media::recordings::Archive>,
    /// The simulated parties the control API drives.
    pub parties: Arc<SimulatedFabric>,
    /// Failed client-secret attempts at the token endpoint.
    pub secret_throttle: throttle::SecretThrottle,
    /// The local certificate authority's certificate (PEM), when it issued the listener's.
    pub ca_pem: Option<String>,
    /// The faults in force (shared with the delivery worker).
    pub faults: Arc<crate::faults::Faults>,
    apps: HashMap<String, AppConfig>,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl AppState {
    pub fn new(
        engine: Arc<Engine>,
        validator: Validator,
        keys: Arc<RwLock<KeyRing>>,
        settings: Settings,
        public_url: String,
        (http, prompts, recordings): (
            reqwest::Client,
            Arc<crate::media::prompts::Prompts>,
            Arc<crate::media::recordings::Archive>,
        ),
        parties: Arc<SimulatedFabric>,
    ) -> Self {
        let apps = settings
            .apps
            .iter()
            .map(|a| (a.app_id.to_ascii_lowercase(), a.clone()))
            .collect();
        let secret_throttle = throttle::SecretThrottle::new(settings.token_throttle.clone());
        AppState {
            secret_throttle,
            ca_pem: None,
            faults: Arc::new(crate::faults::Faults::new(settings.faults.clone())),
            engine,
            validator,
            keys,
            settings,
            public_url: public_url.trim_end_matches('/').to_string(),
            http,
            prompts,
            recordings,
            parties,
            apps,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn app(&self, app_id: &str) -> Option<&AppConfig> {
        self.apps.get(&app_id.to_ascii_lowercase())
    }

    /// Checks the bearer token of a Graph request, that its app is registered here, and the
    /// app's request rate.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<(Principal, AppRef), ApiError> {
        let raw = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let token = match raw.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t,
            _ if raw.is_empty() => "",
            _ => "\u{0}",
        };
        let principal = self
            .validator
            .validate(token)
            .await
            .map_err(|e| ApiError::unauthorized(&e))?;
        let Some(app) = self.app(&principal.app_id) else {
            return Err(ApiError::forbidden(
                "7503",
                "Application is not registered in our store.",
            ));
        };
        // An app token speaks for its app in the app's own tenant only.
        if !principal.tenant_id.eq_ignore_ascii_case(&app.tenant_id) {
            return Err(ApiError::unauthorized(&AuthError::TenantMismatch));
        }
        if let Some(rate) = app.requests_per_second {
            self.take_request_token(&app.app_id, rate)?;
        }
        let app_ref = AppRef {
            app_id: app.app_id.clone(),
            tenant_id: principal.tenant_id.clone(),
            display_name: app.display_name.clone(),
            max_concurrent_calls: app.max_concurrent_calls,
        };
        Ok((principal, app_ref))
    }

    /// A token bucket per app, one second deep.
    fn take_request_token(&self, app_id: &str, rate: f64) -> Result<(), ApiError> {
        let mut buckets = self.buckets.lock().expect("buckets lock");
        let now = Instant::now();
        let (tokens, at) = buckets
            .entry(app_id.to_string())
            .or_insert((rate.max(1.0), now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(rate.max(1.0));
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(ApiError::throttled(
                (1.0 - *tokens) / rate,
                &format!("The application is limited to {rate} requests per second."),
            ))
        }
    }
}
