//! Wiring: starts every part in order (embedded Kafka or topic check, store, outbox publisher,
//! registry, meter directory and head-end, HTTP, recovery of open work, then the order intake)
//! and stops them in reverse. Runs inside an actix `System`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use rdkafka::producer::FutureProducer;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::commit::StoreHandle;
use crate::config::{Config, HeadEndMode};
use crate::head_end::{HeadEnd, KafkaBridge, ResultSink, Simulator};
use crate::kafka::source::{Gate, Offsets, Source, Subscription};
use crate::kafka::{self, EmbeddedKafka, KafkaSetupError};
use crate::meter::{Directory, MeterMsg, MeterServices, RetryPolicy};
use crate::registry::{Registry, RegistryError};
use crate::store::{EmbeddedStore, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("cannot create data_dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("http.listen {addr}: {source}. Choose a free port (or 127.0.0.1:0 for any)")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub struct App {
    pub bootstrap: String,
    pub http_addr: SocketAddr,
    pub directory: Arc<Directory>,
    pub store: StoreHandle,
    pub registry: Arc<Registry>,
    /// Zone facts (forecasts, emergencies) as known now.
    pub facts: Arc<crate::facts::FactBook>,
    pub simulator: Option<Arc<Simulator>>,
    pub config: Config,
    ready: Arc<AtomicBool>,
    shutdown: watch::Sender<bool>,
    stop_intake: Option<watch::Sender<bool>>,
    intake: Option<JoinHandle<()>>,
    /// Sources started by the intake's start-up (results, facts, campaign control): shutdown
    /// waits for them too, so that nothing holds the store after it returns.
    started_later: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    tasks: Vec<JoinHandle<()>>,
    arbiters: Vec<Arbiter>,
    pub campaigns: Arc<crate::campaign::registry::Campaigns>,
    campaign_arbiter: Option<Arbiter>,
    _embedded: Option<EmbeddedKafka>,
}

impl App {
    /// Starts switchyard. Must be called inside an actix `System`.
    pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<App, AppError> {
        crate::observability::prometheus();
        std::fs::create_dir_all(&config.data_dir).map_err(|source| AppError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let topics = config.topics.names();
        let (embedded, bootstrap) = if config.embedded_kafka() {
            let e = EmbeddedKafka::start(&topics, config.kafka.embedded_partitions)?;
            let b = e.bootstrap_servers().to_string();
            let file = config.data_dir.join("bootstrap.servers");
            if let Err(err) = std::fs::write(&file, format!("{b}\n")) {
                tracing::warn!(error = %err, file = %file.display(), "cannot write the bootstrap address file");
            }
            tracing::info!(bootstrap = %b, file = %file.display(), "embedded Kafka (librdkafka mock cluster) started");
            (Some(e), b)
        } else {
            let b = config.kafka.brokers.clone();
            kafka::ensure_topics(&config, &b).await?;
            (None, b)
        };

        // Store, outbox backlog, writer.
        // Another instance in this process (a test's restart) may still be letting go of the
        // file: wait without blocking this runtime, on which it may need to run to let go.
        let mut waited = Duration::ZERO;
        let store: Arc<dyn Store> = loop {
            if let Some(s) = EmbeddedStore::try_open(&config.data_dir)? {
                break Arc::new(s);
            }
            if waited >= Duration::from_secs(10) {
                return Err(StoreError::Open {
                    path: config
                        .data_dir
                        .join("switchyard.redb")
                        .display()
                        .to_string(),
                    message: "still held by another switchyard store of this process after 10 s"
                        .into(),
                }
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += Duration::from_millis(50);
        };
        let backlog = store.outbox(usize::MAX)?;
        if !backlog.is_empty() {
            tracing::info!(
                events = backlog.len(),
                "re-publishing events left in the outbox"
            );
        }
        let (published_tx, published_rx) = mpsc::unbounded_channel();
        let store = StoreHandle::start(store, config.store.group_commit_max, published_tx);

        let registry = Registry::new();
        if let Some(file) = &config.registry.file {
            let report = registry.load_file(file)?;
            for bad in &report.rejected {
                tracing::warn!(error = %bad, "registry file line skipped");
            }
            tracing::info!(loaded = report.loaded, rejected = report.rejected.len(), file = %file.display(), "registry file loaded");
        }

        let policy = Arc::new(config.load_policy()?);
        if config.policy.rule_pack.is_none() {
            tracing::warn!("no policy.rule_pack configured: only the built-in protections apply (no weather, calendar, window or notice rules)");
        }
        tracing::info!(pack = %policy.label(), "rule pack in force");
        let facts = crate::facts::FactBook::new();
        let n = if config.meters.arbiters == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        } else {
            config.meters.arbiters
        };
        let arbiters: Vec<Arbiter> = (0..n).map(|_| Arbiter::new()).collect();
        let h = &config.head_end;
        let (campaign_outcomes_tx, campaign_outcomes_rx) = tokio::sync::mpsc::unbounded_channel();
        let services = MeterServices {
            store: store.clone(),
            registry: registry.clone(),
            clock: clock.clone(),
            retry: RetryPolicy {
                max_attempts: h.max_attempts,
                backoff_initial: Duration::from_millis(h.backoff_initial_ms),
                backoff_max: Duration::from_millis(h.backoff_max_ms),
                command_deadline: config.command_deadline(),
            },
            idle: Duration::from_secs(config.meters.idle_passivate_secs),
            events_topic: config.topics.order_events.clone(),
            exceptions_topic: config.topics.exceptions.clone(),
            policy,
            facts: facts.clone(),
            campaign_outcomes: campaign_outcomes_tx,
        };
        let policy_for_campaigns = services.policy.clone();
        let directory = Directory::new(services, arbiters.iter().map(|a| a.handle()).collect());
        // Campaign actors get their own arbiter: they write their releases synchronously.
        let campaign_arbiter = Arbiter::new();
        let campaigns = crate::campaign::registry::Campaigns::new(
            crate::campaign::actor::CampaignServices {
                store: store.clone(),
                clock: clock.clone(),
                policy: policy_for_campaigns,
                facts: facts.clone(),
                sink: Arc::new(crate::meter::MeterSink(Arc::downgrade(&directory))),
                events_topic: config.topics.campaign_events.clone(),
            },
            campaign_arbiter.handle(),
        );
        let sink: Arc<dyn ResultSink> = directory.clone();
        let producer: FutureProducer = kafka::producer_config(&config, &bootstrap)
            .create()
            .map_err(|source| KafkaSetupError::Client {
                what: "producer",
                source,
            })?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(
            campaigns
                .clone()
                .take_outcomes(campaign_outcomes_rx, shutdown_rx.clone()),
        ));
        let (results_assigned_tx, results_assigned_rx) = oneshot::channel::<()>();
        let mut results_assigned_tx = Some(results_assigned_tx);
        let mut results_source = None;
        let simulator = match h.mode {
            HeadEndMode::Simulator => {
                let known = store.store().clone();
                let sim = Arc::new(
                    Simulator::new(h.simulator.clone(), Arc::downgrade(&sink), clock.clone())
                        .with_field_seed(Box::new(move |meter| {
                            known.meter(meter).ok().flatten().map(|m| m.switch)
                        })),
                );
                directory.set_head_end(sim.clone() as Arc<dyn HeadEnd>);
                let _ = results_assigned_tx.take().expect("once").send(());
                Some(sim)
            }
            HeadEndMode::Kafka => {
                let bridge =
                    KafkaBridge::new(producer.clone(), config.topics.head_end_commands.clone());
                directory.set_head_end(Arc::new(bridge));
                let src = Source::one_at_a_time(
                    kafka::results_source::consumer(&config, &bootstrap)?,
                    producer.clone(),
                    config.topics.dead_letter.clone(),
                    clock.clone(),
                    Subscription::Group(vec![config.topics.head_end_results.clone()]),
                    Offsets::NotStored,
                    kafka::results_source::Results {
                        directory: directory.clone(),
                    },
                );
                // Started once the registry has caught up (a result must meet known facts).
                results_source = Some((src, results_assigned_tx.take().expect("once")));
                None
            }
        };

        let publisher = kafka::publisher::Publisher {
            producer: producer.clone(),
            store: store.clone(),
            backlog,
            committed: published_rx,
        };
        tasks.push(tokio::spawn(publisher.run(shutdown_rx.clone())));

        let ready = Arc::new(AtomicBool::new(false));
        let listener = crate::http::bind(config.http.listen).map_err(|source| AppError::Http {
            addr: config.http.listen,
            source,
        })?;
        let http_addr = listener.local_addr().map_err(|source| AppError::Http {
            addr: config.http.listen,
            source,
        })?;
        let http_state = crate::http::HttpState::new(
            ready.clone(),
            store.clone(),
            registry.clone(),
            directory.clone(),
        );
        let http_done =
            crate::http::serve(listener, http_state, shutdown_rx.clone()).map_err(|source| {
                AppError::Http {
                    addr: config.http.listen,
                    source,
                }
            })?;
        tasks.push(tokio::spawn(async move {
            let _ = http_done.await;
        }));
        tracing::info!(addr = %http_addr, "operator http listening (/metrics, /healthz, /readyz)");

        // Tables replayed from the beginning: the registry and the zone facts. The intake waits
        // for all of them.
        use kafka::table_source::{EmergencyTable, Table, TableHandler, WeatherTable};
        // Embedded mode: the embedded Kafka forgets its topics on restart, so the records of
        // the table topics are kept in the store and applied again first.
        let mut tables: Vec<(&str, &str, Arc<dyn Table>)> = vec![
            ("registry", &config.topics.registry, registry.clone()),
            (
                "weather",
                &config.topics.weather,
                Arc::new(WeatherTable {
                    book: facts.clone(),
                    directory: directory.clone(),
                }),
            ),
            (
                "emergencies",
                &config.topics.emergencies,
                Arc::new(EmergencyTable {
                    book: facts.clone(),
                    directory: directory.clone(),
                }),
            ),
        ];
        if embedded.is_some() {
            for (name, _, table) in &mut tables {
                let kept = kafka::table_source::KeptTable::new(name, table.clone());
                match kept.restore(&store) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(table = *name, records = n, "restored from the store (the embedded Kafka does not keep topics across restarts)"),
                    Err(e) => tracing::error!(table = *name, error = %e, "cannot load the kept records; they come from the topic (and file) only"),
                }
                tasks.push(tokio::spawn(kept.clone().flush_every(
                    store.clone(),
                    Duration::from_millis(200),
                    shutdown_rx.clone(),
                )));
                *table = kept;
            }
        }
        let mut caught_up_rxs = Vec::new();
        for (suffix, topic, table) in tables {
            let (tx, rx) = oneshot::channel();
            caught_up_rxs.push(rx);
            let src = Source::one_at_a_time(
                kafka::table_source::consumer(&config, &bootstrap, suffix)?,
                producer.clone(),
                config.topics.dead_letter.clone(),
                clock.clone(),
                Subscription::FromStart(topic.to_string()),
                Offsets::NotStored,
                TableHandler { table },
            );
            let gate = Gate::CaughtUp {
                done: tx,
                give_up_after: None,
            };
            tasks.push(tokio::spawn(src.run(gate, shutdown_rx.clone())));
        }
        let caught_up_rx = futures::future::try_join_all(caught_up_rxs);
        let campaign_source = Source::one_at_a_time(
            kafka::campaign_source::consumer(&config, &bootstrap)?,
            producer.clone(),
            config.topics.dead_letter.clone(),
            clock.clone(),
            Subscription::Group(vec![config.topics.campaign_control.clone()]),
            Offsets::AfterWork,
            kafka::campaign_source::CampaignControl {
                campaigns: campaigns.clone(),
                registry: registry.clone(),
            },
        );
        let fact_source = Source::one_at_a_time(
            kafka::fact_source::consumer(&config, &bootstrap)?,
            producer.clone(),
            config.topics.dead_letter.clone(),
            clock.clone(),
            Subscription::Group(vec![
                config.topics.customer_facts.clone(),
                config.topics.control.clone(),
            ]),
            Offsets::AfterWork,
            kafka::fact_source::Facts {
                directory: directory.clone(),
                registry: registry.clone(),
                control_topic: config.topics.control.clone(),
            },
        );

        let mut app = App {
            bootstrap: bootstrap.clone(),
            http_addr,
            directory: directory.clone(),
            store: store.clone(),
            registry: registry.clone(),
            facts: facts.clone(),
            simulator,
            config: config.clone(),
            ready: ready.clone(),
            shutdown,
            stop_intake: None,
            intake: None,
            started_later: Arc::default(),
            tasks,
            arbiters,
            campaigns: campaigns.clone(),
            campaign_arbiter: Some(campaign_arbiter),
            _embedded: embedded,
        };

        // The intake waits for the registry and for recovery; done in the background so that
        // /healthz answers meanwhile.
        let intake = Source {
            consumer: kafka::intake::consumer(&config, &bootstrap)?,
            producer,
            dead_letter_topic: config.topics.dead_letter.clone(),
            clock: clock.clone(),
            subscription: Subscription::Group(vec![config.topics.orders.clone()]),
            offsets: Offsets::AfterWork,
            batch_max: config.kafka.intake_batch_max,
            linger: Duration::from_millis(config.kafka.intake_linger_ms),
            handler: kafka::intake::Intake {
                store: store.clone(),
                registry: registry.clone(),
                directory: directory.clone(),
                campaigns: campaigns.clone(),
                clock,
                events_topic: config.topics.order_events.clone(),
                unknown_meter_grace: Duration::from_millis(config.kafka.unknown_meter_grace_ms),
            },
        };
        let campaigns_for_start = campaigns.clone();
        // The intake (and its start-up) stops first on shutdown: a signal of its own.
        let (stop_intake, stop_intake_rx) = watch::channel(false);
        app.stop_intake = Some(stop_intake);
        let mut shutdown_rx2 = stop_intake_rx.clone();
        let shutdown_rx3 = shutdown_rx.clone();
        let later = app.started_later.clone();
        let keep = move |h: JoinHandle<()>| later.lock().expect("lock").push(h);
        app.intake = Some(tokio::spawn(async move {
            tokio::select! {
                r = caught_up_rx => { if r.is_err() { return; } }
                _ = shutdown_rx2.changed() => return,
            }
            if let Some((src, assigned)) = results_source {
                keep(tokio::spawn(
                    src.run(Gate::Assigned(assigned), shutdown_rx3),
                ));
            }
            // Facts that arrived while switchyard was down are applied before any held order
            // is resumed.
            let (facts_tx, facts_rx) = oneshot::channel();
            let gate = Gate::CaughtUp {
                done: facts_tx,
                give_up_after: Some(Duration::from_secs(60)),
            };
            keep(tokio::spawn(fact_source.run(gate, shutdown_rx.clone())));
            tokio::select! {
                _ = facts_rx => {}
                _ = shutdown_rx2.changed() => return,
            }
            // Kafka head-end: wait until its answers can be heard before sending anything.
            tokio::select! {
                r = tokio::time::timeout(Duration::from_secs(60), results_assigned_rx) => {
                    if r.is_err() {
                        tracing::warn!("head-end results partitions not assigned after 60 s; starting anyway");
                    }
                }
                _ = shutdown_rx2.changed() => return,
            }
            match recover(&store, &directory) {
                Ok(n) if n > 0 => tracing::info!(meters = n, "resumed open work after restart"),
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "cannot read open work from the store; intake not started");
                    return;
                }
            }
            let resumed = campaigns_for_start.resume_all();
            if resumed > 0 {
                tracing::info!(campaigns = resumed, "resumed campaigns");
            }
            ready.store(true, Ordering::SeqCst);
            keep(tokio::spawn(
                campaign_source.run(Gate::None, shutdown_rx.clone()),
            ));
            intake.run(Gate::None, stop_intake_rx).await;
        }));
        Ok(app)
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Waits until the intake runs (registry caught up, open work resumed).
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let until = tokio::time::Instant::now() + timeout;
        while !self.is_ready() {
            if tokio::time::Instant::now() > until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Graceful stop (SIGTERM): stop taking new work (the intake commits its offsets; campaigns
    /// stop releasing), wait up to `head_end.shutdown_drain_secs` for the commands in flight to
    /// be answered (the results source and the head-end keep running meanwhile), then stop the
    /// rest. Every step is already stored; what is still in flight at the end is resolved by a
    /// status check at the next start.
    pub async fn shutdown(mut self) {
        // Not ready from now on: a load balancer or orchestrator stops sending work here.
        self.ready.store(false, Ordering::SeqCst);
        if let Some(s) = self.stop_intake.take() {
            let _ = s.send(true);
        }
        if let Some(i) = self.intake.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), i).await;
        }
        self.campaigns.stop_all();
        self.directory.start_draining();
        let drain = Duration::from_secs(self.config.head_end.shutdown_drain_secs);
        let started = tokio::time::Instant::now();
        let at_start = self.directory.in_flight();
        if at_start > 0 && !drain.is_zero() {
            tracing::info!(
                in_flight = at_start,
                drain_secs = drain.as_secs(),
                "intake stopped; waiting for the commands in flight to be answered"
            );
            while self.directory.in_flight() > 0 && started.elapsed() < drain {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let left = self.directory.in_flight();
        if at_start > 0 {
            tracing::info!(
                answered = at_start - left,
                still_in_flight = left,
                waited_ms = started.elapsed().as_millis() as u64,
                "drain finished; commands still in flight are resolved by a status check at the next start"
            );
        }
        let _ = self.shutdown.send(true);
        let later: Vec<_> = std::mem::take(&mut *self.started_later.lock().expect("lock"));
        for t in later.into_iter().chain(self.tasks.drain(..)) {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        if let Some(a) = self.campaign_arbiter.take() {
            a.stop();
            let _ = a.join();
        }
        for a in self.arbiters.drain(..) {
            a.stop();
            let _ = a.join();
        }
    }
}

/// Re-activates every meter with open work; each reads its own open orders when it handles the
/// message (a list read here could be stale by then).
fn recover(store: &StoreHandle, directory: &Arc<Directory>) -> Result<usize, StoreError> {
    let meters = store.store().meters_with_open_work()?;
    for m in &meters {
        directory.deliver(m, MeterMsg::Recover);
    }
    Ok(meters.len())
}
