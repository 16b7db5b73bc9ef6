//! A second reading of a QR symbol whose finder patterns rxing found but whose bits it could
//! not decode: the module grid fitted to the finder and alignment patterns by least squares,
//! each module's grey level averaged over its centre, and thresholded against the modules
//! around it.
//!
//! Why this is written here rather than taken from rxing: rxing (like zxing-cpp) samples one
//! pixel of the *binarized* image per module. With modules of about 3 px under blur and sensor
//! noise, that pixel is often on the wrong side of its block threshold even where the symbol's
//! geometry is found exactly: the finders and alignment patterns are located, but Reed–Solomon
//! gets more wrong codewords than it can correct. Averaging the grey level over the module's
//! centre halves the noise, and a threshold taken in module space (the mean of the 11 × 11
//! modules around) follows glare across the symbol. The geometry (finder patterns, module
//! size, alignment patterns) and the bit-stream decoder are rxing's; only the sampling and
//! the grid fit are ours.

use image::GrayImage;
use rxing::common::cpp_essentials::ConcentricPattern;
use rxing::common::BitMatrix;
use rxing::qrcode::common::Version;
use rxing::qrcode::cpp_port::decoder::Decode;
use rxing::qrcode::cpp_port::detector::{
    EstimateModuleSize, FinderPatternSet, LocateAlignmentPattern,
};
use rxing::{point, Point};

use crate::gridmatrix::detect::{neighbour_mean, sample, Homography, PointPair};

/// Finder-pattern triples tried per image, most plausible first (rxing ranks them).
const MAX_SETS: usize = 3;
/// Module offsets (in modules, both axes) averaged around a module's centre: its centre and
/// four points 0.2 module towards its corners — inside the module even when the grid is a
/// quarter module off.
const TAPS: [(f64, f64); 5] = [
    (0.0, 0.0),
    (-0.2, -0.2),
    (0.2, -0.2),
    (-0.2, 0.2),
    (0.2, 0.2),
];
/// Half side, in modules, of the neighbourhood a module is thresholded against.
const THRESHOLD_RADIUS: usize = 5;
/// An alignment pattern found farther than this (in modules) from where the grid fitted so
/// far puts it is another pattern (or noise), not this one.
const ALIGNMENT_SLACK: f32 = 1.5;

/// What the sampler did (for the cascade's work count).
#[derive(Debug, Default)]
pub(super) struct Effort {
    /// Finder-pattern triples whose grid was fitted.
    pub sets: u64,
    /// Modules sampled (five grey samples each), over every grid tried.
    pub modules: u64,
}

/// The text of the first symbol, among the finder-pattern triples `sets` that rxing found on
/// `bits` (the binarized `gray`) but could not decode, whose grey-level sampling decodes.
pub(super) fn read(
    gray: &GrayImage,
    bits: &BitMatrix,
    sets: &[FinderPatternSet],
    effort: &mut Effort,
) -> Option<String> {
    if gray.width() != bits.getWidth() || gray.height() != bits.getHeight() {
        return None;
    }
    sets.iter().take(MAX_SETS).find_map(|set| {
        if effort.modules >= MAX_MODULES {
            return None;
        }
        effort.sets += 1;
        read_set(gray, bits, set, effort)
    })
}

/// Module size (px) between two finder patterns: rxing's estimate along the line joining
/// them, else their sizes (a finder pattern is 7 modules across).
fn module_size(bits: &BitMatrix, a: ConcentricPattern, b: ConcentricPattern) -> f64 {
    let (ab, ba) = (
        EstimateModuleSize(bits, a, b),
        EstimateModuleSize(bits, b, a),
    );
    if ab > 0.0 && ba > 0.0 {
        (ab + ba) / 2.0
    } else {
        f64::from(a.size + b.size) / 14.0
    }
}

fn distance(a: Point, b: Point) -> f64 {
    f64::from(Point::distance(a, b))
}

