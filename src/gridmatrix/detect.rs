//! Grid Matrix symbols in camera frames — any rotation, perspective, mirrored screens, blur
//! and glare — found from the symbol's own structure, since it has no finder pattern.
//!
//! Every junction of four macromodules is a checkerboard saddle one module across: the 2×2
//! frame modules around it are dark, light, dark, light (frames alternate macromodule by
//! macromodule), and the frames run on from it as four arms. So:
//! 1. **Saddles** — the ChESS response (Bennett & Lasenby 2014: sixteen samples on a ring,
//!    quarter-turn differences minus opposite-point differences minus the ring/centre offset)
//!    on the frame smoothed by a 3×3 box, in the caller's windows, on every second pixel of
//!    every second row; local maxima refined to the best pixel and a sub-pixel peak. About
//!    four saddles of the data (2×2 checkers of modules) come with every junction.
//! 2. **Lattice** — a seed whose nearest saddles include a cross of steps `u`, `v` with `-u`,
//!    `-v`, `u + v` and `-(u + v)` on saddles too (then the half-diagonals, if they are on
//!    saddles: a diagonal cross passes the same test); grown node by node, each neighbour
//!    predicted by extending the line through the two nodes before it (perspective bends the
//!    steps, not the lines) and accepted within about half a module. Data saddles seldom sit
//!    where a junction is predicted. The internal junctions of a version-V symbol are a
//!    2V × 2V lattice: its extent gives the version.
//! 3. **Fit** — a least-squares homography through every lattice node, the nodes it does
//!    not explain dropped, then each junction moved by its own measured residual (or its
//!    neighbours' mean), so curvature and lens distortion are followed locally; the symbol's
//!    outer corners and missed junctions come from the same fit.
//! 4. **Sampling** — each macromodule from its own four corners (bilinear between them), each
//!    module at its centre, a small unsharp mask in module space against blur, then each
//!    macromodule thresholded halfway between the dark and light frame levels around it
//!    (glare moves both).
//! 5. The codec ([`super::decode`]) tries the eight orientations; Reed–Solomon confirms.
//!    Where the lattice's extent is short of a whole symbol (a row of junctions lost to
//!    glare), the few placements and versions it allows are tried ([`MAX_HYPOTHESES`]).
//!
//! Cost: a box pass and a quarter of the window's pixels through the ring, at most
//! [`MAX_SEED_TRIES`] seeds with [`SEED_NEIGHBOURS`]² pairs each, of which at most
//! [`MAX_SEEDS`] grow lattices of at most (2·27+1)² nodes, each with [`MAX_HYPOTHESES`]
//! samplings of at most 162² modules. [`Effort`] counts it for
//! the caller's work allowance.

use std::collections::HashMap;

use image::GrayImage;

use super::{decode, tables, Decoded, Modules};

/// Radius of the ChESS ring, pixels of the 3×3-smoothed frame: inside the 2×2 frame modules
/// around a junction (as the smoothing sees them) from modules of about 2.5 px, and still
/// inside the four macromodules' frames at 6 px and more.
const RING_RADIUS: f32 = 3.0;
/// Least ChESS response of a saddle (an ideal checkerboard corner of contrast C gives 6·C;
/// a macromodule checkerboard at the coarse scale has C of 60–120 on a phone screen).
const MIN_RESPONSE: i32 = 48;
/// A saddle weaker than this share of the strongest is not kept (texture around a symbol).
const MIN_RESPONSE_SHARE: f32 = 0.08;
/// Saddles kept per coarse image, strongest first (a version-13 symbol has 26² = 676).
const MAX_SADDLES: usize = 5000;
/// Lattices grown per window, from the strongest saddles that have a basis.
pub const MAX_SEEDS: usize = 12;
/// Saddles tried as seeds per window, strongest first: the strongest are often the symbol's
/// outer junctions against the quiet zone, which have no cross of neighbours (measured on the
/// Grid Matrix gate set: all twelve seeds of a large near-upright symbol there).
pub const MAX_SEED_TRIES: usize = 48;
/// Lattice indices stay within ±this of the seed (a version-13 symbol spans 26).
const MAX_INDEX: i32 = 27;
/// Fewest lattice nodes taken for a symbol (a version-2 symbol has 4 × 4).
const MIN_NODES: usize = 12;
/// Shortest and longest lattice step (junction to junction, 6 modules), full-frame pixels.
const MIN_STEP: f32 = 12.0;
const MAX_STEP: f32 = 80.0;
/// How far from its predicted place a junction may be found, in steps: a seed's
/// neighbours (predicted from the seed alone) and a grown node's (from the line through the
/// two nodes before it). A step is 6 modules: 0.1 is about half a module, less than the
/// distance to the nearest data saddle.
const SEED_TOLERANCE: f32 = 0.1;
const GROW_TOLERANCE: f32 = 0.12;
/// Saddles around a seed considered as its lattice neighbours.
pub const SEED_NEIGHBOURS: usize = 32;
/// Share of a module's difference from its four neighbours added back before thresholding.
const MODULE_SHARPEN: f32 = 0.5;
/// Version hypotheses sampled and decoded per lattice.
pub const MAX_HYPOTHESES: usize = 4;

