//! The campaign-control source: campaign definitions and operator commands (pause, resume,
//! cancel, set_rate), keyed by campaign id. A record is validated (a bad one is dead-lettered
//! with `invalid_campaign` and the reason), applied, and its offset stored only once the
//! campaign has stored the outcome. A definition read again after a crash is recognised (same
//! definition) and not an error.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::campaign::actor::{Campaigns, Command};
use crate::campaign::CampaignDef;
use crate::clock::Clock;
use crate::domain::DeadLetterReason;
use crate::registry::Registry;

/// A record of the campaign-control topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlRecord {
    Define {
        schema_version: u32,
        campaign: CampaignDef,
    },
    Pause {
        schema_version: u32,
        campaign_id: String,
        by: String,
    },
    Resume {
        schema_version: u32,
        campaign_id: String,
        by: String,
    },
    Cancel {
        schema_version: u32,
        campaign_id: String,
        by: String,
    },
    SetRate {
        schema_version: u32,
        campaign_id: String,
        rate_per_hour: u32,
        by: String,
    },
}

impl ControlRecord {
    pub fn campaign_id(&self) -> &str {
        match self {
            ControlRecord::Define { campaign, .. } => &campaign.campaign_id,
            ControlRecord::Pause { campaign_id, .. }
            | ControlRecord::Resume { campaign_id, .. }
            | ControlRecord::Cancel { campaign_id, .. }
            | ControlRecord::SetRate { campaign_id, .. } => campaign_id,
        }
    }

    fn schema_version(&self) -> u32 {
        match self {
            ControlRecord::Define { schema_version, .. }
            | ControlRecord::Pause { schema_version, .. }
            | ControlRecord::Resume { schema_version, .. }
            | ControlRecord::Cancel { schema_version, .. }
            | ControlRecord::SetRate { schema_version, .. } => *schema_version,
        }
    }
}

pub struct CampaignSource {
    pub consumer: StreamConsumer,
    pub producer: FutureProducer,
    pub campaigns: Arc<Campaigns>,
    pub registry: Arc<Registry>,
    pub clock: Arc<dyn Clock>,
    pub topic: String,
    pub dead_letter_topic: String,
}

pub fn consumer(
    config: &crate::config::Config,
    bootstrap: &str,
) -> Result<StreamConsumer, super::KafkaSetupError> {
    super::consumer(
        config,
        bootstrap,
        Some("campaigns"),
        super::Commit::AfterWork,
        "campaign-control consumer",
    )
}

impl CampaignSource {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        if let Err(e) = self.consumer.subscribe(&[&self.topic]) {
            tracing::error!(error = %e, topic = %self.topic, "cannot subscribe to campaign control");
            return;
        }
        loop {
            let msg = tokio::select! {
                m = self.consumer.recv() => m,
                _ = shutdown.changed() => return,
            };
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "campaign-control consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
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
                let owned = msg.detach();
                super::dead_letter::send(
                    &self.producer,
                    &self.dead_letter_topic,
                    &owned,
                    DeadLetterReason::InvalidCampaign,
                    &reason,
                    self.clock.now(),
                )
                .await;
            }
            if let Err(e) = self.consumer.store_offset_from_message(&msg) {
                tracing::warn!(error = %e, "cannot store campaign-control offset");
            }
        }
    }

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
