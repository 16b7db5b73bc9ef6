//! The durable store through the checkpoint: replay across restarts, one acceptance under
//! concurrency, sequence numbers, the replay guard, and recovery from damaged stores.

use std::sync::Arc;

use crate::common::*;
use yima_gate::checkpoint::{Checkpoint, Create, OpenState, StoreError};
use yima_gate::clock::VerifyTime;
use yima_gate::verification::code;
use yima_gate::verification::keys::{Alg, KeyPair};
use yima_gate::verification::trust::TrustState;
use yima_gate::verification::verdict::Reason;

fn checkpoint(dir: &std::path::Path, create: Create, k: &KeyPair) -> Checkpoint {
    open_checkpoint_as(dir, create, trust_with(&[k]), T0)
}

fn at(s: i64) -> VerifyTime {
    VerifyTime::trusted(s * 1000)
}

#[test]
fn dynamic_code_is_single_use_across_restarts() {
    let dir = tempfile::tempdir().expect("tmp");
    let k = key(Alg::EdDSA, "k");
    let text = code::mint(&k.signing, &k.kid, &dynamic_claims(T0, 1));
    {
        let cp = checkpoint(dir.path(), Create::Provision, &k);
        let first = cp.check_at(&text, at(T0 + 1)).expect("check");
        assert_eq!(first.reason(), Reason::Accepted);
        assert_eq!(first.seq().expect("recorded"), 1);
        let second = cp.check_at(&text, at(T0 + 2)).expect("check");
        assert_eq!(second.reason(), Reason::Replayed);
        assert_eq!(second.verification.verdict.message(), "码已使用");
        assert_eq!(second.seq().expect("recorded"), 2);
    }
    let cp = checkpoint(dir.path(), Create::Guarded, &k);
    assert_eq!(cp.status().open_state, OpenState::Existing);
    let third = cp.check_at(&text, at(T0 + 3)).expect("check");
    assert_eq!(third.reason(), Reason::Replayed);
    assert_eq!(
        third.seq().expect("recorded"),
        3,
        "sequence continues after restart"
    );
    // after the window the answer is expired, not replayed
    let late = cp.check_at(&text, at(T0 + 66)).expect("check");
    assert_eq!(late.reason(), Reason::Expired);
    assert_eq!(late.verification.verdict.message(), "码已过期");
    let all = cp.records_from(0, 100).expect("records");
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(all[0].reason, Reason::Accepted);
    assert_eq!(
        all[0].cti_hash, all[1].cti_hash,
        "records of one code join by hash"
    );
}

#[test]
fn concurrent_presentations_accept_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let k = key(Alg::EdDSA, "k");
    let cp = Arc::new(checkpoint(dir.path(), Create::Provision, &k));
    let text = Arc::new(code::mint(&k.signing, &k.kid, &dynamic_claims(T0, 2)));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (cp, text) = (cp.clone(), text.clone());
            std::thread::spawn(move || cp.check_at(&text, at(T0)).expect("check").reason())
        })
        .collect();
    let reasons: Vec<Reason> = handles
        .into_iter()
        .map(|h| h.join().expect("join"))
        .collect();
    assert_eq!(
        reasons.iter().filter(|r| **r == Reason::Accepted).count(),
        1
    );
    assert_eq!(
        reasons.iter().filter(|r| **r == Reason::Replayed).count(),
        7
    );
    let seqs: Vec<u64> = cp
        .records_from(0, 100)
        .expect("records")
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
}

