//! Fuzzing entry points, cargo-fuzz style: `code_parser(data)`, `api_request(data)`,
//! `gridmatrix_modes(data)` and `gridmatrix_grid(data)` take raw bytes, and each has invariants
//! beyond "does not panic". A `fuzz_targets/*.rs` wrapper
//! (`fuzz_target!(|d: &[u8]| fuzz::code_parser(d))`) runs them under libFuzzer on nightly;
//! here a seeded mutational driver runs them for a bounded number of inputs on stable, so CI
//! exercises them on every run. `YIMA_FUZZ_ITERS` scales the run (default: CI-sized).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use yima_gate::api::{router, ApiState};
use yima_gate::clock::VerifyTime;
use yima_gate::verification::code;
use yima_gate::verification::keys::Alg;
use yima_gate::verification::verdict::Reason;
use yima_gate::verification::verifier::{self, NothingSpent};

fn iterations(default: usize) -> usize {
    std::env::var("YIMA_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Byte-level mutations: flips, inserts, deletes, duplicated and spliced ranges, interesting
/// values — the operators libFuzzer uses, without coverage guidance.
fn mutate(rng: &mut rand::rngs::StdRng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut d = corpus[rng.gen_range(0..corpus.len())].clone();
    for _ in 0..rng.gen_range(1..6) {
        let len = d.len();
        match rng.gen_range(0..7) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                d[i] ^= 1 << rng.gen_range(0..8);
            }
            1 => {
                let i = rng.gen_range(0..=len);
                d.insert(i, rng.gen());
            }
            2 if len > 0 => {
                let i = rng.gen_range(0..len);
                let n = rng.gen_range(1..=(len - i).min(16));
                d.drain(i..i + n);
            }
            3 if len > 1 => {
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(a..len);
                let chunk = d[a..=b].to_vec();
                let at = rng.gen_range(0..=d.len());
                d.splice(at..at, chunk);
            }
            4 => {
                let other = &corpus[rng.gen_range(0..corpus.len())];
                if !other.is_empty() {
                    let a = rng.gen_range(0..other.len());
                    let at = rng.gen_range(0..=d.len());
                    d.truncate(at);
                    d.extend_from_slice(&other[a..]);
                }
            }
            5 if len > 0 => {
                let i = rng.gen_range(0..len);
                d[i] = *[0u8, 0xff, 0x7f, 0x80, b':', b'%', b' ', 0x1b, 0xd8]
                    .get(rng.gen_range(0..9))
                    .unwrap_or(&0);
            }
            _ => d.truncate(rng.gen_range(0..=len)),
        }
    }
    d.truncate(64 * 1024);
    d
}

/// Entry point 1: the code parser and the pure verifier on arbitrary bytes.
/// Invariants: total (no panic), a text over the size limit is malformed, and nothing but
/// an unchanged valid code is accepted.
pub fn code_parser(
    data: &[u8],
    valid: &[String],
    trust: &yima_gate::verification::trust::TrustState,
) {
    let text = String::from_utf8_lossy(data);
    let at = VerifyTime::trusted(crate::common::T0 * 1000);
    let v = verifier::verify(&text, at, trust, &NothingSpent);
    if text.len() > code::MAX_TEXT_LEN + 64 {
        assert_eq!(v.verdict.reason, Reason::Malformed);
    }
    if v.verdict.accepted() {
        let t = text.trim().to_ascii_uppercase();
        assert!(
            valid.iter().any(|c| c.to_ascii_uppercase() == t),
            "a mutated code was accepted: {text:?}"
        );
    }
    // Text ⇄ bytes round-trips for whatever the text layer accepts.
    if let Ok(bytes) = code::cose_bytes(&text) {
        let back = code::to_text(&bytes);
        assert_eq!(code::cose_bytes(&back).ok(), Some(bytes));
    }
}

