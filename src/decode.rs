//! From a grayscale frame to code texts: a cascade of engines and image variants that stops at
//! the first stage that reads anything, within a time budget.
//!
//! Stage order (cheapest and most successful first; each stage runs only if the earlier ones
//! found nothing):
//! 1. rxing (zxing-cpp/ZXing port; hybrid then global binarizer, try-harder) on the frame;
//! 2. rqrr on the frame (panic-isolated: rqrr 0.11 asserts on some real images);
//! 3. `VARIANTS`: inverted, downscaled, upscaled + adaptive threshold, Otsu, smoothed
//!    upscale, contrast-stretched — each through rxing, the binarized ones through rqrr too.
//!
//! **Invariant:** decoding never panics and never runs unbounded: frames are bounded in size
//! before they get here ([`MAX_SIDE`]) and the cascade stops at its budget.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use image::imageops::FilterType;
use image::GrayImage;
use rxing::common::{GlobalHistogramBinarizer, HybridBinarizer};
use rxing::multi::{GenericMultipleBarcodeReader, MultipleBarcodeReader};
use rxing::{
    BarcodeFormat, BinaryBitmap, DecodeHints, Luma8LuminanceSource, MultiFormatReader, Reader,
};

/// Largest side of a frame handed to the decoder; larger frames are downscaled first.
pub const MAX_SIDE: u32 = 4096;

/// Which engine read a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    Rxing,
    Rqrr,
}

/// One code read from a frame.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decoded {
    /// The payload as text (ECI / character set applied by the engine).
    pub text: String,
    pub engine: Engine,
    /// Which cascade stage found it (0 = the frame as given).
    pub stage: &'static str,
}

/// Decoder settings.
#[derive(Debug, Clone)]
pub struct DecoderConfig {
    /// Stop trying further variants after this long (a stage already running completes).
    pub budget: Duration,
    /// Look for several codes in one frame (costs more per frame).
    pub multiple: bool,
    /// Try a 2×2-averaged half-size frame first when the frame is large: a quarter of the
    /// pixels, and phone codes at a gate usually have modules of 4 px or more.
    pub half_first: bool,
    /// On the full frame, also try rxing's global binarizer and rqrr (each costs about as
    /// much as the first pass; worth it for files, not for a live frame).
    pub thorough: bool,
}

impl Default for DecoderConfig {
    /// For files and diagnosis: spend up to 100 ms on a hard image.
    fn default() -> Self {
        DecoderConfig {
            budget: Duration::from_millis(100),
            multiple: false,
            half_first: false,
            thorough: true,
        }
    }
}

impl DecoderConfig {
    /// For live camera frames: the next frame is 33 ms away and will be tried anyway, so a
    /// frame that yields nothing quickly is given up.
    pub fn live() -> Self {
        DecoderConfig {
            budget: Duration::from_millis(8),
            multiple: false,
            half_first: true,
            thorough: false,
        }
    }
}

/// The decoding cascade.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    config: DecoderConfig,
}

/// Window radius (px of the half-size frame) and offset of the live cascade's adaptive pass.
const HALF_ADAPTIVE_RADIUS: u32 = 10;
const HALF_ADAPTIVE_OFFSET: i64 = 3;

/// An image variant tried when the frame itself yields nothing.
struct Variant {
    name: &'static str,
    make: fn(&GrayImage) -> Option<GrayImage>,
    /// Also run rqrr (it pays on binarized variants; elsewhere rxing reads all it would).
    rqrr: bool,
}

