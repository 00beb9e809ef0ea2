//! What one attempt leaves a notification as: delivered, retried after a backoff (with jitter,
//! honouring `Retry-After`), or dead. Plain functions, tested alone.

use std::time::Duration;

use super::PostResult;
use crate::clock::Timestamp;
use crate::config::DeliverySettings;
use crate::store::{Attempt, AttemptOutcome, DeliveryStatus, OutboxItem};

/// The outcome of one attempt at `item` that came back with `result`: delivered on a 2xx; dead
/// once `max_attempts` are used or the notification is older than `max_age_secs`; otherwise
/// pending until the backoff (with a `jitter` of 0.8 to 1.2, drawn only then) has passed.
pub fn outcome(
    item: &OutboxItem,
    result: &PostResult,
    now: Timestamp,
    policy: &DeliverySettings,
    jitter: impl FnOnce() -> f64,
) -> AttemptOutcome {
    let attempts = item.attempts + 1;
    let delivered = result.accepted();
    // The first incoming-call notification, answered 204 the first time ("legacy format, send
    // it again") or 302 with a Location (region affinity): sent again at once (there).
    let first_incoming = item.change_type == "created";
    let again = first_incoming
        && match result.status {
            Some(204) => item.attempts == 0,
            Some(302) => result.location.is_some(),
            _ => false,
        };
    let (status, next_attempt_at) = if again && attempts < policy.max_attempts {
        (DeliveryStatus::Pending, now)
    } else if delivered {
        (DeliveryStatus::Delivered, now)
    } else if attempts >= policy.max_attempts
        || (now - item.created_at).num_seconds() >= policy.max_age_secs as i64
    {
        (DeliveryStatus::Dead, now)
    } else {
        let wait = backoff(policy, attempts, result.retry_after, jitter());
        (DeliveryStatus::Pending, now + wait)
    };
    AttemptOutcome {
        attempt: Attempt {
            call_id: item.call_id,
            seq: item.seq,
            at: now,
            status: result.status,
            error: result.error.clone(),
            latency_ms: result.latency_ms,
        },
        status,
        attempts,
        next_attempt_at,
    }
}

/// The wait before attempt `attempts + 1`: exponential from `initial_backoff`, times `jitter`
/// (0.8 to 1.2), at least `Retry-After`, at most `max_backoff`.
pub fn backoff(
    policy: &DeliverySettings,
    attempts: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> chrono::Duration {
    let base =
        policy.initial_backoff_ms as f64 * 2f64.powi(attempts.saturating_sub(1).min(30) as i32);
    let max_ms = (policy.max_backoff_secs * 1000) as f64;
    let mut ms = (base * jitter).min(max_ms);
    if let Some(ra) = retry_after {
        ms = ms.max((ra.as_millis() as f64).min(max_ms));
    }
    chrono::Duration::milliseconds(ms as i64)
}

/// Reads `Retry-After`: delay-seconds, or an HTTP date (a date in the past means now).
pub(super) fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::super::testing::{item, policy};
    use super::*;
    use crate::domain::CallId;

    fn failed(status: u16) -> PostResult {
        PostResult {
            status: Some(status),
            ..PostResult::default()
        }
    }

    #[test]
    fn backoff_doubles_from_the_first_wait_within_its_jitter_and_stops_at_the_cap() {
        let p = policy();
        let ms = |attempts, jitter| backoff(&p, attempts, None, jitter).num_milliseconds();
        assert_eq!(ms(1, 1.0), 1000);
        assert_eq!(ms(2, 1.0), 2000);
        assert_eq!(ms(4, 1.0), 8000);
        assert_eq!(ms(3, 0.8), 3200);
        assert_eq!(ms(3, 1.2), 4800);
        assert_eq!(ms(10, 1.0), 30_000, "at most max_backoff");
        assert_eq!(ms(u32::MAX, 1.2), 30_000, "no overflow");
    }

    #[test]
    fn retry_after_raises_the_wait_but_not_past_the_cap() {
        let p = policy();
        let ra = |secs| backoff(&p, 1, Some(Duration::from_secs(secs)), 1.0);
        assert_eq!(ra(7).num_milliseconds(), 7000);
        assert_eq!(ra(0).num_milliseconds(), 1000, "never below the backoff");
        assert_eq!(ra(3600).num_milliseconds(), 30_000);
    }

    #[test]
    fn a_2xx_delivers_a_failure_retries_later_and_the_last_attempt_or_old_age_is_dead() {
        let (p, now) = (policy(), chrono::Utc::now());
        let it = item(1, CallId::new(), "http://127.0.0.1:9/cb", now);
        let ok = outcome(&it, &failed(202), now, &p, || 1.0);
        assert_eq!((ok.status, ok.attempts), (DeliveryStatus::Delivered, 1));
        let retry = outcome(&it, &failed(500), now, &p, || 1.0);
        assert_eq!(retry.status, DeliveryStatus::Pending);
        assert_eq!(retry.next_attempt_at, now + chrono::Duration::seconds(1));
        assert_eq!(retry.attempt.status, Some(500));
        let refused = PostResult {
            error: Some("connection failed: refused".into()),
            ..PostResult::default()
        };
        let third = OutboxItem {
            attempts: 3,
            ..it.clone()
        };
        let dead = outcome(&third, &refused, now, &p, || 1.0);
        assert_eq!((dead.status, dead.attempts), (DeliveryStatus::Dead, 4));
        assert_eq!(
            dead.attempt.error.as_deref(),
            Some("connection failed: refused")
        );
        let old = outcome(
            &it,
            &failed(503),
            now + chrono::Duration::hours(1),
            &p,
            || 1.0,
        );
        assert_eq!(old.status, DeliveryStatus::Dead, "max_age_secs");
    }
}
