//! The campaign actor under tokio's paused time: week-long campaigns in milliseconds of wall
//! time, with the real embedded store (releases persisted before they are sent) and the real
//! policy, and a recording sink standing in for the meters.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard::campaign::actor::{CampaignServices, ReleaseSink};
use switchyard::campaign::plan::max_in_any_hour;
use switchyard::campaign::registry::Campaigns;
use switchyard::campaign::Command;
use switchyard::campaign::{CampaignDef, CampaignOrder, Ordering};
use switchyard::clock::{Clock, TokioClock};
use switchyard::commit::StoreHandle;
use switchyard::domain::Timestamp;
use switchyard::facts::{FactBook, WeatherRecord};
use switchyard::policy::{Day, Policy, RulePack};
use switchyard::store::{EmbeddedStore, StoreError, WriteBatch};

#[path = "support/hooked_store.rs"]
mod hooked_store;
use hooked_store::HookedStore;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Runs `f` in an actix system whose tokio runtime starts paused. (Calling `pause()` inside a
/// running test freezes the clock between two of tokio's millisecond ticks: every timer would
/// then fire up to 1 ms late and release times would drift by a millisecond per release.)
fn run_paused(f: impl std::future::Future<Output = ()>) {
    let sys = actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    });
    sys.block_on(f);
}

#[derive(Default)]
struct Recorder {
    released: Mutex<Vec<(String, String, Timestamp)>>,
    withdrawn: Mutex<Vec<(String, String)>>,
}

impl ReleaseSink for Recorder {
    fn release(&self, _c: &str, order_id: &str, meter_id: &str, at: Timestamp) {
        self.released
            .lock()
            .unwrap()
            .push((order_id.into(), meter_id.into(), at));
    }
    fn withdraw(&self, _c: &str, order_id: &str, _m: &str, reason: &str) {
        self.withdrawn
            .lock()
            .unwrap()
            .push((order_id.into(), reason.into()));
    }
}

fn def(id: &str, rate: u32) -> CampaignDef {
    let w = || ["08:00".to_string(), "14:00".to_string()];
    CampaignDef {
        schema_version: 1,
        campaign_id: id.into(),
        name: None,
        rate_per_hour: rate,
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
        start_at: ts("2026-12-07T13:00:00Z"),
        end_by: None,
        ordering: Ordering::Priority,
        zones: vec![],
        call_center_capacity_per_hour: None,
        adopt: None,
    }
}

fn orders(n: usize, zones: &[&str]) -> Vec<CampaignOrder> {
    (0..n)
        .map(|i| CampaignOrder {
            order_id: format!("SO-{i:06}"),
            meter_id: format!("M-{i:06}"),
            zone: zones[i % zones.len()].to_string(),
            priority: (i % 9 + 1) as u8,
            amount_cents: ((i * 7919) % 100_000) as i64,
            seq: i as u64,
            released: false,
            released_at: None,
        })
        .collect()
}

struct Harness {
    _dir: tempfile::TempDir,
    clock: Arc<TokioClock>,
    rec: Arc<Recorder>,
    campaigns: Arc<Campaigns>,
    facts: Arc<FactBook>,
}

async fn harness(policy: Policy, cid: &str, os: Vec<CampaignOrder>) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    std::mem::forget(_rx); // outbox entries are not published here
    let handle = StoreHandle::start(store, 256, tx);
    // Monday 2026-12-07, 07:00 New York.
    let clock = TokioClock::starting_at(ts("2026-12-07T12:00:00Z"));
    let rec = Arc::new(Recorder::default());
    let facts = FactBook::new();
    let svc = CampaignServices {
        store: handle.clone(),
        clock: clock.clone(),
        policy: Arc::new(policy),
        facts: facts.clone(),
        sink: rec.clone(),
        events_topic: "switchyard.campaign-events.v1".into(),
    };
    handle
        .write(WriteBatch {
            campaign_orders: os.into_iter().map(|o| (cid.to_string(), o)).collect(),
            ..WriteBatch::default()
        })
        .await
        .unwrap();
    let campaigns = Campaigns::new(svc, actix::Arbiter::current());
    Harness {
        _dir: dir,
        clock,
        rec,
        campaigns,
        facts,
    }
}

