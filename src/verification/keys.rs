//! Key material for the four YM1 algorithms: trust entries in the spec's JSON form, private key
//! files, and the sign / verify primitives (all from the RustCrypto and dalek crates).
//!
//! **Invariant:** secret bytes (HMAC keys, private keys) never appear in `Debug` output, logs or
//! errors, and are only written to files with mode 0600.

use std::collections::HashMap;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::verification::verdict::CodeKind;

/// The SM2 signer identity fixed by the spec (GM/T 0009 default).
pub const SM2_DISTID: &str = "1234567812345678";

/// COSE algorithm id for SM2-with-SM3 (private use, spec table).
pub const COSE_ALG_SM2: i64 = -65701;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unsupported algorithm {0:?} (expected EdDSA, ES256, SM2 or HMAC256)")]
    UnknownAlg(String),
    #[error("kid must be 1 to 16 bytes, got {0}")]
    KidLength(usize),
    #[error("field `{field}` is not valid base64url")]
    Base64 { field: &'static str },
    #[error("key bytes are not a valid {alg} key")]
    BadKey { alg: Alg },
    #[error("field `{field}` is not an RFC 3339 time: {value:?}")]
    BadTime { field: &'static str, value: String },
    #[error("unknown code kind {0:?} (expected \"dynamic\" or \"static\")")]
    BadKind(String),
    #[error("not_after is before not_before")]
    EmptyValidity,
    #[error("trust file is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// A COSE algorithm this terminal understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Alg {
    EdDSA,
    ES256,
    SM2,
    HMAC256,
}

impl Alg {
    pub const ALL: [Alg; 4] = [Alg::EdDSA, Alg::ES256, Alg::SM2, Alg::HMAC256];

    /// The COSE `alg` header value.
    pub fn cose_id(self) -> i64 {
        match self {
            Alg::EdDSA => -8,
            Alg::ES256 => -7,
            Alg::SM2 => COSE_ALG_SM2,
            Alg::HMAC256 => 5,
        }
    }

    pub fn from_cose_id(id: i64) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.cose_id() == id)
    }

    /// The name used in trust files.
    pub fn name(self) -> &'static str {
        match self {
            Alg::EdDSA => "EdDSA",
            Alg::ES256 => "ES256",
            Alg::SM2 => "SM2",
            Alg::HMAC256 => "HMAC256",
        }
    }

    /// Parses a trust-file name or a CLI spelling (`ed25519`, `es256`, `sm2`, `hmac`).
    pub fn parse(s: &str) -> Result<Alg, KeyError> {
        match s.to_ascii_lowercase().as_str() {
            "eddsa" | "ed25519" => Ok(Alg::EdDSA),
            "es256" | "p256" | "p-256" => Ok(Alg::ES256),
            "sm2" => Ok(Alg::SM2),
            "hmac256" | "hmac" | "hmac-sha256" => Ok(Alg::HMAC256),
            _ => Err(KeyError::UnknownAlg(s.to_string())),
        }
    }

    /// True for the symmetric mode carried in `COSE_Mac0`.
    pub fn is_mac(self) -> bool {
        self == Alg::HMAC256
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A key identifier: an opaque byte string of 1 to 16 bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kid(Vec<u8>);

impl Kid {
    pub fn new(bytes: Vec<u8>) -> Result<Kid, KeyError> {
        if bytes.is_empty() || bytes.len() > 16 {
            return Err(KeyError::KidLength(bytes.len()));
        }
        Ok(Kid(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
}

impl fmt::Debug for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kid({})", self.to_hex())
    }
}

/// A secret HMAC key; zeroed on drop and redacted in `Debug`.
#[derive(Clone)]
pub struct HmacSecret(Zeroizing<Vec<u8>>);

impl HmacSecret {
    pub fn new(bytes: Vec<u8>) -> Result<HmacSecret, KeyError> {
        if bytes.len() != 32 {
            return Err(KeyError::BadKey { alg: Alg::HMAC256 });
        }
        Ok(HmacSecret(Zeroizing::new(bytes)))
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; the length was checked in `new`.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!())
    }

    /// HMAC-SHA256 over `data`, the full 32-byte tag (COSE alg 5, HMAC 256/256).
    pub fn tag(&self, data: &[u8]) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// Constant-time tag check.
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.mac();
        mac.update(data);
        mac.verify_slice(tag).is_ok()
    }
}

impl fmt::Debug for HmacSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacSecret(<redacted>)")
    }
}

