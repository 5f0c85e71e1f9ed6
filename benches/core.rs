//! Criterion benches of switchyard's hot parts, each next to a raw baseline measured in the same
//! run: order decode + validation (vs a bare serde_json parse), one meter state-machine step,
//! and the embedded store's batched durable append and point read.
//!
//! `cargo bench --bench core` (full), `cargo test --release --benches` (each once, as a test).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use switchyard::domain::{AuditEvent, AuditKind, CommandOutcome, CommandResult, SwitchState};
use switchyard::meter::machine::{Input, MeterFacts, MeterMachine, RetryPolicy};
use switchyard::store::{EmbeddedStore, Store, WriteBatch};

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

fn machine_step(c: &mut Criterion) {
    let facts = MeterFacts::baseline(true, "HE-1");
    let policy = RetryPolicy {
        max_attempts: 3,
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(60),
        command_deadline: Duration::from_secs(30),
    };
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
                    command_id: cmd.command_id,
                    meter_id: cmd.meter_id,
                    outcome: CommandOutcome::Confirmed {
                        switch_state: SwitchState::Disconnected,
                        register_kwh: None,
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

criterion_group!(
    benches,
    order_validation,
    machine_step,
    store,
    policy,
    campaign
);
criterion_main!(benches);