fn read_set(
    gray: &GrayImage,
    bits: &BitMatrix,
    fp: &FinderPatternSet,
    effort: &mut Effort,
) -> Option<String> {
    let (top, left) = (
        module_size(bits, fp.tl, fp.tr),
        module_size(bits, fp.tl, fp.bl),
    );
    if !(top > 0.5 && left > 0.5) {
        return None;
    }
    // The side in modules from each pair (centres are 7 modules inside the sides), as the
    // nearest 4k + 1, then its neighbours: blur makes the estimate a version off.
    let side = (distance(fp.tl.p, fp.tr.p) / top + distance(fp.tl.p, fp.bl.p) / left) / 2.0 + 7.0;
    let nearest = ((side - 17.0) / 4.0).round() as i64 * 4 + 17;
    let ms = (top + left) / 2.0;
    // Candidates ordered by how well their timing patterns alternate; the two best are read.
    let mut dims: Vec<(f32, u32)> = (-2..=2)
        .map(|k| nearest + 4 * k)
        .filter(|d| (21..=MAX_DIM).contains(d))
        .filter_map(|d| {
            let d = d as u32;
            let score = timing_score(gray, fp, d, effort)?;
            (score >= TIMING_MIN_CONTRAST).then_some((score, d))
        })
        .collect();
    dims.sort_by(|a, b| b.0.total_cmp(&a.0));
    dims.into_iter().take(DIMS_READ).find_map(|(_, d)| {
        (effort.modules < MAX_MODULES)
            .then(|| read_grid(gray, bits, fp, d, ms, effort))
            .flatten()
    })
}

/// Side lengths (in modules) read per finder-pattern triple, best timing score first.
const DIMS_READ: usize = 2;
/// The largest symbol sampled: version 20 (97 modules). The sampler is for codes whose
/// modules are about 3 px, and a larger version at that size is wider than a gate camera
/// shows a phone; it also bounds what a texture of finder patterns costs.
const MAX_DIM: i64 = 97;
/// Least mean light-minus-dark difference (of 255) along the timing patterns for a grid to be
/// sampled: finder patterns that do not belong to a symbol show no alternation between them.
const TIMING_MIN_CONTRAST: f32 = 1.0;
/// Most modules one call samples (its cost bound: about 3 ms on the reference core, counted
/// in the frame's work); the grid being sampled when it is reached is abandoned.
const MAX_MODULES: u64 = 24_000;

/// The grid through the three finder centres alone, for a `dim`-module symbol (the fourth
/// corner completing the parallelogram), and that corner's pair.
fn finder_grid(fp: &FinderPatternSet, dim: u32) -> Option<(Vec<PointPair>, Homography)> {
    let d = f64::from(dim);
    let at = |c: ConcentricPattern| (f64::from(c.p.x), f64::from(c.p.y));
    let (tl, tr, bl) = (at(fp.tl), at(fp.tr), at(fp.bl));
    let pairs = vec![
        ((3.5, 3.5), tl),
        ((d - 3.5, 3.5), tr),
        ((3.5, d - 3.5), bl),
        ((d - 3.5, d - 3.5), (tr.0 + bl.0 - tl.0, tr.1 + bl.1 - tl.1)),
    ];
    let h = Homography::fit(&pairs)?;
    Some((pairs, h))
}

/// How well the timing patterns (row and column 6, dark on even modules) alternate on a
/// `dim`-module grid through the finders: the mean light-minus-dark difference; none if the
/// grid leaves the image.
fn timing_score(
    gray: &GrayImage,
    fp: &FinderPatternSet,
    dim: u32,
    effort: &mut Effort,
) -> Option<f32> {
    let (_, h) = finder_grid(fp, dim)?;
    let mut score = 0f32;
    let mut count = 0f32;
    for k in 8..dim - 8 {
        for (x, y) in [(f64::from(k) + 0.5, 6.5), (6.5, f64::from(k) + 0.5)] {
            let v = grey_at(gray, &h, x, y, 0.0)?;
            score += if k % 2 == 0 { -v } else { v };
            count += 1.0;
        }
    }
    effort.modules += count as u64 / 5;
    Some(score / count.max(1.0))
}

