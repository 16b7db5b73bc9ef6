//! The data modes: the bit stream inside a symbol's data codewords, encoded (choosing modes by
//! dynamic programming so the stream is as short as the modes allow) and parsed.
//!
//! | mode | unit | switching in | codes |
//! |---|---|---|---|
//! | Chinese | 13 bits | 1 / 8160+ | GB 2312 char = 0x60·row + col; 7776 CR LF; 7777+b a byte; 8033+d two digits; 8160 end; 8161–8165 → Numeral, Lower, Upper, Mixed, Byte |
//! | Numeral | 10 bits | 2 | a 2-bit count of padding digits in the last triple, then triples 0–999; 1000+3k+p puts `" +-.,"[k]` into the next triple at position p; 1015+p CR LF; 1018 end; 1019–1023 → Chinese, Lower, Upper, Mixed, Byte |
//! | Upper / Lower | 5 bits | 4 / 3 | letters 0–25, 26 space, 27 end, 28 → Chinese, 29 → Numeral, 30 the other case, 31 + 2 bits: 0 → Mixed, 1 shift, 2 → Byte |
//! | Mixed | 6 bits | 5 | 0–9, A–Z 10–35, a–z 36–61, 62 space, 63 + 4 bits: 0 end, 1 Chinese, 2 Numeral, 3 Lower, 4 Upper, 6 shift, 7 → Byte |
//! | Byte | 8 bits | 7 | 9-bit count − 1 (≤ 512), the bytes, then a 4-bit mode indicator (0 = end) |
//!
//! A shifted character is 6 bits: 0–31 the control characters, 32–63
//! `` !"#$%&'()*+,-./:;<=>?@[\]^_`{|}~ ``. At the start (and after an end of data) a 4-bit
//! indicator also announces ECI (12), structured append (9) and reader initialisation (10).
//!
//! **Invariant:** parsing is total and bounded: every step consumes bits, a stream that runs
//! out or names an unassigned code is a [`ParseError`], never a panic.

/// Characters Numeral mode can insert into a triple.
const NUMERAL_PUNCT: &[u8; 5] = b" +-.,";
/// The 32 printable characters of the shift table (codes 32–63).
const SHIFT_PRINTABLE: &[u8; 32] = b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// The modes, with their 4-bit indicators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Mode {
    Chinese,
    Numeral,
    Lower,
    Upper,
    Mixed,
    Byte,
}

const MODES: [Mode; 6] = [
    Mode::Chinese,
    Mode::Numeral,
    Mode::Lower,
    Mode::Upper,
    Mode::Mixed,
    Mode::Byte,
];

impl Mode {
    fn index(self) -> usize {
        self as usize
    }
    fn indicator(self) -> u32 {
        match self {
            Mode::Chinese => 1,
            Mode::Numeral => 2,
            Mode::Lower => 3,
            Mode::Upper => 4,
            Mode::Mixed => 5,
            Mode::Byte => 7,
        }
    }
}

/// (code, bits) that switch from mode `from` (None: the start) to `to`.
fn switch_code(from: Option<Mode>, to: Mode) -> (u32, u32) {
    use Mode::*;
    match from {
        None | Some(Byte) => (to.indicator(), 4),
        Some(Chinese) => (
            match to {
                Numeral => 8161,
                Lower => 8162,
                Upper => 8163,
                Mixed => 8164,
                Byte => 8165,
                Chinese => unreachable!("no switch to the same mode"),
            },
            13,
        ),
        Some(Numeral) => (
            match to {
                Chinese => 1019,
                Lower => 1020,
                Upper => 1021,
                Mixed => 1022,
                Byte => 1023,
                Numeral => unreachable!("no switch to the same mode"),
            },
            10,
        ),
        Some(Lower) | Some(Upper) => match to {
            Chinese => (28, 5),
            Numeral => (29, 5),
            Lower | Upper => (30, 5),
            Mixed => (124, 7),
            Byte => (126, 7),
        },
        Some(Mixed) => (
            match to {
                Chinese => 1009,
                Numeral => 1010,
                Lower => 1011,
                Upper => 1012,
                Byte => 1015,
                Mixed => unreachable!("no switch to the same mode"),
            },
            10,
        ),
    }
}

