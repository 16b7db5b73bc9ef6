//! The checkpoint: one call that verifies a code text against the trust state in force and
//! returns only once its record (and replay tag) is durable. Everything that opens a gate goes
//! through [`Checkpoint::check`]; everything else that needs the store sees it through the
//! checkpoint's typed operations — a [`StoreStatus`] snapshot, records by sequence number, and
//! the [`Outbox`] the sync client holds — never the store itself.
//!
//! **Invariants:** a verdict that opens a gate has a durable record. A verdict without one
//! (`backlog_full`: the quota of records waiting for the platform is reached;
//! `store_unavailable`: the disk is full or the store failed) refuses the code and says why;
//! nothing already recorded is ever dropped to make room.
//!
//! # A store out of service
//! The checkpoint keeps [`MIN_FREE_BYTES`] free on the store's filesystem: below it every
//! check is refused `store_unavailable` before sled can meet a full disk. A write that fails
//! anyway (another process filled the disk, an I/O error) takes the store out of service —
//! sled keeps an I/O error for good once it has one — and the checkpoint reopens it from disk
//! by itself once space is back ([`Checkpoint::maintain`]), at most every [`REOPEN_EVERY`].
//! A record staged when its commit failed was never acknowledged; after the reopen it may or
//! may not be there (its verdict was `store_unavailable`, and the gate stayed shut).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::clock::{Clock, VerifyTime};
use crate::store::Store;
pub use crate::store::{Create, OpenState, Outbox, StoreError, StoreStatus};
use crate::verification::code;
use crate::verification::record::{Record, RecordHasher};
use crate::verification::trust::TrustState;
use crate::verification::verdict::{BusinessClaims, Reason, Verdict};
use crate::verification::verifier::{self, Verification};

/// A verification, with its durable record — or, for a verdict the terminal refuses before
/// verifying (`backlog_full`), without one.
#[derive(Debug, Clone)]
pub struct Checked {
    pub verification: Verification,
    /// The durable record; `None` only for verdicts that are never recorded.
    pub record: Option<Record>,
    /// When the verification was made.
    pub at: VerifyTime,
    /// Which opening of the store wrote the record (a reopened store may reuse a sequence
    /// number that a failed commit never made durable).
    generation: u64,
}

impl Checked {
    /// A refusal that is not recorded (the terminal cannot take more records).
    pub fn unrecorded(reason: Reason, at: VerifyTime) -> Checked {
        Checked {
            verification: Verification::refused(reason),
            record: None,
            at,
            generation: 0,
        }
    }

    pub fn accepted(&self) -> bool {
        self.verification.verdict.accepted()
    }

    pub fn reason(&self) -> Reason {
        self.verification.verdict.reason
    }

    pub fn verdict(&self) -> &Verdict {
        &self.verification.verdict
    }

    /// The record's sequence number, if it was recorded.
    pub fn seq(&self) -> Option<u64> {
        self.record.as_ref().map(|r| r.seq)
    }

    /// The wire form shown to callers (CLI, API, webhook, display).
    pub fn report(&self) -> VerdictReport {
        let v = &self.verification;
        let accepted = v.verdict.accepted();
        VerdictReport {
            accepted,
            reason: v.verdict.reason,
            message: v.verdict.message(),
            seq: self.seq(),
            at_ms: self.at.unix_ms,
            clock_trusted: self.at.trusted,
            claims: accepted.then(|| v.verdict.claims.clone()).flatten(),
            subject_ref: accepted
                .then(|| self.record.as_ref().and_then(|r| r.sub_hash.clone()))
                .flatten(),
            detail: v.format_error.as_ref().map(|e| e.to_string()),
        }
    }
}

