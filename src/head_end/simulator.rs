//! The built-in head-end simulator: a field of meters with service switches. Latency is
//! log-normal (configured median and p99); a configured share of commands fails with a
//! retryable communication error, gets no answer at all, or (connects only) is refused for
//! load-side voltage. Successful commands change the simulated switch and report its state and
//! a register reading. Deterministic for a given seed and command order.

use std::sync::{Mutex, Weak};
use std::time::Duration;

use dashmap::DashMap;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};

use super::{HeadEnd, ResultSink};
use crate::clock::Clock;
use crate::config::SimulatorConfig;
use crate::domain::{
    Command, CommandKind, CommandOutcome, CommandResult, FailureCode, SwitchState,
};

struct FieldMeter {
    switch: SwitchState,
    register_kwh: f64,
}

pub struct Simulator {
    cfg: SimulatorConfig,
    latency: Option<LogNormal<f64>>,
    rng: Mutex<SmallRng>,
    field: DashMap<String, FieldMeter>,
    sink: Weak<dyn ResultSink>,
    clock: std::sync::Arc<dyn Clock>,
    /// Where a meter's switch stands when the simulator first meets it (the field does not
    /// survive the process; the store knows the last confirmed state).
    seed: Option<FieldSeed>,
}

/// The last known switch state of a meter, if any.
pub(crate) type FieldSeed = Box<dyn Fn(&str) -> Option<SwitchState> + Send + Sync>;

impl Simulator {
    pub(crate) fn new(
        cfg: SimulatorConfig,
        sink: Weak<dyn ResultSink>,
        clock: std::sync::Arc<dyn Clock>,
    ) -> Simulator {
        let latency = if cfg.latency_median_ms == 0 {
            None
        } else {
            let mu = (cfg.latency_median_ms as f64).ln();
            let sigma = ((cfg.latency_p99_ms.max(cfg.latency_median_ms) as f64).ln() - mu) / 2.326;
            Some(LogNormal::new(mu, sigma.max(0.0)).expect("valid log-normal"))
        };
        Simulator {
            rng: Mutex::new(SmallRng::seed_from_u64(cfg.seed)),
            cfg,
            latency,
            field: DashMap::new(),
            sink,
            clock,
            seed: None,
        }
    }

    /// Meters first met take their switch state from `seed` (e.g. the stored meter state) instead
    /// of "connected": a restarted simulator does not forget the meters it disconnected, so
    /// after a drained shutdown nothing is sent twice. (A command in flight at a `kill -9` is
    /// not known to have run: the new simulator assumes it did not.)
    pub(crate) fn with_field_seed(mut self, seed: FieldSeed) -> Simulator {
        self.seed = Some(seed);
        self
    }

    /// The simulated switch state of a meter (connected until a disconnect succeeds).
    pub fn field_state(&self, meter_id: &str) -> SwitchState {
        self.field
            .get(meter_id)
            .map(|m| m.switch)
            .unwrap_or(SwitchState::Connected)
    }

    fn decide(&self, cmd: &Command) -> (Option<CommandOutcome>, Duration) {
        let (roll, delay) = {
            let mut rng = self.rng.lock().expect("rng");
            let roll: f64 = rng.random();
            let delay = self.latency.map(|d| d.sample(&mut *rng)).unwrap_or(0.0);
            (roll, Duration::from_micros((delay * 1000.0) as u64))
        };
        let c = &self.cfg;
        if roll < c.no_answer_rate {
            return (None, delay);
        }
        if roll < c.no_answer_rate + c.failure_rate {
            return (
                Some(CommandOutcome::Failed {
                    code: FailureCode::NetworkTimeout,
                    detail: Some("simulated: no route to the meter".into()),
                }),
                delay,
            );
        }
        if cmd.kind == CommandKind::Connect
            && roll < c.no_answer_rate + c.failure_rate + c.lsv_reject_rate
        {
            return (
                Some(CommandOutcome::Failed {
                    code: FailureCode::LoadSideVoltage,
                    detail: Some("simulated: voltage present on the load side".into()),
                }),
                delay,
            );
        }
        let mut m = self
            .field
            .entry(cmd.meter_id.clone())
            .or_insert_with(|| FieldMeter {
                switch: self
                    .seed
                    .as_ref()
                    .and_then(|f| f(&cmd.meter_id))
                    .filter(|s| *s != SwitchState::Unknown)
                    .unwrap_or(SwitchState::Connected),
                register_kwh: (fxhash(&cmd.meter_id) % 50_000) as f64,
            });
        match cmd.kind {
            CommandKind::Disconnect => m.switch = SwitchState::Disconnected,
            CommandKind::Connect => m.switch = SwitchState::Connected,
            CommandKind::Read | CommandKind::SwitchStatus => {}
        }
        if m.switch == SwitchState::Connected {
            m.register_kwh += 0.5;
        }
        (
            Some(CommandOutcome::Confirmed {
                switch_state: m.switch,
                register_kwh: Some(m.register_kwh),
            }),
            delay,
        )
    }
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

impl HeadEnd for Simulator {
    fn dispatch(&self, command: Command) {
        let (outcome, delay) = self.decide(&command);
        let Some(outcome) = outcome else { return };
        let sink = self.sink.clone();
        let clock = self.clock.clone();
        let deliver = move || {
            if let Some(sink) = sink.upgrade() {
                sink.deliver_result(CommandResult {
                    schema_version: 1,
                    command_id: command.command_id,
                    meter_id: command.meter_id,
                    outcome,
                    at: clock.now(),
                });
            }
        };
        if delay.is_zero() {
            deliver();
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                deliver();
            });
        }
    }
}
