//! Where the platform keeps the records gates push: the storage interface that ingest,
//! cursors, gaps, the audit log and the record statistics go through ([`RecordStore`]), the
//! rules both stores share (what a batch must be, what counts in the statistics), and the two
//! stores — sled, embedded ([`sled_store`]), and PostgreSQL, for several nodes ([`pg_store`]).
//!
//! # What every store guarantees
//! - A batch is stored exactly once, in one durable step, and acknowledged only after it.
//!   Records are identified by (terminal, store id, seq); the batch's idempotency key with
//!   other content, or a held seq with other content, is a conflict that stores nothing.
//! - The cursor (highest seq below which every record is held, but for the recorded gaps)
//!   never moves back on a push and never claims a record that is not held.
//! - A batch past the cursor records the skipped range as a gap (audited), and ingest goes on.
//! - A refused batch (a conflict) stores nothing and is audited (`conflict`).
//! - Statistics change in the same step as the records they count.
//!
//! # What the platform can and cannot check of a record
//! It checks the shape of every field (lengths, hex identifiers, known algorithm, a time
//! between 2020 and one day ahead); a record out of bounds is held but kept out of the
//! statistics and audited (`anomalous_record`). It cannot check that a well-formed record is
//! true: records carry keyed hashes, not the codes, so a terminal whose key was stolen can push
//! believable records that count. The statistics are therefore per terminal, and a revoked
//! terminal's pushes are refused.

pub mod pg_store;
pub mod sled_store;

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};

use crate::platform::db::{PlatformError, Result};
use crate::sync::wire::{PushReply, RecordBatch, RecordWire};

/// Largest pushed record, JSON-encoded (a gate's records are 300–600 bytes).
pub const MAX_RECORD_BYTES: usize = 4096;
/// Highest sequence number accepted: 2⁵³ (a gate recording 1,000 verifications a second
/// reaches it in 285,000 years), so that no cursor arithmetic can wrap.
pub const MAX_SEQ: u64 = 1 << 53;

/// The records a platform holds, their cursors, gaps, audit log and statistics.
pub trait RecordStore: Send + Sync + std::fmt::Debug {
    /// Stores a batch exactly once (see the module's guarantees) and answers the cursor.
    fn ingest(&self, terminal: &str, batch: &RecordBatch) -> Result<PushReply>;
    /// The cursor of one terminal's store (0 before its first batch).
    fn cursor(&self, terminal: &str, store_id: &str) -> Result<u64>;
    /// Every record held for one terminal, by store then seq.
    fn records_of(&self, terminal: &str) -> Result<Vec<(String, RecordWire)>>;
    /// The statistics of the records held.
    fn record_stats(&self) -> Result<RecordStats>;
    /// The newest audit events, newest first.
    fn audit_events(&self, limit: usize) -> Result<Vec<serde_json::Value>>;
    /// Is the store reachable and writable now (`/readyz`)?
    fn ready(&self) -> Result<()> {
        Ok(())
    }
}

/// Counts of the records held, by dimension.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordStats {
    pub records: u64,
    pub by_verdict: BTreeMap<String, u64>,
    pub by_service: BTreeMap<String, u64>,
    pub by_scene: BTreeMap<String, u64>,
    pub by_terminal: BTreeMap<String, u64>,
    /// Hour (RFC 3339, UTC) → verifications.
    pub by_hour: BTreeMap<String, u64>,
}

impl RecordStats {
    /// Adds `n` to the counter named by a `(dimension, value)` key of [`count_stats`].
    pub fn add(&mut self, dim: &str, value: &str, n: u64) {
        let map = match dim {
            "verdict" => &mut self.by_verdict,
            "service" => &mut self.by_service,
            "scene" => &mut self.by_scene,
            "terminal" => &mut self.by_terminal,
            "hour" => &mut self.by_hour,
            "records" => {
                self.records += n;
                return;
            }
            _ => return,
        };
        *map.entry(value.to_string()).or_default() += n;
    }
}

/// A pushed batch checked against the rules every store applies, with its records encoded
/// as they are stored and compared.
#[derive(Debug)]
pub struct Checked<'a> {
    pub batch: &'a RecordBatch,
    pub last: u64,
    /// Each record's JSON, as stored (a held record must match it byte for byte).
    pub encoded: Vec<Vec<u8>>,
    /// SHA-256 over the encoded records: what the idempotency key was received with.
    pub digest: Vec<u8>,
}