/// What a detection cost: the caller turns it into its work units.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Effort {
    /// Pixels smoothed for the saddle search.
    pub smoothed_pixels: u64,
    /// Pixels the saddle response was computed at.
    pub response_pixels: u64,
    /// Saddles tried as seeds (a neighbour search and the cross test each).
    pub seeds: u64,
    /// Lattice nodes grown, over all seeds.
    pub nodes: u64,
    /// Modules sampled, over all hypotheses.
    pub modules: u64,
}

/// A saddle: sub-pixel position in full-frame pixels and its response.
#[derive(Debug, Clone, Copy)]
struct Saddle {
    x: f32,
    y: f32,
    response: i32,
}

/// Every Grid Matrix symbol read from a camera frame (at most one), looking in each of
/// `windows` in turn (where the caller's region finder saw texture; the whole frame if none).
pub fn read_frame(full: &GrayImage, windows: &[Window], effort: &mut Effort) -> Vec<Decoded> {
    let whole = [(0, 0, full.width(), full.height())];
    let windows = if windows.is_empty() {
        &whole[..]
    } else {
        windows
    };
    for &window in windows {
        let saddles = saddles(full, window, effort);
        if saddles.len() < MIN_NODES {
            continue;
        }
        let index = Index::new(&saddles, 16.0);
        let mut used = vec![false; saddles.len()];
        let (mut grown, mut tries) = (0, 0);
        for seed in 0..saddles.len() {
            if grown >= MAX_SEEDS || tries >= MAX_SEED_TRIES {
                break;
            }
            if used[seed] {
                continue;
            }
            tries += 1;
            effort.seeds += 1;
            let Some((u, v)) = seed_basis(&index, seed) else {
                continue;
            };
            grown += 1;
            let lattice = grow(&index, seed, u, v, &mut used, effort);
            if lattice.nodes.len() < MIN_NODES {
                continue;
            }
            if let Some(d) = read_lattice(full, &lattice, effort) {
                return vec![d];
            }
        }
    }
    Vec::new()
}

/// A ChESS ring of radius `r`: sixteen points in angular order, so that point n + 8 is
/// opposite point n and point n + 4 is a quarter turn from it.
fn ring(r: f32) -> [(i32, i32); 16] {
    let mut out = [(0, 0); 16];
    for (t, p) in out.iter_mut().enumerate() {
        let a = t as f32 * std::f32::consts::PI / 8.0;
        *p = ((r * a.cos()).round() as i32, (r * a.sin()).round() as i32);
    }
    out
}

/// The (x, y, w, h) rectangle of `img` smoothed by a 3×3 box, row-major; the rectangle keeps
/// one pixel inside the frame on every side (the caller's margin). Written as whole-row sums
/// the compiler vectorises (about 0.5 ns a pixel; `image::imageops::blur` is a Gaussian at
/// about ten times that).
fn box3(img: &GrayImage, (x0, y0, w, h): (usize, usize, usize, usize)) -> Vec<u8> {
    let fw = img.width() as usize;
    let px = img.as_raw();
    let mut out = vec![0u8; w * h];
    let mut col = vec![0u16; w + 2];
    for (y, dst) in out.chunks_exact_mut(w).enumerate() {
        let row =
            |dy: usize| &px[(y0 + y + dy - 1) * fw + x0 - 1..(y0 + y + dy - 1) * fw + x0 + w + 1];
        let (a, b, c) = (row(0), row(1), row(2));
        for (((s, &a), &b), &c) in col.iter_mut().zip(a).zip(b).zip(c) {
            *s = u16::from(a) + u16::from(b) + u16::from(c);
        }
        for (((d, &l), &m), &r) in dst.iter_mut().zip(&col).zip(&col[1..]).zip(&col[2..]) {
            // ÷ 9 as × 7282 ≫ 16 (exact for sums up to 2295).
            *d = ((u32::from(l + m + r) * 7282) >> 16) as u8;
        }
    }
    out
}

/// A rectangle of the frame to look in: x, y, width, height in pixels.
pub type Window = (u32, u32, u32, u32);

/// The ChESS response at (x, y) of `img` (row-major, `w` wide) for the ring `ring`, which the
/// caller keeps inside the image: sum of the quarter-turn differences minus the opposite-point
/// differences minus 16 × |ring mean − centre mean|.
#[inline]
fn chess(px: &[u8], w: usize, x: usize, y: usize, ring: &[isize; 16]) -> i32 {
    let c = y * w + x;
    let at = |o: isize| i32::from(px[c.wrapping_add_signed(o)]);
    let s: [i32; 16] = std::array::from_fn(|n| at(ring[n]));
    let mut sum = 0;
    for n in 0..4 {
        sum += ((s[n] + s[n + 8]) - (s[n + 4] + s[n + 12])).abs();
    }
    let mut diff = 0;
    for n in 0..8 {
        diff += (s[n] - s[n + 8]).abs();
    }
    let ring16: i32 = s.iter().sum();
    let centre = at(0) + at(-1) + at(1) + at(-(w as isize)) + at(w as isize);
    sum - diff - (ring16 * 5 - centre * 16).abs() / 5
}