#[test]
fn records_hold_no_personal_data() {
    let dir = tempfile::tempdir().expect("tmp");
    let k = key(Alg::SM2, "k");
    let cp = checkpoint(dir.path(), Create::Provision, &k);
    let claims = dynamic_claims(T0, 3);
    let checked = cp
        .check_at(&code::mint(&k.signing, &k.kid, &claims), at(T0))
        .expect("check");
    let json = serde_json::to_string(&checked.record).expect("json");
    assert!(!json.contains("pairwise-subject-token"));
    assert!(!json.contains(&hex::encode(&claims.sub)));
    assert!(!json.contains(&hex::encode(&claims.cti)));
    let r = checked.record.as_ref().expect("recorded");
    assert_eq!(r.service.as_deref(), Some("SVC-BUS"));
    assert_eq!(r.kid.as_deref(), Some(hex::encode(b"k").as_str()));
    assert_eq!(r.sub_hash.as_ref().map(String::len), Some(32));
    let report = serde_json::to_string(&checked.report()).expect("json");
    assert!(!report.contains("pairwise-subject-token"));
    // Nothing of the raw store file contains the subject either.
    drop(cp);
    for entry in walk(&dir.path().join("store")) {
        let bytes = std::fs::read(&entry).expect("read");
        assert!(
            !bytes
                .windows(claims.sub.len())
                .any(|w| w == claims.sub.as_slice()),
            "{} holds the raw subject",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn missing_store_guards_replays_for_one_window() {
    let dir = tempfile::tempdir().expect("tmp");
    let k = key(Alg::EdDSA, "k");
    let cp = checkpoint(dir.path(), Create::Guarded, &k);
    assert_eq!(cp.status().open_state, OpenState::WasMissing);
    // a code issued before the store existed could have been used on the lost store
    let old = code::mint(&k.signing, &k.kid, &dynamic_claims(T0 - 30, 10));
    let r = cp.check_at(&old, at(T0)).expect("check");
    assert_eq!(r.reason(), Reason::ReplayGuardRecovering);
    assert_eq!(cp.status().replay_guard_from_ms, Some(T0 * 1000));
    // static codes are unaffected
    let mut trust = cp.trust().as_ref().clone();
    trust.terminal.accept_unknown_static = true;
    cp.set_trust(trust);
    let st = code::mint(&k.signing, &k.kid, &static_claims(T0 - 100, "C", "S", 1));
    assert_eq!(
        cp.check_at(&st, at(T0)).expect("check").reason(),
        Reason::Accepted
    );
    // a code whose window starts after the guard time cannot have been seen before
    let fresh = code::mint(&k.signing, &k.kid, &dynamic_claims(T0 + 5, 11));
    assert_eq!(
        cp.check_at(&fresh, at(T0 + 6)).expect("check").reason(),
        Reason::Accepted
    );
    // and the guard survives a restart
    drop(cp);
    let cp = checkpoint(dir.path(), Create::Guarded, &k);
    assert_eq!(cp.status().replay_guard_from_ms, Some(T0 * 1000));
    let old2 = code::mint(&k.signing, &k.kid, &dynamic_claims(T0 - 1, 12));
    assert_eq!(
        cp.check_at(&old2, at(T0 + 10)).expect("check").reason(),
        Reason::ReplayGuardRecovering
    );
}

#[test]
fn provisioned_store_accepts_at_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let k = key(Alg::EdDSA, "k");
    let cp = checkpoint(dir.path(), Create::Provision, &k);
    assert_eq!(cp.status().open_state, OpenState::Provisioned);
    assert_eq!(cp.status().replay_guard_from_ms, None);
    let text = code::mint(&k.signing, &k.kid, &dynamic_claims(T0 - 30, 13));
    assert_eq!(
        cp.check_at(&text, at(T0)).expect("check").reason(),
        Reason::Accepted
    );
}

#[test]
fn damaged_store_is_moved_aside_and_guarded() {
    let dir = tempfile::tempdir().expect("tmp");
    let k = key(Alg::EdDSA, "k");
    {
        let cp = checkpoint(dir.path(), Create::Provision, &k);
        let t = code::mint(&k.signing, &k.kid, &dynamic_claims(T0, 20));
        cp.check_at(&t, at(T0)).expect("check");
    }
    // Overwrite sled's log and config with garbage.
    let store_dir = dir.path().join("store");
    std::fs::write(store_dir.join("conf"), b"\xff\xfe garbage").expect("write");
    std::fs::write(store_dir.join("db"), vec![0xA5u8; 4096]).expect("write");
    let cp = checkpoint(dir.path(), Create::Guarded, &k);
    match cp.status().open_state {
        OpenState::Quarantined { moved_to, .. } => {
            assert!(
                moved_to.join("db").exists(),
                "damaged store kept for salvage"
            );
        }
        other => panic!("expected quarantine, got {other:?}"),
    }
    assert_eq!(cp.status().records, 0);
    let old = code::mint(&k.signing, &k.kid, &dynamic_claims(T0 - 10, 21));
    assert_eq!(
        cp.check_at(&old, at(T0)).expect("check").reason(),
        Reason::ReplayGuardRecovering
    );
}

#[test]
fn leftover_partial_snapshot_does_not_brick_the_store() {
    let dir = tempfile::tempdir().expect("tmp");
    let k = key(Alg::EdDSA, "k");
    {
        let cp = checkpoint(dir.path(), Create::Provision, &k);
        for i in 0..50 {
            let t = code::mint(&k.signing, &k.kid, &dynamic_claims(T0, 100 + i));
            assert!(cp.check_at(&t, at(T0)).expect("check").accepted());
        }
    }
    // What a crash mid-snapshot leaves: a partial file that sorts after every real snapshot,
    // which sled 0.34 then refuses to open with `Corruption { at: None }`.
    let store_dir = dir.path().join("store");
    std::fs::write(
        store_dir.join("snap.7FFFFFFFFFFFFFFF.generating"),
        vec![0x5Au8; 512],
    )
    .expect("write");
    let cp = checkpoint(dir.path(), Create::Guarded, &k);
    assert!(
        matches!(cp.status().open_state, OpenState::RepairedSnapshot { removed } if removed.len() == 1),
        "{:?}",
        cp.status().open_state
    );
    assert_eq!(cp.status().records, 50, "every record kept");
    assert_eq!(cp.status().next_seq, 51);
    assert_eq!(cp.status().replay_guard_from_ms, None);
}

#[test]
fn expired_replay_tags_are_purged() {
    let dir = tempfile::tempdir().expect("tmp");
    let k = key(Alg::EdDSA, "k");
    let time = ManualTime::new(T0, true);
    let cp = Checkpoint::open(dir.path(), Create::Provision, trust_with(&[&k]), |floor| {
        time.clock(floor)
    })
    .expect("open");
    for i in 0..10 {
        let t = code::mint(&k.signing, &k.kid, &dynamic_claims(T0 + i, 200 + i as u64));
        assert!(cp.check(&t).expect("check").accepted());
        time.advance(1000);
    }
    assert_eq!(cp.status().replay_tags, 10);
    assert_eq!(
        cp.purge_expired_replay_tags().expect("purge"),
        0,
        "all still in their window"
    );
    // tags expire at iat + 60 + 5; at T0 + 70 the first five have gone (the purge goes by
    // the latest trusted time, which the clock reaches at its next reading)
    time.advance(60_000);
    cp.clock().now();
    assert_eq!(cp.purge_expired_replay_tags().expect("purge"), 5);
    assert_eq!(cp.status().replay_tags, 5);
}

#[test]
fn supplied_times_do_not_move_the_clock_floor() {
    let dir = tempfile::tempdir().expect("tmp");
    let k = key(Alg::EdDSA, "k");
    let cp = checkpoint(dir.path(), Create::Provision, &k);
    let t = code::mint(&k.signing, &k.kid, &dynamic_claims(T0 + 10_000, 300));
    cp.check_at(&t, at(T0 + 10_000)).expect("check");
    assert_eq!(cp.status().clock_floor_ms, 0);
    // the live path (FixedClock has no floor either) leaves it too
    cp.check(&t).expect("check");
    assert_eq!(cp.status().clock_floor_ms, 0);
}

#[test]
fn unreadable_snapshot_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().expect("tmp");
    let k = key(Alg::EdDSA, "k");
    {
        let cp = checkpoint(dir.path(), Create::Provision, &k);
        for i in 0..20 {
            let t = code::mint(&k.signing, &k.kid, &dynamic_claims(T0, 400 + i));
            assert!(cp.check_at(&t, at(T0)).expect("check").accepted());
        }
    }
    let store_dir = dir.path().join("store");
    std::fs::write(store_dir.join("snap.7FFFFFFFFFFFFFFF"), vec![0x11u8; 64]).expect("write");
    let cp = checkpoint(dir.path(), Create::Guarded, &k);
    assert!(
        matches!(cp.status().open_state, OpenState::RebuiltFromLog { .. }),
        "{:?}",
        cp.status().open_state
    );
    assert_eq!(cp.status().records, 20, "the log still holds every record");
    assert!(
        cp.status().replay_guard_from_ms.is_some() || cp.status().replay_guard_pending,
        "replay guard on after a rebuild"
    );
}

#[test]
fn replay_tag_cut_off_by_a_crash_is_restored_from_the_record() {
    let dir = tempfile::tempdir().expect("tmp");
    let k = key(Alg::EdDSA, "k");
    let text = code::mint(&k.signing, &k.kid, &dynamic_claims(T0, 500));
    {
        let cp = checkpoint(dir.path(), Create::Provision, &k);
        assert!(cp.check_at(&text, at(T0)).expect("check").accepted());
    }
    // What a crash between the record insert and its index insert leaves: the record
    // (which carries the tag) without the replay-index entry.
    {
        let db = sled::open(dir.path().join("store")).expect("sled");
        let replay = db.open_tree("replay").expect("tree");
        assert_eq!(replay.len(), 1);
        replay.clear().expect("clear");
        db.flush().expect("flush");
    }
    let cp = checkpoint(dir.path(), Create::Guarded, &k);
    assert_eq!(cp.status().replay_tags, 1, "tag restored at open");
    assert_eq!(
        cp.check_at(&text, at(T0 + 1)).expect("check").reason(),
        Reason::Replayed
    );
}

#[test]
fn a_store_in_use_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let _first = open_checkpoint_as(dir.path(), Create::Provision, TrustState::default(), T0);
    let err = Checkpoint::open(dir.path(), Create::Guarded, TrustState::default(), |_| {
        std::sync::Arc::new(yima_gate::clock::FixedClock(VerifyTime::trusted(0)))
    })
    .expect_err("locked");
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
}

