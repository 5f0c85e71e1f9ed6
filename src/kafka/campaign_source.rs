//! The campaign-control source: campaign definitions and operator commands (pause, resume,
//! cancel, set_rate), keyed by campaign id. A record is validated (a bad one is dead-lettered
//! with `invalid_campaign` and the reason), applied, and its offset stored only once the
//! campaign has stored the outcome. A definition read again after a crash is recognised (same
//! definition) and not an error.

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
}

/// This source's consumer.
pub(crate) const CONSUMER: super::ConsumerSpec<'static> = super::ConsumerSpec {
    group_suffix: Some("campaigns"),
    commit: super::Commit::AfterWork,
    what: "campaign-control consumer",
};

impl Handler for CampaignControl {
    fn name(&self) -> &str {
        "campaign control"
    }

    async fn handle(&self, batch: &[OwnedMessage], _io: &mut Io<'_>) -> Handled {
        let mut rejected = Vec::new();
        for (i, msg) in batch.iter().enumerate() {
            let key = msg.key().map(|k| String::from_utf8_lossy(k).to_string());
            let outcome = match msg.payload() {
                None => Err("record has no value".to_string()),
                Some(b) => match serde_json::from_slice::<ControlRecord>(b) {
                    Err(e) => Err(format!("not a v1 campaign-control record: {e}")),
                    Ok(r) => self.apply(key.as_deref(), r).await,
                },
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
    async fn apply(&self, key: Option<&str>, r: ControlRecord) -> Result<(), String> {
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
                        Ok(()) // read again after a restart
                    } else {
                        Err(format!("campaign `{id}` is already defined differently; campaigns are immutable (use set_rate, pause, resume, cancel)"))
                    };
                }
                let c = campaign
                    .validate(|z| self.registry.has_zone(z))
                    .map_err(|e| e.to_string())?;
                return self.campaigns.define(c).await.map_err(|e| e.to_string());
            }
            ControlRecord::Pause { by, .. } => Command::Pause { by },
            ControlRecord::Resume { by, .. } => Command::Resume { by },
            ControlRecord::Cancel { by, .. } => Command::Cancel { by },
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
        let _ = rx.await;
        Ok(())
    }
}
