//! kill -9 and power cuts at random moments: a `verify --stdin` process verifying a stream of
//! fresh codes is killed again and again — on a normal filesystem (the process dies, the
//! kernel keeps its writes), and on one that forgets everything unsynced at each kill (the
//! power goes: [`crate::common::powerfs`]). Afterwards every code reported accepted has its
//! record, no sequence number was ever reused, the store always reopened by itself, and no
//! accepted code is accepted again. The daemon's API token and the gate's enrollment survive
//! a power cut right after they are written.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use std::path::Path;

use crate::common::powerfs::PowerFs;
use crate::common::*;
use rand::{Rng, SeedableRng};
use yima_gate::checkpoint::OpenState;
use yima_gate::files::write_durable;
use yima_gate::verification::code;
use yima_gate::verification::keys::Alg;
use yima_gate::verification::trust::TrustState;

/// Cycles of spawn → verify → kill -9. Bounded so the test stays well under a minute.
const CYCLES: usize = 200;
/// Cycles of spawn → verify → power cut (every write goes through FUSE: fewer, bounded).
const POWER_CYCLES: usize = 200;

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
    cut_again_and_again(dir.path(), &state, CYCLES, |_| {});
}

#[test]
fn power_cuts_lose_no_acknowledged_record_and_reuse_no_sequence_number() {
    if !crate::common::powerfs::usable() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let fs = PowerFs::new();
    let mnt = dir.path().join("disk");
    let mut mounted = Some(fs.mount(&mnt).expect("mount"));
    let state = mnt.join("state");
    cut_again_and_again(dir.path(), &state, POWER_CYCLES, |_| {
        // The process is dead; the machine loses power and boots again.
        drop(mounted.take());
        fs.cut();
        mounted = Some(fs.mount(&mnt).expect("remount"));
    });
    let counts = fs.counts();
    eprintln!("power cuts: {counts:?}");
    assert_eq!(counts.cuts, POWER_CYCLES as u64);
    assert!(counts.file_syncs > POWER_CYCLES as u64, "the store synced");
    assert!(counts.dir_syncs > 0, "directories synced");
    drop(mounted);
}

/// `yima-gate run` writes its API token and is cut off right after: the token comes back
/// after the cut, and the restarted daemon serves a client holding it.
#[test]
fn the_api_token_survives_a_power_cut_right_after_it_is_written() {
    if !crate::common::powerfs::usable() {
        return;
    }
    yima_gate::sync::tls::install_provider();
    let gate = Gate::new();
    let fs = PowerFs::new();
    let mnt = gate.dir.path().join("state");
    let mut mounted = Some(fs.mount(&mnt).expect("mount"));
    provision(&mnt);
    let cfg = gate.config("[[source]]\nkind = \"scanner\"\nstdin = true\n");
    let start = || run_daemon(crate::common::gate(), &cfg);
    let mut child = start();
    let (base, token) = gate.api_up(&mnt);
    child.kill().expect("kill -9");
    child.wait().expect("wait");
    drop(mounted.take());
    fs.cut();
    mounted = Some(fs.mount(&mnt).expect("remount"));
    assert_eq!(
        std::fs::read_to_string(mnt.join("api.token"))
            .expect("token after the cut")
            .trim(),
        token
    );
    let mut child = start();
    let _ = gate.api_up(&mnt);
    let r = reqwest::blocking::Client::new()
        .get(format!("{base}/api/v1/status"))
        .bearer_auth(&token)
        .send()
        .expect("status");
    assert_eq!(r.status(), 200, "the old token still opens the API");
    child.kill().expect("kill");
    child.wait().expect("wait");
    drop(mounted);
}

/// Runs `cycles` of spawn → verify a stream of codes → kill -9 on the store at `state`,
/// calling `between` after each kill; then checks that nothing acknowledged was lost.
fn cut_again_and_again(dir: &Path, state: &Path, cycles: usize, mut between: impl FnMut(usize)) {
    let state = state.to_path_buf();
    let k = key(Alg::EdDSA, "crash");
    let trust = dir.join("trust.json");
    write_durable(
        &trust,
        serde_json::to_string(&k.trusted_key().to_entry())
            .expect("json")
            .as_bytes(),
        0o644,
    )
    .expect("write trust");
    provision(&state);

    let codes: Vec<String> = (0..cycles * 40)
        .map(|i| code::mint(&k.signing, &k.kid, &dynamic_claims(T0, 10_000 + i as u64)))
        .collect();
    let at = "2027-01-15T08:00:10Z"; // T0 + 10 s
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x9e3779b97f4a7c15);
    let mut next_fresh = 0usize;
    let mut sent: Vec<usize> = Vec::new();
    let mut reports: Vec<Report> = Vec::new();

    for cycle in 0..cycles {
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
        between(cycle);
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
        "kill -9: {cycles} cycles, {} codes sent, {} answers seen, {} accepted reported, {} records",
        sent.len(),
        reports.len(),
        accepted_reports,
        records.len()
    );
    assert!(accepted_reports > cycles, "the loop did real work");
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
