//! One clock for every timer: the real clock, or a virtual one that moves only when told to.
//!
//! Everything about calls (timers, durations, retry backoff, timestamps in call data) reads this
//! clock. Tokens do not: they always use real time, because bots check them against their own.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// A point in time on the call clock; defined in the domain, which takes times as arguments.
pub use switchboard_domain::Timestamp;

/// The clock shared by the engine, the delivery worker and the HTTP layer.
#[derive(Clone)]
pub struct Clock {
    inner: Arc<Inner>,
}

struct Inner {
    /// `Some` for a virtual clock: the time it stands at.
    virtual_now: Option<Mutex<Timestamp>>,
    /// Ticks whenever a virtual clock moves, so sleepers can look again.
    moved: watch::Sender<Timestamp>,
}

/// Why the clock could not be moved.
#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    #[error("the clock is real; start the server with --clock virtual to move it")]
    NotVirtual,
    #[error("the clock cannot move backwards")]
    Backwards,
    #[error("the virtual clock stands at {now} and cannot pass {latest}", now = .now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), latest = LATEST.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))]
    OutOfRange { now: Timestamp },
}

/// The latest time a virtual clock may stand at: the last millisecond of year 9999.
///
/// Graph writes times as ISO 8601 with four-digit years, and RFC 3339 cannot write a later one.
/// It also keeps every timer Switchboard computes from "now" (configured durations are at most
/// [`MAX_SPAN_SECS`]) a quarter of a million years inside the range of `chrono`, whose arithmetic
/// panics beyond it.
pub const LATEST: Timestamp = match DateTime::from_timestamp_millis(253_402_300_799_999) {
    Some(t) => t,
    None => panic!("year 9999 is within chrono's range"),
};

/// The longest configured duration (timeouts, backoff, answering delays) in seconds: ten years.
pub const MAX_SPAN_SECS: u64 = 10 * 365 * 86_400;

impl Clock {
    /// The wall clock.
    pub fn real() -> Self {
        Self::build(None)
    }

    /// A clock that stands at `start` until [`Clock::advance`] moves it.
    pub fn virtual_at(start: Timestamp) -> Self {
        Self::build(Some(start))
    }

    fn build(start: Option<Timestamp>) -> Self {
        let (moved, _) = watch::channel(start.unwrap_or_else(Utc::now));
        Clock {
            inner: Arc::new(Inner {
                virtual_now: start.map(Mutex::new),
                moved,
            }),
        }
    }

    pub fn is_virtual(&self) -> bool {
        self.inner.virtual_now.is_some()
    }

    pub fn now(&self) -> Timestamp {
        match &self.inner.virtual_now {
            Some(t) => *t.lock().expect("clock lock"),
            None => Utc::now(),
        }
    }

    /// Moves a virtual clock forward by `by`. A move past [`LATEST`] is refused and leaves the
    /// clock where it was.
    pub fn advance(&self, by: chrono::Duration) -> Result<Timestamp, ClockError> {
        let Some(t) = &self.inner.virtual_now else {
            return Err(ClockError::NotVirtual);
        };
        if by < chrono::Duration::zero() {
            return Err(ClockError::Backwards);
        }
        let now = {
            let mut t = t.lock().expect("clock lock");
            let next = t
                .checked_add_signed(by)
                .filter(|next| *next <= LATEST)
                .ok_or(ClockError::OutOfRange { now: *t })?;
            *t = next;
            next
        };
        self.inner.moved.send_replace(now);
        Ok(now)
    }

    /// Waits until the clock reads `at` or later. On a virtual clock this waits for
    /// [`Clock::advance`]; on the real clock it sleeps.
    pub async fn sleep_until(&self, at: Timestamp) {
        if self.is_virtual() {
            let mut rx = self.inner.moved.subscribe();
            while self.now() < at {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        } else {
            let wait = (at - Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_virtual_clock_stands_still_until_advanced() {
        let start = Utc::now() - chrono::Duration::days(1);
        let clock = Clock::virtual_at(start);
        assert_eq!(clock.now(), start);
        clock.advance(chrono::Duration::seconds(2700)).unwrap();
        assert_eq!(clock.now(), start + chrono::Duration::seconds(2700));
    }

    #[test]
    fn a_virtual_clock_refuses_to_pass_year_9999_and_stays_where_it_was() {
        let clock = Clock::virtual_at(LATEST - chrono::Duration::seconds(10));
        let before = clock.now();
        assert!(matches!(
            clock.advance(chrono::Duration::seconds(11)),
            Err(ClockError::OutOfRange { now }) if now == before
        ));
        assert_eq!(clock.now(), before);
        // chrono's own limit is refused the same way, not with a panic.
        assert!(matches!(
            clock.advance(chrono::Duration::MAX),
            Err(ClockError::OutOfRange { .. })
        ));
        assert_eq!(
            clock.advance(chrono::Duration::seconds(10)).unwrap(),
            LATEST
        );
        assert_eq!(clock.now(), LATEST);
    }

    #[test]
    fn the_real_clock_refuses_to_be_moved() {
        assert!(matches!(
            Clock::real().advance(chrono::Duration::seconds(1)),
            Err(ClockError::NotVirtual)
        ));
    }

    #[tokio::test]
    async fn a_sleeper_on_the_virtual_clock_wakes_when_time_passes_its_deadline() {
        let clock = Clock::virtual_at(Utc::now());
        let at = clock.now() + chrono::Duration::seconds(60);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(at).await }
        });
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(chrono::Duration::seconds(61)).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(2), sleeper)
            .await
            .expect("woke")
            .unwrap();
    }
}