/// (code, bits) of "end of data" in mode `m`.
fn end_code(m: Mode) -> (u32, u32) {
    match m {
        Mode::Chinese => (8160, 13),
        Mode::Numeral => (1018, 10),
        Mode::Lower | Mode::Upper => (27, 5),
        Mode::Mixed => (1008, 10),
        Mode::Byte => (0, 4),
    }
}

/// Bits appended MSB first.
#[derive(Debug, Default, Clone)]
pub struct BitWriter {
    bits: Vec<bool>,
}

impl BitWriter {
    pub fn push(&mut self, value: u32, n: u32) {
        for i in (0..n).rev() {
            self.bits.push(value >> i & 1 == 1);
        }
    }
    fn set(&mut self, at: usize, value: u32, n: u32) {
        for i in 0..n as usize {
            self.bits[at + i] = value >> (n as usize - 1 - i) & 1 == 1;
        }
    }
    pub fn len(&self) -> usize {
        self.bits.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bits.is_empty()
    }
    /// The stream as 7-bit codewords, zero-padded to a codeword boundary.
    pub fn codewords(&self) -> Vec<u8> {
        self.bits
            .chunks(7)
            .map(|c| {
                c.iter()
                    .chain(std::iter::repeat(&false))
                    .take(7)
                    .fold(0u8, |acc, &b| acc << 1 | u8::from(b))
            })
            .collect()
    }
}

/// Bits read MSB first from 7-bit codewords.
#[derive(Debug)]
struct BitReader<'a> {
    codewords: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn remaining(&self) -> usize {
        self.codewords.len() * 7 - self.pos
    }
    fn read(&mut self, n: u32) -> Result<u32, ParseError> {
        if self.remaining() < n as usize {
            return Err(ParseError::Truncated);
        }
        let mut v = 0u32;
        for _ in 0..n {
            let cw = self.codewords[self.pos / 7];
            v = v << 1 | u32::from(cw >> (6 - self.pos % 7) & 1);
            self.pos += 1;
        }
        Ok(v)
    }
}

/// Why a bit stream does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the data stream ends inside a character")]
    Truncated,
    #[error("code {code} is not assigned in {mode}")]
    Unassigned { mode: &'static str, code: u32 },
    #[error("a numeral triple cannot carry the padding or punctuation it declares")]
    BadNumeral,
}

/// What a symbol's data says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Each run of bytes with the ECI it is in (`None`: the default, GB 2312).
    pub segments: Vec<(Option<u32>, Vec<u8>)>,
    /// Structured append: (file id, count, index), 1-based.
    pub structured_append: Option<(u8, u8, u8)>,
    pub reader_init: bool,
}

impl Message {
    /// The message as text: each segment decoded in its character set (GB 2312 — read as
    /// GB 18030, its superset — unless an ECI says otherwise).
    pub fn text(&self) -> String {
        self.segments
            .iter()
            .map(|(eci, bytes)| decode_eci(*eci, bytes))
            .collect()
    }
}

/// Bytes in the character set of an ECI.
fn decode_eci(eci: Option<u32>, bytes: &[u8]) -> String {
    let enc = match eci {
        None | Some(29) | Some(31) | Some(32) => encoding_rs::GB18030,
        Some(1) | Some(3) => return bytes.iter().map(|&b| char::from(b)).collect(),
        Some(n @ 4..=18) => {
            let label = format!("iso-8859-{}", n - 2);
            encoding_rs::Encoding::for_label(label.as_bytes()).unwrap_or(encoding_rs::WINDOWS_1252)
        }
        Some(20) => encoding_rs::SHIFT_JIS,
        Some(21) => encoding_rs::WINDOWS_1250,
        Some(22) => encoding_rs::WINDOWS_1251,
        Some(23) => encoding_rs::WINDOWS_1252,
        Some(24) => encoding_rs::WINDOWS_1256,
        Some(25) => encoding_rs::UTF_16BE,
        Some(28) => encoding_rs::BIG5,
        Some(30) => encoding_rs::EUC_KR,
        _ => encoding_rs::UTF_8,
    };
    enc.decode_without_bom_handling(bytes).0.into_owned()
}

