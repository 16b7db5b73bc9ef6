//! Image files and uploads to grayscale frames, within size limits that bound memory and decode
//! time for hostile input.

use std::io::Cursor;
use std::path::Path;

use image::{GrayImage, ImageReader};

/// Largest image side accepted from a file or an upload.
pub const MAX_IMAGE_SIDE: u32 = 8192;
/// Most bytes the image decoder may allocate for one image.
pub const MAX_IMAGE_ALLOC: u64 = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{name} is not a readable image: {source}")]
    Decode {
        name: String,
        source: image::ImageError,
    },
}

/// Loads an image file as grayscale, within the size limits.
pub fn load_gray(path: &Path) -> Result<GrayImage, ImageError> {
    let bytes = std::fs::read(path).map_err(|source| ImageError::Read {
        path: path.display().to_string(),
        source,
    })?;
    decode_image(&bytes, &path.display().to_string())
}

/// Decodes image bytes (an upload) as grayscale, within the size limits.
pub fn load_gray_bytes(bytes: &[u8]) -> Result<GrayImage, ImageError> {
    decode_image(bytes, "the upload")
}

/// The decoder limits every image read goes through.
pub fn limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_ALLOC);
    limits
}

fn decode_image(bytes: &[u8], name: &str) -> Result<GrayImage, ImageError> {
    let err = |source| ImageError::Decode {
        name: name.to_string(),
        source,
    };
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| err(image::ImageError::IoError(e)))?;
    reader.limits(limits());
    let img = reader.decode().map_err(err)?;
    Ok(img.into_luma8())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Luma;

    #[test]
    fn oversized_images_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("big.png");
        GrayImage::from_pixel(MAX_IMAGE_SIDE + 1, 1, Luma([0]))
            .save(&path)
            .expect("save");
        assert!(matches!(load_gray(&path), Err(ImageError::Decode { .. })));
    }
}
