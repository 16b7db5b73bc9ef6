//! Frame-to-gate-signal latency through the whole daemon, and its memory: the real binary
//! (`yima-gate run`) reads 1280×720 synthetic gate frames from an MJPEG stream served on
//! loopback, and its relay (the file-backed double of the GPIO line) records each pulse. For
//! every presentation the latency is pulse time − time the frame was sent. RSS is read from
//! /proc while idle and while streaming.
//!
//! Run: `cargo bench --bench daemon` (release build of the binary; one camera at 30 fps, each
//! code held in view for 9 frames, 0.3 s). Presentations alternate QR (`GateFrames::new`) and
//! Grid Matrix (`GateFrames::grid_matrix`) codes, and the latency is reported for all and for
//! each symbology.
//!
//! Then hostile uploads: a second daemon takes 3 rounds of 8 concurrent image uploads
//! (8192×8192 zero PNGs of 65 KB, 3000×3000 blank PNGs, 2000×2000 noise PNGs) while its token
//! holder verifies a code every 50 ms; reported are RSS idle and peak (sampled every 5 ms) and
//! the token holder's verify latency during the flood.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use yima_gate::demo::synth::GateFrames;
use yima_gate::files::write_durable;
use yima_gate::verification::code::{self, Claims};
use yima_gate::verification::keys::{Alg, KeyPair, Kid};
use yima_gate::verification::verdict::{AccessMode, CodeKind};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn jpeg(img: &image::GrayImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(img)
        .expect("jpeg");
    out
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("daemon bench: run with `cargo bench --bench daemon`");
        return;
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_yima-gate"));

    let dir = tempfile::tempdir().expect("tmp");
    let now = yima_gate::clock::wall_clock_ms() / 1000;
    let key = KeyPair::generate(
        Alg::EdDSA,
        Kid::new(b"bench".to_vec()).expect("kid"),
        now - 60,
        now + 3600,
    );
    let trust = dir.path().join("trust.json");
    write_durable(
        &trust,
        serde_json::to_string(&key.trusted_key().to_entry())
            .expect("json")
            .as_bytes(),
        0o644,
    )
    .expect("trust");
    yima_gate::checkpoint::provision(&dir.path().join("state")).expect("init");

    let presentations = 100usize;
    // A phone held up for ~0.3 s in front of a 30 fps camera.
    let frames_per = 9usize;
    // Pre-render every frame (JPEG) so the server only sends.
    let mut qr = GateFrames::new(7);
    let mut gm = GateFrames::grid_matrix(7);
    let blank = jpeg(&image::GrayImage::from_pixel(1280, 720, image::Luma([90])));
    let mut shows = Vec::new();
    for i in 0..presentations {
        let mut cti = vec![0u8; 16];
        cti[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let claims = Claims {
            iss: "HLJ-YMTB".into(),
            sub: vec![9; 16],
            // Pre-rendering 900 frames and streaming them takes longer than one 60 s window:
            // codes (and the gate's refresh time below) live 10 min here; expiry is not measured.
            exp: now + 600,
            nbf: None,
            iat: now,
            cti,
            kind: CodeKind::Dynamic,
            service: "SVC-BUS".into(),
            scenes: None,
            mode: Some(AccessMode::Fused),
            business_codes: vec![],
            catalogue: None,
            serial: None,
            version: None,
        };
        let text = code::mint(&key.signing, &key.kid, &claims);
        let gen = if i % 2 == 0 { &mut qr } else { &mut gm };
        let frames: Vec<Vec<u8>> = (0..frames_per).map(|_| jpeg(&gen.frame(&text).0)).collect();
        shows.push(frames);
    }

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let cam = listener.local_addr().expect("addr");
    let pulses = dir.path().join("pulses.jsonl");
    let cfg = dir.path().join("gate.toml");
    std::fs::write(
        &cfg,
        format!(
            "[terminal]\nid = \"BENCH\"\nstate_dir = \"{}\"\n[trust]\nkeys = \"{}\"\nrefresh_s = 600\n[clock]\ntrust_system_clock = true\n\
             [[source]]\nkind = \"mjpeg\"\nurl = \"http://{cam}/video\"\n[decode]\nhold_off_ms = 300\nbudget_ms = 10\n\
             [relay]\nfile = \"{}\"\npulse_ms = 10\n[api]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().join("state").display(),
            trust.display(),
            pulses.display()
        ),
    )
    .expect("config");
    let mut gate = Command::new(&bin)
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let (mut conn, _) = listener.accept().expect("camera connection");
    let mut req = [0u8; 2048];
    let _ = conn.read(&mut req);
    conn.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=f\r\n\r\n",
    )
    .expect("head");
    let send = |conn: &mut std::net::TcpStream, frame: &[u8]| {
        let head = format!(
            "--f\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            frame.len()
        );
        conn.write_all(head.as_bytes()).expect("part");
        conn.write_all(frame).expect("frame");
        conn.write_all(b"\r\n").expect("crlf");
    };
    let period = Duration::from_micros(33_333); // 30 fps
                                                // Idle: the daemon up, the camera streaming an empty scene.
    for _ in 0..60 {
        send(&mut conn, &blank);
        std::thread::sleep(period);
    }
    let idle_rss = rss_kib(gate.id());
    let mut sent_at = Vec::new();
    let mut busy_rss = 0;
    for frames in &shows {
        let t0 = yima_gate::clock::wall_clock_ms();
        sent_at.push(t0);
        for f in frames {
            let tick = Instant::now();
            send(&mut conn, f);
            std::thread::sleep(period.saturating_sub(tick.elapsed()));
        }
        // the code leaves the view (longer than the 300 ms hold-off)
        for _ in 0..12 {
            send(&mut conn, &blank);
            std::thread::sleep(period);
        }
        busy_rss = busy_rss.max(rss_kib(gate.id()));
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill")
        .args(["-TERM", &gate.id().to_string()])
        .status();
    let _ = gate.wait();
    hostile_uploads(&bin, dir.path(), &key, now);
    let pulse_times: Vec<i64> = std::fs::read_to_string(&pulses)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["at_ms"].as_i64())
        .collect();
    // Match each presentation with the first pulse after its first frame and before the next.
    let mut lat = [Vec::new(), Vec::new()];
    for (i, t0) in sent_at.iter().enumerate() {
        let end = sent_at.get(i + 1).copied().unwrap_or(i64::MAX);
        if let Some(p) = pulse_times.iter().find(|p| **p >= *t0 && **p < end) {
            lat[i % 2].push((p - t0) as f64);
        }
    }
    let figures = |lat: &[f64]| {
        let mut lat = lat.to_vec();
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        // A presentation whose first frame the cascade misses is read from a later one, a
        // frame period (33 ms) or more after it was shown.
        let first = lat.iter().filter(|l| **l < 33.0).count();
        format!(
            "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms, {first}/{} read from their first frame",
            pct(0.5),
            pct(0.99),
            pct(1.0),
            lat.len()
        )
    };
    let all: Vec<f64> = lat.concat();
    println!(
        "daemon: {}/{} presentations opened the gate ({}/{} QR, {}/{} Grid Matrix); \
         frame-to-gate-signal {} (wall clock, includes JPEG decode of the 720p frame); \
         QR {}; Grid Matrix {}; RSS idle {} KiB, busy {} KiB",
        all.len(),
        presentations,
        lat[0].len(),
        presentations.div_ceil(2),
        lat[1].len(),
        presentations / 2,
        figures(&all),
        figures(&lat[0]),
        figures(&lat[1]),
        idle_rss,
        busy_rss
    );
}

