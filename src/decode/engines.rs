//! The QR engines behind one signature each: rxing (the ZXing / zxing-cpp port) and rqrr, both
//! panic-isolated (rqrr 0.11 asserts on some real images, upstream WanzenBug/rqrr#54).

use std::collections::HashSet;

use image::GrayImage;
use rxing::common::{GlobalHistogramBinarizer, HybridBinarizer};
use rxing::qrcode::cpp_port::decoder::Decode;
use rxing::qrcode::cpp_port::detector::{
    FindFinderPatterns, FinderPatternSet, FinderPatternSets, GenerateFinderPatternSets, SampleQR,
};
use rxing::{
    BarcodeFormat, BinaryBitmap, DecodeHints, Luma8LuminanceSource, MultiFormatReader, Reader,
};

use super::census::{finder_patterns, MAX_FINDERS};
use super::{Decoded, Engine, Work};
use rxing::common::cpp_essentials::ConcentricPattern;
use rxing::common::{BitMatrix, DetectorRXingResult};

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
/// Whether an engine may combine the finder patterns of `bits` (the binarized `img`): not when
/// the finder census says it holds more than a scene with codes does (see [`super::census`]).
/// Counts the call either way.
fn admitted(img: &GrayImage, bits: &BitMatrix, work: &Work) -> bool {
    let finders = finder_patterns(bits);
    work.note_finders(finders);
    if finders > MAX_FINDERS {
        work.refused.set(work.refused.get() + 1);
        // The census itself read the image once.
        work.filtered
            .set(work.filtered.get() + u64::from(img.width()) * u64::from(img.height()));
        return false;
    }
    work.calls.set(work.calls.get() + 1);
    work.pixels
        .set(work.pixels.get() + u64::from(img.width()) * u64::from(img.height()));
    true
}

pub(super) fn rxing_read(
    img: &GrayImage,
    multiple: bool,
    thorough: bool,
    stage: &'static str,
    work: &Work,
) -> Vec<Decoded> {
    rxing_pass(img, multiple, thorough, None, stage, work)
}

/// A quick rxing pass, then — if rxing found finder patterns but read nothing —
/// this crate's grey-level sampler on the same binarized image ([`super::gray_qr`]),
/// reported as `grey_stage`. For crops of a code at full resolution: small modules under blur
/// and noise, where rxing's one-pixel binary sampling fails. Looking for several codes, it is
/// the plain pass (the sampler reads one symbol).
pub(super) fn rxing_grey_read(
    img: &GrayImage,
    multiple: bool,
    stage: &'static str,
    grey_stage: &'static str,
    work: &Work,
) -> Vec<Decoded> {
    let grey = (!multiple).then_some(grey_stage);
    rxing_pass(img, multiple, false, grey, stage, work)
}

/// rxing's QR reader (`QrReader`, one symbol) on `bits` (the binarized `img`), written out so
/// that the finder patterns it found and could not decode are at hand for the grey sampler
/// (run if `grey`), and so that a Model 1 symbol rxing's decoder misreads is decoded by
/// [`super::model1`]. `sets`: the finder-pattern triples of `bits` ([`finder_sets`]); `grey`:
/// the sampler's warp rounds ([`super::gray_qr::read`]), if it runs. The text, and whether
/// the grey sampler read it.
fn read_one(
    img: &GrayImage,
    bits: &BitMatrix,
    sets: &[FinderPatternSet],
    grey: Option<usize>,
    work: &Work,
) -> Option<(String, bool)> {
    if let Some(text) = sets.iter().find_map(|set| decode_set(bits, set)) {
        return Some((text, false));
    }
    grey_read(img, bits, sets, grey?, work).map(|text| (text, true))
}

/// rxing's finder-pattern triples in `bits`, most plausible first.
fn finder_sets(bits: &BitMatrix) -> FinderPatternSets {
    let mut patterns = FindFinderPatterns(bits, false, 0);
    GenerateFinderPatternSets(&mut patterns)
}

/// The text of the symbol on a triple: rxing's sampling and decoder, or Model 1's block order
/// where rxing's decoder rejects the sampled symbol.
fn decode_set(bits: &BitMatrix, set: &FinderPatternSet) -> Option<String> {
    let sampled = SampleQR(bits, set).ok()?;
    match Decode(sampled.getBits()) {
        Ok(text) if text.isValid() => Some(text.text()),
        _ => super::model1::decode(sampled.getBits()),
    }
}

/// The grey sampler on triples rxing could not decode, its effort counted into `work`.
fn grey_read(
    img: &GrayImage,
    bits: &BitMatrix,
    sets: &[FinderPatternSet],
    warp_rounds: usize,
    work: &Work,
) -> Option<String> {
    let mut effort = super::gray_qr::Effort::default();
    let found = super::gray_qr::read(img, bits, sets, warp_rounds, &mut effort);
    work.pixels
        .set(work.pixels.get() + effort.modules * GREY_UNITS_PER_MODULE);
    work.grey_modules
        .set(work.grey_modules.get() + effort.modules);
    found
}

