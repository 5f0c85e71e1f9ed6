//! The operator API's OpenAPI 3.1 document, generated from the handlers' annotations
//! (utoipa): served at `/api/v1/openapi.json`, committed as docs/openapi.json (a test keeps the
//! two equal), and checked against a running instance by schemathesis in CI (`.ci/run`).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{approvals, campaigns, exceptions, kpis, orders};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "switchyard operator API",
        description = "The disconnect desk's API: orders, approvals, campaigns, exception tasks, service levels and the dashboard's counts. Writes that change a meter's course are produced on switchyard's Kafka topics (202 once the broker has them). Bearer tokens with roles viewer < operator < supervisor.",
        license(name = "Apache-2.0")
    ),
    paths(
        super::metrics,
        super::healthz,
        super::readyz,
        super::latency,
        super::order,
        super::meter,
        super::meter_audit,
        openapi_json,
        orders::search,
        orders::command,
        approvals::list,
        approvals::decide,
        campaigns::list,
        campaigns::show,
        super::auth::whoami,
        campaigns::define,
        campaigns::command,
        exceptions::list,
        exceptions::show,
        exceptions::change,
        kpis::kpis,
    ),
    components(schemas(orders::OrderAction, campaigns::CampaignAction)),
    modifiers(&Bearer),
    tags(
        (name = "probes", description = "health, readiness, metrics"),
        (name = "orders", description = "search, lookup, hold / release / cancel"),
        (name = "meters", description = "a meter's state and audit trail"),
        (name = "approvals", description = "orders awaiting a supervisor's approval"),
        (name = "campaigns", description = "staged mass disconnects"),
        (name = "exceptions", description = "the exception task list"),
        (name = "dashboard", description = "KPI counts"),
    )
)]
pub(crate) struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as served and committed (pretty JSON, a final newline).
pub(crate) fn document() -> String {
    let mut s = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    s.push('\n');
    s
}

/// `GET /api/v1/openapi.json`.
#[utoipa::path(get, path = "/api/v1/openapi.json", operation_id = "openapi", tag = "probes",
    responses((status = 200, description = "this document", body = Object)))]
pub(crate) async fn openapi_json() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        document(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    /// docs/openapi.json is what the code generates: regenerate it with
    /// `SWITCHYARD_WRITE_OPENAPI=1 cargo test --release --lib openapi`.
    #[test]
    fn the_committed_document_is_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
        let generated = super::document();
        if std::env::var_os("SWITCHYARD_WRITE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).expect("write docs/openapi.json");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json differs from the generated document: run SWITCHYARD_WRITE_OPENAPI=1 cargo test --release --lib openapi"
        );
        let v: serde_json::Value = serde_json::from_str(&generated).expect("JSON");
        assert_eq!(v["openapi"], "3.1.0");
    }
}
