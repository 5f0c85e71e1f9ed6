//! The store contract as executable cases: what every [`Store`] must do, run against each
//! backend by `tests/store_contract.rs` (the embedded store on a temporary directory, the
//! ScyllaDB store on a real CQL server) and by the embedded store's own unit tests. Each case
//! takes a fresh, empty store.

use super::{AuditCursor, KeptRecord, OrderUpdate, OutboxMessage, Store, WriteBatch};
use crate::domain::{
    AuditEvent, AuditKind, CampaignOrder, CampaignRecord, Command, CommandKind, CommandOutcome,
    CommandResult, ExceptionKind, ExceptionRecord, FailureCode, InFlight, MeterState, Order,
    OrderKind, OrderRecord, OrderStatus, Purpose, ReasonCode, SwitchState, Timestamp,
};

/// Every case, by name.
pub const CASES: &[(&str, fn(&dyn Store))] = &[
    (
        "an_order_carried_by_an_exchange_moves_to_its_new_meter",
        an_order_carried_by_an_exchange_moves_to_its_new_meter,
    ),
    (
        "orders_are_stored_once_and_indexed_while_open",
        orders_are_stored_once_and_indexed_while_open,
    ),
    (
        "an_open_orders_status_comes_from_its_trail_and_a_final_one_from_its_record",
        an_open_orders_status_comes_from_its_trail_and_a_final_one_from_its_record,
    ),
    (
        "a_meter_with_a_command_in_flight_is_open_work",
        a_meter_with_a_command_in_flight_is_open_work,
    ),
    (
        "commands_keep_their_results_in_order",
        commands_keep_their_results_in_order,
    ),
    (
        "a_result_of_the_command_in_flight_is_stored_whole_and_a_later_one_appended",
        a_result_of_the_command_in_flight_is_stored_whole_and_a_later_one_appended,
    ),
    ("exceptions_round_trip", exceptions_round_trip),
    (
        "a_meters_trail_pages_newest_first_through_interleaved_meters",
        a_meters_trail_pages_newest_first_through_interleaved_meters,
    ),
    ("the_trail_pages_across_days", the_trail_pages_across_days),
    (
        "a_row_stamped_before_the_row_written_ahead_of_it_keeps_the_trail_in_time_order",
        a_row_stamped_before_the_row_written_ahead_of_it_keeps_the_trail_in_time_order,
    ),
    (
        "outbox_entries_are_numbered_in_order_and_deleted_when_acknowledged",
        outbox_entries_are_numbered_in_order_and_deleted_when_acknowledged,
    ),
    (
        "campaigns_their_orders_and_releases",
        campaigns_their_orders_and_releases,
    ),
    (
        "kept_table_records_are_replaced_and_removed",
        kept_table_records_are_replaced_and_removed,
    ),
    (
        "an_assignment_loads_exactly_the_open_work_of_its_units",
        an_assignment_loads_exactly_the_open_work_of_its_units,
    ),
    (
        "a_unit_lease_changes_only_from_what_it_is",
        a_unit_lease_changes_only_from_what_it_is,
    ),
    (
        "orders_page_newest_first_within_their_period",
        orders_page_newest_first_within_their_period,
    ),
    (
        "exceptions_page_and_their_tasks_change_only_from_the_version_read",
        exceptions_page_and_their_tasks_change_only_from_the_version_read,
    ),
    (
        "read_watches_are_set_replaced_cleared_and_loaded_by_unit",
        read_watches_are_set_replaced_cleared_and_loaded_by_unit,
    ),
];

/// The post-disconnect watchdog's read watches: set with a meter's step, replaced by a later
/// set, removed by a clear, and read back for the ownership units an instance was assigned.
pub fn read_watches_are_set_replaced_cleared_and_loaded_by_unit(s: &dyn Store) {
    use crate::domain::{Partitioner, ReadWatch, WatchChange};
    use std::collections::BTreeSet;
    let watch = |i: usize, baseline: Option<f64>| ReadWatch {
        meter_id: format!("WATCH-M-{i}"),
        order_id: format!("WATCH-SO-{i}"),
        since: at(i as i64),
        baseline_kwh: baseline,
        history: i % 5 == 0,
    };
    let ours = |s: &dyn Store| {
        let mut w: Vec<ReadWatch> = s
            .read_watches()
            .unwrap()
            .into_iter()
            .filter(|w| w.meter_id.starts_with("WATCH-M-"))
            .collect();
        w.sort_by(|a, b| a.meter_id.cmp(&b.meter_id));
        w
    };
    // One meter's step each, as the meter actors write them.
    let batches: Vec<WriteBatch> = (0..20)
        .map(|i| WriteBatch {
            watches: vec![WatchChange::Set(watch(i, None))],
            ..Default::default()
        })
        .collect();
    s.apply(&batches).unwrap();
    assert_eq!(ours(s).len(), 20);
    s.apply(&[
        WriteBatch {
            watches: vec![WatchChange::Set(watch(3, Some(4500.25)))],
            ..Default::default()
        },
        WriteBatch {
            watches: vec![WatchChange::Clear("WATCH-M-7".into())],
            ..Default::default()
        },
    ])
    .unwrap();
    let all = ours(s);
    assert_eq!(all.len(), 19, "one cleared");
    assert!(!all.iter().any(|w| w.meter_id == "WATCH-M-7"));
    let w3 = all.iter().find(|w| w.meter_id == "WATCH-M-3").unwrap();
    assert_eq!(
        w3,
        &watch(3, Some(4500.25)),
        "replaced whole, baseline kept exactly"
    );
    for units in [8u32, 3] {
        let p = Partitioner::Crc32;
        let of = BTreeSet::from([0, 2]);
        let mut got: Vec<String> = s
            .read_watches_in(&of, units, p)
            .unwrap()
            .into_iter()
            .map(|w| w.meter_id)
            .filter(|m| m.starts_with("WATCH-M-"))
            .collect();
        got.sort();
        let mut want: Vec<String> = all
            .iter()
            .map(|w| w.meter_id.clone())
            .filter(|m| of.contains(&p.partition(m.as_bytes(), units)))
            .collect();
        want.sort();
        assert_eq!(got, want, "units 0 and 2 of {units}");
        assert!(!want.is_empty() && want.len() < all.len());
    }
}

