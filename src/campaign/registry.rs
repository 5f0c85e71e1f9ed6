//! The campaigns of this instance: one actor each, found by campaign id. Defines a campaign
//! (stored, then started, then the open orders its filter adopts), resumes the stored ones it
//! owns, and routes orders, operator commands and the meters' outcomes to the actors.
//!
//! With several instances a campaign is owned by the owner of its campaign-control partition,
//! which is the ownership unit its id hashes to (the campaign-control topic is co-partitioned
//! with the meter topics and read by the same consumer: docs/architecture.md "Scale out").
//! The actors of the campaigns whose units arrive are started once the assignment's leases
//! are held and its facts applied ([`Campaigns::resume_owned`]); those whose units leave are
//! stopped ([`Campaigns::stop_unowned`]); their writes are fenced by the unit's lease.

use std::sync::Arc;

use actix::prelude::*;

use super::actor::{CampaignActor, CampaignMsg, CampaignServices};
use super::machine::{CampaignMachine, Command};
use super::persist;
use super::{Campaign, CampaignDef, CampaignError, CampaignOrder, CampaignRecord, CampaignStatus};
use crate::domain::OrderStatus;
use crate::domain::ToOwner;
use crate::store::WriteBatch;

/// A running campaign: its actor, and the flag that tells it it is being stopped.
struct Running {
    addr: Addr<CampaignActor>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

/// The campaigns of this instance: one actor each, found by campaign id.
pub struct Campaigns {
    actors: dashmap::DashMap<String, Running>,
    /// `start` (load the stored orders, register the actor) excludes `enqueue` (look up, send):
    /// an order stored before a campaign starts is either in the load or in the mailbox.
    gate: std::sync::RwLock<()>,
    svc: CampaignServices,
    arbiter: ArbiterHandle,
}

impl Campaigns {
    pub fn new(svc: CampaignServices, arbiter: ArbiterHandle) -> Arc<Campaigns> {
        Arc::new(Campaigns {
            actors: dashmap::DashMap::new(),
            gate: std::sync::RwLock::new(()),
            svc,
            arbiter,
        })
    }

    /// Starts the actor of a stored campaign that has not ended (unless it runs already, or
    /// another instance owns it).
    pub(crate) fn start(&self, record: CampaignRecord) -> Result<(), CampaignError> {
        let campaign = record.def.clone().validate(|_| true)?;
        let _g = self.gate.write().expect("lock");
        let id = record.def.campaign_id.clone();
        if self.actors.contains_key(&id) || !self.owned_here(&id) {
            return Ok(());
        }
        let (orders, statuses) = persist::stored_orders(&self.svc.store, &id);
        let machine = CampaignMachine::new(campaign, record, orders, &statuses);
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let actor = CampaignActor::new(self.svc.clone(), machine, stopping.clone());
        let addr = CampaignActor::start_in_arbiter(&self.arbiter, move |_| actor);
        self.actors.insert(id, Running { addr, stopping });
        Ok(())
    }

    /// Is the campaign `id` this instance's (one process: every campaign is)?
    fn owned_here(&self, id: &str) -> bool {
        self.svc.sink.owned_here(id)
    }

    /// Resumes every stored campaign that has not ended, is owned here and is not running
    /// yet (at each assignment, once its leases are held and its facts applied).
    pub fn resume_owned(&self) -> usize {
        let all = self.svc.store.store().campaigns().unwrap_or_default();
        let mut n = 0;
        for r in all {
            let ended = matches!(
                r.status,
                CampaignStatus::Cancelled | CampaignStatus::Expired | CampaignStatus::Finished
            );
            let id = r.def.campaign_id.clone();
            if ended || self.actors.contains_key(&id) || !self.owned_here(&id) {
                continue;
            }
            if let Err(e) = self.start(r) {
                tracing::error!(error = %e, "stored campaign not resumed");
            } else {
                tracing::info!(campaign = %id, "campaign resumed here");
                n += 1;
            }
        }
        n
    }

