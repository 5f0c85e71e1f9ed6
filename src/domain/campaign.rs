//! Campaigns as data: the definition an operator sends, a campaign as stored, one order of a
//! campaign, the progress event, and the records of the campaign-control topic. The release
//! queue, windows and planner are in `campaign`; the store and the Kafka sources use these
//! types without depending on it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Day, Order, OrderKind, OrderStatus, ReasonCode, Timestamp};

pub const CAMPAIGN_SCHEMA_VERSION: u32 = 1;

/// In which order a campaign releases its orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// Most urgent first (priority 1..9), then largest amount due, then arrival.
    #[default]
    Priority,
    /// Largest amount due first, then arrival.
    AmountDue,
    /// Round robin over zones (spreads field and call-center load), priority within a zone.
    ZoneStagger,
    /// Arrival order.
    Arrival,
}

/// A campaign as the operator defines it (campaign-control topic, `define`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignDef {
    pub schema_version: u32,
    pub campaign_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// At most this many releases in any hour (sized to the call center).
    pub rate_per_hour: u32,
    /// Optionally, at most this many releases per zone in any hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_rate_per_hour: Option<u32>,
    /// IANA time zone of the windows.
    pub time_zone: String,
    /// Local release windows per weekday, `["08:00", "14:00"]`; a day without one has no
    /// releases.
    pub windows: BTreeMap<Day, [String; 2]>,
    pub start_at: Timestamp,
    /// Releases stop here (maximum duration); what is left is withdrawn (`campaign_expired`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_by: Option<Timestamp>,
    #[serde(default)]
    pub ordering: Ordering,
    /// Zones the campaign may release in; empty = any. Each must be known to the registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// Reconnect calls per hour the call center can take (the plan chart's capacity line);
    /// defaults to `rate_per_hour`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_center_capacity_per_hour: Option<u32>,
    /// Also take in open disconnects already received that match this filter (and `zones`),
    /// e.g. "all non-payment disconnects due tomorrow in zones A, B".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt: Option<AdoptFilter>,
}

/// Which open orders a campaign takes in when it is defined: disconnects without a campaign,
/// not sent yet, in the campaign's zones, matching every field given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdoptFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<ReasonCode>,
    /// The order's `earliest_at` is at or after this ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) due_from: Option<Timestamp>,
    /// ... and before this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) due_until: Option<Timestamp>,
}

impl AdoptFilter {
    pub(crate) fn matches(&self, o: &Order) -> bool {
        o.kind == OrderKind::Disconnect
            && o.campaign_id.is_none()
            && self.reason.is_none_or(|r| r == o.reason)
            && self
                .due_from
                .is_none_or(|f| o.earliest_at.is_some_and(|e| e >= f))
            && self
                .due_until
                .is_none_or(|u| o.earliest_at.is_some_and(|e| e < u))
    }
}

/// One order of a campaign, as compact as the queue needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignOrder {
    pub order_id: String,
    pub meter_id: String,
    pub zone: String,
    pub priority: u8,
    /// Amount due in cents (0 when unknown).
    pub amount_cents: i64,
    /// Arrival sequence within the campaign.
    pub seq: u64,
    #[serde(default)]
    pub released: bool,
    /// When it was released (from the store's release row; not part of the stored order row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<Timestamp>,
}

impl CampaignOrder {
    pub(crate) fn key(&self, ordering: Ordering) -> (i64, i64, u64) {
        match ordering {
            Ordering::Priority | Ordering::ZoneStagger => {
                (self.priority as i64, -self.amount_cents, self.seq)
            }
            Ordering::AmountDue => (-self.amount_cents, 0, self.seq),
            Ordering::Arrival => (0, 0, self.seq),
        }
    }
}

/// Lifecycle of a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignStatus {
    Active,
    Paused,
    Cancelled,
    /// Every order released (or withdrawn); outcomes may still arrive.
    Finished,
    /// `end_by` passed with orders left; they were withdrawn.
    Expired,
}

/// A campaign as stored: its definition and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignRecord {
    pub(crate) def: CampaignDef,
    pub(crate) status: CampaignStatus,
    /// The rate in force (the definition's, or one set later).
    pub(crate) rate_per_hour: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_release_at: Option<Timestamp>,
    pub(crate) released: u64,
    pub(crate) updated_at: Timestamp,
}

