//! Shared test fixtures: keys, claims and trust states built in memory.
#![allow(dead_code)]

pub mod dataset;
pub mod http;
#[cfg(feature = "platform")]
pub mod pg;
pub mod powerfs;

use std::path::{Path, PathBuf};

use yima_gate::checkpoint::{Checkpoint, Create};
use yima_gate::clock::{FixedClock, VerifyTime};
use yima_gate::verification::code::Claims;
use yima_gate::verification::keys::{Alg, KeyPair, KeyRing, Kid};
use yima_gate::verification::trust::TrustState;
use yima_gate::verification::verdict::{AccessMode, CodeKind};

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

/// [`gate`] started under umask 022 (a shell's usual), as a technician would run it: whatever
/// the binary creates must still be private.
pub fn gate_umask_022() -> std::process::Command {
    let inner = gate();
    let mut c = std::process::Command::new("sh");
    c.args(["-c", "umask 022; exec \"$@\"", "sh"])
        .arg(inner.get_program())
        .args(inner.get_args());
    c
}

/// Every file and directory under `dir` that group or others can read, write or enter.
pub fn not_private(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                continue;
            }
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                out.push(format!("{:o} {}", mode, p.display()));
            }
            if meta.is_dir() {
                stack.push(p);
            }
        }
    }
    out
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

/// A file or folder of the vendored test data (`tests/data/...`).
pub fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("data")
        .join(rel)
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

/// Provisions a state directory as `yima-gate init` does.
pub fn provision(state: &Path) {
    yima_gate::checkpoint::provision(state).expect("provision");
}

/// A checkpoint on `state` (opened as a restart would, `Create::Guarded`) with a fixed trusted
/// clock at `now_s`.
pub fn open_checkpoint(state: &Path, trust: TrustState, now_s: i64) -> Checkpoint {
    open_checkpoint_as(state, Create::Guarded, trust, now_s)
}

/// [`open_checkpoint`] choosing how a missing store is treated.
pub fn open_checkpoint_as(
    state: &Path,
    create: Create,
    trust: TrustState,
    now_s: i64,
) -> Checkpoint {
    Checkpoint::open(state, create, trust, |_| {
        std::sync::Arc::new(FixedClock(VerifyTime::trusted(now_s * 1000)))
    })
    .expect("open checkpoint")
}

/// A provisioned gate: a state directory made by `init`, an Ed25519 key valid around now with
/// its trust file, a frames folder and a free API port; [`Gate::config_with`] writes its config.
pub struct Gate {
    pub dir: tempfile::TempDir,
    pub key: KeyPair,
    pub port: u16,
}

/// Wall-clock seconds (codes for a running daemon are minted around now).
pub fn now_s() -> i64 {
    yima_gate::clock::wall_clock_ms() / 1000
}

impl Gate {
    pub fn new() -> Gate {
        let dir = tempfile::tempdir().expect("tmp");
        let key = KeyPair::generate(
            Alg::EdDSA,
            Kid::new(b"d".to_vec()).expect("kid"),
            now_s() - 3600,
            now_s() + 3600,
        );
        let entry = serde_json::to_string(&key.trusted_key().to_entry()).expect("json");
        yima_gate::files::write_durable(&dir.path().join("trust.json"), entry.as_bytes(), 0o644)
            .expect("trust");
        provision(&dir.path().join("state"));
        std::fs::create_dir_all(dir.path().join("frames")).expect("frames");
        Gate {
            dir,
            key,
            port: free_port(),
        }
    }

    /// A code minted with the gate's key at `iat`: dynamic, or static with serial `static_sn`.
    pub fn code(&self, iat: i64, static_sn: Option<&str>) -> String {
        // A fresh code identifier every call: two codes minted in one second are two codes.
        static MINTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = MINTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut c = dynamic_claims(iat, (iat as u64 ^ 0x77) ^ (n << 40));
        c.scenes = None;
        if let Some(sn) = static_sn {
            c = yima_gate::verification::code::Claims {
                scenes: None,
                ..static_claims(iat, "CAT", sn, 1)
            };
        }
        yima_gate::verification::code::mint(&self.key.signing, &self.key.kid, &c)
    }

