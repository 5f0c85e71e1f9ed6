//! The fault suite (issue 10): what an SRE's first bad day does to switchyard, each defect
//! found from outside reproduced here so that it stays fixed. Every test asserts what a utility
//! cares about: every accepted order reaches exactly one terminal status, no command id is sent
//! twice, no exception is raised twice, no partition stalls behind one record.
//!
//! - [`disk`]: a full disk pauses the intake and recovers when space returns;
//! - [`http`]: the operator endpoint pages a large meter, answers health at once;
//! - [`poison`]: records of several sizes, up to the producer's limit, on every input topic;
//! - [`process`]: kill -9 at four points, SIGSTOP past the deadline, SIGTERM under load, on a
//!   real process with the broker and a truthful head-end outside it;
//! - [`registry`]: embedded mode keeps its meters across a restart; unknown meters wait;
//! - [`restart`]: restarts at the moments that used to rewrite an order's outcome.

#[path = "../common/mod.rs"]
mod common;

mod disk;
mod http;
mod poison;
mod process;
mod registry;
mod restart;
