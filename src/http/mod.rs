//! The operator HTTP endpoint: Prometheus `/metrics`, `/healthz` (the process is up),
//! `/readyz` (the registry has caught up, the intake runs, the store accepts writes),
//! `/stats/latency` (exact internal latency percentiles), and read-only lookups of an order
//! (with its audit trail) and a meter (its audit trail newest first, in pages; or only the trail,
//! between two instants, `/api/v1/meters/{id}/audit`); the approvals queue with a
//! supervisor's approve / reject ([`approvals`]); campaigns with an operator's define and
//! commands ([`campaigns`]). Errors are JSON with a message. Who may call
//! what: [`auth`] (bearer tokens with roles; `/metrics`, `/healthz`, `/readyz` are open).
//!
//! It runs on its own thread and tokio runtime, apart from the intake and the meter actors, so
//! that neither a flood of orders nor a flood of HTTP requests slows the other, and the health
//! endpoints (which read only atomics) answer at once under any load. Store reads run on a
//! small blocking pool behind a semaphore: at most [`STORE_READERS`] lookups at a time, the rest
//! wait their turn without holding a thread.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{watch, Semaphore};

pub(crate) mod approvals;
pub(crate) mod auth;
pub(crate) mod campaigns;
pub(crate) mod console;
pub(crate) mod exceptions;
pub(crate) mod kpis;
pub(crate) mod openapi;
pub(crate) mod orders;

use crate::commit::StoreHandle;
use crate::meter::Directory;
use crate::registry::Registry;
use crate::store::AuditCursor;

/// Store lookups served at once; more wait for a permit.
pub(crate) const STORE_READERS: usize = 2;
/// Audit rows in one page of `/api/v1/meters/{id}` by default, and at most.
pub(crate) const AUDIT_PAGE_DEFAULT: usize = 100;
pub(crate) const AUDIT_PAGE_MAX: usize = 1_000;
/// Audit rows of one order returned by `/api/v1/orders/{id}` at most (the oldest), and rows of
/// its meter's trail looked at for them at most.
pub(crate) const ORDER_AUDIT_MAX: usize = 1_000;
pub(crate) const ORDER_AUDIT_SCAN: usize = 20_000;
/// Open orders shown in a meter's state (`open_orders_total` says how many there are).
pub(crate) const OPEN_ORDERS_SHOWN: usize = 100;

#[derive(Clone)]
pub(crate) struct HttpState {
    pub(crate) ready: Arc<AtomicBool>,
    pub(crate) store: StoreHandle,
    pub(crate) registry: Arc<Registry>,
    pub(crate) directory: Arc<Directory>,
    pub(crate) readers: Arc<Semaphore>,
    /// Set when business time is shifted (`[clock]`): shown in every `/readyz` answer.
    pub(crate) uat_clock: Option<UatClock>,
    /// Who may call what (no token configured: reads open, writes refused).
    pub(crate) access: Arc<auth::Access>,
    /// Where writes go (the control topic); `None`: writes are refused (503).
    pub(crate) writes: Option<Writes>,
    /// When orders are due (`[sla]`).
    pub(crate) sla: Arc<crate::sla::SlaTargets>,
    /// The dashboard's last counts.
    pub(crate) kpi_cache: Arc<kpis::KpiCache>,
}

/// The producer and topic of the API's writes: they take the same path as the Kafka records.
#[derive(Clone)]
pub(crate) struct Writes {
    pub(crate) producer: rdkafka::producer::FutureProducer,
    pub(crate) control_topic: String,
    pub(crate) campaign_control_topic: String,
    /// Where the API's cancel orders go.
    pub(crate) orders_topic: String,
}

/// A shifted business clock, as `/readyz` shows it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UatClock {
    pub(crate) started_at: jiff::Timestamp,
    pub(crate) speed: f64,
}

impl HttpState {
    pub(crate) fn new(
        ready: Arc<AtomicBool>,
        store: StoreHandle,
        registry: Arc<Registry>,
        directory: Arc<Directory>,
    ) -> HttpState {
        HttpState {
            ready,
            store,
            registry,
            directory,
            readers: Arc::new(Semaphore::new(STORE_READERS)),
            uat_clock: None,
            access: Arc::new(auth::Access::default()),
            writes: None,
            sla: Arc::new(crate::sla::SlaTargets::from_config(
                &crate::config::SlaConfig::default(),
            )),
            kpi_cache: Arc::default(),
        }
    }

