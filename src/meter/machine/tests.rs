//! Tests of the pure meter state machine: scenarios, and a property test that drives it with
//! random orders, answers, lost answers, crashes and time, against a simulated field meter.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::domain::{CommandOutcome, ExceptionKind, FailureCode, Order, OrderKind, ReasonCode};

/// The payloads of one kind of action, in order: `picked!(actions, Action::Dispatch)`.
macro_rules! picked {
    ($actions:expr, $variant:path) => {
        $actions
            .iter()
            .filter_map(|a| match a {
                $variant(x) => Some(x.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
}
pub(super) use picked;

pub(super) fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        backoff_initial: Duration::from_secs(10),
        backoff_max: Duration::from_secs(60),
        command_deadline: Duration::from_secs(30),
    }
}

fn facts(has_switch: bool) -> MeterFacts {
    MeterFacts::baseline(has_switch, "HE-1")
}

/// One step of a meter with a switch, under the test retry policy.
pub(super) fn step(m: &mut MeterMachine, input: Input, now: Timestamp) -> Vec<Action> {
    m.step(input, now, &facts(true), &policy())
}

pub(super) fn t0() -> Timestamp {
    "2026-11-25T08:00:00Z".parse().unwrap()
}

pub(super) fn at(secs: i64) -> Timestamp {
    t0() + jiff::SignedDuration::from_secs(secs)
}

pub(super) fn order(id: &str, kind: OrderKind) -> Order {
    Order {
        order_id: id.into(),
        kind,
        reason: ReasonCode::NonPayment,
        meter_id: "M".into(),
        service_point_id: None,
        account_id: None,
        priority: 5,
        earliest_at: None,
        latest_at: None,
        notice_sent_at: None,
        campaign_id: None,
        target_order_id: None,
        linked_order_id: None,
        linked_meter_id: None,
        notes: None,
        created_at: None,
        amount_due: None,
    }
}

pub(super) fn cancel(id: &str, target: &str) -> Order {
    let mut o = order(id, OrderKind::Cancel);
    o.target_order_id = Some(target.into());
    o
}

pub(super) fn dispatched(actions: &[Action]) -> Vec<Command> {
    picked!(actions, Action::Dispatch)
        .into_iter()
        .map(std::sync::Arc::unwrap_or_clone)
        .collect()
}

fn events(actions: &[Action]) -> Vec<(String, OrderStatus, Option<String>)> {
    actions
        .iter()
        .filter_map(|a| {
            if let Action::Event(e) = a {
                Some((e.order_id.clone(), e.status, e.reason.clone()))
            } else {
                None
            }
        })
        .collect()
}

fn confirmed(c: &Command, s: SwitchState) -> Input {
    Input::Result(CommandResult {
        schema_version: 1,
        command_id: c.command_id.clone(),
        meter_id: c.meter_id.clone(),
        outcome: CommandOutcome::Confirmed {
            load_side_voltage: None,
            switch_state: s,
            register_kwh: None,
        },
        at: c.issued_at,
    })
}

fn failed(c: &Command, code: FailureCode) -> Input {
    Input::Result(CommandResult {
        schema_version: 1,
        command_id: c.command_id.clone(),
        meter_id: c.meter_id.clone(),
        outcome: CommandOutcome::Failed { code, detail: None },
        at: c.issued_at,
    })
}

#[test]
fn a_disconnect_is_dispatched_once_and_completes_on_confirmation() {
    let mut m = MeterMachine::new("M");
    let a = step(
        &mut m,
        Input::Order(order("D1", OrderKind::Disconnect)),
        t0(),
    );
    let cmds = dispatched(&a);
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0].command_id, "D1/1");
    assert_eq!(cmds[0].deadline, at(30));
    let a = step(
        &mut m,
        confirmed(&cmds[0], SwitchState::Disconnected),
        at(2),
    );
    let ev: Vec<OrderStatus> = events(&a).into_iter().map(|e| e.1).collect();
    assert_eq!(ev, vec![OrderStatus::Confirmed, OrderStatus::Completed]);
    assert!(m.is_idle());
    assert_eq!(m.switch, SwitchState::Disconnected);
    // A second disconnect completes without a command.
    let a = step(
        &mut m,
        Input::Order(order("D2", OrderKind::Disconnect)),
        at(3),
    );
    assert!(dispatched(&a).is_empty());
    assert_eq!(
        events(&a),
        vec![(
            "D2".into(),
            OrderStatus::Completed,
            Some("already_disconnected".into())
        )]
    );
}

/// A live meter keeps room for the orders it holds, and none once they closed (the actor
/// stays live for its idle time after its order: a vector grown from empty kept room for four
/// orders, about 2.5 KB per live actor, measured by the `actor_memory` bench).
#[test]
fn a_meter_keeps_no_room_for_orders_once_they_closed() {
    let mut m = MeterMachine::new("M");
    let a = step(
        &mut m,
        Input::Order(order("D1", OrderKind::Disconnect)),
        t0(),
    );
    assert_eq!((m.open.len(), m.open.capacity()), (1, 1));
    let cmds = dispatched(&a);
    step(
        &mut m,
        confirmed(&cmds[0], SwitchState::Disconnected),
        at(2),
    );
    assert!(m.is_idle());
    assert_eq!(m.open.capacity(), 0, "the closed order's room is freed");
    // Two at once still fit.
    step(
        &mut m,
        Input::Order(order("R1", OrderKind::Reconnect)),
        at(3),
    );
    step(&mut m, Input::Order(order("R2", OrderKind::Read)), at(4));
    assert_eq!(m.open.len(), 2);
}

