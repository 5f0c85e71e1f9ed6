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

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard::clock::{Clock, ManualClock};
use switchyard::commit::StoreHandle;
use switchyard::domain::{AuditKind, Command, CommandKind, MeterRecord, OrderStatus};
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
    fn dispatch(&self, command: Command) {
        self.0.lock().unwrap().push(command);
    }
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
        let registry = Registry::new();
        registry
            .upsert(
                &serde_json::from_value::<MeterRecord>(serde_json::json!({
                    "meter_id": "MTR-1", "zone": "z1", "head_end_id": "HE-1", "has_switch": true
                }))
                .unwrap(),
            )
            .unwrap();
        let services = MeterServices {
            store: handle,
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
            policy: Arc::new(Policy::baseline()),
            facts: switchyard::facts::FactBook::new(),
            campaign_outcomes: tokio::sync::mpsc::unbounded_channel().0,
        };
        let arbiter = actix::Arbiter::new();
        let head_end = Arc::new(RecordingHeadEnd::default());
        let directory = Directory::new(services, vec![arbiter.handle()], |_| head_end.clone());
        let order = Order::disconnect("SO-1", "MTR-1")
            .notice("2026-11-01T00:00:00Z")
            .amount_due(300.0)
            .validated(clock.now());
        directory.deliver("MTR-1", MeterMsg::Order(order));

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
