//! Configuration: one typed struct loaded from TOML (config/default.toml is compiled in as the
//! embedded defaults), overridden from the environment (`SWITCHYARD__SECTION__KEY=value`) and
//! validated before anything starts. Unknown keys are rejected; every error names the key.

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
    "bootstrap.servers",
    "isolation.level",
];

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "SWITCHYARD__";

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
pub fn is_secret_key(key: &str) -> bool {
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
        c
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
    pub store: StoreConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
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
    pub utility_overlay: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers; empty starts librdkafka's mock cluster in-process.
    pub brokers: String,
    pub group_id: String,
    pub embedded_partitions: i32,
    pub intake_batch_max: usize,
    pub intake_linger_ms: u64,
    /// How long an order for a meter not (yet) in the registry waits for the registry topic to
    /// catch up before it is rejected `unknown_meter` (the two topics race). 0 = no wait.
    #[serde(default = "default_unknown_meter_grace_ms")]
    pub unknown_meter_grace_ms: u64,
    #[serde(default)]
    pub client: BTreeMap<String, String>,
}

fn default_unknown_meter_grace_ms() -> u64 {
    5_000
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
}

impl TopicsConfig {
    /// Appends `suffix` to every topic name (the load-test harness keeps each run's records
    /// apart on a shared broker).
    pub(crate) fn suffix_all(&mut self, suffix: &str) {
        for t in [
            &mut self.orders,
            &mut self.registry,
            &mut self.order_events,
            &mut self.dead_letter,
            &mut self.exceptions,
            &mut self.head_end_commands,
            &mut self.head_end_results,
            &mut self.weather,
            &mut self.emergencies,
            &mut self.customer_facts,
            &mut self.control,
            &mut self.campaign_control,
            &mut self.campaign_events,
        ] {
            t.push_str(suffix);
        }
    }

    /// Every topic name.
    pub fn names(&self) -> Vec<String> {
        self.all().iter().map(|(_, t)| t.to_string()).collect()
    }

    pub fn all(&self) -> [(&'static str, &str); 13] {
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
    pub command_deadline_secs: u64,
    pub max_attempts: u32,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// On SIGTERM: after the intake and campaign releases stop, wait up to this long for the
    /// commands in flight to be answered before exiting (those still open are resolved by a
    /// status check at the next start). 0 = exit at once.
    #[serde(default = "default_drain_secs")]
    pub shutdown_drain_secs: u64,
    pub simulator: SimulatorConfig,
}

fn default_drain_secs() -> u64 {
    30
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorConfig {
    pub latency_median_ms: u64,
    pub latency_p99_ms: u64,
    pub failure_rate: f64,
    pub no_answer_rate: f64,
    pub lsv_reject_rate: f64,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    Embedded,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub kind: StoreKind,
    pub group_commit_max: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
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
    /// Loads a config file (or the embedded defaults when `path` is `None`), applies environment
    /// overrides from `std::env::vars()`, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (text, name) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?,
                p.display().to_string(),
            ),
            None => (
                DEFAULT_TOML.to_string(),
                "<embedded default.toml>".to_string(),
            ),
        };
        Self::from_toml_str(&text, &name, env)
    }

