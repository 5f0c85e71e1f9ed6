//! Meter exchange across two machines: the removed meter hands its work over, the new one takes
//! it in, each exactly once.

use super::exchange::METER_EXCHANGED;
use super::tests::{at, dispatched, order, picked, t0};
use super::*;
use crate::domain::{
    MeterExchange, MeterFlags, MeterHandover, OrderKind, ReasonCode, RegisterPoint,
};

const HOUR: i64 = 3600;

fn exchange(id: &str) -> Input {
    Input::Fact(MeterFact::MeterExchange(MeterExchange {
        schema_version: 1,
        fact_id: id.into(),
        meter_id: "M-OLD".into(),
        new_meter_id: "M-NEW".into(),
        exchanged_at: at(60),
        final_read_kwh: 5200.0,
        initial_read_kwh: 3.0,
        by: "crew-12".into(),
        note: None,
    }))
}

fn events(actions: &[Action]) -> Vec<OrderEvent> {
    picked!(actions, Action::Event)
}

fn handovers(actions: &[Action]) -> Vec<MeterHandover> {
    picked!(actions, Action::Handover)
}

#[test]
fn an_exchange_carries_the_meters_work_to_the_new_meter_once() {
    // The removed meter: a life-support flag in the registry, a read history, and four open
    // orders due in an hour: a disconnect and a read (carried), a linked move-out and a
    // campaign's disconnect (not carried: they name the removed meter elsewhere).
    let mut old_facts = MeterFacts::baseline(true, "HE-1");
    old_facts.flags = MeterFlags::LIFE_SUPPORT;
    let mut old = MeterMachine::new("M-OLD");
    old.switch = SwitchState::Connected;
    old.memory.register_history.push(RegisterPoint {
        at: t0() - jiff::SignedDuration::from_hours(24),
        kwh: 5180.0,
    });
    let mut d = order("D1", OrderKind::Disconnect);
    let mut r = order("R1", OrderKind::Read);
    let mut mv = order("MV1", OrderKind::MoveOut);
    mv.reason = ReasonCode::Move;
    mv.linked_order_id = Some("MV2".into());
    mv.linked_meter_id = Some("M-ELSE".into());
    let mut c = order("C1", OrderKind::Disconnect);
    c.campaign_id = Some("NP-1".into());
    for o in [&mut d, &mut r, &mut mv, &mut c] {
        o.meter_id = "M-OLD".into();
        o.earliest_at = Some(at(HOUR));
        old.step(Input::Order(o.clone()), t0(), &old_facts, &tests::policy());
    }
    assert_eq!(old.open.len(), 4);

    let acts = old.step(exchange("EX-1"), at(61), &old_facts, &tests::policy());
    let cancelled: Vec<(String, Option<String>)> = events(&acts)
        .into_iter()
        .filter(|e| e.status == OrderStatus::Cancelled)
        .map(|e| (e.order_id, e.reason))
        .collect();
    assert_eq!(
        cancelled,
        [
            ("MV1".to_string(), Some(METER_EXCHANGED.to_string())),
            ("C1".to_string(), Some(METER_EXCHANGED.to_string()))
        ]
    );
    let h = handovers(&acts);
    assert_eq!(h.len(), 1);
    let h = &h[0];
    assert_eq!(h.meter_id, "M-NEW");
    let carried: Vec<&str> = h.orders.iter().map(|o| o.order_id.as_str()).collect();
    assert_eq!(carried, ["D1", "R1"]);
    assert!(h.orders.iter().all(|o| o.meter_id == "M-NEW"));
    assert!(
        h.certificates
            .iter()
            .any(|c| c.protection == crate::domain::Protection::LifeSupport),
        "the protection goes with the service point"
    );
    // History moves onto the new register: the use between the reads is kept.
    let shifted: Vec<f64> = h.register_history.iter().map(|p| p.kwh).collect();
    assert_eq!(shifted, [5180.0 - 5197.0, 3.0]);
    assert!(old.open.is_empty() && old.is_idle());
    assert!(acts.iter().any(
        |a| matches!(a, Action::Audit(e) if e.kind == AuditKind::FinalRead && e.order_id.as_deref() == Some("EX-1"))
    ));
    // The same exchange again (redelivered): nothing more.
    let again = old.step(exchange("EX-1"), at(62), &old_facts, &tests::policy());
    assert!(handovers(&again).is_empty() && events(&again).is_empty());

    // The new meter: no flags of its own in the registry yet.
    let new_facts = MeterFacts::baseline(true, "HE-1");
    let mut new = MeterMachine::new("M-NEW");
    let acts = new.step(
        Input::Handover(h.clone()),
        at(70),
        &new_facts,
        &tests::policy(),
    );
    let took: Vec<String> = picked!(acts, Action::TakeOver)
        .into_iter()
        .map(|r: OrderRecord| r.order.order_id)
        .collect();
    assert_eq!(took, ["D1", "R1"]);
    assert!(events(&acts)
        .iter()
        .any(|e| e.order_id == "D1" && e.reason.as_deref() == Some(METER_EXCHANGED)));
    assert!(dispatched(&acts).is_empty(), "not before their time");
    // On their time: the read goes out; the disconnect waits for an approval (the inherited
    // life-support protection), even though the new meter's registry record has no flag.
    let acts = new.step(Input::Wake, at(HOUR), &new_facts, &tests::policy());
    let cmds = dispatched(&acts);
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0].kind, CommandKind::Read);
    assert_eq!(cmds[0].meter_id, "M-NEW");
    assert!(events(&acts)
        .iter()
        .any(|e| e.order_id == "D1" && e.status == OrderStatus::AwaitingApproval));
    // The handover redelivered after the read completed: nothing is admitted twice.
    let done = Input::Result(CommandResult {
        schema_version: 1,
        command_id: cmds[0].command_id.clone(),
        meter_id: "M-NEW".into(),
        outcome: crate::domain::CommandOutcome::Confirmed {
            load_side_voltage: None,
            switch_state: SwitchState::Connected,
            register_kwh: Some(4.0),
        },
        at: at(HOUR),
    });
    new.step(done, at(HOUR + 1), &new_facts, &tests::policy());
    let again = new.step(
        Input::Handover(h.clone()),
        at(HOUR + 2),
        &new_facts,
        &tests::policy(),
    );
    assert!(picked!(again, Action::TakeOver).is_empty() && events(&again).is_empty());
    assert!(!new.has_order("R1"));
}

