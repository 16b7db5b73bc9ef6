//! Table tests of the pure verifier: every verdict of the spec, for every algorithm, with time
//! injected; plus a property test that no single-bit flip of a valid code is ever accepted.

use crate::common::*;
use proptest::prelude::*;
use yima_gate::clock::VerifyTime;
use yima_gate::verification::code::{self, Claims};
use yima_gate::verification::keys::{Alg, KeyPair, KindSet};
use yima_gate::verification::trust::{Scenes, Settings, StaticState, StaticStatus, TrustState};
use yima_gate::verification::verdict::Reason;
use yima_gate::verification::verifier::{
    verify, NothingSpent, ReplayStatus, ReplayTag, ReplayView,
};

/// A replay view that answers the same for every tag.
struct Always(ReplayStatus);

impl ReplayView for Always {
    fn replay_status(&self, _: &ReplayTag, _: i64) -> ReplayStatus {
        self.0
    }
}

fn ms(s: i64) -> i64 {
    s * 1000
}

struct Case {
    name: &'static str,
    claims: Claims,
    at: VerifyTime,
    trust: fn(&mut TrustState),
    replay: ReplayStatus,
    expect: Reason,
}

fn none(_: &mut TrustState) {}

fn cases() -> Vec<Case> {
    let d = dynamic_claims(T0, 1);
    let s = static_claims(T0 - 1000, "CAT-1", "SN-1", 2);
    let trusted = |t: i64| VerifyTime::trusted(t);
    let mut v = vec![
        Case {
            name: "dynamic fresh",
            claims: d.clone(),
            at: trusted(ms(T0 + 10)),
            trust: none,
            replay: ReplayStatus::Fresh,
            expect: Reason::Accepted,
        },
        Case {
            name: "dynamic at iat - skew",
            claims: d.clone(),
            at: trusted(ms(T0 - 5)),
            trust: none,
            replay: ReplayStatus::Fresh,
            expect: Reason::Accepted,
        },
        Case {
            name: "dynamic at end + skew",
            claims: d.clone(),
            at: trusted(ms(T0 + 65)),
            trust: none,
            replay: ReplayStatus::Fresh,
            expect: Reason::Accepted,
        },
        Case {
            name: "dynamic 1 ms past end + skew",
            claims: d.clone(),
            at: trusted(ms(T0 + 65) + 1),
            trust: none,
            replay: ReplayStatus::Fresh,
            expect: Reason::Expired,
        },
        Case {
            name: "dynamic long expired",
            claims: d.clone(),
            at: trusted(ms(T0 + 3600)),
            trust: none,
            replay: ReplayStatus::Fresh,
            expect: Reason::Expired,
        },
        Case {
            name: "dynamic 1 ms before iat - skew",
            claims: d.clone(),
            at: trusted(ms(T0 - 5) - 1),
            trust: none,
            replay: ReplayStatus::Fresh,
            expect: Reason::NotYetValid,
        },
        Case {
            name: "dynamic with exp beyond refresh is cut at iat + refresh",
            claims: Claims {
                exp: T0 + 3600,
                ..d.clone()
            },
            at: trusted(ms(T0 + 120)),
            trust: none,
            replay: ReplayStatus::Fresh,
            expect: Reason::Expired,
        },
        Case {
            name: "dynamic exp before iat + refresh wins",
            claims: Claims {
                exp: T0 + 20,
                ..d.clone()
            },
            at: trusted(ms(T0 + 30)),
            trust: none,
            replay: ReplayStatus::Fresh,
            expect: Reason::Expired,
        },
        Case {
            name: "platform refresh time 30 s",
            claims: d.clone(),
            at: trusted(ms(T0 + 40)),
            trust: |t| t.settings = Settings::new(30, 5).expect("settings"),
            replay: ReplayStatus::Fresh,
            expect: Reason::Expired,
        },
        Case {
            name: "skew 30 s widens both ends",
            claims: d.clone(),
            at: trusted(ms(T0 + 85)),
            trust: |t| t.settings = Settings::new(60, 30).expect("settings"),
            replay: ReplayStatus::Fresh,
            expect: Reason::Accepted,
        },
        Case {
            name: "nbf in the future",
            claims: Claims {
                nbf: Some(T0 + 30),
                ..d.clone()
            },
            at: trusted(ms(T0 + 10)),
            trust: none,
            replay: ReplayStatus::Fresh,
            expect: Reason::NotYetValid,
        },
        Case {
            name: "replayed",
            claims: d.clone(),
            at: trusted(ms(T0 + 10)),
            trust: none,
            replay: ReplayStatus::Spent,
            expect: Reason::Replayed,
        },
        Case {
            name: "replay store recovering",
            claims: d.clone(),
            at: trusted(ms(T0 + 10)),
            trust: none,
            replay: ReplayStatus::Unknown,
            expect: Reason::ReplayGuardRecovering,
        },
        Case {
            name: "policy older than the maximum offline age",
            claims: d.clone(),
            at: trusted(ms(T0 + 10)),
            trust: |t| t.valid_until_ms = Some(ms(T0 + 10) - 1),
            replay: ReplayStatus::Fresh,
            expect: Reason::PolicyStale,
        },
        Case {
            name: "policy at its last valid moment",
            claims: d.clone(),
            at: trusted(ms(T0 + 10)),
            trust: |t| t.valid_until_ms = Some(ms(T0 + 10)),
            replay: ReplayStatus::Fresh,
            expect: Reason::Accepted,
        },
        Case {
            name: "stale policy refuses static codes too",
            claims: s.clone(),
            at: trusted(ms(T0 + 10)),
            trust: |t| t.valid_until_ms = Some(0),
            replay: ReplayStatus::Fresh,
            expect: Reason::PolicyStale,
        },
        Case {
            name: "clock untrusted refuses dynamic",
            claims: d.clone(),
            at: VerifyTime::untrusted(ms(T0 + 10)),
            trust: none,
            replay: ReplayStatus::Fresh,
            expect: Reason::ClockUntrusted,
        },
        Case {
            name: "expired AND replayed says expired (time before replay)",
            claims: d.clone(),
            at: trusted(ms(T0 + 600)),
            trust: none,
            replay: ReplayStatus::Spent,
            expect: Reason::Expired,
        },
        Case {
            name: "terminal not authorized",
            claims: d.clone(),
            at: trusted(ms(T0 + 10)),
            trust: |t| t.terminal.authorized = false,
            replay: ReplayStatus::Fresh,
            expect: Reason::TerminalNotAuthorized,
        },
        Case {
            name: "service suspended",
            claims: d.clone(),
            at: trusted(ms(T0 + 10)),
            trust: |t| t.services.suspend("SVC-BUS"),
            replay: ReplayStatus::Fresh,
            expect: Reason::ServiceSuspended,
        },
        Case {
            name: "another service suspended",
            claims: d.clone(),
            at: trusted(ms(T0 + 10)),
            trust: |t| t.services.suspend("SVC-OTHER"),
            replay: ReplayStatus::Fresh,
            expect: Reason::Accepted,
        },
        Case {
            name: "wrong scene",
            claims: d.clone(),
            at: trusted(ms(T0 + 10)),
            trust: |t| t.terminal.scenes = Scenes::Only(["GATE-Z".to_string()].into()),
            replay: ReplayStatus::Fresh,
            expect: Reason::WrongScene,
        },
        Case {
            name: "served scene",
            claims: d.clone(),
            at: trusted(ms(T0 + 10)),
            trust: |t| t.terminal.scenes = Scenes::Only(["GATE-B".to_string()].into()),
            replay: ReplayStatus::Fresh,
            expect: Reason::Accepted,
        },
        Case {
            name: "code without scenes is valid in every scene",
            claims: Claims {
                scenes: None,
                ..d.clone()
            },
            at: trusted(ms(T0 + 10)),
            trust: |t| t.terminal.scenes = Scenes::Only(["GATE-Z".to_string()].into()),
            replay: ReplayStatus::Fresh,
            expect: Reason::Accepted,
        },
        Case {
            name: "static unknown refused by default",
            claims: s.clone(),
            at: trusted(ms(T0)),
            trust: none,
            replay: ReplayStatus::Fresh,
            expect: Reason::StaticCodeUnknown,
        },
        Case {
            name: "static unknown accepted by policy",
            claims: s.clone(),
            at: trusted(ms(T0)),
            trust: |t| t.terminal.accept_unknown_static = true,
            replay: ReplayStatus::Fresh,
            expect: Reason::Accepted,
        },
        Case {
            name: "static enabled, untrusted clock is fine, never single-use",
            claims: s.clone(),
            at: VerifyTime::untrusted(ms(T0)),
            trust: |t| set_static(t, StaticState::Enabled, 0),
            replay: ReplayStatus::Spent,
            expect: Reason::Accepted,
        },
        Case {
            name: "static disabled",
            claims: s.clone(),
            at: trusted(ms(T0)),
            trust: |t| set_static(t, StaticState::Disabled, 0),
            replay: ReplayStatus::Fresh,
            expect: Reason::Disabled,
        },
        Case {
            name: "static lost",
            claims: s.clone(),
            at: trusted(ms(T0)),
            trust: |t| set_static(t, StaticState::Lost, 0),
            replay: ReplayStatus::Fresh,
            expect: Reason::Lost,
        },
        Case {
            name: "static replaced",
            claims: s.clone(),
            at: trusted(ms(T0)),
            trust: |t| set_static(t, StaticState::Replaced, 0),
            replay: ReplayStatus::Fresh,
            expect: Reason::Replaced,
        },
        Case {
            name: "static cancelled",
            claims: s.clone(),
            at: trusted(ms(T0)),
            trust: |t| set_static(t, StaticState::Cancelled, 0),
            replay: ReplayStatus::Fresh,
            expect: Reason::Cancelled,
        },
        Case {
            name: "static older version than list allows",
            claims: s.clone(),
            at: trusted(ms(T0)),
            trust: |t| set_static(t, StaticState::Enabled, 3),
            replay: ReplayStatus::Fresh,
            expect: Reason::Replaced,
        },
        Case {
            name: "static current version",
            claims: s.clone(),
            at: trusted(ms(T0)),
            trust: |t| set_static(t, StaticState::Enabled, 2),
            replay: ReplayStatus::Fresh,
            expect: Reason::Accepted,
        },
        Case {
            name: "static past exp",
            claims: Claims {
                exp: T0 - 10,
                ..s.clone()
            },
            at: trusted(ms(T0)),
            trust: |t| set_static(t, StaticState::Enabled, 0),
            replay: ReplayStatus::Fresh,
            expect: Reason::Expired,
        },
        Case {
            name: "static of a suspended service",
            claims: s.clone(),
            at: trusted(ms(T0)),
            trust: |t| {
                set_static(t, StaticState::Enabled, 0);
                t.services.suspend("SVC-BUS")
            },
            replay: ReplayStatus::Fresh,
            expect: Reason::ServiceSuspended,
        },
    ];
    v.shrink_to_fit();
    v
}

