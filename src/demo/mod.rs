//! `yima-gate demo`: the whole system on one machine — a reference platform on loopback, a
//! gateway enrolled with it over mutual TLS, synthetic 1280×720 gate frames of codes the
//! platform minted, each verdict printed, the records pushed, and the platform's counts.

pub mod synth;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use crate::checkpoint::Checkpoint;
use crate::checkpoint::Create;
use crate::clock::{wall_clock_ms, SystemTimeSource, TrustedClock};
use crate::decode::{Decoder, DecoderConfig};
use crate::platform::client::BackgroundPlatform;
use crate::sync::{SyncOptions, Syncer};
use crate::verification::trust::TrustState;
use crate::verification::verdict::Reason;
use synth::GateFrames;

const TERMINAL: &str = "GATE-DEMO";
/// Frames a presentation may take before the demo gives up on reading it (a real camera
/// sends 30 a second).
const FRAMES_PER_PRESENTATION: usize = 8;

struct Scenario {
    name: &'static str,
    text: String,
    /// Shown as this image (paper on a counter scanner) instead of synthetic camera frames.
    image: Option<image::GrayImage>,
    expect: Reason,
}

/// A code printed on paper, lying on a counter scanner's glass: the image on a light 1280×720
/// frame, square to the camera. (Grid Matrix in camera frames — a phone held up at an angle —
/// is the next step of the reader.)
fn on_counter(code: &image::GrayImage) -> image::GrayImage {
    let mut frame = image::GrayImage::from_pixel(1280, 720, image::Luma([214]));
    let scale = (600.0 / f64::from(code.width().max(1))).min(1.0);
    let shown = image::imageops::resize(
        code,
        (f64::from(code.width()) * scale) as u32,
        (f64::from(code.height()) * scale) as u32,
        image::imageops::FilterType::Nearest,
    );
    let x = i64::from((1280 - shown.width().min(1280)) / 2);
    let y = i64::from((720 - shown.height().min(720)) / 2);
    image::imageops::overlay(&mut frame, &shown, x, y);
    frame
}