fn shifted(code: u32) -> u8 {
    if code < 32 {
        code as u8
    } else {
        SHIFT_PRINTABLE[(code - 32) as usize]
    }
}

fn shift_code(b: u8) -> Option<u32> {
    if b < 32 {
        Some(u32::from(b))
    } else {
        SHIFT_PRINTABLE
            .iter()
            .position(|&c| c == b)
            .map(|i| i as u32 + 32)
    }
}

/// Parses the data codewords of a symbol.
pub fn parse(codewords: &[u8]) -> Result<Message, ParseError> {
    let mut r = BitReader { codewords, pos: 0 };
    let mut msg = Message::default();
    let mut eci: Option<u32> = None;
    let mut out: Vec<u8> = Vec::new();
    let mut mode: Option<Mode> = None;
    // Numeral state: padding of the last triple, and that triple's start in `out`.
    let mut numeral_pad = 0usize;
    let mut last_triple: Option<(usize, usize)> = None; // (start in out, digits in it)
    let close_numeral = |out: &mut Vec<u8>, last: &mut Option<(usize, usize)>, pad: usize| {
        if let Some((start, digits)) = last.take() {
            if pad > digits {
                return Err(ParseError::BadNumeral);
            }
            // The padding digits are the last `pad` digits of the triple.
            let mut removed = 0;
            let mut i = out.len();
            while removed < pad && i > start {
                i -= 1;
                if out[i].is_ascii_digit() {
                    out.remove(i);
                    removed += 1;
                } else {
                    return Err(ParseError::BadNumeral);
                }
            }
        }
        Ok(())
    };
    loop {
        match mode {
            None => {
                // An indicator; the stream may end in zero padding shorter than one.
                if r.remaining() < 4 {
                    break;
                }
                let ind = r.read(4)?;
                match ind {
                    0 => break,
                    1 => mode = Some(Mode::Chinese),
                    2 => {
                        mode = Some(Mode::Numeral);
                        numeral_pad = r.read(2)? as usize;
                    }
                    3 => mode = Some(Mode::Lower),
                    4 => mode = Some(Mode::Upper),
                    5 => mode = Some(Mode::Mixed),
                    7 => mode = Some(Mode::Byte),
                    9 => {
                        let id = r.read(8)? as u8;
                        let count = r.read(4)? as u8 + 1;
                        let index = r.read(4)? as u8 + 1;
                        msg.structured_append = Some((id, count, index));
                    }
                    10 => msg.reader_init = true,
                    12 => {
                        let value = if r.read(1)? == 0 {
                            r.read(10)?
                        } else if r.read(1)? == 0 {
                            r.read(15)?
                        } else {
                            r.read(20)?
                        };
                        if !out.is_empty() {
                            msg.segments.push((eci, std::mem::take(&mut out)));
                        }
                        eci = Some(value);
                    }
                    code => {
                        return Err(ParseError::Unassigned {
                            mode: "the mode indicator",
                            code,
                        })
                    }
                }
            }
            Some(Mode::Chinese) => {
                let v = r.read(13)?;
                match v {
                    0..=7775 => {
                        let (row, col) = (v / 0x60, v % 0x60);
                        if col == 0 || col > 94 || row > 80 {
                            return Err(ParseError::Unassigned {
                                mode: "Chinese",
                                code: v,
                            });
                        }
                        let c1 = if row <= 8 { 0xA1 + row } else { 0xB0 + row - 9 };
                        out.push(c1 as u8);
                        out.push((0xA0 + col) as u8);
                    }
                    7776 => out.extend_from_slice(b"\r\n"),
                    7777..=8032 => out.push((v - 7777) as u8),
                    8033..=8132 => {
                        let d = v - 8033;
                        out.push(b'0' + (d / 10) as u8);
                        out.push(b'0' + (d % 10) as u8);
                    }
                    8160 => mode = None,
                    8161 => {
                        mode = Some(Mode::Numeral);
                        numeral_pad = r.read(2)? as usize;
                    }
                    8162 => mode = Some(Mode::Lower),
                    8163 => mode = Some(Mode::Upper),
                    8164 => mode = Some(Mode::Mixed),
                    8165 => mode = Some(Mode::Byte),
                    code => {
                        return Err(ParseError::Unassigned {
                            mode: "Chinese",
                            code,
                        })
                    }
                }
            }
            Some(Mode::Numeral) => {
                let v = r.read(10)?;
                let mut insert: Option<(Vec<u8>, usize)> = None;
                let v = match v {
                    1000..=1014 => {
                        insert = Some((
                            vec![NUMERAL_PUNCT[((v - 1000) / 3) as usize]],
                            ((v - 1000) % 3) as usize,
                        ));
                        r.read(10)?
                    }
                    1015..=1017 => {
                        insert = Some((b"\r\n".to_vec(), (v - 1015) as usize));
                        r.read(10)?
                    }
                    other => other,
                };
                match v {
                    0..=999 => {
                        let digits = [
                            b'0' + (v / 100) as u8,
                            b'0' + (v / 10 % 10) as u8,
                            b'0' + (v % 10) as u8,
                        ];
                        let start = out.len();
                        match insert {
                            Some((punct, p)) => {
                                out.extend_from_slice(&digits[..p]);
                                out.extend_from_slice(&punct);
                                out.extend_from_slice(&digits[p..]);
                            }
                            None => out.extend_from_slice(&digits),
                        }
                        last_triple = Some((start, 3));
                    }
                    _ if insert.is_some() => return Err(ParseError::BadNumeral),
                    1018..=1023 => {
                        close_numeral(&mut out, &mut last_triple, numeral_pad)?;
                        mode = match v {
                            1018 => None,
                            1019 => Some(Mode::Chinese),
                            1020 => Some(Mode::Lower),
                            1021 => Some(Mode::Upper),
                            1022 => Some(Mode::Mixed),
                            _ => Some(Mode::Byte),
                        };
                    }
                    code => {
                        return Err(ParseError::Unassigned {
                            mode: "Numeral",
                            code,
                        })
                    }
                }
            }
            Some(m @ (Mode::Lower | Mode::Upper)) => {
                let v = r.read(5)?;
                match v {
                    0..=25 => out.push(if m == Mode::Upper { b'A' } else { b'a' } + v as u8),
                    26 => out.push(b' '),
                    27 => mode = None,
                    28 => mode = Some(Mode::Chinese),
                    29 => {
                        mode = Some(Mode::Numeral);
                        numeral_pad = r.read(2)? as usize;
                    }
                    30 => {
                        mode = Some(if m == Mode::Upper {
                            Mode::Lower
                        } else {
                            Mode::Upper
                        })
                    }
                    _ => match r.read(2)? {
                        0 => mode = Some(Mode::Mixed),
                        1 => out.push(shifted(r.read(6)?)),
                        2 => mode = Some(Mode::Byte),
                        code => {
                            return Err(ParseError::Unassigned {
                                mode: "Upper/Lower",
                                code: 124 + code,
                            })
                        }
                    },
                }
            }
            Some(Mode::Mixed) => {
                let v = r.read(6)?;
                match v {
                    0..=9 => out.push(b'0' + v as u8),
                    10..=35 => out.push(b'A' + (v - 10) as u8),
                    36..=61 => out.push(b'a' + (v - 36) as u8),
                    62 => out.push(b' '),
                    _ => match r.read(4)? {
                        0 => mode = None,
                        1 => mode = Some(Mode::Chinese),
                        2 => {
                            mode = Some(Mode::Numeral);
                            numeral_pad = r.read(2)? as usize;
                        }
                        3 => mode = Some(Mode::Lower),
                        4 => mode = Some(Mode::Upper),
                        6 => out.push(shifted(r.read(6)?)),
                        7 => mode = Some(Mode::Byte),
                        code => {
                            return Err(ParseError::Unassigned {
                                mode: "Mixed",
                                code: 1008 + code,
                            })
                        }
                    },
                }
            }
            Some(Mode::Byte) => {
                let count = r.read(9)? as usize + 1;
                if r.remaining() < 8 * count {
                    return Err(ParseError::Truncated);
                }
                for _ in 0..count {
                    out.push(r.read(8)? as u8);
                }
                // A 4-bit indicator follows (0 = end of data).
                mode = None;
            }
        }
        if let Some(Mode::Numeral) = mode {
        } else {
            last_triple = None;
        }
    }
    if !out.is_empty() || msg.segments.is_empty() {
        msg.segments.push((eci, out));
    }
    Ok(msg)
}

