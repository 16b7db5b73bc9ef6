//! Code texts as symbol images: a QR symbol as a grayscale image or PNG (the `qrcode`
//! crate). Reading symbols back is `decode`'s job.

use std::path::Path;

use image::{GrayImage, Luma};
use qrcode::{Color, EcLevel, QrCode};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("text does not fit in a QR code: {0}")]
    Encode(String),
    #[error("cannot write PNG {path}: {source}")]
    Write {
        path: String,
        source: image::ImageError,
    },
}

/// Renders `text` as a QR symbol: `module_px` pixels per module, a 4-module quiet zone,
/// error correction level M (alphanumeric mode is chosen by the encoder for YM1 texts).
pub fn render(text: &str, module_px: u32) -> Result<GrayImage, RenderError> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .map_err(|e| RenderError::Encode(e.to_string()))?;
    let width = u32::try_from(code.width()).map_err(|e| RenderError::Encode(e.to_string()))?;
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
pub fn write_png(text: &str, path: &Path) -> Result<(), RenderError> {
    let img = render(text, 8)?;
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|source| RenderError::Write {
            path: path.display().to_string(),
            source,
        })
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
}
