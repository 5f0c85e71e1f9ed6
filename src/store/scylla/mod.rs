//! The production store: ScyllaDB (or Apache Cassandra, the same CQL) through ScyllaDB's Rust
//! driver. It keeps the [`Store`] contract of the embedded store, with what a distributed
//! database changes:
//!
//! - **No transaction across partitions.** A step's rows are upserts and deletes with
//!   deterministic keys (ids from the order, sequence numbers stamped on the batch before its
//!   first attempt, [`WriteBatch::stamp`]), so a write that failed half-way is retried whole
//!   and lands the same rows again. `apply` returns `Ok` only when every row is written at the
//!   configured consistency: no command is sent and no Kafka offset is stored before.
//! - **Three phases per write** (`Inner::plan`): what a step adds (audit rows, commands,
//!   events, final statuses, open-work rows), then new orders' records, then what it lets go of
//!   (the meter's snapshot, open-work rows deleted, acknowledged events). A new order's record
//!   is the intake's commit point (the duplicate check reads it): a stored record means the
//!   whole step is stored, and an order whose step was cut short is redelivered and taken
//!   again. A meter step cut short is redone from the snapshot before it, so no order is ever
//!   forgotten by its meter without its final status being stored.
//! - **Last write wins, in write order.** Writes carry client-side, monotonic timestamps, so a
//!   late retry of an older step cannot overwrite a newer one.
//! - **No lightweight transaction on the order path**; one at start (the settings, `schema`).
//! - Reads by id are single-partition; recovery reads the open-work index a unit (partition)
//!   at a time; the audit trail pages newest first across its time buckets.
//!
//! The driver is async; the [`Store`] contract is blocking (the group-commit writer threads
//! call it). The store owns a small tokio runtime for the driver; a blocking call spawns its
//! work there and waits for it on the calling thread (also from an actor's thread, as the
//! embedded store's reads block).

pub(crate) mod schema;

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::policies::timestamp_generator::MonotonicTimestampGenerator;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::Consistency;

use super::{
    AuditCursor, CommandRecord, OutboxEntry, OutboxMessage, Store, StoreCounts, StoreError,
    WriteBatch,
};
use crate::domain::{
    AuditEvent, AuditKind, CampaignOrder, CampaignRecord, CommandResult, ExceptionRecord,
    MeterState, OrderRecord, OrderStatus, Partitioner, Timestamp,
};

/// Keyspace replication.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Replication {
    Simple(u32),
    /// Replicas per data centre.
    NetworkTopology(Vec<(String, u32)>),
}

impl Replication {
    fn cql(&self) -> String {
        match self {
            Replication::Simple(rf) => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {rf}}}")
            }
            Replication::NetworkTopology(dcs) => {
                let mut s = "{'class': 'NetworkTopologyStrategy'".to_string();
                for (dc, rf) in dcs {
                    s.push_str(&format!(", '{dc}': {rf}"));
                }
                s.push('}');
                s
            }
        }
    }
}

/// What the store needs from `[store.scylla]` (built by the application from its config: the
/// store does not read the configuration itself).
#[derive(Clone)]
pub(crate) struct ScyllaOptions {
    pub(crate) nodes: Vec<String>,
    pub(crate) keyspace: String,
    pub(crate) replication: Replication,
    pub(crate) local_datacenter: Option<String>,
    pub(crate) consistency: Consistency,
    pub(crate) credentials: Option<(String, String)>,
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) audit_bucket_secs: u64,
    /// 0 = no TTL.
    pub(crate) audit_ttl_secs: u64,
    pub(crate) units: u32,
    pub(crate) partitioner: Partitioner,
    pub(crate) max_in_flight: usize,
    pub(crate) migrate_at_start: bool,
}

impl std::fmt::Debug for ScyllaOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaOptions")
            .field("nodes", &self.nodes)
            .field("keyspace", &self.keyspace)
            .field("replication", &self.replication)
            .field("consistency", &self.consistency)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl ScyllaOptions {
    /// A one-node test cluster on `SWITCHYARD_TEST_CQL` (default 127.0.0.1:9042).
    #[cfg(test)]
    pub(crate) fn for_tests(keyspace: &str) -> ScyllaOptions {
        ScyllaOptions {
            nodes: vec![std::env::var("SWITCHYARD_TEST_CQL")
                .unwrap_or_else(|_| "127.0.0.1:9042".to_string())],
            keyspace: keyspace.to_string(),
            replication: Replication::Simple(1),
            local_datacenter: None,
            consistency: Consistency::LocalQuorum,
            credentials: None,
            tls: None,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            audit_bucket_secs: 86_400,
            audit_ttl_secs: 0,
            units: 8,
            partitioner: Partitioner::Crc32,
            max_in_flight: 256,
            migrate_at_start: true,
        }
    }
}

/// Every statement, prepared once.
struct Statements {
    order_record: PreparedStatement,
    order_final: PreparedStatement,
    order_get: PreparedStatement,
    order_exists: PreparedStatement,
    open_insert: PreparedStatement,
    open_delete: PreparedStatement,
    open_scan: PreparedStatement,
    open_of_meter: PreparedStatement,
    watch_put: PreparedStatement,
    watch_delete: PreparedStatement,
    watch_scan: PreparedStatement,
    meter_put: PreparedStatement,
    meter_get: PreparedStatement,
    command_put: PreparedStatement,
    command_get: PreparedStatement,
    result_put: PreparedStatement,
    results_get: PreparedStatement,
    exception_put: PreparedStatement,
    exception_get: PreparedStatement,
    audit_put: PreparedStatement,
    audit_bucket_put: PreparedStatement,
    audit_buckets: PreparedStatement,
    audit_rows: PreparedStatement,
    audit_rows_before: PreparedStatement,
    outbox_put: PreparedStatement,
    outbox_delete: PreparedStatement,
    outbox_partitions: PreparedStatement,
    outbox_rows: PreparedStatement,
    campaign_put: PreparedStatement,
    campaign_all: PreparedStatement,
    campaign_order_put: PreparedStatement,
    campaign_release: PreparedStatement,
    campaign_orders: PreparedStatement,
    kept_put: PreparedStatement,
    kept_delete: PreparedStatement,
    kept_rows: PreparedStatement,
    lease_get: PreparedStatement,
    lease_insert: PreparedStatement,
    lease_update: PreparedStatement,
    order_by_hour_put: PreparedStatement,
    orders_of_hour: PreparedStatement,
    exceptions_first: PreparedStatement,
    exceptions_after: PreparedStatement,
    task_get: PreparedStatement,
    task_insert: PreparedStatement,
    task_update: PreparedStatement,
}

struct Inner {
    session: Session,
    st: Statements,
    o: ScyllaOptions,
}

pub struct ScyllaStore {
    inner: Arc<Inner>,
    /// The driver's runtime (`None` once dropped).
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for ScyllaStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio refuses inside another runtime (a store
        // dropped on an actor's thread): let its threads end in the background.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn be(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("{what}: {e}"))
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("domain types serialize")
}

/// Nanoseconds since the epoch, saturating (an open bound such as `Timestamp::MAX` lies past
/// what a bigint holds).
fn nanos(t: Timestamp) -> i64 {
    t.as_nanosecond()
        .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

fn from_nanos(key: &str, n: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_nanosecond(i128::from(n)).map_err(|e| StoreError::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    })
}

/// The `orders_by_hour` partition of an instant (nanoseconds since the epoch).
fn hour_of(ns: i64) -> i64 {
    ns.div_euclid(3_600 * 1_000_000_000)
}

fn status_name(s: OrderStatus) -> &'static str {
    s.into()
}

