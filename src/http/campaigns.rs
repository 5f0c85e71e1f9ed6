//! Campaigns over the operator API: the list with progress (viewer), and an operator's define,
//! pause, resume, cancel and set-rate. A write is produced as the campaign-control record an
//! integrator would produce (keyed by campaign id, `by` = the token's name) and answered
//! `202` once the broker has it: so it reaches the instance that owns the campaign and is
//! applied, stored and published (campaign events) exactly as one from Kafka. Checked before
//! producing, so that a request that cannot succeed is a 4xx rather than a dead letter: a
//! definition that breaks a rule 400 (the rule named), one already defined 409; a command for
//! a campaign never defined 404, for one that has ended 409; a rate out of range 400.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use serde_json::json;

use super::auth::Caller;
use super::{error, json_body, ApiError, HttpState};
use crate::domain::{CampaignDef, CampaignRecord, CampaignStatus, ControlRecord};

/// A campaign command (the OpenAPI document's enum).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum CampaignAction {
    Pause,
    Resume,
    Cancel,
    Rate,
}

/// The body of `rate`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct RateBody {
    #[schema(minimum = 1, maximum = 1000000)]
    rate_per_hour: u32,
}

fn ended(s: CampaignStatus) -> bool {
    matches!(
        s,
        CampaignStatus::Cancelled | CampaignStatus::Expired | CampaignStatus::Finished
    )
}

/// A campaign as the list and the lookup show it.
fn row(r: &CampaignRecord) -> serde_json::Value {
    json!({
        "campaign_id": r.def.campaign_id,
        "name": r.def.name,
        "status": r.status,
        "rate_per_hour": r.rate_per_hour,
        "released": r.released,
        "last_release_at": r.last_release_at,
        "updated_at": r.updated_at,
        "zones": r.def.zones,
        "start_at": r.def.start_at,
        "end_by": r.def.end_by,
    })
}

async fn stored(s: &HttpState) -> Result<Vec<CampaignRecord>, Response> {
    match s.read(|store| store.store().campaigns()).await {
        Err(r) => Err(r),
        Ok(Err(e)) => Err(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        Ok(Ok(all)) => Ok(all),
    }
}

/// `GET /api/v1/campaigns`: every stored campaign with its status, rate and releases so far.
#[utoipa::path(get, path = "/api/v1/campaigns", operation_id = "list_campaigns", tag = "campaigns", security(("bearer" = [])),
    responses((status = 200, description = "OK", body = Object),
        (status = 401, description = "no token, or an unknown one", body = ApiError),
        (status = 429, description = "over the token's request rate: wait `Retry-After` seconds", body = ApiError),
        (status = 403, description = "the token's role is too small", body = ApiError),
        (status = 503, description = "the store or Kafka is unavailable: nothing was changed, try again", body = ApiError)))]
pub(crate) async fn list(State(s): State<HttpState>) -> Response {
    let all = match stored(&s).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let rows: Vec<_> = all.iter().map(row).collect();
    json_body(&json!({ "campaigns": rows }))
}

/// `GET /api/v1/campaigns/{campaign_id}`: the campaign, its orders and the instants of its
/// releases so far (oldest first: the console's release chart).
#[utoipa::path(get, path = "/api/v1/campaigns/{campaign_id}", operation_id = "get_campaign", tag = "campaigns", security(("bearer" = [])),
    params(("campaign_id" = String, Path, description = "the campaign")),
    responses((status = 200, description = "OK", body = Object),
        (status = 401, description = "no token, or an unknown one", body = ApiError),
        (status = 429, description = "over the token's request rate: wait `Retry-After` seconds", body = ApiError),
        (status = 403, description = "the token's role is too small", body = ApiError),
        (status = 404, description = "not found", body = ApiError),
        (status = 503, description = "the store or Kafka is unavailable: nothing was changed, try again", body = ApiError)))]
pub(crate) async fn show(State(s): State<HttpState>, Path(id): Path<String>) -> Response {
    let cid = id.clone();
    let read = s
        .read(move |store| {
            let st = store.store();
            let Some(r) = st
                .campaigns()?
                .into_iter()
                .find(|r| r.def.campaign_id == cid)
            else {
                return Ok(None);
            };
            let orders = st.campaign_orders(&cid)?;
            Ok::<_, crate::store::StoreError>(Some((r, orders)))
        })
        .await;
    let (r, orders) = match super::found_or(read, || format!("campaign `{id}` is not defined")) {
        Ok(found) => found,
        Err(r) => return r,
    };
    let mut releases: Vec<_> = orders.iter().filter_map(|o| o.released_at).collect();
    releases.sort();
    json_body(&json!({
        "campaign": row(&r),
        "orders_total": orders.len(),
        "orders": orders.iter().map(|o| json!({
            "order_id": o.order_id,
            "meter_id": o.meter_id,
            "zone": o.zone,
            "released_at": o.released_at,
        })).collect::<Vec<_>>(),
        "releases": releases,
    }))
}

