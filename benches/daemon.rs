//! Frame-to-gate-signal latency through the whole daemon, and its memory: the real binary
//! (`yima-gate run`) reads 1280×720 synthetic gate frames from an MJPEG stream served on
//! loopback, and its relay (the file-backed double of the GPIO line) records each pulse. For
//! every presentation the latency is pulse time − time the frame was sent. RSS is read from
//! /proc while idle and while streaming.
//!
//! Run: `cargo bench --bench daemon` (release build of the binary; one camera at 30 fps, each
//! code held in view for 9 frames, 0.3 s).

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

    let presentations = 60usize;
    // A phone held up for ~0.3 s in front of a 30 fps camera.
    let frames_per = 9usize;
    // Pre-render every frame (JPEG) so the server only sends.
    let mut gen = GateFrames::new(7);
    let blank = jpeg(&image::GrayImage::from_pixel(1280, 720, image::Luma([90])));
    let mut shows = Vec::new();
    for i in 0..presentations {
        let mut cti = vec![0u8; 16];
        cti[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let claims = Claims {
            iss: "HLJ-YMTB".into(),
            sub: vec![9; 16],
            // Pre-rendering 540 frames and streaming them takes longer than one 60 s window:
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
    let pulse_times: Vec<i64> = std::fs::read_to_string(&pulses)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["at_ms"].as_i64())
        .collect();
    // Match each presentation with the first pulse after its first frame and before the next.
    let mut lat = Vec::new();
    for (i, t0) in sent_at.iter().enumerate() {
        let end = sent_at.get(i + 1).copied().unwrap_or(i64::MAX);
        if let Some(p) = pulse_times.iter().find(|p| **p >= *t0 && **p < end) {
            lat.push((p - t0) as f64);
        }
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "daemon: {}/{} presentations opened the gate; frame-to-gate-signal p50 {:.0} ms, p99 {:.0} ms \
         (wall clock, includes JPEG decode of the 720p frame); RSS idle {} KiB, busy {} KiB",
        lat.len(),
        presentations,
        if lat.is_empty() { f64::NAN } else { pct(0.5) },
        if lat.is_empty() { f64::NAN } else { pct(0.99) },
        idle_rss,
        busy_rss
    );
}
