//! The API's request handlers: verify (a code text or an image), records, the last frame and
//! the OpenAPI document; and the HTTP form of a record, separate from the stored one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{error_response, ApiState, MAX_JSON_BODY, MAX_PAGE};
use crate::decode::{Decoder, DecoderConfig};
use crate::verification::keys::Alg;
use crate::verification::record::Record;
use crate::verification::verdict::{CodeKind, Reason};

/// Bytes of decoder memory all image uploads may hold at once: an upload of `w×h` pixels
/// holds up to [`BYTES_PER_PIXEL`]`·w·h` while it is decoded (the format's own buffer, up to
/// RGBA; the grayscale frame; the cascade's working copies). An upload larger than the whole
/// budget is refused (413); smaller ones wait for room, so that whatever is uploaded the
/// daemon's memory stays within this much over its idle figure.
pub const PIXEL_BUDGET_BYTES: u64 = 192 * 1024 * 1024;
/// Decoder bytes held per uploaded pixel (see [`PIXEL_BUDGET_BYTES`]).
pub const BYTES_PER_PIXEL: u64 = 7;
/// The budget's unit (semaphore permits), bytes.
const PIXEL_UNIT: u64 = 64 * 1024;
pub(super) const PIXEL_BUDGET_UNITS: usize = (PIXEL_BUDGET_BYTES / PIXEL_UNIT) as usize;

/// A record as the API shows it (the stored form is the store's business).
#[derive(Debug, Clone, Serialize)]
pub struct RecordEntry {
    pub seq: u64,
    pub at_ms: i64,
    pub clock_trusted: bool,
    pub reason: Reason,
    pub message: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub online_reason: Option<Reason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<CodeKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scene: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alg: Option<Alg>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Keyed hash of the code id: joins the records of one code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_ref: Option<String>,
    /// Keyed hash of the subject: joins the records of one holder, reveals nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_ref: Option<String>,
}

impl From<&Record> for RecordEntry {
    fn from(r: &Record) -> RecordEntry {
        RecordEntry {
            seq: r.seq,
            at_ms: r.at_ms,
            clock_trusted: r.clock_trusted,
            reason: r.reason,
            message: r.reason.message(),
            online_reason: r.online_reason,
            kind: r.kind,
            service: r.service.clone(),
            scene: r.scene.clone(),
            alg: r.alg,
            kid: r.kid.clone(),
            issuer: r.issuer.clone(),
            code_ref: r.cti_hash.clone(),
            subject_ref: r.sub_hash.clone(),
        }
    }
}

/// The last camera frame, shrunk (404 until a camera or file source has delivered one).
pub(super) async fn frame_thumbnail(State(st): State<Arc<ApiState>>) -> Response {
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
        None => error_response(StatusCode::NOT_FOUND, "no_frame", "no frame yet"),
    }
}

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], super::OPENAPI).into_response()
}

#[derive(Debug, Deserialize)]
struct VerifyBody {
    code: String,
}

/// Sets its flag when dropped: the request future is gone (client hung up, timeout), so the
/// decode running for it on a blocking thread stops at its next stage.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Reads the first code in an uploaded image within the pixel budget.
async fn code_in_image(st: &ApiState, body: Bytes) -> Result<String, Response> {
    let bad = || {
        error_response(
            StatusCode::BAD_REQUEST,
            "bad_image",
            "the body is not a readable image",
        )
    };
    let (w, h) = image::ImageReader::new(std::io::Cursor::new(&body))
        .with_guessed_format()
        .ok()
        .and_then(|r| r.into_dimensions().ok())
        .ok_or_else(bad)?;
    let bytes = u64::from(w) * u64::from(h) * BYTES_PER_PIXEL;
    let units = bytes.div_ceil(PIXEL_UNIT).max(1);
    if units > PIXEL_BUDGET_UNITS as u64 {
        return Err(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "image_too_large",
            "the image has too many pixels to decode",
        ));
    }
    let permit = st
        .pixels
        .clone()
        .acquire_many_owned(units as u32)
        .await
        .map_err(|_| error_response(StatusCode::SERVICE_UNAVAILABLE, "stopping", "stopping"))?;
    let cancelled = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(cancelled.clone());
    let decoded = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let img = crate::capture::image::load_gray_bytes(&body).ok()?;
        Some(
            Decoder::new(DecoderConfig::default())
                .decode_until(&img, &|| cancelled.load(Ordering::Relaxed))
                .into_iter()
                .next()
                .map(|d| d.text),
        )
    })
    .await;
    match decoded {
        Ok(Some(Some(t))) => Ok(t),
        Ok(Some(None)) => Err(error_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_code",
            "no code found in the image",
        )),
        Ok(None) => Err(bad()),
        Err(_) => Err(error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "decoding failed",
        )),
    }
}

pub(super) async fn verify(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "body over 8 MiB",
            )
        }
        Err(_) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the body could not be read",
            )
        }
    };
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let text = if ctype.starts_with("image/") {
        match code_in_image(&st, body).await {
            Ok(t) => t,
            Err(r) => return r,
        }
    } else {
        if body.len() > MAX_JSON_BODY {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "JSON body too large",
            );
        }
        match serde_json::from_slice::<VerifyBody>(&body) {
            Ok(b) => b.code,
            Err(_) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "expected {\"code\": \"YM1:…\"}",
                )
            }
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
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the store is unavailable; nothing was accepted",
            )
        }
        Err(_) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "verification failed",
        ),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct RecordQuery {
    from_seq: Option<u64>,
    limit: Option<usize>,
    reason: Option<String>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
}

pub(super) async fn records(
    State(st): State<Arc<ApiState>>,
    query: Result<Query<RecordQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "query parameters: from_seq, limit, since_ms, until_ms (integers), reason (a reason code)",
        );
    };
    let reason = match q.reason.as_deref().map(Reason::from_code) {
        Some(None) => {
            return error_response(StatusCode::BAD_REQUEST, "bad_query", "unknown reason code")
        }
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
                return Ok::<_, crate::checkpoint::StoreError>((out, None));
            }
            for r in chunk {
                scanned += 1;
                next = r.seq + 1;
                let keep = reason.is_none_or(|want| r.reason == want)
                    && q.since_ms.is_none_or(|s| r.at_ms >= s)
                    && q.until_ms.is_none_or(|u| r.at_ms < u);
                if keep {
                    out.push(RecordEntry::from(&r));
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
        _ => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store is unavailable",
        ),
    }
}