/// Variants in the order tried, cheapest and most often useful first (measured on
/// `shared/datasets/qr-photos`: each entry reads codes the ones before it miss).
const VARIANTS: &[Variant] = &[
    Variant {
        name: "invert",
        make: |img| {
            let mut i = img.clone();
            image::imageops::invert(&mut i);
            Some(i)
        },
        rqrr: false,
    },
    Variant {
        name: "half",
        make: |img| scale(img, 0.5),
        rqrr: false,
    },
    // Small codes under uneven light: upscale, then threshold against the local mean.
    Variant {
        name: "double_adaptive",
        make: |img| {
            (img.width().max(img.height()) <= 1200)
                .then(|| adaptive_threshold(&scale_up(img, 2), 30, 5))
        },
        rqrr: true,
    },
    Variant {
        name: "otsu",
        make: |img| Some(otsu_threshold(img)),
        rqrr: true,
    },
    // Tiny modules: blocky upscale, then smooth the staircase edges back into lines.
    Variant {
        name: "triple_smooth",
        make: |img| {
            (img.width().max(img.height()) <= 800).then(|| {
                let up = image::imageops::resize(
                    img,
                    img.width() * 3,
                    img.height() * 3,
                    FilterType::Nearest,
                );
                image::imageops::blur(&up, 1.0)
            })
        },
        rqrr: false,
    },
    Variant {
        name: "double",
        make: |img| (img.width().max(img.height()) <= 1200).then(|| scale_up(img, 2)),
        rqrr: false,
    },
    Variant {
        name: "stretch",
        make: |img| Some(stretch_contrast(img)),
        rqrr: false,
    },
    Variant {
        name: "quarter",
        make: |img| scale(img, 0.25),
        rqrr: false,
    },
];

impl Decoder {
    pub fn new(config: DecoderConfig) -> Decoder {
        Decoder { config }
    }

    /// Every code found in `img` (deduplicated by text), or none.
    pub fn decode(&self, img: &GrayImage) -> Vec<Decoded> {
        let start = Instant::now();
        let bounded;
        let img = if img.width().max(img.height()) > MAX_SIDE {
            let f = f64::from(MAX_SIDE) / f64::from(img.width().max(img.height()));
            bounded = scale(img, f).unwrap_or_else(|| img.clone());
            &bounded
        } else {
            img
        };
        if img.width() < 21 || img.height() < 21 {
            return Vec::new();
        }
        if self.config.half_first && img.width().min(img.height()) >= 480 {
            let half = downscale2_box(img);
            let found = rxing_read(&half, self.config.multiple, false, "half_box");
            if !found.is_empty() {
                return dedup(found);
            }
            // Glare and uneven light: threshold against the local mean (a few modules wide),
            // which keeps the little contrast a washed-out screen has left.
            let local = adaptive_threshold(&half, HALF_ADAPTIVE_RADIUS, HALF_ADAPTIVE_OFFSET);
            let mut found = rxing_read(&local, self.config.multiple, false, "half_adaptive");
            if found.is_empty() {
                found = rqrr_read(&local, "half_adaptive");
            }
            if !found.is_empty() {
                return dedup(found);
            }
        }
        let mut found = rxing_read(img, self.config.multiple, self.config.thorough, "frame");
        if found.is_empty() && self.config.thorough {
            found = rqrr_read(img, "frame");
        }
        if !found.is_empty() {
            return dedup(found);
        }
        for v in VARIANTS {
            if self.config.half_first && v.name == "half" {
                continue;
            }
            if start.elapsed() >= self.config.budget {
                break;
            }
            let Some(variant) = (v.make)(img) else {
                continue;
            };
            if variant.width() < 21 || variant.height() < 21 {
                continue;
            }
            let mut found =
                rxing_read(&variant, self.config.multiple, self.config.thorough, v.name);
            if found.is_empty() && v.rqrr {
                found = rqrr_read(&variant, v.name);
            }
            if !found.is_empty() {
                return dedup(found);
            }
        }
        Vec::new()
    }

    /// One pass of both engines over `img`, no variants (diagnostics, experiments).
    pub fn engines(&self, img: &GrayImage, stage: &'static str) -> Vec<Decoded> {
        let mut out = rxing_read(img, self.config.multiple, true, stage);
        if out.is_empty() {
            out = rqrr_read(img, stage);
        }
        dedup(out)
    }
}

fn dedup(mut found: Vec<Decoded>) -> Vec<Decoded> {
    let mut seen = HashSet::new();
    found.retain(|d| seen.insert(d.text.clone()));
    found
}

fn hints() -> DecodeHints {
    DecodeHints {
        PossibleFormats: Some(HashSet::from([BarcodeFormat::QR_CODE])),
        // Try-harder scans every row for finder patterns: measured no gain on the photo set
        // or the synthetic gate set, at 25% more time per frame.
        TryHarder: Some(false),
        ..DecodeHints::default()
    }
}

