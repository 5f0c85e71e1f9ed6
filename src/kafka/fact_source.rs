//! The meter-fact source: payments and medical certificates (customer-facts topic) and
//! approvals / rejections, operator holds, and switchyard's own campaign messages and move
//! links (control topic), keyed by meter id. Each record is validated (a bad one
//! is dead-lettered with the reason and acknowledged by the broker), delivered to its meter's
//! actor, and its offset is stored only once that actor has durably stored the outcome: a fact
//! is never lost in a crash, and one that is replayed is harmless (facts are idempotent).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use tokio::sync::oneshot;

use super::source::{Handled, Handler, Io, Rejected};
use crate::domain::{CampaignToMeter, DeadLetterReason, MeterHandover, MoveLink};
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
        // A removed meter may have left the registry already: its exchange still hands its
        // work over.
        if self.registry.get(f.meter_id()).is_none() && !matches!(f, MeterFact::MeterExchange(_)) {
            return Err(Rejected::new(
                DeadLetterReason::UnknownMeter,
                format!(
                    "meter {} is not in the registry: register it first, then replay this fact",
                    f.meter_id()
                ),
            ));
        }
        if let Some(r) = super::meter_source::misrouted(&self.directory, "meter", f.meter_id(), msg)
        {
            return Err(r);
        }
        Ok(f)
    }
}

impl Facts {
    /// A campaign's release, withdrawal or adoption sent by the instance that owns the
    /// campaign (`CampaignToMeter`, docs/topics.md "Control").
    fn parse_campaign(&self, msg: &OwnedMessage) -> Result<CampaignToMeter, Rejected> {
        let bad = |m: String| Rejected::new(DeadLetterReason::InvalidFact, m);
        let r: CampaignToMeter = serde_json::from_slice(msg.payload().unwrap_or_default())
            .map_err(|e| bad(format!("not a v1 campaign message to a meter: {e}")))?;
        if r.schema_version() != 1 {
            return Err(bad(format!(
                "schema_version {} is not supported (use 1)",
                r.schema_version()
            )));
        }
        let key = msg.key().map(|k| String::from_utf8_lossy(k).to_string());
        if key.as_deref() != Some(r.meter_id()) {
            return Err(bad(format!(
                "record key {key:?} differs from meter_id `{}`: key it by meter_id",
                r.meter_id()
            )));
        }
        if let Some(x) = super::meter_source::misrouted(&self.directory, "meter", r.meter_id(), msg)
        {
            return Err(x);
        }
        Ok(r)
    }
}

impl Facts {
    /// How a linked move leg of another meter ended, sent by that meter
    /// (`MoveLink`, docs/topics.md "Control").
    fn parse_move_link(&self, msg: &OwnedMessage) -> Result<MoveLink, Rejected> {
        // (Delivered even if the meter left the registry: a lost cancel would let the other
        // leg go ahead.)
        let l = MoveLink::parse(msg.key(), msg.payload().unwrap_or_default())
            .map_err(|e| Rejected::new(DeadLetterReason::InvalidFact, e))?;
        if let Some(x) = super::meter_source::misrouted(&self.directory, "meter", &l.meter_id, msg)
        {
            return Err(x);
        }
        Ok(l)
    }
}

/// Hands `what` to `meter` until the meter has stored what it made of it (the offset is
/// never stored past an unstored fact or read); `false`: shutdown came first.
pub(super) async fn deliver(
    directory: &Directory,
    meter: &str,
    what: MeterMsg,
    label: &str,
    io: &mut Io<'_>,
) -> bool {
    // An actor that stops before storing (it passivated, or failed) drops the
    // acknowledgement; deliver again (facts, reads and campaign messages are idempotent).
    // Waiting, the consumer keeps polling (`Io::pause_for`): a meter whose unit's lease
    // lapsed holds its step until a revoke says the unit was taken, and that revoke is
    // heard only in a poll.
    loop {
        let (tx, mut rx) = oneshot::channel();
        directory.deliver_acked(meter, what.clone(), Some(tx));
        match acked(&mut rx, io).await {
            Acked::Yes => return true,
            Acked::Stopped => return false,
            Acked::Dropped => {
                tracing::warn!(meter = %meter, what = %label, "not acknowledged by its meter; delivering again");
                if !io.pause_for(Duration::from_millis(100)).await {
                    return false;
                }
            }
        }
    }
}

