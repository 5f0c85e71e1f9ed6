//! The stale-decision guard: a disconnect whose policy decision is older than 10 s when its
//! durable write completes is never sent. What becomes of it is what an operator cares about:
//! - it must not wait out the whole command deadline (found by the slow-head-end load test:
//!   after a kill -9 with 150,000 open orders, 50,000 disconnects each waited a 120 s deadline);
//! - it is not an attempt: the switch did not move, so no status check is needed, and a slow
//!   store must never fail an order (found by the recovery-1m load test: a store queue of over
//!   10 s after a restart with 1M open orders failed 290,000 of them as `network_timeout`,
//!   every held-back command having counted against `max_attempts`).
//!
//! The store here is the real embedded store behind a wrapper that, on a write holding a
//! disconnect command, moves the injected clock 11 s forward: a stalled write in business time.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard::clock::{Clock, ManualClock};
use switchyard::commit::StoreHandle;
use switchyard::domain::{
    AuditKind, Command, CommandKind, CommandOutcome, CommandResult, FailureCode, MeterRecord,
    OrderStatus,
};
use switchyard::head_end::HeadEnd;
use switchyard::meter::{Directory, MeterMsg, MeterServices, RetryPolicy};
use switchyard::policy::Policy;
use switchyard::registry::Registry;
use switchyard::store::{EmbeddedStore, Store};

mod common;
#[path = "support/hooked_store.rs"]
mod hooked_store;
use common::{eventually, Order};
use hooked_store::HookedStore;

#[derive(Default)]
struct RecordingHeadEnd(Mutex<Vec<Command>>);

impl HeadEnd for RecordingHeadEnd {
    fn dispatch(&self, command: std::sync::Arc<Command>) {
        self.0.lock().unwrap().push(Command::clone(&command));
    }
}

/// The meters' shared services over `store`, with `meters` registered (switch, head-end HE-1).
fn services(store: StoreHandle, clock: &Arc<ManualClock>, meters: &[&str]) -> MeterServices {
    let registry = Registry::new();
    for m in meters {
        registry
            .upsert(
                &serde_json::from_value::<MeterRecord>(serde_json::json!({
                    "meter_id": m, "zone": "z1", "head_end_id": "HE-1", "has_switch": true
                }))
                .unwrap(),
            )
            .unwrap();
    }
    MeterServices {
        store,
        registry,
        clock: clock.clone() as Arc<dyn Clock>,
        retry: RetryPolicy {
            max_attempts: 3,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(2),
            command_deadline: Duration::from_secs(120),
        },
        idle: Duration::from_secs(600),
        events_topic: "events".into(),
        exceptions_topic: "exceptions".into(),
        control_topic: "control".into(),
        policy: Arc::new(Policy::baseline()),
        facts: switchyard::facts::FactBook::new(),
        campaign_outcomes: tokio::sync::mpsc::unbounded_channel().0,
        watches: switchyard::meter::ReadWatches::new(),
        read_rules: Default::default(),
        head_ends: Default::default(),
    }
}

fn disconnect(id: &str, meter: &str, clock: &ManualClock) -> MeterMsg {
    MeterMsg::Order(
        Order::disconnect(id, meter)
            .notice("2026-11-01T00:00:00Z")
            .amount_due(300.0)
            .validated(clock.now()),
    )
}

#[test]
fn a_disconnect_held_back_as_stale_is_decided_again_and_never_counted_as_an_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_at("2026-11-24T15:00:00Z".parse().unwrap());
    let sys = actix::System::new();
    sys.block_on(async {
        // The first four writes that carry a disconnect command each move the clock past the
        // stale-decision limit: more stalls than `max_attempts` (3).
        const STALLS: u32 = 4;
        let stalled = AtomicU32::new(0);
        let stall_clock = clock.clone();
        let store = HookedStore::new(EmbeddedStore::open(dir.path()).unwrap(), move |batches| {
            let has_disconnect = batches
                .iter()
                .any(|b| b.commands.iter().any(|c| c.kind == CommandKind::Disconnect));
            if has_disconnect && stalled.fetch_add(1, Ordering::SeqCst) < STALLS {
                stall_clock.advance(Duration::from_secs(11));
            }
            Ok(())
        });
        let store = Arc::new(store);
        let (published, _keep) = tokio::sync::mpsc::unbounded_channel();
        let handle = StoreHandle::start(store.clone(), 64, published);
        let services = services(handle, &clock, &["MTR-1"]);
        let arbiter = actix::Arbiter::new();
        let head_end = Arc::new(RecordingHeadEnd::default());
        let directory = Directory::new(services, vec![arbiter.handle()], |_| head_end.clone());
        directory.deliver("MTR-1", disconnect("SO-1", "MTR-1", &clock));

        // Business time moves on (the backoffs pass); the command deadline (120 s after each
        // decision) is never reached between two stalls.
        let sent = eventually(
            "a command to the head-end",
            Duration::from_secs(5),
            async || {
                clock.advance(Duration::from_millis(250));
                let sent = head_end.0.lock().unwrap().clone();
                (!sent.is_empty()).then_some(sent)
            },
        )
        .await;
        let sent: Vec<(CommandKind, String)> =
            sent.iter().map(|c| (c.kind, c.command_id.clone())).collect();
        assert_eq!(
            sent,
            vec![(CommandKind::Disconnect, "SO-1/5".to_string())],
            "four stale decisions held back (never sent, no status check asked), the fifth sent"
        );
        // (The order reached the meter directly, not through the intake: its state is in the
        // meter's snapshot.)
        let meter = store.meter("MTR-1").unwrap().expect("the meter's state is stored");
        let open = &meter.open[0];
        assert_eq!(
            (open.status, open.attempts - open.not_sent),
            (OrderStatus::Dispatched, 1),
            "held back more often than max_attempts, the order is still worked (sent once), not failed"
        );
        let audit = store.audit("MTR-1").unwrap();
        let not_sent = audit
            .iter()
            .filter(|a| a.kind == AuditKind::CommandNotSent)
            .count();
        assert_eq!(not_sent, STALLS as usize, "each held-back command is audited as not sent");
        assert!(
            !audit.iter().any(|a| a.kind == AuditKind::CommandTimedOut),
            "no held-back command is treated as a head-end timeout"
        );
        arbiter.stop();
    });
}