fn parse_status(key: &str, s: &str) -> Result<OrderStatus, StoreError> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|e| {
        StoreError::Corrupt {
            key: key.to_string(),
            message: format!("status `{s}`: {e}"),
        }
    })
}

/// Outbox partitions are a lane and a minute of the entry's sequence number (nanoseconds).
const OUTBOX_BUCKET_NS: u64 = 60_000_000_000;
const OUTBOX_LANE: i32 = 0;
const KEPT_BUCKETS: u64 = 16;

impl ScyllaStore {
    /// Connects, applies the migrations (when `migrate_at_start`) or checks they are applied,
    /// checks the recorded settings, and prepares every statement.
    pub(crate) fn open(o: ScyllaOptions) -> Result<ScyllaStore, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("scylla-driver")
            .enable_all()
            .build()
            .map_err(|e| be("starting the driver's runtime", e))?;
        let opts = o.clone();
        let inner = futures::executor::block_on(rt.spawn(async move {
            let session = connect(&opts).await?;
            if opts.migrate_at_start {
                schema::migrate(&session, &opts).await?;
            } else {
                schema::check_current(&session, &opts).await?;
            }
            schema::check_settings(&session, &opts).await?;
            let st = prepare(&session, &opts).await?;
            Ok::<Inner, StoreError>(Inner {
                session,
                st,
                o: opts,
            })
        }))
        .map_err(|e| be("the driver's runtime", e))??;
        Ok(ScyllaStore {
            inner: Arc::new(inner),
            rt: Some(rt),
        })
    }

    /// Connects and applies the migrations, nothing else (`switchyard migrate`). Returns the
    /// versions applied now.
    pub(crate) fn migrate(o: ScyllaOptions) -> Result<Vec<i32>, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| be("starting the driver's runtime", e))?;
        rt.block_on(async move {
            let session = connect(&o).await?;
            let done = schema::migrate(&session, &o).await?;
            schema::check_settings(&session, &o).await?;
            Ok(done)
        })
    }

    /// The cluster's raw limit, for the load-test report beside switchyard's own audit rate: a
    /// bare loop of the audit trail's prepared INSERT on a session set up like the store's,
    /// `max_in_flight` statements at a time (the store's own concurrency), for `duration`.
    /// Rows go to meters `RAW-<n>` in the keyspace's audit table (its migrations applied), with
    /// the configured TTL. Rows per second.
    pub(crate) fn raw_audit_inserts(
        o: ScyllaOptions,
        duration: Duration,
    ) -> Result<f64, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| be("starting the driver's runtime", e))?;
        rt.block_on(async move {
            let session = connect(&o).await?;
            schema::check_current(&session, &o).await?;
            let st = prepare(&session, &o).await?;
            let inner = Inner { session, st, o };
            let now = Timestamp::now();
            let at = nanos(now);
            let bucket = inner.bucket_of_ns(at);
            let row = encode(
                &AuditEvent::new("RAW-0000000", now, AuditKind::CommandResult)
                    .order("SO-1")
                    .reason("confirmed"),
            );
            let started = std::time::Instant::now();
            let inner = &inner;
            let rows = futures::stream::iter(0i64..)
                .take_while(|_| std::future::ready(started.elapsed() < duration))
                .map(|i| {
                    let m = format!("RAW-{:07}", i % 1_000_000);
                    let values = (m, bucket, at, i, Some("SO-1"), row.clone(), inner.ttl());
                    async move {
                        inner
                            .session
                            .execute_unpaged(&inner.st.audit_put, values)
                            .await
                            .map_err(|e| be("a raw audit insert", e))
                    }
                })
                .buffer_unordered(inner.o.max_in_flight)
                .try_fold(0u64, |n, _| std::future::ready(Ok(n + 1)))
                .await?;
            Ok(rows as f64 / started.elapsed().as_secs_f64())
        })
    }

    /// Runs `f` on the driver's runtime and waits for it on this thread.
    fn run<T, F>(&self, f: impl FnOnce(Arc<Inner>) -> F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        let rt = self.rt.as_ref().ok_or(StoreError::Closed)?;
        let task = rt.spawn(f(self.inner.clone()));
        futures::executor::block_on(task).map_err(|e| be("a store task", e))?
    }

    /// The ownership unit of a meter (its partition of the orders topic).
    pub(crate) fn unit_of(&self, meter_id: &str) -> i32 {
        self.inner.unit_of(meter_id)
    }

    /// The read watches of meters in `units` (one partition read of `read_watch` each).
    fn watches_of_units(
        &self,
        units: std::collections::BTreeSet<u32>,
    ) -> Result<Vec<crate::domain::ReadWatch>, StoreError> {
        self.run(move |i| async move {
            let units: Vec<i32> = units.into_iter().map(|u| u as i32).collect();
            let per: Vec<Vec<(String, Vec<u8>)>> = futures::stream::iter(units)
                .map(|u| {
                    let i = &i;
                    async move { i.rows::<(String, Vec<u8>)>(&i.st.watch_scan, (u,)).await }
                })
                .buffer_unordered(8)
                .try_collect()
                .await?;
            let mut out = Vec::new();
            for rows in per {
                for (m, w) in rows {
                    out.push(decode(&m, &w)?);
                }
            }
            Ok(out)
        })
    }

    /// The meters with open work in `units` (one partition read of `open_work` each).
    fn open_work_of_units(
        &self,
        units: std::collections::BTreeSet<u32>,
    ) -> Result<Vec<String>, StoreError> {
        self.run(move |i| async move {
            let units: Vec<i32> = units.into_iter().map(|u| u as i32).collect();
            let per: Vec<Vec<(String, String)>> = futures::stream::iter(units)
                .map(|u| {
                    let i = &i;
                    async move { i.rows::<(String, String)>(&i.st.open_scan, (u,)).await }
                })
                .buffer_unordered(8)
                .try_collect()
                .await?;
            let mut set = std::collections::BTreeSet::new();
            for rows in per {
                for (m, _) in rows {
                    set.insert(m);
                }
            }
            Ok(set.into_iter().collect())
        })
    }
}

async fn connect(o: &ScyllaOptions) -> Result<Session, StoreError> {
    let mut policy = DefaultPolicy::builder().token_aware(true);
    if let Some(dc) = &o.local_datacenter {
        policy = policy
            .prefer_datacenter(dc.clone())
            .permit_dc_failover(false);
    }
    let profile = ExecutionProfile::builder()
        .consistency(o.consistency)
        .request_timeout(Some(o.request_timeout))
        .load_balancing_policy(policy.build())
        .build()
        .into_handle();
    let mut b = SessionBuilder::new()
        .known_nodes(&o.nodes)
        .connection_timeout(o.connect_timeout)
        .default_execution_profile_handle(profile)
        .timestamp_generator(Arc::new(MonotonicTimestampGenerator::new()));
    if let Some((user, password)) = &o.credentials {
        b = b.user(user.clone(), password.clone());
    }
    if let Some(tls) = &o.tls {
        b = b.tls_context(Some(tls.clone()));
    }
    b.build().await.map_err(|e| StoreError::Setup {
        what: format!("CQL nodes {}", o.nodes.join(",")),
        message: format!("{e}. Check store.scylla.nodes, that the cluster is up, and its credentials / TLS settings"),
    })
}

