//! Policy before power: the one pure module that decides whether a disconnect may run now.
//! No I/O and no clock reads: the order, the meter's flags, the time and the known facts are
//! inputs; the output is a [`Decision`] (execute, defer until a time or a fact, await approval,
//! reject) carrying the rule names, the rule-pack version and the inputs it used.
//! Rule packs are data (`config/rules/*.toml`), validated at load ([`RulePack::from_toml`]).
//!
//! Restoring power (reconnect, move-in), reads and cancels are never held by disconnect rules.
//!
//! This is the one pure module of safety rules: the rules a disconnect must pass live here and
//! nowhere else. The meter machine asks [`Policy::decide`] before every disconnect execution,
//! campaigns ask [`Policy::zone_bar`] before releasing into a zone; neither restates a rule.
//! Here: the decision, and the protections no pack can remove; `pack` (rule-pack types, TOML
//! parsing and validation), `calendar` (time zone, weekdays, holidays, business windows,
//! notice), `weather` (forecast moratoria, declared emergencies), `overlay` (a utility's
//! settings, which can only tighten) and `explain` (the rule trace in words).

mod calendar;
mod explain;
mod overlay;
mod pack;
mod weather;

use std::collections::BTreeMap;

use jiff::civil::Time;
use jiff::tz::TimeZone;

pub use crate::domain::{Day, Decision, DecisionInputs, Protection, RuleHit, Verdict};
use crate::domain::{MeterFlags, Order, OrderKind, ReasonCode, Timestamp};
pub(crate) use pack::parse_windows;
pub use pack::{load_dir, LoadLimit, PackError, RulePack, Unsupported};
pub use weather::{Emergency, Forecast, WeatherRule};

/// What is known when deciding.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    pub zone: &'a str,
    pub forecasts: &'a [Forecast],
    pub emergencies: &'a [Emergency],
    pub approved: bool,
    /// The meter can take a demand limit instead of a cut (its head-end's profile).
    pub can_limit_load: bool,
}

/// Protected customers that are never disconnected for non-payment without an explicit
/// approval, whatever the rule pack says (a pack may add to this list, never remove from it).
pub(crate) const BASELINE_PROTECTIONS: [Protection; 3] = [
    Protection::LifeSupport,
    Protection::Medical,
    Protection::CriticalCare,
];

/// What the pack's `[load_limit]` makes of an allowed disconnect.
enum Limit {
    /// Set the meter's demand limit to this many kW instead of opening its switch.
    To(f64),
    /// The meter cannot limit: the full disconnect goes (the pack allows it, or it was
    /// approved).
    FullDisconnect,
    /// The meter cannot limit: a person decides.
    AwaitApproval,
}

/// A loaded, validated pack with its parsed time zone and windows.
#[derive(Debug, Clone)]
pub struct Policy {
    pub pack: RulePack,
    tz: TimeZone,
    windows: BTreeMap<Day, (Time, Time)>,
}

/// What the decision records about its inputs (so that it can be replayed and explained).
fn decision_inputs(
    order: &Order,
    flags: MeterFlags,
    now: Timestamp,
    facts: &Facts,
) -> DecisionInputs {
    DecisionInputs {
        at: now,
        kind: Some(order.kind),
        reason: Some(order.reason),
        zone: facts.zone.to_string(),
        protections: Protection::ALL
            .iter()
            .copied()
            .filter(|p| flags.contains(p.flag()))
            .collect(),
        approved: facts.approved,
        notice_sent_at: order.notice_sent_at,
        amount_due: order.amount_due,
        forecasts_known: facts
            .forecasts
            .iter()
            .filter(|f| f.zone == facts.zone)
            .count(),
        emergencies_known: facts
            .emergencies
            .iter()
            .filter(|e| e.zones.is_empty() || e.zones.iter().any(|z| z == facts.zone))
            .count(),
        can_limit_load: facts.can_limit_load,
    }
}

