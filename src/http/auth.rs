//! Who may call the operator API. Callers present a bearer token; switchyard keeps only the
//! token's SHA-256 (from `http.auth.tokens` or the file `http.auth.tokens_file`, one
//! `name:role:sha256-hex` entry each), so a leaked config does not leak a token. Each token has
//! a name, recorded as `by` with every write it makes, and a role. Roles are ordered:
//! viewer < operator < supervisor (a supervisor may do what an operator may).
//!
//! The rules ([`Access::check`]):
//! - a write needs a known token whose role is at least the write's: no token is 401, an
//!   unknown one 401, a too-small role 403. With no token configured at all, every write is
//!   refused (401), never open;
//! - a read needs a viewer token, unless no token is configured (reads are open, as before
//!   auth existed) or the listener is on a loopback address and
//!   `http.auth.open_reads_on_loopback` is set;
//! - `/metrics`, `/healthz` and `/readyz` are always open (Prometheus, probes).

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::config::{ConfigError, HttpAuthConfig};

pub(crate) use crate::config::ApiRole as Role;

/// The caller of a request that passed [`Access::check`] (an extension of the request).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Caller {
    /// The token's name (recorded as `by`); `anonymous` for an open read.
    pub(crate) name: String,
    pub(crate) role: Option<Role>,
}

/// The SHA-256 of a token, in lowercase hex (what `switchyard token hash` prints).
pub fn token_hash(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.trim().as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The configured tokens (by hash) and whether reads are open.
#[derive(Debug, Clone, Default)]
pub(crate) struct Access {
    by_hash: HashMap<String, (String, Role)>,
    open_reads: bool,
    /// Requests per token name (`anonymous` for open reads); `None`: unlimited.
    limiter: Option<std::sync::Arc<Limiter>>,
}

/// A token bucket per caller (governor's keyed limiter, GCRA).
pub(crate) struct Limiter(governor::DefaultKeyedRateLimiter<String>);

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Limiter")
    }
}

impl Access {
    /// Whether `caller` may make one more request now; otherwise how long to wait.
    fn admit(&self, caller: &str) -> Result<(), std::time::Duration> {
        let Some(l) = &self.limiter else {
            return Ok(());
        };
        l.0.check_key(&caller.to_string()).map_err(|not_until| {
            not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ))
        })
    }
}

impl Access {
    /// Reads the configured tokens (the list, then the file); errors name the key.
    pub(crate) fn load(cfg: &HttpAuthConfig, listen: SocketAddr) -> Result<Access, ConfigError> {
        let by_hash: HashMap<String, (String, Role)> = cfg
            .entries()?
            .into_iter()
            .map(|e| (e.sha256, (e.name, e.role)))
            .collect();
        let open_reads =
            by_hash.is_empty() || (cfg.open_reads_on_loopback && listen.ip().is_loopback());
        let limiter = std::num::NonZeroU32::new(cfg.requests_per_second).map(|rate| {
            let burst = std::num::NonZeroU32::new(cfg.burst).unwrap_or(rate);
            std::sync::Arc::new(Limiter(governor::RateLimiter::keyed(
                governor::Quota::per_second(rate).allow_burst(burst),
            )))
        });
        Ok(Access {
            by_hash,
            open_reads,
            limiter,
        })
    }

    /// Whether `request` may go on to an endpoint that needs `need` (`None`: a read), and as
    /// whom; otherwise the 401 or 403 answer's message.
    pub(crate) fn check(
        &self,
        authorization: Option<&str>,
        need: Option<Role>,
    ) -> Result<Caller, (StatusCode, String)> {
        let unauthorized = |m: String| (StatusCode::UNAUTHORIZED, m);
        let Some(value) = authorization else {
            if need.is_none() && self.open_reads {
                return Ok(Caller {
                    name: "anonymous".into(),
                    role: None,
                });
            }
            if self.by_hash.is_empty() {
                return Err(unauthorized("writes need a bearer token and this instance has none configured: set http.auth.tokens or http.auth.tokens_file".into()));
            }
            return Err(unauthorized(
                "a bearer token is needed: send `Authorization: Bearer <token>`".into(),
            ));
        };
        let Some(token) = value.strip_prefix("Bearer ") else {
            return Err(unauthorized(
                "the Authorization header must be `Bearer <token>`".into(),
            ));
        };
        let Some((name, role)) = self.by_hash.get(&token_hash(token)) else {
            return Err(unauthorized("unknown token".into()));
        };
        let need = need.unwrap_or(Role::Viewer);
        if *role < need {
            return Err((
                StatusCode::FORBIDDEN,
                format!(
                    "token `{name}` has role {}; this needs {}",
                    role.name(),
                    need.name()
                ),
            ));
        }
        Ok(Caller {
            name: name.clone(),
            role: Some(*role),
        })
    }
}

