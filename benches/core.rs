//! Criterion benches of switchyard's hot parts, each next to a raw baseline measured in the same
//! run (the ratio transfers between machines, the absolute time does not): order decode +
//! validation (vs a bare serde_json parse), one meter state-machine step, the embedded store's
//! batched durable append and point read, policy decisions, campaign planning, governor checks
//! (direct and keyed, vs an atomic add), metric increments through cached handles (vs a
//! `counter!` lookup per call), and an actor message round trip (vs a tokio mpsc + oneshot
//! round trip on the same runtime).
//!
//! `order_path` follows one whole order on one core, step by step (decode and validate; the
//! meter machine's two steps; encoding what they store; the store's durable batch), and all of
//! it at once, each per order in batches of 1,000 orders (one transaction, as group commit
//! makes them), next to its raw floors in the same run: a bare JSON parse of the order and a
//! bare durable append, with increasing keys, of as many bytes as switchyard stores per order.
//!
//! `cargo bench --bench core` (full), `cargo test --release --benches` (each once, as a test).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use switchyard::domain::{
    AuditEvent, AuditKind, CommandOutcome, CommandResult, OrderEvent, OrderRecord, OrderStatus,
    SwitchState,
};
use switchyard::meter::machine::{Action, Input, MeterFacts, MeterMachine, RetryPolicy};
use switchyard::meter::record_actions;
use switchyard::store::{CommandRecord, EmbeddedStore, OutboxMessage, Store, WriteBatch};

const ORDER: &[u8] = br#"{"schema_version":1,"order_id":"SO-0000001","kind":"disconnect","reason":"non_payment","meter_id":"MTR-0000001","service_point_id":"SP-0000001","priority":3,"notice_sent_at":"2026-11-10T09:00:00Z","notes":"notice delivered by mail","amount_due":412.37}"#;

fn now() -> jiff::Timestamp {
    "2026-11-25T12:00:00Z".parse().unwrap()
}

fn order_validation(c: &mut Criterion) {
    let mut g = c.benchmark_group("order_decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("raw_serde_json_value_parse", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(std::hint::black_box(ORDER)).unwrap())
    });
    g.bench_function("validate_order", |b| {
        b.iter(|| {
            switchyard::domain::validate_order(
                Some(b"MTR-0000001"),
                Some(std::hint::black_box(ORDER)),
                |_| true,
                now(),
            )
            .unwrap()
        })
    });
    g.finish();
}

/// The retry policy of the machine benches (1 s back-off up to 60 s, 30 s deadline).
fn retry_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(60),
        command_deadline: Duration::from_secs(30),
    }
}

