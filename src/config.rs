//! Configuration: one typed struct loaded from TOML (config/default.toml is compiled in as the
//! embedded defaults), overridden from the environment (`SWITCHYARD__SECTION__KEY=value`) and
//! validated before anything starts. Unknown keys are rejected; every error names the key.
//!
//! A config file is layered over the embedded defaults: keys it leaves out keep their default
//! value (tables merge key by key). Relative paths set in a file ([`PATH_KEYS`]) are relative to
//! the directory of that file; relative paths from the defaults or the environment are relative
//! to the working directory. Duration keys (`*_secs`, `*_ms`) take an integer in their unit or a
//! string such as `"30s"`, `"5m"`, `"1h30m"`, `"250ms"`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The embedded defaults, the same text as `config/default.toml`.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// librdkafka properties switchyard sets itself: overriding them would break "stored before the
/// offset is committed" or "acknowledged before the source offset is committed".
const RESERVED_CLIENT_KEYS: &[&str] = &[
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "group.id",
    "group.instance.id",
    "session.timeout.ms",
    "partition.assignment.strategy",
    "group.protocol",
    "bootstrap.servers",
    "isolation.level",
];

/// A name Kafka accepts for a topic (and switchyard for a group instance id): 1-249 of
/// `[a-zA-Z0-9._-]`.
fn kafka_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Prefix of environment variables that override configuration keys.
pub(crate) const ENV_PREFIX: &str = "SWITCHYARD__";

/// Every key whose value is a filesystem path. When set in a config file, a relative value is
/// resolved against the directory of that file (a service manager may start switchyard from any
/// working directory, systemd from `/`). Values from the embedded defaults or the environment
/// are left as they are (relative to the working directory). `kafka.client` properties are
/// passed to librdkafka unchanged.
pub(crate) const PATH_KEYS: &[&str] = &[
    "data_dir",
    "registry.file",
    "policy.rule_pack",
    "policy.utility_overlay",
    "store.scylla.tls.ca_file",
    "http.tls.cert_file",
    "http.tls.key_file",
    "store.scylla.tls.cert_file",
    "store.scylla.tls.key_file",
    "http.auth.tokens_file",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

/// A log filter of comma-separated `level` or `target=level` directives with a known level.
/// (tracing's own parser takes `verbose!!` as a target name at every level: a typo that turns
/// every other log off.)
fn valid_log_filter(f: &str) -> bool {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let level_ok = |l: &str| LEVELS.contains(&l.trim().to_ascii_lowercase().as_str());
    let target_ok = |t: &str| {
        !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-'))
    };
    !f.trim().is_empty()
        && f.split(',').all(|d| match d.trim().split_once('=') {
            Some((t, l)) => target_ok(t.trim()) && level_ok(l),
            None => level_ok(d),
        })
}

/// librdkafka properties whose values are secrets (not printed by `check-config`).
pub(crate) fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k.ends_with(".key.pem")
        || k.contains("sasl.oauthbearer.config")
}

impl Config {
    /// This configuration with secret values (`kafka.client` passwords and keys) replaced by
    /// `<redacted>`, for printing.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        for (k, v) in c.kafka.client.iter_mut() {
            if is_secret_key(k) {
                *v = "<redacted>".into();
            }
        }
        if c.store.scylla.password.is_some() {
            c.store.scylla.password = Some("<redacted>".into());
        }
        c
    }
}

impl Config {
    /// Tests: the ScyllaDB store on `nodes`, in `keyspace`, with a short audit retention
    /// (rows kept a day, no TTL surprises in a test).
    #[cfg(feature = "testing")]
    pub fn store_on_scylla(&mut self, nodes: &str, keyspace: &str) {
        self.store.backend = StoreBackend::Scylla;
        self.store.scylla.nodes = nodes.to_string();
        self.store.scylla.keyspace = keyspace.to_string();
        self.store.scylla.audit_retention_secs = 0;
    }

    /// The CQL nodes and keyspace of the ScyllaDB store, when that is the configured store
    /// (`None`: the embedded store). For reports and tools.
    pub fn cql_store(&self) -> Option<(String, String)> {
        (self.store.backend == StoreBackend::Scylla).then(|| {
            (
                self.store.scylla.nodes.clone(),
                self.store.scylla.keyspace.clone(),
            )
        })
    }

    fn validate_scylla(&self) -> Result<(), ConfigError> {
        let s = &self.store.scylla;
        if self.store.backend != StoreBackend::Scylla {
            return Ok(());
        }
        let nodes: Vec<&str> = s
            .nodes
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if nodes.is_empty() {
            return Err(invalid(
                "store.scylla.nodes",
                "give at least one host:port, e.g. 10.0.0.5:9042",
            ));
        }
        for n in nodes {
            let ok = n
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(invalid("store.scylla.nodes", format!("`{n}` is not host:port; give a comma-separated list such as scylla-1:9042,scylla-2:9042")));
            }
        }
        let ident = |v: &str| {
            !v.is_empty()
                && v.len() <= 48
                && v.starts_with(|c: char| c.is_ascii_lowercase())
                && v.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        if !ident(&s.keyspace) {
            return Err(invalid("store.scylla.keyspace", format!("`{}` is not a keyspace name: lower-case letters, digits and _, starting with a letter, at most 48", s.keyspace)));
        }
        match s.replication {
            ReplicationStrategy::Simple if s.replication_factor == 0 => {
                return Err(invalid("store.scylla.replication_factor", "must be at least 1"))
            }
            ReplicationStrategy::NetworkTopology if s.datacenters.is_empty() || s.datacenters.values().any(|r| *r == 0) => {
                return Err(invalid("store.scylla.datacenters", "network_topology replication needs replicas per data centre, e.g. datacenters = { dc1 = 3 }"))
            }
            _ => {}
        }
        if s.username.is_some() != s.password.is_some() {
            return Err(invalid("store.scylla.password", "username and password go together; set the password from the environment (SWITCHYARD__STORE__SCYLLA__PASSWORD)"));
        }
        if s.tls.cert_file.is_some() != s.tls.key_file.is_some() {
            return Err(invalid(
                "store.scylla.tls.key_file",
                "a client certificate needs its key (cert_file and key_file go together)",
            ));
        }
        if s.request_timeout_ms == 0 || s.connect_timeout_ms == 0 {
            return Err(invalid(
                "store.scylla.request_timeout_ms",
                "timeouts must be above zero",
            ));
        }
        if !(60..=366 * 86_400).contains(&s.audit_bucket_secs) {
            return Err(invalid("store.scylla.audit_bucket_secs", "must be between 1 minute and 366 days (a day suits most: a meter has a few rows a day)"));
        }
        if s.audit_retention_secs != 0 && s.audit_retention_secs < s.audit_bucket_secs {
            return Err(invalid(
                "store.scylla.audit_retention_secs",
                "must be at least one audit bucket (or 0 to keep rows for ever)",
            ));
        }
        if s.audit_retention_secs > 630_720_000 {
            return Err(invalid(
                "store.scylla.audit_retention_secs",
                "CQL TTLs stop at 20 years (630720000 s); use 0 to keep rows for ever",
            ));
        }
        if !(1_000..=600_000).contains(&s.lease_ms) {
            return Err(invalid(
                "store.scylla.lease_ms",
                "must be between 1s and 10min (a unit's next owner waits this long for a holder that stopped renewing; 5s suits most)",
            ));
        }
        if !(1..=4096).contains(&s.ownership_units) {
            return Err(invalid(
                "store.scylla.ownership_units",
                "must be between 1 and 4096 (the orders topic's partition count)",
            ));
        }
        if crate::domain::Partitioner::of_librdkafka(
            self.kafka.client.get("partitioner").map(String::as_str),
        )
        .is_none()
        {
            return Err(invalid("kafka.client.partitioner", "the ScyllaDB store's ownership units follow the orders topic's partitions by key: use consistent_random (librdkafka's default) or murmur2_random (the Java clients'), as the producers of the orders topic do"));
        }
        if !(1..=65_536).contains(&s.max_in_flight) {
            return Err(invalid(
                "store.scylla.max_in_flight",
                "must be between 1 and 65536",
            ));
        }
        Ok(())
    }
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory of the embedded store, the bootstrap address file, and other local state.
    pub data_dir: PathBuf,
    pub kafka: KafkaConfig,
    pub topics: TopicsConfig,
    pub registry: RegistryConfig,
    pub meters: MetersConfig,
    pub head_end: HeadEndConfig,
    pub(crate) store: StoreConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub clock: ClockConfig,
    #[serde(default)]
    pub sla: SlaConfig,
    #[serde(default)]
    pub reads: ReadsConfig,
}

/// Meter reads (`crate::reads`): the post-disconnect watchdog.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadsConfig {
    /// Consumption on a meter confirmed disconnected up to this much (kWh: since the cut for a
    /// register read, within one interval for an interval read) raises nothing.
    pub disconnected_tolerance_kwh: f64,
    /// How many days after a cut its meter's reads are watched.
    pub watch_days: u32,
    /// The high / low check of a disconnect's final read.
    pub final_read: FinalReadConfig,
}

/// The high / low factors of the final-read check (`[reads.final_read]`): a use below
/// `very_low` × what the meter's history predicts is very low, below `low` × low, above
/// `high` × high, above `very_high` × very high; within `slack_kwh` of the prediction, normal.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinalReadConfig {
    pub very_low: f64,
    pub low: f64,
    pub high: f64,
    pub very_high: f64,
    pub slack_kwh: f64,
}

impl Default for FinalReadConfig {
    fn default() -> Self {
        let h = crate::reads::HighLow::default();
        FinalReadConfig {
            very_low: h.very_low,
            low: h.low,
            high: h.high,
            very_high: h.very_high,
            slack_kwh: h.slack_kwh,
        }
    }
}

impl Default for ReadsConfig {
    fn default() -> Self {
        let r = crate::reads::ReadRules::default();
        ReadsConfig {
            disconnected_tolerance_kwh: r.tolerance_kwh,
            watch_days: r.watch_days,
            final_read: FinalReadConfig::default(),
        }
    }
}

