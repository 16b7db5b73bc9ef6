//! The reference platform's state in sled: keys, services, users, static codes and their
//! status log, terminals and enrollment, settings, ingested records with their cursors, and
//! dashboard counters. The only platform module that knows sled.
//!
//! # On-disk layout (`<data>/db/`)
//! ```text
//! meta        "ca_cert" "ca_key" "root_key" "user_secret" "settings" "status_seq" "codes_minted"
//! keys        kid hex                      → KeyRecord (private key JSON, kinds, retired)
//! services    code                         → ServiceRecord
//! users       keyed hash of the user id    → first seen, ms
//! statics     "cat\0sn"                    → StaticRecord
//! status_log  change seq (u64 BE)          → StatusChange   (deltas for bundles)
//! terminals   id                           → TerminalRecord
//! tokens      sha256(secret) hex           → terminal id     (one-time enrollment tokens)
//! certs       sha256(client cert) hex      → terminal id
//! records     terminal \0 store \0 first seq BE → chunk: RecordWire JSON lines, seqs first..
//!                                          (each seq held once: chunks never overlap;
//!                                          a chunk ≤ 6 KiB, a record ≤ 4 KiB)
//! cursors     terminal \0 store            → u64 BE, highest seq held (all below it too,
//!                                          but for the recorded gaps)
//! gaps        terminal \0 store \0 from BE  → u64 BE to: seqs a terminal had deleted before
//!                                          this platform held them (audited when found)
//! batches     terminal \0 idempotency key  → sha256 of the batch content
//! stats       dimension \0 value           → u64 BE
//! spent       replay tag                   → window end, ms   (online decode, all terminals)
//! ```
//!
//! # Durability
//! Every change is acknowledged only after [`Db::durable`]: sled's flush, then an fsync of
//! its log (sled's flush is only `sync_file_range`). sled writes a log item larger than a
//! quarter of its segment (128 KiB) to a blob file of its own that it never fsyncs and whose
//! loss it skips silently at recovery — measured: a power cut right after an acknowledged
//! 1,000-record push lost all 1,000. So no value and no leaf here comes near that size: record
//! chunks are cut at [`CHUNK_BYTES`] and a record is at most [`MAX_RECORD_BYTES`], and a leaf
//! splits above 16 entries, so a leaf of chunks stays under 17 × 6.2 KiB ≈ 105 KiB; every
//! other value is a few hundred bytes. Keeping values small was chosen over fsyncing blob
//! files because a leaf rewritten as a blob takes every older entry of that leaf with it when
//! sled's background flusher makes the log durable before the blob; the blob fsync
//! ([`crate::files::EngineFiles`]) stays as a guard. sled's `conf` and directories are fsynced
//! at open, so a platform cut in its first second comes back with its CA, root key and token.
//!
//! At open, and at ingest when the chunk ending at a cursor is not there, the records below
//! every cursor are checked: a missing range (lost by an earlier version to the above) moves
//! the cursor back to just before it, is audited (`records_missing`), and the statistics are
//! recounted from the records held. A gate still holding those records pushes them again; the
//! ones it had already deleted are lost, and its next push records them as a gap.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::platform::ca::Authority;
use crate::sync::wire::{
    Bundle, PlatformSettings, PushReply, RecordBatch, RecordWire, SeqRange, StatusChange,
    StatusDelta, TerminalProfile,
};
use crate::verification::code::Claims;
use crate::verification::keys::{Alg, KeyPair, Kid, SigningKey};
use crate::verification::trust::{StaticState, StaticStatus, Terminal, TrustState};
use crate::verification::verdict::{AccessMode, CodeKind, Reason};
use crate::verification::verifier::{ReplayStatus, ReplayTag, ReplayView};

/// The issuer name of codes this platform mints.
pub const ISSUER: &str = "YMTB-REF";