/// The order search's scan: orders received in a period, newest first (ties by id), across
/// hours and meters, a page at a time from the cursor of the last one; an ended order with
/// its final status.
pub fn orders_page_newest_first_within_their_period(s: &dyn Store) {
    use super::OrderCursor;
    // 30 orders over ~3 hours (a far-off period of their own), two at the same instant.
    let base = 500_000;
    let mut recs: Vec<OrderRecord> = (0..30)
        .map(|i| {
            accepted(
                &format!("PAGE-SO-{i:02}"),
                &format!("PAGE-M-{}", i % 7),
                base + i * 400,
            )
        })
        .collect();
    recs.push(accepted("PAGE-SO-TIE", "PAGE-M-1", base + 10 * 400));
    s.apply(&[WriteBatch {
        new_orders: recs.clone(),
        ..Default::default()
    }])
    .unwrap();
    s.apply(&[WriteBatch {
        order_updates: vec![ended(
            "PAGE-SO-05",
            "PAGE-M-5",
            OrderStatus::Completed,
            base + 3_000,
        )],
        ..Default::default()
    }])
    .unwrap();
    // Orders 3..=20 (from/to inclusive), newest first, by pages of 4.
    let (from, to) = (at(base + 3 * 400), at(base + 20 * 400));
    let mut got = Vec::new();
    let mut cursor: Option<OrderCursor> = None;
    loop {
        let page = s.orders_received(from, to, cursor.as_ref(), 4).unwrap();
        assert!(page.len() <= 4);
        got.extend(page.iter().map(|r| (r.order.order_id.clone(), r.status)));
        match page.last() {
            Some(last) if page.len() == 4 => {
                // The cursor survives its text form.
                let c = OrderCursor::after(last).to_string();
                cursor = Some(OrderCursor::parse(&c).expect("parse"));
            }
            _ => break,
        }
    }
    let mut want: Vec<(String, OrderStatus)> = (3..=20)
        .rev()
        .flat_map(|i| {
            let id = format!("PAGE-SO-{i:02}");
            let st = if i == 5 {
                OrderStatus::Completed
            } else {
                OrderStatus::Received
            };
            let mut v = vec![(id, st)];
            if i == 10 {
                v.insert(0, ("PAGE-SO-TIE".to_string(), OrderStatus::Received));
            }
            v
        })
        .collect();
    want.dedup();
    assert_eq!(got, want);
    // Nothing outside the period.
    assert!(s
        .orders_received(at(base - 100), at(base - 1), None, 10)
        .unwrap()
        .is_empty());
}

/// The desk's task list: exceptions a page at a time (each once), and a task stored only
/// from the version it was read at.
pub fn exceptions_page_and_their_tasks_change_only_from_the_version_read(s: &dyn Store) {
    use crate::domain::{ExceptionTask, TaskNote, TaskState};
    let x = |i: usize| ExceptionRecord {
        schema_version: 1,
        exception_id: format!("TASK-SO-{i}/exception"),
        meter_id: format!("TASK-M-{i}"),
        order_id: format!("TASK-SO-{i}"),
        command_id: None,
        kind: ExceptionKind::FieldOrderNeeded,
        priority: 4,
        detail: "no remote switch".into(),
        raised_at: at(40),
        status: "open".into(),
    };
    for i in 0..9 {
        s.apply(&[WriteBatch {
            exceptions: vec![x(i)],
            ..Default::default()
        }])
        .unwrap();
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s.exceptions_after(after.as_deref(), 4).unwrap();
        seen.extend(page.iter().map(|e| e.exception_id.clone()));
        if page.len() < 4 {
            break;
        }
        after = page.last().map(|e| e.exception_id.clone());
    }
    let mut mine: Vec<String> = seen
        .into_iter()
        .filter(|id| id.starts_with("TASK-SO-"))
        .collect();
    let n = mine.len();
    mine.sort();
    mine.dedup();
    assert_eq!(n, 9, "each exception once");
    assert_eq!(mine.len(), 9);

    let id = "TASK-SO-2/exception";
    assert_eq!(s.exception_task(id, "TASK-M-2").unwrap(), None);
    let t1 = ExceptionTask {
        exception_id: id.into(),
        meter_id: "TASK-M-2".into(),
        state: TaskState::InProgress,
        assignee: Some("ana".into()),
        priority: None,
        notes: vec![],
        version: 1,
        updated_by: "ana".into(),
        updated_at: at(50),
    };
    assert!(s.swap_exception_task(0, &t1).unwrap());
    assert!(
        !s.swap_exception_task(0, &t1).unwrap(),
        "a second first write must not apply"
    );
    let mut t2 = t1.clone();
    t2.version = 2;
    t2.notes.push(TaskNote {
        by: "ben".into(),
        at: at(60),
        text: "crew booked".into(),
    });
    let mut stale = t1.clone();
    stale.version = 2;
    stale.state = TaskState::Resolved;
    assert!(s.swap_exception_task(1, &t2).unwrap());
    assert!(
        !s.swap_exception_task(1, &stale).unwrap(),
        "a change from version 1 after 2"
    );
    assert_eq!(s.exception_task(id, "TASK-M-2").unwrap(), Some(t2));
}

