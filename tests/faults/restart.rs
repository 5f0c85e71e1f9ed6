//! Restarts at the moments that used to rewrite an order's outcome (issue 10, defects 2 and 3):
//! a terminal order never runs again, a command id is never sent twice, an order raises at most
//! one exception, and a restart is not an unanswered status check.
//!
//! Each test writes the store as a `kill -9` leaves it (the snapshot of the meter with its
//! command in flight, the order stored open), then starts switchyard on it.

use std::time::Duration;

use switchyard::domain::{AuditKind, Command, CommandKind, OrderStatus, Timestamp};
use switchyard::meter::machine::{InFlight, MeterMachine, OpenOrder, Purpose};
use switchyard::store::WriteBatch;

use crate::common::*;

const T: Duration = Duration::from_secs(30);

fn command(
    o: &switchyard::domain::Order,
    id: &str,
    kind: CommandKind,
    attempt: u32,
    now: Timestamp,
) -> Command {
    Command {
        check_load_side_voltage: false,
        demand_limit_kw: None,
        schema_version: 1,
        command_id: id.to_string(),
        order_id: o.order_id.clone(),
        meter_id: o.meter_id.clone(),
        head_end_id: "HE-1".into(),
        kind,
        attempt,
        issued_at: now,
        deadline: now + jiff::SignedDuration::from_secs(600),
    }
}

/// The store as a kill -9 leaves it: `o` stored open, the meter's snapshot holding it with
/// `in_flight` outstanding.
fn killed_with(
    dir: &std::path::Path,
    o: &switchyard::domain::Order,
    open: OpenOrder,
    in_flight: InFlight,
) {
    let store = switchyard::open_store(&test_config(dir)).unwrap();
    let mut m = MeterMachine::new(o.meter_id.as_str());
    m.open.push(open);
    m.next_seq = 1;
    let cmd = in_flight.command.clone();
    m.in_flight = Some(Box::new(in_flight));
    let batch = WriteBatch {
        new_orders: vec![Order::new(&o.order_id, o.kind.as_str(), &o.meter_id).accepted()],
        meter: Some(m),
        commands: vec![cmd],
        ..Default::default()
    };
    store.apply(&[batch]).unwrap();
}

fn open_order(o: &switchyard::domain::Order, attempts: u32) -> OpenOrder {
    OpenOrder {
        order: o.clone().into(),
        status: OrderStatus::Dispatched,
        attempts,
        status_checks: 0,
        status_checks_lost: 0,
        not_sent: 0,
        unknown_outcome: false,
        withdrawn: None,
        not_before: None,
        seq: 0,
        hold: None,
        approved_by: None,
        approved_for: Vec::new(),
        campaign_hold: false,
        operator_hold: None,
        awaiting_link: None,
        armed_until: None,
        head_end_hold_ends: None,
        head_end_retry_at: None,
        load_limit: false,
    }
}

/// A read that used its last attempt when the process was killed fails once, and never runs
/// again: before the fix, recovery fed it to its meter a second time from a list read before
/// the meter had closed it, and it was dispatched again as `/1` (on a disconnect, a second
/// switch operation) and failed or completed a second time.
#[actix_rt::test]
async fn an_order_that_fails_in_recovery_is_not_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let now = jiff::Timestamp::now();
    let r = Order::read("SO-R", "M-1").accepted().order;
    // Attempts /1 and /2 timed out; /3 (the last, max_attempts = 3) was in flight.
    killed_with(
        dir.path(),
        &r,
        open_order(&r, 3),
        InFlight {
            command: command(&r, "SO-R/3", CommandKind::Read, 3, now).into(),
            purpose: Purpose::Execute,
        },
    );
    let app = restart_answering(test_config(dir.path()), dir.path(), &["M-1"]).await;
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    let p = producer(&app.bootstrap);
    // A later order of the same meter: once it is done, anything recovery did to SO-R is done.
    Order::read("SO-NEXT", "M-1")
        .produce(&p, &app.config.topics.orders)
        .await;
    events.wait_final("SO-NEXT", T).await;
    events.wait_final("SO-R", T).await;

    let s = app.store.store();
    let finals: Vec<_> = events
        .of("SO-R")
        .into_iter()
        .filter(|e| e.status.is_terminal())
        .collect();
    assert_eq!(finals.len(), 1, "one final status: {finals:?}");
    assert_eq!(finals[0].status, OrderStatus::Failed);
    assert_eq!(finals[0].reason.as_deref(), Some("network_timeout"));
    assert_eq!(
        s.order("SO-R").unwrap().unwrap().status,
        OrderStatus::Failed,
        "store and topic agree"
    );
    assert!(
        s.command("SO-R/1").unwrap().is_none(),
        "a terminal order is never dispatched again"
    );
    assert!(events
        .of("SO-R")
        .iter()
        .all(|e| e.status != OrderStatus::Dispatched));
    let exceptions = s
        .audit("M-1")
        .unwrap()
        .into_iter()
        .filter(|a| a.kind == AuditKind::ExceptionRaised)
        .count();
    assert_eq!(exceptions, 1, "at most one exception per order");
    let (code, body) = http_get(app.http_addr, "/api/v1/orders/SO-R").await;
    assert_eq!(code, 200);
    assert!(body.contains("\"status\":\"failed\""), "{body}");
    app.shutdown().await;
}