impl Policy {
    /// The utility's time zone (the pack's; UTC for the baseline): where "today" begins.
    pub(crate) fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// Whether disconnects in `zone` are barred at `t` whatever the order (calendar, business
    /// window, weather, declared emergency), with the rule and the next time the facts known
    /// now allow them. A campaign uses it to hold a zone's releases without losing its place.
    pub fn zone_bar(
        &self,
        t: Timestamp,
        zone: &str,
        forecasts: &[Forecast],
        emergencies: &[Emergency],
    ) -> Option<(RuleHit, Option<Timestamp>)> {
        let facts = Facts {
            zone,
            forecasts,
            emergencies,
            approved: false,
            can_limit_load: false,
        };
        if let Some((until, hit)) = self.emergency_until(t, &facts) {
            return Some((hit, until.and_then(|u| self.next_allowed(u.max(t), &facts))));
        }
        let hit = self.time_bar(t, &facts)?;
        Some((hit, self.next_allowed(t, &facts)))
    }

    /// The decision for `order` on a meter with `flags` at `now`.
    pub fn decide(
        &self,
        order: &Order,
        flags: MeterFlags,
        now: Timestamp,
        facts: &Facts,
    ) -> Decision {
        let pack = self.label();
        let inputs = decision_inputs(order, flags, now, facts);
        let done = |verdict, mut rules: Vec<RuleHit>| {
            if order.kind == OrderKind::MoveOut {
                // Said last: the first rule stays the one that decided.
                rules.push(RuleHit {
                    rule: "move_out".into(),
                    detail: "a customer's move-out, not a non-payment disconnect: no notice period or minimum balance; emergencies, weather, calendar, windows and protections (life support, medical, critical care: someone may stay behind) apply".into(),
                });
            }
            Decision {
                verdict,
                pack: pack.clone(),
                rules,
                load_limit_kw: None,
                inputs: inputs.clone(),
            }
        };
        if order.kind != OrderKind::Disconnect && order.kind != OrderKind::MoveOut {
            return done(
                Verdict::Execute,
                vec![RuleHit {
                    rule: "not_a_disconnect".into(),
                    detail: format!(
                        "{} orders are not held by disconnect rules",
                        order.kind.as_str()
                    ),
                }],
            );
        }
        let mut rules = Vec::new();
        if let Some(hit) = self.approval_required(order, flags, facts) {
            rules.push(hit);
            return done(Verdict::AwaitApproval, rules);
        }
        if let Some(hit) = self.minimum_balance(order) {
            rules.push(hit);
            return done(Verdict::Reject, rules);
        }
        let mut from = now;
        // A customer's move needs no notice of disconnection.
        let notice = if order.kind == OrderKind::MoveOut {
            Ok(None)
        } else {
            self.notice(order, from)
        };
        match notice {
            Err(hit) => {
                rules.push(hit);
                return done(Verdict::Reject, rules);
            }
            Ok(Some((due, hit))) => {
                rules.push(hit);
                from = due;
            }
            Ok(None) => {}
        }
        if let Some(e) = order.earliest_at {
            if e > from {
                from = e;
            }
        }
        if let Some((until, hit)) = self.emergency_until(now, facts) {
            rules.push(hit);
            let until = until
                .map(|u| u.max(from))
                .and_then(|u| self.next_allowed(u, facts));
            return done(Verdict::Defer { until }, rules);
        }
        if from == now {
            match self.time_bar(now, facts) {
                None => {
                    rules.push(RuleHit {
                        rule: "allowed".into(),
                        detail: "calendar, window, weather, notice and protection allow it".into(),
                    });
                    // Only an allowed disconnect becomes a demand limit: the limit is a
                    // milder action, never a way around a rule.
                    return match self.load_limit(order, facts) {
                        None => done(Verdict::Execute, rules),
                        Some((hit, Limit::To(kw))) => {
                            rules.push(hit);
                            let mut d = done(Verdict::Execute, rules);
                            d.load_limit_kw = Some(kw);
                            d
                        }
                        Some((hit, Limit::FullDisconnect)) => {
                            rules.push(hit);
                            done(Verdict::Execute, rules)
                        }
                        Some((hit, Limit::AwaitApproval)) => {
                            // The rule that decided comes first.
                            rules.insert(0, hit);
                            done(Verdict::AwaitApproval, rules)
                        }
                    };
                }
                Some(hit) => rules.push(hit),
            }
        }
        let until = self.next_allowed(from, facts);
        done(Verdict::Defer { until }, rules)
    }

