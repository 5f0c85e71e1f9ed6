//! The reads handler: meter reads (topic `reads`, key meter id) from the MDM or the head-end.
//! Every read is validated (a bad one is dead-lettered with the reason) and looked up in the
//! read watches; only a read that matters to its meter (its cut is watched and the watchdog has
//! something to say: consumption, the baseline it lacked, the watch's end) is copied and handed
//! to the meter's actor, and the batch's offsets are stored once those actors have stored what
//! they made of it. Every other read costs a parse and a map lookup: reads arrive by the hundred
//! thousand a second and wake no actor.

use std::sync::Arc;

use rdkafka::message::OwnedMessage;
use rdkafka::Message;

use super::source::{Handled, Handler, Io, Rejected};
use crate::clock::Clock;
use crate::domain::{validate_read, DeadLetterReason};
use crate::meter::{Directory, MeterMsg};
use crate::observability::metrics;
use crate::reads::{Observed, ReadRules};
use crate::registry::Registry;

pub(crate) struct Reads {
    pub(crate) directory: Arc<Directory>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) rules: Arc<ReadRules>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Reads wait for the registry (their multipliers, and whether the meter exists).
    pub(crate) tables: super::source::TablesReady,
}

impl Reads {
    /// The read, in engineering units, if it matters to its meter; `Ok(None)` if not.
    fn look(&self, msg: &OwnedMessage, now: jiff::Timestamp) -> Result<Option<MeterMsg>, Rejected> {
        let r = validate_read(msg.key(), msg.payload(), now)
            .map_err(|e| Rejected::new(e.reason, e.detail))?;
        let Some(mult) = self.registry.multipliers(&r.meter_id) else {
            return Err(Rejected::new(
                DeadLetterReason::UnknownMeter,
                format!(
                    "meter {} is not in the registry: register it first, then replay this read",
                    r.meter_id
                ),
            ));
        };
        if let Some(x) = super::meter_source::misrouted(&self.directory, "meter", &r.meter_id, msg)
        {
            return Err(x);
        }
        let seen = Observed {
            kind: r.kind,
            interval_start: r.interval_start,
            read_at: r.read_at,
            active_kwh: r.active_kwh(&mult),
        };
        let watches = &self.directory.services().watches;
        if !watches.evaluate(&r.meter_id, &seen, &self.rules).matters() {
            return Ok(None);
        }
        Ok(Some(MeterMsg::Read(r.to_read(&mult))))
    }
}

impl Handler for Reads {
    fn name(&self) -> &str {
        "meter reads"
    }

    async fn handle(&self, batch: &[OwnedMessage], io: &mut Io<'_>) -> Handled {
        if !self.tables.wait().await {
            return Handled::Stopped;
        }
        let now = self.clock.now();
        let m = metrics();
        let mut rejected = Vec::new();
        let mut matter = Vec::new();
        for (i, msg) in batch.iter().enumerate() {
            match self.look(msg, now) {
                Ok(None) => m.reads_ignored.increment(1),
                Ok(Some(read)) => matter.push(read),
                Err(r) => {
                    m.reads_rejected.increment(1);
                    rejected.push((i, r));
                }
            }
        }
        // Handed to all their meters at once (their writes share group commits), then each
        // acknowledgement awaited; one not acknowledged (the actor passivated or stopped first)
        // is delivered again, alone.
        let mut waiting = Vec::with_capacity(matter.len());
        for read in matter {
            let MeterMsg::Read(r) = &read else {
                unreachable!()
            };
            let meter = r.meter_id.clone();
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.directory.deliver_acked(&meter, read.clone(), Some(tx));
            waiting.push((meter, read, rx));
        }
        for (meter, read, mut rx) in waiting {
            use super::fact_source::{acked, deliver, Acked};
            match acked(&mut rx, io).await {
                Acked::Yes => {}
                Acked::Stopped => return Handled::Stopped,
                Acked::Dropped => {
                    if !deliver(&self.directory, &meter, read, "read", io).await {
                        return Handled::Stopped;
                    }
                }
            }
            m.reads_delivered.increment(1);
        }
        Handled::Done(rejected)
    }
}
