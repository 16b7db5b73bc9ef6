//! `yima-gate run` end to end through the real binary: image files and scanner text in,
//! verdict lines out, records durable; SIGTERM drains and exits cleanly.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{http, now_s, Gate};

fn reasons(stdout: &str) -> Vec<String> {
    let mut r: Vec<String> = stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("verdict line");
            v["verdict"]["reason"].as_str().expect("reason").to_string()
        })
        .collect();
    r.sort();
    r
}

#[test]
fn files_and_scanner_text_through_the_whole_pipeline() {
    let gate = Gate::new();
    let frames = gate.dir.path().join("frames");
    let valid = gate.code(now_s() - 1, None);
    yima_gate::render::write_png(&valid, &frames.join("0.png")).expect("png");
    yima_gate::render::write_png(&gate.code(now_s() - 300, None), &frames.join("1.png"))
        .expect("png");
    yima_gate::render::write_png(&valid, &frames.join("2.png")).expect("png"); // shown again
                                                                               // the business system's webhook receiver: fails the first delivery, then accepts
    let receiver = http::Receiver::start(vec![500]);
    let secret = gate.dir.path().join("webhook.secret");
    yima_gate::files::write_durable(&secret, b"s3cret\n", 0o600).expect("secret");
    let cfg = gate.config_with(
        &format!(
            "[[source]]\nkind = \"files\"\npaths = [\"{}\"]\n[[source]]\nkind = \"scanner\"\nstdin = true\n",
            frames.display()
        ),
        &format!(
            "[webhook]\nurl = \"{}\"\nsecret_file = \"{}\"\ntimeout_ms = 2000\nretries = 2\n\
             [command]\nprogram = \"/bin/sh\"\nargs = [\"-c\", \"echo $YIMA_REASON $YIMA_MESSAGE >> {}\"]\n\
             [[rule]]\nactions = [\"relay\", \"webhook\"]\n\
             [[rule]]\nreason = [\"expired\", \"replayed\"]\nactions = [\"command\"]\n",
            receiver.url("/gate"),
            secret.display(),
            gate.dir.path().join("refused.txt").display()
        ),
    );
    let mut child = crate::common::gate()
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let static_code = gate.code(now_s() - 10, Some("0001"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{static_code}\r\n").as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        reasons(&stdout),
        vec!["accepted", "accepted", "expired", "replayed"],
        "{stdout}"
    );
    assert!(stdout.contains("码已过期") && stdout.contains("码已使用"));
    assert_eq!(gate.records().len(), 4, "every verification recorded");
    // the relay (a file-backed double of the GPIO line) pulsed once per accepted code only
    let pulses = std::fs::read_to_string(gate.dir.path().join("pulses.jsonl")).expect("pulses");
    let openings: Vec<&str> = pulses
        .lines()
        .filter(|l| l.contains("\"opening\""))
        .collect();
    assert_eq!(openings.len(), 2, "{pulses}");
    assert!(openings.iter().all(|l| l.contains("\"pulse_ms\":300")));
    // the line was claimed released at start and ends released
    assert!(
        pulses.lines().next().is_some_and(|l| l.contains("\"off\"")),
        "{pulses}"
    );
    assert!(
        pulses.lines().last().is_some_and(|l| l.contains("\"off\"")),
        "{pulses}"
    );
    // the webhook got both accepted verdicts (one after a retry), signed, with claims but no sub
    let reqs = receiver.requests();
    assert_eq!(reqs.len(), 3, "two deliveries, one retried");
    let mut delivered = std::collections::HashSet::new();
    for r in &reqs {
        let ts: i64 = r
            .header("X-Yima-Timestamp")
            .expect("ts")
            .parse()
            .expect("ts");
        assert_eq!(
            r.header("X-Yima-Signature").expect("sig"),
            yima_gate::act::webhook::signature(b"s3cret", ts, &r.body)
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(v["terminal"], "GATE-T1");
        assert_eq!(v["verdict"]["accepted"], true);
        assert!(v["verdict"]["claims"]["service"].is_string());
        delivered.insert(v["verdict"]["seq"].as_u64().expect("seq"));
    }
    assert_eq!(delivered.len(), 2);
    // the command hook ran for the refused codes only, as the second rule says
    let mut refused: Vec<String> = std::fs::read_to_string(gate.dir.path().join("refused.txt"))
        .expect("hook ran")
        .lines()
        .map(str::to_string)
        .collect();
    refused.sort();
    assert_eq!(refused, vec!["expired 码已过期", "replayed 码已使用"]);
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let gate = Gate::new();
    let cfg = gate.config("[[source]]\nkind = \"scanner\"\nstdin = true\n");
    let mut child = crate::common::gate()
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(format!("{}\n", gate.code(now_s() - 1, None)).as_bytes())
        .expect("write");
    stdin.flush().expect("flush");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a verdict").expect("line");
    assert!(first.contains("\"accepted\":true"), "{first}");
    // stdin stays open: only the signal ends the run
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "clean exit on SIGTERM");
    drop(stdin);
    assert_eq!(gate.records().len(), 1);
    assert!(Path::new(&gate.dir.path().join("state/store")).exists());
}

#[test]
fn a_broken_config_exits_64() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("gate.toml");
    std::fs::write(&cfg, "[terminal]\nid = \"x\"\n").expect("write");
    let out = crate::common::gate()
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn local_api_verifies_reports_and_guards_itself() {
    yima_gate::sync::tls::install_provider();
    let gate = Gate::new();
    let cfg = gate.config("[[source]]\nkind = \"scanner\"\nstdin = true\n");
    let mut child = crate::common::gate()
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let base = format!("http://127.0.0.1:{}", gate.port);
    let http = reqwest::blocking::Client::new();
    // wait for the API to come up (bounded)
    assert!(
        crate::common::wait_until_up(&format!("{base}/healthz")),
        "API did not come up"
    );
    let token =
        std::fs::read_to_string(gate.dir.path().join("state/api.token")).expect("generated token");
    let auth = format!("Bearer {}", token.trim());

    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .expect("readyz")
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{base}/api/v1/status"))
            .send()
            .expect("status")
            .status(),
        401
    );
    assert_eq!(
        http.get(format!("{base}/api/v1/status"))
            .header("Authorization", "Bearer wrong")
            .send()
            .expect("status")
            .status(),
        401
    );

    let code = gate.code(now_s() - 1, None);
    let verify = |body: reqwest::blocking::RequestBuilder| -> serde_json::Value {
        let r = body.header("Authorization", &auth).send().expect("verify");
        assert_eq!(r.status(), 200);
        r.json().expect("json")
    };
    let v = verify(
        http.post(format!("{base}/api/v1/verify"))
            .json(&serde_json::json!({ "code": code })),
    );
    assert_eq!(v["reason"], "accepted");
    let v = verify(
        http.post(format!("{base}/api/v1/verify"))
            .json(&serde_json::json!({ "code": code })),
    );
    assert_eq!(
        (v["reason"].as_str(), v["message"].as_str()),
        (Some("replayed"), Some("码已使用"))
    );
    // an uploaded image
    let png_path = gate.dir.path().join("up.png");
    yima_gate::render::write_png(&gate.code(now_s() - 400, None), &png_path).expect("png");
    let v = verify(
        http.post(format!("{base}/api/v1/verify"))
            .header("Content-Type", "image/png")
            .body(std::fs::read(&png_path).expect("read")),
    );
    assert_eq!(v["message"], "码已过期");
    // bounds (a client of its own: the server answers 413 and closes mid-upload, which must
    // not poison the pooled connections of the main client)
    let once = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let r = once
        .post(format!("{base}/api/v1/verify"))
        .header("Authorization", &auth)
        .header("Content-Type", "image/png")
        .body(vec![0u8; 8 * 1024 * 1024 + 1024])
        .send()
        .expect("big");
    assert_eq!(r.status(), 413);
    let r = http
        .post(format!("{base}/api/v1/verify"))
        .header("Authorization", &auth)
        .body("not json")
        .send()
        .expect("bad");
    assert_eq!(r.status(), 400);

    // records, filtered and paged
    let page: serde_json::Value = http
        .get(format!("{base}/api/v1/records?reason=replayed&limit=10"))
        .header("Authorization", &auth)
        .send()
        .expect("records")
        .json()
        .expect("json");
    let recs = page["records"].as_array().expect("records");
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["reason"], "replayed");
    assert!(
        !page.to_string().contains("pairwise-subject-token"),
        "no subject in records"
    );

    let metrics = http
        .get(format!("{base}/metrics"))
        .header("Authorization", &auth)
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    assert!(
        metrics.contains("yima_verdicts_total{reason=\"accepted\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("yima_verdicts_total{reason=\"replayed\"} 1"));
    assert!(metrics.contains("yima_sync_backlog_records 3"), "{metrics}");
    // No camera here: no thumbnail yet, and never without the token.
    let r = http
        .get(format!("{base}/api/v1/frame.png"))
        .header("Authorization", &auth)
        .send()
        .expect("frame");
    assert_eq!(r.status().as_u16(), 404);
    let r = http
        .get(format!("{base}/api/v1/frame.png"))
        .send()
        .expect("frame");
    assert_eq!(r.status().as_u16(), 401);

    let status: serde_json::Value = http
        .get(format!("{base}/api/v1/status"))
        .header("Authorization", &auth)
        .send()
        .expect("status")
        .json()
        .expect("json");
    assert_eq!(status["terminal"], "GATE-T1");
    assert_eq!(status["counters"]["verified"], 3);
    assert_eq!(status["recent"][0]["message"], "码已过期");
    // a Grid Matrix upload (the standard's code system), upright and turned a quarter
    for (i, turn) in [false, true].into_iter().enumerate() {
        let img = yima_gate::render::grid_matrix(&gate.code(now_s() - 2 - i as i64, None), 4)
            .expect("grid matrix");
        let img = if turn {
            image::imageops::rotate90(&img)
        } else {
            img
        };
        let v = verify(
            http.post(format!("{base}/api/v1/verify"))
                .header("Content-Type", "image/png")
                .body(yima_gate::render::png_bytes(&img).expect("png")),
        );
        assert_eq!(v["reason"], "accepted", "turned {turn}: {v}");
    }
    let page = http
        .get(format!("{base}/"))
        .send()
        .expect("page")
        .text()
        .expect("html");
    assert!(page.contains("yima-gate") && page.contains("/api/v1/status"));
    let openapi: serde_json::Value = http
        .get(format!("{base}/api/v1/openapi.json"))
        .header("Authorization", &auth)
        .send()
        .expect("openapi")
        .json()
        .expect("json");
    assert_eq!(openapi["openapi"], "3.0.3");

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    assert_eq!(child.wait().expect("wait").code(), Some(0));
}

