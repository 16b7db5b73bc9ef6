//! The reference platform, `yima-gate platform --data DIR`: the central side of `ym-sync/1`
//! (enrollment, bundles, record ingest, online decode) over mutual TLS, and an admin API on
//! loopback for the standard's platform functions that touch terminals. For demos, tests and
//! integration work; sled-backed, one process.
//!
//! **Invariants:** every sync call but enrollment needs a client certificate the platform
//! issued to a terminal it still knows; a record batch is durable before its reply; the admin
//! API needs the admin token (`<data>/admin.token`, 0600) and binds to loopback by default.

pub mod admin;
pub mod ca;
pub mod client;
pub mod db;
pub mod records;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;

use crate::api::server::ConnInfo;
use crate::sync::wire::{
    self, DecodeReply, DecodeRequest, EnrollRequest, EnrollResponse, RecordBatch,
};
use db::{Db, PlatformError, TerminalRecord};

/// Faults the platform can be told to inject into its next record pushes (integration tests
/// of the terminals' sync; `POST /admin/v1/faults`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Commit the batch, then close the connection without a reply.
    DropReplyAfterCommit,
    /// Answer 503 without committing.
    ServerError,
    /// Commit, then hold the reply for 60 s (longer than any client timeout).
    Hang,
    /// Reset the TCP connection before committing.
    Reset,
}

/// Faults armed for the next pushes (one each).
#[derive(Debug, Default)]
pub struct Faults {
    queue: std::sync::Mutex<std::collections::VecDeque<Fault>>,
    pub injected: AtomicU32,
}

impl Faults {
    pub fn arm(&self, faults: &[Fault]) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(faults.iter().copied());
    }

    fn next(&self) -> Option<Fault> {
        let f = self
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        if f.is_some() {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        f
    }

    fn peek(&self) -> Option<Fault> {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .front()
            .copied()
    }
}

/// Shared by every handler.
#[derive(Debug)]
pub struct PlatformState {
    pub db: Db,
    pub faults: Faults,
    pub admin_token: zeroize::Zeroizing<String>,
}

/// Marks a response whose connection must be closed without sending it.
#[derive(Debug, Clone, Copy)]
struct Abort;

fn aborted(resp: &Response) -> bool {
    resp.extensions().get::<Abort>().is_some()
}

/// The TLS handshake of the sync API: the client certificate's fingerprint, when one was
/// offered, is what every call but enrollment is authorised by.
#[derive(Clone)]
struct TlsHandshake {
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<PlatformState>,
}

impl crate::api::server::Handshake for TlsHandshake {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    async fn handshake(
        &self,
        tcp: tokio::net::TcpStream,
        peer: SocketAddr,
    ) -> std::io::Result<(Self::Io, ConnInfo)> {
        if self.state.faults.peek() == Some(Fault::Reset) {
            // SO_LINGER 0: closing the socket sends RST. Linger 0 never blocks on drop.
            #[allow(deprecated)]
            let _ = tcp.set_linger(Some(Duration::ZERO));
        }
        let tls = self.acceptor.accept(tcp).await?;
        let client_cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| crate::sync::tls::fingerprint(c));
        Ok((tls, ConnInfo { peer, client_cert }))
    }
}

/// Bounds of the sync API: enough connections for a fleet of gates, a few per address (a gate
/// uses one or two), so unauthenticated clients holding connections cannot take the slots
/// enrolled gates need.
pub const SYNC_LIMITS: crate::api::server::Limits = crate::api::server::Limits {
    max_connections: 2048,
    max_per_peer: 16,
    handshake: Duration::from_secs(10),
    header_read: Duration::from_secs(15),
    request: Duration::from_secs(120),
    drain: Duration::from_secs(3),
};

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(wire::ErrorBody {
            error: message.to_string(),
        }),
    )
        .into_response()
}

/// A JSON request body whose rejection (wrong content type, syntax, a missing or mistyped
/// field) is a JSON error body like every other answer, not axum's plain text.
pub(crate) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(r) => Err(error(r.status(), &r.body_text())),
        }
    }
}

/// A query string, rejected as JSON like [`JsonBody`].
pub(crate) struct QueryOf<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for QueryOf<T>
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Response> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(QueryOf(v)),
            Err(r) => Err(error(r.status(), &r.body_text())),
        }
    }
}

fn platform_error(e: PlatformError) -> Response {
    match e {
        PlatformError::BadRequest(m) => error(StatusCode::BAD_REQUEST, &m),
        PlatformError::NotFound(m) => error(StatusCode::NOT_FOUND, &m),
        PlatformError::Conflict(m) => error(StatusCode::CONFLICT, &m),
        PlatformError::Forbidden(m) => error(StatusCode::FORBIDDEN, &m),
        PlatformError::Storage(m) => {
            tracing::error!(error = %m, "platform storage");
            error(StatusCode::INTERNAL_SERVER_ERROR, "storage error")
        }
        PlatformError::Internal(m) => {
            tracing::error!(error = %m, "platform internal");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
        PlatformError::Unavailable(m) => {
            tracing::warn!(error = %m, "platform storage unavailable");
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage unavailable; nothing was stored, send again later",
            );
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
            r
        }
    }
}

