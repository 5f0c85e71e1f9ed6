//! The exception task list of the disconnect desk: every exception switchyard raised, with the
//! task people keep on it (state open / in progress / resolved, assignee, priority, notes), the
//! linked order; list with filters (viewer), and an operator's assign, annotate and state change.
//!
//! A task change touches no meter's course, so it is written to the store directly, with
//! compare-and-set on the task's version (`Store::swap_exception_task`): a change made on a
//! version someone else already changed is 409, never a silent overwrite (send `version` to
//! make it explicit; without it, the version just read). Each change is also a row of the
//! meter's audit trail (`exception_task`, who and what). The list pages through the store's
//! exceptions, reading at most [`SCAN_MAX`] per request (`next_page_token` goes on).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use serde_json::json;

use super::auth::Caller;
use super::{error, json_body, ApiError, HttpState};
use crate::domain::{
    AuditEvent, AuditKind, ExceptionKind, ExceptionRecord, ExceptionTask, TaskNote, TaskState,
};
use crate::store::{StoreError, WriteBatch};

/// Exceptions read per request at most.
pub(crate) const SCAN_MAX: usize = 5_000;
const CHUNK: usize = 500;
const LIMIT_DEFAULT: usize = 50;
const LIMIT_MAX: usize = 500;
/// The longest note, and the most notes a task keeps.
const NOTE_MAX: usize = 1_000;
const NOTES_MAX: usize = 200;

/// A task's state before anyone touched it: what switchyard says of the exception.
fn initial_state(x: &ExceptionRecord) -> TaskState {
    if x.status == "resolved" {
        TaskState::Resolved
    } else {
        TaskState::Open
    }
}

fn view(x: &ExceptionRecord, task: Option<&ExceptionTask>) -> serde_json::Value {
    json!({
        "exception_id": x.exception_id,
        "kind": x.kind,
        "meter_id": x.meter_id,
        "order_id": (!x.order_id.is_empty()).then_some(&x.order_id),
        "command_id": x.command_id,
        "detail": x.detail,
        "raised_at": x.raised_at,
        "priority": task.and_then(|t| t.priority).unwrap_or(x.priority),
        "state": task.map_or(initial_state(x), |t| t.state),
        "assignee": task.and_then(|t| t.assignee.clone()),
        "notes": task.map(|t| t.notes.clone()).unwrap_or_default(),
        "version": task.map_or(0, |t| t.version),
        "updated_by": task.map(|t| t.updated_by.clone()),
        "updated_at": task.map(|t| t.updated_at),
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Task states, comma-separated (open, in_progress, resolved).
    state: Option<String>,
    /// Exception kinds, comma-separated.
    kind: Option<String>,
    /// Who it is assigned to (`none`: unassigned).
    assignee: Option<String>,
    /// The linked order's id.
    order: Option<String>,
    /// Tasks per page (1-500, default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// The `next_page_token` of the previous page.
    page_token: Option<String>,
}

/// `GET /api/v1/exceptions`: the task list, most urgent first within the page. Filters:
/// `state` and `kind` (comma-separated), `assignee` (`none`: unassigned), `order` (its id).
#[utoipa::path(get, path = "/api/v1/exceptions", operation_id = "list_exceptions", tag = "exceptions", security(("bearer" = [])), params(ListQuery),
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
            "query parameters: state, kind (comma-separated), assignee (`none`: unassigned), order, limit (1-500), page_token".into(),
        );
    };
    let limit = match super::page_limit(q.limit, LIMIT_DEFAULT, LIMIT_MAX) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let states = match super::orders::list_of::<TaskState>("state", q.state.as_deref()) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let kinds = match super::orders::list_of::<ExceptionKind>("kind", q.kind.as_deref()) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (assignee, order, token) = (q.assignee, q.order, q.page_token);
    let read = s
        .read(move |store| {
            let st = store.store();
            let mut after = token;
            let mut rows = Vec::new();
            let mut scanned = 0;
            let mut complete = false;
            'scan: while scanned < SCAN_MAX {
                let page = st.exceptions_after(after.as_deref(), CHUNK)?;
                let short = page.len() < CHUNK;
                for x in page {
                    scanned += 1;
                    after = Some(x.exception_id.clone());
                    if kinds.as_ref().is_some_and(|k| !k.contains(&x.kind))
                        || order.as_ref().is_some_and(|o| *o != x.order_id)
                    {
                        continue;
                    }
                    let task = st.exception_task(&x.exception_id, &x.meter_id)?;
                    let state = task.as_ref().map_or(initial_state(&x), |t| t.state);
                    let who = task.as_ref().and_then(|t| t.assignee.as_deref());
                    let assignee_ok = match assignee.as_deref() {
                        None => true,
                        Some("none") => who.is_none(),
                        Some(a) => who == Some(a),
                    };
                    if states.as_ref().is_some_and(|f| !f.contains(&state)) || !assignee_ok {
                        continue;
                    }
                    rows.push(view(&x, task.as_ref()));
                    if rows.len() == limit {
                        break 'scan;
                    }
                }
                if short {
                    complete = true;
                    break;
                }
            }
            rows.sort_by_key(|r| {
                (
                    r["priority"].as_u64(),
                    r["raised_at"].as_str().map(str::to_string),
                )
            });
            Ok::<_, StoreError>(json_body(&json!({
                "exceptions": rows,
                "next_page_token": if complete { None } else { after },
                "scanned": scanned,
                "scan_complete": complete,
            })))
        })
        .await;
    match read {
        Err(r) => r,
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Ok(Ok(body)) => body,
    }
}

