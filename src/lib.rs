//! switchyard: remote connect / disconnect of electric meters, at utility scale, safely.
//!
//! Service orders arrive on Kafka; each is validated, stored, and handed to the actor of its
//! meter, which sends switch commands to the AMI head-end one at a time, retries, confirms, and
//! writes every step to an audit trail; order events and exceptions go back out on Kafka.
//!
//! # Layout
//! Bottom to top; a module imports only modules below it (`tests/layers.rs` checks it).
//! - [`domain`]: orders, meters, commands, results, events, audit rows, the stored meter state,
//!   campaigns, decisions and meter facts as data; order validation. Imports nothing else.
//! - [`store`]: the store contract, the embedded redb store and the ScyllaDB store (imports
//!   `domain` only); `store_setup`: the ScyllaDB store's options from the configuration.
//! - [`policy`]: the pure rule engine (rule packs as data); [`config`]: the one typed
//!   configuration (TOML over the defaults + environment), validated at start; [`clock`]: the
//!   injectable clock; [`observability`]: Prometheus metrics (cached handles) and logging;
//!   `retry`: the one back-off every retrying loop waits on; `sla`: when each order is due
//!   (its reason's priority class) and whether it is on track, at risk, breached or met;
//!   [`reads`]: what a meter read means (the post-disconnect watchdog's verdict).
//! - [`commit`]: the group-commit writer in front of the store ([`commit::StoreHandle`]).
//! - [`registry`]: compact in-memory entry for every registered meter; [`facts`]: weather,
//!   emergencies, payments, certificates and approvals as they arrive, and the zone fact book;
//!   `ownership`: which meters this instance owns (the units its consumer group gave it);
//!   `lease`: fencing, the per-unit leases in the shared store that let it act for them.
//! - [`head_end`]: the head-end boundary; simulator and Kafka bridge.
//! - [`campaign`]: staged mass disconnects: release queue, windows, planner, campaign actors.
//! - [`meter`]: the pure meter state machine, the meter actor, the live-actor directory.
//! - [`kafka`]: one source loop and its handlers (orders, tables, meter facts, head-end
//!   results, campaign control), outbox publisher, dead letters, embedded mock cluster;
//!   [`http`]: operator endpoint.
//! - [`app`]: wiring. [`demo`]: the synthetic day. The binary's command line is in `src/cli/`.
//!
//! The load-test harness is a crate of its own (`load-tests/`, `switchyard-loadtest`): it runs
//! this crate's binary as the process under test and uses this library only for the config, the
//! Kafka client settings and mock cluster, the store (its raw append limit) and a few types.

pub(crate) mod app;
pub mod campaign;
pub mod clock;
pub mod commit;
pub mod config;
pub mod demo;
pub mod domain;
pub mod facts;
pub mod head_end;
pub(crate) mod http;
pub mod kafka;
pub(crate) mod lease;
pub mod meter;
pub mod observability;
pub(crate) mod ownership;
pub mod policy;
pub mod reads;
pub mod registry;
mod retry;
pub(crate) mod sla;
pub mod store;
mod store_setup;

pub use app::{migrate_store, open_store, App, AppError};
pub use config::Config;
pub use http::auth::token_hash;
#[doc(hidden)]
pub use store_setup::raw_cql_audit_limit;
