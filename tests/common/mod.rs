//! Shared test fixtures: keys, claims and trust states built in memory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use yima_gate::code::Claims;
use yima_gate::keys::{Alg, KeyPair, KeyRing, Kid};
use yima_gate::policy::TrustState;
use yima_gate::verdict::{AccessMode, CodeKind};

/// 2027-01-15T08:00:00Z: the fixed "now" of the tables.
pub const T0: i64 = 1_800_000_000;

pub fn key(alg: Alg, kid: &str) -> KeyPair {
    KeyPair::generate(
        alg,
        Kid::new(kid.as_bytes().to_vec()).expect("kid"),
        T0 - 86_400,
        T0 + 86_400,
    )
}

pub fn trust_with(keys: &[&KeyPair]) -> TrustState {
    TrustState {
        keys: KeyRing::new(keys.iter().map(|k| k.trusted_key())),
        ..TrustState::default()
    }
}

pub fn dynamic_claims(iat: i64, cti_seed: u64) -> Claims {
    let mut cti = vec![0u8; 16];
    cti[..8].copy_from_slice(&cti_seed.to_be_bytes());
    cti[8..].copy_from_slice(&(!cti_seed).to_be_bytes());
    Claims {
        iss: "HLJ-YMTB".into(),
        sub: b"pairwise-subject-token".to_vec(),
        exp: iat + 60,
        nbf: None,
        iat,
        cti,
        kind: CodeKind::Dynamic,
        service: "SVC-BUS".into(),
        scenes: Some(vec!["GATE-A".into(), "GATE-B".into()]),
        mode: Some(AccessMode::Fused),
        business_codes: vec!["BIZ-1".into()],
        catalogue: None,
        serial: None,
        version: None,
    }
}

pub fn static_claims(iat: i64, cat: &str, sn: &str, ver: u64) -> Claims {
    Claims {
        kind: CodeKind::Static,
        exp: iat + 365 * 86_400,
        catalogue: Some(cat.into()),
        serial: Some(sn.into()),
        version: Some(ver),
        mode: Some(AccessMode::Independent),
        ..dynamic_claims(iat, 0x5747)
    }
}

/// Path of a binary built by cargo for this test run.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_yima-gate"))
}

/// A command that runs the binary under test. When the suite runs under an emulator
/// (`cross/build-aarch64.sh --test` sets `YIMA_TEST_RUNNER`, e.g. `qemu-aarch64-static -L …`),
/// the binary is started through it too: there is no binfmt_misc to do it for us.
pub fn gate() -> std::process::Command {
    command_for(&bin())
}

/// A command running `program` (built for the target) through `YIMA_TEST_RUNNER` if set.
pub fn command_for(program: &Path) -> std::process::Command {
    match std::env::var("YIMA_TEST_RUNNER")
        .ok()
        .filter(|r| !r.trim().is_empty())
    {
        Some(runner) => {
            let mut parts = runner.split_whitespace();
            let mut c = std::process::Command::new(parts.next().unwrap_or_default());
            c.args(parts).arg(program);
            c
        }
        None => std::process::Command::new(program),
    }
}

/// `../shared/...` relative to the crate root, or `None` with a loud message. In CI
/// (`CI` set) a missing dataset is a failure, never a silent pass.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("shared")
        .join(rel);
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() {
        panic!("required shared data {} is missing in CI", p.display());
    }
    eprintln!("SKIP: shared data {} not present", p.display());
    None
}

/// A loopback port free at the time of asking (tests give each daemon its own).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `url` until it answers 200 (bounded: 5 s); the daemon's API comes up asynchronously.
pub fn wait_until_up(url: &str) -> bool {
    let http = reqwest::blocking::Client::new();
    for _ in 0..200 {
        if http.get(url).send().is_ok_and(|r| r.status() == 200) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    false
}
