//! The web console: a single page served by switchyard itself (`/console`), its assets
//! compiled into the binary (no CDN, nothing fetched from elsewhere). It signs in with an API
//! token (kept in the browser tab's session storage) and calls the operator API like any other
//! client: overview KPIs, the approvals queue, exception tasks, campaigns with their release
//! chart, order and meter lookup with the audit timeline.
//!
//! For work on the page, `SWITCHYARD_CONSOLE_DIR` names a directory to serve the same three
//! files from instead (read at each request).

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const APP_CSS: &str = include_str!("console/app.css");

fn asset(name: &str, embedded: &'static str, content_type: &'static str) -> Response {
    let body = match std::env::var_os("SWITCHYARD_CONSOLE_DIR") {
        Some(dir) => std::fs::read_to_string(std::path::Path::new(&dir).join(name))
            .unwrap_or_else(|e| format!("/* {name}: {e} */")),
        None => embedded.to_string(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'",
            ),
        ],
        body,
    )
        .into_response()
}

pub(crate) async fn index() -> Response {
    asset("index.html", INDEX, "text/html; charset=utf-8")
}

pub(crate) async fn app_js() -> Response {
    asset("app.js", APP_JS, "text/javascript; charset=utf-8")
}

pub(crate) async fn app_css() -> Response {
    asset("app.css", APP_CSS, "text/css; charset=utf-8")
}