    /// The tokens, and where writes go.
    pub(crate) fn with_writes(mut self, access: auth::Access, writes: Writes) -> HttpState {
        self.access = Arc::new(access);
        self.writes = Some(writes);
        self
    }

    pub(crate) fn with_sla(mut self, sla: crate::sla::SlaTargets) -> HttpState {
        self.sla = Arc::new(sla);
        self
    }

    pub(crate) fn with_uat_clock(mut self, uat_clock: Option<UatClock>) -> HttpState {
        self.uat_clock = uat_clock;
        self
    }

    /// Business time now, and the UAT clock when it is shifted.
    fn clock_fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        let now = self.directory.services().clock.now();
        m.insert("business_time".into(), json!(now.to_string()));
        if let Some(u) = self.uat_clock {
            m.insert(
                "uat_clock".into(),
                json!({
                    "warning": "business time is shifted: decisions are made for the UAT date, not today",
                    "started_at": u.started_at.to_string(),
                    "speed": u.speed,
                }),
            );
        }
        m
    }

    /// Runs a store lookup on the blocking pool, at most [`STORE_READERS`] at a time.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&StoreHandle) -> T + Send + 'static,
    ) -> Result<T, Response> {
        let _permit = self
            .readers
            .acquire()
            .await
            .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "shutting down".to_string()))?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    }
}

/// Produces an API write on `topic` (the record an integrator would produce there) and
/// answers `202 Accepted` with `what` once the broker has it; 503 if it does not take it
/// (nothing changed: the caller may try again).
pub(crate) async fn produce_accepted(
    writes: &Writes,
    topic: &str,
    key: &str,
    payload: &[u8],
    what: serde_json::Value,
) -> Response {
    let record = rdkafka::producer::FutureRecord::to(topic)
        .key(key)
        .payload(payload);
    if let Err((e, _)) = writes.producer.send(record, Duration::from_secs(10)).await {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not accepted by Kafka ({e}); nothing was changed, try again"),
        );
    }
    let mut r = json_body(&what);
    *r.status_mut() = StatusCode::ACCEPTED;
    r
}

/// The `Idempotency-Key` header, if any (1-100 printable ASCII characters, else 400): a
/// retried write with the same key is the same write.
pub(crate) fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, Response> {
    match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => Ok(None),
        Some(Ok(k))
            if !k.is_empty() && k.len() <= 100 && k.chars().all(|c| c.is_ascii_graphic()) =>
        {
            Ok(Some(k.to_string()))
        }
        Some(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key must be 1-100 printable ASCII characters".into(),
        )),
    }
}

/// Where writes go, or 503 when this instance takes none.
pub(crate) fn writes(s: &HttpState) -> Result<Writes, Response> {
    s.writes.clone().ok_or_else(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this instance takes no writes (no Kafka producer)".into(),
        )
    })
}

/// An order as stored and, while it is open, its entry in its meter's snapshot (what it waits
/// for now); 404 when no order with that id was accepted.
pub(crate) async fn order_and_open(
    s: &HttpState,
    order_id: &str,
) -> Result<(crate::domain::OrderRecord, Option<crate::domain::OpenOrder>), Response> {
    let id = order_id.to_string();
    let found = s
        .read(move |store| {
            let st = store.store();
            let Some(rec) = st.order(&id)? else {
                return Ok(None);
            };
            let open = st
                .meter(&rec.order.meter_id)?
                .and_then(|m| m.open.into_iter().find(|o| o.order.order_id == id));
            Ok::<_, crate::store::StoreError>(Some((rec, open)))
        })
        .await;
    found_or(found, || {
        format!("no order with id `{order_id}` has been accepted")
    })
}

/// A lookup's answer: what it found, 404 with `missing`'s message when nothing, 503 when the
/// store failed (or the refusal [`HttpState::read`] already made).
pub(crate) fn found_or<T>(
    read: Result<Result<Option<T>, crate::store::StoreError>, Response>,
    missing: impl FnOnce() -> String,
) -> Result<T, Response> {
    match read {
        Err(r) => Err(r),
        Ok(Err(e)) => Err(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        Ok(Ok(None)) => Err(error(StatusCode::NOT_FOUND, missing())),
        Ok(Ok(Some(found))) => Ok(found),
    }
}

/// A page size given (or `default`), 400 unless 1 to `max`.
pub(crate) fn page_limit(
    given: Option<usize>,
    default: usize,
    max: usize,
) -> Result<usize, Response> {
    let limit = given.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("limit {limit} must be between 1 and {max}"),
        ));
    }
    Ok(limit)
}

