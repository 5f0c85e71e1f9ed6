//! Service levels of orders: when each order is due, from its reason's priority class, and
//! whether it is on track, at risk, breached or met. Pure: the time is passed in.
//!
//! Every reason belongs to a class (`p1` most urgent .. `p4`) and every class has a time to
//! completion (`[sla]` in the config): a reconnect after payment is P1 (regulators count the
//! hours to restore service), a non-payment disconnect P3. An order is due at its receipt plus
//! its class's time (from its `earliest_at` instead, when later: a dated order is not late before
//! its date). Open: `on_track`, `at_risk` once `at_risk_fraction` of the time is gone,
//! `breached` past due. Ended: `met` or `breached` (completed after due); an order that ended
//! without being carried out (rejected, cancelled, failed) is `closed`: it is not measured.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::{OrderRecord, OrderStatus, ReasonCode, Timestamp};

/// A priority class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaClass {
    P1,
    P2,
    P3,
    P4,
}

/// Where an order stands against its due time.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum SlaState {
    OnTrack,
    AtRisk,
    Breached,
    Met,
    Closed,
}

/// An order's service level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlaView {
    pub class: SlaClass,
    pub due_at: Timestamp,
    pub state: SlaState,
}

/// The service-level targets (`[sla]`).
#[derive(Debug, Clone, PartialEq)]
pub struct SlaTargets {
    pub(crate) due: BTreeMap<SlaClass, Duration>,
    pub(crate) class_of: BTreeMap<String, SlaClass>,
    pub(crate) at_risk_fraction: f64,
}

impl SlaTargets {
    /// The targets of a validated `[sla]`.
    pub(crate) fn from_config(c: &crate::config::SlaConfig) -> SlaTargets {
        let secs = Duration::from_secs;
        SlaTargets {
            due: BTreeMap::from([
                (SlaClass::P1, secs(c.p1_secs)),
                (SlaClass::P2, secs(c.p2_secs)),
                (SlaClass::P3, secs(c.p3_secs)),
                (SlaClass::P4, secs(c.p4_secs)),
            ]),
            class_of: c
                .reasons
                .iter()
                .filter_map(|(r, class)| {
                    serde_json::from_value(serde_json::Value::String(class.clone()))
                        .ok()
                        .map(|k| (r.clone(), k))
                })
                .collect(),
            at_risk_fraction: c.at_risk_fraction,
        }
    }

    /// The class of a reason (an unlisted one: P4).
    pub fn class(&self, reason: ReasonCode) -> SlaClass {
        let name = serde_json::to_value(reason)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        self.class_of.get(&name).copied().unwrap_or(SlaClass::P4)
    }

    /// The order's service level at `now`.
    pub fn of(
        &self,
        rec: &OrderRecord,
        status: OrderStatus,
        updated_at: Timestamp,
        now: Timestamp,
    ) -> SlaView {
        let class = self.class(rec.order.reason);
        let budget = self
            .due
            .get(&class)
            .copied()
            .unwrap_or(Duration::from_secs(7 * 86_400));
        // A dated order (a move on its date, a read not before a time) is due from its date.
        let start = rec
            .order
            .earliest_at
            .map_or(rec.received_at, |e| e.max(rec.received_at));
        let due_at = add(start, budget);
        let state = match status {
            OrderStatus::Completed if updated_at > due_at => SlaState::Breached,
            OrderStatus::Completed => SlaState::Met,
            s if s.is_terminal() => SlaState::Closed,
            _ if now > due_at => SlaState::Breached,
            _ if now >= add(start, budget.mul_f64(self.at_risk_fraction)) => SlaState::AtRisk,
            _ => SlaState::OnTrack,
        };
        SlaView {
            class,
            due_at,
            state,
        }
    }
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::config::SlaConfig;

    fn targets() -> SlaTargets {
        SlaTargets::from_config(&SlaConfig::default())
    }

    fn rec(reason: ReasonCode) -> OrderRecord {
        let mut r = crate::store::contract::accepted("SO-1", "M-1", 0);
        r.order.reason = reason;
        r
    }

    #[test]
    fn a_reconnect_after_payment_is_due_within_its_p1_time() {
        let t = targets();
        let r = rec(ReasonCode::PaymentReceived);
        let v = t.of(&r, OrderStatus::Scheduled, r.received_at, r.received_at);
        assert_eq!(v.class, SlaClass::P1);
        assert_eq!(v.due_at, add(r.received_at, Duration::from_secs(4 * 3600)));
        assert_eq!(v.state, SlaState::OnTrack);
    }

    #[test]
    fn a_dated_order_is_due_from_its_date_not_from_its_arrival() {
        let t = targets();
        let mut r = rec(ReasonCode::Move);
        let date = add(r.received_at, Duration::from_secs(14 * 86_400));
        r.order.earliest_at = Some(date);
        let v = t.of(
            &r,
            OrderStatus::Scheduled,
            r.received_at,
            add(date, Duration::from_secs(60)),
        );
        assert_eq!(v.state, SlaState::OnTrack, "two weeks ahead is not late");
        assert!(v.due_at > date);
    }

    proptest! {
        /// Open orders go on track → at risk → breached as time passes and never back; an
        /// ended order's state does not depend on when it is looked at.
        #[test]
        fn states_follow_the_clock(
            reason in prop::sample::select(vec![ReasonCode::PaymentReceived, ReasonCode::NonPayment, ReasonCode::Safety, ReasonCode::Other]),
            steps in prop::collection::vec(0u64..200_000, 1..20),
            ended_after in 0u64..1_000_000,
        ) {
            let t = targets();
            let r = rec(reason);
            let mut now = r.received_at;
            let mut last = SlaState::OnTrack;
            let rank = |s: SlaState| match s { SlaState::OnTrack => 0, SlaState::AtRisk => 1, _ => 2 };
            for s in steps {
                now = add(now, Duration::from_secs(s));
                let v = t.of(&r, OrderStatus::Dispatched, r.received_at, now);
                prop_assert!(rank(v.state) >= rank(last));
                prop_assert_eq!(v.state == SlaState::Breached, now > v.due_at);
                last = v.state;
            }
            let done = add(r.received_at, Duration::from_secs(ended_after));
            let a = t.of(&r, OrderStatus::Completed, done, done);
            let b = t.of(&r, OrderStatus::Completed, done, add(done, Duration::from_secs(10_000_000)));
            prop_assert_eq!(a.state, b.state);
            prop_assert_eq!(a.state == SlaState::Breached, done > a.due_at);
            prop_assert_eq!(t.of(&r, OrderStatus::Cancelled, done, now).state, SlaState::Closed);
        }
    }
}