/// One unit of input: an ASCII/byte value, or a GB 2312 character as its two bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Byte(u8),
    Hanzi(u8, u8),
}

impl Unit {
    fn byte(self) -> Option<u8> {
        match self {
            Unit::Byte(b) => Some(b),
            Unit::Hanzi(..) => None,
        }
    }
}

/// The units of `text`: GB 2312 when every character has one (no ECI needed), else its
/// UTF-8 bytes under ECI 26.
fn units(text: &str) -> (Option<u32>, Vec<Unit>) {
    let mut out = Vec::with_capacity(text.len());
    for ch in text.chars() {
        if ch.is_ascii() {
            out.push(Unit::Byte(ch as u8));
            continue;
        }
        let mut buf = [0u8; 4];
        let (bytes, _, unmappable) = encoding_rs::GBK.encode(ch.encode_utf8(&mut buf));
        match bytes.as_ref() {
            [c1, c2]
                if !unmappable
                    && ((0xA1..=0xA9).contains(c1) || (0xB0..=0xF7).contains(c1))
                    && (0xA1..=0xFE).contains(c2) =>
            {
                out.push(Unit::Hanzi(*c1, *c2))
            }
            _ => return (Some(26), text.bytes().map(Unit::Byte).collect()),
        }
    }
    (None, out)
}

