//! The gateway's side of the platform conversation (`ym-sync/1`): enrollment, policy-bundle
//! pulls, record pushes and online decode, run by one sync thread beside the pipeline.
//!
//! # Design constraints
//! - **Never on the gate's path.** The sync thread only reads durable records and swaps the
//!   trust state; a slow or dead platform changes nothing for a presented code (online decode,
//!   when enabled, is bounded by its own short timeout and then local verification decides).
//! - **Exactly once.** Records go in contiguous batches named `<store_id>:<first>-<last>`; the
//!   platform stores each (terminal, store, seq) once and answers its committed cursor; the store
//!   persists that cursor before deleting what it covers (`store` module doc).
//! - **Fail closed when stale.** The trust state built from a bundle expires `max_offline_s`
//!   after the platform issued it (`policy_stale`); a forged, foreign or older bundle is refused
//!   and changes nothing.
//! - **Bounded backlog.** At `max_backlog` waiting records the checkpoint refuses to verify
//!   (`StoreError::BacklogFull`, shown at the gate); no record is ever dropped to make room.
//! - Retries back off exponentially (1 s → 5 min) with ±20 % jitter, so a thousand gates coming
//!   back after an outage do not arrive in step.

pub mod bundle;
pub mod client;
pub mod enrollment;
pub mod tls;
pub mod wire;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::checkpoint::Checkpoint;
use crate::checkpoint::StoreError;
use crate::verification::keys::VerifyingKey;
use crate::verification::verdict::{CodeKind, Reason};
use bundle::PolicyCache;
pub use client::PlatformClient;
pub use enrollment::{enroll, EnrollToken, Enrollment};
use wire::{RecordBatch, RecordWire};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("platform unreachable: {0}")]
    Transport(String),
    #[error("platform answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("platform refused batch {key} as conflicting with what it holds (409)")]
    Conflict { key: String },
    #[error("platform reply not valid: {0}")]
    Reply(String),
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("enrollment: {0}")]
    Enrollment(String),
}

/// One batch read from the store and encoded, ready to send.
struct PreparedBatch {
    first: u64,
    last: u64,
    key: String,
    body: Vec<u8>,
}

fn prepare_batch(
    store: &crate::checkpoint::Outbox,
    from: u64,
    limit: usize,
) -> Result<Option<PreparedBatch>, SyncError> {
    let records = store.unsynced_from(from, limit)?;
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Ok(None);
    };
    let (first, last) = (first.seq, last.seq);
    let key = RecordBatch::key(store.store_id(), first, last);
    let batch = RecordBatch {
        store_id: store.store_id().to_string(),
        idempotency_key: key.clone(),
        first_seq: first,
        records: records.iter().map(RecordWire::from).collect(),
    };
    let body = serde_json::to_vec(&batch).map_err(|e| SyncError::Reply(e.to_string()))?;
    Ok(Some(PreparedBatch {
        first,
        last,
        key,
        body,
    }))
}

/// What the sync thread tells metrics, the status page and `doctor`. Times are ms since the
/// epoch, 0 = never.
#[derive(Debug, Default)]
pub struct SyncStatus {
    pub last_pull_ok_ms: AtomicI64,
    pub last_push_ok_ms: AtomicI64,
    /// Platform time of the bundle in force.
    pub bundle_issued_at_ms: AtomicI64,
    /// When the bundle in force stops being trusted (`policy_stale` after).
    pub policy_valid_until_ms: AtomicI64,
    pub pulls_failed: AtomicU64,
    pub pushes_failed: AtomicU64,
    pub records_pushed: AtomicU64,
    pub conflicts: AtomicU64,
    /// Times the platform's cursor was behind what this gate had already deleted (a platform
    /// restored from a backup): recorded as an audit event on both sides, then converged.
    pub gaps: AtomicU64,
    /// One batch pushed and confirmed.
    pub push_latency: crate::telemetry::Histogram,
    pub bundles_refused: AtomicU64,
    pub online_asked: AtomicU64,
    pub online_unanswered: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl SyncStatus {
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }
}

