//! Code texts as symbol images: QR (the `qrcode` crate) or Grid Matrix ([`crate::gridmatrix`]),
//! as grayscale images or PNG. Reading symbols back is `decode`'s job.

use std::path::Path;

use image::{GrayImage, Luma};
use qrcode::{Color, EcLevel, QrCode};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("text does not fit in a QR code: {0}")]
    Encode(String),
    #[error("text does not fit in a Grid Matrix symbol: {0}")]
    GridMatrix(#[from] crate::gridmatrix::EncodeError),
    #[error("cannot encode PNG: {0}")]
    Png(image::ImageError),
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

/// Renders `text` as a Grid Matrix symbol at [`crate::gridmatrix::DEFAULT_LEVEL`]:
/// `module_px` pixels per module (§6.2 of the standard asks at least 3 on a display) and the
/// 6-module quiet zone.
pub fn grid_matrix(text: &str, module_px: u32) -> Result<GrayImage, RenderError> {
    let symbol = crate::gridmatrix::encode(text, &crate::gridmatrix::EncodeOptions::default())?;
    Ok(crate::gridmatrix::render(&symbol, module_px))
}

/// Writes `text` as a QR PNG.
pub fn write_png(text: &str, path: &Path) -> Result<(), RenderError> {
    save_png(&render(text, 8)?, path)
}

/// Writes an image as PNG.
pub fn save_png(img: &GrayImage, path: &Path) -> Result<(), RenderError> {
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|source| RenderError::Write {
            path: path.display().to_string(),
            source,
        })
}

/// An image as PNG bytes.
pub fn png_bytes(img: &GrayImage) -> Result<Vec<u8>, RenderError> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(RenderError::Png)?;
    Ok(out.into_inner())
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
    fn grid_matrix_pngs_decode_back() {
        let img = grid_matrix("YM1:ABC", 3).expect("render");
        let png = png_bytes(&img).expect("png");
        let back = image::load_from_memory(&png).expect("load").to_luma8();
        assert_eq!(back, img);
        let read = crate::gridmatrix::read::read_clean(&back);
        assert_eq!(read.first().map(|d| d.text.as_str()), Some("YM1:ABC"));
    }
}