/// A piece of the plan: `len` units encoded in `mode`.
#[derive(Debug, Clone, Copy)]
struct Step {
    mode: Mode,
    len: usize,
}

/// The tokens mode `m` can encode at position `i`: (units consumed, bits, whether the token
/// must be the last of its Numeral segment).
fn tokens(m: Mode, u: &[Unit], i: usize, out: &mut Vec<(usize, u32, bool)>) {
    out.clear();
    let b = |k: usize| u.get(i + k).and_then(|x| x.byte());
    let is_digit = |k: usize| b(k).is_some_and(|c| c.is_ascii_digit());
    match m {
        Mode::Chinese => {
            // 13 bits: one hanzi, a CR LF pair, two digits, or any one byte.
            let pair = !matches!(u[i], Unit::Hanzi(..))
                && ((b(0) == Some(b'\r') && b(1) == Some(b'\n')) || (is_digit(0) && is_digit(1)));
            out.push((if pair { 2 } else { 1 }, 13, false));
        }
        Mode::Byte => out.push((
            1,
            if matches!(u[i], Unit::Hanzi(..)) {
                16
            } else {
                8
            },
            false,
        )),
        Mode::Upper | Mode::Lower => {
            if let Some(c) = b(0) {
                let own = if m == Mode::Upper {
                    c.is_ascii_uppercase()
                } else {
                    c.is_ascii_lowercase()
                };
                if own || c == b' ' {
                    out.push((1, 5, false));
                } else if shift_code(c).is_some() {
                    out.push((1, 7 + 6, false));
                }
            }
        }
        Mode::Mixed => {
            if let Some(c) = b(0) {
                if c.is_ascii_alphanumeric() || c == b' ' {
                    out.push((1, 6, false));
                } else if shift_code(c).is_some() {
                    out.push((1, 10 + 6, false));
                }
            }
        }
        Mode::Numeral => {
            // A group: up to 3 digits with at most one inserted character (or CR LF) placed
            // before one of them; only a segment's last group may have fewer than 3 digits.
            let mut digits = 0;
            let mut extra: Option<usize> = None; // units of the inserted character
            let mut k = 0;
            loop {
                if digits == 3 {
                    break;
                }
                if is_digit(k) {
                    digits += 1;
                    k += 1;
                    let bits = if extra.is_some() { 20 } else { 10 };
                    out.push((k, bits, digits < 3));
                    continue;
                }
                if extra.is_some() || digits == 0 && k > 0 {
                    break;
                }
                if b(k).is_some_and(|c| NUMERAL_PUNCT.contains(&c)) && digits < 3 {
                    extra = Some(1);
                    k += 1;
                } else if b(k) == Some(b'\r') && b(k + 1) == Some(b'\n') && digits < 3 {
                    extra = Some(2);
                    k += 2;
                } else {
                    break;
                }
                // The inserted character must be followed by a digit of the same group.
                if !is_digit(k) {
                    break;
                }
            }
        }
    }
}

