//! The circuit breaker of one head-end (issue 16, item 6): pure, no clock (instants are
//! inputs). It owns when a head-end counts as down:
//! - outcomes of commands to the head-end go into a sliding window of one-second buckets;
//!   communication failures (`FailureClass::Communication`, and commands that got no answer
//!   before their deadline) count as failures, every other answer as a success;
//! - with at least `min_commands` outcomes in the window and a failure share of at least
//!   `failure_ratio`, it opens: nothing is admitted (the orders are held, not burned through
//!   their retries);
//! - after `open` it is half-open: `probes` commands are admitted; one success closes it, a
//!   failure opens it again for twice as long, up to `open_max`;
//! - answers to commands sent before it opened change nothing while it is open, and nothing
//!   while it is half-open either (only the probes, sent after, decide).
//!
//! Wired into the meters by [`super::health`].

use std::collections::VecDeque;
use std::time::Duration;

use crate::domain::Timestamp;

/// When a head-end is judged down, and how it is tried again.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BreakerRules {
    pub(crate) window: Duration,
    pub(crate) min_commands: u32,
    pub(crate) failure_ratio: f64,
    pub(crate) open: Duration,
    pub(crate) open_max: Duration,
    pub(crate) probes: u32,
}

impl Default for BreakerRules {
    fn default() -> Self {
        BreakerRules {
            window: Duration::from_secs(30),
            min_commands: 20,
            failure_ratio: 0.5,
            open: Duration::from_secs(30),
            open_max: Duration::from_secs(600),
            probes: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BreakerState {
    Closed,
    /// Nothing is admitted until `until`; `wait` is how long this opening lasts.
    Open {
        since: Timestamp,
        until: Timestamp,
        wait: Duration,
    },
    /// `probes_left` more commands may go; the first answer decides.
    HalfOpen {
        since: Timestamp,
        probes_left: u32,
        wait: Duration,
    },
}

/// A change worth an exception, a metric and a wake-up of the held meters.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Transition {
    Opened { at: Timestamp, until: Timestamp },
    HalfOpened { at: Timestamp },
    Closed { at: Timestamp },
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    second: i64,
    ok: u32,
    failed: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct Breaker {
    rules: BreakerRules,
    buckets: VecDeque<Bucket>,
    state: BreakerState,
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

impl Breaker {
    pub(crate) fn new(rules: BreakerRules) -> Breaker {
        Breaker {
            rules,
            buckets: VecDeque::new(),
            state: BreakerState::Closed,
        }
    }

    pub(crate) fn state(&self) -> &BreakerState {
        &self.state
    }

    /// May a command go to the head-end at `now`? In the half-open state each `true` uses a
    /// probe. The transition, if asking made one (open → half-open).
    pub(crate) fn admit(&mut self, now: Timestamp) -> (bool, Option<Transition>) {
        match self.state.clone() {
            BreakerState::Closed => (true, None),
            BreakerState::Open { until, wait, .. } if now >= until => {
                self.state = BreakerState::HalfOpen {
                    since: now,
                    probes_left: self.rules.probes.saturating_sub(1),
                    wait,
                };
                (true, Some(Transition::HalfOpened { at: now }))
            }
            BreakerState::Open { .. } => (false, None),
            BreakerState::HalfOpen {
                since,
                probes_left,
                wait,
            } => {
                if probes_left == 0 && now >= after(since, wait) {
                    // Every probe went and none was answered (a probe may be lost without an
                    // outcome: not sent after all, its meter moved to another instance): a
                    // new round of probes.
                    self.state = BreakerState::HalfOpen {
                        since: now,
                        probes_left: self.rules.probes.saturating_sub(1),
                        wait,
                    };
                    return (true, None);
                }
                if probes_left == 0 {
                    return (false, None);
                }
                self.state = BreakerState::HalfOpen {
                    since,
                    probes_left: probes_left - 1,
                    wait,
                };
                (true, None)
            }
        }
    }

    /// A probe admitted by [`admit`](Self::admit) that was not used (the meter had nothing
    /// to send): another meter may take it.
    pub(crate) fn give_back(&mut self) {
        if let BreakerState::HalfOpen { probes_left, .. } = &mut self.state {
            *probes_left = (*probes_left + 1).min(self.rules.probes);
        }
    }

    /// The outcome of a command to the head-end, seen at `now`: `failed` = a communication
    /// failure (or no answer before the deadline).
    pub(crate) fn record(
        &mut self,
        now: Timestamp,
        issued_at: Timestamp,
        failed: bool,
    ) -> Option<Transition> {
        match self.state.clone() {
            BreakerState::Open { .. } => None,
            // Only the probes decide: an answer (or a missed deadline) of a command sent
            // before the breaker opened says nothing new.
            BreakerState::HalfOpen { since, .. } if issued_at < since => None,
            BreakerState::HalfOpen { wait, .. } => {
                if failed {
                    let wait = (wait * 2).min(self.rules.open_max);
                    self.open(now, wait)
                } else {
                    self.buckets.clear();
                    self.state = BreakerState::Closed;
                    Some(Transition::Closed { at: now })
                }
            }
            BreakerState::Closed => {
                let second = now.as_second();
                let horizon = second - self.rules.window.as_secs() as i64;
                while self.buckets.front().is_some_and(|b| b.second <= horizon) {
                    self.buckets.pop_front();
                }
                match self.buckets.back_mut() {
                    Some(b) if b.second == second => {
                        if failed {
                            b.failed += 1
                        } else {
                            b.ok += 1
                        }
                    }
                    _ => self.buckets.push_back(Bucket {
                        second,
                        ok: u32::from(!failed),
                        failed: u32::from(failed),
                    }),
                }
                let (ok, bad) = self.buckets.iter().fold((0u64, 0u64), |(o, f), b| {
                    (o + u64::from(b.ok), f + u64::from(b.failed))
                });
                let total = ok + bad;
                if failed
                    && total >= u64::from(self.rules.min_commands)
                    && bad as f64 >= self.rules.failure_ratio * total as f64
                {
                    self.open(now, self.rules.open)
                } else {
                    None
                }
            }
        }
    }

    fn open(&mut self, now: Timestamp, wait: Duration) -> Option<Transition> {
        let until = after(now, wait);
        self.buckets.clear();
        self.state = BreakerState::Open {
            since: now,
            until,
            wait,
        };
        Some(Transition::Opened { at: now, until })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn rules() -> BreakerRules {
        BreakerRules {
            window: Duration::from_secs(10),
            min_commands: 10,
            failure_ratio: 0.5,
            open: Duration::from_secs(30),
            open_max: Duration::from_secs(100),
            probes: 2,
        }
    }

    #[test]
    fn a_burst_of_communication_failures_opens_it_and_a_trickle_does_not() {
        let mut b = Breaker::new(rules());
        // A failure every 3 s among successes: never half the window.
        for s in 0..60 {
            assert_eq!(b.record(t(s), t(s), s % 3 == 0), None, "second {s}");
        }
        assert_eq!(b.state(), &BreakerState::Closed);
        // A burst: 10 failures in 2 s (the trickle has left the window).
        let mut opened = None;
        for i in 0..10 {
            if let Some(x) = b.record(t(100 + i / 5), t(100 + i / 5), true) {
                opened = Some((i, x));
                break;
            }
        }
        let (i, x) = opened.expect("the burst opens it");
        assert!(i < 10);
        assert_eq!(
            x,
            Transition::Opened {
                at: t(101),
                until: t(131)
            }
        );
        assert_eq!(b.admit(t(130)), (false, None));
        // Answers to commands sent before it opened change nothing.
        assert_eq!(b.record(t(110), t(110), false), None);
        assert!(matches!(b.state(), BreakerState::Open { .. }));
    }

    #[test]
    fn after_the_wait_probes_go_and_one_success_closes_it() {
        let mut b = Breaker::new(rules());
        for _ in 0..10 {
            b.record(t(0), t(0), true);
        }
        assert_eq!(
            b.admit(t(30)),
            (true, Some(Transition::HalfOpened { at: t(30) }))
        );
        assert_eq!(b.admit(t(31)), (true, None));
        assert_eq!(b.admit(t(31)), (false, None), "two probes only");
        assert_eq!(
            b.record(t(32), t(32), false),
            Some(Transition::Closed { at: t(32) })
        );
        assert_eq!(b.admit(t(33)), (true, None));
    }

    #[test]
    fn probes_lost_without_an_answer_are_sent_again_after_a_wait() {
        let mut b = Breaker::new(rules());
        for _ in 0..10 {
            b.record(t(0), t(0), true);
        }
        assert!(b.admit(t(30)).0);
        assert!(b.admit(t(30)).0);
        assert!(!b.admit(t(40)).0, "both probes out");
        // Nobody answers them: after another wait, a new round.
        assert!(b.admit(t(60)).0);
        assert!(b.admit(t(60)).0);
        assert!(!b.admit(t(61)).0);
    }

    #[test]
    fn only_the_probes_decide_a_half_open_breaker() {
        let mut b = Breaker::new(rules());
        for _ in 0..10 {
            b.record(t(0), t(0), true);
        }
        assert!(b.admit(t(30)).0);
        // A command sent before it opened misses its deadline now: nothing new.
        assert_eq!(b.record(t(31), t(0), true), None);
        assert!(matches!(b.state(), BreakerState::HalfOpen { .. }));
        assert_eq!(
            b.record(t(32), t(30), false),
            Some(Transition::Closed { at: t(32) })
        );
    }

    #[test]
    fn a_failed_probe_opens_it_for_twice_as_long_up_to_the_most() {
        let mut b = Breaker::new(rules());
        for _ in 0..10 {
            b.record(t(0), t(0), true);
        }
        let mut now = 0;
        for expected in [60, 100, 100] {
            let until = match b.state() {
                BreakerState::Open { until, .. } => *until,
                s => panic!("{s:?}"),
            };
            now = until.as_second() - 1_800_000_000;
            assert!(b.admit(t(now)).0);
            assert_eq!(
                b.record(t(now), t(now), true),
                Some(Transition::Opened {
                    at: t(now),
                    until: t(now + expected)
                })
            );
        }
        assert!(now > 0);
    }

    proptest! {
        /// Whatever the outcomes: an open breaker admits nothing before its time, a closed one
        /// admits everything, and between two answers a half-open one admits at most `probes`.
        #[test]
        fn it_never_admits_while_open(
            script in prop::collection::vec((0i64..5, any::<bool>(), any::<bool>()), 1..300),
        ) {
            let r = rules();
            let mut b = Breaker::new(r.clone());
            let mut now = 0i64;
            let mut admitted_since_answer = 0u32;
            for (dt, ask, failed) in script {
                now += dt;
                if ask {
                    let before = b.state().clone();
                    let (ok, _) = b.admit(t(now));
                    match before {
                        BreakerState::Closed => prop_assert!(ok),
                        BreakerState::Open { until, .. } => prop_assert_eq!(ok, t(now) >= until),
                        BreakerState::HalfOpen { .. } => {}
                    }
                    if ok && !matches!(b.state(), BreakerState::Closed) {
                        admitted_since_answer += 1;
                        prop_assert!(admitted_since_answer <= r.probes);
                    }
                } else {
                    if matches!(b.state(), BreakerState::HalfOpen { .. }) {
                        admitted_since_answer = 0;
                    }
                    if let Some(Transition::Opened { .. }) = b.record(t(now), t(now), failed) {
                        admitted_since_answer = 0;
                    }
                }
            }
        }
    }
}