/// Fencing (`crate::lease`): a unit lease is compare-and-set. The first take wins, a renewal
/// or a take from a stale view does not apply, and units are independent.
pub fn a_unit_lease_changes_only_from_what_it_is(s: &dyn Store) {
    use super::UnitLease;
    let l = |epoch, owner: &str, beat| UnitLease {
        epoch,
        owner: owner.to_string(),
        beat,
    };
    assert_eq!(s.unit_lease(3).expect("read"), None);
    assert!(s.swap_unit_lease(3, None, &l(1, "a", 0)).expect("take"));
    assert!(
        !s.swap_unit_lease(3, None, &l(1, "b", 0)).expect("take"),
        "a second first take must not apply"
    );
    assert_eq!(s.unit_lease(3).expect("read"), Some(l(1, "a", 0)));
    assert!(s
        .swap_unit_lease(3, Some(&l(1, "a", 0)), &l(1, "a", 1))
        .expect("renew"));
    // b saw beat 0; a renewed since: b's take does not apply, nor does a renewal from beat 0.
    assert!(!s
        .swap_unit_lease(3, Some(&l(1, "a", 0)), &l(2, "b", 0))
        .expect("take"));
    assert!(!s
        .swap_unit_lease(3, Some(&l(1, "a", 0)), &l(1, "a", 1))
        .expect("renew"));
    assert!(s
        .swap_unit_lease(3, Some(&l(1, "a", 1)), &l(2, "b", 0))
        .expect("take"));
    // a wakes: its renewal from what it last wrote does not apply.
    assert!(!s
        .swap_unit_lease(3, Some(&l(1, "a", 1)), &l(1, "a", 2))
        .expect("renew"));
    assert_eq!(s.unit_lease(3).expect("read"), Some(l(2, "b", 0)));
    // Released (owner ''), then taken; another unit is untouched.
    assert!(s
        .swap_unit_lease(3, Some(&l(2, "b", 0)), &l(2, "", 1))
        .expect("release"));
    assert!(s
        .swap_unit_lease(3, Some(&l(2, "", 1)), &l(3, "a", 0))
        .expect("take"));
    assert_eq!(s.unit_lease(4).expect("read"), None);
}

pub fn at(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).expect("in range")
}

fn row(meter: &str, s: i64, order: &str, status: Option<OrderStatus>) -> AuditEvent {
    let mut a = AuditEvent::new(meter, at(s), AuditKind::StatusChange).order(order);
    a.status = status;
    a
}

pub fn accepted(id: &str, meter: &str, s: i64) -> OrderRecord {
    OrderRecord {
        order: Order {
            order_id: id.into(),
            kind: OrderKind::Disconnect,
            reason: ReasonCode::NonPayment,
            meter_id: meter.into(),
            service_point_id: None,
            account_id: None,
            priority: 3,
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
        },
        status: OrderStatus::Received,
        received_at: at(s),
        updated_at: at(s),
        reason: None,
        source: None,
    }
}

pub(crate) fn command(id: &str, order: &str, meter: &str, s: i64) -> std::sync::Arc<Command> {
    Command {
        check_load_side_voltage: false,
        demand_limit_kw: None,
        schema_version: 1,
        command_id: id.into(),
        order_id: order.into(),
        meter_id: meter.into(),
        head_end_id: "HE-1".into(),
        kind: CommandKind::Disconnect,
        attempt: 1,
        issued_at: at(s),
        deadline: at(s + 300),
    }
    .into()
}

fn ended(order: &str, meter: &str, status: OrderStatus, s: i64) -> OrderUpdate {
    OrderUpdate {
        order_id: order.into(),
        meter_id: meter.into(),
        status,
        reason: None,
        at: at(s),
    }
}