/// A status check lost in a restart is not an unanswered check: a disconnect whose switch
/// state had been asked three times, each time lost in a kill, is resolved by a fourth check
/// (with a new command id), not failed as `outcome_unknown`.
#[actix_rt::test]
async fn a_restart_is_not_an_unanswered_status_check() {
    let dir = tempfile::tempdir().unwrap();
    let now = jiff::Timestamp::now();
    let d = Order::disconnect("SO-D", "M-1").accepted().order;
    let mut open = open_order(&d, 1);
    open.unknown_outcome = true;
    open.status_checks = 3;
    open.status_checks_lost = 2; // the first two were lost in earlier restarts
    killed_with(
        dir.path(),
        &d,
        open,
        InFlight {
            command: command(&d, "SO-D/1/status-3", CommandKind::SwitchStatus, 1, now).into(),
            purpose: Purpose::StatusCheck,
        },
    );
    let app = restart_answering(test_config(dir.path()), dir.path(), &["M-1"]).await;
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    let ev = events.wait_final("SO-D", T).await;
    let finals: Vec<_> = ev.iter().filter(|e| e.status.is_terminal()).collect();
    assert_eq!(finals.len(), 1, "{ev:?}");
    assert_eq!(
        finals[0].status,
        OrderStatus::Completed,
        "resolved, not failed as outcome_unknown: {ev:?}"
    );
    let s = app.store.store();
    assert!(
        s.command("SO-D/1/status-4").unwrap().is_some(),
        "a new check, with a new id"
    );
    assert_eq!(
        s.order("SO-D").unwrap().unwrap().status,
        OrderStatus::Completed
    );
    app.shutdown().await;
}

/// The simulator's field dies with the process; it is seeded from the stored switch states, so
/// a restarted demo does not forget the meters it disconnected: a read reports the switch open,
/// and a second disconnect completes without a command (before: the new simulator said
/// "connected", the read taught the meter so, and the disconnect was sent again).
#[actix_rt::test]
async fn a_restarted_simulator_remembers_the_meters_it_disconnected() {
    let s = started(|_| {}).await;
    let cfg = s.cfg.clone();
    let (dir, app, p, events) = s.split();
    register(&app, &p, &[("M-1", true)]).await;
    Order::disconnect("SO-CUT", "M-1")
        .produce(&p, &app.config.topics.orders)
        .await;
    let ev = events.wait_final("SO-CUT", T).await;
    assert_eq!(ev.last().unwrap().status, OrderStatus::Completed);
    drop(p);
    app.shutdown().await;

    let app = restart_answering(cfg, dir.path(), &["M-1"]).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    let orders = app.config.topics.orders.clone();
    Order::read("SO-READ", "M-1").produce(&p, &orders).await;
    Order::disconnect("SO-CUT-2", "M-1")
        .produce(&p, &orders)
        .await;
    let read = events.wait_final("SO-READ", T).await;
    assert_eq!(
        read.last().unwrap().switch_state,
        Some(switchyard::domain::SwitchState::Disconnected),
        "{read:?}"
    );
    let cut = events.wait_final("SO-CUT-2", T).await;
    assert_eq!(
        cut.last().unwrap().reason.as_deref(),
        Some("already_disconnected"),
        "{cut:?}"
    );
    assert!(app.store.store().command("SO-CUT-2/1").unwrap().is_none());
    app.shutdown().await;
}