    /// Stops the campaigns whose units another instance owns now (their writes were fenced
    /// meanwhile; the new owner resumes them from the store).
    pub(crate) fn stop_unowned(&self) -> usize {
        let gone: Vec<String> = self
            .actors
            .iter()
            .filter(|r| !self.owned_here(r.key()))
            .map(|r| r.key().clone())
            .collect();
        for id in &gone {
            if let Some((_, r)) = self.actors.remove(id) {
                r.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
                r.addr.do_send(CampaignMsg::Stop);
                tracing::info!(campaign = %id, "campaign handed to another instance: its actor here stops");
            }
        }
        gone.len()
    }

    /// Every campaign here sends its open releases again (a rebalance moved meters: a
    /// release delivered to a meter's actor here just before its unit left may have been
    /// dropped with the actor). The meters ignore a repeat.
    pub(crate) fn resend_open(&self) {
        for r in self.actors.iter() {
            r.addr.do_send(CampaignMsg::ResendOpen);
        }
    }

    /// The stored definition of a campaign, if it was ever defined.
    pub(crate) fn definition(&self, campaign_id: &str) -> Option<CampaignDef> {
        self.svc
            .store
            .store()
            .campaigns()
            .ok()?
            .into_iter()
            .find(|c| c.def.campaign_id == campaign_id)
            .map(|c| c.def)
    }

    pub(crate) fn exists(&self, campaign_id: &str) -> bool {
        self.actors.contains_key(campaign_id) || self.definition(campaign_id).is_some()
    }

    /// Takes in the open disconnects that match the campaign's `adopt` filter: each is listed
    /// with the campaign (stored), held by its meter, and queued. Scans the open orders in the
    /// store once. Returns how many were taken in.
    async fn adopt(&self, campaign: &Campaign) -> usize {
        let Some(filter) = &campaign.def.adopt else {
            return 0;
        };
        let id = campaign.id().to_string();
        let store = self.svc.store.store().clone();
        let meters = store.meters_with_open_work().unwrap_or_default();
        let mut rows = Vec::new();
        for m in meters {
            let Some(zone) = self.svc.sink.zone_of(&m) else {
                continue;
            };
            if !campaign.in_zone_scope(&zone) {
                continue;
            }
            for r in store.open_orders(&m).unwrap_or_default() {
                if filter.matches(&r.order) {
                    rows.push(CampaignOrder {
                        order_id: r.order.order_id.clone(),
                        meter_id: r.order.meter_id.clone(),
                        zone: zone.clone(),
                        priority: r.order.priority,
                        amount_cents: r
                            .order
                            .amount_due
                            .map(|a| (a * 100.0).round() as i64)
                            .unwrap_or(0),
                        seq: r.received_at.as_nanosecond() as u64,
                        released: false,
                        released_at: None,
                    });
                }
            }
        }
        // A meter owned by another instance is told by a record to its owner, stored with
        // the rows.
        let mut local = Vec::new();
        let mut outbox = Vec::new();
        for o in &rows {
            let remote = self.svc.sink.to_owner(&o.meter_id, &|| {
                ToOwner::Meter(crate::domain::CampaignToMeter::CampaignAdopt {
                    schema_version: 1,
                    campaign_id: id.clone(),
                    order_id: o.order_id.clone(),
                    meter_id: o.meter_id.clone(),
                })
            });
            match remote {
                Some(m) => outbox.push(m),
                None => local.push(o),
            }
        }
        let batch = WriteBatch {
            campaign_orders: rows.iter().map(|o| (id.clone(), o.clone())).collect(),
            outbox,
            ..WriteBatch::default()
        };
        persist::write_until_stored(&self.svc.store, batch, "adopted campaign orders").await;
        for o in local {
            self.svc.sink.adopt(&id, &o.order_id, &o.meter_id);
        }
        for o in &rows {
            self.enqueue(&id, o.clone());
        }
        tracing::info!(campaign = %id, adopted = rows.len(), "open orders taken into the campaign");
        rows.len()
    }

