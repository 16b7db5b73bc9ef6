//! Grid Matrix figures, one thread (run as `taskset -c 0 cargo bench --bench gridmatrix`):
//! - symbol sizes of real YM1 codes (dynamic and static, each of the four algorithms) at each
//!   Grid Matrix error-correction level, beside the QR versions of the same texts at L/M/Q/H;
//! - encode time (text → module grid) and render time (grid → 6 px/module image);
//! - decode time of a clean 1280×720 frame holding a YM1 dynamic code as Grid Matrix at 4 px a
//!   module: the clean-image reader alone, and the gate's whole live cascade (QR first);
//! - the cost the Grid Matrix stage adds to a frame with no Grid Matrix symbol (a QR frame the
//!   QR stages miss costs this much more);
//! - the Grid Matrix gate set (`GateFrames::grid_matrix`, seed 2027, 200 frames of YM1 dynamic
//!   codes at 2.5–6 px a module, any rotation, tilt, blur σ ≤ 1.2, noise, glare, moiré)
//!   through the live cascade, where the camera-frame detector reads them (target ≥ 95 %,
//!   p99 ≤ 15 ms), with reads by in-plane rotation (how far from a quarter turn).

use std::time::Instant;

use image::{GrayImage, Luma};
use qrcode::{EcLevel, QrCode};
use yima_gate::decode::{Decoder, DecoderConfig};
use yima_gate::gridmatrix::{self, read::read_clean, EncodeOptions};
use yima_gate::verification::code::{self, Claims};
use yima_gate::verification::keys::{Alg, KeyPair, Kid};
use yima_gate::verification::verdict::{AccessMode, CodeKind};

fn claims(kind: CodeKind) -> Claims {
    Claims {
        iss: "HLJ-YMTB".into(),
        sub: vec![0x5A; 32],
        exp: 1_800_000_060,
        nbf: None,
        iat: 1_800_000_000,
        cti: (0..16).collect(),
        kind,
        service: "SVC-BUS".into(),
        scenes: Some(vec!["GATE-1".into()]),
        mode: Some(AccessMode::Fused),
        business_codes: vec!["BIZ-1".into()],
        catalogue: (kind == CodeKind::Static).then(|| "CAT-0001".into()),
        serial: (kind == CodeKind::Static).then(|| "SN-000001".into()),
        version: (kind == CodeKind::Static).then_some(1),
    }
}

fn median_us(mut f: impl FnMut(), runs: usize) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[runs / 2]
}

fn sizes() -> Vec<String> {
    println!("YM1 symbol sizes (modules per side; Grid Matrix version in brackets):");
    println!(
        "{:<18} {:>4} | {:>9} {:>9} {:>9} {:>9} {:>9} | {:>5} {:>5} {:>5} {:>5}",
        "code",
        "chars",
        "GM L1",
        "GM L2",
        "GM L3",
        "GM L4",
        "GM L5",
        "QR L",
        "QR M",
        "QR Q",
        "QR H"
    );
    let mut texts = Vec::new();
    for alg in Alg::ALL {
        // Fixed by its bytes: the same texts, so the same gate set, on every run.
        let key = KeyPair::from_secret(
            alg,
            Kid::new(b"kid-2026".to_vec()).expect("kid"),
            &[0x26; 32],
            0,
            i64::MAX / 2,
        )
        .expect("key");
        for kind in [CodeKind::Dynamic, CodeKind::Static] {
            let text = code::mint(&key.signing, &key.kid, &claims(kind));
            let gm: Vec<String> = (1..=5)
                .map(|level| {
                    gridmatrix::encode(
                        &text,
                        &EncodeOptions {
                            level,
                            ..Default::default()
                        },
                    )
                    .map(|s| format!("{} (V{})", s.modules.side(), s.version))
                    .unwrap_or_else(|_| "—".into())
                })
                .collect();
            let qr: Vec<String> = [EcLevel::L, EcLevel::M, EcLevel::Q, EcLevel::H]
                .into_iter()
                .map(|l| {
                    QrCode::with_error_correction_level(text.as_bytes(), l)
                        .map(|c| c.width().to_string())
                        .unwrap_or_else(|_| "—".into())
                })
                .collect();
            println!(
                "{:<18} {:>4} | {:>9} {:>9} {:>9} {:>9} {:>9} | {:>5} {:>5} {:>5} {:>5}",
                format!("{alg:?} {kind:?}"),
                text.len(),
                gm[0],
                gm[1],
                gm[2],
                gm[3],
                gm[4],
                qr[0],
                qr[1],
                qr[2],
                qr[3]
            );
            texts.push(text);
        }
    }
    texts
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("gridmatrix bench: run with `cargo bench --bench gridmatrix`");
        return;
    }
    let texts = sizes();
    let text = &texts[0];
    let opts = EncodeOptions::default();
    let enc = median_us(
        || drop(gridmatrix::encode(text, &opts).expect("encode")),
        201,
    );
    let sym = gridmatrix::encode(text, &opts).expect("encode");
    let ren = median_us(|| drop(gridmatrix::render(&sym, 6)), 101);
    println!("\nencode {} chars → V{} L{}: median {enc:.0} µs; render at 6 px/module: median {ren:.0} µs", text.len(), sym.version, sym.level);

    // A clean 720p frame: the symbol at 4 px a module on a light grey background.
    let symbol = gridmatrix::render(&sym, 4);
    let mut frame = GrayImage::from_pixel(1280, 720, Luma([200]));
    image::imageops::overlay(&mut frame, &symbol, 400, 80);
    let clean = median_us(|| assert_eq!(read_clean(&frame).len(), 1), 51);
    let live = Decoder::new(DecoderConfig::live());
    assert_eq!(
        live.decode(&frame).first().map(|d| d.text.as_str()),
        Some(text.as_str())
    );
    let cascade = median_us(|| drop(live.decode(&frame)), 51);
    println!("clean 1280×720 frame, V{} at 4 px/module: clean-image reader median {:.2} ms; live cascade (QR stages first) median {:.2} ms", sym.version, clean / 1e3, cascade / 1e3);

    // The Grid Matrix stage on a frame without one: a QR code on the same background.
    let qr = yima_gate::render::render(text, 4).expect("qr");
    let mut qframe = GrayImage::from_pixel(1280, 720, Luma([200]));
    image::imageops::overlay(&mut qframe, &qr, 400, 80);
    let miss = median_us(|| assert!(read_clean(&qframe).is_empty()), 51);
    println!(
        "Grid Matrix stage on a 1280×720 frame without a Grid Matrix symbol: median {:.2} ms",
        miss / 1e3
    );
    #[cfg(feature = "platform")]
    gate_set(&texts[0]);
}