/// Bits to enter mode `to` from `from` (None: the start), including what the mode's segment
/// begins with (the Numeral padding count, the Byte count).
fn entry_bits(from: Option<Mode>, to: Mode) -> u32 {
    switch_code(from, to).1
        + match to {
            Mode::Numeral => 2,
            Mode::Byte => 9,
            _ => 0,
        }
}

/// The shortest mode plan for `u` (dynamic programming over positions and modes, exact bit
/// costs; a Numeral segment may end only after its short last group).
fn plan(u: &[Unit]) -> Vec<Step> {
    const INF: u32 = u32::MAX / 4;
    let n = u.len();
    let states = MODES.len() + 1; // the 6 modes, and Numeral "closed" (after a short group)
    let closed = MODES.len();
    // cost[i][s]: bits for u[..i], in state s after it; back[i][s]: (previous i, state, mode).
    let mut cost = vec![vec![INF; states]; n + 1];
    let mut back: Vec<Vec<Option<(usize, usize)>>> = vec![vec![None; states]; n + 1];
    let mut toks = Vec::new();
    let mode_of = |s: usize| if s == closed { Mode::Numeral } else { MODES[s] };
    // Entering a mode before the first unit.
    for m in MODES {
        cost[0][m.index()] = entry_bits(None, m);
    }
    for i in 0..=n {
        // Switches at position i (from a settled state to another mode).
        if i > 0 {
            for from in 0..states {
                if cost[i][from] >= INF {
                    continue;
                }
                for to in MODES {
                    let fm = mode_of(from);
                    if to == fm {
                        continue;
                    }
                    let c = cost[i][from] + entry_bits(Some(fm), to);
                    if c < cost[i][to.index()] {
                        cost[i][to.index()] = c;
                        back[i][to.index()] = Some((i, from));
                    }
                }
            }
        }
        if i == n {
            break;
        }
        for m in MODES {
            let s = m.index();
            if cost[i][s] >= INF {
                continue;
            }
            tokens(m, u, i, &mut toks);
            for &(len, bits, short) in &toks {
                let to = if short { closed } else { s };
                let c = cost[i][s] + bits;
                if c < cost[i + len][to] {
                    cost[i + len][to] = c;
                    back[i + len][to] = Some((i, s));
                }
            }
        }
    }
    let end = (0..states)
        .filter(|&s| cost[n][s] < INF)
        .min_by_key(|&s| cost[n][s] + end_code(mode_of(s)).1)
        .unwrap_or(MODES.len() - 1);
    // Walk back: token steps (same position change) become plan steps.
    let mut steps: Vec<Step> = Vec::new();
    let (mut i, mut s) = (n, end);
    while let Some((pi, ps)) = back[i][s] {
        if pi < i {
            let mode = mode_of(ps);
            match steps.last_mut() {
                Some(last) if last.mode == mode && ps != closed => last.len += i - pi,
                _ => steps.push(Step { mode, len: i - pi }),
            }
        }
        i = pi;
        s = ps;
        if i == 0 && back[i][s].is_none() {
            break;
        }
    }
    steps.reverse();
    // Merge adjacent steps of one mode (the walk can split a segment at switch points).
    let mut merged: Vec<Step> = Vec::new();
    for st in steps {
        match merged.last_mut() {
            Some(last) if last.mode == st.mode && st.mode != Mode::Numeral => last.len += st.len,
            _ => merged.push(st),
        }
    }
    merged
}