/// What an instance assigned some units resumes: the meters with open work in those units,
/// none of another unit's, whether or not the store indexes open work by the same units (64:
/// the ScyllaDB store's default `ownership_units`, read per unit; 8 and 3: a scan filtered by
/// partition).
pub fn an_assignment_loads_exactly_the_open_work_of_its_units(s: &dyn Store) {
    use crate::domain::Partitioner;
    use std::collections::BTreeSet;
    let meters: Vec<String> = (0..40).map(|i| format!("UNIT-M-{i}")).collect();
    s.apply(&[WriteBatch {
        new_orders: meters
            .iter()
            .enumerate()
            .map(|(i, m)| accepted(&format!("UNIT-SO-{i}"), m, 1))
            .collect(),
        ..Default::default()
    }])
    .unwrap();
    for units in [8u32, 3, 64] {
        let p = Partitioner::Crc32;
        let of = |u: &BTreeSet<u32>| {
            let mut want: Vec<String> = meters
                .iter()
                .filter(|m| u.contains(&p.partition(m.as_bytes(), units)))
                .cloned()
                .collect();
            want.sort();
            // (Only this case's meters: a store shared between cases may hold others.)
            let mut got: Vec<String> = s
                .meters_with_open_work_in(u, units, p)
                .unwrap()
                .into_iter()
                .filter(|m| m.starts_with("UNIT-M-"))
                .collect();
            got.sort();
            (got, want)
        };
        let (got, want) = of(&BTreeSet::from([0, 2]));
        assert_eq!(got, want, "units 0 and 2 of {units}");
        assert!(!want.is_empty() && want.len() < meters.len());
        let (all, want_all) = of(&(0..units).collect());
        assert_eq!(all, want_all);
        assert_eq!(all.len(), meters.len(), "every unit together: every meter");
        let (none, _) = of(&BTreeSet::new());
        assert!(none.is_empty());
    }
    // Final orders are not open work in any unit.
    s.apply(&[WriteBatch {
        order_updates: meters
            .iter()
            .enumerate()
            .map(|(i, m)| ended(&format!("UNIT-SO-{i}"), m, OrderStatus::Completed, 2))
            .collect(),
        ..Default::default()
    }])
    .unwrap();
    assert!(!s
        .meters_with_open_work_in(&(0..8).collect(), 8, Partitioner::Crc32)
        .unwrap()
        .iter()
        .any(|m| m.starts_with("UNIT-M-")));
}

pub fn orders_are_stored_once_and_indexed_while_open(s: &dyn Store) {
    let step = WriteBatch {
        new_orders: vec![accepted("SO-1", "M-1", 0), accepted("SO-2", "M-1", 1)],
        ..Default::default()
    };
    s.apply(std::slice::from_ref(&step)).unwrap();
    // The same step again (a retried write) changes nothing.
    s.apply(&[step]).unwrap();
    // An order refused at intake is stored final, never open.
    let mut refused = accepted("SO-3", "M-2", 2);
    refused.status = OrderStatus::Rejected;
    s.apply(&[WriteBatch {
        new_orders: vec![refused],
        ..Default::default()
    }])
    .unwrap();
    assert_eq!(
        s.orders_exist(&["SO-1", "SO-9", "SO-3", "SO-2"]).unwrap(),
        vec![true, false, true, true]
    );
    assert_eq!(s.order("SO-1").unwrap(), Some(accepted("SO-1", "M-1", 0)));
    assert_eq!(s.order("SO-9").unwrap(), None);
    let open: Vec<String> = s
        .open_orders("M-1")
        .unwrap()
        .into_iter()
        .map(|o| o.order.order_id)
        .collect();
    assert_eq!(open, ["SO-1", "SO-2"]);
    assert!(s.open_orders("M-2").unwrap().is_empty());
    assert_eq!(s.meters_with_open_work().unwrap(), ["M-1"]);
    let c = s.counts().unwrap();
    assert_eq!((c.orders, c.open_orders), (3, 2));
    s.apply(&[WriteBatch {
        order_updates: vec![
            ended("SO-1", "M-1", OrderStatus::Completed, 5),
            ended("SO-2", "M-1", OrderStatus::Cancelled, 5),
        ],
        ..Default::default()
    }])
    .unwrap();
    assert!(s.open_orders("M-1").unwrap().is_empty());
    assert!(s.meters_with_open_work().unwrap().is_empty());
    let done = s.order("SO-2").unwrap().unwrap();
    assert_eq!(
        (done.status, done.updated_at),
        (OrderStatus::Cancelled, at(5))
    );
    assert_eq!(s.counts().unwrap().open_orders, 0);
}

/// A meter exchange moves an open order from the removed meter to the new one: the removed
/// meter's open index loses it, the new meter's gains it, its record names the new meter and
/// keeps when it was received, and it ends at its new meter. Retried writes change nothing; a
/// carried order the store never saw is stored as carried.
pub fn an_order_carried_by_an_exchange_moves_to_its_new_meter(s: &dyn Store) {
    s.apply(&[WriteBatch {
        new_orders: vec![accepted("SO-X1", "M-XA", 0)],
        ..Default::default()
    }])
    .unwrap();
    let away = WriteBatch {
        carried_away: vec![("M-XA".into(), "SO-X1".into())],
        ..Default::default()
    };
    // (The handover names when the order was first received.)
    let into = WriteBatch {
        carried_in: vec![accepted("SO-X1", "M-XB", 0)],
        ..Default::default()
    };
    s.apply(std::slice::from_ref(&away)).unwrap();
    s.apply(std::slice::from_ref(&into)).unwrap();
    s.apply(&[away, into]).unwrap();
    let ids = |m: &str| -> Vec<String> {
        s.open_orders(m)
            .unwrap()
            .into_iter()
            .map(|o| o.order.order_id)
            .collect()
    };
    assert!(ids("M-XA").is_empty(), "gone from the removed meter");
    assert_eq!(ids("M-XB"), ["SO-X1"]);
    let rec = s.order("SO-X1").unwrap().unwrap();
    assert_eq!(rec.order.meter_id, "M-XB");
    assert_eq!(
        rec.received_at,
        at(0),
        "received when it was first received"
    );
    let listed = s
        .orders_received(at(-10), at(10), None, 100)
        .unwrap()
        .into_iter()
        .filter(|r| r.order.order_id == "SO-X1")
        .map(|r| r.order.meter_id)
        .collect::<Vec<_>>();
    assert_eq!(listed, ["M-XB"], "one record, at its new meter");
    s.apply(&[WriteBatch {
        order_updates: vec![ended("SO-X1", "M-XB", OrderStatus::Completed, 60)],
        ..Default::default()
    }])
    .unwrap();
    assert!(ids("M-XB").is_empty());
    assert_eq!(
        s.order("SO-X1").unwrap().unwrap().status,
        OrderStatus::Completed
    );
    // A carry of an order that has ended in the meantime changes nothing.
    s.apply(&[WriteBatch {
        carried_in: vec![accepted("SO-X1", "M-XC", 70)],
        ..Default::default()
    }])
    .unwrap();
    assert_eq!(s.order("SO-X1").unwrap().unwrap().order.meter_id, "M-XB");
    s.apply(&[WriteBatch {
        carried_in: vec![accepted("SO-X2", "M-XB", 80)],
        ..Default::default()
    }])
    .unwrap();
    assert_eq!(ids("M-XB"), ["SO-X2"]);
    assert_eq!(s.order("SO-X2").unwrap().unwrap().received_at, at(80));
}