impl ReadsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.disconnected_tolerance_kwh.is_finite() && self.disconnected_tolerance_kwh >= 0.0)
        {
            return Err(invalid(
                "reads.disconnected_tolerance_kwh",
                "must be a number of kWh, 0 or more (1.0: a disconnected meter may show up to 1 kWh)",
            ));
        }
        if !(1..=366).contains(&self.watch_days) {
            return Err(invalid(
                "reads.watch_days",
                "must be between 1 and 366 days",
            ));
        }
        let f = &self.final_read;
        for (key, v) in [
            ("reads.final_read.very_low", f.very_low),
            ("reads.final_read.low", f.low),
            ("reads.final_read.high", f.high),
            ("reads.final_read.very_high", f.very_high),
            ("reads.final_read.slack_kwh", f.slack_kwh),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(invalid(key, "must be a number, 0 or more"));
            }
        }
        if !(f.very_low < f.low && f.low < 1.0 && 1.0 < f.high && f.high < f.very_high) {
            return Err(invalid(
                "reads.final_read",
                format!(
                    "the factors must rise: very_low < low < 1 < high < very_high (now {} < {} < 1 < {} < {})",
                    f.very_low, f.low, f.high, f.very_high
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn rules(&self) -> crate::reads::ReadRules {
        let f = &self.final_read;
        crate::reads::ReadRules {
            tolerance_kwh: self.disconnected_tolerance_kwh,
            watch_days: self.watch_days,
            high_low: crate::reads::HighLow {
                very_low: f.very_low,
                low: f.low,
                high: f.high,
                very_high: f.very_high,
                slack_kwh: f.slack_kwh,
            },
        }
    }
}

/// Service levels of orders (`crate::sla`): the time to completion of each priority class,
/// and the class of each order reason (unlisted reasons are `p4`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlaConfig {
    #[serde(deserialize_with = "duration::secs")]
    pub p1_secs: u64,
    #[serde(deserialize_with = "duration::secs")]
    pub p2_secs: u64,
    #[serde(deserialize_with = "duration::secs")]
    pub p3_secs: u64,
    #[serde(deserialize_with = "duration::secs")]
    pub p4_secs: u64,
    /// An open order is at risk once this fraction of its time is gone (0 < f <= 1).
    pub at_risk_fraction: f64,
    /// Reason (as on the wire, e.g. `payment_received`) to class (`p1` .. `p4`).
    pub reasons: BTreeMap<String, String>,
    /// How often each instance counts the open orders of its meters against their due times
    /// (`switchyard_orders_sla{state}`).
    #[serde(deserialize_with = "duration::secs")]
    pub sweep_secs: u64,
}

impl Default for SlaConfig {
    fn default() -> Self {
        let reasons = [
            ("payment_received", "p1"),
            ("restore_obligation", "p1"),
            ("safety", "p1"),
            ("customer_request", "p2"),
            ("move", "p2"),
            ("tampering", "p2"),
            ("non_payment", "p3"),
            ("billing", "p3"),
            ("operator", "p3"),
            ("other", "p4"),
        ];
        SlaConfig {
            p1_secs: 4 * 3_600,
            p2_secs: 24 * 3_600,
            p3_secs: 72 * 3_600,
            p4_secs: 168 * 3_600,
            at_risk_fraction: 0.8,
            reasons: reasons
                .iter()
                .map(|(r, c)| (r.to_string(), c.to_string()))
                .collect(),
            sweep_secs: 60,
        }
    }
}

impl SlaConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("sla.p1_secs", self.p1_secs),
            ("sla.p2_secs", self.p2_secs),
            ("sla.p3_secs", self.p3_secs),
            ("sla.p4_secs", self.p4_secs),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1 second"));
            }
        }
        if !(self.at_risk_fraction > 0.0 && self.at_risk_fraction <= 1.0) {
            return Err(invalid(
                "sla.at_risk_fraction",
                "must be above 0 and at most 1 (0.8: at risk once 80 % of the time is gone)",
            ));
        }
        if !(1..=3_600).contains(&self.sweep_secs) {
            return Err(invalid(
                "sla.sweep_secs",
                "must be between 1 second and 1 hour",
            ));
        }
        for (reason, class) in &self.reasons {
            let key = format!("sla.reasons.{reason}");
            if serde_json::from_value::<crate::domain::ReasonCode>(serde_json::Value::String(
                reason.clone(),
            ))
            .is_err()
            {
                return Err(invalid(
                    &key,
                    "is not an order reason (non_payment, payment_received, customer_request, safety, tampering, move, billing, operator, restore_obligation, other)",
                ));
            }
            if !matches!(class.as_str(), "p1" | "p2" | "p3" | "p4") {
                return Err(invalid(&key, format!("`{class}` must be p1, p2, p3 or p4")));
            }
        }
        Ok(())
    }
}

/// Business time. Unset, switchyard runs on the wall clock. For user-acceptance tests of rule
/// packs on chosen dates: start the business clock at `start_at`, optionally `speed` times
/// faster. A shifted clock is marked in the logs, in `switchyard_business_clock_shifted` and in
/// `/readyz`, and refused with an external broker unless `allow_with_external_broker` is set
/// (a production cluster must never see orders decided on a make-believe date).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    /// The instant business time starts at (RFC 3339 with an offset, e.g.
    /// `2026-12-24T07:00:00-05:00`). Unset: now.
    #[serde(default, deserialize_with = "instant::optional")]
    pub start_at: Option<jiff::Timestamp>,
    /// Business seconds per wall second, 1 to 3600.
    #[serde(default = "one")]
    pub speed: f64,
    /// Allow a shifted clock with `kafka.brokers` set (a UAT cluster, not production).
    #[serde(default)]
    pub allow_with_external_broker: bool,
}

fn one() -> f64 {
    1.0
}

impl Default for ClockConfig {
    fn default() -> Self {
        ClockConfig {
            start_at: None,
            speed: 1.0,
            allow_with_external_broker: false,
        }
    }
}

impl ClockConfig {
    /// True when business time is not the wall clock.
    pub fn is_shifted(&self) -> bool {
        self.start_at.is_some() || self.speed != 1.0
    }

    /// The clock `switchyard run` uses: the wall clock, or the shifted business clock.
    pub fn clock(&self) -> std::sync::Arc<dyn crate::clock::Clock> {
        if self.is_shifted() {
            crate::clock::TokioClock::scaled(
                self.start_at.unwrap_or_else(jiff::Timestamp::now),
                self.speed,
            )
        } else {
            std::sync::Arc::new(crate::clock::SystemClock)
        }
    }
}

/// Which rules decide whether a disconnect may run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The jurisdiction's rule pack (`config/rules/*.toml`). Unset: only the built-in
    /// protections apply (life support / medical / critical care need an approval for a
    /// non-payment disconnect); a warning is logged at start.
    #[serde(default)]
    pub rule_pack: Option<PathBuf>,
    /// The utility's own settings on top of the pack (same format, any subset of keys). They
    /// can only make the rules stricter: more barred days, holidays, protections, longer
    /// notice, narrower windows, more weather rules.
    #[serde(default)]
    pub(crate) utility_overlay: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers; empty starts librdkafka's mock cluster in-process.
    pub brokers: String,
    pub(crate) group_id: String,
    /// This instance's stable name in its consumer groups (librdkafka `group.instance.id`,
    /// static membership): a restarted instance takes its partitions back without a rebalance
    /// while its session lasts. Unset: dynamic membership. Unique per instance (a
    /// StatefulSet's pod name).
    #[serde(default)]
    pub(crate) instance_id: Option<String>,
    /// How long a group member may go silent before the coordinator hands its partitions to
    /// the others (`session.timeout.ms`): the wait after a kill -9, and with `instance_id`
    /// how long a restart may take and still keep its partitions. Within the broker's
    /// `group.min/max.session.timeout.ms` (6 s to 30 min by default).
    #[serde(deserialize_with = "duration::millis")]
    pub session_timeout_ms: u64,
    pub embedded_partitions: i32,
    pub(crate) intake_batch_max: usize,
    /// Orders handed to their meters whose first step is not stored yet, at most: while that
    /// many are, the intake takes no new batch (work already accepted goes first). 0 = none.
    #[serde(default = "default_intake_window")]
    pub(crate) intake_window: usize,
    #[serde(deserialize_with = "duration::millis")]
    pub intake_linger_ms: u64,
    /// How long an order for a meter not (yet) in the registry waits for the registry topic to
    /// catch up before it is rejected `unknown_meter` (the two topics race). 0 = no wait.
    #[serde(deserialize_with = "duration::millis")]
    pub unknown_meter_grace_ms: u64,
    #[serde(default)]
    pub(crate) client: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    pub orders: String,
    pub registry: String,
    pub order_events: String,
    pub dead_letter: String,
    pub exceptions: String,
    pub head_end_commands: String,
    pub head_end_results: String,
    pub weather: String,
    pub emergencies: String,
    pub customer_facts: String,
    pub control: String,
    pub campaign_control: String,
    pub campaign_events: String,
    /// Meter reads from the MDM or the head-end (keyed by meter id; co-partitioned with the
    /// orders topic).
    pub reads: String,
}

impl TopicsConfig {
    /// Every topic name.
    pub fn names(&self) -> Vec<String> {
        self.all().iter().map(|(_, t)| t.to_string()).collect()
    }

