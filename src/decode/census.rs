//! The finder census: how many QR finder patterns an image holds, counted with rxing's own
//! finder search before its detector combines them.
//!
//! Why: rxing's QR detector pairs every finder pattern it finds with up to 15 neighbours and
//! samples every plausible triple; a frame tiled with finder patterns (a 3 KB PNG) costs it
//! seconds inside one call, where no budget between calls can stop it. The finder search
//! itself is a linear scan; the combinations are what explode. So the census runs that same
//! search (`FindFinderPatterns`, public in rxing) on the same binarized image, and an image
//! holding more than [`MAX_FINDERS`] is not handed to the combining stage at all: a real
//! scene holds three finder patterns per code, and a handful of false ones. The cascade then
//! moves on to smaller crops, where the count is taken again.
//!
//! Counting with the engine's own search, rather than a look-alike, means the bound holds for
//! exactly what the engine would combine; the cost is one more row scan per engine call.
//!
//! That search cross-checks every candidate it meets, so on a sheet of hundreds of tiny
//! finders the census itself took ~20 ms of a 10 ms live budget (measured on the adversarial
//! set). A linear pre-scan with an early exit comes first: every fifth row is scanned for
//! runs in the finder's 1:1:3:1:1 ratio, and past [`MAX_ROW_HITS`] of them the image counts
//! as too many without the engine's search running at all.

use rxing::common::BitMatrix;

/// Most finder patterns an image may hold for the engines to combine them. Measured: the real
/// photos hold at most 6, the synthetic gate frames at most 8; tiled sheets hundreds. Up to
/// this many, rxing's pairings stay about a thousand.
pub const MAX_FINDERS: usize = 16;

/// Rows apart the pre-scan looks.
const ROW_STEP: u32 = 5;

/// Finder-ratio runs the pre-scan may meet (every fifth row) before it calls the image too
/// busy. A finder pattern of a code at 4 px a module crosses ~5 sampled rows: ten codes in
/// view make ~150 hits; a tiled sheet makes thousands.
pub const MAX_ROW_HITS: usize = 600;

/// Runs in the finder's 1:1:3:1:1 ratio (within half a module) on every fifth row of `bits`,
/// counted up to `limit` (the scan stops there).
fn finder_ratio_rows(bits: &BitMatrix, limit: usize) -> usize {
    let (w, h) = (bits.width(), bits.height());
    let mut hits = 0;
    for y in (0..h).step_by(ROW_STEP as usize) {
        let mut runs = [0u32; 5];
        let mut len = 0u32;
        let mut colour = false;
        for x in 0..=w {
            let dark = x < w && bits.get(x, y);
            if x > 0 && dark == colour {
                len += 1;
                continue;
            }
            if x > 0 {
                runs.rotate_left(1);
                runs[4] = len;
                // When the run just closed is dark, the last five runs are dark, light,
                // dark, light, dark: a finder's row when their widths go 1:1:3:1:1.
                if colour {
                    let total: u32 = runs.iter().sum();
                    if total >= 7 {
                        let unit = total as f32 / 7.0;
                        let near = |r: u32, k: f32| (r as f32 - k * unit).abs() <= unit * 0.5 * k;
                        if near(runs[0], 1.0)
                            && near(runs[1], 1.0)
                            && near(runs[2], 3.0)
                            && near(runs[3], 1.0)
                            && near(runs[4], 1.0)
                        {
                            hits += 1;
                            if hits >= limit {
                                return hits;
                            }
                        }
                    }
                }
            }
            colour = dark;
            len = 1;
        }
    }
    hits
}

/// The finder patterns rxing finds in a binarized image (as its detector would, not trying
/// harder). Never panics: rxing documents that the search can; a panic counts as "too many".
pub fn finder_patterns(bits: &BitMatrix) -> usize {
    if finder_ratio_rows(bits, MAX_ROW_HITS) >= MAX_ROW_HITS {
        return usize::MAX;
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rxing::qrcode::cpp_port::detector::FindFinderPatterns(bits, false, 0).len()
    }))
    .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma};
    use rxing::common::HybridBinarizer;
    use rxing::{Binarizer, Luma8LuminanceSource};

    fn count(img: &GrayImage) -> usize {
        let source = Luma8LuminanceSource::new(img.as_raw().clone(), img.width(), img.height())
            .expect("source");
        let binarizer = HybridBinarizer::new(source);
        finder_patterns(&binarizer.get_black_matrix().expect("binarized").clone())
    }

    /// A 7×7-module finder pattern at (x, y), `m` px a module, on white.
    fn finder(img: &mut GrayImage, x: u32, y: u32, m: u32) {
        for dy in 0..7 * m {
            for dx in 0..7 * m {
                let (mx, my) = (dx / m, dy / m);
                let ring = mx.min(my).min(6 - mx).min(6 - my);
                img.put_pixel(x + dx, y + dy, Luma([if ring == 1 { 255 } else { 0 }]));
            }
        }
    }

    #[test]
    fn a_code_has_its_three_finders_and_a_tiled_sheet_hundreds() {
        let code = crate::render::render("YM1:6BFOXN*TS0BI$ZD4N9:9S6RCVN5+O30K3", 4).expect("qr");
        let n = count(&code);
        assert!((3..=MAX_FINDERS).contains(&n), "{n}");
        let mut sheet = GrayImage::from_pixel(640, 360, Luma([255]));
        for ty in 0..(360 / 36) {
            for tx in 0..(640 / 36) {
                finder(&mut sheet, tx * 36 + 4, ty * 36 + 4, 4);
            }
        }
        let n = count(&sheet);
        assert!(n > 100, "{n}");
        // The pre-scan: the code's finders make a few dozen ratio rows, the sheet hundreds.
        let bits = |img: &GrayImage| {
            let source = Luma8LuminanceSource::new(img.as_raw().clone(), img.width(), img.height())
                .expect("source");
            HybridBinarizer::new(source)
                .get_black_matrix()
                .expect("binarized")
                .clone()
        };
        let in_code = finder_ratio_rows(&bits(&code), usize::MAX);
        assert!((3..100).contains(&in_code), "{in_code}");
        let in_sheet = finder_ratio_rows(&bits(&sheet), usize::MAX);
        assert!(in_sheet > 4 * in_code, "{in_sheet} vs {in_code}");
        assert_eq!(count(&GrayImage::from_pixel(200, 200, Luma([128]))), 0);
    }
}