/// The platform's cursor is made durable before the records it covers are deleted; a cut in
/// between leaves confirmed records behind (simulated here: the cursor written, the deletion
/// not). They are never offered again, and the next open deletes them.
#[test]
fn confirmed_records_a_cut_kept_from_deletion_go_at_the_next_open() {
    let dir = tempfile::tempdir().expect("tmp");
    let k = key(Alg::EdDSA, "k");
    {
        let cp = checkpoint(dir.path(), Create::Provision, &k);
        for i in 0..5 {
            let text = code::mint(&k.signing, &k.kid, &dynamic_claims(T0, 100 + i));
            assert_eq!(
                cp.check_at(&text, at(T0 + 1)).expect("check").reason(),
                Reason::Accepted
            );
        }
    }
    {
        // The cursor as `ack_synced` persists it, without the deletion that follows.
        let db = sled::open(dir.path().join("store")).expect("sled");
        let meta = db.open_tree("meta").expect("meta");
        meta.insert("synced_through", &3u64.to_be_bytes())
            .expect("cursor");
        db.flush().expect("flush");
    }
    let cp = checkpoint(dir.path(), Create::Guarded, &k);
    let status = cp.status();
    assert_eq!(
        (status.records, status.synced_through, status.backlog),
        (2, 3, 2)
    );
    let left = cp.records_from(0, 100).expect("records");
    assert_eq!(left.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![4, 5]);
    assert_eq!(status.next_seq, 6, "sequence numbers go on");
}