/// Every symbol [`read_one`]'s reader finds in `bits`: each finder-pattern set sampled and
/// decoded, skipping the sets that share a finder pattern with a symbol already read (as
/// zxing-cpp's multi-symbol QR reader does). Written out rather than rxing's
/// `GenericMultipleBarcodeReader`, which drops every result whose bounding box meets a later
/// one's — an outer code around an inner one loses one of the two — and whose recursion over
/// crops reads a lone code more than once.
fn read_all(bits: &BitMatrix, sets: &[FinderPatternSet]) -> Vec<String> {
    let mut used: Vec<ConcentricPattern> = Vec::new();
    let mut texts = Vec::new();
    for set in sets {
        let corners = [set.bl, set.tl, set.tr];
        if corners.iter().any(|p| used.contains(p)) {
            continue;
        }
        if let Some(text) = decode_set(bits, set) {
            used.extend(corners);
            texts.push(text);
        }
    }
    texts
}

/// Warp rounds of the grey sampler on files and uploads, where rxing's own sampling read
/// nothing: a code on a curved or wrinkled surface (live frames, within their allowance, do
/// not bend the grid).
pub(super) const FILE_WARP_ROUNDS: usize = 3;
/// Modules the grey sampler may sample over one file's whole cascade (five calls at their
/// bound, about 17 ms on the reference core): a texture of finder-like patterns, which every
/// variant shows again, does not pay for the sampler on every variant.
const FILE_GREY_MODULES: u64 = 120_000;

fn rxing_pass(
    img: &GrayImage,
    multiple: bool,
    thorough: bool,
    grey: Option<&'static str>,
    stage: &'static str,
    work: &Work,
) -> Vec<Decoded> {
    let mut stage = stage;
    let run = || -> Vec<String> {
        let Ok(source) = Luma8LuminanceSource::new(img.as_raw().clone(), img.width(), img.height())
        else {
            return Vec::new();
        };
        let hints = hints();
        let mut bitmap = BinaryBitmap::new(HybridBinarizer::new(source.clone()));
        if !admitted(img, bitmap.get_black_matrix(), work) {
            return Vec::new();
        }
        // Looking for several codes: every triple sampled and decoded. With none read, on to
        // the one-symbol readers below (so that looking for several codes reads every image
        // that looking for one does), which take these triples rather than search and decode
        // them again.
        let mut undecoded = None;
        if multiple {
            let sets = finder_sets(bitmap.get_black_matrix());
            let texts = read_all(bitmap.get_black_matrix(), &sets);
            if !texts.is_empty() {
                return texts;
            }
            undecoded = Some(sets);
        }
        let one = |bits: &BitMatrix, grey: Option<usize>| match &undecoded {
            Some(sets) => grey_read(img, bits, sets, grey?, work).map(|text| (text, true)),
            None => read_one(img, bits, &finder_sets(bits), grey, work),
        };
        if !thorough {
            let Some((text, by_grey)) = one(bitmap.get_black_matrix(), grey.map(|_| 0)) else {
                return Vec::new();
            };
            if by_grey {
                stage = grey.unwrap_or(stage);
            }
            return vec![text];
        } else if let Ok(r) = MultiFormatReader::default().decode_with_hints(&mut bitmap, &hints) {
            return vec![r.getText().to_string()];
        } else if let Some((text, _)) = one(
            bitmap.get_black_matrix(),
            (work.grey_modules.get() < FILE_GREY_MODULES).then_some(FILE_WARP_ROUNDS),
        ) {
            // The written-out reader: it reads the Model 1 symbols rxing's decoder misreads, and
            // its finder patterns go to the grey sampler with its grid bent. Its
            // finder search repeats the one `MultiFormatReader` made (rxing keeps it inside),
            // and only files and uploads that held no code so far pay for it.
            return vec![text];
        }
        // The global binarizer reads some evenly lit, low-contrast frames the hybrid one misses.
        let mut global = BinaryBitmap::new(GlobalHistogramBinarizer::new(source));
        if !admitted(img, global.get_black_matrix(), work) {
            return Vec::new();
        }
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
            symbology: Engine::Rxing.symbology(),
            stage,
        })
        .collect()
}

/// The grey sampler's cost per sampled module in work units ([`super::WORK_PER_MS`]): about
/// 140 ns (five bilinear samples through the fitted grid, the template search for alignment
/// patterns, the equalizer and the decoder's share), measured on the gate set's missed frames.
const GREY_UNITS_PER_MODULE: u64 = 32;