    pub fn all(&self) -> [(&'static str, &str); 14] {
        [
            ("topics.orders", &self.orders),
            ("topics.registry", &self.registry),
            ("topics.order_events", &self.order_events),
            ("topics.dead_letter", &self.dead_letter),
            ("topics.exceptions", &self.exceptions),
            ("topics.head_end_commands", &self.head_end_commands),
            ("topics.head_end_results", &self.head_end_results),
            ("topics.weather", &self.weather),
            ("topics.emergencies", &self.emergencies),
            ("topics.customer_facts", &self.customer_facts),
            ("topics.control", &self.control),
            ("topics.campaign_control", &self.campaign_control),
            ("topics.campaign_events", &self.campaign_events),
            ("topics.reads", &self.reads),
        ]
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// CSV or NDJSON file of meters loaded at start.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetersConfig {
    #[serde(deserialize_with = "duration::secs")]
    pub idle_passivate_secs: u64,
    /// Threads hosting meter actors; 0 = one per core.
    pub arbiters: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadEndMode {
    Simulator,
    Kafka,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadEndConfig {
    pub mode: HeadEndMode,
    #[serde(deserialize_with = "duration::secs")]
    pub command_deadline_secs: u64,
    pub max_attempts: u32,
    #[serde(deserialize_with = "duration::millis")]
    pub backoff_initial_ms: u64,
    #[serde(deserialize_with = "duration::millis")]
    pub backoff_max_ms: u64,
    /// On SIGTERM: after the intake and campaign releases stop, wait up to this long for the
    /// commands in flight to be answered before exiting (those still open are resolved by a
    /// status check at the next start). 0 = exit at once.
    #[serde(default = "default_drain_secs", deserialize_with = "duration::secs")]
    pub(crate) shutdown_drain_secs: u64,
    /// How long an armed switch (a reconnect under a `reconnect = "arm"` profile) waits for
    /// the customer to press the button before the order fails `armed_not_closed`.
    #[serde(default = "default_arm_timeout", deserialize_with = "duration::secs")]
    pub arm_timeout_secs: u64,
    /// When a head-end counts as down, and what happens to the orders it holds.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// At most so many commands in flight per network segment.
    #[serde(default)]
    pub throttle: ThrottleConfig,
    /// How each head-end works (by head-end id; a head-end not listed closes the switch and
    /// asks no load-side voltage check).
    #[serde(default)]
    pub profiles: std::collections::BTreeMap<String, HeadEndProfile>,
    pub simulator: SimulatorConfig,
}

fn default_intake_window() -> usize {
    4096
}

fn default_arm_timeout() -> u64 {
    24 * 3600
}

/// How one head-end executes reconnects and whether it checks the load side.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadEndProfile {
    /// `close` (default) or `arm`; a meter's registry `reconnect` overrides it.
    #[serde(default)]
    pub reconnect: crate::domain::ReconnectMode,
    /// Commands carry `check_load_side_voltage`: before a connect the meter refuses with
    /// `load_side_voltage` if voltage is present; after a disconnect it reports it.
    #[serde(default)]
    pub check_load_side_voltage: bool,
    /// The head-end's meters can take a demand limit (`load_limit` command): a rule pack's
    /// `[load_limit]` then limits instead of cutting off.
    #[serde(default)]
    pub load_limit: bool,
}

/// Throttling per network segment (see `head_end::segments`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    /// Which registry field names the segment: `collector` (`collector_id`) or `feeder`
    /// (`feeder_id`).
    pub segment: SegmentBy,
    /// Commands in flight at once per segment; 0 = no throttling. Power restorations are
    /// served first.
    pub max_in_flight: u32,
}

/// The registry field a segment is named by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentBy {
    #[default]
    Collector,
    Feeder,
}

/// The per-head-end circuit breaker (see `head_end::breaker`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    pub enabled: bool,
    /// The sliding window the failure share is measured over.
    #[serde(deserialize_with = "duration::secs")]
    pub window_secs: u64,
    /// At least this many answers (or missed deadlines) in the window before it may open.
    pub min_commands: u32,
    /// The share of communication failures (and missed deadlines) that opens it.
    pub failure_ratio: f64,
    /// How long it stays open before probes go; doubled after each failed probe, up to
    /// `open_max_secs`.
    #[serde(deserialize_with = "duration::secs")]
    pub open_secs: u64,
    #[serde(deserialize_with = "duration::secs")]
    pub open_max_secs: u64,
    /// Commands let through when half-open; the first answer decides.
    pub probes: u32,
    /// An order held by an open breaker this long fails with `field_order_needed`.
    #[serde(deserialize_with = "duration::secs")]
    pub field_order_after_secs: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            enabled: true,
            window_secs: 30,
            min_commands: 20,
            failure_ratio: 0.5,
            open_secs: 30,
            open_max_secs: 600,
            probes: 3,
            field_order_after_secs: 4 * 3600,
        }
    }
}

fn default_drain_secs() -> u64 {
    30
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorConfig {
    #[serde(deserialize_with = "duration::millis")]
    pub latency_median_ms: u64,
    #[serde(deserialize_with = "duration::millis")]
    pub latency_p99_ms: u64,
    pub failure_rate: f64,
    pub no_answer_rate: f64,
    pub lsv_reject_rate: f64,
    /// Probability that a disconnect leaves voltage on the load side (reported in the answer
    /// when the command asks for the check).
    #[serde(default)]
    pub lsv_after_disconnect_rate: f64,
    /// Probability that the customer presses the button of an armed switch (within
    /// `arm_press_ms`); the others never do.
    #[serde(default = "one_f64")]
    pub arm_press_rate: f64,
    /// How long after arming the customer presses (uniform up to this).
    #[serde(default = "default_arm_press", deserialize_with = "duration::millis")]
    pub arm_press_ms: u64,
    /// Outages of a head-end or of a network segment: commands to it in the window get no
    /// answer (their deadline passes). Times are from the simulator's start.
    #[serde(default)]
    pub outages: Vec<SimOutage>,
    pub(crate) seed: u64,
}

fn one_f64() -> f64 {
    1.0
}

fn default_arm_press() -> u64 {
    60_000
}

/// One simulated outage: a head-end, a network segment, or a segment of one head-end.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimOutage {
    /// The head-end that goes dark; empty = any head-end (with `segment`).
    #[serde(default)]
    pub head_end: String,
    /// The network segment that goes dark: the meters whose registry `collector_id` or
    /// `feeder_id` is this (a collector down, a feeder out); empty = the whole head-end.
    #[serde(default)]
    pub segment: String,
    /// Starts this long after the simulator starts.
    #[serde(deserialize_with = "duration::secs")]
    pub after_secs: u64,
    #[serde(deserialize_with = "duration::secs")]
    pub for_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StoreBackend {
    /// redb files under `data_dir` (the default: no server needed).
    Embedded,
    /// A ScyllaDB (or Apache Cassandra) cluster, `[store.scylla]`.
    Scylla,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreConfig {
    /// (`store.kind`, its name before the ScyllaDB backend, is read as `backend`.)
    pub(crate) backend: StoreBackend,
    #[serde(default)]
    pub(crate) scylla: ScyllaConfig,
    pub(crate) group_commit_max: usize,
    /// Embedded store files, split by meter, each with its own writer thread.
    pub(crate) shards: usize,
    /// redb's page cache over all the files, in MiB (split evenly between them).
    pub(crate) cache_mib: usize,
    /// Embedded store: a write is made durable by its file's write-ahead log (an append and a
    /// sync) and committed to redb without a sync; a checkpoint syncs redb every 2 s
    /// (src/store/wal.rs). `false`: every commit is synced by redb itself.
    #[serde(default = "on")]
    pub(crate) wal: bool,
    /// Embedded store, with `wal`: a meter shard's writer answers once a round is in the log,
    /// and an applier thread puts it in redb and checkpoints ("Logged, then applied" in
    /// docs/architecture.md). Off by default: on 2 cores it costs throughput.
    #[serde(default)]
    pub(crate) applier: bool,
}

fn on() -> bool {
    true
}

/// Keyspace replication: `simple` (one data centre, a laptop or a test) or
/// `network_topology` (production: replicas per data centre, racks honoured).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReplicationStrategy {
    Simple,
    NetworkTopology,
}

/// The consistency of every read and write (CQL's names, in snake case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CqlConsistency {
    One,
    LocalOne,
    Quorum,
    LocalQuorum,
    EachQuorum,
    All,
}

/// `[store.scylla]`: the production store (`store.backend = "scylla"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ScyllaConfig {
    /// Contact points, comma-separated `host:port` (the driver discovers the rest).
    pub(crate) nodes: String,
    pub(crate) keyspace: String,
    pub(crate) replication: ReplicationStrategy,
    /// Replicas, for `replication = "simple"`.
    pub(crate) replication_factor: u32,
    /// Replicas per data centre, for `replication = "network_topology"` (e.g. `{ dc1 = 3 }`).
    pub(crate) datacenters: std::collections::BTreeMap<String, u32>,
    /// The data centre this instance runs in: requests go to its nodes first (needed for the
    /// `local_*` consistencies to mean something with several data centres).
    pub(crate) local_datacenter: Option<String>,
    pub(crate) consistency: CqlConsistency,
    pub(crate) username: Option<String>,
    /// Set it from the environment: `SWITCHYARD__STORE__SCYLLA__PASSWORD`.
    pub(crate) password: Option<String>,
    pub(crate) tls: CqlTls,
    #[serde(deserialize_with = "duration::millis")]
    pub(crate) request_timeout_ms: u64,
    #[serde(deserialize_with = "duration::millis")]
    pub(crate) connect_timeout_ms: u64,
    /// The audit trail's partitions: one per meter and bucket of this length (also the
    /// TimeWindowCompactionStrategy window). Fixed once rows are written.
    #[serde(deserialize_with = "duration::secs")]
    pub(crate) audit_bucket_secs: u64,
    /// How long audit rows are kept (a TTL on every row); 0 keeps them for ever.
    #[serde(deserialize_with = "duration::secs")]
    pub(crate) audit_retention_secs: u64,
    /// Ownership units of the open-work index (what a later instance loads when it takes
    /// over): set it to the orders topic's partition count. Fixed once rows are written.
    pub(crate) ownership_units: u32,
    /// Fencing (docs/architecture.md "Fencing"): how long an instance may go without renewing
    /// a unit's lease before another instance assigned the unit takes it. It stops counting
    /// its own lease after 4/5 of this; renewals go every 1/5.
    #[serde(deserialize_with = "duration::millis")]
    pub(crate) lease_ms: u64,
    /// Statements one write may have in flight at once.
    pub(crate) max_in_flight: usize,
    /// Apply the schema migrations at start (else run `switchyard migrate` first).
    pub(crate) migrate_at_start: bool,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        ScyllaConfig {
            nodes: "127.0.0.1:9042".into(),
            keyspace: "switchyard".into(),
            replication: ReplicationStrategy::Simple,
            replication_factor: 1,
            datacenters: Default::default(),
            local_datacenter: None,
            consistency: CqlConsistency::LocalQuorum,
            username: None,
            password: None,
            tls: CqlTls::default(),
            request_timeout_ms: 10_000,
            connect_timeout_ms: 5_000,
            audit_bucket_secs: 86_400,
            audit_retention_secs: 400 * 86_400,
            ownership_units: 64,
            lease_ms: 5_000,
            max_in_flight: 1024,
            migrate_at_start: true,
        }
    }
}

