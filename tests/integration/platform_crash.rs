//! Power cuts of the reference platform (`yima-gate platform`, its own process) on a
//! filesystem that forgets everything unsynced ([`crate::common::powerfs`]): its data directory
//! cut in its first seconds, right after acknowledging 1,000-record batches and at random points
//! of ingest — every record a gate saw acknowledged is held exactly once afterwards, and the
//! platform comes back with its CA, admin token and terminals. And a gate whose policy cache is
//! larger than sled's blob threshold, cut and restarted offline, still verifies with it, and
//! deletes the confirmed records whose deletion the cut interrupted.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::json;
use yima_gate::checkpoint::{Checkpoint, Create};
use yima_gate::clock::{wall_clock_ms, FixedClock, SystemTimeSource, TrustedClock, VerifyTime};
use yima_gate::platform::client::{AdminClient, BackgroundPlatform};
use yima_gate::sync::{enroll, SyncOptions, Syncer};
use yima_gate::verification::code::Claims;
use yima_gate::verification::keys::{Alg, KeyPair, KeyRing, Kid};
use yima_gate::verification::trust::TrustState;
use yima_gate::verification::verdict::{AccessMode, CodeKind, Reason};

use crate::common::powerfs::PowerFs;

const TERMINAL: &str = "GATE-CUT-1";
/// Cut cycles; odd ones cut in the middle of a push, even ones right after its last reply.
const CYCLES: usize = 24;

/// A platform process serving on a fixed sync port (the gate's enrollment names it).
struct Platform {
    child: Child,
    admin: AdminClient,
    sync_url: String,
}

impl Platform {
    fn start(data: &Path, port: u16) -> Platform {
        let mut child = crate::common::command_for(&crate::common::bin())
            .args(["platform", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--admin-listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .stdout(Stdio::piped())
            .spawn()
            .expect("platform");
        // The banner is the platform saying it is up (its state open and durable).
        let mut banner = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut banner)
            .expect("banner");
        let url_after = |marker: &str| {
            let at = banner
                .find(marker)
                .unwrap_or_else(|| panic!("{marker} in {banner:?}"));
            banner[at + marker.len()..]
                .split_whitespace()
                .next()
                .expect("url")
                .to_string()
        };
        let token = std::fs::read_to_string(data.join("admin.token")).expect("admin token");
        let admin = AdminClient::new(&url_after("admin API "), token.trim()).expect("admin");
        Platform {
            child,
            admin,
            sync_url: url_after("sync API "),
        }
    }

    /// kill -9: the process dies mid-whatever, as it does when the power goes.
    fn kill(self) {}
}

impl Drop for Platform {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gate store verifying HMAC dynamic codes at a fixed trusted time (fast to fill).
pub struct Backlog {
    pub cp: Arc<Checkpoint>,
    key: KeyPair,
    now_s: i64,
    pub next: u64,
}

impl Backlog {
    pub fn open(state: &Path) -> Backlog {
        let now_s = wall_clock_ms() / 1000;
        let key = KeyPair::generate(
            Alg::HMAC256,
            Kid::new(b"cut".to_vec()).expect("kid"),
            now_s - 3600,
            now_s + 3600,
        );
        let trust = TrustState {
            keys: KeyRing::new([key.trusted_key()]),
            ..TrustState::default()
        };
        let at = VerifyTime::trusted(now_s * 1000);
        let cp = Arc::new(
            Checkpoint::open(state, Create::Provision, trust, |_| {
                Arc::new(FixedClock(at))
            })
            .expect("gate store"),
        );
        Backlog {
            cp,
            key,
            now_s,
            next: 0,
        }
    }