async fn prepare(session: &Session, o: &ScyllaOptions) -> Result<Statements, StoreError> {
    let ks = &o.keyspace;
    let p = |cql: String, idempotent: bool| async move {
        let mut s = session
            .prepare(cql.clone())
            .await
            .map_err(|e| be(&format!("preparing `{cql}`"), e))?;
        s.set_is_idempotent(idempotent);
        Ok::<PreparedStatement, StoreError>(s)
    };
    Ok(Statements {
        order_record: p(format!("INSERT INTO {ks}.orders (order_id, meter_id, record) VALUES (?, ?, ?)"), true).await?,
        order_final: p(format!("UPDATE {ks}.orders SET meter_id = ?, final_status = ?, final_reason = ?, ended_at = ? WHERE order_id = ?"), true).await?,
        order_get: p(format!("SELECT record, final_status, final_reason, ended_at FROM {ks}.orders WHERE order_id = ?"), true).await?,
        order_exists: p(format!("SELECT record FROM {ks}.orders WHERE order_id = ?"), true).await?,
        open_insert: p(format!("INSERT INTO {ks}.open_work (unit, meter_id, order_id) VALUES (?, ?, ?)"), true).await?,
        open_delete: p(format!("DELETE FROM {ks}.open_work WHERE unit = ? AND meter_id = ? AND order_id = ?"), true).await?,
        open_scan: p(format!("SELECT meter_id, order_id FROM {ks}.open_work WHERE unit = ?"), true).await?,
        open_of_meter: p(format!("SELECT order_id FROM {ks}.open_work WHERE unit = ? AND meter_id = ?"), true).await?,
        watch_put: p(format!("INSERT INTO {ks}.read_watch (unit, meter_id, watch) VALUES (?, ?, ?)"), true).await?,
        watch_delete: p(format!("DELETE FROM {ks}.read_watch WHERE unit = ? AND meter_id = ?"), true).await?,
        watch_scan: p(format!("SELECT meter_id, watch FROM {ks}.read_watch WHERE unit = ?"), true).await?,
        meter_put: p(format!("INSERT INTO {ks}.meters (meter_id, state) VALUES (?, ?)"), true).await?,
        meter_get: p(format!("SELECT state FROM {ks}.meters WHERE meter_id = ?"), true).await?,
        command_put: p(format!("INSERT INTO {ks}.commands (command_id, meter_id, command) VALUES (?, ?, ?)"), true).await?,
        command_get: p(format!("SELECT command FROM {ks}.commands WHERE command_id = ?"), true).await?,
        result_put: p(format!("INSERT INTO {ks}.command_results (command_id, at, outcome, result) VALUES (?, ?, ?, ?)"), true).await?,
        results_get: p(format!("SELECT result FROM {ks}.command_results WHERE command_id = ?"), true).await?,
        exception_put: p(format!("INSERT INTO {ks}.exceptions (exception_id, meter_id, record) VALUES (?, ?, ?)"), true).await?,
        exception_get: p(format!("SELECT record FROM {ks}.exceptions WHERE exception_id = ?"), true).await?,
        audit_put: p(format!("INSERT INTO {ks}.audit (meter_id, bucket, at, seq, order_id, row) VALUES (?, ?, ?, ?, ?, ?) USING TTL ?"), true).await?,
        audit_bucket_put: p(format!("INSERT INTO {ks}.audit_buckets (meter_id, bucket) VALUES (?, ?) USING TTL ?"), true).await?,
        audit_buckets: p(format!("SELECT bucket FROM {ks}.audit_buckets WHERE meter_id = ?"), true).await?,
        audit_rows: p(format!("SELECT at, seq, row FROM {ks}.audit WHERE meter_id = ? AND bucket = ?"), true).await?,
        audit_rows_before: p(format!("SELECT at, seq, row FROM {ks}.audit WHERE meter_id = ? AND bucket = ? AND (at, seq) < (?, ?)"), true).await?,
        outbox_put: p(format!("INSERT INTO {ks}.outbox (lane, bucket, seq, topic, key, payload) VALUES (?, ?, ?, ?, ?, ?)"), true).await?,
        outbox_delete: p(format!("DELETE FROM {ks}.outbox WHERE lane = ? AND bucket = ? AND seq = ?"), true).await?,
        outbox_partitions: p(format!("SELECT DISTINCT lane, bucket FROM {ks}.outbox"), true).await?,
        outbox_rows: p(format!("SELECT seq, topic, key, payload FROM {ks}.outbox WHERE lane = ? AND bucket = ?"), true).await?,
        campaign_put: p(format!("INSERT INTO {ks}.campaigns (campaign_id, record) VALUES (?, ?)"), true).await?,
        campaign_all: p(format!("SELECT campaign_id, record FROM {ks}.campaigns"), true).await?,
        campaign_order_put: p(format!("UPDATE {ks}.campaign_orders SET entry = ? WHERE campaign_id = ? AND order_id = ?"), true).await?,
        campaign_release: p(format!("UPDATE {ks}.campaign_orders SET released_at = ? WHERE campaign_id = ? AND order_id = ?"), true).await?,
        campaign_orders: p(format!("SELECT order_id, entry, released_at FROM {ks}.campaign_orders WHERE campaign_id = ?"), true).await?,
        kept_put: p(format!("INSERT INTO {ks}.kept (table_name, bucket, key, value) VALUES (?, ?, ?, ?)"), true).await?,
        kept_delete: p(format!("DELETE FROM {ks}.kept WHERE table_name = ? AND bucket = ? AND key = ?"), true).await?,
        kept_rows: p(format!("SELECT key, value FROM {ks}.kept WHERE table_name = ? AND bucket = ?"), true).await?,
        lease_get: p(format!("SELECT epoch, owner, beat FROM {ks}.unit_leases WHERE unit = ?"), true).await?,
        // Lightweight transactions: never retried blindly (a timed-out one may have applied;
        // the caller reads the lease again), serial consistency for the Paxos round.
        lease_insert: lwt(p(format!("INSERT INTO {ks}.unit_leases (unit, epoch, owner, beat) VALUES (?, ?, ?, ?) IF NOT EXISTS"), false).await?),
        lease_update: lwt(p(format!("UPDATE {ks}.unit_leases SET epoch = ?, owner = ?, beat = ? WHERE unit = ? IF epoch = ? AND owner = ? AND beat = ?"), false).await?),
        order_by_hour_put: p(format!("INSERT INTO {ks}.orders_by_hour (hour, received_at, order_id) VALUES (?, ?, ?)"), true).await?,
        // Both bounds as tuples: ScyllaDB refuses a single-column and a multi-column
        // restriction on the clustering columns together (Cassandra takes either).
        orders_of_hour: p(format!("SELECT received_at, order_id FROM {ks}.orders_by_hour WHERE hour = ? AND (received_at, order_id) >= (?, ?) AND (received_at, order_id) < (?, ?) LIMIT ?"), true).await?,
        exceptions_first: p(format!("SELECT exception_id, record FROM {ks}.exceptions LIMIT ?"), true).await?,
        exceptions_after: p(format!("SELECT exception_id, record FROM {ks}.exceptions WHERE token(exception_id) > token(?) LIMIT ?"), true).await?,
        task_get: p(format!("SELECT task FROM {ks}.exception_tasks WHERE exception_id = ?"), true).await?,
        task_insert: lwt(p(format!("INSERT INTO {ks}.exception_tasks (exception_id, version, task) VALUES (?, ?, ?) IF NOT EXISTS"), false).await?),
        task_update: lwt(p(format!("UPDATE {ks}.exception_tasks SET version = ?, task = ? WHERE exception_id = ? IF version = ?"), false).await?),
    })
}

