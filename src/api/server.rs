//! The HTTP/1.1 accept loop the gate API and the reference platform share (hyper directly,
//! not `axum::serve`, which has no header-read timeout and no connection bounds): a cap on
//! open connections and on connections per peer address, a handshake timeout for the
//! connection setup (TLS on the platform), a header-read timeout that also closes idle
//! keep-alive connections, a whole-request timeout, and a graceful drain bounded in time.
//!
//! **Invariant:** whatever a client does — open connections and send nothing, send headers one
//! byte a minute, upload slowly, hang up mid-request — it holds at most
//! [`Limits::max_per_peer`] of the [`Limits::max_connections`] slots, each for at most the
//! timeouts below, and work for a request whose client hung up is dropped with its future.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// Bounds of one server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Connections one peer address may hold at once; more are closed at accept.
    pub max_per_peer: usize,
    /// Connection setup (the TLS handshake) must finish within this.
    pub handshake: Duration,
    /// A request's headers must arrive within this — including the wait for the next request
    /// on a kept-alive connection, so an idle connection is closed after it.
    pub header_read: Duration,
    /// A whole request, body included, must be answered within this (408 otherwise).
    pub request: Duration,
    /// On shutdown, connections finishing a request get this long.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            max_per_peer: 32,
            handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(15),
            request: Duration::from_secs(30),
            drain: Duration::from_secs(3),
        }
    }
}

/// What a connection's setup learned, handed to every request on it as an extension.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// SHA-256 fingerprint of the client certificate (platform, mutual TLS).
    pub client_cert: Option<String>,
}

/// A connection's setup: nothing for plain HTTP, the TLS handshake for the platform.
pub trait Handshake: Clone + Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn handshake(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> impl Future<Output = std::io::Result<(Self::Io, ConnInfo)>> + Send;
}

/// Plain HTTP (the gate's local API; the platform's admin API on loopback).
#[derive(Debug, Clone, Copy)]
pub struct Plain;

impl Handshake for Plain {
    type Io = TcpStream;
    async fn handshake(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> std::io::Result<(TcpStream, ConnInfo)> {
        Ok((
            tcp,
            ConnInfo {
                peer,
                client_cert: None,
            },
        ))
    }
}

/// Connections per peer address.
#[derive(Debug, Default)]
struct PerPeer(Mutex<HashMap<IpAddr, usize>>);

/// One peer's connection slot, released on drop.
struct PeerSlot(Arc<PerPeer>, IpAddr);

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut m = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

impl PerPeer {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PeerSlot(self.clone(), ip))
    }
}

/// A response hook: lets a router ask for the connection to be cut instead of answered (the
/// platform's fault injection). Return `true` to drop the reply.
pub type Abort = fn(&axum::http::Response<Body>) -> bool;

/// Serves `router` on `listener` until `shutdown` resolves, within `limits`.
pub async fn serve<H: Handshake>(
    listener: TcpListener,
    handshake: H,
    router: Router,
    limits: Limits,
    abort: Option<Abort>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let per_peer = Arc::new(PerPeer::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p,
            _ = &mut shutdown => break,
        };
        let Ok(permit) = permit else {
            break;
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: wait a little rather than spin.
                    tracing::warn!(error = %e, "http: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some(peer_slot) = per_peer.take(peer.ip(), limits.max_per_peer) else {
            tracing::debug!(%peer, "http: too many connections from one peer; closed");
            continue;
        };
        while tasks.try_join_next().is_some() {}
        let handshake = handshake.clone();
        let router = router.clone();
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            let _slots = (permit, peer_slot);
            let Ok(Ok((io, info))) =
                tokio::time::timeout(limits.handshake, handshake.handshake(tcp, peer)).await
            else {
                return;
            };
            let service = hyper::service::service_fn(
                move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(info.clone());
                    let mut router = router.clone();
                    async move {
                        let call = tower_service::Service::call(&mut router, req.map(Body::new));
                        let resp = match tokio::time::timeout(limits.request, call).await {
                            Ok(r) => r.unwrap_or_else(|e| match e {}),
                            Err(_) => crate::api::error_response(
                                axum::http::StatusCode::REQUEST_TIMEOUT,
                                "request_timeout",
                                "the request took too long",
                            ),
                        };
                        if abort.is_some_and(|a| a(&resp)) {
                            return Err(std::io::Error::other("reply dropped on purpose"));
                        }
                        Ok::<_, std::io::Error>(resp)
                    }
                },
            );
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read)
                .max_buf_size(64 * 1024);
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(limits.drain, conn).await;
                }
            }
        });
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(limits.drain + Duration::from_millis(500), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(limits: Limits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, Plain, router, limits, None, async {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    async fn get(addr: SocketAddr) -> std::io::Result<String> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
            .await
            .map_err(|_| std::io::Error::other("timed out"))??;
        Ok(out)
    }

    #[tokio::test]
    async fn idle_and_half_sent_connections_are_closed_and_cannot_starve_others() {
        let limits = Limits {
            max_connections: 8,
            max_per_peer: 4,
            header_read: Duration::from_millis(300),
            ..Limits::default()
        };
        let (addr, _stop) = start(limits).await;
        // Four idle connections and one half-sent request take this peer's slots...
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(TcpStream::connect(addr).await.expect("connect"));
        }
        idle[0]
            .write_all(b"GET / HTTP/1.1\r\nHo")
            .await
            .expect("half");
        // ...so a fifth connection from the same address is closed at once,
        let mut extra = TcpStream::connect(addr).await.expect("connect");
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf))
            .await
            .expect("closed promptly")
            .unwrap_or(0);
        assert_eq!(n, 0, "refused while the peer holds its slots");
        // and once the header-read timeout has closed the idle ones, requests are served.
        for c in &mut idle {
            let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf))
                .await
                .expect("idle connection closed by the server")
                .unwrap_or(0);
            assert!(n <= 1);
        }
        let reply = get(addr).await.expect("served");
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
}