fn set_static(t: &mut TrustState, state: StaticState, min_version: u64) {
    t.statuses
        .set("CAT-1", "SN-1", StaticStatus { state, min_version });
}

#[test]
fn every_rule_for_every_algorithm() {
    let mut covered = std::collections::BTreeSet::new();
    for alg in Alg::ALL {
        let k = key(alg, "kid-main");
        for case in cases() {
            let text = code::mint(&k.signing, &k.kid, &case.claims);
            let mut trust = trust_with(&[&k]);
            (case.trust)(&mut trust);
            let v = verify(&text, case.at, &trust, &Always(case.replay));
            assert_eq!(v.verdict.reason, case.expect, "{alg}: {}", case.name);
            assert_eq!(
                v.replay.is_some(),
                case.expect == Reason::Accepted
                    && case.claims.kind == yima_gate::verification::verdict::CodeKind::Dynamic,
                "{alg}: {}: replay claim only for accepted dynamic codes",
                case.name
            );
            covered.insert(case.expect);
        }
    }
    // Rules 1 and 2 are covered by the dedicated tests below.
    covered.extend([Reason::Malformed, Reason::UnknownKey, Reason::BadSignature]);
    // The backlog quota and a store out of service are the checkpoint's verdicts, not the
    // verifier's (tested in `sync` and `faults`).
    covered.insert(Reason::BacklogFull);
    covered.insert(Reason::StoreUnavailable);
    assert_eq!(
        covered.into_iter().collect::<Vec<_>>(),
        {
            let mut all = Reason::ALL.to_vec();
            all.sort();
            all
        },
        "the table covers every verdict"
    );
}