pub fn an_open_orders_status_comes_from_its_trail_and_a_final_one_from_its_record(s: &dyn Store) {
    s.apply(&[WriteBatch {
        new_orders: vec![accepted("SO-1", "M-1", 0)],
        audit: vec![row("M-1", 0, "SO-1", Some(OrderStatus::Received))],
        ..Default::default()
    }])
    .unwrap();
    let mut deferred = row("M-1", 5, "SO-1", Some(OrderStatus::Deferred));
    deferred.reason = Some("cold_snap".into());
    s.apply(&[WriteBatch {
        // Another order's row and a row without a status in between.
        audit: vec![
            deferred,
            row("M-1", 6, "SO-2", Some(OrderStatus::Dispatched)),
            row("M-1", 7, "SO-1", None),
        ],
        ..Default::default()
    }])
    .unwrap();
    let open = s.order("SO-1").unwrap().unwrap();
    assert_eq!(
        (open.status, open.updated_at, open.reason.as_deref()),
        (OrderStatus::Deferred, at(5), Some("cold_snap"))
    );
    s.apply(&[WriteBatch {
        audit: vec![row("M-1", 9, "SO-1", Some(OrderStatus::Dispatched))],
        ..Default::default()
    }])
    .unwrap();
    let open = s.order("SO-1").unwrap().unwrap();
    // The newest status, and the newest reason given (as a rewrite kept it).
    assert_eq!(
        (open.status, open.updated_at, open.reason.as_deref()),
        (OrderStatus::Dispatched, at(9), Some("cold_snap"))
    );
    assert_eq!(s.counts().unwrap().open_orders, 1);
    s.apply(&[WriteBatch {
        order_updates: vec![ended("SO-1", "M-1", OrderStatus::Completed, 12)],
        audit: vec![row("M-1", 12, "SO-1", Some(OrderStatus::Completed))],
        ..Default::default()
    }])
    .unwrap();
    let done = s.order("SO-1").unwrap().unwrap();
    assert_eq!(
        (done.status, done.updated_at),
        (OrderStatus::Completed, at(12))
    );
    assert_eq!(s.counts().unwrap().open_orders, 0);
}

pub fn a_meter_with_a_command_in_flight_is_open_work(s: &dyn Store) {
    let mut m = MeterState::new("M-7");
    m.switch = SwitchState::Connected;
    m.in_flight = Some(Box::new(InFlight {
        command: command("SO-7/1", "SO-7", "M-7", 3),
        purpose: Purpose::Execute,
    }));
    s.apply(&[WriteBatch {
        meter: Some(m.clone()),
        ..Default::default()
    }])
    .unwrap();
    assert_eq!(s.meter("M-7").unwrap(), Some(m.clone()));
    assert_eq!(s.meter("M-8").unwrap(), None);
    assert_eq!(s.meters_with_open_work().unwrap(), ["M-7"]);
    // The answer came: the snapshot is idle again, and so is the meter.
    m.in_flight = None;
    m.switch = SwitchState::Disconnected;
    s.apply(&[WriteBatch {
        meter: Some(m.clone()),
        ..Default::default()
    }])
    .unwrap();
    assert_eq!(s.meter("M-7").unwrap(), Some(m));
    assert!(s.meters_with_open_work().unwrap().is_empty());
    assert_eq!(s.counts().unwrap().meters, 1);
}

pub fn commands_keep_their_results_in_order(s: &dyn Store) {
    let c = command("SO-1/1", "SO-1", "M-1", 0);
    s.apply(&[WriteBatch {
        commands: vec![c.clone()],
        ..Default::default()
    }])
    .unwrap();
    let failed = CommandResult {
        schema_version: 1,
        command_id: "SO-1/1".into(),
        meter_id: "M-1".into(),
        outcome: CommandOutcome::Failed {
            code: FailureCode::NetworkTimeout,
            detail: Some("no answer".into()),
        },
        at: at(10),
    };
    let confirmed = CommandResult {
        outcome: CommandOutcome::Confirmed {
            load_side_voltage: None,
            switch_state: SwitchState::Disconnected,
            register_kwh: Some(1234.5),
        },
        at: at(20),
        ..failed.clone()
    };
    s.apply(&[WriteBatch {
        results: vec![failed.clone()],
        ..Default::default()
    }])
    .unwrap();
    s.apply(&[WriteBatch {
        results: vec![confirmed.clone()],
        ..Default::default()
    }])
    .unwrap();
    let rec = s.command("SO-1/1").unwrap().unwrap();
    assert_eq!(rec.command, c);
    assert_eq!(rec.results, vec![failed, confirmed]);
    assert_eq!(s.command("SO-1/2").unwrap(), None);
    assert_eq!(s.counts().unwrap().commands, 1);
}

