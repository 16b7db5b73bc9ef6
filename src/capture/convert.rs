//! Camera pixel formats to grayscale: the camera delivers MJPEG, YUYV or GREY.

use image::GrayImage;

use super::image::limits;

/// Decodes a JPEG (bounded in size) to grayscale.
pub fn jpeg_to_gray(bytes: &[u8]) -> Result<GrayImage, String> {
    let mut reader =
        image::ImageReader::with_format(std::io::Cursor::new(bytes), image::ImageFormat::Jpeg);
    reader.limits(limits());
    reader
        .decode()
        .map(|i| i.into_luma8())
        .map_err(|e| e.to_string())
}

/// YUYV 4:2:2 (Y0 U Y1 V): the luma bytes are every other byte.
pub fn yuyv_to_gray(bytes: &[u8], width: u32, height: u32) -> Result<GrayImage, String> {
    let need = width as usize * height as usize * 2;
    if bytes.len() < need {
        return Err(format!("YUYV frame of {} bytes, need {need}", bytes.len()));
    }
    let luma: Vec<u8> = bytes[..need].iter().step_by(2).copied().collect();
    GrayImage::from_raw(width, height, luma).ok_or_else(|| "bad YUYV dimensions".into())
}

/// 8-bit grey, possibly with row padding (`stride` ≥ `width`).
pub fn grey_to_gray(
    bytes: &[u8],
    width: u32,
    height: u32,
    stride: u32,
) -> Result<GrayImage, String> {
    let (w, h, s) = (width as usize, height as usize, stride as usize);
    if s < w || bytes.len() < s * h.saturating_sub(1) + w {
        return Err("GREY frame too short".into());
    }
    let mut out = Vec::with_capacity(w * h);
    for row in 0..h {
        out.extend_from_slice(&bytes[row * s..row * s + w]);
    }
    GrayImage::from_raw(width, height, out).ok_or_else(|| "bad GREY dimensions".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_and_grey_conversion() {
        // 2×1 YUYV: Y0=10 U=128 Y1=200 V=128
        let g = yuyv_to_gray(&[10, 128, 200, 128], 2, 1).expect("yuyv");
        assert_eq!(g.as_raw(), &vec![10, 200]);
        assert!(yuyv_to_gray(&[1, 2], 2, 1).is_err());
        let g = grey_to_gray(&[1, 2, 0, 3, 4, 0], 2, 2, 3).expect("grey");
        assert_eq!(g.as_raw(), &vec![1, 2, 3, 4]);
        assert!(jpeg_to_gray(b"not a jpeg").is_err());
    }
}