/// The layer of a group of routes: reads (`None`) or writes that need a role.
pub(crate) async fn require(
    State((access, need)): State<(std::sync::Arc<Access>, Option<Role>)>,
    mut request: Request,
    next: Next,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match access.check(authorization, need) {
        Ok(caller) => {
            if let Err(wait) = access.admit(&caller.name) {
                let secs = wait.as_secs().max(1);
                let mut r = super::error(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "`{}` is over its request rate (http.auth.requests_per_second): try again in {secs} s",
                        caller.name
                    ),
                );
                if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return r;
            }
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err((status, message)) => super::error(status, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(tokens: &[&str], listen: &str, open_on_loopback: bool) -> Access {
        let cfg = HttpAuthConfig {
            tokens: tokens.iter().map(|s| s.to_string()).collect(),
            tokens_file: None,
            open_reads_on_loopback: open_on_loopback,
            ..HttpAuthConfig::default()
        };
        Access::load(&cfg, listen.parse().unwrap()).unwrap()
    }

    fn with(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn each_token_has_its_own_request_budget() {
        let cfg = HttpAuthConfig {
            requests_per_second: 1,
            burst: 2,
            ..HttpAuthConfig::default()
        };
        let a = Access::load(&cfg, "127.0.0.1:9464".parse().unwrap()).unwrap();
        assert!(a.admit("kim").is_ok());
        assert!(a.admit("kim").is_ok());
        let wait = a.admit("kim").expect_err("over the burst");
        assert!(wait <= std::time::Duration::from_secs(1), "{wait:?}");
        assert!(a.admit("olu").is_ok(), "another token is not held back");
        let unlimited = Access::load(
            &HttpAuthConfig {
                requests_per_second: 0,
                ..HttpAuthConfig::default()
            },
            "127.0.0.1:9464".parse().unwrap(),
        )
        .unwrap();
        assert!((0..1_000).all(|_| unlimited.admit("kim").is_ok()));
    }

    #[test]
    fn roles_are_ordered_and_a_write_needs_a_token_of_its_role() {
        let a = access(
            &[
                &format!("val:viewer:{}", token_hash("v-secret")),
                &format!("olu:operator:{}", token_hash("o-secret")),
                &format!("sam:supervisor:{}", token_hash("s-secret")),
            ],
            "0.0.0.0:9464",
            true,
        );
        let need = Some(Role::Supervisor);
        assert_eq!(a.check(None, need).unwrap_err().0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            a.check(Some(&with("nope")), need).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            a.check(Some("Basic abc"), need).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
        let (status, message) = a.check(Some(&with("v-secret")), need).unwrap_err();
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(
            message.contains("val") && message.contains("supervisor"),
            "{message}"
        );
        assert_eq!(
            a.check(Some(&with("o-secret")), need).unwrap_err().0,
            StatusCode::FORBIDDEN
        );
        let c = a.check(Some(&with("s-secret")), need).unwrap();
        assert_eq!((c.name.as_str(), c.role), ("sam", Some(Role::Supervisor)));
        // A supervisor may do an operator's writes and any read.
        assert!(a
            .check(Some(&with("s-secret")), Some(Role::Operator))
            .is_ok());
        assert!(a.check(Some(&with("v-secret")), None).is_ok());
        // Not on loopback: reads need a token too.
        assert_eq!(a.check(None, None).unwrap_err().0, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn reads_are_open_without_tokens_or_on_loopback_but_writes_never_are() {
        let none = access(&[], "0.0.0.0:9464", false);
        assert!(none.check(None, None).is_ok());
        let (status, message) = none.check(None, Some(Role::Operator)).unwrap_err();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(message.contains("http.auth.tokens"), "{message}");
        let t = format!("val:viewer:{}", token_hash("v"));
        assert!(access(&[&t], "127.0.0.1:9464", true)
            .check(None, None)
            .is_ok());
        assert!(access(&[&t], "127.0.0.1:9464", false)
            .check(None, None)
            .is_err());
        assert!(access(&[&t], "127.0.0.1:9464", true)
            .check(None, Some(Role::Operator))
            .is_err());
    }

    #[test]
    fn a_bad_entry_names_its_key_and_what_is_wrong() {
        let load = |t: &str| {
            let cfg = HttpAuthConfig {
                tokens: vec![t.to_string()],
                tokens_file: None,
                open_reads_on_loopback: true,
                ..HttpAuthConfig::default()
            };
            Access::load(&cfg, "127.0.0.1:1".parse().unwrap())
                .unwrap_err()
                .to_string()
        };
        let e = load("kim:admin:00");
        assert!(
            e.contains("http.auth.tokens[0]") && e.contains("admin"),
            "{e}"
        );
        let e = load("kim:viewer:my-plain-token");
        assert!(e.contains("SHA-256"), "{e}");
        let e = load("kim-viewer");
        assert!(e.contains("name:role:sha256-hex"), "{e}");
        // The same token twice is refused (two names could not be told apart).
        let h = token_hash("x");
        let cfg = HttpAuthConfig {
            tokens: vec![format!("a:viewer:{h}"), format!("b:operator:{h}")],
            tokens_file: None,
            open_reads_on_loopback: true,
            ..HttpAuthConfig::default()
        };
        assert!(Access::load(&cfg, "127.0.0.1:1".parse().unwrap()).is_err());
    }

    #[test]
    fn the_hash_is_sha256_hex_of_the_trimmed_token() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            token_hash("abc\n"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

/// `GET /api/v1/whoami`: the caller's token name and role (the console's sign-in check).
#[utoipa::path(get, path = "/api/v1/whoami", operation_id = "whoami", tag = "probes", security(("bearer" = [])),
    responses((status = 200, description = "the caller", body = Object),
        (status = 401, description = "no token, or an unknown one", body = super::ApiError),
        (status = 429, description = "over the token's request rate: wait `Retry-After` seconds", body = super::ApiError)))]
pub(crate) async fn whoami(axum::Extension(caller): axum::Extension<Caller>) -> Response {
    let role = caller.role.map(|r| match r {
        Role::Viewer => "viewer",
        Role::Operator => "operator",
        Role::Supervisor => "supervisor",
    });
    super::json_body(&serde_json::json!({ "name": caller.name, "role": role }))
}
