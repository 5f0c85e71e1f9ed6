//! The campaign-control records: campaign definitions and operator commands (pause, resume,
//! cancel, set_rate), keyed by campaign id, and the records instances send a campaign's owner
//! (an order joined, an order's outcome). Read by the meter consumer (the topic is
//! co-partitioned with the meter topics: a campaign is owned by the owner of its partition,
//! `kafka::meter_source`). A record is validated (a bad one is dead-lettered with
//! `invalid_campaign` and the reason; one whose campaign another instance owns with
//! `misrouted`), applied, and its offset stored only once the campaign has stored the
//! outcome. A definition read again after a crash is recognised (same definition) and not an
//! error.

use std::sync::Arc;

use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use tokio::sync::oneshot;

use super::source::{Handled, Handler, Io, Rejected};
use crate::campaign::registry::Campaigns;
use crate::campaign::Command;
use crate::domain::ControlRecord;
use crate::domain::DeadLetterReason;
use crate::registry::Registry;

/// Applies campaign definitions and commands; returns once the campaign has stored them.
pub(crate) struct CampaignControl {
    pub(crate) campaigns: Arc<Campaigns>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) directory: Arc<crate::meter::Directory>,
    /// Definitions name zones of the registry: its records wait for the tables.
    pub(crate) tables: super::source::TablesReady,
}

impl Handler for CampaignControl {
    fn name(&self) -> &str {
        "campaign control"
    }

    async fn handle(&self, batch: &[OwnedMessage], io: &mut Io<'_>) -> Handled {
        if !self.tables.wait().await {
            return Handled::Stopped;
        }
        let mut rejected = Vec::new();
        for (i, msg) in batch.iter().enumerate() {
            let key = msg.key().map(|k| String::from_utf8_lossy(k).to_string());
            if let Some(k) = &key {
                if let Some(r) = super::meter_source::misrouted(&self.directory, "campaign", k, msg)
                {
                    rejected.push((i, r));
                    continue;
                }
            }
            let outcome = match msg.payload() {
                None => Err("record has no value".to_string()),
                Some(b) => match serde_json::from_slice::<ControlRecord>(b) {
                    Err(e) => Err(format!("not a v1 campaign-control record: {e}")),
                    Ok(r) => self.apply(key.as_deref(), r).await,
                },
            };
            // A command is applied once the campaign has stored its outcome. Waiting, the
            // consumer keeps polling (a campaign whose unit's lease lapsed holds its step
            // until a revoke, heard only in a poll, stops it). A campaign stopped meanwhile
            // (its unit went to another instance) drops the acknowledgement: its new owner
            // reads this record again (the offset of a partition no longer assigned here is
            // not stored).
            let outcome = match outcome {
                Ok(Some(mut rx)) => loop {
                    tokio::select! {
                        r = &mut rx => {
                            if r.is_err() {
                                tracing::info!(key = ?key, "campaign stopped before it stored a command: its new owner applies it");
                            }
                            break Ok(());
                        }
                        _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {
                            if !io.pause_for(std::time::Duration::from_millis(50)).await {
                                return Handled::Stopped;
                            }
                        }
                    }
                },
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(reason) = outcome {
                tracing::warn!(reason = %reason, "campaign-control record refused");
                rejected.push((i, Rejected::new(DeadLetterReason::InvalidCampaign, reason)));
            }
        }
        Handled::Done(rejected)
    }
}

impl CampaignControl {
    /// Applies a record; `Some(ack)`: a command sent to its campaign, done once `ack` fires.
    async fn apply(
        &self,
        key: Option<&str>,
        r: ControlRecord,
    ) -> Result<Option<oneshot::Receiver<()>>, String> {
        if r.schema_version() != 1 {
            return Err(format!(
                "schema_version {} is not supported (use 1)",
                r.schema_version()
            ));
        }
        let id = r.campaign_id().to_string();
        if key != Some(id.as_str()) {
            return Err(format!(
                "record key {key:?} differs from campaign_id `{id}`: key it by campaign_id"
            ));
        }
        let cmd = match r {
            ControlRecord::Define { campaign, .. } => {
                if let Some(existing) = self.campaigns.definition(&id) {
                    return if existing == campaign {
                        Ok(None) // read again after a restart
                    } else {
                        Err(format!("campaign `{id}` is already defined differently; campaigns are immutable (use set_rate, pause, resume, cancel)"))
                    };
                }
                let c = campaign
                    .validate(|z| self.registry.has_zone(z))
                    .map_err(|e| e.to_string())?;
                return self
                    .campaigns
                    .define(c)
                    .await
                    .map(|()| None)
                    .map_err(|e| e.to_string());
            }
            ControlRecord::Pause { by, .. } => Command::Pause { by },
            ControlRecord::Resume { by, .. } => Command::Resume { by },
            ControlRecord::Cancel { by, .. } => Command::Cancel { by },
            ControlRecord::OrderJoined { order, .. } => {
                // Stored by the instance that accepted it; a campaign not running here yet
                // (its assignment is being resumed) loads it from the store when it starts.
                self.campaigns.enqueue(&id, order);
                return Ok(None);
            }
            ControlRecord::OrderOutcome {
                order_id, status, ..
            } => {
                self.campaigns.outcome(&id, &order_id, status);
                return Ok(None);
            }
            ControlRecord::SetRate {
                rate_per_hour, by, ..
            } => {
                if rate_per_hour == 0 || rate_per_hour > 1_000_000 {
                    return Err(format!(
                        "rate_per_hour {rate_per_hour} is not a usable rate: give 1..=1000000"
                    ));
                }
                Command::SetRate { rate_per_hour, by }
            }
        };
        let (tx, rx) = oneshot::channel();
        if !self.campaigns.control(&id, cmd, Some(tx)) {
            return Err(format!(
                "campaign `{id}` is not defined (or has ended): define it first"
            ));
        }
        Ok(Some(rx))
    }
}
