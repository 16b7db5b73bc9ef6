//! QR symbols: render a code text as a grayscale image / PNG, and load images within size
//! limits (reading codes from them is `decode`'s job).

use std::io::Cursor;
use std::path::Path;

use image::{GrayImage, ImageReader, Luma};
use qrcode::{Color, EcLevel, QrCode};

/// Largest image accepted from a file: bounds memory and decode time for hostile input.
pub const MAX_IMAGE_SIDE: u32 = 8192;
pub const MAX_IMAGE_ALLOC: u64 = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    #[error("text does not fit in a QR code: {0}")]
    Encode(String),
    #[error("cannot read image {path}: {reason}")]
    Image { path: String, reason: String },
    #[error("cannot write PNG {path}: {reason}")]
    Write { path: String, reason: String },
}

/// Renders `text` as a QR symbol: `module_px` pixels per module, a 4-module quiet zone,
/// error correction level M (alphanumeric mode is chosen by the encoder for YM1 texts).
pub fn render(text: &str, module_px: u32) -> Result<GrayImage, QrError> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .map_err(|e| QrError::Encode(e.to_string()))?;
    let width = u32::try_from(code.width()).map_err(|e| QrError::Encode(e.to_string()))?;
    let colors = code.to_colors();
    let quiet = 4;
    let side = (width + 2 * quiet) * module_px;
    let mut img = GrayImage::from_pixel(side, side, Luma([255]));
    for (i, c) in colors.iter().enumerate() {
        if *c != Color::Dark {
            continue;
        }
        let i = i as u32;
        let (mx, my) = (i % width + quiet, i / width + quiet);
        for dy in 0..module_px {
            for dx in 0..module_px {
                img.put_pixel(mx * module_px + dx, my * module_px + dy, Luma([0]));
            }
        }
    }
    Ok(img)
}

/// Writes `text` as a QR PNG.
pub fn write_png(text: &str, path: &Path) -> Result<(), QrError> {
    let img = render(text, 8)?;
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| QrError::Write {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// Loads an image file as grayscale, within the size limits.
pub fn load_gray(path: &Path) -> Result<GrayImage, QrError> {
    let bytes = std::fs::read(path).map_err(|e| QrError::Image {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    decode_image(&bytes, &path.display().to_string())
}

/// Decodes image bytes (an upload) as grayscale, within the size limits.
pub fn load_gray_bytes(bytes: &[u8]) -> Result<GrayImage, QrError> {
    decode_image(bytes, "(upload)")
}

fn decode_image(bytes: &[u8], name: &str) -> Result<GrayImage, QrError> {
    let err = |reason: String| QrError::Image {
        path: name.to_string(),
        reason,
    };
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| err(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_ALLOC);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| err(e.to_string()))?;
    Ok(img.into_luma8())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_quiet_zone_and_dark_modules() {
        let img = render("YM1:ABC", 4).expect("render");
        assert_eq!(img.width(), img.height());
        // 4-module quiet zone: the first 16 px rows are white
        assert!((0..16).all(|y| img.get_pixel(0, y).0[0] == 255));
        // the top-left finder pattern starts right after it
        assert_eq!(img.get_pixel(16, 16).0[0], 0);
    }

    #[test]
    fn oversized_images_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("big.png");
        GrayImage::from_pixel(MAX_IMAGE_SIDE + 1, 1, Luma([0]))
            .save(&path)
            .expect("save");
        assert!(matches!(load_gray(&path), Err(QrError::Image { .. })));
    }
}