/// A store written by a version that kept the policy cache in sled's meta tree: the cache is
/// moved to its own file at open (made durable before it leaves sled), and read from there.
#[test]
fn a_policy_cache_kept_in_sled_by_an_earlier_version_moves_to_its_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let k = key(Alg::EdDSA, "k");
    drop(checkpoint(dir.path(), Create::Provision, &k));
    let cache = br#"{"an":"earlier version's policy cache"}"#;
    {
        let db = sled::open(dir.path().join("store")).expect("sled");
        db.open_tree("meta")
            .expect("meta")
            .insert("policy", cache.as_slice())
            .expect("policy");
        db.flush().expect("flush");
    }
    let cp = checkpoint(dir.path(), Create::Guarded, &k);
    let outbox = cp.outbox().expect("outbox");
    assert_eq!(
        outbox.load_policy().expect("load").as_deref(),
        Some(cache.as_slice())
    );
    assert_eq!(
        std::fs::read(dir.path().join("policy.json")).expect("file"),
        cache
    );
    outbox.save_policy(b"{}").expect("save");
    drop(outbox);
    drop(cp);
    let db = sled::open(dir.path().join("store")).expect("sled");
    assert!(db
        .open_tree("meta")
        .expect("meta")
        .get("policy")
        .expect("get")
        .is_none());
    drop(db);
    let cp = checkpoint(dir.path(), Create::Guarded, &k);
    assert_eq!(
        cp.outbox()
            .expect("outbox")
            .load_policy()
            .expect("load")
            .as_deref(),
        Some(b"{}".as_slice()),
        "the newer cache is not overwritten by the old one"
    );
    assert!(
        not_private(dir.path()).is_empty(),
        "{:?}",
        not_private(dir.path())
    );
}
