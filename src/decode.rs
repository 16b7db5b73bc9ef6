//! From a grayscale frame to code texts: a cascade of engines and image variants that stops at
//! the first stage that reads anything, within a time budget.
//!
//! Stage order (cheapest and most successful first; each stage runs only if the earlier ones
//! found nothing):
//! 1. live frames only (`half_first`, `Decoder::live_stages`): rxing on the 2×2-averaged
//!    half frame; the **regions of interest** — 8-connected runs of the busiest edge blocks of
//!    the half frame, where a code is — each read at full resolution, sharpened; the busiest
//!    region against its local mean (glare on the code); an adaptive threshold of the half
//!    frame (glare, uneven light); the small regions sharpened and doubled (blurred codes:
//!    3 px modules are lost at half size, not in a full-size crop); rqrr on the adaptive
//!    half frame;
//! 2. rxing (zxing-cpp/ZXing port; hybrid then global binarizer) on the frame;
//! 3. rqrr on the frame (panic-isolated: rqrr 0.11 asserts on some real images);
//! 4. `VARIANTS`: inverted, downscaled, upscaled + adaptive threshold, Otsu, smoothed
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
use rxing::qrcode::cpp_port::QrReader;
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
    /// frame that yields nothing quickly is given up. 10 ms: on the synthetic gate set the
    /// rate stops moving with the machine's speed (8 ms gave 95–96 % run to run, 10 ms 96 %
    /// every time) and the stage running at the deadline still ends within 15 ms.
    pub fn live() -> Self {
        DecoderConfig {
            budget: Duration::from_millis(10),
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

/// Regions of interest read per live frame (the second pays when a bright edge or a second
/// phone out-scores the code).
const MAX_REGIONS: usize = 2;
/// Side of a block of the region finder, in half-frame pixels (16 px of the frame).
const REGION_BLOCK: usize = 8;
/// A block is busy when its edge energy exceeds this multiple of the frame's median block
/// (sensor noise sets the median) and this mean gradient per pixel.
const REGION_MEDIAN_FACTOR: u64 = 3;
const REGION_MIN_GRADIENT: u64 = 12;
/// Smallest busy region worth reading, in blocks per side (a 21-module code at 2 px a module).
const REGION_MIN_BLOCKS: usize = 3;
/// Blocks of margin around a busy region (the quiet zone and the finder patterns' edges).
const REGION_MARGIN_BLOCKS: u32 = 2;
/// A region with a side longer than this (px) is not doubled: its code's modules are big
/// enough, and doubling it would cost more than a full-frame pass.
const REGION_DOUBLE_MAX: u32 = 400;
/// Window radius (px) and offset of a region's adaptive threshold.
const REGION_ADAPTIVE_RADIUS: u32 = 12;
const REGION_ADAPTIVE_OFFSET: i64 = 3;
/// Unsharp mask of a region: box radius (px) and strength in halves (3 = 1.5×).
const SHARPEN_RADIUS: u32 = 2;
const SHARPEN_HALVES: i32 = 3;

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
            (img.width().max(img.height()) <= 1200).then(|| adaptive_threshold(&double(img), 30, 5))
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
        make: |img| (img.width().max(img.height()) <= 1200).then(|| double(img)),
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
            if let Some(found) = self.live_stages(img, start) {
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

    /// The stages for live frames, cheapest and most productive first (measured on the
    /// synthetic gate set); `Some` ends the cascade — something was read, or the budget is
    /// spent — and `None` hands the frame on to the full-frame stages.
    fn live_stages(&self, img: &GrayImage, start: Instant) -> Option<Vec<Decoded>> {
        let spent = || start.elapsed() >= self.config.budget;
        let multiple = self.config.multiple;
        // Ends the cascade with what a stage found, if it found anything or the budget is spent.
        macro_rules! stop_if_found_or_spent {
            ($found:expr) => {
                let found = $found;
                if !found.is_empty() || spent() {
                    return Some(found);
                }
            };
        }

        let half = downscale2_box(img);
        stop_if_found_or_spent!(rxing_read(&half, multiple, false, "half_box"));
        // Each region at full resolution, sharpened. A crop also makes rxing's finder search
        // scan every second or third row instead of every fifth (its row step is a share of
        // the image height), which small codes need.
        let mut busiest = None;
        let mut sharpened = Vec::with_capacity(MAX_REGIONS);
        for r in regions(&half).into_iter().take(MAX_REGIONS) {
            let region = crop(img, r);
            let sharp = sharpen(&region, SHARPEN_RADIUS, SHARPEN_HALVES);
            stop_if_found_or_spent!(rxing_read(&sharp, multiple, false, "region_sharp"));
            busiest.get_or_insert(region);
            sharpened.push(sharp);
        }
        // Glare on a code: the busiest region against its local mean at full resolution.
        if let Some(region) = &busiest {
            let local = adaptive_threshold(region, REGION_ADAPTIVE_RADIUS, REGION_ADAPTIVE_OFFSET);
            stop_if_found_or_spent!(rxing_read(&local, multiple, false, "region_adaptive"));
        }
        // Glare and uneven light: threshold against the local mean (a few modules wide),
        // which keeps the little contrast a washed-out screen has left.
        let local = adaptive_threshold(&half, HALF_ADAPTIVE_RADIUS, HALF_ADAPTIVE_OFFSET);
        stop_if_found_or_spent!(rxing_read(&local, multiple, false, "half_adaptive"));
        // Small, blurred codes: the sharpened region doubled.
        for sharp in sharpened
            .iter()
            .filter(|s| s.width().max(s.height()) <= REGION_DOUBLE_MAX)
        {
            stop_if_found_or_spent!(rxing_read(
                &double(sharp),
                multiple,
                false,
                "region_sharp_x2"
            ));
        }
        stop_if_found_or_spent!(rqrr_read(&local, "half_adaptive_rqrr"));
        None
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

/// rxing with the hybrid binarizer. A quick pass runs the zxing-cpp port's QR detector only:
/// measured on the gate set, it reads everything the pair of detectors reads in half the time
/// of a miss, and the time saved buys later stages. A `thorough` pass (files, API images: no
/// next frame) runs both detectors, then the global-histogram binarizer too.
fn rxing_read(
    img: &GrayImage,
    multiple: bool,
    thorough: bool,
    stage: &'static str,
) -> Vec<Decoded> {
    let run = || -> Vec<String> {
        let Ok(source) = Luma8LuminanceSource::new(img.as_raw().clone(), img.width(), img.height())
        else {
            return Vec::new();
        };
        let hints = hints();
        let mut bitmap = BinaryBitmap::new(HybridBinarizer::new(source.clone()));
        if multiple {
            let mut multi = GenericMultipleBarcodeReader::new(MultiFormatReader::default());
            if let Ok(rs) = multi.decode_multiple_with_hints(&mut bitmap, &hints) {
                return rs.iter().map(|r| r.getText().to_string()).collect();
            }
        } else if !thorough {
            return match QrReader.decode_with_hints(&mut bitmap, &hints) {
                Ok(r) => vec![r.getText().to_string()],
                Err(_) => Vec::new(),
            };
        } else if let Ok(r) = MultiFormatReader::default().decode_with_hints(&mut bitmap, &hints) {
            return vec![r.getText().to_string()];
        }
        if !thorough {
            return Vec::new();
        }
        // The global binarizer reads some evenly lit, low-contrast frames the hybrid one misses.
        let mut global = BinaryBitmap::new(GlobalHistogramBinarizer::new(source));
        match MultiFormatReader::default().decode_with_hints(&mut global, &hints) {
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
    let sw = img.width() as usize;
    let mut out = Vec::with_capacity((w * h) as usize);
    for pair in img.as_raw().chunks_exact(2 * sw).take(h as usize) {
        let (top, bottom) = pair.split_at(sw);
        out.extend(
            top.chunks_exact(2)
                .zip(bottom.chunks_exact(2))
                .take(w as usize)
                .map(|(a, b)| {
                    ((u16::from(a[0]) + u16::from(a[1]) + u16::from(b[0]) + u16::from(b[1])) / 4)
                        as u8
                }),
        );
    }
    GrayImage::from_raw(w, h, out).unwrap_or_else(|| GrayImage::new(w, h))
}

fn scale(img: &GrayImage, f: f64) -> Option<GrayImage> {
    let w = (f64::from(img.width()) * f).round() as u32;
    let h = (f64::from(img.height()) * f).round() as u32;
    (w >= 21 && h >= 21 && f < 1.0)
        .then(|| image::imageops::resize(img, w, h, FilterType::Triangle))
}

/// Twice the size, bilinear: each new pixel is ¾ of its nearer source pixel and ¼ of the next
/// one, in each direction, in integers. (`image::imageops::resize` spends ~60 ms doubling a
/// 416×480 crop; this takes well under one.)
fn double(img: &GrayImage) -> GrayImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return img.clone();
    }
    let src = img.as_raw();
    // Rows doubled horizontally, ×4.
    let mut wide = vec![0u16; 2 * w * h];
    for (row, out) in src.chunks_exact(w).zip(wide.chunks_exact_mut(2 * w)) {
        for x in 0..w {
            let near = 3 * u16::from(row[x]);
            out[2 * x] = near + u16::from(row[x.saturating_sub(1)]);
            out[2 * x + 1] = near + u16::from(row[(x + 1).min(w - 1)]);
        }
    }
    let mut out = Vec::with_capacity(4 * w * h);
    for y in 0..2 * h {
        let near = y / 2;
        let far = if y % 2 == 0 {
            near.saturating_sub(1)
        } else {
            (near + 1).min(h - 1)
        };
        let (a, b) = (
            &wide[near * 2 * w..(near + 1) * 2 * w],
            &wide[far * 2 * w..(far + 1) * 2 * w],
        );
        out.extend(
            a.iter()
                .zip(b)
                .map(|(&a, &b)| ((3 * u32::from(a) + u32::from(b) + 8) / 16) as u8),
        );
    }
    GrayImage::from_raw(2 * w as u32, 2 * h as u32, out).unwrap_or_else(|| img.clone())
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

/// A rectangle of the frame, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Region {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
}

/// Where codes probably are: blocks of the half-size frame whose edge energy stands out (a QR
/// symbol is the busiest texture a gate camera sees; glare, walls and a phone's blank screen
/// are smooth), grouped into 8-connected regions, busiest first, as rectangles of the full
/// frame with a margin.
fn regions(half: &GrayImage) -> Vec<Region> {
    let (w, h) = (half.width() as usize, half.height() as usize);
    let b = REGION_BLOCK;
    let (bw, bh) = (w / b, h / b);
    if bw < REGION_MIN_BLOCKS || bh < REGION_MIN_BLOCKS {
        return Vec::new();
    }
    // Edge energy per block: |∂x| + |∂y| summed over its pixels.
    let raw = half.as_raw();
    let mut energy = vec![0u64; bw * bh];
    let cols = (bw * b).min(w - 1);
    for y in 0..(bh * b).min(h - 1) {
        let (row, below) = (&raw[y * w..(y + 1) * w], &raw[(y + 1) * w..(y + 2) * w]);
        let blocks = &mut energy[(y / b) * bw..(y / b + 1) * bw];
        for (i, block) in blocks.iter_mut().enumerate() {
            let (lo, hi) = (i * b, ((i + 1) * b).min(cols));
            if lo >= hi {
                break;
            }
            let g: u32 = row[lo..hi]
                .iter()
                .zip(&row[lo + 1..hi + 1])
                .zip(&below[lo..hi])
                .map(|((&p, &right), &down)| {
                    u32::from(p.abs_diff(right)) + u32::from(p.abs_diff(down))
                })
                .sum();
            *block += u64::from(g);
        }
    }
    let mut sorted = energy.clone();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    let threshold = (median * REGION_MEDIAN_FACTOR).max(REGION_MIN_GRADIENT * (b * b) as u64);
    // 8-connected components of busy blocks: (total energy, [x0, y0, x1, y1] in blocks).
    let mut seen = vec![false; bw * bh];
    let mut found: Vec<(u64, [usize; 4])> = Vec::new();
    let mut stack = Vec::new();
    for first in 0..bw * bh {
        if seen[first] || energy[first] <= threshold {
            continue;
        }
        seen[first] = true;
        stack.push(first);
        let (mut total, mut bounds) = (0u64, [usize::MAX, usize::MAX, 0, 0]);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % bw, i / bw);
            total += energy[i];
            bounds = [
                bounds[0].min(x),
                bounds[1].min(y),
                bounds[2].max(x),
                bounds[3].max(y),
            ];
            for ny in y.saturating_sub(1)..=(y + 1).min(bh - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(bw - 1) {
                    let j = ny * bw + nx;
                    if !seen[j] && energy[j] > threshold {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        let [x0, y0, x1, y1] = bounds;
        if x1 - x0 + 1 >= REGION_MIN_BLOCKS && y1 - y0 + 1 >= REGION_MIN_BLOCKS {
            found.push((total, bounds));
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    // Blocks → frame pixels (a block is 2·b of them), with the margin, clamped to the frame.
    let px = (2 * b) as u32;
    let (fw, fh) = (2 * half.width(), 2 * half.height());
    let m = REGION_MARGIN_BLOCKS;
    found
        .into_iter()
        .map(|(_, [x0, y0, x1, y1])| {
            let (left, top) = (
                (x0 as u32).saturating_sub(m) * px,
                (y0 as u32).saturating_sub(m) * px,
            );
            let (right, bottom) = ((x1 as u32 + 1 + m) * px, (y1 as u32 + 1 + m) * px);
            Region {
                x: left,
                y: top,
                w: right.min(fw) - left,
                h: bottom.min(fh) - top,
            }
        })
        .collect()
}

/// `f(pixel, window sum, window size)` for every pixel of `img`, in order, where the window is
/// the pixel's (2r+1)² neighbourhood clipped at the image edges: a separable running sum (one
/// pass along the rows, one down the columns), O(1) per pixel, no division.
fn map_windows(img: &GrayImage, r: u32, mut f: impl FnMut(u8, u32, u32) -> u8) -> GrayImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let r = r as usize;
    let raw = img.as_raw();
    if w == 0 || h == 0 {
        return img.clone();
    }
    // Clipped window length along one axis, for each position.
    let span = |len: usize| -> Vec<u32> {
        (0..len)
            .map(|i| ((i + r).min(len - 1) + 1 - i.saturating_sub(r)) as u32)
            .collect()
    };
    let (wx, hy) = (span(w), span(h));
    // Horizontal window sums of every row.
    let mut rows = vec![0u32; w * h];
    for (src, out) in raw.chunks_exact(w).zip(rows.chunks_exact_mut(w)) {
        let mut sum: u32 = src[..r.min(w - 1) + 1].iter().map(|&p| u32::from(p)).sum();
        for x in 0..w {
            out[x] = sum;
            if x + r + 1 < w {
                sum += u32::from(src[x + r + 1]);
            }
            if x >= r {
                sum -= u32::from(src[x - r]);
            }
        }
    }
    // Vertical running sum of the row sums, column by column at once.
    let mut column: Vec<u32> = vec![0; w];
    for row in rows.chunks_exact(w).take(r.min(h - 1) + 1) {
        column.iter_mut().zip(row).for_each(|(c, &s)| *c += s);
    }
    let mut out = Vec::with_capacity(w * h);
    for y in 0..h {
        let src = &raw[y * w..(y + 1) * w];
        out.extend(
            src.iter()
                .zip(&column)
                .zip(&wx)
                .map(|((&p, &sum), &n)| f(p, sum, n * hy[y])),
        );
        if y + r + 1 < h {
            let add = &rows[(y + r + 1) * w..(y + r + 2) * w];
            column.iter_mut().zip(add).for_each(|(c, &s)| *c += s);
        }
        if y >= r {
            let sub = &rows[(y - r) * w..(y - r + 1) * w];
            column.iter_mut().zip(sub).for_each(|(c, &s)| *c -= s);
        }
    }
    GrayImage::from_raw(img.width(), img.height(), out).unwrap_or_else(|| img.clone())
}

/// Each pixel against the mean of its (2r+1)² window minus `c`: white when `p > mean − c`,
/// tested as `p·n + c·n > sum` in integers.
fn adaptive_threshold(img: &GrayImage, r: u32, c: i64) -> GrayImage {
    map_windows(img, r, |p, sum, n| {
        let n = i64::from(n);
        if (i64::from(p) + c) * n > i64::from(sum) {
            255
        } else {
            0
        }
    })
}

/// Unsharp mask: each pixel pushed away from its (2r+1)² mean by `halves`/2 of the difference
/// (gives back the module edges a defocused lens spread out).
fn sharpen(img: &GrayImage, r: u32, halves: i32) -> GrayImage {
    // ⌈2¹⁶/n⌉ for every window size n (at most (2r+1)²): the mean is a multiply and a shift,
    // within one level, and exact on flat areas (sum = k·n gives k while k·(n−1) < 2¹⁶).
    let side = 2 * r as usize + 1;
    let inverse: Vec<u32> = (0..=side * side)
        .map(|n| {
            let n = n.max(1) as u32;
            (1u32 << 16).div_ceil(n)
        })
        .collect();
    map_windows(img, r, |p, sum, n| {
        let mean = (sum * inverse.get(n as usize).copied().unwrap_or(0)) >> 16;
        let v = i32::from(p);
        (v + halves * (v - mean as i32) / 2).clamp(0, 255) as u8
    })
}

/// The pixels of `r` (which lies inside `img`) as an image of their own, copied row slice by
/// row slice (`image::imageops::crop_imm(..).to_image()` copies pixel by pixel: 0.2 ms for a
/// 300 px region, against 0.005 ms here).
fn crop(img: &GrayImage, r: Region) -> GrayImage {
    let (w, x, y) = (img.width() as usize, r.x as usize, r.y as usize);
    let raw = img.as_raw();
    let mut out = Vec::with_capacity((r.w * r.h) as usize);
    for row in raw.chunks_exact(w).skip(y).take(r.h as usize) {
        out.extend_from_slice(&row[x..x + r.w as usize]);
    }
    GrayImage::from_raw(r.w, r.h, out).unwrap_or_else(|| GrayImage::new(0, 0))
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
    fn window_sums_match_a_direct_count() {
        let (w, h) = (13i64, 7i64);
        let img = GrayImage::from_fn(w as u32, h as u32, |x, y| {
            Luma([((x * 37 + y * 91) % 256) as u8])
        });
        for r in [0i64, 1, 2, 5, 20] {
            let mut got = Vec::new();
            map_windows(&img, r as u32, |_, sum, n| {
                got.push((sum, n));
                0
            });
            let mut want = Vec::new();
            for y in 0..h {
                for x in 0..w {
                    let (mut sum, mut n) = (0u32, 0u32);
                    for yy in (y - r).max(0)..=(y + r).min(h - 1) {
                        for xx in (x - r).max(0)..=(x + r).min(w - 1) {
                            sum += u32::from(img.get_pixel(xx as u32, yy as u32).0[0]);
                            n += 1;
                        }
                    }
                    want.push((sum, n));
                }
            }
            assert_eq!(got, want, "r = {r}");
        }
    }

    #[test]
    fn sharpening_keeps_flat_areas_and_steepens_edges() {
        let flat = GrayImage::from_pixel(9, 9, Luma([120]));
        assert_eq!(sharpen(&flat, 2, 3), flat);
        let edge = GrayImage::from_fn(10, 5, |x, _| Luma([if x < 5 { 60 } else { 180 }]));
        let s = sharpen(&edge, 2, 3);
        assert!(s.get_pixel(4, 2).0[0] < 60 && s.get_pixel(5, 2).0[0] > 180);
        assert_eq!(s.get_pixel(0, 2).0[0], 60);
    }

    #[test]
    fn doubling_is_bilinear_and_keeps_flat_areas() {
        let flat = GrayImage::from_pixel(5, 3, Luma([77]));
        let d = double(&flat);
        assert_eq!(d.dimensions(), (10, 6));
        assert!(d.pixels().all(|p| p.0[0] == 77));
        // A step 0 | 160: each new pixel is ¾ its own source pixel, ¼ the neighbour.
        let step = GrayImage::from_fn(2, 1, |x, _| Luma([if x == 0 { 0 } else { 160 }]));
        let d = double(&step);
        let row: Vec<u8> = (0..4).map(|x| d.get_pixel(x, 0).0[0]).collect();
        assert_eq!(row, vec![0, 40, 120, 160]);
    }

    #[test]
    fn crop_copies_the_region() {
        let img = GrayImage::from_fn(9, 6, |x, y| Luma([(x + 10 * y) as u8]));
        let r = Region {
            x: 2,
            y: 1,
            w: 4,
            h: 3,
        };
        assert_eq!(
            crop(&img, r),
            image::imageops::crop_imm(&img, 2, 1, 4, 3).to_image()
        );
    }

    #[test]
    fn the_region_finder_points_at_the_code_and_nowhere_on_a_blank_scene() {
        let code = crate::qr::render("YM1:6BFOXN*TS0BI$ZD4N9:9S6RCVN5+O30K3", 3).expect("render");
        // A wall with a gradient and a little texture, the code pasted at (700, 300).
        let mut frame = GrayImage::from_fn(1280, 720, |x, y| {
            Luma([(60 + x / 20 + (x * 7 + y * 13) % 5) as u8])
        });
        image::imageops::replace(&mut frame, &code, 700, 300);
        let found = regions(&downscale2_box(&frame));
        let r = found.first().expect("a region");
        let (cw, ch) = code.dimensions();
        assert!(
            r.x <= 700 && r.y <= 300 && r.x + r.w >= 700 + cw && r.y + r.h >= 300 + ch,
            "{r:?} does not hold the code"
        );
        assert!(
            r.w < 2 * cw && r.h < 2 * ch,
            "{r:?} is far larger than the code"
        );
        let blank = GrayImage::from_pixel(1280, 720, Luma([90]));
        assert!(regions(&downscale2_box(&blank)).is_empty());
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
