//! Faults on demand: what the real service does to a bot now and then (throttling, `503`/`504`,
//! a slow answer, a change made though the client was told it failed; notifications refused,
//! lost, late, repeated or out of order), injected where a rule says, reproducibly. Every random choice is drawn from
//! one seeded generator, so the same seed and the same requests give the same faults. Rules come
//! from `[faults]` in the configuration and can be replaced at run time through the control API
//! (`GET`/`PUT /_switchboard/v1/faults`); a reset brings back the configured ones.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::CallId;

/// The `[faults]` section, and the body of `PUT /_switchboard/v1/faults`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct FaultSettings {
    /// The seed of every random choice; unset: one is picked at start (and logged).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Faults on Graph requests.
    #[serde(default)]
    pub api: Vec<ApiFault>,
    /// Faults on notifications.
    #[serde(default)]
    pub notifications: Vec<NotificationFault>,
}

/// One fault on Graph requests: those of `app_id` (any app if unset) to `route` (any if unset).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ApiFault {
    #[serde(default)]
    pub app_id: Option<String>,
    /// A route (`calls` for creating calls, `call`, `participants`, `invite`, ...) or an action
    /// of a call (`answer`, `playPrompt`, ...), in any case.
    #[serde(default)]
    pub route: Option<String>,
    pub fault: ApiFaultKind,
    /// The chance that a matching request gets the fault (default 1: every one).
    #[serde(default = "always")]
    pub probability: f64,
    /// At most this many requests get it (unset: no limit).
    #[serde(default)]
    pub times: Option<u32>,
    /// `throttle`: the `Retry-After` seconds (default 1).
    #[serde(default)]
    pub retry_after_secs: Option<f64>,
    /// `latency`: how long the answer is held (default 500).
    #[serde(default)]
    pub latency_ms: Option<u64>,
}

/// What a Graph request that draws the fault gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApiFaultKind {
    /// `429` with `Retry-After` and Graph's throttling body; nothing happens.
    Throttle,
    /// `503` with a Graph error body; nothing happens.
    Unavailable,
    /// `504` with a Graph error body; nothing happens.
    GatewayTimeout,
    /// The answer comes `latency_ms` later.
    Latency,
    /// The request takes effect, but the client is answered `503`.
    CommitThenFail,
}

/// One fault on notifications: those to `app_id` (any app if unset) about `call_id` (any call if
/// unset).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct NotificationFault {
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default)]
    pub call_id: Option<String>,
    pub fault: NotificationFaultKind,
    /// The chance that a matching notification gets the fault (default 1).
    #[serde(default = "always")]
    pub probability: f64,
    /// `fail_first`: how many first attempts fail; `drop_after`: after how many attempts the
    /// notification is given up (default 1).
    #[serde(default)]
    pub attempts: Option<u32>,
    /// `delay`: how long (real time) its first attempt waits (default 500).
    #[serde(default)]
    pub delay_ms: Option<u64>,
}

/// What a notification that draws the fault gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotificationFaultKind {
    /// Its first `attempts` attempts fail without reaching the bot, so it is retried.
    FailFirst,
    /// It is given up (dead) after `attempts` attempts that failed, whatever the bot answered.
    DropAfter,
    /// Its first attempt is sent `delay_ms` late.
    Delay,
    /// Once delivered, it is sent again at once (the same body and sequence header).
    Duplicate,
    /// Sent with the notifications of its call due right behind it, it goes after them (its
    /// first attempt; a notification alone has nothing to swap with).
    Reorder,
}

fn always() -> f64 {
    1.0
}

impl FaultSettings {
    /// What is wrong with these rules, as a sentence; `None`: nothing.
    pub fn problem(&self) -> Option<String> {
        let chance = |p: f64| (0.0..=1.0).contains(&p);
        for (i, f) in self.api.iter().enumerate() {
            if !chance(f.probability) {
                return Some(format!("api[{i}].probability must be from 0 to 1"));
            }
            if f.retry_after_secs
                .is_some_and(|s| !(0.0..=3600.0).contains(&s))
            {
                return Some(format!("api[{i}].retry_after_secs must be from 0 to 3600"));
            }
            if f.latency_ms.is_some_and(|ms| ms > 60_000) {
                return Some(format!("api[{i}].latency_ms must be at most 60000"));
            }
            if f.times == Some(0) {
                return Some(format!("api[{i}].times must be at least 1"));
            }
        }
        for (i, f) in self.notifications.iter().enumerate() {
            if !chance(f.probability) {
                return Some(format!(
                    "notifications[{i}].probability must be from 0 to 1"
                ));
            }
            if f.delay_ms.is_some_and(|ms| ms > 60_000) {
                return Some(format!("notifications[{i}].delay_ms must be at most 60000"));
            }
            if f.attempts == Some(0) {
                return Some(format!("notifications[{i}].attempts must be at least 1"));
            }
        }
        None
    }
}