/// Public (or, for HMAC, secret) material that checks a code's signature or MAC.
#[derive(Clone)]
pub enum VerifyingKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    Es256(p256::ecdsa::VerifyingKey),
    Sm2(sm2::dsa::VerifyingKey),
    Hmac(HmacSecret),
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({})", self.alg())
    }
}

impl VerifyingKey {
    pub fn alg(&self) -> Alg {
        match self {
            VerifyingKey::Ed25519(_) => Alg::EdDSA,
            VerifyingKey::Es256(_) => Alg::ES256,
            VerifyingKey::Sm2(_) => Alg::SM2,
            VerifyingKey::Hmac(_) => Alg::HMAC256,
        }
    }

    /// Decodes key bytes as the spec's trust entry carries them.
    pub fn from_bytes(alg: Alg, bytes: &[u8]) -> Result<VerifyingKey, KeyError> {
        let bad = || KeyError::BadKey { alg };
        Ok(match alg {
            Alg::EdDSA => {
                let arr: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(&arr).map_err(|_| bad())?;
                // A small-order public key verifies signatures nobody made: never trust one.
                if key.is_weak() {
                    return Err(bad());
                }
                VerifyingKey::Ed25519(key)
            }
            Alg::ES256 => VerifyingKey::Es256(
                p256::ecdsa::VerifyingKey::from_sec1_bytes(bytes).map_err(|_| bad())?,
            ),
            Alg::SM2 => VerifyingKey::Sm2(
                sm2::dsa::VerifyingKey::from_sec1_bytes(SM2_DISTID, bytes).map_err(|_| bad())?,
            ),
            Alg::HMAC256 => VerifyingKey::Hmac(HmacSecret::new(bytes.to_vec())?),
        })
    }

    /// The bytes a trust entry carries: raw Ed25519 key, SEC1 (uncompressed) point, HMAC secret.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            VerifyingKey::Ed25519(k) => k.to_bytes().to_vec(),
            VerifyingKey::Es256(k) => k.to_encoded_point(false).as_bytes().to_vec(),
            VerifyingKey::Sm2(k) => k.to_sec1_bytes().to_vec(),
            VerifyingKey::Hmac(s) => s.0.to_vec(),
        }
    }

    /// Checks `sig` over the COSE to-be-signed (or to-be-MACed) bytes.
    pub fn verify(&self, tbs: &[u8], sig: &[u8]) -> bool {
        use signature_traits::Verifier;
        match self {
            // RFC 8032 verification with canonical `s` (dalek's default). Not `verify_strict`:
            // its extra checks are a small-order public key (refused when the key is loaded,
            // above) and a small-order `R`, which lets no one without the private key forge —
            // and skipping it saves decompressing `R`, ~10 % of a gate's verification time.
            VerifyingKey::Ed25519(k) => ed25519_dalek::Signature::from_slice(sig)
                .map(|s| k.verify(tbs, &s).is_ok())
                .unwrap_or(false),
            VerifyingKey::Es256(k) => p256::ecdsa::Signature::from_slice(sig)
                .map(|s| k.verify(tbs, &s).is_ok())
                .unwrap_or(false),
            VerifyingKey::Sm2(k) => sm2::dsa::Signature::from_slice(sig)
                .map(|s| k.verify(tbs, &s).is_ok())
                .unwrap_or(false),
            VerifyingKey::Hmac(s) => s.verify(tbs, sig),
        }
    }
}

/// The `signature` crate's traits, as re-exported by p256 (one version for all three curves).
mod signature_traits {
    pub use p256::ecdsa::signature::{Signer, Verifier};
}

/// Which code kinds a key may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindSet {
    pub dynamic: bool,
    pub static_: bool,
}

impl KindSet {
    pub const BOTH: KindSet = KindSet {
        dynamic: true,
        static_: true,
    };

    pub fn contains(self, kind: CodeKind) -> bool {
        match kind {
            CodeKind::Dynamic => self.dynamic,
            CodeKind::Static => self.static_,
        }
    }

    fn parse(kinds: &[String]) -> Result<KindSet, KeyError> {
        let mut set = KindSet {
            dynamic: false,
            static_: false,
        };
        for k in kinds {
            match k.as_str() {
                "dynamic" => set.dynamic = true,
                "static" => set.static_ = true,
                other => return Err(KeyError::BadKind(other.to_string())),
            }
        }
        Ok(set)
    }

    fn names(self) -> Vec<String> {
        let mut v = Vec::new();
        if self.dynamic {
            v.push("dynamic".to_string());
        }
        if self.static_ {
            v.push("static".to_string());
        }
        v
    }
}

/// A key the terminal trusts, with the validity the platform gave it.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub kid: Kid,
    pub key: VerifyingKey,
    pub kinds: KindSet,
    /// Seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
}

