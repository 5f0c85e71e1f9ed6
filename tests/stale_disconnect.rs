//! The stale-decision guard: a disconnect whose policy decision is older than 10 s when its
//! durable write completes is never sent. It must not then wait out the whole command deadline:
//! the actor brings the deadline forward, asks the switch status, and decides the retry again.
//! (Found by the slow-head-end load test: after a kill -9 with 150,000 open orders, store writes
//! took over 10 s and 50,000 disconnects each waited a 120 s deadline.)
//!
//! The store here is the real embedded store behind a wrapper that, on the write holding the
//! disconnect command, moves the injected clock 11 s forward: a stalled write in business time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard::clock::{Clock, ManualClock};
use switchyard::commit::StoreHandle;
use switchyard::domain::{Command, CommandKind, MeterRecord};
use switchyard::head_end::HeadEnd;
use switchyard::meter::{Directory, MeterMsg, MeterServices, RetryPolicy};
use switchyard::policy::Policy;
use switchyard::registry::Registry;
use switchyard::store::EmbeddedStore;

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
fn a_disconnect_held_back_as_stale_is_status_checked_at_once_not_after_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_at("2026-11-24T15:00:00Z".parse().unwrap());
    let sys = actix::System::new();
    sys.block_on(async {
        // The first write that carries a disconnect command first moves the clock past the
        // stale-decision limit.
        let stalled = AtomicBool::new(false);
        let stall_clock = clock.clone();
        let store = HookedStore::new(EmbeddedStore::open(dir.path()).unwrap(), move |batches| {
            let has_disconnect = batches
                .iter()
                .any(|b| b.commands.iter().any(|c| c.kind == CommandKind::Disconnect));
            if has_disconnect && !stalled.swap(true, Ordering::SeqCst) {
                stall_clock.advance(Duration::from_secs(11));
            }
            Ok(())
        });
        let (published, _keep) = tokio::sync::mpsc::unbounded_channel();
        let store = StoreHandle::start(Arc::new(store), 64, published);
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
            store,
            registry,
            clock: clock.clone() as Arc<dyn Clock>,
            retry: RetryPolicy {
                max_attempts: 3,
                backoff_initial: Duration::from_millis(10),
                backoff_max: Duration::from_millis(10),
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

        // The clock never reaches the 120 s deadline: only the stalled write moved it (11 s).
        let sent = eventually(
            "a command to the head-end",
            Duration::from_secs(2),
            async || {
                let sent = head_end.0.lock().unwrap().clone();
                (!sent.is_empty()).then_some(sent)
            },
        )
        .await;
        let kinds: Vec<CommandKind> = sent.iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            vec![CommandKind::SwitchStatus],
            "the stale disconnect is not sent, and its status is asked at once"
        );
        assert!(clock.now() < "2026-11-24T15:00:30Z".parse().unwrap());
        arbiter.stop();
    });
}
