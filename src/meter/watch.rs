//! The read watches this instance holds: which of its meters want their reads (a cut is
//! watched for consumption), as a concurrent map the reads handler consults for every read
//! before anything is copied. The meter actors keep it current (a change is applied once the
//! step that made it is durable); an assignment loads its units' watches from the store.

use dashmap::DashMap;

use crate::domain::{ReadWatch, Timestamp, WatchChange};
use crate::observability::metrics;
use crate::reads::{after_cut, Finding, Observed, ReadRules};

/// A watched cut: when it was confirmed and the register then; or (`history`) a meter
/// collecting its register reads for an open disconnect's final-read check.
#[derive(Debug, Clone, Copy)]
struct Cut {
    since: Timestamp,
    baseline_kwh: Option<f64>,
    history: bool,
}

#[derive(Default)]
pub struct ReadWatches {
    cuts: DashMap<Box<str>, Cut>,
}

impl ReadWatches {
    pub fn new() -> std::sync::Arc<ReadWatches> {
        std::sync::Arc::default()
    }

    pub(crate) fn apply(&self, change: &WatchChange) {
        match change {
            WatchChange::Set(w) => self.set(w),
            WatchChange::Clear(m) => {
                self.cuts.remove(m.as_str());
            }
        }
        metrics().read_watches.set(self.cuts.len() as f64);
    }

    fn set(&self, w: &ReadWatch) {
        self.cuts.insert(
            w.meter_id.as_str().into(),
            Cut {
                since: w.since,
                baseline_kwh: w.baseline_kwh,
                history: w.history,
            },
        );
    }

    /// Watches read from the store for an assignment's units: they replace what was held for
    /// the meters `in_units` says are theirs (a unit given back may have changed meanwhile).
    pub(crate) fn load(&self, in_units: impl Fn(&str) -> bool, watches: Vec<ReadWatch>) {
        self.cuts.retain(|m, _| !in_units(m));
        for w in &watches {
            self.set(w);
        }
        metrics().read_watches.set(self.cuts.len() as f64);
    }

    /// What the watchdog makes of `read` for `meter_id`: [`Finding::Nothing`] for a meter
    /// that is not watched (no allocation, one map lookup).
    pub(crate) fn evaluate(&self, meter_id: &str, read: &Observed, rules: &ReadRules) -> Finding {
        match self.cuts.get(meter_id) {
            Some(c) if c.history => match (read.kind, read.active_kwh) {
                (crate::domain::ReadKind::Register, Some(_)) => Finding::History,
                _ => Finding::Nothing,
            },
            Some(c) => after_cut(c.since, c.baseline_kwh, read, rules),
            None => Finding::Nothing,
        }
    }

    pub fn is_watched(&self, meter_id: &str) -> bool {
        self.cuts.contains_key(meter_id)
    }

    pub fn len(&self) -> usize {
        self.cuts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cuts.is_empty()
    }
}
