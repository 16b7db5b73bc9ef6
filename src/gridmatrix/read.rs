//! Grid Matrix symbols in clean images — rendered, printed and scanned, screenshots: upright or
//! turned by quarter turns, mirrored, at any scale of about 2 px a module or more. The symbol
//! is found as the square its dark modules span, its version as the size whose module grid
//! reproduces the checkerboard of macromodule frames, then each module is sampled at its
//! centre. (Camera frames — perspective, any angle, blur — are the live cascade's job.)

use image::GrayImage;

use super::{decode, tables, Decoded, Modules};

/// Fraction of frame modules (×1000) a module grid must reproduce to be read.
const MIN_FRAME_AGREEMENT: usize = 850;
/// Smallest module, in pixels, a clean image is read at.
const MIN_MODULE_PX: f32 = 1.8;

/// Otsu's threshold of `img`.
fn otsu(img: &GrayImage) -> u8 {
    let mut hist = [0u64; 256];
    for p in img.as_raw() {
        hist[usize::from(*p)] += 1;
    }
    let total: u64 = hist.iter().sum();
    let sum: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &c)| i as f64 * c as f64)
        .sum();
    let (mut sum_b, mut w_b, mut best, mut threshold) = (0f64, 0u64, -1f64, 128u8);
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
        let (m_b, m_f) = (sum_b / w_b as f64, (sum - sum_b) / w_f as f64);
        let between = w_b as f64 * w_f as f64 * (m_b - m_f).powi(2);
        if between > best {
            best = between;
            threshold = t as u8;
        }
    }
    threshold
}

/// The rows (or columns) of the span whose dark count is substantial: the first and last
/// index holding at least `min` dark pixels.
fn span(counts: &[usize], min: usize) -> Option<(usize, usize)> {
    let first = counts.iter().position(|&c| c >= min)?;
    let last = counts.iter().rposition(|&c| c >= min)?;
    Some((first, last))
}

/// Every Grid Matrix symbol read from a clean image (at most one).
pub fn read_clean(img: &GrayImage) -> Vec<Decoded> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w < 18 || h < 18 {
        return Vec::new();
    }
    let t = otsu(img);
    let raw = img.as_raw();
    let dark = |x: usize, y: usize| raw[y * w + x] <= t;
    let mut rows = vec![0usize; h];
    let mut cols = vec![0usize; w];
    for (y, row) in rows.iter_mut().enumerate() {
        for (x, col) in cols.iter_mut().enumerate() {
            if dark(x, y) {
                *row += 1;
                *col += 1;
            }
        }
    }
    // A frame row of a symbol is dark for half its width; stray marks are not.
    let (Some((top, bottom)), Some((left, right))) =
        (span(&rows, (w / 40).max(3)), span(&cols, (h / 40).max(3)))
    else {
        return Vec::new();
    };
    let (sw, sh) = ((right - left + 1) as f32, (bottom - top + 1) as f32);
    if (sw - sh).abs() > 0.05 * sw.max(sh) + 2.0 {
        return Vec::new();
    }
    let side_px = (sw + sh) / 2.0;
    // Try each size; keep the grids that reproduce the frames, best first.
    let mut grids: Vec<(usize, Modules)> = Vec::new();
    for version in tables::VERSIONS {
        let n = tables::side(version);
        let m = side_px / n as f32;
        if m < MIN_MODULE_PX {
            continue;
        }
        let sample = |i: usize, j: usize| {
            let cx = left as f32 + (i as f32 + 0.5) * sw / n as f32;
            let cy = top as f32 + (j as f32 + 0.5) * sh / n as f32;
            // A small neighbourhood of the centre, by majority.
            let r = (m * 0.2).floor() as isize;
            let (mut d, mut all) = (0, 0);
            for dy in -r..=r {
                for dx in -r..=r {
                    let (x, y) = (cx as isize + dx, cy as isize + dy);
                    if x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h {
                        all += 1;
                        d += usize::from(dark(x as usize, y as usize));
                    }
                }
            }
            2 * d > all
        };
        let grid = Modules::from_fn(n, sample);
        let mm = tables::macromodules(version);
        let (mut agree, mut total) = (0usize, 0usize);
        for my in 0..mm {
            for mx in 0..mm {
                let want = super::layout::frame_dark(mx, my);
                for k in 0..6 {
                    for (x, y) in [(k, 0), (k, 5), (0, k), (5, k)] {
                        total += 1;
                        agree += usize::from(grid.get(6 * mx + x, 6 * my + y) == want);
                    }
                }
            }
        }
        let score = agree * 1000 / total.max(1);
        if score >= MIN_FRAME_AGREEMENT {
            grids.push((score, grid));
        }
    }
    grids.sort_by_key(|g| std::cmp::Reverse(g.0));
    grids
        .into_iter()
        .find_map(|(_, g)| decode(&g).ok())
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{encode, render, EncodeOptions, Orientation};
    use super::*;

    #[test]
    fn rendered_symbols_are_read_at_every_quarter_turn_mirror_and_scale() {
        let text = "YM1:6BFOXN*TS0BI$ZD4N9:9S6RCVN5+O30K3";
        let sym = encode(text, &EncodeOptions::default()).expect("encode");
        for px in [2, 3, 5] {
            for o in Orientation::ALL {
                let turned = super::super::Symbol {
                    modules: sym.modules.oriented(o),
                    ..sym.clone()
                };
                let img = render(&turned, px);
                let found = read_clean(&img);
                assert_eq!(found.len(), 1, "{px} px, {o:?}");
                assert_eq!(found[0].text, text);
            }
        }
    }

    #[test]
    fn a_blank_or_tiny_image_has_no_symbol() {
        assert!(read_clean(&GrayImage::from_pixel(100, 100, image::Luma([255]))).is_empty());
        assert!(read_clean(&GrayImage::new(10, 10)).is_empty());
        let checker = GrayImage::from_fn(120, 120, |x, y| {
            image::Luma([if (x / 6 + y / 6) % 2 == 0 { 0 } else { 255 }])
        });
        assert!(read_clean(&checker).is_empty());
    }
}
