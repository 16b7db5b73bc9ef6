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

use crate::gridmatrix::detect::{neighbour_mean, neighbour_sum, sample, Homography, PointPair};

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
    warp_rounds: usize,
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
        read_set(gray, bits, set, warp_rounds, effort)
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
    warp_rounds: usize,
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
            .then(|| read_grid(gray, bits, fp, d, ms, warp_rounds, effort))
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
/// 0.5, not 1.0: a code tilted 20° under blur σ 1.3 (seed 2026, frame 164 of the gate set)
/// scores 0.77 on the grid through its finder centres, which perspective bends away from its
/// timing patterns; the alignment patterns then bring the grid onto it. Measured: +1 frame of
/// seed 2026 (0.03 % more work), the same reads and work on seeds 2030 and 2031.
const TIMING_MIN_CONTRAST: f32 = 0.5;
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
    warp_rounds: usize,
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
    let mut warp = Warp::new(n);
    for round in 0..=warp_rounds {
        let grey = warp.sample(gray, &h, effort)?;
        let z = centred(&grey, n);
        for beta in EQUALIZE {
            let matrix = equalized(&z, n, beta)?;
            if let Ok(r) = Decode(&matrix) {
                return Some(r.text());
            }
        }
        if round == warp_rounds
            || effort.modules + Warp::round_cost(n) > MAX_MODULES
            || !warp.refine(gray, &h, &grey, &z, effort)
        {
            break;
        }
    }
    None
}

/// Samples along the line between two module centres when an edge between them is looked for.
const EDGE_SAMPLES: usize = 8;
/// Least grey-level difference (of 255) between two neighbouring modules for the edge between
/// them to be measured.
const EDGE_MIN_CONTRAST: f32 = 24.0;
/// Farthest an edge is taken from where the grid puts it, in modules: one farther may be the
/// next edge over (the grid more than half a module off there), and following it would lock
/// the grid a module out; the smoothed field brings such places nearer for the next round.
const EDGE_MAX_OFFSET: f32 = 0.4;
/// Jacobi sweeps smoothing the measured offsets into a field (each reaches one module farther:
/// a fold or a wrinkle moves the modules a few around it together).
const WARP_SWEEPS: usize = 12;
/// Largest offset of a module from the grid, in modules.
const WARP_MAX: f32 = 1.5;

/// How far each module of the symbol sits from where the grid `h` puts it, in modules: the
/// grid bent to follow a code printed on a curved or wrinkled surface (a sleeve, a bag, a
/// crumpled sheet), which no homography fits. Measured, not modelled: where two neighbouring
/// modules differ, the edge between them is found on the grey image, and its distance from the
/// midpoint of their centres is an offset of the grid there; the offsets are then smoothed
/// into a field over every module.
struct Warp {
    n: usize,
    /// Offsets along x and y of each module centre, in modules, row by row.
    u: Vec<f32>,
    v: Vec<f32>,
}

impl Warp {
    fn new(n: usize) -> Warp {
        Warp {
            n,
            u: vec![0.0; n * n],
            v: vec![0.0; n * n],
        }
    }

    /// The most a [`Warp::refine`] and the sampling after it count for an `n`-module symbol
    /// (every pair of neighbours an edge; a smoothing sweep's update of a module counted as
    /// one grey sample).
    fn round_cost(n: usize) -> u64 {
        let per_module = 2 * (EDGE_SAMPLES + 1) + 2 * WARP_SWEEPS + TAPS.len();
        (n * n * per_module / TAPS.len()) as u64
    }

    /// The grid point of module coordinates (x, y) moved by the field (bilinear between the
    /// centres around it).
    fn at(&self, x: f64, y: f64) -> (f64, f64) {
        let last = (self.n - 1) as f64;
        let (gx, gy) = ((x - 0.5).clamp(0.0, last), (y - 0.5).clamp(0.0, last));
        let (x0, y0) = (gx.floor() as usize, gy.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(self.n - 1), (y0 + 1).min(self.n - 1));
        let (fx, fy) = ((gx - x0 as f64) as f32, (gy - y0 as f64) as f32);
        let lerp = |f: &[f32]| {
            let top = f[y0 * self.n + x0] * (1.0 - fx) + f[y0 * self.n + x1] * fx;
            let bottom = f[y1 * self.n + x0] * (1.0 - fx) + f[y1 * self.n + x1] * fx;
            f64::from(top * (1.0 - fy) + bottom * fy)
        };
        (x + lerp(&self.u), y + lerp(&self.v))
    }

    /// Each module's grey level, averaged over [`TAPS`]; none if the grid leaves the image.
    fn sample(&self, gray: &GrayImage, h: &Homography, effort: &mut Effort) -> Option<Vec<f32>> {
        let n = self.n;
        let mut grey = vec![0f32; n * n];
        for y in 0..n {
            for x in 0..n {
                let (cx, cy) = (x as f64 + 0.5, y as f64 + 0.5);
                let mut sum = 0.0;
                for (dx, dy) in TAPS {
                    let (wx, wy) = self.at(cx + dx, cy + dy);
                    sum += grey_at(gray, h, wx, wy, 0.5)?;
                }
                grey[y * n + x] = sum / TAPS.len() as f32;
            }
        }
        effort.modules += (n * n) as u64;
        Some(grey)
    }

