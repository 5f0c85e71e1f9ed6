//! Moves across two meters: the move-out of meter A and the move-in of meter B, each its own
//! machine, with the links between them relayed by hand (the control topic in production).

use super::moves::{LINKED_CANCELLED, MOVE_LINK_WAIT_DAYS as MOVE_WAIT_DAYS};
use super::tests::{at, dispatched, picked, step, t0};
use super::*;
use crate::domain::{
    CommandOutcome, ExceptionKind, MoveLink, Order, OrderKind, ReasonCode, SwitchState,
};

const HOUR: i64 = 3600;

/// A move leg of `meter` on `date`, linked to `other` of `other_meter`.
fn leg(id: &str, kind: OrderKind, meter: &str, date: Timestamp, other: (&str, &str)) -> Order {
    let mut o = super::tests::order(id, kind);
    o.reason = ReasonCode::Move;
    o.meter_id = meter.into();
    o.earliest_at = Some(date);
    o.linked_order_id = Some(other.0.into());
    o.linked_meter_id = Some(other.1.into());
    o
}

fn cancel(id: &str, meter: &str, target: &str) -> Order {
    let mut o = super::tests::cancel(id, target);
    o.meter_id = meter.into();
    o
}

/// Meter A with move-out OUT (at +1 h) and meter B with move-in IN (at +2 h), linked.
fn a_move() -> (MeterMachine, MeterMachine) {
    let mut a = MeterMachine::new("MA");
    let mut b = MeterMachine::new("MB");
    a.switch = SwitchState::Connected;
    b.switch = SwitchState::Disconnected;
    let out = leg("OUT", OrderKind::MoveOut, "MA", at(HOUR), ("IN", "MB"));
    let inn = leg("IN", OrderKind::MoveIn, "MB", at(2 * HOUR), ("OUT", "MA"));
    for (m, o) in [(&mut a, out), (&mut b, inn)] {
        let acts = step(m, Input::Order(o), t0());
        assert!(dispatched(&acts).is_empty(), "nothing before the move date");
        assert_eq!(statuses(&acts), vec![OrderStatus::Scheduled]);
    }
    (a, b)
}

fn statuses(actions: &[Action]) -> Vec<OrderStatus> {
    events(actions).iter().map(|e| e.status).collect()
}

fn events(actions: &[Action]) -> Vec<OrderEvent> {
    picked!(actions, Action::Event)
}

fn links(actions: &[Action]) -> Vec<MoveLink> {
    picked!(actions, Action::Link)
}

fn exceptions(actions: &[Action]) -> Vec<ExceptionKind> {
    super::tests::exceptions(actions)
        .iter()
        .map(|x| x.kind)
        .collect()
}

fn answer(c: &Command, s: SwitchState, kwh: Option<f64>, at: Timestamp) -> Input {
    Input::Result(CommandResult {
        schema_version: 1,
        command_id: c.command_id.clone(),
        meter_id: c.meter_id.clone(),
        outcome: CommandOutcome::Confirmed {
            load_side_voltage: None,
            switch_state: s,
            register_kwh: kwh,
        },
        at,
    })
}

/// Runs meter `m`'s leg on its date (a wake at `t`) and confirms its one command.
fn operate(m: &mut MeterMachine, t: Timestamp, s: SwitchState, kwh: Option<f64>) -> Vec<Action> {
    let acts = step(m, Input::Wake, t);
    let cmds = dispatched(&acts);
    assert_eq!(cmds.len(), 1, "one command on the move date: {acts:?}");
    let mut all = acts;
    all.extend(step(m, answer(&cmds[0], s, kwh, t), t));
    all
}