    /// Stores a new campaign and starts it. A campaign id already defined is refused.
    pub async fn define(&self, campaign: Campaign) -> Result<(), CampaignError> {
        if self.exists(campaign.id()) {
            return Err(CampaignError {
                campaign_id: campaign.id().to_string(),
                key: "campaign_id".into(),
                message: "is already defined; campaigns are immutable (use set_rate, pause, resume, cancel)".into(),
            });
        }
        let record = CampaignRecord {
            rate_per_hour: campaign.def.rate_per_hour,
            def: campaign.def.clone(),
            status: CampaignStatus::Active,
            last_release_at: None,
            released: 0,
            updated_at: self.svc.clock.now(),
        };
        let batch = WriteBatch {
            campaigns: vec![record.clone()],
            ..WriteBatch::default()
        };
        persist::write_until_stored(&self.svc.store, batch, "campaign").await;
        self.start(record)?;
        self.adopt(&campaign).await;
        Ok(())
    }

    pub(crate) fn enqueue(&self, campaign_id: &str, o: CampaignOrder) {
        let _g = self.gate.read().expect("lock");
        if let Some(a) = self.actors.get(campaign_id) {
            a.addr.do_send(CampaignMsg::Enqueue(o));
        }
    }

    /// For an order accepted here whose campaign another instance owns: the outbox record
    /// that tells that instance (stored with the order). `None`: the campaign is owned here
    /// ([`Campaigns::enqueue`] after the write).
    pub(crate) fn joined_elsewhere(
        &self,
        campaign_id: &str,
        o: &CampaignOrder,
    ) -> Option<crate::store::OutboxMessage> {
        self.svc.sink.to_owner(campaign_id, &|| {
            ToOwner::Campaign(crate::domain::ControlRecord::OrderJoined {
                schema_version: 1,
                campaign_id: campaign_id.to_string(),
                order: o.clone(),
            })
        })
    }

    /// Sends an operator command to a running campaign. A campaign owned here that is stored
    /// and has not ended but is not running yet (its assignment is still being resumed) is
    /// started first. `false`: not defined, or ended.
    pub fn control(
        &self,
        campaign_id: &str,
        cmd: Command,
        ack: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> bool {
        if !self.actors.contains_key(campaign_id) {
            let stored = self.svc.store.store().campaigns().unwrap_or_default();
            if let Some(r) = stored.into_iter().find(|c| {
                c.def.campaign_id == campaign_id
                    && !matches!(
                        c.status,
                        CampaignStatus::Cancelled
                            | CampaignStatus::Expired
                            | CampaignStatus::Finished
                    )
            }) {
                if let Err(e) = self.start(r) {
                    tracing::error!(error = %e, "stored campaign not resumed");
                }
            }
        }
        match self.actors.get(campaign_id) {
            Some(a) => {
                a.addr.do_send(CampaignMsg::Control(cmd, ack));
                true
            }
            None => false,
        }
    }

    /// Stops every campaign actor (shutdown).
    pub fn stop_all(&self) {
        for a in self.actors.iter() {
            a.addr.do_send(CampaignMsg::Stop);
        }
        self.actors.clear();
    }

    /// Hands the meters' campaign outcomes to the campaign actors until shutdown (then what is
    /// already queued).
    pub(crate) async fn take_outcomes(
        self: Arc<Self>,
        mut outcomes: tokio::sync::mpsc::UnboundedReceiver<crate::domain::CampaignOutcome>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                o = outcomes.recv() => match o {
                    Some(o) => self.outcome(&o.campaign_id, &o.order_id, o.status),
                    None => return,
                },
                _ = shutdown.changed() => {
                    while let Ok(o) = outcomes.try_recv() {
                        self.outcome(&o.campaign_id, &o.order_id, o.status);
                    }
                    return;
                }
            }
        }
    }

    pub(crate) fn outcome(&self, campaign_id: &str, order_id: &str, status: OrderStatus) {
        if let Some(a) = self.actors.get(campaign_id) {
            a.addr.do_send(CampaignMsg::Outcome {
                order_id: order_id.to_string(),
                status,
            });
        }
    }
}
