//! The gate's local HTTP API and the technician's status page: health, readiness, Prometheus
//! metrics, verify, records, status, the last frame and the OpenAPI document (`openapi.json`,
//! which a test checks every live reply against).
//!
//! **Invariants:** everything but `/healthz`, `/readyz` and the page itself needs the bearer
//! token (compared in constant time). Authentication comes before rate limiting, and the two
//! have separate budgets: token holders share one bucket, every unauthenticated peer address
//! has its own, so a flood without the token never costs a token holder a request; `/healthz`
//! and `/readyz` are not rate-limited at all (connection caps bound them). Request bodies are
//! bounded (8 MiB for images, 4 KiB for JSON) and decoded image pixels are bounded across all
//! uploads at once ([`handlers::PIXEL_BUDGET`]). Every error is a JSON body with a stable
//! `code`; none carries internal details or personal data.
//!
//! **Must not know:** the daemon, its threads or its configuration: it is handed the
//! checkpoint, the telemetry and the sync client.

mod handlers;
pub mod server;
mod status;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::checkpoint::Checkpoint;
use crate::telemetry::Counters;

pub use status::{readiness, Readiness, ReadinessReason};

pub(crate) const OPENAPI: &str = include_str!("openapi.json");
const STATUS_PAGE: &str = include_str!("status.html");
/// Largest image accepted by `POST /api/v1/verify`.
pub const MAX_IMAGE_BODY: usize = 8 * 1024 * 1024;
/// Largest JSON body accepted.
pub const MAX_JSON_BODY: usize = 4 * 1024;
/// Most records in one page.
pub const MAX_PAGE: usize = 500;
/// Requests a second (sustained) and at once (burst) for token holders together.
pub const AUTHORIZED_RATE: (u32, u32) = (100, 200);
/// Requests a second and at once for each unauthenticated peer address (the status page, bad
/// tokens).
pub const UNAUTHENTICATED_RATE: (u32, u32) = (5, 20);
/// Peer addresses whose unauthenticated buckets are remembered (oldest forgotten first).
const PEER_BUCKETS: usize = 1024;

/// A token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Debug)]
pub struct RateLimit {
    tokens: f64,
    burst: f64,
    per_second: f64,
    last: Instant,
}

impl RateLimit {
    pub fn new(per_second: u32, burst: u32) -> RateLimit {
        RateLimit {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_second: f64::from(per_second),
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the handlers share.
pub struct ApiState {
    pub terminal: String,
    pub checkpoint: Arc<Checkpoint>,
    pub counters: Arc<Counters>,
    /// False once the daemon is stopping.
    pub running: Arc<AtomicBool>,
    token: Zeroizing<Vec<u8>>,
    authorized: Mutex<RateLimit>,
    unauthenticated: Mutex<HashMap<IpAddr, RateLimit>>,
    /// The platform sync client, when the gate is enrolled.
    pub syncer: Option<Arc<crate::sync::Syncer>>,
    /// Decoded pixels all image uploads may hold at once.
    pixels: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("terminal", &self.terminal)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    pub fn new(
        terminal: String,
        checkpoint: Arc<Checkpoint>,
        counters: Arc<Counters>,
        running: Arc<AtomicBool>,
        token: Zeroizing<Vec<u8>>,
        syncer: Option<Arc<crate::sync::Syncer>>,
    ) -> ApiState {
        ApiState {
            terminal,
            checkpoint,
            counters,
            running,
            token,
            authorized: Mutex::new(RateLimit::new(AUTHORIZED_RATE.0, AUTHORIZED_RATE.1)),
            unauthenticated: Mutex::new(HashMap::new()),
            syncer,
            pixels: Arc::new(tokio::sync::Semaphore::new(handlers::PIXEL_BUDGET_UNITS)),
        }
    }

    /// Replaces the rate limits (tests and the fuzz driver use unlimited ones).
    pub fn with_authorized_rate(self, per_second: u32, burst: u32) -> ApiState {
        *self.authorized.lock().unwrap_or_else(|p| p.into_inner()) =
            RateLimit::new(per_second, burst);
        self
    }
}

/// A JSON error reply: `{"error": "<human message>", "code": "<stable code>"}`.
pub fn error_response(status: StatusCode, code: &'static str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": message, "code": code })),
    )
        .into_response()
}

/// The router; state is shared with the pipeline.
pub fn router(state: Arc<ApiState>) -> Router {
    let protected = Router::new()
        .route("/metrics", get(status::metrics))
        .route(
            "/api/v1/verify",
            post(handlers::verify).layer(DefaultBodyLimit::max(MAX_IMAGE_BODY)),
        )
        .route("/api/v1/records", get(handlers::records))
        .route("/api/v1/status", get(status::status))
        .route("/api/v1/frame.png", get(handlers::frame_thumbnail))
        .route("/api/v1/openapi.json", get(handlers::openapi))
        .layer(middleware::from_fn_with_state(state.clone(), authorize));
    let public = Router::new()
        .route("/", get(|| async { Html(STATUS_PAGE) }))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limit_unauthenticated,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(status::readyz))
        .merge(protected)
        .merge(public)
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "not_found", "no such path") })
        .method_not_allowed_fallback(|| async {
            error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this path",
            )
        })
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves (connection caps and timeouts:
/// [`server::Limits`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    server::serve(
        listener,
        server::Plain,
        router(state),
        server::Limits {
            max_connections: 128,
            max_per_peer: 64,
            ..server::Limits::default()
        },
        None,
        shutdown,
    )
    .await
}

