//! The gateway and the reference platform on loopback: enrollment over mutual TLS, policy
//! bundles (key rotation, lost static code, emergency stop, staleness, forgery), and record
//! pushes through a platform that misbehaves — every record ends up held exactly once.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use yima_gate::checkpoint::Checkpoint;
use yima_gate::checkpoint::Create;
use yima_gate::clock::{SystemTimeSource, TrustedClock, VerifyTime};
use yima_gate::platform::client::BackgroundPlatform;
use yima_gate::platform::Fault;
use yima_gate::sync::wire::RecordWire;
use yima_gate::sync::{enroll, Enrollment, SyncError, SyncOptions, Syncer};
use yima_gate::verification::trust::TrustState;
use yima_gate::verification::verdict::Reason;

const TERMINAL: &str = "GATE-0001";

/// A platform with one service, an Ed25519 key for dynamic codes, an SM2 key for static
/// codes, and one authorized terminal; returns the platform and the terminal's token.
fn platform(dir: &Path) -> (BackgroundPlatform, String) {
    let p = BackgroundPlatform::start(&dir.join("platform")).expect("platform");
    let a = &p.admin;
    a.post(
        "/admin/v1/services",
        &json!({"code": "SVC-BUS", "name": "公交"}),
    )
    .expect("service");
    a.post(
        "/admin/v1/services",
        &json!({"code": "SVC-CARD", "name": "社保卡"}),
    )
    .expect("service");
    a.post(
        "/admin/v1/keys",
        &json!({"alg": "EdDSA", "kinds": ["dynamic"]}),
    )
    .expect("key");
    a.post(
        "/admin/v1/keys",
        &json!({"alg": "SM2", "kinds": ["static"]}),
    )
    .expect("key");
    let token = a.create_terminal(TERMINAL, &["GATE-1"]).expect("terminal");
    (p, token)
}

fn gate_checkpoint(state: &Path) -> Arc<Checkpoint> {
    Arc::new(
        Checkpoint::open(state, Create::Provision, TrustState::default(), |floor| {
            Arc::new(TrustedClock::new(SystemTimeSource::new(true), floor, 5000))
        })
        .expect("checkpoint"),
    )
}

fn opts() -> SyncOptions {
    SyncOptions {
        batch: 7,
        request_timeout: Duration::from_secs(2),
        online_timeout: Duration::from_millis(500),
        ..SyncOptions::default()
    }
}

/// An enrolled gateway: checkpoint + syncer.
fn gateway(p: &BackgroundPlatform, token: &str, state: &Path) -> (Arc<Checkpoint>, Syncer) {
    let enrollment = enroll(&p.sync_url(), token, TERMINAL, state).expect("enroll");
    let cp = gate_checkpoint(state);
    let syncer = Syncer::new(cp.clone(), enrollment, opts()).expect("syncer");
    (cp, syncer)
}

#[test]
fn enrollment_over_mutual_tls_and_what_it_refuses() {
    let dir = tempfile::tempdir().expect("tmp");
    let (p, token) = platform(dir.path());
    let state = dir.path().join("gate");

    // A token whose CA pin does not match the platform: the terminal refuses the platform.
    let (secret, _) = token.rsplit_once('.').expect("token");
    let wrong_pin = format!("{secret}.{}", "0".repeat(64));
    let e = enroll(&p.sync_url(), &wrong_pin, TERMINAL, &state).expect_err("wrong pin");
    assert!(matches!(e, SyncError::Transport(_)), "{e}");
    // Configured under another id: refused, and nothing is saved.
    let other = p.admin.create_terminal("GATE-9", &[]).expect("t9");
    let e = enroll(&p.sync_url(), &other, TERMINAL, &state).expect_err("id mismatch");
    assert!(e.to_string().contains("GATE-9"), "{e}");
    assert!(Enrollment::load(&state).expect("load").is_none());
    // The platform checked the id before spending the token: it still enrolls GATE-9.
    let nine = enroll(&p.sync_url(), &other, "GATE-9", &dir.path().join("g9")).expect("GATE-9");
    assert_eq!(nine.terminal_id, "GATE-9");

    let e = enroll(&p.sync_url(), &token, TERMINAL, &state).expect("enroll");
    assert_eq!(e.terminal_id, TERMINAL);
    let mode = std::fs::metadata(state.join(Enrollment::FILE))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("meta");
    assert_eq!(mode, 0o600, "the enrollment holds the private key");
    // The token was one-time.
    let again =
        enroll(&p.sync_url(), &token, TERMINAL, &dir.path().join("g2")).expect_err("spent token");
    assert!(
        matches!(again, SyncError::Status { status: 403, .. }),
        "{again}"
    );

    // With the certificate: served. Without one (same CA trust): 401.
    let client = yima_gate::sync::PlatformClient::new(&e, Duration::from_secs(5)).expect("client");
    assert!(client.pull(0).is_ok());
    let anonymous = Enrollment {
        cert_pem: String::new(),
        ..e.clone()
    };
    let tls = yima_gate::sync::tls::client_config(&anonymous.ca_pem, None).expect("tls");
    let http = reqwest::blocking::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .expect("http");
    let resp = http
        .get(format!("{}/v1/bundle", p.sync_url()))
        .send()
        .expect("send");
    assert_eq!(resp.status().as_u16(), 401);
}