/// Polls `f` until it holds (bounded: 10 s): waits for the pipeline's threads, never for time
/// to pass — time is moved by hand.
fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn a_running_pipeline_purges_replay_tags_whose_window_ended() {
    use std::sync::Arc;
    use yima_gate::checkpoint::{Checkpoint, Create};
    use yima_gate::daemon::config::Config;
    use yima_gate::daemon::pipeline::Pipeline;

    let dir = tempfile::tempdir().expect("tmp");
    let k = crate::common::key(yima_gate::verification::keys::Alg::EdDSA, "purge");
    let mut trust = crate::common::trust_with(&[&k]);
    trust.terminal.scenes = yima_gate::verification::trust::Scenes::Any;
    let time = crate::common::ManualTime::new(crate::common::T0, true);
    let state = dir.path().join("state");
    let checkpoint = Arc::new(
        Checkpoint::open(&state, Create::Provision, trust, |floor| time.clock(floor))
            .expect("checkpoint"),
    );
    let port = crate::common::free_port();
    let trust_file = dir.path().join("trust.json");
    std::fs::write(&trust_file, "[]").expect("trust");
    let cfg = Config::parse(
        &format!(
            "[terminal]\nid = \"PURGE\"\nstate_dir = \"{}\"\n[trust]\nkeys = \"{}\"\n\
             [[source]]\nkind = \"scanner\"\ntcp = \"127.0.0.1:{port}\"\n",
            state.display(),
            trust_file.display()
        ),
        "test",
    )
    .expect("config");
    let counters = Arc::new(yima_gate::telemetry::Counters::default());
    let pipeline = Pipeline::start(&cfg, checkpoint.clone(), vec![], None, counters.clone())
        .expect("pipeline");
    let mut scanner = std::net::TcpStream::connect(("127.0.0.1", port)).expect("scanner");
    for i in 0..3 {
        let text = yima_gate::verification::code::mint(
            &k.signing,
            &k.kid,
            &crate::common::dynamic_claims(crate::common::T0, 500 + i),
        );
        scanner
            .write_all(format!("{text}\r\n").as_bytes())
            .expect("scan");
    }
    eventually("three accepted codes", || {
        counters.accepted.load(std::sync::atomic::Ordering::Relaxed) == 3
    });
    assert_eq!(checkpoint.status().replay_tags, 3);
    // Two minutes later (by the verification clock) their windows have ended: the running
    // pipeline forgets them, with no restart.
    time.advance(120_000);
    eventually("the purge", || checkpoint.status().replay_tags == 0);
    assert_eq!(
        counters
            .replay_tags_purged
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    let drained = pipeline.shutdown(std::time::Instant::now() + std::time::Duration::from_secs(5));
    assert!(drained.panicked.is_empty() && !drained.timed_out);
}

/// Starts `yima-gate run` on a scanner-on-stdin gate; returns the child and the API base.
fn start_gate(gate: &Gate) -> (std::process::Child, String, String) {
    let cfg = gate.config("[[source]]\nkind = \"scanner\"\nstdin = true\n");
    let child = crate::common::run_daemon(crate::common::gate_umask_022(), &cfg);
    let (base, token) = gate.api_up(&gate.dir.path().join("state"));
    (child, base, token)
}

fn stop(mut child: std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert_eq!(child.wait().expect("wait").code(), Some(0));
}

#[test]
fn the_api_serves_its_token_holder_while_flooded_without_a_token() {
    yima_gate::sync::tls::install_provider();
    let gate = Gate::new();
    let (child, base, token) = start_gate(&gate);
    let http = reqwest::blocking::Client::new();
    // 300 connections that send half a request, from another loopback address: they take at
    // most their address's share of the connection slots.
    let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().expect("addr");
    let mut half = Vec::new();
    for _ in 0..300 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        s.bind(
            &"127.0.0.3:0"
                .parse::<std::net::SocketAddr>()
                .expect("a")
                .into(),
        )
        .expect("bind");
        if s.connect(&addr.into()).is_ok() {
            let _ = (&s).write_all(b"POST /api/v1/verify HTTP/1.1\r\nHost: x\r\n");
            half.push(s);
        }
    }
    // A flood without the token from the token holder's own address exhausts only the
    // unauthenticated budget.
    let mut limited = 0;
    for _ in 0..100 {
        let r = http
            .get(format!("{base}/api/v1/status"))
            .send()
            .expect("flood");
        if r.status() == 429 {
            limited += 1;
        } else {
            assert_eq!(r.status(), 401);
        }
    }
    assert!(limited > 0, "the unauthenticated flood is rate-limited");
    for i in 0..20 {
        let code = gate.code(now_s() - 1, Some(&format!("S{i}")));
        let r = http
            .post(format!("{base}/api/v1/verify"))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "code": code }))
            .send()
            .expect("verify");
        assert_eq!(r.status(), 200, "the token holder is served while flooded");
    }
    let ready = http.get(format!("{base}/readyz")).send().expect("readyz");
    assert_ne!(ready.status(), 429, "/readyz is never rate-limited");
    drop(half);
    stop(child);
}

