//! Machine tests of the head-end's field behaviour: arming for reconnect, load-side voltage,
//! and orders held by a down head-end (its circuit breaker open).

use std::time::Duration;

use super::tests::{at, dispatched, order, picked, policy, t0};
use super::*;
use crate::domain::{CommandOutcome, ExceptionKind, FailureCode, OrderKind};

fn facts() -> MeterFacts {
    MeterFacts::baseline(true, "HE-1")
}

fn arming() -> MeterFacts {
    let mut f = facts();
    f.head_end.arm_reconnect = true;
    f.head_end.arm_timeout = Duration::from_secs(3600);
    f
}

fn down_until(t: Timestamp) -> MeterFacts {
    let mut f = facts();
    f.head_end.down_until = Some(t);
    f.head_end.field_order_after = Duration::from_secs(4 * 3600);
    f
}

fn answer(c: &Command, s: SwitchState, lsv: Option<bool>, when: Timestamp) -> Input {
    Input::Result(CommandResult {
        schema_version: 1,
        command_id: c.command_id.clone(),
        meter_id: c.meter_id.clone(),
        outcome: CommandOutcome::Confirmed {
            switch_state: s,
            register_kwh: Some(100.0),
            load_side_voltage: lsv,
        },
        at: when,
    })
}

fn statuses(a: &[Action]) -> Vec<(String, OrderStatus, Option<String>)> {
    picked!(a, Action::Event)
        .into_iter()
        .map(|e| (e.order_id, e.status, e.reason))
        .collect()
}

fn disconnected_meter() -> MeterMachine {
    let mut m = MeterMachine::new("M");
    m.switch = SwitchState::Disconnected;
    m.memory.switch_known_at = Some(at(-100));
    m
}

#[test]
fn an_armed_reconnect_waits_for_the_customer_and_completes_when_the_button_is_pressed() {
    let mut m = disconnected_meter();
    let f = arming();
    let a = m.step(
        Input::Order(order("R1", OrderKind::Reconnect)),
        t0(),
        &f,
        &policy(),
    );
    let cmd = dispatched(&a).pop().expect("a command");
    assert_eq!(
        cmd.kind,
        CommandKind::ArmConnect,
        "this meter's reconnects arm"
    );
    let a = m.step(
        answer(&cmd, SwitchState::Armed, None, at(5)),
        at(5),
        &f,
        &policy(),
    );
    let armed = picked!(a, Action::Event);
    assert_eq!(armed.len(), 1);
    assert_eq!(armed[0].status, OrderStatus::Confirmed);
    assert_eq!(armed[0].reason.as_deref(), Some("armed"));
    assert_eq!(armed[0].switch_state, Some(SwitchState::Armed));
    assert!(m.in_flight.is_none(), "nothing is in flight while armed");
    assert!(a.contains(&Action::WakeAt(at(3605))), "{a:?}");
    // A disconnect that comes meanwhile waits behind the armed switch.
    let a = m.step(
        Input::Order(order("D2", OrderKind::Disconnect)),
        at(10),
        &f,
        &policy(),
    );
    assert!(dispatched(&a).is_empty(), "no switch command while armed");
    // A cancel cannot recall an armed switch.
    let a = m.step(
        Input::Order(super::tests::cancel("C1", "R1")),
        at(20),
        &f,
        &policy(),
    );
    assert!(statuses(&a).contains(&(
        "C1".into(),
        OrderStatus::Completed,
        Some("target_already_dispatched".into())
    )));
    // The customer presses the button: the head-end answers the same command again.
    let a = m.step(
        answer(&cmd, SwitchState::Connected, None, at(600)),
        at(600),
        &f,
        &policy(),
    );
    assert!(statuses(&a).contains(&(
        "R1".into(),
        OrderStatus::Completed,
        Some("customer_closed".into())
    )));
    assert!(picked!(a, Action::Exception).is_empty());
    // The disconnect goes now.
    let d = dispatched(&a);
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].order_id.as_str(), d[0].kind),
        ("D2", CommandKind::Disconnect)
    );
}