#[test]
fn bundles_carry_rotation_lost_codes_and_emergency_stops_and_fail_closed_when_stale() {
    let dir = tempfile::tempdir().expect("tmp");
    let (p, token) = platform(dir.path());
    let a = &p.admin;
    a.post(
        "/admin/v1/static",
        &json!({"cat": "CAT-SOCIAL", "sn": "0001", "user": "u-1", "service": "SVC-CARD"}),
    )
    .expect("register");
    let static_code = a
        .static_action("CAT-SOCIAL", "0001", "apply")
        .expect("apply")["code"]
        .as_str()
        .expect("code")
        .to_string();
    let (cp, syncer) = gateway(&p, &token, &dir.path().join("gate"));

    // Before the first bundle the gate knows no key.
    let code = a.mint_dynamic("u-2", "SVC-BUS", None).expect("mint");
    assert_eq!(cp.check(&code).expect("check").reason(), Reason::UnknownKey);
    assert_eq!(syncer.pull().expect("pull"), 1);
    let code = a.mint_dynamic("u-2", "SVC-BUS", None).expect("mint");
    assert_eq!(cp.check(&code).expect("check").reason(), Reason::Accepted);
    assert_eq!(cp.check(&code).expect("check").reason(), Reason::Replayed);
    assert_eq!(
        cp.check(&static_code).expect("check").reason(),
        Reason::Accepted
    );
    // 亮码: the code rendered by the platform, as Grid Matrix and as QR, reads back and passes.
    let decoder = yima_gate::decode::Decoder::default();
    for (i, symbology) in [
        yima_gate::decode::Symbology::GridMatrix,
        yima_gate::decode::Symbology::Qr,
    ]
    .into_iter()
    .enumerate()
    {
        let (code, png) = a
            .show_dynamic(&format!("u-show-{i}"), "SVC-BUS", symbology)
            .expect("show");
        let img = image::load_from_memory(&png).expect("png").to_luma8();
        let read = decoder.decode(&img);
        assert_eq!(
            read.first().map(|d| (d.text.as_str(), d.symbology)),
            Some((code.as_str(), symbology))
        );
        assert_eq!(cp.check(&code).expect("check").reason(), Reason::Accepted);
    }

    // Key rotation: a code signed by the new key is unknown until the bundle brings the key.
    a.post("/admin/v1/keys/rotate", &json!({"kind": "dynamic"}))
        .expect("rotate");
    let rotated = a.mint_dynamic("u-3", "SVC-BUS", None).expect("mint");
    let before = cp.check_staged_at(
        &rotated,
        VerifyTime::trusted(yima_gate::clock::wall_clock_ms()),
    );
    assert_eq!(before.expect("check").reason(), Reason::UnknownKey);
    // Report the static code lost, stop the bus service: one pull brings all three.
    a.static_action("CAT-SOCIAL", "0001", "lost").expect("lost");
    a.post("/admin/v1/services/SVC-BUS/stop", &json!(null))
        .expect("stop");
    syncer.pull().expect("pull");
    assert_eq!(
        cp.check(&static_code).expect("check").reason(),
        Reason::Lost
    );
    assert_eq!(
        cp.check(&rotated).expect("check").reason(),
        Reason::ServiceSuspended,
        "emergency stop in force after one sync"
    );
    a.post("/admin/v1/services/SVC-BUS/resume", &json!(null))
        .expect("resume");
    syncer.pull().expect("pull");
    assert_eq!(
        cp.check(&rotated).expect("check").reason(),
        Reason::Accepted
    );

    // The delta only carried the change (resume token), and a restart keeps the policy.
    let trust_before = cp.trust();
    assert_eq!(trust_before.statuses.len(), 1);
    drop(syncer);
    drop(cp);
    let cp = gate_checkpoint(&dir.path().join("gate"));
    let enrollment = Enrollment::load(&dir.path().join("gate"))
        .expect("load")
        .expect("enrolled");
    let syncer = Syncer::new(cp.clone(), enrollment.clone(), opts()).expect("syncer");
    assert_eq!(
        cp.trust().keys.len(),
        trust_before.keys.len(),
        "policy survives restarts"
    );
    assert_eq!(
        cp.check(&static_code).expect("check").reason(),
        Reason::Lost
    );

    // Stale: past max_offline_s after the bundle, every code is refused (fail closed).
    let valid_until = cp.trust().valid_until_ms.expect("bundles expire");
    let stale_at = VerifyTime::trusted(valid_until + 1000);
    let fresh = a.mint_dynamic("u-4", "SVC-BUS", None).expect("mint");
    assert_eq!(
        cp.check_at(&fresh, stale_at).expect("check").reason(),
        Reason::PolicyStale
    );
    assert_eq!(
        cp.check_at(&fresh, VerifyTime::trusted(valid_until - 1000))
            .expect("check")
            .reason(),
        Reason::Expired,
        "just before the limit the usual rules decide"
    );

    // A forged bundle (the platform's bundle checked against another root key) is refused
    // and changes nothing.
    let keys_before = cp.trust().keys.len();
    let forged = Enrollment {
        root_key: yima_gate::sync::bundle::root_key_wire(
            &yima_gate::verification::keys::SigningKey::generate(
                yima_gate::verification::keys::Alg::EdDSA,
            ),
        ),
        ..enrollment
    };
    let rogue = Syncer::new(cp.clone(), forged, opts()).expect("syncer");
    a.static_action("CAT-SOCIAL", "0001", "enable")
        .expect("enable");
    let e = rogue.pull().expect_err("forged");
    assert!(matches!(e, SyncError::Bundle(_)), "{e}");
    assert_eq!(
        rogue
            .status
            .bundles_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(cp.trust().keys.len(), keys_before);
    assert_eq!(
        cp.check(&static_code).expect("check").reason(),
        Reason::Lost
    );
    drop(rogue);
    // The genuine platform's next bundle is taken.
    syncer.pull().expect("pull");
    assert_eq!(
        cp.check(&static_code).expect("check").reason(),
        Reason::Accepted
    );
}

#[test]
fn a_revoked_terminal_refuses_every_code_and_online_decode_spends_codes_platform_wide() {
    let dir = tempfile::tempdir().expect("tmp");
    let (p, token) = platform(dir.path());
    let a = &p.admin;
    let (cp, syncer) = gateway(&p, &token, &dir.path().join("gate"));
    let mut settings = a.get("/admin/v1/settings").expect("settings");
    settings["online_decode"] = json!(true);
    a.put("/admin/v1/settings", &settings).expect("put");
    syncer.pull().expect("pull");

    // Used at another gate (the platform's decode engine saw it first): refused here.
    let code = a.mint_dynamic("u-5", "SVC-BUS", None).expect("mint");
    let verdict = p.db().decode(&code).expect("decode elsewhere");
    assert_eq!(verdict, Reason::Accepted);
    let online = syncer.online_answer(&code);
    assert_eq!(online, Some(Reason::Replayed));
    let checked = cp.check_with_online(&code, online).expect("check");
    assert_eq!(checked.reason(), Reason::Replayed);
    assert_eq!(
        checked.record.as_ref().expect("recorded").online_reason,
        Some(Reason::Replayed)
    );
    // A fresh code: both answers say accepted, both are recorded.
    let code = a.mint_dynamic("u-6", "SVC-BUS", None).expect("mint");
    let checked = cp
        .check_with_online(&code, syncer.online_answer(&code))
        .expect("check");
    assert_eq!(checked.reason(), Reason::Accepted);
    assert_eq!(
        checked.record.as_ref().expect("recorded").online_reason,
        Some(Reason::Accepted)
    );

    a.post(
        &format!("/admin/v1/terminals/{TERMINAL}/revoke"),
        &json!(null),
    )
    .expect("revoke");
    syncer.pull().expect("pull");
    let code = a.mint_dynamic("u-7", "SVC-BUS", None).expect("mint");
    assert_eq!(
        syncer.online_answer(&code),
        None,
        "a revoked terminal is not served"
    );
    assert_eq!(
        cp.check(&code).expect("check").reason(),
        Reason::TerminalNotAuthorized
    );
    // Its records are still taken: nothing it verified is lost.
    assert_eq!(syncer.push().expect("push"), 3);
    assert_eq!(cp.status().backlog, 0);
}

/// What the gateway holds before pushing, in wire form, by seq.
fn snapshot(cp: &Checkpoint) -> Vec<RecordWire> {
    cp.records_from(0, usize::MAX)
        .expect("records")
        .iter()
        .map(RecordWire::from)
        .collect()
}

#[test]
fn records_reach_the_platform_exactly_once_through_drops_errors_hangs_resets_and_restarts() {
    let dir = tempfile::tempdir().expect("tmp");
    let (p, token) = platform(dir.path());
    let state = dir.path().join("gate");
    let (cp, syncer) = gateway(&p, &token, &state);
    syncer.pull().expect("pull");
    for i in 0..40 {
        let code = p
            .admin
            .mint_dynamic(&format!("u-{i}"), "SVC-BUS", None)
            .expect("mint");
        cp.check(&code).expect("check");
        if i % 3 == 0 {
            cp.check(&code).expect("replay"); // a replayed record too
        }
        cp.check("not a code").expect("malformed");
    }
    let expected = snapshot(&cp);
    assert_eq!(expected.len(), 94);
    let store_id = cp.status().store_id.to_string();

    // Batches of 7: the first is committed but its reply dropped; then the gateway dies.
    p.faults().arm(&[Fault::DropReplyAfterCommit]);
    assert!(syncer.push().is_err());
    assert_eq!(cp.status().synced_through, 0, "no reply, no cursor");
    assert_eq!(p.db().cursor(TERMINAL, &store_id).expect("cursor"), 7);
    drop(syncer);
    drop(cp);

    // Restarted: the same batch again (answered from what the platform holds), then a 503,
    // a hang past the client's timeout (committed meanwhile), a reset before commit.
    let cp = gate_checkpoint(&state);
    let enrollment = Enrollment::load(&state).expect("load").expect("enrolled");
    let syncer = Syncer::new(cp.clone(), enrollment, opts()).expect("syncer");
    assert_eq!(cp.status().backlog, 94);
    p.faults()
        .arm(&[Fault::ServerError, Fault::Hang, Fault::Reset]);
    let mut rounds = 0;
    while cp.status().backlog > 0 {
        rounds += 1;
        assert!(rounds < 20, "backlog does not drain");
        let _ = syncer.push();
    }
    assert_eq!(
        p.faults()
            .injected
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    assert!(rounds >= 4, "each fault cost a round: {rounds}");

    let held = p.db().records_of(TERMINAL).expect("held");
    assert_eq!(held.len(), expected.len(), "every record exactly once");
    for ((store, got), want) in held.iter().zip(&expected) {
        assert_eq!(store, &store_id);
        assert_eq!(got, want, "content matches for seq {}", want.seq);
    }
    assert_eq!(p.db().cursor(TERMINAL, &store_id).expect("cursor"), 94);
    assert_eq!(cp.status().synced_through, 94);
    assert!(
        cp.records_from(0, 10).expect("records").is_empty(),
        "synced records deleted"
    );
    let stats = p.db().stats().expect("stats");
    assert_eq!(stats.held.records, 94);
    assert_eq!(stats.held.by_verdict.get("accepted"), Some(&40));
    assert_eq!(stats.held.by_verdict.get("replayed"), Some(&14));
    assert_eq!(stats.held.by_verdict.get("malformed"), Some(&40));
    assert_eq!(stats.held.by_terminal.get(TERMINAL), Some(&94));

    // New records continue the sequence after the deleted ones; a platform that answers a
    // conflicting batch (same key, other content) gets 409 and the records stay here.
    let code = p
        .admin
        .mint_dynamic("u-late", "SVC-BUS", None)
        .expect("mint");
    assert_eq!(cp.check(&code).expect("check").seq(), Some(95));
    let mut forged = snapshot(&cp);
    forged[0].reason = Reason::Expired;
    let batch = yima_gate::sync::wire::RecordBatch {
        store_id: store_id.clone(),
        idempotency_key: yima_gate::sync::wire::RecordBatch::key(&store_id, 95, 95),
        first_seq: 95,
        records: forged,
    };
    p.db().ingest(TERMINAL, &batch).expect("someone else's 95");
    let e = syncer.push().expect_err("conflict");
    assert!(matches!(e, SyncError::Conflict { .. }), "{e}");
    assert_eq!(cp.status().backlog, 1, "kept for an operator");
}

#[test]
fn the_backlog_quota_fails_closed_without_dropping_records() {
    let dir = tempfile::tempdir().expect("tmp");
    let (p, token) = platform(dir.path());
    let state = dir.path().join("gate");
    let enrollment = enroll(&p.sync_url(), &token, TERMINAL, &state).expect("enroll");
    let cp = gate_checkpoint(&state);
    let syncer = Syncer::new(
        cp.clone(),
        enrollment,
        SyncOptions {
            max_backlog: 5,
            ..opts()
        },
    )
    .expect("syncer");
    for _ in 0..5 {
        cp.check("not a code").expect("recorded");
    }
    let full = cp.check("not a code").expect("a verdict");
    assert_eq!(full.reason(), Reason::BacklogFull);
    assert_eq!(
        full.verification.verdict.message(),
        "终端存储已满，请联系管理员"
    );
    assert_eq!(full.seq(), None, "not recorded");
    assert_eq!(cp.status().backlog, 5);
    assert_eq!(syncer.push().expect("push"), 5);
    assert_eq!(
        cp.check("not a code").expect("check").seq(),
        Some(6),
        "room again once the platform took them"
    );
}

#[test]
fn the_sync_thread_brings_an_emergency_stop_within_one_interval_and_pushes_on_its_own() {
    let dir = tempfile::tempdir().expect("tmp");
    let (p, token) = platform(dir.path());
    let state = dir.path().join("gate");
    let enrollment = enroll(&p.sync_url(), &token, TERMINAL, &state).expect("enroll");
    let cp = gate_checkpoint(&state);
    let interval = Duration::from_millis(400);
    let syncer = Arc::new(
        Syncer::new(
            cp.clone(),
            enrollment,
            SyncOptions {
                interval: Some(interval),
                ..opts()
            },
        )
        .expect("syncer"),
    );
    let thread = syncer.spawn().expect("spawn");
    let wait_until = |what: &str, f: &dyn Fn() -> bool| {
        // Polls the observable state; the bound is 1 interval (+ jitter and a round's work).
        let deadline = std::time::Instant::now() + interval * 3;
        while !f() {
            assert!(
                std::time::Instant::now() < deadline,
                "{what} not within one interval"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_until("first bundle", &|| !cp.trust().keys.is_empty());
    let code = p.admin.mint_dynamic("u-1", "SVC-BUS", None).expect("mint");
    assert_eq!(cp.check(&code).expect("check").reason(), Reason::Accepted);
    p.admin
        .post("/admin/v1/services/SVC-BUS/stop", &json!(null))
        .expect("stop");
    let stopped_at = std::time::Instant::now();
    wait_until("emergency stop", &|| {
        cp.trust().services.is_suspended("SVC-BUS")
    });
    assert!(stopped_at.elapsed() <= interval * 3);
    let code = p.admin.mint_dynamic("u-2", "SVC-BUS", None).expect("mint");
    assert_eq!(
        cp.check(&code).expect("check").reason(),
        Reason::ServiceSuspended
    );
    wait_until("records pushed", &|| cp.status().backlog == 0);
    assert_eq!(p.db().records_of(TERMINAL).expect("held").len(), 2);
    syncer.stop();
    thread.join().expect("join");
}

#[test]
fn sigterm_with_a_large_backlog_and_a_hanging_platform_exits_within_the_grace_period() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tmp");
    let (p, token) = platform(dir.path());
    let state = dir.path().join("gate");
    enroll(&p.sync_url(), &token, TERMINAL, &state).expect("enroll");
    const BACKLOG: u64 = 20_000;
    {
        let cp = gate_checkpoint(&state);
        let mut last = None;
        for i in 0..BACKLOG {
            let staged = cp.check_staged(&format!("not a code {i}")).expect("record");
            assert!(staged.seq().is_some(), "recorded");
            last = Some(staged);
        }
        cp.wait_durable(&last.expect("staged")).expect("durable");
    }
    // Every push commits and then never answers within the gate's timeout.
    p.faults().arm(&[Fault::Hang; 8]);
    let port = crate::common::free_port();
    let cfg = dir.path().join("gate.toml");
    std::fs::write(
        &cfg,
        format!(
            "[terminal]\nid = \"{TERMINAL}\"\nstate_dir = \"{}\"\n[platform]\nurl = \"{}\"\ninterval_s = 1\nbatch = 1000\n\
             [clock]\ntrust_system_clock = true\n[[source]]\nkind = \"scanner\"\nstdin = true\n[api]\nlisten = \"127.0.0.1:{port}\"\n",
            state.display(),
            p.sync_url()
        ),
    )
    .expect("config");
    let mut child = crate::common::gate()
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    // Wait (bounded) until a push is in flight at the platform.
    let mut waited = 0;
    while p
        .faults()
        .injected
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(waited < 1000, "no push reached the platform");
        std::thread::sleep(Duration::from_millis(10));
        waited += 1;
    }
    let _ = stdin.flush();
    let start = std::time::Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill")
        .success());
    let status = child.wait().expect("wait");
    let took = start.elapsed();
    drop(stdin);
    assert_eq!(status.code(), Some(0), "clean exit");
    assert!(
        took < yima_gate::daemon::SHUTDOWN_GRACE,
        "stopped in {took:?}, past the grace period"
    );
    // Nothing was deleted without a confirmation: the whole backlog waits for the next start.
    let cp = gate_checkpoint(&state);
    assert_eq!(cp.status().backlog, BACKLOG);
}

/// Records pushed while a backup of the platform is taken, the platform restored from that
/// backup, more records pushed: the platform records the gap as an audit event instead of
/// answering 409 forever, the gate counts it, and both go on — nothing stuck, nothing hidden.
#[test]
fn a_platform_restored_from_a_backup_and_its_gates_converge_and_record_the_gap() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("platform");
    let (p, token) = platform(dir.path());
    let state = dir.path().join("gate");
    let enrollment = enroll(&p.sync_url(), &token, TERMINAL, &state).expect("enroll");
    drop(p);
    // The backup: taken with the platform stopped, before any record arrived.
    let backup = dir.path().join("backup");
    assert!(std::process::Command::new("cp")
        .arg("-a")
        .arg(&data)
        .arg(&backup)
        .status()
        .expect("cp")
        .success());
    let cp = gate_checkpoint(&state);
    let run = |p: &BackgroundPlatform, n: usize| {
        let mut e = enrollment.clone();
        e.platform_url = p.sync_url();
        let syncer = Syncer::new(cp.clone(), e, opts()).expect("syncer");
        for i in 0..n {
            cp.check(&format!("not a code {i}")).expect("record");
        }
        syncer.push().map(|_| {
            syncer
                .status
                .gaps
                .load(std::sync::atomic::Ordering::Relaxed)
        })
    };
    let p = BackgroundPlatform::start(&data).expect("platform");
    assert_eq!(run(&p, 10).expect("push"), 0);
    assert_eq!(cp.status().backlog, 0, "confirmed and deleted on the gate");
    drop(p);
    // Restore: the platform forgets records 1–10 it had confirmed.
    std::fs::remove_dir_all(&data).expect("rm");
    std::fs::rename(&backup, &data).expect("restore");
    let p = BackgroundPlatform::start(&data).expect("restored platform");
    assert_eq!(
        run(&p, 5).expect("push after the restore"),
        1,
        "the gap is counted"
    );
    assert_eq!(cp.status().backlog, 0);
    let audit = p.admin.get("/admin/v1/audit").expect("audit");
    let gap = audit
        .as_array()
        .and_then(|a| a.iter().find(|e| e["kind"] == "gap"))
        .expect("a gap event");
    assert_eq!(
        (gap["detail"]["from"].as_u64(), gap["detail"]["to"].as_u64()),
        (Some(1), Some(10))
    );
    // And it goes on: the next records arrive normally.
    assert_eq!(run(&p, 3).expect("push"), 0);
    assert_eq!(p.db().records_of(TERMINAL).expect("records").len(), 8);
}

#[test]
fn records_never_go_to_an_http_receiver() {
    let dir = tempfile::tempdir().expect("tmp");
    let (p, token) = platform(dir.path());
    let a = &p.admin;
    let mut settings = a.get("/admin/v1/settings").expect("settings");
    // A receiver on plain HTTP (here: one that would accept anything).
    let receiver = crate::common::http::Receiver::start(vec![]);
    settings["records_url"] = json!(receiver.url("/records"));
    a.put("/admin/v1/settings", &settings).expect("put");
    let (cp, syncer) = gateway(&p, &token, &dir.path().join("gate"));
    syncer.pull().expect("pull");
    for i in 0..4 {
        cp.check(&format!("not a code {i}")).expect("record");
    }
    assert_eq!(syncer.push().expect("push"), 4);
    assert!(receiver.requests().is_empty(), "nothing went out in clear");
    assert_eq!(p.db().records_of(TERMINAL).expect("records").len(), 4);
}

#[test]
fn idle_connections_from_one_address_cannot_lock_gates_out() {
    let dir = tempfile::tempdir().expect("tmp");
    let (p, token) = platform(dir.path());
    let addr: std::net::SocketAddr = p
        .sync_url()
        .trim_start_matches("https://")
        .parse()
        .expect("addr");
    // 500 connections that never send a byte, from another loopback address.
    let mut idle = Vec::new();
    for _ in 0..500 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        s.bind(
            &"127.0.0.2:0"
                .parse::<std::net::SocketAddr>()
                .expect("a")
                .into(),
        )
        .expect("bind");
        if s.connect_timeout(&addr.into(), Duration::from_secs(2))
            .is_ok()
        {
            idle.push(s);
        }
    }
    assert!(!idle.is_empty());
    // Enrollment and sync still work for the gate.
    let (cp, syncer) = gateway(&p, &token, &dir.path().join("gate"));
    syncer.pull().expect("pull while flooded");
    cp.check("not a code").expect("record");
    assert_eq!(syncer.push().expect("push while flooded"), 1);
    drop(idle);
}