/// The grey level at module point (x, y) of grid `h`; none where it falls outside the image
/// by more than `margin` px beyond the outermost pixel centres.
fn grey_at(gray: &GrayImage, h: &Homography, x: f64, y: f64, margin: f64) -> Option<f32> {
    let (px, py) = h.apply(x, y);
    let (w, ht) = (f64::from(gray.width()), f64::from(gray.height()));
    let inside =
        (-margin..=w - 1.0 + margin).contains(&px) && (-margin..=ht - 1.0 + margin).contains(&py);
    inside.then(|| sample(gray, px as f32, py as f32))
}

/// Fits a `dim`-module grid to the finder patterns and the alignment patterns it predicts,
/// samples it and decodes it.
fn read_grid(
    gray: &GrayImage,
    bits: &BitMatrix,
    fp: &FinderPatternSet,
    dim: u32,
    ms: f64,
    effort: &mut Effort,
) -> Option<String> {
    let (mut pairs, mut h) = finder_grid(fp, dim)?;
    // The parallelogram's fourth corner fixed the first grid; found patterns replace it.
    pairs.truncate(3);
    let version = Version::getVersionForNumber((dim - 17) / 4).ok()?;
    let centres = version.getAlignmentPatternCenters();
    let last = centres.len().saturating_sub(1);
    // Alignment patterns nearest the top-left first: each one found refines the grid that
    // predicts the next.
    let mut cells: Vec<(usize, usize)> = (0..centres.len())
        .flat_map(|i| (0..centres.len()).map(move |j| (i, j)))
        .filter(|&(i, j)| !matches!((i, j), (0, 0)) && (i, j) != (0, last) && (i, j) != (last, 0))
        .collect();
    cells.sort_by_key(|&(i, j)| centres[i] + centres[j]);
    let module = ms.round().max(1.0) as i32;
    for (i, j) in cells {
        if effort.modules >= MAX_MODULES {
            return None;
        }
        let m = (f64::from(centres[i]) + 0.5, f64::from(centres[j]) + 0.5);
        let (px, py) = h.apply(m.0, m.1);
        let predicted = point(px as f32, py as f32);
        if !bits.is_in(predicted) {
            continue;
        }
        let found = LocateAlignmentPattern(bits, module, predicted)
            .filter(|f| Point::distance(*f, predicted) <= ALIGNMENT_SLACK * ms as f32)
            .map(|f| (f64::from(f.x), f64::from(f.y)))
            .or_else(|| locate_alignment_grey(gray, &h, m, effort));
        let Some(found) = found else {
            continue;
        };
        pairs.push((m, found));
        if let Some(fit) = Homography::fit(&pairs) {
            h = fit;
        }
    }
    let n = dim as usize;
    let mut grey = vec![0f32; n * n];
    for y in 0..n {
        for x in 0..n {
            let (cx, cy) = (x as f64 + 0.5, y as f64 + 0.5);
            let mut sum = 0.0;
            for (dx, dy) in TAPS {
                sum += grey_at(gray, &h, cx + dx, cy + dy, 0.5)?;
            }
            grey[y * n + x] = sum / TAPS.len() as f32;
        }
    }
    effort.modules += (n * n) as u64;
    let z = centred(&grey, n);
    for beta in EQUALIZE {
        let matrix = equalized(&z, n, beta)?;
        if let Ok(r) = Decode(&matrix) {
            return Some(r.text());
        }
    }
    None
}

/// Half width, in modules, of the square searched around an alignment pattern's predicted
/// centre, and the search step.
const ALIGNMENT_SEARCH: f64 = 1.5;
const ALIGNMENT_STEP: f64 = 0.5;

