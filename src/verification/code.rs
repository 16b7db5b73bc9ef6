//! The YM1 code format: text form ⇄ COSE envelope ⇄ CWT claims. Parsing here is structural
//! only (rule 1 below); trust decisions belong to [`super::verifier`].
//!
//! This module's documentation is the format's contract with the platform and the phone apps,
//! as the project received it; the implementation notes after it say how this code meets it.
//!
//! # YM1 — the signed code format (contract with the platform and the phone apps)
//!
//! Every code a yima-gate terminal accepts is a signed or MACed token built only from public standards,
//! so that any platform, phone app or auditor can mint and check it with an off-the-shelf COSE library.
//!
//! ## Text form
//! ```text
//! YM1:<Base45 (RFC 9285) of the CBOR bytes of a tagged COSE message>
//! ```
//! The prefix and the Base45 alphabet are all QR alphanumeric characters, so the QR encoder uses
//! alphanumeric mode. Readers accept the prefix case-insensitively and ignore surrounding whitespace.
//! No compression.
//!
//! ## COSE message (RFC 9052)
//! - `COSE_Sign1` (CBOR tag 18) for signatures — gives non-repudiation: a terminal holding only public
//!   keys cannot mint codes.
//! - `COSE_Mac0` (CBOR tag 17) for the platform's symmetric "global key" (全局密钥) mode — integrity and
//!   authenticity, but no non-repudiation; terminals must protect the key at rest.
//! - Protected header: `{1: alg, 4: kid}`. `kid` is an opaque byte string (1–16 bytes) assigned by the
//!   platform; every key sharing a kid is tried. Nothing security-relevant in the unprotected header.
//! - External AAD: empty.
//!
//! | alg | COSE id | key | notes |
//! |---|---|---|---|
//! | EdDSA (Ed25519) | -8 | 32-byte public key | default |
//! | ES256 (P-256, SHA-256) | -7 | SEC1 public key | signature r‖s, 64 bytes |
//! | SM2 with SM3 (GM/T 0003.2, 0004) | -65701 (private use) | SEC1 public key on the SM2 curve | signer ID `1234567812345678`, signature r‖s, 64 bytes |
//! | HMAC 256/256 | 5 | 32-byte secret | COSE_Mac0 only |
//!
//! ## Payload: a CWT claims set (RFC 8392)
//! | claim | key | type | meaning |
//! |---|---|---|---|
//! | iss | 1 | text | issuing platform, e.g. `HLJ-YMTB` |
//! | sub | 2 | bstr | pseudonymous subject token, pairwise per service. Never an ID-card number, phone number or name (account information must not leak from a code) |
//! | exp | 4 | int | expiry, seconds since the Unix epoch |
//! | nbf | 5 | int | optional not-before |
//! | iat | 6 | int | issued-at, seconds since the Unix epoch |
//! | cti | 7 | bstr | code id, 8–16 random bytes; the replay key |
//! | ymtb | -65537 | map | the platform's own claims, below |
//!
//! The `ymtb` map:
//! | field | key | type | meaning |
//! |---|---|---|---|
//! | kind | 1 | uint | 1 dynamic code (动态码), 2 static code (静态码) |
//! | svc | 2 | text | service / application code (应用编码) |
//! | scn | 3 | [text] | scenes where the code is valid; absent = every scene of the service |
//! | mode | 4 | uint | access mode: 1 融合码 (fused), 2 业务码 (business), 3 独立码 (independent) |
//! | biz | 5 | [text] | business codes carried by a fused code |
//! | cat | 6 | text | static codes: resource catalogue code (资源目录编码) |
//! | sn | 7 | text | static codes: code serial; (cat, sn) names the static code in status lists |
//! | ver | 8 | uint | static codes: version, raised by 信息变更 and 换码; status lists may reject older versions |
//!
//! ## Verification rules
//! 1. Prefix, Base45, CBOR, COSE structure, tag and alg well-formed, within size limits (a code text over
//!    2,048 characters is malformed) — else `malformed` (非法二维码).
//! 2. Key found by kid, valid for the code's kind at the verification time, signature/MAC valid — else
//!    `unknown_key` or `bad_signature` (非法二维码).
//! 3. Dynamic codes: valid only from `iat` to `iat + refresh` where `refresh` is the platform's global
//!    refresh time (default 60 s), and never after `exp`; a tolerance for clock skew (default 5 s, at
//!    most 30 s) applies to both ends. Past the window: `expired`, message exactly **码已过期**.
//!    Before it: `not_yet_valid`.
//! 4. Dynamic codes are single-use: a second verification of the same (`iss`, `cti`) inside its window
//!    is `replayed` (码已使用) — across restarts too. One presentation (the same code seen in consecutive
//!    camera frames without leaving the view) is one verification, not a replay.
//! 5. Static codes: the status list decides — `disabled` (码已停用), `lost` (码已挂失),
//!    `replaced` (码已换码), `cancelled` (码已注销); an unknown (cat, sn) is accepted only if the
//!    terminal's policy says so.
//! 6. The service must not be suspended (`service_suspended`, 服务已暂停) and the code's scene must be
//!    one this terminal serves (`wrong_scene`, 非本场景二维码); the terminal itself must be authorized
//!    (`terminal_not_authorized`).
//! 7. Dynamic codes are refused with `clock_untrusted` while the terminal cannot vouch for its clock.
//!
//! Every verdict carries a stable reason code (the snake_case words above), the Chinese message, and
//! for accepted codes the claims a business system needs (never the raw `sub`).
//!
//! ## Key distribution (trust file / bundle entry)
//! JSON: `{"kid": base64url, "alg": "EdDSA"|"ES256"|"SM2"|"HMAC256", "key": base64url,
//! "kinds": ["dynamic","static"], "not_before": RFC 3339, "not_after": RFC 3339}`. Secret (HMAC) keys
//! are only ever stored with file mode 0600 and never logged.
//!
//!
//! # Implementation notes
//! ```text
//! "YM1:" Base45( CBOR( tag 18 COSE_Sign1 | tag 17 COSE_Mac0 ) )
//!   COSE:   [ protected: bstr{1: alg, 4: kid}, unprotected: {}, payload: bstr, sig|tag: bstr ]
//!   payload: CWT claims map
//!     1 iss text · 2 sub bstr · 4 exp int · 5 nbf int? · 6 iat int · 7 cti bstr(8..16)
//!     -65537 ymtb: { 1 kind uint(1 dynamic, 2 static) · 2 svc text · 3 scn [text]? ·
//!                    4 mode uint(1 fused, 2 business, 3 independent)? · 5 biz [text]? ·
//!                    6 cat text? · 7 sn text? · 8 ver uint? }
//!   external AAD: empty
//! ```
//! The signed bytes are the RFC 9052 `Sig_structure` / `MAC_structure` built from the protected
//! header bytes exactly as received (coset keeps them), so re-encoding never changes what is checked.