/// TLS to the CQL nodes (rustls).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CqlTls {
    pub(crate) enabled: bool,
    /// PEM file of the certificate authorities to trust (else the system's, from
    /// /etc/ssl/certs/ca-certificates.crt).
    pub(crate) ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM), when the cluster asks for one.
    pub(crate) cert_file: Option<PathBuf>,
    pub(crate) key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Bearer tokens of the operator API (`http::auth`).
    #[serde(default)]
    pub auth: HttpAuthConfig,
    /// HTTPS on `listen` (rustls): both files set, or neither (plain HTTP).
    #[serde(default)]
    pub tls: HttpTlsConfig,
}

/// The operator endpoint's certificate chain and private key (PEM files).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpTlsConfig {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// The operator API's callers: tokens stored as SHA-256 hashes, each `name:role:sha256-hex`
/// (role viewer, operator or supervisor; `switchyard token hash` prints the hash of a token).
/// Without any, reads are open and every write is refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpAuthConfig {
    /// Entries in the config or the environment
    /// (`SWITCHYARD__HTTP__AUTH__TOKENS='["kim:supervisor:<hash>"]'`).
    pub tokens: Vec<String>,
    /// A file with one entry per line (`#` starts a comment), read at start.
    pub tokens_file: Option<PathBuf>,
    /// Reads answer without a token when the listener is on a loopback address.
    pub open_reads_on_loopback: bool,
    /// Requests each token (open reads share one bucket, `anonymous`) may make per second on
    /// average, and at once (`burst`); more are answered 429 with `Retry-After`. 0: no limit.
    pub requests_per_second: u32,
    pub burst: u32,
}

/// What an operator API token may do: viewer < operator < supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ApiRole {
    Viewer,
    Operator,
    Supervisor,
}

impl ApiRole {
    fn parse(s: &str) -> Option<ApiRole> {
        match s {
            "viewer" => Some(ApiRole::Viewer),
            "operator" => Some(ApiRole::Operator),
            "supervisor" => Some(ApiRole::Supervisor),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            ApiRole::Viewer => "viewer",
            ApiRole::Operator => "operator",
            ApiRole::Supervisor => "supervisor",
        }
    }
}

/// One configured token: its name, role and SHA-256 (lowercase hex).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TokenEntry {
    pub(crate) name: String,
    pub(crate) role: ApiRole,
    pub(crate) sha256: String,
}

/// One `name:role:sha256-hex` entry.
fn token_entry(s: &str) -> Result<TokenEntry, String> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    let [name, role, hash] = parts[..] else {
        return Err(format!(
            "`{s}` is not `name:role:sha256-hex` (e.g. `kim:supervisor:` and the output of `switchyard token hash`)"
        ));
    };
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "token name `{name}` must be 1-64 printable ASCII characters"
        ));
    }
    let role = ApiRole::parse(role).ok_or_else(|| {
        format!("token `{name}`: role `{role}` is not viewer, operator or supervisor")
    })?;
    let sha256 = hash.to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "token `{name}`: `{hash}` is not a SHA-256 in hex (64 characters): store the hash, never the token"
        ));
    }
    Ok(TokenEntry {
        name: name.to_string(),
        role,
        sha256,
    })
}

impl HttpAuthConfig {
    /// Every configured token (the list, then the file), checked: errors name the key (and
    /// the file's line). Two entries with the same hash are refused (their callers could not
    /// be told apart).
    pub(crate) fn entries(&self) -> Result<Vec<TokenEntry>, ConfigError> {
        let mut out: Vec<TokenEntry> = Vec::new();
        let mut add = |key: String, line: &str| -> Result<(), ConfigError> {
            let e = token_entry(line).map_err(|m| invalid(&key, &m))?;
            if out.iter().any(|o| o.sha256 == e.sha256) {
                return Err(invalid(
                    &key,
                    &format!(
                        "token `{}` has the hash of another token: give every caller a token of its own",
                        e.name
                    ),
                ));
            }
            out.push(e);
            Ok(())
        };
        for (i, t) in self.tokens.iter().enumerate() {
            add(format!("http.auth.tokens[{i}]"), t)?;
        }
        if let Some(path) = &self.tokens_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    "http.auth.tokens_file",
                    &format!("cannot read {}: {e}", path.display()),
                )
            })?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                add(
                    format!("http.auth.tokens_file ({} line {})", path.display(), n + 1),
                    line,
                )?;
            }
        }
        Ok(out)
    }
}

impl Default for HttpAuthConfig {
    fn default() -> HttpAuthConfig {
        HttpAuthConfig {
            tokens: Vec::new(),
            tokens_file: None,
            open_reads_on_loopback: true,
            requests_per_second: 20,
            burst: 50,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

impl Config {
    /// Loads a config file layered over the embedded defaults (or the defaults alone when `path`
    /// is `None`), applies environment overrides from `std::env::vars()`, and validates the
    /// result.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Like [`Config::load`] with the given environment instead of the process's. A file is
    /// layered over the embedded defaults and its relative paths ([`PATH_KEYS`]) are resolved
    /// against its directory.
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let Some(p) = path else {
            return Self::from_toml_str(DEFAULT_TOML, "<embedded default.toml>", env);
        };
        let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
            path: p.to_path_buf(),
            source,
        })?;
        // `absolute` does not touch the filesystem (no symlinks resolved): the directory as
        // given, made absolute against the working directory at load time.
        let file = std::path::absolute(p).map_err(|source| ConfigError::Read {
            path: p.to_path_buf(),
            source,
        })?;
        let dir = file.parent().unwrap_or(Path::new("/"));
        Self::from_toml_str_in(&text, &p.display().to_string(), Some(dir), env)
    }

    /// Parses `text` layered over the embedded defaults; relative paths in it stay relative to
    /// the working directory. See [`Config::from_toml_str_in`].
    pub(crate) fn from_toml_str(
        text: &str,
        name: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Self::from_toml_str_in(text, name, None, env)
    }