/// A lightweight transaction's statement: its Paxos round at `SERIAL` (every data centre: a
/// unit's lease must be one across them). The plain lease read is not serial; the
/// compare-and-set decides.
fn lwt(mut s: PreparedStatement) -> PreparedStatement {
    s.set_serial_consistency(Some(scylla::statement::SerialConsistency::Serial));
    s
}

/// One statement of a write, with its values.
enum Write {
    OrderRecord(String, String, Vec<u8>),
    OrderFinal(String, String, Option<String>, i64, String),
    OpenInsert(i32, String, String),
    OpenDelete(i32, String, String),
    Meter(String, Vec<u8>),
    Command(String, String, Vec<u8>),
    Result(String, i64, String, Vec<u8>),
    Exception(String, String, Vec<u8>),
    Audit(String, i64, i64, i64, Option<String>, Vec<u8>, i32),
    AuditBucket(String, i64, i32),
    Outbox(i32, i64, i64, String, String, Vec<u8>),
    OutboxDelete(i32, i64, i64),
    Campaign(String, Vec<u8>),
    CampaignOrder(Vec<u8>, String, String),
    CampaignRelease(i64, String, String),
    KeptPut(String, i32, String, Vec<u8>),
    KeptDelete(String, i32, String),
    OrderByHour(i64, i64, String),
    /// An order carried to another meter by an exchange: its record, keeping when (and from
    /// where) it was first received, if it was.
    /// (Its unit, for the open-work row written first; nothing when the order has ended.)
    OrderCarried(i32, Box<OrderRecord>),
    WatchPut(i32, String, Vec<u8>),
    WatchDelete(i32, String),
}

impl Inner {
    fn unit_of(&self, meter_id: &str) -> i32 {
        self.o
            .partitioner
            .partition(meter_id.as_bytes(), self.o.units) as i32
    }

    fn bucket_of_ns(&self, ns: i64) -> i64 {
        ns.div_euclid(self.o.audit_bucket_secs as i64 * 1_000_000_000)
    }

    fn ttl(&self) -> i32 {
        self.o.audit_ttl_secs.min(i32::MAX as u64) as i32
    }

    async fn exec(&self, w: Write) -> Result<(), StoreError> {
        let s = &self.st;
        let r = match w {
            Write::OrderRecord(id, m, rec) => {
                self.session
                    .execute_unpaged(&s.order_record, (id, m, rec))
                    .await
            }
            Write::OrderCarried(unit, mut rec) => {
                let id = rec.order.order_id.clone();
                if let Some(old) = self.order_as_stored(&id).await? {
                    if old.status.is_terminal() {
                        return Ok(());
                    }
                    rec.received_at = old.received_at;
                    rec.source = old.source;
                    rec.status = old.status;
                    rec.reason = old.reason;
                }
                let m = rec.order.meter_id.clone();
                self.session
                    .execute_unpaged(&s.open_insert, (unit, m.clone(), id.clone()))
                    .await
                    .map_err(|e| be("writing", e))?;
                self.session
                    .execute_unpaged(&s.order_record, (id, m, encode(&rec)))
                    .await
            }
            Write::OrderFinal(id, m, reason, at, status) => {
                self.session
                    .execute_unpaged(&s.order_final, (m, status, reason, at, id))
                    .await
            }
            Write::OpenInsert(u, m, o) => {
                self.session
                    .execute_unpaged(&s.open_insert, (u, m, o))
                    .await
            }
            Write::OpenDelete(u, m, o) => {
                self.session
                    .execute_unpaged(&s.open_delete, (u, m, o))
                    .await
            }
            Write::Meter(m, st) => self.session.execute_unpaged(&s.meter_put, (m, st)).await,
            Write::Command(id, m, c) => {
                self.session
                    .execute_unpaged(&s.command_put, (id, m, c))
                    .await
            }
            Write::Result(id, at, outcome, r) => {
                self.session
                    .execute_unpaged(&s.result_put, (id, at, outcome, r))
                    .await
            }
            Write::WatchPut(u, m, w) => self.session.execute_unpaged(&s.watch_put, (u, m, w)).await,
            Write::WatchDelete(u, m) => self.session.execute_unpaged(&s.watch_delete, (u, m)).await,
            Write::Exception(id, m, x) => {
                self.session
                    .execute_unpaged(&s.exception_put, (id, m, x))
                    .await
            }
            Write::Audit(m, bucket, at, seq, order, row, ttl) => {
                self.session
                    .execute_unpaged(&s.audit_put, (m, bucket, at, seq, order, row, ttl))
                    .await
            }
            Write::AuditBucket(m, bucket, ttl) => {
                self.session
                    .execute_unpaged(&s.audit_bucket_put, (m, bucket, ttl))
                    .await
            }
            Write::Outbox(lane, bucket, seq, topic, key, payload) => {
                self.session
                    .execute_unpaged(&s.outbox_put, (lane, bucket, seq, topic, key, payload))
                    .await
            }
            Write::OutboxDelete(lane, bucket, seq) => {
                self.session
                    .execute_unpaged(&s.outbox_delete, (lane, bucket, seq))
                    .await
            }
            Write::Campaign(id, rec) => {
                self.session
                    .execute_unpaged(&s.campaign_put, (id, rec))
                    .await
            }
            Write::CampaignOrder(entry, c, o) => {
                self.session
                    .execute_unpaged(&s.campaign_order_put, (entry, c, o))
                    .await
            }
            Write::CampaignRelease(at, c, o) => {
                self.session
                    .execute_unpaged(&s.campaign_release, (at, c, o))
                    .await
            }
            Write::KeptPut(t, b, k, v) => {
                self.session
                    .execute_unpaged(&s.kept_put, (t, b, k, v))
                    .await
            }
            Write::KeptDelete(t, b, k) => {
                self.session
                    .execute_unpaged(&s.kept_delete, (t, b, k))
                    .await
            }
            Write::OrderByHour(hour, at, id) => {
                self.session
                    .execute_unpaged(&s.order_by_hour_put, (hour, at, id))
                    .await
            }
        };
        r.map(|_| ()).map_err(|e| be("writing", e))
    }