#[test]
fn only_one_command_in_flight_and_reconnects_go_first() {
    let mut m = MeterMachine::new("M");
    let a = step(&mut m, Input::Order(order("R0", OrderKind::Read)), t0());
    let read = dispatched(&a).remove(0);
    let a = step(
        &mut m,
        Input::Order(order("D1", OrderKind::Disconnect)),
        at(1),
    );
    assert!(dispatched(&a).is_empty(), "busy: nothing else is sent");
    let mut r = order("R1", OrderKind::Read);
    r.priority = 1;
    step(&mut m, Input::Order(r), at(1));
    let a = step(
        &mut m,
        Input::Order(order("C1", OrderKind::Reconnect)),
        at(1),
    );
    // The reconnect superseded the pending disconnect.
    assert_eq!(
        events(&a)[0],
        (
            "D1".into(),
            OrderStatus::Cancelled,
            Some("superseded_by_reconnect".into())
        )
    );
    let a = step(&mut m, confirmed(&read, SwitchState::Disconnected), at(2));
    let next = dispatched(&a);
    assert_eq!(next.len(), 1);
    assert_eq!(
        next[0].order_id, "C1",
        "the reconnect goes before a priority-1 read"
    );
}

#[test]
fn retryable_failures_back_off_exponentially_then_raise_an_exception() {
    let mut m = MeterMachine::new("M");
    let mut a = step(
        &mut m,
        Input::Order(order("D1", OrderKind::Disconnect)),
        t0(),
    );
    let mut now = t0();
    let mut waits = Vec::new();
    for attempt in 1..=3 {
        let c = dispatched(&a).remove(0);
        assert_eq!(c.attempt, attempt);
        now = now + jiff::SignedDuration::from_secs(1);
        a = step(&mut m, failed(&c, FailureCode::NetworkTimeout), now);
        if let Some(Action::WakeAt(w)) = a.iter().find(|x| matches!(x, Action::WakeAt(_))) {
            waits.push(w.duration_since(now).as_secs());
            now = *w;
            a = step(&mut m, Input::Wake, now);
        }
    }
    assert_eq!(waits, vec![10, 20]);
    let ex: Vec<_> = a
        .iter()
        .filter_map(|x| {
            if let Action::Exception(e) = x {
                Some(e.kind)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(ex, vec![ExceptionKind::RetriesExhausted]);
    assert!(m.is_idle());
}

#[test]
fn load_side_voltage_is_not_retried() {
    let mut m = MeterMachine::new("M");
    let a = step(
        &mut m,
        Input::Order(order("C1", OrderKind::Reconnect)),
        t0(),
    );
    let c = dispatched(&a).remove(0);
    let a = step(&mut m, failed(&c, FailureCode::LoadSideVoltage), at(1));
    assert!(dispatched(&a).is_empty());
    assert!(a.iter().any(|x| matches!(x, Action::Exception(e) if e.kind == ExceptionKind::LoadSideVoltage && e.priority == 1)));
}

#[test]
fn an_unknown_outcome_is_resolved_by_a_status_check_not_a_resend() {
    let mut m = MeterMachine::new("M");
    let a = step(
        &mut m,
        Input::Order(order("D1", OrderKind::Disconnect)),
        t0(),
    );
    let c = dispatched(&a).remove(0);
    let a = step(&mut m, Input::Deadline(c.command_id.clone()), at(30));
    let s = dispatched(&a).remove(0);
    assert_eq!(s.kind, CommandKind::SwitchStatus);
    assert_eq!(s.command_id, "D1/1/status-1");
    // It did take effect: confirmed without a second disconnect.
    let a = step(&mut m, confirmed(&s, SwitchState::Disconnected), at(31));
    assert!(dispatched(&a).is_empty());
    assert_eq!(events(&a).last().unwrap().1, OrderStatus::Completed);
    assert_eq!(
        events(&a)[0].2.as_deref(),
        Some("confirmed_by_status_check")
    );
}

#[test]
fn a_disconnect_not_sent_is_decided_again_without_a_status_check_and_is_not_an_attempt() {
    let mut m = MeterMachine::new("M");
    let mut a = step(
        &mut m,
        Input::Order(order("D1", OrderKind::Disconnect)),
        t0(),
    );
    // Held back more often than max_attempts: each time decided again after a backoff, never
    // status-checked (the switch did not move), never failed.
    let tries = policy().max_attempts + 2;
    let mut t = 0;
    for n in 1..=tries {
        let c = dispatched(&a).remove(0);
        assert_eq!(c.kind, CommandKind::Disconnect);
        assert_eq!(c.command_id, format!("D1/{n}"), "command ids stay unique");
        t += 1;
        let held = step(&mut m, Input::NotSent(c.command_id.clone()), at(t));
        assert!(
            dispatched(&held).is_empty(),
            "nothing sent before the backoff"
        );
        assert_eq!(
            events(&held),
            vec![(
                "D1".into(),
                OrderStatus::RetryScheduled,
                Some("not_sent".into())
            )]
        );
        t += 600;
        a = step(&mut m, Input::Wake, at(t));
    }
    // Now sent, and it fails for real: the first real attempt, so it is retried.
    let c = dispatched(&a).remove(0);
    let a = step(&mut m, failed(&c, FailureCode::NetworkTimeout), at(t + 1));
    assert_eq!(
        events(&a),
        vec![(
            "D1".into(),
            OrderStatus::RetryScheduled,
            Some("network_timeout".into())
        )]
    );
}

#[test]
fn a_cancel_during_an_unknown_outcome_never_leads_to_a_resend() {
    let mut m = MeterMachine::new("M");
    let a = step(
        &mut m,
        Input::Order(order("D1", OrderKind::Disconnect)),
        t0(),
    );
    let c = dispatched(&a).remove(0);
    let a = step(&mut m, Input::Deadline(c.command_id.clone()), at(30));
    let s = dispatched(&a).remove(0);
    let a = step(&mut m, Input::Order(cancel("X1", "D1")), at(31));
    assert_eq!(
        events(&a),
        vec![(
            "X1".into(),
            OrderStatus::Completed,
            Some("target_already_dispatched".into())
        )]
    );
    // The switch is still connected: the disconnect did not happen, and is not sent again.
    let a = step(&mut m, confirmed(&s, SwitchState::Connected), at(32));
    assert!(dispatched(&a).is_empty());
    assert_eq!(
        events(&a),
        vec![(
            "D1".into(),
            OrderStatus::Cancelled,
            Some("cancelled_by_order".into())
        )]
    );
}

#[test]
fn a_meter_without_a_switch_gets_a_field_order_but_reads_still_work() {
    let mut m = MeterMachine::new("M");
    let a = m.step(
        Input::Order(order("D1", OrderKind::Disconnect)),
        t0(),
        &facts(false),
        &policy(),
    );
    assert!(dispatched(&a).is_empty());
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::Exception(e) if e.kind == ExceptionKind::FieldOrderNeeded)));
    let a = m.step(
        Input::Order(order("R1", OrderKind::Read)),
        at(1),
        &facts(false),
        &policy(),
    );
    assert_eq!(dispatched(&a).len(), 1);
}