use ciborium::value::{Integer, Value};
use coset::iana::EnumI64;
use coset::{
    iana, mac_structure_data, sig_structure_data, CoseMac0, CoseSign1, HeaderBuilder, MacContext,
    RegisteredLabelWithPrivate, SignatureContext, TaggedCborSerializable,
};

use crate::verification::keys::{Alg, Kid, SigningKey};
use crate::verification::verdict::{AccessMode, CodeKind};

/// The text prefix (matched case-insensitively).
pub const PREFIX: &str = "YM1:";
/// Longest code text accepted (spec rule 1).
pub const MAX_TEXT_LEN: usize = 2048;
/// CWT claim key of the platform's private claims map.
pub const YMTB_CLAIM: i64 = -65537;

/// Why a text is not a well-formed YM1 code. Every variant is the verdict `malformed`; the
/// detail helps a technician and never contains claim values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("code text is longer than {MAX_TEXT_LEN} characters")]
    TooLong,
    #[error("code text does not start with YM1:")]
    Prefix,
    #[error("code text is not Base45")]
    Base45,
    #[error("not a tagged COSE_Sign1 (18) or COSE_Mac0 (17) message")]
    NotCose,
    #[error("COSE structure invalid: {0}")]
    Cose(String),
    #[error("protected header lacks alg")]
    MissingAlg,
    #[error("algorithm {0} is not supported")]
    UnsupportedAlg(i64),
    #[error("algorithm {0} does not fit the COSE message type")]
    AlgMismatch(Alg),
    #[error("protected header kid must be 1 to 16 bytes")]
    BadKid,
    #[error("alg or kid repeated in the unprotected header")]
    UnprotectedDuplicate,
    #[error("critical header parameters are not supported")]
    Critical,
    #[error("payload is missing (detached payloads are not allowed)")]
    NoPayload,
    #[error("payload is not a single CBOR map")]
    PayloadNotMap,
    #[error("claim {0} repeated")]
    DuplicateClaim(String),
    #[error("claim {0} missing")]
    MissingClaim(&'static str),
    #[error("claim {0} has the wrong type or value")]
    BadClaim(&'static str),
}

/// The claims of a YM1 code. `sub` is a pseudonymous token but still never leaves the verifier
/// except as a keyed hash.
#[derive(Clone, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub sub: Vec<u8>,
    pub exp: i64,
    pub nbf: Option<i64>,
    pub iat: i64,
    pub cti: Vec<u8>,
    pub kind: CodeKind,
    pub service: String,
    /// `None`: every scene of the service.
    pub scenes: Option<Vec<String>>,
    pub mode: Option<AccessMode>,
    pub business_codes: Vec<String>,
    pub catalogue: Option<String>,
    pub serial: Option<String>,
    pub version: Option<u64>,
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claims")
            .field("iss", &self.iss)
            .field("kind", &self.kind)
            .field("service", &self.service)
            .field("iat", &self.iat)
            .field("exp", &self.exp)
            .finish_non_exhaustive()
    }
}