    /// Protection and special handling: a person decides. The protections on the meter that
    /// need an approval (the pack's, and for non-payment the built-in ones), unless approved.
    fn approval_required(
        &self,
        order: &Order,
        flags: MeterFlags,
        facts: &Facts,
    ) -> Option<RuleHit> {
        let mut needs: Vec<Protection> = self
            .pack
            .approval_required_for
            .iter()
            .copied()
            .filter(|p| flags.contains(p.flag()))
            .collect();
        // A move-out too: the flag is on the service point, and someone on life support may
        // stay behind when the account holder moves.
        if order.reason == ReasonCode::NonPayment
            || order.kind == OrderKind::MoveOut
            || order.reason == ReasonCode::Move
        {
            for p in BASELINE_PROTECTIONS {
                if flags.contains(p.flag()) && !needs.contains(&p) {
                    needs.push(p);
                }
            }
        }
        if !needs.is_empty() && !facts.approved {
            return Some(RuleHit {
                rule: "approval_required".into(),
                detail: format!("meter flagged {needs:?}: an explicit approval is required"),
            });
        }
        None
    }

    /// The pack's `[load_limit]` for an allowed disconnect (`None`: not a case for a limit).
    fn load_limit(&self, order: &Order, facts: &Facts) -> Option<(RuleHit, Limit)> {
        let l = self.pack.load_limit.as_ref()?;
        if order.kind != OrderKind::Disconnect || !l.reasons.contains(&order.reason) {
            return None;
        }
        let hit = |rule: &str, detail: String| RuleHit {
            rule: rule.into(),
            detail,
        };
        if facts.can_limit_load {
            return Some((
                hit(
                    "load_limit",
                    format!(
                        "the pack limits demand to {} kW instead of a full disconnect for {}",
                        l.demand_kw,
                        calendar::reason_key(order.reason)
                    ),
                ),
                Limit::To(l.demand_kw),
            ));
        }
        Some(match (l.unsupported, facts.approved) {
            (pack::Unsupported::AwaitApproval, false) => (
                hit(
                    "load_limit_unsupported",
                    format!(
                        "the pack asks for a {} kW demand limit instead of a full disconnect and this meter's head-end cannot set one: a person approves the full disconnect or cancels the order",
                        l.demand_kw
                    ),
                ),
                Limit::AwaitApproval,
            ),
            (pack::Unsupported::AwaitApproval, true) => (
                hit(
                    "load_limit_unsupported",
                    "this meter's head-end cannot set a demand limit; the full disconnect was approved".into(),
                ),
                Limit::FullDisconnect,
            ),
            (pack::Unsupported::Disconnect, _) => (
                hit(
                    "load_limit_unsupported",
                    "this meter's head-end cannot set a demand limit; the pack allows the full disconnect instead".into(),
                ),
                Limit::FullDisconnect,
            ),
        })
    }

    /// A non-payment disconnect for an amount at or below the pack's minimum balance.
    fn minimum_balance(&self, order: &Order) -> Option<RuleHit> {
        if order.reason == ReasonCode::NonPayment {
            if let (Some(min), Some(due)) =
                (self.pack.min_balance_for_non_payment, order.amount_due)
            {
                if due <= min {
                    return Some(RuleHit { rule: "minimum_balance".into(), detail: format!("amount due {due:.2} is at or below {min:.2}: not disconnected for non-payment") });
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