/// The JSON a caller sees for one verification. Claims only for accepted codes; never `sub`.
#[derive(Debug, Clone, Serialize)]
pub struct VerdictReport {
    pub accepted: bool,
    pub reason: Reason,
    pub message: &'static str,
    /// The record's sequence number; absent for a verdict that was not recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub at_ms: i64,
    pub clock_trusted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claims: Option<BusinessClaims>,
    /// Keyed hash of the subject: stable per terminal, reveals nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_ref: Option<String>,
    /// For `malformed`: which structural rule failed (technician diagnostics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Free space the checkpoint keeps on the store's filesystem; below it every check is refused
/// (`store_unavailable`) without writing. sled appends its log in 512 KiB segments and
/// rewrites snapshots beside it: 8 MiB holds several of each.
pub const MIN_FREE_BYTES: u64 = 8 * 1024 * 1024;
/// Shortest interval between attempts to bring a store out of service back.
pub const REOPEN_EVERY: Duration = Duration::from_secs(1);
/// How long a reopen waits for other holders of the store (the sync client's outbox).
const REOPEN_WAIT: Duration = Duration::from_secs(2);

/// The store in service, and which opening of it this is.
#[derive(Debug)]
struct Slot {
    /// `None` while the store is being (or could not be) reopened.
    store: Option<Arc<Store>>,
    generation: u64,
}

/// Why the store is out of service, and the attempts to bring it back.
#[derive(Debug)]
struct Service {
    /// Set while the store is out of service and could not be reopened yet.
    reason: Option<String>,
    last_attempt: Option<Instant>,
    /// The store's state when it was last seen (reported while it is out of service).
    last_status: StoreStatus,
    reopened: u64,
}

/// Verifier + store + clock + the trust state in force.
pub struct Checkpoint {
    state_dir: PathBuf,
    slot: RwLock<Slot>,
    service: Mutex<Service>,
    hasher: RecordHasher,
    clock: Arc<dyn Clock>,
    trust: RwLock<Arc<TrustState>>,
    /// Most records allowed to wait for the platform; 0 = no quota.
    backlog_limit: AtomicU64,
    /// Free bytes kept on the store's filesystem (see [`MIN_FREE_BYTES`]); 0 = none.
    min_free: AtomicU64,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("state_dir", &self.state_dir)
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

/// Bytes an unprivileged process may still write on the filesystem holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    rustix::fs::statvfs(path)
        .ok()
        .map(|v| v.f_bavail.saturating_mul(v.f_frsize))
}

/// Provisions a new terminal's state directory (`yima-gate init`, the package's first
/// install): a store with no replay guard, since nothing can have been used yet.
pub fn provision(state_dir: &Path) -> Result<StoreStatus, StoreError> {
    let store = Store::open(state_dir, Create::Provision, crate::clock::wall_clock_ms())?;
    Ok(store.status())
}

impl Checkpoint {
    /// Opens the store under `state_dir` and builds the checkpoint. `clock` is handed the
    /// trusted-time floor the store persisted (0 for a new store) and returns the clock
    /// verifications are made with.
    pub fn open(
        state_dir: &Path,
        create: Create,
        trust: TrustState,
        clock: impl FnOnce(i64) -> Arc<dyn Clock>,
    ) -> Result<Checkpoint, StoreError> {
        // The wall clock only names a quarantined store directory, never a verification.
        let store = Store::open(state_dir, create, crate::clock::wall_clock_ms())?;
        let clock = clock(store.clock_floor_ms());
        Ok(Checkpoint {
            state_dir: state_dir.to_path_buf(),
            hasher: store.hasher().clone(),
            service: Mutex::new(Service {
                reason: None,
                last_attempt: None,
                last_status: store.status(),
                reopened: 0,
            }),
            slot: RwLock::new(Slot {
                store: Some(Arc::new(store)),
                generation: 1,
            }),
            clock,
            trust: RwLock::new(Arc::new(trust)),
            backlog_limit: AtomicU64::new(0),
            min_free: AtomicU64::new(MIN_FREE_BYTES),
        })
    }

    /// Sets the free space kept on the store's filesystem (0 = none; the default is
    /// [`MIN_FREE_BYTES`]).
    pub fn set_min_free_bytes(&self, bytes: u64) {
        self.min_free.store(bytes, Ordering::Relaxed);
    }

    fn current(&self) -> Option<(Arc<Store>, u64)> {
        let slot = self.slot.read().unwrap_or_else(|p| p.into_inner());
        slot.store.clone().map(|s| (s, slot.generation))
    }

    fn lock_service(&self) -> std::sync::MutexGuard<'_, Service> {
        self.service.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when the store's filesystem has less free space than the reserve.
    fn low_space(&self, free: Option<u64>) -> bool {
        let min = self.min_free.load(Ordering::Relaxed);
        min > 0 && free.is_some_and(|f| f < min)
    }

    /// The store, when it can take a record now.
    fn in_service(&self) -> Option<(Arc<Store>, u64)> {
        self.maintain();
        let (store, generation) = self.current()?;
        if store.failure().is_some() || self.low_space(free_bytes(store.path())) {
            return None;
        }
        Some((store, generation))
    }