#[test]
fn fuzz_code_parser() {
    let keys: Vec<_> = Alg::ALL
        .iter()
        .enumerate()
        .map(|(i, a)| crate::common::key(*a, &format!("k{i}")))
        .collect();
    let trust = crate::common::trust_with(&keys.iter().collect::<Vec<_>>());
    let valid: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            code::mint(
                &k.signing,
                &k.kid,
                &crate::common::dynamic_claims(crate::common::T0 - 1, i as u64),
            )
        })
        .collect();
    let mut corpus: Vec<Vec<u8>> = valid.iter().map(|c| c.as_bytes().to_vec()).collect();
    corpus.push(b"YM1:".to_vec());
    corpus.push(Vec::new());
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_c0de);
    let n = iterations(200_000);
    for _ in 0..n {
        let input = mutate(&mut rng, &corpus);
        code_parser(&input, &valid, &trust);
    }
    // The valid seeds themselves still verify (the driver did not fool itself).
    for c in &valid {
        let v = verifier::verify(
            c,
            VerifyTime::trusted(crate::common::T0 * 1000),
            &trust,
            &NothingSpent,
        );
        assert!(v.verdict.accepted());
    }
}

/// Entry point 3: the Grid Matrix mode parser on arbitrary codewords. Invariants: total, the
/// text bounded by the input, and whatever text it yields our encoder carries exactly.
pub fn gridmatrix_modes(data: &[u8]) {
    use yima_gate::gridmatrix::modes;
    let codewords: Vec<u8> = data.iter().map(|b| b & 0x7F).collect();
    let Ok(msg) = modes::parse(&codewords) else {
        return;
    };
    let text = msg.text();
    // 7 bits of input give at most one byte of output (Byte mode), and a GB 2312 pair
    // (13 bits) at most 3 bytes of UTF-8.
    assert!(
        text.len() <= codewords.len() * 2 + 8,
        "{} codewords → {} bytes",
        codewords.len(),
        text.len()
    );
    let again = modes::encode(&text, None).codewords();
    assert_eq!(
        modes::parse(&again).map(|m| m.text()).ok().as_deref(),
        Some(text.as_str())
    );
}

/// Entry point 4: the Grid Matrix grid decoder on a grid built from arbitrary bytes (size from
/// the first byte, modules from the rest, repeated), and on a valid symbol with a few modules
/// flipped by the input. Invariants: total, and a level-5 symbol with ≤ 4 flipped modules
/// reads as it was (each block corrects at least 4 errors).
pub fn gridmatrix_grid(data: &[u8], symbol: &yima_gate::gridmatrix::Symbol, text: &str) {
    use yima_gate::gridmatrix::{decode, tables, Modules};
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let side = tables::side(1 + first % 13);
    let bit = |i: usize| {
        rest.get((i / 8) % rest.len().max(1))
            .is_some_and(|b| b >> (i % 8) & 1 == 1)
    };
    let _ = decode(&Modules::from_fn(side, |x, y| bit(y * side + x)));
    let mut m = symbol.modules.clone();
    let n = m.side();
    for pair in rest.chunks(2).take(4) {
        let v = usize::from(pair[0]) << 8 | usize::from(*pair.get(1).unwrap_or(&0));
        let (x, y) = (v % n, (v / n) % n);
        m.set(x, y, !m.get(x, y));
    }
    assert_eq!(decode(&m).map(|d| d.text).ok().as_deref(), Some(text));
}

