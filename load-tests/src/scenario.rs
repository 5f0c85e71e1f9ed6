//! The scenario file (`load-tests/scenarios/*.toml`): what is registered, produced and
//! configured, validated on load and scaled by `--scale`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::targets::Targets;
use crate::workload;
use crate::LoadtestError;

/// One scenario file. Counts are scaled by `--scale`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// Registered meters (produced to the registry topic before switchyard starts).
    pub meters: usize,
    /// Orders on the orders topic before switchyard starts: ingested at once.
    #[serde(default)]
    pub preload: Mix,
    /// Orders produced while switchyard runs, at a fixed rate.
    #[serde(default)]
    pub steady: Option<Steady>,
    /// A campaign of disconnects released at its rate, and a storm of reconnects on its meters.
    #[serde(default)]
    pub campaign: Option<CampaignLoad>,
    #[serde(default)]
    pub head_end: HeadEndLoad,
    /// `kill -9` switchyard once this many commands are in flight (or, if that is never
    /// reached, once every order is accepted and in flight has fallen from its peak), restart
    /// it, and time the recovery of the open orders.
    #[serde(default)]
    pub kill_at_in_flight: Option<usize>,
    /// Partitions per topic (embedded Kafka; topics created by the harness on an external one).
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Give up waiting for the orders to finish after this long (the report says so).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// The product's targets and which of them this scenario tests (the report's last column).
    #[serde(default)]
    pub targets: Targets,
}

fn default_partitions() -> i32 {
    4
}
fn default_timeout() -> u64 {
    900
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    #[serde(default)]
    pub disconnects: usize,
    #[serde(default)]
    pub reconnects: usize,
    #[serde(default)]
    pub reads: usize,
    /// Meter reads on the reads topic (register reads, spread over every meter), not orders.
    #[serde(default)]
    pub meter_reads: usize,
}