/// The ChESS response of every second pixel of row `y` from column `x0` on, into `out`
/// (one value per second pixel); the strongest. The same sums as [`chess`], a whole row at a
/// time: sixteen shifted slices of the image that the compiler turns into vector code (about
/// ten times faster than pixel by pixel).
fn chess_row(px: &[u8], w: usize, x0: usize, y: usize, ring: &[isize; 16], out: &mut [i32]) -> i32 {
    let n = 2 * out.len();
    let c = y * w + x0;
    let slice = |o: isize| &px[c.wrapping_add_signed(o)..c.wrapping_add_signed(o) + n];
    let s: [&[u8]; 16] = std::array::from_fn(|k| slice(ring[k]));
    let centre = [
        slice(0),
        slice(-1),
        slice(1),
        slice(-(w as isize)),
        slice(w as isize),
    ];
    let mut row = vec![0i32; n];
    for (x, r) in row.iter_mut().enumerate() {
        let v: [i32; 16] = std::array::from_fn(|k| i32::from(s[k][x]));
        let mut sum = 0;
        for k in 0..4 {
            sum += ((v[k] + v[k + 8]) - (v[k + 4] + v[k + 12])).abs();
        }
        let mut diff = 0;
        for k in 0..8 {
            diff += (v[k] - v[k + 8]).abs();
        }
        let ring16: i32 = v.iter().sum();
        let mid: i32 = centre.iter().map(|c| i32::from(c[x])).sum();
        // |ring16·5 − centre·16| / 5 as × 13108 ≫ 16.
        *r = sum - diff - (((ring16 * 5 - mid * 16).abs() * 13108) >> 16);
    }
    let mut strongest = 0;
    for (o, &r) in out.iter_mut().zip(row.iter().step_by(2)) {
        *o = r;
        strongest = strongest.max(r);
    }
    strongest
}

/// The saddles in `window` of `img`, strongest first: the ChESS response of a ring of
/// [`RING_RADIUS`] px evaluated on every second pixel of every second row, each local maximum
/// then taken to the best pixel around it and to a sub-pixel peak.
fn saddles(img: &GrayImage, window: Window, effort: &mut Effort) -> Vec<Saddle> {
    let reach = RING_RADIUS as usize + 2;
    // The window (with the ring's reach around it, inside the frame) smoothed by a 3×3 box:
    // sensor noise averaged, the 2×2 frame modules around a junction kept.
    let (fw, fh) = (img.width() as usize, img.height() as usize);
    let wx0 = (window.0 as usize).saturating_sub(reach).max(1);
    let wy0 = (window.1 as usize).saturating_sub(reach).max(1);
    let wx1 = ((window.0 + window.2) as usize + reach).min(fw - 1);
    let wy1 = ((window.1 + window.3) as usize + reach).min(fh - 1);
    if wx1 < wx0 + 2 * reach + 16 || wy1 < wy0 + 2 * reach + 16 {
        return Vec::new();
    }
    let (w, h) = (wx1 - wx0, wy1 - wy0);
    let smooth = box3(img, (wx0, wy0, w, h));
    effort.smoothed_pixels += (w * h) as u64;
    let px = &smooth[..];
    let (x0, y0, x1, y1) = (reach, reach, w - reach, h - reach);
    let ring16 = ring(RING_RADIUS);
    let ring: [isize; 16] = ring16.map(|(dx, dy)| dy as isize * w as isize + dx as isize);
    // The response on the stride-2 grid of the window.
    let (gw, gh) = ((x1 - x0) / 2, (y1 - y0) / 2);
    effort.response_pixels += (gw * gh) as u64;
    let mut grid = vec![0i32; gw * gh];
    let mut strongest = 0;
    for gy in 0..gh {
        let out = &mut grid[gy * gw..(gy + 1) * gw];
        strongest = strongest.max(chess_row(px, w, x0, y0 + 2 * gy, &ring, out));
    }
    let floor = MIN_RESPONSE.max((strongest as f32 * MIN_RESPONSE_SHARE) as i32);
    let mut found = Vec::new();
    for gy in 1..gh.saturating_sub(1) {
        for gx in 1..gw.saturating_sub(1) {
            let r = grid[gy * gw + gx];
            if r < floor {
                continue;
            }
            let mut peak = true;
            'n: for dy in 0..3 {
                for dx in 0..3 {
                    let o = grid[(gy + dy - 1) * gw + gx + dx - 1];
                    if o > r || (o == r && (dy, dx) < (1, 1)) {
                        peak = false;
                        break 'n;
                    }
                }
            }
            if !peak {
                continue;
            }
            // The best pixel of the 3×3 around the grid point, then a parabola through its
            // neighbours on each axis.
            let (cx, cy) = (x0 + 2 * gx, y0 + 2 * gy);
            let mut best = (r, cx, cy);
            for y in cy - 1..=cy + 1 {
                for x in cx - 1..=cx + 1 {
                    if (x, y) != (cx, cy) {
                        let v = chess(px, w, x, y, &ring);
                        if v > best.0 {
                            best = (v, x, y);
                        }
                    }
                }
            }
            let (r, bx, by) = best;
            let sub = |a: i32, b: i32, c: i32| {
                let d = (a - 2 * b + c) as f32;
                if d < 0.0 {
                    (0.5 * (a - c) as f32 / d).clamp(-0.5, 0.5)
                } else {
                    0.0
                }
            };
            let sx = sub(
                chess(px, w, bx - 1, by, &ring),
                r,
                chess(px, w, bx + 1, by, &ring),
            );
            let sy = sub(
                chess(px, w, bx, by - 1, &ring),
                r,
                chess(px, w, bx, by + 1, &ring),
            );
            found.push(Saddle {
                x: (wx0 + bx) as f32 + sx,
                y: (wy0 + by) as f32 + sy,
                response: r,
            });
        }
    }
    found.sort_by_key(|s| std::cmp::Reverse(s.response));
    found.truncate(MAX_SADDLES);
    found
}