#[test]
fn hostile_uploads_are_bounded_by_pixels_not_bytes() {
    yima_gate::sync::tls::install_provider();
    let gate = Gate::new();
    let (child, base, token) = start_gate(&gate);
    let http = reqwest::blocking::Client::new();
    // A 65 KB PNG of 8192×8192 zeros: 64 Mpx to decode — more than the whole pixel budget.
    let mut big = Vec::new();
    image::DynamicImage::ImageLuma8(image::GrayImage::new(8192, 8192))
        .write_to(&mut std::io::Cursor::new(&mut big), image::ImageFormat::Png)
        .expect("png");
    assert!(big.len() < 1024 * 1024);
    let r = http
        .post(format!("{base}/api/v1/verify"))
        .bearer_auth(&token)
        .header("Content-Type", "image/png")
        .body(big)
        .send()
        .expect("upload");
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().expect("json");
    assert_eq!(body["code"], "image_too_large");
    // Several large ones at once: each is decoded in its turn within the budget, none fails.
    let mut medium = Vec::new();
    image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(3000, 3000, image::Luma([255])))
        .write_to(
            &mut std::io::Cursor::new(&mut medium),
            image::ImageFormat::Png,
        )
        .expect("png");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (base, token, medium) = (base.clone(), token.clone(), medium.clone());
            std::thread::spawn(move || {
                reqwest::blocking::Client::new()
                    .post(format!("{base}/api/v1/verify"))
                    .bearer_auth(&token)
                    .header("Content-Type", "image/png")
                    .body(medium)
                    .send()
                    .expect("upload")
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().expect("join"), 422, "no code in a blank image");
    }
    stop(child);
    // `run` under umask 022: the state (store, token) is private all the same.
    let open = crate::common::not_private(&gate.dir.path().join("state"));
    assert!(open.is_empty(), "readable by others: {open:#?}");
}

#[test]
fn a_tcp_scanner_gate_keeps_listening_when_its_scanner_disconnects() {
    yima_gate::sync::tls::install_provider();
    let gate = Gate::new();
    let port = crate::common::free_port();
    let cfg = gate.config(&format!(
        "[[source]]\nkind = \"scanner\"\ntcp = \"127.0.0.1:{port}\"\n"
    ));
    let mut child = crate::common::gate()
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    for round in 0..3 {
        let mut scanner = loop {
            match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        };
        let code = gate.code(now_s() - 1, Some(&format!("T{round}")));
        scanner
            .write_all(format!("{code}\r\n").as_bytes())
            .expect("scan");
        let line = lines.next().expect("a verdict").expect("line");
        assert!(line.contains("\"accepted\":true"), "round {round}: {line}");
        drop(scanner); // the scanner goes away; the gate goes on listening
    }
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the gate is still running"
    );
    stop(child);
}