/// Tuning of the sync thread.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Records per push (at most [`wire::MAX_BATCH`]).
    pub batch: usize,
    /// Overrides the platform's sync interval (tests, commissioning).
    pub interval: Option<Duration>,
    /// Waiting records at which the gate fails closed (0 = no quota).
    pub max_backlog: u64,
    /// Longest wait for the platform's decode engine before local verification decides.
    pub online_timeout: Duration,
    /// Timeout of pulls and pushes.
    pub request_timeout: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            batch: 1000,
            interval: None,
            max_backlog: 2_000_000,
            online_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_secs(30),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// The sync client of one terminal.
#[derive(Debug)]
pub struct Syncer {
    checkpoint: Arc<Checkpoint>,
    client: PlatformClient,
    enrollment: Enrollment,
    root: VerifyingKey,
    cache: Mutex<Option<PolicyCache>>,
    settings: Mutex<wire::PlatformSettings>,
    pub status: Arc<SyncStatus>,
    opts: SyncOptions,
    stop: Mutex<bool>,
    wake: Condvar,
    stopped: AtomicBool,
}

impl Syncer {
    /// A syncer for `checkpoint`; the policy persisted by an earlier run is checked again
    /// against the pinned root key and put in force at once (the gate works offline from
    /// its first second).
    pub fn new(
        checkpoint: Arc<Checkpoint>,
        enrollment: Enrollment,
        opts: SyncOptions,
    ) -> Result<Syncer, SyncError> {
        let root = enrollment.root()?;
        let client = PlatformClient::new(&enrollment, opts.request_timeout)?;
        checkpoint.set_backlog_limit(opts.max_backlog);
        let syncer = Syncer {
            checkpoint,
            client,
            enrollment,
            root,
            cache: Mutex::new(None),
            settings: Mutex::new(wire::PlatformSettings::default()),
            status: Arc::new(SyncStatus::default()),
            opts,
            stop: Mutex::new(false),
            wake: Condvar::new(),
            stopped: AtomicBool::new(false),
        };
        if let Some(bytes) = syncer.checkpoint.outbox()?.load_policy()? {
            match serde_json::from_slice::<PolicyCache>(&bytes)
                .map_err(|e| bundle::BundleError::Malformed(e.to_string()))
                .and_then(|c| bundle::reload(c, &syncer.root))
            {
                Ok(applied) => syncer.put_in_force(applied),
                Err(e) => {
                    tracing::error!(error = %e, "sync: stored policy refused; waiting for the platform")
                }
            }
        }
        Ok(syncer)
    }

    pub fn terminal_id(&self) -> &str {
        &self.enrollment.terminal_id
    }

    fn put_in_force(&self, applied: bundle::Applied) {
        let b = &applied.bundle;
        self.status
            .bundle_issued_at_ms
            .store(b.issued_at_ms, Ordering::Relaxed);
        self.status.policy_valid_until_ms.store(
            applied.trust.valid_until_ms.unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = b.settings.clone();
        self.checkpoint.set_trust(applied.trust);
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(applied.cache);
    }

    /// Pulls bundles until the platform has no more status changes; returns how many bundles
    /// were put in force. A refused bundle changes nothing.
    pub fn pull(&self) -> Result<usize, SyncError> {
        let mut applied_count = 0;
        loop {
            let (prev, since) = {
                let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                (cache.clone(), cache.as_ref().map_or(0, |c| c.status_token))
            };
            let signed = self.client.pull(since)?;
            let applied = match bundle::apply(
                prev.as_ref(),
                signed,
                &self.root,
                &self.enrollment.terminal_id,
            ) {
                Ok(a) => a,
                Err(e) => {
                    self.status.bundles_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "sync: bundle refused; policy in force unchanged");
                    return Err(e.into());
                }
            };
            let more = applied.bundle.statuses.more;
            let cache_json =
                serde_json::to_vec(&applied.cache).map_err(|e| SyncError::Reply(e.to_string()))?;
            // Durable before in force: a restart resumes from what the gate already used.
            self.checkpoint.outbox()?.save_policy(&cache_json)?;
            self.checkpoint.clock().anchor(applied.bundle.issued_at_ms);
            if !applied.bundle.terminal.authorized {
                tracing::error!(
                    "sync: the platform has revoked this terminal; refusing every code"
                );
            }
            self.put_in_force(applied);
            applied_count += 1;
            self.status
                .last_pull_ok_ms
                .store(crate::clock::wall_clock_ms(), Ordering::Relaxed);
            if !more {
                return Ok(applied_count);
            }
        }
    }