/// Runs the demo; exit 0 when every scenario got its expected verdict and the platform holds
/// every record.
/// With `database`, the platform keeps its records in that PostgreSQL database.
pub fn run(state_dir: Option<&Path>, database: Option<&str>) -> anyhow::Result<ExitCode> {
    let tmp;
    let dir = match state_dir {
        Some(d) => d,
        None => {
            tmp = tempfile::Builder::new()
                .prefix("yima-gate-demo-")
                .tempdir()
                .context("creating a scratch directory")?;
            tmp.path()
        }
    };
    crate::sync::tls::install_provider();
    println!(
        "yima-gate demo — platform and gateway state in {}",
        dir.display()
    );

    // The platform, set up as its operator would through the admin API.
    let platform = BackgroundPlatform::start_with(
        &dir.join("platform"),
        database.map(crate::platform::records::pg_store::PgOptions::new),
    )?;
    let admin = &platform.admin;
    admin.post(
        "/admin/v1/services",
        &json!({"code": "SVC-BUS", "name": "公交出行"}),
    )?;
    admin.post(
        "/admin/v1/services",
        &json!({"code": "SVC-CARD", "name": "社保卡"}),
    )?;
    admin.post(
        "/admin/v1/services",
        &json!({"code": "SVC-PARK", "name": "园区通行"}),
    )?;
    admin.post(
        "/admin/v1/keys",
        &json!({"alg": "EdDSA", "kinds": ["dynamic"]}),
    )?;
    admin.post(
        "/admin/v1/keys",
        &json!({"alg": "SM2", "kinds": ["static"]}),
    )?;
    for sn in ["0001", "0002"] {
        admin.post(
            "/admin/v1/static",
            &json!({"cat": "CAT-SOCIAL", "sn": sn, "user": format!("holder-{sn}"), "service": "SVC-CARD"}),
        )?;
    }
    let token = admin.create_terminal(TERMINAL, &["GATE-1"])?;
    println!(
        "platform: {} (admin {})",
        platform.sync_url(),
        platform.running().admin_url()
    );

    // The gateway: enrolled over mutual TLS, its clock anchored by the first signed bundle.
    let gate_dir = dir.join("gate");
    let enrollment = crate::sync::enroll(&platform.sync_url(), &token, TERMINAL, &gate_dir)?;
    println!(
        "gateway: enrolled as {} (client certificate issued by the platform CA)",
        enrollment.terminal_id
    );
    let checkpoint = Arc::new(Checkpoint::open(
        &gate_dir,
        Create::Provision,
        TrustState::default(),
        |floor| Arc::new(TrustedClock::new(SystemTimeSource::new(false), floor, 5000)),
    )?);
    let syncer = Syncer::new(
        checkpoint.clone(),
        enrollment,
        SyncOptions {
            request_timeout: Duration::from_secs(10),
            ..SyncOptions::default()
        },
    )?;
    syncer.pull()?;
    let trust = checkpoint.trust();
    println!(
        "gateway: bundle in force — {} keys, {} static codes, clock trusted: {}",
        trust.keys.len(),
        trust.statuses.len(),
        checkpoint.clock().now().trusted
    );

    // What people will show at the gate.
    let now = wall_clock_ms() / 1000;
    let valid = admin.mint_dynamic("citizen-1", "SVC-BUS", None)?;
    let static_ok = admin.static_action("CAT-SOCIAL", "0001", "apply")?["code"]
        .as_str()
        .context("static code")?
        .to_string();
    let static_lost = admin.static_action("CAT-SOCIAL", "0002", "apply")?["code"]
        .as_str()
        .context("static code")?
        .to_string();
    // 亮码 in the standard's own code system: the platform renders the code as Grid Matrix.
    let (gm_code, gm_png) =
        admin.show_dynamic("citizen-5", "SVC-BUS", crate::decode::Symbology::GridMatrix)?;
    let gm_image = on_counter(&image::load_from_memory(&gm_png)?.to_luma8());
    let wrong_scene = admin.post(
        "/admin/v1/codes/dynamic",
        &json!({"user": "citizen-4", "service": "SVC-BUS", "scenes": ["GATE-9"]}),
    )?["code"]
        .as_str()
        .context("code")?
        .to_string();
    // The platform's operator reports 0002 lost and stops the park service; one sync later
    // the gate knows.
    admin.static_action("CAT-SOCIAL", "0002", "lost")?;
    admin.post("/admin/v1/services/SVC-PARK/stop", &serde_json::Value::Null)?;
    syncer.pull()?;

    let scenarios = vec![
        Scenario {
            name: "valid dynamic code (Ed25519)",
            text: valid.clone(),
            image: None,
            expect: Reason::Accepted,
        },
        Scenario {
            name: "same code shown again",
            text: valid,
            image: None,
            expect: Reason::Replayed,
        },
        Scenario {
            name: "dynamic code issued 2 minutes ago",
            text: admin.mint_dynamic("citizen-2", "SVC-BUS", Some(now - 120))?,
            image: None,
            expect: Reason::Expired,
        },
        Scenario {
            name: "static code, enabled (SM2)",
            text: static_ok,
            image: None,
            expect: Reason::Accepted,
        },
        Scenario {
            name: "static code reported lost",
            text: static_lost,
            image: None,
            expect: Reason::Lost,
        },
        Scenario {
            name: "service under emergency stop",
            text: admin.mint_dynamic("citizen-3", "SVC-PARK", None)?,
            image: None,
            expect: Reason::ServiceSuspended,
        },
        Scenario {
            name: "code for another scene",
            text: wrong_scene,
            image: None,
            expect: Reason::WrongScene,
        },
        Scenario {
            name: "Grid Matrix code (GB/T 27766)",
            text: gm_code,
            image: Some(gm_image),
            expect: Reason::Accepted,
        },
        Scenario {
            name: "not a YM1 code",
            text: "https://example.invalid/pay?id=1".into(),
            image: None,
            expect: Reason::Malformed,
        },
    ];

    let decoder = Decoder::new(DecoderConfig::live());
    let mut frames = GateFrames::new(2026);
    println!();
    println!(
        "{:<36} {:>6} {:<20} {:>4}  message",
        "presentation", "frames", "reason", "seq"
    );
    let mut all_ok = true;
    for s in &scenarios {
        // The camera keeps sending frames until one is read.
        let mut read = None;
        let mut used = 0;
        while read.is_none() && used < FRAMES_PER_PRESENTATION {
            used += 1;
            let img = match &s.image {
                Some(img) => img.clone(),
                None => frames.frame(&s.text).0,
            };
            read = decoder.decode(&img).into_iter().next().map(|d| d.text);
        }
        let Some(text) = read else {
            println!("{:<36} {:>6} (not read)", s.name, used);
            all_ok = false;
            continue;
        };
        let checked = checkpoint.check_with_online(&text, syncer.online_answer(&text))?;
        let ok = checked.reason() == s.expect;
        all_ok &= ok;
        println!(
            "{:<36} {:>6} {:<20} {:>4}  {}{}",
            s.name,
            used,
            checked.reason().code(),
            checked.seq().unwrap_or(0),
            checked.verification.verdict.message(),
            if ok { "" } else { "   <-- unexpected" }
        );
    }

    let recorded = checkpoint.status().backlog;
    let pushed = syncer.push()?;
    let stats = platform.db().stats()?;
    println!();
    println!(
        "gateway: {recorded} verifications recorded durably, {pushed} pushed, backlog {}",
        checkpoint.status().backlog
    );
    println!(
        "platform: {} records held; by verdict {}; by service {}; by terminal {}",
        stats.held.records,
        serde_json::to_string(&stats.held.by_verdict)?,
        serde_json::to_string(&stats.held.by_service)?,
        serde_json::to_string(&stats.held.by_terminal)?,
    );
    println!(
        "platform: {} users, {} codes minted, {} static codes, {} terminal(s)",
        stats.users, stats.codes_minted, stats.static_codes, stats.terminals
    );
    all_ok &= stats.held.records == recorded && checkpoint.status().backlog == 0;
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