    /// Brings a store that is out of service back when it is due (at most every
    /// [`REOPEN_EVERY`], and only once the reserve of free space is there again: reopening
    /// reads the whole log). Cheap when the store is in service; the daemon calls it between
    /// presentations as well, so a gate recovers without anyone presenting a code.
    pub fn maintain(&self) {
        if self
            .current()
            .is_some_and(|(store, _)| store.failure().is_none())
        {
            return;
        }
        {
            let mut svc = self.lock_service();
            if svc.last_attempt.is_some_and(|t| t.elapsed() < REOPEN_EVERY) {
                return;
            }
            svc.last_attempt = Some(Instant::now());
        }
        if self.low_space(free_bytes(&self.state_dir)) {
            return;
        }
        self.reopen();
    }

    /// Closes the failed store (once nobody else holds it) and opens it again from disk.
    fn reopen(&self) {
        let mut slot = self.slot.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.store.take() {
            let failure = old.failure().map(|e| e.to_string());
            self.lock_service().last_status = old.status();
            let deadline = Instant::now() + REOPEN_WAIT;
            let mut old = old;
            loop {
                match Arc::try_unwrap(old) {
                    Ok(store) => {
                        drop(store);
                        break;
                    }
                    Err(held) if Instant::now() < deadline => {
                        old = held;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(held) => {
                        // Still held (a push in flight): try again later.
                        slot.store = Some(held);
                        return;
                    }
                }
            }
            tracing::warn!(
                failure = failure.as_deref().unwrap_or("unknown"),
                "store: out of service; reopening it from disk"
            );
        }
        let opened = Store::open(
            &self.state_dir,
            Create::Guarded,
            crate::clock::wall_clock_ms(),
        );
        let mut svc = self.lock_service();
        match opened {
            Ok(store) => {
                svc.reason = None;
                svc.reopened += 1;
                svc.last_status = store.status();
                slot.store = Some(Arc::new(store));
                slot.generation += 1;
                tracing::warn!(
                    generation = slot.generation,
                    "store: reopened; verifying again"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "store: could not be reopened; gate stays shut");
                svc.reason = Some(format!("reopening the store failed: {e}"));
            }
        }
    }

    /// Sets the backlog quota (records waiting for the platform; 0 = none). At the quota every
    /// check is refused with `backlog_full`, unrecorded — the gate stays shut and shows why —
    /// and nothing already recorded is ever dropped to make room.
    pub fn set_backlog_limit(&self, limit: u64) {
        self.backlog_limit.store(limit, Ordering::Relaxed);
    }

    /// The backlog quota in force (0 = none).
    pub fn backlog_limit(&self) -> u64 {
        self.backlog_limit.load(Ordering::Relaxed)
    }

    /// The trust state in force (a cheap snapshot).
    pub fn trust(&self) -> Arc<TrustState> {
        self.trust.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the trust state (a new bundle arrived).
    pub fn set_trust(&self, trust: TrustState) {
        *self.trust.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(trust);
    }

    /// The clock verifications are made with.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// Verifies `text` now.
    pub fn check(&self, text: &str) -> Result<Checked, StoreError> {
        self.check_with_online(text, None)
    }

    /// Verifies `text` at a supplied time (audits, replays of old scans, tests); does not move
    /// the terminal's persisted clock floor.
    pub fn check_at(&self, text: &str, at: VerifyTime) -> Result<Checked, StoreError> {
        self.check_inner(text, at, None, None)
    }

    /// Verifies `text` now, combined with the platform decode engine's answer (both are
    /// recorded; see [`verifier::with_online_answer`]).
    pub fn check_with_online(
        &self,
        text: &str,
        online: Option<Reason>,
    ) -> Result<Checked, StoreError> {
        let at = self.clock.now();
        self.check_inner(text, at, self.clock.floor_ms(), online)
    }

    fn check_inner(
        &self,
        text: &str,
        at: VerifyTime,
        floor: Option<i64>,
        online: Option<Reason>,
    ) -> Result<Checked, StoreError> {
        let staged = self.stage(text, at, floor, online)?;
        if let Err(e) = self.wait_durable(&staged) {
            tracing::error!(error = %e, "verification could not be recorded; gate stays shut");
            return Ok(Checked::unrecorded(Reason::StoreUnavailable, at));
        }
        Ok(staged)
    }

    /// Verifies and writes the record but does not wait for it to be durable: the caller
    /// **must** call [`Checkpoint::wait_durable`] with the result before acting on the
    /// verdict. Lets a reader thread go on verifying while earlier records commit.
    pub fn check_staged(&self, text: &str) -> Result<Checked, StoreError> {
        let at = self.clock.now();
        self.stage(text, at, self.clock.floor_ms(), None)
    }

    /// [`Checkpoint::check_staged`] at a supplied time.
    pub fn check_staged_at(&self, text: &str, at: VerifyTime) -> Result<Checked, StoreError> {
        self.stage(text, at, None, None)
    }

    /// Blocks until the record of `checked` (and every earlier one) is durable; at once for a
    /// verdict without a record. An error means the record is not vouched for: do not act.
    pub fn wait_durable(&self, checked: &Checked) -> Result<(), StoreError> {
        let Some(seq) = checked.seq() else {
            return Ok(());
        };
        match self.current() {
            Some((store, generation)) if generation == checked.generation => {
                store.wait_durable(seq)
            }
            _ => Err(StoreError::OutOfService),
        }
    }

    /// Parsing runs before the store's writer lock is taken.
    fn stage(
        &self,
        text: &str,
        at: VerifyTime,
        floor: Option<i64>,
        online: Option<Reason>,
    ) -> Result<Checked, StoreError> {
        let Some((store, generation)) = self.in_service() else {
            return Ok(Checked::unrecorded(Reason::StoreUnavailable, at));
        };
        let limit = self.backlog_limit.load(Ordering::Relaxed);
        if limit > 0 && store.backlog() >= limit {
            return Ok(Checked::unrecorded(Reason::BacklogFull, at));
        }
        let trust = self.trust();
        let parsed = code::parse(text);
        let staged = store.verify_and_stage(at, floor, |view| {
            let local = match parsed {
                Ok(p) => verifier::verify_parsed(p, at, &trust, view),
                Err(e) => verifier::verify_malformed(e),
            };
            verifier::with_online_answer(local, online)
        });
        match staged {
            Ok((verification, record)) => Ok(Checked {
                verification,
                record: Some(record),
                at,
                generation,
            }),
            // A record that cannot be encoded is a program fault, not the store's.
            Err(e @ StoreError::Corrupt { .. }) => Err(e),
            Err(e) => {
                store.fail(e);
                Ok(Checked::unrecorded(Reason::StoreUnavailable, at))
            }
        }
    }

    /// Up to `limit` records with `seq >= from`, in order (records the platform confirmed are
    /// gone from the terminal).
    pub fn records_from(&self, from: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        let (store, _) = self.current().ok_or(StoreError::OutOfService)?;
        store.records_from(from, limit)
    }

    /// The keyed hasher of this terminal's record identifiers: an auditor holding a code's
    /// `cti` finds its records by `hasher().hash(b"cti", cti)`.
    pub fn hasher(&self) -> &RecordHasher {
        &self.hasher
    }

    /// What the store holds and how it came to be open, now; while it is out of service,
    /// what it held when last seen, with why.
    pub fn status(&self) -> StoreStatus {
        let current = self.current();
        let mut s = match &current {
            Some((store, _)) => store.status(),
            None => self.lock_service().last_status.clone(),
        };
        let free = free_bytes(
            current
                .as_ref()
                .map_or(self.state_dir.as_path(), |(st, _)| st.path()),
        );
        let svc = self.lock_service();
        s.free_bytes = free;
        s.low_space = self.low_space(free);
        s.reopened = svc.reopened;
        if current.is_none() && s.failed.is_none() {
            s.failed = Some(
                svc.reason
                    .clone()
                    .unwrap_or_else(|| "the store is being reopened".into()),
            );
        }
        s
    }

    /// The records waiting for the platform (the sync client's view); an error while the
    /// store is out of service.
    pub fn outbox(&self) -> Result<Outbox, StoreError> {
        self.current()
            .map(|(store, _)| store.outbox())
            .ok_or(StoreError::OutOfService)
    }

    /// Forgets replay tags whose window ended before the latest trusted time (never the wall
    /// clock: a clock running ahead must not erase tags still needed); returns how many.
    pub fn purge_expired_replay_tags(&self) -> Result<usize, StoreError> {
        match (self.clock.floor_ms(), self.current()) {
            (Some(floor), Some((store, _))) => store.purge_expired_tags(floor),
            _ => Ok(0),
        }
    }
}
