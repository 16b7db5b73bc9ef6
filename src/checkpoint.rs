//! The checkpoint: one call that verifies a code text against the current trust state and
//! returns only once its record (and replay tag) is durable. Everything that opens a gate goes
//! through [`Checkpoint::check`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::clock::{Clock, VerifyTime};
use crate::code;
use crate::record::Record;
use crate::store::{Store, StoreError};
use crate::verdict::{BusinessClaims, Reason};
use crate::verifier::{self, Verification};

/// A verification whose record is durable.
#[derive(Debug, Clone)]
pub struct Checked {
    pub verification: Verification,
    pub record: Record,
}

impl Checked {
    pub fn accepted(&self) -> bool {
        self.verification.verdict.accepted()
    }

    pub fn reason(&self) -> Reason {
        self.verification.verdict.reason
    }

    /// The wire form shown to callers (CLI, API, webhook).
    pub fn report(&self) -> VerdictReport {
        let v = &self.verification;
        VerdictReport {
            accepted: v.verdict.accepted(),
            reason: v.verdict.reason,
            message: v.verdict.message(),
            seq: self.record.seq,
            at_ms: self.record.at_ms,
            clock_trusted: self.record.clock_trusted,
            claims: v
                .verdict
                .accepted()
                .then(|| v.verdict.claims.clone())
                .flatten(),
            subject_ref: v
                .verdict
                .accepted()
                .then(|| self.record.sub_hash.clone())
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
    pub seq: u64,
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

/// Verifier + store + clock + the current trust state.
pub struct Checkpoint {
    store: Store,
    clock: Arc<dyn Clock>,
    trust: RwLock<Arc<crate::policy::TrustState>>,
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

impl Checkpoint {
    pub fn new(store: Store, clock: Arc<dyn Clock>, trust: crate::policy::TrustState) -> Self {
        Checkpoint {
            store,
            clock,
            trust: RwLock::new(Arc::new(trust)),
            backlog_limit: AtomicU64::new(0),
        }
    }

    /// Sets the backlog quota (records waiting for the platform; 0 = none). At the quota every
    /// check fails with [`StoreError::BacklogFull`] — the gate stays shut and shows why — and
    /// nothing already recorded is ever dropped to make room.
    pub fn set_backlog_limit(&self, limit: u64) {
        self.backlog_limit.store(limit, Ordering::Relaxed);
    }

    /// The trust state in force (a cheap snapshot).
    pub fn trust(&self) -> Arc<crate::policy::TrustState> {
        self.trust.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the trust state (a new bundle arrived).
    pub fn set_trust(&self, trust: crate::policy::TrustState) {
        *self.trust.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(trust);
    }

    pub fn store(&self) -> &Store {
        &self.store
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

    fn check_inner(
        &self,
        text: &str,
        at: VerifyTime,
        floor: Option<i64>,
        online: Option<Reason>,
    ) -> Result<Checked, StoreError> {
        let staged = self.stage(text, at, floor, online)?;
        self.store.wait_durable(staged.record.seq)?;
        Ok(staged)
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

    /// Verifies and writes the record but does not wait for it to be durable: the caller
    /// **must** call [`Checkpoint::wait_durable`] with `record.seq` before acting on the verdict.
    /// Lets a reader thread go on verifying while earlier records commit.
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
        if limit > 0 {
            let backlog = self.store.backlog();
            if backlog >= limit {
                return Err(StoreError::BacklogFull { backlog, limit });
            }
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
            record,
        })
    }
}