/// What a write about one order starts from: its idempotency key, where it goes, the order
/// and its open entry (400, 503 or 404 as the helpers above say).
pub(crate) struct OrderWrite {
    pub(crate) key: Option<String>,
    pub(crate) writes: Writes,
    pub(crate) rec: crate::domain::OrderRecord,
    pub(crate) open: Option<crate::domain::OpenOrder>,
}

pub(crate) async fn order_write(
    s: &HttpState,
    headers: &axum::http::HeaderMap,
    order_id: &str,
) -> Result<OrderWrite, Response> {
    let key = idempotency_key(headers)?;
    let writes = writes(s)?;
    let (rec, open) = order_and_open(s, order_id).await?;
    Ok(OrderWrite {
        key,
        writes,
        rec,
        open,
    })
}

/// 400 when a note is longer than `max` characters.
pub(crate) fn check_note(note: Option<&str>, max: usize) -> Result<(), Response> {
    let chars = note.map_or(0, |n| n.chars().count());
    if chars > max {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("note has {chars} characters; at most {max}"),
        ));
    }
    Ok(())
}

/// The fact id of an API write: `API-<token name>-<idempotency key>`, or with the instant's
/// nanoseconds when no key was given.
pub(crate) fn api_fact_id(by: &str, key: Option<&str>, now: jiff::Timestamp) -> String {
    match key {
        Some(k) => format!("API-{by}-{k}"),
        None => format!("API-{by}-{}", now.as_nanosecond()),
    }
}

/// A status as on the wire (`awaiting_approval`).
pub(crate) fn status_name(s: crate::domain::OrderStatus) -> &'static str {
    s.into()
}

/// Every error answer: a message that says what was wrong and what to do.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ApiError {
    pub(crate) error: String,
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "probes",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)))]
async fn metrics() -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::observability::prometheus().render(),
    )
}

#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "probes",
    responses((status = 200, description = "the process is up", body = Object)))]
async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "probes",
    responses((status = 200, description = "ready", body = Object),
        (status = 503, description = "not ready: `waiting_for` says for what", body = Object)))]
async fn readyz(State(s): State<HttpState>) -> Response {
    let (status, mut body) = if !s.ready.load(Ordering::SeqCst) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "ready": false, "waiting_for": "meter registry catch-up and order intake start" }),
        )
    } else if let Some(reason) = s.store.unavailable() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "ready": false, "waiting_for": "the store to accept writes again (intake paused, nothing lost)", "reason": reason }),
        )
    } else {
        (
            StatusCode::OK,
            json!({ "ready": true, "registry_meters": s.registry.len(), "live_meter_actors": s.directory.live_actors(), "meters_waiting_for_a_time": s.directory.wakes_waiting(), "meters_still_to_recover": s.directory.recovering() }),
        )
    };
    if let Some(m) = body.as_object_mut() {
        m.extend(s.clock_fields());
    }
    (status, Json(body)).into_response()
}

/// Exact internal latency since start (see `observability::LatencyProbes`), in microseconds.
#[utoipa::path(get, path = "/stats/latency", operation_id = "latency", tag = "probes", security(("bearer" = [])),
    responses((status = 200, description = "OK", body = Object),
        (status = 401, description = "no token, or an unknown one", body = ApiError),
        (status = 429, description = "over the token's request rate: wait `Retry-After` seconds", body = ApiError),
        (status = 403, description = "the token's role is too small", body = ApiError),
        (status = 503, description = "the store or Kafka is unavailable: nothing was changed, try again", body = ApiError)))]
async fn latency() -> impl IntoResponse {
    let l = crate::observability::latency();
    Json(json!({
        "dispatch": l.dispatch.snapshot(),
        "completion": l.completion.snapshot(),
        "stages": {
            "order_queue": l.order_queue.snapshot(),
            "order_write": l.order_write.snapshot(),
        },
    }))
}

