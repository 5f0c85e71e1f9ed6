//! Waiting before trying again: the one back-off of the service. Every loop that must not drop
//! its work when something refuses it (a store write, a Kafka subscribe or fetch, a duplicate
//! check) waits on a [`Backoff`]: the first wait, doubled after each refusal up to a ceiling.
//! [`nth_delay`] is the same schedule as a pure function of
//! the attempt, for the meter machine's head-end retries, which are stored as instants rather
//! than slept. Waits run on tokio's timer, so they never block an actor's thread and follow the
//! paused test clock. Imports nothing else in the crate.

use std::future::Future;
use std::time::Duration;

/// The wait before retry `attempt` (1-based): `first × 2^(attempt − 1)`, at most `max`.
pub(crate) fn nth_delay(first: Duration, max: Duration, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(31);
    first.saturating_mul(1u32 << doublings).min(max)
}

/// An exponential back-off for one run of refusals: [`Backoff::wait`] sleeps the current delay
/// and doubles it, up to the ceiling. A loop makes a new one for its next run.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) const fn new(first: Duration, max: Duration) -> Self {
        Backoff { max, next: first }
    }

    /// A back-off that always waits `every` (a poll, not a doubling).
    pub(crate) const fn fixed(every: Duration) -> Self {
        Self::new(every, every)
    }

    /// The delay the next [`Backoff::wait`] sleeps, and doubles it for the one after.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        d
    }

    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

/// Runs `attempt` until it succeeds, waiting on `backoff` between tries; each refusal is logged
/// (at error level: this is for work that cannot go on without it) with `what`.
pub(crate) async fn until_ok<T, E, F, Fut>(what: &str, mut backoff: Backoff, mut attempt: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        match attempt().await {
            Ok(v) => return v,
            Err(e) => {
                tracing::error!(error = %e, "{what}; retrying");
                backoff.wait().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_to_the_ceiling() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_millis(300));
        let seen: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(seen, [50, 100, 200, 300, 300]);
        let mut f = Backoff::fixed(Duration::from_millis(20));
        assert_eq!(
            [f.next_delay(), f.next_delay()],
            [Duration::from_millis(20); 2]
        );
    }

    #[test]
    fn nth_delay_is_the_same_schedule_and_never_overflows() {
        let (first, max) = (Duration::from_secs(10), Duration::from_secs(60));
        let got: Vec<u64> = (1..=5)
            .map(|n| nth_delay(first, max, n).as_secs())
            .collect();
        assert_eq!(got, [10, 20, 40, 60, 60]);
        assert_eq!(nth_delay(first, max, 0), first);
        assert_eq!(nth_delay(first, Duration::MAX, u32::MAX), first * (1 << 31));
        let mut b = Backoff::new(first, max);
        for n in 1..=8 {
            assert_eq!(b.next_delay(), nth_delay(first, max, n));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn until_ok_retries_on_the_tokio_timer() {
        let start = tokio::time::Instant::now();
        let mut tries = 0;
        let v: u32 = until_ok(
            "test write refused",
            Backoff::new(Duration::from_secs(1), Duration::from_secs(4)),
            || {
                tries += 1;
                let n = tries;
                async move {
                    if n < 4 {
                        Err("refused")
                    } else {
                        Ok(n)
                    }
                }
            },
        )
        .await;
        assert_eq!(v, 4);
        // Waited 1 + 2 + 4 s of (paused) tokio time between the four tries.
        assert_eq!(start.elapsed(), Duration::from_secs(7));
    }
}