#[test]
fn expired_dynamic_code_says_exactly_ma_yi_guo_qi() {
    let k = key(Alg::EdDSA, "k");
    let text = code::mint(&k.signing, &k.kid, &dynamic_claims(T0, 9));
    let v = verify(
        &text,
        VerifyTime::trusted(ms(T0 + 61 + 5)),
        &trust_with(&[&k]),
        &NothingSpent,
    );
    assert_eq!(v.verdict.reason.code(), "expired");
    assert_eq!(v.verdict.message(), "码已过期");
}

#[test]
fn accepted_verdict_carries_business_claims_but_never_sub() {
    let k = key(Alg::ES256, "k");
    let claims = dynamic_claims(T0, 3);
    let text = code::mint(&k.signing, &k.kid, &claims);
    let mut trust = trust_with(&[&k]);
    trust.terminal.scenes = Scenes::Only(["GATE-B".to_string()].into());
    let v = verify(&text, VerifyTime::trusted(ms(T0)), &trust, &NothingSpent);
    assert!(v.verdict.accepted());
    let bc = v.verdict.claims.expect("claims");
    assert_eq!(bc.service, "SVC-BUS");
    assert_eq!(bc.scene.as_deref(), Some("GATE-B"));
    assert_eq!(bc.business_codes, vec!["BIZ-1".to_string()]);
    let json = serde_json::to_string(&bc).expect("json");
    assert!(!json.contains("pairwise-subject-token"));
    assert!(!format!("{:?}", v.facts).contains("pairwise"));
}