#[test]
fn an_armed_switch_nobody_closes_fails_at_its_timeout_with_an_exception() {
    let mut m = disconnected_meter();
    let f = arming();
    let a = m.step(
        Input::Order(order("R1", OrderKind::Reconnect)),
        t0(),
        &f,
        &policy(),
    );
    let cmd = dispatched(&a).pop().unwrap();
    m.step(
        answer(&cmd, SwitchState::Armed, None, at(5)),
        at(5),
        &f,
        &policy(),
    );
    let a = m.step(Input::Wake, at(3000), &f, &policy());
    assert!(statuses(&a).is_empty(), "not yet: {a:?}");
    let a = m.step(Input::Wake, at(3605), &f, &policy());
    assert_eq!(
        statuses(&a),
        vec![(
            "R1".into(),
            OrderStatus::Failed,
            Some("armed_not_closed".into())
        )]
    );
    let x = picked!(a, Action::Exception);
    assert_eq!(x.len(), 1);
    assert_eq!(x[0].kind, ExceptionKind::ArmedNotClosed);
    assert_eq!(x[0].exception_id, "R1/armed_not_closed");
    assert!(m.is_idle());
}

#[test]
fn a_lost_arming_found_armed_by_the_status_check_is_not_sent_again() {
    let mut m = disconnected_meter();
    let f = arming();
    let a = m.step(
        Input::Order(order("R1", OrderKind::Reconnect)),
        t0(),
        &f,
        &policy(),
    );
    let cmd = dispatched(&a).pop().unwrap();
    let a = m.step(
        Input::Deadline(cmd.command_id.clone()),
        at(30),
        &f,
        &policy(),
    );
    let check = dispatched(&a).pop().expect("a status check");
    assert_eq!(check.kind, CommandKind::SwitchStatus);
    let a = m.step(
        answer(&check, SwitchState::Armed, None, at(31)),
        at(31),
        &f,
        &policy(),
    );
    assert!(dispatched(&a).is_empty(), "armed already: not sent again");
    assert!(statuses(&a).contains(&("R1".into(), OrderStatus::Confirmed, Some("armed".into()))));
    // A head-end that closes outright under an arming profile completes at once.
    let mut m = disconnected_meter();
    let a = m.step(
        Input::Order(order("R2", OrderKind::Reconnect)),
        t0(),
        &f,
        &policy(),
    );
    let cmd = dispatched(&a).pop().unwrap();
    let a = m.step(
        answer(&cmd, SwitchState::Connected, None, at(5)),
        at(5),
        &f,
        &policy(),
    );
    assert!(statuses(&a).contains(&("R2".into(), OrderStatus::Completed, Some("done".into()))));
}

#[test]
fn load_side_voltage_after_a_disconnect_is_reviewed_and_none_after_a_connect_is_retried() {
    let mut f = facts();
    f.head_end.check_load_side_voltage = true;
    let mut m = MeterMachine::new("M");
    let a = m.step(
        Input::Order(order("D1", OrderKind::Disconnect)),
        t0(),
        &f,
        &policy(),
    );
    let cmd = dispatched(&a).pop().unwrap();
    assert!(
        cmd.check_load_side_voltage,
        "the profile asks the meter to check"
    );
    let a = m.step(
        answer(&cmd, SwitchState::Disconnected, Some(true), at(5)),
        at(5),
        &f,
        &policy(),
    );
    assert!(
        statuses(&a).contains(&("D1".into(), OrderStatus::Completed, Some("done".into()))),
        "the switch is open: the order is done"
    );
    let x = picked!(a, Action::Exception);
    assert_eq!(x.len(), 1);
    assert_eq!(x[0].kind, ExceptionKind::PossibleTamper);
    assert_eq!(x[0].exception_id, "D1/load_side_voltage");

    let a = m.step(
        Input::Order(order("R1", OrderKind::Reconnect)),
        at(100),
        &f,
        &policy(),
    );
    let cmd = dispatched(&a).pop().unwrap();
    let a = m.step(
        answer(&cmd, SwitchState::Connected, Some(false), at(105)),
        at(105),
        &f,
        &policy(),
    );
    assert_eq!(
        statuses(&a),
        vec![(
            "R1".into(),
            OrderStatus::RetryScheduled,
            Some(FailureCode::NoVoltageAfterConnect.as_str().into())
        )]
    );
    // The retry is sent (the switch's "connected" without voltage is not trusted).
    let a = m.step(Input::Wake, at(200), &f, &policy());
    let retry = dispatched(&a);
    assert_eq!(retry.len(), 1, "{a:?}");
    assert_eq!((retry[0].kind, retry[0].attempt), (CommandKind::Connect, 2));
    // Without the check asked, nothing is assumed.
    let mut m = MeterMachine::new("M");
    let a = m.step(
        Input::Order(order("D9", OrderKind::Disconnect)),
        t0(),
        &facts(),
        &policy(),
    );
    let cmd = dispatched(&a).pop().unwrap();
    assert!(!cmd.check_load_side_voltage);
    let a = m.step(
        answer(&cmd, SwitchState::Disconnected, None, at(5)),
        at(5),
        &facts(),
        &policy(),
    );
    assert!(picked!(a, Action::Exception).is_empty());
}