    /// Verifies and records `n` fresh codes (durable when this returns).
    pub fn add(&mut self, n: u64) {
        let mut last = None;
        for _ in 0..n {
            let i = self.next;
            self.next += 1;
            let mut cti = [0u8; 16];
            cti[..8].copy_from_slice(&i.to_be_bytes());
            let claims = Claims {
                iss: "HLJ-YMTB".into(),
                sub: i.to_le_bytes().to_vec(),
                exp: self.now_s + 60,
                nbf: None,
                iat: self.now_s - 1,
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
            let text =
                yima_gate::verification::code::mint(&self.key.signing, &self.key.kid, &claims);
            let staged = self.cp.check_staged(&text).expect("record");
            assert!(staged.seq().is_some(), "recorded");
            last = Some(staged);
        }
        if let Some(last) = last {
            self.cp.wait_durable(&last).expect("durable");
        }
    }
}

pub fn syncer(cp: &Arc<Checkpoint>, state: &Path) -> Syncer {
    let enrollment = yima_gate::sync::Enrollment::load(state)
        .expect("load")
        .expect("enrolled");
    Syncer::new(
        cp.clone(),
        enrollment,
        SyncOptions {
            batch: 1000,
            max_backlog: 0,
            request_timeout: Duration::from_secs(20),
            ..SyncOptions::default()
        },
    )
    .expect("syncer")
}

/// The power goes under the platform: the process dies, the disk forgets what was not synced,
/// the machine boots again.
fn cut(fs: &PowerFs, mnt: &Path, mounted: &mut Option<crate::common::powerfs::Mounted>) {
    drop(mounted.take());
    fs.cut();
    *mounted = Some(fs.mount(mnt).expect("remount"));
}

/// The seqs of a terminal's store the platform holds, in its order (admin API).
pub fn held_seqs(admin: &AdminClient, terminal: &str, store_id: &str) -> Vec<u64> {
    admin
        .get(&format!("/admin/v1/records?terminal={terminal}"))
        .expect("records")
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| r["store_id"] == store_id)
        .map(|r| r["record"]["seq"].as_u64().expect("seq"))
        .collect()
}

#[test]
fn platform_power_cuts_lose_no_acknowledged_record() {
    if !crate::common::powerfs::usable() {
        return;
    }
    yima_gate::sync::tls::install_provider();
    let dir = tempfile::tempdir().expect("tmp");
    let fs = PowerFs::new();
    let mnt = dir.path().join("disk");
    let mut mounted = Some(fs.mount(&mnt).expect("mount"));
    let data = mnt.join("platform");
    let port = crate::common::free_port();

    // First start, cut as soon as the platform said it is up and created a terminal.
    let p = Platform::start(&data, port);
    let admin_token = std::fs::read_to_string(data.join("admin.token")).expect("token");
    let token = p.admin.create_terminal(TERMINAL, &[]).expect("terminal");
    p.kill();
    cut(&fs, &mnt, &mut mounted);
    let mut p = Platform::start(&data, port);
    assert_eq!(
        std::fs::read_to_string(data.join("admin.token")).expect("token after the cut"),
        admin_token,
        "the admin token survived the first-start cut"
    );
    let terminals = p.admin.get("/admin/v1/terminals").expect("terminals");
    assert!(
        terminals.to_string().contains(TERMINAL),
        "the terminal survived the first-start cut: {terminals}"
    );
    // The one-time token still enrolls, and the CA that signed the gate's certificate
    // survives every later cut (each push below is over mutual TLS with it).
    let state = dir.path().join("gate");
    enroll(&p.sync_url, &token, TERMINAL, &state).expect("enroll after the cut");

    let mut gate = Backlog::open(&state);
    let store_id = gate.cp.outbox().expect("outbox").store_id().to_string();
    let mut rng = rand::rngs::StdRng::seed_from_u64(28);
    let mut mid_push_cuts = 0;
    for cycle in 0..CYCLES {
        gate.add(rng.gen_range(1000..2600));
        let s = syncer(&gate.cp, &state);
        if cycle % 2 == 0 {
            // Right after the platform acknowledged the last batch.
            s.push().expect("push");
            p.kill();
        } else {
            // At a random point of ingest.
            let wait = Duration::from_millis(rng.gen_range(0..400));
            std::thread::scope(|scope| {
                let pushing = scope.spawn(|| s.push());
                std::thread::sleep(wait);
                if !pushing.is_finished() {
                    mid_push_cuts += 1;
                }
                let _ = p.child.kill();
                let _ = pushing.join();
            });
            p.kill();
        }
        drop(s);
        cut(&fs, &mnt, &mut mounted);
        p = Platform::start(&data, port);
        let acknowledged = gate.cp.outbox().expect("outbox").synced_through();
        let held = held_seqs(&p.admin, TERMINAL, &store_id);
        assert!(
            held.len() as u64 >= acknowledged && held.iter().copied().eq(1..=held.len() as u64),
            "cycle {cycle}: {acknowledged} acknowledged, the platform holds {} (not 1..=n once each)",
            held.len()
        );
    }
    eprintln!(
        "platform power cuts: {CYCLES} ({mid_push_cuts} inside a push); {:?}",
        fs.counts()
    );
    assert!(mid_push_cuts > 0, "some cuts fell inside a push");

    // The rest goes without cuts: every record once, no gap, no missing records, counts agree.
    syncer(&gate.cp, &state).push().expect("final push");
    let total = gate.next;
    assert_eq!(gate.cp.outbox().expect("outbox").synced_through(), total);
    assert_eq!(gate.cp.status().backlog, 0);
    let held = held_seqs(&p.admin, TERMINAL, &store_id);
    assert!(
        held.iter().copied().eq(1..=total),
        "the platform holds {} records for {total} verifications",
        held.len()
    );
    let audit = p.admin.get("/admin/v1/audit").expect("audit");
    for kind in ["gap", "records_missing"] {
        assert!(
            !audit.to_string().contains(&format!("\"kind\":\"{kind}\"")),
            "no {kind} event: {audit}"
        );
    }
    let stats = p.admin.get("/admin/v1/stats").expect("stats");
    assert_eq!(stats["records"].as_u64(), Some(total), "{stats}");
    p.kill();
    drop(mounted);
}

/// A policy cache above sled's blob threshold (128 KiB: ~1,000 static codes in the status
/// list), a few verifications, a power cut of the gate: offline, the gate still has its keys
/// and its status list.
#[test]
fn a_gate_with_a_large_policy_cache_verifies_offline_after_a_power_cut() {
    if !crate::common::powerfs::usable() {
        return;
    }
    yima_gate::sync::tls::install_provider();
    let dir = tempfile::tempdir().expect("tmp");
    let p = BackgroundPlatform::start(&dir.path().join("platform")).expect("platform");
    let a = &p.admin;
    a.post(
        "/admin/v1/services",
        &json!({"code": "SVC-CARD", "name": "社保卡"}),
    )
    .expect("service");
    a.post(
        "/admin/v1/keys",
        &json!({"alg": "EdDSA", "kinds": ["dynamic", "static"]}),
    )
    .expect("key");
    for i in 0..1100 {
        p.db()
            .register_static(
                "CAT-SOCIAL",
                &format!("{i:06}-serial-number-long-enough-to-weigh-something"),
                &format!("user-{i}"),
                "SVC-CARD",
            )
            .expect("register");
    }
    let lost_sn = format!("{:06}-serial-number-long-enough-to-weigh-something", 7);
    let static_code = a
        .static_action("CAT-SOCIAL", &lost_sn, "apply")
        .expect("apply")["code"]
        .as_str()
        .expect("code")
        .to_string();
    a.static_action("CAT-SOCIAL", &lost_sn, "lost")
        .expect("lost");
    let token = a.create_terminal(TERMINAL, &[]).expect("terminal");

    let fs = PowerFs::new();
    let state = dir.path().join("gate");
    let mut mounted = Some(fs.mount(&state).expect("mount"));
    let enrollment = enroll(&p.sync_url(), &token, TERMINAL, &state).expect("enroll");
    let open = || {
        Arc::new(
            Checkpoint::open(&state, Create::Provision, TrustState::default(), |floor| {
                Arc::new(TrustedClock::new(SystemTimeSource::new(true), floor, 5000))
            })
            .expect("checkpoint"),
        )
    };
    let opts = SyncOptions {
        request_timeout: Duration::from_secs(2),
        online_timeout: Duration::from_millis(300),
        ..SyncOptions::default()
    };
    let cp = open();
    let syncer = Syncer::new(cp.clone(), enrollment.clone(), opts.clone()).expect("syncer");
    assert!(syncer.pull().expect("pull") >= 1);
    let policy = std::fs::metadata(state.join("policy.json")).expect("policy file");
    assert!(
        policy.len() > 128 * 1024,
        "the policy cache is above sled's blob threshold ({} bytes)",
        policy.len()
    );
    for i in 0..20 {
        let code = a
            .mint_dynamic(&format!("u-{i}"), "SVC-CARD", None)
            .expect("mint");
        assert_eq!(cp.check(&code).expect("check").reason(), Reason::Accepted);
    }
    let offline_code = a.mint_dynamic("u-offline", "SVC-CARD", None).expect("mint");
    // The platform confirms all 20; the cut comes before their deletion is made durable.
    assert_eq!(syncer.push().expect("push"), 20);
    drop(syncer);
    drop(cp);
    drop(p); // the platform is gone for good: the gate restarts offline
    drop(mounted.take());
    fs.cut();
    mounted = Some(fs.mount(&state).expect("remount"));

    let cp = open();
    assert_eq!(
        (cp.status().records, cp.status().synced_through),
        (0, 20),
        "confirmed records whose deletion the cut interrupted are deleted at open"
    );
    let _syncer = Syncer::new(cp.clone(), enrollment, opts).expect("syncer offline");
    assert_eq!(
        cp.check(&offline_code).expect("check").reason(),
        Reason::Accepted,
        "the keys survived the cut"
    );
    assert_eq!(
        cp.check(&static_code).expect("check").reason(),
        Reason::Lost,
        "the status list survived the cut"
    );
    assert_eq!(cp.status().records, 2, "every verification since kept");
    drop(_syncer);
    drop(cp);
    drop(mounted);
}
