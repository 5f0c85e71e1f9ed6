//! The fault suite (issue 10): what an SRE's first bad day does to switchyard, each defect
//! found from outside reproduced here so that it stays fixed. Every test asserts what a utility
//! cares about: every accepted order reaches exactly one terminal status, no command id is sent
//! twice, no exception is raised twice, no partition stalls behind one record.
//!
//! - [`http`]: the operator endpoint pages a large meter, answers health at once;
//! - [`poison`]: records of several sizes, up to the producer's limit, on every input topic;
//! - [`restart`]: restarts at the moments that used to rewrite an order's outcome.

#[path = "../common/mod.rs"]
mod common;

mod http;
mod poison;
mod restart;
