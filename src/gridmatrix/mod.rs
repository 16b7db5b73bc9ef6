//! Grid Matrix (GB/T 27766 二维条码 网格矩阵码; AIM "Grid Matrix", AIMD014), the code system the
//! 一码通办 standard names (§6.1): encoder, decoder and a reader of clean images — our own,
//! in pure Rust (no open decoder reads it; see the module docs of each part).
//!
//! Facts of the symbology this module implements:
//! - Version V = 1…13: (6 + 12·V) modules square, (2V + 1)² macromodules of 6×6 modules. No
//!   finder or timing pattern and no mask; a quiet zone of 6 modules.
//! - Each macromodule: a 1-module frame, dark where (x + y) is even, around 16 bits — a 2-bit
//!   layer id and two 7-bit codewords ([`layout`]).
//! - Layer ids name the error-correction level (1–5) and, agreeing ring by ring, the
//!   orientation: a reader tries the eight symmetries of the square ([`tables::layer_id`]).
//! - Reed–Solomon over GF(2⁷) (x⁷+x³+1), in the blocks of the standard's Table A.1,
//!   interleaved codeword by codeword ([`rs`], [`tables`]).
//! - Six data modes (Chinese/GB 2312, Numeral, Upper, Lower, Mixed, Byte) with ECI and
//!   structured append ([`modes`]).
//!
//! Known defects of the public encoders, which this module does not copy: zint ≤ 2.16 writes
//! the initial Byte latch as 6 instead of 7 and misencodes some punctuated numbers; a later
//! zint breaks shifted characters in Upper mode (its shift table skips `[` … `` ` ``).
//!
//! **Invariant:** decoding is total: wrong sizes, inconsistent layer ids, uncorrectable blocks
//! and hostile mode streams are a [`DecodeError`], never a panic or an unbounded loop.

pub mod detect;
pub mod layout;
pub mod modes;
pub mod read;
pub mod rs;
pub mod tables;

use image::{GrayImage, Luma};

pub use layout::{Modules, Orientation};

/// The level a symbol for a phone screen gets unless asked otherwise: 3 (≈ 30 % of the
/// codewords are parity). Screens add glare, moiré and the odd cracked pixel; level 3 is what
/// the standard recommends from version 4 up. A YM1 dynamic code (≈ 300 characters) is then
/// version 7, 90 modules square (QR at level M: 57).
pub const DEFAULT_LEVEL: u8 = 3;
/// Quiet zone around a symbol, modules.
pub const QUIET_ZONE: u32 = 6;

/// An encoded symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    pub version: u8,
    pub level: u8,
    pub modules: Modules,
}

/// How to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    /// The least error-correction level, 1–5.
    pub level: u8,
    /// Keep exactly `level`. Otherwise (the default) the symbol gets the highest level that
    /// fits in the same version, as zint does: more protection at no cost in size — and
    /// version 1 exists from level 2 only.
    pub exact_level: bool,
    /// The smallest version to use (the text decides the rest).
    pub min_version: u8,
    /// Structured append: (file id, count, index), 1-based.
    pub structured_append: Option<(u8, u8, u8)>,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            level: DEFAULT_LEVEL,
            exact_level: false,
            min_version: 1,
            structured_append: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("error-correction level {0} is not 1–5")]
    BadLevel(u8),
    #[error("the text needs {needed} data codewords; version 13 at level {level} holds {max}")]
    TooLong {
        needed: usize,
        level: u8,
        max: usize,
    },
}

/// Encodes `text` in the smallest version that holds it at the requested level (or, unless
/// `exact_level`, at a higher one; then at the highest that fits in that version).
pub fn encode(text: &str, opts: &EncodeOptions) -> Result<Symbol, EncodeError> {
    if !tables::LEVELS.contains(&opts.level) {
        return Err(EncodeError::BadLevel(opts.level));
    }
    let data = modes::encode(text, opts.structured_append).codewords();
    let needed = data.len();
    let levels = |v: u8| {
        let top = if opts.exact_level { opts.level } else { 5 };
        (opts.level..=top)
            .rev()
            .filter(move |&l| tables::valid(v, l) && tables::data_codewords(v, l) >= needed)
    };
    let (version, level) = tables::VERSIONS
        .filter(|&v| v >= opts.min_version)
        .find_map(|v| levels(v).next().map(|l| (v, l)))
        .ok_or(EncodeError::TooLong {
            needed,
            level: opts.level,
            max: tables::data_codewords(13, opts.level),
        })?;
    Ok(Symbol {
        version,
        level,
        modules: build(&data, version, level),
    })
}

