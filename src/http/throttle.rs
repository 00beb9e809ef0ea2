//! Throttling of wrong client secrets at the token endpoint.
//!
//! Failures are counted per client id (wrong secrets for a configured app) and per peer address
//! (wrong secrets and unknown client ids). When either count reaches `max_failures` within
//! `window_secs`, that client id or peer is locked out for `lockout_secs`: its requests answer
//! `429` with `Retry-After` before the secret is even looked at, so guessing goes no faster than
//! `max_failures` per lock-out. Successes are never delayed and do not count.
//!
//! A client id's lock-out does not apply to a peer that obtained a token for it in the last
//! 24 hours (a "familiar" peer, as Entra's smart lockout spares familiar locations), so whoever
//! knows a bot's client id cannot lock the working bot out; that peer's own failures still lock
//! the peer itself.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::TokenThrottleSettings;

/// How long a peer stays familiar to a client id after a success.
const FAMILIAR_FOR: Duration = Duration::from_secs(24 * 3600);
/// Entries kept per map before expired ones are swept; past it, new peers are not tracked
/// (their client ids still are).
const MAX_ENTRIES: usize = 16_384;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Client(String),
    Peer(IpAddr),
}

#[derive(Clone, Copy, Debug)]
struct Window {
    started: Instant,
    failures: u32,
    locked_until: Option<Instant>,
}

#[derive(Default)]
struct State {
    windows: HashMap<Key, Window>,
    familiar: HashMap<(String, IpAddr), Instant>,
}

/// The failed-secret counters of the token endpoint.
pub struct SecretThrottle {
    settings: TokenThrottleSettings,
    state: Mutex<State>,
}