#[test]
fn pushed_records_out_of_bounds_stay_out_of_the_statistics() {
    let dir = tempfile::tempdir().expect("tmp");
    let (p, _token) = platform(dir.path());
    let record = |seq: u64, service: &str, at_ms: i64| RecordWire {
        seq,
        at_ms,
        clock_trusted: true,
        reason: Reason::Accepted,
        online_reason: None,
        kind: None,
        service: Some(service.to_string()),
        scene: None,
        alg: None,
        kid: None,
        issuer: None,
        cti_hash: None,
        sub_hash: None,
    };
    let now = yima_gate::clock::wall_clock_ms();
    let batch = yima_gate::sync::wire::RecordBatch {
        store_id: "s1".into(),
        idempotency_key: yima_gate::sync::wire::RecordBatch::key("s1", 1, 3),
        first_seq: 1,
        records: vec![
            record(1, "SVC-BUS", now),
            record(2, &"X".repeat(300), now),
            record(3, "SVC-BUS", i64::MIN),
        ],
    };
    p.db().ingest(TERMINAL, &batch).expect("ingest");
    assert_eq!(
        p.db().records_of(TERMINAL).expect("held").len(),
        3,
        "all held"
    );
    let stats = p.admin.get("/admin/v1/stats").expect("stats");
    assert_eq!(stats["records"], 1, "{stats}");
    assert!(!stats.to_string().contains("XXXX"), "{stats}");
    let audit = p.admin.get("/admin/v1/audit").expect("audit");
    let anomalies = audit
        .as_array()
        .map(|a| a.iter().filter(|e| e["kind"] == "anomalous_record").count())
        .unwrap_or(0);
    assert_eq!(anomalies, 2);
}