/// The alignment pattern whose centre `h` puts at module `m`, found on the grey image where
/// rxing's binary search did not (blur closes its light ring): the offset, within
/// [`ALIGNMENT_SEARCH`] modules, at which the 5 × 5-module template (dark centre, light ring,
/// dark ring) matches best, in pixels; none if no offset shows the pattern's contrast.
fn locate_alignment_grey(
    gray: &GrayImage,
    h: &Homography,
    m: (f64, f64),
    effort: &mut Effort,
) -> Option<(f64, f64)> {
    // The template's score at centre (cx, cy), in modules; none if it leaves the image.
    let mut score_at = |cx: f64, cy: f64| -> Option<f32> {
        effort.modules += 25;
        let (mut dark, mut light) = (0f32, 0f32);
        for dy in -2i32..=2 {
            for dx in -2i32..=2 {
                let v = grey_at(gray, h, cx + f64::from(dx), cy + f64::from(dy), 0.0)?;
                if dx.abs().max(dy.abs()) == 1 {
                    light += v;
                } else {
                    dark += v;
                }
            }
        }
        // Light ring (8 modules) against the dark centre and outer ring (17).
        Some(light / 8.0 - dark / 17.0)
    };
    // A coarse search at half a module, then the quarter-module offsets around its best.
    let mut best: Option<(f32, (f64, f64))> = None;
    let mut consider = |best: &mut Option<(f32, (f64, f64))>, c: (f64, f64)| {
        if let Some(score) = score_at(c.0, c.1) {
            if best.is_none_or(|(b, _)| score > b) {
                *best = Some((score, c));
            }
        }
    };
    let steps = (ALIGNMENT_SEARCH / ALIGNMENT_STEP) as i32;
    for sy in -steps..=steps {
        for sx in -steps..=steps {
            let c = (
                m.0 + f64::from(sx) * ALIGNMENT_STEP,
                m.1 + f64::from(sy) * ALIGNMENT_STEP,
            );
            consider(&mut best, c);
        }
    }
    let (_, coarse) = best?;
    for (dx, dy) in [
        (-1, -1),
        (0, -1),
        (1, -1),
        (-1, 0),
        (1, 0),
        (-1, 1),
        (0, 1),
        (1, 1),
    ] {
        let c = (
            coarse.0 + f64::from(dx) * ALIGNMENT_STEP / 2.0,
            coarse.1 + f64::from(dy) * ALIGNMENT_STEP / 2.0,
        );
        consider(&mut best, c);
    }
    let (score, (cx, cy)) = best?;
    (score >= ALIGNMENT_MIN_CONTRAST).then(|| h.apply(cx, cy))
}

/// Least grey-level difference (of 255) between an alignment pattern's light ring and its dark
/// modules for the grey search to take it.
const ALIGNMENT_MIN_CONTRAST: f32 = 12.0;

/// Strengths of the module-space equalizer tried, in order (0: none). Blur spreads each
/// module into its neighbours; subtracting β times their mean undoes that to first order.
const EQUALIZE: [f32; 4] = [0.0, 0.6, 1.2, 1.8];

/// Each module's grey level less the mean of the modules around it (glare and shading
/// removed): negative is dark.
fn centred(grey: &[f32], n: usize) -> Vec<f32> {
    // Integral image of the grid, (n + 1)² with a zero first row and column.
    let mut sums = vec![0f64; (n + 1) * (n + 1)];
    for y in 0..n {
        let mut row = 0f64;
        for x in 0..n {
            row += f64::from(grey[y * n + x]);
            sums[(y + 1) * (n + 1) + x + 1] = sums[y * (n + 1) + x + 1] + row;
        }
    }
    let r = THRESHOLD_RADIUS;
    let mut out = vec![0f32; n * n];
    for y in 0..n {
        let (y0, y1) = (y.saturating_sub(r), (y + r + 1).min(n));
        for x in 0..n {
            let (x0, x1) = (x.saturating_sub(r), (x + r + 1).min(n));
            let total = sums[y1 * (n + 1) + x1] - sums[y0 * (n + 1) + x1] - sums[y1 * (n + 1) + x0]
                + sums[y0 * (n + 1) + x0];
            let mean = total / ((y1 - y0) * (x1 - x0)) as f64;
            out[y * n + x] = grey[y * n + x] - mean as f32;
        }
    }
    out
}