#[test]
fn a_down_head_end_holds_orders_without_using_attempts_and_they_go_when_it_is_back() {
    let mut m = MeterMachine::new("M");
    let down = down_until(at(30));
    let a = m.step(
        Input::Order(order("D1", OrderKind::Disconnect)),
        t0(),
        &down,
        &policy(),
    );
    assert!(dispatched(&a).is_empty());
    let e = picked!(a, Action::Event);
    let held = e
        .iter()
        .find(|e| e.status == OrderStatus::Deferred)
        .expect("deferred");
    assert_eq!(held.reason.as_deref(), Some("head_end_unavailable"));
    assert_eq!(held.retry_at, Some(at(30)));
    assert_eq!(m.held_for_head_end(), Some(false));
    assert_eq!(m.open[0].attempts, 0);
    // Still down at the next steps: held, said once.
    for s in [10, 20, 40] {
        let a = m.step(Input::Wake, at(s), &down_until(at(60)), &policy());
        assert!(dispatched(&a).is_empty());
        assert!(statuses(&a).is_empty(), "{a:?}");
    }
    // A reconnect is held too, and marks the meter as holding a restoration.
    let a = m.step(
        Input::Order(order("R1", OrderKind::Reconnect)),
        at(50),
        &down_until(at(60)),
        &policy(),
    );
    assert!(dispatched(&a).is_empty());
    assert_eq!(m.held_for_head_end(), Some(true));
    // Back: the reconnect (it superseded the disconnect) goes, as attempt 1.
    let a = m.step(Input::Wake, at(61), &facts(), &policy());
    let d = dispatched(&a);
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].order_id.as_str(), d[0].attempt), ("R1", 1));
    assert_eq!(m.held_for_head_end(), None);
}

/// Two held orders, one command at a time: once the head-end is back the one still waiting
/// behind the other's command is no longer held for the head-end (the actor stops registering
/// the meter, and it cannot become a field order for an outage that ended).
#[test]
fn orders_held_behind_a_command_are_no_longer_held_once_the_head_end_is_back() {
    let mut m = MeterMachine::new("M");
    for id in ["D1", "RD1"] {
        let kind = if id == "D1" {
            OrderKind::Disconnect
        } else {
            OrderKind::Read
        };
        m.step(
            Input::Order(order(id, kind)),
            t0(),
            &down_until(at(30)),
            &policy(),
        );
    }
    assert_eq!(m.open.len(), 2);
    assert!(m.open.iter().all(|o| o.head_end_hold_ends.is_some()));
    let a = m.step(Input::Wake, at(31), &facts(), &policy());
    assert_eq!(dispatched(&a).len(), 1, "one command at a time");
    assert!(m.in_flight.is_some());
    assert_eq!(m.held_for_head_end(), None, "nothing is held any more");
    assert!(m.open.iter().all(|o| o.head_end_retry_at.is_none()));
}

#[test]
fn an_unknown_outcome_is_not_status_checked_while_the_head_end_is_down() {
    let mut m = MeterMachine::new("M");
    let a = m.step(
        Input::Order(order("D1", OrderKind::Disconnect)),
        t0(),
        &facts(),
        &policy(),
    );
    let cmd = dispatched(&a).pop().unwrap();
    let a = m.step(
        Input::Deadline(cmd.command_id),
        at(30),
        &down_until(at(60)),
        &policy(),
    );
    assert!(
        dispatched(&a).is_empty(),
        "no status check into a down head-end"
    );
    let a = m.step(Input::Wake, at(61), &facts(), &policy());
    let c = dispatched(&a);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].kind, CommandKind::SwitchStatus);
}

