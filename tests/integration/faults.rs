//! Faults a gate must ride out, on real parts: its disk filling up (a small tmpfs), its clock
//! jumping while it runs (libfaketime in the daemon's process), and the power going (a FUSE
//! filesystem that forgets every unsynced write). Each keeps every acknowledged record and
//! recovers by itself. The tmpfs and FUSE tests need root (CI runs as root).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{now_s, Gate};

fn skip(msg: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{msg}: CI must run this test"
    );
    eprintln!("SKIP: {msg}");
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn eventually(what: &str, within: Duration, f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

/// A tmpfs of `mb` MiB mounted on `dir` for as long as it lives.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path, mb: u32) -> SmallDisk {
        std::fs::create_dir_all(dir).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m,mode=0700")])
            .arg("yima-test")
            .arg(dir)
            .status()
            .expect("mount");
        assert!(ok.success(), "mount tmpfs on {}", dir.display());
        SmallDisk {
            dir: dir.to_path_buf(),
        }
    }

    /// Writes a filler file until the filesystem refuses (ENOSPC); returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0x5au8; 64 * 1024];
        loop {
            match f.write_all(&chunk) {
                Ok(()) => {}
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(28), "filled to ENOSPC: {e}");
                    break;
                }
            }
        }
        // Whatever the last partial chunk left: fill it byte by byte.
        while f.write_all(&[0]).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Verifies `code` through the gate's API; returns (HTTP status, verdict JSON).
fn verify(base: &str, token: &str, code: &str) -> (u16, serde_json::Value) {
    let r = reqwest::blocking::Client::new()
        .post(format!("{base}/api/v1/verify"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "code": code }))
        .send()
        .expect("verify");
    let status = r.status().as_u16();
    (status, r.json().expect("verdict json"))
}

fn get_json(base: &str, token: &str, path: &str) -> (u16, serde_json::Value) {
    let r = reqwest::blocking::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .expect("get");
    let status = r.status().as_u16();
    (status, r.json().expect("json"))
}