/// Progress of a campaign, as published on the campaign-events topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignEvent {
    pub(crate) schema_version: u32,
    pub(crate) campaign_id: String,
    /// What happened: defined, started, paused, resumed, rate_changed, cancelled, progress,
    /// finished, expired.
    pub event: String,
    pub(crate) status: CampaignStatus,
    pub(crate) at: Timestamp,
    pub(crate) rate_per_hour: u32,
    pub total: u64,
    pub(crate) released: u64,
    pub remaining: u64,
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub cancelled: u64,
    /// Released orders policy deferred at least once.
    pub(crate) deferred: u64,
    /// When the last release is expected at the current rate and windows (no policy holds
    /// assumed); absent when nothing remains or it cannot be computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) expected_finish: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) by: Option<String>,
}

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
    /// Written by switchyard (several instances): an order of the campaign was accepted by
    /// the instance that owns its meter, which does not own the campaign. From that
    /// instance's outbox, at least once (the campaign takes an order in once).
    OrderJoined {
        schema_version: u32,
        campaign_id: String,
        order: CampaignOrder,
    },
    /// Written by switchyard (several instances): an order of the campaign reached a new
    /// status at its meter, owned by another instance than the campaign. From that meter's
    /// outbox, stored with the status, at least once (the campaign counts an order once).
    OrderOutcome {
        schema_version: u32,
        campaign_id: String,
        order_id: String,
        status: OrderStatus,
    },
}

/// A record switchyard writes on the control topic (key = meter id) when a campaign owned by
/// one instance releases, withdraws or adopts an order of a meter owned by another (several
/// instances on a shared store). From the campaign's outbox, stored with the release, at
/// least once: each is idempotent at the meter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CampaignToMeter {
    CampaignRelease {
        schema_version: u32,
        campaign_id: String,
        order_id: String,
        meter_id: String,
    },
    CampaignWithdraw {
        schema_version: u32,
        campaign_id: String,
        order_id: String,
        meter_id: String,
        reason: String,
    },
    CampaignAdopt {
        schema_version: u32,
        campaign_id: String,
        order_id: String,
        meter_id: String,
    },
}

/// A campaign message for another instance: to the owner of a meter (control topic) or of a
/// campaign (campaign-control topic).
pub enum ToOwner {
    Meter(CampaignToMeter),
    Campaign(ControlRecord),
}

impl CampaignToMeter {
    pub(crate) fn meter_id(&self) -> &str {
        match self {
            CampaignToMeter::CampaignRelease { meter_id, .. }
            | CampaignToMeter::CampaignWithdraw { meter_id, .. }
            | CampaignToMeter::CampaignAdopt { meter_id, .. } => meter_id,
        }
    }

    pub(crate) fn schema_version(&self) -> u32 {
        match self {
            CampaignToMeter::CampaignRelease { schema_version, .. }
            | CampaignToMeter::CampaignWithdraw { schema_version, .. }
            | CampaignToMeter::CampaignAdopt { schema_version, .. } => *schema_version,
        }
    }

    /// Is this payload meant to be one (its `type` names a campaign record)? Control-topic
    /// records are read as this only then, as meter facts otherwise.
    pub(crate) fn is_one(payload: &[u8]) -> bool {
        super::record_type(payload).is_some_and(|t| t.starts_with("campaign_"))
    }
}

impl ControlRecord {
    pub(crate) fn campaign_id(&self) -> &str {
        match self {
            ControlRecord::Define { campaign, .. } => &campaign.campaign_id,
            ControlRecord::Pause { campaign_id, .. }
            | ControlRecord::Resume { campaign_id, .. }
            | ControlRecord::Cancel { campaign_id, .. }
            | ControlRecord::SetRate { campaign_id, .. }
            | ControlRecord::OrderJoined { campaign_id, .. }
            | ControlRecord::OrderOutcome { campaign_id, .. } => campaign_id,
        }
    }

    pub(crate) fn schema_version(&self) -> u32 {
        match self {
            ControlRecord::Define { schema_version, .. }
            | ControlRecord::Pause { schema_version, .. }
            | ControlRecord::Resume { schema_version, .. }
            | ControlRecord::Cancel { schema_version, .. }
            | ControlRecord::SetRate { schema_version, .. }
            | ControlRecord::OrderJoined { schema_version, .. }
            | ControlRecord::OrderOutcome { schema_version, .. } => *schema_version,
        }
    }
}

/// A campaign order reached a new status (sent to the campaigns after the meter's write is
/// durable). A channel, not a handle on the campaigns: campaigns release orders to the meters,
/// and the meters must not hold the campaigns in turn.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignOutcome {
    pub(crate) campaign_id: String,
    pub(crate) order_id: String,
    pub(crate) status: OrderStatus,
}