#[test]
fn a_linked_move_confirms_once_with_the_transferred_final_read() {
    let (mut a, mut b) = a_move();
    // The move-out runs on its date as a move, and tells the move-in how it ended.
    let acts = operate(&mut a, at(HOUR), SwitchState::Disconnected, Some(4321.5));
    let sent_event = events(&acts)
        .into_iter()
        .find(|e| e.status == OrderStatus::Dispatched)
        .unwrap();
    let decision = sent_event
        .policy
        .expect("the decision travels with the dispatch");
    assert_eq!(decision.rules.last().unwrap().rule, "move_out");
    let done = events(&acts)
        .into_iter()
        .find(|e| e.status == OrderStatus::Completed)
        .unwrap();
    assert_eq!(done.final_read.as_ref().unwrap().kwh, 4321.5);
    let sent = links(&acts);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].meter_id.as_str(), sent[0].order_id.as_str()),
        ("MB", "IN")
    );
    assert_eq!(sent[0].status, OrderStatus::Completed);
    assert!(a.is_idle());
    // The move-in hears it before its own date: nothing happens yet.
    let acts = step(&mut b, Input::Link(sent[0].clone()), at(HOUR + 5));
    assert!(events(&acts).is_empty() && dispatched(&acts).is_empty());
    // On its date it switches on and completes, once, with the move's summary.
    let acts = operate(&mut b, at(2 * HOUR), SwitchState::Connected, None);
    assert_eq!(
        statuses(&acts),
        vec![
            OrderStatus::Dispatched,
            OrderStatus::Confirmed,
            OrderStatus::Completed
        ]
    );
    let done = events(&acts).pop().unwrap();
    let moved = done.moved.expect("the move's one confirmation");
    assert_eq!(moved.linked_order_id, "OUT");
    assert_eq!(moved.linked_status, Some(OrderStatus::Completed));
    assert_eq!(moved.final_read.unwrap().kwh, 4321.5);
    assert!(links(&acts).is_empty(), "it knew how the move-out ended");
    assert!(b.is_idle() && b.memory.links.is_empty());
}

#[test]
fn a_move_in_that_switches_on_first_waits_for_its_move_out() {
    let (mut a, mut b) = a_move();
    // The move-in switches on first (its date came first here): confirmed, not completed.
    let acts = operate(&mut b, at(3 * HOUR), SwitchState::Connected, None);
    assert_eq!(
        statuses(&acts),
        vec![OrderStatus::Dispatched, OrderStatus::Confirmed]
    );
    assert!(links(&acts).is_empty());
    assert!(!b.is_idle(), "open until its move-out ends");
    let wait = at(3 * HOUR) + jiff::SignedDuration::from_hours(24 * MOVE_WAIT_DAYS);
    assert!(acts.contains(&Action::WakeAt(wait)), "{acts:?}");
    // A cancel of it now cannot undo the switch: the cancel says so.
    let acts = step(
        &mut b,
        Input::Order(cancel("C1", "MB", "IN")),
        at(3 * HOUR + 1),
    );
    assert_eq!(
        events(&acts)[0].reason.as_deref(),
        Some("target_already_dispatched")
    );
    // Nothing else is sent for it meanwhile.
    assert!(dispatched(&step(&mut b, Input::Wake, at(4 * HOUR))).is_empty());
    // The move-out ends; its word completes the move-in (a second copy changes nothing).
    let acts = operate(&mut a, at(5 * HOUR), SwitchState::Disconnected, Some(10.0));
    let sent = links(&acts);
    let acts = step(&mut b, Input::Link(sent[0].clone()), at(5 * HOUR + 2));
    assert_eq!(statuses(&acts), vec![OrderStatus::Completed]);
    assert_eq!(
        events(&acts)[0]
            .moved
            .as_ref()
            .unwrap()
            .final_read
            .as_ref()
            .unwrap()
            .kwh,
        10.0
    );
    assert!(b.is_idle());
    let again = step(&mut b, Input::Link(sent[0].clone()), at(5 * HOUR + 3));
    assert!(events(&again).is_empty());
}

#[test]
fn a_move_in_without_word_of_its_move_out_completes_after_the_wait_with_an_exception() {
    let (_, mut b) = a_move();
    operate(&mut b, at(2 * HOUR), SwitchState::Connected, None);
    let end = at(2 * HOUR) + jiff::SignedDuration::from_hours(24 * MOVE_WAIT_DAYS);
    assert!(events(&step(
        &mut b,
        Input::Wake,
        end - jiff::SignedDuration::from_secs(1)
    ))
    .is_empty());
    let acts = step(&mut b, Input::Wake, end);
    let done = events(&acts);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].status, OrderStatus::Completed);
    assert_eq!(done[0].moved.as_ref().unwrap().linked_status, None);
    assert_eq!(exceptions(&acts), vec![ExceptionKind::MoveLinkMissing]);
    assert!(b.is_idle());
}

#[test]
fn cancelling_a_leg_cancels_the_other_before_it_operates() {
    let (mut a, mut b) = a_move();
    let acts = step(&mut b, Input::Order(cancel("C1", "MB", "IN")), at(60));
    let sent = links(&acts);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].status, OrderStatus::Cancelled);
    let acts = step(&mut a, Input::Link(sent[0].clone()), at(61));
    let e = events(&acts);
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].status, e[0].reason.as_deref()),
        (OrderStatus::Cancelled, Some(LINKED_CANCELLED))
    );
    assert!(links(&acts).is_empty(), "no echo back");
    assert!(a.is_idle());
    assert!(dispatched(&step(&mut a, Input::Wake, at(HOUR))).is_empty());
}