impl TrustedKey {
    pub fn alg(&self) -> Alg {
        self.key.alg()
    }

    /// Rule 2: may this key vouch for a code of `kind` at `now_s`?
    pub fn valid_for(&self, kind: CodeKind, now_s: i64) -> bool {
        self.kinds.contains(kind) && self.not_before <= now_s && now_s <= self.not_after
    }

    pub fn from_entry(entry: &TrustEntry) -> Result<TrustedKey, KeyError> {
        let alg = Alg::parse(&entry.alg)?;
        let kid = Kid::new(b64_decode(&entry.kid, "kid")?)?;
        let key = VerifyingKey::from_bytes(alg, &b64_decode(&entry.key, "key")?)?;
        let kinds = KindSet::parse(&entry.kinds)?;
        let not_before = parse_time(&entry.not_before, "not_before")?;
        let not_after = parse_time(&entry.not_after, "not_after")?;
        if not_after < not_before {
            return Err(KeyError::EmptyValidity);
        }
        Ok(TrustedKey {
            kid,
            key,
            kinds,
            not_before,
            not_after,
        })
    }

    pub fn to_entry(&self) -> TrustEntry {
        TrustEntry {
            kid: URL_SAFE_NO_PAD.encode(self.kid.as_bytes()),
            alg: self.alg().name().to_string(),
            key: URL_SAFE_NO_PAD.encode(self.key.to_bytes()),
            kinds: self.kinds.names(),
            not_before: format_time(self.not_before),
            not_after: format_time(self.not_after),
        }
    }
}

/// The spec's trust file / bundle entry, as JSON.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustEntry {
    pub kid: String,
    pub alg: String,
    pub key: String,
    pub kinds: Vec<String>,
    pub not_before: String,
    pub not_after: String,
}

impl fmt::Debug for TrustEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustEntry")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("kinds", &self.kinds)
            .finish_non_exhaustive()
    }
}

/// Every key the terminal trusts, looked up by kid.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    by_kid: HashMap<Kid, Vec<TrustedKey>>,
}

impl KeyRing {
    pub fn new(keys: impl IntoIterator<Item = TrustedKey>) -> KeyRing {
        let mut ring = KeyRing::default();
        for k in keys {
            ring.insert(k);
        }
        ring
    }

    pub fn insert(&mut self, key: TrustedKey) {
        self.by_kid.entry(key.kid.clone()).or_default().push(key);
    }

    /// Every key sharing `kid` (the spec says all of them are tried).
    pub fn with_kid(&self, kid: &[u8]) -> &[TrustedKey] {
        Kid::new(kid.to_vec())
            .ok()
            .and_then(|k| self.by_kid.get(&k))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn len(&self) -> usize {
        self.by_kid.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &TrustedKey> {
        self.by_kid.values().flatten()
    }

    /// Parses a trust file: one entry object or an array of entries.
    pub fn from_json(text: &str) -> Result<KeyRing, KeyError> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(TrustEntry),
            Many(Vec<TrustEntry>),
        }
        let entries = match serde_json::from_str::<OneOrMany>(text)? {
            OneOrMany::One(e) => vec![e],
            OneOrMany::Many(v) => v,
        };
        let keys = entries
            .iter()
            .map(TrustedKey::from_entry)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KeyRing::new(keys))
    }
}