/// Most pixels rqrr is run on; larger images are scaled down to this first. rqrr tries every
/// ranked pair of capstones with a copy of the whole image each (`find_groupings` in rqrr
/// 0.11): on a 2000×2000 noise image that took 7.3 s in one call, where rxing, given the same
/// image, reads any code on it anyway.
const RQRR_MAX_PIXELS: u64 = 1024 * 1024;

pub(super) fn rqrr_read(img: &GrayImage, stage: &'static str, work: &Work) -> Vec<Decoded> {
    let pixels = u64::from(img.width()) * u64::from(img.height());
    let scaled;
    let img = if pixels > RQRR_MAX_PIXELS {
        match super::filters::scale(img, (RQRR_MAX_PIXELS as f64 / pixels as f64).sqrt()) {
            Some(s) => {
                scaled = s;
                &scaled
            }
            None => return Vec::new(),
        }
    } else {
        img
    };
    // rqrr groups its capstones (finder patterns) much as rxing combines finders: the census
    // of the hybrid-binarized image stands for both.
    let census = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Luma8LuminanceSource::new(img.as_raw().clone(), img.width(), img.height())
            .ok()
            .map(|source| {
                let bitmap = BinaryBitmap::new(HybridBinarizer::new(source));
                admitted(img, bitmap.get_black_matrix(), work)
            })
    }));
    if census.ok().flatten() != Some(true) {
        return Vec::new();
    }
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
                symbology: Engine::Rqrr.symbology(),
                stage,
            })
            .collect(),
        Err(_) => {
            tracing::debug!("decode: rqrr panicked on a frame; ignored");
            Vec::new()
        }
    }
}

/// This crate's Grid Matrix reader of clean images (its cost is two linear passes and a few
/// grid samplings: no finder combinations to bound).
pub(super) fn gridmatrix_read(img: &GrayImage, stage: &'static str, work: &Work) -> Vec<Decoded> {
    work.calls.set(work.calls.get() + 1);
    work.pixels
        .set(work.pixels.get() + u64::from(img.width()) * u64::from(img.height()));
    gridmatrix_found(crate::gridmatrix::read::read_clean(img), stage)
}

/// This crate's Grid Matrix detector for camera frames ([`crate::gridmatrix::detect`]), on the
/// frame, looking in `windows` (the whole frame if none).
pub(super) fn gridmatrix_camera(
    img: &GrayImage,
    windows: &[crate::gridmatrix::detect::Window],
    stage: &'static str,
    work: &Work,
) -> Vec<Decoded> {
    let mut effort = crate::gridmatrix::detect::Effort::default();
    let found = crate::gridmatrix::detect::read_frame(img, windows, &mut effort);
    work.calls.set(work.calls.get() + 1);
    work.pixels
        .set(work.pixels.get() + gridmatrix_units(&effort));
    gridmatrix_found(found, stage)
}

/// Symbols read by either Grid Matrix reader, as the cascade reports them.
fn gridmatrix_found(found: Vec<crate::gridmatrix::Decoded>, stage: &'static str) -> Vec<Decoded> {
    found
        .into_iter()
        .map(|d| Decoded {
            text: d.text,
            engine: Engine::GridMatrix,
            symbology: Engine::GridMatrix.symbology(),
            stage,
        })
        .collect()
}

/// The detector's effort in work units ([`super::WORK_PER_MS`]): each kind of step weighted by
/// its cost on the reference core against a pixel through rxing (measured by timing the
/// detector alone on the gate set's and the adversarial set's frames; the smoothing and the
/// response are counted about twice their cost, so a frame with no symbol stops early).
fn gridmatrix_units(e: &crate::gridmatrix::detect::Effort) -> u64 {
    e.smoothed_pixels / GM_SMOOTH_PER_UNIT
        + e.response_pixels * GM_UNITS_PER_RESPONSE
        + e.seeds * GM_UNITS_PER_SEED
        + e.nodes * GM_UNITS_PER_NODE
        + e.modules * GM_UNITS_PER_MODULE
}
/// A seed tried (neighbour search, cross test): 4 µs each on the woven-fabric frame
/// (`fabric_weave`: 48 seeds, no lattice).
const GM_UNITS_PER_SEED: u64 = 1_000;
/// A lattice node grown (neighbour search in the saddle index, line fit): 0.7 µs each on the
/// adversarial tiled floor (`tiles_18px_turned`: 6,153 nodes grown by 12 seeds, 4.3 ms).
const GM_UNITS_PER_NODE: u64 = 150;
const GM_SMOOTH_PER_UNIT: u64 = 2;
const GM_UNITS_PER_RESPONSE: u64 = 2;
/// A module sampled and decoded (bilinear sample, unsharp mask, threshold, then the codec's
/// eight orientations and Reed–Solomon per hypothesis): about 60 ns each on the macromodule
/// sheets of the adversarial set.
const GM_UNITS_PER_MODULE: u64 = 12;