#[test]
fn key_selection_rules() {
    let at = VerifyTime::trusted(ms(T0));
    let good = key(Alg::EdDSA, "shared");
    let other = key(Alg::EdDSA, "shared");
    let claims = dynamic_claims(T0, 4);
    let text = code::mint(&good.signing, &good.kid, &claims);
    let check = |trust: &TrustState| verify(&text, at, trust, &NothingSpent).verdict.reason;

    assert_eq!(check(&trust_with(&[&good])), Reason::Accepted);
    // every key sharing a kid is tried
    assert_eq!(check(&trust_with(&[&other, &good])), Reason::Accepted);
    // only a wrong key with that kid
    assert_eq!(check(&trust_with(&[&other])), Reason::BadSignature);
    // no key with that kid
    assert_eq!(
        check(&trust_with(&[&key(Alg::EdDSA, "elsewhere")])),
        Reason::UnknownKey
    );
    assert_eq!(check(&TrustState::default()), Reason::UnknownKey);
    // a key with that kid but another algorithm is not a candidate
    assert_eq!(
        check(&trust_with(&[&key(Alg::ES256, "shared")])),
        Reason::UnknownKey
    );
    // a key not valid for dynamic codes
    let mut static_only = KeyPair {
        kinds: KindSet {
            dynamic: false,
            static_: true,
        },
        ..key(Alg::EdDSA, "x")
    };
    static_only.signing = good.signing_clone();
    static_only.kid = good.kid.clone();
    assert_eq!(check(&trust_with(&[&static_only])), Reason::UnknownKey);
    // a key outside its validity window
    let mut retired = key(Alg::EdDSA, "x");
    retired.signing = good.signing_clone();
    retired.kid = good.kid.clone();
    retired.not_after = T0 - 1;
    assert_eq!(check(&trust_with(&[&retired])), Reason::UnknownKey);
    retired.not_before = T0 + 1;
    retired.not_after = T0 + 100;
    assert_eq!(check(&trust_with(&[&retired])), Reason::UnknownKey);
}

/// Cloning a signing key through its serialized form (the type is deliberately not `Clone`).
trait SigningClone {
    fn signing_clone(&self) -> yima_gate::verification::keys::SigningKey;
}

