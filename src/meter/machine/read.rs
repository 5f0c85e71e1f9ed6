//! Meter reads that reach the meter (only those that matter to it: the reads handler filters
//! on the meter's read watch). The post-disconnect watchdog: a cut meter is watched until it is
//! connected again, the watch period ends, or it shows consumption beyond the tolerance, which
//! raises a `consumption_after_disconnect` exception on the cut's order (possible bypass or
//! tamper) for a person to look at. The read watch itself is a projection of the state
//! ([`MeterMachine::read_watch`]): `step` emits its changes.

use crate::domain::{
    AuditEvent, AuditKind, ExceptionKind, ExceptionRecord, MeterRead, ReadKind, ReadWatch,
    SwitchState, UsageType,
};
use crate::reads::{after_cut, Finding, Observed};

use super::{Action, MeterFacts, MeterMachine, Out};

impl MeterMachine {
    /// The meter's reads are watched: it is known disconnected by a cut whose watch has not
    /// ended.
    pub(crate) fn read_watch(&self) -> Option<ReadWatch> {
        if self.switch != SwitchState::Disconnected {
            return None;
        }
        let cut = self.last_cut.as_ref().filter(|c| !c.watch_ended)?;
        Some(ReadWatch {
            meter_id: self.meter_id.to_string(),
            order_id: cut.order_id.clone(),
            since: cut.at,
            baseline_kwh: cut.register_kwh,
        })
    }

    pub(super) fn on_read(&mut self, r: MeterRead, facts: &MeterFacts, out: &mut Out) {
        out.audit(
            AuditEvent::new(out.meter_id, out.now, AuditKind::ReadReceived)
                .reason(<&'static str>::from(r.kind))
                .detail(r.describe()),
        );
        let active = r.value(UsageType::Active);
        if r.kind == ReadKind::Register && active.is_some() {
            self.last_register_kwh = active;
        }
        let Some(watch) = self.read_watch() else {
            return;
        };
        let seen = Observed {
            kind: r.kind,
            interval_start: r.interval_start,
            read_at: r.read_at,
            active_kwh: active,
        };
        let Some(cut) = self.last_cut.as_mut() else {
            return;
        };
        match after_cut(watch.since, watch.baseline_kwh, &seen, &facts.reads) {
            Finding::Nothing => {}
            Finding::Baseline(kwh) => cut.register_kwh = Some(kwh),
            Finding::Expired => cut.watch_ended = true,
            Finding::Consumption { explanation, .. } => {
                cut.watch_ended = true;
                let text = format!(
                    "meter {} was disconnected by order {} at {}; {}: {explanation}",
                    out.meter_id,
                    watch.order_id,
                    watch.since,
                    r.describe()
                );
                out.audit(
                    AuditEvent::new(out.meter_id, out.now, AuditKind::ExceptionRaised)
                        .order(&watch.order_id)
                        .reason(ExceptionKind::ConsumptionAfterDisconnect.as_str())
                        .detail(text.clone()),
                );
                out.actions.push(Action::Exception(ExceptionRecord {
                    schema_version: crate::domain::event::EVENT_SCHEMA_VERSION,
                    exception_id: format!("{}/consumption_after_disconnect", watch.order_id),
                    meter_id: out.meter_id.to_string(),
                    order_id: watch.order_id.clone(),
                    command_id: None,
                    kind: ExceptionKind::ConsumptionAfterDisconnect,
                    priority: 2,
                    detail: text,
                    raised_at: out.now,
                    status: "open".into(),
                }));
            }
        }
    }
}
