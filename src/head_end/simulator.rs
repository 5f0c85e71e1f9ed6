//! The built-in head-end simulator: a field of meters with service switches. Latency is
//! log-normal (configured median and p99); a configured share of commands fails with a
//! retryable communication error, gets no answer at all, or (connects only) is refused for
//! load-side voltage. Successful commands change the simulated switch and report its state and
//! a register reading. Deterministic for a given seed and command order.
//!
//! Field behaviour (issue 16, item 6): `arm_connect` arms the switch and answers `armed`; a
//! share of customers (`arm_press_rate`) press the button within `arm_press_ms`, and the
//! head-end then answers the same command id again with `connected`. A command that asks for
//! the load-side check gets `load_side_voltage` in its confirmation (voltage after a
//! disconnect with `lsv_after_disconnect_rate`). During a configured outage of a head-end its
//! commands get no answer at all.

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
    field: std::sync::Arc<DashMap<String, FieldMeter>>,
    sink: Weak<dyn ResultSink>,
    clock: std::sync::Arc<dyn Clock>,
    /// Where a meter's switch stands when the simulator first meets it (the field does not
    /// survive the process; the store knows the last confirmed state).
    seed: Option<FieldSeed>,
    /// When the simulator started (outages are timed from it).
    started: crate::domain::Timestamp,
    /// A meter's network segments (collector, feeder), for outages of a segment.
    segments: Option<SegmentLookup>,
}

/// The last known switch state of a meter, if any.
pub(crate) type FieldSeed = Box<dyn Fn(&str) -> Option<SwitchState> + Send + Sync>;

/// A meter's registry segments: its `collector_id` and `feeder_id`, when it has them.
pub(crate) type SegmentLookup = Box<dyn Fn(&str) -> [Option<std::sync::Arc<str>>; 2] + Send + Sync>;

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
            field: std::sync::Arc::default(),
            sink,
            started: clock.now(),
            clock,
            seed: None,
            segments: None,
        }
    }

    /// Outages of a segment find a meter's segments with `lookup` (the registry).
    pub(crate) fn with_segments(mut self, lookup: SegmentLookup) -> Simulator {
        self.segments = Some(lookup);
        self
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

    /// Whether `head_end` is in a configured outage now.
    fn in_outage(&self, cmd: &Command) -> bool {
        if self.cfg.outages.is_empty() {
            return false;
        }
        let since = self.clock.now().duration_since(self.started);
        let since = Duration::try_from(since).unwrap_or_default();
        let mut segments = None;
        self.cfg.outages.iter().any(|o| {
            since >= Duration::from_secs(o.after_secs)
                && since < Duration::from_secs(o.after_secs + o.for_secs)
                && (o.head_end.is_empty() || o.head_end == cmd.head_end_id)
                && (o.segment.is_empty() || {
                    let s = segments.get_or_insert_with(|| {
                        self.segments
                            .as_ref()
                            .map(|f| f(&cmd.meter_id))
                            .unwrap_or_default()
                    });
                    s.iter().flatten().any(|s| **s == *o.segment)
                })
        })
    }

    /// The answer to `cmd` (none: lost), its delay, and for an arming the delay after which
    /// the customer presses the button (if they do).
    fn decide(&self, cmd: &Command) -> (Option<CommandOutcome>, Duration, Option<Duration>) {
        let (roll, delay, field_roll, press_after) = {
            let mut rng = self.rng.lock().expect("rng");
            let roll: f64 = rng.random();
            let delay = self.latency.map(|d| d.sample(&mut *rng)).unwrap_or(0.0);
            let field_roll: f64 = rng.random();
            let press = (rng.random::<f64>() < self.cfg.arm_press_rate)
                .then(|| Duration::from_millis(rng.random_range(0..=self.cfg.arm_press_ms.max(1))));
            (
                roll,
                Duration::from_micros((delay * 1000.0) as u64),
                field_roll,
                press,
            )
        };
        let c = &self.cfg;
        if roll < c.no_answer_rate || self.in_outage(cmd) {
            return (None, delay, None);
        }
        if roll < c.no_answer_rate + c.failure_rate {
            return (
                Some(CommandOutcome::Failed {
                    code: FailureCode::NetworkTimeout,
                    detail: Some("simulated: no route to the meter".into()),
                }),
                delay,
                None,
            );
        }
        if matches!(cmd.kind, CommandKind::Connect | CommandKind::ArmConnect)
            && roll < c.no_answer_rate + c.failure_rate + c.lsv_reject_rate
        {
            return (
                Some(CommandOutcome::Failed {
                    code: FailureCode::LoadSideVoltage,
                    detail: Some("simulated: voltage present on the load side".into()),
                }),
                delay,
                None,
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
        let mut press = None;
        match cmd.kind {
            CommandKind::Disconnect => m.switch = SwitchState::Disconnected,
            CommandKind::Connect => m.switch = SwitchState::Connected,
            CommandKind::LoadLimit => m.switch = SwitchState::LoadLimited,
            CommandKind::ArmConnect if m.switch != SwitchState::Connected => {
                m.switch = SwitchState::Armed;
                press = press_after;
            }
            CommandKind::ArmConnect | CommandKind::Read | CommandKind::SwitchStatus => {}
        }
        if matches!(m.switch, SwitchState::Connected | SwitchState::LoadLimited) {
            m.register_kwh += 0.5;
        }
        let load_side_voltage = cmd.check_load_side_voltage.then(|| match m.switch {
            SwitchState::Connected | SwitchState::LoadLimited => true,
            SwitchState::Disconnected => field_roll < c.lsv_after_disconnect_rate,
            _ => false,
        });
        (
            Some(CommandOutcome::Confirmed {
                switch_state: m.switch,
                register_kwh: Some(m.register_kwh),
                load_side_voltage,
            }),
            delay,
            press,
        )
    }
}

/// The customer pressed the button of an armed switch: closed, if it is still armed.
fn press(field: &DashMap<String, FieldMeter>, meter_id: &str) -> Option<CommandOutcome> {
    let mut m = field.get_mut(meter_id)?;
    if m.switch != SwitchState::Armed {
        return None;
    }
    m.switch = SwitchState::Connected;
    Some(CommandOutcome::Confirmed {
        switch_state: SwitchState::Connected,
        register_kwh: Some(m.register_kwh),
        load_side_voltage: None,
    })
}

impl Simulator {
    /// Presses the button of `command`'s armed switch after `after`, and answers the command
    /// again with the switch connected.
    fn schedule_press(&self, command: &Command, after: Duration) {
        let (field, sink, clock) = (self.field.clone(), self.sink.clone(), self.clock.clone());
        let (command_id, meter_id) = (command.command_id.clone(), command.meter_id.clone());
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(outcome) = press(&field, &meter_id) else {
                return;
            };
            if let Some(sink) = sink.upgrade() {
                sink.deliver_result(CommandResult {
                    schema_version: 1,
                    command_id,
                    meter_id,
                    outcome,
                    at: clock.now(),
                });
            }
        });
    }
}

impl HeadEnd for Simulator {
    fn dispatch(&self, command: std::sync::Arc<Command>) {
        let (outcome, delay, press) = self.decide(&command);
        let Some(outcome) = outcome else { return };
        if let Some(after) = press {
            self.schedule_press(&command, delay + after);
        }
        let sink = self.sink.clone();
        let clock = self.clock.clone();
        let deliver = move || {
            if let Some(sink) = sink.upgrade() {
                sink.deliver_result(CommandResult {
                    schema_version: 1,
                    command_id: command.command_id.clone(),
                    meter_id: command.meter_id.clone(),
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

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}