/// Encodes `text` into a bit stream: modes chosen for the fewest bits, an ECI when the text
/// is not all GB 2312. Structured append, when given, is (file id, count, index).
pub fn encode(text: &str, structured_append: Option<(u8, u8, u8)>) -> BitWriter {
    let (eci, u) = units(text);
    let mut w = BitWriter::default();
    if let Some((id, count, index)) = structured_append {
        w.push(9, 4);
        w.push(u32::from(id), 8);
        w.push(u32::from(count.saturating_sub(1)), 4);
        w.push(u32::from(index.saturating_sub(1)), 4);
    }
    if let Some(e) = eci {
        w.push(12, 4);
        w.push(e, 11); // `0` + 10 bits
    }
    let steps = plan(&u);
    let mut mode: Option<Mode> = None;
    let mut i = 0;
    for st in &steps {
        let seg = &u[i..i + st.len];
        i += st.len;
        if mode == Some(st.mode) {
            // Two Numeral segments in a row (the plan can switch away and back at one
            // position): leave through Mixed and come back.
            let (c1, b1) = switch_code(mode, Mode::Mixed);
            w.push(c1, b1);
            let (c2, b2) = switch_code(Some(Mode::Mixed), st.mode);
            w.push(c2, b2);
        } else {
            let (code, bits) = switch_code(mode, st.mode);
            w.push(code, bits);
        }
        mode = Some(st.mode);
        encode_segment(&mut w, st.mode, seg);
    }
    match mode {
        Some(m) => {
            let (code, bits) = end_code(m);
            w.push(code, bits);
        }
        None => w.push(0, 4),
    }
    w
}