    /// Parses `text` (named `name` in errors), resolves its relative paths ([`PATH_KEYS`])
    /// against `base_dir` when given, merges it over the embedded defaults (tables key by key),
    /// applies the `SWITCHYARD__*` overrides from `env`, deserialises and validates.
    pub(crate) fn from_toml_str_in(
        text: &str,
        name: &str,
        base_dir: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let syntax = |name: &str, e: toml::de::Error| ConfigError::Syntax {
            path: name.to_string(),
            message: e.to_string(),
        };
        let mut file: toml::Table = text.parse().map_err(|e| syntax(name, e))?;
        if let Some(dir) = base_dir {
            resolve_paths(&mut file, dir);
        }
        // `store.kind` is what `store.backend` was called before the ScyllaDB backend.
        if let Some(toml::Value::Table(store)) = file.get_mut("store") {
            if let Some(kind) = store.remove("kind") {
                store.entry("backend").or_insert(kind);
            }
        }
        let mut table: toml::Table = DEFAULT_TOML
            .parse()
            .map_err(|e| syntax("<embedded default.toml>", e))?;
        merge_tables(&mut table, file);
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        overrides.sort();
        for (var, value) in overrides {
            apply_env_override(&mut table, &var, &value)?;
        }
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                let message = e.inner().to_string();
                deserialize_error(&path, message)
            })?;
        config.validate()?;
        Ok(config)
    }

    /// The rule pack in force, tightened by the utility overlay; errors name the key.
    pub(crate) fn load_policy(&self) -> Result<crate::policy::Policy, ConfigError> {
        let read = |key: &str, path: &Path| {
            std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    key,
                    format!("cannot read rule pack {}: {e}", path.display()),
                )
            })
        };
        let mut policy = match &self.policy.rule_pack {
            None => crate::policy::Policy::baseline(),
            Some(p) => crate::policy::RulePack::from_toml(
                &read("policy.rule_pack", p)?,
                &p.display().to_string(),
            )
            .map_err(|e| invalid("policy.rule_pack", e.to_string()))?,
        };
        if let Some(p) = &self.policy.utility_overlay {
            policy = policy
                .tightened_by(
                    &read("policy.utility_overlay", p)?,
                    &p.display().to_string(),
                )
                .map_err(|e| invalid("policy.utility_overlay", e.to_string()))?;
        }
        Ok(policy)
    }

    /// Semantic checks that serde cannot express. Each error names the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        self.sla.validate()?;
        self.reads.validate()?;
        let c = &self.clock;
        if !(1.0..=3600.0).contains(&c.speed) {
            return Err(invalid(
                "clock.speed",
                "must be between 1 and 3600 business seconds per wall second",
            ));
        }
        if c.is_shifted() && !self.embedded_kafka() && !c.allow_with_external_broker {
            let key = if c.start_at.is_some() {
                "clock.start_at"
            } else {
                "clock.speed"
            };
            return Err(invalid(
                key,
                "shifts business time (a UAT setting) while kafka.brokers names an external cluster; \
                 if that cluster is a UAT one, also set clock.allow_with_external_broker = true, \
                 otherwise remove the clock settings",
            ));
        }
        let k = &self.kafka;
        if k.group_id.trim().is_empty() {
            return Err(invalid("kafka.group_id", "must not be empty"));
        }
        if let Some(id) = &k.instance_id {
            if !kafka_name(id) {
                return Err(invalid(
                    "kafka.instance_id",
                    format!("`{id}` must be 1-249 of [a-zA-Z0-9._-] (e.g. the pod name), unique per instance; remove the key for dynamic membership"),
                ));
            }
        }
        if !(1_000..=1_800_000).contains(&k.session_timeout_ms) {
            return Err(invalid(
                "kafka.session_timeout_ms",
                "must be between 1s and 30m (and within the broker's group.min/max.session.timeout.ms, 6 s to 30 min by default)",
            ));
        }
        if !(1..=1024).contains(&k.embedded_partitions) {
            return Err(invalid(
                "kafka.embedded_partitions",
                "must be between 1 and 1024",
            ));
        }
        if k.intake_window > 10_000_000 {
            return Err(invalid(
                "kafka.intake_window",
                "must be at most 10000000 (0 turns the window off)",
            ));
        }
        if !(1..=100_000).contains(&k.intake_batch_max) {
            return Err(invalid(
                "kafka.intake_batch_max",
                "must be between 1 and 100000",
            ));
        }
        if k.unknown_meter_grace_ms > 60_000 {
            return Err(invalid(
                "kafka.unknown_meter_grace_ms",
                "must be at most 60000 (60 s): the intake waits this long, holding its batch",
            ));
        }
        if k.intake_linger_ms > 10_000 {
            return Err(invalid(
                "kafka.intake_linger_ms",
                "must be at most 10000 (10 s)",
            ));
        }
        for key in k.client.keys() {
            if RESERVED_CLIENT_KEYS.contains(&key.as_str()) {
                return Err(invalid(
                    &format!("kafka.client.\"{key}\""),
                    "is set by switchyard itself (delivery guarantees depend on it); remove it",
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (key, topic) in self.topics.all() {
            if !kafka_name(topic) {
                return Err(invalid(
                    key,
                    format!("`{topic}` is not a valid Kafka topic name (1-249 of [a-zA-Z0-9._-])"),
                ));
            }
            if !seen.insert(topic) {
                return Err(invalid(
                    key,
                    format!("topic `{topic}` is used for two purposes"),
                ));
            }
        }
        if let Some(file) = &self.registry.file {
            let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !matches!(ext, "csv" | "ndjson" | "jsonl") {
                return Err(invalid(
                    "registry.file",
                    format!("{} must end in .csv, .ndjson or .jsonl", file.display()),
                ));
            }
        }
        self.load_policy()?;
        if self.meters.idle_passivate_secs == 0 {
            return Err(invalid("meters.idle_passivate_secs", "must be at least 1"));
        }
        if self.meters.arbiters > 256 {
            return Err(invalid(
                "meters.arbiters",
                "must be at most 256 (0 = one per core)",
            ));
        }
        let h = &self.head_end;
        if h.shutdown_drain_secs > 3600 {
            return Err(invalid(
                "head_end.shutdown_drain_secs",
                "must be at most 3600 (a drain longer than an hour outlives any service manager's stop timeout)",
            ));
        }
        if h.command_deadline_secs == 0 {
            return Err(invalid(
                "head_end.command_deadline_secs",
                "must be at least 1",
            ));
        }
        if !(1..=20).contains(&h.max_attempts) {
            return Err(invalid("head_end.max_attempts", "must be between 1 and 20"));
        }
        if h.backoff_initial_ms == 0 {
            return Err(invalid("head_end.backoff_initial_ms", "must be at least 1"));
        }
        if h.backoff_max_ms < h.backoff_initial_ms {
            return Err(invalid(
                "head_end.backoff_max_ms",
                "must be at least head_end.backoff_initial_ms",
            ));
        }
        if h.arm_timeout_secs == 0 {
            return Err(invalid("head_end.arm_timeout_secs", "must be at least 1"));
        }
        let b = &h.breaker;
        if b.window_secs == 0 {
            return Err(invalid(
                "head_end.breaker.window_secs",
                "must be at least 1",
            ));
        }
        if b.min_commands == 0 {
            return Err(invalid(
                "head_end.breaker.min_commands",
                "must be at least 1",
            ));
        }
        if !(b.failure_ratio > 0.0 && b.failure_ratio <= 1.0) {
            return Err(invalid(
                "head_end.breaker.failure_ratio",
                format!("{} is not a share in (0, 1]", b.failure_ratio),
            ));
        }
        if b.open_secs == 0 {
            return Err(invalid("head_end.breaker.open_secs", "must be at least 1"));
        }
        if b.open_max_secs < b.open_secs {
            return Err(invalid(
                "head_end.breaker.open_max_secs",
                "must be at least head_end.breaker.open_secs",
            ));
        }
        if b.probes == 0 {
            return Err(invalid("head_end.breaker.probes", "must be at least 1"));
        }
        if b.field_order_after_secs < b.open_secs {
            return Err(invalid(
                "head_end.breaker.field_order_after_secs",
                "must be at least head_end.breaker.open_secs (an order is held at least one opening before it becomes a field order)",
            ));
        }
        let s = &h.simulator;
        if s.latency_median_ms > s.latency_p99_ms {
            return Err(invalid(
                "head_end.simulator.latency_p99_ms",
                "must be at least head_end.simulator.latency_median_ms",
            ));
        }
        for (key, rate) in [
            ("head_end.simulator.failure_rate", s.failure_rate),
            ("head_end.simulator.no_answer_rate", s.no_answer_rate),
            ("head_end.simulator.lsv_reject_rate", s.lsv_reject_rate),
            (
                "head_end.simulator.lsv_after_disconnect_rate",
                s.lsv_after_disconnect_rate,
            ),
            ("head_end.simulator.arm_press_rate", s.arm_press_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(invalid(
                    key,
                    format!("{rate} is not a probability in [0, 1]"),
                ));
            }
        }
        if s.failure_rate + s.no_answer_rate + s.lsv_reject_rate > 1.0 {
            return Err(invalid(
                "head_end.simulator",
                "failure_rate + no_answer_rate + lsv_reject_rate must not exceed 1",
            ));
        }
        if let Some(i) = s
            .outages
            .iter()
            .position(|o| o.head_end.is_empty() && o.segment.is_empty())
        {
            return Err(invalid(
                &format!("head_end.simulator.outages[{i}]"),
                "names neither a head_end nor a segment: say what goes dark",
            ));
        }
        if self.store.applier && !self.store.wal {
            return Err(invalid(
                "store.applier",
                "needs store.wal = true (the applier puts in the file what the write-ahead log made durable): set store.wal = true or store.applier = false",
            ));
        }
        if !(1..=64).contains(&self.store.shards) {
            return Err(invalid(
                "store.shards",
                "must be between 1 and 64 (one writer thread per shard; about one per core)",
            ));
        }
        if !(8..=1 << 20).contains(&self.store.cache_mib) {
            return Err(invalid(
                "store.cache_mib",
                "must be between 8 and 1048576 (MiB of page cache over all the store's files)",
            ));
        }
        if !(1..=1_000_000).contains(&self.store.group_commit_max) {
            return Err(invalid(
                "store.group_commit_max",
                "must be between 1 and 1000000",
            ));
        }
        self.validate_scylla()?;
        // The operator API's tokens: each entry well formed, the file readable.
        self.http.auth.entries()?;
        match (&self.http.tls.cert_file, &self.http.tls.key_file) {
            (Some(_), None) => {
                return Err(invalid(
                    "http.tls.key_file",
                    "must be set with http.tls.cert_file (or unset both for plain HTTP)",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "http.tls.cert_file",
                    "must be set with http.tls.key_file (or unset both for plain HTTP)",
                ))
            }
            _ => {}
        }
        if self.http.auth.requests_per_second > 0 && self.http.auth.burst == 0 {
            return Err(invalid(
                "http.auth.burst",
                "must be at least 1 when http.auth.requests_per_second is set (0 turns the limit off)",
            ));
        }
        if !k.brokers.trim().is_empty() {
            for b in k.brokers.split(',') {
                let b = b.trim();
                let ok = b
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
                if !ok {
                    return Err(invalid(
                        "kafka.brokers",
                        format!("`{b}` is not host:port; give a comma-separated list such as kafka-1:9092,kafka-2:9092, or leave it empty for the embedded Kafka"),
                    ));
                }
            }
        }
        if !valid_log_filter(&self.log.level)
            || tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err()
        {
            return Err(invalid(
                "log.level",
                format!(
                    "`{}` is not a tracing filter (e.g. info, switchyard=debug)",
                    self.log.level
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn embedded_kafka(&self) -> bool {
        self.kafka.brokers.trim().is_empty()
    }

    pub(crate) fn command_deadline(&self) -> Duration {
        Duration::from_secs(self.head_end.command_deadline_secs)
    }
}

/// A deserialisation error as [`ConfigError::Invalid`] naming the key (serde_path_to_error's
/// path includes an unknown field's own name).
fn deserialize_error(path: &str, message: String) -> ConfigError {
    let key = if path == "." { "<root>" } else { path };
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'));
    if let Some((_, expected)) = unknown {
        // toml adds a line naming the table (`in `kafka``); the key already says it.
        let expected = expected.lines().next().unwrap_or("");
        let expected = expected.trim_start_matches(',').trim();
        return invalid(key, format!("unknown key ({expected})"));
    }
    invalid(key, message)
}

/// Sets every key of `over` in `base`; a table present in both is merged key by key.
fn merge_tables(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Makes the relative [`PATH_KEYS`] values in a config file's table relative to `dir`. Values
/// of the wrong type or empty are left for deserialisation / validation to refuse.
fn resolve_paths(table: &mut toml::Table, dir: &Path) {
    for key in PATH_KEYS {
        let mut segments = key.split('.').peekable();
        let mut cursor = &mut *table;
        while let Some(seg) = segments.next() {
            if segments.peek().is_none() {
                if let Some(toml::Value::String(s)) = cursor.get_mut(seg) {
                    if !s.is_empty() && Path::new(s.as_str()).is_relative() {
                        *s = dir.join(s.as_str()).display().to_string();
                    }
                }
                break;
            }
            match cursor.get_mut(seg) {
                Some(toml::Value::Table(t)) => cursor = t,
                _ => break,
            }
        }
    }
}

/// `deserialize_with` helpers for duration keys: an integer in the key's unit (as before), or
/// a string in jiff's "friendly" duration format: `"30s"`, `"5m"`, `"1h30m"`, `"250ms"`,
/// `"2 hours"`, `"1.5s"`. The field stays a `u64` in its unit; a string that is not a whole
/// number of that unit is refused.
mod duration {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Deserializer, Visitor};

    const EXAMPLES: &str = "\"30s\", \"5m\", \"1h30m\", \"250ms\"";

    #[derive(Clone, Copy)]
    enum Unit {
        Secs,
        Millis,
    }

    impl Unit {
        fn name(self) -> &'static str {
            match self {
                Unit::Secs => "seconds",
                Unit::Millis => "milliseconds",
            }
        }

        fn nanos(self) -> u128 {
            match self {
                Unit::Secs => 1_000_000_000,
                Unit::Millis => 1_000_000,
            }
        }
    }

    struct UnitVisitor(Unit);

    impl Visitor<'_> for UnitVisitor {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(
                f,
                "a whole number of {} or a duration string such as {EXAMPLES}",
                self.0.name()
            )
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v)
                .map_err(|_| E::custom(format!("{v} is negative; {}", Expecting(self.0))))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            parse(v, self.0).map_err(E::custom)
        }
    }

    struct Expecting(Unit);

    impl fmt::Display for Expecting {
        fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(
                f,
                "expected a whole number of {} or a duration such as {EXAMPLES}",
                self.0.name()
            )
        }
    }

    fn parse(text: &str, unit: Unit) -> Result<u64, String> {
        let t = text.trim();
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            return t.parse().map_err(|_| format!("`{text}` is too large"));
        }
        static PARSER: jiff::fmt::friendly::SpanParser = jiff::fmt::friendly::SpanParser::new();
        let d: Duration = PARSER
            .parse_unsigned_duration(t)
            .map_err(|e| format!("`{text}` is not a duration ({e}); {}", Expecting(unit)))?;
        let nanos = d.as_nanos();
        if nanos % unit.nanos() != 0 {
            return Err(format!(
                "`{text}` is not a whole number of {}; {}",
                unit.name(),
                Expecting(unit)
            ));
        }
        u64::try_from(nanos / unit.nanos()).map_err(|_| format!("`{text}` is too large"))
    }

    pub(super) fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(UnitVisitor(Unit::Secs))
    }

    pub(super) fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(UnitVisitor(Unit::Millis))
    }
}

