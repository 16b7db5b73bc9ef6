//! The pure verifier: (code text, time, trust state, replay view) → verdict. No I/O, no clock
//! reads, no storage; every rule of the spec lives here and is table-tested.
//!
//! Rule order (the first failing rule decides): 1 structure (`malformed`) → terminal
//! authorization → policy age (`policy_stale`) → 2 key and signature → 7 clock trust (dynamic) → 3 time window → 6 service
//! and scene → 5 static-code status → 4 replay (dynamic). Replay is last so that a refused code
//! never consumes its single use.

use sha2::{Digest, Sha256};

use crate::clock::VerifyTime;
use crate::verification::code::{self, Claims, FormatError, ParsedCode};
use crate::verification::keys::Alg;
use crate::verification::trust::{Scenes, StaticState, TrustState};
use crate::verification::verdict::{BusinessClaims, CodeKind, Reason, Verdict};

/// The replay key of a dynamic code: a digest of (`iss`, `cti`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplayTag(pub [u8; 16]);

impl ReplayTag {
    pub fn of(iss: &str, cti: &[u8]) -> ReplayTag {
        let mut h = Sha256::new();
        h.update(b"ym1-replay\0");
        h.update((iss.len() as u64).to_be_bytes());
        h.update(iss.as_bytes());
        h.update(cti);
        let digest = h.finalize();
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&digest[..16]);
        ReplayTag(tag)
    }
}

/// What the replay store knows about a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStatus {
    /// Never used (or its use has expired with its window).
    Fresh,
    /// Already used inside its window.
    Spent,
    /// The store cannot tell: it was missing or damaged at start, after this code's window began.
    Unknown,
}

/// Read-only view of the replay store.
pub trait ReplayView {
    /// `window_start_ms` is the earliest moment the code could have been accepted (iat − skew).
    fn replay_status(&self, tag: &ReplayTag, window_start_ms: i64) -> ReplayStatus;
}

/// A replay view with nothing spent (pure tests, `verify` dry runs).
#[derive(Debug, Clone, Copy, Default)]
pub struct NothingSpent;

impl ReplayView for NothingSpent {
    fn replay_status(&self, _: &ReplayTag, _: i64) -> ReplayStatus {
        ReplayStatus::Fresh
    }
}

/// The single use a verified dynamic code claims: the tag and when it may be forgotten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayClaim {
    pub tag: ReplayTag,
    pub expires_at_ms: i64,
}

/// Facts about an authenticated code that its record needs. Holds the raw `sub` and `cti`,
/// so it is deliberately not `Serialize` and its `Debug` hides them.
#[derive(Clone)]
pub struct CodeFacts {
    pub iss: String,
    pub kind: CodeKind,
    pub service: String,
    pub scene: Option<String>,
    pub cti: Vec<u8>,
    pub sub: Vec<u8>,
}

impl std::fmt::Debug for CodeFacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeFacts")
            .field("iss", &self.iss)
            .field("kind", &self.kind)
            .field("service", &self.service)
            .field("scene", &self.scene)
            .finish_non_exhaustive()
    }
}

/// The verifier's full answer: the verdict plus what the record must carry.
#[derive(Debug, Clone)]
pub struct Verification {
    pub verdict: Verdict,
    /// Algorithm and kid from the protected header, when the structure was valid.
    pub envelope: Option<(Alg, Vec<u8>)>,
    /// Present when the signature verified.
    pub facts: Option<CodeFacts>,
    /// Present exactly when the verdict is `accepted` for a dynamic code: the store must
    /// record this tag atomically with the record.
    pub replay: Option<ReplayClaim>,
    /// Why the structure was refused (diagnostics only; the verdict says `malformed`).
    pub format_error: Option<FormatError>,
    /// The platform decode engine's answer, when it was asked (see [`with_online_answer`]).
    pub online_reason: Option<Reason>,
}

impl Verification {
    /// A refusal decided before the code was looked at (nothing is known about it).
    pub fn refused(reason: Reason) -> Verification {
        Verification {
            verdict: Verdict::refused(reason),
            envelope: None,
            facts: None,
            replay: None,
            format_error: None,
            online_reason: None,
        }
    }

    fn malformed(e: FormatError) -> Verification {
        Verification {
            verdict: Verdict::refused(Reason::Malformed),
            envelope: None,
            facts: None,
            replay: None,
            format_error: Some(e),
            online_reason: None,
        }
    }
}

/// Verifies a code text. Total: every input yields a verification; nothing panics.
pub fn verify(
    text: &str,
    at: VerifyTime,
    trust: &TrustState,
    replay: &dyn ReplayView,
) -> Verification {
    match code::parse(text) {
        Ok(parsed) => verify_parsed(parsed, at, trust, replay),
        Err(e) => verify_malformed(e),
    }
}

/// The verification of a text that failed rule 1.
pub fn verify_malformed(e: FormatError) -> Verification {
    Verification::malformed(e)
}

/// Rules 2–7 for a structurally valid code.
pub fn verify_parsed(
    parsed: ParsedCode,
    at: VerifyTime,
    trust: &TrustState,
    replay: &dyn ReplayView,
) -> Verification {
    let mut out = Verification {
        verdict: Verdict::refused(Reason::Malformed),
        envelope: Some((parsed.alg, parsed.kid.clone())),
        facts: None,
        replay: None,
        format_error: None,
        online_reason: None,
    };
    let reason = decide(&parsed, at, trust, replay, &mut out);
    out.verdict.reason = reason;
    out
}

