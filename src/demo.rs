//! `yima-gate demo`: the verification core end to end on built-in scenarios, with real keys,
//! a real durable store and the real checkpoint — the technician's first "does it work here?".

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use crate::checkpoint::Checkpoint;
use crate::clock::{wall_clock_ms, FixedClock, VerifyTime};
use crate::code::{self, Claims};
use crate::keys::{Alg, KeyPair, KeyRing, Kid};
use crate::policy::{Scenes, StaticState, StaticStatus, Terminal, TrustState};
use crate::store::{Create, Store};
use crate::verdict::{AccessMode, CodeKind, Reason};

struct Scenario {
    name: &'static str,
    text: String,
    expect: Reason,
}

fn claims(kind: CodeKind, service: &str, iat: i64, serial: Option<&str>) -> Claims {
    let mut cti = vec![0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut cti);
    let mut sub = vec![0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut sub);
    Claims {
        iss: "HLJ-YMTB".into(),
        sub,
        exp: iat
            + match kind {
                CodeKind::Dynamic => 60,
                CodeKind::Static => 365 * 86_400,
            },
        nbf: None,
        iat,
        cti,
        kind,
        service: service.into(),
        scenes: Some(vec!["GATE-1".into()]),
        mode: Some(AccessMode::Fused),
        business_codes: vec!["BUS-RIDE".into()],
        catalogue: serial.map(|_| "CAT-SOCIAL".into()),
        serial: serial.map(str::to_string),
        version: serial.map(|_| 1),
    }
}

/// Runs the demo; exit 0 when every scenario got its expected verdict.
pub fn run(state_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let tmp;
    let dir = match state_dir {
        Some(d) => d,
        None => {
            tmp = tempfile::Builder::new()
                .prefix("yima-gate-demo-")
                .tempdir()
                .context("creating a scratch state directory")?;
            tmp.path()
        }
    };
    let now_ms = wall_clock_ms();
    let now = now_ms / 1000;
    let kid = |s: &str| Kid::new(s.as_bytes().to_vec());
    let dynamic_key = KeyPair::generate(Alg::EdDSA, kid("demo-ed25519")?, now - 3600, now + 86_400);
    let static_key = KeyPair::generate(Alg::SM2, kid("demo-sm2")?, now - 3600, now + 86_400);
    let forger = KeyPair::generate(Alg::EdDSA, kid("demo-ed25519")?, now - 3600, now + 86_400);

    let mut trust = TrustState {
        keys: KeyRing::new([dynamic_key.trusted_key(), static_key.trusted_key()]),
        terminal: Terminal {
            authorized: true,
            scenes: Scenes::Only(["GATE-1".to_string()].into()),
            accept_unknown_static: false,
        },
        ..TrustState::default()
    };
    let enabled = StaticStatus {
        state: StaticState::Enabled,
        min_version: 0,
    };
    trust.statuses.set("CAT-SOCIAL", "0001", enabled);
    trust.statuses.set(
        "CAT-SOCIAL",
        "0002",
        StaticStatus {
            state: StaticState::Lost,
            ..enabled
        },
    );
    trust.services.suspend("SVC-PAUSED");

    let store = Store::open(dir, Create::Provision, now_ms)?;
    let at = VerifyTime::trusted(now_ms);
    let checkpoint = Checkpoint::new(store, Arc::new(FixedClock(at)), trust);

    let mint = |k: &KeyPair, c: &Claims| code::mint(&k.signing, &k.kid, c);
    let valid = mint(
        &dynamic_key,
        &claims(CodeKind::Dynamic, "SVC-BUS", now - 2, None),
    );
    let mut wrong_scene = claims(CodeKind::Dynamic, "SVC-BUS", now - 2, None);
    wrong_scene.scenes = Some(vec!["GATE-9".into()]);
    let scenarios = vec![
        Scenario {
            name: "valid dynamic code (Ed25519)",
            text: valid.clone(),
            expect: Reason::Accepted,
        },
        Scenario {
            name: "same code again",
            text: valid,
            expect: Reason::Replayed,
        },
        Scenario {
            name: "dynamic code issued 2 minutes ago",
            text: mint(
                &dynamic_key,
                &claims(CodeKind::Dynamic, "SVC-BUS", now - 120, None),
            ),
            expect: Reason::Expired,
        },
        Scenario {
            name: "static code, enabled (SM2)",
            text: mint(
                &static_key,
                &claims(CodeKind::Static, "SVC-CARD", now - 86_400, Some("0001")),
            ),
            expect: Reason::Accepted,
        },
        Scenario {
            name: "static code reported lost",
            text: mint(
                &static_key,
                &claims(CodeKind::Static, "SVC-CARD", now - 86_400, Some("0002")),
            ),
            expect: Reason::Lost,
        },
        Scenario {
            name: "service under emergency stop",
            text: mint(
                &dynamic_key,
                &claims(CodeKind::Dynamic, "SVC-PAUSED", now - 2, None),
            ),
            expect: Reason::ServiceSuspended,
        },
        Scenario {
            name: "code for another scene",
            text: mint(&dynamic_key, &wrong_scene),
            expect: Reason::WrongScene,
        },
        Scenario {
            name: "forged code (right kid, wrong key)",
            text: mint(
                &forger,
                &claims(CodeKind::Dynamic, "SVC-BUS", now - 2, None),
            ),
            expect: Reason::BadSignature,
        },
        Scenario {
            name: "not a YM1 code",
            text: "https://example.invalid/pay?id=1".into(),
            expect: Reason::Malformed,
        },
    ];

    println!("yima-gate demo — state in {}", dir.display());
    println!("{:<38} {:<20} {:>4}  message", "scenario", "reason", "seq");
    let mut all_ok = true;
    for s in &scenarios {
        let checked = checkpoint.check_at(&s.text, at)?;
        let ok = checked.reason() == s.expect;
        all_ok &= ok;
        println!(
            "{:<38} {:<20} {:>4}  {}{}",
            s.name,
            checked.reason().code(),
            checked.record.seq,
            checked.verification.verdict.message(),
            if ok { "" } else { "   <-- unexpected" }
        );
    }
    let records = checkpoint.store().records_from(0, usize::MAX)?;
    let accepted = records.iter().filter(|r| r.accepted()).count();
    println!(
        "{} verifications recorded durably ({} accepted, {} refused); store {} bytes",
        records.len(),
        accepted,
        records.len() - accepted,
        checkpoint.store().size_on_disk()
    );
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
