//! Orders over the operator API: search (viewer) and an operator's hold, release and cancel
//! of an open order.
//!
//! Search reads the store's orders by receipt instant (`Store::orders_received`), newest
//! first, over a period (`from`..`to`, by default the last 30 days of business time), and keeps
//! those that match: `q` a case-insensitive part of the order, meter, account or service point
//! id; `status`, `kind`, `reason`, `zone`, `campaign` exact (several values comma-separated). An
//! open order's status is the one its meter's snapshot has now. A request reads at most
//! [`SCAN_MAX`] orders: a page can hold fewer than `limit` matches and still have a
//! `next_page_token` (`scan_complete` is false until the period has been read to its start).
//! Each order comes with its service level (`crate::sla`).
//!
//! Hold, release and cancel change a meter's course, so they go where an integrator's would:
//! a hold or release is an `order_hold` record on the control topic, a cancel a `cancel` order
//! on the orders topic (id `<order>~cancel`: a repeat is a duplicate the meter ignores), both
//! keyed by meter id and answered `202` once the broker has them. The meter audits each with
//! the token's name. Checked first: 404 an unknown order, 409 one that is final, a hold of an
//! order whose command is out (it cannot be recalled) or already held, a release of one not
//! held.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use serde_json::json;

use super::auth::Caller;
use super::{error, json_body, status_name, ApiError, HttpState};
use crate::domain::{
    HoldAction, MeterFact, OpenOrder, OrderHold, OrderKind, OrderRecord, OrderStatus, ReasonCode,
    Timestamp,
};
use crate::store::{OrderCursor, StoreError};

/// Orders read from the store per request at most.
pub(crate) const SCAN_MAX: usize = 5_000;
/// Orders read from the store at a time.
const CHUNK: usize = 500;
const LIMIT_DEFAULT: usize = 50;
const LIMIT_MAX: usize = 500;
/// The period searched when `from` is not given: this long before `to`.
const DEFAULT_DAYS: i64 = 30;
/// The longest period one search covers (the store reads it an hour at a time on ScyllaDB).
const MAX_DAYS: i64 = 92;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct SearchQuery {
    /// A part of the order, meter, account or service point id (any case).
    q: Option<String>,
    /// Statuses, comma-separated (e.g. `deferred,awaiting_approval`).
    status: Option<String>,
    /// Kinds, comma-separated.
    kind: Option<String>,
    /// Reasons, comma-separated.
    reason: Option<String>,
    /// Zones, comma-separated.
    zone: Option<String>,
    /// Campaign ids, comma-separated.
    campaign: Option<String>,
    /// RFC 3339 instant (default: 30 days before `to`).
    #[param(format = DateTime)]
    from: Option<String>,
    /// RFC 3339 instant (default: now).
    #[param(format = DateTime)]
    to: Option<String>,
    /// Orders per page (1-500, default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// The `next_page_token` of the previous page.
    page_token: Option<String>,
}

const SEARCH_HELP: &str = "query parameters: q, status, kind, reason, zone, campaign (comma-separated values), from and to (RFC 3339 instants), limit (1-500), page_token (the next_page_token of the previous page)";

/// A comma-separated list of wire names, each parsed as `T`; 400 naming the bad value.
pub(crate) fn list_of<T: serde::de::DeserializeOwned>(
    name: &str,
    v: Option<&str>,
) -> Result<Option<Vec<T>>, Response> {
    let Some(v) = v.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    v.split(',')
        .map(|x| {
            serde_json::from_value(serde_json::Value::String(x.trim().to_string())).map_err(|_| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("`{name}` = `{x}` is not a known {name}"),
                )
            })
        })
        .collect::<Result<Vec<T>, _>>()
        .map(Some)
}

fn instant(name: &str, v: Option<&str>) -> Result<Option<Timestamp>, Response> {
    v.map(|t| {
        t.parse::<Timestamp>().map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("`{name}` = `{t}` is not an RFC 3339 instant ({e}); write e.g. 2026-12-01T00:00:00Z"),
            )
        })
    })
    .transpose()
}

/// What a search keeps.
struct Filter {
    q: Option<String>,
    status: Option<Vec<OrderStatus>>,
    kind: Option<Vec<OrderKind>>,
    reason: Option<Vec<ReasonCode>>,
    zone: Option<Vec<String>>,
    campaign: Option<Vec<String>>,
}