/// The same address whether it came as IPv4 or IPv4-mapped IPv6 (a `[::]` listener).
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl SecretThrottle {
    pub fn new(settings: TokenThrottleSettings) -> Self {
        SecretThrottle {
            settings,
            state: Mutex::new(State::default()),
        }
    }

    fn enabled(&self) -> bool {
        self.settings.max_failures > 0
    }

    /// How long a request for `client_id` (a configured app's id, or `None`) from `peer` must
    /// wait, if it is locked out.
    pub fn locked(
        &self,
        client_id: Option<&str>,
        peer: Option<IpAddr>,
        now: Instant,
    ) -> Option<Duration> {
        if !self.enabled() {
            return None;
        }
        let peer = peer.map(canonical);
        let client = client_id.map(str::to_ascii_lowercase);
        let mut st = self.state.lock().expect("throttle lock");
        let familiar = match (&client, peer) {
            (Some(c), Some(p)) => st
                .familiar
                .get(&(c.clone(), p))
                .is_some_and(|at| now.saturating_duration_since(*at) < FAMILIAR_FOR),
            _ => false,
        };
        let mut wait = None;
        let keys = peer
            .map(Key::Peer)
            .into_iter()
            .chain(client.filter(|_| !familiar).map(Key::Client));
        for key in keys {
            if let Some(w) = st.windows.get(&key)
                && let Some(until) = w.locked_until
            {
                if until > now {
                    let left = until - now;
                    wait = Some(wait.map_or(left, |w: Duration| w.max(left)));
                } else {
                    // The lock-out is over: counting starts afresh.
                    st.windows.remove(&key);
                }
            }
        }
        wait
    }

    /// Counts a failed attempt: for the client id when it names a configured app, and for the
    /// peer.
    pub fn failed(&self, client_id: Option<&str>, peer: Option<IpAddr>, now: Instant) {
        if !self.enabled() {
            return;
        }
        let window = Duration::from_secs(self.settings.window_secs.max(1));
        let lockout = Duration::from_secs(self.settings.lockout_secs.max(1));
        let max = self.settings.max_failures;
        let mut st = self.state.lock().expect("throttle lock");
        if st.windows.len() >= MAX_ENTRIES {
            st.windows.retain(|_, w| {
                w.locked_until.is_some_and(|u| u > now)
                    || now.saturating_duration_since(w.started) < window
            });
        }
        let keys = client_id
            .map(|c| Key::Client(c.to_ascii_lowercase()))
            .into_iter()
            .chain(peer.map(|p| Key::Peer(canonical(p))));
        for key in keys {
            let full = st.windows.len() >= MAX_ENTRIES;
            if full && matches!(key, Key::Peer(_)) && !st.windows.contains_key(&key) {
                continue;
            }
            let w = st.windows.entry(key).or_insert(Window {
                started: now,
                failures: 0,
                locked_until: None,
            });
            if now.saturating_duration_since(w.started) >= window {
                *w = Window {
                    started: now,
                    failures: 0,
                    locked_until: None,
                };
            }
            w.failures += 1;
            if w.failures >= max && w.locked_until.is_none() {
                w.locked_until = Some(now + lockout);
            }
        }
    }

    /// Remembers that `peer` knows `client_id`'s secret.
    pub fn succeeded(&self, client_id: &str, peer: Option<IpAddr>, now: Instant) {
        let Some(peer) = peer.filter(|_| self.enabled()) else {
            return;
        };
        let mut st = self.state.lock().expect("throttle lock");
        if st.familiar.len() >= MAX_ENTRIES {
            st.familiar
                .retain(|_, at| now.saturating_duration_since(*at) < FAMILIAR_FOR);
            if st.familiar.len() >= MAX_ENTRIES {
                return;
            }
        }
        st.familiar
            .insert((client_id.to_ascii_lowercase(), canonical(peer)), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(max: u32) -> SecretThrottle {
        SecretThrottle::new(TokenThrottleSettings {
            max_failures: max,
            window_secs: 60,
            lockout_secs: 30,
        })
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_client_id_is_locked_out_after_the_maximum_of_failures_and_free_again_after_the_lockout() {
        let t = throttle(3);
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(t.locked(Some("App"), ip("10.0.0.1"), t0), None, "{i}");
            t.failed(Some("App"), ip("10.0.0.1"), t0);
        }
        assert_eq!(
            t.locked(Some("app"), ip("10.0.0.2"), t0 + Duration::from_secs(10)),
            Some(Duration::from_secs(20)),
            "other peers are locked out of that client id too"
        );
        assert_eq!(t.locked(Some("other-app"), ip("10.0.0.2"), t0), None);
        assert_eq!(
            t.locked(Some("app"), ip("10.0.0.2"), t0 + Duration::from_secs(30)),
            None
        );
        // Counting starts afresh after a lock-out.
        t.failed(Some("app"), ip("10.0.0.1"), t0 + Duration::from_secs(31));
        assert_eq!(
            t.locked(Some("app"), ip("10.0.0.2"), t0 + Duration::from_secs(31)),
            None
        );
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let t = throttle(3);
        let t0 = Instant::now();
        t.failed(Some("app"), None, t0);
        t.failed(Some("app"), None, t0);
        t.failed(Some("app"), None, t0 + Duration::from_secs(61));
        assert_eq!(
            t.locked(Some("app"), None, t0 + Duration::from_secs(61)),
            None
        );
    }

    #[test]
    fn a_peer_that_fails_for_many_client_ids_is_locked_out_of_all() {
        let t = throttle(3);
        let t0 = Instant::now();
        for id in ["a", "b", "c"] {
            t.failed(None, ip("192.0.2.9"), t0);
            assert_eq!(t.locked(Some(id), ip("192.0.2.8"), t0), None);
        }
        assert!(t.locked(Some("d"), ip("192.0.2.9"), t0).is_some());
        assert!(
            t.locked(None, ip("::ffff:192.0.2.9"), t0).is_some(),
            "an IPv4-mapped spelling is the same peer"
        );
    }

    #[test]
    fn a_familiar_peer_is_not_locked_out_by_failures_elsewhere_but_by_its_own() {
        let t = throttle(3);
        let t0 = Instant::now();
        t.succeeded("app", ip("10.0.0.5"), t0);
        for _ in 0..3 {
            t.failed(Some("app"), ip("10.0.0.66"), t0);
        }
        assert!(t.locked(Some("app"), ip("10.0.0.7"), t0).is_some());
        assert_eq!(t.locked(Some("app"), ip("10.0.0.5"), t0), None);
        for _ in 0..3 {
            t.failed(Some("app"), ip("10.0.0.5"), t0);
        }
        assert!(t.locked(Some("app"), ip("10.0.0.5"), t0).is_some());
    }

    #[test]
    fn zero_failures_turns_throttling_off() {
        let t = throttle(0);
        let t0 = Instant::now();
        for _ in 0..100 {
            t.failed(Some("app"), ip("10.0.0.1"), t0);
        }
        assert_eq!(t.locked(Some("app"), ip("10.0.0.1"), t0), None);
    }
}