/// The meter answers its command in flight with the whole record (`answered`, written
/// without reading the stored one); a repeated answer, in the same batch or a later one, is
/// appended to it.
pub fn a_result_of_the_command_in_flight_is_stored_whole_and_a_later_one_appended(s: &dyn Store) {
    let c = command("SO-2/1", "SO-2", "M-2", 0);
    let other = command("SO-3/1", "SO-3", "M-3", 0);
    s.apply(&[WriteBatch {
        commands: vec![c.clone(), other.clone()],
        ..Default::default()
    }])
    .unwrap();
    let result = |cmd: &Command, secs: i64| CommandResult {
        schema_version: 1,
        command_id: cmd.command_id.clone(),
        meter_id: cmd.meter_id.clone(),
        outcome: CommandOutcome::Confirmed {
            load_side_voltage: None,
            switch_state: SwitchState::Disconnected,
            register_kwh: Some(secs as f64),
        },
        at: at(secs),
    };
    let (r1, r2, r3) = (result(&c, 10), result(&c, 11), result(&c, 30));
    // The first answer and a duplicate of it in one batch (a redelivered result).
    s.apply(&[WriteBatch {
        answered: vec![super::CommandRecord {
            command: c.clone(),
            results: vec![r1.clone()],
        }],
        results: vec![r2.clone()],
        ..Default::default()
    }])
    .unwrap();
    s.apply(&[WriteBatch {
        results: vec![r3.clone()],
        ..Default::default()
    }])
    .unwrap();
    let rec = s.command("SO-2/1").unwrap().unwrap();
    assert_eq!(rec.command, c);
    assert_eq!(rec.results, vec![r1, r2, r3]);
    // The other command is untouched.
    let rec = s.command("SO-3/1").unwrap().unwrap();
    assert_eq!((rec.command, rec.results), (other, vec![]));
    assert_eq!(s.counts().unwrap().commands, 2);
}

pub fn exceptions_round_trip(s: &dyn Store) {
    let x = ExceptionRecord {
        schema_version: 1,
        exception_id: "SO-1/exception".into(),
        meter_id: "M-1".into(),
        order_id: "SO-1".into(),
        command_id: Some("SO-1/3".into()),
        kind: ExceptionKind::RetriesExhausted,
        priority: 2,
        detail: "three attempts timed out".into(),
        raised_at: at(30),
        status: "open".into(),
    };
    s.apply(&[WriteBatch {
        exceptions: vec![x.clone()],
        ..Default::default()
    }])
    .unwrap();
    assert_eq!(s.exception("SO-1/exception").unwrap(), Some(x));
    assert_eq!(s.exception("SO-2/exception").unwrap(), None);
    assert_eq!(s.counts().unwrap().exceptions, 1);
}