#[test]
fn a_retry_that_comes_due_while_the_store_is_stalled_is_decided_after_it_not_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_at("2026-11-24T15:00:00Z".parse().unwrap());
    let sys = actix::System::new();
    sys.block_on(async {
        // While `hold` is set, every write waits for a word on `release` (a stalled disk).
        let hold = Arc::new(AtomicBool::new(false));
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Mutex::new(released);
        let h = hold.clone();
        let store = HookedStore::new(EmbeddedStore::open(dir.path()).unwrap(), move |_| {
            if h.load(Ordering::SeqCst) {
                let _ = released.lock().unwrap().recv();
            }
            Ok(())
        });
        let store = Arc::new(store);
        let (published, _keep) = tokio::sync::mpsc::unbounded_channel();
        // One request per commit: more than one queued is "behind".
        let handle = StoreHandle::start(store.clone(), 1, published);
        let meters = ["MTR-1", "MTR-2", "MTR-3", "MTR-4", "MTR-5"];
        let services = services(handle, &clock, &meters);
        let arbiter = actix::Arbiter::new();
        let head_end = Arc::new(RecordingHeadEnd::default());
        let directory = Directory::new(services, vec![arbiter.handle()], |_| head_end.clone());
        let sent = |id: &str| {
            head_end
                .0
                .lock()
                .unwrap()
                .iter()
                .any(|c| c.command_id == id)
        };

        // MTR-1's disconnect goes out and fails with a retryable code: a retry is due 500 ms on.
        directory.deliver("MTR-1", disconnect("SO-1", "MTR-1", &clock));
        eventually("SO-1/1 sent", Duration::from_secs(5), async || {
            sent("SO-1/1")
        })
        .await;
        directory.deliver(
            "MTR-1",
            MeterMsg::Result(CommandResult {
                schema_version: 1,
                command_id: "SO-1/1".into(),
                meter_id: "MTR-1".into(),
                outcome: CommandOutcome::Failed {
                    code: FailureCode::MeterBusy,
                    detail: None,
                },
                at: clock.now(),
            }),
        );
        eventually("the retry stored", Duration::from_secs(5), async || {
            store.meter("MTR-1").unwrap().is_some_and(|m| {
                m.open
                    .first()
                    .is_some_and(|o| o.status == OrderStatus::RetryScheduled)
            })
        })
        .await;

        // The disk stalls with four other meters' steps queued (their decisions, made before
        // it, go stale in it); the retry comes due during the stall, which lasts 12 s of
        // business time.
        hold.store(true, Ordering::SeqCst);
        for (i, m) in meters[1..].iter().enumerate() {
            directory.deliver(m, disconnect(&format!("SO-{}", i + 2), m, &clock));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        clock.advance(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(300)).await;
        clock.advance(Duration::from_secs(11));
        tokio::time::sleep(Duration::from_millis(100)).await;

        // The disk recovers. Had MTR-1 decided its retry in the stall, that decision would
        // be 11 s old once durable, and held back as stale. It waited for room instead: its
        // retry is decided now and sent.
        hold.store(false, Ordering::SeqCst);
        for _ in 0..meters.len() * 4 {
            let _ = release.send(());
        }
        eventually("SO-1/2 sent", Duration::from_secs(5), async || {
            sent("SO-1/2")
        })
        .await;
        let held_back = store
            .audit("MTR-1")
            .unwrap()
            .iter()
            .filter(|a| a.kind == AuditKind::CommandNotSent)
            .count();
        assert_eq!(held_back, 0, "no decision of MTR-1 went stale in the stall");
        arbiter.stop();
    });
}