impl Harness {
    /// Lets paused time run until `n` releases or `until`.
    async fn run_until(&self, n: usize, until: Timestamp) {
        while self.rec.released.lock().unwrap().len() < n && self.clock.now() < until {
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
    }
    fn releases(&self) -> Vec<(String, String, Timestamp)> {
        self.rec.released.lock().unwrap().clone()
    }
}

fn check_exactly_once_and_rate(rel: &[(String, String, Timestamp)], n: usize, rate: usize) {
    let ids: HashSet<&str> = rel.iter().map(|(o, _, _)| o.as_str()).collect();
    assert_eq!(ids.len(), rel.len(), "an order released twice");
    assert_eq!(rel.len(), n);
    let most = max_in_any_hour(rel.iter().map(|(_, _, t)| *t));
    assert!(most <= rate, "{most} releases in one hour, rate {rate}");
}

#[test]
fn ten_thousand_at_500_an_hour_finish_thursday_and_a_pause_shifts_it() {
    run_paused(async {
        let wall = std::time::Instant::now();
        let h = harness(
            Policy::baseline(),
            "C-10K",
            orders(10_000, &["north", "south", "east", "west"]),
        )
        .await;
        h.campaigns
            .define(def("C-10K", 500).validate(|_| true).unwrap())
            .await
            .unwrap();
        h.run_until(10_000, ts("2026-12-20T00:00:00Z")).await;
        let rel = h.releases();
        check_exactly_once_and_rate(&rel, 10_000, 500);
        // 3,000 a day inside 08:00-14:00: Monday, Tuesday, Wednesday, and 1,000 on Thursday.
        let last = rel.last().unwrap().2;
        assert_eq!(last, ts("2026-12-10T14:59:52.800Z"), "finish");
        let tz = jiff::tz::TimeZone::get("America/New_York").unwrap();
        let mut per_day: BTreeMap<jiff::civil::Date, usize> = BTreeMap::new();
        for (_, _, t) in &rel {
            let z = t.to_zoned_datetime(tz.clone());
            assert!(z.hour() >= 8 && z.hour() < 14, "outside the window: {z}");
            *per_day.entry(z.date()).or_default() += 1;
        }
        assert_eq!(
            per_day.values().copied().collect::<Vec<_>>(),
            [3000, 3000, 3000, 1000]
        );
        assert!(
            wall.elapsed() < Duration::from_secs(60),
            "paused time, not wall time"
        );

        // The same campaign paused from 10:00 to 12:00 on Monday: the finish moves two window hours.
        let h = harness(
            Policy::baseline(),
            "C-P",
            orders(10_000, &["north", "south"]),
        )
        .await;
        h.campaigns
            .define(def("C-P", 500).validate(|_| true).unwrap())
            .await
            .unwrap();
        // 09:59:59 (a release falls due at 10:00:00 exactly; stop just before it).
        tokio::time::sleep(Duration::from_secs(3 * 3600 - 1)).await;
        assert!(h
            .campaigns
            .control("C-P", Command::Pause { by: "ops".into() }, None));
        tokio::time::sleep(Duration::from_secs(2 * 3600 + 1)).await; // 12:00:00
        let at_resume = h.releases().len();
        assert!(h
            .campaigns
            .control("C-P", Command::Resume { by: "ops".into() }, None));
        h.run_until(10_000, ts("2026-12-20T00:00:00Z")).await;
        let rel = h.releases();
        check_exactly_once_and_rate(&rel, 10_000, 500);
        assert_eq!(
            at_resume, 1000,
            "two hours at 500/h before the pause, none during it"
        );
        assert_eq!(
            rel.last().unwrap().2,
            ts("2026-12-10T16:59:52.800Z"),
            "two hours later"
        );
    });
}

#[test]
fn a_cold_snap_in_one_zone_holds_only_that_zone() {
    run_paused(async {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/rules/virginia.toml"
        ))
        .unwrap();
        let va = RulePack::from_toml(&text, "virginia.toml").unwrap();
        let zones = ["north", "south", "east"];
        let h = harness(va, "C-VA", orders(6_000, &zones)).await;
        // North: 20 F on Monday.
        h.facts.upsert_forecast(&WeatherRecord {
            schema_version: 1,
            zone: "north".into(),
            date: "2026-12-07".parse().unwrap(),
            low_f: 20.0,
            high_f: 35.0,
            issued_at: None,
        });
        h.campaigns
            .define(def("C-VA", 400).validate(|_| true).unwrap())
            .await
            .unwrap();
        h.run_until(6_000, ts("2026-12-20T00:00:00Z")).await;
        let rel = h.releases();
        check_exactly_once_and_rate(&rel, 6_000, 400);
        let tuesday = ts("2026-12-08T13:00:00Z");
        let monday: Vec<_> = rel.iter().filter(|(_, _, t)| *t < tuesday).collect();
        assert_eq!(
            monday.len(),
            2_400,
            "the other zones keep the full rate on Monday (6 h x 400)"
        );
        let all = orders(6_000, &zones);
        let north: HashSet<&str> = all
            .iter()
            .filter(|o| o.zone == "north")
            .map(|o| o.order_id.as_str())
            .collect();
        assert!(
            monday.iter().all(|(o, _, _)| !north.contains(o.as_str())),
            "north held on Monday"
        );
        let first_north = rel
            .iter()
            .find(|(o, _, _)| north.contains(o.as_str()))
            .unwrap();
        assert_eq!(
            first_north.2, tuesday,
            "north resumes Tuesday 08:00, in its place"
        );
    });
}