/// The modules dark where `z` less `beta` times the mean of its four neighbours is negative.
fn equalized(z: &[f32], n: usize, beta: f32) -> Option<BitMatrix> {
    let mut matrix = BitMatrix::new(n as u32, n as u32).ok()?;
    for y in 0..n {
        for x in 0..n {
            if z[y * n + x] - beta * neighbour_mean(z, n, x, y) < 0.0 {
                matrix.set(x as u32, y as u32);
            }
        }
    }
    Some(matrix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::engines::{rxing_grey_read, rxing_read};
    use crate::decode::Work;
    use image::Luma;
    use rxing::qrcode::cpp_port::detector::{FindFinderPatterns, GenerateFinderPatternSets};
    use rxing::{Binarizer, Luma8LuminanceSource};

    fn binarized(img: &GrayImage) -> BitMatrix {
        let source = Luma8LuminanceSource::new(img.as_raw().clone(), img.width(), img.height())
            .expect("source");
        rxing::common::HybridBinarizer::new(source)
            .get_black_matrix()
            .expect("bits")
            .clone()
    }

    #[test]
    fn reads_a_gate_frame_code_that_binary_sampling_misses() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/qr-grey/gate-2030-53-region.png"
        );
        let region = image::open(path).expect("region").to_luma8();
        let text = format!("YM1:{}", "6BFOXN*TS0BI$ZD4N9:9S6RCVN5+O30K3".repeat(7));
        // As the live cascade reads it: the region sharpened.
        let sharp = crate::decode::filters::sharpen(
            &region,
            super::super::SHARPEN_RADIUS,
            super::super::SHARPEN_HALVES,
        );
        assert!(rxing_read(&sharp, false, false, "region_sharp", &Work::default()).is_empty());
        let work = Work::default();
        let found = rxing_grey_read(&sharp, false, "region_sharp", "region_sharp_grey", &work);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].text, text);
        assert_eq!(found[0].stage, "region_sharp_grey");
        // The sampling was counted beyond the rxing pass itself.
        assert!(work.units() > u64::from(sharp.width()) * u64::from(sharp.height()));
    }

    #[test]
    fn the_threshold_follows_glare_across_the_grid() {
        // A checkerboard of modules under a left-to-right ramp of light: the left side's light
        // modules are darker than the right side's dark ones, so no one threshold splits them.
        let n = 21;
        let grey: Vec<f32> = (0..n * n)
            .map(|i| {
                let (x, y) = (i % n, i / n);
                let light = 60.0 + 3.0 * x as f32;
                if (x + y) % 2 == 0 {
                    light - 30.0
                } else {
                    light
                }
            })
            .collect();
        let z = centred(&grey, n);
        for beta in EQUALIZE {
            let m = equalized(&z, n, beta).expect("matrix");
            for y in 0..n {
                for x in 0..n {
                    assert_eq!(
                        m.get(x as u32, y as u32),
                        (x + y) % 2 == 0,
                        "module {x},{y}"
                    );
                }
            }
        }
    }

    #[test]
    fn finder_patterns_without_a_symbol_cost_at_most_the_module_bound() {
        // Finder patterns tiled as symbols' corners would be, noise between them: triples are
        // found, none decodes, and the sampling stops at its bound.
        let finder = crate::render::render("A", 4).expect("render");
        let corner = image::imageops::crop_imm(&finder, 0, 0, 48, 48).to_image();
        let mut img = GrayImage::from_fn(640, 640, |x, y| {
            Luma([if (x * 7 + y * 13 + x * y) % 5 < 2 {
                40
            } else {
                220
            }])
        });
        for y in (0..640 - 48).step_by(150) {
            for x in (0..640 - 48).step_by(150) {
                image::imageops::replace(&mut img, &corner, i64::from(x), i64::from(y));
            }
        }
        let bits = binarized(&img);
        let mut patterns = FindFinderPatterns(&bits, false, 0);
        let sets = GenerateFinderPatternSets(&mut patterns);
        assert!(
            sets.len() >= MAX_SETS,
            "{} finder-pattern triples",
            sets.len()
        );
        let mut effort = Effort::default();
        assert!(read(&img, &bits, &sets, &mut effort).is_none());
        assert!(effort.sets >= 1);
        // The bound, plus the one grid (or alignment search) under way when it was reached.
        let one_grid = (MAX_DIM * MAX_DIM) as u64;
        assert!(
            effort.modules <= MAX_MODULES + one_grid,
            "{} modules sampled",
            effort.modules
        );
    }
}
