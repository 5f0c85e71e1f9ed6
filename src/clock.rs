//! The injectable clock. Business rules never read the system time: they get `now` from a
//! [`Clock`], and the meter actors' timers (deadlines, wake-ups for deferred orders) wait on
//! [`Clock::sleep_until`]. [`TokioClock`] follows tokio's clock, so tests with
//! `tokio::time::pause()` move switchyard's time in milliseconds of wall time; [`ManualClock`]
//! is set by the test (scenario tests through Kafka, where tokio's paused time cannot be used
//! because the broker runs in real time): a wake-up due at 08:00 on Thursday fires when the test
//! moves the clock there.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::Timestamp;

pub(crate) type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;

    /// Completes once `now() >= at`. The default sleeps on tokio's timer for the difference.
    fn sleep_until(&self, at: Timestamp) -> Sleep {
        Box::pin(tokio::time::sleep(time_until(self.now(), at)))
    }
}

/// How long from `now` until `at`; zero when `at` has passed.
fn time_until(now: Timestamp, at: Timestamp) -> Duration {
    let d = at.duration_since(now);
    if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    }
}

/// A clock that only moves when told to. Test-only: built for this crate's unit tests and, through
/// the `testing` feature (which the crate's own dev-dependency on itself turns on), for its
/// integration tests; the service binary has no clock that a caller can set.
#[cfg(any(test, feature = "testing"))]
pub struct ManualClock {
    now: std::sync::Mutex<Timestamp>,
    moved: tokio::sync::watch::Sender<Timestamp>,
}

#[cfg(any(test, feature = "testing"))]
impl ManualClock {
    pub fn starting_at(start: Timestamp) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            now: std::sync::Mutex::new(start),
            moved: tokio::sync::watch::channel(start).0,
        })
    }

    /// Moves the clock to `t` (never backwards) and fires every timer due by then.
    pub fn set(&self, t: Timestamp) {
        let mut now = self.now.lock().expect("lock");
        if t > *now {
            *now = t;
            self.moved.send_replace(t);
        }
    }

    pub fn advance(&self, d: Duration) {
        let t = self.now();
        self.set(
            t.checked_add(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
                .unwrap_or(Timestamp::MAX),
        );
    }
}

#[cfg(any(test, feature = "testing"))]
impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().expect("lock")
    }

    fn sleep_until(&self, at: Timestamp) -> Sleep {
        let mut rx = self.moved.subscribe();
        Box::pin(async move {
            loop {
                if *rx.borrow_and_update() >= at {
                    return;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
    }
}

/// Wall-clock time.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// `start` plus `speed` times the time tokio's clock has advanced since creation (paused time
/// included). With a start in the past or future, or a speed above 1, it is the UAT business
/// clock of `clock.start_at` / `clock.speed`.
pub struct TokioClock {
    start: Timestamp,
    base: tokio::time::Instant,
    speed: f64,
}

impl TokioClock {
    pub fn starting_at(start: Timestamp) -> Arc<TokioClock> {
        TokioClock::scaled(start, 1.0)
    }

    /// Business time starts at `start` and runs `speed` (at least 1) times faster than tokio's.
    pub(crate) fn scaled(start: Timestamp, speed: f64) -> Arc<TokioClock> {
        Arc::new(TokioClock {
            start,
            base: tokio::time::Instant::now(),
            speed: speed.max(1.0),
        })
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let d = tokio::time::Instant::now().duration_since(self.base);
        let d = if self.speed == 1.0 {
            d
        } else {
            d.mul_f64(self.speed)
        };
        self.start
            .checked_add(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
            .unwrap_or(Timestamp::MAX)
    }

    fn sleep_until(&self, at: Timestamp) -> Sleep {
        let d = time_until(self.now(), at);
        let wall = if self.speed == 1.0 {
            d
        } else {
            // Rounded up: woken a little late rather than before `at`.
            Duration::from_secs_f64(d.as_secs_f64() / self.speed) + Duration::from_nanos(1)
        };
        Box::pin(tokio::time::sleep(wall))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_uat_clock_starts_at_its_instant_and_runs_faster_by_its_speed() {
        let start: Timestamp = "2026-12-24T12:00:00Z".parse().unwrap();
        let clock = TokioClock::scaled(start, 60.0);
        assert_eq!(clock.now(), start);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(clock.now(), "2026-12-24T12:01:00Z".parse().unwrap());

        // A wake-up an hour of business time away fires after a minute of tokio time, not
        // before.
        let at: Timestamp = "2026-12-24T13:01:00Z".parse().unwrap();
        let t0 = tokio::time::Instant::now();
        clock.sleep_until(at).await;
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_secs(60) && waited < Duration::from_millis(60_010),
            "waited {waited:?}"
        );
        assert!(clock.now() >= at);
    }

    #[tokio::test(start_paused = true)]
    async fn speed_one_is_tokio_time_from_the_start() {
        let start: Timestamp = "2026-12-25T09:00:00-05:00".parse().unwrap();
        let clock = TokioClock::starting_at(start);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(clock.now(), "2026-12-25T14:00:01.5Z".parse().unwrap());
    }
}