fn decide(
    parsed: &ParsedCode,
    at: VerifyTime,
    trust: &TrustState,
    replay: &dyn ReplayView,
    out: &mut Verification,
) -> Reason {
    let c = &parsed.claims;
    let now_ms = at.unix_ms;
    let now_s = now_ms.div_euclid(1000);
    let skew_ms = trust.settings.skew_s() * 1000;

    if !trust.terminal.authorized {
        return Reason::TerminalNotAuthorized;
    }
    if trust.valid_until_ms.is_some_and(|until| now_ms > until) {
        return Reason::PolicyStale;
    }

    // Rule 2: a key with this kid and alg, valid for this kind now, whose signature verifies.
    let mut candidates = trust
        .keys
        .with_kid(&parsed.kid)
        .iter()
        .filter(|k| k.alg() == parsed.alg && k.valid_for(c.kind, now_s))
        .peekable();
    if candidates.peek().is_none() {
        return Reason::UnknownKey;
    }
    if !candidates.any(|k| k.key.verify(&parsed.to_be_signed, &parsed.signature)) {
        return Reason::BadSignature;
    }

    // Authenticated from here on: the claims may be recorded and reported.
    let served = served_scene(c, &trust.terminal.scenes);
    let scene = served.clone().unwrap_or_default();
    out.facts = Some(CodeFacts {
        iss: c.iss.clone(),
        kind: c.kind,
        service: c.service.clone(),
        scene: scene.clone(),
        cti: c.cti.clone(),
        sub: c.sub.clone(),
    });
    out.verdict.claims = Some(business_claims(c, scene));

    // Rule 7.
    if c.kind == CodeKind::Dynamic && !at.trusted {
        return Reason::ClockUntrusted;
    }

    // Rule 3 (and `nbf`/`exp` for static codes).
    let (start_s, end_s) = match c.kind {
        CodeKind::Dynamic => (
            c.iat,
            c.exp.min(c.iat.saturating_add(trust.settings.refresh_s())),
        ),
        CodeKind::Static => (c.iat, c.exp),
    };
    let start_s = c.nbf.map_or(start_s, |nbf| start_s.max(nbf));
    let window_start_ms = start_s.saturating_mul(1000).saturating_sub(skew_ms);
    let window_end_ms = end_s.saturating_mul(1000).saturating_add(skew_ms);
    if now_ms < window_start_ms {
        return Reason::NotYetValid;
    }
    if now_ms > window_end_ms {
        return Reason::Expired;
    }

    // Rule 6.
    if trust.services.is_suspended(&c.service) {
        return Reason::ServiceSuspended;
    }
    if served.is_err() {
        return Reason::WrongScene;
    }

    // Rule 5.
    if c.kind == CodeKind::Static {
        let (cat, sn) = (
            c.catalogue.as_deref().unwrap_or_default(),
            c.serial.as_deref().unwrap_or_default(),
        );
        match trust.statuses.get(cat, sn) {
            None if trust.terminal.accept_unknown_static => {}
            None => return Reason::StaticCodeUnknown,
            Some(status) => match status.state {
                StaticState::Disabled => return Reason::Disabled,
                StaticState::Lost => return Reason::Lost,
                StaticState::Replaced => return Reason::Replaced,
                StaticState::Cancelled => return Reason::Cancelled,
                StaticState::Enabled if c.version.unwrap_or(0) < status.min_version => {
                    return Reason::Replaced
                }
                StaticState::Enabled => {}
            },
        }
        return Reason::Accepted;
    }

    // Rule 4: single use, checked last so that a refused code keeps its use.
    let tag = ReplayTag::of(&c.iss, &c.cti);
    match replay.replay_status(&tag, window_start_ms) {
        ReplayStatus::Spent => Reason::Replayed,
        ReplayStatus::Unknown => Reason::ReplayGuardRecovering,
        ReplayStatus::Fresh => {
            out.replay = Some(ReplayClaim {
                tag,
                expires_at_ms: window_end_ms,
            });
            Reason::Accepted
        }
    }
}

/// Combines the local verification with the platform decode engine's answer (在线解码).
/// Both are recorded; the stricter decides: a code the platform refuses (used at another
/// gate, revoked minutes ago) is refused here with the platform's reason and keeps its
/// single use; a code refused locally stays refused whatever the platform said.
pub fn with_online_answer(mut v: Verification, online: Option<Reason>) -> Verification {
    v.online_reason = online;
    if let Some(reason) = online {
        if v.verdict.accepted() && reason != Reason::Accepted {
            v.verdict.reason = reason;
            v.replay = None;
        }
    }
    v
}

/// The scene this terminal accepts the code for: `Ok(None)` for an any-scene terminal,
/// `Err(())` when no served scene matches.
fn served_scene(c: &Claims, served: &Scenes) -> Result<Option<String>, ()> {
    match (served, &c.scenes) {
        (Scenes::Any, None) => Ok(None),
        (Scenes::Any, Some(list)) => Ok(list.first().cloned()),
        (Scenes::Only(set), None) => Ok(set.iter().next().cloned()),
        (Scenes::Only(set), Some(list)) => list
            .iter()
            .find(|s| set.contains(*s))
            .cloned()
            .map(Some)
            .ok_or(()),
    }
}

fn business_claims(c: &Claims, scene: Option<String>) -> BusinessClaims {
    BusinessClaims {
        issuer: c.iss.clone(),
        kind: c.kind,
        service: c.service.clone(),
        scene,
        mode: c.mode,
        business_codes: c.business_codes.clone(),
        catalogue: c.catalogue.clone(),
        serial: c.serial.clone(),
        version: c.version,
        issued_at: c.iat,
        expires_at: c.exp,
    }
}
