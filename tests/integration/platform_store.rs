//! The platform's record stores against one suite: sled (embedded) and PostgreSQL (a real
//! server, [`crate::common::pg`]). Exactly once through re-sends and overlaps, conflicts,
//! gaps, hostile sequence numbers and sizes, anomalous records kept out of the statistics,
//! concurrent pushes of one gateway; and on PostgreSQL the schema's versioning, partitions
//! and retention.

use std::sync::Arc;

use yima_gate::platform::client::BackgroundPlatform;
use yima_gate::platform::db::PlatformError;
use yima_gate::platform::records::pg_store::{PgOptions, PgRecords};
use yima_gate::platform::records::sled_store::{SledLog, SledRecords};
use yima_gate::platform::records::{RecordStore, MAX_RECORD_BYTES, MAX_SEQ};
use yima_gate::sync::wire::{RecordBatch, RecordWire};
use yima_gate::verification::verdict::{CodeKind, Reason};

const T: &str = "GATE-C";
const STORE: &str = "00112233445566778899aabbccddeeff";

fn record(seq: u64) -> RecordWire {
    RecordWire {
        seq,
        at_ms: 1_780_000_000_000 + seq as i64 * 1000,
        clock_trusted: true,
        reason: if seq % 5 == 0 {
            Reason::Expired
        } else {
            Reason::Accepted
        },
        online_reason: None,
        kind: Some(CodeKind::Dynamic),
        service: Some(format!("SVC-{}", seq % 3)),
        scene: Some("GATE-1".into()),
        alg: Some("EdDSA".into()),
        kid: Some("0011223344556677".into()),
        issuer: Some("YMTB-REF".into()),
        cti_hash: Some(format!("{seq:032x}")),
        sub_hash: Some("ffeeddccbbaa99887766554433221100".into()),
    }
}

fn batch_of(store: &str, first: u64, n: u64) -> RecordBatch {
    RecordBatch {
        store_id: store.into(),
        idempotency_key: RecordBatch::key(store, first, first + n - 1),
        first_seq: first,
        records: (first..first + n).map(record).collect(),
    }
}

fn batch(first: u64, n: u64) -> RecordBatch {
    batch_of(STORE, first, n)
}

fn seqs(s: &dyn RecordStore, terminal: &str) -> Vec<u64> {
    s.records_of(terminal)
        .expect("records")
        .into_iter()
        .map(|(_, r)| r.seq)
        .collect()
}

