//! Grid Matrix against the outside: zint's samples in `tests/data/gridmatrix` (exact module
//! matrices and zint's own PNGs) read at every orientation, checked against an independent
//! reader's reading; our encoder's sizes against zint's; zint run live on fresh texts.

use std::path::{Path, PathBuf};
use std::process::Command;

use image::GrayImage;
use yima_gate::gridmatrix::{self, read::read_clean, EncodeOptions, Modules, Orientation};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gridmatrix")
}

#[derive(Debug, serde::Deserialize)]
struct Sample {
    name: String,
    text: String,
    secure: u8,
    vers: Option<u8>,
    /// What the independent reader (zxing-cpp, `diagnostics2`) read; "" = nothing.
    independent_read: Option<String>,
}

impl Sample {
    /// Whether zint encoded the text as given (the independent reader agrees).
    fn zint_right(&self) -> bool {
        self.independent_read
            .as_deref()
            .is_none_or(|r| r == self.text)
    }
}

fn samples() -> Vec<Sample> {
    #[derive(serde::Deserialize)]
    struct File {
        samples: Vec<Sample>,
    }
    let text = std::fs::read_to_string(dir().join("samples.json")).expect("samples.json");
    serde_json::from_str::<File>(&text).expect("parse").samples
}

/// zint's `--dump`: one row per line, hex digits, most significant bit first.
fn parse_dump(dump: &str) -> Modules {
    let rows: Vec<Vec<bool>> = dump
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.chars()
                .filter(|c| !c.is_whitespace())
                .flat_map(|c| {
                    let v = c.to_digit(16).expect("hex digit");
                    (0..4).rev().map(move |b| v >> b & 1 == 1)
                })
                .collect()
        })
        .collect();
    let side = rows.len();
    assert!(rows.iter().all(|r| r.len() >= side), "ragged dump");
    Modules::from_fn(side, |x, y| rows[y][x])
}

fn dump_of(s: &Sample) -> Modules {
    parse_dump(&std::fs::read_to_string(dir().join(format!("{}.dump", s.name))).expect("dump"))
}

/// The texts zint 2.11.1 encodes wrongly (the independent reader reads something else or
/// nothing), besides YM1 static codes: symbols that start in Byte mode (latch written as 6),
/// and numbers with punctuation in Numeral mode.
const ZINT_DEFECTS: &[&str] = &[
    "a[b]c{d}e~f^g_h`i|j\\k",
    "Tel: +86 10 1234-5678, Fax: (010) 8765.4321",
    "3.14159 2.71828",
    "Ünïcödé and 中文 mixed",
];

#[test]
fn the_samples_cover_every_version_and_level_and_the_zint_defects_are_the_known_ones() {
    let all = samples();
    assert!(all.len() >= 100, "{} samples", all.len());
    let mut versions = std::collections::BTreeSet::new();
    let mut levels = std::collections::BTreeSet::new();
    for s in &all {
        versions.insert(gridmatrix::tables::version_of_side(dump_of(s).side()).expect("size"));
        levels.insert(s.secure);
    }
    assert_eq!(versions.len(), 13, "{versions:?}");
    assert_eq!(levels.len(), 5);
    assert!(
        all.iter().all(|s| s.independent_read.is_some()),
        "every sample was read independently"
    );
    let mut defects: Vec<&str> = all
        .iter()
        .filter(|s| !s.zint_right())
        .map(|s| s.text.as_str())
        .collect();
    defects.dedup();
    let (ym1, other): (Vec<&str>, Vec<&str>) =
        defects.into_iter().partition(|t| t.starts_with("YM1:"));
    assert_eq!(other, ZINT_DEFECTS);
    // zint misencodes all four YM1 static codes of the vectors (one per algorithm: a '.'
    // between digits of their tail) and none of the five dynamic ones.
    let ym1_samples: std::collections::BTreeSet<&str> = all
        .iter()
        .filter(|s| s.text.starts_with("YM1:") && s.text.len() > 200)
        .map(|s| s.text.as_str())
        .collect();
    assert_eq!((ym1.len(), ym1_samples.len()), (4, 9), "{ym1:?}");
}

