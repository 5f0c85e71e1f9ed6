//! Head-end results (Kafka bridge mode): a real head-end adapter answers each command on the
//! results topic, keyed by meter id, with the command id in the value. Each result is routed to
//! its meter actor, which correlates it with the command in flight. Bad records are
//! dead-lettered; a lost result is harmless (the command deadline passes and the switch status
//! is asked).

use std::sync::Arc;

use rdkafka::message::OwnedMessage;
use rdkafka::Message;

use super::source::{Handled, Handler, Rejected};
use crate::domain::{CommandResult, DeadLetterReason};
use crate::meter::{Directory, MeterMsg};

/// Routes each result to its meter.
pub(crate) struct Results {
    pub(crate) directory: Arc<Directory>,
    /// Started (its partitions assigned) while the tables are replayed; a result waits for
    /// the registry (it must meet known facts).
    pub(crate) tables: super::source::TablesReady,
}

/// A result as read from the topic, or why it is not one.
fn parse(msg: &OwnedMessage) -> Result<CommandResult, String> {
    let r = msg
        .payload()
        .ok_or_else(|| "result has no value".to_string())
        .and_then(|b| {
            serde_json::from_slice::<CommandResult>(b)
                .map_err(|e| format!("not a v1 command result: {e}"))
        })?;
    let id_ok = !r.meter_id.is_empty()
        && r.meter_id.len() <= 128
        && r.meter_id.chars().all(|c| c.is_ascii_graphic());
    if !id_ok {
        return Err("meter_id must be 1-128 printable ASCII characters".to_string());
    }
    if r.schema_version != 1 {
        return Err(format!(
            "schema_version {} is not supported (use 1)",
            r.schema_version
        ));
    }
    match msg.key() {
        Some(k) if k != r.meter_id.as_bytes() => {
            Err(format!("record key differs from meter_id `{}`", r.meter_id))
        }
        _ => Ok(r),
    }
}

impl Handler for Results {
    fn name(&self) -> &str {
        "head-end results"
    }

    async fn handle(&self, batch: &[OwnedMessage], _io: &mut super::source::Io<'_>) -> Handled {
        if !self.tables.wait().await {
            return Handled::Stopped;
        }
        let mut rejected = Vec::new();
        for (i, msg) in batch.iter().enumerate() {
            match parse(msg) {
                Ok(r) if self.directory.owns(&r.meter_id) => {
                    let meter = r.meter_id.clone();
                    self.directory.deliver(&meter, MeterMsg::Result(r));
                }
                Ok(r) => rejected.extend(
                    super::meter_source::misrouted(&self.directory, "meter", &r.meter_id, msg)
                        .map(|x| (i, x)),
                ),
                Err(reason) => rejected.push((
                    i,
                    Rejected::new(DeadLetterReason::InvalidHeadEndResult, reason),
                )),
            }
        }
        Handled::Done(rejected)
    }
}
