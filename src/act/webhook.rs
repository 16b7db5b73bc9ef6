//! The business webhook: each verdict the rules route here is POSTed as JSON to the local
//! business system, signed with HMAC-SHA256, with a timeout and retries — from its own thread,
//! so a slow business system never delays the gate.
//!
//! Signature: `X-Yima-Timestamp: <unix ms>` and
//! `X-Yima-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Deliveries that may wait; beyond this the newest is dropped (and counted): the record is
/// durable and synced anyway, the webhook is a convenience for the business system.
const QUEUE: usize = 256;

/// Webhook settings.
#[derive(Clone)]
pub struct WebhookConfig {
    pub url: String,
    pub secret: Zeroizing<Vec<u8>>,
    pub timeout: Duration,
    pub retries: u32,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct WebhookStats {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

/// The delivery thread's handle.
#[derive(Debug)]
pub struct Webhook {
    /// Dropping it finishes what is queued (bounded by timeout × retries each).
    worker: crate::act::worker::Worker<Vec<u8>>,
    pub stats: Arc<WebhookStats>,
}

/// `sha256=<hex>` over `timestamp.body`.
pub fn signature(secret: &[u8], timestamp_ms: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp_ms.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Webhook {
    pub fn start(cfg: WebhookConfig) -> anyhow::Result<Webhook> {
        crate::sync::tls::install_provider();
        let client = reqwest::blocking::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .build()?;
        let stats = Arc::new(WebhookStats::default());
        let st = stats.clone();
        let worker = crate::act::worker::Worker::start("webhook", QUEUE, move |body: Vec<u8>| {
            let counter = if deliver(&client, &cfg, &body) {
                &st.delivered
            } else {
                &st.failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
        })?;
        Ok(Webhook { worker, stats })
    }

    /// Queues one delivery without waiting.
    pub fn send(&self, body: Vec<u8>) {
        if !self.worker.offer(body) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("webhook: {QUEUE} deliveries waiting; this one dropped");
        }
    }
}

fn deliver(client: &reqwest::blocking::Client, cfg: &WebhookConfig, body: &[u8]) -> bool {
    let mut wait = Duration::from_millis(200);
    for attempt in 0..=cfg.retries {
        let ts = crate::clock::wall_clock_ms();
        let result = client
            .post(&cfg.url)
            .header("Content-Type", "application/json")
            .header("X-Yima-Timestamp", ts.to_string())
            .header("X-Yima-Signature", signature(&cfg.secret, ts, body))
            .body(body.to_vec())
            .send();
        match result {
            Ok(r) if r.status().is_success() => return true,
            // A 4xx other than 408/429 will not get better by retrying.
            Ok(r) if r.status().is_client_error() && !matches!(r.status().as_u16(), 408 | 429) => {
                tracing::warn!(status = %r.status(), "webhook: refused by the business system");
                return false;
            }
            Ok(r) => tracing::warn!(status = %r.status(), attempt, "webhook: delivery failed"),
            Err(e) => tracing::warn!(error = %e, attempt, "webhook: delivery failed"),
        }
        if attempt < cfg.retries {
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_of_timestamp_dot_body() {
        // Known answer computed independently:
        // python3 -c "import hmac,hashlib;print(hmac.new(b'secret', b'1700000000000.{}', hashlib.sha256).hexdigest())"
        let sig = signature(b"secret", 1700000000000, b"{}");
        assert_eq!(
            sig,
            "sha256=8399216d111287e3bb28e25c0f4f31dffdf831c68c9ee2b96c2f67c9b81d341b"
        );
        assert_ne!(sig, signature(b"secret", 1700000000001, b"{}"));
        assert_ne!(sig, signature(b"other", 1700000000000, b"{}"));
    }
}