#[test]
fn every_zint_matrix_reads_as_the_independent_reader_reads_it_in_all_eight_orientations() {
    let mut wrong = Vec::new();
    for s in samples() {
        let m = dump_of(&s);
        let want = s.independent_read.clone().unwrap_or_else(|| s.text.clone());
        for o in Orientation::ALL {
            let got = gridmatrix::decode(&m.oriented(o));
            match (&got, want.as_str()) {
                // zint raises the level when the version has room for it.
                (Ok(d), w) if d.text == w && d.orientation == o && d.level >= s.secure => {}
                (Err(_), "") => {}
                _ => wrong.push(format!(
                    "{} {:?} ({o:?}): want {want:?}, got {got:?}",
                    s.name, s.text
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn every_zint_png_is_read_from_the_image_upright_turned_and_mirrored() {
    for s in samples().into_iter().filter(Sample::zint_right) {
        let img = image::open(dir().join(format!("{}.png", s.name)))
            .expect("png")
            .to_luma8();
        let views: [(&str, GrayImage); 5] = [
            ("upright", img.clone()),
            ("90", image::imageops::rotate90(&img)),
            ("180", image::imageops::rotate180(&img)),
            ("270", image::imageops::rotate270(&img)),
            ("mirrored", image::imageops::flip_horizontal(&img)),
        ];
        for (how, view) in views {
            let found = read_clean(&view);
            assert_eq!(
                found.first().map(|d| d.text.as_str()),
                Some(s.text.as_str()),
                "{} {how}",
                s.name
            );
        }
    }
}

fn in_ym1_alphabet(t: &str) -> bool {
    t.bytes()
        .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase() || b" $%*+-./:".contains(&b))
}

#[test]
fn our_symbols_of_the_same_texts_read_back_and_are_no_larger_than_zints_for_ym1() {
    let mut compared = 0;
    for s in samples()
        .into_iter()
        .filter(|s| s.vers.is_none() && s.zint_right())
    {
        let zint_version = gridmatrix::tables::version_of_side(dump_of(&s).side()).expect("size");
        let ours = gridmatrix::encode(
            &s.text,
            &EncodeOptions {
                level: s.secure,
                ..Default::default()
            },
        )
        .expect("encode");
        assert_eq!(
            gridmatrix::decode(&ours.modules).expect("decode").text,
            s.text
        );
        if in_ym1_alphabet(&s.text) {
            assert!(
                ours.version <= zint_version,
                "{}: ours V{} > zint V{zint_version}",
                s.name,
                ours.version
            );
            compared += 1;
        }
    }
    assert!(compared >= 20, "{compared} YM1-alphabet texts compared");
}

fn zint() -> Option<()> {
    let ok = Command::new("zint")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(());
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "zint missing in CI (apt-get install zint)"
    );
    eprintln!("SKIP: zint not installed");
    None
}

fn zint_dump(text: &str, level: u8) -> Modules {
    let o = Command::new("zint")
        .args([
            "-b",
            "GRIDMATRIX",
            &format!("--secure={level}"),
            "--dump",
            "-d",
            text,
        ])
        .output()
        .expect("zint");
    assert!(
        o.status.success(),
        "zint: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    parse_dump(&String::from_utf8(o.stdout).expect("utf8"))
}

#[test]
fn the_vendored_samples_are_what_zint_makes_and_fresh_zint_symbols_read() {
    if zint().is_none() {
        return;
    }
    let all = samples();
    for s in all.iter().filter(|s| s.vers.is_none()).step_by(9) {
        assert_eq!(
            zint_dump(&s.text, s.secure),
            dump_of(s),
            "{} differs from zint's",
            s.name
        );
    }
    // Fresh texts zint encodes right: letters and digits (no punctuation: zint may start such
    // a text in Byte mode or punctuate a number, its two defects).
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(27766);
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    for i in 0..24 {
        let len = rng.gen_range(1..300);
        let text: String = (0..len)
            .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
            .collect();
        let level = rng.gen_range(1..=5);
        let m = zint_dump(&text, level);
        let d = gridmatrix::decode(&m.oriented(Orientation::ALL[i % 8])).expect("decode");
        assert_eq!(d.text, text, "level {level}");
        let ours = gridmatrix::encode(
            &text,
            &EncodeOptions {
                level,
                ..Default::default()
            },
        )
        .expect("encode");
        assert!(
            ours.modules.side() <= m.side(),
            "{text:?} L{level}: ours {} > zint {}",
            ours.modules.side(),
            m.side()
        );
    }
}

#[derive(Debug, serde::Deserialize)]
struct Ours {
    name: String,
    text: String,
    level: u8,
    independent_read: Option<String>,
}

fn to_dump(m: &Modules) -> String {
    let mut out = String::new();
    for y in 0..m.side() {
        let bits: Vec<bool> = (0..m.side()).map(|x| m.get(x, y)).collect();
        for c in bits.chunks(4) {
            let v = c
                .iter()
                .enumerate()
                .fold(0u32, |v, (k, &b)| v | (u32::from(b) << (3 - k)));
            out.push(char::from_digit(v, 16).expect("digit").to_ascii_uppercase());
        }
        out.push('\n');
    }
    out
}

/// Our encoder's symbols of the texts in `ours.json` (ASCII, YM1 codes, Chinese, numbers with
/// punctuation, control characters, text outside GB 2312) were read by the independent reader
/// when they were made; they must stay exactly those symbols. `YIMA_GM_BLESS=DIR` rewrites the
/// dumps and writes PNGs into DIR for `make-samples.py --ours DIR` to read again.
#[test]
fn our_symbols_are_those_an_independent_reader_read_back() {
    let path = dir().join("ours.json");
    let ours: Vec<Ours> =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("ours.json")).expect("parse");
    assert!(ours.len() >= 150, "{}", ours.len());
    let bless = std::env::var_os("YIMA_GM_BLESS").map(PathBuf::from);
    for o in &ours {
        let sym = gridmatrix::encode(
            &o.text,
            &EncodeOptions {
                level: o.level,
                ..Default::default()
            },
        )
        .expect("encode");
        let dump = dir().join(format!("{}.dump", o.name));
        if let Some(out) = &bless {
            std::fs::create_dir_all(out).expect("bless dir");
            std::fs::write(&dump, to_dump(&sym.modules)).expect("write dump");
            gridmatrix::render(&sym, 2)
                .save(out.join(format!("{}.png", o.name)))
                .expect("png");
            continue;
        }
        assert_eq!(
            o.independent_read.as_deref(),
            Some(o.text.as_str()),
            "{}: the independent reader read something else",
            o.name
        );
        let stored = parse_dump(&std::fs::read_to_string(&dump).expect("dump"));
        assert!(
            sym.modules == stored,
            "{}: our encoder's symbol changed",
            o.name
        );
        assert_eq!(gridmatrix::decode(&stored).expect("decode").text, o.text);
    }
}
