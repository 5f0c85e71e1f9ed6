//! switchyard: remote connect / disconnect of electric meters, at utility scale, safely.
//!
//! Service orders arrive on Kafka; each is validated, stored, and handed to the actor of its
//! meter, which sends switch commands to the AMI head-end one at a time, retries, confirms, and
//! writes every step to an audit trail; order events and exceptions go back out on Kafka.
//!
//! # Layout
//! - [`config`]: the one typed configuration (TOML + environment), validated at start.
//! - [`domain`]: orders, meters, commands, results, events, audit rows; order validation.
//! - [`campaign`]: staged mass disconnects: definition, release queue, planner, campaign actor.
//! - [`policy`]: the pure rule engine (rule packs as data); [`facts`]: weather, emergencies,
//!   payments, certificates and approvals as they arrive, and the zone fact book.
//! - [`registry`]: compact in-memory entry for every registered meter.
//! - [`meter`]: the pure meter state machine, the meter actor, the live-actor directory.
//! - [`head_end`]: the head-end boundary; simulator and Kafka bridge.
//! - [`store`]: the store contract, group-commit writer, embedded redb store.
//! - [`kafka`]: intake, registry and results sources, outbox publisher, dead letters,
//!   embedded mock cluster.
//! - [`observability`]: Prometheus metrics (cached handles) and logging; [`http`]: operator
//!   endpoint.
//! - [`clock`]: the injectable clock. [`app`]: wiring. [`demo`]: the synthetic day.
//! - [`loadtest`]: the load-test harness (scenarios in `load-tests/scenarios/`, reports with
//!   the raw limits of the parts measured in the same run).

pub mod app;
pub mod campaign;
pub mod clock;
pub mod commit;
pub mod config;
pub mod demo;
pub mod domain;
pub mod facts;
pub mod head_end;
pub mod http;
pub mod kafka;
pub mod loadtest;
pub mod meter;
pub mod observability;
pub mod policy;
pub mod registry;
pub mod store;

pub use app::{App, AppError};
pub use config::Config;