impl SigningClone for KeyPair {
    fn signing_clone(&self) -> yima_gate::verification::keys::SigningKey {
        KeyPair::from_json(&self.to_json())
            .expect("round trip")
            .signing
    }
}

#[test]
fn malformed_inputs() {
    let k = key(Alg::EdDSA, "k");
    let trust = trust_with(&[&k]);
    let at = VerifyTime::trusted(ms(T0));
    let good = code::mint(&k.signing, &k.kid, &dynamic_claims(T0, 5));
    let long = format!("{good}{}", "0".repeat(2100));
    let inputs: Vec<String> = vec![
        String::new(),
        "hello".into(),
        "YM1:".into(),
        "YM1:%%%%".into(),
        good.replace("YM1:", "YM2:"),
        good[..good.len() - 3].to_string(),
        long,
        // HMAC alg inside a COSE_Sign1: mint with HMAC then swap the tag byte 17 → 18
        {
            let h = key(Alg::HMAC256, "h");
            let mut cose =
                code::cose_bytes(&code::mint(&h.signing, &h.kid, &dynamic_claims(T0, 6)))
                    .expect("cose");
            cose[0] = 0xD2;
            code::to_text(&cose)
        },
    ];
    for text in inputs {
        let v = verify(&text, at, &trust, &NothingSpent);
        assert_eq!(v.verdict.reason, Reason::Malformed, "input {text:.40}");
        assert_eq!(v.verdict.message(), "非法二维码");
        assert!(v.format_error.is_some());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    /// Flipping any single bit of a valid code's CBOR never yields `accepted`.
    #[test]
    fn single_bit_flip_never_accepted(alg_i in 0usize..4, bit in any::<prop::sample::Index>(), seed in any::<u64>()) {
        let alg = Alg::ALL[alg_i];
        let k = key(alg, "flip");
        let trust = trust_with(&[&k]);
        let text = code::mint(&k.signing, &k.kid, &dynamic_claims(T0, seed));
        let mut cose = code::cose_bytes(&text).expect("cose");
        let i = bit.index(cose.len() * 8);
        cose[i / 8] ^= 1 << (i % 8);
        let v = verify(&code::to_text(&cose), VerifyTime::trusted(ms(T0)), &trust, &NothingSpent);
        prop_assert_ne!(v.verdict.reason, Reason::Accepted);
    }

    /// Corrupting the text form (replace, insert or delete a character) never yields `accepted`.
    #[test]
    fn text_corruption_never_accepted(pos in any::<prop::sample::Index>(), op in 0u8..3, ch in prop::char::range('0', 'Z')) {
        let k = key(Alg::EdDSA, "txt");
        let trust = trust_with(&[&k]);
        let text = code::mint(&k.signing, &k.kid, &dynamic_claims(T0, 77));
        let mut chars: Vec<char> = text.chars().collect();
        // leave the case-insensitive prefix alone: it is not part of the signed bytes
        let i = 4 + pos.index(chars.len() - 4);
        match op {
            0 => { prop_assume!(chars[i] != ch); chars[i] = ch; }
            1 => chars.insert(i, ch),
            _ => { chars.remove(i); }
        }
        let corrupted: String = chars.into_iter().collect();
        let v = verify(&corrupted, VerifyTime::trusted(ms(T0)), &trust, &NothingSpent);
        prop_assert_ne!(v.verdict.reason, Reason::Accepted);
    }

    /// Arbitrary text never panics and is never accepted.
    #[test]
    fn arbitrary_text_is_refused(s in ".{0,300}") {
        let k = key(Alg::EdDSA, "any");
        let v = verify(&s, VerifyTime::trusted(ms(T0)), &trust_with(&[&k]), &NothingSpent);
        prop_assert_ne!(v.verdict.reason, Reason::Accepted);
    }

    /// Arbitrary bytes behind the prefix never panic and are never accepted.
    #[test]
    fn arbitrary_cbor_is_refused(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let k = key(Alg::EdDSA, "any");
        let v = verify(&code::to_text(&bytes), VerifyTime::trusted(ms(T0)), &trust_with(&[&k]), &NothingSpent);
        prop_assert_ne!(v.verdict.reason, Reason::Accepted);
    }
}