/// Produces `record` on the campaign-control topic; `202` with `what` once Kafka has it.
async fn send(
    s: &HttpState,
    id: &str,
    record: &ControlRecord,
    what: serde_json::Value,
) -> Response {
    let Some(writes) = s.writes.clone() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this instance takes no writes (no Kafka producer)".into(),
        );
    };
    let payload = serde_json::to_vec(record).expect("serialize");
    let topic = writes.campaign_control_topic.clone();
    super::produce_accepted(&writes, &topic, id, &payload, what).await
}

/// `POST /api/v1/campaigns` (operator): a campaign definition (docs/topics.md, Campaigns).
#[utoipa::path(post, path = "/api/v1/campaigns", operation_id = "define_campaign", tag = "campaigns", security(("bearer" = [])),
    request_body(content = Object, description = "a v1 campaign definition (docs/schemas/campaign-control.v1.schema.json, type `define`'s `campaign`)"),
    responses((status = 202, description = "accepted: produced on the campaign-control topic", body = Object),
        (status = 400, description = "a parameter or the body is wrong (the message names it)", body = ApiError), (status = 401, description = "no token, or an unknown one", body = ApiError),
        (status = 429, description = "over the token's request rate: wait `Retry-After` seconds", body = ApiError), (status = 403, description = "the token's role is too small", body = ApiError), (status = 409, description = "conflicts with where it stands now (the message says why)", body = ApiError), (status = 503, description = "the store or Kafka is unavailable: nothing was changed, try again", body = ApiError)))]
pub(crate) async fn define(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    let def: CampaignDef = match serde_json::from_slice(&body) {
        Ok(d) => d,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("not a v1 campaign definition: {e}"),
            )
        }
    };
    let registry = s.registry.clone();
    if let Err(e) = def.clone().validate(|z| registry.has_zone(z)) {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    let all = match stored(&s).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let id = def.campaign_id.clone();
    if all.iter().any(|r| r.def.campaign_id == id) {
        return error(
            StatusCode::CONFLICT,
            format!("campaign `{id}` is already defined; campaigns are immutable (pause, resume, cancel or set its rate)"),
        );
    }
    tracing::info!(campaign = %id, by = %caller.name, "campaign defined through the operator API");
    let record = ControlRecord::Define {
        schema_version: 1,
        campaign: def,
    };
    send(&s, &id, &record, json!({ "campaign_id": id, "by": caller.name, "status": "accepted: defined once its owner has stored it" })).await
}

/// `POST /api/v1/campaigns/{id}/{action}` (operator): `pause`, `resume`, `cancel`, or `rate`
/// with `{"rate_per_hour": N}`.
#[utoipa::path(post, path = "/api/v1/campaigns/{campaign_id}/{action}", operation_id = "campaign_command", tag = "campaigns", security(("bearer" = [])),
    params(("campaign_id" = String, Path, description = "the campaign"),
        ("action" = CampaignAction, Path, description = "the command")),
    request_body(content = Option<RateBody>, description = "`rate` only: the new rate"),
    responses((status = 202, description = "accepted: produced on the campaign-control topic", body = Object),
        (status = 400, description = "a parameter or the body is wrong (the message names it)", body = ApiError), (status = 401, description = "no token, or an unknown one", body = ApiError),
        (status = 429, description = "over the token's request rate: wait `Retry-After` seconds", body = ApiError), (status = 403, description = "the token's role is too small", body = ApiError), (status = 404, description = "not found", body = ApiError), (status = 409, description = "conflicts with where it stands now (the message says why)", body = ApiError), (status = 503, description = "the store or Kafka is unavailable: nothing was changed, try again", body = ApiError)))]
pub(crate) async fn command(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let by = caller.name.clone();
    let campaign_id = id.clone();
    let record = match action.as_str() {
        "pause" => ControlRecord::Pause {
            schema_version: 1,
            campaign_id,
            by,
        },
        "resume" => ControlRecord::Resume {
            schema_version: 1,
            campaign_id,
            by,
        },
        "cancel" => ControlRecord::Cancel {
            schema_version: 1,
            campaign_id,
            by,
        },
        "rate" => {
            let rate = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["rate_per_hour"].as_u64());
            match rate {
                Some(r) if (1..=1_000_000).contains(&r) => ControlRecord::SetRate {
                    schema_version: 1,
                    campaign_id,
                    rate_per_hour: r as u32,
                    by,
                },
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "the body must be {\"rate_per_hour\": N} with N in 1..=1000000".into(),
                    )
                }
            }
        }
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!("`{other}` is not a campaign command: pause, resume, cancel or rate"),
            )
        }
    };
    let all = match stored(&s).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Some(r) = all.iter().find(|r| r.def.campaign_id == id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("campaign `{id}` is not defined"),
        );
    };
    if ended(r.status) {
        return error(
            StatusCode::CONFLICT,
            format!(
                "campaign `{id}` has ended ({}): nothing to {action}",
                serde_json::to_value(r.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            ),
        );
    }
    tracing::info!(campaign = %id, by = %caller.name, action = %action, "campaign command through the operator API");
    send(
        &s,
        &id,
        &record,
        json!({ "campaign_id": id, "command": action, "by": caller.name, "status": "accepted: applied once the campaign has stored it" }),
    )
    .await
}
