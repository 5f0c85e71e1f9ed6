//! Memory per live meter actor, in two numbers (issue 12, item 2): the actor's own overhead
//! (a meter activated with no order: its actix context, mailbox and task, its state, its
//! directory entry) and the actor holding one open order (a disconnect dispatched to a
//! head-end that does not answer: the order, its command in flight, the deadline timer, as in
//! the slow-head-end load test).
//!
//! Measured with a counting global allocator: the heap bytes the process holds, exactly, with
//! no allocator or page noise (the resident-set growth is printed beside it). The meters run
//! on the real [`Directory`], store (its page cache bounded at the default 64 MiB, so it is
//! in the numbers only as far as it grew) and policy, on one arbiter. The floor beside them:
//! as many bare actix actors with no state.
//!
//! `cargo bench --bench actor_memory` (100,000 meters; a table on stdout);
//! `cargo test --release --benches` runs it with 2,000 meters as a test. The load-test
//! harness builds this same file as its binary `switchyard-actor-memory` and runs it after a
//! scenario that tests memory per actor (`--meters N --json`: one JSON object on stdout), so
//! that the report shows both numbers beside the run's own resident-set figure.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchyard::clock::SystemClock;
use switchyard::commit::StoreHandle;
use switchyard::domain::{Command, MeterRecord};
use switchyard::facts::FactBook;
use switchyard::head_end::HeadEnd;
use switchyard::meter::{Directory, MeterMsg, MeterServices, RetryPolicy};
use switchyard::policy::Policy;
use switchyard::registry::Registry;
use switchyard::store::EmbeddedStore;

/// The system allocator, counting the bytes currently held.
struct Counting;

static HELD: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn held() -> isize {
    HELD.load(Ordering::Relaxed)
}

/// Resident memory of this process, in bytes (Linux).
fn rss() -> isize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<isize>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// A head-end that takes commands and never answers (the meters keep them in flight).
struct Silent(AtomicUsize);