/// The terminal behind the client certificate, or the answer refusing the call.
fn terminal_of(st: &PlatformState, peer: &ConnInfo) -> Result<TerminalRecord, Box<Response>> {
    let refuse = |status, msg| Err(Box::new(error(status, msg)));
    let Some(fp) = &peer.client_cert else {
        return refuse(StatusCode::UNAUTHORIZED, "client certificate required");
    };
    match st.db.terminal_by_cert(fp) {
        Ok(Some(t)) => Ok(t),
        Ok(None) => refuse(StatusCode::FORBIDDEN, "unknown terminal certificate"),
        Err(e) => Err(Box::new(platform_error(e))),
    }
}

/// The sync API (served over TLS).
pub fn sync_router(state: Arc<PlatformState>) -> Router {
    Router::new()
        .route("/v1/enroll", post(enroll))
        .route("/v1/bundle", get(bundle))
        .route("/v1/records", post(records))
        .route("/v1/decode", post(decode))
        .route(
            "/v1/openapi.json",
            get(|| async { ([("content-type", "application/json")], SYNC_OPENAPI) }),
        )
        .layer(DefaultBodyLimit::max(wire::MAX_BODY))
        .with_state(state)
}

/// The protocol's OpenAPI document.
pub const SYNC_OPENAPI: &str = include_str!("openapi.json");

async fn enroll(
    State(st): State<Arc<PlatformState>>,
    JsonBody(req): JsonBody<EnrollRequest>,
) -> Response {
    let st2 = st.clone();
    let result = tokio::task::spawn_blocking(move || {
        st2.db
            .enroll(&req.token, &req.csr_pem, req.terminal_id.as_deref())
    })
    .await;
    match result {
        Ok(Ok((t, cert_pem))) => {
            tracing::info!(terminal = %t.id, "platform: terminal enrolled");
            Json(EnrollResponse {
                terminal_id: t.id,
                cert_pem,
                ca_pem: st.db.authority.cert_pem.clone(),
                root_key: crate::sync::bundle::root_key_wire(st.db.root_key()),
                platform_time_ms: crate::clock::wall_clock_ms(),
            })
            .into_response()
        }
        Ok(Err(e)) => platform_error(e),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "enrollment failed"),
    }
}

#[derive(Debug, Deserialize)]
struct BundleQuery {
    #[serde(default)]
    since: u64,
}

async fn bundle(
    State(st): State<Arc<PlatformState>>,
    Extension(peer): Extension<ConnInfo>,
    QueryOf(q): QueryOf<BundleQuery>,
) -> Response {
    let t = match terminal_of(&st, &peer) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let st2 = st.clone();
    match tokio::task::spawn_blocking(move || st2.db.bundle(&t, q.since)).await {
        Ok(Ok(b)) => Json(crate::sync::bundle::sign(&b, st.db.root_key())).into_response(),
        Ok(Err(e)) => platform_error(e),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "bundle failed"),
    }
}

async fn records(
    State(st): State<Arc<PlatformState>>,
    Extension(peer): Extension<ConnInfo>,
    JsonBody(batch): JsonBody<RecordBatch>,
) -> Response {
    // Records are taken even from a revoked terminal: what it verified must not be lost.
    let t = match terminal_of(&st, &peer) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let fault = st.faults.next();
    match fault {
        Some(Fault::ServerError) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, "injected fault")
        }
        Some(Fault::Reset) => {
            let mut r = Response::new(Body::empty());
            r.extensions_mut().insert(Abort);
            return r;
        }
        _ => {}
    }
    let st2 = st.clone();
    let result = tokio::task::spawn_blocking(move || st2.db.ingest(&t.id, &batch)).await;
    let reply = match result {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return platform_error(e),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "ingest failed"),
    };
    match fault {
        Some(Fault::DropReplyAfterCommit) => {
            let mut r = Response::new(Body::empty());
            r.extensions_mut().insert(Abort);
            r
        }
        Some(Fault::Hang) => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Json(reply).into_response()
        }
        _ => Json(reply).into_response(),
    }
}

async fn decode(
    State(st): State<Arc<PlatformState>>,
    Extension(peer): Extension<ConnInfo>,
    JsonBody(req): JsonBody<DecodeRequest>,
) -> Response {
    let t = match terminal_of(&st, &peer) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    if !t.authorized {
        return error(StatusCode::FORBIDDEN, "terminal is revoked");
    }
    if req.code.len() > crate::verification::code::MAX_TEXT_LEN * 2 {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "code too long");
    }
    let st2 = st.clone();
    match tokio::task::spawn_blocking(move || st2.db.decode(&req.code)).await {
        Ok(Ok(reason)) => Json(DecodeReply {
            reason,
            message: reason.message().to_string(),
        })
        .into_response(),
        Ok(Err(e)) => platform_error(e),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "decode failed"),
    }
}