#[test]
fn a_meter_not_in_the_registry_yet_waits_and_is_never_failed_as_switchless() {
    let mut m = MeterMachine::new("M");
    let unknown = MeterFacts {
        known: false,
        ..MeterFacts::baseline(false, "unknown")
    };
    let a = m.step(
        Input::Order(order("D1", OrderKind::Disconnect)),
        at(0),
        &unknown,
        &policy(),
    );
    assert!(dispatched(&a).is_empty());
    assert_eq!(
        events(&a),
        vec![(
            "D1".to_string(),
            OrderStatus::Deferred,
            Some(UNREGISTERED.to_string())
        )]
    );
    assert!(a.iter().any(|x| matches!(x, Action::WakeAt(_))));
    assert!(!a.iter().any(|x| matches!(x, Action::Exception(_))));
    // Still unknown a while later: no second event, still nothing sent, and nothing new to
    // store (the recheck time is not state).
    let before = m.clone();
    let a = m.step(Input::Wake, at(5), &unknown, &policy());
    assert!(dispatched(&a).is_empty());
    assert!(events(&a).is_empty());
    assert_eq!(m, before);
    assert!(a.iter().any(|x| matches!(x, Action::WakeAt(_))));
    // The registry record arrives: the order runs.
    let a = step(&mut m, Input::Wake, at(10));
    assert_eq!(dispatched(&a)[0].command_id, "D1/1");
    assert!(m.open[0].hold.is_none());
}

#[test]
fn a_restart_with_a_command_in_flight_asks_the_switch_first() {
    let mut m = MeterMachine::new("M");
    step(
        &mut m,
        Input::Order(order("D1", OrderKind::Disconnect)),
        t0(),
    );
    // Persisted snapshot survives the crash.
    let mut m: MeterMachine = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    let a = step(&mut m, Input::Recover, at(100));
    let c = dispatched(&a);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].kind, CommandKind::SwitchStatus);
    let a = step(&mut m, confirmed(&c[0], SwitchState::Connected), at(101));
    // Not done: now, and only now, it may be sent again (after the backoff).
    assert!(dispatched(&a).is_empty());
    let wake = a
        .iter()
        .find_map(|x| {
            if let Action::WakeAt(w) = x {
                Some(*w)
            } else {
                None
            }
        })
        .unwrap();
    let a = step(&mut m, Input::Wake, wake);
    assert_eq!(dispatched(&a)[0].command_id, "D1/2");
}

