//! YM1 test vectors (`tests/vectors/ym1-vectors.json`): code texts, the keys, the verification
//! time and trust state, and the expected verdict — for any implementation to check itself
//! against. This test checks ours; `tests/interop/cose_peer.py vectors` checks the signatures
//! with an independent COSE stack.
//!
//! Regenerate (only when the spec changes): `YIMA_WRITE_VECTORS=1 cargo test --test vectors`.

use std::path::PathBuf;

use crate::common::*;
use serde::{Deserialize, Serialize};
use yima_gate::clock::VerifyTime;
use yima_gate::verification::code::{self, Claims};
use yima_gate::verification::keys::{format_time, parse_time, Alg, KeyPair, KeyRing, TrustEntry};
use yima_gate::verification::trust::{Scenes, StatusFile, TrustState};
use yima_gate::verification::verdict::Reason;
use yima_gate::verification::verifier::{verify, ReplayStatus, ReplayTag, ReplayView};

#[derive(Debug, Serialize, Deserialize)]
struct VectorFile {
    format: String,
    spec: String,
    note: String,
    refresh_s: i64,
    skew_s: i64,
    keys: Vec<VectorKey>,
    vectors: Vec<Vector>,
}

#[derive(Debug, Serialize, Deserialize)]
struct VectorKey {
    #[serde(flatten)]
    entry: TrustEntry,
    /// Test-only private key (base64url): Ed25519 seed, P-256/SM2 scalar, HMAC secret.
    private: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Vector {
    name: String,
    text: String,
    /// Verification time (trusted).
    at: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    terminal_scenes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<StatusFile>,
    /// The replay store already holds this code's (iss, cti).
    #[serde(default)]
    already_used: bool,
    expect_reason: String,
    expect_message: String,
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/ym1-vectors.json")
}

struct Used(bool);

impl ReplayView for Used {
    fn replay_status(&self, _: &ReplayTag, _: i64) -> ReplayStatus {
        if self.0 {
            ReplayStatus::Spent
        } else {
            ReplayStatus::Fresh
        }
    }
}

#[test]
fn vectors_give_their_expected_verdicts() {
    if std::env::var_os("YIMA_WRITE_VECTORS").is_some() {
        write_vectors();
    }
    let file: VectorFile =
        serde_json::from_str(&std::fs::read_to_string(path()).expect("vectors file"))
            .expect("json");
    let entries: Vec<TrustEntry> = file.keys.iter().map(|k| k.entry.clone()).collect();
    let ring = KeyRing::from_json(&serde_json::to_string(&entries).expect("json")).expect("keys");
    let mut seen = std::collections::BTreeSet::new();
    for v in &file.vectors {
        let mut trust = TrustState {
            keys: ring.clone(),
            settings: yima_gate::verification::trust::Settings::new(file.refresh_s, file.skew_s)
                .expect("settings"),
            ..TrustState::default()
        };
        if !v.terminal_scenes.is_empty() {
            trust.terminal.scenes = Scenes::Only(v.terminal_scenes.iter().cloned().collect());
        }
        if let Some(s) = &v.status {
            s.apply(&mut trust);
        }
        let at = parse_time(&v.at, "at").expect("at") * 1000;
        let got = verify(
            &v.text,
            VerifyTime::trusted(at),
            &trust,
            &Used(v.already_used),
        );
        assert_eq!(
            got.verdict.reason.code(),
            v.expect_reason,
            "vector {}",
            v.name
        );
        assert_eq!(got.verdict.message(), v.expect_message, "vector {}", v.name);
        seen.insert(got.verdict.reason);
    }
    for r in [
        Reason::Accepted,
        Reason::Malformed,
        Reason::UnknownKey,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::Replayed,
        Reason::Lost,
        Reason::WrongScene,
        Reason::ServiceSuspended,
    ] {
        assert!(seen.contains(&r), "vectors cover {r}");
    }
}

fn write_vectors() {
    let t0 = T0;
    let at = |s: i64| format_time(s);
    let keys: Vec<KeyPair> = Alg::ALL
        .iter()
        .map(|a| key(*a, &format!("vec-{}", a.name().to_lowercase())))
        .collect();
    let mut vectors = Vec::new();
    let mut push = |name: String, text: String, at_s: i64, f: &dyn Fn(&mut Vector)| {
        let mut v = Vector {
            name,
            text,
            at: at(at_s),
            terminal_scenes: vec![],
            status: None,
            already_used: false,
            expect_reason: String::new(),
            expect_message: String::new(),
        };
        f(&mut v);
        vectors.push(v);
    };
    for (i, k) in keys.iter().enumerate() {
        let alg = k.signing.alg().name();
        let dynamic = dynamic_claims(t0, 1000 + i as u64);
        let text = code::mint(&k.signing, &k.kid, &dynamic);
        push(
            format!("{alg} dynamic accepted"),
            text.clone(),
            t0 + 10,
            &|_| {},
        );
        push(
            format!("{alg} dynamic expired"),
            text.clone(),
            t0 + 66,
            &|_| {},
        );
        push(
            format!("{alg} dynamic not yet valid"),
            text.clone(),
            t0 - 6,
            &|_| {},
        );
        push(
            format!("{alg} dynamic replayed"),
            text.clone(),
            t0 + 10,
            &|v| v.already_used = true,
        );
        push(
            format!("{alg} dynamic wrong scene"),
            text.clone(),
            t0 + 10,
            &|v| v.terminal_scenes = vec!["GATE-Z".into()],
        );
        let mut cose = code::cose_bytes(&text).expect("cose");
        let n = cose.len();
        cose[n - 1] ^= 0x80;
        push(
            format!("{alg} signature altered"),
            code::to_text(&cose),
            t0 + 10,
            &|_| {},
        );
        let stat: Claims = static_claims(t0 - 86_400 * 30, "CAT-V", &format!("SN-{i}"), 2);
        let stext = code::mint(&k.signing, &k.kid, &stat);
        let sn = format!("SN-{i}");
        let status = |state: &str| -> StatusFile {
            serde_json::from_value(serde_json::json!({
                "static_codes": [{"cat": "CAT-V", "sn": sn, "state": state}]
            }))
            .expect("status")
        };
        let enabled = status("enabled");
        let lost = status("lost");
        push(format!("{alg} static enabled"), stext.clone(), t0, &|v| {
            v.status = Some(enabled.clone())
        });
        push(format!("{alg} static lost"), stext.clone(), t0, &|v| {
            v.status = Some(lost.clone())
        });
        push(
            format!("{alg} static service suspended"),
            stext.clone(),
            t0,
            &|v| {
                let mut s = enabled.clone();
                s.suspended_services = vec!["SVC-BUS".into()];
                v.status = Some(s);
            },
        );
    }
    let stranger = key(Alg::EdDSA, "vec-unknown");
    push(
        "unknown kid".into(),
        code::mint(&stranger.signing, &stranger.kid, &dynamic_claims(t0, 5)),
        t0,
        &|_| {},
    );
    push("wrong prefix".into(), "YM2:ABC".into(), t0, &|_| {});
    push("not Base45".into(), "YM1:abc".into(), t0, &|_| {});
    push(
        "CBOR integer, not COSE".into(),
        code::to_text(&[0x01]),
        t0,
        &|_| {},
    );

    // Expected verdicts come from the implementation at generation time and are then frozen;
    // the assertions in the test above keep them honest from then on.
    let ring = KeyRing::new(keys.iter().map(|k| k.trusted_key()));
    for v in &mut vectors {
        let mut trust = TrustState {
            keys: ring.clone(),
            ..TrustState::default()
        };
        if !v.terminal_scenes.is_empty() {
            trust.terminal.scenes = Scenes::Only(v.terminal_scenes.iter().cloned().collect());
        }
        if let Some(s) = &v.status {
            s.apply(&mut trust);
        }
        let t = parse_time(&v.at, "at").expect("at") * 1000;
        let r = verify(
            &v.text,
            VerifyTime::trusted(t),
            &trust,
            &Used(v.already_used),
        )
        .verdict
        .reason;
        v.expect_reason = r.code().into();
        v.expect_message = r.message().into();
    }
    let file = VectorFile {
        format: "YM1 test vectors v1".into(),
        spec: "the YM1 format documented in src/verification/code.rs".into(),
        note: "Test keys only. Each vector: verify `text` at trusted time `at` with every key \
               below trusted, global refresh and skew as given, the terminal serving \
               `terminal_scenes` (empty = every scene), `status` as the status list (absent = \
               empty; unknown static codes refused), and the replay store holding the code iff \
               `already_used`."
            .into(),
        refresh_s: 60,
        skew_s: 5,
        keys: keys
            .iter()
            .map(|k| VectorKey {
                entry: k.trusted_key().to_entry(),
                private: serde_json::from_str::<serde_json::Value>(&k.to_json()).expect("json")
                    ["private"]
                    .as_str()
                    .expect("private")
                    .to_string(),
            })
            .collect(),
        vectors,
    };
    std::fs::create_dir_all(path().parent().expect("dir")).expect("mkdir");
    std::fs::write(
        path(),
        serde_json::to_string_pretty(&file).expect("json") + "\n",
    )
    .expect("write");
}
