//! The local HTTP API (axum on hyper) and the technician's status page: health, readiness,
//! Prometheus metrics, verify, records, status, the OpenAPI document.
//!
//! **Invariants:** everything but `/healthz` and `/readyz` needs the bearer token (compared in
//! constant time); request bodies are bounded (8 MiB for images, 4 KiB for JSON) and requests
//! rate-limited (429); error bodies never carry internal details or personal data.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::checkpoint::Checkpoint;
use crate::clock::Clock;
use crate::decode::Decoder;
use crate::telemetry::Counters;
use crate::verification::verdict::Reason;

const OPENAPI: &str = include_str!("openapi.json");
const STATUS_PAGE: &str = include_str!("status.html");
/// Largest image accepted by `POST /api/v1/verify`.
pub const MAX_IMAGE_BODY: usize = 8 * 1024 * 1024;
/// Largest JSON body accepted.
pub const MAX_JSON_BODY: usize = 4 * 1024;
/// Most records in one page.
pub const MAX_PAGE: usize = 500;

/// A token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Debug)]
pub struct RateLimit {
    tokens: f64,
    burst: f64,
    per_second: f64,
    last: Instant,
}

impl RateLimit {
    pub fn new(burst: u32, per_second: u32) -> RateLimit {
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
    pub clock: Arc<dyn Clock>,
    pub counters: Arc<Counters>,
    pub ready: Arc<AtomicBool>,
    pub token: Zeroizing<Vec<u8>>,
    pub rate: Mutex<RateLimit>,
    /// The platform sync client, when the gate is enrolled.
    pub syncer: Option<Arc<crate::sync::Syncer>>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("terminal", &self.terminal)
            .finish_non_exhaustive()
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// The router; state is shared with the pipeline.
pub fn router(state: Arc<ApiState>) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route(
            "/api/v1/verify",
            post(verify).layer(DefaultBodyLimit::max(MAX_IMAGE_BODY)),
        )
        .route("/api/v1/records", get(records))
        .route("/api/v1/status", get(status))
        .route("/api/v1/frame.png", get(frame_thumbnail))
        .route("/api/v1/openapi.json", get(openapi))
        .layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/", get(|| async { Html(STATUS_PAGE) }))
        .merge(protected)
        .layer(middleware::from_fn_with_state(state.clone(), rate_limit))
        .with_state(state)
}

async fn rate_limit(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let allowed = st.rate.lock().map(|mut r| r.take()).unwrap_or(false);
    if !allowed {
        return error(StatusCode::TOO_MANY_REQUESTS, "rate limited");
    }
    next.run(req).await
}

async fn authorize(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .as_bytes();
    if presented.is_empty() || !bool::from(presented.ct_eq(st.token.as_slice())) {
        return error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
    }
    next.run(req).await
}

/// The last camera frame, shrunk (404 until a camera or file source has delivered one).
async fn frame_thumbnail(State(st): State<Arc<ApiState>>) -> Response {
    let thumb = st.counters.thumbnail.lock().ok().and_then(|t| t.clone());
    match thumb {
        Some(t) => (
            [
                (header::CONTENT_TYPE, "image/png"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            t.png,
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, "no frame yet"),
    }
}

async fn readyz(State(st): State<Arc<ApiState>>) -> Response {
    if st.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

#[derive(Debug, Deserialize)]
struct VerifyBody {
    code: String,
}

async fn verify(State(st): State<Arc<ApiState>>, headers: HeaderMap, body: Bytes) -> Response {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let text = if ctype.starts_with("image/") {
        let decoded = tokio::task::spawn_blocking(move || -> Result<Option<String>, String> {
            let img = crate::capture::image::load_gray_bytes(&body).map_err(|e| e.to_string())?;
            Ok(Decoder::default()
                .decode(&img)
                .into_iter()
                .next()
                .map(|d| d.text))
        })
        .await;
        match decoded {
            Ok(Ok(Some(t))) => t,
            Ok(Ok(None)) => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "no QR code found in the image",
                )
            }
            Ok(Err(_)) => {
                return error(StatusCode::BAD_REQUEST, "the body is not a readable image")
            }
            Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "decoder failed"),
        }
    } else {
        if body.len() > MAX_JSON_BODY {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "JSON body too large");
        }
        match serde_json::from_slice::<VerifyBody>(&body) {
            Ok(b) => b.code,
            Err(_) => return error(StatusCode::BAD_REQUEST, "expected {\"code\": \"YM1:…\"}"),
        }
    };
    let cp = st.checkpoint.clone();
    let syncer = st.syncer.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let online = syncer.and_then(|s| s.online_answer(&text));
        cp.check_with_online(&text, online)
    })
    .await;
    match checked {
        Ok(Ok(checked)) => {
            st.counters.verdict(&checked);
            // Unrecorded: the terminal cannot take more records (503, the verdict beside it).
            let status = if checked.record.is_some() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, Json(checked.report())).into_response()
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "api: verification could not be recorded");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store is unavailable; nothing was accepted",
            )
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "verification failed"),
    }
}

