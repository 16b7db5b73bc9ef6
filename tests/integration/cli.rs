//! The CLI contract (`keygen`, `mint`, `verify`, `init`) exercised through the real binary:
//! exit codes, JSON output, file modes, and replay across process restarts.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tmp"),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn run(&self, args: &[&str]) -> Output {
        crate::common::gate_umask_022()
            .args(args)
            .output()
            .expect("run yima-gate")
    }

    fn keygen(&self, alg: &str, kid: &str) -> (PathBuf, PathBuf) {
        let out = self.path("keys");
        let o = self.run(&[
            "keygen",
            "--alg",
            alg,
            "--kid",
            kid,
            "--out",
            out.to_str().expect("utf8"),
            "--not-before",
            "2026-01-01T00:00:00Z",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (
            out.join(format!("{kid}.key.json")),
            out.join(format!("{kid}.trust.json")),
        )
    }

    fn mint(&self, key: &Path, extra: &[&str]) -> String {
        let mut args = vec!["mint", "--key", key.to_str().expect("utf8")];
        args.extend_from_slice(extra);
        let o = self.run(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout)
            .expect("utf8")
            .trim()
            .to_string()
    }

    fn init(&self) {
        let o = self.run(&[
            "init",
            "--state-dir",
            self.path("state").to_str().expect("utf8"),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    /// Runs verify; returns (exit code, parsed JSON).
    fn verify(&self, trust: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
        let state = self.path("state");
        let mut args = vec![
            "verify",
            "--state-dir",
            state.to_str().expect("utf8"),
            "--trust",
            trust.to_str().expect("utf8"),
        ];
        args.extend_from_slice(extra);
        let o = self.run(&args);
        let code = o.status.code().expect("exit code");
        let json = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
        (code, json)
    }
}

const AT: &str = "2026-06-01T08:00:00Z";

#[test]
fn keygen_writes_private_key_0600_and_spec_trust_entry() {
    let env = Env::new();
    for alg in ["ed25519", "es256", "sm2", "hmac"] {
        let (key, trust) = env.keygen(alg, &format!("k-{alg}"));
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600, "{alg} private key");
        assert_eq!(
            mode(&trust),
            if alg == "hmac" { 0o600 } else { 0o644 },
            "{alg} trust"
        );
        let entry: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&trust).expect("read")).expect("json");
        let expected_alg = match alg {
            "ed25519" => "EdDSA",
            "es256" => "ES256",
            "sm2" => "SM2",
            _ => "HMAC256",
        };
        assert_eq!(entry["alg"], expected_alg);
        assert_eq!(entry["kinds"], serde_json::json!(["dynamic", "static"]));
        assert_eq!(entry["not_before"], "2026-01-01T00:00:00Z");
        for field in ["kid", "key", "not_after"] {
            assert!(entry[field].is_string(), "{field}");
        }
    }
}

#[test]
fn verify_accepts_then_refuses_replay_after_restart_for_every_alg() {
    let env = Env::new();
    env.init();
    for alg in ["ed25519", "es256", "sm2", "hmac"] {
        let (key, trust) = env.keygen(alg, &format!("r-{alg}"));
        let code = env.mint(
            &key,
            &[
                "--kind",
                "dynamic",
                "--service",
                "SVC1",
                "--at",
                AT,
                "--scene",
                "S1",
            ],
        );
        assert!(code.starts_with("YM1:"));
        let (rc, v) = env.verify(&trust, &["--at", AT, "--scene", "S1", &code]);
        assert_eq!(rc, 0, "{alg}: {v}");
        assert_eq!(v["accepted"], true);
        assert_eq!(v["reason"], "accepted");
        assert_eq!(v["claims"]["service"], "SVC1");
        assert_eq!(v["claims"]["scene"], "S1");
        // a new process: the replay tag survived
        let (rc, v) = env.verify(&trust, &["--at", AT, "--scene", "S1", &code]);
        assert_eq!(rc, 1, "{alg}: {v}");
        assert_eq!(v["reason"], "replayed");
        assert_eq!(v["message"], "码已使用");
        assert!(v.get("claims").is_none(), "no claims for a refused code");
    }
}

#[test]
fn expired_dynamic_code_is_ma_yi_guo_qi() {
    let env = Env::new();
    env.init();
    let (key, trust) = env.keygen("ed25519", "e");
    let code = env.mint(
        &key,
        &["--kind", "dynamic", "--service", "SVC1", "--at", AT],
    );
    let (rc, v) = env.verify(&trust, &["--at", "2026-06-01T08:01:06Z", &code]);
    assert_eq!(rc, 1);
    assert_eq!(v["reason"], "expired");
    assert_eq!(v["message"], "码已过期");
    // the same code 65 s after issue is still inside window + skew
    let (rc, v) = env.verify(&trust, &["--at", "2026-06-01T08:01:05Z", &code]);
    assert_eq!(rc, 0, "{v}");
}

#[test]
fn static_code_states_from_status_file() {
    let env = Env::new();
    env.init();
    let (key, trust) = env.keygen("sm2", "s");
    let status = env.path("status.json");
    std::fs::write(
        &status,
        r#"{"static_codes":[{"cat":"C1","sn":"1","state":"lost"},{"cat":"C1","sn":"2","state":"enabled"}],
            "suspended_services":["STOPPED"]}"#,
    )
    .expect("write");
    let st = status.to_str().expect("utf8");
    let lost = env.mint(
        &key,
        &[
            "--kind",
            "static",
            "--service",
            "SVC",
            "--cat",
            "C1",
            "--sn",
            "1",
            "--at",
            AT,
        ],
    );
    let ok = env.mint(
        &key,
        &[
            "--kind",
            "static",
            "--service",
            "SVC",
            "--cat",
            "C1",
            "--sn",
            "2",
            "--at",
            AT,
        ],
    );
    let stopped = env.mint(
        &key,
        &[
            "--kind",
            "static",
            "--service",
            "STOPPED",
            "--cat",
            "C1",
            "--sn",
            "2",
            "--at",
            AT,
        ],
    );
    let unknown = env.mint(
        &key,
        &[
            "--kind",
            "static",
            "--service",
            "SVC",
            "--cat",
            "C1",
            "--sn",
            "3",
            "--at",
            AT,
        ],
    );
    let (rc, v) = env.verify(&trust, &["--at", AT, "--status", st, &lost]);
    assert_eq!((rc, v["message"].as_str()), (1, Some("码已挂失")));
    let (rc, v) = env.verify(&trust, &["--at", AT, "--status", st, &ok]);
    assert_eq!((rc, v["reason"].as_str()), (0, Some("accepted")));
    // static codes are not single-use
    let (rc, _) = env.verify(&trust, &["--at", AT, "--status", st, &ok]);
    assert_eq!(rc, 0);
    let (rc, v) = env.verify(&trust, &["--at", AT, "--status", st, &stopped]);
    assert_eq!((rc, v["message"].as_str()), (1, Some("服务已暂停")));
    let (rc, v) = env.verify(&trust, &["--at", AT, "--status", st, &unknown]);
    assert_eq!((rc, v["reason"].as_str()), (1, Some("static_code_unknown")));
    let (rc, _) = env.verify(
        &trust,
        &[
            "--at",
            AT,
            "--status",
            st,
            "--accept-unknown-static",
            &unknown,
        ],
    );
    assert_eq!(rc, 0);
}

