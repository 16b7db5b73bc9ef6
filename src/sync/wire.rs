//! The sync protocol's wire types (JSON over mutual TLS), shared by the gateway's client and the
//! reference platform; `GET /v1/openapi.json` on the platform documents them. Separate from the
//! internal types on purpose: these change only with the protocol version.

use serde::{Deserialize, Serialize};

use crate::verification::keys::TrustEntry;
use crate::verification::record::Record;
use crate::verification::trust::StaticState;
use crate::verification::verdict::{CodeKind, Reason};

/// Protocol name, sent in `X-Yima-Protocol` on every call.
pub const PROTOCOL: &str = "ym-sync/1";
/// Most records one push may carry.
pub const MAX_BATCH: usize = 5000;
/// Largest request body the platform accepts (a full batch of records).
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// Most status changes one bundle carries; more come with `more: true`.
pub const MAX_STATUS_CHANGES: usize = 10_000;

/// `POST /v1/enroll` (no client certificate yet).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The secret part of the enrollment token (one use).
    pub token: String,
    /// PKCS#10 request for the terminal's own key; the key never leaves the terminal.
    pub csr_pem: String,
    /// The terminal id this gate is configured as: a token issued for another id is refused
    /// without being spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub terminal_id: String,
    /// The terminal's client certificate, issued by the platform CA.
    pub cert_pem: String,
    pub ca_pem: String,
    /// The key that signs policy bundles: the terminal pins it.
    pub root_key: RootKey,
    pub platform_time_ms: i64,
}

/// The platform root key (Ed25519), base64url.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootKey {
    pub alg: String,
    pub key: String,
}

/// `GET /v1/bundle?since=N`: a bundle, signed with the root key over the exact payload bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedBundle {
    /// Always `EdDSA`.
    pub alg: String,
    /// base64url of the JSON of a [`Bundle`].
    pub payload: String,
    /// base64url Ed25519 signature of the payload bytes (after base64url decoding).
    pub sig: String,
}

/// Everything a terminal needs to verify on its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bundle {
    pub terminal_id: String,
    /// The platform's time when it made the bundle: anchors the terminal's clock and dates
    /// the bundle for the maximum-offline check.
    pub issued_at_ms: i64,
    pub terminal: TerminalProfile,
    /// Every key the terminal may trust now, with validity windows (the global HMAC key too).
    pub keys: Vec<TrustEntry>,
    pub statuses: StatusDelta,
    pub suspended_services: Vec<String>,
    pub settings: PlatformSettings,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalProfile {
    pub authorized: bool,
    /// Scenes served; empty = every scene.
    pub scenes: Vec<String>,
    pub accept_unknown_static: bool,
}

/// Static-code status changes after the resume token `since`, up to `through`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusDelta {
    /// True: `changes` is the whole list (the token was unknown or zero); replace, not merge.
    pub full: bool,
    pub since: u64,
    /// The resume token for the next pull.
    pub through: u64,
    /// More changes are waiting: pull again now.
    pub more: bool,
    pub changes: Vec<StatusChange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    pub cat: String,
    pub sn: String,
    pub state: StaticState,
    #[serde(default)]
    pub min_version: u64,
}

/// The platform's settings for its terminals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformSettings {
    /// 全局刷新时间: how long a dynamic code lives, seconds.
    pub refresh_s: i64,
    pub skew_s: i64,
    /// How often terminals pull and push, seconds.
    pub sync_interval_s: u64,
    /// A terminal whose newest bundle is older than this fails closed (`policy_stale`).
    pub max_offline_s: i64,
    /// Route dynamic codes through the platform's decode engine when it is reachable.
    pub online_decode: bool,
    /// 数据接收地址: where records are pushed, when not the platform's own `/v1/records`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_url: Option<String>,
}

impl Default for PlatformSettings {
    fn default() -> Self {
        PlatformSettings {
            refresh_s: crate::verification::trust::DEFAULT_REFRESH_S,
            skew_s: crate::verification::trust::DEFAULT_SKEW_S,
            sync_interval_s: 30,
            max_offline_s: 7 * 86_400,
            online_decode: false,
            records_url: None,
        }
    }
}

/// `POST /v1/records`: contiguous records `first_seq ..= first_seq + len − 1` of one store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordBatch {
    /// The terminal's store generation: sequence numbers are unique within it.
    pub store_id: String,
    /// `<store_id>:<first>-<last>`; the same key with other content is a conflict (409).
    pub idempotency_key: String,
    pub first_seq: u64,
    pub records: Vec<RecordWire>,
}

impl RecordBatch {
    pub fn key(store_id: &str, first: u64, last: u64) -> String {
        format!("{store_id}:{first}-{last}")
    }
}

/// The reply to a push: the highest sequence number below which the platform holds every
/// record of this store.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PushReply {
    pub committed_through: u64,
    /// Records the platform never received although the terminal had already deleted them —
    /// a platform restored from a backup. Recorded as an audit event on the platform; the
    /// terminal counts and logs it; both go on from the batch received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<SeqRange>,
}

/// An inclusive range of sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqRange {
    pub from: u64,
    pub to: u64,
}

/// One verification record on the wire (no personal data: identifiers are keyed hashes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordWire {
    pub seq: u64,
    pub at_ms: i64,
    pub clock_trusted: bool,
    pub reason: Reason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online_reason: Option<Reason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<CodeKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cti_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_hash: Option<String>,
}

impl From<&Record> for RecordWire {
    fn from(r: &Record) -> Self {
        RecordWire {
            seq: r.seq,
            at_ms: r.at_ms,
            clock_trusted: r.clock_trusted,
            reason: r.reason,
            online_reason: r.online_reason,
            kind: r.kind,
            service: r.service.clone(),
            scene: r.scene.clone(),
            alg: r.alg.map(|a| a.name().to_string()),
            kid: r.kid.clone(),
            issuer: r.issuer.clone(),
            cti_hash: r.cti_hash.clone(),
            sub_hash: r.sub_hash.clone(),
        }
    }
}

/// `POST /v1/decode`: the platform's decode engine (在线解码) verifies a code for a terminal.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeRequest {
    pub code: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecodeReply {
    pub reason: Reason,
    pub message: String,
}

/// Error body of every non-2xx answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