impl<'a> Checked<'a> {
    pub fn new(batch: &'a RecordBatch) -> Result<Checked<'a>> {
        crate::platform::db::valid_name(&batch.store_id, "store_id")?;
        let n = batch.records.len();
        if n == 0 || n > crate::sync::wire::MAX_BATCH {
            return Err(PlatformError::BadRequest(format!(
                "a batch carries 1–{} records",
                crate::sync::wire::MAX_BATCH
            )));
        }
        // Bounded: a first_seq near u64::MAX must not wrap a cursor back to 0.
        let last = batch
            .first_seq
            .checked_add(n as u64 - 1)
            .filter(|last| batch.first_seq >= 1 && *last <= MAX_SEQ)
            .ok_or_else(|| {
                PlatformError::BadRequest(format!("sequence numbers run from 1 to {MAX_SEQ}"))
            })?;
        if (batch.first_seq..=last)
            .zip(&batch.records)
            .any(|(seq, r)| r.seq != seq)
        {
            return Err(PlatformError::BadRequest(
                "records must be contiguous from first_seq (≥ 1)".into(),
            ));
        }
        if batch.idempotency_key != RecordBatch::key(&batch.store_id, batch.first_seq, last) {
            return Err(PlatformError::BadRequest(
                "idempotency_key must be <store_id>:<first>-<last>".into(),
            ));
        }
        let encoded: Vec<Vec<u8>> = batch
            .records
            .iter()
            .map(serde_json::to_vec)
            .collect::<std::result::Result<_, _>>()?;
        if let Some((r, e)) = batch
            .records
            .iter()
            .zip(&encoded)
            .find(|(_, e)| e.len() > MAX_RECORD_BYTES)
        {
            return Err(PlatformError::BadRequest(format!(
                "record {} is {} bytes encoded; a record holds at most {MAX_RECORD_BYTES}",
                r.seq,
                e.len()
            )));
        }
        let mut digest = Sha256::new();
        for e in &encoded {
            digest.update((e.len() as u64).to_be_bytes());
            digest.update(e);
        }
        Ok(Checked {
            batch,
            last,
            encoded,
            digest: digest.finalize().to_vec(),
        })
    }

    pub fn first(&self) -> u64 {
        self.batch.first_seq
    }

    pub fn store(&self) -> &str {
        &self.batch.store_id
    }
}

/// Why a pushed record's fields are out of bounds, if they are: free texts of more than 64
/// characters or with control characters, identifiers that are not the hashes and hex they
/// should be, an unknown algorithm, a time before 2020 or more than a day ahead.
pub fn record_problem(r: &RecordWire) -> Option<&'static str> {
    let text_ok = |t: &Option<String>| {
        t.as_ref()
            .is_none_or(|t| t.chars().count() <= 64 && !t.chars().any(char::is_control))
    };
    let hex_ok = |t: &Option<String>, max: usize| {
        t.as_ref()
            .is_none_or(|t| t.len() <= max && t.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    const EARLIEST_MS: i64 = 1_577_836_800_000; // 2020-01-01
    if !(text_ok(&r.service) && text_ok(&r.scene) && text_ok(&r.issuer)) {
        return Some("a text field is too long or holds control characters");
    }
    if !(hex_ok(&r.kid, 32) && hex_ok(&r.cti_hash, 32) && hex_ok(&r.sub_hash, 32)) {
        return Some("an identifier is not the hex it should be");
    }
    if r.alg
        .as_deref()
        .is_some_and(|a| crate::verification::keys::Alg::parse(a).is_err())
    {
        return Some("unknown algorithm");
    }
    if r.at_ms < EARLIEST_MS || r.at_ms > crate::clock::wall_clock_ms() + 86_400_000 {
        return Some("verification time out of range");
    }
    None
}

/// Adds one record to the statistics' counters, keyed `(dimension, value)`.
pub fn count_stats(
    terminal: &str,
    r: &RecordWire,
    counts: &mut HashMap<(&'static str, String), u64>,
) {
    let hour = crate::verification::keys::format_time((r.at_ms.div_euclid(3_600_000)) * 3600);
    for key in [
        ("verdict", r.reason.code().to_string()),
        ("service", r.service.as_deref().unwrap_or("-").to_string()),
        ("scene", r.scene.as_deref().unwrap_or("-").to_string()),
        ("terminal", terminal.to_string()),
        ("hour", hour),
        ("records", String::new()),
    ] {
        *counts.entry(key).or_default() += 1;
    }
}

/// `range` without the parts inside any of `holes` (inclusive ranges).
pub fn subtract(range: (u64, u64), holes: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut parts = vec![range];
    for &(hf, ht) in holes {
        parts = parts
            .into_iter()
            .flat_map(|(f, t)| {
                let mut out = Vec::new();
                if ht < f || hf > t {
                    out.push((f, t));
                } else {
                    if hf > f {
                        out.push((f, hf - 1));
                    }
                    if ht < t {
                        out.push((ht + 1, t));
                    }
                }
                out
            })
            .collect();
    }
    parts
}

/// The audit detail of a refused batch (same key or held seqs with other content).
pub fn conflict_detail(batch: &RecordBatch, why: &str) -> serde_json::Value {
    serde_json::json!({
        "store_id": batch.store_id,
        "idempotency_key": batch.idempotency_key,
        "why": why,
    })
}

pub fn ranges_json(ranges: &[(u64, u64)]) -> serde_json::Value {
    ranges
        .iter()
        .map(|(f, t)| serde_json::json!({ "from": f, "to": t }))
        .collect()
}
