//! `switchyard-loadtest`: the load-test harness. A scenario (a TOML file in
//! `load-tests/scenarios/`) says how many meters are registered, which orders are on the topic
//! before switchyard starts, what traffic arrives while it runs (a steady rate, a campaign and a
//! reconnect storm), how the simulated head-end behaves, whether switchyard is killed with
//! `kill -9` mid-run, and which of the product's targets it tests. The harness
//! - hosts the Kafka side: librdkafka's mock cluster in-process (the same one switchyard's
//!   embedded mode runs, here outliving the switchyard process so that a kill -9 loses nothing
//!   Kafka holds) or an external Kafka-API broker (`--brokers`, e.g. the tansu broker started
//!   by `load-tests/tansu.sh`, or your own cluster);
//! - runs the switchyard binary under test (`--switchyard`) as a child process
//!   (`switchyard run`, embedded store, simulated head-end) and watches it from outside:
//!   `/readyz`, `/metrics` every 200 ms, `/stats/latency`, `/proc/<pid>/status`;
//! - measures the raw limits of the parts in the same run, after switchyard has stopped: a bare
//!   librdkafka consumer reading the same orders topic, and bare durable appends to a fresh
//!   embedded store on the same disk;
//! - writes `report.md`, `report.json` and SVG plots to the output directory.
//!
//! It is a crate of its own so that the service does not link it: from switchyard it uses the
//! library (config, Kafka client settings and mock cluster, the store for the raw append limit,
//! order statuses, latency summaries), never the binary's internals.
//!
//! [`scenario`]: the scenario file; [`targets`]: the targets as data; [`run()`]: one run;
//! [`report`]: the report (data, Markdown table, plots).

mod child;
mod finals;
pub mod report;
mod run;
pub mod scenario;
pub mod targets;
mod workload;

pub use run::{fresh_out_dir, run, switchyard_next_to_harness, LoadtestOptions};
pub use scenario::Scenario;

#[derive(Debug, thiserror::Error)]
pub enum LoadtestError {
    #[error("scenario {path}: {message}")]
    Scenario { path: String, message: String },
    #[error("load-test i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("load-test Kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("Kafka set-up: {0}")]
    KafkaSetup(#[from] switchyard::kafka::KafkaSetupError),
    #[error("switchyard under test: {0}")]
    Child(String),
    #[error("raw store benchmark: {0}")]
    Store(#[from] switchyard::store::StoreError),
}
