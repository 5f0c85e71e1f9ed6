//! The campaign actor: one per campaign. It feeds each message (and each wake of its timer) to
//! the pure [`CampaignMachine`](super::machine::CampaignMachine), stores what the step asks in
//! one write (the record, a release, an event), and only once that write is durable performs
//! the rest: releases and withdrawals to the meters, and the one wake timer. The mailbox is
//! held while a refused write is retried, so steps never interleave with a pending write. The
//! rules (rate, windows, zone bars, exactly once) are the machine's.
//!
//! Its timers wait on the injected clock, so a week-long campaign runs in milliseconds under
//! tokio's paused time.

use std::sync::Arc;

use actix::prelude::*;

use super::machine::{Action, CampaignMachine, Command, Input};
use super::persist;
use super::CampaignOrder;
use crate::clock::Clock;
use crate::commit::StoreHandle;
use crate::domain::ToOwner;
use crate::domain::{CampaignToMeter, OrderStatus, Timestamp};
use crate::facts::FactBook;
use crate::policy::Policy;
use crate::store::{OutboxMessage, WriteBatch};

/// Where releases and withdrawals go: the meter directory in production, a recorder in tests.
pub trait ReleaseSink: Send + Sync + 'static {
    fn release(&self, campaign_id: &str, order_id: &str, meter_id: &str, at: Timestamp);
    fn withdraw(&self, campaign_id: &str, order_id: &str, meter_id: &str, reason: &str);
    /// Asks the meter to hold an order it already has for the campaign (adoption by filter).
    fn adopt(&self, _campaign_id: &str, _order_id: &str, _meter_id: &str) {}
    /// The meter's zone (for adoption), when known.
    fn zone_of(&self, _meter_id: &str) -> Option<String> {
        None
    }
    /// With several instances: when `key` (a meter id or a campaign id) is owned by another
    /// instance, the outbox record that carries `what` to it; `None`: owned here (deliver
    /// directly). One process owns everything.
    fn to_owner(&self, _key: &str, _what: &dyn Fn() -> ToOwner) -> Option<OutboxMessage> {
        None
    }
    /// Is `key` (a campaign id) owned by this instance now?
    fn owned_here(&self, _key: &str) -> bool {
        true
    }
    /// Runs `write` only while the campaign's unit is leased here (counted while it runs, so
    /// that a graceful revoke waits for it before it gives the lease up); `false`, not run:
    /// not leased now (fencing, [`crate::lease`]). One process holds every lease.
    fn fenced(&self, _campaign_id: &str, write: &mut dyn FnMut()) -> bool {
        write();
        true
    }
}

/// What every campaign actor shares.
#[derive(Clone)]
pub struct CampaignServices {
    pub store: StoreHandle,
    pub clock: Arc<dyn Clock>,
    pub policy: Arc<Policy>,
    pub facts: Arc<FactBook>,
    pub sink: Arc<dyn ReleaseSink>,
    pub events_topic: std::sync::Arc<str>,
}

