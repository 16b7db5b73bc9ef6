//! `yima-gate decode`: codes read from image files (QR and Grid Matrix), one JSON line per file
//! with every text found, its symbology, the decode time and the stage that read it.

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
    /// Image files (PNG, JPEG, WebP, BMP, PGM).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// Runs `decode`.
pub fn run(a: DecodeArgs) -> anyhow::Result<ExitCode> {
    decode_files(&a.files, a.multiple)
}

fn decode_files(files: &[PathBuf], multiple: bool) -> anyhow::Result<ExitCode> {
    let decoder = crate::decode::Decoder::new(crate::decode::DecoderConfig {
        multiple,
        ..Default::default()
    });
    let mut out = std::io::stdout().lock();
    let mut all_read = true;
    for file in files {
        let line = match load_gray(file) {
            Ok(img) => {
                let start = std::time::Instant::now();
                let found = decoder.decode(&img);
                let ms = start.elapsed().as_secs_f64() * 1000.0;
                all_read &= !found.is_empty();
                serde_json::json!({
                    "file": file.display().to_string(),
                    "texts": found.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(),
                    "ms": (ms * 1000.0).round() / 1000.0,
                    "width": img.width(),
                    "height": img.height(),
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