/// rxing with the hybrid binarizer, then (if `global`) the global-histogram one.
fn rxing_read(img: &GrayImage, multiple: bool, global: bool, stage: &'static str) -> Vec<Decoded> {
    let run = || -> Vec<String> {
        let Ok(source) = Luma8LuminanceSource::new(img.as_raw().clone(), img.width(), img.height())
        else {
            return Vec::new();
        };
        let hints = hints();
        let mut bitmap = BinaryBitmap::new(HybridBinarizer::new(source.clone()));
        let mut reader = MultiFormatReader::default();
        if multiple {
            let mut multi = GenericMultipleBarcodeReader::new(reader);
            if let Ok(rs) = multi.decode_multiple_with_hints(&mut bitmap, &hints) {
                return rs.iter().map(|r| r.getText().to_string()).collect();
            }
        } else if let Ok(r) = reader.decode_with_hints(&mut bitmap, &hints) {
            return vec![r.getText().to_string()];
        }
        if !global {
            return Vec::new();
        }
        // The global binarizer reads some evenly lit, low-contrast frames the hybrid one misses.
        let mut global = BinaryBitmap::new(GlobalHistogramBinarizer::new(source));
        let mut reader = MultiFormatReader::default();
        match reader.decode_with_hints(&mut global, &hints) {
            Ok(r) => vec![r.getText().to_string()],
            Err(_) => Vec::new(),
        }
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
        .unwrap_or_default()
        .into_iter()
        .map(|text| Decoded {
            text,
            engine: Engine::Rxing,
            stage,
        })
        .collect()
}

fn rqrr_read(img: &GrayImage, stage: &'static str) -> Vec<Decoded> {
    let run = || {
        let mut prepared = rqrr::PreparedImage::prepare(img.clone());
        prepared
            .detect_grids()
            .into_iter()
            .filter_map(|g| g.decode().ok().map(|(_, text)| text))
            .collect::<Vec<_>>()
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(texts) => texts
            .into_iter()
            .map(|text| Decoded {
                text,
                engine: Engine::Rqrr,
                stage,
            })
            .collect(),
        Err(_) => {
            tracing::debug!("decode: rqrr panicked on a frame; ignored");
            Vec::new()
        }
    }
}

/// Half size by averaging 2×2 blocks (fast, and keeps module edges crisper than filtering).
fn downscale2_box(img: &GrayImage) -> GrayImage {
    let (w, h) = (img.width() / 2, img.height() / 2);
    let src = img.as_raw();
    let sw = img.width() as usize;
    let mut out = Vec::with_capacity((w * h) as usize);
    for y in 0..h as usize {
        let (r0, r1) = (2 * y * sw, (2 * y + 1) * sw);
        for x in 0..w as usize {
            let s = u16::from(src[r0 + 2 * x])
                + u16::from(src[r0 + 2 * x + 1])
                + u16::from(src[r1 + 2 * x])
                + u16::from(src[r1 + 2 * x + 1]);
            out.push((s / 4) as u8);
        }
    }
    GrayImage::from_raw(w, h, out).unwrap_or_else(|| GrayImage::new(w, h))
}

fn scale(img: &GrayImage, f: f64) -> Option<GrayImage> {
    let w = (f64::from(img.width()) * f).round() as u32;
    let h = (f64::from(img.height()) * f).round() as u32;
    (w >= 21 && h >= 21 && f < 1.0)
        .then(|| image::imageops::resize(img, w, h, FilterType::Triangle))
}

fn scale_up(img: &GrayImage, k: u32) -> GrayImage {
    image::imageops::resize(img, img.width() * k, img.height() * k, FilterType::Triangle)
}

/// Linear stretch of the 1st–99th percentile range to 0–255.
fn stretch_contrast(img: &GrayImage) -> GrayImage {
    let hist = histogram(img);
    let total: u64 = hist.iter().sum();
    let (mut lo, mut hi, mut acc) = (0usize, 255usize, 0u64);
    for (i, &c) in hist.iter().enumerate() {
        acc += c;
        if acc * 100 >= total {
            lo = i;
            break;
        }
    }
    acc = 0;
    for (i, &c) in hist.iter().enumerate().rev() {
        acc += c;
        if acc * 100 >= total {
            hi = i;
            break;
        }
    }
    let span = (hi.saturating_sub(lo)).max(1) as f32;
    let mut out = img.clone();
    for p in out.pixels_mut() {
        let v = (f32::from(p.0[0]) - lo as f32) * 255.0 / span;
        p.0[0] = v.clamp(0.0, 255.0) as u8;
    }
    out
}

fn histogram(img: &GrayImage) -> [u64; 256] {
    let mut h = [0u64; 256];
    for p in img.as_raw() {
        h[usize::from(*p)] += 1;
    }
    h
}

/// Each pixel against the mean of its (2r+1)² window minus `c` (integral image, O(1) per pixel).
fn adaptive_threshold(img: &GrayImage, r: u32, c: i64) -> GrayImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let stride = w + 1;
    let mut integral = vec![0i64; stride * (h + 1)];
    let raw = img.as_raw();
    for y in 0..h {
        let mut row = 0i64;
        for x in 0..w {
            row += i64::from(raw[y * w + x]);
            integral[(y + 1) * stride + x + 1] = integral[y * stride + x + 1] + row;
        }
    }
    let r = r as usize;
    let mut out = img.clone();
    for (i, p) in out.as_mut().iter_mut().enumerate() {
        let (x, y) = (i % w, i / w);
        let (x0, y0) = (x.saturating_sub(r), y.saturating_sub(r));
        let (x1, y1) = ((x + r + 1).min(w), (y + r + 1).min(h));
        let sum =
            integral[y1 * stride + x1] - integral[y0 * stride + x1] - integral[y1 * stride + x0]
                + integral[y0 * stride + x0];
        let n = ((x1 - x0) * (y1 - y0)) as i64;
        *p = if i64::from(*p) * n > sum - c * n {
            255
        } else {
            0
        };
    }
    out
}