    /// Every statement of the batches, in three phases, each durable before the next starts:
    ///
    /// 1. what a step adds: audit rows, commands, results, exceptions, events, final statuses,
    ///    open-work rows, campaign rows;
    /// 2. new orders' records (the intake's commit point: the duplicate check reads them);
    /// 3. what a step lets go of: the meter's snapshot (the actor's memory), open-work rows
    ///    deleted, acknowledged events deleted.
    ///
    /// A step cut short by a crash is then redone from the snapshot before it, and everything
    /// it adds has the same key again; it never leaves an order that nothing remembers as open
    /// and nothing records as ended.
    fn plan(&self, batches: &[WriteBatch]) -> ([Vec<Write>; 3], Vec<OutboxEntry>) {
        let mut first = Vec::new();
        let mut last = Vec::new();
        let mut forget = Vec::new();
        let mut published = Vec::new();
        let ttl = self.ttl();
        for b in batches {
            let stamp = if b.stamp == 0 {
                super::next_stamp(b.audit.len() + b.outbox.len())
            } else {
                b.stamp
            };
            for k in &b.kept {
                let bucket = (super::shard_of(&k.key, KEPT_BUCKETS as usize)) as i32;
                first.push(match &k.value {
                    Some(v) => {
                        Write::KeptPut(k.table.to_string(), bucket, k.key.clone(), v.clone())
                    }
                    None => Write::KeptDelete(k.table.to_string(), bucket, k.key.clone()),
                });
            }
            for c in &b.campaigns {
                first.push(Write::Campaign(c.def.campaign_id.clone(), encode(c)));
            }
            for (cid, o) in &b.campaign_orders {
                first.push(Write::CampaignOrder(
                    encode(o),
                    cid.clone(),
                    o.order_id.clone(),
                ));
            }
            for (cid, oid, at) in &b.campaign_releases {
                first.push(Write::CampaignRelease(nanos(*at), cid.clone(), oid.clone()));
            }
            for rec in &b.new_orders {
                let id = &rec.order.order_id;
                let meter = &rec.order.meter_id;
                if !rec.status.is_terminal() {
                    first.push(Write::OpenInsert(
                        self.unit_of(meter),
                        meter.clone(),
                        id.clone(),
                    ));
                }
                let at = super::received_ns(rec.received_at);
                first.push(Write::OrderByHour(hour_of(at), at, id.clone()));
                last.push(Write::OrderRecord(id.clone(), meter.clone(), encode(rec)));
            }
            for (m, id) in &b.carried_away {
                // First: a crash before the snapshot leaves the order open in the snapshot
                // (the exchange is delivered again), never a row that feeds it back.
                first.push(Write::OpenDelete(self.unit_of(m), m.clone(), id.clone()));
            }
            for rec in &b.carried_in {
                last.push(Write::OrderCarried(
                    self.unit_of(&rec.order.meter_id),
                    Box::new(rec.clone()),
                ));
            }
            for u in &b.order_updates {
                // An open order's status lives in its meter's snapshot and audit rows.
                if !u.status.is_terminal() {
                    continue;
                }
                first.push(Write::OrderFinal(
                    u.order_id.clone(),
                    u.meter_id.clone(),
                    u.reason.clone(),
                    nanos(u.at),
                    status_name(u.status).to_string(),
                ));
                forget.push(Write::OpenDelete(
                    self.unit_of(&u.meter_id),
                    u.meter_id.clone(),
                    u.order_id.clone(),
                ));
            }
            if let Some(m) = &b.meter {
                let unit = self.unit_of(&m.meter_id);
                forget.push(Write::Meter(m.meter_id.to_string(), encode(m)));
                if m.is_idle() {
                    forget.push(Write::OpenDelete(
                        unit,
                        m.meter_id.to_string(),
                        String::new(),
                    ));
                } else {
                    first.push(Write::OpenInsert(
                        unit,
                        m.meter_id.to_string(),
                        String::new(),
                    ));
                }
            }
            for c in &b.commands {
                first.push(Write::Command(
                    c.command_id.clone(),
                    c.meter_id.clone(),
                    encode(c),
                ));
            }
            for r in b
                .results
                .iter()
                .chain(b.answered.iter().flat_map(|a| &a.results))
            {
                first.push(Write::Result(
                    r.command_id.clone(),
                    nanos(r.at),
                    r.outcome_label().to_string(),
                    encode(r),
                ));
            }
            for w in &b.watches {
                // A set before the meter's snapshot, a clear with it (like the open-work
                // index): a crash between the phases leaves a watch too many (cleared by the
                // next read that reaches the meter), never one missing. One meter has one step
                // in a write at a time, so a set and a clear of one watch never race.
                let unit = self.unit_of(w.meter_id());
                match w {
                    crate::domain::WatchChange::Set(x) => {
                        first.push(Write::WatchPut(unit, x.meter_id.clone(), encode(x)))
                    }
                    crate::domain::WatchChange::Clear(m) => {
                        forget.push(Write::WatchDelete(unit, m.clone()))
                    }
                }
            }
            for x in &b.exceptions {
                first.push(Write::Exception(
                    x.exception_id.clone(),
                    x.meter_id.clone(),
                    encode(x),
                ));
            }
            let mut buckets: Vec<(&str, i64)> = Vec::new();
            for (i, a) in b.audit.iter().enumerate() {
                let at = nanos(a.at);
                let bucket = self.bucket_of_ns(at);
                first.push(Write::Audit(
                    a.meter_id.clone(),
                    bucket,
                    at,
                    (stamp + i as u64) as i64,
                    a.order_id.clone(),
                    encode(a),
                    ttl,
                ));
                if !buckets.contains(&(a.meter_id.as_str(), bucket)) {
                    buckets.push((a.meter_id.as_str(), bucket));
                }
            }
            for (m, bucket) in buckets {
                first.push(Write::AuditBucket(m.to_string(), bucket, ttl));
            }
            for (j, m) in b.outbox.iter().enumerate() {
                let seq = stamp + (b.audit.len() + j) as u64;
                first.push(Write::Outbox(
                    OUTBOX_LANE,
                    (seq / OUTBOX_BUCKET_NS) as i64,
                    seq as i64,
                    m.topic.to_string(),
                    m.key.to_string(),
                    m.payload.clone(),
                ));
                published.push(OutboxEntry {
                    seq,
                    packet: seq,
                    message: m.clone(),
                });
            }
            for s in &b.outbox_acked {
                forget.push(Write::OutboxDelete(
                    OUTBOX_LANE,
                    (s / OUTBOX_BUCKET_NS) as i64,
                    *s as i64,
                ));
            }
        }
        ([first, last, forget], published)
    }

    async fn run_all(self: &Arc<Self>, writes: Vec<Write>) -> Result<(), StoreError> {
        futures::stream::iter(writes)
            .map(|w| self.exec(w))
            .buffer_unordered(self.o.max_in_flight)
            .try_for_each(|()| async { Ok(()) })
            .await
    }