#[test]
fn a_cancel_after_the_other_leg_operated_asks_a_person() {
    let (mut a, mut b) = a_move();
    let acts = operate(&mut a, at(HOUR), SwitchState::Disconnected, Some(1.0));
    step(&mut b, Input::Link(links(&acts)[0].clone()), at(HOUR + 1));
    let acts = step(&mut b, Input::Order(cancel("C1", "MB", "IN")), at(HOUR + 2));
    assert_eq!(exceptions(&acts), vec![ExceptionKind::MovePartlyCancelled]);
    assert!(
        links(&acts).is_empty(),
        "the move-out is done: nothing to tell it"
    );
    assert!(b.is_idle());
}

#[test]
fn a_leg_whose_other_leg_was_cancelled_before_it_came_is_cancelled_on_arrival() {
    let mut a = MeterMachine::new("MA");
    let mut b = MeterMachine::new("MB");
    let inn = leg("IN", OrderKind::MoveIn, "MB", at(HOUR), ("OUT", "MA"));
    step(&mut b, Input::Order(inn), t0());
    let acts = step(&mut b, Input::Order(cancel("C1", "MB", "IN")), at(1));
    let sent = links(&acts);
    // The link overtakes the move-out on its way to meter A.
    step(&mut a, Input::Link(sent[0].clone()), at(2));
    let out = leg("OUT", OrderKind::MoveOut, "MA", at(HOUR), ("IN", "MB"));
    let acts = step(&mut a, Input::Order(out), at(3));
    assert_eq!(statuses(&acts), vec![OrderStatus::Cancelled]);
    assert!(dispatched(&step(&mut a, Input::Wake, at(HOUR))).is_empty());
    assert!(a.is_idle() && a.memory.links.is_empty());
}

#[test]
fn a_link_for_another_move_is_ignored() {
    let (_, mut b) = a_move();
    let mut l = MoveLink::parse(
        Some(b"MB"),
        br#"{"type":"move_link","schema_version":1,"meter_id":"MB","order_id":"IN","from_meter_id":"MX","from_order_id":"OUT-9","from_kind":"move_out","status":"cancelled","at":"2026-11-25T08:00:00Z"}"#,
    )
    .unwrap();
    let acts = step(&mut b, Input::Link(l.clone()), at(5));
    assert!(events(&acts).is_empty(), "not this move-in's move-out");
    l.from_meter_id = "MA".into();
    l.from_order_id = "OUT".into();
    let acts = step(&mut b, Input::Link(l), at(6));
    assert_eq!(statuses(&acts), vec![OrderStatus::Cancelled]);
}

/// A cancel of the move-in that reaches the move-out while its disconnect is out: the
/// disconnect cannot be recalled, but it is never sent again: a retryable failure closes it as
/// cancelled instead of a retry (and a second copy of the link changes nothing).
#[test]
fn a_cancel_that_comes_while_the_other_legs_command_is_out_stops_its_retries() {
    let (mut a, mut b) = a_move();
    let acts = step(&mut a, Input::Wake, at(HOUR));
    let cmd = dispatched(&acts).pop().expect("the move-out is out");
    let cancel_link = links(&step(
        &mut b,
        Input::Order(cancel("C1", "MB", "IN")),
        at(HOUR + 1),
    ))
    .pop()
    .unwrap();
    let acts = step(&mut a, Input::Link(cancel_link.clone()), at(HOUR + 2));
    assert_eq!(exceptions(&acts), vec![ExceptionKind::MovePartlyCancelled]);
    let again = step(&mut a, Input::Link(cancel_link), at(HOUR + 3));
    assert!(exceptions(&again).is_empty(), "heard once");
    let busy = Input::Result(CommandResult {
        schema_version: 1,
        command_id: cmd.command_id.clone(),
        meter_id: "MA".into(),
        outcome: CommandOutcome::Failed {
            code: crate::domain::FailureCode::MeterBusy,
            detail: None,
        },
        at: at(HOUR + 4),
    });
    let acts = step(&mut a, busy, at(HOUR + 4));
    assert_eq!(
        events(&acts).last().map(|e| (e.status, e.reason.clone())),
        Some((OrderStatus::Cancelled, Some(LINKED_CANCELLED.to_string())))
    );
    assert!(dispatched(&step(&mut a, Input::Wake, at(2 * HOUR))).is_empty());
    assert!(links(&acts).is_empty() && a.is_idle());
}