fn machine_step(c: &mut Criterion) {
    let facts = MeterFacts::baseline(true, "HE-1");
    let policy = retry_policy();
    let order =
        switchyard::domain::validate_order(Some(b"MTR-0000001"), Some(ORDER), |_| true, now())
            .unwrap();
    let mut g = c.benchmark_group("meter_machine");
    g.throughput(Throughput::Elements(2));
    g.bench_function("order_then_confirmation", |b| {
        b.iter_batched(
            || MeterMachine::new("MTR-0000001"),
            |mut m| {
                let a = m.step(Input::Order(order.clone()), now(), &facts, &policy);
                let cmd = a
                    .iter()
                    .find_map(|x| {
                        if let switchyard::meter::machine::Action::Dispatch(c) = x {
                            Some(c.clone())
                        } else {
                            None
                        }
                    })
                    .unwrap();
                let r = CommandResult {
                    schema_version: 1,
                    command_id: cmd.command_id.clone(),
                    meter_id: cmd.meter_id.clone(),
                    outcome: CommandOutcome::Confirmed {
                        switch_state: SwitchState::Disconnected,
                        register_kwh: None,
                        load_side_voltage: None,
                    },
                    at: now(),
                };
                m.step(Input::Result(r), now(), &facts, &policy)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn store(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(dir.path()).unwrap();
    let mut g = c.benchmark_group("embedded_store");
    g.sample_size(20);
    let per = 500;
    g.throughput(Throughput::Elements(per as u64));
    let mut n = 0u64;
    g.bench_function("durable_append_500_audit_rows", |b| {
        b.iter(|| {
            let mut batch = WriteBatch::default();
            for _ in 0..per {
                n += 1;
                batch.audit.push(
                    AuditEvent::new(
                        &format!("MTR-{:07}", n % 100_000),
                        now(),
                        AuditKind::CommandResult,
                    )
                    .order("SO-1")
                    .reason("confirmed"),
                );
            }
            s.apply(&[batch]).unwrap()
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("point_read_missing_order", |b| {
        b.iter(|| s.order(std::hint::black_box("SO-404")).unwrap())
    });
    g.finish();
}

fn policy(c: &mut Criterion) {
    use switchyard::domain::MeterFlags;
    use switchyard::policy::{Facts, Forecast, RulePack};
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/rules/virginia.toml"
    ))
    .unwrap();
    let va = RulePack::from_toml(&text, "virginia.toml").unwrap();
    let v = serde_json::json!({"schema_version":1,"order_id":"SO-1","kind":"disconnect","reason":"non_payment","meter_id":"M-1","notice_sent_at":"2026-11-01T12:00:00Z"});
    let order = switchyard::domain::validate_order(
        Some(b"M-1"),
        Some(&serde_json::to_vec(&v).unwrap()),
        |_| true,
        "2030-01-01T00:00:00Z".parse().unwrap(),
    )
    .unwrap();
    let forecasts: Vec<Forecast> = (1..=7)
        .map(|d| Forecast {
            zone: "z".into(),
            date: format!("2026-12-0{d}").parse().unwrap(),
            low_f: if d < 3 { 28.0 } else { 40.0 },
            high_f: 55.0,
        })
        .collect();
    let facts = Facts {
        zone: "z",
        forecasts: &forecasts,
        emergencies: &[],
        approved: false,
        can_limit_load: false,
    };
    let mut g = c.benchmark_group("policy");
    g.throughput(Throughput::Elements(1));
    g.bench_function("virginia_execute_now", |b| {
        b.iter(|| {
            va.decide(
                &order,
                MeterFlags::empty(),
                "2026-12-03T15:00:00Z".parse().unwrap(),
                &facts,
            )
        })
    });
    g.bench_function("virginia_cold_snap_defer", |b| {
        b.iter(|| {
            va.decide(
                &order,
                MeterFlags::empty(),
                "2026-12-01T15:00:00Z".parse().unwrap(),
                &facts,
            )
        })
    });
    // What a weather change costs per waiting meter: a meter holding a deferred disconnect is
    // woken and re-decides (no event when the decision is unchanged).
    let mut mf = MeterFacts::baseline(true, "HE-1");
    mf.zone = "z".into();
    mf.policy = std::sync::Arc::new(va.clone());
    mf.forecasts = std::sync::Arc::new(forecasts.clone());
    let retry = RetryPolicy {
        max_attempts: 3,
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(60),
        command_deadline: Duration::from_secs(30),
    };
    let t: jiff::Timestamp = "2026-12-01T15:00:00Z".parse().unwrap();
    let mut held = MeterMachine::new("M-1");
    held.step(Input::Order(order.clone()), t, &mf, &retry);
    assert!(held.holds_on_zone_facts());
    g.bench_function("held_disconnect_rewoken_by_a_forecast", |b| {
        b.iter(|| held.step(Input::Wake, t, &mf, &retry))
    });
    g.finish();
}

/// Resident memory of this process, in bytes (Linux).
fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

fn campaign(c: &mut Criterion) {
    use switchyard::campaign::{plan, CampaignDef, CampaignOrder, Ordering, Queue};
    use switchyard::policy::Day;
    let w = || ["08:00".to_string(), "14:00".to_string()];
    let def = CampaignDef {
        schema_version: 1,
        campaign_id: "NP-BENCH".into(),
        name: None,
        rate_per_hour: 10_000,
        zone_rate_per_hour: None,
        time_zone: "America/New_York".into(),
        windows: [
            Day::Monday,
            Day::Tuesday,
            Day::Wednesday,
            Day::Thursday,
            Day::Friday,
        ]
        .into_iter()
        .map(|d| (d, w()))
        .collect(),
        start_at: "2026-12-07T13:00:00Z".parse().unwrap(),
        end_by: None,
        ordering: Ordering::Priority,
        zones: vec![],
        call_center_capacity_per_hour: None,
        adopt: None,
    };
    let camp = def.validate(|_| true).unwrap();
    let orders: Vec<CampaignOrder> = (0..1_000_000)
        .map(|i| CampaignOrder {
            order_id: format!("SO-2026-12-{i:08}"),
            meter_id: format!("MTR-{i:08}"),
            zone: format!("zone-{}", i % 20),
            priority: (i % 9 + 1) as u8,
            amount_cents: ((i * 7919) % 100_000) as i64,
            seq: i as u64,
            released: false,
            released_at: None,
        })
        .collect();
    // Memory per queued order: the queue the campaign actor holds (ids + key), measured as
    // the growth of resident memory while building it.
    let before = rss_bytes();
    let mut q = Queue::new(Ordering::Priority);
    q.extend(&orders);
    // ... plus the actor's index of every order (zone and meter by order id).
    let index: std::collections::HashMap<Box<str>, (Box<str>, Box<str>)> = orders
        .iter()
        .map(|o| {
            (
                o.order_id.as_str().into(),
                (o.zone.as_str().into(), o.meter_id.as_str().into()),
            )
        })
        .collect();
    let after = rss_bytes();
    eprintln!(
        "campaign actor: {} queued orders, resident memory +{} MiB = {} bytes per queued order (queue + index)",
        q.len(),
        (after - before) / (1 << 20),
        (after - before) / q.len()
    );
    drop((q, index));
    let mut g = c.benchmark_group("campaign");
    g.sample_size(10);
    g.throughput(Throughput::Elements(orders.len() as u64));
    g.bench_function("plan_1m_orders_20_zones", |b| {
        b.iter(|| {
            let p = plan::plan(&camp, &orders, camp.def.start_at, 10_000, None, &|_, _| {
                None
            });
            assert_eq!(p.releases.len(), 1_000_000);
            p.finish
        })
    });
    g.finish();
}

/// governor: the campaign's direct limiter check and a keyed (per-zone) check, next to a bare
/// atomic add (the floor for any shared counter).
fn governor_check(c: &mut Criterion) {
    use governor::{Quota, RateLimiter};
    use std::num::NonZeroU32;
    use std::sync::atomic::{AtomicU64, Ordering};
    let mut g = c.benchmark_group("governor");
    g.throughput(Throughput::Elements(1));
    // A quota so large that every check passes: the cost of the check, not of waiting.
    let quota = Quota::per_second(NonZeroU32::new(u32::MAX).unwrap());
    let direct = RateLimiter::direct(quota);
    g.bench_function("direct_check", |b| {
        b.iter(|| std::hint::black_box(direct.check().is_ok()))
    });
    let keyed = RateLimiter::keyed(quota);
    let zones: Vec<String> = (0..20).map(|z| format!("zone-{z}")).collect();
    let mut i = 0usize;
    g.bench_function("keyed_check_20_zones", |b| {
        b.iter(|| {
            i = (i + 1) % zones.len();
            std::hint::black_box(keyed.check_key(&zones[i]).is_ok())
        })
    });
    let atomic = AtomicU64::new(0);
    g.bench_function("raw_atomic_add", |b| {
        b.iter(|| std::hint::black_box(atomic.fetch_add(1, Ordering::Relaxed)))
    });
    g.finish();
}

/// A counter increment through switchyard's cached handle vs a labelled `counter!` lookup per
/// call (what the cached handles avoid).
fn metric_increment(c: &mut Criterion) {
    let m = switchyard::observability::metrics();
    let mut g = c.benchmark_group("metrics");
    g.throughput(Throughput::Elements(1));
    g.bench_function("cached_handle_increment", |b| {
        b.iter(|| m.order_status[1].increment(1))
    });
    g.bench_function("counter_macro_lookup_increment", |b| {
        b.iter(|| {
            metrics::counter!("switchyard_order_status_total", "status" => "dispatched")
                .increment(1)
        })
    });
    g.finish();
}

struct Echo;
impl actix::Actor for Echo {
    type Context = actix::Context<Self>;
}
struct Ping(u64);
impl actix::Message for Ping {
    type Result = u64;
}
impl actix::Handler<Ping> for Echo {
    type Result = u64;
    fn handle(&mut self, p: Ping, _: &mut actix::Context<Self>) -> u64 {
        p.0 + 1
    }
}

/// One request and its answer: an actix actor (`send().await`, what a meter actor's mailbox
/// costs) vs a tokio mpsc request carrying a oneshot reply, both on the same single-threaded
/// actix runtime.
fn actor_round_trip(c: &mut Criterion) {
    use actix::Actor;
    let sys = actix::System::new();
    let addr = sys.block_on(async { Echo.start() });
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, tokio::sync::oneshot::Sender<u64>)>(1024);
    sys.block_on(async move {
        actix::spawn(async move {
            while let Some((v, reply)) = rx.recv().await {
                let _ = reply.send(v + 1);
            }
        });
    });
    let mut g = c.benchmark_group("round_trip");
    g.throughput(Throughput::Elements(1));
    g.bench_function("actix_actor_send", |b| {
        b.iter_custom(|iters| {
            sys.block_on(async {
                let t = std::time::Instant::now();
                for i in 0..iters {
                    std::hint::black_box(addr.send(Ping(i)).await.unwrap());
                }
                t.elapsed()
            })
        })
    });
    g.bench_function("raw_tokio_mpsc_oneshot", |b| {
        b.iter_custom(|iters| {
            sys.block_on(async {
                let t = std::time::Instant::now();
                for i in 0..iters {
                    let (reply, answer) = tokio::sync::oneshot::channel();
                    tx.send((i, reply)).await.unwrap();
                    std::hint::black_box(answer.await.unwrap());
                }
                t.elapsed()
            })
        })
    });
    g.finish();
}

/// One order's rows as the intake and its meter's two steps write them.
struct Prepared {
    intake: WriteBatch,
    dispatched: WriteBatch,
    completed: WriteBatch,
}

const PATH_ORDERS: usize = 1_000;

fn order_bytes(i: u64) -> Vec<u8> {
    String::from_utf8(ORDER.to_vec())
        .unwrap()
        .replace("SO-0000001", &format!("SO-{i:09}"))
        .replace("MTR-0000001", &format!("MTR-{:07}", i % 1_000_000))
        .into_bytes()
}

fn meter_key(i: u64) -> Vec<u8> {
    format!("MTR-{:07}", i % 1_000_000).into_bytes()
}

fn two_steps(
    order: switchyard::domain::Order,
    facts: &MeterFacts,
    policy: &RetryPolicy,
) -> (MeterMachine, Vec<Action>, MeterMachine, Vec<Action>) {
    let mut m = MeterMachine::new(order.meter_id.as_str());
    let a1 = m.step(Input::Order(order), now(), facts, policy);
    let after_order = m.clone();
    let cmd = a1
        .iter()
        .find_map(|x| match x {
            Action::Dispatch(c) => Some(c.clone()),
            _ => None,
        })
        .expect("the order is dispatched");
    let r = CommandResult {
        schema_version: 1,
        command_id: cmd.command_id.clone(),
        meter_id: cmd.meter_id.clone(),
        outcome: CommandOutcome::Confirmed {
            switch_state: SwitchState::Disconnected,
            register_kwh: Some(1234.5),
            load_side_voltage: None,
        },
        at: now(),
    };
    let a2 = m.step(Input::Result(r), now(), facts, policy);
    (after_order, a1, m, a2)
}

fn encode(
    order: &switchyard::domain::Order,
    steps: (MeterMachine, Vec<Action>, MeterMachine, Vec<Action>),
) -> Prepared {
    let (m1, a1, m2, a2) = steps;
    let mut intake = WriteBatch::default();
    let ev = OrderEvent::new(
        &order.order_id,
        &order.meter_id,
        Some(order.kind),
        OrderStatus::Received,
        now(),
    );
    intake.outbox.push(OutboxMessage::new(
        "switchyard.order-events.v1",
        &order.meter_id,
        serde_json::to_vec(&ev).unwrap(),
    ));
    intake.audit.push(
        AuditEvent::new(&order.meter_id, now(), AuditKind::OrderReceived)
            .order(&order.order_id)
            .status(OrderStatus::Received),
    );
    intake.new_orders.push(OrderRecord {
        order: order.clone(),
        status: OrderStatus::Received,
        received_at: now(),
        updated_at: now(),
        reason: None,
        source: None,
    });
    let topics: [std::sync::Arc<str>; 3] = ["events".into(), "exceptions".into(), "control".into()];
    let meter_arc: std::sync::Arc<str> = order.meter_id.as_str().into();
    let mut dispatched = WriteBatch::default();
    record_actions(
        a1,
        &mut dispatched,
        [&topics[0], &topics[1], &topics[2]],
        &meter_arc,
    );
    let mut completed = WriteBatch::default();
    // The result itself, as the actor's answer to its command in flight stores it.
    let f = m1.in_flight.as_ref().expect("a command in flight");
    completed.answered.push(CommandRecord {
        command: f.command.clone(),
        results: vec![CommandResult {
            schema_version: 1,
            command_id: f.command.command_id.clone(),
            meter_id: f.command.meter_id.clone(),
            outcome: CommandOutcome::Confirmed {
                switch_state: SwitchState::Disconnected,
                register_kwh: Some(1234.5),
                load_side_voltage: None,
            },
            at: now(),
        }],
    });
    dispatched.meter = Some(m1);
    record_actions(
        a2,
        &mut completed,
        [&topics[0], &topics[1], &topics[2]],
        &meter_arc,
    );
    completed.meter = Some(m2);
    Prepared {
        intake,
        dispatched,
        completed,
    }
}

fn order_path(c: &mut Criterion) {
    let facts = MeterFacts::baseline(true, "HE-1");
    let policy = retry_policy();
    let decode = |i: u64| {
        switchyard::domain::validate_order(
            Some(&meter_key(i)),
            Some(&order_bytes(i)),
            |_| true,
            now(),
        )
        .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut next = 0u64;
    let mut fresh = || {
        let from = next;
        next += PATH_ORDERS as u64;
        from..next
    };
    // What switchyard stores per order, in bytes of JSON (the floor appends as much).
    let per_order_bytes = {
        let o = decode(0);
        let p = encode(&o, two_steps(o.clone(), &facts, &policy));
        fn sized<T: serde::Serialize>(rows: impl IntoIterator<Item = T>) -> usize {
            rows.into_iter()
                .map(|r| serde_json::to_vec(&r).unwrap().len())
                .sum()
        }
        let json = |b: &WriteBatch| {
            sized(&b.new_orders)
                + sized(&b.audit)
                + b.outbox.iter().map(|m| m.payload.len()).sum::<usize>()
                + sized(&b.commands)
                + sized(&b.meter)
        };
        json(&p.intake) + json(&p.dispatched) + json(&p.completed)
    };
    eprintln!(
        "order_path: {per_order_bytes} bytes of JSON stored per order (the floor appends as many)"
    );
    let mut g = c.benchmark_group("order_path");
    g.sample_size(20);
    g.throughput(Throughput::Elements(PATH_ORDERS as u64));
    g.bench_function("floor_json_parse", |b| {
        b.iter_batched(
            || fresh().map(order_bytes).collect::<Vec<_>>(),
            |raw| {
                for r in &raw {
                    std::hint::black_box(serde_json::from_slice::<serde_json::Value>(r).unwrap());
                }
            },
            BatchSize::SmallInput,
        )
    });
    let floor_dir = tempfile::tempdir().unwrap();
    let floor = redb::Database::create(floor_dir.path().join("floor.redb")).unwrap();
    const FLOOR: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("floor");
    let row = vec![b'x'; per_order_bytes];
    let mut key = 0u64;
    g.bench_function("floor_durable_append", |b| {
        b.iter(|| {
            let w = floor.begin_write().unwrap();
            {
                let mut t = w.open_table(FLOOR).unwrap();
                for _ in 0..PATH_ORDERS {
                    key += 1;
                    t.insert(key, row.as_slice()).unwrap();
                }
            }
            w.commit().unwrap();
        })
    });
    g.bench_function("1_decode_validate", |b| {
        b.iter_batched(
            || fresh(),
            |ids| ids.map(decode).collect::<Vec<_>>(),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("2_machine_steps", |b| {
        b.iter_batched(
            || fresh().map(decode).collect::<Vec<_>>(),
            |orders| {
                orders
                    .into_iter()
                    .map(|o| two_steps(o, &facts, &policy))
                    .collect::<Vec<_>>()
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("3_encode_rows", |b| {
        b.iter_batched(
            || {
                fresh()
                    .map(|i| {
                        let o = decode(i);
                        let s = two_steps(o.clone(), &facts, &policy);
                        (o, s)
                    })
                    .collect::<Vec<_>>()
            },
            |done| {
                done.into_iter()
                    .map(|(o, s)| encode(&o, s))
                    .collect::<Vec<_>>()
            },
            BatchSize::SmallInput,
        )
    });
    // What the intake and an order's two steps write, for the orders `ids`: 3 batches each.
    let path_batches = |ids: std::ops::Range<u64>| {
        let mut batches = Vec::with_capacity(3 * PATH_ORDERS);
        for i in ids {
            let o = decode(i);
            let p = encode(&o, two_steps(o.clone(), &facts, &policy));
            batches.extend([p.intake, p.dispatched, p.completed]);
        }
        batches
    };
    g.bench_function("4_store_batch", |b| {
        b.iter_batched(
            || path_batches(fresh()),
            |batches| store.apply(&batches).unwrap(),
            BatchSize::SmallInput,
        )
    });
    // The same store batch with the write-ahead log (`store.wal`, the default: the log's
    // append is synced, redb's commit is not) and without it (redb syncs every commit).
    for wal in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_sharded(dir.path(), 1, 64 << 20, wal).unwrap();
        let name = if wal {
            "4_store_batch_wal"
        } else {
            "4_store_batch_synced"
        };
        g.bench_function(name, |b| {
            b.iter_batched(
                || path_batches(fresh()),
                |batches| store.apply(&batches).unwrap(),
                BatchSize::SmallInput,
            )
        });
        // Rounds as a busy writer takes them: each transaction holds the intake of one
        // group of orders, the dispatch steps of the group before it and the completions of
        // the group before that, so that each of an order's three writes is a call of its own
        // (as in production; the bench above puts an order's three writes in one call).
        if wal {
            const ROUND: usize = 100;
            g.bench_function("4_store_rounds_wal", |b| {
                b.iter_batched(
                    || {
                        let mut groups: Vec<[Vec<WriteBatch>; 3]> = Vec::new();
                        let ids: Vec<u64> = fresh().collect();
                        for chunk in ids.chunks(ROUND) {
                            let mut g: [Vec<WriteBatch>; 3] = Default::default();
                            for &i in chunk {
                                let o = decode(i);
                                let p = encode(&o, two_steps(o.clone(), &facts, &policy));
                                g[0].push(p.intake);
                                g[1].push(p.dispatched);
                                g[2].push(p.completed);
                            }
                            groups.push(g);
                        }
                        let mut rounds = Vec::new();
                        let n = groups.len();
                        for k in 0..n + 2 {
                            let mut round = Vec::new();
                            for (step, lag) in [(0, 0), (1, 1), (2, 2)] {
                                if k >= lag && k - lag < n {
                                    round.append(&mut groups[k - lag][step]);
                                }
                            }
                            rounds.push(round);
                        }
                        rounds
                    },
                    |rounds| {
                        for r in &rounds {
                            store.apply(r).unwrap();
                        }
                    },
                    BatchSize::SmallInput,
                )
            });
        }
        // One meter step per transaction: what a dispatch waits for when the store is idle.
        let one = if wal {
            "5_one_step_commit_wal"
        } else {
            "5_one_step_commit_synced"
        };
        let mut n = 100_000_000u64 + u64::from(wal) * 100_000_000;
        g.throughput(Throughput::Elements(1));
        g.bench_function(one, |b| {
            b.iter_batched(
                || {
                    n += 1;
                    let o = decode(n);
                    encode(&o, two_steps(o.clone(), &facts, &policy)).dispatched
                },
                |batch| store.apply(&[batch]).unwrap(),
                BatchSize::SmallInput,
            )
        });
        g.throughput(Throughput::Elements(PATH_ORDERS as u64));
    }
    g.bench_function("whole_order", |b| {
        b.iter_batched(
            || fresh(),
            |ids| {
                let mut batches = Vec::with_capacity(3 * PATH_ORDERS);
                for i in ids {
                    let o = decode(i);
                    let p = encode(&o, two_steps(o.clone(), &facts, &policy));
                    batches.extend([p.intake, p.dispatched, p.completed]);
                }
                store.apply(&batches).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(
    benches,
    order_path,
    order_validation,
    machine_step,
    store,
    policy,
    campaign,
    governor_check,
    metric_increment,
    actor_round_trip
);
criterion_main!(benches);