#[test]
fn no_admin_answer_carries_the_raw_subject_and_an_empty_admin_token_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let (p, _token) = platform(dir.path());
    let a = &p.admin;
    a.post(
        "/admin/v1/static",
        &json!({"cat": "CAT-X", "sn": "7", "user": "u-9", "service": "SVC-CARD"}),
    )
    .expect("register");
    for v in [
        a.get("/admin/v1/static/CAT-X/7").expect("query"),
        a.static_action("CAT-X", "7", "lost").expect("lost"),
        a.static_action("CAT-X", "7", "replace").expect("replace"),
    ] {
        assert!(v.get("sub").is_none(), "{v}");
        assert!(v["holder"].is_string(), "{v}");
    }
    drop(p);
    for weak in ["", "  \n", "short"] {
        std::fs::write(dir.path().join("platform/admin.token"), weak).expect("token");
        let e = BackgroundPlatform::start(&dir.path().join("platform")).expect_err("weak token");
        assert!(e.to_string().contains("bearer token"), "{e}");
    }
}

#[test]
fn online_decode_never_spends_a_code_the_gate_refuses() {
    let dir = tempfile::tempdir().expect("tmp");
    let (p, token) = platform(dir.path());
    let a = &p.admin;
    let mut settings = a.get("/admin/v1/settings").expect("settings");
    settings["online_decode"] = json!(true);
    a.put("/admin/v1/settings", &settings).expect("put");
    let (cp, syncer) = gateway(&p, &token, &dir.path().join("gate"));
    syncer.pull().expect("pull");
    // This gate serves GATE-1; the code is for GATE-2 only.
    let code = a
        .post(
            "/admin/v1/codes/dynamic",
            &json!({"user": "u-8", "service": "SVC-BUS", "scenes": ["GATE-2"]}),
        )
        .expect("mint")["code"]
        .as_str()
        .expect("code")
        .to_string();
    assert_eq!(syncer.online_answer(&code), None, "not asked about");
    assert_eq!(cp.check(&code).expect("check").reason(), Reason::WrongScene);
    // At its own gate the code is still good: the platform never spent it.
    assert_eq!(p.db().decode(&code).expect("decode"), Reason::Accepted);
}