/// Private signing material (platform side, and `yima-gate mint` for tests and audits).
pub enum SigningKey {
    Ed25519(ed25519_dalek::SigningKey),
    Es256(p256::ecdsa::SigningKey),
    Sm2(sm2::dsa::SigningKey),
    Hmac(HmacSecret),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}, <redacted>)", self.alg())
    }
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate(alg: Alg) -> SigningKey {
        let mut rng = rand::rngs::OsRng;
        match alg {
            Alg::EdDSA => SigningKey::Ed25519(ed25519_dalek::SigningKey::generate(&mut rng)),
            Alg::ES256 => SigningKey::Es256(p256::ecdsa::SigningKey::random(&mut rng)),
            Alg::SM2 => {
                let secret = sm2::SecretKey::random(&mut rng);
                SigningKey::Sm2(
                    sm2::dsa::SigningKey::new(SM2_DISTID, &secret)
                        .unwrap_or_else(|_| unreachable!("random SM2 secret is non-zero")),
                )
            }
            Alg::HMAC256 => {
                let mut bytes = vec![0u8; 32];
                rand::RngCore::fill_bytes(&mut rng, &mut bytes);
                SigningKey::Hmac(HmacSecret(Zeroizing::new(bytes)))
            }
        }
    }

    pub fn alg(&self) -> Alg {
        match self {
            SigningKey::Ed25519(_) => Alg::EdDSA,
            SigningKey::Es256(_) => Alg::ES256,
            SigningKey::Sm2(_) => Alg::SM2,
            SigningKey::Hmac(_) => Alg::HMAC256,
        }
    }

    pub fn from_bytes(alg: Alg, bytes: &[u8]) -> Result<SigningKey, KeyError> {
        let bad = || KeyError::BadKey { alg };
        Ok(match alg {
            Alg::EdDSA => {
                let arr: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
                SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&arr))
            }
            Alg::ES256 => {
                SigningKey::Es256(p256::ecdsa::SigningKey::from_slice(bytes).map_err(|_| bad())?)
            }
            Alg::SM2 => SigningKey::Sm2(
                sm2::dsa::SigningKey::from_slice(SM2_DISTID, bytes).map_err(|_| bad())?,
            ),
            Alg::HMAC256 => SigningKey::Hmac(HmacSecret::new(bytes.to_vec())?),
        })
    }

    fn secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(match self {
            SigningKey::Ed25519(k) => k.to_bytes().to_vec(),
            SigningKey::Es256(k) => k.to_bytes().to_vec(),
            SigningKey::Sm2(k) => k.to_bytes().to_vec(),
            SigningKey::Hmac(s) => s.0.to_vec(),
        })
    }

    /// The matching verification key.
    pub fn verifying_key(&self) -> VerifyingKey {
        match self {
            SigningKey::Ed25519(k) => VerifyingKey::Ed25519(k.verifying_key()),
            SigningKey::Es256(k) => VerifyingKey::Es256(*k.verifying_key()),
            SigningKey::Sm2(k) => VerifyingKey::Sm2(k.verifying_key().clone()),
            SigningKey::Hmac(s) => VerifyingKey::Hmac(s.clone()),
        }
    }

    /// Signature (r‖s for the curves) or MAC tag over the COSE to-be-signed bytes.
    pub fn sign(&self, tbs: &[u8]) -> Vec<u8> {
        use signature_traits::Signer;
        match self {
            SigningKey::Ed25519(k) => k.sign(tbs).to_bytes().to_vec(),
            SigningKey::Es256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(tbs);
                sig.to_bytes().to_vec()
            }
            SigningKey::Sm2(k) => {
                let sig: sm2::dsa::Signature = k.sign(tbs);
                sig.to_bytes().to_vec()
            }
            SigningKey::Hmac(s) => s.tag(tbs).to_vec(),
        }
    }
}

/// A private key file as `yima-gate keygen` writes it (mode 0600).
#[derive(Debug)]
pub struct KeyPair {
    pub kid: Kid,
    pub signing: SigningKey,
    pub kinds: KindSet,
    pub not_before: i64,
    pub not_after: i64,
}

#[derive(Serialize, Deserialize)]
struct KeyFileJson {
    kid: String,
    alg: String,
    private: String,
    kinds: Vec<String>,
    not_before: String,
    not_after: String,
}

impl KeyPair {
    pub fn generate(alg: Alg, kid: Kid, not_before: i64, not_after: i64) -> KeyPair {
        KeyPair {
            kid,
            signing: SigningKey::generate(alg),
            kinds: KindSet::BOTH,
            not_before,
            not_after,
        }
    }

    /// A key pair from its secret bytes (an Ed25519 seed, a P-256 or SM2 scalar, an HMAC
    /// secret): the same key wherever it is made, for sets that must be the same every run.
    pub fn from_secret(
        alg: Alg,
        kid: Kid,
        secret: &[u8],
        not_before: i64,
        not_after: i64,
    ) -> Result<KeyPair, KeyError> {
        Ok(KeyPair {
            kid,
            signing: SigningKey::from_bytes(alg, secret)?,
            kinds: KindSet::BOTH,
            not_before,
            not_after,
        })
    }

    pub fn trusted_key(&self) -> TrustedKey {
        TrustedKey {
            kid: self.kid.clone(),
            key: self.signing.verifying_key(),
            kinds: self.kinds,
            not_before: self.not_before,
            not_after: self.not_after,
        }
    }

    pub fn to_json(&self) -> Zeroizing<String> {
        let json = KeyFileJson {
            kid: URL_SAFE_NO_PAD.encode(self.kid.as_bytes()),
            alg: self.signing.alg().name().to_string(),
            private: URL_SAFE_NO_PAD.encode(&*self.signing.secret_bytes()),
            kinds: self.kinds.names(),
            not_before: format_time(self.not_before),
            not_after: format_time(self.not_after),
        };
        Zeroizing::new(serde_json::to_string_pretty(&json).unwrap_or_else(|_| unreachable!()))
    }

