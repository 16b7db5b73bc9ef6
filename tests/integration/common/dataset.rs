//! The qr-photos dataset (`tests/data/qr-photos`, zxing-cpp's samples, Apache-2.0): images with
//! their expected payloads.

use std::path::PathBuf;

pub struct Photo {
    pub image: PathBuf,
    pub name: String,
    pub expected: Vec<u8>,
}

/// Loads the manifest.
pub fn photos() -> Vec<Photo> {
    let base = crate::common::data("qr-photos");
    let manifest = std::fs::read_to_string(base.join("manifest.tsv")).expect("manifest");
    manifest
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            Photo {
                image: base.join(cols[1]),
                name: cols[1].to_string(),
                expected: std::fs::read(base.join(cols[2])).expect("expected payload"),
            }
        })
        .collect()
}

/// True when `text` is the expected payload, allowing for the character set the label was
/// written in (Shift_JIS, ISO-8859-1, GB18030 payloads are stored as raw bytes).
pub fn matches(text: &str, expected: &[u8]) -> bool {
    if text.as_bytes() == expected {
        return true;
    }
    [
        encoding_rs::SHIFT_JIS,
        encoding_rs::WINDOWS_1252,
        encoding_rs::GB18030,
    ]
    .iter()
    .any(|enc| {
        let (bytes, _, unmappable) = enc.encode(text);
        !unmappable && bytes.as_ref() == expected
    }) || text.chars().all(|c| (c as u32) < 256)
        && text.chars().map(|c| c as u32 as u8).collect::<Vec<u8>>() == expected
}