/// A fault a Graph request drew.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ApiDraw {
    Throttle { retry_after_secs: f64 },
    Unavailable,
    GatewayTimeout,
    Latency(Duration),
    CommitThenFail,
}

impl ApiDraw {
    /// Its name, as the `Switchboard-Fault` header and the log say it.
    pub fn name(&self) -> &'static str {
        match self {
            ApiDraw::Throttle { .. } => "throttle",
            ApiDraw::Unavailable => "unavailable",
            ApiDraw::GatewayTimeout => "gateway_timeout",
            ApiDraw::Latency(_) => "latency",
            ApiDraw::CommitThenFail => "commit_then_fail",
        }
    }
}

/// A fault a notification's attempt drew.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NotificationDraw {
    /// The attempt fails without a POST.
    Fail { attempts: u32 },
    /// The notification is given up after this attempt fails.
    Drop { attempts: u32 },
    /// The attempt waits this long first.
    Delay(Duration),
    /// The POST is sent twice.
    Duplicate,
    /// The notifications behind it in the POST go first, each POST its own.
    Reorder,
}

/// The faults in force, and the generator their choices are drawn from.
pub struct Faults {
    configured: FaultSettings,
    now: Mutex<Live>,
    /// Whether any rule is in force: without one, a request or a notification does not wait
    /// for the lock.
    any: AtomicBool,
}

struct Live {
    settings: FaultSettings,
    seed: u64,
    rng: StdRng,
    /// How many requests each API rule hit so far (for `times`).
    hits: Vec<u32>,
    /// Notifications that drew a rule, by (call, sequence): the draw, so that every attempt of
    /// one notification sees the same one.
    drawn: std::collections::HashMap<(CallId, i64), Option<NotificationDraw>>,
}

impl Live {
    fn has_rules(&self) -> bool {
        !self.settings.api.is_empty() || !self.settings.notifications.is_empty()
    }

    fn new(settings: FaultSettings) -> Self {
        // At most 2^53 - 1: a seed a JavaScript client reads back exactly.
        let seed = settings
            .seed
            .unwrap_or_else(|| rand::rng().random_range(0..(1u64 << 53)));
        Live {
            hits: vec![0; settings.api.len()],
            rng: StdRng::seed_from_u64(seed),
            drawn: Default::default(),
            seed,
            settings,
        }
    }
}

fn matches(rule: Option<&str>, value: &str) -> bool {
    rule.is_none_or(|r| r.eq_ignore_ascii_case(value))
}

impl Faults {
    pub fn new(configured: FaultSettings) -> Self {
        let live = Live::new(configured.clone());
        if !configured.api.is_empty() || !configured.notifications.is_empty() {
            tracing::info!(
                seed = live.seed,
                "faults in force, drawn from seed {}",
                live.seed
            );
        }
        Faults {
            any: AtomicBool::new(live.has_rules()),
            configured,
            now: Mutex::new(live),
        }
    }

    /// The rules in force, with the seed their choices come from.
    pub fn current(&self) -> FaultSettings {
        let live = self.now.lock().expect("faults lock");
        FaultSettings {
            seed: Some(live.seed),
            ..live.settings.clone()
        }
    }

    /// Replaces the rules (and starts the generator again from their seed).
    pub fn replace(&self, settings: FaultSettings) -> FaultSettings {
        let live = Live::new(settings);
        tracing::info!(
            seed = live.seed,
            "faults replaced, drawn from seed {}",
            live.seed
        );
        self.install(live);
        self.current()
    }

    /// Back to the configured rules, their generator started again.
    pub fn reset(&self) {
        let live = Live::new(self.configured.clone());
        if live.has_rules() {
            tracing::info!(
                seed = live.seed,
                "faults reset, drawn from seed {}",
                live.seed
            );
        }
        self.install(live);
    }

    fn install(&self, live: Live) {
        let mut now = self.now.lock().expect("faults lock");
        self.any.store(live.has_rules(), Ordering::Release);
        *now = live;
    }