pub fn a_meters_trail_pages_newest_first_through_interleaved_meters(s: &dyn Store) {
    // Two meters written in the same transactions, alternating.
    for i in 0..25 {
        let b = WriteBatch {
            audit: vec![
                row("M-A", i, &format!("SO-A{}", i % 3), None),
                row("M-B", i, "SO-B", None),
            ],
            ..Default::default()
        };
        s.apply(&[b]).unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = s.audit_page("M-A", cursor.as_ref(), 10, None).unwrap();
        assert!(page.iter().all(|a| a.meter_id == "M-A"));
        seen.extend(page.iter().map(|a| a.at));
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let expected: Vec<Timestamp> = (0..25).rev().map(at).collect();
    assert_eq!(seen, expected, "every row once, newest first");
    // One order's rows only.
    let (mine, _) = s.audit_page("M-A", None, 100, Some("SO-A1")).unwrap();
    assert_eq!(mine.len(), 8);
    assert!(mine.iter().all(|a| a.order_id.as_deref() == Some("SO-A1")));
    // A time window, oldest first, bounded.
    let w = s.audit_between("M-B", at(5), at(9), 3).unwrap();
    assert_eq!(
        w.iter().map(|a| a.at).collect::<Vec<_>>(),
        vec![at(5), at(6), at(7)]
    );
    assert_eq!(s.audit("M-B").unwrap().len(), 25);
    assert_eq!(s.counts().unwrap().audit_events, 50);
    // Rows of one instant keep the order they were written in.
    let kinds = [
        AuditKind::OrderReceived,
        AuditKind::Decision,
        AuditKind::CommandDispatched,
    ];
    s.apply(&[WriteBatch {
        audit: kinds
            .iter()
            .map(|k| AuditEvent::new("M-C", at(100), *k).order("SO-C"))
            .collect(),
        ..Default::default()
    }])
    .unwrap();
    let trail: Vec<AuditKind> = s.audit("M-C").unwrap().iter().map(|a| a.kind).collect();
    assert_eq!(trail, kinds);
}

/// Two writers race for one meter's trail (the intake's `received` row, stamped a moment
/// before the meter actor's step row that is written first): the trail still reads newest
/// first by time, every row once, and a window scan finds the late one.
pub fn a_row_stamped_before_the_row_written_ahead_of_it_keeps_the_trail_in_time_order(
    s: &dyn Store,
) {
    for (secs, order) in [(10, "SO-1"), (9, "SO-2"), (11, "SO-3")] {
        s.apply(&[WriteBatch {
            audit: vec![row("M-E", secs, order, None)],
            ..Default::default()
        }])
        .unwrap();
    }
    let (page, next) = s.audit_page("M-E", None, 10, None).unwrap();
    assert!(next.is_none());
    let times: Vec<Timestamp> = page.iter().map(|a| a.at).collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    let mut orders: Vec<&str> = page.iter().filter_map(|a| a.order_id.as_deref()).collect();
    orders.sort_unstable();
    assert_eq!(orders, ["SO-1", "SO-2", "SO-3"]);
    let oldest_first: Vec<Timestamp> = s.audit("M-E").unwrap().iter().map(|a| a.at).collect();
    assert!(
        oldest_first.windows(2).all(|w| w[0] <= w[1]),
        "{oldest_first:?}"
    );
    let window = s.audit_between("M-E", at(9), at(11), 10).unwrap();
    assert_eq!(window.len(), 3, "{window:?}");
}

pub fn the_trail_pages_across_days(s: &dyn Store) {
    const DAY: i64 = 86_400;
    // Rows 40 days apart, then several a day: many time buckets, some empty ones between.
    let mut written = Vec::new();
    for d in [0, 40, 41, 42, 90] {
        for h in 0..3 {
            written.push(at(d * DAY + h * 3600));
        }
    }
    for t in &written {
        s.apply(&[WriteBatch {
            audit: vec![AuditEvent::new("M-D", *t, AuditKind::StatusChange).order("SO-D")],
            ..Default::default()
        }])
        .unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor: Option<AuditCursor> = None;
    let mut pages = 0;
    loop {
        let (page, next) = s.audit_page("M-D", cursor.as_ref(), 4, None).unwrap();
        pages += 1;
        seen.extend(page.iter().map(|a| a.at));
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(pages < 100, "paging does not end");
    }
    let mut newest_first = written.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    // A page may start at a point in time (the upper bound of the audit API): every row at or
    // before it, newest first, across buckets.
    let (page, next) = s
        .audit_page(
            "M-D",
            Some(&AuditCursor::below_or_at(at(41 * DAY + 3600))),
            3,
            None,
        )
        .unwrap();
    assert_eq!(
        page.iter().map(|a| a.at).collect::<Vec<_>>(),
        vec![at(41 * DAY + 3600), at(41 * DAY), at(40 * DAY + 7200)]
    );
    let (rest, _) = s.audit_page("M-D", next.as_ref(), 100, None).unwrap();
    assert_eq!(rest.len(), 5, "two more of day 40 and three of day 0");
    // A window spanning two days, oldest first.
    let w = s
        .audit_between("M-D", at(40 * DAY + 3600), at(42 * DAY), 100)
        .unwrap();
    assert_eq!(
        w.iter().map(|a| a.at).collect::<Vec<_>>(),
        vec![
            at(40 * DAY + 3600),
            at(40 * DAY + 7200),
            at(41 * DAY),
            at(41 * DAY + 3600),
            at(41 * DAY + 7200),
            at(42 * DAY)
        ]
    );
    // The oldest row of all is still there.
    assert_eq!(s.audit("M-D").unwrap().first().map(|a| a.at), Some(at(0)));
}

pub fn outbox_entries_are_numbered_in_order_and_deleted_when_acknowledged(s: &dyn Store) {
    let msg = |k: &str, n: u8| OutboxMessage::new("switchyard.order-events.v1", k, vec![n]);
    let first = s
        .apply(&[
            WriteBatch {
                outbox: vec![msg("M-1", 1), msg("M-1", 2)],
                ..Default::default()
            },
            WriteBatch {
                outbox: vec![msg("M-2", 3)],
                ..Default::default()
            },
        ])
        .unwrap();
    let second = s
        .apply(&[WriteBatch {
            outbox: vec![msg("M-1", 4)],
            ..Default::default()
        }])
        .unwrap();
    let all: Vec<_> = first.iter().chain(&second).collect();
    assert_eq!(
        all.iter().map(|e| e.message.payload[0]).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    // Numbers are unique; one key's (a meter's events) grow in write order. (Over several
    // keys a sharded store numbers per file.)
    let m1: Vec<u64> = all
        .iter()
        .filter(|e| &*e.message.key == "M-1")
        .map(|e| e.seq)
        .collect();
    assert!(
        m1.windows(2).all(|w| w[0] < w[1]),
        "one key's numbers grow in write order"
    );
    let mut seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 4, "unique numbers");
    // Each comes back with its number, its message and the row that holds it (`packet`).
    let mut stored: Vec<_> = s
        .outbox(100)
        .unwrap()
        .into_iter()
        .map(|e| (e.seq, e.packet, e.message))
        .collect();
    stored.sort_by_key(|e| e.0);
    let mut expected: Vec<_> = all
        .iter()
        .map(|e| (e.seq, e.packet, e.message.clone()))
        .collect();
    expected.sort_by_key(|e| e.0);
    assert_eq!(stored, expected);
    let m1_stored: Vec<u64> = s
        .outbox(100)
        .unwrap()
        .iter()
        .filter(|e| &*e.message.key == "M-1")
        .map(|e| e.seq)
        .collect();
    assert_eq!(m1_stored, m1, "oldest first");
    // A limit takes whole rows: at least that many entries, and every entry of the rows
    // it returns.
    let some = s.outbox(2).unwrap();
    assert!(some.len() >= 2, "limit");
    for e in &some {
        assert_eq!(
            some.iter().filter(|x| x.packet == e.packet).count(),
            all.iter().filter(|x| x.packet == e.packet).count(),
            "a whole row"
        );
    }
    // Acknowledging the second write's row leaves the first write's entries.
    assert!(
        first.iter().all(|e| e.packet != second[0].packet),
        "two writes, two rows"
    );
    s.apply(&[WriteBatch {
        outbox_acked: vec![second[0].packet],
        ..Default::default()
    }])
    .unwrap();
    let left = |s: &dyn Store| {
        let mut left: Vec<u8> = s
            .outbox(100)
            .unwrap()
            .iter()
            .map(|e| e.message.payload[0])
            .collect();
        left.sort_unstable();
        left
    };
    assert_eq!(left(s), [1, 2, 3]);
    assert_eq!(s.counts().unwrap().outbox, 3);
    // Then the first write's rows.
    let mut rows: Vec<u64> = first.iter().map(|e| e.packet).collect();
    rows.dedup();
    s.apply(&[WriteBatch {
        outbox_acked: rows,
        ..Default::default()
    }])
    .unwrap();
    assert!(left(s).is_empty());
    assert_eq!(s.counts().unwrap().outbox, 0);
}

pub fn campaigns_their_orders_and_releases(s: &dyn Store) {
    let record: CampaignRecord = serde_json::from_value(serde_json::json!({
        "def": {
            "schema_version": 1,
            "campaign_id": "C-1",
            "rate_per_hour": 600,
            "time_zone": "America/New_York",
            "windows": { "monday": ["08:00", "14:00"] },
            "start_at": "2027-01-04T13:00:00Z"
        },
        "status": "active",
        "rate_per_hour": 600,
        "released": 0,
        "updated_at": "2027-01-04T13:00:00Z"
    }))
    .expect("a campaign record");
    let order = |id: &str, seq: u64| CampaignOrder {
        order_id: id.into(),
        meter_id: format!("M-{id}"),
        zone: "zone-a".into(),
        priority: 3,
        amount_cents: 12_345,
        seq,
        released: false,
        released_at: None,
    };
    s.apply(&[WriteBatch {
        campaigns: vec![record.clone()],
        campaign_orders: vec![
            ("C-1".into(), order("SO-1", 0)),
            ("C-1".into(), order("SO-2", 1)),
        ],
        ..Default::default()
    }])
    .unwrap();
    s.apply(&[WriteBatch {
        campaign_releases: vec![("C-1".into(), "SO-2".into(), at(60))],
        ..Default::default()
    }])
    .unwrap();
    let mut paused = record.clone();
    paused.status = crate::domain::CampaignStatus::Paused;
    paused.released = 1;
    s.apply(&[WriteBatch {
        campaigns: vec![paused.clone()],
        ..Default::default()
    }])
    .unwrap();
    assert_eq!(s.campaigns().unwrap(), vec![paused]);
    let mut orders = s.campaign_orders("C-1").unwrap();
    orders.sort_by_key(|o| o.seq);
    let mut released = order("SO-2", 1);
    released.released = true;
    released.released_at = Some(at(60));
    assert_eq!(orders, vec![order("SO-1", 0), released]);
    assert!(s.campaign_orders("C-2").unwrap().is_empty());
}

pub fn kept_table_records_are_replaced_and_removed(s: &dyn Store) {
    let put = |table: &'static str, key: &str, v: &str| KeptRecord {
        table,
        key: key.into(),
        value: Some(v.as_bytes().to_vec()),
    };
    s.apply(&[WriteBatch {
        kept: vec![
            put("registry", "M-2", "two"),
            put("registry", "M-1", "one"),
            put("registry", "M-3", "three"),
            put("weather", "zone-a", "cold"),
        ],
        ..Default::default()
    }])
    .unwrap();
    s.apply(&[WriteBatch {
        kept: vec![
            put("registry", "M-1", "one again"),
            KeptRecord {
                table: "registry",
                key: "M-3".into(),
                value: None,
            },
        ],
        ..Default::default()
    }])
    .unwrap();
    assert_eq!(
        s.kept("registry").unwrap(),
        vec![
            ("M-1".to_string(), b"one again".to_vec()),
            ("M-2".to_string(), b"two".to_vec())
        ]
    );
    assert_eq!(
        s.kept("weather").unwrap(),
        vec![("zone-a".to_string(), b"cold".to_vec())]
    );
    assert!(s.kept("emergencies").unwrap().is_empty());
}

/// For a store that is not one transaction (ScyllaDB): a write retried after it failed half-way
/// lands its rows once: the batch's stamp numbers its audit rows and events the same way again.
pub fn a_retried_write_lands_its_rows_once(s: &dyn Store) {
    let mut step = WriteBatch {
        audit: vec![
            row("M-R", 0, "SO-R", Some(OrderStatus::Received)),
            row("M-R", 0, "SO-R", Some(OrderStatus::Scheduled)),
        ],
        outbox: vec![OutboxMessage::new(
            "switchyard.order-events.v1",
            "M-R",
            b"{}".to_vec(),
        )],
        ..Default::default()
    };
    step.stamp = super::next_stamp(step.audit.len() + step.outbox.len());
    let first = s.apply(std::slice::from_ref(&step)).unwrap();
    let again = s.apply(&[step]).unwrap();
    assert_eq!(first, again, "the same event numbers");
    assert_eq!(s.audit("M-R").unwrap().len(), 2);
    assert_eq!(s.outbox(100).unwrap().len(), 1);
}
