//! From a grayscale frame to code texts: a cascade of engines and image variants that stops at
//! the first stage that reads anything, within a time budget.
//!
//! Stage order (cheapest and most successful first; each stage runs only if the earlier ones
//! found nothing):
//! 1. live frames only (`half_first`, `Decoder::live_stages`): rxing on the 2×2-averaged
//!    half frame; Grid Matrix in the busiest region ([`crate::gridmatrix::detect`]: the
//!    lattice of macromodule junctions at full resolution), then the clean-image reader on
//!    the half frame (a symbol held square); the **regions of interest** — 8-connected runs of the busiest edge blocks of
//!    the half frame, where a code is — each read at full resolution, sharpened; the busiest
//!    region against its local mean (glare on the code); an adaptive threshold of the half
//!    frame (glare, uneven light); the small regions sharpened and doubled (blurred codes:
//!    3 px modules are lost at half size, not in a full-size crop); rqrr on the adaptive
//!    half frame. On the sharpened regions, single and doubled, finder patterns rxing found
//!    but could not decode go to the grey-level sampler ([`gray_qr`]);
//! 2. rxing (zxing-cpp/ZXing port; hybrid then global binarizer) on the frame; where its
//!    sampling decodes nothing, the grey-level sampler with its grid bent to the symbol's
//!    edges (a code on a curved or wrinkled surface) — as on every variant below;
//! 3. rqrr on the frame (panic-isolated: rqrr 0.11 asserts on some real images); Grid
//!    Matrix: the clean-image reader, then the camera-frame detector in the busy regions;
//! 4. `VARIANTS`: inverted, downscaled, upscaled + adaptive threshold, Otsu, smoothed
//!    upscale, contrast-stretched — each through rxing, the binarized ones through rqrr too.
//!
//! The cascade is this file; the engines (rxing, rqrr: [`engines`]), the grey-level QR
//! sampler ([`gray_qr`]), the Model 1 block split rxing lacks ([`model1`]), the image filters
//! ([`filters`]) and the region finder ([`regions`]) are beside it.
//!
//! **Must not know:** where frames come from or what a code text means.
//!
//! **Invariant:** decoding never panics and never runs unbounded: frames are bounded in size
//! before they get here ([`MAX_SIDE`]) and the cascade stops at its budget.
//!
//! # The same reads on every machine (live frames)
//! The live cascade does not stop by the clock: it stops once its engines and filters have
//! processed the frame's **work allowance** — the budget times [`WORK_PER_MS`], pixels a
//! reference core processes per millisecond — so a slower board runs exactly the stages a
//! fast one runs, and reads the same frames (later). The clock is only a backstop, at
//! [`LIVE_BACKSTOP`] budgets: it bounds hostile frames and a core more than about half as fast
//! as the reference. Files and API images stop by the clock at their budget (nobody waits on a next
//! frame there, and a hostile upload must not hold a worker longer).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use image::imageops::FilterType;
use image::GrayImage;

pub mod census;
mod engines;
mod filters;
mod gray_qr;
mod model1;
mod regions;

use engines::{gridmatrix_camera, gridmatrix_read, rqrr_read, rxing_grey_read, rxing_read};
use filters::{
    adaptive_threshold, double, downscale2_box, otsu_threshold, scale, sharpen, stretch_contrast,
};
use regions::{crop, regions, Region};

/// Largest side of a frame handed to the decoder; larger frames are downscaled first.
pub const MAX_SIDE: u32 = 4096;

/// Work units (pixels through an engine or a filter, [`Work::units`]) a reference core
/// processes per millisecond of live budget. Measured with `cargo bench --bench decode` (its
/// "work rate" line) on the gate set with the live settings, one core of the CI machine kind.
pub const WORK_PER_MS: u64 = 230_000;

/// The live cascade's clock backstop, in budgets: it bounds what a hostile frame costs on any
/// machine (the adversarial set costs more time per work unit than a scene with a code), and a
/// core up to about half as fast as the reference still runs every stage the allowance allows.
pub const LIVE_BACKSTOP: u32 = 2;

