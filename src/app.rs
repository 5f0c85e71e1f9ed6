//! Wiring: `App::start` is a list of steps, one function each, in the order they must happen:
//!
//! 1. [`kafka`]: the embedded Kafka, or the external cluster's topics checked; then the
//!    meter-keyed topics' common partition count is read (refused if they differ) and the
//!    meter consumer (meter-keyed topics and campaign control) is created and subscribed
//!    ([`GroupConsumers`]), so that its group join (after a kill -9, a wait for the dead
//!    member to leave) runs while the store opens and the tables replay;
//! 2. [`open_store`]: the store (its files opened in parallel: after an unclean stop redb
//!    verifies each whole file), its outbox backlog and the group-commit writers;
//! 3. [`load_registry`] and the rule pack;
//! 4. [`start_actors`]: the meter arbiters, the meter directory with its head-end, the campaign
//!    actors and the task that hands meters' campaign outcomes to them;
//! 5. [`start_publisher`]: the outbox publisher, and the store alarm (the `store_unavailable`
//!    exception, produced straight to Kafka);
//! 6. [`start_http`]: the operator endpoint (answers `/healthz` from here on);
//! 7. [`start_tables`]: the registry, weather and emergencies tables replayed from the start
//!    (in batches, on two threads);
//! 8. [`Startup::run`], in the background: the meter source starts at once (orders, facts,
//!    control, campaign control, head-end results of the units the group assigns:
//!    `kafka::meter_source`); its facts, campaign records and results wait for the tables;
//!    each assignment's orders stay paused until its facts are applied, its open work is
//!    handed to a paced recovery and its campaigns are resumed; once the first assignment is
//!    there: ready.
//!
//! Every task started by any step is kept in [`Tasks`] under a name; [`App::shutdown`] stops the
//! order intake first (the meter source pauses its orders), drains the commands in flight, then stops and waits for every kept task, naming
//! any that does not stop in time. Runs inside an actix `System`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use futures::future::TryJoinAll;
use rdkafka::producer::FutureProducer;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::campaign::actor::CampaignServices;
use crate::campaign::registry::Campaigns;
use crate::clock::Clock;
use crate::commit::StoreHandle;
use crate::config::StoreBackend;
use crate::config::{Config, HeadEndMode};
use crate::facts::FactBook;
use crate::head_end::{HeadEnd, KafkaBridge, Simulator};
use crate::kafka::source::TablesReady;
use crate::kafka::source::{Gate, Offsets, Source, Subscription};
use crate::kafka::table_source::{EmergencyTable, KeptTable, Table, TableHandler, WeatherTable};
use crate::kafka::{self, EmbeddedKafka, KafkaSetupError};
use crate::meter::{Directory, MeterServices, RetryPolicy};
use crate::policy::Policy;
use crate::registry::{Registry, RegistryError};
use crate::store::embedded::Shard;
use crate::store::{EmbeddedStore, OutboxEntry, ScyllaStore, ShardedStore, Store, StoreError};

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

/// How long shutdown waits for each kept task once told to stop.
const TASK_STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct App {
    pub bootstrap: String,
    pub http_addr: SocketAddr,
    pub(crate) directory: Arc<Directory>,
    pub store: StoreHandle,
    pub registry: Arc<Registry>,
    /// Zone facts (forecasts, emergencies) as known now.
    pub facts: Arc<FactBook>,
    pub simulator: Option<Arc<Simulator>>,
    pub config: Config,
    pub(crate) campaigns: Arc<Campaigns>,
    ready: Arc<AtomicBool>,
    /// Everything but the intake: sent once the commands in flight are drained.
    shutdown: watch::Sender<bool>,
    /// The intake and its start-up sequence: stopped first.
    stop_intake: watch::Sender<bool>,
    intake: Option<JoinHandle<()>>,
    tasks: Tasks,
    arbiters: Vec<Arbiter>,
    campaign_arbiter: Option<Arbiter>,
    _embedded: Option<EmbeddedKafka>,
}