impl CampaignServices {
    /// Whether policy bars `zone` at `t`: the rule, and until when if the facts say so.
    fn zone_bar(&self, zone: &str, t: Timestamp) -> Option<(String, Option<Timestamp>)> {
        let f = self.facts.forecasts(zone);
        let e = self.facts.emergencies();
        self.policy
            .zone_bar(t, zone, &f, &e)
            .map(|(hit, until)| (hit.rule, until))
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub(crate) enum CampaignMsg {
    /// A new order of this campaign (stored already).
    Enqueue(CampaignOrder),
    /// An operator command; `ack` fires once its outcome is stored.
    Control(Command, Option<tokio::sync::oneshot::Sender<()>>),
    /// An order of the campaign changed status (from its meter).
    Outcome {
        order_id: String,
        status: OrderStatus,
    },
    /// Send the releases still open again (a rebalance moved meters between instances).
    ResendOpen,
    /// Stop the actor (shutdown); the campaign resumes from the store on the next start.
    Stop,
}

pub(crate) struct CampaignActor {
    svc: CampaignServices,
    machine: CampaignMachine,
    wake: Option<SpawnHandle>,
    /// Set by the registry when the campaign's unit went to another instance: a step held
    /// for its lease gives up, and the actor stops.
    stopping: Arc<std::sync::atomic::AtomicBool>,
}

impl CampaignActor {
    pub(crate) fn new(
        svc: CampaignServices,
        machine: CampaignMachine,
        stopping: Arc<std::sync::atomic::AtomicBool>,
    ) -> CampaignActor {
        CampaignActor {
            svc,
            machine,
            wake: None,
            stopping,
        }
    }

    /// One machine step: its stored part in one write, then (with `ack`) the rest. A release,
    /// resend or withdrawal for a meter another instance owns goes into that write as an
    /// outbox record to its owner (stored with the release, at least once), not to a meter
    /// here.
    fn run(
        &mut self,
        input: Input,
        ack: Option<tokio::sync::oneshot::Sender<()>>,
        ctx: &mut Context<Self>,
    ) {
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            ctx.stop();
            return;
        }
        let now = self.svc.clock.now();
        let svc = &self.svc;
        let actions = self.machine.step(input, now, &|z, t| svc.zone_bar(z, t));
        let id = self.machine.id().to_string();
        let mut batch = WriteBatch::default();
        let mut effects = Vec::new();
        for a in actions {
            match a {
                Action::Save(record) => batch.campaigns.push(record),
                Action::SaveRelease { order_id, at } => {
                    batch
                        .campaign_releases
                        .push((id.clone(), order_id.into(), at))
                }
                Action::Publish(e) => {
                    crate::observability::campaign_progress(&e);
                    batch.outbox.push(OutboxMessage {
                        topic: self.svc.events_topic.clone(),
                        key: e.campaign_id.as_str().into(),
                        payload: serde_json::to_vec(&e).expect("serialize"),
                    });
                }
                Action::Ignored(cmd) => {
                    tracing::warn!(campaign = %id, ?cmd, "command for a campaign that has ended; ignored")
                }
                Action::Release {
                    ref order_id,
                    ref meter_id,
                    ..
                }
                | Action::Resend {
                    ref order_id,
                    ref meter_id,
                    ..
                } => {
                    let remote = self.svc.sink.to_owner(meter_id, &|| {
                        ToOwner::Meter(CampaignToMeter::CampaignRelease {
                            schema_version: 1,
                            campaign_id: id.clone(),
                            order_id: order_id.to_string(),
                            meter_id: meter_id.to_string(),
                        })
                    });
                    match remote {
                        Some(m) => {
                            batch.outbox.push(m);
                            if matches!(a, Action::Release { .. }) {
                                crate::observability::campaign_released();
                            }
                        }
                        None => effects.push(a),
                    }
                }
                Action::Withdraw {
                    ref order_id,
                    ref meter_id,
                    reason,
                } => {
                    let remote = self.svc.sink.to_owner(meter_id, &|| {
                        ToOwner::Meter(CampaignToMeter::CampaignWithdraw {
                            schema_version: 1,
                            campaign_id: id.clone(),
                            order_id: order_id.to_string(),
                            meter_id: meter_id.to_string(),
                            reason: reason.to_string(),
                        })
                    });
                    match remote {
                        Some(m) => batch.outbox.push(m),
                        None => effects.push(a),
                    }
                }
                other => effects.push(other),
            }
        }
        let then = move |act: &mut Self, ctx: &mut Context<Self>| {
            if let Some(a) = ack {
                let _ = a.send(());
            }
            act.perform(effects, ctx);
        };
        match persist::write_fenced(&self.svc, batch, &id, self.stopping.clone()) {
            None => then(self, ctx),
            Some(retry) => {
                ctx.wait(retry.into_actor(self).map(move |stored, act, ctx| {
                    if stored {
                        then(act, ctx)
                    } else {
                        // Its unit went to another instance meanwhile: nothing of the step
                        // was stored nor is sent; the new owner resumes from the store.
                        tracing::info!(campaign = %act.machine.id(), "campaign handed to another instance; a step not stored was dropped");
                        ctx.stop();
                    }
                }));
            }
        }
    }

    /// What a step asks once its write is durable.
    fn perform(&mut self, effects: Vec<Action>, ctx: &mut Context<Self>) {
        let id = self.machine.id().to_string();
        for a in effects {
            match a {
                Action::Release {
                    order_id,
                    meter_id,
                    at,
                } => {
                    self.svc.sink.release(&id, &order_id, &meter_id, at);
                    crate::observability::campaign_released();
                }
                Action::Resend {
                    order_id,
                    meter_id,
                    at,
                } => self.svc.sink.release(&id, &order_id, &meter_id, at),
                Action::Withdraw {
                    order_id,
                    meter_id,
                    reason,
                } => self.svc.sink.withdraw(&id, &order_id, &meter_id, reason),
                Action::WakeAt(at) => {
                    if let Some(h) = self.wake.take() {
                        ctx.cancel_future(h);
                    }
                    let sleep = self.svc.clock.sleep_until(at);
                    let h = ctx.spawn(sleep.into_actor(self).map(|(), act, ctx| {
                        act.wake = None;
                        act.run(Input::Wake, None, ctx);
                    }));
                    self.wake = Some(h);
                }
                Action::Disarm => {
                    if let Some(h) = self.wake.take() {
                        ctx.cancel_future(h);
                    }
                }
                Action::Save(_)
                | Action::SaveRelease { .. }
                | Action::Publish(_)
                | Action::Ignored(_) => {}
            }
        }
    }
}

impl Actor for CampaignActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.run(Input::Start, None, ctx);
    }
}

impl Handler<CampaignMsg> for CampaignActor {
    type Result = ();

    fn handle(&mut self, msg: CampaignMsg, ctx: &mut Context<Self>) {
        match msg {
            CampaignMsg::Enqueue(o) => self.run(Input::Enqueue(o), None, ctx),
            CampaignMsg::Control(cmd, ack) => self.run(Input::Control(cmd), ack, ctx),
            CampaignMsg::Outcome { order_id, status } => {
                self.run(Input::Outcome { order_id, status }, None, ctx)
            }
            CampaignMsg::ResendOpen => self.run(Input::ResendOpen, None, ctx),
            CampaignMsg::Stop => ctx.stop(),
        }
    }
}
