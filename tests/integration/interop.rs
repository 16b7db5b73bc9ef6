//! Interoperability with an independent COSE implementation written from the spec alone
//! (`tests/interop/cose_peer.py`: pycose, cbor2, base45, gmssl): its codes verify here, and
//! ours verify there, for all four algorithms and both kinds.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::common::*;
use yima_gate::clock::VerifyTime;
use yima_gate::verification::code;
use yima_gate::verification::keys::{Alg, KeyRing};
use yima_gate::verification::trust::TrustState;
use yima_gate::verification::verdict::{CodeKind, Reason};
use yima_gate::verification::verifier::{verify, NothingSpent};

fn peer() -> Option<PathBuf> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/cose_peer.py");
    let ok = Command::new("python3")
        .args(["-c", "import pycose, cbor2, gmssl, base45"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        return Some(script);
    }
    let msg = "python3 with pycose, cbor2, gmssl and base45 is needed \
               (pip install -r tests/interop/requirements.txt)";
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIP: {msg}");
    None
}

fn run_peer(script: &PathBuf, args: &[&str], input: Option<&str>) -> serde_json::Value {
    let mut child = Command::new("python3")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn python3");
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(i) = input {
        stdin.write_all(i.as_bytes()).expect("write");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "peer failed: {:?}", out.status);
    serde_json::from_slice(&out.stdout).expect("peer JSON")
}

#[test]
fn codes_minted_by_the_peer_verify_here() {
    let Some(script) = peer() else { return };
    let minted = run_peer(&script, &["mint", "--iat", &T0.to_string()], None);
    let ring = KeyRing::from_json(&minted["trust"].to_string()).expect("peer trust entries");
    assert_eq!(ring.len(), 4);
    let mut trust = TrustState {
        keys: ring,
        ..TrustState::default()
    };
    trust.terminal.accept_unknown_static = true;
    let codes = minted["codes"].as_array().expect("codes");
    assert_eq!(codes.len(), 8);
    let mut algs = std::collections::BTreeSet::new();
    for c in codes {
        let text = c["text"].as_str().expect("text");
        let v = verify(
            text,
            VerifyTime::trusted((T0 + 1) * 1000),
            &trust,
            &NothingSpent,
        );
        assert_eq!(
            v.verdict.reason,
            Reason::Accepted,
            "peer {} {} code: {:?}",
            c["alg"],
            c["kind"],
            v.format_error
        );
        let claims = v.verdict.claims.expect("claims");
        assert_eq!(claims.service, "SVC-PY");
        assert_eq!(
            claims.business_codes,
            vec!["B-1".to_string(), "B-2".to_string()]
        );
        if c["kind"] == "static" {
            assert_eq!(claims.kind, CodeKind::Static);
            assert_eq!(claims.catalogue.as_deref(), Some("CAT-PY"));
        }
        algs.insert(v.envelope.expect("envelope").0.name());
        // and a tampered copy does not
        let mut cose = code::cose_bytes(text).expect("cose");
        let last = cose.len() - 1;
        cose[last] ^= 0x01;
        let v = verify(
            &code::to_text(&cose),
            VerifyTime::trusted((T0 + 1) * 1000),
            &trust,
            &NothingSpent,
        );
        assert_eq!(v.verdict.reason, Reason::BadSignature);
    }
    assert_eq!(algs.len(), 4, "all four algorithms came from the peer");
}

#[test]
fn codes_minted_here_verify_in_the_peer() {
    let Some(script) = peer() else { return };
    let mut entries = Vec::new();
    let mut texts = Vec::new();
    let mut expected = Vec::new();
    for alg in Alg::ALL {
        let k = key(alg, &format!("rs-{}", alg.name()));
        entries.push(k.trusted_key().to_entry());
        for claims in [
            dynamic_claims(T0, 7),
            static_claims(T0, "CAT-RS", "SN-1", 4),
        ] {
            texts.push(code::mint(&k.signing, &k.kid, &claims));
            expected.push((alg, claims));
        }
    }
    // one forged code: signed by a key the peer does not trust, under a trusted kid
    let rogue = key(Alg::EdDSA, "rs-EdDSA");
    texts.push(code::mint(
        &rogue.signing,
        &rogue.kid,
        &dynamic_claims(T0, 8),
    ));
    let req = serde_json::json!({ "trust": entries, "codes": texts });
    let results = run_peer(&script, &["check"], Some(&req.to_string()));
    let results = results.as_array().expect("array");
    assert_eq!(results.len(), expected.len() + 1);
    for (r, (alg, claims)) in results.iter().zip(&expected) {
        assert_eq!(r["ok"], true, "{alg} {:?}: {r}", claims.kind);
        assert_eq!(r["alg"], alg.cose_id());
        assert_eq!(r["iss"], claims.iss.as_str());
        assert_eq!(r["iat"], claims.iat);
        assert_eq!(r["exp"], claims.exp);
        assert_eq!(r["svc"], claims.service.as_str());
        assert_eq!(
            r["kind"],
            if claims.kind == CodeKind::Dynamic {
                1
            } else {
                2
            }
        );
        assert_eq!(r["scn"], serde_json::json!(claims.scenes));
        assert_eq!(r["cat"], serde_json::json!(claims.catalogue));
    }
    assert_eq!(
        results.last().expect("last")["ok"],
        false,
        "the peer refuses the forgery"
    );
}

#[test]
fn the_peer_agrees_with_the_test_vectors() {
    let Some(script) = peer() else { return };
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/ym1-vectors.json");
    let results = run_peer(&script, &["vectors", file.to_str().expect("utf8")], None);
    let results = results.as_array().expect("array");
    assert!(results.len() >= 40);
    for r in results {
        assert_eq!(r["signature_valid"], r["expected"], "vector {}", r["name"]);
    }
}
