//! The operator HTTP endpoint: Prometheus `/metrics`, `/healthz` (the process is up),
//! `/readyz` (the registry has caught up and the intake runs), `/stats/latency` (exact internal
//! latency percentiles), and read-only lookups of an
//! order (with its audit trail) and a meter. Errors are JSON with a message.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::watch;

use crate::meter::Directory;
use crate::registry::Registry;
use crate::store::StoreHandle;

#[derive(Clone)]
pub struct HttpState {
    pub ready: Arc<AtomicBool>,
    pub store: StoreHandle,
    pub registry: Arc<Registry>,
    pub directory: Arc<Directory>,
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn metrics() -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::observability::prometheus().render(),
    )
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(s): State<HttpState>) -> Response {
    if s.ready.load(Ordering::SeqCst) {
        Json(json!({ "ready": true, "registry_meters": s.registry.len(), "live_meter_actors": s.directory.live_actors() })).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "ready": false, "waiting_for": "meter registry catch-up and order intake start" }))).into_response()
    }
}

/// Exact internal latency since start (see `observability::LatencyProbes`), in microseconds.
async fn latency() -> impl IntoResponse {
    let l = crate::observability::latency();
    Json(json!({
        "dispatch": l.dispatch.snapshot(),
        "completion": l.completion.snapshot(),
    }))
}

async fn order(State(s): State<HttpState>, Path(order_id): Path<String>) -> Response {
    match s.store.store().order(&order_id) {
        Ok(Some(rec)) => {
            let audit: Vec<_> = s
                .store
                .store()
                .audit(&rec.order.meter_id)
                .unwrap_or_default()
                .into_iter()
                .filter(|a| a.order_id.as_deref() == Some(order_id.as_str()))
                .collect();
            Json(json!({ "order": rec, "audit": audit })).into_response()
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("no order with id `{order_id}` has been accepted"),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn meter(State(s): State<HttpState>, Path(meter_id): Path<String>) -> Response {
    let Some(info) = s.registry.get(&meter_id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("meter `{meter_id}` is not in the registry"),
        );
    };
    let state = s.store.store().meter(&meter_id).ok().flatten();
    let audit = s.store.store().audit(&meter_id).unwrap_or_default();
    Json(json!({
        "meter_id": meter_id,
        "zone": &*info.zone,
        "head_end_id": &*info.head_end_id,
        "flags": info.flags.bits(),
        "live_actor": s.directory.is_live(&meter_id),
        "state": state,
        "audit": audit,
    }))
    .into_response()
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/stats/latency", get(latency))
        .route("/api/v1/orders/{order_id}", get(order))
        .route("/api/v1/meters/{meter_id}", get(meter))
        .with_state(state)
}

/// Binds the listener (so a busy port fails at start) and serves until shutdown.
pub async fn bind(listen: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen).await
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = router(state);
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "http server failed");
    }
}