    /// The fault a Graph request of `app_id` to the route `route` names draws, if any (`route`
    /// is asked only while a rule is in force: most requests meet none).
    pub fn api(&self, app_id: &str, route: impl FnOnce() -> String) -> Option<ApiDraw> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let route = route();
        let route = route.as_str();
        let mut live = self.now.lock().expect("faults lock");
        let Live {
            settings,
            rng,
            hits,
            ..
        } = &mut *live;
        for (i, f) in settings.api.iter().enumerate() {
            if !matches(f.app_id.as_deref(), app_id) || !matches(f.route.as_deref(), route) {
                continue;
            }
            if f.times.is_some_and(|t| hits[i] >= t) || !rng.random_bool(f.probability) {
                continue;
            }
            hits[i] += 1;
            return Some(match f.fault {
                // `Retry-After` in whole seconds, as HTTP has it and the SDKs read it.
                ApiFaultKind::Throttle => ApiDraw::Throttle {
                    retry_after_secs: f.retry_after_secs.unwrap_or(1.0).ceil().max(1.0),
                },
                ApiFaultKind::Unavailable => ApiDraw::Unavailable,
                ApiFaultKind::GatewayTimeout => ApiDraw::GatewayTimeout,
                ApiFaultKind::Latency => {
                    ApiDraw::Latency(Duration::from_millis(f.latency_ms.unwrap_or(500)))
                }
                ApiFaultKind::CommitThenFail => ApiDraw::CommitThenFail,
            });
        }
        None
    }

    /// The fault attempt `attempt` (0 for the first) of notification `seq` of `call_id` to
    /// `app_id` draws, if any. A notification draws once; its later attempts see that draw.
    pub fn notification(
        &self,
        app_id: &str,
        call_id: CallId,
        seq: i64,
        attempt: u32,
    ) -> Option<NotificationDraw> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let mut live = self.now.lock().expect("faults lock");
        if live.settings.notifications.is_empty() {
            return None;
        }
        let key = (call_id, seq);
        let draw = match live.drawn.get(&key) {
            Some(d) => *d,
            None => {
                let Live { settings, rng, .. } = &mut *live;
                let d = settings
                    .notifications
                    .iter()
                    .filter(|f| {
                        matches(f.app_id.as_deref(), app_id)
                            && f.call_id
                                .as_deref()
                                .is_none_or(|c| CallId::parse(c).is_some_and(|c| c == call_id))
                    })
                    .find(|f| rng.random_bool(f.probability))
                    .map(|f| match f.fault {
                        NotificationFaultKind::FailFirst => NotificationDraw::Fail {
                            attempts: f.attempts.unwrap_or(1),
                        },
                        NotificationFaultKind::DropAfter => NotificationDraw::Drop {
                            attempts: f.attempts.unwrap_or(1),
                        },
                        NotificationFaultKind::Delay => NotificationDraw::Delay(
                            Duration::from_millis(f.delay_ms.unwrap_or(500)),
                        ),
                        NotificationFaultKind::Duplicate => NotificationDraw::Duplicate,
                        NotificationFaultKind::Reorder => NotificationDraw::Reorder,
                    });
                if live.drawn.len() >= 100_000 {
                    live.drawn.clear();
                }
                live.drawn.insert(key, d);
                d
            }
        };
        // Each draw applies to some attempts only.
        draw.filter(|d| match d {
            NotificationDraw::Fail { attempts } => attempt < *attempts,
            // Never sent; the attempt that makes `attempts` gives it up.
            NotificationDraw::Drop { .. } => true,
            NotificationDraw::Delay(_) | NotificationDraw::Reorder => attempt == 0,
            NotificationDraw::Duplicate => true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle_half(seed: u64) -> Faults {
        Faults::new(FaultSettings {
            seed: Some(seed),
            api: vec![ApiFault {
                app_id: None,
                route: Some("Calls".into()),
                fault: ApiFaultKind::Throttle,
                probability: 0.5,
                times: None,
                retry_after_secs: Some(2.0),
                latency_ms: None,
            }],
            notifications: vec![],
        })
    }

    #[test]
    fn the_same_seed_and_requests_draw_the_same_faults() {
        let draws = |f: &Faults| -> Vec<bool> {
            (0..64)
                .map(|_| f.api("app", || "calls".into()).is_some())
                .collect()
        };
        let (a, b) = (throttle_half(7), throttle_half(7));
        let first = draws(&a);
        assert_eq!(first, draws(&b));
        assert!(
            first.iter().any(|d| *d) && first.iter().any(|d| !*d),
            "{first:?}"
        );
        // Another route, or the rules reset, change nothing of that.
        assert_eq!(a.api("app", || "answer".into()), None);
        a.reset();
        assert_eq!(draws(&a), first);
        assert_ne!(draws(&throttle_half(8)), first);
    }

    #[test]
    fn a_notification_draws_once_and_its_attempts_follow_the_draw() {
        let (c1, c2) = (CallId::new(), CallId::new());
        let f = Faults::new(FaultSettings {
            seed: Some(1),
            api: vec![],
            notifications: vec![NotificationFault {
                app_id: None,
                // Any spelling of the id: upper case, no hyphens.
                call_id: Some(c1.to_string().to_uppercase().replace('-', "")),
                fault: NotificationFaultKind::FailFirst,
                probability: 1.0,
                attempts: Some(2),
                delay_ms: None,
            }],
        });
        let fail = Some(NotificationDraw::Fail { attempts: 2 });
        assert_eq!(f.notification("app", c1, 1, 0), fail);
        assert_eq!(f.notification("app", c1, 1, 1), fail);
        assert_eq!(f.notification("app", c1, 1, 2), None);
        assert_eq!(f.notification("app", c2, 1, 0), None, "another call");
    }
}