/// What became of a delivery's acknowledgement.
pub(super) enum Acked {
    Yes,
    /// The actor stopped (passivated, relinquished) before storing: deliver again.
    Dropped,
    /// Shutdown, or the partitions were revoked while waiting.
    Stopped,
}

/// Waits for a meter's acknowledgement with the consumer polling every 500 ms
/// ([`Io::pause_for`]): a meter whose unit's lease lapsed holds its step until a revoke says
/// the unit was taken, and that revoke is heard only in a poll.
pub(super) async fn acked(rx: &mut oneshot::Receiver<()>, io: &mut Io<'_>) -> Acked {
    loop {
        tokio::select! {
            r = &mut *rx => return if r.is_ok() { Acked::Yes } else { Acked::Dropped },
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if !io.pause_for(Duration::from_millis(100)).await {
                    return Acked::Stopped;
                }
            }
        }
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
            if msg.topic() == self.control_topic
                && msg.payload().is_some_and(CampaignToMeter::is_one)
            {
                match self.parse_campaign(msg) {
                    Ok(r) => {
                        let meter = r.meter_id().to_string();
                        let what = match r {
                            CampaignToMeter::CampaignRelease { order_id, .. } => {
                                MeterMsg::Release { order_id }
                            }
                            CampaignToMeter::CampaignWithdraw {
                                order_id, reason, ..
                            } => MeterMsg::Withdraw { order_id, reason },
                            CampaignToMeter::CampaignAdopt {
                                order_id,
                                campaign_id,
                                ..
                            } => MeterMsg::Adopt {
                                order_id,
                                campaign_id,
                            },
                        };
                        if !deliver(&self.directory, &meter, what, "campaign message", io).await {
                            return Handled::Stopped;
                        }
                    }
                    Err(r) => rejected.push((i, r)),
                }
                continue;
            }
            if msg.topic() == self.control_topic && msg.payload().is_some_and(MeterHandover::is_one)
            {
                match MeterHandover::parse(msg.key(), msg.payload().unwrap_or_default())
                    .map_err(|e| Rejected::new(DeadLetterReason::InvalidFact, e))
                    .and_then(|h| {
                        match super::meter_source::misrouted(
                            &self.directory,
                            "meter",
                            &h.meter_id,
                            msg,
                        ) {
                            Some(r) => Err(r),
                            None => Ok(h),
                        }
                    }) {
                    Ok(h) => {
                        // (The new meter need not be registered yet: its orders wait for it.)
                        let meter = h.meter_id.clone();
                        if !deliver(
                            &self.directory,
                            &meter,
                            MeterMsg::Handover(h),
                            "handover",
                            io,
                        )
                        .await
                        {
                            return Handled::Stopped;
                        }
                    }
                    Err(r) => rejected.push((i, r)),
                }
                continue;
            }
            if msg.topic() == self.control_topic && msg.payload().is_some_and(MoveLink::is_one) {
                match self.parse_move_link(msg) {
                    Ok(l) => {
                        let meter = l.meter_id.clone();
                        if !deliver(&self.directory, &meter, MeterMsg::Link(l), "move link", io)
                            .await
                        {
                            return Handled::Stopped;
                        }
                    }
                    Err(r) => rejected.push((i, r)),
                }
                continue;
            }
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
            if !deliver(
                &self.directory,
                &meter,
                MeterMsg::Fact(fact.clone()),
                fact.fact_id(),
                io,
            )
            .await
            {
                return Handled::Stopped;
            }
        }
        Handled::Done(rejected)
    }
}