/// The exception and its task; 404 when there is no such exception.
async fn find(
    s: &HttpState,
    exception_id: &str,
) -> Result<(ExceptionRecord, Option<ExceptionTask>), Response> {
    let id = exception_id.to_string();
    let read = s
        .read(move |store| {
            let st = store.store();
            let Some(x) = st.exception(&id)? else {
                return Ok(None);
            };
            let task = st.exception_task(&id, &x.meter_id)?;
            Ok::<_, StoreError>(Some((x, task)))
        })
        .await;
    super::found_or(read, || format!("no exception with id `{exception_id}`"))
}

/// `GET /api/v1/exceptions/{exception_id}` (the id may hold `/`, as `SO-1/exception`).
#[utoipa::path(get, path = "/api/v1/exceptions/{exception_id}", operation_id = "get_exception", tag = "exceptions", security(("bearer" = [])),
    params(("exception_id" = String, Path, description = "the exception's id (e.g. `SO-1/exception`)")),
    responses((status = 200, description = "OK", body = Object),
        (status = 404, description = "not found", body = ApiError),
        (status = 401, description = "no token, or an unknown one", body = ApiError),
        (status = 429, description = "over the token's request rate: wait `Retry-After` seconds", body = ApiError),
        (status = 403, description = "the token's role is too small", body = ApiError),
        (status = 503, description = "the store or Kafka is unavailable: nothing was changed, try again", body = ApiError)))]
pub(crate) async fn show(State(s): State<HttpState>, Path(id): Path<String>) -> Response {
    match find(&s, &id).await {
        Ok((x, task)) => json_body(&view(&x, task.as_ref())),
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskChange {
    state: Option<TaskState>,
    /// A person's id; `""` unassigns.
    #[schema(max_length = 128)]
    assignee: Option<String>,
    #[schema(minimum = 1, maximum = 9)]
    priority: Option<u8>,
    #[schema(min_length = 1, max_length = 1000)]
    note: Option<String>,
    /// The version the change was made on (409 if it is not the stored one).
    version: Option<u64>,
}

/// `POST /api/v1/exceptions/{exception_id}` (operator): `{"state", "assignee", "priority",
/// "note", "version"}`, any of them; answers the task as stored.
#[utoipa::path(post, path = "/api/v1/exceptions/{exception_id}", operation_id = "change_exception_task", tag = "exceptions", security(("bearer" = [])),
    params(("exception_id" = String, Path, description = "the exception's id")),
    request_body = TaskChange,
    responses((status = 200, description = "the task as stored", body = Object),
        (status = 400, description = "a parameter or the body is wrong (the message names it)", body = ApiError), (status = 401, description = "no token, or an unknown one", body = ApiError),
        (status = 429, description = "over the token's request rate: wait `Retry-After` seconds", body = ApiError), (status = 403, description = "the token's role is too small", body = ApiError), (status = 404, description = "not found", body = ApiError), (status = 409, description = "conflicts with where it stands now (the message says why)", body = ApiError), (status = 503, description = "the store or Kafka is unavailable: nothing was changed, try again", body = ApiError)))]