/// A JSON body built on the blocking pool: serialising a page of a thousand audit rows must
/// not hold the async worker that answers `/healthz` and `/readyz`.
fn json_body(v: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(v) {
        Ok(bytes) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            bytes,
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[utoipa::path(get, path = "/api/v1/orders/{order_id}", operation_id = "get_order", tag = "orders", security(("bearer" = [])),
    params(("order_id" = String, Path, description = "the order's id")),
    responses((status = 200, description = "OK", body = Object),
        (status = 404, description = "not found", body = ApiError),
        (status = 401, description = "no token, or an unknown one", body = ApiError),
        (status = 429, description = "over the token's request rate: wait `Retry-After` seconds", body = ApiError),
        (status = 403, description = "the token's role is too small", body = ApiError),
        (status = 503, description = "the store or Kafka is unavailable: nothing was changed, try again", body = ApiError)))]
async fn order(State(s): State<HttpState>, Path(order_id): Path<String>) -> Response {
    let id = order_id.clone();
    let found = s
        .read(move |store| {
            let Some(rec) = store.store().order(&id)? else {
                return Ok(None);
            };
            // The order's rows lie within its lifetime: from its receipt to its final status
            // (an open order may still get rows without a status change: to the end).
            let to = if rec.status.is_terminal() {
                rec.updated_at
            } else {
                crate::domain::Timestamp::MAX
            };
            let rows = store.store().audit_between(
                &rec.order.meter_id,
                rec.received_at,
                to,
                ORDER_AUDIT_SCAN,
            )?;
            let scanned = rows.len();
            let audit: Vec<_> = rows
                .into_iter()
                .filter(|a| a.order_id.as_deref() == Some(id.as_str()))
                .take(ORDER_AUDIT_MAX)
                .collect();
            let truncated = audit.len() == ORDER_AUDIT_MAX || scanned == ORDER_AUDIT_SCAN;
            Ok::<_, crate::store::StoreError>(Some(json_body(
                &json!({ "order": rec, "audit": audit, "audit_truncated": truncated }),
            )))
        })
        .await;
    match found {
        Err(r) => r,
        Ok(Ok(Some(body))) => body,
        Ok(Ok(None)) => error(
            StatusCode::NOT_FOUND,
            format!("no order with id `{order_id}` has been accepted"),
        ),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// Rows per page (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The `next` cursor of the previous page.
    before: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/meters/{meter_id}", operation_id = "get_meter", tag = "meters", security(("bearer" = [])),
    params(("meter_id" = String, Path, description = "the meter's id"), PageQuery),
    responses((status = 200, description = "OK", body = Object),
        (status = 400, description = "a parameter or the body is wrong (the message names it)", body = ApiError),
        (status = 404, description = "not found", body = ApiError),
        (status = 401, description = "no token, or an unknown one", body = ApiError),
        (status = 429, description = "over the token's request rate: wait `Retry-After` seconds", body = ApiError),
        (status = 403, description = "the token's role is too small", body = ApiError),
        (status = 503, description = "the store or Kafka is unavailable: nothing was changed, try again", body = ApiError)))]
async fn meter(
    State(s): State<HttpState>,
    Path(meter_id): Path<String>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "query parameters: `limit` (1-1000) and `before` (the `next` cursor of the previous page) only".into(),
        );
    };
    let limit = match page_limit(q.limit, AUDIT_PAGE_DEFAULT, AUDIT_PAGE_MAX) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let before = match q.before.as_deref().map(AuditCursor::parse) {
        None => None,
        Some(Some(c)) => Some(c),
        Some(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "before must be the `next` cursor of a previous page".into(),
            )
        }
    };
    let Some(info) = s.registry.get(&meter_id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("meter `{meter_id}` is not in the registry"),
        );
    };
    let live = s.directory.is_live(&meter_id);
    let read = s
        .read(move |store| {
            let mut state = store.store().meter(&meter_id)?;
            // The open orders too are bounded (a meter may hold thousands waiting).
            let open_total = state.as_ref().map_or(0, |m| m.open.len());
            if let Some(m) = &mut state {
                m.open.truncate(OPEN_ORDERS_SHOWN);
            }
            let (audit, next) =
                store
                    .store()
                    .audit_page(&meter_id, before.as_ref(), limit, None)?;
            Ok::<_, crate::store::StoreError>(json_body(&json!({
                "meter_id": meter_id,
                "zone": &*info.zone,
                "head_end_id": &*info.head_end_id,
                "flags": info.flags.bits(),
                "live_actor": live,
                "state": state,
                "open_orders_total": open_total,
                "audit": audit,
                "audit_order": "newest_first",
                "next": next.map(|c| c.to_string()),
            })))
        })
        .await;
    match read {
        Err(r) => r,
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Ok(Ok(body)) => body,
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AuditQuery {
    /// RFC 3339 instant, inclusive.
    #[param(format = DateTime)]
    from: Option<String>,
    /// RFC 3339 instant, inclusive.
    #[param(format = DateTime)]
    to: Option<String>,
    /// Rows per page (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The `next_page_token` of the previous page.
    page_token: Option<String>,
}

const AUDIT_QUERY_HELP: &str = "query parameters: `from` and `to` (RFC 3339 instants, inclusive), `limit` (1-1000) and `page_token` (the `next_page_token` of the previous page) only";

/// A meter's audit trail, newest first, between `from` and `to`, a page at a time (the pages
/// cross the store's time buckets; `next_page_token` is absent on the last page).
#[utoipa::path(get, path = "/api/v1/meters/{meter_id}/audit", operation_id = "get_meter_audit", tag = "meters", security(("bearer" = [])),
    params(("meter_id" = String, Path, description = "the meter's id"), AuditQuery),
    responses((status = 200, description = "OK", body = Object),
        (status = 400, description = "a parameter or the body is wrong (the message names it)", body = ApiError),
        (status = 404, description = "not found", body = ApiError),
        (status = 401, description = "no token, or an unknown one", body = ApiError),
        (status = 429, description = "over the token's request rate: wait `Retry-After` seconds", body = ApiError),
        (status = 403, description = "the token's role is too small", body = ApiError),
        (status = 503, description = "the store or Kafka is unavailable: nothing was changed, try again", body = ApiError)))]