/// Where the platform listens and what it calls itself.
#[derive(Debug, Clone)]
pub struct PlatformOptions {
    pub data: PathBuf,
    /// The sync API (TLS).
    pub listen: SocketAddr,
    /// The admin API (plain HTTP; keep it on loopback).
    pub admin_listen: SocketAddr,
    /// Names in the server certificate besides `localhost` and the listen address.
    pub hostnames: Vec<String>,
    /// Where pushed records go: the node's sled database (`None`) or PostgreSQL.
    pub database: Option<records::pg_store::PgOptions>,
}

/// A platform serving on its two ports.
#[derive(Debug)]
pub struct RunningPlatform {
    pub state: Arc<PlatformState>,
    pub sync_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningPlatform {
    /// `https://127.0.0.1:PORT` (or the bound address).
    pub fn sync_url(&self) -> String {
        format!("https://{}", self.sync_addr)
    }

    /// `http://` on loopback, `https://` (the platform's certificate) anywhere else.
    pub fn admin_url(&self) -> String {
        let scheme = if self.admin_addr.ip().is_loopback() {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}", self.admin_addr)
    }

    /// Stops accepting and ends the serving tasks.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

fn load_or_create_admin_token(data: &Path) -> anyhow::Result<zeroize::Zeroizing<String>> {
    Ok(crate::files::load_or_create_token(
        &data.join("admin.token"),
        true,
    )?)
}

/// Opens the platform's state and starts serving (inside a tokio runtime).
pub async fn start(opts: PlatformOptions) -> anyhow::Result<RunningPlatform> {
    crate::sync::tls::install_provider();
    let data = opts.data.clone();
    let database = opts.database.clone();
    let db = tokio::task::spawn_blocking(move || Db::open_with(&data, database.as_ref()))
        .await?
        .with_context(|| format!("opening the platform data in {}", opts.data.display()))?;
    let admin_token = load_or_create_admin_token(&opts.data)?;
    let sync_listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("binding the sync API to {}", opts.listen))?;
    let admin_listener = tokio::net::TcpListener::bind(opts.admin_listen)
        .await
        .with_context(|| format!("binding the admin API to {}", opts.admin_listen))?;
    let sync_addr = sync_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let mut names = vec!["localhost".to_string(), sync_addr.ip().to_string()];
    names.extend(opts.hostnames.iter().cloned());
    if !sync_addr.ip().is_loopback() {
        names.push("127.0.0.1".into());
    }
    let (chain, key) = db.authority.server_cert(&names)?;
    let tls = crate::platform::ca::server_config(&chain, &key, &db.authority.cert_pem)?;

    let state = Arc::new(PlatformState {
        db,
        faults: Faults::default(),
        admin_token,
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let handshake = TlsHandshake {
        acceptor: tokio_rustls::TlsAcceptor::from(tls),
        state: state.clone(),
    };
    let sync_task = tokio::spawn(crate::api::server::serve(
        sync_listener,
        handshake.clone(),
        sync_router(state.clone()),
        SYNC_LIMITS,
        Some(aborted),
        until_stopped(stopped.clone()),
    ));
    let admin = admin::router(state.clone());
    let admin_limits = crate::api::server::Limits::default();
    // The admin API answers over plain HTTP on loopback only; bound anywhere else it is served
    // over TLS with the platform's certificate (the token must never cross a network in clear).
    let admin_task = if admin_addr.ip().is_loopback() {
        tokio::spawn(crate::api::server::serve(
            admin_listener,
            crate::api::server::Plain,
            admin,
            admin_limits,
            None,
            until_stopped(stopped),
        ))
    } else {
        tracing::info!(%admin_addr, "platform: admin API not on loopback: served over TLS");
        tokio::spawn(crate::api::server::serve(
            admin_listener,
            handshake,
            admin,
            admin_limits,
            None,
            until_stopped(stopped),
        ))
    };
    tracing::info!(%sync_addr, %admin_addr, "platform: serving");
    Ok(RunningPlatform {
        state,
        sync_addr,
        admin_addr,
        stop,
        tasks: vec![sync_task, admin_task],
    })
}

/// `yima-gate platform`: serves until SIGTERM/SIGINT.
pub fn run(opts: PlatformOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("platform")
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let running = start(opts.clone()).await?;
        println!(
            "platform: sync API {} (CA fingerprint {}), admin API {} (token in {})",
            running.sync_url(),
            running.state.db.authority.fingerprint()?,
            running.admin_url(),
            opts.data.join("admin.token").display()
        );
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        running.shutdown().await;
        anyhow::Ok(())
    })
}