/// The daemon, its disk filled while it verifies: every code is refused `store_unavailable`
/// (unrecorded, 503, `/readyz` says `disk_full`), no acknowledged record is lost, and once
/// space returns the same process accepts codes again, with no restart.
#[test]
fn a_full_disk_fails_closed_loses_nothing_and_recovers_by_itself() {
    if !is_root() {
        return skip("mounting a tmpfs needs root");
    }
    yima_gate::sync::tls::install_provider();
    let gate = Gate::new();
    let state = gate.dir.path().join("state");
    let disk = SmallDisk::mount(&state, 24);
    crate::common::provision(&state);
    let cfg = gate.config("[[source]]\nkind = \"scanner\"\nstdin = true\n");
    let mut child = crate::common::run_daemon(crate::common::gate(), &cfg);
    let (base, token) = gate.api_up(&state);

    let mut acknowledged = Vec::new();
    let mut iat_seed = 0i64;
    let mut fresh = || {
        iat_seed += 1;
        gate.code(now_s() - 1 - (iat_seed % 30), Some(&format!("D{iat_seed}")))
    };
    for _ in 0..10 {
        let (status, v) = verify(&base, &token, &fresh());
        assert_eq!((status, v["reason"].as_str()), (200, Some("accepted")));
        acknowledged.push(v["seq"].as_u64().expect("seq"));
    }

    let filler = disk.fill();
    for _ in 0..5 {
        let (status, v) = verify(&base, &token, &fresh());
        assert_eq!(status, 503, "{v}");
        assert_eq!(v["reason"], "store_unavailable");
        assert_eq!(v["message"], "终端存储故障，请联系管理员");
        assert_eq!(v["accepted"], false);
        assert!(v.get("seq").is_none(), "not recorded: {v}");
    }
    let (ready, r) = get_json(&base, &token, "/readyz");
    assert_eq!(ready, 503);
    assert!(
        r["reasons"]
            .as_array()
            .expect("reasons")
            .iter()
            .any(|e| e["code"] == "disk_full"),
        "{r}"
    );
    let (_, st) = get_json(&base, &token, "/api/v1/status");
    assert_eq!(st["store"]["low_space"], true, "{st}");

    // Space returns: the same daemon verifies again.
    std::fs::remove_file(&filler).expect("free space");
    eventually(
        "readiness after space returns",
        Duration::from_secs(10),
        || get_json(&base, &token, "/readyz").0 == 200,
    );
    for _ in 0..5 {
        let (status, v) = verify(&base, &token, &fresh());
        assert_eq!((status, v["reason"].as_str()), (200, Some("accepted")));
        acknowledged.push(v["seq"].as_u64().expect("seq"));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert_eq!(child.wait().expect("wait").code(), Some(0));
    let held: std::collections::BTreeSet<u64> = gate.records().iter().map(|r| r.seq).collect();
    for seq in &acknowledged {
        assert!(held.contains(seq), "acknowledged record {seq} lost");
    }
    drop(disk);
}

/// Below the daemon's reserve: with no reserve at all, sled itself meets ENOSPC. The write
/// that fails takes the store out of service (refusing, unrecorded); once space returns the
/// checkpoint reopens the store from disk by itself, and every acknowledged record is there.
#[test]
fn a_write_that_meets_enospc_takes_the_store_out_of_service_until_space_returns() {
    use yima_gate::verification::verdict::Reason;
    if !is_root() {
        return skip("mounting a tmpfs needs root");
    }
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let disk = SmallDisk::mount(&state, 16);
    crate::common::provision(&state);
    let k = crate::common::key(yima_gate::verification::keys::Alg::EdDSA, "full");
    let mut trust = crate::common::trust_with(&[&k]);
    trust.terminal.scenes = yima_gate::verification::trust::Scenes::Any;
    let cp = crate::common::open_checkpoint(&state, trust, crate::common::T0);
    cp.set_min_free_bytes(0);
    let code = |i: u64| {
        let c = crate::common::dynamic_claims(crate::common::T0, 7_000_000 + i);
        yima_gate::verification::code::mint(&k.signing, &k.kid, &c)
    };
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let c = cp.check(&code(i)).expect("check");
        assert!(c.accepted(), "{:?}", c.reason());
        acknowledged.push(c.seq().expect("seq"));
    }
    let filler = disk.fill();
    // sled meets ENOSPC within a few records (pages already allocated take a few more).
    let mut refused_at = None;
    for i in 20..20_000 {
        let c = cp.check(&code(i)).expect("check");
        if c.reason() == Reason::StoreUnavailable {
            assert!(c.seq().is_none());
            refused_at = Some(i);
            break;
        }
        assert!(c.accepted(), "{:?}", c.reason());
        acknowledged.push(c.seq().expect("seq"));
    }
    assert!(refused_at.is_some(), "the full disk was never noticed");
    assert!(cp.status().failed.is_some(), "status says why");
    for i in 0..3 {
        let c = cp.check(&code(30_000 + i)).expect("check");
        assert_eq!(c.reason(), Reason::StoreUnavailable);
    }
    std::fs::remove_file(&filler).expect("free space");
    eventually("the store back in service", Duration::from_secs(15), || {
        cp.maintain();
        cp.status().failed.is_none()
    });
    assert_eq!(cp.status().reopened, 1);
    for i in 40_000..40_005 {
        let c = cp.check(&code(i)).expect("check");
        assert!(c.accepted(), "{:?}", c.reason());
        acknowledged.push(c.seq().expect("seq"));
    }
    let held: std::collections::BTreeSet<u64> = cp
        .records_from(0, 1_000_000)
        .expect("records")
        .iter()
        .map(|r| r.seq)
        .collect();
    for seq in &acknowledged {
        assert!(held.contains(seq), "acknowledged record {seq} lost");
    }
    drop(cp);
    drop(disk);
}