async fn meter_audit(
    State(s): State<HttpState>,
    Path(meter_id): Path<String>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(StatusCode::BAD_REQUEST, AUDIT_QUERY_HELP.into());
    };
    let limit = match page_limit(q.limit, AUDIT_PAGE_DEFAULT, AUDIT_PAGE_MAX) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let instant = |name: &str, v: Option<&str>| -> Result<Option<jiff::Timestamp>, Response> {
        v.map(|t| {
            t.parse::<jiff::Timestamp>().map_err(|e| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("`{name}` = `{t}` is not an RFC 3339 instant ({e}); write e.g. 2026-12-01T00:00:00Z"),
                )
            })
        })
        .transpose()
    };
    let (from, to) = match (
        instant("from", q.from.as_deref()),
        instant("to", q.to.as_deref()),
    ) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return error(
                StatusCode::BAD_REQUEST,
                format!("`from` ({f}) is after `to` ({t})"),
            );
        }
    }
    let before = match q.page_token.as_deref().map(AuditCursor::parse) {
        Some(Some(c)) => Some(c),
        Some(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "page_token must be the `next_page_token` of a previous page".into(),
            )
        }
        // The first page starts just above `to`.
        None => to.map(|t| AuditCursor::below_or_at(t)),
    };
    if s.registry.get(&meter_id).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("meter `{meter_id}` is not in the registry"),
        );
    }
    let read = s
        .read(move |store| {
            let (mut audit, mut next) =
                store
                    .store()
                    .audit_page(&meter_id, before.as_ref(), limit, None)?;
            if let Some(f) = from {
                // Newest first: the first row older than `from` ends the trail.
                if let Some(cut) = audit.iter().position(|a| a.at < f) {
                    audit.truncate(cut);
                    next = None;
                }
            }
            Ok::<_, crate::store::StoreError>(json_body(&json!({
                "meter_id": meter_id,
                "audit": audit,
                "order": "newest_first",
                "next_page_token": next.map(|c| c.to_string()),
            })))
        })
        .await;
    match read {
        Err(r) => r,
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Ok(Ok(body)) => body,
    }
}

