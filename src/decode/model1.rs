//! QR Model 1 symbols with more than one Reed–Solomon block (version 5-H, 6 M/Q/H and every
//! level from version 8): decoded with their blocks back to back, as Model 1 places them.
//!
//! Why this is written here: rxing 0.9.3 (a port of zxing-cpp from before the fix) splits every
//! symbol's codewords into blocks the Model 2 way, interleaved codeword by codeword, so these
//! Model 1 symbols fail Reed–Solomon however cleanly they are sampled. zxing-cpp fixed it
//! upstream (commit ba3b61fe, its issue #940); rxing has no release with the fix. The format
//! information, the version tables, the Reed–Solomon decoder and the bit-stream parser are
//! rxing's; the codeword placement is Model 1's (ISO/IEC 18004:2000 Annex M) as zxing-cpp
//! reads it, and the block split is the fix.

use rxing::common::BitMatrix;
use rxing::qrcode::common::{FormatInformation, Version};
use rxing::qrcode::cpp_port::decoder::{CorrectErrors, DecodeBitStream};
use rxing::qrcode::cpp_port::Type;
use rxing::qrcode::decoder::DataMask;

/// The text of `bits` (a sampled symbol, one bit a module) if it is a Model 1 symbol of more
/// than one block that decodes; none otherwise (rxing reads every other symbol itself).
pub(super) fn decode(bits: &BitMatrix) -> Option<String> {
    let dimension = bits.height();
    if bits.width() != dimension || dimension < 21 || dimension % 4 != 1 {
        return None;
    }
    let format = read_format(bits);
    if !format.isValid() || format.qr_type() != Type::Model1 {
        return None;
    }
    let version = Version::Model1((dimension - 17) / 4).ok()?;
    let level = format.error_correction_level;
    let blocks = version.getECBlocksForLevel(level);
    let parity = blocks.getECCodewordsPerBlock() as usize;
    let sizes: Vec<usize> = blocks
        .getECBlocks()
        .iter()
        .flat_map(|b| std::iter::repeat_n(b.getDataCodewords() as usize, b.getCount() as usize))
        .collect();
    if sizes.len() < 2 {
        return None;
    }
    let codewords = read_codewords(bits, &format, dimension)?;
    if codewords.len() != version.getTotalCodewords() as usize {
        return None;
    }
    // The data of each block back to back, then the parity of each block back to back.
    let total_data: usize = sizes.iter().sum();
    let (mut data_at, mut parity_at) = (0, total_data);
    let mut data = Vec::with_capacity(total_data);
    for &size in &sizes {
        let mut block = Vec::with_capacity(size + parity);
        block.extend_from_slice(codewords.get(data_at..data_at + size)?);
        block.extend_from_slice(codewords.get(parity_at..parity_at + parity)?);
        (data_at, parity_at) = (data_at + size, parity_at + parity);
        CorrectErrors(&mut block, size as u32).ok()?;
        data.extend_from_slice(&block[..size]);
    }
    let result = DecodeBitStream(&data, version, level).ok()?;
    result.isValid().then(|| result.text())
}

/// The format information from both of its copies (zxing-cpp's reading, the dark module
/// left out), either orientation.
fn read_format(bits: &BitMatrix) -> FormatInformation {
    let d = bits.height();
    let mut first = 0u32;
    let append = |acc: &mut u32, x: u32, y: u32| *acc = (*acc << 1) | u32::from(bits.get(x, y));
    for x in 0..6 {
        append(&mut first, x, 8);
    }
    append(&mut first, 7, 8);
    append(&mut first, 8, 8);
    append(&mut first, 8, 7);
    for y in (0..6).rev() {
        append(&mut first, 8, y);
    }
    let mut second = 0u32;
    for y in (d - 8..d).rev() {
        append(&mut second, 8, y);
    }
    for x in d - 8..d {
        append(&mut second, x, 8);
    }
    FormatInformation::DecodeQR(first, second)
}