fn png(img: image::GrayImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::DynamicImage::ImageLuma8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("png");
    out
}

fn hostile_uploads(bin: &std::path::Path, dir: &std::path::Path, key: &KeyPair, now: i64) {
    yima_gate::sync::tls::install_provider();
    let state = dir.join("hostile-state");
    yima_gate::checkpoint::provision(&state).expect("init");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let cfg = dir.join("hostile.toml");
    std::fs::write(
        &cfg,
        format!(
            "[terminal]\nid = \"BENCH-H\"\nstate_dir = \"{}\"\naccept_unknown_static = true\n[trust]\nkeys = \"{}\"\n\
             [clock]\ntrust_system_clock = true\n[[source]]\nkind = \"scanner\"\nstdin = true\n\
             [api]\nlisten = \"127.0.0.1:{port}\"\n",
            state.display(),
            dir.join("trust.json").display(),
        ),
    )
    .expect("config");
    let mut gate = Command::new(bin)
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::blocking::Client::new();
    let up = (0..400).any(|_| {
        std::thread::sleep(Duration::from_millis(25));
        http.get(format!("{base}/healthz"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    assert!(up, "the daemon came up");
    let token = std::fs::read_to_string(state.join("api.token"))
        .expect("token")
        .trim()
        .to_string();
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss_kib(gate.id());
    let zeros = png(image::GrayImage::new(8192, 8192));
    let blank = png(image::GrayImage::from_pixel(3000, 3000, image::Luma([255])));
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let noise = png(image::GrayImage::from_fn(2000, 2000, |_, _| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        image::Luma([(seed & 0xff) as u8])
    }));
    let pid = gate.id();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let texts: Vec<String> = (1..=1000u64)
        .map(|i| {
            let claims = Claims {
                iss: "HLJ-YMTB".into(),
                sub: vec![7; 16],
                exp: now + 3600,
                nbf: None,
                iat: now,
                cti: i.to_be_bytes().repeat(2),
                kind: CodeKind::Static,
                service: "SVC-BUS".into(),
                scenes: None,
                mode: Some(AccessMode::Independent),
                business_codes: vec![],
                catalogue: Some("CAT".into()),
                serial: Some(format!("H{i}")),
                version: Some(1),
            };
            code::mint(&key.signing, &key.kid, &claims)
        })
        .collect();
    let holder = {
        let (stop, base, token) = (stop.clone(), base.clone(), token.clone());
        std::thread::spawn(move || {
            let http = reqwest::blocking::Client::new();
            let mut lat = Vec::new();
            for text in texts {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let t = Instant::now();
                let ok = http
                    .post(format!("{base}/api/v1/verify"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({ "code": text }))
                    .send()
                    .is_ok_and(|r| r.status() == 200);
                lat.push((t.elapsed().as_secs_f64() * 1e3, ok));
                std::thread::sleep(Duration::from_millis(50));
            }
            lat
        })
    };
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    for round in 0..3 {
        let uploads: Vec<_> = (0..8)
            .map(|j| {
                let body = [&zeros, &blank, &noise][(round + j) % 3].clone();
                let (base, token) = (base.clone(), token.clone());
                std::thread::spawn(move || {
                    reqwest::blocking::Client::new()
                        .post(format!("{base}/api/v1/verify"))
                        .bearer_auth(&token)
                        .header("Content-Type", "image/png")
                        .body(body)
                        .send()
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0)
                })
            })
            .collect();
        for u in uploads {
            *statuses.entry(u.join().unwrap_or(0)).or_default() += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap_or(0);
    let mut lat = holder.join().unwrap_or_default();
    let served = lat.iter().filter(|(_, ok)| *ok).count();
    lat.sort_by(|a, b| a.0.total_cmp(&b.0));
    let p50 = lat.get(lat.len() / 2).map_or(f64::NAN, |l| l.0);
    let max = lat.last().map_or(f64::NAN, |l| l.0);
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = gate.wait();
    println!(
        "hostile uploads: 24 uploads (statuses {statuses:?}); RSS idle {idle} KiB, peak {peak} KiB \
         (+{} MiB); token holder served {served}/{} verifies, p50 {p50:.1} ms, max {max:.1} ms",
        peak.saturating_sub(idle) / 1024,
        lat.len()
    );
}
