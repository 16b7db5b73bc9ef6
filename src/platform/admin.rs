//! The reference platform's admin API (JSON over HTTP, admin bearer token): keys and rotation,
//! services and emergency stop, dynamic codes (生码/亮码), static codes (register, apply, enable,
//! disable, report lost, change info, replace, cancel, query), terminals (authorize, revoke),
//! settings, records and the dashboard statistics.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use subtle::ConstantTimeEq;

use super::db::{PlatformError, StaticView};
use super::{error, platform_error, Fault, JsonBody, PlatformState, QueryOf};
use crate::decode::Symbology;
use crate::sync::wire::PlatformSettings;
use crate::verification::keys::Alg;
use crate::verification::trust::StaticState;
use crate::verification::verdict::{AccessMode, CodeKind};

/// This API's OpenAPI document (served at `/admin/v1/openapi.json`).
pub const ADMIN_OPENAPI: &str = include_str!("admin-openapi.json");

pub fn router(state: Arc<PlatformState>) -> Router {
    Router::new()
        .route("/admin/v1/keys", get(list_keys).post(create_key))
        .route("/admin/v1/keys/rotate", post(rotate_key))
        .route("/admin/v1/keys/{kid}/retire", post(retire_key))
        .route(
            "/admin/v1/services",
            get(list_services).post(register_service),
        )
        .route("/admin/v1/services/{code}/stop", post(stop_service))
        .route("/admin/v1/services/{code}/resume", post(resume_service))
        .route("/admin/v1/codes/dynamic", post(mint_dynamic))
        .route("/admin/v1/static", post(register_static))
        .route("/admin/v1/static/{cat}/{sn}", get(query_static))
        .route("/admin/v1/static/{cat}/{sn}/{action}", post(static_action))
        .route(
            "/admin/v1/terminals",
            get(list_terminals).post(create_terminal),
        )
        .route("/admin/v1/terminals/{id}/revoke", post(revoke_terminal))
        .route("/admin/v1/terminals/{id}/token", post(reissue_token))
        .route("/admin/v1/audit", get(audit))
        .route(
            "/admin/v1/terminals/{id}/authorize",
            post(authorize_terminal),
        )
        .route("/admin/v1/settings", get(get_settings).put(put_settings))
        .route("/admin/v1/records", get(records))
        .route("/admin/v1/stats", get(stats))
        .route("/admin/v1/faults", post(faults))
        .route(
            "/admin/v1/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], ADMIN_OPENAPI) }),
        )
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        // Load balancers and probes ask without the token.
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// 200 when this node can store what it is sent, 503 (with the reason) when its database
/// cannot be reached.
async fn readyz(State(st): State<Arc<PlatformState>>) -> Response {
    match tokio::task::spawn_blocking(move || st.db.ready()).await {
        Ok(Ok(())) => Json(serde_json::json!({ "ready": true })).into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "ready": false, "reason": e.to_string() })),
        )
            .into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}

async fn authorize(State(st): State<Arc<PlatformState>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !bool::from(given.as_bytes().ct_eq(st.admin_token.as_bytes())) {
        return error(StatusCode::UNAUTHORIZED, "admin token required");
    }
    next.run(req).await
}

