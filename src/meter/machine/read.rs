//! Meter reads that reach the meter (only those that matter to it: the reads handler filters
//! on the meter's read watch), and a disconnect's final read.
//! - The post-disconnect watchdog: a cut meter is watched until it is connected again, the
//!   watch period ends, or it shows consumption beyond the tolerance, which raises a
//!   `consumption_after_disconnect` exception on the cut's order (possible bypass or tamper).
//! - History: a meter with an open disconnect or move-out collects its register reads (and
//!   every register a head-end answer carries), the last [`HISTORY`] of them.
//! - The final read (the register in the disconnect's confirmation, else the first register
//!   read after the cut) is checked high / low against that history; a suspicious one raises
//!   `suspicious_final_read` for review instead of being passed on silently.
//!
//! The read watch itself is a projection of the state ([`MeterMachine::read_watch`]): `step`
//! emits its changes.

use crate::domain::{
    AuditEvent, AuditKind, ExceptionKind, FinalRead, MeterRead, OrderKind, ReadKind, ReadWatch,
    RegisterPoint, SwitchState, Timestamp, UsageType,
};
use crate::reads::{after_cut, high_low, Finding, Observed, HISTORY};

use super::{Action, MeterFacts, MeterMachine, Out};

impl MeterMachine {
    /// The meter's reads are watched: it is known disconnected by a cut whose watch has not
    /// ended, or it has an open disconnect or move-out (its history, for the final read).
    pub(crate) fn read_watch(&self) -> Option<ReadWatch> {
        // A meter about to be connected again (a reconnect or move-in open) is not watched:
        // use after its switch closes is expected. If the reconnect fails, the cut is
        // watched again.
        if self
            .open
            .iter()
            .any(|o| o.order.kind.restores_power() && o.awaiting_link.is_none())
        {
            return None;
        }
        if self.switch == SwitchState::Disconnected {
            if let Some(cut) = self.memory.last_cut.as_ref().filter(|c| !c.watch_ended) {
                return Some(ReadWatch {
                    meter_id: self.meter_id.to_string(),
                    order_id: cut.order_id.clone(),
                    since: cut.at,
                    baseline_kwh: cut.register_kwh,
                    history: false,
                });
            }
        }
        let o = self
            .open
            .iter()
            .find(|o| matches!(o.order.kind, OrderKind::Disconnect | OrderKind::MoveOut))?;
        Some(ReadWatch {
            meter_id: self.meter_id.to_string(),
            order_id: o.order.order_id.clone(),
            since: Timestamp::UNIX_EPOCH,
            baseline_kwh: None,
            history: true,
        })
    }

    /// Keeps `p` in the register history (time order, one point per instant, the last
    /// [`HISTORY`]).
    pub(super) fn remember_register(&mut self, p: RegisterPoint) {
        let h = &mut self.memory.register_history;
        if h.iter().any(|x| x.at == p.at) {
            return;
        }
        let i = h.iter().position(|x| x.at > p.at).unwrap_or(h.len());
        h.insert(i, p);
        while h.len() > HISTORY {
            h.remove(0);
        }
    }

    /// The final read `p` of the disconnect `order_id`: checked against the history before
    /// it, audited, and raised for review when suspicious.
    pub(super) fn check_final_read(
        &self,
        order_id: &str,
        p: RegisterPoint,
        facts: &MeterFacts,
        out: &mut Out,
    ) -> FinalRead {
        let c = high_low(&self.memory.register_history, p, &facts.reads.high_low);
        let class: &'static str = c.class.into();
        let kwh = |x: Option<f64>| x.map_or("unknown".to_string(), |v| format!("{v:.3} kWh"));
        let text = format!(
            "final read of order {order_id} on meter {}: {:.3} kWh at {}; {class}: used {} since the last read, history predicts {}",
            out.meter_id,
            p.kwh,
            p.at,
            kwh(c.used_kwh),
            kwh(c.expected_kwh)
        );
        out.audit(
            AuditEvent::new(out.meter_id, out.now, AuditKind::FinalRead)
                .order(order_id)
                .reason(class)
                .detail(text.clone()),
        );
        if c.class.suspicious() {
            out.review(
                order_id,
                "final_read",
                ExceptionKind::SuspiciousFinalRead,
                4,
                format!("{text}. Review it before it is billed"),
            );
        }
        FinalRead {
            kwh: p.kwh,
            at: p.at,
            class: c.class,
            used_kwh: c.used_kwh,
            expected_kwh: c.expected_kwh,
        }
    }

    pub(super) fn on_read(&mut self, r: MeterRead, facts: &MeterFacts, out: &mut Out) {
        out.audit(
            AuditEvent::new(out.meter_id, out.now, AuditKind::ReadReceived)
                .reason(<&'static str>::from(r.kind))
                .detail(r.describe()),
        );
        let active = r.value(UsageType::Active);
        let point = match (r.kind, active) {
            (ReadKind::Register, Some(kwh)) => Some(RegisterPoint { at: r.read_at, kwh }),
            _ => None,
        };
        let watch = self.read_watch();
        // (Remembered after the final-read check below: the check compares with the reads
        // before this one.)
        let remember = |m: &mut MeterMachine| {
            if let Some(p) = point {
                m.memory.last_register_kwh = Some(p.kwh);
                m.remember_register(p);
            }
        };
        let Some(watch) = watch else {
            // The reads handler's entry for this meter is stale (a hand-over, a write that
            // was dropped): clear it, stored, so that its reads stop coming here.
            remember(self);
            out.actions
                .push(Action::Watch(crate::domain::WatchChange::Clear(
                    out.meter_id.to_string(),
                )));
            return;
        };
        if watch.history {
            remember(self);
            return;
        }
        let seen = Observed {
            kind: r.kind,
            interval_start: r.interval_start,
            read_at: r.read_at,
            active_kwh: active,
        };
        match after_cut(watch.since, watch.baseline_kwh, &seen, &facts.reads) {
            Finding::Nothing | Finding::History => remember(self),
            Finding::Baseline(kwh) => {
                // The cut's answer had no register: this read is the final read.
                let p = RegisterPoint { at: r.read_at, kwh };
                self.check_final_read(&watch.order_id, p, facts, out);
                remember(self);
                if let Some(cut) = self.memory.last_cut.as_mut() {
                    cut.register_kwh = Some(kwh);
                }
            }
            Finding::Expired => {
                remember(self);
                if let Some(cut) = self.memory.last_cut.as_mut() {
                    cut.watch_ended = true;
                }
            }
            Finding::Consumption { explanation, .. } => {
                remember(self);
                if let Some(cut) = self.memory.last_cut.as_mut() {
                    cut.watch_ended = true;
                }
                let text = format!(
                    "meter {} was disconnected by order {} at {}; {}: {explanation}",
                    out.meter_id,
                    watch.order_id,
                    watch.since,
                    r.describe()
                );
                out.review(
                    &watch.order_id,
                    "consumption_after_disconnect",
                    ExceptionKind::ConsumptionAfterDisconnect,
                    2,
                    text,
                );
            }
        }
    }
}
