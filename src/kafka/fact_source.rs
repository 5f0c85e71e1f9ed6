//! The meter-fact source: payments and medical certificates (customer-facts topic) and
//! approvals / rejections (control topic), keyed by meter id. Each record is validated (a bad one
//! is dead-lettered with the reason and acknowledged by the broker), delivered to its meter's
//! actor, and its offset is stored only once that actor has durably stored the outcome: a fact
//! is never lost in a crash, and one that is replayed is harmless (facts are idempotent).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use tokio::sync::oneshot;

use super::source::{Handled, Handler, Io, Rejected};
use crate::domain::DeadLetterReason;
use crate::facts::MeterFact;
use crate::meter::{Directory, MeterMsg};
use crate::observability::{self, metrics};
use crate::registry::Registry;

/// Validates each fact and hands it to its meter; returns once the meter has stored it. Its
/// source gates on [`super::source::Gate::CaughtUp`]: held orders are resumed only once every
/// fact that was on the topics at start is applied, so a payment or certificate sent while
/// switchyard was down is known before anything is decided.
pub(crate) struct Facts {
    pub(crate) directory: Arc<Directory>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) control_topic: String,
    /// The source starts (joins its group) while the tables are replayed; its records wait
    /// for the registry (see [`super::source::TablesReady`]).
    pub(crate) tables: super::source::TablesReady,
}

impl Facts {
    fn parse(&self, msg: &OwnedMessage) -> Result<MeterFact, Rejected> {
        let control = msg.topic() == self.control_topic;
        let key = msg.key().map(|k| String::from_utf8_lossy(k).to_string());
        let bytes = msg
            .payload()
            .ok_or_else(|| Rejected::new(DeadLetterReason::InvalidFact, "record has no value"))?;
        let f = MeterFact::parse(key.as_deref(), bytes, control)
            .map_err(|e| Rejected::new(DeadLetterReason::InvalidFact, e.0))?;
        if self.registry.get(f.meter_id()).is_none() {
            return Err(Rejected::new(
                DeadLetterReason::UnknownMeter,
                format!(
                    "meter {} is not in the registry: register it first, then replay this fact",
                    f.meter_id()
                ),
            ));
        }
        if let Some(r) = super::meter_source::misrouted(&self.directory, f.meter_id(), msg) {
            return Err(r);
        }
        Ok(f)
    }
}

impl Handler for Facts {
    fn name(&self) -> &str {
        "meter facts"
    }

    async fn handle(&self, batch: &[OwnedMessage], io: &mut Io<'_>) -> Handled {
        if !self.tables.wait().await {
            return Handled::Stopped;
        }
        let mut rejected = Vec::new();
        for (i, msg) in batch.iter().enumerate() {
            let fact = match self.parse(msg) {
                Ok(f) => f,
                Err(r) => {
                    metrics().facts_rejected.increment(1);
                    rejected.push((i, r));
                    continue;
                }
            };
            observability::fact_received(fact.fact_type());
            let meter = fact.meter_id().to_string();
            // Until the meter has stored it: an actor that stops before storing (it
            // passivated, or failed) drops the acknowledgement; deliver again (facts are
            // idempotent). The offset is never stored past an unstored fact.
            // Waiting, the consumer keeps polling (`Io::pause_for`): a meter whose unit's lease
            // lapsed holds its step until a revoke says the unit was taken, and that revoke is
            // heard only in a poll.
            'deliver: loop {
                let (tx, mut rx) = oneshot::channel();
                self.directory
                    .deliver_acked(&meter, MeterMsg::Fact(fact.clone()), Some(tx));
                loop {
                    tokio::select! {
                        r = &mut rx => match r {
                            Ok(()) => break 'deliver,
                            Err(_) => {
                                tracing::warn!(meter = %meter, fact = fact.fact_id(), "fact not acknowledged by its meter; delivering again");
                                if !io.pause_for(Duration::from_millis(100)).await {
                                    return Handled::Stopped;
                                }
                                continue 'deliver;
                            }
                        },
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {
                            if !io.pause_for(Duration::from_millis(100)).await {
                                return Handled::Stopped;
                            }
                        }
                    }
                }
            }
        }
        Handled::Done(rejected)
    }
}
