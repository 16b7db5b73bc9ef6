//! The block tables of GB/T 27766 (AIMD014 Table A.1) and what follows from them: for each
//! version 1–13, the blocks a symbol's codewords form and, for each error-correction level
//! 1–5, how many of each block's codewords are parity.

/// Versions 1…13.
pub const VERSIONS: std::ops::RangeInclusive<u8> = 1..=13;
/// Error-correction levels 1…5 (≈ 10 % … 50 % parity).
pub const LEVELS: std::ops::RangeInclusive<u8> = 1..=5;

/// Codewords of the first `B1` blocks (the other `B2` blocks have one fewer).
const N1: [u16; 13] = [18, 50, 98, 81, 121, 113, 113, 116, 121, 126, 118, 125, 122];
const B1: [u16; 13] = [1, 1, 1, 2, 2, 2, 2, 3, 2, 7, 5, 10, 6];
const B2: [u16; 13] = [0, 0, 0, 0, 0, 1, 2, 2, 4, 0, 4, 0, 6];
/// (E1, B3, E2) per version and level: the first B3 blocks carry E1 parity codewords, the
/// rest E2. Level 1 does not exist at version 1.
const E1B3E2: [[(u16, u16, u16); 5]; 13] = [
    [(0, 0, 0), (3, 1, 0), (5, 1, 0), (7, 1, 0), (9, 1, 0)],
    [(5, 1, 0), (10, 1, 0), (15, 1, 0), (20, 1, 0), (25, 1, 0)],
    [(9, 1, 0), (19, 1, 0), (29, 1, 0), (39, 1, 0), (49, 1, 0)],
    [(8, 2, 0), (16, 2, 0), (24, 2, 0), (32, 2, 0), (41, 1, 40)],
    [(12, 2, 0), (24, 2, 0), (36, 2, 0), (48, 2, 0), (61, 1, 60)],
    [
        (11, 3, 0),
        (23, 1, 22),
        (34, 2, 33),
        (45, 3, 0),
        (57, 1, 56),
    ],
    [
        (12, 1, 11),
        (23, 2, 22),
        (34, 3, 33),
        (45, 4, 0),
        (57, 1, 56),
    ],
    [
        (12, 2, 11),
        (23, 5, 0),
        (35, 3, 34),
        (47, 1, 46),
        (58, 4, 57),
    ],
    [(12, 6, 0), (24, 6, 0), (36, 6, 0), (48, 6, 0), (61, 1, 60)],
    [
        (13, 4, 12),
        (26, 1, 25),
        (38, 5, 37),
        (51, 2, 50),
        (63, 7, 0),
    ],
    [
        (12, 6, 11),
        (24, 4, 23),
        (36, 2, 35),
        (47, 9, 0),
        (59, 7, 58),
    ],
    [
        (13, 5, 12),
        (25, 10, 0),
        (38, 5, 37),
        (50, 10, 0),
        (63, 5, 62),
    ],
    [
        (13, 1, 12),
        (25, 3, 24),
        (37, 5, 36),
        (49, 7, 48),
        (61, 9, 60),
    ],
];

/// One Reed–Solomon block: its codewords in all, and how many of them are parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub len: usize,
    pub parity: usize,
}

impl Block {
    pub fn data(&self) -> usize {
        self.len - self.parity
    }
}

/// Whether (version, level) is a symbol that exists.
pub fn valid(version: u8, level: u8) -> bool {
    VERSIONS.contains(&version) && LEVELS.contains(&level) && !(version == 1 && level == 1)
}

/// Macromodules per side: 2V + 1.
pub fn macromodules(version: u8) -> usize {
    2 * version as usize + 1
}

/// Modules per side: 6 + 12V (18 … 162).
pub fn side(version: u8) -> usize {
    6 * macromodules(version)
}

/// The version of a symbol `side` modules wide, if any.
pub fn version_of_side(side: usize) -> Option<u8> {
    (side >= 18 && (side - 6) % 12 == 0 && side <= 162).then(|| ((side - 6) / 12) as u8)
}

/// Codewords a symbol holds: two per macromodule.
pub fn total_codewords(version: u8) -> usize {
    2 * macromodules(version) * macromodules(version)
}

/// The blocks of (version, level), in interleaving order.
pub fn blocks(version: u8, level: u8) -> Vec<Block> {
    debug_assert!(valid(version, level));
    let v = version as usize - 1;
    let (e1, b3, e2) = E1B3E2[v][level as usize - 1];
    let (n1, b1, b2) = (N1[v] as usize, B1[v] as usize, B2[v] as usize);
    (0..b1 + b2)
        .map(|i| Block {
            len: if i < b1 { n1 } else { n1 - 1 },
            parity: if i < b3 as usize {
                e1 as usize
            } else {
                e2 as usize
            },
        })
        .collect()
}

/// Data codewords of (version, level).
pub fn data_codewords(version: u8, level: u8) -> usize {
    blocks(version, level).iter().map(Block::data).sum()
}

/// The layer id of ring `ring` (0 = the centre macromodule) at `level`: it tells a reader the
/// level and, agreeing ring by ring, the orientation.
pub fn layer_id(ring: usize, level: u8) -> u8 {
    if level == 1 {
        3 - (ring % 4) as u8
    } else {
        ((ring + 5 - level as usize) % 4) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_fill_every_codeword_and_capacities_match_the_standard() {
        for v in VERSIONS {
            for l in LEVELS.filter(|&l| valid(v, l)) {
                let total: usize = blocks(v, l).iter().map(|b| b.len).sum();
                assert_eq!(total, total_codewords(v), "V{v} L{l}");
            }
        }
        // The standard's own figures (AIMD014 Table 1, data codewords at 90 % … 50 %).
        assert_eq!(data_codewords(1, 2), 15);
        assert_eq!(data_codewords(4, 5), 81);
        assert_eq!(data_codewords(6, 3), 237);
        assert_eq!(data_codewords(13, 1), 1313);
        assert_eq!(data_codewords(13, 5), 729);
        assert!(!valid(1, 1));
    }

    #[test]
    fn layer_ids_of_the_first_rings_name_the_level() {
        let pairs: Vec<(u8, u8)> = LEVELS.map(|l| (layer_id(0, l), layer_id(1, l))).collect();
        assert_eq!(pairs, vec![(3, 2), (3, 0), (2, 3), (1, 2), (0, 1)]);
        assert_eq!(version_of_side(30), Some(2));
        assert_eq!(version_of_side(31), None);
    }
}