/// What cannot simply move: a move-in that is on completes on the removed meter, an order
/// withdrawn while its command was out closes there, and a carried order's command ids go on
/// from its attempts so far (never repeating one the head-end has answered).
#[test]
fn an_exchange_settles_what_cannot_move_and_keeps_command_ids_unique() {
    let facts = MeterFacts::baseline(true, "HE-1");
    let p = tests::policy();
    let mut old = MeterMachine::new("M-OLD");
    old.switch = SwitchState::Disconnected;
    let answer = |c: &Command, outcome: crate::domain::CommandOutcome| {
        Input::Result(CommandResult {
            schema_version: 1,
            command_id: c.command_id.clone(),
            meter_id: "M-OLD".into(),
            outcome,
            at: c.issued_at,
        })
    };
    // A linked move-in switches on and waits for its move-out.
    let mut inn = order("IN", OrderKind::MoveIn);
    inn.meter_id = "M-OLD".into();
    inn.reason = ReasonCode::Move;
    inn.earliest_at = Some(t0());
    inn.linked_order_id = Some("OUT".into());
    inn.linked_meter_id = Some("M-X".into());
    let c = dispatched(&old.step(Input::Order(inn), t0(), &facts, &p))
        .pop()
        .unwrap();
    let confirmed = crate::domain::CommandOutcome::Confirmed {
        load_side_voltage: None,
        switch_state: SwitchState::Connected,
        register_kwh: None,
    };
    old.step(answer(&c, confirmed), at(1), &facts, &p);
    assert!(old.open[0].awaiting_link.is_some());
    // A read fails once (busy) and waits for its retry.
    let mut r = order("R3", OrderKind::Read);
    r.meter_id = "M-OLD".into();
    let c = dispatched(&old.step(Input::Order(r), at(2), &facts, &p))
        .pop()
        .unwrap();
    let busy = crate::domain::CommandOutcome::Failed {
        code: crate::domain::FailureCode::MeterBusy,
        detail: None,
    };
    old.step(answer(&c, busy), at(3), &facts, &p);
    // A disconnect goes out and is cancelled while out: withdrawn.
    let mut d = order("D2", OrderKind::Disconnect);
    d.meter_id = "M-OLD".into();
    let c = dispatched(&old.step(Input::Order(d), at(4), &facts, &p))
        .pop()
        .unwrap();
    assert_eq!(c.order_id, "D2");
    let mut x = tests::cancel("C2", "D2");
    x.meter_id = "M-OLD".into();
    old.step(Input::Order(x), at(5), &facts, &p);

    let acts = old.step(exchange("EX-9"), at(6), &facts, &p);
    let ended: Vec<(String, OrderStatus)> = events(&acts)
        .into_iter()
        .filter(|e| e.status.is_terminal())
        .map(|e| (e.order_id, e.status))
        .collect();
    assert_eq!(
        ended,
        [
            ("IN".to_string(), OrderStatus::Completed),
            ("D2".to_string(), OrderStatus::Cancelled)
        ]
    );
    let done = events(&acts)
        .into_iter()
        .find(|e| e.order_id == "IN")
        .unwrap();
    assert_eq!(done.moved.unwrap().linked_status, None);
    assert!(
        picked!(acts, Action::Link).is_empty(),
        "the move-in knew nothing to tell"
    );
    let h = handovers(&acts).pop().unwrap();
    let carried: Vec<&str> = h.orders.iter().map(|o| o.order_id.as_str()).collect();
    assert_eq!(carried, ["R3"]);
    assert_eq!(h.attempts.get("R3"), Some(&1));

    let mut new = MeterMachine::new("M-NEW");
    let acts = new.step(Input::Handover(h), at(7), &facts, &p);
    let c = dispatched(&acts)
        .pop()
        .expect("the read goes on at the new meter at once");
    assert_eq!(c.command_id, "R3/2");
}