pub(crate) fn router(state: HttpState) -> Router {
    use axum::middleware::from_fn_with_state;
    let access = state.access.clone();
    let reads = Router::new()
        .route("/stats/latency", get(latency))
        .route("/api/v1/orders", get(orders::search))
        .route("/api/v1/orders/{order_id}", get(order))
        .route("/api/v1/meters/{meter_id}", get(meter))
        .route("/api/v1/meters/{meter_id}/audit", get(meter_audit))
        .route("/api/v1/approvals", get(approvals::list))
        .route("/api/v1/campaigns", get(campaigns::list))
        .route("/api/v1/exceptions", get(exceptions::list))
        .route("/api/v1/kpis", get(kpis::kpis))
        .route("/api/v1/whoami", get(auth::whoami))
        .route("/api/v1/campaigns/{campaign_id}", get(campaigns::show))
        .route("/api/v1/exceptions/{*exception_id}", get(exceptions::show))
        .route_layer(from_fn_with_state((access.clone(), None), auth::require));
    let supervisor = Router::new()
        .route(
            "/api/v1/approvals/{order_id}",
            axum::routing::post(approvals::decide),
        )
        .route_layer(from_fn_with_state(
            (access, Some(auth::Role::Supervisor)),
            auth::require,
        ));
    let operator = Router::new()
        .route("/api/v1/campaigns", axum::routing::post(campaigns::define))
        .route(
            "/api/v1/campaigns/{campaign_id}/{action}",
            axum::routing::post(campaigns::command),
        )
        .route(
            "/api/v1/orders/{order_id}/{action}",
            axum::routing::post(orders::command),
        )
        .route(
            "/api/v1/exceptions/{*exception_id}",
            axum::routing::post(exceptions::change),
        )
        .route_layer(from_fn_with_state(
            (state.access.clone(), Some(auth::Role::Operator)),
            auth::require,
        ));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/openapi.json", get(openapi::openapi_json))
        .route("/console", get(console::index))
        .route("/console/app.js", get(console::app_js))
        .route("/console/app.css", get(console::app_css))
        .merge(reads)
        .merge(supervisor)
        .merge(operator)
        .with_state(state)
}

/// Binds the listener (so a busy port fails at start).
pub(crate) fn bind(listen: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(listen)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// The rustls server configuration of `[http.tls]`, if set (errors name the key).
pub(crate) fn tls_config(
    c: &crate::config::HttpTlsConfig,
) -> Result<Option<Arc<rustls::ServerConfig>>, crate::config::ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert), Some(key)) = (&c.cert_file, &c.key_file) else {
        return Ok(None);
    };
    let bad = |k: &str, e: String| crate::config::ConfigError::Invalid {
        key: k.to_string(),
        message: e,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("http.tls.cert_file", format!("{}: {e}", cert.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("http.tls.cert_file", format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(bad(
            "http.tls.cert_file",
            format!("{} holds no PEM certificate", cert.display()),
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| bad("http.tls.key_file", format!("{}: {e}", key.display())))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad("http.tls.cert_file", e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, private)
    .map_err(|e| {
        bad(
            "http.tls.key_file",
            format!("does not fit the certificate: {e}"),
        )
    })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(cfg)))
}

/// Serves on a thread of its own (one async worker, [`STORE_READERS`] blocking threads) until
/// `shutdown`, over HTTPS when `tls` is given; the returned receiver fires when it has stopped.
pub(crate) fn serve(
    listener: std::net::TcpListener,
    state: HttpState,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(STORE_READERS)
        .thread_name("http")
        .enable_all()
        .build()?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            rt.block_on(async move {
                let app = router(state);
                if let Some(tls) = tls {
                    let handle = axum_server::Handle::new();
                    let h = handle.clone();
                    tokio::spawn(async move {
                        let _ = shutdown.changed().await;
                        h.graceful_shutdown(Some(Duration::from_secs(1)));
                    });
                    let config = axum_server::tls_rustls::RustlsConfig::from_config(tls);
                    let r = axum_server::from_tcp_rustls(listener, config)
                        .handle(handle)
                        .serve(app.into_make_service())
                        .await;
                    if let Err(e) = r {
                        tracing::error!(error = %e, "https server failed");
                    }
                    return;
                }
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "http listener unusable");
                        return;
                    }
                };
                let r = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = shutdown.changed().await;
                    })
                    .await;
                if let Err(e) = r {
                    tracing::error!(error = %e, "http server failed");
                }
            });
            // Connections still open (keep-alive clients) are dropped with the runtime.
            rt.shutdown_timeout(Duration::from_secs(1));
            let _ = done_tx.send(());
        })?;
    Ok(done_rx)
}