/// A structurally valid code whose signature has not been checked yet.
#[derive(Debug, Clone)]
pub struct ParsedCode {
    pub alg: Alg,
    pub kid: Vec<u8>,
    /// The exact bytes the signature or MAC covers.
    pub to_be_signed: Vec<u8>,
    pub signature: Vec<u8>,
    pub claims: Claims,
}

/// Rule 1: parses the text form down to claims. Pure and total: every input gets an answer.
pub fn parse(text: &str) -> Result<ParsedCode, FormatError> {
    let text = text.trim();
    if text.len() > MAX_TEXT_LEN {
        return Err(FormatError::TooLong);
    }
    let body = match text.get(..PREFIX.len()) {
        Some(p) if p.eq_ignore_ascii_case(PREFIX) => &text[PREFIX.len()..],
        _ => return Err(FormatError::Prefix),
    };
    let cbor = base45::decode(body).map_err(|_| FormatError::Base45)?;
    let cose_err = |e: coset::CoseError| FormatError::Cose(e.to_string());
    let (mac, protected, unprotected, payload, signature) = match cbor.first() {
        Some(0xD2) => {
            let m = CoseSign1::from_tagged_slice(&cbor).map_err(cose_err)?;
            (false, m.protected, m.unprotected, m.payload, m.signature)
        }
        Some(0xD1) => {
            let m = CoseMac0::from_tagged_slice(&cbor).map_err(cose_err)?;
            (true, m.protected, m.unprotected, m.payload, m.tag)
        }
        _ => return Err(FormatError::NotCose),
    };
    let header = &protected.header;
    let alg_id = match &header.alg {
        Some(RegisteredLabelWithPrivate::Assigned(a)) => a.to_i64(),
        Some(RegisteredLabelWithPrivate::PrivateUse(i)) => *i,
        Some(RegisteredLabelWithPrivate::Text(_)) | None => return Err(FormatError::MissingAlg),
    };
    let alg = Alg::from_cose_id(alg_id).ok_or(FormatError::UnsupportedAlg(alg_id))?;
    if alg.is_mac() != mac {
        return Err(FormatError::AlgMismatch(alg));
    }
    if header.key_id.is_empty() || header.key_id.len() > 16 {
        return Err(FormatError::BadKid);
    }
    if unprotected.alg.is_some() || !unprotected.key_id.is_empty() {
        return Err(FormatError::UnprotectedDuplicate);
    }
    if !header.crit.is_empty() {
        return Err(FormatError::Critical);
    }
    let payload = payload.ok_or(FormatError::NoPayload)?;
    let claims = parse_claims(&payload)?;
    let kid = header.key_id.clone();
    let to_be_signed = if mac {
        mac_structure_data(MacContext::CoseMac0, protected, &[], &payload)
    } else {
        sig_structure_data(SignatureContext::CoseSign1, protected, None, &[], &payload)
    };
    Ok(ParsedCode {
        alg,
        kid,
        to_be_signed,
        signature,
        claims,
    })
}

/// Decodes exactly one CBOR item from `bytes`, refusing trailing data.
fn decode_exact(bytes: &[u8]) -> Option<Value> {
    let mut rest = bytes;
    let value: Value = ciborium::de::from_reader(&mut rest).ok()?;
    rest.is_empty().then_some(value)
}

fn int_key(k: &Value) -> Option<i64> {
    match k {
        Value::Integer(i) => i64::try_from(i128::from(*i)).ok(),
        _ => None,
    }
}