#[derive(Debug, Deserialize)]
struct RecordQuery {
    from_seq: Option<u64>,
    limit: Option<usize>,
    reason: Option<String>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
}

async fn records(State(st): State<Arc<ApiState>>, Query(q): Query<RecordQuery>) -> Response {
    let reason = match q.reason.as_deref().map(Reason::from_code) {
        Some(None) => return error(StatusCode::BAD_REQUEST, "unknown reason code"),
        Some(Some(r)) => Some(r),
        None => None,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let cp = st.checkpoint.clone();
    let page = tokio::task::spawn_blocking(move || {
        // Scan forward from `from_seq`, keeping matches, reading at most a bounded window.
        let mut out = Vec::new();
        let mut next = q.from_seq.unwrap_or(0);
        let mut scanned = 0usize;
        while out.len() < limit && scanned < 20 * MAX_PAGE {
            let chunk = cp.records_from(next, MAX_PAGE)?;
            if chunk.is_empty() {
                return Ok::<_, crate::store::StoreError>((out, None));
            }
            for r in chunk {
                scanned += 1;
                next = r.seq + 1;
                let keep = reason.is_none_or(|want| r.reason == want)
                    && q.since_ms.is_none_or(|s| r.at_ms >= s)
                    && q.until_ms.is_none_or(|u| r.at_ms < u);
                if keep {
                    out.push(r);
                    if out.len() == limit {
                        break;
                    }
                }
            }
        }
        Ok((out, Some(next)))
    })
    .await;
    match page {
        Ok(Ok((records, next))) => Json(serde_json::json!({
            "records": records,
            "next_from_seq": next,
        }))
        .into_response(),
        _ => error(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable"),
    }
}

async fn status(State(st): State<Arc<ApiState>>) -> Response {
    let c = &st.counters;
    let store = st.checkpoint.status();
    let trust = st.checkpoint.trust();
    let by_reason: BTreeMap<&str, u64> = Reason::ALL
        .iter()
        .zip(c.by_reason.iter())
        .map(|(r, n)| (r.code(), n.load(Ordering::Relaxed)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let recent = c
        .recent
        .lock()
        .map(|r| r.iter().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    let now = st.clock.now();
    let sync = sync_summary(&st, now.unix_ms);
    Json(serde_json::json!({
        "terminal": st.terminal,
        "ready": st.ready.load(Ordering::SeqCst),
        "clock": { "trusted": now.trusted, "now_ms": now.unix_ms, "floor_ms": store.clock_floor_ms },
        "store": store,
        "trust": {
            "keys": trust.keys.len(),
            "static_codes": trust.statuses.len(),
            "refresh_s": trust.settings.refresh_s(),
            "skew_s": trust.settings.skew_s(),
            "source": if st.syncer.is_some() { "platform bundle" } else { "local files" },
        },
        "sync": sync,
        "counters": {
            "frames": c.frames.load(Ordering::Relaxed),
            "frames_dropped": c.frames_dropped.load(Ordering::Relaxed),
            "decoded": c.decoded.load(Ordering::Relaxed),
            "presentations": c.presentations.load(Ordering::Relaxed),
            "verified": c.verified.load(Ordering::Relaxed),
            "accepted": c.accepted.load(Ordering::Relaxed),
            "by_reason": by_reason,
        },
        "recent": recent,
    }))
    .into_response()
}

/// The sync section of the status: `null` when the gate is not enrolled.
fn sync_summary(st: &ApiState, now_ms: i64) -> serde_json::Value {
    let Some(syncer) = &st.syncer else {
        return serde_json::Value::Null;
    };
    let s = &syncer.status;
    let ms = |a: &std::sync::atomic::AtomicI64| {
        let v = a.load(Ordering::Relaxed);
        (v != 0).then_some(v)
    };
    let issued = ms(&s.bundle_issued_at_ms);
    let until = ms(&s.policy_valid_until_ms);
    let outbox = st.checkpoint.outbox();
    serde_json::json!({
        "terminal": syncer.terminal_id(),
        "last_pull_ok_ms": ms(&s.last_pull_ok_ms),
        "last_push_ok_ms": ms(&s.last_push_ok_ms),
        "bundle_issued_at_ms": issued,
        "policy_age_ms": issued.map(|i| now_ms - i),
        "policy_valid_until_ms": until,
        "policy_stale": until.is_some_and(|u| now_ms > u),
        "backlog": outbox.backlog(),
        "oldest_unsynced_ms": outbox.oldest_unsynced_ms().ok().flatten(),
        "records_pushed": s.records_pushed.load(Ordering::Relaxed),
        "conflicts": s.conflicts.load(Ordering::Relaxed),
        "bundles_refused": s.bundles_refused.load(Ordering::Relaxed),
        "last_error": s.last_error(),
    })
}

async fn metrics(State(st): State<Arc<ApiState>>) -> Response {
    use std::fmt::Write;
    let c = &st.counters;
    let store = st.checkpoint.status();
    let outbox = st.checkpoint.outbox();
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    };
    counter(
        "yima_frames_total",
        "Frames captured.",
        c.frames.load(Ordering::Relaxed),
    );
    counter(
        "yima_frames_dropped_total",
        "Frames replaced by a newer one before decoding.",
        c.frames_dropped.load(Ordering::Relaxed),
    );
    counter(
        "yima_decoded_total",
        "Code texts decoded from frames.",
        c.decoded.load(Ordering::Relaxed),
    );
    counter(
        "yima_presentations_total",
        "Codes presented (consecutive sightings count once).",
        c.presentations.load(Ordering::Relaxed),
    );
    let _ = writeln!(out, "# HELP yima_verdicts_total Durable verifications by reason.\n# TYPE yima_verdicts_total counter");
    for (r, n) in Reason::ALL.iter().zip(c.by_reason.iter()) {
        let _ = writeln!(
            out,
            "yima_verdicts_total{{reason=\"{}\"}} {}",
            r.code(),
            n.load(Ordering::Relaxed)
        );
    }
    let mut gauge = |name: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    gauge(
        "yima_sync_backlog_records",
        "Verification records waiting for the platform.",
        store.backlog,
    );
    gauge("yima_store_bytes", "Store size on disk.", store.bytes);
    gauge(
        "yima_store_durable_seq",
        "Highest durable sequence number.",
        store.durable_seq,
    );
    gauge("yima_replay_tags", "Replay tags held.", store.replay_tags);
    gauge(
        "yima_store_commit_rounds",
        "Flush + fsync rounds since start.",
        store.commit_rounds,
    );
    gauge(
        "yima_clock_trusted",
        "1 when the terminal vouches for its clock.",
        u64::from(st.clock.now().trusted),
    );
    gauge(
        "yima_ready",
        "1 when the pipeline verifies and records.",
        u64::from(st.ready.load(Ordering::SeqCst)),
    );
    let now_ms = st.clock.now().unix_ms;
    if let Some(syncer) = &st.syncer {
        let s = &syncer.status;
        let secs = |v: i64| u64::try_from(v / 1000).unwrap_or(0);
        let oldest = outbox.oldest_unsynced_ms().ok().flatten();
        gauge(
            "yima_sync_oldest_record_age_seconds",
            "Age of the oldest record waiting for the platform.",
            oldest.map_or(0, |o| secs(now_ms - o)),
        );
        gauge(
            "yima_sync_last_pull_timestamp_seconds",
            "Last successful bundle pull.",
            secs(s.last_pull_ok_ms.load(Ordering::Relaxed)),
        );
        gauge(
            "yima_sync_last_push_timestamp_seconds",
            "Last successful record push.",
            secs(s.last_push_ok_ms.load(Ordering::Relaxed)),
        );
        let issued = s.bundle_issued_at_ms.load(Ordering::Relaxed);
        gauge(
            "yima_policy_age_seconds",
            "Age of the policy bundle in force (keys, status list, settings).",
            if issued == 0 {
                0
            } else {
                secs(now_ms - issued)
            },
        );
        gauge(
            "yima_policy_stale",
            "1 when the policy is older than the platform's maximum offline age (fail closed).",
            u64::from(issued != 0 && now_ms > s.policy_valid_until_ms.load(Ordering::Relaxed)),
        );
        gauge(
            "yima_sync_records_pushed",
            "Records the platform confirmed since start.",
            s.records_pushed.load(Ordering::Relaxed),
        );
        gauge(
            "yima_sync_conflicts",
            "Batches the platform refused as conflicting (409).",
            s.conflicts.load(Ordering::Relaxed),
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The API token: from `token_file` (must be 0600), or generated once into
/// `<state_dir>/api.token` (0600) for a loopback-only API.
pub fn load_or_create_token(
    token_file: Option<&std::path::Path>,
    state_dir: &std::path::Path,
) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    if let Some(f) = token_file {
        return Ok(crate::files::read_secret(f)?);
    }
    let path = state_dir.join("api.token");
    if path.exists() {
        return Ok(crate::files::read_secret(&path)?);
    }
    let mut raw = [0u8; 24];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
    let token = crate::verification::keys::b64_encode(&raw);
    std::fs::create_dir_all(state_dir)?;
    crate::files::write_durable(&path, token.as_bytes(), 0o600)?;
    tracing::info!(path = %path.display(), "api: generated a token");
    Ok(Zeroizing::new(token.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_a_burst_then_refuses() {
        let mut r = RateLimit::new(3, 1);
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
        ] {
            assert!(v["paths"][p].is_object(), "{p}");
        }
    }
}