#[test]
fn an_order_held_too_long_by_a_down_head_end_becomes_a_field_order() {
    let mut m = MeterMachine::new("M");
    let a = m.step(
        Input::Order(order("D1", OrderKind::Disconnect)),
        t0(),
        &down_until(at(30)),
        &policy(),
    );
    assert!(
        a.contains(&Action::WakeAt(at(30))),
        "wakes itself when the head-end is tried again: {a:?}"
    );
    let a = m.step(
        Input::Wake,
        at(4 * 3600 - 1),
        &down_until(at(5 * 3600)),
        &policy(),
    );
    assert!(statuses(&a).is_empty());
    let a = m.step(
        Input::Wake,
        at(4 * 3600),
        &down_until(at(5 * 3600)),
        &policy(),
    );
    assert_eq!(
        statuses(&a),
        vec![(
            "D1".into(),
            OrderStatus::Failed,
            Some("field_order_needed".into())
        )]
    );
    assert_eq!(
        picked!(a, Action::Exception)[0].kind,
        ExceptionKind::FieldOrderNeeded
    );
    assert!(m.is_idle());
}

#[test]
fn what_needs_no_command_is_settled_even_while_the_head_end_is_down() {
    let mut m = disconnected_meter();
    let a = m.step(
        Input::Order(order("D1", OrderKind::Disconnect)),
        t0(),
        &down_until(at(30)),
        &policy(),
    );
    assert!(statuses(&a).contains(&(
        "D1".into(),
        OrderStatus::Completed,
        Some("already_disconnected".into())
    )));
    let mut m = MeterMachine::new("M");
    let mut f = down_until(at(30));
    f.has_switch = false;
    let a = m.step(
        Input::Order(order("D2", OrderKind::Disconnect)),
        t0(),
        &f,
        &policy(),
    );
    assert!(statuses(&a).contains(&(
        "D2".into(),
        OrderStatus::Failed,
        Some("field_order_needed".into())
    )));
}

#[test]
fn a_full_segment_keeps_due_work_waiting_unchanged_and_says_whether_it_restores_power() {
    let mut m = MeterMachine::new("M");
    let mut full = facts();
    full.head_end.segment_full = true;
    let a = m.step(
        Input::Order(order("D1", OrderKind::Disconnect)),
        t0(),
        &full,
        &policy(),
    );
    assert!(dispatched(&a).is_empty());
    assert!(
        a.contains(&Action::AwaitSegment { restoring: false }),
        "{a:?}"
    );
    let before = m.clone();
    let a = m.step(Input::Wake, at(1), &full, &policy());
    assert_eq!(m, before, "waiting changes nothing stored");
    assert!(statuses(&a).is_empty());
    // A reconnect arrives: the meter now waits as a power restoration.
    let a = m.step(
        Input::Order(order("R1", OrderKind::Reconnect)),
        at(2),
        &full,
        &policy(),
    );
    assert!(
        a.contains(&Action::AwaitSegment { restoring: true }),
        "{a:?}"
    );
    // Its ticket comes: the reconnect goes.
    let a = m.step(Input::Wake, at(3), &facts(), &policy());
    let d = dispatched(&a);
    assert_eq!((d.len(), d[0].order_id.as_str()), (1, "R1"));
    // What settles without a command is not throttled.
    let mut m = disconnected_meter();
    let a = m.step(
        Input::Order(order("D2", OrderKind::Disconnect)),
        t0(),
        &full,
        &policy(),
    );
    assert!(!a.iter().any(|x| matches!(x, Action::AwaitSegment { .. })));
    assert!(statuses(&a).contains(&(
        "D2".into(),
        OrderStatus::Completed,
        Some("already_disconnected".into())
    )));
}

/// A pack with `[load_limit]` and a head-end that can set one.
fn limiting() -> MeterFacts {
    let mut f = facts();
    f.policy = std::sync::Arc::new(
        crate::policy::RulePack::from_toml(
            "jurisdiction = \"t\"\nversion = \"1\"\ntime_zone = \"UTC\"\n[load_limit]\ndemand_kw = 3.0\n",
            "limit.toml",
        )
        .unwrap(),
    );
    f.head_end.can_limit_load = true;
    f
}