/// A CBOR map with integer keys, duplicates refused; text keys (other CWT profiles) ignored.
fn int_map(entries: Vec<(Value, Value)>) -> Result<Vec<(i64, Value)>, FormatError> {
    let mut out: Vec<(i64, Value)> = Vec::with_capacity(entries.len());
    let mut texts: Vec<String> = Vec::new();
    for (k, v) in entries {
        match (&k, int_key(&k)) {
            (_, Some(key)) => {
                if out.iter().any(|(seen, _)| *seen == key) {
                    return Err(FormatError::DuplicateClaim(key.to_string()));
                }
                out.push((key, v));
            }
            (Value::Text(t), None) => {
                if texts.contains(t) {
                    return Err(FormatError::DuplicateClaim("text key".into()));
                }
                texts.push(t.clone());
            }
            _ => return Err(FormatError::PayloadNotMap),
        }
    }
    Ok(out)
}

fn take(map: &mut Vec<(i64, Value)>, key: i64) -> Option<Value> {
    let pos = map.iter().position(|(k, _)| *k == key)?;
    Some(map.swap_remove(pos).1)
}

fn as_text(v: Value, name: &'static str) -> Result<String, FormatError> {
    match v {
        Value::Text(t) if !t.is_empty() && t.len() <= 256 => Ok(t),
        _ => Err(FormatError::BadClaim(name)),
    }
}

fn as_int(v: Value, name: &'static str) -> Result<i64, FormatError> {
    match v {
        Value::Integer(i) => i64::try_from(i128::from(i)).map_err(|_| FormatError::BadClaim(name)),
        _ => Err(FormatError::BadClaim(name)),
    }
}

fn as_uint(v: Value, name: &'static str) -> Result<u64, FormatError> {
    match v {
        Value::Integer(i) => u64::try_from(i128::from(i)).map_err(|_| FormatError::BadClaim(name)),
        _ => Err(FormatError::BadClaim(name)),
    }
}

fn as_text_list(v: Value, name: &'static str) -> Result<Vec<String>, FormatError> {
    match v {
        Value::Array(items) if !items.is_empty() && items.len() <= 64 => items
            .into_iter()
            .map(|i| as_text(i, name))
            .collect::<Result<Vec<_>, _>>(),
        _ => Err(FormatError::BadClaim(name)),
    }
}

fn required<T>(v: Option<T>, name: &'static str) -> Result<T, FormatError> {
    v.ok_or(FormatError::MissingClaim(name))
}

fn parse_claims(payload: &[u8]) -> Result<Claims, FormatError> {
    let Some(Value::Map(entries)) = decode_exact(payload) else {
        return Err(FormatError::PayloadNotMap);
    };
    let mut m = int_map(entries)?;
    let iss = as_text(required(take(&mut m, 1), "iss")?, "iss")?;
    let sub = match required(take(&mut m, 2), "sub")? {
        Value::Bytes(b) if !b.is_empty() && b.len() <= 64 => b,
        _ => return Err(FormatError::BadClaim("sub")),
    };
    let exp = as_int(required(take(&mut m, 4), "exp")?, "exp")?;
    let nbf = take(&mut m, 5).map(|v| as_int(v, "nbf")).transpose()?;
    let iat = as_int(required(take(&mut m, 6), "iat")?, "iat")?;
    let cti = match required(take(&mut m, 7), "cti")? {
        Value::Bytes(b) if (8..=16).contains(&b.len()) => b,
        _ => return Err(FormatError::BadClaim("cti")),
    };
    let Value::Map(ymtb) = required(take(&mut m, YMTB_CLAIM), "ymtb")? else {
        return Err(FormatError::BadClaim("ymtb"));
    };
    let mut y = int_map(ymtb)?;
    let kind = match as_uint(required(take(&mut y, 1), "kind")?, "kind")? {
        1 => CodeKind::Dynamic,
        2 => CodeKind::Static,
        _ => return Err(FormatError::BadClaim("kind")),
    };
    let service = as_text(required(take(&mut y, 2), "svc")?, "svc")?;
    let scenes = take(&mut y, 3)
        .map(|v| as_text_list(v, "scn"))
        .transpose()?;
    let mode = take(&mut y, 4)
        .map(|v| match as_uint(v, "mode")? {
            1 => Ok(AccessMode::Fused),
            2 => Ok(AccessMode::Business),
            3 => Ok(AccessMode::Independent),
            _ => Err(FormatError::BadClaim("mode")),
        })
        .transpose()?;
    let business_codes = take(&mut y, 5)
        .map(|v| as_text_list(v, "biz"))
        .transpose()?
        .unwrap_or_default();
    let catalogue = take(&mut y, 6).map(|v| as_text(v, "cat")).transpose()?;
    let serial = take(&mut y, 7).map(|v| as_text(v, "sn")).transpose()?;
    let version = take(&mut y, 8).map(|v| as_uint(v, "ver")).transpose()?;
    if kind == CodeKind::Static && (catalogue.is_none() || serial.is_none()) {
        return Err(FormatError::MissingClaim("cat/sn"));
    }
    Ok(Claims {
        iss,
        sub,
        exp,
        nbf,
        iat,
        cti,
        kind,
        service,
        scenes,
        mode,
        business_codes,
        catalogue,
        serial,
        version,
    })
}

