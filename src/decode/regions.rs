//! Regions of interest: where in a frame a code probably is (blocks whose edge energy stands
//! out), as rectangles of the full frame, and their crops.

use image::GrayImage;

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

/// A rectangle of the frame, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Region {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// Where codes probably are: blocks of the half-size frame whose edge energy stands out (a QR
/// symbol is the busiest texture a gate camera sees; glare, walls and a phone's blank screen
/// are smooth), grouped into 8-connected regions, busiest first, as rectangles of the full
/// frame with a margin.
pub(super) fn regions(half: &GrayImage) -> Vec<Region> {
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

/// The pixels of `r` (which lies inside `img`) as an image of their own, copied row slice by
/// row slice (`image::imageops::crop_imm(..).to_image()` copies pixel by pixel: 0.2 ms for a
/// 300 px region, against 0.005 ms here).
pub(super) fn crop(img: &GrayImage, r: Region) -> GrayImage {
    let (w, x, y) = (img.width() as usize, r.x as usize, r.y as usize);
    let raw = img.as_raw();
    let mut out = Vec::with_capacity((r.w * r.h) as usize);
    for row in raw.chunks_exact(w).skip(y).take(r.h as usize) {
        out.extend_from_slice(&row[x..x + r.w as usize]);
    }
    GrayImage::from_raw(r.w, r.h, out).unwrap_or_else(|| GrayImage::new(0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::filters::downscale2_box;
    use image::Luma;

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
        let code =
            crate::render::render("YM1:6BFOXN*TS0BI$ZD4N9:9S6RCVN5+O30K3", 3).expect("render");
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
}
