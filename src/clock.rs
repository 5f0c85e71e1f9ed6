//! The injectable clock. Business rules never read the system time: they get `now` from a
//! [`Clock`], and the meter actors' timers (deadlines, wake-ups for deferred orders) wait on
//! [`Clock::sleep_until`]. [`TokioClock`] follows tokio's clock, so tests with
//! `tokio::time::pause()` move switchyard's time in milliseconds of wall time; [`ManualClock`]
//! is set by the test (scenario tests through Kafka, where tokio's paused time cannot be used
//! because the broker runs in real time): a wake-up due at 08:00 on Thursday fires when the test
//! moves the clock there.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::Timestamp;

pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;

    /// Completes once `now() >= at`. The default sleeps on tokio's timer for the difference.
    fn sleep_until(&self, at: Timestamp) -> Sleep {
        let d = at.duration_since(self.now());
        let d = if d.is_negative() {
            Duration::ZERO
        } else {
            d.unsigned_abs()
        };
        Box::pin(tokio::time::sleep(d))
    }
}

/// A clock that only moves when told to.
pub struct ManualClock {
    now: Mutex<Timestamp>,
    moved: tokio::sync::watch::Sender<Timestamp>,
}

impl ManualClock {
    pub fn starting_at(start: Timestamp) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            now: Mutex::new(start),
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

/// `start` plus the time tokio's clock has advanced since creation (paused time included).
pub struct TokioClock {
    start: Timestamp,
    base: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(start: Timestamp) -> Arc<TokioClock> {
        Arc::new(TokioClock {
            start,
            base: tokio::time::Instant::now(),
        })
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let d = tokio::time::Instant::now().duration_since(self.base);
        self.start
            .checked_add(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
            .unwrap_or(Timestamp::MAX)
    }
}