fn text_list(items: &[String]) -> Value {
    Value::Array(items.iter().map(|s| Value::Text(s.clone())).collect())
}

fn int(i: i64) -> Value {
    Value::Integer(Integer::from(i))
}

/// The CBOR claims map of `claims`, keys in the spec's order.
pub fn claims_to_cbor(claims: &Claims) -> Vec<u8> {
    let mut y: Vec<(Value, Value)> = vec![
        (
            int(1),
            int(match claims.kind {
                CodeKind::Dynamic => 1,
                CodeKind::Static => 2,
            }),
        ),
        (int(2), Value::Text(claims.service.clone())),
    ];
    if let Some(s) = &claims.scenes {
        y.push((int(3), text_list(s)));
    }
    if let Some(m) = claims.mode {
        let n = match m {
            AccessMode::Fused => 1,
            AccessMode::Business => 2,
            AccessMode::Independent => 3,
        };
        y.push((int(4), int(n)));
    }
    if !claims.business_codes.is_empty() {
        y.push((int(5), text_list(&claims.business_codes)));
    }
    if let Some(c) = &claims.catalogue {
        y.push((int(6), Value::Text(c.clone())));
    }
    if let Some(s) = &claims.serial {
        y.push((int(7), Value::Text(s.clone())));
    }
    if let Some(v) = claims.version {
        y.push((int(8), Value::Integer(Integer::from(v))));
    }
    let mut m: Vec<(Value, Value)> = vec![
        (int(1), Value::Text(claims.iss.clone())),
        (int(2), Value::Bytes(claims.sub.clone())),
        (int(4), int(claims.exp)),
    ];
    if let Some(nbf) = claims.nbf {
        m.push((int(5), int(nbf)));
    }
    m.push((int(6), int(claims.iat)));
    m.push((int(7), Value::Bytes(claims.cti.clone())));
    m.push((int(YMTB_CLAIM), Value::Map(y)));
    let mut out = Vec::new();
    ciborium::ser::into_writer(&Value::Map(m), &mut out)
        .unwrap_or_else(|_| unreachable!("writing CBOR to a Vec cannot fail"));
    out
}

/// Builds the tagged COSE message bytes for `claims`, signed or MACed with `key`.
pub fn mint_cose(key: &SigningKey, kid: &Kid, claims: &Claims) -> Vec<u8> {
    let alg = key.alg();
    let label = match alg {
        Alg::EdDSA => RegisteredLabelWithPrivate::Assigned(iana::Algorithm::EdDSA),
        Alg::ES256 => RegisteredLabelWithPrivate::Assigned(iana::Algorithm::ES256),
        Alg::HMAC256 => RegisteredLabelWithPrivate::Assigned(iana::Algorithm::HMAC_256_256),
        Alg::SM2 => RegisteredLabelWithPrivate::PrivateUse(alg.cose_id()),
    };
    let protected = HeaderBuilder::new()
        .algorithm_label(label)
        .key_id(kid.as_bytes().to_vec())
        .build();
    let payload = claims_to_cbor(claims);
    let bytes = if alg.is_mac() {
        coset::CoseMac0Builder::new()
            .protected(protected)
            .payload(payload)
            .create_tag(&[], |tbm| key.sign(tbm))
            .build()
            .to_tagged_vec()
    } else {
        coset::CoseSign1Builder::new()
            .protected(protected)
            .payload(payload)
            .create_signature(&[], |tbs| key.sign(tbs))
            .build()
            .to_tagged_vec()
    };
    bytes.unwrap_or_else(|_| unreachable!("encoding a well-formed COSE message cannot fail"))
}