impl Mix {
    pub fn total(&self) -> usize {
        self.disconnects + self.reconnects + self.reads
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Steady {
    pub rate_per_sec: u32,
    pub duration_secs: u64,
    /// Shares of disconnects, reconnects and reads (normalised).
    pub mix: [f64; 3],
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignLoad {
    /// Disconnects in the campaign (on the topic before switchyard starts).
    pub orders: usize,
    pub rate_per_hour: u32,
    /// Reconnects produced at once, on every other campaign meter, once the campaign has
    /// released `storm_after_releases` orders.
    pub storm_reconnects: usize,
    pub storm_after_releases: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadEndLoad {
    #[serde(default)]
    pub latency_median_ms: u64,
    #[serde(default)]
    pub latency_p99_ms: u64,
    #[serde(default)]
    pub failure_rate: f64,
    #[serde(default)]
    pub no_answer_rate: f64,
    #[serde(default = "default_deadline")]
    pub command_deadline_secs: u64,
    /// Outages of a head-end (no answers), timed from switchyard's start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outages: Vec<OutageLoad>,
    /// `head_end.breaker.open_secs` / `open_max_secs` (the defaults when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_open_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_open_max_secs: Option<u64>,
}

/// One simulated outage of a head-end or a network segment (`head_end.simulator.outages`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutageLoad {
    /// The head-end that goes dark; empty = any (with `segment`).
    #[serde(default)]
    pub head_end: String,
    /// The collector or feeder that goes dark; empty = the whole head-end.
    #[serde(default)]
    pub segment: String,
    pub after_secs: u64,
    pub for_secs: u64,
}

fn default_deadline() -> u64 {
    30
}

impl Default for HeadEndLoad {
    fn default() -> Self {
        HeadEndLoad {
            latency_median_ms: 0,
            latency_p99_ms: 0,
            failure_rate: 0.0,
            no_answer_rate: 0.0,
            command_deadline_secs: default_deadline(),
            outages: Vec::new(),
            breaker_open_secs: None,
            breaker_open_max_secs: None,
        }
    }
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, LoadtestError> {
        let err = |message: String| LoadtestError::Scenario {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let s: Scenario = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        s.validate().map_err(err)?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), String> {
        if self.meters == 0 {
            return Err("`meters` must be at least 1".into());
        }
        if let Some(c) = &self.campaign {
            if c.rate_per_hour == 0 {
                return Err("`campaign.rate_per_hour` must be at least 1".into());
            }
            if c.orders > self.meters {
                return Err("`campaign.orders` must not exceed `meters` (one per meter)".into());
            }
            if c.storm_reconnects > c.orders.div_ceil(2) {
                return Err("`campaign.storm_reconnects` must not exceed half of `campaign.orders` (one per other campaign meter)".into());
            }
        }
        if let Some(s) = &self.steady {
            if s.mix.iter().any(|x| *x < 0.0) || s.mix.iter().sum::<f64>() <= 0.0 {
                return Err("`steady.mix` needs non-negative shares with a positive sum".into());
            }
        }
        let h = &self.head_end;
        for (k, v) in [
            ("head_end.failure_rate", h.failure_rate),
            ("head_end.no_answer_rate", h.no_answer_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("`{k}` must be between 0 and 1"));
            }
        }
        if self.partitions < 1 {
            return Err("`partitions` must be at least 1".into());
        }
        self.targets.validate()
    }

    /// Multiplies every count by `f` (at least 1 where it was not 0).
    pub fn scaled(mut self, f: f64) -> Scenario {
        if (f - 1.0).abs() < f64::EPSILON {
            return self;
        }
        let s = |n: usize| {
            if n == 0 {
                0
            } else {
                ((n as f64 * f).round() as usize).max(1)
            }
        };
        self.meters = s(self.meters);
        self.preload = Mix {
            disconnects: s(self.preload.disconnects),
            reconnects: s(self.preload.reconnects),
            reads: s(self.preload.reads),
            meter_reads: s(self.preload.meter_reads),
        };
        if let Some(st) = &mut self.steady {
            st.rate_per_sec = (s(st.rate_per_sec as usize) as u32).max(1);
        }
        if let Some(c) = &mut self.campaign {
            c.orders = s(c.orders).min(self.meters);
            c.storm_reconnects = s(c.storm_reconnects).min(c.orders.div_ceil(2));
            c.storm_after_releases = s(c.storm_after_releases);
        }
        if let Some(k) = &mut self.kill_at_in_flight {
            *k = s(*k);
        }
        self
    }

    /// Orders that must reach a final status for the run to be complete.
    pub(crate) fn expected_final(&self) -> usize {
        let steady = self
            .steady
            .as_ref()
            .map(|s| s.rate_per_sec as usize * s.duration_secs as usize)
            .unwrap_or(0);
        let storm = self
            .campaign
            .as_ref()
            .map(|c| 2 * c.storm_reconnects)
            .unwrap_or(0);
        self.preload.total() + steady + storm
    }

    /// Whether the order with this id (as the workload names them) is one of the
    /// `expected_final` orders: every preloaded, steady and storm order, and the campaign
    /// disconnects on the storm's meters (withdrawn or superseded by its reconnects, or
    /// released and finished before them). The other campaign orders finish only if the
    /// campaign happens to release them before the run ends.
    pub(crate) fn expects_final(&self, order_id: &str) -> bool {
        match workload::campaign_index(order_id) {
            Some(i) => self
                .campaign
                .as_ref()
                .is_some_and(|c| i % 2 == 0 && i / 2 < c.storm_reconnects),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{CampaignLoad, Scenario};

    /// Every committed scenario loads and passes validation (the README and the reports run
    /// them by name).
    #[test]
    fn every_committed_scenario_loads() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "toml") {
                let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(
                    Some(s.name.as_str()),
                    path.file_stem().and_then(|x| x.to_str()),
                    "a scenario's name is its file's"
                );
                n += 1;
            }
        }
        assert!(n >= 10, "only {n} scenarios in {}", dir.display());
    }

    #[test]
    fn the_expected_finals_are_the_workload_orders_and_the_storm_meters_campaign_orders() {
        let mut s: Scenario =
            toml::from_str("name = \"x\"\ndescription = \"x\"\nmeters = 10\n").unwrap();
        assert!(s.expects_final("PO-read-00000001"));
        assert!(s.expects_final("ST-00000001"));
        assert!(s.expects_final("RC-00000001"));
        s.campaign = Some(CampaignLoad {
            orders: 10,
            rate_per_hour: 1,
            storm_reconnects: 3,
            storm_after_releases: 1,
        });
        // Storm reconnects on meters 0, 2 and 4: those campaign orders are expected.
        let expected: Vec<usize> = (0..10)
            .filter(|i| s.expects_final(&format!("CO-{i:08}")))
            .collect();
        assert_eq!(expected, vec![0, 2, 4]);
        assert_eq!(s.expected_final(), 6);
    }
}