#[test]
fn fuzz_gridmatrix() {
    use yima_gate::gridmatrix::{encode, EncodeOptions};
    let text = "YM1:6BFOXN*TS0BI$ZD4N9:9S6RCVN5+O30K3 网格矩阵 3.14159";
    let symbol = encode(
        text,
        &EncodeOptions {
            level: 5,
            exact_level: true,
            ..Default::default()
        },
    )
    .expect("encode");
    let codewords = yima_gate::gridmatrix::modes::encode(text, None).codewords();
    let corpus: Vec<Vec<u8>> = vec![
        codewords.clone(),
        yima_gate::gridmatrix::modes::encode("0123456789 abc ABC 一码通办 é", Some((1, 2, 1)))
            .codewords(),
        // A Byte block of 512 repeated: the parser must stay linear.
        vec![0x7F; 600],
        Vec::new(),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(27766);
    let n = iterations(20_000);
    for i in 0..n {
        let input = mutate(&mut rng, &corpus);
        gridmatrix_modes(&input);
        // A grid decode costs a hundred parses: one input in ten.
        if i % 10 == 0 {
            gridmatrix_grid(&input, &symbol, text);
        }
    }
}

/// Entry point 2: one HTTP request to the local API built from arbitrary bytes (method, path,
/// headers and body chosen by the input). Invariants: no panic, never a 500, unauthenticated
/// requests never reach a protected route, bodies over the limit are refused.
pub async fn api_request(data: &[u8], app: &axum::Router, token: &str) -> Option<u16> {
    use tower_service::Service;
    let mut it = data.splitn(3, |b| *b == b'\n');
    let head = it.next().unwrap_or_default();
    let headers = it.next().unwrap_or_default();
    let body = it.next().unwrap_or_default().to_vec();
    let method = match head.first().copied().unwrap_or(0) % 4 {
        0 => "GET",
        1 => "POST",
        2 => "PUT",
        _ => "DELETE",
    };
    let path = String::from_utf8_lossy(head.get(1..).unwrap_or_default()).into_owned();
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    let Ok(uri) = path.parse::<axum::http::Uri>() else {
        return None; // not a request line a client could send
    };
    let mut req = axum::http::Request::builder().method(method).uri(uri);
    let authed = headers.first().is_some_and(|b| b % 2 == 0);
    if authed {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let ctype = String::from_utf8_lossy(headers.get(1..).unwrap_or_default()).into_owned();
    if let Ok(v) = axum::http::HeaderValue::from_str(&ctype) {
        req = req.header("content-type", v);
    }
    let Ok(req) = req.body(axum::body::Body::from(body)) else {
        return None;
    };
    let protected = path.starts_with("/api/") || path.starts_with("/metrics");
    let resp = app.clone().call(req).await.unwrap_or_else(|e| match e {});
    let status = resp.status();
    assert_ne!(status.as_u16(), 500, "{method} {path}");
    if protected && !authed && status != 429 {
        assert!(
            status == 401 || status == 404 || status == 405,
            "{method} {path} without a token got {status}"
        );
    }
    Some(status.as_u16())
}

#[test]
fn fuzz_api_requests() {
    let dir = tempfile::tempdir().expect("tmp");
    let k = crate::common::key(Alg::EdDSA, "api");
    let trust = crate::common::trust_with(&[&k]);
    let checkpoint = Arc::new(crate::common::open_checkpoint_as(
        dir.path(),
        yima_gate::checkpoint::Create::Provision,
        trust,
        crate::common::T0,
    ));
    let token = "fuzz-token";
    let state = Arc::new(
        ApiState::new(
            "FUZZ".into(),
            checkpoint,
            Arc::default(),
            Arc::new(AtomicBool::new(true)),
            zeroize::Zeroizing::new(token.as_bytes().to_vec()),
            None,
        )
        .with_authorized_rate(u32::MAX, u32::MAX),
    );
    let app = router(state);
    let valid = code::mint(
        &k.signing,
        &k.kid,
        &crate::common::dynamic_claims(crate::common::T0 - 1, 1),
    );
    let corpus: Vec<Vec<u8>> = vec![
        format!("\u{1}/api/v1/verify\n\0application/json\n{{\"code\":\"{valid}\"}}").into_bytes(),
        b"\x00/api/v1/records?from_seq=1&limit=5&reason=expired\n\x00\n".to_vec(),
        b"\x00/api/v1/status\n\x01\n".to_vec(),
        b"\x00/metrics\n\x00text/plain\n".to_vec(),
        b"\x01/api/v1/verify\n\x00image/png\n\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec(),
        b"\x00/healthz\n\n".to_vec(),
        b"\x00/api/v1/records?since_ms=-1&until_ms=99999999999999999999\n\x00\n".to_vec(),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xa91_f022);
    let n = iterations(30_000);
    let mut seen = std::collections::BTreeMap::<u16, usize>::new();
    rt.block_on(async {
        for c in &corpus {
            assert!(api_request(c, &app, token).await.is_some(), "seed {c:?}");
        }
        for _ in 0..n {
            let input = mutate(&mut rng, &corpus);
            if let Some(s) = api_request(&input, &app, token).await {
                *seen.entry(s).or_default() += 1;
            }
        }
    });
    // The driver reached the handlers, not just the router's 404.
    for want in [200, 400, 401, 404] {
        assert!(seen.contains_key(&want), "no {want} among {seen:?}");
    }
}