/// Which engine read a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    Rxing,
    Rqrr,
    /// This crate's own Grid Matrix reader ([`crate::gridmatrix`]).
    GridMatrix,
}

/// Which symbology a code was read (or is rendered) in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Symbology {
    Qr,
    /// GB/T 27766 网格矩阵码.
    GridMatrix,
}

impl Engine {
    pub fn symbology(self) -> Symbology {
        match self {
            Engine::Rxing | Engine::Rqrr => Symbology::Qr,
            Engine::GridMatrix => Symbology::GridMatrix,
        }
    }
}

/// One code read from a frame.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decoded {
    /// The payload as text (ECI / character set applied by the engine).
    pub text: String,
    pub engine: Engine,
    pub symbology: Symbology,
    /// Which cascade stage found it (0 = the frame as given).
    pub stage: &'static str,
}

/// The engine work one decode did: what a test can bound without a clock.
#[derive(Debug, Default)]
pub struct Work {
    /// Engine calls run.
    pub calls: std::cell::Cell<u32>,
    /// Engine calls refused by the finder census (the image held too many finder patterns).
    pub refused: std::cell::Cell<u32>,
    /// Pixels the engines were run on, summed over calls.
    pub pixels: std::cell::Cell<u64>,
    /// The most finder-like patterns any image of this decode held (capped past the limit).
    pub max_finders: std::cell::Cell<usize>,
    /// Pixels produced by image filters (half frame, sharpening, thresholds, upscales).
    pub filtered: std::cell::Cell<u64>,
    /// Modules the grey-level QR sampler sampled, summed over calls.
    pub grey_modules: std::cell::Cell<u64>,
}

impl Work {
    fn note_finders(&self, n: usize) {
        self.max_finders.set(self.max_finders.get().max(n));
    }

    /// Counts a filtered image and hands it back.
    fn filter(&self, img: GrayImage) -> GrayImage {
        self.filtered
            .set(self.filtered.get() + u64::from(img.width()) * u64::from(img.height()));
        img
    }

    /// All the work so far, in the units of [`WORK_PER_MS`].
    pub fn units(&self) -> u64 {
        self.pixels.get() + self.filtered.get()
    }
}

/// Decoder settings.
#[derive(Debug, Clone)]
pub struct DecoderConfig {
    /// Files: no stage starts that the clock says would end past this. Live frames
    /// (`by_work`): this many ms of [`WORK_PER_MS`] is the work allowance.
    pub budget: Duration,
    /// Look for several codes in one frame (costs more per frame): every QR symbol whose finder
    /// patterns are its own — a code printed around another included — and Grid Matrix beside.
    pub multiple: bool,
    /// Try a 2×2-averaged half-size frame first when the frame is large: a quarter of the
    /// pixels, and phone codes at a gate usually have modules of 4 px or more.
    pub half_first: bool,
    /// On the full frame, also try rxing's global binarizer and rqrr (each costs about as
    /// much as the first pass; worth it for files, not for a live frame).
    pub thorough: bool,
    /// Stop by the work allowance (budget × [`WORK_PER_MS`]) rather than the clock, with the
    /// clock as a backstop at [`LIVE_BACKSTOP`] budgets: the same reads on every machine.
    pub by_work: bool,
}

impl Default for DecoderConfig {
    /// For files and diagnosis: spend up to 100 ms on a hard image.
    fn default() -> Self {
        DecoderConfig {
            budget: Duration::from_millis(100),
            multiple: false,
            half_first: false,
            thorough: true,
            by_work: false,
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
            by_work: true,
        }
    }
}

/// When the cascade starts no further stage: once the work allowance is used (live), or once
/// another stage as long as the longest so far would end past the clock's limit (the budget
/// for files, [`LIVE_BACKSTOP`] budgets for live frames) — so a stage that starts also ends
/// within the limit, as far as the stages before it tell.
struct Pace<'a> {
    config: &'a DecoderConfig,
    start: Instant,
    last: std::cell::Cell<Instant>,
    longest: std::cell::Cell<Duration>,
}

