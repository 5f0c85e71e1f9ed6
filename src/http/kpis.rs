//! The dashboard's counts (`GET /api/v1/kpis`): orders received today by status, the open work
//! (in flight, awaiting approval, held, deferred) and its service levels, the exception tasks
//! still open, and campaigns by status.
//!
//! Counted from the store, so every instance answers for the whole fleet: today's orders by
//! the receipt index (today = since midnight in the utility's time zone, the rule pack's), the
//! open work by the meters that have some (their snapshots and open orders), the exceptions by
//! their list. Each count reads at most [`COUNT_MAX`] rows and says whether it read them all
//! (`complete`). The answer is kept [`FRESH`] so that a wall of dashboards polling every few
//! seconds costs one count, not one each.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::{error, json_body, ApiError, HttpState};
use crate::domain::{OrderStatus, TaskState};
use crate::sla::SlaState;
use crate::store::{OrderCursor, StoreError};

/// Rows one count reads at most.
pub(crate) const COUNT_MAX: usize = 100_000;
/// How long an answer is served again.
pub(crate) const FRESH: Duration = Duration::from_secs(10);

/// The last answer and when it was made.
#[derive(Default)]
pub(crate) struct KpiCache(Mutex<Option<(Instant, serde_json::Value)>>);

/// `GET /api/v1/kpis`.
#[utoipa::path(get, path = "/api/v1/kpis", operation_id = "kpis", tag = "dashboard", security(("bearer" = [])),
    responses((status = 200, description = "OK", body = Object),
        (status = 401, description = "no token, or an unknown one", body = ApiError),
        (status = 429, description = "over the token's request rate: wait `Retry-After` seconds", body = ApiError),
        (status = 403, description = "the token's role is too small", body = ApiError),
        (status = 503, description = "the store or Kafka is unavailable: nothing was changed, try again", body = ApiError)))]
pub(crate) async fn kpis(State(s): State<HttpState>) -> Response {
    if let Some((at, v)) = s.kpi_cache.0.lock().expect("lock").as_ref() {
        if at.elapsed() < FRESH {
            return json_body(v);
        }
    }
    let services = s.directory.services();
    let now = services.clock.now();
    let tz = services.policy.time_zone().clone();
    let sla = s.sla.clone();
    let counted = s
        .read(move |store| {
            let st = store.store();
            let midnight = now
                .to_zoned_datetime(tz)
                .start_of_day()
                .map(|z| z.timestamp())
                .unwrap_or(now);

            // Today's orders by status (final, or as received: an open one's status is
            // counted with the open work below).
            let mut today: BTreeMap<&'static str, u64> = BTreeMap::new();
            let mut received = 0u64;
            let mut cursor: Option<OrderCursor> = None;
            let mut today_complete = true;
            loop {
                let page = st.orders_received(midnight, now, cursor.as_ref(), 1_000)?;
                for rec in &page {
                    received += 1;
                    let key = if rec.status.is_terminal() {
                        super::status_name(rec.status)
                    } else {
                        "open"
                    };
                    *today.entry(key).or_default() += 1;
                }
                // Done when a read finds nothing more (a page can come back short while an
                // order's row is still being written).
                match page.last() {
                    Some(last) => cursor = Some(OrderCursor::after(last)),
                    None => break,
                }
                if received as usize >= COUNT_MAX {
                    today_complete = false;
                    break;
                }
            }

            // Open work: every meter that has some, its snapshot (status now) and its open
            // orders (receipt time, for the service level).
            let mut open: BTreeMap<&'static str, u64> = BTreeMap::new();
            let mut levels: BTreeMap<&'static str, u64> = BTreeMap::new();
            let mut held = 0u64;
            let mut open_complete = true;
            let mut read = 0usize;
            for m in st.meters_with_open_work()? {
                if read >= COUNT_MAX {
                    open_complete = false;
                    break;
                }
                let snapshot = st.meter(&m)?;
                for rec in st.open_orders(&m)? {
                    read += 1;
                    let entry = snapshot.as_ref().and_then(|s| {
                        s.open
                            .iter()
                            .find(|o| o.order.order_id == rec.order.order_id)
                    });
                    let status = entry.map_or(rec.status, |o| o.status);
                    if status.is_terminal() {
                        continue;
                    }
                    held += u64::from(entry.is_some_and(|o| o.operator_hold.is_some()));
                    *open.entry(super::status_name(status)).or_default() += 1;
                    let level: &'static str = sla.of(&rec, status, now, now).state.into();
                    *levels.entry(level).or_default() += 1;
                }
            }
            let in_flight = [OrderStatus::Dispatched, OrderStatus::Confirmed]
                .iter()
                .map(|s| open.get(super::status_name(*s)).copied().unwrap_or(0))
                .sum::<u64>();

            // Exception tasks not resolved.
            let mut tasks: BTreeMap<&'static str, u64> = BTreeMap::new();
            let mut after: Option<String> = None;
            let mut seen = 0usize;
            let mut tasks_complete = true;
            loop {
                let page = st.exceptions_after(after.as_deref(), 1_000)?;
                for x in &page {
                    seen += 1;
                    let state = match st.exception_task(&x.exception_id, &x.meter_id)? {
                        Some(t) => t.state,
                        None if x.status == "resolved" => TaskState::Resolved,
                        None => TaskState::Open,
                    };
                    *tasks.entry(state.into()).or_default() += 1;
                }
                if page.len() < 1_000 {
                    break;
                }
                if seen >= COUNT_MAX {
                    tasks_complete = false;
                    break;
                }
                after = page.last().map(|x| x.exception_id.clone());
            }

            let mut campaigns: BTreeMap<String, u64> = BTreeMap::new();
            for c in st.campaigns()? {
                let name = serde_json::to_value(c.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                *campaigns.entry(name).or_default() += 1;
            }
            let sla_breached = levels
                .get(<&str>::from(SlaState::Breached))
                .copied()
                .unwrap_or(0);
            Ok::<_, StoreError>(json!({
                "business_time": now,
                "today": {
                    "since": midnight,
                    "received": received,
                    "by_status": today,
                    "complete": today_complete,
                },
                "open": {
                    "by_status": open,
                    "in_flight": in_flight,
                    "held_by_operator": held,
                    "sla": levels,
                    "complete": open_complete,
                },
                "sla_breaches": sla_breached,
                "exceptions": {
                    "by_state": tasks,
                    "open": tasks.get("open").copied().unwrap_or(0) + tasks.get("in_progress").copied().unwrap_or(0),
                    "complete": tasks_complete,
                },
                "campaigns": campaigns,
            }))
        })
        .await;
    match counted {
        Err(r) => r,
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Ok(Ok(v)) => {
            *s.kpi_cache.0.lock().expect("lock") = Some((Instant::now(), v.clone()));
            json_body(&v)
        }
    }
}