    /// Pushes every durable record the platform has not confirmed; returns how many the
    /// platform confirmed. One thread reads and encodes the next batch while the current one
    /// is in flight (at most one batch ahead, so memory stays bounded by two batches).
    pub fn push(&self) -> Result<u64, SyncError> {
        let store = self.checkpoint.outbox()?;
        // A data-receiving address other than the platform's own must be https (the client
        // trusts only the platform's CA, so it is one the platform operates): records never
        // travel in clear, and a lying receiver cannot be reached at all.
        let records_url = self
            .settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .records_url
            .clone()
            .filter(|u| {
                let https = u.starts_with("https://");
                if !https {
                    tracing::error!(url = %u, "sync: the bundle's records_url is not https; pushing to the platform itself");
                }
                https
            });
        let batch_len = self.opts.batch.clamp(1, wire::MAX_BATCH);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<PreparedBatch, SyncError>>(1);
        let reader = store.clone();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let mut from = reader.synced_through() + 1;
                loop {
                    let prepared = prepare_batch(&reader, from, batch_len);
                    let stop = !matches!(prepared, Ok(Some(_)));
                    let item = match prepared {
                        Ok(Some(b)) => {
                            from = b.last + 1;
                            Ok(b)
                        }
                        Ok(None) => break,
                        Err(e) => Err(e),
                    };
                    if tx.send(item).is_err() || stop {
                        break;
                    }
                }
            });
            let mut confirmed = 0;
            for item in rx {
                // A stop between batches: what is not pushed is durable and goes next start.
                if self.stopped.load(Ordering::SeqCst) {
                    return Ok(confirmed);
                }
                let b = item?;
                let started = std::time::Instant::now();
                let reply = match self.client.push(records_url.as_deref(), &b.key, b.body) {
                    Err(SyncError::Conflict { key }) => {
                        self.status.conflicts.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(batch = %key, "sync: the platform holds other content for these records; they stay here for an operator");
                        return Err(SyncError::Conflict { key });
                    }
                    r => r?,
                };
                // Only what this batch carried (or earlier) is acknowledged, whatever the
                // reply says.
                if let Some(gap) = reply.gap {
                    self.status.gaps.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        from = gap.from,
                        to = gap.to,
                        "sync: the platform lacks records it had confirmed (restored from a backup?); it has recorded the gap, and pushing goes on"
                    );
                }
                let through = reply.committed_through.min(b.last);
                if through < b.first {
                    return Err(SyncError::Reply(format!(
                        "platform committed through {} after a batch starting at {}",
                        reply.committed_through, b.first
                    )));
                }
                store.ack_synced(through)?;
                self.status.push_latency.observe(started.elapsed());
                let n = through + 1 - b.first;
                confirmed += n;
                self.status.records_pushed.fetch_add(n, Ordering::Relaxed);
                if through < b.last {
                    // The platform holds less than was sent: start again from its cursor.
                    return Err(SyncError::Reply(format!(
                        "platform committed through {through} of a batch ending at {}",
                        b.last
                    )));
                }
            }
            self.status
                .last_push_ok_ms
                .store(crate::clock::wall_clock_ms(), Ordering::Relaxed);
            Ok(confirmed)
        })
    }

    /// One pull and one push (the push runs even when the pull failed).
    pub fn round(&self) -> Result<(), SyncError> {
        let pulled = self.pull();
        if let Err(e) = &pulled {
            self.status.pulls_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "sync: pull failed");
        }
        let pushed = self.push();
        if let Err(e) = &pushed {
            self.status.pushes_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "sync: push failed");
        }
        let result = pulled.and(pushed.map(|_| ()));
        self.status
            .set_error(result.as_ref().err().map(ToString::to_string));
        let until = self.status.policy_valid_until_ms.load(Ordering::Relaxed);
        if until != 0 && self.checkpoint.clock().now().unix_ms > until {
            // The alarm: every code is refused (policy_stale) until a bundle arrives.
            tracing::error!(
                valid_until_ms = until,
                "sync: policy older than the platform's maximum offline age; failing closed"
            );
        }
        result
    }

    /// The platform's decode engine's answer for a dynamic code, when the platform's settings
    /// ask for online decode; `None` (local verification decides) when disabled, for static or
    /// malformed codes, or when the platform does not answer within the timeout.
    pub fn online_answer(&self, text: &str) -> Option<Reason> {
        if !self
            .settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .online_decode
        {
            return None;
        }
        let parsed = crate::verification::code::parse(text).ok()?;
        if parsed.claims.kind != CodeKind::Dynamic {
            return None;
        }
        // The platform spends a code it is asked about: ask only for a code the local rules
        // accept (signature, time, scene, service, status), so that a code refused here —
        // wrong scene, say — stays usable at the gate it is for. (Replays are the platform's
        // to judge: that is what it is asked.)
        let local = crate::verification::verifier::verify_parsed(
            parsed,
            self.checkpoint.clock().now(),
            &self.checkpoint.trust(),
            &crate::verification::verifier::NothingSpent,
        );
        if !local.verdict.accepted() {
            return None;
        }
        self.status.online_asked.fetch_add(1, Ordering::Relaxed);
        match self.client.decode(text, self.opts.online_timeout) {
            Ok(reply) => Some(reply.reason),
            Err(e) => {
                self.status
                    .online_unanswered
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "sync: online decode unanswered; local verification decides");
                None
            }
        }
    }

    fn interval(&self) -> Duration {
        self.opts.interval.unwrap_or_else(|| {
            Duration::from_secs(
                self.settings
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .sync_interval_s
                    .clamp(1, 3600),
            )
        })
    }

    /// Runs rounds until [`Syncer::stop`]: every interval when the platform answers, with
    /// exponential backoff and jitter when it does not.
    pub fn run(&self) {
        let mut backoff = self.opts.min_backoff;
        while !self.stopped.load(Ordering::SeqCst) {
            let wait = match self.round() {
                Ok(()) => {
                    backoff = self.opts.min_backoff;
                    self.interval()
                }
                Err(_) => {
                    let w = backoff.min(self.interval().max(self.opts.min_backoff));
                    backoff = (backoff * 2).min(self.opts.max_backoff);
                    w.max(self.opts.min_backoff)
                }
            };
            let jitter = rand::Rng::gen_range(&mut rand::thread_rng(), 0.8..1.2);
            self.sleep(wait.mul_f64(jitter));
        }
    }

    fn sleep(&self, d: Duration) {
        let guard = self.stop.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self
            .wake
            .wait_timeout_while(guard, d, |stop| !*stop)
            .unwrap_or_else(|p| p.into_inner());
    }

    /// Ends [`Syncer::run`] at its next wait (a request in flight finishes or times out first).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        *self.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_all();
    }

    /// Starts [`Syncer::run`] on its own thread.
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("sync".into())
            .spawn(move || me.run())
    }
}