    pub fn from_json(text: &str) -> Result<KeyPair, KeyError> {
        let json: KeyFileJson = serde_json::from_str(text)?;
        let alg = Alg::parse(&json.alg)?;
        let private = Zeroizing::new(b64_decode(&json.private, "private")?);
        Ok(KeyPair {
            kid: Kid::new(b64_decode(&json.kid, "kid")?)?,
            signing: SigningKey::from_bytes(alg, &private)?,
            kinds: KindSet::parse(&json.kinds)?,
            not_before: parse_time(&json.not_before, "not_before")?,
            not_after: parse_time(&json.not_after, "not_after")?,
        })
    }
}

pub fn b64_decode(s: &str, field: &'static str) -> Result<Vec<u8>, KeyError> {
    URL_SAFE_NO_PAD
        .decode(s.trim().trim_end_matches('='))
        .map_err(|_| KeyError::Base64 { field })
}

pub fn b64_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Parses RFC 3339 to seconds since the epoch.
pub fn parse_time(s: &str, field: &'static str) -> Result<i64, KeyError> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| KeyError::BadTime {
            field,
            value: s.to_string(),
        })
}

/// Formats seconds since the epoch as RFC 3339 (UTC).
pub fn format_time(unix_s: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix_s)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix_s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alg_signs_and_verifies_and_rejects_tampering() {
        for alg in Alg::ALL {
            let key = SigningKey::generate(alg);
            let vk = key.verifying_key();
            let sig = key.sign(b"hello");
            assert!(vk.verify(b"hello", &sig), "{alg}");
            assert!(!vk.verify(b"hellp", &sig), "{alg}");
            let mut bad = sig.clone();
            bad[0] ^= 1;
            assert!(!vk.verify(b"hello", &bad), "{alg}");
            assert!(!vk.verify(b"hello", &sig[..sig.len() - 1]), "{alg}");
            // key bytes round-trip
            let vk2 = VerifyingKey::from_bytes(alg, &vk.to_bytes()).expect("round trip");
            assert!(vk2.verify(b"hello", &sig));
            let sk2 = SigningKey::from_bytes(alg, &key.secret_bytes()).expect("round trip");
            assert!(vk.verify(b"x", &sk2.sign(b"x")));
        }
    }

    #[test]
    fn trust_entry_round_trips_and_validates() {
        let pair = KeyPair::generate(
            Alg::SM2,
            Kid::new(b"k1".to_vec()).expect("kid"),
            1_700_000_000,
            1_900_000_000,
        );
        let entry = pair.trusted_key().to_entry();
        let json = serde_json::to_string(&entry).expect("json");
        let ring = KeyRing::from_json(&json).expect("parse");
        assert_eq!(ring.len(), 1);
        let k = &ring.with_kid(b"k1")[0];
        assert_eq!(k.alg(), Alg::SM2);
        assert!(k.valid_for(CodeKind::Dynamic, 1_800_000_000));
        assert!(!k.valid_for(CodeKind::Dynamic, 1_600_000_000));
        assert!(!k.valid_for(CodeKind::Static, 2_000_000_000));

        let mut e = entry.clone();
        e.alg = "RS256".into();
        assert!(matches!(
            TrustedKey::from_entry(&e),
            Err(KeyError::UnknownAlg(_))
        ));
        let mut e = entry.clone();
        e.kinds = vec!["weekly".into()];
        assert!(matches!(
            TrustedKey::from_entry(&e),
            Err(KeyError::BadKind(_))
        ));
        let mut e = entry.clone();
        e.key = "AAAA".into();
        assert!(matches!(
            TrustedKey::from_entry(&e),
            Err(KeyError::BadKey { .. })
        ));
        let mut e = entry;
        e.kid = b64_encode(&[0u8; 17]);
        assert!(matches!(
            TrustedKey::from_entry(&e),
            Err(KeyError::KidLength(17))
        ));
    }

    #[test]
    fn weak_ed25519_keys_are_refused() {
        // the identity point (small order) as a public key
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(matches!(
            VerifyingKey::from_bytes(Alg::EdDSA, &identity),
            Err(KeyError::BadKey { alg: Alg::EdDSA })
        ));
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let key = SigningKey::generate(Alg::HMAC256);
        let secret_hex = hex::encode(&*key.secret_bytes());
        let dbg = format!("{:?} {:?}", key, key.verifying_key());
        assert!(!dbg.contains(&secret_hex));
        assert!(dbg.contains("HMAC256"));
    }
}