/// `SWITCHYARD__HEAD_END__SIMULATOR__SEED=7` sets `head_end.simulator.seed = 7`. Under
/// `kafka.client` the rest of the name becomes a librdkafka property (`SASL_PASSWORD` ->
/// `sasl.password`). Values are parsed as TOML scalars when they parse, else taken as strings.
fn apply_env_override(table: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let rest = &var[ENV_PREFIX.len()..];
    let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(ConfigError::Env {
            var: var.to_string(),
            message: "empty key segment; use SWITCHYARD__SECTION__KEY".into(),
        });
    }
    let (path, leaf): (Vec<String>, String) =
        if parts.len() >= 3 && parts[0] == "kafka" && parts[1] == "client" {
            (
                vec!["kafka".into(), "client".into()],
                parts[2..].join("__").replace('_', "."),
            )
        } else {
            let (leaf, path) = parts.split_last().expect("non-empty");
            (path.to_vec(), leaf.clone())
        };
    let mut cursor = table;
    for seg in &path {
        let entry = cursor
            .entry(seg.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cursor = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(ConfigError::Env {
                    var: var.to_string(),
                    message: format!("`{seg}` is a value, not a section"),
                })
            }
        };
    }
    let in_client = path.len() == 2 && path[1] == "client";
    let parsed = if in_client {
        toml::Value::String(value.to_string())
    } else {
        format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_string()))
    };
    cursor.insert(leaf, parsed);
    Ok(())
}