fn events(s: &dyn RecordStore, kind: &str) -> Vec<serde_json::Value> {
    s.audit_events(10_000)
        .expect("audit")
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

/// The suite: every store must pass it.
fn conformance(s: &dyn RecordStore) {
    // Exactly once through re-sends and overlaps.
    let r = s.ingest(T, &batch(1, 300)).expect("first");
    assert_eq!((r.committed_through, r.gap), (300, None));
    let r = s.ingest(T, &batch(1, 300)).expect("re-sent");
    assert_eq!(r.committed_through, 300);
    let r = s.ingest(T, &batch(250, 100)).expect("overlap");
    assert_eq!(r.committed_through, 349);
    assert_eq!(seqs(s, T), (1..=349).collect::<Vec<_>>());
    assert_eq!(s.cursor(T, STORE).expect("cursor"), 349);
    let stats = s.record_stats().expect("stats");
    assert_eq!(stats.records, 349);
    assert_eq!(stats.by_terminal.get(T), Some(&349));
    assert_eq!(stats.by_verdict.get("expired"), Some(&69));
    assert_eq!(stats.by_service.values().sum::<u64>(), 349);

    // The same key, or a held seq, with other content: refused, nothing stored.
    let mut other = batch(1, 300);
    other.records[7].reason = Reason::Replayed;
    assert!(matches!(
        s.ingest(T, &other),
        Err(PlatformError::Conflict(_))
    ));
    let mut other = batch(340, 20);
    other.records[0].reason = Reason::Replayed;
    assert!(matches!(
        s.ingest(T, &other),
        Err(PlatformError::Conflict(_))
    ));
    assert_eq!(s.cursor(T, STORE).expect("cursor"), 349);
    assert_eq!(s.record_stats().expect("stats").records, 349);

    // A batch past the cursor: the gap is recorded and audited, ingest goes on.
    let r = s.ingest(T, &batch(400, 10)).expect("past the cursor");
    assert_eq!(r.committed_through, 409);
    let gap = r.gap.expect("gap");
    assert_eq!((gap.from, gap.to), (350, 399));
    assert_eq!(events(s, "gap").len(), 1);

    // Hostile sequence numbers and sizes: refused, the cursor never moves back.
    for first in [u64::MAX, u64::MAX - 1, MAX_SEQ, 0] {
        let mut b = batch(1, 2);
        b.first_seq = first;
        for (i, r) in b.records.iter_mut().enumerate() {
            r.seq = first.wrapping_add(i as u64);
        }
        b.idempotency_key = RecordBatch::key(STORE, first, first.wrapping_add(1));
        assert!(
            matches!(s.ingest(T, &b), Err(PlatformError::BadRequest(_))),
            "first_seq {first}"
        );
    }
    let mut big = batch(410, 3);
    big.records[1].service = Some("x".repeat(MAX_RECORD_BYTES));
    assert!(matches!(
        s.ingest(T, &big),
        Err(PlatformError::BadRequest(_))
    ));
    let mut skewed = batch(410, 3);
    skewed.idempotency_key = RecordBatch::key(STORE, 410, 420);
    assert!(matches!(
        s.ingest(T, &skewed),
        Err(PlatformError::BadRequest(_))
    ));
    assert_eq!(s.cursor(T, STORE).expect("cursor"), 409);

    // Records out of bounds are held but kept out of the statistics, each audited.
    let mut odd = batch(410, 3);
    odd.records[0].kid = Some("not hex".into());
    odd.records[1].at_ms = 1_000;
    let before = s.record_stats().expect("stats").records;
    assert_eq!(s.ingest(T, &odd).expect("odd").committed_through, 412);
    assert_eq!(s.record_stats().expect("stats").records, before + 1);
    assert_eq!(events(s, "anomalous_record").len(), 2);
    assert_eq!(seqs(s, T).len(), 349 + 10 + 3);

    // Another store and another terminal have sequence spaces of their own.
    s.ingest(T, &batch_of("another-store", 1, 5))
        .expect("store 2");
    s.ingest("GATE-D", &batch(1, 5)).expect("terminal 2");
    assert_eq!(s.cursor(T, "another-store").expect("cursor"), 5);
    assert_eq!(s.cursor("GATE-D", STORE).expect("cursor"), 5);
    assert_eq!(seqs(s, "GATE-D"), vec![1, 2, 3, 4, 5]);
}

/// Two threads push one gateway's batches at once, overlapping and out of order: every
/// record held once, the cursor at the end.
fn concurrent_pushes(s: Arc<dyn RecordStore>) {
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..40u64 {
                    let first = 1 + ((i * 2 + t) % 80) * 50;
                    let _ = s.ingest("GATE-X", &batch(first.min(i * 100 + 1), 100));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("pusher");
    }
    // Whatever gaps the disorder made, a final push from 1 fills nothing twice.
    let _ = s.ingest("GATE-X", &batch(1, 4000));
    let held = seqs(s.as_ref(), "GATE-X");
    let mut unique = held.clone();
    unique.dedup();
    assert_eq!(held, unique, "no record held twice");
    assert_eq!(
        s.record_stats()
            .expect("stats")
            .by_terminal
            .get("GATE-X")
            .copied(),
        Some(held.len() as u64),
        "statistics count each held record once"
    );
}

fn sled_store(dir: &std::path::Path) -> SledRecords {
    SledRecords::open(SledLog::open(&dir.join("db")).expect("sled")).expect("records")
}

#[test]
fn the_sled_store_passes_the_suite() {
    let dir = tempfile::tempdir().expect("tmp");
    conformance(&sled_store(dir.path()));
    let dir = tempfile::tempdir().expect("tmp");
    concurrent_pushes(Arc::new(sled_store(dir.path())));
}

#[test]
fn the_postgres_store_passes_the_suite() {
    let Some(pg) = crate::common::pg::cluster() else {
        return;
    };
    let db = pg.fresh_database();
    conformance(&PgRecords::open(&PgOptions::new(&pg.url(&db))).expect("open"));
    let db = pg.fresh_database();
    concurrent_pushes(Arc::new(
        PgRecords::open(&PgOptions::new(&pg.url(&db))).expect("open"),
    ));
}

#[test]
fn the_postgres_schema_is_versioned_partitioned_and_retained() {
    let Some(pg) = crate::common::pg::cluster() else {
        return;
    };
    let db = pg.fresh_database();
    let url = pg.url(&db);
    let mut opts = PgOptions::new(&url);
    opts.retention_days = Some(30);
    let s = PgRecords::open(&opts).expect("open");
    s.ingest(T, &batch(1, 10)).expect("ingest");
    drop(s);
    // A second node opening the same database migrates nothing and sees the records.
    let s = PgRecords::open(&PgOptions::new(&url)).expect("second node");
    assert_eq!(seqs(&s, T).len(), 10);
    // Records went to today's partition, made ahead; an old partition past the retention is
    // dropped whole at the next start.
    pg.execute(
        &db,
        "CREATE TABLE records_p20200101 PARTITION OF records
             FOR VALUES FROM ('2020-01-01') TO ('2020-01-02');
         INSERT INTO records (received_at, terminal, store_id, seq, body)
             VALUES ('2020-01-01 12:00Z', 'OLD', 's', 1, '\\x7b7d');",
    )
    .expect("old partition");
    drop(s);
    let s = PgRecords::open(&opts).expect("reopen");
    assert!(seqs(&s, "OLD").is_empty(), "the old partition was dropped");
    assert_eq!(seqs(&s, T).len(), 10, "today's records kept");
    drop(s);
    // A schema newer than this platform knows: refused with a clear message, untouched.
    pg.execute(&db, "INSERT INTO yima_schema (version) VALUES (999)")
        .expect("newer schema");
    let err = PgRecords::open(&PgOptions::new(&url)).expect_err("newer schema refused");
    assert!(
        err.to_string().contains("newer than this platform knows"),
        "{err}"
    );
}

/// A platform on loopback with its records in the PostgreSQL database at `url`.
fn platform_on(data: &std::path::Path, url: &str) -> BackgroundPlatform {
    BackgroundPlatform::start_with(data, Some(PgOptions::new(url))).expect("platform")
}

/// The platform with its records in PostgreSQL, end to end: a gate enrolled over mutual TLS
/// pushes 2,500 records in 1,000-record batches, a second push finds nothing left, the admin
/// API's records, statistics and the database agree.
#[test]
fn a_gate_pushes_through_the_sync_api_into_postgres() {
    let Some(pg) = crate::common::pg::cluster() else {
        return;
    };
    yima_gate::sync::tls::install_provider();
    let db = pg.fresh_database();
    let dir = tempfile::tempdir().expect("tmp");
    let p = platform_on(&dir.path().join("platform"), &pg.url(&db));
    let token = p.admin.create_terminal("GATE-PG-1", &[]).expect("terminal");
    let state = dir.path().join("gate");
    yima_gate::sync::enroll(&p.sync_url(), &token, "GATE-PG-1", &state).expect("enroll");
    let mut gate = crate::platform_crash::Backlog::open(&state);
    gate.add(2500);
    let syncer = crate::platform_crash::syncer(&gate.cp, &state);
    assert_eq!(syncer.push().expect("push"), 2500);
    assert_eq!(syncer.push().expect("nothing left"), 0);
    assert_eq!(gate.cp.status().backlog, 0);
    let held = p
        .admin
        .get("/admin/v1/records?terminal=GATE-PG-1")
        .expect("records");
    assert_eq!(held.as_array().map(Vec::len), Some(2500));
    let stats = p.admin.get("/admin/v1/stats").expect("stats");
    assert_eq!(stats["records"].as_u64(), Some(2500), "{stats}");
    assert_eq!(stats["terminals"].as_u64(), Some(1));
    // The rows are where the schema says, in today's partition.
    pg.execute(
        &db,
        "DO $$ BEGIN
           IF (SELECT count(*) FROM records WHERE terminal = 'GATE-PG-1') <> 2500
              OR (SELECT count(*) FROM records_default) <> 0
              OR (SELECT through FROM record_cursors WHERE terminal = 'GATE-PG-1') <> 2500
           THEN RAISE EXCEPTION 'records not as pushed'; END IF;
         END $$;",
    )
    .expect("2,500 rows in dated partitions, cursor 2,500");
}

/// The database killed -9 in the middle of ingest from three gates: pushes fail (503, nothing
/// acknowledged that was not committed), `/readyz` says so, the pool reconnects by itself when
/// the database is back, and then every record is held exactly once.
#[test]
fn the_database_killed_mid_ingest_loses_and_doubles_nothing() {
    let Some(mut pg) = crate::common::pg::OwnedCluster::start() else {
        return;
    };
    yima_gate::sync::tls::install_provider();
    let db = pg.fresh_database();
    let dir = tempfile::tempdir().expect("tmp");
    let p = platform_on(&dir.path().join("platform"), &pg.url(&db));
    let readyz = format!("{}/readyz", p.running().admin_url());
    let ready = || {
        reqwest::blocking::get(&readyz)
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(ready(), 200);
    const GATES: usize = 3;
    const EACH: u64 = 1500;
    let gates: Vec<_> = (0..GATES)
        .map(|i| {
            let id = format!("GATE-PGF-{i}");
            let token = p.admin.create_terminal(&id, &[]).expect("terminal");
            let state = dir.path().join(&id);
            yima_gate::sync::enroll(&p.sync_url(), &token, &id, &state).expect("enroll");
            let mut gate = crate::platform_crash::Backlog::open(&state);
            gate.add(EACH);
            (id, state, gate)
        })
        .collect();
    let syncer = |state: &std::path::Path, gate: &crate::platform_crash::Backlog| {
        let enrollment = yima_gate::sync::Enrollment::load(state)
            .expect("load")
            .expect("enrolled");
        yima_gate::sync::Syncer::new(
            gate.cp.clone(),
            enrollment,
            yima_gate::sync::SyncOptions {
                batch: 50,
                max_backlog: 0,
                request_timeout: std::time::Duration::from_secs(10),
                ..yima_gate::sync::SyncOptions::default()
            },
        )
        .expect("syncer")
    };
    std::thread::scope(|scope| {
        for (_, state, gate) in &gates {
            let s = syncer(state, gate);
            scope.spawn(move || {
                // Push until the database goes: an error ends this gate's round.
                while s.push().is_ok_and(|n| n > 0) {}
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        pg.kill();
    });
    let acknowledged: Vec<u64> = gates
        .iter()
        .map(|(_, _, g)| g.cp.outbox().expect("outbox").synced_through())
        .collect();
    assert!(
        acknowledged.iter().any(|&a| a < EACH),
        "the kill fell inside ingest: {acknowledged:?}"
    );
    assert_eq!(ready(), 503, "readyz says the database is down");
    let (_, state, gate) = &gates[0];
    assert!(
        syncer(state, gate).push().is_err(),
        "a push while it is down fails"
    );
    pg.restart().expect("database back");
    // The pool reconnects by itself.
    let mut waited = 0;
    while ready() != 200 && waited < 100 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        waited += 1;
    }
    assert_eq!(ready(), 200, "readyz says the database is back");
    for (id, state, gate) in &gates {
        syncer(state, gate).push().expect("push after the restart");
        assert_eq!(gate.cp.status().backlog, 0);
        let store_id = gate.cp.outbox().expect("outbox").store_id().to_string();
        let held = crate::platform_crash::held_seqs(&p.admin, id, &store_id);
        assert_eq!(
            held,
            (1..=EACH).collect::<Vec<_>>(),
            "{id}: each record once"
        );
    }
    let stats = p.admin.get("/admin/v1/stats").expect("stats");
    assert_eq!(
        stats["records"].as_u64(),
        Some(GATES as u64 * EACH),
        "{stats}"
    );
    let audit = p.admin.get("/admin/v1/audit").expect("audit");
    assert!(!audit.to_string().contains("\"gap\""), "no gap: {audit}");
    drop(p);
}

/// `yima-gate demo --database …`: the same scenarios with the platform's records in
/// PostgreSQL, every verification held there exactly once.
#[test]
fn the_demo_runs_against_postgres() {
    let Some(pg) = crate::common::pg::cluster() else {
        return;
    };
    let db = pg.fresh_database();
    let dir = tempfile::tempdir().expect("tmp");
    let o = crate::common::gate()
        .args(["demo", "--database", &pg.url(&db), "--state-dir"])
        .arg(dir.path().join("demo"))
        .output()
        .expect("demo");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("platform: 9 records held"), "{out}");
    pg.execute(
        &db,
        "DO $$ BEGIN
           IF (SELECT count(*) FROM records) <> 9 THEN RAISE EXCEPTION 'not 9'; END IF;
         END $$;",
    )
    .expect("the 9 records are in PostgreSQL");
}