    async fn rows<R>(
        &self,
        stmt: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm> + Send + 'static,
    {
        let pager = self
            .session
            .execute_iter(stmt.clone(), values)
            .await
            .map_err(|e| be("reading", e))?;
        pager
            .rows_stream::<R>()
            .map_err(|e| be("reading", e))?
            .map_err(|e| be("reading", e))
            .try_collect()
            .await
    }

    async fn order(&self, order_id: &str) -> Result<Option<OrderRecord>, StoreError> {
        let Some(mut rec) = self.order_as_stored(order_id).await? else {
            return Ok(None);
        };
        if !rec.status.is_terminal() {
            self.current_status(&mut rec).await?;
        }
        Ok(Some(rec))
    }

    /// An order's row as stored: the final status once it ended, else the one it was
    /// received with (no audit read).
    async fn order_as_stored(&self, order_id: &str) -> Result<Option<OrderRecord>, StoreError> {
        let row: Vec<(Option<Vec<u8>>, Option<String>, Option<String>, Option<i64>)> =
            self.rows(&self.st.order_get, (order_id,)).await?;
        let Some((Some(record), status, reason, ended)) = row.into_iter().next() else {
            return Ok(None);
        };
        let mut rec: OrderRecord = decode(order_id, &record)?;
        if let Some(s) = status {
            rec.status = parse_status(order_id, &s)?;
            if let Some(at) = ended {
                rec.updated_at = from_nanos(order_id, at)?;
            }
            if reason.is_some() {
                rec.reason = reason;
            }
        }
        Ok(Some(rec))
    }

    /// An open order's status as of its newest status row in its meter's audit trail (as the
    /// embedded store's `current_status`).
    async fn current_status(&self, rec: &mut OrderRecord) -> Result<(), StoreError> {
        let id = rec.order.order_id.clone();
        let meter = rec.order.meter_id.clone();
        let since = self.bucket_of_ns(nanos(rec.received_at));
        let mut found = false;
        for bucket in self.buckets(&meter).await? {
            if bucket < since {
                break;
            }
            let rows: Vec<(i64, i64, Vec<u8>)> = self
                .rows(&self.st.audit_rows, (meter.as_str(), bucket))
                .await?;
            for (_, _, row) in rows {
                let a: AuditEvent = decode(&meter, &row)?;
                if a.at < rec.received_at {
                    return Ok(());
                }
                if a.order_id.as_deref() != Some(id.as_str()) {
                    continue;
                }
                let Some(status) = a.status else { continue };
                if !found {
                    found = true;
                    rec.status = status;
                    rec.updated_at = a.at;
                }
                if a.reason.is_some() {
                    rec.reason = a.reason;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The audit buckets of a meter, newest first.
    async fn buckets(&self, meter_id: &str) -> Result<Vec<i64>, StoreError> {
        let rows: Vec<(i64,)> = self.rows(&self.st.audit_buckets, (meter_id,)).await?;
        Ok(rows.into_iter().map(|(b,)| b).collect())
    }

    /// A meter's audit rows newest first, below `before` if given, until `keep` says stop.
    async fn audit_newest_first(
        &self,
        meter_id: &str,
        before: Option<&AuditCursor>,
        mut keep: impl FnMut(AuditCursor, AuditEvent) -> bool,
    ) -> Result<(), StoreError> {
        let start = before.map(|c| self.bucket_of_ns(c.at_ns as i64));
        for bucket in self.buckets(meter_id).await? {
            if start.is_some_and(|s| bucket > s) {
                continue;
            }
            let rows: Vec<(i64, i64, Vec<u8>)> = match before {
                Some(c) if Some(bucket) == start => {
                    self.rows(
                        &self.st.audit_rows_before,
                        (meter_id, bucket, c.at_ns as i64, c.seq as i64),
                    )
                    .await?
                }
                _ => self.rows(&self.st.audit_rows, (meter_id, bucket)).await?,
            };
            for (at, seq, row) in rows {
                let a: AuditEvent = decode(meter_id, &row)?;
                let cursor = AuditCursor {
                    at_ns: at as u64,
                    seq: seq as u64,
                };
                if !keep(cursor, a) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

impl Store for ScyllaStore {
    fn apply(&self, batches: &[WriteBatch]) -> Result<Vec<OutboxEntry>, StoreError> {
        let (phases, published) = self.inner.plan(batches);
        self.run(move |i| async move {
            for phase in phases {
                i.run_all(phase).await?;
            }
            Ok(())
        })?;
        Ok(published)
    }

    fn unit_lease(&self, unit: u32) -> Result<Option<super::UnitLease>, StoreError> {
        self.run(move |i| async move {
            let rows: Vec<(i64, String, i64)> = i.rows(&i.st.lease_get, (unit as i32,)).await?;
            Ok(rows
                .into_iter()
                .next()
                .map(|(epoch, owner, beat)| super::UnitLease { epoch, owner, beat }))
        })
    }

    fn swap_unit_lease(
        &self,
        unit: u32,
        expected: Option<&super::UnitLease>,
        new: &super::UnitLease,
    ) -> Result<bool, StoreError> {
        let (expected, new) = (expected.cloned(), new.clone());
        self.run(move |i| async move {
            let u = unit as i32;
            let r = match &expected {
                None => {
                    i.session
                        .execute_unpaged(&i.st.lease_insert, (u, new.epoch, &new.owner, new.beat))
                        .await
                }
                Some(e) => {
                    i.session
                        .execute_unpaged(
                            &i.st.lease_update,
                            (
                                new.epoch, &new.owner, new.beat, u, e.epoch, &e.owner, e.beat,
                            ),
                        )
                        .await
                }
            }
            .map_err(|e| be("swapping a unit lease", e))?;
            // The first column of a lightweight transaction's answer is `[applied]` (the rest,
            // when it did not apply, is the row as it is).
            let rows = r
                .into_rows_result()
                .map_err(|e| be("reading a lease swap's answer", e))?;
            let row = rows
                .maybe_first_row::<scylla::value::Row>()
                .map_err(|e| be("reading a lease swap's answer", e))?;
            Ok(matches!(
                row.and_then(|r| r.columns.into_iter().next().flatten()),
                Some(scylla::value::CqlValue::Boolean(true))
            ))
        })
    }

    fn order(&self, order_id: &str) -> Result<Option<OrderRecord>, StoreError> {
        let id = order_id.to_string();
        self.run(move |i| async move { i.order(&id).await })
    }

    /// The hours of the period, newest first, until `limit` orders are found; each order's
    /// row read (concurrently) for its final status.
    fn orders_received(
        &self,
        from: Timestamp,
        to: Timestamp,
        before: Option<&super::OrderCursor>,
        limit: usize,
    ) -> Result<Vec<OrderRecord>, StoreError> {
        let lo = super::received_ns(from);
        let top = super::OrderCursor::at_or_before(to);
        let hi = match before {
            Some(b) if b < &top => b.clone(),
            _ => top,
        };
        self.run(move |i| async move {
            let mut ids: Vec<String> = Vec::new();
            let mut hour = hour_of(hi.received_ns);
            let mut cursor = (hi.received_ns, hi.order_id.clone());
            while ids.len() < limit && hour >= hour_of(lo) {
                let want = (limit - ids.len()).min(i32::MAX as usize) as i32;
                let rows: Vec<(i64, String)> = i
                    .rows(
                        &i.st.orders_of_hour,
                        (hour, lo, "", cursor.0, cursor.1.as_str(), want),
                    )
                    .await?;
                ids.extend(rows.into_iter().map(|(_, id)| id));
                hour -= 1;
                // The next hour's rows are all below this one's.
                cursor = ((hour + 1) * 3_600 * 1_000_000_000, String::new());
            }
            let n = i.o.max_in_flight;
            let recs: Vec<Option<OrderRecord>> = futures::stream::iter(ids)
                .map(|id| {
                    let i = &i;
                    async move { i.order_as_stored(&id).await }
                })
                .buffered(n)
                .try_collect()
                .await?;
            Ok(recs.into_iter().flatten().collect())
        })
    }

    /// In token order: `after` names the last exception of the previous page.
    fn exceptions_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ExceptionRecord>, StoreError> {
        let after = after.map(str::to_string);
        let limit = limit.min(i32::MAX as usize) as i32;
        self.run(move |i| async move {
            let rows: Vec<(String, Option<Vec<u8>>)> = match &after {
                None => i.rows(&i.st.exceptions_first, (limit,)).await?,
                Some(a) => i.rows(&i.st.exceptions_after, (a.as_str(), limit)).await?,
            };
            rows.into_iter()
                .filter_map(|(id, b)| b.map(|b| decode(&id, &b)))
                .collect()
        })
    }

    fn exception_task(
        &self,
        exception_id: &str,
        _meter_id: &str,
    ) -> Result<Option<crate::domain::ExceptionTask>, StoreError> {
        let id = exception_id.to_string();
        self.run(move |i| async move {
            let r: Vec<(Option<Vec<u8>>,)> = i.rows(&i.st.task_get, (id.as_str(),)).await?;
            match r.into_iter().next() {
                Some((Some(b),)) => Ok(Some(decode(&id, &b)?)),
                _ => Ok(None),
            }
        })
    }

    fn swap_exception_task(
        &self,
        expected: u64,
        task: &crate::domain::ExceptionTask,
    ) -> Result<bool, StoreError> {
        let task = task.clone();
        self.run(move |i| async move {
            let body = encode(&task);
            let v = task.version as i64;
            let r = if expected == 0 {
                i.session
                    .execute_unpaged(&i.st.task_insert, (&task.exception_id, v, body))
                    .await
            } else {
                i.session
                    .execute_unpaged(
                        &i.st.task_update,
                        (v, body, &task.exception_id, expected as i64),
                    )
                    .await
            }
            .map_err(|e| be("swapping an exception task", e))?;
            let rows = r
                .into_rows_result()
                .map_err(|e| be("reading a task swap's answer", e))?;
            let row = rows
                .maybe_first_row::<scylla::value::Row>()
                .map_err(|e| be("reading a task swap's answer", e))?;
            Ok(matches!(
                row.and_then(|r| r.columns.into_iter().next().flatten()),
                Some(scylla::value::CqlValue::Boolean(true))
            ))
        })
    }

    fn orders_exist(&self, order_ids: &[&str]) -> Result<Vec<bool>, StoreError> {
        let ids: Vec<String> = order_ids.iter().map(|s| s.to_string()).collect();
        self.run(move |i| async move {
            let n = i.o.max_in_flight;
            futures::stream::iter(ids)
                .map(|id| {
                    let i = &i;
                    async move {
                        let r: Vec<(Option<Vec<u8>>,)> = i.rows(&i.st.order_exists, (id,)).await?;
                        Ok::<bool, StoreError>(r.into_iter().any(|(rec,)| rec.is_some()))
                    }
                })
                .buffered(n)
                .try_collect()
                .await
        })
    }

    fn meter(&self, meter_id: &str) -> Result<Option<MeterState>, StoreError> {
        let id = meter_id.to_string();
        self.run(move |i| async move {
            let r: Vec<(Option<Vec<u8>>,)> = i.rows(&i.st.meter_get, (id.as_str(),)).await?;
            match r.into_iter().next() {
                Some((Some(b),)) => Ok(Some(decode(&id, &b)?)),
                _ => Ok(None),
            }
        })
    }

    fn open_orders(&self, meter_id: &str) -> Result<Vec<OrderRecord>, StoreError> {
        let id = meter_id.to_string();
        let unit = self.unit_of(meter_id);
        self.run(move |i| async move {
            // This meter's rows of its unit's partition (a clustering-key prefix).
            let rows: Vec<(String,)> = i.rows(&i.st.open_of_meter, (unit, id.as_str())).await?;
            let mut out = Vec::new();
            for (order,) in rows {
                if order.is_empty() {
                    continue;
                }
                if let Some(rec) = i.order(&order).await? {
                    // (An order an exchange carried to another meter is that meter's.)
                    if !rec.status.is_terminal() && rec.order.meter_id == id {
                        out.push(rec);
                    }
                }
            }
            out.sort_by(|a, b| a.order.order_id.cmp(&b.order.order_id));
            Ok(out)
        })
    }

    fn meters_with_open_work(&self) -> Result<Vec<String>, StoreError> {
        let all = (0..self.inner.o.units).collect();
        self.open_work_of_units(all)
    }

    fn meters_with_open_work_in(
        &self,
        of: &std::collections::BTreeSet<u32>,
        units: u32,
        partitioner: Partitioner,
    ) -> Result<Vec<String>, StoreError> {
        if units == self.inner.o.units && partitioner == self.inner.o.partitioner {
            // One partition read of the open-work index per unit.
            return self.open_work_of_units(of.clone());
        }
        let all = self.meters_with_open_work()?;
        Ok(all
            .into_iter()
            .filter(|m| of.contains(&partitioner.partition(m.as_bytes(), units)))
            .collect())
    }

    fn command(&self, command_id: &str) -> Result<Option<CommandRecord>, StoreError> {
        let id = command_id.to_string();
        self.run(move |i| async move {
            let (c, r) = futures::try_join!(
                i.rows::<(Option<Vec<u8>>,)>(&i.st.command_get, (id.as_str(),)),
                i.rows::<(Option<Vec<u8>>,)>(&i.st.results_get, (id.as_str(),)),
            )?;
            let Some((Some(c),)) = c.into_iter().next() else {
                return Ok(None);
            };
            let results = r
                .into_iter()
                .filter_map(|(b,)| b)
                .map(|b| decode::<CommandResult>(&id, &b))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(CommandRecord {
                command: decode(&id, &c)?,
                results,
            }))
        })
    }

    fn exception(&self, exception_id: &str) -> Result<Option<ExceptionRecord>, StoreError> {
        let id = exception_id.to_string();
        self.run(move |i| async move {
            let r: Vec<(Option<Vec<u8>>,)> = i.rows(&i.st.exception_get, (id.as_str(),)).await?;
            match r.into_iter().next() {
                Some((Some(b),)) => Ok(Some(decode(&id, &b)?)),
                _ => Ok(None),
            }
        })
    }

    fn audit(&self, meter_id: &str) -> Result<Vec<AuditEvent>, StoreError> {
        let id = meter_id.to_string();
        self.run(move |i| async move {
            let mut out = Vec::new();
            i.audit_newest_first(&id, None, |_, a| {
                out.push(a);
                true
            })
            .await?;
            out.reverse();
            Ok(out)
        })
    }

    fn audit_between(
        &self,
        meter_id: &str,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let id = meter_id.to_string();
        self.run(move |i| async move {
            let mut out = Vec::new();
            // Newest first: skip what is newer than `to`, stop below `from`.
            let below = AuditCursor {
                at_ns: (nanos(to) as u64).saturating_add(1),
                seq: 0,
            };
            i.audit_newest_first(&id, Some(&below), |_, a| {
                if a.at < from {
                    return false;
                }
                if a.at <= to {
                    out.push(a);
                }
                true
            })
            .await?;
            out.reverse();
            out.truncate(limit);
            Ok(out)
        })
    }

    fn audit_page(
        &self,
        meter_id: &str,
        before: Option<&AuditCursor>,
        limit: usize,
        order_id: Option<&str>,
    ) -> Result<(Vec<AuditEvent>, Option<AuditCursor>), StoreError> {
        let id = meter_id.to_string();
        let before = before.copied();
        let order = order_id.map(str::to_string);
        self.run(move |i| async move {
            let mut out = Vec::new();
            let mut last = None;
            let mut more = false;
            i.audit_newest_first(&id, before.as_ref(), |cursor, a| {
                if out.len() == limit {
                    more = true;
                    return false;
                }
                if order
                    .as_deref()
                    .is_none_or(|o| a.order_id.as_deref() == Some(o))
                {
                    out.push(a);
                    last = Some(cursor);
                }
                true
            })
            .await?;
            Ok((out, if more { last } else { None }))
        })
    }

    fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.run(move |i| async move {
            let parts: Vec<(i32, i64)> = i.rows(&i.st.outbox_partitions, ()).await?;
            let mut out = Vec::new();
            for (lane, bucket) in parts {
                let rows: Vec<(i64, String, String, Vec<u8>)> =
                    i.rows(&i.st.outbox_rows, (lane, bucket)).await?;
                for (seq, topic, key, payload) in rows {
                    out.push(OutboxEntry {
                        seq: seq as u64,
                        packet: seq as u64,
                        message: OutboxMessage {
                            topic: topic.into(),
                            key: key.into(),
                            payload,
                        },
                    });
                }
            }
            out.sort_by_key(|e| e.seq);
            out.truncate(limit);
            Ok(out)
        })
    }

    /// Full scans: for tests, tools and load reports, not for a hot path.
    fn counts(&self) -> Result<StoreCounts, StoreError> {
        self.run(move |i| async move {
            let ks = &i.o.keyspace;
            let count = |cql: String| {
                let i = &i;
                async move {
                    let mut s = i
                        .session
                        .prepare(cql.clone())
                        .await
                        .map_err(|e| be(&format!("preparing `{cql}`"), e))?;
                    s.set_page_size(5000);
                    let pager = i
                        .session
                        .execute_iter(s, ())
                        .await
                        .map_err(|e| be("counting", e))?;
                    let mut rows = pager
                        .rows_stream::<(String,)>()
                        .map_err(|e| be("counting", e))?;
                    let mut n = 0u64;
                    while let Some(r) = rows.next().await {
                        r.map_err(|e| be("counting", e))?;
                        n += 1;
                    }
                    Ok::<u64, StoreError>(n)
                }
            };
            let open: Vec<(i32, String, String)> = {
                let s = i
                    .session
                    .prepare(format!(
                        "SELECT unit, meter_id, order_id FROM {ks}.open_work"
                    ))
                    .await
                    .map_err(|e| be("counting", e))?;
                i.rows(&s, ()).await?
            };
            let audit_rows = {
                let s = i
                    .session
                    .prepare(format!("SELECT meter_id, bucket, at FROM {ks}.audit"))
                    .await
                    .map_err(|e| be("counting", e))?;
                i.rows::<(String, i64, i64)>(&s, ()).await?.len() as u64
            };
            let outbox = {
                let s = i
                    .session
                    .prepare(format!("SELECT topic FROM {ks}.outbox"))
                    .await
                    .map_err(|e| be("counting", e))?;
                i.rows::<(String,)>(&s, ()).await?.len() as u64
            };
            Ok(StoreCounts {
                orders: {
                    let s = i
                        .session
                        .prepare(format!("SELECT order_id, record FROM {ks}.orders"))
                        .await
                        .map_err(|e| be("counting", e))?;
                    let rows: Vec<(String, Option<Vec<u8>>)> = i.rows(&s, ()).await?;
                    rows.iter().filter(|(_, r)| r.is_some()).count() as u64
                },
                open_orders: open.iter().filter(|(_, _, o)| !o.is_empty()).count() as u64,
                meters: count(format!("SELECT meter_id FROM {ks}.meters")).await?,
                commands: count(format!("SELECT command_id FROM {ks}.commands")).await?,
                audit_events: audit_rows,
                exceptions: count(format!("SELECT exception_id FROM {ks}.exceptions")).await?,
                outbox,
            })
        })
    }

    fn read_watches(&self) -> Result<Vec<crate::domain::ReadWatch>, StoreError> {
        let all = (0..self.inner.o.units).collect();
        self.watches_of_units(all)
    }

    fn read_watches_in(
        &self,
        of: &std::collections::BTreeSet<u32>,
        units: u32,
        partitioner: Partitioner,
    ) -> Result<Vec<crate::domain::ReadWatch>, StoreError> {
        if units == self.inner.o.units && partitioner == self.inner.o.partitioner {
            return self.watches_of_units(of.clone());
        }
        Ok(self
            .read_watches()?
            .into_iter()
            .filter(|w| of.contains(&partitioner.partition(w.meter_id.as_bytes(), units)))
            .collect())
    }

    fn kept(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let t = table.to_string();
        self.run(move |i| async move {
            let mut out = Vec::new();
            for b in 0..KEPT_BUCKETS as i32 {
                let rows: Vec<(String, Vec<u8>)> = i.rows(&i.st.kept_rows, (t.as_str(), b)).await?;
                out.extend(rows);
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(out)
        })
    }

    fn campaigns(&self) -> Result<Vec<CampaignRecord>, StoreError> {
        self.run(move |i| async move {
            let rows: Vec<(String, Vec<u8>)> = i.rows(&i.st.campaign_all, ()).await?;
            let mut out: Vec<CampaignRecord> = rows
                .iter()
                .map(|(id, b)| decode(id, b))
                .collect::<Result<_, _>>()?;
            out.sort_by(|a, b| a.def.campaign_id.cmp(&b.def.campaign_id));
            Ok(out)
        })
    }

    fn campaign_orders(&self, campaign_id: &str) -> Result<Vec<CampaignOrder>, StoreError> {
        let id = campaign_id.to_string();
        self.run(move |i| async move {
            let rows: Vec<(String, Option<Vec<u8>>, Option<i64>)> =
                i.rows(&i.st.campaign_orders, (id.as_str(),)).await?;
            let mut out = Vec::new();
            for (order_id, entry, released) in rows {
                // A release stored without its entry (never written that way) is skipped.
                let Some(entry) = entry else { continue };
                let mut o: CampaignOrder = decode(&order_id, &entry)?;
                o.released = released.is_some();
                o.released_at = released.map(|n| from_nanos(&order_id, n)).transpose()?;
                out.push(o);
            }
            Ok(out)
        })
    }
}