/// The codewords in Model 1's placement: 8-module codewords 2 wide by 4 tall down the right
/// side and the left side, 4 wide by 2 tall across the middle, skipping the extension
/// patterns, the finders and the timing pattern.
fn read_codewords(bits: &BitMatrix, format: &FormatInformation, d: u32) -> Option<Vec<u8>> {
    let mask = DataMask::try_from(format.data_mask).ok()?;
    let bit = |x: u32, y: u32| {
        let dark = if format.isMirrored {
            bits.get(y, x)
        } else {
            bits.get(x, y)
        };
        // rxing's mask takes (row, column).
        dark != mask.isMasked(y, x)
    };
    // One codeword whose first module is (x, y), `w` modules wide.
    let codeword = |x: u32, y: u32, w: u32| -> Option<u8> {
        let mut byte = 0u8;
        for b in 0..8 {
            let (cx, cy) = (x.checked_sub(b % w)?, y.checked_sub(b / w)?);
            byte = (byte << 1) | u8::from(bit(cx, cy));
        }
        Some(byte)
    };
    let mut out = Vec::new();
    let columns = d / 4 + 1 + 2;
    for j in 0..columns {
        if j <= 1 {
            // Vertical codewords on the right side.
            let rows = (d - 8) / 4;
            for i in 0..rows {
                if j == 0 && i % 2 == 0 && i > 0 && i < rows - 1 {
                    continue; // extension pattern
                }
                out.push(codeword(d - 1 - j * 2, d - 1 - i * 4, 2)?);
            }
        } else if columns - j <= 4 {
            // Vertical codewords on the left side.
            let rows = (d - 16) / 4;
            for i in 0..rows {
                let x = (columns - j - 1) * 2 + 1 + u32::from(columns - j == 4); // timing
                out.push(codeword(x, d - 1 - 8 - i * 4, 2)?);
            }
        } else {
            // Horizontal codewords across the middle.
            let rows = d / 2;
            for i in 0..rows {
                if j == 2 && i >= rows - 4 {
                    continue; // finder pattern
                }
                if i == 0 && j % 2 == 1 && j + 1 != columns - 4 {
                    continue; // extension pattern
                }
                let x = (d - 1).checked_sub(4 + (j - 2) * 4)?;
                let y = d - 1 - i * 2 - u32::from(i >= rows - 3); // timing
                out.push(codeword(x, y, 4)?);
            }
        }
    }
    // The first codeword's top bits fall on the corner: not data.
    if let Some(first) = out.first_mut() {
        *first &= 0x0f;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rxing::qrcode::common::ErrorCorrectionLevel;

    /// The `n × n` modules of an image at 1 px a module, inside a `quiet`-module margin.
    fn modules(img: &image::GrayImage, quiet: u32, n: u32) -> BitMatrix {
        let mut bits = BitMatrix::new(n, n).expect("matrix");
        for y in 0..n {
            for x in 0..n {
                if img.get_pixel(x + quiet, y + quiet).0[0] < 128 {
                    bits.set(x, y);
                }
            }
        }
        bits
    }

    /// zxing-cpp's sample of this bug (its `test/samples/qrcode-2/#940.png`, kept in
    /// `tests/data/qr-photos`): a version 5-H Model 1 symbol (two blocks), 1 px a module with
    /// a 2-module quiet zone.
    fn sample() -> BitMatrix {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/qr-photos/qrcode-2/#940.png"
        );
        modules(&image::open(path).expect("sample").to_luma8(), 2, 37)
    }

    const TEXT: &str = "N023X-3431800-V034PG03X-3436010-A1125032918310706";

    #[test]
    fn a_two_block_model1_symbol_decodes_where_rxing_fails() {
        let bits = sample();
        assert!(rxing::qrcode::cpp_port::decoder::Decode(&bits).is_err());
        let format = read_format(&bits);
        assert_eq!(format.qr_type(), Type::Model1);
        assert_eq!(format.error_correction_level, ErrorCorrectionLevel::H);
        assert_eq!(decode(&bits).as_deref(), Some(TEXT));
    }

    #[test]
    fn errors_are_corrected_mirrored_symbols_read_and_model2_is_left_to_rxing() {
        let bits = sample();
        // A few modules wrong inside the data: Reed–Solomon mends them.
        let mut damaged = bits.clone();
        for (x, y) in [(20, 20), (21, 25), (30, 12), (12, 30), (25, 33)] {
            damaged.flip_coords(x, y);
        }
        assert_eq!(decode(&damaged).as_deref(), Some(TEXT));
        // The symbol seen in a mirror (transposed).
        let mut mirrored = BitMatrix::new(37, 37).expect("matrix");
        for y in 0..37 {
            for x in 0..37 {
                if bits.get(x, y) {
                    mirrored.set(y, x);
                }
            }
        }
        assert_eq!(decode(&mirrored).as_deref(), Some(TEXT));
        // A Model 2 symbol is not this module's to read; garbage is nothing.
        let model2 = crate::render::render("YM1:ABC", 1).expect("render");
        let m2 = modules(&model2, 4, model2.width() - 8);
        assert!(rxing::qrcode::cpp_port::decoder::Decode(&m2).is_ok());
        assert_eq!(decode(&m2), None);
        assert_eq!(decode(&BitMatrix::new(37, 37).expect("matrix")), None);
        assert_eq!(decode(&BitMatrix::new(20, 20).expect("matrix")), None);
    }
}