/// libfaketime's multi-threaded preload library, if installed (Debian package `faketime`).
fn libfaketime() -> Option<std::path::PathBuf> {
    let dirs = std::fs::read_dir("/usr/lib").ok()?;
    dirs.flatten()
        .map(|d| d.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.exists())
}

/// The system clock of a running, enrolled gate is set back by three hours, then forward by
/// three hours (libfaketime in the daemon's process; monotonic time untouched): every code is
/// judged by trusted time — the platform's, from its signed bundles, carried on by monotonic
/// time — so a fresh code is accepted, a code three hours old is 码已过期 and one from three
/// hours ahead is not yet valid, whatever the wall clock says; the trusted floor never moves
/// back (nor jumps ahead with the wall clock), and every record carries trusted time.
#[test]
fn a_running_gate_judges_codes_by_trusted_time_while_its_clock_jumps() {
    use std::io::Write;
    let Some(lib) = libfaketime() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "libfaketime missing: CI must run this test"
        );
        eprintln!("SKIP: libfaketime not installed");
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let (p, token) = platform(dir.path());
    let state = dir.path().join("gate");
    enroll(&p.sync_url(), &token, TERMINAL, &state).expect("enroll");
    crate::common::provision(&state);
    let port = crate::common::free_port();
    let cfg = dir.path().join("gate.toml");
    std::fs::write(
        &cfg,
        format!(
            "[terminal]\nid = \"{TERMINAL}\"\nstate_dir = \"{}\"\n[platform]\nurl = \"{}\"\ninterval_s = 1\n\
             [clock]\ntrust_system_clock = true\n[[source]]\nkind = \"scanner\"\nstdin = true\n[api]\nlisten = \"127.0.0.1:{port}\"\n",
            state.display(),
            p.sync_url()
        ),
    )
    .expect("config");
    let offset = dir.path().join("faketime");
    let set_offset = |spec: &str| {
        let mut f = std::fs::File::create(&offset).expect("offset");
        f.write_all(spec.as_bytes()).expect("offset");
    };
    set_offset("+0");
    let mut child = crate::common::gate()
        .args(["run", "--config"])
        .arg(&cfg)
        .env("LD_PRELOAD", &lib)
        .env("FAKETIME_TIMESTAMP_FILE", &offset)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let base = format!("http://127.0.0.1:{port}");
    assert!(crate::common::wait_until_up(&format!("{base}/healthz")));
    let api_token = std::fs::read_to_string(state.join("api.token"))
        .expect("token")
        .trim()
        .to_string();
    let http = reqwest::blocking::Client::new();
    let status = || -> serde_json::Value {
        http.get(format!("{base}/api/v1/status"))
            .bearer_auth(&api_token)
            .send()
            .expect("status")
            .json()
            .expect("json")
    };
    let verify = |code: &str| -> String {
        let v: serde_json::Value = http
            .post(format!("{base}/api/v1/verify"))
            .bearer_auth(&api_token)
            .json(&json!({ "code": code }))
            .send()
            .expect("verify")
            .json()
            .expect("json");
        v["reason"].as_str().expect("reason").to_string()
    };
    let wait_for = |what: &str, f: &dyn Fn(&serde_json::Value) -> bool| {
        for _ in 0..500 {
            let s = status();
            if f(&s) {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("timed out waiting for {what}: {}", status());
    };
    let real = yima_gate::clock::wall_clock_ms;
    const H3: i64 = 3 * 3600 * 1000;
    let started = real();
    // The platform's time arrives with the first bundle.
    wait_for("the first bundle", &|s| {
        !s["sync"]["last_pull_ok_ms"].is_null()
    });
    let a = &p.admin;
    let fresh = |u: &str| a.mint_dynamic(u, "SVC-BUS", None).expect("mint");
    let at = |u: &str, ms: i64| a.mint_dynamic(u, "SVC-BUS", Some(ms / 1000)).expect("mint");
    assert_eq!(verify(&fresh("u-0")), "accepted");
    let floor_before = status()["clock"]["floor_ms"].as_i64().expect("floor");

    for (spec, shift) in [("-3h", -H3), ("+3h", H3), ("+0", 0)] {
        set_offset(spec);
        let s = wait_for("the daemon to see the jump", &|s| {
            s["clock"]["wall_ms"]
                .as_i64()
                .is_some_and(|w| (w - (real() + shift)).abs() < 600_000)
        });
        eprintln!("{spec}: clock {}", s["clock"]);
        let now = s["clock"]["now_ms"].as_i64().expect("now");
        assert_eq!(s["clock"]["trusted"], true, "{spec}: {s}");
        assert!(
            (now - real()).abs() < 60_000,
            "{spec}: trusted time {now} follows the wall clock"
        );
        assert_eq!(verify(&fresh(&format!("u{spec}"))), "accepted", "{spec}");
        assert_eq!(
            verify(&at(&format!("old{spec}"), real() - H3)),
            "expired",
            "{spec}"
        );
        assert_eq!(
            verify(&at(&format!("ahead{spec}"), real() + H3)),
            "not_yet_valid",
            "{spec}"
        );
        let floor = status()["clock"]["floor_ms"].as_i64().expect("floor");
        assert!(floor >= floor_before, "{spec}: the floor moved back");
        assert!(
            floor < real() + 60_000,
            "{spec}: the floor jumped ahead with the wall clock"
        );
    }
    let ended = real();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert_eq!(child.wait().expect("wait").code(), Some(0));
    // What the platform received and what the gate still holds carry trusted time only.
    let cp = gate_checkpoint(&state);
    let mut times: Vec<i64> = cp
        .records_from(0, 1_000)
        .expect("records")
        .iter()
        .map(|r| r.at_ms)
        .collect();
    times.extend(snapshot_platform_times(&p));
    assert!(times.len() >= 10, "{} records", times.len());
    for t in times {
        assert!(
            (started - 60_000..=ended + 60_000).contains(&t),
            "a record at {t} outside [{started}, {ended}]"
        );
    }
}

/// `at_ms` of every record the platform holds.
fn snapshot_platform_times(p: &BackgroundPlatform) -> Vec<i64> {
    let v = p
        .admin
        .get(&format!("/admin/v1/records?terminal={TERMINAL}"))
        .expect("records");
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["record"]["at_ms"].as_i64())
                .collect()
        })
        .unwrap_or_default()
}

/// The gate enrolls (its identity and key, written once with a one-time token) and the power
/// goes right after: on a filesystem that forgets everything unsynced, the enrollment is
/// still there and the gate syncs with it.
#[test]
fn the_enrollment_survives_a_power_cut_right_after_it_is_written() {
    use crate::common::powerfs::PowerFs;
    if !crate::common::powerfs::usable() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let (p, token) = platform(dir.path());
    let fs = PowerFs::new();
    let state = dir.path().join("gate");
    let mounted = fs.mount(&state).expect("mount");
    let enrolled = enroll(&p.sync_url(), &token, TERMINAL, &state).expect("enroll");
    drop(mounted);
    fs.cut();
    let mounted = fs.mount(&state).expect("remount");
    let loaded = Enrollment::load(&state)
        .expect("load")
        .expect("the enrollment survived the cut");
    assert_eq!(
        serde_json::to_value(&loaded).expect("json"),
        serde_json::to_value(&enrolled).expect("json")
    );
    let cp = gate_checkpoint(&state);
    let syncer = Syncer::new(cp.clone(), loaded, opts()).expect("syncer");
    assert!(syncer.pull().expect("pull with the surviving identity") >= 1);
    drop(syncer);
    drop(cp);
    drop(mounted);
}
