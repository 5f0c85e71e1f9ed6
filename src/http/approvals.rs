//! The approvals queue of the disconnect desk: the orders awaiting a person's approval (a
//! protected customer's disconnect, docs/topics.md), and a supervisor's approve / reject.
//!
//! A decision taken here goes the way one taken on Kafka goes: it is produced as an approval
//! record on the control topic, keyed by the order's meter, and only once the broker has
//! acknowledged it is the answer `202 Accepted`. So it is ordered with everything else for
//! that meter, reaches whichever instance owns the meter, and obeys the same rules (it covers
//! only the protections the meter had when it was given; weather, calendar, window and notice
//! still apply). The meter records it in the audit trail with the token's name as `by`.
//! An unknown order is 404, one not awaiting approval (already final, or never held for one)
//! 409, a note over 250 characters 400.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use serde_json::json;

use super::auth::Caller;
use super::{error, json_body, ApiError, HttpState};
use crate::domain::{Approval, ApprovalDecision, MeterFact, MeterFlags, OrderStatus, Protection};

/// The protections the registry flags on a meter.
fn flag_protections(f: MeterFlags) -> Vec<Protection> {
    [
        (MeterFlags::LIFE_SUPPORT, Protection::LifeSupport),
        (MeterFlags::MEDICAL, Protection::Medical),
        (MeterFlags::CRITICAL_CARE, Protection::CriticalCare),
        (MeterFlags::VIP, Protection::Vip),
        (MeterFlags::LEGAL_DISPUTE, Protection::LegalDispute),
    ]
    .into_iter()
    .filter(|(flag, _)| f.contains(*flag))
    .map(|(_, p)| p)
    .collect()
}

/// The longest note a decision may carry.
pub(crate) const NOTE_MAX: usize = 250;
/// Orders listed at most by default, and at most.
const LIST_DEFAULT: usize = 100;
const LIST_MAX: usize = 1_000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Orders listed at most (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// `GET /api/v1/approvals`: the open orders awaiting approval, most urgent first, each with
/// the policy hold (rule and protection) that keeps it. A scan of the store's open work (every
/// meter with an open order, its snapshot), up to [`LIST_MAX`] orders found.
#[utoipa::path(get, path = "/api/v1/approvals", operation_id = "list_approvals", tag = "approvals", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, description = "OK", body = Object),
        (status = 400, description = "a parameter or the body is wrong (the message names it)", body = ApiError),
        (status = 401, description = "no token, or an unknown one", body = ApiError),
        (status = 429, description = "over the token's request rate: wait `Retry-After` seconds", body = ApiError),
        (status = 403, description = "the token's role is too small", body = ApiError),
        (status = 503, description = "the store or Kafka is unavailable: nothing was changed, try again", body = ApiError)))]
