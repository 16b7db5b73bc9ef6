//! Drains a backlog of verification records (1,000,000 by default; `YIMA_DRAIN_RECORDS`) from a
//! gateway's store to the reference platform (`yima-gate platform`, its own process) on
//! loopback, over mutual TLS, and reports records/s and the peak RSS of the gateway side (this
//! process) and of the platform process during the drain. Target: ≥ 50,000 records/s with
//! memory bounded.
//!
//! Run: `cargo bench --bench sync_drain` (the backlog is built first: HMAC-signed dynamic codes
//! verified and recorded, so the records carry every field a real accepted record has).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use yima_gate::checkpoint::Checkpoint;
use yima_gate::checkpoint::Create;
use yima_gate::clock::{wall_clock_ms, FixedClock, VerifyTime};
use yima_gate::platform::client::AdminClient;
use yima_gate::sync::{SyncOptions, Syncer};
use yima_gate::verification::code::Claims;
use yima_gate::verification::keys::{Alg, KeyPair, KeyRing, Kid};
use yima_gate::verification::trust::TrustState;
use yima_gate::verification::verdict::{AccessMode, CodeKind};

fn rss_kib() -> u64 {
    rss_of("self")
}

fn rss_of(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// `yima-gate platform` on loopback ports the kernel picks, its data in `data`; returns the
/// process and its banner line (which names the two URLs) once it is up.
fn spawn_platform(data: &std::path::Path) -> (std::process::Child, String) {
    let mut platform = std::process::Command::new(env!("CARGO_BIN_EXE_yima-gate"))
        .args([
            "platform",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(data)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("platform");
    let mut banner = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(platform.stdout.take().expect("stdout")),
        &mut banner,
    )
    .expect("banner");
    (platform, banner)
}

fn main() {
    let n: u64 = std::env::var("YIMA_DRAIN_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tmp");
    yima_gate::sync::tls::install_provider();
    let data = dir.path().join("platform");
    let (mut platform, banner) = spawn_platform(&data);
    let platform_pid = platform.id().to_string();
    let url_after = |marker: &str| {
        let rest = &banner[banner.find(marker).expect(marker) + marker.len()..];
        rest.split_whitespace().next().expect("url").to_string()
    };
    let (sync_url, admin_url) = (url_after("sync API "), url_after("admin API "));
    let admin_token = std::fs::read_to_string(data.join("admin.token")).expect("token");
    let admin = AdminClient::new(&admin_url, admin_token.trim()).expect("admin");
    let token = admin.create_terminal("BENCH-1", &[]).expect("terminal");
    let state = dir.path().join("gate");
    let enrollment = yima_gate::sync::enroll(&sync_url, &token, "BENCH-1", &state).expect("enroll");

    // The backlog: n accepted HMAC dynamic codes, recorded durably (pipelined, one wait).
    let now_s = wall_clock_ms() / 1000;
    let key = KeyPair::generate(
        Alg::HMAC256,
        Kid::new(b"bench".to_vec()).expect("kid"),
        now_s - 3600,
        now_s + 3600,
    );
    let trust = TrustState {
        keys: KeyRing::new([key.trusted_key()]),
        ..TrustState::default()
    };

    let at = VerifyTime::trusted(now_s * 1000);
    let cp = Arc::new(
        Checkpoint::open(&state, Create::Provision, trust, |_| {
            Arc::new(FixedClock(at))
        })
        .expect("store"),
    );
    let t = Instant::now();
    let mut last = None;
    for i in 0..n {
        let mut cti = [0u8; 16];
        cti[..8].copy_from_slice(&i.to_be_bytes());
        let claims = Claims {
            iss: "HLJ-YMTB".into(),
            sub: i.to_le_bytes().to_vec(),
            exp: now_s + 60,
            nbf: None,
            iat: now_s - 1,
            cti: cti.to_vec(),
            kind: CodeKind::Dynamic,
            service: format!("SVC-{}", i % 7),
            scenes: Some(vec![format!("GATE-{}", i % 3)]),
            mode: Some(AccessMode::Fused),
            business_codes: vec!["BIZ-1".into()],
            catalogue: None,
            serial: None,
            version: None,
        };
        let text = yima_gate::verification::code::mint(&key.signing, &key.kid, &claims);
        let staged = cp.check_staged(&text).expect("record");
        assert!(staged.seq().is_some(), "recorded");
        last = Some(staged);
    }
    cp.wait_durable(&last.expect("staged")).expect("durable");
    println!(
        "backlog: {n} records built in {:.1} s; store {:.1} MB; RSS {:.1} MB",
        t.elapsed().as_secs_f64(),
        cp.status().bytes as f64 / 1e6,
        rss_kib() as f64 / 1024.0
    );

    let syncer = Syncer::new(
        cp.clone(),
        enrollment,
        SyncOptions {
            batch: yima_gate::sync::wire::MAX_BATCH,
            max_backlog: 0,
            request_timeout: Duration::from_secs(60),
            ..SyncOptions::default()
        },
    )
    .expect("syncer");
    let peak = Arc::new(AtomicU64::new(rss_kib()));
    let platform_peak = Arc::new(AtomicU64::new(0));
    let start_rss = rss_kib();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, platform_peak, done) = (peak.clone(), platform_peak.clone(), done.clone());
        let pid = platform_pid.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                platform_peak.fetch_max(rss_of(&pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let t = Instant::now();
    let pushed = syncer.push().expect("drain");
    let secs = t.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    assert_eq!(pushed, n);
    assert_eq!(cp.status().backlog, 0);
    let stats = admin.get("/admin/v1/stats").expect("stats");
    assert_eq!(stats["records"].as_u64(), Some(n));
    println!(
        "drain: {n} records in {secs:.2} s = {:.0} records/s (batches of {}); gateway RSS at \
         start {:.1} MB, peak during drain {:.1} MB; platform process peak {:.1} MB",
        n as f64 / secs,
        yima_gate::sync::wire::MAX_BATCH,
        start_rss as f64 / 1024.0,
        peak.load(Ordering::Relaxed) as f64 / 1024.0,
        platform_peak.load(Ordering::Relaxed) as f64 / 1024.0
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &platform_pid])
        .status();
    let _ = platform.wait();

    // The platform's start with the drained records: it checks every cursor against the
    // records held (db.rs, Durability) before it says it is up.
    let t = Instant::now();
    let (mut platform, _) = spawn_platform(&data);
    println!(
        "platform restart with {n} records held: up in {:.2} s (cursor check included)",
        t.elapsed().as_secs_f64()
    );
    let _ = platform.kill();
    let _ = platform.wait();
}
