//! The systemd unit and the notify protocol: `systemd-analyze verify` accepts the unit, its
//! offline security exposure is at most 2.0, and the daemon sends READY=1, WATCHDOG=1 and
//! STOPPING=1 to a NOTIFY_SOCKET bound by the test.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::bin;

fn unit() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd/yima-gate.service")
}

fn analyze() -> Option<()> {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        return Some(());
    }
    if std::env::var_os("CI").is_some() {
        panic!("systemd-analyze is needed in CI (apt-get install systemd)");
    }
    eprintln!("SKIP: systemd-analyze not installed");
    None
}

#[test]
fn unit_verifies_and_scores_at_most_2() {
    let Some(()) = analyze() else { return };
    let dir = tempfile::tempdir().expect("tmp");
    // verify needs the executables to exist: point the unit at the binary under test
    let text = std::fs::read_to_string(unit())
        .expect("unit")
        .replace("/usr/bin/yima-gate", bin().to_str().expect("utf8"));
    let local = dir.path().join("yima-gate.service");
    std::fs::write(&local, text).expect("write");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&local)
        .output()
        .expect("verify");
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(unit())
        .output()
        .expect("security");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no score in: {text}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unparsable: {line}"));
    eprintln!("systemd security exposure: {score}");
    assert!(score <= 2.0, "exposure {score} > 2.0");
    for needed in [
        "Type=notify",
        "ExecStart=/usr/bin/yima-gate run --config /etc/yima-gate/gate.toml",
        "RestartPreventExitStatus=2 64",
        "TimeoutStopSec=20s",
        "LimitNOFILE=",
        "DeviceAllow=char-ttyS rw",
        "StateDirectory=",
        "DevicePolicy=closed",
    ] {
        assert!(
            std::fs::read_to_string(unit())
                .expect("unit")
                .contains(needed),
            "{needed}"
        );
    }
}

#[test]
fn ready_watchdog_and_stopping_reach_the_notify_socket() {
    let dir = tempfile::tempdir().expect("tmp");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    // a minimal gate: keys, provisioned state, a stdin scanner
    let key = yima_gate::verification::keys::KeyPair::generate(
        yima_gate::verification::keys::Alg::EdDSA,
        yima_gate::verification::keys::Kid::new(b"n".to_vec()).expect("kid"),
        0,
        i64::from(u32::MAX),
    );
    let trust = dir.path().join("trust.json");
    std::fs::write(
        &trust,
        serde_json::to_string(&key.trusted_key().to_entry()).expect("json"),
    )
    .expect("trust");
    let cfg = dir.path().join("gate.toml");
    std::fs::write(
        &cfg,
        format!(
            "[terminal]\nid = \"N1\"\nstate_dir = \"{}\"\n[trust]\nkeys = \"{}\"\n[[source]]\nkind = \"scanner\"\nstdin = true\n[api]\nlisten = \"127.0.0.1:{}\"\n",
            dir.path().join("state").display(),
            trust.display(),
            crate::common::free_port()
        ),
    )
    .expect("config");
    let mut child = crate::common::gate()
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "100000")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut buf = [0u8; 512];
    let mut recv = || {
        let n = sock.recv(&mut buf).expect("a notify message");
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    let first = recv();
    assert!(first.contains("READY=1"), "{first}");
    let mut watchdogs = 0;
    while watchdogs < 2 {
        if recv().contains("WATCHDOG=1") {
            watchdogs += 1;
        }
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let mut stopping = false;
    for _ in 0..50 {
        if recv().contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "STOPPING=1 after SIGTERM");
    assert_eq!(child.wait().expect("wait").code(), Some(0));
    let _ = stdin.write_all(b"");
}