pub(crate) async fn change(
    State(s): State<HttpState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let c: TaskChange = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body must be {{\"state\": \"open\" | \"in_progress\" | \"resolved\", \"assignee\": \"...\", \"priority\": 1-9, \"note\": \"...\", \"version\": n}} (any of them): {e}"),
            )
        }
    };
    if c.state.is_none() && c.assignee.is_none() && c.priority.is_none() && c.note.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "nothing to change: give state, assignee, priority or note".into(),
        );
    }
    if c.priority.is_some_and(|p| !(1..=9).contains(&p)) {
        return error(
            StatusCode::BAD_REQUEST,
            "priority must be 1 (most urgent) to 9".into(),
        );
    }
    if let Some(a) = &c.assignee {
        if a.len() > 128 || a.chars().any(|ch| ch.is_control()) {
            return error(
                StatusCode::BAD_REQUEST,
                "assignee must be at most 128 characters, no control characters".into(),
            );
        }
    }
    if let Some(n) = &c.note {
        let chars = n.chars().count();
        if chars == 0 || chars > NOTE_MAX {
            return error(
                StatusCode::BAD_REQUEST,
                format!("note has {chars} characters; 1 to {NOTE_MAX}"),
            );
        }
    }
    let (x, task) = match find(&s, &id).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    let stored = task.as_ref().map_or(0, |t| t.version);
    if c.version.is_some_and(|v| v != stored) {
        return error(
            StatusCode::CONFLICT,
            format!(
                "the task is at version {stored}, the change was made on version {}: read it again",
                c.version.unwrap_or_default()
            ),
        );
    }
    let now = s.directory.services().clock.now();
    let mut t = task.unwrap_or_else(|| ExceptionTask {
        exception_id: x.exception_id.clone(),
        meter_id: x.meter_id.clone(),
        state: initial_state(&x),
        assignee: None,
        priority: None,
        notes: Vec::new(),
        version: 0,
        updated_by: String::new(),
        updated_at: now,
    });
    if t.notes.len() >= NOTES_MAX && c.note.is_some() {
        return error(
            StatusCode::CONFLICT,
            format!("the task has {NOTES_MAX} notes, the most it keeps"),
        );
    }
    let mut what = Vec::new();
    if let Some(state) = c.state {
        what.push(format!("state {}", <&str>::from(state)));
        t.state = state;
    }
    if let Some(a) = c.assignee {
        what.push(if a.is_empty() {
            "unassigned".to_string()
        } else {
            format!("assigned to {a}")
        });
        t.assignee = (!a.is_empty()).then_some(a);
    }
    if let Some(p) = c.priority {
        what.push(format!("priority {p}"));
        t.priority = Some(p);
    }
    if let Some(n) = c.note {
        what.push(format!("note: {n}"));
        t.notes.push(TaskNote {
            by: caller.name.clone(),
            at: now,
            text: n,
        });
    }
    t.version = stored + 1;
    t.updated_by = caller.name.clone();
    t.updated_at = now;
    let task = t.clone();
    let detail = format!("{} by {}", what.join("; "), caller.name);
    let write = s
        .read(move |store| {
            let st = store.store();
            if !st.swap_exception_task(stored, &task)? {
                return Ok(false);
            }
            if !x.meter_id.is_empty() {
                let mut a = AuditEvent::new(&x.meter_id, now, AuditKind::ExceptionTask)
                    .reason(x.exception_id.clone())
                    .detail(detail);
                if !x.order_id.is_empty() {
                    a = a.order(&x.order_id);
                }
                st.apply(&[WriteBatch {
                    audit: vec![a],
                    ..Default::default()
                }])?;
            }
            Ok::<_, StoreError>(true)
        })
        .await;
    match write {
        Err(r) => r,
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Ok(Ok(false)) => error(
            StatusCode::CONFLICT,
            "someone changed the task at the same time: read it again".into(),
        ),
        Ok(Ok(true)) => {
            tracing::info!(exception = %t.exception_id, by = %caller.name, version = t.version, "exception task changed through the operator API");
            let found = find(&s, &t.exception_id).await;
            match found {
                Ok((x, task)) => json_body(&view(&x, task.as_ref())),
                Err(r) => r,
            }
        }
    }
}