/// Largest pushed record, JSON-encoded (a gate's records are 300–600 bytes; see Durability).
pub const MAX_RECORD_BYTES: usize = 4096;
/// A record chunk is closed before it passes this many bytes (see Durability).
const CHUNK_BYTES: usize = 6144;
/// Highest sequence number accepted: 2⁵³ (a gate recording 1,000 verifications a second
/// reaches it in 285,000 years), so that no cursor arithmetic can wrap.
pub const MAX_SEQ: u64 = 1 << 53;

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("storage: {0}")]
    Storage(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<sled::Error> for PlatformError {
    fn from(e: sled::Error) -> Self {
        PlatformError::Storage(e.to_string())
    }
}

impl From<serde_json::Error> for PlatformError {
    fn from(e: serde_json::Error) -> Self {
        PlatformError::Storage(format!("stored JSON: {e}"))
    }
}

type Result<T> = std::result::Result<T, PlatformError>;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyRecord {
    /// KeyPair JSON (private).
    pair: String,
    kinds: Vec<CodeKind>,
    created_ms: i64,
    retired: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub code: String,
    pub name: String,
    pub suspended: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StaticRecord {
    pub cat: String,
    pub sn: String,
    pub service: String,
    /// Keyed hash of the holder's user id (the platform's own pseudonym).
    pub holder: String,
    pub state: StaticState,
    pub version: u64,
    pub min_version: u64,
    /// Pairwise subject token minted into the code (never the user id).
    #[serde(with = "hex_bytes")]
    sub: Vec<u8>,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A static code as the admin API shows it: never the subject token minted into the code.
#[derive(Debug, Clone, Serialize)]
pub struct StaticView {
    pub cat: String,
    pub sn: String,
    pub service: String,
    /// Keyed hash of the holder's user id (the platform's own pseudonym).
    pub holder: String,
    pub state: StaticState,
    pub version: u64,
    pub min_version: u64,
}

impl From<StaticRecord> for StaticView {
    fn from(r: StaticRecord) -> StaticView {
        StaticView {
            cat: r.cat,
            sn: r.sn,
            service: r.service,
            holder: r.holder,
            state: r.state,
            version: r.version,
            min_version: r.min_version,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TerminalRecord {
    pub id: String,
    pub scenes: Vec<String>,
    pub accept_unknown_static: bool,
    pub authorized: bool,
    pub enrolled: bool,
    #[serde(default)]
    pub cert_fingerprint: Option<String>,
}

/// Dashboard statistics.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub users: u64,
    pub codes_minted: u64,
    pub static_codes: u64,
    pub terminals: u64,
    pub records: u64,
    pub by_verdict: BTreeMap<String, u64>,
    pub by_service: BTreeMap<String, u64>,
    pub by_scene: BTreeMap<String, u64>,
    pub by_terminal: BTreeMap<String, u64>,
    /// Hour (RFC 3339, UTC) → verifications.
    pub by_hour: BTreeMap<String, u64>,
}

/// The platform's state.
pub struct Db {
    db: sled::Db,
    log_path: std::path::PathBuf,
    /// sled's files outside its log, made durable.
    files: crate::files::EngineFiles,
    meta: sled::Tree,
    keys: sled::Tree,
    services: sled::Tree,
    users: sled::Tree,
    statics: sled::Tree,
    status_log: sled::Tree,
    terminals: sled::Tree,
    tokens: sled::Tree,
    certs: sled::Tree,
    records: sled::Tree,
    cursors: sled::Tree,
    gaps: sled::Tree,
    batches: sled::Tree,
    stats: sled::Tree,
    spent: sled::Tree,
    audit: sled::Tree,
    /// Serialises read-modify-write sequences (status seq, cursors, counters).
    write: Mutex<()>,
    pub authority: Authority,
    root: SigningKey,
    user_secret: zeroize::Zeroizing<Vec<u8>>,
    /// Verification state for online decode, rebuilt after any change.
    trust_cache: RwLock<Option<Arc<TrustState>>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    crate::clock::wall_clock_ms()
}

fn be_u64(v: &[u8]) -> u64 {
    v.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut v);
    v
}

fn static_key(cat: &str, sn: &str) -> String {
    format!("{cat}\u{0}{sn}")
}

fn record_key(terminal: &str, store: &str, seq: u64) -> Vec<u8> {
    let mut k = store_key(terminal, store);
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `terminal \0 store`: the key of a store's cursor, and the prefix of its records.
fn store_key(terminal: &str, store: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(terminal.len() + store.len() + 1);
    k.extend_from_slice(terminal.as_bytes());
    k.push(0);
    k.extend_from_slice(store.as_bytes());
    k
}

/// Adds one record to the statistics' counters, by their keys in the `stats` tree.
fn count_stats(terminal: &str, r: &RecordWire, counts: &mut HashMap<String, u64>) {
    let hour = crate::verification::keys::format_time((r.at_ms.div_euclid(3_600_000)) * 3600);
    for key in [
        format!("verdict\u{0}{}", r.reason.code()),
        format!("service\u{0}{}", r.service.as_deref().unwrap_or("-")),
        format!("scene\u{0}{}", r.scene.as_deref().unwrap_or("-")),
        format!("terminal\u{0}{terminal}"),
        format!("hour\u{0}{hour}"),
        "records".to_string(),
    ] {
        *counts.entry(key).or_default() += 1;
    }
}

/// `range` without the parts inside any of `holes` (inclusive ranges).
fn subtract(range: (u64, u64), holes: &[(u64, u64)]) -> Vec<(u64, u64)> {
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

fn ranges_json(ranges: &[(u64, u64)]) -> serde_json::Value {
    ranges
        .iter()
        .map(|(f, t)| serde_json::json!({ "from": f, "to": t }))
        .collect()
}

/// The first seq of a record chunk, from its key (the last 8 bytes).
fn chunk_seq(key: &[u8]) -> u64 {
    key.len().checked_sub(8).map_or(0, |i| be_u64(&key[i..]))
}

/// Why a pushed record's fields are out of bounds, if they are: free texts of more than 64
/// characters or with control characters, identifiers that are not the hashes and hex they
/// should be, an unknown algorithm, a time before 2020 or more than a day ahead.
fn record_problem(r: &RecordWire) -> Option<&'static str> {
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
    if r.at_ms < EARLIEST_MS || r.at_ms > now_ms() + 86_400_000 {
        return Some("verification time out of range");
    }
    None
}

fn valid_name(s: &str, what: &str) -> Result<()> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(PlatformError::BadRequest(format!(
            "{what} must be 1–64 of A–Z a–z 0–9 - _ ."
        )));
    }
    Ok(())
}

impl Db {
    /// Opens (or creates) the platform state in `dir`: CA, root key and user secret are made
    /// on first open.
    pub fn open(dir: &Path) -> Result<Db> {
        crate::files::create_private_dir(dir).map_err(|e| PlatformError::Storage(e.to_string()))?;
        let path = dir.join("db");
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(16 * 1024 * 1024)
            .open()?;
        // sled's files hold the CA key, the bundle root key and every code-signing key.
        crate::files::restrict_tree(&path).map_err(|e| PlatformError::Storage(e.to_string()))?;
        let files = crate::files::EngineFiles::open(&path)
            .map_err(|e| PlatformError::Storage(e.to_string()))?;
        let fresh_gaps = !db.tree_names().iter().any(|n| n.as_ref() == b"gaps");
        let t = |n: &str| db.open_tree(n);
        let meta = t("meta")?;
        let authority = match (meta.get("ca_cert")?, meta.get("ca_key")?) {
            (Some(c), Some(k)) => {
                Authority::from_pem(&String::from_utf8_lossy(&c), &String::from_utf8_lossy(&k))
                    .map_err(|e| PlatformError::Storage(e.to_string()))?
            }
            _ => {
                let a = Authority::generate("yima reference platform CA")
                    .map_err(|e| PlatformError::Storage(e.to_string()))?;
                meta.insert("ca_cert", a.cert_pem.as_bytes())?;
                meta.insert("ca_key", a.key_pem().as_bytes())?;
                a
            }
        };
        let root = match meta.get("root_key")? {
            Some(k) => SigningKey::from_bytes(Alg::EdDSA, &k)
                .map_err(|e| PlatformError::Storage(e.to_string()))?,
            None => {
                let k = SigningKey::generate(Alg::EdDSA);
                if let SigningKey::Ed25519(sk) = &k {
                    meta.insert("root_key", sk.to_bytes().as_slice())?;
                }
                k
            }
        };
        let user_secret = match meta.get("user_secret")? {
            Some(s) => s.to_vec(),
            None => {
                let s = random_bytes(32);
                meta.insert("user_secret", s.as_slice())?;
                s
            }
        };
        let log_path = path.join("db");
        let me = Db {
            meta,
            keys: t("keys")?,
            services: t("services")?,
            users: t("users")?,
            statics: t("statics")?,
            status_log: t("status_log")?,
            terminals: t("terminals")?,
            tokens: t("tokens")?,
            certs: t("certs")?,
            records: t("records")?,
            cursors: t("cursors")?,
            gaps: t("gaps")?,
            batches: t("batches")?,
            stats: t("stats")?,
            spent: t("spent")?,
            audit: t("audit")?,
            db,
            log_path,
            files,
            write: Mutex::new(()),
            authority,
            root,
            user_secret: zeroize::Zeroizing::new(user_secret),
            trust_cache: RwLock::new(None),
        };
        if fresh_gaps {
            me.gaps_from_audit()?;
        }
        me.check_cursors()?;
        me.durable()?;
        Ok(me)
    }

    /// sled flush + fsync of any blob file + fsync of its log (sled's flush alone is
    /// `sync_file_range`; see Durability in the module doc).
    fn durable(&self) -> Result<()> {
        self.db.flush()?;
        self.files
            .sync_blobs()
            .map_err(|e| PlatformError::Storage(e.to_string()))?;
        std::fs::File::open(&self.log_path)
            .and_then(|f| f.sync_data())
            .map_err(|e| PlatformError::Storage(format!("fsync: {e}")))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        *self.trust_cache.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub fn root_key(&self) -> &SigningKey {
        &self.root
    }

    // ---- settings ----

    pub fn settings(&self) -> Result<PlatformSettings> {
        Ok(match self.meta.get("settings")? {
            Some(v) => serde_json::from_slice(&v)?,
            None => PlatformSettings::default(),
        })
    }

    pub fn set_settings(&self, s: &PlatformSettings) -> Result<()> {
        crate::verification::trust::Settings::new(s.refresh_s, s.skew_s)
            .map_err(|e| PlatformError::BadRequest(e.to_string()))?;
        if s.max_offline_s <= 0 || s.sync_interval_s == 0 {
            return Err(PlatformError::BadRequest(
                "max_offline_s and sync_interval_s must be positive".into(),
            ));
        }
        self.meta.insert("settings", serde_json::to_vec(s)?)?;
        self.changed();
        self.durable()
    }

    // ---- keys ----

    /// Creates a signing key for `kinds`; it signs new codes of those kinds from now on (the
    /// newest key per kind signs), while older keys stay trusted until retired or expired.
    pub fn create_key(&self, alg: Alg, kinds: &[CodeKind], days: i64) -> Result<String> {
        if kinds.is_empty() || !(1..=3650).contains(&days) {
            return Err(PlatformError::BadRequest(
                "a key needs at least one kind and 1–3650 days".into(),
            ));
        }
        let now = now_ms() / 1000;
        let kid_bytes = random_bytes(8);
        let kid = Kid::new(kid_bytes.clone()).map_err(|e| PlatformError::Storage(e.to_string()))?;
        let pair = KeyPair::generate(alg, kid, now - 60, now + days * 86_400);
        let rec = KeyRecord {
            pair: pair.to_json().to_string(),
            kinds: kinds.to_vec(),
            created_ms: now_ms(),
            retired: false,
        };
        let kid_hex = hex::encode(&kid_bytes);
        self.keys
            .insert(kid_hex.as_bytes(), serde_json::to_vec(&rec)?)?;
        self.changed();
        self.durable()?;
        Ok(kid_hex)
    }

    /// Key rotation: a new key of the same algorithm for the kinds of the newest current one.
    pub fn rotate_key(&self, kind: CodeKind) -> Result<String> {
        let (_, current, rec) = self
            .signing_key(kind)?
            .ok_or_else(|| PlatformError::NotFound(format!("no key signs {kind:?} codes")))?;
        let days = ((current.trusted_key().not_after - now_ms() / 1000) / 86_400).clamp(1, 3650);
        self.create_key(current.trusted_key().alg(), &rec.kinds, days)
    }

    /// Stops trusting a key (its codes become `unknown_key` at the next bundle).
    pub fn retire_key(&self, kid_hex: &str) -> Result<()> {
        let _g = self.lock();
        let v = self
            .keys
            .get(kid_hex.as_bytes())?
            .ok_or_else(|| PlatformError::NotFound(format!("key {kid_hex}")))?;
        let mut rec: KeyRecord = serde_json::from_slice(&v)?;
        rec.retired = true;
        self.keys
            .insert(kid_hex.as_bytes(), serde_json::to_vec(&rec)?)?;
        self.changed();
        self.durable()
    }

    fn all_keys(&self) -> Result<Vec<(String, KeyPair, KeyRecord)>> {
        let mut out = Vec::new();
        for kv in self.keys.iter() {
            let (k, v) = kv?;
            let rec: KeyRecord = serde_json::from_slice(&v)?;
            let pair =
                KeyPair::from_json(&rec.pair).map_err(|e| PlatformError::Storage(e.to_string()))?;
            out.push((String::from_utf8_lossy(&k).into_owned(), pair, rec));
        }
        Ok(out)
    }

    /// Public view of every key: (kid, alg, kinds, retired, not_after).
    pub fn list_keys(&self) -> Result<Vec<serde_json::Value>> {
        Ok(self
            .all_keys()?
            .into_iter()
            .map(|(kid, pair, rec)| {
                let t = pair.trusted_key();
                serde_json::json!({
                    "kid": kid, "alg": t.alg().name(), "kinds": rec.kinds,
                    "retired": rec.retired, "not_after": crate::verification::keys::format_time(t.not_after),
                })
            })
            .collect())
    }

    fn signing_key(&self, kind: CodeKind) -> Result<Option<(String, KeyPair, KeyRecord)>> {
        let now = now_ms() / 1000;
        Ok(self
            .all_keys()?
            .into_iter()
            .filter(|(_, p, r)| {
                !r.retired && r.kinds.contains(&kind) && p.trusted_key().valid_for(kind, now)
            })
            .max_by_key(|(_, _, r)| r.created_ms))
    }

    fn trust_entries(&self) -> Result<Vec<crate::verification::keys::TrustEntry>> {
        let now = now_ms() / 1000;
        Ok(self
            .all_keys()?
            .into_iter()
            .filter(|(_, p, r)| !r.retired && p.trusted_key().not_after >= now)
            .map(|(_, p, r)| {
                let mut e = p.trusted_key().to_entry();
                e.kinds = r
                    .kinds
                    .iter()
                    .map(|k| match k {
                        CodeKind::Dynamic => "dynamic".to_string(),
                        CodeKind::Static => "static".to_string(),
                    })
                    .collect();
                e
            })
            .collect())
    }

    // ---- services ----

    pub fn register_service(&self, code: &str, name: &str) -> Result<()> {
        valid_name(code, "service code")?;
        let rec = ServiceRecord {
            code: code.into(),
            name: name.into(),
            suspended: false,
        };
        self.services
            .insert(code.as_bytes(), serde_json::to_vec(&rec)?)?;
        self.changed();
        self.durable()
    }

    /// Emergency stop (`suspended = true`) or resume.
    pub fn set_service_suspended(&self, code: &str, suspended: bool) -> Result<()> {
        let _g = self.lock();
        let v = self
            .services
            .get(code.as_bytes())?
            .ok_or_else(|| PlatformError::NotFound(format!("service {code}")))?;
        let mut rec: ServiceRecord = serde_json::from_slice(&v)?;
        rec.suspended = suspended;
        self.services
            .insert(code.as_bytes(), serde_json::to_vec(&rec)?)?;
        self.changed();
        self.durable()
    }

    pub fn services(&self) -> Result<Vec<ServiceRecord>> {
        self.services
            .iter()
            .map(|kv| Ok(serde_json::from_slice(&kv?.1)?))
            .collect()
    }

    fn service(&self, code: &str) -> Result<ServiceRecord> {
        let v = self
            .services
            .get(code.as_bytes())?
            .ok_or_else(|| PlatformError::NotFound(format!("service {code}")))?;
        Ok(serde_json::from_slice(&v)?)
    }

    // ---- users and codes ----

    /// The pairwise subject token of a user for a service (no account data in a code).
    fn subject(&self, user: &str, service: &str) -> Result<Vec<u8>> {
        if user.is_empty() {
            return Err(PlatformError::BadRequest("user is empty".into()));
        }
        let holder = self.holder(user);
        if self.users.get(holder.as_bytes())?.is_none() {
            self.users
                .insert(holder.as_bytes(), &now_ms().to_be_bytes())?;
        }
        let mut h = Sha256::new();
        h.update(&*self.user_secret);
        h.update(b"sub\0");
        h.update(user.as_bytes());
        h.update(b"\0");
        h.update(service.as_bytes());
        Ok(h.finalize()[..16].to_vec())
    }

    fn holder(&self, user: &str) -> String {
        let mut h = Sha256::new();
        h.update(&*self.user_secret);
        h.update(b"holder\0");
        h.update(user.as_bytes());
        hex::encode(&h.finalize()[..16])
    }

    fn count(&self, key: &str) -> Result<()> {
        let _g = self.lock();
        let n = self.meta.get(key)?.map_or(0, |v| be_u64(&v));
        self.meta.insert(key, &(n + 1).to_be_bytes())?;
        Ok(())
    }

    /// 生码/亮码: a dynamic code for `user` and `service`, issued now (or at `iat_s`).
    pub fn mint_dynamic(
        &self,
        user: &str,
        service: &str,
        scenes: Option<Vec<String>>,
        mode: Option<AccessMode>,
        iat_s: Option<i64>,
    ) -> Result<String> {
        self.service(service)?;
        let (_, pair, _) = self
            .signing_key(CodeKind::Dynamic)?
            .ok_or_else(|| PlatformError::NotFound("no key signs dynamic codes".into()))?;
        let iat = iat_s.unwrap_or(now_ms() / 1000);
        let refresh = self.settings()?.refresh_s;
        let claims = Claims {
            iss: ISSUER.into(),
            sub: self.subject(user, service)?,
            exp: iat + refresh,
            nbf: None,
            iat,
            cti: random_bytes(16),
            kind: CodeKind::Dynamic,
            service: service.into(),
            scenes,
            mode: Some(mode.unwrap_or(AccessMode::Business)),
            business_codes: vec![],
            catalogue: None,
            serial: None,
            version: None,
        };
        self.count("codes_minted")?;
        Ok(crate::verification::code::mint(
            &pair.signing,
            &pair.kid,
            &claims,
        ))
    }

    // ---- static codes ----

    fn static_record(&self, cat: &str, sn: &str) -> Result<StaticRecord> {
        let v = self
            .statics
            .get(static_key(cat, sn).as_bytes())?
            .ok_or_else(|| PlatformError::NotFound(format!("static code {cat}/{sn}")))?;
        Ok(serde_json::from_slice(&v)?)
    }

    /// Writes a static record and appends its status change (under the write lock).
    fn put_static(&self, rec: &StaticRecord) -> Result<()> {
        let seq = self.meta.get("status_seq")?.map_or(0, |v| be_u64(&v)) + 1;
        let change = StatusChange {
            cat: rec.cat.clone(),
            sn: rec.sn.clone(),
            state: rec.state,
            min_version: rec.min_version,
        };
        self.statics.insert(
            static_key(&rec.cat, &rec.sn).as_bytes(),
            serde_json::to_vec(rec)?,
        )?;
        self.status_log
            .insert(seq.to_be_bytes(), serde_json::to_vec(&change)?)?;
        self.meta.insert("status_seq", &seq.to_be_bytes())?;
        self.changed();
        self.durable()
    }

    /// 注册: registers a static code (enabled, version 1) for a user and service.
    pub fn register_static(
        &self,
        cat: &str,
        sn: &str,
        user: &str,
        service: &str,
    ) -> Result<StaticRecord> {
        valid_name(cat, "catalogue")?;
        valid_name(sn, "serial")?;
        self.service(service)?;
        let _g = self.lock();
        if self.statics.get(static_key(cat, sn).as_bytes())?.is_some() {
            return Err(PlatformError::Conflict(format!(
                "static code {cat}/{sn} exists"
            )));
        }
        let rec = StaticRecord {
            cat: cat.into(),
            sn: sn.into(),
            service: service.into(),
            holder: self.holder(user),
            state: StaticState::Enabled,
            version: 1,
            min_version: 1,
            sub: self.subject(user, service)?,
        };
        self.put_static(&rec)?;
        Ok(rec)
    }

    /// 申领: the code text of a static code at its current version.
    pub fn apply_static(&self, cat: &str, sn: &str) -> Result<String> {
        let rec = self.static_record(cat, sn)?;
        if rec.state != StaticState::Enabled {
            return Err(PlatformError::Conflict(format!(
                "static code {cat}/{sn} is {:?}",
                rec.state
            )));
        }
        let (_, pair, _) = self
            .signing_key(CodeKind::Static)?
            .ok_or_else(|| PlatformError::NotFound("no key signs static codes".into()))?;
        let iat = now_ms() / 1000;
        let claims = Claims {
            iss: ISSUER.into(),
            sub: rec.sub.clone(),
            exp: pair.trusted_key().not_after,
            nbf: None,
            iat,
            cti: random_bytes(16),
            kind: CodeKind::Static,
            service: rec.service.clone(),
            scenes: None,
            mode: Some(AccessMode::Independent),
            business_codes: vec![],
            catalogue: Some(rec.cat.clone()),
            serial: Some(rec.sn.clone()),
            version: Some(rec.version),
        };
        self.count("codes_minted")?;
        Ok(crate::verification::code::mint(
            &pair.signing,
            &pair.kid,
            &claims,
        ))
    }

    /// 启用 / 停用 / 挂失 / 注销: sets the state of a static code.
    pub fn set_static_state(
        &self,
        cat: &str,
        sn: &str,
        state: StaticState,
    ) -> Result<StaticRecord> {
        let _g = self.lock();
        let mut rec = self.static_record(cat, sn)?;
        if rec.state == StaticState::Cancelled && state != StaticState::Cancelled {
            return Err(PlatformError::Conflict(format!(
                "static code {cat}/{sn} is cancelled"
            )));
        }
        rec.state = state;
        self.put_static(&rec)?;
        Ok(rec)
    }

    /// 信息变更 / 换码: raises the version; codes of older versions are refused as replaced.
    pub fn bump_static_version(&self, cat: &str, sn: &str) -> Result<StaticRecord> {
        let _g = self.lock();
        let mut rec = self.static_record(cat, sn)?;
        rec.version += 1;
        rec.min_version = rec.version;
        if rec.state != StaticState::Cancelled {
            rec.state = StaticState::Enabled;
        }
        self.put_static(&rec)?;
        Ok(rec)
    }

    /// 查询.
    pub fn query_static(&self, cat: &str, sn: &str) -> Result<StaticRecord> {
        self.static_record(cat, sn)
    }

    // ---- terminals ----

    /// Authorizes a terminal and returns its one-time enrollment token.
    pub fn create_terminal(
        &self,
        id: &str,
        scenes: Vec<String>,
        accept_unknown_static: bool,
    ) -> Result<String> {
        valid_name(id, "terminal id")?;
        let _g = self.lock();
        if self.terminals.get(id.as_bytes())?.is_some() {
            return Err(PlatformError::Conflict(format!("terminal {id} exists")));
        }
        let rec = TerminalRecord {
            id: id.into(),
            scenes,
            accept_unknown_static,
            authorized: true,
            enrolled: false,
            cert_fingerprint: None,
        };
        self.terminals
            .insert(id.as_bytes(), serde_json::to_vec(&rec)?)?;
        let token = self.new_token(id)?;
        self.durable()?;
        Ok(token)
    }

    /// A new enrollment token for an existing terminal (a replacement gate, a certificate
    /// renewal); earlier unspent tokens stay valid until used.
    pub fn reissue_token(&self, id: &str) -> Result<String> {
        let _g = self.lock();
        let rec = self.terminal(id)?;
        if !rec.authorized {
            return Err(PlatformError::Forbidden(format!(
                "terminal {id} is revoked"
            )));
        }
        let token = self.new_token(id)?;
        self.durable()?;
        Ok(token)
    }

    fn new_token(&self, id: &str) -> Result<String> {
        let secret = hex::encode(random_bytes(16));
        self.tokens
            .insert(sha_hex(secret.as_bytes()).as_bytes(), id.as_bytes())?;
        let fp = self
            .authority
            .fingerprint()
            .map_err(|e| PlatformError::Storage(e.to_string()))?;
        Ok(crate::sync::EnrollToken::format(&secret, &fp))
    }

    /// Revokes (or re-authorizes) a terminal: its bundles say so and it stops being served.
    pub fn set_terminal_authorized(&self, id: &str, authorized: bool) -> Result<()> {
        let _g = self.lock();
        let mut rec = self.terminal(id)?;
        rec.authorized = authorized;
        self.terminals
            .insert(id.as_bytes(), serde_json::to_vec(&rec)?)?;
        self.durable()
    }

    pub fn terminal(&self, id: &str) -> Result<TerminalRecord> {
        let v = self
            .terminals
            .get(id.as_bytes())?
            .ok_or_else(|| PlatformError::NotFound(format!("terminal {id}")))?;
        Ok(serde_json::from_slice(&v)?)
    }

    pub fn terminals(&self) -> Result<Vec<TerminalRecord>> {
        self.terminals
            .iter()
            .map(|kv| Ok(serde_json::from_slice(&kv?.1)?))
            .collect()
    }

    /// Enrollment: spends the token, signs the terminal's request, records the certificate.
    /// Enrolls the terminal a token was issued for. A gate that says which terminal it is
    /// configured as gets a refusal — and keeps its token — when the token is for another.
    pub fn enroll(
        &self,
        token_secret: &str,
        csr_pem: &str,
        claimed_id: Option<&str>,
    ) -> Result<(TerminalRecord, String)> {
        let _g = self.lock();
        let key = sha_hex(token_secret.as_bytes());
        let id = self
            .tokens
            .get(key.as_bytes())?
            .ok_or_else(|| PlatformError::Forbidden("unknown or spent enrollment token".into()))?;
        let id = String::from_utf8_lossy(&id).into_owned();
        if let Some(claimed) = claimed_id.filter(|c| *c != id) {
            return Err(PlatformError::Forbidden(format!(
                "this token was issued for terminal {id}, not {claimed}; it is still valid for {id}"
            )));
        }
        let mut rec = self.terminal(&id)?;
        if !rec.authorized {
            return Err(PlatformError::Forbidden("terminal is revoked".into()));
        }
        let cert = self
            .authority
            .sign_terminal(csr_pem, &id)
            .map_err(|e| PlatformError::BadRequest(format!("certificate request: {e}")))?;
        let der = crate::sync::tls::certs_from_pem(&cert)
            .map_err(|e| PlatformError::Storage(e.to_string()))?;
        let fp = crate::sync::tls::fingerprint(&der[0]);
        if let Some(old) = &rec.cert_fingerprint {
            self.certs.remove(old.as_bytes())?;
        }
        self.certs.insert(fp.as_bytes(), id.as_bytes())?;
        rec.enrolled = true;
        rec.cert_fingerprint = Some(fp);
        self.terminals
            .insert(id.as_bytes(), serde_json::to_vec(&rec)?)?;
        self.tokens.remove(key.as_bytes())?;
        self.durable()?;
        Ok((rec, cert))
    }

    /// The terminal a client certificate belongs to.
    pub fn terminal_by_cert(&self, fingerprint: &str) -> Result<Option<TerminalRecord>> {
        match self.certs.get(fingerprint.as_bytes())? {
            Some(id) => Ok(Some(self.terminal(&String::from_utf8_lossy(&id))?)),
            None => Ok(None),
        }
    }

    // ---- bundles ----

    /// The bundle for `terminal`, with status changes after `since`. A revoked terminal gets
    /// a bundle that says so and carries no keys.
    pub fn bundle(&self, t: &TerminalRecord, since: u64) -> Result<Bundle> {
        let last = self.meta.get("status_seq")?.map_or(0, |v| be_u64(&v));
        let full = since == 0 || since > last;
        let from = if full { 0 } else { since };
        let mut changes = Vec::new();
        let mut through = from;
        let mut more = false;
        if full {
            // Full list: the current state of every static code (bounded like any delta).
            for kv in self.statics.iter() {
                let rec: StaticRecord = serde_json::from_slice(&kv?.1)?;
                changes.push(StatusChange {
                    cat: rec.cat,
                    sn: rec.sn,
                    state: rec.state,
                    min_version: rec.min_version,
                });
            }
            through = last;
        } else {
            for kv in self.status_log.range((from + 1).to_be_bytes()..) {
                let (k, v) = kv?;
                if changes.len() >= crate::sync::wire::MAX_STATUS_CHANGES {
                    more = true;
                    break;
                }
                changes.push(serde_json::from_slice(&v)?);
                through = be_u64(&k);
            }
        }
        let services = self.services()?;
        Ok(Bundle {
            terminal_id: t.id.clone(),
            issued_at_ms: now_ms(),
            terminal: TerminalProfile {
                authorized: t.authorized,
                scenes: t.scenes.clone(),
                accept_unknown_static: t.accept_unknown_static,
            },
            keys: if t.authorized {
                self.trust_entries()?
            } else {
                vec![]
            },
            statuses: StatusDelta {
                full,
                since,
                through,
                more,
                changes,
            },
            suspended_services: services
                .into_iter()
                .filter(|s| s.suspended)
                .map(|s| s.code)
                .collect(),
            settings: self.settings()?,
        })
    }

    // ---- records ----

    /// Stores a batch exactly once and answers the store's contiguous cursor. The same
    /// idempotency key (or a held seq) with other content is a conflict and stores nothing.
    pub fn ingest(&self, terminal: &str, batch: &RecordBatch) -> Result<PushReply> {
        valid_name(&batch.store_id, "store_id")?;
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
        let digest = digest.finalize().to_vec();
        let mut batch_key = terminal.as_bytes().to_vec();
        batch_key.push(0);
        batch_key.extend_from_slice(batch.idempotency_key.as_bytes());
        let store = batch.store_id.as_str();
        let cursor_key = store_key(terminal, store);

        let _g = self.lock();
        if let Some(prev) = self.batches.get(&batch_key)? {
            if prev.as_ref() != digest.as_slice() {
                return Err(PlatformError::Conflict(format!(
                    "batch {} was received with other content",
                    batch.idempotency_key
                )));
            }
        }
        let mut cursor = self.cursors.get(&cursor_key)?.map_or(0, |v| be_u64(&v));
        // The cursor must not claim more than is held (see Durability in the module doc).
        if !self.cursor_chunk_present(terminal, store, cursor)? {
            let checked = self.check_store(terminal, store, cursor)?;
            if checked != cursor {
                self.rebuild_stats()?;
                cursor = checked;
            }
        }
        // A terminal only deletes what a cursor confirmed, so a batch past this cursor means
        // this platform lost records it had confirmed (restored from a backup, or found
        // missing). Answering 409 would strand the terminal; the gap is recorded for the
        // operator instead and both sides go on from the batch.
        let mut gap = None;
        if batch.first_seq > cursor + 1 {
            let range = SeqRange {
                from: cursor + 1,
                to: batch.first_seq - 1,
            };
            let missing = self.missing_ranges(terminal, store, range.from, range.to)?;
            self.audit(
                "gap",
                terminal,
                serde_json::json!({ "store_id": store, "from": range.from, "to": range.to,
                                    "missing": ranges_json(&missing) }),
            )?;
            for m in &missing {
                self.gaps
                    .insert(record_key(terminal, store, m.0), &m.1.to_be_bytes())?;
            }
            tracing::error!(%terminal, store = %store, from = range.from, to = range.to,
                "platform: records this platform had confirmed are missing (restored from a backup?)");
            gap = Some(range);
            cursor = batch.first_seq - 1;
        }
        // Records already held (at or below the cursor, or above it from before a missing
        // range was found) must match what is held, byte for byte.
        let held = self.held_range(terminal, store, batch.first_seq, last)?;
        let mut is_held = vec![false; n];
        for (seq, bytes) in held {
            let i = (seq - batch.first_seq) as usize;
            if encoded
                .get(i)
                .is_none_or(|e| e.as_slice() != bytes.as_slice())
            {
                return Err(PlatformError::Conflict(format!(
                    "record {seq} of store {store} is held with other content"
                )));
            }
            is_held[i] = true;
        }
        // What is new becomes chunks of at most CHUNK_BYTES, each keyed by its first seq.
        let mut fresh: Vec<&RecordWire> = Vec::new();
        let mut chunk: Vec<u8> = Vec::new();
        let mut chunk_first = 0;
        for (i, e) in encoded.iter().enumerate() {
            let seq = batch.first_seq + i as u64;
            let new = seq > cursor && !is_held[i];
            if !chunk.is_empty() && (!new || chunk.len() + e.len() + 1 > CHUNK_BYTES) {
                self.records.insert(
                    record_key(terminal, store, chunk_first),
                    std::mem::take(&mut chunk),
                )?;
            }
            if new {
                if chunk.is_empty() {
                    chunk_first = seq;
                }
                chunk.extend_from_slice(e);
                chunk.push(b'\n');
                fresh.push(&batch.records[i]);
            }
        }
        if !chunk.is_empty() {
            self.records
                .insert(record_key(terminal, store, chunk_first), chunk)?;
        }
        if last > cursor {
            // Every seq up to `last` is held now; records held beyond it extend the cursor.
            let through = self.held_through(terminal, store, last)?;
            self.cursors.insert(&cursor_key, &through.to_be_bytes())?;
            cursor = through;
        }
        self.batches.insert(batch_key, digest)?;
        // Records whose fields are out of bounds are held (they are the terminal's) but kept
        // out of the statistics, each recorded as an anomaly.
        let (sane, odd): (Vec<&RecordWire>, Vec<&RecordWire>) =
            fresh.into_iter().partition(|r| record_problem(r).is_none());
        for r in odd.iter().take(100) {
            self.audit(
                "anomalous_record",
                terminal,
                serde_json::json!({ "store_id": store, "seq": r.seq, "problem": record_problem(r) }),
            )?;
        }
        self.add_stats(terminal, &sane)?;
        self.durable()?;
        Ok(PushReply {
            committed_through: last.max(cursor),
            gap,
        })
    }

    /// The chunks of one store from the one holding `from` on, as (first seq, last seq, bytes),
    /// in seq order, up to the one holding `to`.
    fn chunks(
        &self,
        terminal: &str,
        store: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, u64, sled::IVec)>> {
        let start = record_key(terminal, store, 0);
        let first_chunk = self
            .records
            .range(start.clone()..=record_key(terminal, store, from))
            .next_back()
            .transpose()?
            .map(|(k, _)| k.to_vec())
            .unwrap_or(start);
        let mut out = Vec::new();
        for kv in self
            .records
            .range(first_chunk..=record_key(terminal, store, to))
        {
            let (k, v) = kv?;
            let first = chunk_seq(&k);
            let lines = v.iter().filter(|b| **b == b'\n').count() as u64;
            if lines == 0 {
                continue;
            }
            let last = first + lines - 1;
            if last >= from {
                out.push((first, last, v));
            }
        }
        Ok(out)
    }

    /// The held records `from..=to` of one store, as stored bytes.
    fn held_range(
        &self,
        terminal: &str,
        store: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::new();
        for (first, _, v) in self.chunks(terminal, store, from, to)? {
            let lines = v.split(|b| *b == b'\n').filter(|l| !l.is_empty());
            for (seq, line) in (first..).zip(lines) {
                if (from..=to).contains(&seq) {
                    out.push((seq, line.to_vec()));
                }
            }
        }
        Ok(out)
    }

    /// The ranges of `from..=to` that no chunk holds, in order.
    fn missing_ranges(
        &self,
        terminal: &str,
        store: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, u64)>> {
        let mut missing = Vec::new();
        let mut next = from;
        for (first, last, _) in self.chunks(terminal, store, from, to)? {
            if first > next {
                missing.push((next, first - 1));
            }
            next = next.max(last.saturating_add(1));
        }
        if next <= to {
            missing.push((next, to));
        }
        Ok(missing)
    }

    /// The end of the run of held seqs that starts at `seq` (held) and goes on contiguously.
    fn held_through(&self, terminal: &str, store: &str, seq: u64) -> Result<u64> {
        let mut through = seq;
        let mut prefix = store_key(terminal, store);
        prefix.push(0);
        for kv in self
            .records
            .range(record_key(terminal, store, seq.saturating_add(1))..)
        {
            let (k, v) = kv?;
            if !k.starts_with(&prefix) || chunk_seq(&k) != through.saturating_add(1) {
                break;
            }
            through += v.iter().filter(|b| **b == b'\n').count() as u64;
        }
        Ok(through)
    }

    /// True when the seq at `cursor` is held (or is the end of a recorded gap, or 0): the
    /// cheap check made at every ingest.
    fn cursor_chunk_present(&self, terminal: &str, store: &str, cursor: u64) -> Result<bool> {
        if cursor == 0 {
            return Ok(true);
        }
        let held = self
            .chunks(terminal, store, cursor, cursor)?
            .iter()
            .any(|(first, last, _)| (*first..=*last).contains(&cursor));
        Ok(held
            || self
                .known_gaps(terminal, store)?
                .iter()
                .any(|(f, t)| (*f..=*t).contains(&cursor)))
    }

    /// The recorded gaps of one store, as (from, to).
    fn known_gaps(&self, terminal: &str, store: &str) -> Result<Vec<(u64, u64)>> {
        let mut prefix = store_key(terminal, store);
        prefix.push(0);
        self.gaps
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((chunk_seq(&k), be_u64(&v)))
            })
            .collect()
    }

    /// Checks the records below one store's cursor; a missing range not recorded as a gap
    /// moves the cursor back to just before it and is audited. Returns the cursor.
    fn check_store(&self, terminal: &str, store: &str, cursor: u64) -> Result<u64> {
        let gaps = self.known_gaps(terminal, store)?;
        let missing: Vec<(u64, u64)> = self
            .missing_ranges(terminal, store, 1, cursor)?
            .into_iter()
            .flat_map(|m| subtract(m, &gaps))
            .collect();
        let Some(&(first_missing, _)) = missing.first() else {
            return Ok(cursor);
        };
        let corrected = first_missing - 1;
        let lost: u64 = missing.iter().map(|(f, t)| t - f + 1).sum();
        self.audit(
            "records_missing",
            terminal,
            serde_json::json!({ "store_id": store, "cursor_was": cursor, "cursor_now": corrected,
                                "missing": ranges_json(&missing), "records": lost }),
        )?;
        tracing::error!(%terminal, %store, cursor_was = cursor, cursor_now = corrected, records = lost,
            "platform: records below a cursor are missing; the cursor is moved back so the gate pushes them again");
        self.cursors
            .insert(store_key(terminal, store), &corrected.to_be_bytes())?;
        Ok(corrected)
    }

    /// Checks every cursor (at open); recounts the statistics if any moved back.
    fn check_cursors(&self) -> Result<()> {
        let mut moved = false;
        let cursors: Vec<(Vec<u8>, u64)> = self
            .cursors
            .iter()
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), be_u64(&v))))
            .collect::<std::result::Result<_, _>>()?;
        for (k, cursor) in cursors {
            let mut parts = k.splitn(2, |b| *b == 0);
            let terminal = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let store = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            moved |= self.check_store(&terminal, &store, cursor)? != cursor;
        }
        if moved {
            self.rebuild_stats()?;
        }
        Ok(())
    }

    /// The statistics recounted from the records held (after records were found missing),
    /// chunk by chunk.
    fn rebuild_stats(&self) -> Result<()> {
        let mut counts = HashMap::new();
        let mut recounted = 0usize;
        for kv in self.records.iter() {
            let (k, v) = kv?;
            let terminal = String::from_utf8_lossy(k.split(|b| *b == 0).next().unwrap_or_default())
                .into_owned();
            for line in v.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let r: RecordWire = serde_json::from_slice(line)?;
                if record_problem(&r).is_none() {
                    count_stats(&terminal, &r, &mut counts);
                    recounted += 1;
                }
            }
        }
        self.stats.clear()?;
        let mut writes = sled::Batch::default();
        for (k, n) in counts {
            writes.insert(k.as_bytes(), &n.to_be_bytes());
        }
        self.stats.apply_batch(writes)?;
        tracing::warn!(
            records = recounted,
            "platform: statistics recounted from the records held"
        );
        Ok(())
    }

    /// Gaps recorded before the `gaps` tree existed, from their audit events.
    fn gaps_from_audit(&self) -> Result<()> {
        for kv in self.audit.iter() {
            let event: serde_json::Value = serde_json::from_slice(&kv?.1)?;
            let d = &event["detail"];
            if let (Some("gap"), Some(terminal), Some(store), Some(from), Some(to)) = (
                event["kind"].as_str(),
                event["terminal"].as_str(),
                d["store_id"].as_str(),
                d["from"].as_u64(),
                d["to"].as_u64(),
            ) {
                self.gaps
                    .insert(record_key(terminal, store, from), &to.to_be_bytes())?;
            }
        }
        Ok(())
    }

    /// Appends an audit event (gaps, anomalous records) for the operator.
    fn audit(&self, kind: &str, terminal: &str, detail: serde_json::Value) -> Result<()> {
        let seq = self.db.generate_id()?;
        let event = serde_json::json!({
            "seq": seq,
            "at_ms": now_ms(),
            "kind": kind,
            "terminal": terminal,
            "detail": detail,
        });
        self.audit
            .insert(seq.to_be_bytes(), serde_json::to_vec(&event)?)?;
        Ok(())
    }

    /// The newest audit events, newest first.
    pub fn audit_events(&self, limit: usize) -> Result<Vec<serde_json::Value>> {
        self.audit
            .iter()
            .rev()
            .take(limit)
            .map(|kv| Ok(serde_json::from_slice(&kv?.1)?))
            .collect()
    }

    fn add_stats(&self, terminal: &str, records: &[&RecordWire]) -> Result<()> {
        let mut counts: HashMap<String, u64> = HashMap::new();
        for r in records {
            count_stats(terminal, r, &mut counts);
        }
        let mut writes = sled::Batch::default();
        for (k, n) in counts {
            let old = self.stats.get(k.as_bytes())?.map_or(0, |v| be_u64(&v));
            writes.insert(k.as_bytes(), &(old + n).to_be_bytes());
        }
        self.stats.apply_batch(writes)?;
        Ok(())
    }

    /// Every record held for one terminal, by store then seq.
    pub fn records_of(&self, terminal: &str) -> Result<Vec<(String, RecordWire)>> {
        let mut prefix = terminal.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for kv in self.records.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let rest = &k[prefix.len()..];
            let store = rest
                .split(|b| *b == 0)
                .next()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .unwrap_or_default();
            for line in v.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                out.push((store.clone(), serde_json::from_slice(line)?));
            }
        }
        Ok(out)
    }

    /// The contiguous cursor of one terminal's store.
    pub fn cursor(&self, terminal: &str, store_id: &str) -> Result<u64> {
        Ok(self
            .cursors
            .get(store_key(terminal, store_id))?
            .map_or(0, |v| be_u64(&v)))
    }

    pub fn stats(&self) -> Result<Stats> {
        let mut s = Stats {
            users: self.users.len() as u64,
            codes_minted: self.meta.get("codes_minted")?.map_or(0, |v| be_u64(&v)),
            static_codes: self.statics.len() as u64,
            terminals: self.terminals.len() as u64,
            ..Stats::default()
        };
        for kv in self.stats.iter() {
            let (k, v) = kv?;
            let k = String::from_utf8_lossy(&k);
            let n = be_u64(&v);
            let (dim, value) = k.split_once('\u{0}').unwrap_or((&k, ""));
            let map = match dim {
                "verdict" => &mut s.by_verdict,
                "service" => &mut s.by_service,
                "scene" => &mut s.by_scene,
                "terminal" => &mut s.by_terminal,
                "hour" => &mut s.by_hour,
                "records" => {
                    s.records = n;
                    continue;
                }
                _ => continue,
            };
            map.insert(value.to_string(), n);
        }
        Ok(s)
    }

    // ---- online decode ----

    fn trust(&self) -> Result<Arc<TrustState>> {
        if let Some(t) = self
            .trust_cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(t);
        }
        let settings = self.settings()?;
        let mut trust = TrustState {
            keys: crate::verification::keys::KeyRing::new(
                self.trust_entries()?
                    .iter()
                    .filter_map(|e| crate::verification::keys::TrustedKey::from_entry(e).ok()),
            ),
            terminal: Terminal::default(),
            settings: crate::verification::trust::Settings::new(
                settings.refresh_s,
                settings.skew_s,
            )
            .map_err(|e| PlatformError::Storage(e.to_string()))?,
            ..TrustState::default()
        };
        for kv in self.statics.iter() {
            let rec: StaticRecord = serde_json::from_slice(&kv?.1)?;
            trust.statuses.set(
                &rec.cat,
                &rec.sn,
                StaticStatus {
                    state: rec.state,
                    min_version: rec.min_version,
                },
            );
        }
        for s in self.services()? {
            if s.suspended {
                trust.services.suspend(&s.code);
            }
        }
        let trust = Arc::new(trust);
        *self.trust_cache.write().unwrap_or_else(|p| p.into_inner()) = Some(trust.clone());
        Ok(trust)
    }

    /// 在线解码: verifies a code for a terminal with the platform's own state; a dynamic code
    /// is spent platform-wide (a second gate anywhere gets `replayed`). Scenes are the
    /// terminal's business and are not checked here.
    pub fn decode(&self, code: &str) -> Result<Reason> {
        let trust = self.trust()?;
        let at = crate::clock::VerifyTime::trusted(now_ms());
        let _g = self.lock();
        let view = SpentView {
            spent: &self.spent,
            now_ms: at.unix_ms,
        };
        let v = crate::verification::verifier::verify(code, at, &trust, &view);
        if let Some(claim) = v.replay {
            self.spent
                .insert(claim.tag.0, &claim.expires_at_ms.to_be_bytes())?;
            self.durable()?;
        }
        Ok(v.verdict.reason)
    }
}

