//! The read watches this instance holds: which of its meters want their reads (a cut is
//! watched for consumption, or an open disconnect collects its history), as a concurrent map
//! the reads handler consults for every read before anything is copied. The meter actors keep
//! it current: a watch set by a step is applied before its write (a read handled meanwhile is
//! delivered, not lost), a clear once the write is durable; an assignment adds its units'
//! watches from the store. An entry may be stale (more than the meter's state says): the read
//! it lets through reaches the meter, whose machine decides again and clears it. An entry is
//! never missing for a meter whose stored state is watched.

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

    /// Watches read from the store for an assignment's units, added where the map has none:
    /// an entry an actor set after the store was read is newer than the row, and one left from
    /// an earlier hand-over of the unit is at worst stale (see the module's note).
    pub(crate) fn load(&self, watches: Vec<ReadWatch>) {
        for w in &watches {
            self.cuts.entry(w.meter_id.as_str().into()).or_insert(Cut {
                since: w.since,
                baseline_kwh: w.baseline_kwh,
                history: w.history,
            });
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