impl HeadEnd for Silent {
    fn dispatch(&self, _command: std::sync::Arc<Command>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

const ORDER: &str = r#"{"schema_version":1,"order_id":"SO-ID","kind":"disconnect","reason":"non_payment","meter_id":"MTR-ID","service_point_id":"SP-ID","priority":3,"notice_sent_at":"2026-11-10T09:00:00Z","notes":"notice delivered by mail","amount_due":412.37}"#;

fn meter_id(i: usize) -> String {
    format!("MTR-{i:07}")
}

/// Waits until the heap stops changing (every actor has started and handled its message, the
/// store writer has freed its batches), at most `limit`.
async fn settle(limit: Duration) {
    let start = std::time::Instant::now();
    let mut last = held();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = held();
        if (now - last).abs() < 4096 || start.elapsed() > limit {
            return;
        }
        last = now;
    }
}

/// The floor: an actix actor with no state, started the same way, its address kept.
struct Bare;

impl actix::Actor for Bare {
    type Context = actix::Context<Bare>;
}

struct Measured {
    meters: usize,
    floor_heap: f64,
    floor_rss: f64,
    idle_heap: f64,
    idle_rss: f64,
    order_heap: f64,
    order_rss: f64,
    done_heap: f64,
    done_rss: f64,
    dispatched: usize,
}

fn measure(meters: usize) -> Measured {
    let sys = actix::System::new();
    sys.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let (published, mut published_rx) = tokio::sync::mpsc::unbounded_channel();
        actix::spawn(async move { while published_rx.recv().await.is_some() {} });
        let store = StoreHandle::start(Arc::new(store), 1024, published);
        let registry = Registry::new();
        for i in 0..meters {
            let rec: MeterRecord = serde_json::from_value(serde_json::json!({
                "meter_id": meter_id(i), "zone": "zone-a", "head_end_id": "he-1",
                "has_switch": true,
            }))
            .unwrap();
            registry.upsert(&rec).unwrap();
        }
        let (outcomes, _outcomes_rx) = tokio::sync::mpsc::unbounded_channel();
        let services = MeterServices {
            store,
            registry: registry.clone(),
            clock: Arc::new(SystemClock),
            retry: RetryPolicy {
                max_attempts: 3,
                backoff_initial: Duration::from_secs(30),
                backoff_max: Duration::from_secs(300),
                command_deadline: Duration::from_secs(3600),
            },
            idle: Duration::from_secs(3600),
            events_topic: "order-events".into(),
            exceptions_topic: "exceptions".into(),
            control_topic: "control".into(),
            policy: Arc::new(Policy::baseline()),
            facts: FactBook::new(),
            campaign_outcomes: outcomes,
            watches: switchyard::meter::ReadWatches::new(),
            read_rules: Default::default(),
            head_ends: Default::default(),
        };
        let head_end = Arc::new(Silent(AtomicUsize::new(0)));
        let he = head_end.clone();
        let directory = Directory::new(services, vec![actix::Arbiter::current()], move |_sink| {
            he as Arc<dyn HeadEnd>
        });
        settle(Duration::from_secs(5)).await;
        // The floor: as many bare actix actors (context, mailbox, task, address).
        let (hf, rf) = (held(), rss());
        let arbiter = actix::Arbiter::current();
        let bare: Vec<actix::Addr<Bare>> = (0..meters)
            .map(|_| <Bare as actix::Actor>::start_in_arbiter(&arbiter, |_| Bare))
            .collect();
        settle(Duration::from_secs(30)).await;
        let (hf1, rf1) = (held(), rss());
        drop(bare);
        settle(Duration::from_secs(30)).await;
        let (h0, r0) = (held(), rss());
        // The actors' own overhead: activated by a wake, no order.
        for i in 0..meters {
            directory.deliver(&meter_id(i), MeterMsg::Wake);
        }
        settle(Duration::from_secs(60)).await;
        let (h1, r1) = (held(), rss());
        // One open disconnect each, dispatched, never answered.
        for i in 0..meters {
            let id = format!("{i:07}");
            let bytes = ORDER.replace("ID", &id);
            let order = switchyard::domain::validate_order(
                Some(meter_id(i).as_bytes()),
                Some(bytes.as_bytes()),
                |_| true,
                jiff::Timestamp::now(),
            )
            .unwrap();
            directory.deliver(&meter_id(i), MeterMsg::Order(order));
        }
        settle(Duration::from_secs(120)).await;
        let (h2, r2) = (held(), rss());
        // Each command confirmed with a register read: the order completes and the meter
        // stays live and idle with what an order leaves (the switch's time, the read history,
        // the cut and its post-disconnect watch).
        let now = jiff::Timestamp::now();
        for i in 0..meters {
            let result: switchyard::domain::CommandResult =
                serde_json::from_value(serde_json::json!({
                    "command_id": format!("SO-{i:07}/1"),
                    "meter_id": meter_id(i),
                    "outcome": "confirmed",
                    "switch_state": "disconnected",
                    "register_kwh": 1234.5,
                    "at": now,
                }))
                .unwrap();
            directory.deliver(&meter_id(i), MeterMsg::Result(result));
        }
        settle(Duration::from_secs(120)).await;
        let (h3, r3) = (held(), rss());
        let n = meters as f64;
        let m = Measured {
            meters,
            floor_heap: (hf1 - hf) as f64 / n,
            floor_rss: (rf1 - rf) as f64 / n,
            idle_heap: (h1 - h0) as f64 / n,
            idle_rss: (r1 - r0) as f64 / n,
            order_heap: (h2 - h0) as f64 / n,
            order_rss: (r2 - r0) as f64 / n,
            done_heap: (h3 - h0) as f64 / n,
            done_rss: (r3 - r0) as f64 / n,
            dispatched: head_end.0.load(Ordering::Relaxed),
        };
        drop(directory);
        drop(registry);
        m
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` passes no `--bench`; `cargo bench` does; the harness passes
    // `--meters N --json`.
    let full = args.iter().any(|a| a == "--bench");
    let json = args.iter().any(|a| a == "--json");
    let meters = match args.iter().position(|a| a == "--meters") {
        Some(i) => match args.get(i + 1).and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if n > 0 => n,
            _ => {
                eprintln!("--meters takes a number of meters above 0");
                std::process::exit(2);
            }
        },
        None if full => 100_000,
        None => 2_000,
    };
    let m = measure(meters);
    assert_eq!(
        m.dispatched, m.meters,
        "every meter dispatched its disconnect (the order is open with its command in flight)"
    );
    assert!(m.idle_heap > 0.0 && m.order_heap > m.idle_heap);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "meters": m.meters,
                "floor_heap_bytes": m.floor_heap,
                "floor_rss_bytes": m.floor_rss,
                "idle_heap_bytes": m.idle_heap,
                "idle_rss_bytes": m.idle_rss,
                "with_order_heap_bytes": m.order_heap,
                "with_order_rss_bytes": m.order_rss,
                "after_order_heap_bytes": m.done_heap,
                "after_order_rss_bytes": m.done_rss,
            })
        );
        return;
    }
    println!(
        "memory per live meter actor ({} meters, one arbiter)",
        m.meters
    );
    println!("| | heap held (counting allocator) | resident set growth |");
    println!("|---|---|---|");
    println!(
        "| floor: a bare actix actor (context, mailbox, task, address) | {:.0} B | {:.0} B |",
        m.floor_heap, m.floor_rss
    );
    println!(
        "| meter actor overhead (activated, no order) | {:.0} B | {:.0} B |",
        m.idle_heap, m.idle_rss
    );
    println!(
        "| actor with one open order (command in flight) | {:.0} B | {:.0} B |",
        m.order_heap, m.order_rss
    );
    println!(
        "| meter actor after its order completed (idle: switch time, read history, the cut and its watch) | {:.0} B | {:.0} B |",
        m.done_heap, m.done_rss
    );
    println!(
        "| the open order's share | {:.0} B | {:.0} B |",
        m.order_heap - m.idle_heap,
        m.order_rss - m.idle_rss
    );
}