impl Pace<'_> {
    fn new(config: &DecoderConfig) -> Pace<'_> {
        let start = Instant::now();
        Pace {
            config,
            start,
            last: std::cell::Cell::new(start),
            longest: std::cell::Cell::new(Duration::ZERO),
        }
    }

    /// Called after each stage: true when no further stage may start.
    fn spent(&self, work: &Work) -> bool {
        let now = Instant::now();
        self.longest
            .set(self.longest.get().max(now.duration_since(self.last.get())));
        self.last.set(now);
        let budget = self.config.budget;
        let limit = if self.config.by_work {
            let allowance = u64::try_from(budget.as_millis())
                .unwrap_or(u64::MAX)
                .saturating_mul(WORK_PER_MS);
            if work.units() >= allowance {
                return true;
            }
            budget.saturating_mul(LIVE_BACKSTOP)
        } else {
            budget
        };
        now.duration_since(self.start)
            .saturating_add(self.longest.get())
            > limit
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

/// A region with a side longer than this (px) is not doubled: its code's modules are big
/// enough, and doubling it would cost more than a full-frame pass. 480: with the grey
/// sampler on the doubled regions, 2 more frames of 600 (gate sets of seeds 2026, 2030, 2031,
/// counted by work) than at 400, and none more at 560.
const REGION_DOUBLE_MAX: u32 = 480;
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
/// `the vendored real-photo set, tests/data/qr-photos`: each entry reads codes the ones before it miss).
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
        self.decode_counted(img, &|| false, &Work::default())
    }

    /// [`Decoder::decode`], giving up at the next stage once `cancelled` says so (the request
    /// it runs for is gone).
    pub fn decode_until(&self, img: &GrayImage, cancelled: &dyn Fn() -> bool) -> Vec<Decoded> {
        self.decode_counted(img, cancelled, &Work::default())
    }

    /// [`Decoder::decode_until`], counting the engine work into `work`.
    pub fn decode_counted(
        &self,
        img: &GrayImage,
        cancelled: &dyn Fn() -> bool,
        work: &Work,
    ) -> Vec<Decoded> {
        let pace = Pace::new(&self.config);
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
            if let Some(found) = self.live_stages(img, &pace, cancelled, work) {
                return dedup(found);
            }
        }
        let mut found = rxing_read(
            img,
            self.config.multiple,
            self.config.thorough,
            "frame",
            work,
        );
        if found.is_empty() && self.config.thorough && !pace.spent(work) {
            found = rqrr_read(img, "frame", work);
        }
        // A clean Grid Matrix symbol (a file, a screenshot, a scan): beside QR codes when
        // several are looked for; then one photographed, in the busy regions.
        if found.is_empty() || self.config.multiple {
            found.extend(gridmatrix_read(img, "gridmatrix_clean", work));
        }
        if (found.is_empty() || self.config.multiple)
            && !found.iter().any(|d| d.engine == Engine::GridMatrix)
            && !pace.spent(work)
        {
            let half = work.filter(downscale2_box(img));
            let busy: Vec<Region> = regions(&half).into_iter().take(MAX_REGIONS).collect();
            if !busy.is_empty() {
                found.extend(gridmatrix_camera(
                    img,
                    &windows(&busy),
                    "gridmatrix_frame",
                    work,
                ));
            }
        }
        if !found.is_empty() {
            return dedup(found);
        }
        for v in VARIANTS {
            if self.config.half_first && v.name == "half" {
                continue;
            }
            if pace.spent(work) || cancelled() {
                break;
            }
            let Some(variant) = (v.make)(img).map(|i| work.filter(i)) else {
                continue;
            };
            if variant.width() < 21 || variant.height() < 21 {
                continue;
            }
            let mut found = rxing_read(
                &variant,
                self.config.multiple,
                self.config.thorough,
                v.name,
                work,
            );
            if found.is_empty() && v.rqrr {
                found = rqrr_read(&variant, v.name, work);
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
    fn live_stages(
        &self,
        img: &GrayImage,
        pace: &Pace,
        cancelled: &dyn Fn() -> bool,
        work: &Work,
    ) -> Option<Vec<Decoded>> {
        let spent = || pace.spent(work) || cancelled();
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

        let half = work.filter(downscale2_box(img));
        let mut found = rxing_read(&half, multiple, false, "half_box", work);
        let busy: Vec<Region> = regions(&half).into_iter().take(MAX_REGIONS).collect();
        // Grid Matrix, in the regions where the texture is: its lattice of junctions found at
        // full resolution (any angle, perspective, blur), sampled macromodule by macromodule.
        if (found.is_empty() || multiple) && !busy.is_empty() {
            found.extend(gridmatrix_camera(
                img,
                &windows(&busy[..1]),
                "gridmatrix_frame",
                work,
            ));
        }
        // A Grid Matrix symbol shown square to the camera (a screen, paper on a counter), read
        // on the half frame: a clean, upright symbol's data saddles are as strong as its
        // junctions, which the detector's seeds may then miss.
        if found.is_empty() || multiple {
            found.extend(gridmatrix_read(&half, "gridmatrix_half", work));
        }
        stop_if_found_or_spent!(found);
        // Each region at full resolution, sharpened. A crop also makes rxing's finder search
        // scan every second or third row instead of every fifth (its row step is a share of
        // the image height), which small codes need.
        let mut busiest = None;
        let mut sharpened = Vec::with_capacity(MAX_REGIONS);
        for &r in &busy {
            let region = crop(img, r);
            let sharp = work.filter(sharpen(&region, SHARPEN_RADIUS, SHARPEN_HALVES));
            stop_if_found_or_spent!(rxing_grey_read(
                &sharp,
                multiple,
                "region_sharp",
                "region_sharp_grey",
                work
            ));
            busiest.get_or_insert(region);
            sharpened.push(sharp);
        }
        // Glare on a code: the busiest region against its local mean at full resolution.
        if let Some(region) = &busiest {
            let local = work.filter(adaptive_threshold(
                region,
                REGION_ADAPTIVE_RADIUS,
                REGION_ADAPTIVE_OFFSET,
            ));
            stop_if_found_or_spent!(rxing_read(&local, multiple, false, "region_adaptive", work));
        }
        // Glare and uneven light: threshold against the local mean (a few modules wide),
        // which keeps the little contrast a washed-out screen has left.
        let local = work.filter(adaptive_threshold(
            &half,
            HALF_ADAPTIVE_RADIUS,
            HALF_ADAPTIVE_OFFSET,
        ));
        stop_if_found_or_spent!(rxing_read(&local, multiple, false, "half_adaptive", work));
        // Small, blurred codes: the sharpened region doubled.
        for sharp in sharpened
            .iter()
            .filter(|s| s.width().max(s.height()) <= REGION_DOUBLE_MAX)
        {
            stop_if_found_or_spent!(rxing_grey_read(
                &work.filter(double(sharp)),
                multiple,
                "region_sharp_x2",
                "region_sharp_x2_grey",
                work
            ));
        }
        stop_if_found_or_spent!(rqrr_read(&local, "half_adaptive_rqrr", work));
        None
    }
}

/// Regions as the Grid Matrix detector's windows.
fn windows(regions: &[Region]) -> Vec<crate::gridmatrix::detect::Window> {
    regions.iter().map(|r| (r.x, r.y, r.w, r.h)).collect()
}

fn dedup(mut found: Vec<Decoded>) -> Vec<Decoded> {
    let mut seen = HashSet::new();
    found.retain(|d| seen.insert(d.text.clone()));
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Luma;

    #[test]
    fn reads_a_rendered_code_and_an_inverted_one() {
        let text = "YM1:6BFOXN*TS0BI$ZD4N9:9S6RCVN5+O30K3";
        let img = crate::render::render(text, 4).expect("render");
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
}