#[test]
fn verify_reads_a_qr_png() {
    let env = Env::new();
    env.init();
    let (key, trust) = env.keygen("es256", "img");
    let png = env.path("code.png");
    let code = env.mint(
        &key,
        &[
            "--kind",
            "dynamic",
            "--service",
            "SVC",
            "--at",
            AT,
            "--png",
            png.to_str().expect("utf8"),
        ],
    );
    assert!(png.exists());
    let (rc, v) = env.verify(
        &trust,
        &["--at", AT, "--image", png.to_str().expect("utf8")],
    );
    assert_eq!(rc, 0, "{v}");
    let (rc, v) = env.verify(&trust, &["--at", AT, &code]);
    assert_eq!((rc, v["reason"].as_str()), (1, Some("replayed")));
}

#[test]
fn a_code_minted_as_grid_matrix_decodes_upright_and_turned_and_verifies() {
    let env = Env::new();
    env.init();
    let (key, trust) = env.keygen("ed25519", "gm");
    let png = env.path("gm.png");
    let code = env.mint(
        &key,
        &[
            "--kind",
            "dynamic",
            "--service",
            "SVC",
            "--at",
            AT,
            "--symbology",
            "gridmatrix",
            "--png",
            png.to_str().expect("utf8"),
        ],
    );
    let turned = env.path("gm-90.png");
    let img = image::open(&png).expect("open").to_luma8();
    image::imageops::rotate90(&img).save(&turned).expect("save");
    let out = env.run(&[
        "decode",
        png.to_str().expect("utf8"),
        turned.to_str().expect("utf8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        assert_eq!(l["codes"][0]["text"], code.as_str(), "{l}");
        assert_eq!(l["codes"][0]["symbology"], "grid_matrix", "{l}");
    }
    // "Would the gate have read it?": the live cascade, its work counted. (A debug build is
    // far slower than the reference core: a generous budget keeps the clock's backstop away.)
    let live = env.run(&[
        "decode",
        "--live",
        "--budget-ms",
        "1000",
        turned.to_str().expect("utf8"),
    ]);
    assert!(live.status.success());
    let l: serde_json::Value = serde_json::from_slice(live.stdout.trim_ascii()).expect("json line");
    assert_eq!(l["codes"][0]["text"], code.as_str(), "{l}");
    assert!(l["work_units"].as_u64().is_some_and(|u| u > 0), "{l}");
    let (rc, v) = env.verify(
        &trust,
        &["--at", AT, "--image", turned.to_str().expect("utf8")],
    );
    assert_eq!((rc, v["reason"].as_str()), (0, Some("accepted")), "{v}");
}

#[test]
fn malformed_and_forged_codes_exit_1_as_illegal_code() {
    let env = Env::new();
    env.init();
    let (_, trust) = env.keygen("ed25519", "a");
    let (other_key, _) = env.keygen("ed25519", "b");
    let (rc, v) = env.verify(&trust, &["--at", AT, "not a code"]);
    assert_eq!(
        (rc, v["reason"].as_str(), v["message"].as_str()),
        (1, Some("malformed"), Some("非法二维码"))
    );
    assert!(v["detail"].is_string());
    let foreign = env.mint(
        &other_key,
        &["--kind", "dynamic", "--service", "SVC", "--at", AT],
    );
    let (rc, v) = env.verify(&trust, &["--at", AT, &foreign]);
    assert_eq!(
        (rc, v["reason"].as_str(), v["message"].as_str()),
        (1, Some("unknown_key"), Some("非法二维码"))
    );
}

#[test]
fn usage_errors_exit_2_and_trust_file_errors_64() {
    let env = Env::new();
    let o = env.run(&["verify"]);
    assert_eq!(o.status.code(), Some(2));
    let missing = env.path("nope.json");
    let (rc, _) = env.verify(&missing, &["--at", AT, "YM1:X"]);
    assert_eq!(rc, 64, "a missing trust file is a configuration error");
    let (key, trust) = env.keygen("ed25519", "z");
    let _ = key;
    let (rc, _) = env.verify(&trust, &["--at", "yesterday", "YM1:X"]);
    assert_eq!(rc, 2);
    let (rc, _) = env.verify(&trust, &["--skew", "31", "--at", AT, "YM1:X"]);
    assert_eq!(rc, 2, "skew above 30 s is refused");
    // a world-readable HMAC trust file is refused
    let (_, hmac_trust) = env.keygen("hmac", "h");
    std::fs::set_permissions(&hmac_trust, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (rc, _) = env.verify(&hmac_trust, &["--at", AT, "YM1:X"]);
    assert_eq!(rc, 64);
}

#[test]
fn without_at_the_clock_rules_apply() {
    let env = Env::new();
    env.init();
    let (key, trust) = env.keygen("ed25519", "c");
    let code = env.mint(&key, &["--kind", "dynamic", "--service", "SVC"]);
    let synced = Path::new("/run/systemd/timesync/synchronized").exists();
    let (rc, v) = env.verify(&trust, &[&code]);
    if synced {
        assert_eq!((rc, v["reason"].as_str()), (0, Some("accepted")));
    } else {
        assert_eq!((rc, v["reason"].as_str()), (1, Some("clock_untrusted")));
        assert_eq!(v["message"], "终端时间不可信");
        assert_eq!(v["clock_trusted"], false);
    }
    // a technician-declared trusted clock accepts it (the failed attempt did not consume it)
    let (rc, v) = env.verify(&trust, &["--trust-system-clock", &code]);
    if synced {
        assert_eq!(v["reason"], "replayed");
    } else {
        assert_eq!((rc, v["reason"].as_str()), (0, Some("accepted")), "{v}");
    }
}

#[test]
fn unprovisioned_state_dir_guards_replays() {
    let env = Env::new();
    let (key, trust) = env.keygen("ed25519", "g");
    let code = env.mint(&key, &["--kind", "dynamic", "--service", "SVC", "--at", AT]);
    let (rc, v) = env.verify(&trust, &["--at", AT, &code]);
    assert_eq!(
        (rc, v["reason"].as_str()),
        (1, Some("replay_guard_recovering")),
        "{v}"
    );
    // a code issued after the guard time passes
    let later = env.mint(
        &key,
        &[
            "--kind",
            "dynamic",
            "--service",
            "SVC",
            "--at",
            "2026-06-01T08:00:10Z",
        ],
    );
    let (rc, v) = env.verify(&trust, &["--at", "2026-06-01T08:00:10Z", &later]);
    assert_eq!(rc, 0, "{v}");
}

#[test]
fn init_and_demo_under_umask_022_leave_nothing_readable_by_others() {
    let env = Env::new();
    let state = env.path("fresh");
    let o = env.run(&["init", "--state-dir", state.to_str().expect("utf8")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let demo = env.path("demo-state");
    let o = env.run(&["demo", "--state-dir", demo.to_str().expect("utf8")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    for dir in [&state, &demo] {
        let open = crate::common::not_private(dir);
        assert!(open.is_empty(), "readable by others: {open:#?}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&state)
        .expect("state")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn demo_runs_every_scenario_to_its_expected_verdict() {
    let env = Env::new();
    let state = env.path("demo");
    let o = env.run(&["demo", "--state-dir", state.to_str().expect("utf8")]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("码已过期") && out.contains("码已使用") && out.contains("码已挂失"));
    assert!(!out.contains("unexpected"));
    assert!(out.contains("码已停用") || out.contains("服务已暂停"));
    // The platform's 亮码 rendered as Grid Matrix, read and accepted.
    assert!(
        out.lines()
            .any(|l| l.starts_with("Grid Matrix code") && l.contains("accepted")),
        "{out}"
    );
    // Every verification reached the platform, exactly once.
    assert!(
        out.contains("9 verifications recorded durably, 9 pushed, backlog 0"),
        "{out}"
    );
    assert!(out.contains("platform: 9 records held"), "{out}");
    assert!(out.contains(r#"by terminal {"GATE-DEMO":9}"#), "{out}");
}

#[test]
fn check_config_explains_problems_and_exits_64() {
    let env = Env::new();
    let (_, trust) = env.keygen("ed25519", "cfg");
    // the shipped example, pointed at a real trust file, is valid
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gate.toml"),
    )
    .expect("example config");
    let good = env.path("gate.toml");
    std::fs::write(
        &good,
        example.replace("/etc/yima-gate/trust.json", trust.to_str().expect("utf8")),
    )
    .expect("write");
    let o = env.run(&["check-config", good.to_str().expect("utf8")]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("OK (terminal GATE-0001"));

    let bad = env.path("bad.toml");
    std::fs::write(
        &bad,
        "[terminal]\nid = \"G 1\"\n[trust]\nkeys = \"/nope.json\"\n",
    )
    .expect("write");
    let o = env.run(&["check-config", bad.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(64));
    let err = String::from_utf8_lossy(&o.stderr);
    for key in ["terminal.id", "trust.keys", "source"] {
        assert!(err.contains(key), "{key} not explained in: {err}");
    }
}

/// The technician's path through the real binary: `platform` serving, `enroll` with the
/// operator's token, `sync` (bundle + push), `doctor` with the service stopped, SIGTERM.
#[test]
fn platform_enroll_sync_and_doctor_through_the_binary() {
    use std::io::BufRead;
    let env = Env::new();
    let data = env.path("platform");
    let mut platform = crate::common::gate_umask_022()
        .args([
            "platform",
            "--data",
            data.to_str().expect("utf8"),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("platform");
    let mut line = String::new();
    std::io::BufReader::new(platform.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("banner");
    // "platform: sync API https://127.0.0.1:P (CA fingerprint …), admin API http://127.0.0.1:Q (…"
    let url_after = |marker: &str| {
        let rest = &line[line.find(marker).expect(marker) + marker.len()..];
        rest.split_whitespace().next().expect("url").to_string()
    };
    let sync_url = url_after("sync API ");
    let admin_url = url_after("admin API ");
    let token = std::fs::read_to_string(data.join("admin.token")).expect("admin token");
    let admin =
        yima_gate::platform::client::AdminClient::new(&admin_url, token.trim()).expect("admin");
    admin
        .post(
            "/admin/v1/keys",
            &serde_json::json!({"alg": "EdDSA", "kinds": ["dynamic"]}),
        )
        .expect("key");
    let enroll_token = admin.create_terminal("GATE-7", &[]).expect("terminal");

    let state = env.path("gate-state");
    let config = env.path("gate.toml");
    std::fs::write(
        &config,
        format!(
            "[terminal]\nid = \"GATE-7\"\nstate_dir = \"{}\"\n\n[[source]]\nkind = \"scanner\"\nstdin = true\n\n\
             [api]\nlisten = \"127.0.0.1:1\"\n\n[platform]\nurl = \"{sync_url}\"\n",
            state.display()
        ),
    )
    .expect("config");
    let cfg = config.to_str().expect("utf8");
    let o = env.run(&["check-config", cfg]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Before enrollment, doctor says so (and that the service is not running).
    let o = env.run(&["doctor", "--config", cfg]);
    let report = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(1), "{report}");
    assert!(report.contains("FAIL enrolled"), "{report}");
    assert!(report.contains("yima-gate enroll"), "{report}");

    let o = env.run(&["enroll", "--config", cfg, "--token", &enroll_token]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = env.run(&["sync", "--config", cfg]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("sync json");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["keys"], 1, "{v}");
    // Enrolled into an empty state directory, the gate's store was provisioned as `init`
    // does: no replay guard on a new gate.
    let status = crate::common::open_checkpoint(
        &state,
        yima_gate::verification::trust::TrustState::default(),
        crate::common::now_s(),
    )
    .status();
    assert_eq!(
        status.open_state,
        yima_gate::checkpoint::OpenState::Existing
    );
    assert!(
        status.replay_guard_from_ms.is_none() && !status.replay_guard_pending,
        "{status:?}"
    );

    let o = env.run(&["doctor", "--config", cfg]);
    let report = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(report.contains("OK   enrolled   as GATE-7"), "{report}");
    assert!(report.contains("OK   platform"), "{report}");
    assert!(report.contains("MiB free"), "{report}");
    assert!(
        report.contains("FAIL api"),
        "the daemon is not running: {report}"
    );

    assert!(std::process::Command::new("kill")
        .args(["-TERM", &platform.id().to_string()])
        .status()
        .expect("kill")
        .success());
    let status = platform.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    // Run under umask 022, the platform's data (CA key, root key, code keys) and the gate's
    // state (store, enrollment with its private key) are private all the same.
    for dir in [&data, &state] {
        let open = crate::common::not_private(dir);
        assert!(open.is_empty(), "readable by others: {open:#?}");
    }
}