    /// Where the grey level crosses halfway between modules `a` and `b` (module coordinates of
    /// their centres, `ga` and `gb` their levels) along the line joining them, as the share of
    /// the way from `a` (0.5: where the grid puts the edge); none without a crossing.
    fn crossing(
        &self,
        gray: &GrayImage,
        h: &Homography,
        a: (f64, f64),
        b: (f64, f64),
        (ga, gb): (f32, f32),
    ) -> Option<f32> {
        let level = (ga + gb) / 2.0;
        let mut profile = [0f32; EDGE_SAMPLES + 1];
        for (k, p) in profile.iter_mut().enumerate() {
            let t = k as f64 / EDGE_SAMPLES as f64;
            let (wx, wy) = self.at(a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
            *p = grey_at(gray, h, wx, wy, 0.5)? - level;
        }
        // The crossing nearest the middle (a module's texture can cross more than once).
        (0..EDGE_SAMPLES)
            .filter(|&k| (profile[k] < 0.0) != (profile[k + 1] < 0.0))
            .map(|k| {
                let f = profile[k] / (profile[k] - profile[k + 1]);
                (k as f32 + f) / EDGE_SAMPLES as f32
            })
            .min_by(|p, q| (p - 0.5).abs().total_cmp(&(q - 0.5).abs()))
    }

    /// Measures the edges between differing neighbours (from the centred levels `z` of the
    /// sampled levels `grey`) on the grid as it is, and moves the field by their smoothed
    /// offsets. False if no edge was measured.
    fn refine(
        &mut self,
        gray: &GrayImage,
        h: &Homography,
        grey: &[f32],
        z: &[f32],
        effort: &mut Effort,
    ) -> bool {
        let n = self.n;
        // Offsets measured at each module (sum, weight), along x and along y.
        let (mut ox, mut wx) = (vec![0f32; n * n], vec![0f32; n * n]);
        let (mut oy, mut wy) = (vec![0f32; n * n], vec![0f32; n * n]);
        let mut edges = 0u64;
        for y in 0..n {
            for x in 0..n {
                let i = y * n + x;
                let c = (x as f64 + 0.5, y as f64 + 0.5);
                for (j, d, (o, w)) in [
                    (x + 1 < n).then(|| (i + 1, (1.0, 0.0), (&mut ox, &mut wx))),
                    (y + 1 < n).then(|| (i + n, (0.0, 1.0), (&mut oy, &mut wy))),
                ]
                .into_iter()
                .flatten()
                {
                    if (z[i] < 0.0) == (z[j] < 0.0) || (z[i] - z[j]).abs() < EDGE_MIN_CONTRAST {
                        continue;
                    }
                    edges += 1;
                    let next = (c.0 + d.0, c.1 + d.1);
                    let Some(t) = self.crossing(gray, h, c, next, (grey[i], grey[j])) else {
                        continue;
                    };
                    if (t - 0.5).abs() > EDGE_MAX_OFFSET {
                        continue;
                    }
                    for k in [i, j] {
                        o[k] += t - 0.5;
                        w[k] += 1.0;
                    }
                }
            }
        }
        effort.modules += edges * (EDGE_SAMPLES as u64 + 1) / TAPS.len() as u64
            + (2 * WARP_SWEEPS * n * n / TAPS.len()) as u64;
        if edges == 0 {
            return false;
        }
        for (field, o, w) in [(&mut self.u, &ox, &wx), (&mut self.v, &oy, &wy)] {
            let step = smooth(o, w, n);
            for (f, s) in field.iter_mut().zip(step) {
                *f = (*f + s).clamp(-WARP_MAX, WARP_MAX);
            }
        }
        true
    }
}

/// The field that is near the measured offsets (`sums / weights`) where there are some and
/// near its four neighbours everywhere ([`WARP_SWEEPS`] Jacobi sweeps from zero).
fn smooth(sums: &[f32], weights: &[f32], n: usize) -> Vec<f32> {
    let mut f = vec![0f32; n * n];
    let mut next = f.clone();
    for _ in 0..WARP_SWEEPS {
        for y in 0..n {
            for x in 0..n {
                let i = y * n + x;
                let (around, k) = neighbour_sum(&f, n, x, y);
                next[i] = (sums[i] + around) / (weights[i] + k);
            }
        }
        std::mem::swap(&mut f, &mut next);
    }
    f
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
    use crate::decode::engines::{rxing_grey_read, rxing_read, FILE_WARP_ROUNDS};
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

    /// A code as printed on a wrinkled sleeve: the rendered symbol displaced by waves of
    /// `amplitude` modules, a period of two thirds of the image, along both axes.
    fn wrinkled(text: &str, amplitude: f32) -> GrayImage {
        let module = 6.0;
        let flat = crate::render::render(text, module as u32).expect("render");
        let period = flat.width() as f32 / 1.5;
        let wave = |t: f32| amplitude * module * (std::f32::consts::TAU * t / period).sin();
        GrayImage::from_fn(flat.width(), flat.height(), |x, y| {
            let (x, y) = (x as f32, y as f32);
            Luma([sample(&flat, x + wave(y), y + wave(x)).round() as u8])
        })
    }

    #[test]
    fn the_grid_bends_to_a_wrinkled_code() {
        // Modules up to 0.3 module off the plane, in waves across the symbol: the grid through
        // the finder and alignment patterns misreads it, the grid bent to its edges reads it.
        let text = "YM1:6BFOXN*TS0BI$ZD4N9:9S6RCVN5+O30K3";
        let img = wrinkled(text, 0.3);
        let bits = binarized(&img);
        let mut patterns = FindFinderPatterns(&bits, false, 0);
        let sets = GenerateFinderPatternSets(&mut patterns);
        assert_eq!(sets.len(), 1);
        assert_eq!(read(&img, &bits, &sets, 0, &mut Effort::default()), None);
        let mut effort = Effort::default();
        let bent = read(&img, &bits, &sets, FILE_WARP_ROUNDS, &mut effort);
        assert_eq!(bent.as_deref(), Some(text));
        assert!(effort.modules <= MAX_MODULES, "{} modules", effort.modules);
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
        assert!(read(&img, &bits, &sets, FILE_WARP_ROUNDS, &mut effort).is_none());
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
