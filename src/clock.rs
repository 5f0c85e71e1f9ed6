//! The injectable clock. Business rules never read the system time: they get `now` from a
//! [`Clock`]. [`TokioClock`] follows tokio's clock, so tests with `tokio::time::pause()` move
//! switchyard's time in milliseconds of wall time.

use std::sync::Arc;

use crate::domain::Timestamp;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
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