pub(crate) async fn list(
    State(s): State<HttpState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "query parameters: `limit` (1-1000) only".into(),
        );
    };
    let limit = match super::page_limit(q.limit, LIST_DEFAULT, LIST_MAX) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let registry = s.registry.clone();
    let found = s
        .read(move |store| {
            let st = store.store();
            // The meters' snapshots say what each open order waits for (the order rows
            // are written at intake and at the end, not at every status).
            let mut waiting = Vec::new();
            let mut scanned_all = true;
            for m in st.meters_with_open_work()? {
                if let Some(state) = st.meter(&m)? {
                    let mut protections = Vec::new();
                    if let Some(info) = registry.get(&m) {
                        protections.extend(flag_protections(info.flags));
                    }
                    for c in &state.memory.certificates {
                        if !protections.contains(&c.protection) {
                            protections.push(c.protection);
                        }
                    }
                    waiting.extend(
                        state
                            .open
                            .into_iter()
                            .filter(|o| o.status == OrderStatus::AwaitingApproval)
                            .map(|o| (o, protections.clone())),
                    );
                }
                if waiting.len() >= LIST_MAX {
                    scanned_all = false;
                    break;
                }
            }
            // Most urgent first, then by when the CIS created them.
            waiting.sort_by(|(a, _), (b, _)| {
                (a.order.priority, a.order.created_at, &a.order.order_id).cmp(&(
                    b.order.priority,
                    b.order.created_at,
                    &b.order.order_id,
                ))
            });
            let truncated = !scanned_all || waiting.len() > limit;
            waiting.truncate(limit);
            let rows: Vec<_> = waiting
                .into_iter()
                .map(|(o, protections)| {
                    json!({
                        "order_id": o.order.order_id,
                        "protections": protections,
                        "meter_id": o.order.meter_id,
                        "kind": o.order.kind,
                        "reason": o.order.reason,
                        "priority": o.order.priority,
                        "created_at": o.order.created_at,
                        "held": o.hold,
                    })
                })
                .collect();
            Ok::<_, crate::store::StoreError>(json_body(
                &json!({ "approvals": rows, "truncated": truncated }),
            ))
        })
        .await;
    match found {
        Err(r) => r,
        Ok(Ok(body)) => body,
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecisionBody {
    decision: ApprovalDecision,
    /// At most 250 characters.
    #[serde(default)]
    #[schema(max_length = 250)]
    note: Option<String>,
}

/// `POST /api/v1/approvals/{order_id}` (supervisor): `{"decision": "approve" | "reject",
/// "note": "..."}`. An `Idempotency-Key` header makes a retried request the same decision
/// (the same fact id: the meter takes a fact once).
#[utoipa::path(post, path = "/api/v1/approvals/{order_id}", operation_id = "decide_approval", tag = "approvals", security(("bearer" = [])),
    params(("order_id" = String, Path, description = "the order awaiting approval"),
        ("Idempotency-Key" = Option<String>, Header, description = "a retried request with the same key is the same decision")),
    request_body = DecisionBody,
    responses((status = 202, description = "accepted: produced on the control topic", body = Object),
        (status = 400, description = "a parameter or the body is wrong (the message names it)", body = ApiError), (status = 401, description = "no token, or an unknown one", body = ApiError),
        (status = 429, description = "over the token's request rate: wait `Retry-After` seconds", body = ApiError), (status = 403, description = "the token's role is too small", body = ApiError), (status = 404, description = "not found", body = ApiError), (status = 409, description = "conflicts with where it stands now (the message says why)", body = ApiError), (status = 503, description = "the store or Kafka is unavailable: nothing was changed, try again", body = ApiError)))]
pub(crate) async fn decide(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: DecisionBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body must be {{\"decision\": \"approve\" | \"reject\", \"note\": \"...\"}}: {e}"),
            )
        }
    };
    if let Err(r) = super::check_note(body.note.as_deref(), NOTE_MAX) {
        return r;
    }
    let super::OrderWrite {
        key,
        writes,
        rec,
        open,
    } = match super::order_write(&s, &headers, &order_id).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let status = match &open {
        Some(o) => o.status,
        None => rec.status,
    };
    if status != OrderStatus::AwaitingApproval {
        let why = if status.is_terminal() {
            "it is final"
        } else {
            "it is not awaiting approval"
        };
        return error(
            StatusCode::CONFLICT,
            format!(
                "order `{order_id}` is `{}`: {why}, so there is nothing to decide",
                super::status_name(status)
            ),
        );
    }
    let now = s.directory.services().clock.now();
    let fact_id = super::api_fact_id(&caller.name, key.as_deref(), now);
    let approval = MeterFact::Approval(Approval {
        schema_version: 1,
        fact_id: fact_id.clone(),
        meter_id: rec.order.meter_id.clone(),
        order_id: order_id.clone(),
        decision: body.decision,
        by: caller.name.clone(),
        note: body.note.clone(),
        at: now,
    });
    let payload = serde_json::to_vec(&approval).expect("serialize");
    // What the fact source will accept (the same parser).
    if let Err(e) = MeterFact::parse(Some(&rec.order.meter_id), &payload, true) {
        return error(StatusCode::BAD_REQUEST, e.0);
    }
    tracing::info!(order = %order_id, by = %caller.name, decision = ?body.decision, fact = %fact_id, "approval decision taken through the operator API");
    let topic = writes.control_topic.clone();
    super::produce_accepted(
        &writes,
        &topic,
        &rec.order.meter_id,
        &payload,
        json!({
            "order_id": order_id,
            "meter_id": rec.order.meter_id,
            "decision": body.decision,
            "by": caller.name,
            "fact_id": fact_id,
            "status": "accepted: on its way to the meter, which applies it as it would one from the control topic",
        }),
    )
    .await
}