/// Runs a blocking database call off the async workers and renders its result.
async fn blocking<T, F>(st: &Arc<PlatformState>, f: F) -> Response
where
    T: serde::Serialize + Send + 'static,
    F: FnOnce(&PlatformState) -> Result<T, PlatformError> + Send + 'static,
{
    let st = st.clone();
    match tokio::task::spawn_blocking(move || f(&st)).await {
        // An operation with nothing to say (a `()` result) answers 204 No Content.
        Ok(Ok(v)) => match serde_json::to_value(v) {
            Ok(Value::Null) => StatusCode::NO_CONTENT.into_response(),
            Ok(v) => Json(v).into_response(),
            Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        },
        Ok(Err(e)) => platform_error(e),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}

#[derive(Debug, Deserialize)]
struct NewKey {
    alg: String,
    kinds: Vec<CodeKind>,
    #[serde(default = "default_days")]
    days: i64,
}

fn default_days() -> i64 {
    365
}

async fn list_keys(State(st): State<Arc<PlatformState>>) -> Response {
    blocking(&st, |s| s.db.list_keys()).await
}

async fn create_key(
    State(st): State<Arc<PlatformState>>,
    JsonBody(k): JsonBody<NewKey>,
) -> Response {
    let alg = match Alg::parse(&k.alg) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    blocking(&st, move |s| {
        s.db.create_key(alg, &k.kinds, k.days)
            .map(|kid| serde_json::json!({ "kid": kid }))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct Rotate {
    kind: CodeKind,
}

async fn rotate_key(
    State(st): State<Arc<PlatformState>>,
    JsonBody(r): JsonBody<Rotate>,
) -> Response {
    blocking(&st, move |s| {
        s.db.rotate_key(r.kind)
            .map(|kid| serde_json::json!({ "kid": kid }))
    })
    .await
}

async fn retire_key(State(st): State<Arc<PlatformState>>, Path(kid): Path<String>) -> Response {
    blocking(&st, move |s| s.db.retire_key(&kid)).await
}

#[derive(Debug, Deserialize)]
struct NewService {
    code: String,
    #[serde(default)]
    name: String,
}

async fn list_services(State(st): State<Arc<PlatformState>>) -> Response {
    blocking(&st, |s| s.db.services()).await
}

async fn register_service(
    State(st): State<Arc<PlatformState>>,
    JsonBody(n): JsonBody<NewService>,
) -> Response {
    blocking(&st, move |s| s.db.register_service(&n.code, &n.name)).await
}

async fn stop_service(State(st): State<Arc<PlatformState>>, Path(code): Path<String>) -> Response {
    blocking(&st, move |s| s.db.set_service_suspended(&code, true)).await
}

async fn resume_service(
    State(st): State<Arc<PlatformState>>,
    Path(code): Path<String>,
) -> Response {
    blocking(&st, move |s| s.db.set_service_suspended(&code, false)).await
}

#[derive(Debug, Deserialize)]
struct MintDynamic {
    user: String,
    service: String,
    #[serde(default)]
    scenes: Option<Vec<String>>,
    #[serde(default)]
    mode: Option<AccessMode>,
    /// Issue time, seconds (default now): lets a demo show an expired code.
    #[serde(default)]
    iat: Option<i64>,
    /// 亮码: also return the code rendered as a PNG in this symbology (`grid_matrix`, the
    /// standard's code system, or `qr`), base64 in `png_base64`.
    #[serde(default)]
    render: Option<Symbology>,
}

async fn mint_dynamic(
    State(st): State<Arc<PlatformState>>,
    JsonBody(m): JsonBody<MintDynamic>,
) -> Response {
    blocking(&st, move |s| {
        let code =
            s.db.mint_dynamic(&m.user, &m.service, m.scenes, m.mode, m.iat)?;
        let Some(symbology) = m.render else {
            return Ok(serde_json::json!({ "code": code }));
        };
        // 6 px a module for Grid Matrix (≥ 3 px, §6.2), 8 for QR: about 600 px either way.
        let img = match symbology {
            Symbology::GridMatrix => crate::render::grid_matrix(&code, 6),
            Symbology::Qr => crate::render::render(&code, 8),
        }
        .map_err(|e| PlatformError::Internal(e.to_string()))?;
        let png =
            crate::render::png_bytes(&img).map_err(|e| PlatformError::Internal(e.to_string()))?;
        Ok(serde_json::json!({
            "code": code,
            "symbology": symbology,
            "png_base64": base64::engine::general_purpose::STANDARD.encode(png),
        }))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct RegisterStatic {
    cat: String,
    sn: String,
    user: String,
    service: String,
}

async fn register_static(
    State(st): State<Arc<PlatformState>>,
    JsonBody(r): JsonBody<RegisterStatic>,
) -> Response {
    blocking(&st, move |s| {
        s.db.register_static(&r.cat, &r.sn, &r.user, &r.service)
            .map(StaticView::from)
    })
    .await
}

async fn query_static(
    State(st): State<Arc<PlatformState>>,
    Path((cat, sn)): Path<(String, String)>,
) -> Response {
    blocking(&st, move |s| {
        s.db.query_static(&cat, &sn).map(StaticView::from)
    })
    .await
}

/// `apply` (申领: the code text), `enable`, `disable`, `lost` (挂失), `change` (信息变更),
/// `replace` (换码), `cancel` (注销).
async fn static_action(
    State(st): State<Arc<PlatformState>>,
    Path((cat, sn, action)): Path<(String, String, String)>,
) -> Response {
    blocking(&st, move |s| {
        let db = &s.db;
        let state = |st: StaticState| {
            db.set_static_state(&cat, &sn, st)
                .map(|r| serde_json::json!(StaticView::from(r)))
        };
        match action.as_str() {
            "apply" => db
                .apply_static(&cat, &sn)
                .map(|code| serde_json::json!({ "code": code })),
            "enable" => state(StaticState::Enabled),
            "disable" => state(StaticState::Disabled),
            "lost" => state(StaticState::Lost),
            "cancel" => state(StaticState::Cancelled),
            "change" | "replace" => db
                .bump_static_version(&cat, &sn)
                .map(|r| serde_json::json!(StaticView::from(r))),
            other => Err(PlatformError::NotFound(format!("action {other}"))),
        }
    })
    .await
}

#[derive(Debug, Deserialize)]
struct NewTerminal {
    id: String,
    #[serde(default)]
    scenes: Vec<String>,
    #[serde(default)]
    accept_unknown_static: bool,
}

async fn list_terminals(State(st): State<Arc<PlatformState>>) -> Response {
    blocking(&st, |s| s.db.terminals()).await
}

async fn create_terminal(
    State(st): State<Arc<PlatformState>>,
    JsonBody(t): JsonBody<NewTerminal>,
) -> Response {
    blocking(&st, move |s| {
        s.db.create_terminal(&t.id, t.scenes, t.accept_unknown_static)
            .map(|token| serde_json::json!({ "terminal_id": t.id, "enrollment_token": token }))
    })
    .await
}

async fn reissue_token(State(st): State<Arc<PlatformState>>, Path(id): Path<String>) -> Response {
    blocking(&st, move |s| {
        s.db.reissue_token(&id)
            .map(|token| serde_json::json!({ "terminal_id": id, "enrollment_token": token }))
    })
    .await
}

/// Audit events, newest first: record gaps (a restored platform), anomalous records.
async fn audit(State(st): State<Arc<PlatformState>>) -> Response {
    blocking(&st, |s| s.db.audit_events(1000)).await
}

async fn revoke_terminal(State(st): State<Arc<PlatformState>>, Path(id): Path<String>) -> Response {
    blocking(&st, move |s| s.db.set_terminal_authorized(&id, false)).await
}

async fn authorize_terminal(
    State(st): State<Arc<PlatformState>>,
    Path(id): Path<String>,
) -> Response {
    blocking(&st, move |s| s.db.set_terminal_authorized(&id, true)).await
}

async fn get_settings(State(st): State<Arc<PlatformState>>) -> Response {
    blocking(&st, |s| s.db.settings()).await
}

async fn put_settings(
    State(st): State<Arc<PlatformState>>,
    JsonBody(settings): JsonBody<PlatformSettings>,
) -> Response {
    blocking(&st, move |s| s.db.set_settings(&settings)).await
}

#[derive(Debug, Deserialize)]
struct RecordsQuery {
    terminal: String,
}

async fn records(
    State(st): State<Arc<PlatformState>>,
    QueryOf(q): QueryOf<RecordsQuery>,
) -> Response {
    blocking(&st, move |s| {
        s.db.records_of(&q.terminal).map(|v| {
            v.into_iter()
                .map(|(store, r)| serde_json::json!({ "store_id": store, "record": r }))
                .collect::<Vec<_>>()
        })
    })
    .await
}

async fn stats(State(st): State<Arc<PlatformState>>) -> Response {
    blocking(&st, |s| s.db.stats()).await
}

async fn faults(
    State(st): State<Arc<PlatformState>>,
    JsonBody(f): JsonBody<Vec<Fault>>,
) -> Response {
    st.faults.arm(&f);
    Json(serde_json::json!({ "armed": f.len() })).into_response()
}