struct SpentView<'a> {
    spent: &'a sled::Tree,
    now_ms: i64,
}

impl ReplayView for SpentView<'_> {
    fn replay_status(&self, tag: &ReplayTag, _window_start_ms: i64) -> ReplayStatus {
        match self.spent.get(tag.0) {
            Ok(Some(v)) => match <[u8; 8]>::try_from(v.as_ref()).map(i64::from_be_bytes) {
                Ok(end) if end < self.now_ms => ReplayStatus::Fresh,
                _ => ReplayStatus::Spent,
            },
            Ok(None) => ReplayStatus::Fresh,
            Err(_) => ReplayStatus::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verification::verdict::Reason;

    const T: &str = "GATE-T";
    const STORE: &str = "0123456789abcdef";

    fn record(seq: u64) -> RecordWire {
        RecordWire {
            seq,
            at_ms: 1_780_000_000_000 + seq as i64,
            clock_trusted: true,
            reason: Reason::Accepted,
            online_reason: None,
            kind: Some(CodeKind::Dynamic),
            service: Some("SVC-BUS".into()),
            scene: Some("GATE-1".into()),
            alg: Some("EdDSA".into()),
            kid: Some("0011223344556677".into()),
            issuer: Some("YMTB-REF".into()),
            cti_hash: Some("00112233445566778899aabbccddeeff".into()),
            sub_hash: Some("ffeeddccbbaa99887766554433221100".into()),
        }
    }

    fn batch(first: u64, n: u64) -> RecordBatch {
        RecordBatch {
            store_id: STORE.into(),
            idempotency_key: RecordBatch::key(STORE, first, first + n - 1),
            first_seq: first,
            records: (first..first + n).map(record).collect(),
        }
    }

    fn held_seqs(db: &Db) -> Vec<u64> {
        db.records_of(T)
            .expect("records")
            .into_iter()
            .map(|(_, r)| r.seq)
            .collect()
    }

    fn events(db: &Db, kind: &str) -> usize {
        db.audit_events(10_000)
            .expect("audit")
            .iter()
            .filter(|e| e["kind"] == kind)
            .count()
    }

    /// Removes the chunks whose first seq lies in `range`, as the blob loss of an earlier
    /// version did; returns the seqs they held.
    fn lose_chunks(db: &Db, range: std::ops::RangeInclusive<u64>) -> Vec<u64> {
        let mut lost = Vec::new();
        for (first, last, _) in db.chunks(T, STORE, 1, u64::MAX >> 1).expect("chunks") {
            if range.contains(&first) {
                db.records
                    .remove(record_key(T, STORE, first))
                    .expect("remove");
                lost.extend(first..=last);
            }
        }
        db.durable().expect("durable");
        lost
    }

    #[test]
    fn values_stay_below_the_blob_threshold() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = Db::open(dir.path()).expect("open");
        db.ingest(T, &batch(1, 5000)).expect("ingest");
        let chunks = db.chunks(T, STORE, 1, 5000).expect("chunks");
        assert!(
            chunks.len() > 100,
            "5,000 records in {} chunks",
            chunks.len()
        );
        assert!(chunks.iter().all(|(_, _, v)| v.len() <= CHUNK_BYTES));
        assert_eq!(db.files.sync_blobs().expect("blobs"), 0);
        assert_eq!(db.files.blob_count(), 0, "sled wrote no blob file");
        assert_eq!(held_seqs(&db), (1..=5000).collect::<Vec<_>>());
    }

    #[test]
    fn a_cursor_over_missing_records_moves_back_is_audited_and_the_gate_refills_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = Db::open(dir.path()).expect("open");
        for first in [1, 301] {
            db.ingest(T, &batch(first, 300)).expect("ingest");
        }
        assert_eq!(db.stats().expect("stats").records, 600);
        let lost = lose_chunks(&db, 320..=400);
        assert!(!lost.is_empty());
        drop(db);

        // Open: the cursor stops before the first missing record; audited; stats recounted.
        let db = Db::open(dir.path()).expect("reopen");
        let first_lost = lost[0];
        assert_eq!(db.cursor(T, STORE).expect("cursor"), first_lost - 1);
        assert_eq!(events(&db, "records_missing"), 1);
        assert_eq!(db.stats().expect("stats").records, 600 - lost.len() as u64);
        // The gate still had them (it had not deleted yet): its re-push fills the hole, the
        // records held above it are not stored twice, the cursor runs to the end.
        let reply = db
            .ingest(T, &batch(first_lost, 601 - first_lost))
            .expect("refill");
        assert_eq!(reply.committed_through, 600);
        assert!(reply.gap.is_none());
        assert_eq!(held_seqs(&db), (1..=600).collect::<Vec<_>>());
        assert_eq!(db.stats().expect("stats").records, 600);
        // Other content for a record held above the hole is refused.
        let lost = lose_chunks(&db, 500..=520);
        drop(db);
        let db = Db::open(dir.path()).expect("reopen");
        let mut other = batch(lost[0], 601 - lost[0]);
        other.records.last_mut().expect("last").reason = Reason::Replayed;
        assert!(matches!(
            db.ingest(T, &other),
            Err(PlatformError::Conflict(_))
        ));

        // A gate that had deleted them pushes on from where it is: a gap, recorded once.
        let reply = db.ingest(T, &batch(601, 10)).expect("past the hole");
        assert_eq!(reply.committed_through, 610);
        let gap = reply.gap.expect("gap");
        assert_eq!(gap.from, lost[0]);
        assert_eq!(events(&db, "gap"), 1);
        drop(db);
        let db = Db::open(dir.path()).expect("reopen");
        assert_eq!(
            events(&db, "records_missing"),
            2,
            "the gap is not found again"
        );
        assert_eq!(db.cursor(T, STORE).expect("cursor"), 610);
        assert_eq!(db.stats().expect("stats").records, 610 - lost.len() as u64);
    }

    #[test]
    fn a_missing_cursor_chunk_is_found_at_ingest() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = Db::open(dir.path()).expect("open");
        db.ingest(T, &batch(1, 100)).expect("ingest");
        let lost = lose_chunks(&db, 60..=100);
        // Not reopened: the next push finds the cursor's chunk gone.
        let reply = db
            .ingest(T, &batch(lost[0], 101 - lost[0] + 5))
            .expect("refill");
        assert_eq!(reply.committed_through, 105);
        assert_eq!(events(&db, "records_missing"), 1);
        assert_eq!(held_seqs(&db), (1..=105).collect::<Vec<_>>());
        assert_eq!(db.stats().expect("stats").records, 105);
    }

    #[test]
    fn sequence_numbers_never_wrap_and_records_are_bounded() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = Db::open(dir.path()).expect("open");
        for first in [u64::MAX, u64::MAX - 1, MAX_SEQ, 0] {
            let mut b = batch(1, 2);
            b.first_seq = first;
            for (i, r) in b.records.iter_mut().enumerate() {
                r.seq = first.wrapping_add(i as u64);
            }
            b.idempotency_key = RecordBatch::key(STORE, first, first.wrapping_add(1));
            assert!(
                matches!(db.ingest(T, &b), Err(PlatformError::BadRequest(_))),
                "first_seq {first}"
            );
        }
        assert_eq!(db.cursor(T, STORE).expect("cursor"), 0);
        let mut big = batch(1, 3);
        big.records[1].service = Some("x".repeat(MAX_RECORD_BYTES));
        assert!(matches!(
            db.ingest(T, &big),
            Err(PlatformError::BadRequest(_))
        ));
        assert!(held_seqs(&db).is_empty());
        db.ingest(T, &batch(1, 3)).expect("the same seqs, sane");
        assert_eq!(held_seqs(&db), vec![1, 2, 3]);
    }
}