impl Filter {
    /// Everything but the status (which may need the meter's snapshot).
    fn keeps(&self, rec: &OrderRecord, zone: &str) -> bool {
        let o = &rec.order;
        let q_ok = self.q.as_deref().is_none_or(|q| {
            [
                Some(o.order_id.as_str()),
                Some(o.meter_id.as_str()),
                o.account_id.as_deref(),
                o.service_point_id.as_deref(),
            ]
            .into_iter()
            .flatten()
            .any(|id| id.to_lowercase().contains(q))
        });
        q_ok && self.kind.as_ref().is_none_or(|k| k.contains(&o.kind))
            && self.reason.as_ref().is_none_or(|r| r.contains(&o.reason))
            && self
                .zone
                .as_ref()
                .is_none_or(|z| z.iter().any(|z| z == zone))
            && self.campaign.as_ref().is_none_or(|c| {
                o.campaign_id
                    .as_ref()
                    .is_some_and(|id| c.iter().any(|x| x == id))
            })
    }
}

/// `GET /api/v1/orders`: search (module doc).
#[utoipa::path(get, path = "/api/v1/orders", operation_id = "search_orders", tag = "orders", security(("bearer" = [])), params(SearchQuery),
    responses((status = 200, description = "OK", body = Object),
        (status = 400, description = "a parameter or the body is wrong (the message names it)", body = ApiError),
        (status = 401, description = "no token, or an unknown one", body = ApiError),
        (status = 429, description = "over the token's request rate: wait `Retry-After` seconds", body = ApiError),
        (status = 403, description = "the token's role is too small", body = ApiError),
        (status = 503, description = "the store or Kafka is unavailable: nothing was changed, try again", body = ApiError)))]
pub(crate) async fn search(
    State(s): State<HttpState>,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(StatusCode::BAD_REQUEST, SEARCH_HELP.into());
    };
    let limit = match super::page_limit(q.limit, LIMIT_DEFAULT, LIMIT_MAX) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let split = |v: Option<String>| {
        v.filter(|v| !v.is_empty()).map(|v| {
            v.split(',')
                .map(|x| x.trim().to_string())
                .collect::<Vec<_>>()
        })
    };
    let filter = match (
        list_of::<OrderStatus>("status", q.status.as_deref()),
        list_of::<OrderKind>("kind", q.kind.as_deref()),
        list_of::<ReasonCode>("reason", q.reason.as_deref()),
    ) {
        (Ok(status), Ok(kind), Ok(reason)) => Filter {
            q: q.q.filter(|x| !x.is_empty()).map(|x| x.to_lowercase()),
            status,
            kind,
            reason,
            zone: split(q.zone),
            campaign: split(q.campaign),
        },
        (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r,
    };
    let now = s.directory.services().clock.now();
    let (from, to) = match (
        instant("from", q.from.as_deref()),
        instant("to", q.to.as_deref()),
    ) {
        (Ok(f), Ok(t)) => (f, t.unwrap_or(now)),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let from = from.unwrap_or_else(|| {
        to.checked_sub(jiff::SignedDuration::from_hours(24 * DEFAULT_DAYS))
            .unwrap_or(Timestamp::MIN)
    });
    if from > to {
        return error(
            StatusCode::BAD_REQUEST,
            format!("`from` ({from}) is after `to` ({to})"),
        );
    }
    if to.duration_since(from) > jiff::SignedDuration::from_hours(24 * MAX_DAYS) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("the period from {from} to {to} is longer than {MAX_DAYS} days: search a shorter one"),
        );
    }
    let cursor = match q.page_token.as_deref().map(OrderCursor::parse) {
        None => None,
        Some(Some(c)) => Some(c),
        Some(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "page_token must be the `next_page_token` of a previous page".into(),
            )
        }
    };
    let registry = s.registry.clone();
    let sla = s.sla.clone();
    let read = s
        .read(move |store| {
            let st = store.store();
            let zone_of = |m: &str| {
                registry
                    .get(m)
                    .map(|i| i.zone.to_string())
                    .unwrap_or_default()
            };
            let mut snapshots: HashMap<String, Vec<OpenOrder>> = HashMap::new();
            let mut found = Vec::new();
            let mut scanned = 0;
            let mut cursor = cursor;
            let mut complete = false;
            'scan: while scanned < SCAN_MAX {
                let page = st.orders_received(from, to, cursor.as_ref(), CHUNK)?;
                // Read to its start only when a read finds nothing more (a page can come back
                // short while an order's row is still being written).
                let short = page.is_empty();
                for rec in page {
                    scanned += 1;
                    cursor = Some(OrderCursor::after(&rec));
                    let zone = zone_of(&rec.order.meter_id);
                    if !filter.keeps(&rec, &zone) {
                        continue;
                    }
                    let (status, open) = current(st.as_ref(), &mut snapshots, &rec)?;
                    if filter.status.as_ref().is_some_and(|f| !f.contains(&status)) {
                        continue;
                    }
                    found.push(row(&rec, status, open.as_ref(), &zone, &sla, now));
                    if found.len() == limit {
                        break 'scan;
                    }
                }
                if short {
                    complete = true;
                    break;
                }
            }
            // The period is read to its start only when the last read came back short and
            // every order of it was looked at.
            let next = (!complete).then(|| cursor.map(|c| c.to_string())).flatten();
            Ok::<_, StoreError>(json_body(&json!({
                "orders": found,
                "next_page_token": next,
                "scanned": scanned,
                "scan_complete": complete,
                "from": from,
                "to": to,
            })))
        })
        .await;
    match read {
        Err(r) => r,
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Ok(Ok(body)) => body,
    }
}