// ---- property test --------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Env {
    /// An order of kind 0..3, delivered to the meter at once or only stored by the intake (the
    /// process may stop before it is delivered; recovery must then deliver it).
    Order(u8, bool),
    /// Orders stored but not yet delivered reach the meter.
    Deliver,
    Cancel(u8),
    Answer(u8),
    Lose {
        executed: bool,
    },
    /// The actor held back the disconnect just dispatched (its decision went stale in a slow
    /// write): never sent, so not an execution.
    NotSent,
    /// kill -9. With `late_answer`, the head-end's answer to the command in flight at the
    /// crash arrives after recovery (the command was executed / the status was read).
    Crash {
        late_answer: bool,
    },
    Advance(u16),
    /// The head-end's circuit breaker opens (true) or closes (false).
    HeadEndDown(bool),
}

fn env() -> impl Strategy<Value = Env> {
    prop_oneof![
        3 => ((0u8..3), any::<bool>()).prop_map(|(k, now)| Env::Order(k, now)),
        1 => Just(Env::Deliver),
        1 => any::<u8>().prop_map(Env::Cancel),
        5 => (0u8..10).prop_map(Env::Answer),
        1 => any::<bool>().prop_map(|executed| Env::Lose { executed }),
        1 => Just(Env::NotSent),
        2 => any::<bool>().prop_map(|late_answer| Env::Crash { late_answer }),
        2 => (1u16..200).prop_map(Env::Advance),
        1 => any::<bool>().prop_map(Env::HeadEndDown),
    ]
}

struct World {
    m: MeterMachine,
    now: Timestamp,
    physical: SwitchState,
    outstanding: Option<Command>,
    orders: Vec<Order>,
    terminal: HashSet<String>,
    unknown: HashSet<String>,
    withdrawn: HashSet<String>,
    executions: HashMap<String, u32>,
    /// Stored by the intake, not yet delivered (lost from memory in a crash).
    undelivered: Vec<Order>,
    /// Every command id sent: a command id is never sent twice.
    sent: HashSet<String>,
    /// Orders that raised an exception: at most one each.
    excepted: HashSet<String>,
    /// The head-end's breaker is open: nothing may be sent.
    down: bool,
}