/// A connected meter given disconnect D1 under [`limiting`]: the facts, the command sent and
/// the step's actions.
fn limit_sent(m: &mut MeterMachine) -> (MeterFacts, Command, Vec<Action>) {
    m.switch = SwitchState::Connected;
    let f = limiting();
    let a = m.step(
        Input::Order(order("D1", OrderKind::Disconnect)),
        t0(),
        &f,
        &policy(),
    );
    let cmd = dispatched(&a).pop().expect("a command");
    (f, cmd, a)
}

#[test]
fn a_pack_with_a_load_limit_sets_a_demand_limit_instead_of_cutting_off() {
    let mut m = MeterMachine::new("M");
    let (f, cmd, a) = limit_sent(&mut m);
    assert_eq!(cmd.kind, CommandKind::LoadLimit);
    assert_eq!(cmd.demand_limit_kw, Some(3.0));
    let sent = picked!(a, Action::Event);
    let decision = sent[0]
        .policy
        .as_ref()
        .expect("the decision goes with the dispatch");
    assert_eq!(decision.load_limit_kw, Some(3.0));
    // The head-end limits the meter: the order completes, saying so.
    let a = m.step(
        answer(&cmd, SwitchState::LoadLimited, None, at(5)),
        at(5),
        &f,
        &policy(),
    );
    assert_eq!(
        statuses(&a),
        vec![
            (
                "D1".into(),
                OrderStatus::Confirmed,
                Some("head_end_confirmed".into())
            ),
            (
                "D1".into(),
                OrderStatus::Completed,
                Some("load_limited".into())
            ),
        ]
    );
    assert_eq!(m.switch, SwitchState::LoadLimited);
    assert!(
        m.memory.last_cut.is_some(),
        "a limit is a cut the restore rules see"
    );
    assert!(
        m.read_watch().is_none(),
        "use under a limit is not a bypass"
    );
    // A second disconnect finds it limited already: nothing sent.
    let a = m.step(
        Input::Order(order("D2", OrderKind::Disconnect)),
        at(10),
        &f,
        &policy(),
    );
    assert!(dispatched(&a).is_empty());
    assert_eq!(
        statuses(&a).last().cloned(),
        Some((
            "D2".into(),
            OrderStatus::Completed,
            Some("already_load_limited".into())
        ))
    );
    // A reconnect lifts the limit with a connect.
    let a = m.step(
        Input::Order(order("R1", OrderKind::Reconnect)),
        at(20),
        &f,
        &policy(),
    );
    let c = dispatched(&a).pop().expect("a connect");
    assert_eq!((c.kind, c.demand_limit_kw), (CommandKind::Connect, None));
}

/// A limit answered with any other switch state is not done: retried (the limit goes again,
/// a switch found open does not settle it); an open switch is a cut all the same.
#[test]
fn a_limit_answered_with_another_switch_state_is_retried_not_completed() {
    for state in [SwitchState::Connected, SwitchState::Disconnected] {
        let mut m = MeterMachine::new("M");
        let (f, cmd, _) = limit_sent(&mut m);
        let a = m.step(answer(&cmd, state, None, at(5)), at(5), &f, &policy());
        assert!(
            statuses(&a)
                .iter()
                .all(|(_, s, _)| *s != OrderStatus::Completed),
            "{state:?}: {a:?}"
        );
        assert_eq!(m.open.len(), 1, "{state:?}: still open, to be tried again");
        assert_eq!(
            m.memory.last_cut.is_some(),
            state == SwitchState::Disconnected,
            "the customer is off only when the switch is open"
        );
        let a = m.step(Input::Wake, at(3600), &f, &policy());
        let again = dispatched(&a).pop().expect("sent again");
        assert_eq!(again.kind, CommandKind::LoadLimit, "{state:?}");
    }
}

#[test]
fn lifting_a_limit_where_reconnects_arm_is_a_plain_connect() {
    let mut m = MeterMachine::new("M");
    m.switch = SwitchState::LoadLimited;
    let mut f = arming();
    f.head_end.can_limit_load = true;
    let a = m.step(
        Input::Order(order("R1", OrderKind::Reconnect)),
        t0(),
        &f,
        &policy(),
    );
    let c = dispatched(&a).pop().expect("a command");
    assert_eq!(c.kind, CommandKind::Connect);
}
