//! kill -9 at random moments: a `verify --stdin` process verifying a stream of fresh codes is
//! killed again and again. Afterwards every code reported accepted has its record, no sequence
//! number was ever reused, the store always reopened, and no accepted code is accepted again.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use crate::common::*;
use rand::{Rng, SeedableRng};
use yima_gate::checkpoint::OpenState;
use yima_gate::files::write_durable;
use yima_gate::verification::code;
use yima_gate::verification::keys::Alg;
use yima_gate::verification::trust::TrustState;

/// Cycles of spawn → verify → kill -9. Bounded so the test stays well under a minute.
const CYCLES: usize = 200;

#[derive(Debug)]
struct Report {
    code: usize,
    seq: u64,
    reason: String,
}

#[test]
fn kill_minus_nine_loses_nothing_and_reuses_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let k = key(Alg::EdDSA, "crash");
    let trust = dir.path().join("trust.json");
    write_durable(
        &trust,
        serde_json::to_string(&k.trusted_key().to_entry())
            .expect("json")
            .as_bytes(),
        0o644,
    )
    .expect("write trust");
    provision(&state);

    let codes: Vec<String> = (0..CYCLES * 40)
        .map(|i| code::mint(&k.signing, &k.kid, &dynamic_claims(T0, 10_000 + i as u64)))
        .collect();
    let at = "2027-01-15T08:00:10Z"; // T0 + 10 s
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x9e3779b97f4a7c15);
    let mut next_fresh = 0usize;
    let mut sent: Vec<usize> = Vec::new();
    let mut reports: Vec<Report> = Vec::new();

    for cycle in 0..CYCLES {
        // This cycle's input: fresh codes, with replays of earlier codes mixed in.
        let mut batch: Vec<usize> = Vec::new();
        for _ in 0..40 {
            if !sent.is_empty() && rng.gen_bool(0.2) {
                batch.push(sent[rng.gen_range(0..sent.len())]);
            } else {
                batch.push(next_fresh);
                next_fresh += 1;
            }
        }
        sent.extend(&batch);
        let kill_after_lines = rng.gen_range(0..40usize);

        let mut child = crate::common::gate()
            .args(["verify", "--state-dir"])
            .arg(&state)
            .arg("--trust")
            .arg(&trust)
            .args(["--at", at, "--stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let mut stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let input: String = batch.iter().map(|&i| format!("{}\n", codes[i])).collect();
        let writer = std::thread::spawn(move || {
            // The child may die mid-write: a broken pipe is expected.
            let _ = stdin.write_all(input.as_bytes());
        });
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        let mut lines = Vec::new();
        if kill_after_lines > 0 {
            while lines.len() < kill_after_lines {
                match rx.recv_timeout(Duration::from_secs(30)) {
                    Ok(l) => lines.push(l),
                    Err(_) => break,
                }
            }
        }
        child.kill().expect("kill -9"); // SIGKILL
        let status = child.wait().expect("wait");
        writer.join().expect("writer");
        reader.join().expect("reader");
        // Lines printed before the kill landed are reports too: the gate could have acted on them.
        lines.extend(rx.try_iter());
        assert!(
            lines.len() <= batch.len(),
            "cycle {cycle}: more answers than codes"
        );
        for (i, line) in lines.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            reports.push(Report {
                code: batch[i],
                seq: v["seq"].as_u64().expect("seq"),
                reason: v["reason"].as_str().expect("reason").to_string(),
            });
        }
        // A finished process (all lines answered before the kill) exits 0; otherwise SIGKILL.
        assert!(
            status.code().is_none() || status.success(),
            "cycle {cycle}: {status:?}"
        );
    }

    // The store reopens (recovering by itself if it has to) and holds what was reported.
    let store = open_checkpoint(&state, TrustState::default(), T0);
    let open_state = store.status().open_state;
    assert!(
        matches!(
            open_state,
            OpenState::Existing | OpenState::RepairedSnapshot { .. }
        ),
        "{open_state:?}"
    );
    let records = store.records_from(0, usize::MAX).expect("records");
    let by_seq: HashMap<u64, &yima_gate::verification::record::Record> =
        records.iter().map(|r| (r.seq, r)).collect();
    // Sequence numbers are contiguous from 1: nothing reissued, nothing skipped.
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=records.len() as u64).collect::<Vec<_>>());

    let cti_hash = |i: usize| {
        let claims = dynamic_claims(T0, 10_000 + i as u64);
        store.hasher().hash(b"cti", &claims.cti)
    };
    let mut seen_seq = HashSet::new();
    let mut accepted_codes = HashSet::new();
    for r in &reports {
        assert!(
            seen_seq.insert(r.seq),
            "sequence number {} reported twice",
            r.seq
        );
        let rec = by_seq
            .get(&r.seq)
            .unwrap_or_else(|| panic!("reported seq {} has no record after the crashes", r.seq));
        assert_eq!(rec.reason.code(), r.reason, "seq {}", r.seq);
        assert_eq!(
            rec.cti_hash.as_deref(),
            Some(cti_hash(r.code).as_str()),
            "seq {}",
            r.seq
        );
        if r.reason == "accepted" {
            assert!(
                accepted_codes.insert(r.code),
                "code {} accepted twice",
                r.code
            );
        }
    }
    // No code has two accepted records, reported or not.
    let mut accepted_hashes = HashSet::new();
    for rec in records.iter().filter(|r| r.accepted()) {
        let h = rec.cti_hash.clone().expect("hash");
        assert!(
            accepted_hashes.insert(h),
            "a code was accepted twice (seq {})",
            rec.seq
        );
    }
    let accepted_reports = reports.iter().filter(|r| r.reason == "accepted").count();
    eprintln!(
        "kill -9: {CYCLES} cycles, {} codes sent, {} answers seen, {} accepted reported, {} records",
        sent.len(),
        reports.len(),
        accepted_reports,
        records.len()
    );
    assert!(accepted_reports > CYCLES, "the loop did real work");
    drop(store);

    // Every accepted code, presented again, is refused as used.
    let mut child = crate::common::gate()
        .args(["verify", "--state-dir"])
        .arg(&state)
        .arg("--trust")
        .arg(&trust)
        .args(["--at", at, "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut order: Vec<usize> = accepted_codes.iter().copied().collect();
    order.sort_unstable();
    let input: String = order.iter().map(|&i| format!("{}\n", codes[i])).collect();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("join").expect("write");
    let answers: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(answers.len(), order.len());
    for a in answers {
        assert_eq!(a["reason"], "replayed");
    }
}
