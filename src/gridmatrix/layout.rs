//! Where everything sits in a Grid Matrix symbol: (2V+1)² macromodules of 6×6 modules, each a
//! 1-module frame — dark where the macromodule's (x + y) is even, a checkerboard of frames —
//! around 4×4 bits: the 2-bit layer id, then 14 data bits holding two 7-bit codewords.
//! Codewords are placed from the centre macromodule outwards, ring by ring, each ring walked
//! clockwise from the cell right of its top-left corner.

/// A square of modules, row-major, `true` = dark.
#[derive(Clone, PartialEq, Eq)]
pub struct Modules {
    side: usize,
    dark: Vec<bool>,
}

impl std::fmt::Debug for Modules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "Modules {}×{}", self.side, self.side)?;
        for y in 0..self.side {
            let row: String = (0..self.side)
                .map(|x| if self.get(x, y) { '#' } else { '.' })
                .collect();
            writeln!(f, "{row}")?;
        }
        Ok(())
    }
}

/// One of the eight symmetries of the square: a rotation by `quarter_turns` × 90° after an
/// optional mirror (left ↔ right).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Orientation {
    pub mirrored: bool,
    pub quarter_turns: u8,
}

impl Orientation {
    pub const ALL: [Orientation; 8] = [
        Orientation {
            mirrored: false,
            quarter_turns: 0,
        },
        Orientation {
            mirrored: false,
            quarter_turns: 1,
        },
        Orientation {
            mirrored: false,
            quarter_turns: 2,
        },
        Orientation {
            mirrored: false,
            quarter_turns: 3,
        },
        Orientation {
            mirrored: true,
            quarter_turns: 0,
        },
        Orientation {
            mirrored: true,
            quarter_turns: 1,
        },
        Orientation {
            mirrored: true,
            quarter_turns: 2,
        },
        Orientation {
            mirrored: true,
            quarter_turns: 3,
        },
    ];

    /// Where the module at (x, y) of the upright symbol is in a `side`-wide image of it seen
    /// in this orientation.
    pub fn map(self, side: usize, x: usize, y: usize) -> (usize, usize) {
        let last = side - 1;
        let (mut x, mut y) = if self.mirrored { (last - x, y) } else { (x, y) };
        for _ in 0..self.quarter_turns % 4 {
            (x, y) = (last - y, x);
        }
        (x, y)
    }
}

impl Modules {
    pub fn new(side: usize) -> Modules {
        Modules {
            side,
            dark: vec![false; side * side],
        }
    }

    /// Modules from rows of `true`/`false`.
    pub fn from_fn(side: usize, f: impl Fn(usize, usize) -> bool) -> Modules {
        let mut m = Modules::new(side);
        for y in 0..side {
            for x in 0..side {
                m.dark[y * side + x] = f(x, y);
            }
        }
        m
    }

    pub fn side(&self) -> usize {
        self.side
    }

    pub fn get(&self, x: usize, y: usize) -> bool {
        self.dark[y * self.side + x]
    }

    pub fn set(&mut self, x: usize, y: usize, dark: bool) {
        self.dark[y * self.side + x] = dark;
    }

    /// The upright symbol, if this is the symbol seen in orientation `o`.
    pub fn upright(&self, o: Orientation) -> Modules {
        Modules::from_fn(self.side, |x, y| {
            let (sx, sy) = o.map(self.side, x, y);
            self.get(sx, sy)
        })
    }

    /// This symbol as seen in orientation `o`.
    pub fn oriented(&self, o: Orientation) -> Modules {
        let mut out = Modules::new(self.side);
        for y in 0..self.side {
            for x in 0..self.side {
                let (tx, ty) = o.map(self.side, x, y);
                out.set(tx, ty, self.get(x, y));
            }
        }
        out
    }
}

/// The ring of macromodule (x, y) among `n` per side: 0 is the centre.
pub fn ring(n: usize, x: usize, y: usize) -> usize {
    let from_edge = x.min(y).min(n - 1 - x).min(n - 1 - y);
    (n - 1) / 2 - from_edge
}

