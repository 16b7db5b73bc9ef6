//! The checkpoint: one call that verifies a code text against the trust state in force and
//! returns only once its record (and replay tag) is durable. Everything that opens a gate goes
//! through [`Checkpoint::check`]; everything else that needs the store sees it through the
//! checkpoint's typed operations — a [`StoreStatus`] snapshot, records by sequence number, and
//! the [`Outbox`] the sync client holds — never the store itself.
//!
//! **Invariants:** a verdict that opens a gate has a durable record. A verdict without one
//! (`backlog_full`: the quota of records waiting for the platform is reached) refuses the code
//! and says why; nothing already recorded is ever dropped to make room.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::clock::{Clock, VerifyTime};
use crate::store::Store;
pub use crate::store::{Create, OpenState, Outbox, StoreError, StoreStatus};
use crate::verification::code;
use crate::verification::record::Record;
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
}

impl Checked {
    /// A refusal that is not recorded (the terminal cannot take more records).
    pub fn unrecorded(reason: Reason, at: VerifyTime) -> Checked {
        Checked {
            verification: Verification::refused(reason),
            record: None,
            at,
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

/// Verifier + store + clock + the trust state in force.
pub struct Checkpoint {
    store: Store,
    clock: Arc<dyn Clock>,
    trust: RwLock<Arc<TrustState>>,
    /// Most records allowed to wait for the platform; 0 = no quota.
    backlog_limit: AtomicU64,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
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
            store,
            clock,
            trust: RwLock::new(Arc::new(trust)),
            backlog_limit: AtomicU64::new(0),
        })
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
        if let Some(seq) = staged.seq() {
            self.store.wait_durable(seq)?;
        }
        Ok(staged)
    }

    /// Verifies and writes the record but does not wait for it to be durable: the caller
    /// **must** call [`Checkpoint::wait_durable`] with the record's seq before acting on the
    /// verdict. Lets a reader thread go on verifying while earlier records commit.
    pub fn check_staged(&self, text: &str) -> Result<Checked, StoreError> {
        let at = self.clock.now();
        self.stage(text, at, self.clock.floor_ms(), None)
    }

    /// [`Checkpoint::check_staged`] at a supplied time.
    pub fn check_staged_at(&self, text: &str, at: VerifyTime) -> Result<Checked, StoreError> {
        self.stage(text, at, None, None)
    }

    /// Blocks until the record `seq` (and every earlier one) is durable.
    pub fn wait_durable(&self, seq: u64) -> Result<(), StoreError> {
        self.store.wait_durable(seq)
    }

    /// Parsing runs before the store's writer lock is taken.
    fn stage(
        &self,
        text: &str,
        at: VerifyTime,
        floor: Option<i64>,
        online: Option<Reason>,
    ) -> Result<Checked, StoreError> {
        let limit = self.backlog_limit.load(Ordering::Relaxed);
        if limit > 0 && self.store.backlog() >= limit {
            return Ok(Checked::unrecorded(Reason::BacklogFull, at));
        }
        let trust = self.trust();
        let parsed = code::parse(text);
        let (verification, record) = self.store.verify_and_stage(at, floor, |view| {
            let local = match parsed {
                Ok(p) => verifier::verify_parsed(p, at, &trust, view),
                Err(e) => verifier::verify_malformed(e),
            };
            verifier::with_online_answer(local, online)
        })?;
        Ok(Checked {
            verification,
            record: Some(record),
            at,
        })
    }

    /// Up to `limit` records with `seq >= from`, in order (records the platform confirmed are
    /// gone from the terminal).
    pub fn records_from(&self, from: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        self.store.records_from(from, limit)
    }

    /// The keyed hasher of this terminal's record identifiers: an auditor holding a code's
    /// `cti` finds its records by `hasher().hash(b"cti", cti)`.
    pub fn hasher(&self) -> &crate::verification::record::RecordHasher {
        self.store.hasher()
    }

    /// What the store holds and how it came to be open, now.
    pub fn status(&self) -> StoreStatus {
        self.store.status()
    }

    /// The records waiting for the platform (the sync client's view).
    pub fn outbox(&self) -> Outbox<'_> {
        self.store.outbox()
    }

    /// Forgets replay tags whose window ended before the latest trusted time (never the wall
    /// clock: a clock running ahead must not erase tags still needed); returns how many.
    pub fn purge_expired_replay_tags(&self) -> Result<usize, StoreError> {
        match self.clock.floor_ms() {
            Some(floor) => self.store.purge_expired_tags(floor),
            None => Ok(0),
        }
    }
}
