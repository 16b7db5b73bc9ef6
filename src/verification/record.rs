//! The verification record: what the terminal keeps (and later syncs) about each verification.
//! Identifiers are keyed hashes; no personal data and no raw `sub` or `cti` ever enter it.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::clock::VerifyTime;
use crate::verification::keys::Alg;
use crate::verification::verdict::{CodeKind, Reason};
use crate::verification::verifier::Verification;

/// One verification, as stored and synced. `seq` is never reused on this terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// Verification time, ms since the Unix epoch.
    pub at_ms: i64,
    pub clock_trusted: bool,
    pub reason: Reason,
    /// The platform decode engine's answer, when it was asked (`reason` is the stricter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online_reason: Option<Reason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<CodeKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<Alg>,
    /// Hex of the protected-header kid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Keyed hash of `cti` (hex, 16 bytes): joins records of one code without revealing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cti_hash: Option<String>,
    /// Keyed hash of `sub` (hex, 16 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_hash: Option<String>,
}

impl Record {
    /// The record of `v` made at `at`, numbered `seq`.
    pub fn of(seq: u64, at: VerifyTime, v: &Verification, hasher: &RecordHasher) -> Record {
        let facts = v.facts.as_ref();
        Record {
            seq,
            at_ms: at.unix_ms,
            clock_trusted: at.trusted,
            reason: v.verdict.reason,
            online_reason: v.online_reason,
            kind: facts.map(|f| f.kind),
            service: facts.map(|f| f.service.clone()),
            scene: facts.and_then(|f| f.scene.clone()),
            alg: v.envelope.as_ref().map(|(a, _)| *a),
            kid: v.envelope.as_ref().map(|(_, k)| hex::encode(k)),
            issuer: facts.map(|f| f.iss.clone()),
            cti_hash: facts.map(|f| hasher.hash(b"cti", &f.cti)),
            sub_hash: facts.map(|f| hasher.hash(b"sub", &f.sub)),
        }
    }

    pub fn accepted(&self) -> bool {
        self.reason.is_accepted()
    }
}

/// The terminal's secret for keyed hashes in records (HMAC-SHA256, truncated to 16 bytes).
#[derive(Clone)]
pub struct RecordHasher(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for RecordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordHasher(<redacted>)")
    }
}

impl RecordHasher {
    pub fn new(secret: Vec<u8>) -> RecordHasher {
        RecordHasher(Zeroizing::new(secret))
    }

    /// Hex of HMAC(secret, domain ‖ 0 ‖ value), first 16 bytes.
    pub fn hash(&self, domain: &[u8], value: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(domain);
        mac.update(&[0]);
        mac.update(value);
        hex::encode(&mac.finalize().into_bytes()[..16])
    }
}