/// The module grid of `data` (data codewords) at (version, level): padding, Reed–Solomon,
/// interleaving, placement, layer ids and frames.
pub fn build(data: &[u8], version: u8, level: u8) -> Modules {
    let capacity = tables::data_codewords(version, level);
    let mut data = data.to_vec();
    // Pad codewords: 0x00 first, then 0x7E at odd and 0x00 at even positions.
    let start = data.len();
    for i in start..capacity {
        data.push(if i > start && i % 2 == 1 { 0x7E } else { 0x00 });
    }
    let blocks = tables::blocks(version, level);
    let nb = blocks.len();
    let total = tables::total_codewords(version);
    let mut cws = vec![0u8; total];
    let mut at = 0;
    for (i, b) in blocks.iter().enumerate() {
        let mut block = data[at..at + b.data()].to_vec();
        at += b.data();
        block.extend(rs::parity(&block, b.parity));
        for (j, &c) in block.iter().enumerate() {
            cws[nb * j + i] = c;
        }
    }
    let n = tables::macromodules(version);
    let mut m = Modules::new(tables::side(version));
    for y in 0..n {
        for x in 0..n {
            let idx = layout::macromodule_index(n, x, y);
            let layer = tables::layer_id(layout::ring(n, x, y), level);
            layout::place(&mut m, x, y, layer, cws[2 * idx], cws[2 * idx + 1]);
        }
    }
    m
}

/// A symbol read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub text: String,
    pub message: modes::Message,
    pub version: u8,
    pub level: u8,
    /// How the symbol lay in the grid it was read from.
    pub orientation: Orientation,
    /// Codewords Reed–Solomon corrected.
    pub corrected: usize,
    /// Codewords read as erasures (their macromodule's frame read wrong).
    pub erasures: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("a {0}-module square is not a Grid Matrix size (18, 30, … 162)")]
    BadSize(usize),
    #[error("fewer than 3/4 of the macromodule frames read right")]
    NoFrames,
    #[error("no orientation and level agree with the layer ids")]
    NoLayerIds,
    #[error("a block holds more errors than its parity corrects")]
    Uncorrectable,
    #[error("the data stream does not parse: {0}")]
    Parse(#[from] modes::ParseError),
}

/// A macromodule whose frame has more wrong modules than this is read as two erasures.
const ERASURE_FRAME_ERRORS: usize = 4;