impl App {
    /// Starts switchyard, step by step (see the module doc). Must be called inside an actix
    /// `System`.
    pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<App, AppError> {
        crate::observability::prometheus();
        std::fs::create_dir_all(&config.data_dir).map_err(|source| AppError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (stop_intake, stop_intake_rx) = watch::channel(false);
        let tasks = Tasks::default();
        let uat_clock = mark_uat_clock(&config, &clock);

        let (embedded, bootstrap) = kafka(&config).await?;
        let consumers = GroupConsumers::subscribe(&config, &bootstrap).await?;
        let (store, backlog, published) = start_store(&config).await?;
        let registry = load_registry(&config)?;
        let policy = Arc::new(config.load_policy()?);
        if config.policy.rule_pack.is_none() {
            tracing::warn!("no policy.rule_pack configured: only the built-in protections apply (no weather, calendar, window or notice rules)");
        }
        tracing::info!(pack = %policy.label(), "rule pack in force");
        let facts = FactBook::new();
        let producer: FutureProducer = kafka::producer_config(&config, &bootstrap)
            .create()
            .map_err(|source| KafkaSetupError::Client {
                what: "producer",
                source,
            })?;
        let actors = start_actors(
            &config,
            &clock,
            &store,
            &registry,
            policy,
            &facts,
            &producer,
            &tasks,
            &shutdown_rx,
        );
        start_publisher(&producer, &store, backlog, published, &tasks, &shutdown_rx);
        let alarm = kafka::store_alarm::StoreAlarm {
            producer: producer.clone(),
            topic: config.topics.exceptions.clone(),
            group: config.kafka.group_id.clone(),
            clock: clock.clone(),
        };
        tasks.spawn("store alarm", alarm.run(store.clone(), shutdown_rx.clone()));
        let head_end_alarm = kafka::head_end_alarm::HeadEndAlarm {
            producer: producer.clone(),
            topic: config.topics.exceptions.clone(),
        };
        tasks.spawn(
            "head-end alarm",
            head_end_alarm.run(
                actors.directory.services().head_ends.transitions(),
                shutdown_rx.clone(),
            ),
        );
        tasks.spawn(
            "service-level watch",
            crate::meter::sla_watch::run(
                actors.directory.clone(),
                Arc::new(crate::sla::SlaTargets::from_config(&config.sla)),
                std::time::Duration::from_secs(config.sla.sweep_secs),
                shutdown_rx.clone(),
            ),
        );
        let ready = Arc::new(AtomicBool::new(false));
        let http_addr = start_http(
            &config,
            uat_clock,
            &ready,
            &store,
            &registry,
            &actors.directory,
            &producer,
            &tasks,
            &shutdown_rx,
        )?;
        let sources = SourceParts {
            config: &config,
            bootstrap: &bootstrap,
            producer: &producer,
            clock: &clock,
        };
        let tables_caught_up = start_tables(
            &sources,
            embedded.is_some(),
            &store,
            &registry,
            &facts,
            &actors.directory,
            &tasks,
            &shutdown_rx,
        )?;
        let startup = Startup::new(
            &sources,
            consumers,
            &store,
            &registry,
            &actors,
            tables_caught_up,
            ready.clone(),
            tasks.clone(),
            shutdown_rx,
            stop_intake_rx,
        )?;
        let intake = tokio::spawn(startup.run());

        Ok(App {
            bootstrap,
            http_addr,
            directory: actors.directory,
            store,
            registry,
            facts,
            simulator: actors.simulator,
            config,
            campaigns: actors.campaigns,
            ready,
            shutdown,
            stop_intake,
            intake: Some(intake),
            tasks,
            arbiters: actors.arbiters,
            campaign_arbiter: Some(actors.campaign_arbiter),
            _embedded: embedded,
        })
    }

    pub(crate) fn is_ready(&self) -> bool {
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
    /// rest and wait for every task. Every step is already stored; what is still in flight at
    /// the end is resolved by a status check at the next start.
    pub async fn shutdown(mut self) {
        // Not ready from now on: a load balancer or orchestrator stops sending work here.
        self.ready.store(false, Ordering::SeqCst);
        let _ = self.stop_intake.send(true);
        if let Some(i) = self.intake.take() {
            if tokio::time::timeout(TASK_STOP_TIMEOUT, i).await.is_err() {
                tracing::warn!("the order intake did not stop within 10 s");
            }
        }
        self.campaigns.stop_all();
        self.drain_in_flight().await;
        let _ = self.shutdown.send(true);
        self.tasks.join_all(TASK_STOP_TIMEOUT).await;
        if let Some(a) = self.campaign_arbiter.take() {
            a.stop();
            let _ = a.join();
        }
        for a in self.arbiters.drain(..) {
            a.stop();
            let _ = a.join();
        }
        self.directory.release_leases();
    }

    /// Meters take answers in but start no new command; waits up to the drain time for the
    /// commands in flight to be answered.
    async fn drain_in_flight(&self) {
        self.directory.start_draining();
        let drain = Duration::from_secs(self.config.head_end.shutdown_drain_secs);
        let started = tokio::time::Instant::now();
        let at_start = self.directory.in_flight();
        if at_start == 0 {
            return;
        }
        if !drain.is_zero() {
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
        tracing::info!(
            answered = at_start - left,
            still_in_flight = left,
            waited_ms = started.elapsed().as_millis() as u64,
            "drain finished; commands still in flight are resolved by a status check at the next start"
        );
    }
}

/// Every background task of the service, by name, including those the start-up sequence
/// starts later: shutdown waits for all of them.
#[derive(Clone, Default)]
struct Tasks(Arc<Mutex<Vec<(&'static str, JoinHandle<()>)>>>);

impl Tasks {
    fn spawn(&self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        self.0.lock().expect("tasks lock").push((name, handle));
    }

    /// Waits for every task (each up to `timeout` after the previous one) and names those that
    /// did not stop.
    async fn join_all(&self, timeout: Duration) {
        let tasks = std::mem::take(&mut *self.0.lock().expect("tasks lock"));
        for (name, handle) in tasks {
            match tokio::time::timeout(timeout, handle).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(task = name, error = %e, "task ended abnormally"),
                Err(_) => tracing::warn!(
                    task = name,
                    timeout_secs = timeout.as_secs(),
                    "task did not stop in time"
                ),
            }
        }
    }
}

/// A shifted business clock (`[clock]`, for UAT runs) is said loudly: a warning in the log,
/// `switchyard_business_clock_shifted` = 1, and a `uat_clock` object in every `/readyz` answer.
fn mark_uat_clock(config: &Config, clock: &Arc<dyn Clock>) -> Option<crate::http::UatClock> {
    let c = &config.clock;
    crate::observability::business_clock(c.is_shifted(), c.speed);
    if !c.is_shifted() {
        return None;
    }
    let started_at = c.start_at.unwrap_or_else(|| clock.now());
    tracing::warn!(
        business_time = %started_at,
        speed = c.speed,
        "UAT BUSINESS CLOCK: business time is shifted; every decision is made for that date, not today. Never run this against production"
    );
    Some(crate::http::UatClock {
        started_at,
        speed: c.speed,
    })
}

/// Step 1: the embedded Kafka (its bootstrap address also written to
/// `data_dir/bootstrap.servers`), or the external cluster with its topics checked.
async fn kafka(config: &Config) -> Result<(Option<EmbeddedKafka>, String), AppError> {
    let topics = config.topics.names();
    if !config.embedded_kafka() {
        let b = config.kafka.brokers.clone();
        kafka::ensure_topics(config, &b).await?;
        return Ok((None, b));
    }
    let e = EmbeddedKafka::start(&topics, config.kafka.embedded_partitions)?;
    let b = e.bootstrap_servers().to_string();
    let file = config.data_dir.join("bootstrap.servers");
    if let Err(err) = std::fs::write(&file, format!("{b}\n")) {
        tracing::warn!(error = %err, file = %file.display(), "cannot write the bootstrap address file");
    }
    tracing::info!(bootstrap = %b, file = %file.display(), "embedded Kafka (librdkafka mock cluster) started");
    Ok((Some(e), b))
}

/// The store as an application with `config` opens it (`data_dir`, `store.shards`), created if
/// needed: for tests and tools that prepare or inspect a data directory while no instance
/// holds it.
pub fn open_store(config: &Config) -> Result<Arc<dyn Store>, StoreError> {
    if config.store.backend == StoreBackend::Scylla {
        let o = crate::store_setup::scylla_options(config)?;
        return Ok(Arc::new(ScyllaStore::open(o)?));
    }
    EmbeddedStore::open_sharded(
        &config.data_dir,
        config.store.shards as u64,
        config.store.cache_mib << 20,
        config.store.wal,
    )
}

/// Creates the ScyllaDB keyspace and applies the schema migrations not applied yet
/// (`switchyard migrate`); returns the versions applied now. Nothing to do for the embedded
/// store (its files are created as they are opened).
pub fn migrate_store(config: &Config) -> Result<Vec<i32>, StoreError> {
    if config.store.backend != StoreBackend::Scylla {
        return Ok(Vec::new());
    }
    ScyllaStore::migrate(crate::store_setup::scylla_options(config)?)
}

/// Step 2: the store, the events its outbox still holds, and the group-commit writer (which
/// reports committed events on the returned channel for the publisher).
async fn start_store(
    config: &Config,
) -> Result<
    (
        StoreHandle,
        Vec<OutboxEntry>,
        mpsc::UnboundedReceiver<Vec<OutboxEntry>>,
    ),
    AppError,
> {
    if config.store.backend == StoreBackend::Scylla {
        let o = crate::store_setup::scylla_options(config)?;
        let nodes = o.nodes.join(",");
        let scylla = tokio::task::spawn_blocking(move || ScyllaStore::open(o))
            .await
            .map_err(|e| StoreError::Setup {
                what: format!("CQL nodes {nodes}"),
                message: format!("the connecting thread failed: {e}"),
            })??;
        let store = ShardedStore::new(vec![Arc::new(scylla)]);
        return finish_store(config, store);
    }
    // Another instance in this process (a test's restart) may still be letting go of the
    // files: wait without blocking this runtime, on which it may need to run to let go.
    let of = config.store.shards as u64;
    let cache = EmbeddedStore::cache_per_file(config.store.cache_mib << 20, of);
    let wal = config.store.wal;
    // The files open in parallel: after an unclean stop redb verifies each whole file first
    // (seconds per GB; the recovery load test measured it).
    let opens = (0..of)
        .map(|index| Shard { index, of })
        .chain([Shard::control(of)])
        .map(|shard| {
            let dir = config.data_dir.clone();
            async move {
                let mut waited = Duration::ZERO;
                loop {
                    let d = dir.clone();
                    let opened = tokio::task::spawn_blocking(move || {
                        EmbeddedStore::try_open(&d, shard, cache, wal)
                    })
                    .await
                    .map_err(|e| StoreError::Open {
                        path: dir.join(shard.file_name()).display().to_string(),
                        message: format!("the opening thread failed: {e}"),
                    })??;
                    if let Some(s) = opened {
                        return Ok::<Arc<dyn Store>, AppError>(Arc::new(s));
                    }
                    if waited >= Duration::from_secs(10) {
                        return Err(StoreError::Open {
                            path: dir.join(shard.file_name()).display().to_string(),
                            message:
                                "still held by another switchyard store of this process after 10 s"
                                    .into(),
                        }
                        .into());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    waited += Duration::from_millis(50);
                }
            }
        });
    let mut shards = futures::future::try_join_all(opens).await?;
    let control = shards.pop().expect("the control file");
    finish_store(config, ShardedStore::with_control(shards, control))
}

/// The outbox backlog read and the writers started.
#[allow(clippy::type_complexity)]
fn finish_store(
    config: &Config,
    store: ShardedStore,
) -> Result<
    (
        StoreHandle,
        Vec<OutboxEntry>,
        mpsc::UnboundedReceiver<Vec<OutboxEntry>>,
    ),
    AppError,
> {
    let backlog = store.outbox(usize::MAX)?;
    if !backlog.is_empty() {
        tracing::info!(
            events = backlog.len(),
            "re-publishing events left in the outbox"
        );
    }
    let (published_tx, published_rx) = mpsc::unbounded_channel();
    let store = StoreHandle::start_sharded(
        store,
        config.store.group_commit_max,
        config.store.applier,
        published_tx,
    );
    Ok((store, backlog, published_rx))
}

/// Step 3: the meter registry, with `registry.file` loaded if set (the topic follows).
fn load_registry(config: &Config) -> Result<Arc<Registry>, AppError> {
    let registry = Registry::new();
    if let Some(file) = &config.registry.file {
        let report = registry.load_file(file)?;
        for bad in &report.rejected {
            tracing::warn!(error = %bad, "registry file line skipped");
        }
        tracing::info!(loaded = report.loaded, rejected = report.rejected.len(), file = %file.display(), "registry file loaded");
    }
    Ok(registry)
}

/// What step 4 starts.
struct Actors {
    directory: Arc<Directory>,
    campaigns: Arc<Campaigns>,
    simulator: Option<Arc<Simulator>>,
    arbiters: Vec<Arbiter>,
    campaign_arbiter: Arbiter,
}

/// Step 4: the meter arbiters and directory (with its head-end: the simulator, or the Kafka
/// bridge whose answers the results source brings back), the campaign actors on an arbiter of
/// their own, and the task handing meters' campaign outcomes to them.
#[allow(clippy::too_many_arguments)]
fn start_actors(
    config: &Config,
    clock: &Arc<dyn Clock>,
    store: &StoreHandle,
    registry: &Arc<Registry>,
    policy: Arc<Policy>,
    facts: &Arc<FactBook>,
    producer: &FutureProducer,
    tasks: &Tasks,
    shutdown: &watch::Receiver<bool>,
) -> Actors {
    let n = if config.meters.arbiters == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    } else {
        config.meters.arbiters
    };
    let arbiters: Vec<Arbiter> = (0..n).map(|_| Arbiter::new()).collect();
    let h = &config.head_end;
    let (outcomes_tx, outcomes_rx) = mpsc::unbounded_channel();
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
        events_topic: config.topics.order_events.as_str().into(),
        exceptions_topic: config.topics.exceptions.as_str().into(),
        control_topic: config.topics.control.as_str().into(),
        policy: policy.clone(),
        facts: facts.clone(),
        campaign_outcomes: outcomes_tx,
        watches: crate::meter::ReadWatches::new(),
        read_rules: Arc::new(config.reads.rules()),
        head_ends: Arc::new(crate::head_end::HeadEnds::from_config(&config.head_end)),
    };
    let mut simulator = None;
    let directory = Directory::new(
        services,
        arbiters.iter().map(|a| a.handle()).collect(),
        |sink| -> Arc<dyn HeadEnd> {
            match h.mode {
                HeadEndMode::Simulator => {
                    let known = store.store().clone();
                    let sim = Simulator::new(h.simulator.clone(), sink, clock.clone());
                    // Only a store that held meters at start can know a switch state the new
                    // simulator does not: with none, the seed would read a snapshot per meter
                    // (about a tenth of the meter threads' time at month-end) to learn nothing.
                    let sim = if known.counts().map_or(true, |c| c.meters > 0) {
                        sim.with_field_seed(Box::new(move |meter| {
                            known.meter(meter).ok().flatten().map(|m| m.switch)
                        }))
                    } else {
                        sim
                    };
                    let sim = if h.simulator.outages.iter().any(|o| !o.segment.is_empty()) {
                        let registry = registry.clone();
                        sim.with_segments(Box::new(move |meter| {
                            registry.compact(meter).map_or([None, None], |m| {
                                [
                                    registry.segment_of(&m, crate::config::SegmentBy::Collector),
                                    registry.segment_of(&m, crate::config::SegmentBy::Feeder),
                                ]
                            })
                        }))
                    } else {
                        sim
                    };
                    let sim = Arc::new(sim);
                    simulator = Some(sim.clone());
                    sim
                }
                HeadEndMode::Kafka => Arc::new(KafkaBridge::new(
                    producer.clone(),
                    config.topics.head_end_commands.clone(),
                )),
            }
        },
    );
    // Campaign actors get their own arbiter, apart from the meters.
    let campaign_arbiter = Arbiter::new();
    let campaigns = Campaigns::new(
        CampaignServices {
            store: store.clone(),
            clock: clock.clone(),
            policy,
            facts: facts.clone(),
            sink: Arc::new(crate::meter::MeterSink(Arc::downgrade(&directory))),
            events_topic: config.topics.campaign_events.as_str().into(),
        },
        campaign_arbiter.handle(),
    );
    tasks.spawn(
        "campaign outcomes",
        campaigns
            .clone()
            .take_outcomes(outcomes_rx, shutdown.clone()),
    );
    Actors {
        directory,
        campaigns,
        simulator,
        arbiters,
        campaign_arbiter,
    }
}

/// Step 5: the outbox publisher, starting with the backlog left at the last stop.
fn start_publisher(
    producer: &FutureProducer,
    store: &StoreHandle,
    backlog: Vec<OutboxEntry>,
    committed: mpsc::UnboundedReceiver<Vec<OutboxEntry>>,
    tasks: &Tasks,
    shutdown: &watch::Receiver<bool>,
) {
    let publisher = kafka::publisher::Publisher {
        producer: producer.clone(),
        store: store.clone(),
        backlog,
        committed,
    };
    tasks.spawn("outbox publisher", publisher.run(shutdown.clone()));
}

/// Step 6: the operator HTTP endpoint, bound now so that a busy port fails the start.
#[allow(clippy::too_many_arguments)]
fn start_http(
    config: &Config,
    uat_clock: Option<crate::http::UatClock>,
    ready: &Arc<AtomicBool>,
    store: &StoreHandle,
    registry: &Arc<Registry>,
    directory: &Arc<Directory>,
    producer: &FutureProducer,
    tasks: &Tasks,
    shutdown: &watch::Receiver<bool>,
) -> Result<SocketAddr, AppError> {
    let http_error = |source| AppError::Http {
        addr: config.http.listen,
        source,
    };
    let listener = crate::http::bind(config.http.listen).map_err(http_error)?;
    let addr = listener.local_addr().map_err(http_error)?;
    let state = crate::http::HttpState::new(
        ready.clone(),
        store.clone(),
        registry.clone(),
        directory.clone(),
    )
    .with_uat_clock(uat_clock)
    .with_writes(
        crate::http::auth::Access::load(&config.http.auth, config.http.listen)?,
        crate::http::Writes {
            producer: producer.clone(),
            control_topic: config.topics.control.clone(),
            campaign_control_topic: config.topics.campaign_control.clone(),
            orders_topic: config.topics.orders.clone(),
        },
    )
    .with_sla(crate::sla::SlaTargets::from_config(&config.sla));
    let tls = crate::http::tls_config(&config.http.tls)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let done = crate::http::serve(listener, state, tls, shutdown.clone()).map_err(http_error)?;
    tasks.spawn("operator http", async move {
        let _ = done.await;
    });
    tracing::info!(addr = %addr, scheme, "operator http listening (/metrics, /healthz, /readyz, /console)");
    Ok(addr)
}

/// Step 1b: the consumers of the group-managed sources, created and subscribed before the
/// store is opened, so that their group joins run while the store opens and the tables
/// replay. After a kill -9 a join waits for the dead member to leave the group (its session),
/// unless `kafka.instance_id` is set. A subscribed consumer joins in librdkafka's background
/// thread; its records (and its rebalance callbacks) are served only once its source runs.
struct GroupConsumers {
    /// Orders, customer facts, control and (Kafka head-end) results: one member of
    /// `kafka.group_id`, whose assignment is this instance's meters (`kafka::meter_source`).
    meter: kafka::SourceConsumer,
    /// Told of the meter consumer's rebalances once the wiring has built it.
    rebalancing: Arc<LateListener>,
    topics: kafka::meter_source::MeterTopics,
    /// The meter topics' common partition count (the ownership units).
    units: u32,
}

/// A rebalance listener set after its consumer was created (the consumer joins its group
/// before the store and the actors exist; callbacks run only when the source polls).
#[derive(Default)]
struct LateListener(std::sync::OnceLock<Arc<kafka::meter_source::Rebalancing>>);

impl kafka::RebalanceListener for LateListener {
    fn revoking(
        &self,
        c: &rdkafka::consumer::BaseConsumer<kafka::SourceContext>,
        tpl: &rdkafka::TopicPartitionList,
    ) {
        match self.0.get() {
            Some(r) => r.revoking(c, tpl),
            None => tracing::warn!("a revoke before the meter source was wired"),
        }
    }

    fn assigned(
        &self,
        c: &rdkafka::consumer::BaseConsumer<kafka::SourceContext>,
        tpl: &rdkafka::TopicPartitionList,
    ) {
        match self.0.get() {
            Some(r) => r.assigned(c, tpl),
            None => tracing::warn!("an assignment before the meter source was wired"),
        }
    }
}

impl GroupConsumers {
    async fn subscribe(config: &Config, bootstrap: &str) -> Result<GroupConsumers, AppError> {
        use rdkafka::consumer::Consumer;
        let t = &config.topics;
        let topics = kafka::meter_source::MeterTopics {
            orders: t.orders.clone(),
            customer_facts: t.customer_facts.clone(),
            control: t.control.clone(),
            campaign_control: t.campaign_control.clone(),
            results: match config.head_end.mode {
                HeadEndMode::Simulator => None,
                HeadEndMode::Kafka => Some(t.head_end_results.clone()),
            },
            reads: t.reads.clone(),
        };
        let units = {
            let (c, b, all) = (config.clone(), bootstrap.to_string(), topics.all());
            tokio::task::spawn_blocking(move || {
                kafka::meter_partitions(&c, &b, &all, Duration::from_secs(60))
            })
            .await
            .map_err(|e| KafkaSetupError::NoMetadata(e.to_string()))??
        };
        if let crate::config::StoreBackend::Scylla = config.store.backend {
            let s = &config.store.scylla;
            if s.ownership_units != units {
                tracing::warn!(
                    ownership_units = s.ownership_units,
                    partitions = units,
                    "store.scylla.ownership_units differs from the meter topics' partition count: every assignment reads the whole open-work index instead of its units' partitions; set them equal"
                );
            }
        }
        let joined = |c: kafka::SourceConsumer, t: &[String], what: &str| {
            let t: Vec<&str> = t.iter().map(String::as_str).collect();
            // A refusal (topic metadata not there yet) is retried by the source's own loop.
            if let Err(e) = c.subscribe(&t) {
                tracing::debug!(error = %e, what, "early subscribe refused; the source retries");
            }
            c
        };
        let rebalancing = Arc::new(LateListener::default());
        let meter = kafka::consumer_hearing(
            config,
            bootstrap,
            &kafka::meter_source::CONSUMER,
            Some(rebalancing.clone()),
        )?;
        Ok(GroupConsumers {
            meter: joined(meter, &topics.all(), "meter consumer"),
            rebalancing,
            topics,
            units,
        })
    }
}

/// What every Kafka source is built from.
struct SourceParts<'a> {
    config: &'a Config,
    bootstrap: &'a str,
    producer: &'a FutureProducer,
    clock: &'a Arc<dyn Clock>,
}

impl SourceParts<'_> {
    /// A source handling one record at a time, dead-lettering to the configured topic.
    fn source<H: crate::kafka::source::Handler>(
        &self,
        consumer: kafka::SourceConsumer,
        subscription: Subscription,
        offsets: Offsets,
        handler: H,
    ) -> Source<H> {
        Source::one_at_a_time(
            consumer,
            self.producer.clone(),
            self.config.topics.dead_letter.clone(),
            self.clock.clone(),
            subscription,
            offsets,
            handler,
        )
    }
}

/// Step 7: the tables replayed from the beginning (registry, weather, emergencies). In embedded
/// mode their records are also kept in the store (the embedded Kafka forgets its topics on
/// restart) and applied again first. Returns the signal that all of them have caught up.
#[allow(clippy::too_many_arguments)]
fn start_tables(
    parts: &SourceParts<'_>,
    embedded: bool,
    store: &StoreHandle,
    registry: &Arc<Registry>,
    facts: &Arc<FactBook>,
    directory: &Arc<Directory>,
    tasks: &Tasks,
    shutdown: &watch::Receiver<bool>,
) -> Result<TryJoinAll<oneshot::Receiver<()>>, AppError> {
    let topics = &parts.config.topics;
    let mut tables: Vec<(&'static str, &str, Arc<dyn Table>)> = vec![
        ("registry", &topics.registry, registry.clone()),
        (
            "weather",
            &topics.weather,
            Arc::new(WeatherTable {
                book: facts.clone(),
                directory: directory.clone(),
            }),
        ),
        (
            "emergencies",
            &topics.emergencies,
            Arc::new(EmergencyTable {
                book: facts.clone(),
                directory: directory.clone(),
            }),
        ),
    ];
    if embedded {
        for (name, _, table) in &mut tables {
            let kept = KeptTable::new(name, table.clone());
            match kept.restore(store) {
                Ok(0) => {}
                Ok(n) => tracing::info!(table = *name, records = n, "restored from the store (the embedded Kafka does not keep topics across restarts)"),
                Err(e) => tracing::error!(table = *name, error = %e, "cannot load the kept records; they come from the topic (and file) only"),
            }
            tasks.spawn(
                "kept table flush",
                kept.clone().flush_every(
                    store.clone(),
                    Duration::from_millis(200),
                    shutdown.clone(),
                ),
            );
            *table = kept;
        }
    }
    let mut caught_up = Vec::new();
    for (name, topic, table) in tables {
        let (done, rx) = oneshot::channel();
        caught_up.push(rx);
        let mut src = parts.source(
            kafka::consumer(
                parts.config,
                parts.bootstrap,
                &kafka::table_source::consumer_spec(name),
            )?,
            Subscription::FromStart(topic.to_string()),
            Offsets::NotStored,
            TableHandler { table },
        );
        // A replay takes what is already fetched in batches (one record at a time cost the
        // source loop's overhead per record: 7.5 µs each, a 1M-meter registry 8 s of every
        // restart); live changes still apply at once (no linger).
        src.batch_max = kafka::table_source::REPLAY_BATCH;
        let gate = Gate::CaughtUp {
            done,
            give_up_after: None,
        };
        tasks.spawn("table source", src.run(gate, shutdown.clone()));
    }
    Ok(futures::future::try_join_all(caught_up))
}

/// Step 8: what waits for the tables, in order. Runs in the background so that `/healthz`
/// answers meanwhile; stopped first on shutdown (`stop_intake`).
struct Startup {
    tables_caught_up: TryJoinAll<oneshot::Receiver<()>>,
    /// Tells the meter source (started early, to join its group) that the tables have caught
    /// up: its facts and results wait for them, its orders for the first assignment's
    /// recovery.
    tables_ready: watch::Sender<bool>,
    meter: Source<kafka::meter_source::MeterInputs>,
    /// Fires once the first assignment's open work has been handed to its meters.
    first_assignment: oneshot::Receiver<()>,
    ready: Arc<AtomicBool>,
    tasks: Tasks,
    shutdown: watch::Receiver<bool>,
    stop_intake: watch::Receiver<bool>,
}

impl Startup {
    #[allow(clippy::too_many_arguments)]
    fn new(
        parts: &SourceParts<'_>,
        consumers: GroupConsumers,
        store: &StoreHandle,
        registry: &Arc<Registry>,
        actors: &Actors,
        tables_caught_up: TryJoinAll<oneshot::Receiver<()>>,
        ready: Arc<AtomicBool>,
        tasks: Tasks,
        shutdown: watch::Receiver<bool>,
        stop_intake: watch::Receiver<bool>,
    ) -> Result<Startup, AppError> {
        let config = parts.config;
        let topics = &config.topics;
        let tables_ready = watch::Sender::new(false);
        let GroupConsumers {
            meter,
            rebalancing,
            topics: meter_topics,
            units,
        } = consumers;
        let partitioner = crate::store_setup::orders_partitioner(config)
            .unwrap_or(crate::domain::Partitioner::Crc32);
        // Fencing by unit leases where instances can share the store (crate::lease); the
        // embedded store is one process's.
        let fenced = config.store.backend == StoreBackend::Scylla;
        let ownership = Arc::new(if fenced {
            crate::ownership::Ownership::fenced_by_leases(partitioner, units)
        } else {
            crate::ownership::Ownership::by_partition(partitioner, units)
        });
        actors.directory.set_ownership(ownership.clone());
        actors.directory.set_routes(crate::meter::Routes {
            control: topics.control.clone(),
            campaign_control: topics.campaign_control.clone(),
        });
        let leases = fenced.then(|| {
            let me = config.kafka.instance_id.clone().unwrap_or_else(|| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos());
                format!("pid-{}-{nanos}", std::process::id())
            });
            let l = Arc::new(
                crate::lease::Leases::new(
                    store.store().clone(),
                    ownership.clone(),
                    me,
                    Duration::from_millis(config.store.scylla.lease_ms),
                )
                .reporting_to(store.clone())
                .on_lost({
                    let d = actors.directory.clone();
                    let c = actors.campaigns.clone();
                    move |units| {
                        let n = d.relinquish(units);
                        c.stop_unowned();
                        tracing::warn!(units = ?units, actors = n, "units whose leases were taken: their actors stop");
                    }
                }),
            );
            actors.directory.set_leases(l.clone());
            l
        });
        let (first_tx, first_assignment) = oneshot::channel();
        let r = Arc::new(kafka::meter_source::Rebalancing::new(
            ownership.clone(),
            actors.directory.clone(),
            store.clone(),
            meter_topics.clone(),
            TablesReady(tables_ready.subscribe()),
            stop_intake.clone(),
            first_tx,
            kafka::metadata_probe(config, parts.bootstrap)?,
        ));
        if let Some(l) = leases {
            r.set_leases(l.clone());
            // Not one of `tasks`: it runs until the leases are released, after the meters
            // stopped (App::stop).
            drop(l.spawn());
        }
        r.set_campaigns(actors.campaigns.clone());
        let _ = rebalancing.0.set(r.clone());
        let intake = kafka::intake::Intake {
            store: store.clone(),
            registry: registry.clone(),
            directory: actors.directory.clone(),
            campaigns: actors.campaigns.clone(),
            clock: parts.clock.clone(),
            events_topic: topics.order_events.as_str().into(),
            unknown_meter_grace: Duration::from_millis(config.kafka.unknown_meter_grace_ms),
            window: kafka::intake::Window::new(config.kafka.intake_window),
        };
        let facts = kafka::fact_source::Facts {
            directory: actors.directory.clone(),
            registry: registry.clone(),
            control_topic: topics.control.clone(),
            tables: TablesReady(tables_ready.subscribe()),
        };
        let results = meter_topics
            .results
            .as_ref()
            .map(|_| kafka::results_source::Results {
                directory: actors.directory.clone(),
                tables: TablesReady(tables_ready.subscribe()),
            });
        let meter = Source {
            consumer: meter,
            producer: parts.producer.clone(),
            dead_letter_topic: topics.dead_letter.clone(),
            clock: parts.clock.clone(),
            subscription: Subscription::Group(meter_topics.all()),
            offsets: Offsets::AfterWork,
            batch_max: config.kafka.intake_batch_max,
            linger: Duration::from_millis(config.kafka.intake_linger_ms),
            handler: kafka::meter_source::MeterInputs {
                intake,
                facts,
                campaigns: kafka::campaign_source::CampaignControl {
                    campaigns: actors.campaigns.clone(),
                    registry: registry.clone(),
                    directory: actors.directory.clone(),
                    tables: TablesReady(tables_ready.subscribe()),
                },
                results,
                reads: kafka::read_source::Reads {
                    directory: actors.directory.clone(),
                    registry: registry.clone(),
                    rules: actors.directory.services().read_rules.clone(),
                    clock: parts.clock.clone(),
                    tables: TablesReady(tables_ready.subscribe()),
                },
                topics: meter_topics,
                rebalancing: r,
            },
        };
        Ok(Startup {
            tables_caught_up,
            tables_ready,
            meter,
            first_assignment,
            ready,
            tasks,
            shutdown,
            stop_intake,
        })
    }

    /// Returns early (starting nothing more) when shutdown begins.
    async fn run(self) {
        let Startup {
            tables_caught_up,
            tables_ready,
            meter,
            first_assignment,
            ready,
            tasks,
            shutdown,
            stop_intake,
        } = self;
        let mut stopping = stop_intake.clone();
        // The meter source starts now, joining its group while the tables are replayed (after
        // a kill -9 without `kafka.instance_id` a join waits out the dead member's session).
        // Its facts and results wait for the tables; each assignment's orders stay paused
        // until its facts are applied and its open work is resumed (kafka::meter_source). It
        // runs until shutdown: facts and head-end results are still read while the commands
        // in flight drain (the orders stop at `stop_intake`).
        tasks.spawn("meter source", meter.run(Gate::None, shutdown.clone()));
        tokio::select! {
            r = tables_caught_up => if r.is_err() { return },
            _ = stopping.changed() => return,
        }
        tables_ready.send_replace(true);
        // Ready once the first assignment's open work is resumed. An instance given no
        // partition (more instances than partitions) is ready after a minute anyway: it
        // serves the operator API and takes partitions at the next rebalance.
        tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(60), first_assignment) => if r.is_err() {
                tracing::warn!("no meter partitions assigned within 60 s; ready without any (partitions are taken at the next rebalance)");
            },
            _ = stopping.changed() => return,
        }
        ready.store(true, Ordering::SeqCst);
        // (The line operators and the process tests wait for.)
        tracing::info!(source = "order intake", "order intake started");
    }
}