/// The placement index of macromodule (x, y): 0 is the centre, then each ring outwards,
/// clockwise from the cell right of the ring's top-left corner, ending on that corner. It
/// carries codewords 2·index and 2·index + 1.
pub fn macromodule_index(n: usize, x: usize, y: usize) -> usize {
    let r = x.min(y).min(n - 1 - x).min(n - 1 - y);
    let m = 2 * ((n - 1) / 2 - r) + 1;
    let b = m * m - 1;
    if m == 1 {
        0
    } else if x == r {
        b + r - y
    } else if y == r {
        b - 4 * (m - 1) + (x - r)
    } else if x == n - 1 - r {
        b - 3 * (m - 1) + (y - r)
    } else {
        b - (m - 1) - (x - r)
    }
}

/// Whether the frame of macromodule (x, y) is dark.
pub fn frame_dark(x: usize, y: usize) -> bool {
    (x + y) % 2 == 0
}

/// The 20 modules of a macromodule's frame, relative to its top-left module.
fn frame_cells() -> impl Iterator<Item = (usize, usize)> {
    (0..6)
        .flat_map(|i| [(i, 0), (i, 5)])
        .chain((1..5).flat_map(|i| [(0, i), (5, i)]))
}

/// Draws macromodule (x, y): its frame, layer id `layer` (2 bits) and the codewords `low` and
/// `high` (7 bits each: the 14 data bits are `high << 7 | low`).
pub fn place(m: &mut Modules, x: usize, y: usize, layer: u8, low: u8, high: u8) {
    let (ox, oy) = (6 * x, 6 * y);
    let dark = frame_dark(x, y);
    for (dx, dy) in frame_cells() {
        m.set(ox + dx, oy + dy, dark);
    }
    let bits: u16 =
        (u16::from(layer & 3) << 14) | (u16::from(high & 0x7F) << 7) | u16::from(low & 0x7F);
    for i in 0..16 {
        let (r, c) = (i / 4, i % 4);
        m.set(ox + 1 + c, oy + 1 + r, bits >> (15 - i) & 1 == 1);
    }
}

/// What macromodule (x, y) of an upright symbol reads: (layer id, low codeword, high
/// codeword, frame modules that disagree with the frame it should have).
pub fn read(m: &Modules, x: usize, y: usize) -> (u8, u8, u8, usize) {
    let (ox, oy) = (6 * x, 6 * y);
    let dark = frame_dark(x, y);
    let wrong = frame_cells()
        .filter(|&(dx, dy)| m.get(ox + dx, oy + dy) != dark)
        .count();
    let mut bits = 0u16;
    for i in 0..16 {
        let (r, c) = (i / 4, i % 4);
        bits = (bits << 1) | u16::from(m.get(ox + 1 + c, oy + 1 + r));
    }
    (
        (bits >> 14) as u8,
        (bits & 0x7F) as u8,
        ((bits >> 7) & 0x7F) as u8,
        wrong,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_order_starts_at_the_centre_and_walks_each_ring_clockwise() {
        let n = 5;
        let order: Vec<Vec<usize>> = (0..n)
            .map(|y| (0..n).map(|x| macromodule_index(n, x, y)).collect())
            .collect();
        assert_eq!(order[2][2], 0);
        // Ring 1 (3×3 around the centre): from the cell right of its top-left corner.
        assert_eq!(
            [
                order[1][2],
                order[1][3],
                order[2][3],
                order[3][3],
                order[3][2],
                order[3][1],
                order[2][1],
                order[1][1]
            ],
            [1, 2, 3, 4, 5, 6, 7, 8]
        );
        assert_eq!(order[0][1], 9);
        assert_eq!(order[0][0], 24);
        let mut all: Vec<usize> = order.into_iter().flatten().collect();
        all.sort_unstable();
        assert_eq!(all, (0..25).collect::<Vec<_>>());
        assert_eq!(ring(5, 0, 3), 2);
        assert_eq!(ring(5, 2, 2), 0);
    }

    #[test]
    fn a_macromodule_reads_back_what_was_placed_in_every_orientation() {
        let mut m = Modules::new(18);
        place(&mut m, 1, 1, 2, 0x55, 0x2A);
        place(&mut m, 0, 0, 3, 0x7F, 0x01);
        assert_eq!(read(&m, 1, 1), (2, 0x55, 0x2A, 0));
        assert_eq!(read(&m, 0, 0), (3, 0x7F, 0x01, 0));
        for o in Orientation::ALL {
            assert_eq!(m.oriented(o).upright(o), m, "{o:?}");
        }
        assert_ne!(m.oriented(Orientation::ALL[1]), m);
    }
}