impl World {
    fn step(&mut self, input: Input) {
        let before_outstanding = self.outstanding.is_some();
        let mut f = facts(true);
        if self.down {
            f.head_end.down_until = Some(self.now + jiff::SignedDuration::from_secs(30));
        }
        let actions = self.m.step(input, self.now, &f, &policy());
        let mut dispatches = 0;
        for a in &actions {
            match a {
                Action::Dispatch(c) => {
                    assert!(!self.down, "{} sent into a down head-end", c.command_id);
                    dispatches += 1;
                    assert!(
                        self.sent.insert(c.command_id.clone()),
                        "command id {} sent twice",
                        c.command_id
                    );
                    assert!(
                        !before_outstanding || self.outstanding.is_none(),
                        "dispatch while a command is outstanding"
                    );
                    assert!(
                        !self.terminal.contains(&c.order_id),
                        "command for a closed order {}",
                        c.order_id
                    );
                    if c.kind != CommandKind::SwitchStatus {
                        assert!(
                            !self.unknown.contains(&c.order_id),
                            "{} re-sent while its outcome was unknown",
                            c.order_id
                        );
                        assert!(
                            !self.withdrawn.contains(&c.order_id),
                            "{} executed after it was withdrawn",
                            c.order_id
                        );
                        *self.executions.entry(c.order_id.clone()).or_default() += 1;
                        assert!(self.executions[&c.order_id] <= policy().max_attempts);
                    }
                    self.outstanding = Some(Command::clone(c));
                }
                Action::Exception(x) => {
                    assert!(
                        self.excepted.insert(x.order_id.clone()),
                        "a second exception for {}",
                        x.order_id
                    );
                }
                Action::Event(e) => {
                    assert!(
                        !self.terminal.contains(&e.order_id),
                        "event after the final status of {}",
                        e.order_id
                    );
                    if e.status.is_terminal() {
                        self.terminal.insert(e.order_id.clone());
                    }
                    if e.status == OrderStatus::Completed {
                        match e.kind {
                            Some(OrderKind::Disconnect) => assert_eq!(
                                self.physical,
                                SwitchState::Disconnected,
                                "disconnect reported done while connected"
                            ),
                            Some(OrderKind::Reconnect) => assert_eq!(
                                self.physical,
                                SwitchState::Connected,
                                "reconnect reported done while disconnected"
                            ),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        assert!(dispatches <= 1, "at most one command per step");
        assert_eq!(
            self.m.in_flight.as_ref().map(|f| &f.command.command_id),
            self.outstanding.as_ref().map(|c| &c.command_id)
        );
    }

    /// An order reaches the meter: a reconnect withdraws the disconnects the meter holds.
    fn deliver(&mut self, o: Order) {
        if o.kind == OrderKind::Reconnect {
            for d in &self.m.open {
                if d.order.kind == OrderKind::Disconnect {
                    self.withdrawn.insert(d.order.order_id.clone());
                }
            }
        }
        self.step(Input::Order(o));
    }

    fn apply(&mut self, c: &Command) {
        match c.kind {
            CommandKind::Disconnect => self.physical = SwitchState::Disconnected,
            CommandKind::Connect => self.physical = SwitchState::Connected,
            _ => {}
        }
    }

    fn run(&mut self, e: Env) {
        match e {
            Env::Order(k, deliver_now) => {
                let kind =
                    [OrderKind::Disconnect, OrderKind::Reconnect, OrderKind::Read][k as usize];
                let o = order(&format!("O{}", self.orders.len()), kind);
                self.orders.push(o.clone());
                self.undelivered.push(o);
                if deliver_now {
                    self.run(Env::Deliver);
                }
            }
            Env::Deliver => {
                for o in std::mem::take(&mut self.undelivered) {
                    self.deliver(o);
                }
            }
            Env::Cancel(i) => {
                if self.orders.is_empty() {
                    return;
                }
                let target = self.orders[i as usize % self.orders.len()].order_id.clone();
                let c = cancel(&format!("X{}", self.orders.len()), &target);
                // Same partition as its target: it cannot overtake an order stored before it.
                self.run(Env::Deliver);
                self.orders.push(c.clone());
                self.withdrawn.insert(target);
                self.step(Input::Order(c));
            }
            Env::Answer(roll) => {
                let Some(c) = self.outstanding.take() else {
                    return;
                };
                let input = match roll {
                    0 => failed(&c, FailureCode::NetworkTimeout),
                    1 => failed(&c, FailureCode::LoadSideVoltage),
                    _ => {
                        self.apply(&c);
                        if c.kind == CommandKind::SwitchStatus {
                            self.unknown.remove(&c.order_id);
                        }
                        confirmed(&c, self.physical)
                    }
                };
                self.step(input);
            }
            Env::Lose { executed } => {
                let Some(c) = self.outstanding.take() else {
                    return;
                };
                if executed {
                    self.apply(&c);
                }
                if c.kind.target_state().is_some() {
                    self.unknown.insert(c.order_id.clone());
                }
                self.now = self.now.max(c.deadline);
                self.step(Input::Deadline(c.command_id.clone()));
            }
            Env::NotSent => {
                let Some(c) = self.outstanding.take() else {
                    return;
                };
                if c.kind != CommandKind::Disconnect {
                    self.outstanding = Some(c);
                    return;
                }
                // Counted when dispatched; it never reached the head-end.
                *self.executions.get_mut(&c.order_id).expect("counted") -= 1;
                self.step(Input::NotSent(c.command_id.clone()));
            }
            Env::Crash { late_answer } => {
                let snapshot = serde_json::to_string(&self.m).unwrap();
                self.m = serde_json::from_str(&snapshot).unwrap();
                // What was not delivered is gone from memory; the store still lists it open.
                self.undelivered.clear();
                let lost = self.outstanding.take();
                if let Some(c) = &lost {
                    if c.kind.target_state().is_some() {
                        self.unknown.insert(c.order_id.clone());
                    }
                    self.step(Input::Recover);
                }
                // Recovery as the actor does it: the store's open orders, read behind the
                // meter's own writes (orders stored and not closed by an event).
                let stored_open: Vec<Order> = self
                    .orders
                    .iter()
                    .filter(|o| !self.terminal.contains(&o.order_id))
                    .cloned()
                    .collect();
                let inputs = self.m.undelivered(stored_open);
                for input in inputs {
                    match input {
                        Input::Order(o) => self.deliver(o),
                        other => self.step(other),
                    }
                }
                self.step(Input::Wake);
                if let (Some(c), true) = (lost, late_answer) {
                    // The head-end answers the command lost in the crash, late.
                    self.apply(&c);
                    let late = confirmed(&c, self.physical);
                    self.step(late);
                }
            }
            Env::Advance(s) => {
                self.now = self.now + jiff::SignedDuration::from_secs(s as i64);
                self.step(Input::Wake);
            }
            Env::HeadEndDown(down) => {
                self.down = down;
                if !down {
                    // The breaker's watcher wakes the held meter.
                    self.step(Input::Wake);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever happens (answers, failures, lost answers, crashes, cancels, reconnects, a
    /// head-end whose breaker opens and closes):
    /// one command at a time; no execution re-sent while its outcome is unknown; no execution
    /// after a withdrawal; nothing sent into a down head-end; nothing after a final status; "completed" is true in the field; and
    /// once the head-end answers everything, every order reaches a final status.
    #[test]
    fn the_meter_machine_keeps_its_promises(script in proptest::collection::vec(env(), 1..60)) {
        let mut w = World {
            m: MeterMachine::new("M"),
            now: t0(),
            physical: SwitchState::Connected,
            outstanding: None,
            orders: Vec::new(),
            terminal: HashSet::new(),
            unknown: HashSet::new(),
            withdrawn: HashSet::new(),
            executions: HashMap::new(),
            undelivered: Vec::new(),
            sent: HashSet::new(),
            excepted: HashSet::new(),
            down: false,
        };
        for e in script {
            w.run(e);
        }
        // Drain: a healthy head-end from now on.
        w.run(Env::HeadEndDown(false));
        w.run(Env::Deliver);
        for _ in 0..200 {
            if w.outstanding.is_some() {
                w.run(Env::Answer(9));
            } else {
                w.run(Env::Advance(120));
            }
        }
        for o in &w.orders {
            prop_assert!(w.terminal.contains(&o.order_id), "{} never reached a final status; machine: {:?}", o.order_id, w.m);
        }
        prop_assert!(w.m.is_idle());
    }
}

fn operator(order_id: &str, action: crate::domain::HoldAction, at: Timestamp) -> Input {
    Input::Fact(MeterFact::OrderHold(crate::domain::OrderHold {
        schema_version: 1,
        fact_id: format!("H-{order_id}-{action:?}-{at}"),
        meter_id: "M".into(),
        order_id: order_id.into(),
        action,
        by: "op.kim".into(),
        note: Some("customer on the phone".into()),
        at,
    }))
}

/// An operator's hold keeps an order from starting (through its due time and any wake-up)
/// until released; then it runs. A hold on an order whose command is out is refused.
#[test]
fn an_operator_hold_keeps_an_order_from_starting_until_released() {
    use crate::domain::HoldAction;
    let mut m = MeterMachine::new("M");
    let mut d = order("D1", OrderKind::Disconnect);
    d.earliest_at = Some(at(60));
    assert!(dispatched(&step(&mut m, Input::Order(d), t0())).is_empty());
    let a = step(&mut m, operator("D1", HoldAction::Hold, at(1)), at(1));
    assert_eq!(
        events(&a),
        vec![(
            "D1".into(),
            OrderStatus::Deferred,
            Some("operator_hold".into())
        )]
    );
    assert!(
        !a.iter().any(|x| matches!(x, Action::WakeAt(_))),
        "no wake-up for a held order"
    );
    // Past its earliest time, woken: still nothing.
    assert!(dispatched(&step(&mut m, Input::Wake, at(120))).is_empty());
    assert_eq!(m.open[0].operator_hold.as_deref(), Some("op.kim"));
    let a = step(
        &mut m,
        operator("D1", HoldAction::Release, at(130)),
        at(130),
    );
    let sent = dispatched(&a);
    assert_eq!(sent.len(), 1, "released: it runs");
    assert_eq!(
        events(&a)[0],
        (
            "D1".into(),
            OrderStatus::Scheduled,
            Some("operator_released".into())
        )
    );
    // Its command is out: a hold now is refused, and the answer completes it.
    let a = step(&mut m, operator("D1", HoldAction::Hold, at(131)), at(131));
    assert!(events(&a).is_empty());
    assert!(a.iter().any(
        |x| matches!(x, Action::Audit(e) if e.reason.as_deref() == Some("operator_hold_refused"))
    ));
    let a = step(
        &mut m,
        confirmed(&sent[0], SwitchState::Disconnected),
        at(140),
    );
    assert!(events(&a)
        .iter()
        .any(|(id, s, _)| id == "D1" && *s == OrderStatus::Completed));
}

/// An order waiting for its campaign's release cannot be held by an operator (the campaign
/// paces it; pausing the campaign is the way): the hold is refused and audited, and the
/// campaign's release then starts it.
#[test]
fn an_operator_hold_of_an_order_waiting_for_its_campaign_is_refused() {
    use crate::domain::HoldAction;
    let mut m = MeterMachine::new("M");
    let mut d = order("D1", OrderKind::Disconnect);
    d.campaign_id = Some("C-1".into());
    assert!(dispatched(&step(&mut m, Input::Order(d), t0())).is_empty());
    assert!(m.open[0].campaign_hold);
    let a = step(&mut m, operator("D1", HoldAction::Hold, at(1)), at(1));
    assert!(events(&a).is_empty());
    assert!(a.iter().any(
        |x| matches!(x, Action::Audit(e) if e.reason.as_deref() == Some("operator_hold_refused"))
    ));
    assert_eq!(m.open[0].operator_hold, None);
    let a = step(
        &mut m,
        Input::Release {
            order_id: "D1".into(),
        },
        at(2),
    );
    assert_eq!(dispatched(&a).len(), 1);
}

fn watch_changes(actions: &[Action]) -> Vec<crate::domain::WatchChange> {
    picked!(actions, Action::Watch)
}

fn register_read(id: &str, at: Timestamp, kwh: f64) -> Input {
    Input::Read(crate::domain::MeterRead {
        read_id: id.into(),
        meter_id: "M".into(),
        kind: crate::domain::ReadKind::Register,
        source: crate::domain::ReadSource::HeadEnd,
        interval_start: None,
        read_at: at,
        values: vec![crate::domain::ReadValue {
            usage: crate::domain::UsageType::Active,
            value: kwh,
        }],
    })
}

pub(super) fn exceptions(actions: &[Action]) -> Vec<ExceptionRecord> {
    picked!(actions, Action::Exception)
}

/// The post-disconnect watchdog (issue 16, item 2): a confirmed cut starts the watch with the
/// register the head-end reported; a read within the tolerance says nothing; consumption beyond
/// it raises one `consumption_after_disconnect` exception on the cut's order and ends the watch;
/// a reconnect of a watched meter ends it too.
#[test]
fn consumption_on_a_cut_meter_raises_one_exception_and_a_reconnect_ends_the_watch() {
    let mut m = MeterMachine::new("M");
    let a = step(
        &mut m,
        Input::Order(order("D1", OrderKind::Disconnect)),
        t0(),
    );
    let d = dispatched(&a)[0].clone();
    assert!(
        matches!(&watch_changes(&a)[..], [crate::domain::WatchChange::Set(w)] if w.history && w.order_id == "D1"),
        "an open disconnect collects its history: {a:?}"
    );
    let mut answer = confirmed(&d, SwitchState::Disconnected);
    if let Input::Result(r) = &mut answer {
        r.outcome = CommandOutcome::Confirmed {
            load_side_voltage: None,
            switch_state: SwitchState::Disconnected,
            register_kwh: Some(5000.0),
        };
    }
    let a = step(&mut m, answer, at(1));
    let w = watch_changes(&a);
    assert_eq!(w.len(), 1, "{a:?}");
    let crate::domain::WatchChange::Set(watch) = &w[0] else {
        panic!("{w:?}")
    };
    assert_eq!(
        (watch.order_id.as_str(), watch.baseline_kwh),
        ("D1", Some(5000.0))
    );

    // Within the tolerance (1 kWh by default): audited, nothing else.
    let a = step(&mut m, register_read("R1", at(3600), 5000.6), at(3601));
    assert!(
        exceptions(&a).is_empty() && watch_changes(&a).is_empty(),
        "{a:?}"
    );
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::Audit(e) if e.kind == AuditKind::ReadReceived)));

    // 40 kWh after the cut: the exception, once, and the watch ends.
    let a = step(&mut m, register_read("R2", at(7200), 5040.0), at(7201));
    let x = exceptions(&a);
    assert_eq!(x.len(), 1, "{a:?}");
    assert_eq!(x[0].kind, ExceptionKind::ConsumptionAfterDisconnect);
    assert_eq!(x[0].exception_id, "D1/consumption_after_disconnect");
    assert_eq!(x[0].order_id, "D1");
    assert!(x[0].detail.contains("40.000 kWh above"), "{}", x[0].detail);
    assert!(events(&a).is_empty(), "the order stays completed: {a:?}");
    assert_eq!(
        watch_changes(&a),
        vec![crate::domain::WatchChange::Clear("M".into())]
    );
    let a = step(&mut m, register_read("R3", at(9000), 5090.0), at(9001));
    assert!(exceptions(&a).is_empty(), "one exception per cut: {a:?}");

    // A new cut without a register in the answer: the first read after it is the baseline.
    let a = step(
        &mut m,
        Input::Order(order("C1", OrderKind::Reconnect)),
        at(10_000),
    );
    let c = dispatched(&a)[0].clone();
    let a = step(&mut m, confirmed(&c, SwitchState::Connected), at(10_001));
    assert!(watch_changes(&a).is_empty(), "nothing was watched: {a:?}");
    let a = step(
        &mut m,
        Input::Order(order("D2", OrderKind::Disconnect)),
        at(20_000),
    );
    let d = dispatched(&a)[0].clone();
    let a = step(&mut m, confirmed(&d, SwitchState::Disconnected), at(20_001));
    assert!(
        matches!(&watch_changes(&a)[..], [crate::domain::WatchChange::Set(w)] if w.baseline_kwh.is_none() && !w.history)
    );
    let a = step(&mut m, register_read("R4", at(20_100), 6000.0), at(20_101));
    assert!(exceptions(&a).is_empty(), "a baseline is not consumption");
    assert!(
        a.iter().any(|x| matches!(x, Action::Audit(e) if e.kind == AuditKind::FinalRead && e.order_id.as_deref() == Some("D2"))),
        "the first read after a cut without a register is its final read: {a:?}"
    );
    assert!(
        matches!(&watch_changes(&a)[..], [crate::domain::WatchChange::Set(w)] if w.baseline_kwh == Some(6000.0))
    );

    // A reconnect ends the watch as soon as it is open (use after the switch closes is
    // expected); reads after it raise nothing, and one that still reaches the meter (a stale
    // entry in the reads handler's map) clears the entry.
    let a = step(
        &mut m,
        Input::Order(order("C2", OrderKind::Reconnect)),
        at(30_000),
    );
    assert_eq!(
        watch_changes(&a),
        vec![crate::domain::WatchChange::Clear("M".into())]
    );
    let c = dispatched(&a)[0].clone();
    let a = step(&mut m, register_read("R5", at(30_000), 9000.0), at(30_000));
    assert!(
        exceptions(&a).is_empty(),
        "no alarm while the reconnect is out: {a:?}"
    );
    let a = step(&mut m, confirmed(&c, SwitchState::Connected), at(30_001));
    assert!(watch_changes(&a).is_empty(), "{a:?}");
    let a = step(&mut m, register_read("R6", at(40_000), 9500.0), at(40_001));
    assert!(exceptions(&a).is_empty());
    assert_eq!(
        watch_changes(&a),
        vec![crate::domain::WatchChange::Clear("M".into())]
    );
}

/// A disconnect's final read (issue 16, item 3): the register in the confirmation is checked
/// against the register reads the meter collected while the order waited (its history watch
/// delivers them); the completion event carries it with its class; a read far above what the
/// history predicts raises `suspicious_final_read` for review; a normal one raises nothing; too
/// little history is `no_history`, passed on.
#[test]
fn a_final_read_is_checked_against_the_meters_history() {
    let day = 86_400;
    // The disconnect waits four days (earliest_at) while the meter reads come in, then runs.
    let run = |reads: &[f64], final_kwh: f64| {
        let mut m = MeterMachine::new("M");
        let mut o = order("D1", OrderKind::Disconnect);
        o.earliest_at = Some(at(4 * day));
        let a = step(&mut m, Input::Order(o), at(0));
        assert!(dispatched(&a).is_empty(), "it waits: {a:?}");
        assert!(
            matches!(&watch_changes(&a)[..], [crate::domain::WatchChange::Set(w)] if w.history),
            "its reads are wanted: {a:?}"
        );
        for (i, kwh) in reads.iter().enumerate() {
            let t = at(i as i64 * day);
            step(&mut m, register_read(&format!("R{i}"), t, *kwh), t);
        }
        let a = step(&mut m, Input::Wake, at(4 * day));
        let d = dispatched(&a)[0].clone();
        let mut answer = confirmed(&d, SwitchState::Disconnected);
        if let Input::Result(r) = &mut answer {
            r.at = at(4 * day + 60);
            r.outcome = CommandOutcome::Confirmed {
                load_side_voltage: None,
                switch_state: SwitchState::Disconnected,
                register_kwh: Some(final_kwh),
            };
        }
        let a = step(&mut m, answer, at(4 * day + 61));
        (m, a)
    };
    let final_of = |a: &[Action]| {
        a.iter()
            .find_map(|x| match x {
                Action::Event(e) if e.status == OrderStatus::Completed => e.final_read.clone(),
                _ => None,
            })
            .expect("the completion carries the final read")
    };
    // 10 kWh a day.
    let history = [1000.0, 1010.0, 1020.0, 1030.0];

    // No reads while it waited: passed on as no_history, no exception.
    let (_, a) = run(&[], 500.0);
    assert_eq!(final_of(&a).class, crate::domain::ReadClass::NoHistory);
    assert!(exceptions(&a).is_empty());

    // A day after the last read, 10 kWh more: normal.
    let (m, a) = run(&history, 1040.0);
    let f = final_of(&a);
    assert_eq!(f.class, crate::domain::ReadClass::Normal, "{f:?}");
    assert_eq!(f.kwh, 1040.0);
    assert!((f.used_kwh.unwrap() - 10.0).abs() < 1e-6, "{f:?}");
    assert!(
        (f.expected_kwh.unwrap() - 10.0).abs() < 0.1,
        "from all four reads: {f:?}"
    );
    assert!(exceptions(&a).is_empty());
    assert!(a
        .iter()
        .any(|x| matches!(x, Action::Audit(e) if e.kind == AuditKind::FinalRead)));
    // Only the last four reads are kept, the final one among them.
    assert_eq!(m.memory.register_history.len(), 4);
    assert_eq!(
        m.memory.register_history.last().map(|p| p.kwh),
        Some(1040.0)
    );

    // The same history, but 95 kWh in a day: very high, raised for review.
    let (_, a) = run(&history, 1125.0);
    assert_eq!(final_of(&a).class, crate::domain::ReadClass::VeryHigh);
    let x = exceptions(&a);
    assert_eq!(x.len(), 1, "{a:?}");
    assert_eq!(x[0].kind, ExceptionKind::SuspiciousFinalRead);
    assert_eq!(x[0].exception_id, "D1/final_read");
    assert!(x[0].detail.contains("very_high"), "{}", x[0].detail);
}

/// The canonical failure taxonomy (issue 16, item 6): every code has a class, communication
/// and the retryable device codes are retried, and the final ones end the order with the
/// exception that names what a person must do.
#[test]
fn each_failure_code_is_retried_or_ends_with_its_exception() {
    use crate::domain::{FailureClass, FailureCode};
    use strum::VariantArray;
    for &code in FailureCode::VARIANTS {
        if code.class() == FailureClass::Communication {
            assert!(code.retryable(), "{code:?}: nothing happened at the meter");
        }
        let mut m = MeterMachine::new("M");
        let kind =
            if code == FailureCode::LoadSideVoltage || code == FailureCode::NoVoltageAfterConnect {
                OrderKind::Reconnect
            } else {
                OrderKind::Disconnect
            };
        let a = step(&mut m, Input::Order(order("O1", kind)), t0());
        let cmd = dispatched(&a).pop().expect("sent");
        let a = step(&mut m, failed(&cmd, code), at(1));
        let x = exceptions(&a);
        let ev = events(&a);
        if code.retryable() {
            assert!(x.is_empty(), "{code:?}");
            assert_eq!(ev[0].1, OrderStatus::RetryScheduled, "{code:?}");
            continue;
        }
        assert_eq!(ev[0].1, OrderStatus::Failed, "{code:?}");
        assert_eq!(ev[0].2.as_deref(), Some(code.as_str()));
        let expected = match code {
            FailureCode::LoadSideVoltage => ExceptionKind::LoadSideVoltage,
            FailureCode::LoadSideVoltageAfterDisconnect | FailureCode::Tamper => {
                ExceptionKind::PossibleTamper
            }
            FailureCode::SwitchFault => ExceptionKind::FieldOrderNeeded,
            _ => ExceptionKind::CommandRejected,
        };
        assert_eq!(x.len(), 1, "{code:?}");
        assert_eq!(x[0].kind, expected, "{code:?}");
    }
}