/// An order's status now: final from its record; open from its meter's snapshot (read once
/// per meter per request), or, when the snapshot no longer has it (it just ended), from the
/// store's own reading.
fn current(
    st: &dyn crate::store::Store,
    snapshots: &mut HashMap<String, Vec<OpenOrder>>,
    rec: &OrderRecord,
) -> Result<(OrderStatus, Option<OpenOrder>), StoreError> {
    if rec.status.is_terminal() {
        return Ok((rec.status, None));
    }
    let m = &rec.order.meter_id;
    if !snapshots.contains_key(m) {
        let open = st
            .meter(m)?
            .map(|s| s.open.into_iter().collect())
            .unwrap_or_default();
        snapshots.insert(m.clone(), open);
    }
    if let Some(o) = snapshots[m]
        .iter()
        .find(|o| o.order.order_id == rec.order.order_id)
    {
        return Ok((o.status, Some(o.clone())));
    }
    let status = st
        .order(&rec.order.order_id)?
        .map_or(rec.status, |r| r.status);
    Ok((status, None))
}

fn row(
    rec: &OrderRecord,
    status: OrderStatus,
    open: Option<&OpenOrder>,
    zone: &str,
    sla: &crate::sla::SlaTargets,
    now: Timestamp,
) -> serde_json::Value {
    let o = &rec.order;
    let updated = if status.is_terminal() {
        rec.updated_at
    } else {
        now
    };
    json!({
        "order_id": o.order_id,
        "meter_id": o.meter_id,
        "account_id": o.account_id,
        "service_point_id": o.service_point_id,
        "kind": o.kind,
        "reason": o.reason,
        "priority": o.priority,
        "campaign_id": o.campaign_id,
        "zone": zone,
        "status": status,
        "status_reason": if status.is_terminal() { rec.reason.clone() } else { None },
        "received_at": rec.received_at,
        "ended_at": status.is_terminal().then_some(rec.updated_at),
        "held_by_operator": open.and_then(|o| o.operator_hold.clone()),
        "sla": sla.of(rec, status, updated, now),
    })
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoteBody {
    /// At most 250 characters.
    #[serde(default)]
    #[schema(max_length = 250)]
    note: Option<String>,
}

/// An order command (the OpenAPI document's enum).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum OrderAction {
    Hold,
    Release,
    Cancel,
}

/// `POST /api/v1/orders/{order_id}/{hold|release|cancel}` (operator), body `{"note": "..."}`
/// or empty.
#[utoipa::path(post, path = "/api/v1/orders/{order_id}/{action}", operation_id = "order_command", tag = "orders", security(("bearer" = [])),
    params(("order_id" = String, Path, description = "the open order"),
        ("action" = OrderAction, Path, description = "the command"),
        ("Idempotency-Key" = Option<String>, Header, description = "a retried hold or release with the same key is the same one")),
    request_body(content = Option<NoteBody>, description = "optional"),
    responses((status = 202, description = "accepted: produced on the control (hold, release) or orders (cancel) topic", body = Object),
        (status = 400, description = "a parameter or the body is wrong (the message names it)", body = ApiError), (status = 401, description = "no token, or an unknown one", body = ApiError),
        (status = 429, description = "over the token's request rate: wait `Retry-After` seconds", body = ApiError), (status = 403, description = "the token's role is too small", body = ApiError), (status = 404, description = "not found", body = ApiError), (status = 409, description = "conflicts with where it stands now (the message says why)", body = ApiError), (status = 503, description = "the store or Kafka is unavailable: nothing was changed, try again", body = ApiError)))]
