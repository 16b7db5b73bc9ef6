//! Image filters of the cascade, written for speed on a gate's CPU: box downscale, bilinear
//! doubling, running-sum windows (adaptive threshold, unsharp mask), Otsu, contrast stretch.
//! Each says in its comment why it is not `image::imageops` where that exists.

use image::imageops::FilterType;
use image::GrayImage;

/// Half size by averaging 2×2 blocks (fast, and keeps module edges crisper than filtering).
pub(super) fn downscale2_box(img: &GrayImage) -> GrayImage {
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

pub(super) fn scale(img: &GrayImage, f: f64) -> Option<GrayImage> {
    let w = (f64::from(img.width()) * f).round() as u32;
    let h = (f64::from(img.height()) * f).round() as u32;
    (w >= 21 && h >= 21 && f < 1.0)
        .then(|| image::imageops::resize(img, w, h, FilterType::Triangle))
}

/// Twice the size, bilinear: each new pixel is ¾ of its nearer source pixel and ¼ of the next
/// one, in each direction, in integers. (`image::imageops::resize` spends ~60 ms doubling a
/// 416×480 crop; this takes well under one.)
pub(super) fn double(img: &GrayImage) -> GrayImage {
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
pub(super) fn stretch_contrast(img: &GrayImage) -> GrayImage {
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

pub(super) fn histogram(img: &GrayImage) -> [u64; 256] {
    let mut h = [0u64; 256];
    for p in img.as_raw() {
        h[usize::from(*p)] += 1;
    }
    h
}

/// `f(pixel, window sum, window size)` for every pixel of `img`, in order, where the window is
/// the pixel's (2r+1)² neighbourhood clipped at the image edges: a separable running sum (one
/// pass along the rows, one down the columns), O(1) per pixel, no division.
pub(super) fn map_windows(
    img: &GrayImage,
    r: u32,
    mut f: impl FnMut(u8, u32, u32) -> u8,
) -> GrayImage {
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
pub(super) fn adaptive_threshold(img: &GrayImage, r: u32, c: i64) -> GrayImage {
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
pub(super) fn sharpen(img: &GrayImage, r: u32, halves: i32) -> GrayImage {
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

/// Otsu's global threshold.
pub(super) fn otsu_threshold(img: &GrayImage) -> GrayImage {
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