fn encode_segment(w: &mut BitWriter, mode: Mode, seg: &[Unit]) {
    match mode {
        Mode::Chinese => {
            let mut i = 0;
            while i < seg.len() {
                let b = |k: usize| seg.get(i + k).and_then(|x| x.byte());
                match seg[i] {
                    Unit::Hanzi(c1, c2) => {
                        let row = if c1 <= 0xA9 { c1 - 0xA1 } else { c1 - 0xB0 + 9 };
                        w.push(0x60 * u32::from(row) + u32::from(c2 - 0xA0), 13);
                        i += 1;
                    }
                    Unit::Byte(b'\r') if b(1) == Some(b'\n') => {
                        w.push(7776, 13);
                        i += 2;
                    }
                    Unit::Byte(d)
                        if d.is_ascii_digit() && b(1).is_some_and(|c| c.is_ascii_digit()) =>
                    {
                        let e = b(1).unwrap_or(b'0');
                        w.push(8033 + 10 * u32::from(d - b'0') + u32::from(e - b'0'), 13);
                        i += 2;
                    }
                    Unit::Byte(x) => {
                        w.push(7777 + u32::from(x), 13);
                        i += 1;
                    }
                }
            }
        }
        Mode::Byte => {
            // Blocks of at most 512 bytes, each announced by its count; a double-byte unit
            // counts as two bytes.
            let bytes: Vec<u8> = seg
                .iter()
                .flat_map(|u| match *u {
                    Unit::Byte(b) => vec![b],
                    Unit::Hanzi(a, b) => vec![a, b],
                })
                .collect();
            for (k, chunk) in bytes.chunks(512).enumerate() {
                if k > 0 {
                    w.push(7, 4); // another Byte block
                }
                w.push(chunk.len() as u32 - 1, 9);
                for &b in chunk {
                    w.push(u32::from(b), 8);
                }
            }
        }
        Mode::Upper | Mode::Lower => {
            for u in seg {
                let c = u.byte().unwrap_or(b'?');
                if c == b' ' {
                    w.push(26, 5);
                } else if (mode == Mode::Upper && c.is_ascii_uppercase())
                    || (mode == Mode::Lower && c.is_ascii_lowercase())
                {
                    w.push(u32::from(c.to_ascii_uppercase() - b'A'), 5);
                } else {
                    w.push(125, 7);
                    w.push(shift_code(c).unwrap_or(0), 6);
                }
            }
        }
        Mode::Mixed => {
            for u in seg {
                let c = u.byte().unwrap_or(b'?');
                let v = match c {
                    b'0'..=b'9' => Some(u32::from(c - b'0')),
                    b'A'..=b'Z' => Some(u32::from(c - b'A') + 10),
                    b'a'..=b'z' => Some(u32::from(c - b'a') + 36),
                    b' ' => Some(62),
                    _ => None,
                };
                match v {
                    Some(v) => w.push(v, 6),
                    None => {
                        w.push(1014, 10);
                        w.push(shift_code(c).unwrap_or(0), 6);
                    }
                }
            }
        }
        Mode::Numeral => {
            let pad_at = w.len();
            w.push(0, 2);
            let mut i = 0;
            let mut last_digits = 3;
            while i < seg.len() {
                let mut digits = Vec::with_capacity(3);
                let mut insert: Option<(u32, usize)> = None;
                while digits.len() < 3 && i < seg.len() {
                    let c = seg[i].byte().unwrap_or(b'0');
                    if c.is_ascii_digit() {
                        digits.push(c - b'0');
                        i += 1;
                    } else if insert.is_none() {
                        if c == b'\r' {
                            insert = Some((1015 + digits.len() as u32, 0));
                            i += 2;
                        } else {
                            let k = NUMERAL_PUNCT.iter().position(|&p| p == c).unwrap_or(0);
                            insert = Some((1000 + 3 * k as u32 + digits.len() as u32, 0));
                            i += 1;
                        }
                    } else {
                        break;
                    }
                }
                last_digits = digits.len();
                while digits.len() < 3 {
                    digits.push(0);
                }
                if let Some((code, _)) = insert {
                    w.push(code, 10);
                }
                w.push(
                    100 * u32::from(digits[0]) + 10 * u32::from(digits[1]) + u32::from(digits[2]),
                    10,
                );
            }
            w.set(pad_at, 3 - last_digits as u32, 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) -> Message {
        let w = encode(text, None);
        let m = parse(&w.codewords()).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(m.text(), text, "{text:?}");
        m
    }

    #[test]
    fn every_mode_round_trips() {
        for t in [
            "",
            "HELLO WORLD",
            "hello world",
            "Hello World 123",
            "0123456789",
            "3.14159 2.71828",
            "12,345.67 +1-2",
            "line one\r\nline two",
            "123\r\n456",
            "YM1:6BFOXN*TS0BI$ZD4N9:9S6RCVN5+O30K3",
            "一码通办 政务服务",
            "码已过期 2026-12-02",
            "tab\there ~{}|[]\\^_`",
            "\u{1}\u{2}control\u{1f}",
        ] {
            round_trip(t);
        }
    }

    #[test]
    fn text_outside_gb2312_travels_as_utf8_with_eci_26() {
        let m = round_trip("Grüße ☃ 😀");
        assert_eq!(m.segments[0].0, Some(26));
        let m = round_trip("一码通办");
        assert_eq!(m.segments[0].0, None, "GB 2312 needs no ECI");
    }

    #[test]
    fn byte_blocks_longer_than_512_bytes_split() {
        let t: String = "é".repeat(700);
        round_trip(&t);
    }

    #[test]
    fn digits_pack_three_to_ten_bits() {
        let w = encode("123456789012", None);
        // 4 (indicator) + 2 (pad) + 4×10 + 10 (end) = 56 bits.
        assert_eq!(w.len(), 56);
    }

    #[test]
    fn hostile_streams_are_clean_errors() {
        // Unassigned indicator, truncated Byte block, bad Chinese code, numeral padding
        // beyond the digits it pads.
        for cws in [
            vec![0b1111000],
            vec![0b0111111, 0b1111111],
            vec![0b0001111, 0b1111111, 0b1000000],
            vec![0b0010111, 0b0000000, 0b0000111, 0b1110110],
        ] {
            assert!(parse(&cws).is_err(), "{cws:?}");
        }
        // Repeated 512-byte blocks read to the end of the stream, no further.
        let mut w = BitWriter::default();
        for _ in 0..3 {
            w.push(7, 4);
            w.push(511, 9);
            for _ in 0..512 {
                w.push(0x41, 8);
            }
        }
        let m = parse(&w.codewords()).expect("parses");
        assert_eq!(m.segments[0].1.len(), 1536);
        assert!(parse(&w.codewords()[..200]).is_err(), "truncated");
    }

    #[test]
    fn structured_append_and_reader_init_are_parsed() {
        let mut w = encode("PART", Some((17, 3, 2)));
        let m = parse(&w.codewords()).expect("parse");
        assert_eq!(m.structured_append, Some((17, 3, 2)));
        assert_eq!(m.text(), "PART");
        w = BitWriter::default();
        w.push(10, 4);
        w.push(4, 4);
        w.push(0, 5);
        w.push(27, 5);
        assert!(parse(&w.codewords()).expect("parse").reader_init);
    }
}
