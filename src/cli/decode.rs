//! `yima-gate decode`: codes read from image files (QR and Grid Matrix), one JSON line per file
//! with every text found, its symbology, the decode time and the stage that read it; with
//! `--live`, each file read as the daemon reads a camera frame (the live cascade and budget).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::EXIT_REFUSED;
use crate::capture::image::load_gray;

/// Arguments of `decode`.
#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    /// Look for several codes per image.
    #[arg(long)]
    multiple: bool,
    /// Read each file as the running gate reads a camera frame — the live cascade within its
    /// work allowance — to answer "would the gate have read this frame?". The answer is the
    /// same on any machine (the allowance is counted in work, not time).
    #[arg(long)]
    live: bool,
    /// With `--live`: the budget, ms (the config's `[decode] budget_ms`, default 10).
    #[arg(long, value_name = "MS", default_value_t = 10, requires = "live")]
    budget_ms: u64,
    /// Image files (PNG, JPEG, WebP, BMP, PGM).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// Runs `decode`.
pub fn run(a: DecodeArgs) -> anyhow::Result<ExitCode> {
    let config = if a.live {
        crate::decode::DecoderConfig {
            budget: std::time::Duration::from_millis(a.budget_ms.clamp(1, 1000)),
            multiple: a.multiple,
            ..crate::decode::DecoderConfig::live()
        }
    } else {
        crate::decode::DecoderConfig {
            multiple: a.multiple,
            ..Default::default()
        }
    };
    decode_files(&a.files, config)
}

fn decode_files(
    files: &[PathBuf],
    config: crate::decode::DecoderConfig,
) -> anyhow::Result<ExitCode> {
    let decoder = crate::decode::Decoder::new(config);
    let mut out = std::io::stdout().lock();
    let mut all_read = true;
    for file in files {
        let line = match load_gray(file) {
            Ok(img) => {
                let start = std::time::Instant::now();
                let work = crate::decode::Work::default();
                let found = decoder.decode_counted(&img, &|| false, &work);
                let ms = start.elapsed().as_secs_f64() * 1000.0;
                all_read &= !found.is_empty();
                serde_json::json!({
                    "file": file.display().to_string(),
                    "texts": found.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(),
                    "ms": (ms * 1000.0).round() / 1000.0,
                    "width": img.width(),
                    "height": img.height(),
                    "work_units": work.units(),
                    "codes": found.iter().map(|d| serde_json::json!({
                        "text": d.text, "symbology": d.symbology, "engine": d.engine, "stage": d.stage,
                    })).collect::<Vec<_>>(),
                })
            }
            Err(e) => {
                all_read = false;
                serde_json::json!({ "file": file.display().to_string(), "texts": [], "error": e.to_string() })
            }
        };
        writeln!(out, "{line}")?;
    }
    Ok(if all_read {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_REFUSED)
    })
}
