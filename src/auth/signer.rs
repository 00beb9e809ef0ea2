//! Signing the bearer token of each notification POST, reusing a token per app while it is
//! young.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use super::KeyRing;
use super::tokens::sign_notification_token;
use crate::config::NotificationSettings;

type CachedToken = (String, i64, String);

/// Signs the bearer token of each notification, reusing a token per app while it is young.
pub struct Signer {
    keys: Arc<RwLock<KeyRing>>,
    settings: NotificationSettings,
    /// (app, tenant) → (token, expiry, signing key id).
    cache: Mutex<HashMap<(String, String), CachedToken>>,
}

impl Signer {
    pub fn new(keys: Arc<RwLock<KeyRing>>, settings: NotificationSettings) -> Self {
        Signer {
            keys,
            settings,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// A token for `app_id` in `tenant_id` with at least half its lifetime left.
    pub fn token(&self, app_id: &str, tenant_id: &str) -> String {
        let keys = self.keys.read().expect("key ring lock");
        let kid = keys.active().kid.clone();
        let lifetime = self.settings.token_lifetime_secs as i64;
        let now = chrono::Utc::now().timestamp();
        let key = (app_id.to_string(), tenant_id.to_string());
        let mut cache = self.cache.lock().expect("token cache lock");
        if let Some((t, exp, k)) = cache.get(&key)
            && *k == kid
            && exp - now > lifetime / 2
        {
            return t.clone();
        }
        let (t, exp) =
            sign_notification_token(&keys, &self.settings.issuer, app_id, tenant_id, lifetime);
        cache.insert(key, (t.clone(), exp, kid));
        t
    }
}
