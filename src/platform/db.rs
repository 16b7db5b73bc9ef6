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

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::platform::ca::Authority;
use crate::platform::records::sled_store::{SledLog, SledRecords};
use crate::platform::records::{RecordStats, RecordStore};
use crate::sync::wire::{
    Bundle, PlatformSettings, PushReply, RecordBatch, RecordWire, StatusChange, StatusDelta,
    TerminalProfile,
};
use crate::verification::code::Claims;
use crate::verification::keys::{Alg, KeyPair, Kid, SigningKey};
use crate::verification::trust::{StaticState, StaticStatus, Terminal, TrustState};
use crate::verification::verdict::{AccessMode, CodeKind, Reason};
use crate::verification::verifier::{ReplayStatus, ReplayTag, ReplayView};

/// The issuer name of codes this platform mints.
pub const ISSUER: &str = "YMTB-REF";

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
    /// The database cannot be reached now (down, restarting, out of connections or disk):
    /// nothing was stored, and the same request may be sent again later (503, Retry-After).
    #[error("unavailable: {0}")]
    Unavailable(String),
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

pub type Result<T> = std::result::Result<T, PlatformError>;

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
    /// The records held, by dimension (from the record store).
    #[serde(flatten)]
    pub held: RecordStats,
}

/// The platform's state.
pub struct Db {
    /// The sled database and what makes a change durable in it.
    log: Arc<SledLog>,
    meta: sled::Tree,
    keys: sled::Tree,
    services: sled::Tree,
    users: sled::Tree,
    statics: sled::Tree,
    status_log: sled::Tree,
    terminals: sled::Tree,
    tokens: sled::Tree,
    certs: sled::Tree,
    spent: sled::Tree,
    /// Records, cursors, gaps, audit log and record statistics (`records/`).
    records: Box<dyn RecordStore>,
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

pub(crate) fn valid_name(s: &str, what: &str) -> Result<()> {
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
        Db::open_with(dir, None)
    }

    /// [`Db::open`], with the records in PostgreSQL when `database` is given (the rest of
    /// the state stays in `dir`).
    pub fn open_with(
        dir: &Path,
        database: Option<&crate::platform::records::pg_store::PgOptions>,
    ) -> Result<Db> {
        crate::files::create_private_dir(dir).map_err(|e| PlatformError::Storage(e.to_string()))?;
        let log = SledLog::open(&dir.join("db"))?;
        let db = &log.db;
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
        let records: Box<dyn RecordStore> = match database {
            Some(opts) => Box::new(crate::platform::records::pg_store::PgRecords::open(opts)?),
            None => Box::new(SledRecords::open(log.clone())?),
        };
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
            spent: t("spent")?,
            records,
            log,
            write: Mutex::new(()),
            authority,
            root,
            user_secret: zeroize::Zeroizing::new(user_secret),
            trust_cache: RwLock::new(None),
        };
        me.durable()?;
        Ok(me)
    }

    /// Makes every change so far durable (see Durability in the module doc).
    fn durable(&self) -> Result<()> {
        self.log.durable()
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

    /// Stores a pushed batch exactly once (see [`RecordStore::ingest`]).
    pub fn ingest(&self, terminal: &str, batch: &RecordBatch) -> Result<PushReply> {
        self.records.ingest(terminal, batch)
    }

    /// The contiguous cursor of one terminal's store.
    pub fn cursor(&self, terminal: &str, store_id: &str) -> Result<u64> {
        self.records.cursor(terminal, store_id)
    }

    /// Every record held for one terminal, by store then seq.
    pub fn records_of(&self, terminal: &str) -> Result<Vec<(String, RecordWire)>> {
        self.records.records_of(terminal)
    }

    /// The newest audit events, newest first.
    pub fn audit_events(&self, limit: usize) -> Result<Vec<serde_json::Value>> {
        self.records.audit_events(limit)
    }

    /// Can this node store what it is sent now (the records' database reachable)?
    pub fn ready(&self) -> Result<()> {
        self.records.ready()
    }

    pub fn stats(&self) -> Result<Stats> {
        let mut s = Stats {
            users: self.users.len() as u64,
            codes_minted: self.meta.get("codes_minted")?.map_or(0, |v| be_u64(&v)),
            static_codes: self.statics.len() as u64,
            terminals: self.terminals.len() as u64,
            ..Stats::default()
        };
        s.held = self.records.record_stats()?;
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