/// Saddles bucketed by position, for neighbour lookups.
struct Index<'a> {
    saddles: &'a [Saddle],
    cell: f32,
    buckets: HashMap<(i32, i32), Vec<usize>>,
}

impl<'a> Index<'a> {
    fn new(saddles: &'a [Saddle], cell: f32) -> Index<'a> {
        let mut buckets: HashMap<(i32, i32), Vec<usize>> = HashMap::new();
        for (i, s) in saddles.iter().enumerate() {
            buckets
                .entry(((s.x / cell) as i32, (s.y / cell) as i32))
                .or_default()
                .push(i);
        }
        Index {
            saddles,
            cell,
            buckets,
        }
    }

    /// The saddles within `r` of (x, y), as (index, squared distance).
    fn near(&self, x: f32, y: f32, r: f32) -> Vec<(usize, f32)> {
        let (bx0, bx1) = (((x - r) / self.cell) as i32, ((x + r) / self.cell) as i32);
        let (by0, by1) = (((y - r) / self.cell) as i32, ((y + r) / self.cell) as i32);
        let mut out = Vec::new();
        for by in by0..=by1 {
            for bx in bx0..=bx1 {
                for &i in self.buckets.get(&(bx, by)).into_iter().flatten() {
                    let s = self.saddles[i];
                    let d2 = (s.x - x).powi(2) + (s.y - y).powi(2);
                    if d2 <= r * r {
                        out.push((i, d2));
                    }
                }
            }
        }
        out
    }

    fn nearest(&self, x: f32, y: f32, r: f32, skip: impl Fn(usize) -> bool) -> Option<usize> {
        let (bx0, bx1) = (((x - r) / self.cell) as i32, ((x + r) / self.cell) as i32);
        let (by0, by1) = (((y - r) / self.cell) as i32, ((y + r) / self.cell) as i32);
        let mut best: Option<(usize, f32)> = None;
        for by in by0..=by1 {
            for bx in bx0..=bx1 {
                for &i in self.buckets.get(&(bx, by)).into_iter().flatten() {
                    let s = self.saddles[i];
                    let d2 = (s.x - x).powi(2) + (s.y - y).powi(2);
                    if d2 <= r * r && best.is_none_or(|b| d2 < b.1) && !skip(i) {
                        best = Some((i, d2));
                    }
                }
            }
        }
        best.map(|b| b.0)
    }
}

/// A grown lattice: node (i, j) at a full-frame position.
#[derive(Debug, Clone)]
struct Lattice {
    nodes: HashMap<(i32, i32), (f32, f32)>,
}

type V2 = (f32, f32);

fn sub(a: V2, b: V2) -> V2 {
    (a.0 - b.0, a.1 - b.1)
}
fn add(a: V2, b: V2) -> V2 {
    (a.0 + b.0, a.1 + b.1)
}
fn len(a: V2) -> f32 {
    (a.0 * a.0 + a.1 * a.1).sqrt()
}

/// Two crossing steps from saddle `seed` to lattice neighbours: the shortest step `u` whose
/// opposite `-u`, a crossing step `v` of about the same length, `-v` and `u + v` all land on
/// saddles too. (Saddles of the data — a 2×2 checker of modules — are about four times as
/// many as junctions, but they seldom form such a cross.)
fn seed_basis(index: &Index, seed: usize) -> Option<(V2, V2)> {
    let s = index.saddles[seed];
    let p = (s.x, s.y);
    let mut near = index.near(s.x, s.y, MAX_STEP);
    near.retain(|&(i, d2)| i != seed && d2 >= MIN_STEP * MIN_STEP);
    near.sort_by(|a, b| a.1.total_cmp(&b.1));
    // A junction's lattice neighbours are among its nearest saddles: about four saddles of
    // the data lie in each macromodule.
    near.truncate(SEED_NEIGHBOURS);
    let has = |q: V2, tol: f32| index.nearest(q.0, q.1, tol, |i| i == seed).is_some();
    for &(a, _) in &near {
        let u = sub((index.saddles[a].x, index.saddles[a].y), p);
        let lu = len(u);
        let tol = SEED_TOLERANCE * lu;
        if !has(sub(p, u), tol) {
            continue;
        }
        for &(b, _) in &near {
            if b == a {
                continue;
            }
            let v = sub((index.saddles[b].x, index.saddles[b].y), p);
            let lv = len(v);
            let cos = (u.0 * v.0 + u.1 * v.1) / (lu * lv);
            if !(0.75..=1.33).contains(&(lv / lu)) || cos.abs() > 0.35 {
                continue;
            }
            if has(sub(p, v), tol) && has(add(p, add(u, v)), tol) && has(sub(p, add(u, v)), tol) {
                // Diagonal neighbours pass the same test (the junctions with i + j even form
                // a lattice too): when the half-diagonals land on saddles, they are the steps.
                let (a, b) = (
                    ((u.0 + v.0) / 2.0, (u.1 + v.1) / 2.0),
                    ((u.0 - v.0) / 2.0, (u.1 - v.1) / 2.0),
                );
                let t = SEED_TOLERANCE * len(a);
                if (has(add(p, a), t) || has(sub(p, a), t))
                    && (has(add(p, b), t) || has(sub(p, b), t))
                {
                    return Some((a, b));
                }
                return Some((u, v));
            }
        }
    }
    None
}

/// Grows the lattice through `seed` with steps `u` (index i) and `v` (index j).
fn grow(
    index: &Index,
    seed: usize,
    u: V2,
    v: V2,
    used: &mut [bool],
    effort: &mut Effort,
) -> Lattice {
    let s = index.saddles[seed];
    let mut nodes: HashMap<(i32, i32), (f32, f32)> = HashMap::new();
    // Per node: its saddle and the steps it was reached with.
    let mut steps: HashMap<(i32, i32), (V2, V2)> = HashMap::new();
    let mut taken: HashMap<usize, (i32, i32)> = HashMap::new();
    nodes.insert((0, 0), (s.x, s.y));
    steps.insert((0, 0), (u, v));
    taken.insert(seed, (0, 0));
    let mut queue = std::collections::VecDeque::from([(0i32, 0i32)]);
    while let Some((i, j)) = queue.pop_front() {
        let p = nodes[&(i, j)];
        let (su, sv) = steps[&(i, j)];
        for (di, dj) in [(1, 0), (-1, 0), (0, 1), (0, -1)] {
            let t = (i + di, j + dj);
            if nodes.contains_key(&t) || t.0.abs() > MAX_INDEX || t.1.abs() > MAX_INDEX {
                continue;
            }
            let step = (
                di as f32 * su.0 + dj as f32 * sv.0,
                di as f32 * su.1 + dj as f32 * sv.1,
            );
            // Along a line: continue the step between the node behind and this one.
            let step = match nodes.get(&(i - di, j - dj)) {
                Some(&q) => sub(p, q),
                None => step,
            };
            let pred = add(p, step);
            let Some(k) = index.nearest(pred.0, pred.1, GROW_TOLERANCE * len(step), |k| {
                taken.contains_key(&k)
            }) else {
                continue;
            };
            let q = (index.saddles[k].x, index.saddles[k].y);
            let actual = sub(q, p);
            let (nu, nv) = if di != 0 {
                ((di as f32 * actual.0, di as f32 * actual.1), sv)
            } else {
                (su, (dj as f32 * actual.0, dj as f32 * actual.1))
            };
            nodes.insert(t, q);
            steps.insert(t, (nu, nv));
            taken.insert(k, t);
            effort.nodes += 1;
            queue.push_back(t);
        }
    }
    for k in taken.keys() {
        used[*k] = true;
    }
    Lattice { nodes }
}

/// A point and where it maps to.
pub(crate) type PointPair = ((f64, f64), (f64, f64));

/// A projective map of the plane: x' = (h0 x + h1 y + h2) / (h6 x + h7 y + 1), likewise y'.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Homography([f64; 8]);

impl Homography {
    pub(crate) fn apply(&self, x: f64, y: f64) -> (f64, f64) {
        let h = &self.0;
        let w = h[6] * x + h[7] * y + 1.0;
        (
            (h[0] * x + h[1] * y + h[2]) / w,
            (h[3] * x + h[4] * y + h[5]) / w,
        )
    }