pub(crate) async fn command(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path((order_id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let empty = body.iter().all(u8::is_ascii_whitespace) || body.trim_ascii() == b"null";
    let body: NoteBody = if empty {
        NoteBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("the body must be empty or {{\"note\": \"...\"}}: {e}"),
                )
            }
        }
    };
    if let Err(r) = super::check_note(body.note.as_deref(), crate::facts::NOTE_MAX_CHARS) {
        return r;
    }
    let hold = match action.as_str() {
        "hold" => Some(HoldAction::Hold),
        "release" => Some(HoldAction::Release),
        "cancel" => None,
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!("`{other}` is not an order command: hold, release or cancel"),
            )
        }
    };
    let super::OrderWrite {
        key,
        writes,
        rec,
        open,
    } = match super::order_write(&s, &headers, &order_id).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let conflict = |why: String| error(StatusCode::CONFLICT, format!("order `{order_id}` {why}"));
    let Some(open) = open.filter(|_| !rec.status.is_terminal()) else {
        return conflict(format!(
            "is `{}`: it is not open (final, or not yet at its meter), so there is nothing to {action}",
            status_name(rec.status)
        ));
    };
    let command_out = open.unknown_outcome || open.status == OrderStatus::Dispatched;
    match hold {
        Some(HoldAction::Hold) if command_out => {
            return conflict(
                "has its command out: it cannot be recalled; cancel it to stop any retry".into(),
            )
        }
        Some(HoldAction::Hold) if open.campaign_hold => {
            return conflict(format!(
            "waits for its campaign `{}` to release it: pause the campaign, or cancel the order",
            open.order.campaign_id.as_deref().unwrap_or_default()
        ))
        }
        Some(HoldAction::Hold) if open.operator_hold.is_some() => {
            return conflict(format!(
                "is already held by {}",
                open.operator_hold.as_deref().unwrap_or_default()
            ))
        }
        Some(HoldAction::Release) if open.operator_hold.is_none() => {
            return conflict("is not held by an operator".into())
        }
        _ => {}
    }
    let now = s.directory.services().clock.now();
    let meter = rec.order.meter_id.clone();
    let by = caller.name.clone();
    let (topic, payload, what) = match hold {
        Some(action_kind) => {
            let fact_id = super::api_fact_id(&by, key.as_deref(), now);
            let fact = MeterFact::OrderHold(OrderHold {
                schema_version: 1,
                fact_id: fact_id.clone(),
                meter_id: meter.clone(),
                order_id: order_id.clone(),
                action: action_kind,
                by: by.clone(),
                note: body.note.clone(),
                at: now,
            });
            let payload = serde_json::to_vec(&fact).expect("serialize");
            if let Err(e) = MeterFact::parse(Some(&meter), &payload, true) {
                return error(StatusCode::BAD_REQUEST, e.0);
            }
            (
                writes.control_topic.clone(),
                payload,
                json!({ "fact_id": fact_id }),
            )
        }
        None => {
            let cancel_id = cancel_id(&order_id);
            let prefix = format!("cancelled by {by} through the operator API");
            // The order's notes hold at most MAX_NOTES_CHARS: the person's note is cut to fit.
            let room = crate::domain::MAX_NOTES_CHARS.saturating_sub(prefix.chars().count() + 2);
            let notes = match body.note.as_deref() {
                Some(n) => format!("{prefix}: {}", n.chars().take(room).collect::<String>()),
                None => prefix,
            };
            let wire = json!({
                "schema_version": crate::domain::ORDER_SCHEMA_VERSION,
                "order_id": cancel_id,
                "kind": "cancel",
                "reason": "operator",
                "meter_id": meter,
                "target_order_id": order_id,
                "notes": notes,
                "created_at": now,
            });
            let payload = serde_json::to_vec(&wire).expect("serialize");
            // (The order is known: its meter need not be in the registry now.)
            if let Err(r) =
                crate::domain::validate_order(Some(meter.as_bytes()), Some(&payload), |_| true, now)
            {
                return error(StatusCode::BAD_REQUEST, r.detail);
            }
            (
                writes.orders_topic.clone(),
                payload,
                json!({ "cancel_order_id": cancel_id }),
            )
        }
    };
    tracing::info!(order = %order_id, by = %by, action = %action, "order command through the operator API");
    let mut answer = json!({
        "order_id": order_id,
        "meter_id": meter,
        "action": action,
        "by": by,
        "status": "accepted: on its way to the meter, which applies it as it would one from Kafka",
    });
    if let (Some(a), Some(w)) = (answer.as_object_mut(), what.as_object()) {
        a.extend(w.clone());
    }
    super::produce_accepted(&writes, &topic, &meter, &payload, answer).await
}

/// The id of the API's cancel of `order_id`: `<order_id>~cancel`, or, when that would be too
/// long for an id, the order id's first 100 characters and a hash of the whole.
fn cancel_id(order_id: &str) -> String {
    let plain = format!("{order_id}~cancel");
    if plain.len() <= 128 {
        return plain;
    }
    let h = crate::http::auth::token_hash(order_id);
    format!("{}~cancel~{}", &order_id[..100], &h[..16])
}