/// Otsu's global threshold.
fn otsu_threshold(img: &GrayImage) -> GrayImage {
    let hist = histogram(img);
    let total: u64 = hist.iter().sum();
    let sum: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &c)| i as f64 * c as f64)
        .sum();
    let (mut sum_b, mut w_b, mut best, mut threshold) = (0f64, 0u64, 0f64, 128u8);
    for (t, &c) in hist.iter().enumerate() {
        w_b += c;
        if w_b == 0 {
            continue;
        }
        let w_f = total - w_b;
        if w_f == 0 {
            break;
        }
        sum_b += t as f64 * c as f64;
        let m_b = sum_b / w_b as f64;
        let m_f = (sum - sum_b) / w_f as f64;
        let between = w_b as f64 * w_f as f64 * (m_b - m_f).powi(2);
        if between > best {
            best = between;
            threshold = t as u8;
        }
    }
    let mut out = img.clone();
    for p in out.pixels_mut() {
        p.0[0] = if p.0[0] > threshold { 255 } else { 0 };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Luma;

    #[test]
    fn reads_a_rendered_code_and_an_inverted_one() {
        let text = "YM1:6BFOXN*TS0BI$ZD4N9:9S6RCVN5+O30K3";
        let img = crate::qr::render(text, 4).expect("render");
        let d = Decoder::default();
        assert_eq!(d.decode(&img)[0].text, text);
        let mut inv = img.clone();
        image::imageops::invert(&mut inv);
        assert_eq!(d.decode(&inv)[0].text, text);
    }

    #[test]
    fn blank_tiny_and_noisy_frames_yield_nothing() {
        let d = Decoder::default();
        assert!(d
            .decode(&GrayImage::from_pixel(640, 480, Luma([128])))
            .is_empty());
        assert!(d.decode(&GrayImage::from_pixel(5, 5, Luma([0]))).is_empty());
        let mut noise = GrayImage::new(320, 240);
        let mut x = 12345u32;
        for p in noise.pixels_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            p.0[0] = x as u8;
        }
        assert!(d.decode(&noise).is_empty());
    }

    #[test]
    fn otsu_splits_two_levels() {
        let mut img = GrayImage::from_pixel(10, 10, Luma([40]));
        for x in 0..5 {
            for y in 0..10 {
                img.put_pixel(x, y, Luma([200]));
            }
        }
        let t = otsu_threshold(&img);
        assert_eq!(t.get_pixel(0, 0).0[0], 255);
        assert_eq!(t.get_pixel(9, 9).0[0], 0);
    }
}