#[cfg(feature = "platform")]
fn gate_set(template: &str) {
    use yima_gate::demo::synth::GateFrames;
    let mut frames = GateFrames::grid_matrix(2027);
    let live = Decoder::new(DecoderConfig::live());
    let (mut read, mut times, mut read_times) = (0, Vec::new(), Vec::new());
    let (mut units, mut unit_ms) = (0u64, 0f64);
    // Modules across the drawn symbol with its quiet zone (`FrameParams::code_px` spans both).
    let side = gridmatrix::encode(template, &EncodeOptions::default())
        .map(|s| s.modules.side() as u32 + 12)
        .expect("encode");
    // Reads by distance from the nearest quarter turn: 0–5°, 5–20°, 20–45°.
    let mut by_angle = [(0u32, 0u32); 3];
    let n = 200;
    for i in 0..n {
        // Distinct texts of the real length: the template with its last characters varied.
        let text = format!("{}{:05}", &template[..template.len() - 5], i);
        let (frame, p) = frames.frame(&text);
        let work = yima_gate::decode::Work::default();
        let t = Instant::now();
        let found = live.decode_counted(&frame, &|| false, &work);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let ok = found.iter().any(|d| d.text == text);
        times.push(ms);
        units += work.units();
        unit_ms += ms;
        if ok {
            read_times.push(ms);
        } else {
            // The misses, characterised by the frame's parameters and what they cost.
            println!(
                "miss {i}: {ms:.1} ms, {} work units; module {:.1} px, rotation {:.0}°, tilt {:.0}°, \
                 blur σ {:.2}, noise σ {:.1}, glare {:.2}, moiré {:.2}",
                work.units(),
                p.code_px / f64::from(side),
                p.rotation_deg,
                p.tilt_deg,
                p.blur_sigma,
                p.noise_sigma,
                p.glare,
                p.moire
            );
        }
        let off = (p.rotation_deg.rem_euclid(90.0)).min(90.0 - p.rotation_deg.rem_euclid(90.0));
        let bucket = if off < 5.0 {
            0
        } else if off < 20.0 {
            1
        } else {
            2
        };
        by_angle[bucket].1 += 1;
        if ok {
            read += 1;
            by_angle[bucket].0 += 1;
        }
    }
    times.sort_by(f64::total_cmp);
    read_times.sort_by(f64::total_cmp);
    let at = |t: &[f64], p: f64| {
        t.get(((t.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "Grid Matrix gate set: frames read, frame-to-text p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
         work rate {:.0} units/ms on this machine (WORK_PER_MS = {})",
        at(&read_times, 0.5),
        at(&read_times, 0.99),
        at(&read_times, 1.0),
        units as f64 / unit_ms,
        yima_gate::decode::WORK_PER_MS
    );
    println!(
        "Grid Matrix gate set (seed 2027): {read}/{n} read by the live cascade; all frames p50 {:.2} ms, p99 {:.2} ms; \
         by rotation off a quarter turn: <5° {}/{}, 5–20° {}/{}, 20–45° {}/{}",
        at(&times, 0.5),
        at(&times, 0.99),
        by_angle[0].0,
        by_angle[0].1,
        by_angle[1].0,
        by_angle[1].1,
        by_angle[2].0,
        by_angle[2].1
    );
}
