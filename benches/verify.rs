//! Verifications per second, per algorithm: the pure verifier alone, and durable verification
//! through the checkpoint (record + replay tag fsynced before the answer) by
//! - `1-caller`: one caller waiting for each record (one fsync per verification);
//! - `16-callers`: sixteen threads sharing fsyncs (group commit);
//! - `pipelined`: one thread that verifies ahead and waits for each record's durability with up
//!   to 256 outstanding (how the daemon's reader feeds the checkpoint).
//!
//! Run on one core as the targets are stated: `taskset -c 0 cargo bench --bench verify`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use yima_gate::checkpoint::Checkpoint;
use yima_gate::checkpoint::Create;
use yima_gate::clock::{FixedClock, VerifyTime};
use yima_gate::verification::code::{self, Claims};
use yima_gate::verification::keys::{Alg, KeyPair, KeyRing, Kid};
use yima_gate::verification::trust::TrustState;
use yima_gate::verification::verdict::{AccessMode, CodeKind};
use yima_gate::verification::verifier::{verify, NothingSpent};

const T0: i64 = 1_800_000_000;

fn key(alg: Alg) -> KeyPair {
    KeyPair::generate(
        alg,
        Kid::new(b"bench".to_vec()).expect("kid"),
        T0 - 10,
        T0 + 10,
    )
}

fn claims(n: u64) -> Claims {
    let mut cti = vec![0u8; 16];
    cti[..8].copy_from_slice(&n.to_be_bytes());
    Claims {
        iss: "HLJ-YMTB".into(),
        sub: vec![0x42; 16],
        exp: T0 + 60,
        nbf: None,
        iat: T0,
        cti,
        kind: CodeKind::Dynamic,
        service: "SVC-BUS".into(),
        scenes: Some(vec!["GATE-A".into()]),
        mode: Some(AccessMode::Fused),
        business_codes: vec!["BIZ-1".into()],
        catalogue: None,
        serial: None,
        version: None,
    }
}

fn trust(k: &KeyPair) -> TrustState {
    TrustState {
        keys: KeyRing::new([k.trusted_key()]),
        ..TrustState::default()
    }
}

fn at() -> VerifyTime {
    VerifyTime::trusted((T0 + 1) * 1000)
}

fn verify_only(c: &mut Criterion) {
    let mut g = c.benchmark_group("verify_only");
    g.throughput(Throughput::Elements(1));
    for alg in Alg::ALL {
        let k = key(alg);
        let t = trust(&k);
        let text = code::mint(&k.signing, &k.kid, &claims(1));
        g.bench_function(BenchmarkId::from_parameter(alg.name()), |b| {
            b.iter(|| {
                let v = verify(&text, at(), &t, &NothingSpent);
                assert!(v.verdict.accepted());
            })
        });
    }
    g.finish();

    // Verification is pure, so it scales with cores: both cores of the machine.
    let mut g = c.benchmark_group("verify_only_2_threads");
    g.throughput(Throughput::Elements(1));
    let k = key(Alg::EdDSA);
    let t = trust(&k);
    let text = code::mint(&k.signing, &k.kid, &claims(1));
    g.bench_function("EdDSA", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        for _ in 0..iters.div_ceil(2) {
                            assert!(verify(&text, at(), &t, &NothingSpent).verdict.accepted());
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    g.finish();
}

/// Durable verifications of fresh codes by `threads` concurrent callers (0 = pipelined).
fn durable_run(k: &KeyPair, threads: usize, iters: u64, serial: &mut u64) -> Duration {
    // On the real disk (not a tmpfs /tmp): fsync must cost what it costs on a gate.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tmp");
    let cp = Arc::new(
        Checkpoint::open(dir.path(), Create::Provision, trust(k), |_| {
            Arc::new(FixedClock(at()))
        })
        .expect("open"),
    );
    let texts: Vec<String> = (0..iters)
        .map(|_| {
            *serial += 1;
            code::mint(&k.signing, &k.kid, &claims(*serial))
        })
        .collect();
    if threads == 0 {
        let start = Instant::now();
        let mut window = std::collections::VecDeque::with_capacity(256);
        for t in &texts {
            let staged = cp.check_staged_at(t, at()).expect("stage");
            assert!(staged.accepted());
            assert!(staged.seq().is_some(), "recorded");
            window.push_back(staged);
            if window.len() == 256 {
                if let Some(oldest) = window.pop_front() {
                    cp.wait_durable(&oldest).expect("durable");
                }
            }
        }
        if let Some(last) = window.pop_back() {
            cp.wait_durable(&last).expect("durable");
        }
        return start.elapsed();
    }
    let chunks: Vec<Vec<String>> = texts
        .chunks((texts.len() / threads).max(1))
        .map(|c| c.to_vec())
        .collect();
    let start = Instant::now();
    std::thread::scope(|s| {
        for chunk in &chunks {
            let cp = cp.clone();
            s.spawn(move || {
                for t in chunk {
                    let r = cp.check_at(t, at()).expect("durable check");
                    assert!(r.accepted());
                }
            });
        }
    });
    start.elapsed()
}

fn durable(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    let mut serial = 0u64;
    for alg in Alg::ALL {
        let k = key(alg);
        for threads in [1usize, 16, 0] {
            let mode = match threads {
                0 => "pipelined".to_string(),
                1 => "1-caller".to_string(),
                n => format!("{n}-callers"),
            };
            let id = BenchmarkId::new(alg.name(), mode);
            g.bench_function(id, |b| {
                b.iter_custom(|iters| durable_run(&k, threads, iters, &mut serial))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, verify_only, durable);
criterion_main!(benches);