/// The text form of a COSE message: `YM1:` + Base45.
pub fn to_text(cose: &[u8]) -> String {
    format!("{PREFIX}{}", base45::encode(cose))
}

/// Mints a complete YM1 code text.
pub fn mint(key: &SigningKey, kid: &Kid, claims: &Claims) -> String {
    to_text(&mint_cose(key, kid, claims))
}

/// The CBOR bytes inside a code text (for tests and diagnostics).
pub fn cose_bytes(text: &str) -> Result<Vec<u8>, FormatError> {
    let text = text.trim();
    match text.get(..PREFIX.len()) {
        Some(p) if p.eq_ignore_ascii_case(PREFIX) => {
            base45::decode(&text[PREFIX.len()..]).map_err(|_| FormatError::Base45)
        }
        _ => Err(FormatError::Prefix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verification::keys::SigningKey;

    pub(crate) fn sample_claims(kind: CodeKind) -> Claims {
        Claims {
            iss: "HLJ-YMTB".into(),
            sub: vec![7; 16],
            exp: 1_800_000_060,
            nbf: None,
            iat: 1_800_000_000,
            cti: vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
            kind,
            service: "SVC01".into(),
            scenes: Some(vec!["GATE-A".into()]),
            mode: Some(AccessMode::Fused),
            business_codes: vec!["B1".into(), "B2".into()],
            catalogue: (kind == CodeKind::Static).then(|| "CAT9".into()),
            serial: (kind == CodeKind::Static).then(|| "0001".into()),
            version: (kind == CodeKind::Static).then_some(3),
        }
    }

    #[test]
    fn mint_then_parse_round_trips_for_every_alg() {
        for alg in Alg::ALL {
            let key = SigningKey::generate(alg);
            let kid = Kid::new(b"kid-1".to_vec()).expect("kid");
            for kind in [CodeKind::Dynamic, CodeKind::Static] {
                let claims = sample_claims(kind);
                let text = mint(&key, &kid, &claims);
                assert!(text.starts_with("YM1:"));
                assert!(text.len() < MAX_TEXT_LEN);
                let parsed = parse(&text).expect("parse");
                assert_eq!(parsed.alg, alg);
                assert_eq!(parsed.kid, b"kid-1");
                assert_eq!(parsed.claims, claims);
                assert!(key
                    .verifying_key()
                    .verify(&parsed.to_be_signed, &parsed.signature));
                // case-insensitive prefix and surrounding whitespace
                let lower = format!("  ym1:{}\r\n", &text[4..]);
                assert_eq!(parse(&lower).expect("lower").claims, claims);
            }
        }
    }

    #[test]
    fn structural_errors_are_named() {
        assert_eq!(parse("").expect_err("must fail"), FormatError::Prefix);
        assert_eq!(
            parse("YM2:AAA").expect_err("must fail"),
            FormatError::Prefix
        );
        assert_eq!(parse("YM1:a").expect_err("must fail"), FormatError::Base45);
        assert_eq!(
            parse(&format!("YM1:{}", "0".repeat(3000))).expect_err("must fail"),
            FormatError::TooLong
        );
        // valid Base45 of a CBOR integer
        assert_eq!(
            parse(&to_text(&[0x01])).expect_err("must fail"),
            FormatError::NotCose
        );
        // tag 18 around a non-array
        assert!(matches!(
            parse(&to_text(&[0xD2, 0x01])).expect_err("must fail"),
            FormatError::Cose(_)
        ));
    }

    #[test]
    fn static_code_needs_catalogue_and_serial() {
        let key = SigningKey::generate(Alg::EdDSA);
        let kid = Kid::new(b"k".to_vec()).expect("kid");
        let mut claims = sample_claims(CodeKind::Static);
        claims.serial = None;
        let text = mint(&key, &kid, &claims);
        assert_eq!(
            parse(&text).expect_err("must fail"),
            FormatError::MissingClaim("cat/sn")
        );
    }

    #[test]
    fn short_or_long_cti_is_malformed() {
        let key = SigningKey::generate(Alg::EdDSA);
        let kid = Kid::new(b"k".to_vec()).expect("kid");
        for len in [0usize, 7, 17] {
            let mut claims = sample_claims(CodeKind::Dynamic);
            claims.cti = vec![9; len];
            assert_eq!(
                parse(&mint(&key, &kid, &claims)).expect_err("must fail"),
                FormatError::BadClaim("cti")
            );
        }
    }
}