/// Decodes a sampled module grid, in any of the eight orientations.
pub fn decode(grid: &Modules) -> Result<Decoded, DecodeError> {
    let side = grid.side();
    let version = tables::version_of_side(side).ok_or(DecodeError::BadSize(side))?;
    let n = tables::macromodules(version);
    // Score every (orientation, level) by how many macromodules carry the expected layer id.
    // Frames do not depend on orientation: a grid most of whose frames are wrong is no symbol
    // (a blank or noisy square would otherwise read as all-zero codewords, which are valid).
    let good_frames = (0..n)
        .flat_map(|y| (0..n).map(move |x| (x, y)))
        .filter(|&(x, y)| layout::read(grid, x, y).3 <= ERASURE_FRAME_ERRORS)
        .count();
    if good_frames * 4 < n * n * 3 {
        return Err(DecodeError::NoFrames);
    }
    let mut candidates: Vec<(usize, Orientation, u8, Modules)> = Vec::new();
    for o in Orientation::ALL {
        let up = grid.upright(o);
        let ids: Vec<(usize, u8)> = (0..n)
            .flat_map(|y| (0..n).map(move |x| (x, y)))
            .map(|(x, y)| (layout::ring(n, x, y), layout::read(&up, x, y).0))
            .collect();
        for level in tables::LEVELS.filter(|&l| tables::valid(version, l)) {
            let agree = ids
                .iter()
                .filter(|(ring, id)| tables::layer_id(*ring, level) == *id)
                .count();
            candidates.push((agree, o, level, up.clone()));
        }
    }
    candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
    let best = candidates.first().map_or(0, |c| c.0);
    if best * 2 < n * n {
        return Err(DecodeError::NoLayerIds);
    }
    // The error of the best-agreeing layout is the one worth reporting.
    let mut first = None;
    // The true layout agrees fully on a clean symbol, the next best about 3/4: try the best
    // few in order; Reed–Solomon and the parser confirm.
    for (agree, o, level, up) in candidates.into_iter().take(6) {
        if agree * 2 < n * n {
            break;
        }
        match decode_upright(&up, version, level) {
            Ok((message, corrected, erasures)) => {
                return Ok(Decoded {
                    text: message.text(),
                    message,
                    version,
                    level,
                    orientation: o,
                    corrected,
                    erasures,
                })
            }
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(first.unwrap_or(DecodeError::NoLayerIds))
}

fn decode_upright(
    up: &Modules,
    version: u8,
    level: u8,
) -> Result<(modes::Message, usize, usize), DecodeError> {
    let n = tables::macromodules(version);
    let total = tables::total_codewords(version);
    let mut cws = vec![0u8; total];
    let mut erased = vec![false; total];
    for y in 0..n {
        for x in 0..n {
            let idx = layout::macromodule_index(n, x, y);
            let (_, low, high, wrong) = layout::read(up, x, y);
            cws[2 * idx] = low;
            cws[2 * idx + 1] = high;
            if wrong > ERASURE_FRAME_ERRORS {
                erased[2 * idx] = true;
                erased[2 * idx + 1] = true;
            }
        }
    }
    let blocks = tables::blocks(version, level);
    let nb = blocks.len();
    let mut data = Vec::with_capacity(tables::data_codewords(version, level));
    let (mut corrected, mut erasures) = (0, 0);
    for (i, b) in blocks.iter().enumerate() {
        let mut block: Vec<u8> = (0..b.len).map(|j| cws[nb * j + i]).collect();
        let marks: Vec<usize> = (0..b.len).filter(|&j| erased[nb * j + i]).collect();
        let result = if marks.len() <= b.parity {
            rs::correct(&mut block, b.parity, &marks).or_else(|_| {
                // The frame hints can be wrong: errors alone, from the codewords as read.
                block = (0..b.len).map(|j| cws[nb * j + i]).collect();
                rs::correct(&mut block, b.parity, &[])
            })
        } else {
            rs::correct(&mut block, b.parity, &[])
        };
        corrected += result.map_err(|_| DecodeError::Uncorrectable)?;
        erasures += marks.len();
        data.extend_from_slice(&block[..b.data()]);
    }
    Ok((modes::parse(&data)?, corrected, erasures))
}

/// The symbol as an image: `module_px` pixels a module (the standard asks at least 3 on a
/// display), a quiet zone of [`QUIET_ZONE`] modules, black on white.
pub fn render(symbol: &Symbol, module_px: u32) -> GrayImage {
    let m = &symbol.modules;
    let px = module_px.max(1);
    let side = (m.side() as u32 + 2 * QUIET_ZONE) * px;
    let mut img = GrayImage::from_pixel(side, side, Luma([255]));
    for y in 0..m.side() {
        for x in 0..m.side() {
            if m.get(x, y) {
                let (ox, oy) = ((x as u32 + QUIET_ZONE) * px, (y as u32 + QUIET_ZONE) * px);
                for dy in 0..px {
                    for dx in 0..px {
                        img.put_pixel(ox + dx, oy + dy, Luma([0]));
                    }
                }
            }
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_and_level_round_trips() {
        for version in tables::VERSIONS {
            for level in tables::LEVELS.filter(|&l| tables::valid(version, l)) {
                // Most of the capacity filled in one mode, the modes taking turns: (unit,
                // bits per unit in that mode).
                let (unit, bits) = [
                    ("0123456789", 34),
                    ("GRID", 20),
                    ("grid", 20),
                    ("Ab1", 18),
                    ("网格", 26),
                    ("é", 16),
                ][(usize::from(version) + usize::from(level)) % 6];
                let cap = tables::data_codewords(version, level);
                let n = ((cap * 7).saturating_sub(60) / bits).max(1);
                let text = unit.repeat(n);
                let sym = encode(
                    &text,
                    &EncodeOptions {
                        level,
                        min_version: version,
                        exact_level: true,
                        ..Default::default()
                    },
                )
                .expect("encode");
                assert_eq!((sym.version, sym.level), (version, level), "{n} × {unit:?}");
                let d = decode(&sym.modules).expect("decode");
                assert_eq!(d.text, text, "V{version} L{level}");
                assert_eq!((d.version, d.level, d.corrected), (version, level, 0));
                let read = read::read_clean(&render(&sym, 2));
                assert_eq!(
                    read.first().map(|d| d.text.as_str()),
                    Some(text.as_str()),
                    "image V{version} L{level}"
                );
            }
        }
    }

    #[test]
    fn every_orientation_and_mirror_is_read() {
        let sym = encode(
            "YM1:6BFOXN*TS0BI$ZD4N9:9S6RCVN5+O30K3",
            &EncodeOptions::default(),
        )
        .expect("encode");
        for o in Orientation::ALL {
            let d = decode(&sym.modules.oriented(o)).expect("decode");
            assert_eq!(d.text, "YM1:6BFOXN*TS0BI$ZD4N9:9S6RCVN5+O30K3");
            assert_eq!(d.orientation, o);
        }
    }

    #[test]
    fn damaged_macromodules_are_corrected_as_erasures() {
        let text = "一码通办 YM1:6BFOXN*TS0BI$ZD4N9";
        let sym = encode(
            text,
            &EncodeOptions {
                level: 5,
                ..Default::default()
            },
        )
        .expect("encode");
        let mut m = sym.modules.clone();
        // Blot out two whole macromodules (frame and data): their frames read wrong.
        for (mx, my) in [(0usize, 0usize), (2, 1)] {
            for y in 0..6 {
                for x in 0..6 {
                    let (px, py) = (6 * mx + x, 6 * my + y);
                    m.set(px, py, !m.get(px, py));
                }
            }
        }
        let d = decode(&m).expect("decode");
        assert_eq!(d.text, text);
        assert!(d.erasures >= 4, "{d:?}");
    }

    #[test]
    fn hostile_grids_are_clean_misses() {
        assert!(matches!(
            decode(&Modules::new(20)),
            Err(DecodeError::BadSize(20))
        ));
        assert!(decode(&Modules::new(30)).is_err());
        let noise = Modules::from_fn(54, |x, y| (x * 7919 + y * 104_729) % 3 == 0);
        assert!(decode(&noise).is_err());
        // Frames and layer ids right, every codeword wrong.
        let sym = encode("HELLO", &EncodeOptions::default()).expect("encode");
        let mut m = sym.modules.clone();
        let n = tables::macromodules(sym.version);
        for y in 0..n {
            for x in 0..n {
                let (layer, low, high, _) = layout::read(&m, x, y);
                layout::place(&mut m, x, y, layer, low ^ 0x55, high ^ 0x2A);
            }
        }
        assert!(matches!(decode(&m), Err(DecodeError::Uncorrectable)));
    }

    /// Texts of one kind: ASCII, the YM1 alphabet, Chinese (GB 2312), anything (bytes).
    fn texts() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        const YM1: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";
        const HANZI: &[char] = &[
            '一', '码', '通', '办', '政', '务', '服', '网', '格', '矩', '阵', '北', '京', '区',
            '号',
        ];
        prop_oneof![
            proptest::collection::vec(0x20u8..0x7F, 0..120)
                .prop_map(|b| String::from_utf8(b).expect("ASCII")),
            proptest::collection::vec(proptest::sample::select(YM1), 0..400)
                .prop_map(|b| String::from_utf8(b).expect("ASCII")),
            proptest::collection::vec(
                prop_oneof![
                    proptest::sample::select(HANZI),
                    proptest::char::range('0', '9'),
                    Just(' ')
                ],
                0..80
            )
            .prop_map(|c| c.into_iter().collect()),
            proptest::collection::vec(any::<char>(), 0..60).prop_map(|c| c.into_iter().collect()),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]
        #[test]
        fn random_texts_round_trip_at_every_level(text in texts(), level in 1u8..=5) {
            let Ok(sym) = encode(&text, &EncodeOptions { level, ..Default::default() }) else {
                // Only a text beyond version 13 may fail, and then it is long.
                proptest::prop_assert!(text.len() > 300, "{text:?}");
                return Ok(());
            };
            let d = decode(&sym.modules).expect("decode");
            proptest::prop_assert_eq!(&d.text, &text);
            proptest::prop_assert_eq!((d.version, d.level), (sym.version, sym.level));
            proptest::prop_assert!(sym.level >= level);
        }

        #[test]
        fn random_texts_round_trip_through_an_image(text in texts()) {
            if let Ok(sym) = encode(&text, &EncodeOptions::default()) {
                let found = read::read_clean(&render(&sym, 2));
                proptest::prop_assert_eq!(found.first().map(|d| d.text.as_str()), Some(text.as_str()));
            }
        }
    }

    #[test]
    fn rendering_has_the_quiet_zone_and_integer_modules() {
        let sym = encode("HELLO", &EncodeOptions::default()).expect("encode");
        let img = render(&sym, 3);
        assert_eq!(img.width(), (sym.modules.side() as u32 + 12) * 3);
        assert!(
            (0..18).all(|i| img.get_pixel(i, i).0[0] == 255),
            "quiet zone"
        );
        // The corner macromodule's frame is dark.
        assert_eq!(img.get_pixel(18, 18).0[0], 0);
    }
}