#[test]
fn a_cancel_withdraws_what_is_not_released_and_a_restart_resumes_exactly_once() {
    run_paused(async {
        let dir = tempfile::tempdir().unwrap();
        let os = orders(600, &["north", "south"]);
        let make = |dir: &std::path::Path, clock: Arc<TokioClock>, rec: Arc<Recorder>| {
            let store = Arc::new(EmbeddedStore::open(dir).unwrap());
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let handle = StoreHandle::start(store, 256, tx);
            let svc = CampaignServices {
                store: handle.clone(),
                clock,
                policy: Arc::new(Policy::baseline()),
                facts: FactBook::new(),
                sink: rec,
                events_topic: "e".into(),
            };
            (handle, Campaigns::new(svc, actix::Arbiter::current()), rx)
        };
        let clock = TokioClock::starting_at(ts("2026-12-07T12:00:00Z"));
        let rec1 = Arc::new(Recorder::default());
        let (handle, cs, _published) = make(dir.path(), clock.clone(), rec1.clone());
        handle
            .write(WriteBatch {
                campaign_orders: os.iter().map(|o| ("C-R".to_string(), o.clone())).collect(),
                ..WriteBatch::default()
            })
            .await
            .unwrap();
        cs.define(def("C-R", 100).validate(|_| true).unwrap())
            .await
            .unwrap();
        // 08:00-09:30: 150 releases; then the "process" goes away.
        tokio::time::sleep(Duration::from_secs(2 * 3600 + 1800 - 10)).await;
        let first = rec1.released.lock().unwrap().clone();
        assert_eq!(first.len(), 150);
        cs.stop_all();
        // Lets the stopped actors run their last turn and drop their store handles.
        tokio::time::sleep(Duration::from_millis(1)).await;
        drop(cs);
        drop(handle);
        // The old store writer thread lets go of the file once the last handle is dropped, in
        // real time: opening the store again waits for exactly that (`EmbeddedStore::open`).
        let rec2 = Arc::new(Recorder::default());
        let (_handle2, cs2, mut published) = make(dir.path(), clock.clone(), rec2.clone());
        assert_eq!(cs2.resume_owned(), 1);
        tokio::time::sleep(Duration::from_secs(3590)).await;
        let second = rec2.released.lock().unwrap().clone();
        // Released-but-open orders are re-sent once (idempotent at the meter) ...
        let resent: HashSet<&str> = second
            .iter()
            .filter(|(o, _, _)| first.iter().any(|(f, _, _)| f == o))
            .map(|(o, _, _)| o.as_str())
            .collect();
        assert_eq!(resent.len(), 150);
        // ... and new releases continue with none skipped, none twice, the rate kept across the restart.
        let new: Vec<_> = second
            .iter()
            .filter(|(o, _, _)| !resent.contains(o.as_str()))
            .cloned()
            .collect();
        let mut all: Vec<_> = first.clone();
        all.extend(new.iter().cloned());
        let ids: HashSet<&str> = all.iter().map(|(o, _, _)| o.as_str()).collect();
        assert_eq!(ids.len(), all.len());
        assert!(max_in_any_hour(all.iter().map(|(_, _, t)| *t)) <= 100);
        assert_eq!(new.len(), 100, "one more hour at 100/h");
        // Cancel: the rest is withdrawn, nothing more is released.
        assert!(cs2.control("C-R", Command::Cancel { by: "ops".into() }, None));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let withdrawn = rec2.withdrawn.lock().unwrap().clone();
        assert_eq!(withdrawn.len(), 600 - 250);
        assert!(withdrawn.iter().all(|(_, r)| r == "campaign_cancelled"));
        // The `cancelled` event counts what the cancel withdrew (it said 0 before).
        let mut events = Vec::new();
        while let Ok(batch) = published.try_recv() {
            for e in batch {
                events.push(
                    serde_json::from_slice::<switchyard::domain::CampaignEvent>(&e.message.payload)
                        .unwrap(),
                );
            }
        }
        let cancelled = events.iter().find(|e| e.event == "cancelled").unwrap();
        assert_eq!(
            (cancelled.cancelled, cancelled.remaining, cancelled.total),
            (350, 0, 600)
        );
        let after = rec2.released.lock().unwrap().len();
        tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
        assert_eq!(rec2.released.lock().unwrap().len(), after);
    });
}