/// `deserialize_with` for an instant: an RFC 3339 string, or a TOML offset date-time (written
/// unquoted in a file, or in an environment override).
mod instant {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Toml(toml::value::Datetime),
    }

    pub(super) fn optional<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<jiff::Timestamp>, D::Error> {
        let text = match Raw::deserialize(d)? {
            Raw::Text(t) => t,
            Raw::Toml(t) => t.to_string(),
        };
        text.parse().map(Some).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not an instant with an offset ({e}); write e.g. 2026-12-24T07:00:00-05:00"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uat_clock_takes_an_instant_and_a_speed_and_is_refused_with_an_external_broker() {
        // Quoted, unquoted and from the environment.
        let c =
            from_text("[clock]\nstart_at = \"2026-12-25T09:00:00-05:00\"\nspeed = 60\n").unwrap();
        assert_eq!(
            c.clock.start_at,
            Some("2026-12-25T14:00:00Z".parse().unwrap())
        );
        assert_eq!(c.clock.speed, 60.0);
        assert!(c.clock.is_shifted());
        let c = from_text("[clock]\nstart_at = 2026-12-25T09:00:00-05:00\n").unwrap();
        assert_eq!(
            c.clock.start_at,
            Some("2026-12-25T14:00:00Z".parse().unwrap())
        );
        let c = Config::load_with_env(
            None,
            env(&[("SWITCHYARD__CLOCK__START_AT", "2026-12-25T09:00:00-05:00")]),
        )
        .unwrap();
        assert_eq!(
            c.clock.start_at,
            Some("2026-12-25T14:00:00Z".parse().unwrap())
        );
        // The defaults are the wall clock.
        let c = Config::load_with_env(None, no_env()).unwrap();
        assert!(!c.clock.is_shifted());

        // No offset, nonsense, a speed out of range: refused naming the key.
        let (key, message) = rejected(from_text("[clock]\nstart_at = 2026-12-25T09:00:00\n"));
        assert_eq!(key, "clock.start_at");
        assert!(message.contains("offset"), "{message}");
        assert_eq!(
            rejected_key(from_text("[clock]\nstart_at = \"Christmas\"\n")),
            "clock.start_at"
        );
        assert_eq!(
            rejected_key(from_text("[clock]\nspeed = 0.5\n")),
            "clock.speed"
        );
        assert_eq!(
            rejected_key(from_text("[clock]\nspeed = 100000\n")),
            "clock.speed"
        );

        // With an external broker: refused unless explicitly allowed.
        let uat = "[kafka]\nbrokers = \"uat-kafka:9092\"\n[clock]\nstart_at = \"2026-12-25T09:00:00-05:00\"\n";
        let (key, message) = rejected(from_text(uat));
        assert_eq!(key, "clock.start_at");
        assert!(
            message.contains("clock.allow_with_external_broker"),
            "{message}"
        );
        let fast = "[kafka]\nbrokers = \"uat-kafka:9092\"\n[clock]\nspeed = 10\n";
        assert_eq!(rejected_key(from_text(fast)), "clock.speed");
        let allowed = from_text(&format!("{uat}allow_with_external_broker = true\n")).unwrap();
        assert!(allowed.clock.is_shifted());
    }

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The key and message of a [`ConfigError::Invalid`] rejection; panics on anything else.
    fn rejected(r: Result<Config, ConfigError>) -> (String, String) {
        match r {
            Err(ConfigError::Invalid { key, message }) => (key, message),
            Err(other) => panic!("expected ConfigError::Invalid, got {other:?}"),
            Ok(_) => panic!("accepted"),
        }
    }

    fn rejected_key(r: Result<Config, ConfigError>) -> String {
        rejected(r).0
    }

    fn from_text(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, "t", no_env())
    }

    fn repo(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    #[test]
    fn the_scylla_store_section_is_validated_naming_its_keys() {
        let scylla = |extra: &str| format!("[store]\nbackend = \"scylla\"\n{extra}");
        let ok = from_text(&scylla("")).unwrap();
        assert_eq!(ok.store.backend, StoreBackend::Scylla);
        assert_eq!(ok.store.scylla.consistency, CqlConsistency::LocalQuorum);
        assert_eq!(ok.store.scylla.audit_bucket_secs, 86_400);
        assert_eq!(ok.store.scylla.audit_retention_secs, 400 * 86_400);
        for (extra, key) in [
            ("[store.scylla]\nnodes = \"scylla-1\"", "store.scylla.nodes"),
            (
                "[store.scylla]\nkeyspace = \"Bad-Name\"",
                "store.scylla.keyspace",
            ),
            (
                "[store.scylla]\nreplication = \"network_topology\"",
                "store.scylla.datacenters",
            ),
            (
                "[store.scylla]\nusername = \"svc\"",
                "store.scylla.password",
            ),
            (
                "[store.scylla]\naudit_bucket_secs = \"10s\"",
                "store.scylla.audit_bucket_secs",
            ),
            (
                "[store.scylla]\nownership_units = 0",
                "store.scylla.ownership_units",
            ),
            (
                "[store.scylla.tls]\ncert_file = \"c.pem\"",
                "store.scylla.tls.key_file",
            ),
            (
                "[kafka.client]\npartitioner = \"random\"",
                "kafka.client.partitioner",
            ),
        ] {
            assert_eq!(rejected_key(from_text(&scylla(extra))), key, "{extra}");
        }
        // The embedded store ignores the section; the key's old name still reads.
        let old = from_text("[store]\nkind = \"embedded\"\n[store.scylla]\nnodes = \"x\"").unwrap();
        assert_eq!(old.store.backend, StoreBackend::Embedded);
        // The password comes from the environment and is not printed.
        let c = Config::from_toml_str(
            &scylla("[store.scylla]\nusername = \"svc\""),
            "t",
            [(
                "SWITCHYARD__STORE__SCYLLA__PASSWORD".to_string(),
                "s3cret".to_string(),
            )],
        )
        .unwrap();
        assert_eq!(c.store.scylla.password.as_deref(), Some("s3cret"));
        let printed = toml::to_string_pretty(&c.redacted()).unwrap();
        assert!(!printed.contains("s3cret") && printed.contains("<redacted>"));
    }

    #[test]
    fn every_file_in_config_dir_loads_and_validates() {
        let dir = repo("config");
        let mut loaded = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) == Some("toml") {
                Config::load_with_env(Some(&path), no_env())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                loaded += 1;
            }
        }
        assert!(
            loaded >= 2,
            "expected default.toml and a production example"
        );
    }

    #[test]
    fn a_bad_rule_pack_is_a_startup_error_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let pack = dir.path().join("pack.toml");
        std::fs::write(
            &pack,
            "jurisdiction = \"x\"\nversion = \"1\"\ntime_zone = \"Mars/Olympus\"\n",
        )
        .unwrap();
        let pack = pack.display().to_string();
        let (key, message) = rejected(Config::load_with_env(
            None,
            env(&[("SWITCHYARD__POLICY__RULE_PACK", &pack)]),
        ));
        assert_eq!(key, "policy.rule_pack");
        assert!(message.contains("time_zone"), "{message}");
        let (key, message) = rejected(Config::load_with_env(
            None,
            env(&[("SWITCHYARD__POLICY__RULE_PACK", "/nonexistent/pack.toml")]),
        ));
        assert_eq!(key, "policy.rule_pack");
        assert!(message.contains("cannot read"), "{message}");
        // An overlay that would lift a bar is refused, naming the overlay key and the pack key.
        let overlay = dir.path().join("overlay.toml");
        std::fs::write(&overlay, "bar_holidays = false\n").unwrap();
        let va = repo("config/rules/virginia.toml").display().to_string();
        let overlay = overlay.display().to_string();
        let (key, message) = rejected(Config::load_with_env(
            None,
            env(&[
                ("SWITCHYARD__POLICY__RULE_PACK", &va),
                ("SWITCHYARD__POLICY__UTILITY_OVERLAY", &overlay),
            ]),
        ));
        assert_eq!(key, "policy.utility_overlay");
        assert!(message.contains("bar_holidays"), "{message}");
    }

    #[test]
    fn embedded_default_is_embedded_mode() {
        let c = Config::load_with_env(None, no_env()).unwrap();
        assert!(c.embedded_kafka());
        assert_eq!(c.head_end.mode, HeadEndMode::Simulator);
    }

    #[test]
    fn a_file_is_layered_over_the_defaults() {
        let c = from_text("[kafka]\nbrokers = \"k1:9092\"\n").unwrap();
        assert_eq!(c.kafka.brokers, "k1:9092");
        // The rest of [kafka] and every other section keep their defaults.
        assert_eq!(c.kafka.group_id, "switchyard");
        assert_eq!(c.kafka.intake_batch_max, 2000);
        assert_eq!(c.data_dir, Path::new("./switchyard-data"));
        assert_eq!(c.head_end.max_attempts, 3);
        // Nested tables merge key by key.
        let c = from_text("[head_end.simulator]\nseed = 7\n").unwrap();
        assert_eq!(c.head_end.simulator.seed, 7);
        assert_eq!(c.head_end.simulator.latency_median_ms, 800);
        assert_eq!(c.head_end.mode, HeadEndMode::Simulator);
        // An empty file is the defaults.
        let c = from_text("").unwrap();
        assert_eq!(c.topics.orders, "switchyard.orders.v1");
        // Values merged in are validated like any others.
        assert_eq!(
            rejected_key(from_text("[head_end]\nbackoff_max_ms = 1\n")),
            "head_end.backoff_max_ms"
        );
        // And a file read from disk layers the same way.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partial.toml");
        std::fs::write(&path, "[log]\nformat = \"json\"\n").unwrap();
        let c = Config::load_with_env(Some(&path), no_env()).unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, "info");
    }

    #[test]
    fn unknown_key_is_rejected_with_its_path() {
        let text = DEFAULT_TOML.replace("[kafka]\n", "[kafka]\nbrokres = \"x\"\n");
        let (key, message) = rejected(from_text(&text));
        assert_eq!(key, "kafka.brokres");
        assert!(message.contains("`brokers`"), "lists the keys: {message}");
        assert!(!message.contains('\n'), "one line: {message}");
        // Also in a partial file, at the top level and in a nested table.
        assert_eq!(
            rejected_key(from_text("[kafka]\nbrokres = \"x\"\n")),
            "kafka.brokres"
        );
        assert_eq!(rejected_key(from_text("data_dri = \"x\"\n")), "data_dri");
        assert_eq!(
            rejected_key(from_text("[head_end.simulator]\nsed = 1\n")),
            "head_end.simulator.sed"
        );
        assert_eq!(rejected_key(from_text("[kafak]\n")), "kafak");
    }

    #[test]
    fn syntax_and_read_errors_are_their_own_kinds() {
        match from_text("[kafka\n") {
            Err(ConfigError::Syntax { path, .. }) => assert_eq!(path, "t"),
            other => panic!("expected ConfigError::Syntax, got {:?}", other.err()),
        }
        let missing = Path::new("/nonexistent/switchyard.toml");
        match Config::load_with_env(Some(missing), no_env()) {
            Err(ConfigError::Read { path, .. }) => assert_eq!(path, missing),
            other => panic!("expected ConfigError::Read, got {:?}", other.err()),
        }
        match Config::load_with_env(None, env(&[("SWITCHYARD__KAFKA____X", "1")])) {
            Err(ConfigError::Env { var, .. }) => assert_eq!(var, "SWITCHYARD__KAFKA____X"),
            other => panic!("expected ConfigError::Env, got {:?}", other.err()),
        }
    }

    #[test]
    fn relative_paths_in_a_file_are_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(etc.join("rules")).unwrap();
        std::fs::create_dir_all(etc.join("overlays")).unwrap();
        std::fs::copy(
            repo("config/rules/virginia.toml"),
            etc.join("rules/virginia.toml"),
        )
        .unwrap();
        std::fs::copy(
            repo("config/overlays/utility.example.toml"),
            etc.join("overlays/u.toml"),
        )
        .unwrap();
        let path = etc.join("switchyard.toml");
        std::fs::write(
            &path,
            "data_dir = \"state\"\n\
             [registry]\nfile = \"../meters.csv\"\n\
             [policy]\nrule_pack = \"rules/virginia.toml\"\nutility_overlay = \"./overlays/u.toml\"\n\
             [store.scylla.tls]\nca_file = \"tls/ca.pem\"\ncert_file = \"tls/me.pem\"\nkey_file = \"/abs/me.key\"\n\
             [http.auth]\ntokens_file = \"tokens\"\n\
             [http.tls]\ncert_file = \"tls/api.pem\"\nkey_file = \"tls/api.key\"\n",
        )
        .unwrap();
        std::fs::write(etc.join("tokens"), "# none yet\n").unwrap();
        let c = Config::load_with_env(Some(&path), no_env()).unwrap();
        let tls = &c.store.scylla.tls;
        assert_eq!(tls.ca_file, Some(etc.join("tls/ca.pem")));
        assert_eq!(tls.cert_file, Some(etc.join("tls/me.pem")));
        assert_eq!(tls.key_file, Some(PathBuf::from("/abs/me.key")));
        assert_eq!(c.http.auth.tokens_file, Some(etc.join("tokens")));
        assert_eq!(c.http.tls.cert_file, Some(etc.join("tls/api.pem")));
        assert_eq!(c.http.tls.key_file, Some(etc.join("tls/api.key")));
        assert_eq!(c.data_dir, etc.join("state"));
        assert_eq!(c.registry.file, Some(etc.join("../meters.csv")));
        assert_eq!(c.policy.rule_pack, Some(etc.join("rules/virginia.toml")));
        assert_eq!(
            c.policy.utility_overlay,
            Some(etc.join("./overlays/u.toml"))
        );
        for key in PATH_KEYS {
            assert!(
                [
                    "data_dir",
                    "registry.file",
                    "policy.rule_pack",
                    "policy.utility_overlay",
                    "store.scylla.tls.ca_file",
                    "store.scylla.tls.cert_file",
                    "store.scylla.tls.key_file",
                    "http.auth.tokens_file",
                    "http.tls.cert_file",
                    "http.tls.key_file"
                ]
                .contains(key),
                "{key} is not checked by this test"
            );
        }
        // Absolute paths stay as they are.
        std::fs::write(&path, "data_dir = \"/var/lib/switchyard\"\n").unwrap();
        let c = Config::load_with_env(Some(&path), no_env()).unwrap();
        assert_eq!(c.data_dir, Path::new("/var/lib/switchyard"));
        // Paths from the environment and the defaults are relative to the working directory.
        std::fs::write(&path, "[log]\nlevel = \"warn\"\n").unwrap();
        let c = Config::load_with_env(
            Some(&path),
            env(&[("SWITCHYARD__REGISTRY__FILE", "meters.csv")]),
        )
        .unwrap();
        assert_eq!(c.data_dir, Path::new("./switchyard-data"));
        assert_eq!(c.registry.file, Some(PathBuf::from("meters.csv")));
        // A relative rule pack that is not next to the file names the key.
        std::fs::write(
            &path,
            "[policy]\nrule_pack = \"config/rules/virginia.toml\"\n",
        )
        .unwrap();
        let (key, message) = rejected(Config::load_with_env(Some(&path), no_env()));
        assert_eq!(key, "policy.rule_pack");
        assert!(
            message.contains(&etc.join("config/rules/virginia.toml").display().to_string()),
            "the resolved path is shown: {message}"
        );
        // An empty data_dir is still refused (not resolved to the file's directory).
        std::fs::write(&path, "data_dir = \"\"\n").unwrap();
        assert_eq!(
            rejected_key(Config::load_with_env(Some(&path), no_env())),
            "data_dir"
        );
        // A path of the wrong type is refused naming the key.
        std::fs::write(&path, "data_dir = 3\n").unwrap();
        assert_eq!(
            rejected_key(Config::load_with_env(Some(&path), no_env())),
            "data_dir"
        );
    }

    #[test]
    fn durations_take_integers_or_human_strings() {
        let c = from_text(
            "[meters]\nidle_passivate_secs = \"5m\"\n\
             [kafka]\nintake_linger_ms = \"250ms\"\n\
             [head_end]\ncommand_deadline_secs = \"30s\"\nshutdown_drain_secs = \"1h30m\"\n\
             backoff_initial_ms = \"2s\"\nbackoff_max_ms = \"10 minutes\"\n\
             [head_end.simulator]\nlatency_median_ms = \"1.5s\"\nlatency_p99_ms = 6000\n",
        );
        // shutdown_drain_secs is at most an hour: 1h30m is read, then refused by validation.
        assert_eq!(rejected_key(c), "head_end.shutdown_drain_secs");
        let c = from_text(
            "[meters]\nidle_passivate_secs = \"5m\"\n\
             [kafka]\nintake_linger_ms = \"250ms\"\n\
             [head_end]\ncommand_deadline_secs = \"30s\"\nshutdown_drain_secs = \"2m\"\n\
             backoff_initial_ms = \"2s\"\nbackoff_max_ms = \"1h30m\"\n\
             [head_end.simulator]\nlatency_median_ms = \"1.5s\"\nlatency_p99_ms = 6000\n",
        )
        .unwrap();
        assert_eq!(c.meters.idle_passivate_secs, 300);
        assert_eq!(c.kafka.intake_linger_ms, 250);
        assert_eq!(c.head_end.command_deadline_secs, 30);
        assert_eq!(c.head_end.shutdown_drain_secs, 120);
        assert_eq!(c.head_end.backoff_initial_ms, 2000);
        assert_eq!(c.head_end.backoff_max_ms, 5_400_000);
        assert_eq!(c.head_end.simulator.latency_median_ms, 1500);
        assert_eq!(c.head_end.simulator.latency_p99_ms, 6000);
        assert_eq!(c.command_deadline(), Duration::from_secs(30));
        // A number in a string is in the key's unit, like the integer.
        let c = from_text("[head_end]\ncommand_deadline_secs = \"45\"\n").unwrap();
        assert_eq!(c.head_end.command_deadline_secs, 45);
        // From the environment too.
        let c = Config::load_with_env(
            None,
            env(&[
                ("SWITCHYARD__HEAD_END__COMMAND_DEADLINE_SECS", "2m"),
                ("SWITCHYARD__HEAD_END__BACKOFF_MAX_MS", "90s"),
            ]),
        )
        .unwrap();
        assert_eq!(c.head_end.command_deadline_secs, 120);
        assert_eq!(c.head_end.backoff_max_ms, 90_000);
        // Printed (check-config) as the integer in its unit.
        let printed = toml::to_string(&c).unwrap();
        assert!(printed.contains("command_deadline_secs = 120"), "{printed}");
    }

    #[test]
    fn a_bad_duration_is_refused_naming_the_key_and_the_format() {
        for (section, key, value) in [
            ("head_end", "command_deadline_secs", "\"thirty seconds\""),
            ("head_end", "command_deadline_secs", "\"30x\""),
            ("head_end", "command_deadline_secs", "\"1500ms\""),
            ("head_end", "command_deadline_secs", "\"-30s\""),
            ("head_end", "command_deadline_secs", "-30"),
            ("head_end", "command_deadline_secs", "1.5"),
            ("head_end", "command_deadline_secs", "\"\""),
            ("head_end", "shutdown_drain_secs", "\"soon\""),
            ("meters", "idle_passivate_secs", "\"5 parsecs\""),
            ("kafka", "intake_linger_ms", "\"1us\""),
            ("head_end", "backoff_initial_ms", "true"),
            ("head_end.simulator", "latency_p99_ms", "\"6 s 0.5 ms\""),
        ] {
            let (k, message) = rejected(from_text(&format!("[{section}]\n{key} = {value}\n")));
            assert_eq!(k, format!("{section}.{key}"), "{value}: {message}");
            assert!(
                message.contains("\"30s\"") && message.contains("whole number of"),
                "{key} = {value}: the expected format is named: {message}"
            );
        }
        let (key, message) = rejected(Config::load_with_env(
            None,
            env(&[("SWITCHYARD__HEAD_END__COMMAND_DEADLINE_SECS", "soon")]),
        ));
        assert_eq!(key, "head_end.command_deadline_secs");
        assert!(message.contains("\"30s\""), "{message}");
    }

    #[test]
    fn static_membership_and_the_session_come_from_the_environment_and_are_checked() {
        let c = Config::load_with_env(
            None,
            env(&[
                ("SWITCHYARD__KAFKA__INSTANCE_ID", "switchyard-2"),
                ("SWITCHYARD__KAFKA__SESSION_TIMEOUT_MS", "45s"),
            ]),
        )
        .unwrap();
        assert_eq!(c.kafka.instance_id.as_deref(), Some("switchyard-2"));
        assert_eq!(c.kafka.session_timeout_ms, 45_000);
        let c = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(c.kafka.instance_id, None, "dynamic membership by default");
        assert_eq!(c.kafka.session_timeout_ms, 10_000);
        for bad in ["", "pod 1", "switchyard/1"] {
            let (key, message) = rejected(Config::load_with_env(
                None,
                env(&[("SWITCHYARD__KAFKA__INSTANCE_ID", bad)]),
            ));
            assert_eq!(key, "kafka.instance_id", "{bad:?}: {message}");
        }
        for bad in ["500ms", "31m"] {
            let (key, message) = rejected(Config::load_with_env(
                None,
                env(&[("SWITCHYARD__KAFKA__SESSION_TIMEOUT_MS", bad)]),
            ));
            assert_eq!(key, "kafka.session_timeout_ms", "{bad}: {message}");
            assert!(
                message.contains("group.min/max.session.timeout.ms"),
                "{message}"
            );
        }
        // Not through kafka.client: switchyard sets them.
        let text = DEFAULT_TOML.replace(
            "[kafka.client]",
            "[kafka.client]\n\"group.instance.id\" = \"x\"",
        );
        assert!(rejected_key(from_text(&text)).starts_with("kafka.client"));
        for pinned in ["partition.assignment.strategy", "group.protocol"] {
            let text = DEFAULT_TOML.replace(
                "[kafka.client]",
                &format!("[kafka.client]\n{pinned:?} = \"x\""),
            );
            assert_eq!(
                rejected_key(from_text(&text)),
                format!("kafka.client.\"{pinned}\""),
                "{pinned} is set by switchyard"
            );
        }
    }

    #[test]
    fn semantic_error_names_the_key() {
        let text = DEFAULT_TOML.replace("max_attempts = 3", "max_attempts = 0");
        assert_eq!(rejected_key(from_text(&text)), "head_end.max_attempts");
        let text = DEFAULT_TOML.replace("failure_rate = 0.02", "failure_rate = 1.5");
        assert_eq!(
            rejected_key(from_text(&text)),
            "head_end.simulator.failure_rate"
        );
        let text = DEFAULT_TOML.replace(
            "outages = []",
            "outages = [{ segment = \"C-1\", after_secs = 0, for_secs = 5 }, { after_secs = 0, for_secs = 5 }]",
        );
        assert_eq!(
            rejected_key(from_text(&text)),
            "head_end.simulator.outages[1]"
        );
    }

    #[test]
    fn a_store_cache_outside_its_bounds_is_refused_naming_the_key() {
        for bad in ["0", "7", "1048577"] {
            let text = format!("[store]\ncache_mib = {bad}\n");
            assert_eq!(rejected_key(from_text(&text)), "store.cache_mib", "{bad}");
        }
        let c = from_text("[store]\ncache_mib = 64\n").unwrap();
        assert_eq!(c.store.cache_mib, 64);
    }

    #[test]
    fn the_store_applier_without_the_log_is_refused_naming_the_key() {
        let text = "[store]\nwal = false\napplier = true\n";
        assert_eq!(rejected_key(from_text(text)), "store.applier");
        let c = from_text("[store]\napplier = true\n").unwrap();
        assert!(c.store.applier && c.store.wal);
        assert!(!from_text("").unwrap().store.applier, "off by default");
    }

    #[test]
    fn a_brokers_list_without_a_broker_is_refused() {
        for bad in [" , ", "kafka-1", "kafka-1:x", "kafka-1:9092,"] {
            let text = format!("[kafka]\nbrokers = {bad:?}\n");
            assert_eq!(rejected_key(from_text(&text)), "kafka.brokers", "{bad}");
        }
        assert!(from_text("[kafka]\nbrokers = \"k1:9092, k2:9093\"\n").is_ok());
    }

    #[test]
    fn a_log_level_that_is_not_a_level_is_refused() {
        for bad in ["verbose!!", "loud", "switchyard=chatty", ""] {
            let text = format!("[log]\nlevel = {bad:?}\n");
            assert_eq!(rejected_key(from_text(&text)), "log.level", "{bad}");
        }
        for good in ["debug", "warn,switchyard=debug", "info,rdkafka::client=off"] {
            let text = format!("[log]\nlevel = {good:?}\n");
            assert!(from_text(&text).is_ok(), "{good}");
        }
    }

    #[test]
    fn secrets_are_redacted_for_printing() {
        let c = Config::load_with_env(
            None,
            env(&[
                ("SWITCHYARD__KAFKA__CLIENT__SASL_PASSWORD", "hunter2"),
                ("SWITCHYARD__KAFKA__CLIENT__SASL_USERNAME", "svc"),
            ]),
        )
        .unwrap();
        assert_eq!(c.kafka.client["sasl.password"], "hunter2");
        let printed = toml::to_string_pretty(&c.redacted()).unwrap();
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("<redacted>"));
        assert!(printed.contains("svc"), "non-secrets stay");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let text =
            DEFAULT_TOML.replace("embedded_partitions = 4", "embedded_partitions = \"four\"");
        assert_eq!(rejected_key(from_text(&text)), "kafka.embedded_partitions");
    }

    #[test]
    fn environment_overrides_keys_and_client_properties() {
        let e = env(&[
            ("SWITCHYARD__KAFKA__BROKERS", "b1:9092"),
            ("SWITCHYARD__HEAD_END__SIMULATOR__SEED", "7"),
            ("SWITCHYARD__HEAD_END__MODE", "kafka"),
            ("SWITCHYARD__KAFKA__CLIENT__SASL_PASSWORD", "s3cret"),
            ("OTHER", "ignored"),
        ]);
        let c = Config::from_toml_str(DEFAULT_TOML, "t", e).unwrap();
        assert_eq!(c.kafka.brokers, "b1:9092");
        assert_eq!(c.head_end.simulator.seed, 7);
        assert_eq!(c.head_end.mode, HeadEndMode::Kafka);
        assert_eq!(
            c.kafka.client.get("sasl.password").map(String::as_str),
            Some("s3cret")
        );
    }

    #[test]
    fn bad_environment_override_names_the_key() {
        let e = env(&[("SWITCHYARD__HEAD_END__MAX_ATTEMPTS", "many")]);
        assert_eq!(
            rejected_key(Config::from_toml_str(DEFAULT_TOML, "t", e)),
            "head_end.max_attempts"
        );
        let e = env(&[("SWITCHYARD__HEAD_END__MAX_ATEMPTS", "3")]);
        assert_eq!(
            rejected_key(Config::from_toml_str(DEFAULT_TOML, "t", e)),
            "head_end.max_atempts"
        );
    }

    #[test]
    fn client_properties_that_weaken_delivery_are_refused() {
        let (key, message) = rejected(from_text("[kafka.client]\n\"acks\" = \"0\"\n"));
        assert_eq!(key, "kafka.client.\"acks\"");
        assert!(message.contains("set by switchyard"), "{message}");
    }

    #[test]
    fn duplicate_topic_is_rejected() {
        let text = "[topics]\nexceptions = \"switchyard.dead-letter.v1\"\n";
        assert_eq!(rejected_key(from_text(text)), "topics.exceptions");
    }
}