    pub fn from_toml_str(
        text: &str,
        name: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: name.to_string(),
                    message: e.to_string(),
                })?;
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
                invalid(if path == "." { "<root>" } else { &path }, message)
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Semantic checks that serde cannot express. Each error names the offending key.
    /// The rule pack in force, tightened by the utility overlay; errors name the key.
    pub fn load_policy(&self) -> Result<crate::policy::Policy, ConfigError> {
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

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        let k = &self.kafka;
        if k.group_id.trim().is_empty() {
            return Err(invalid("kafka.group_id", "must not be empty"));
        }
        if !(1..=1024).contains(&k.embedded_partitions) {
            return Err(invalid(
                "kafka.embedded_partitions",
                "must be between 1 and 1024",
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
            if topic.is_empty()
                || topic.len() > 249
                || !topic
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
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
        if !(1..=1_000_000).contains(&self.store.group_commit_max) {
            return Err(invalid(
                "store.group_commit_max",
                "must be between 1 and 1000000",
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

    pub fn embedded_kafka(&self) -> bool {
        self.kafka.brokers.trim().is_empty()
    }

    pub fn command_deadline(&self) -> Duration {
        Duration::from_secs(self.head_end.command_deadline_secs)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn every_file_in_config_dir_loads_and_validates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut loaded = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) == Some("toml")
                && !path.to_string_lossy().contains("rules")
            {
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
        let env = vec![(
            "SWITCHYARD__POLICY__RULE_PACK".to_string(),
            pack.display().to_string(),
        )];
        let e = Config::load_with_env(None, env).unwrap_err().to_string();
        assert!(
            e.contains("policy.rule_pack") && e.contains("time_zone"),
            "{e}"
        );
        let env = vec![(
            "SWITCHYARD__POLICY__RULE_PACK".to_string(),
            "/nonexistent/pack.toml".to_string(),
        )];
        let e = Config::load_with_env(None, env).unwrap_err().to_string();
        assert!(
            e.contains("policy.rule_pack") && e.contains("cannot read"),
            "{e}"
        );
        // An overlay that would lift a bar is refused, naming the overlay key and the pack key.
        let overlay = dir.path().join("overlay.toml");
        std::fs::write(&overlay, "bar_holidays = false\n").unwrap();
        let va = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rules/virginia.toml");
        let env = vec![
            (
                "SWITCHYARD__POLICY__RULE_PACK".to_string(),
                va.display().to_string(),
            ),
            (
                "SWITCHYARD__POLICY__UTILITY_OVERLAY".to_string(),
                overlay.display().to_string(),
            ),
        ];
        let e = Config::load_with_env(None, env).unwrap_err().to_string();
        assert!(
            e.contains("policy.utility_overlay") && e.contains("bar_holidays"),
            "{e}"
        );
    }

    #[test]
    fn embedded_default_is_embedded_mode() {
        let c = Config::load_with_env(None, no_env()).unwrap();
        assert!(c.embedded_kafka());
        assert_eq!(c.head_end.mode, HeadEndMode::Simulator);
    }

    #[test]
    fn unknown_key_is_rejected_with_its_path() {
        let text = DEFAULT_TOML.replace("[kafka]\n", "[kafka]\nbrokres = \"x\"\n");
        let err = Config::from_toml_str(&text, "t", no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("kafka") && err.contains("brokres"), "{err}");
    }

    #[test]
    fn semantic_error_names_the_key() {
        let text = DEFAULT_TOML.replace("max_attempts = 3", "max_attempts = 0");
        let err = Config::from_toml_str(&text, "t", no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("head_end.max_attempts"), "{err}");
        let text = DEFAULT_TOML.replace("failure_rate = 0.02", "failure_rate = 1.5");
        let err = Config::from_toml_str(&text, "t", no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("head_end.simulator.failure_rate"), "{err}");
    }

    #[test]
    fn a_brokers_list_without_a_broker_is_refused() {
        for bad in [" , ", "kafka-1", "kafka-1:x", "kafka-1:9092,"] {
            let text = DEFAULT_TOML.replace("brokers = \"\"", &format!("brokers = {bad:?}"));
            let err = Config::from_toml_str(&text, "t", no_env())
                .unwrap_err()
                .to_string();
            assert!(err.contains("kafka.brokers"), "{bad}: {err}");
        }
        let text = DEFAULT_TOML.replace("brokers = \"\"", "brokers = \"k1:9092, k2:9093\"");
        assert!(Config::from_toml_str(&text, "t", no_env()).is_ok());
    }

    #[test]
    fn a_log_level_that_is_not_a_level_is_refused() {
        for bad in ["verbose!!", "loud", "switchyard=chatty", ""] {
            let text = DEFAULT_TOML.replace("level = \"info\"", &format!("level = {bad:?}"));
            let err = Config::from_toml_str(&text, "t", no_env())
                .unwrap_err()
                .to_string();
            assert!(err.contains("log.level"), "{bad}: {err}");
        }
        for good in ["debug", "warn,switchyard=debug", "info,rdkafka::client=off"] {
            let text = DEFAULT_TOML.replace("level = \"info\"", &format!("level = {good:?}"));
            assert!(
                Config::from_toml_str(&text, "t", no_env()).is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn secrets_are_redacted_for_printing() {
        let env = vec![
            (
                "SWITCHYARD__KAFKA__CLIENT__SASL_PASSWORD".to_string(),
                "hunter2".to_string(),
            ),
            (
                "SWITCHYARD__KAFKA__CLIENT__SASL_USERNAME".to_string(),
                "svc".to_string(),
            ),
        ];
        let c = Config::load_with_env(None, env).unwrap();
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
        let err = Config::from_toml_str(&text, "t", no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("kafka.embedded_partitions"), "{err}");
    }

    #[test]
    fn environment_overrides_keys_and_client_properties() {
        let env = vec![
            (
                "SWITCHYARD__KAFKA__BROKERS".to_string(),
                "b1:9092".to_string(),
            ),
            (
                "SWITCHYARD__HEAD_END__SIMULATOR__SEED".to_string(),
                "7".to_string(),
            ),
            (
                "SWITCHYARD__HEAD_END__MODE".to_string(),
                "kafka".to_string(),
            ),
            (
                "SWITCHYARD__KAFKA__CLIENT__SASL_PASSWORD".to_string(),
                "s3cret".to_string(),
            ),
            ("OTHER".to_string(), "ignored".to_string()),
        ];
        let c = Config::from_toml_str(DEFAULT_TOML, "t", env).unwrap();
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
        let env = vec![(
            "SWITCHYARD__HEAD_END__MAX_ATTEMPTS".to_string(),
            "many".to_string(),
        )];
        let err = Config::from_toml_str(DEFAULT_TOML, "t", env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("head_end.max_attempts"), "{err}");
    }

    #[test]
    fn client_properties_that_weaken_delivery_are_refused() {
        let text = DEFAULT_TOML.replace("[kafka.client]\n", "[kafka.client]\n\"acks\" = \"0\"\n");
        let err = Config::from_toml_str(&text, "t", no_env())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kafka.client") && err.contains("acks"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_topic_is_rejected() {
        let text = DEFAULT_TOML.replace(
            "exceptions = \"switchyard.exceptions.v1\"",
            "exceptions = \"switchyard.dead-letter.v1\"",
        );
        let err = Config::from_toml_str(&text, "t", no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("topics.exceptions"), "{err}");
    }
}