    /// The least-squares fit through point pairs (from → to), the points normalised first
    /// (Hartley). Written here rather than taken from a linear-algebra crate: one 8×8 solve
    /// per symbol is all it needs, and nalgebra would add its compile time to both CI builds.
    pub(crate) fn fit(pairs: &[PointPair]) -> Option<Homography> {
        if pairs.len() < 4 {
            return None;
        }
        let norm = |pts: &mut dyn Iterator<Item = (f64, f64)>| {
            let v: Vec<(f64, f64)> = pts.collect();
            let n = v.len() as f64;
            let (mx, my) = v
                .iter()
                .fold((0.0, 0.0), |a, p| (a.0 + p.0 / n, a.1 + p.1 / n));
            let d = v
                .iter()
                .map(|p| ((p.0 - mx).powi(2) + (p.1 - my).powi(2)).sqrt())
                .sum::<f64>()
                / n;
            let s = if d > 1e-9 {
                std::f64::consts::SQRT_2 / d
            } else {
                1.0
            };
            (mx, my, s)
        };
        let (fx, fy, fs) = norm(&mut pairs.iter().map(|p| p.0));
        let (tx, ty, ts) = norm(&mut pairs.iter().map(|p| p.1));
        let mut ata = [[0f64; 9]; 8];
        for &((x, y), (u, v)) in pairs {
            let (x, y) = ((x - fx) * fs, (y - fy) * fs);
            let (u, v) = ((u - tx) * ts, (v - ty) * ts);
            for row in [
                [x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y, u],
                [0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y, v],
            ] {
                for a in 0..8 {
                    for b in 0..9 {
                        ata[a][b] += row[a] * row[b];
                    }
                }
            }
        }
        let h = solve8(ata)?;
        // Undo the normalisations: H = T⁻¹ · Hn · F.
        let hn = [[h[0], h[1], h[2]], [h[3], h[4], h[5]], [h[6], h[7], 1.0]];
        let f = [[fs, 0.0, -fs * fx], [0.0, fs, -fs * fy], [0.0, 0.0, 1.0]];
        let tinv = [[1.0 / ts, 0.0, tx], [0.0, 1.0 / ts, ty], [0.0, 0.0, 1.0]];
        let mul = |a: [[f64; 3]; 3], b: [[f64; 3]; 3]| {
            let mut c = [[0f64; 3]; 3];
            for i in 0..3 {
                for j in 0..3 {
                    c[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
                }
            }
            c
        };
        let m = mul(tinv, mul(hn, f));
        if m[2][2].abs() < 1e-12 {
            return None;
        }
        let k = m[2][2];
        Some(Homography([
            m[0][0] / k,
            m[0][1] / k,
            m[0][2] / k,
            m[1][0] / k,
            m[1][1] / k,
            m[1][2] / k,
            m[2][0] / k,
            m[2][1] / k,
        ]))
    }
}

/// Solves the 8×8 system whose augmented rows are `a` (Gaussian elimination, partial pivot);
/// None if singular. The gate-frame generator (`demo::synth`) maps its corners with it too.
pub(crate) fn solve8(mut a: [[f64; 9]; 8]) -> Option<[f64; 8]> {
    for col in 0..8 {
        let pivot = (col..8).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        let pr = a[col];
        for (row, r) in a.iter_mut().enumerate() {
            if row != col {
                let f = r[col] / pr[col];
                for (x, p) in r.iter_mut().zip(pr.iter()).skip(col) {
                    *x -= f * p;
                }
            }
        }
    }
    let mut h = [0f64; 8];
    for (i, hi) in h.iter_mut().enumerate() {
        *hi = a[i][8] / a[i][i];
    }
    Some(h)
}

/// The mean of the (up to) four edge neighbours of cell (x, y) of a `side`-wide grid of
/// module values (the module-space unsharp masks of both camera-frame samplers, Grid Matrix
/// and QR's grey-level one, take it back out).
pub(crate) fn neighbour_mean(values: &[f32], side: usize, x: usize, y: usize) -> f32 {
    let (around, k) = neighbour_sum(values, side, x, y);
    around / k
}

/// The sum of the up-to-four neighbours of (x, y) in a `side`-wide grid, and how many there are.
pub(crate) fn neighbour_sum(values: &[f32], side: usize, x: usize, y: usize) -> (f32, f32) {
    let (mut around, mut k) = (0f32, 0f32);
    for (nx, ny) in [
        (x.wrapping_sub(1), y),
        (x + 1, y),
        (x, y.wrapping_sub(1)),
        (x, y + 1),
    ] {
        if nx < side && ny < side {
            around += values[ny * side + nx];
            k += 1.0;
        }
    }
    (around, k)
}

/// Bilinear sample of `img` at (x, y) (pixel centres at integers), 0–255.
pub(crate) fn sample(img: &GrayImage, x: f32, y: f32) -> f32 {
    let (w, h) = (img.width() as i32, img.height() as i32);
    let (x0, y0) = (x.floor() as i32, y.floor() as i32);
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let px = img.as_raw();
    let at = |x: i32, y: i32| f32::from(px[(y.clamp(0, h - 1) * w + x.clamp(0, w - 1)) as usize]);
    let top = at(x0, y0) * (1.0 - fx) + at(x0 + 1, y0) * fx;
    let bottom = at(x0, y0 + 1) * (1.0 - fx) + at(x0 + 1, y0 + 1) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// Samples and decodes the symbol a lattice belongs to, trying the versions and placements its
/// extent allows.
fn read_lattice(full: &GrayImage, lattice: &Lattice, effort: &mut Effort) -> Option<Decoded> {
    let (mut i0, mut i1, mut j0, mut j1) = (i32::MAX, i32::MIN, i32::MAX, i32::MIN);
    for &(i, j) in lattice.nodes.keys() {
        (i0, i1, j0, j1) = (i0.min(i), i1.max(i), j0.min(j), j1.max(j));
    }
    let pairs: Vec<PointPair> = lattice
        .nodes
        .iter()
        .map(|(&(i, j), &(x, y))| ((f64::from(i), f64::from(j)), (f64::from(x), f64::from(y))))
        .collect();
    let mut h = Homography::fit(&pairs)?;
    // Refit without the nodes the first fit does not explain (a saddle of the data taken
    // for a junction).
    let step = {
        let a = h.apply(f64::from(i0), f64::from(j0));
        let b = h.apply(f64::from(i1), f64::from(j1));
        ((a.0 - b.0).hypot(a.1 - b.1)
            / f64::from((i1 - i0).max(j1 - j0).max(1))
            / std::f64::consts::SQRT_2)
            .max(1.0)
    };
    let inliers: Vec<_> = pairs
        .iter()
        .copied()
        .filter(|&(f, t)| {
            let p = h.apply(f.0, f.1);
            (p.0 - t.0).hypot(p.1 - t.1) < 0.2 * step
        })
        .collect();
    if inliers.len() >= MIN_NODES && inliers.len() < pairs.len() {
        h = Homography::fit(&inliers)?;
    }
    let measured: HashMap<(i32, i32), (f64, f64)> = inliers
        .iter()
        .map(|&(f, t)| {
            let p = h.apply(f.0, f.1);
            ((f.0 as i32, f.1 as i32), (t.0 - p.0, t.1 - p.1))
        })
        .collect();
    let (ni, nj) = (i1 - i0 + 1, j1 - j0 + 1);
    // Hypotheses: 2V junction lines per axis, the observed ones placed among them; the
    // observed extent exactly first.
    let mut hyps: Vec<(i32, i32, i32)> = Vec::new();
    for extra in 0..=2 {
        let n = ni.max(nj) + extra;
        if n % 2 == 1 || !(2..=26).contains(&n) {
            continue;
        }
        for a in 0..=(n - ni) {
            for b in 0..=(n - nj) {
                hyps.push((n, a, b));
            }
        }
    }
    hyps.sort_by_key(|&(n, a, b)| (n, (2 * a - (n - ni)).abs() + (2 * b - (n - nj)).abs()));
    for &(n, a, b) in hyps.iter().take(MAX_HYPOTHESES) {
        let version = (n / 2) as u8;
        // Junction line k (0 and n + 1 are the symbol's edges) is lattice index k − 1 − a + i0.
        let corner = |k: i32, l: i32| -> (f32, f32) {
            let (i, j) = (k - 1 - a + i0, l - 1 - b + j0);
            let p = h.apply(f64::from(i), f64::from(j));
            let r = measured.get(&(i, j)).copied().or_else(|| {
                let around: Vec<(f64, f64)> = [(1, 0), (-1, 0), (0, 1), (0, -1)]
                    .iter()
                    .filter_map(|(di, dj)| measured.get(&(i + di, j + dj)).copied())
                    .collect();
                (!around.is_empty()).then(|| {
                    let n = around.len() as f64;
                    around
                        .iter()
                        .fold((0.0, 0.0), |s, r| (s.0 + r.0 / n, s.1 + r.1 / n))
                })
            });
            let (rx, ry) = r.unwrap_or((0.0, 0.0));
            ((p.0 + rx) as f32, (p.1 + ry) as f32)
        };
        let mm = (n + 1) as usize;
        let corners: Vec<(f32, f32)> = (0..=mm as i32)
            .flat_map(|l| (0..=mm as i32).map(move |k| (k, l)))
            .map(|(k, l)| corner(k, l))
            .collect();
        let c = |x: usize, y: usize| corners[y * (mm + 1) + x];
        let side = tables::side(version);
        let mut values = vec![0f32; side * side];
        for my in 0..mm {
            for mx in 0..mm {
                let (p00, p10, p01, p11) =
                    (c(mx, my), c(mx + 1, my), c(mx, my + 1), c(mx + 1, my + 1));
                for dy in 0..6 {
                    for dx in 0..6 {
                        let (u, v) = ((dx as f32 + 0.5) / 6.0, (dy as f32 + 0.5) / 6.0);
                        let x = (1.0 - v) * ((1.0 - u) * p00.0 + u * p10.0)
                            + v * ((1.0 - u) * p01.0 + u * p11.0);
                        let y = (1.0 - v) * ((1.0 - u) * p00.1 + u * p10.1)
                            + v * ((1.0 - u) * p01.1 + u * p11.1);
                        values[(6 * my + dy) * side + 6 * mx + dx] = sample(full, x, y);
                    }
                }
            }
        }
        effort.modules += (side * side) as u64;
        // Blur spreads each module into its neighbours: take a share of the neighbours'
        // mean back out (a small unsharp mask in module space) before thresholding.
        let sharp: Vec<f32> = (0..side * side)
            .map(|i| {
                let around = neighbour_mean(&values, side, i % side, i / side);
                values[i] + MODULE_SHARPEN * (values[i] - around)
            })
            .collect();
        let grid = threshold(&sharp, side, mm);
        let r = decode(&grid);
        if let Ok(d) = r {
            return Some(d);
        }
    }
    None
}

/// Modules from sampled values: each macromodule against the midpoint of the dark and the
/// light frame levels of its 3×3 macromodule neighbourhood.
fn threshold(values: &[f32], side: usize, mm: usize) -> Modules {
    let frame_mean = |mx: usize, my: usize| {
        let mut s = 0.0;
        for k in 0..6 {
            for (x, y) in [(k, 0), (k, 5)] {
                s += values[(6 * my + y) * side + 6 * mx + x];
            }
        }
        for k in 1..5 {
            for (x, y) in [(0, k), (5, k)] {
                s += values[(6 * my + y) * side + 6 * mx + x];
            }
        }
        s / 20.0
    };
    let frames: Vec<f32> = (0..mm * mm).map(|i| frame_mean(i % mm, i / mm)).collect();
    let mut thresholds = vec![0f32; mm * mm];
    for my in 0..mm {
        for mx in 0..mm {
            let (mut dark, mut nd, mut light, mut nl) = (0.0, 0, 0.0, 0);
            for y in my.saturating_sub(1)..(my + 2).min(mm) {
                for x in mx.saturating_sub(1)..(mx + 2).min(mm) {
                    if super::layout::frame_dark(x, y) {
                        dark += frames[y * mm + x];
                        nd += 1;
                    } else {
                        light += frames[y * mm + x];
                        nl += 1;
                    }
                }
            }
            thresholds[my * mm + mx] = (dark / nd.max(1) as f32 + light / nl.max(1) as f32) / 2.0;
        }
    }
    Modules::from_fn(side, |x, y| {
        values[y * side + x] < thresholds[(y / 6) * mm + x / 6]
    })
}

#[cfg(test)]
mod tests {
    use super::super::{encode, render, EncodeOptions};
    use super::*;
    use image::Luma;

    /// `symbol` seen through a homography: its four corners at `corners` of a `w`×`h` frame
    /// on a mid-grey background, bilinear, then blurred.
    fn warped(
        symbol: &GrayImage,
        corners: [(f64, f64); 4],
        w: u32,
        h: u32,
        blur: f32,
    ) -> GrayImage {
        let s = f64::from(symbol.width());
        let src = [(0.0, 0.0), (s, 0.0), (s, s), (0.0, s)];
        let pairs: Vec<_> = corners.iter().copied().zip(src).collect();
        let back = Homography::fit(&pairs).expect("homography");
        let frame = GrayImage::from_fn(w, h, |x, y| {
            let (u, v) = back.apply(f64::from(x) + 0.5, f64::from(y) + 0.5);
            if u >= 0.0 && v >= 0.0 && u < s - 1.0 && v < s - 1.0 {
                Luma([sample(symbol, u as f32 - 0.5, v as f32 - 0.5) as u8])
            } else {
                Luma([110])
            }
        });
        image::imageops::blur(&frame, blur)
    }

    #[test]
    fn a_turned_tilted_blurred_symbol_is_read_and_its_mirror_too() {
        let text = "YM1:6BFOXN*TS0BI$ZD4N9:9S6RCVN5+O30K3-GRID-MATRIX-CAMERA-FRAME";
        let sym = encode(text, &EncodeOptions::default()).expect("encode");
        let img = render(&sym, 4);
        // About 3.4 px a module, turned by ~30°, one side foreshortened.
        let corners = [
            (260.0, 60.0),
            (560.0, 200.0),
            (430.0, 500.0),
            (110.0, 360.0),
        ];
        let frame = warped(&img, corners, 680, 560, 0.8);
        let mut effort = Effort::default();
        let found = read_frame(&frame, &[], &mut effort);
        assert_eq!(found.len(), 1, "{effort:?}");
        assert_eq!(found[0].text, text);
        assert!(effort.response_pixels > 0 && effort.modules > 0);
        let mirrored = image::imageops::flip_horizontal(&frame);
        let found = read_frame(&mirrored, &[(0, 0, 680, 560)], &mut Effort::default());
        assert_eq!(found.first().map(|d| d.text.as_str()), Some(text));
    }

    #[test]
    fn textures_without_a_symbol_yield_nothing_at_a_bounded_cost() {
        let checker = GrayImage::from_fn(640, 480, |x, y| {
            Luma([if (x / 9 + y / 9) % 2 == 0 { 30 } else { 220 }])
        });
        let blank = GrayImage::from_pixel(640, 480, Luma([128]));
        for img in [checker, blank] {
            let mut effort = Effort::default();
            assert!(read_frame(&img, &[], &mut effort).is_empty());
            // One response per second pixel of every second row, at most the hypotheses'
            // samplings of the largest symbol per seed.
            assert!(effort.response_pixels <= 640 * 480 / 4, "{effort:?}");
            assert!(effort.modules <= (MAX_SEEDS * MAX_HYPOTHESES * 162 * 162) as u64);
            assert!(effort.seeds <= MAX_SEED_TRIES as u64, "{effort:?}");
        }
    }

    #[test]
    fn the_least_squares_homography_maps_the_points_it_was_fitted_on() {
        let truth = Homography([1.2, 0.1, 30.0, -0.2, 0.9, 12.0, 0.001, -0.0005]);
        let pairs: Vec<_> = (0..5)
            .flat_map(|i| (0..5).map(move |j| (f64::from(i) * 10.0, f64::from(j) * 10.0)))
            .map(|p| (p, truth.apply(p.0, p.1)))
            .collect();
        let fit = Homography::fit(&pairs).expect("fit");
        for &(p, q) in &pairs {
            let r = fit.apply(p.0, p.1);
            assert!((r.0 - q.0).abs() < 1e-6 && (r.1 - q.1).abs() < 1e-6);
        }
        assert!(Homography::fit(&pairs[..3]).is_none());
    }
}