/// A full disk when the first release is stored: the campaign holds (nothing sent before it is
/// stored) and retries on timers, so its thread stays free: here the test's own task, on the
/// same thread, is what frees the disk. (A blocking sleep in the actor would hold that thread:
/// the store would give in after nine refusals, before the task ran.)
#[test]
fn a_refused_release_write_holds_the_campaign_without_blocking_its_thread() {
    run_paused(async {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let full = Arc::new(AtomicBool::new(true));
        let refused = Arc::new(AtomicUsize::new(0));
        let gave_in = Arc::new(AtomicBool::new(false));
        let (f, r, g) = (full.clone(), refused.clone(), gave_in.clone());
        let store = HookedStore::new(EmbeddedStore::open(dir.path()).unwrap(), move |batches| {
            let releases = batches.iter().any(|b| !b.campaign_releases.is_empty());
            if !releases || !f.load(Ordering::SeqCst) {
                return Ok(());
            }
            if r.fetch_add(1, Ordering::SeqCst) >= 9 {
                g.store(true, Ordering::SeqCst);
                return Ok(());
            }
            Err(StoreError::Backend("no space left on device".into()))
        });
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let handle = StoreHandle::start(Arc::new(store), 256, tx);
        // Monday 07:00 New York; the window opens at 08:00.
        let clock = TokioClock::starting_at(ts("2026-12-07T12:00:00Z"));
        let rec = Arc::new(Recorder::default());
        let svc = CampaignServices {
            store: handle.clone(),
            clock: clock.clone(),
            policy: Arc::new(Policy::baseline()),
            facts: FactBook::new(),
            sink: rec.clone(),
            events_topic: "e".into(),
        };
        handle
            .write(WriteBatch {
                campaign_orders: orders(20, &["north"])
                    .into_iter()
                    .map(|o| ("C-DISK".to_string(), o))
                    .collect(),
                ..WriteBatch::default()
            })
            .await
            .unwrap();
        let cs = Campaigns::new(svc, actix::Arbiter::current());
        cs.define(def("C-DISK", 3600).validate(|_| true).unwrap())
            .await
            .unwrap();
        // The disk is freed 3 s after the first release fell due, by a task on this thread.
        let (f, rec2) = (full.clone(), rec.clone());
        let freed = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3600 + 3)).await;
            let sent_before = rec2.released.lock().unwrap().len();
            f.store(false, Ordering::SeqCst);
            sent_before
        });
        assert_eq!(freed.await.unwrap(), 0, "nothing sent while unstored");
        assert!(refused.load(Ordering::SeqCst) >= 5, "retried meanwhile");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!gave_in.load(Ordering::SeqCst), "the thread was blocked");
        let rel = rec.released.lock().unwrap().clone();
        check_exactly_once_and_rate(&rel, 20, 3600);
        // The first release is the one decided at 08:00 (stored with that time); the next
        // ones follow once it is stored, one a second.
        assert_eq!(rel[0].2, ts("2026-12-07T13:00:00Z"));
        assert!(rel[1].2 >= ts("2026-12-07T13:00:03Z"), "{:?}", rel[1]);
        for w in rel[1..].windows(2) {
            assert_eq!(
                w[1].2.duration_since(w[0].2),
                jiff::SignedDuration::from_secs(1)
            );
        }
    });
}