fn peer_of(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<server::ConnInfo>()
        .map(|c| c.peer.ip())
}

/// The bucket of an unauthenticated peer; false when it is empty.
fn take_unauthenticated(st: &ApiState, peer: Option<IpAddr>) -> bool {
    let ip = peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let mut buckets = st.unauthenticated.lock().unwrap_or_else(|p| p.into_inner());
    if buckets.len() >= PEER_BUCKETS && !buckets.contains_key(&ip) {
        // Forget the fullest buckets first: they belong to peers that stopped asking.
        let forget: Vec<IpAddr> = buckets
            .iter()
            .filter(|(_, b)| b.tokens >= b.burst)
            .map(|(ip, _)| *ip)
            .collect();
        for f in forget {
            buckets.remove(&f);
        }
        if buckets.len() >= PEER_BUCKETS {
            buckets.clear();
        }
    }
    buckets
        .entry(ip)
        .or_insert_with(|| RateLimit::new(UNAUTHENTICATED_RATE.0, UNAUTHENTICATED_RATE.1))
        .take()
}

fn rate_limited() -> Response {
    error_response(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "too many requests; slow down",
    )
}

async fn limit_unauthenticated(
    State(st): State<Arc<ApiState>>,
    req: Request,
    next: Next,
) -> Response {
    if !take_unauthenticated(&st, peer_of(&req)) {
        return rate_limited();
    }
    next.run(req).await
}

/// Checks the token first; a valid one draws on the token holders' bucket, a missing or wrong
/// one on the peer's own.
async fn authorize(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .as_bytes();
    let valid = !presented.is_empty() && bool::from(presented.ct_eq(st.token.as_slice()));
    if !valid {
        if !take_unauthenticated(&st, peer_of(&req)) {
            return rate_limited();
        }
        return error_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        );
    }
    let allowed = st.authorized.lock().map(|mut r| r.take()).unwrap_or(false);
    if !allowed {
        return rate_limited();
    }
    next.run(req).await
}

/// The API token: from `token_file` (must be private), or generated once into
/// `<state_dir>/api.token` (0600) for a loopback-only API.
pub fn load_or_create_token(
    token_file: Option<&std::path::Path>,
    state_dir: &std::path::Path,
) -> Result<Zeroizing<Vec<u8>>, crate::files::FileError> {
    let token = match token_file {
        Some(f) => crate::files::load_or_create_token(f, false)?,
        None => {
            crate::files::create_private_dir(state_dir)?;
            crate::files::load_or_create_token(&state_dir.join("api.token"), true)?
        }
    };
    Ok(Zeroizing::new(token.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_a_burst_then_refuses() {
        let mut r = RateLimit::new(1, 3);
        assert!(r.take() && r.take() && r.take());
        assert!(!r.take());
    }

    #[test]
    fn openapi_document_is_valid_json_with_every_path() {
        let v: serde_json::Value = serde_json::from_str(OPENAPI).expect("json");
        for p in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/api/v1/verify",
            "/api/v1/records",
            "/api/v1/status",
            "/api/v1/frame.png",
            "/api/v1/openapi.json",
            "/",
        ] {
            assert!(v["paths"][p].is_object(), "{p}");
        }
    }
}