    /// A config with these `[[source]]` sections.
    pub fn config(&self, sources: &str) -> std::path::PathBuf {
        self.config_with(sources, "")
    }

    /// A config with these sources and extra sections.
    pub fn config_with(&self, sources: &str, extra: &str) -> std::path::PathBuf {
        let d = self.dir.path();
        let text = format!(
            r#"
[terminal]
id = "GATE-T1"
accept_unknown_static = true
state_dir = "{state}"
[trust]
keys = "{trust}"
[clock]
trust_system_clock = true
[decode]
hold_off_ms = 0
budget_ms = 100
[relay]
file = "{pulses}"
pulse_ms = 300
[api]
listen = "127.0.0.1:{port}"
{extra}
{sources}
"#,
            state = d.join("state").display(),
            trust = d.join("trust.json").display(),
            pulses = d.join("pulses.jsonl").display(),
            port = self.port,
        );
        let path = d.join("gate.toml");
        std::fs::write(&path, text).expect("config");
        path
    }
}

/// `yima-gate run --config cfg` started by `cmd` ([`gate`] or [`gate_umask_022`]): stdin piped
/// (for a scanner-on-stdin source), output discarded.
pub fn run_daemon(mut cmd: std::process::Command, cfg: &Path) -> std::process::Child {
    cmd.args(["run", "--config"])
        .arg(cfg)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn yima-gate run")
}

impl Gate {
    /// The daemon's API base once `/healthz` answers, and the token it generated in `state`.
    pub fn api_up(&self, state: &Path) -> (String, String) {
        let base = format!("http://127.0.0.1:{}", self.port);
        assert!(
            wait_until_up(&format!("{base}/healthz")),
            "API did not come up"
        );
        let token = std::fs::read_to_string(state.join("api.token"))
            .expect("generated token")
            .trim()
            .to_string();
        (base, token)
    }

    /// Every record the gate's store holds (the daemon must have stopped).
    pub fn records(&self) -> Vec<yima_gate::verification::record::Record> {
        open_checkpoint(&self.dir.path().join("state"), TrustState::default(), T0)
            .records_from(0, 1_000_000)
            .expect("records")
    }
}

/// A machine's clocks moved by hand: wall and monotonic time advance together by
/// [`ManualTime::advance`]; the wall clock alone jumps with [`ManualTime::set_wall`].
#[derive(Debug, Clone)]
pub struct ManualTime {
    wall_ms: std::sync::Arc<std::sync::atomic::AtomicI64>,
    mono_ms: std::sync::Arc<std::sync::atomic::AtomicI64>,
    synchronized: bool,
}

impl ManualTime {
    /// Clocks at `wall_s`, the wall clock synchronized (NTP) or not.
    pub fn new(wall_s: i64, synchronized: bool) -> ManualTime {
        ManualTime {
            wall_ms: std::sync::Arc::new(wall_s.saturating_mul(1000).into()),
            mono_ms: std::sync::Arc::new(0.into()),
            synchronized,
        }
    }

    /// Real time passes.
    pub fn advance(&self, ms: i64) {
        use std::sync::atomic::Ordering::SeqCst;
        self.wall_ms.fetch_add(ms, SeqCst);
        self.mono_ms.fetch_add(ms, SeqCst);
    }

    /// The wall clock is set (by hand, a bad RTC, a rogue NTP server); monotonic time is not.
    pub fn set_wall(&self, ms: i64) {
        self.wall_ms.store(ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// The gate's trusted clock over these clocks, with the persisted `floor` and 5 s skew.
    pub fn clock(&self, floor: i64) -> std::sync::Arc<dyn yima_gate::clock::Clock> {
        std::sync::Arc::new(yima_gate::clock::TrustedClock::new(
            self.clone(),
            floor,
            5000,
        ))
    }
}

impl yima_gate::clock::TimeSource for ManualTime {
    fn wall_ms(&self) -> i64 {
        self.wall_ms.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn mono_ms(&self) -> i64 {
        self.mono_ms.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn wall_synchronized(&self) -> bool {
        self.synchronized
    }
}
