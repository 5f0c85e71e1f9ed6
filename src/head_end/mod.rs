//! The head-end boundary. A [`HeadEnd`] takes a command and answers later, through the
//! [`ResultSink`], with a [`CommandResult`] (or never: the meter actor's deadline covers that).
//! Two implementations: the built-in [`simulator`] (embedded default) and the [`kafka_bridge`]
//! (commands topic out, results topic in) that a utility's real head-end adapter plugs into.
//! [`health`] holds what the meters know of each head-end: its profile and its circuit
//! [`breaker`].

pub(crate) mod breaker;
pub(crate) mod health;
pub(crate) mod kafka_bridge;
pub(crate) mod segments;
pub(crate) mod simulator;

use crate::domain::{Command, CommandResult};

pub use health::HeadEnds;
pub(crate) use kafka_bridge::KafkaBridge;
pub(crate) use simulator::Simulator;

pub trait HeadEnd: Send + Sync + 'static {
    /// Hands the command over; must not block. The answer arrives through the result sink.
    /// (Shared with the meter's command in flight and its write: no copy per dispatch.)
    fn dispatch(&self, command: std::sync::Arc<Command>);
}

/// Where answers go (the meter directory, which routes them to the meter's actor).
pub trait ResultSink: Send + Sync + 'static {
    fn deliver_result(&self, result: CommandResult);
}
