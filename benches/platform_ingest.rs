//! The platform's ingest at scale: simulated gateways (200 by default, `YIMA_INGEST_GATES`),
//! each enrolled over mutual TLS with its own certificate, push 1,000-record batches
//! (`YIMA_INGEST_BATCHES` each, 5 by default) at once through the real sync API into the
//! platform, whose records are in PostgreSQL (a throw-away cluster this bench starts from
//! Debian's binaries, `synchronous_commit=on`) — and, for comparison, in its embedded sled.
//! Database, platform and load share this machine's cores.
//!
//! Reports, per store: records/s end to end, p50/p99 batch acknowledgement latency, the
//! re-push rate (every batch sent again: answered from the cursor), bytes per record on disk;
//! and the raw binary COPY rate into the same PostgreSQL table from one connection, measured
//! in the same run, with the end-to-end rate's ratio to it.
//!
//! Run: `cargo bench --bench platform_ingest` (needs `postgresql` installed).

#[allow(dead_code)]
#[path = "../tests/integration/common/pg.rs"]
mod pg;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use yima_gate::platform::client::BackgroundPlatform;
use yima_gate::platform::records::pg_store::PgOptions;
use yima_gate::sync::wire::{PushReply, RecordBatch, RecordWire};
use yima_gate::verification::verdict::{CodeKind, Reason};

const BATCH: u64 = 1000;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn record(seq: u64, now_ms: i64) -> RecordWire {
    RecordWire {
        seq,
        at_ms: now_ms - 3_600_000 + seq as i64,
        clock_trusted: true,
        reason: if seq % 17 == 0 {
            Reason::Replayed
        } else {
            Reason::Accepted
        },
        online_reason: None,
        kind: Some(CodeKind::Dynamic),
        service: Some(format!("SVC-{}", seq % 7)),
        scene: Some(format!("GATE-{}", seq % 3)),
        alg: Some("EdDSA".into()),
        kid: Some("0011223344556677".into()),
        issuer: Some("HLJ-YMTB".into()),
        cti_hash: Some(format!("{seq:032x}")),
        sub_hash: Some(format!("{:032x}", seq.wrapping_mul(0x9E37_79B9_7F4A_7C15))),
    }
}

/// One batch's key and body, as a gate sends it.
fn batch_body(store: &str, first: u64, now_ms: i64) -> (String, Vec<u8>) {
    let b = RecordBatch {
        store_id: store.into(),
        idempotency_key: RecordBatch::key(store, first, first + BATCH - 1),
        first_seq: first,
        records: (first..first + BATCH).map(|s| record(s, now_ms)).collect(),
    };
    (
        b.idempotency_key.clone(),
        serde_json::to_vec(&b).expect("json"),
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A simulated gateway: its mutual-TLS client, bound to a loopback address of its own (the
/// platform allows a peer address 16 connections, as gates have addresses of their own), and
/// its store id.
struct Gateway {
    http: reqwest::blocking::Client,
    url: String,
    store: String,
}

impl Gateway {
    fn push(&self, body: Vec<u8>) -> PushReply {
        let r = self
            .http
            .post(&self.url)
            .header("X-Yima-Protocol", yima_gate::sync::wire::PROTOCOL)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .expect("push");
        assert!(r.status().is_success(), "push: {}", r.status());
        r.json().expect("reply")
    }
}

/// Every gateway pushes its batches at once; returns (seconds, sorted latencies).
fn push_all(clients: &[Gateway], batches: u64, now_ms: i64) -> (f64, Vec<Duration>) {
    let latencies = Mutex::new(Vec::new());
    let start = Instant::now();
    std::thread::scope(|scope| {
        for gateway in clients {
            let latencies = &latencies;
            scope.spawn(move || {
                let mut mine = Vec::new();
                for b in 0..batches {
                    let (_, body) = batch_body(&gateway.store, 1 + b * BATCH, now_ms);
                    let t = Instant::now();
                    let reply = gateway.push(body);
                    mine.push(t.elapsed());
                    assert!(reply.committed_through >= (b + 1) * BATCH);
                }
                latencies.lock().expect("latencies").extend(mine);
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let mut l = latencies.into_inner().expect("latencies");
    l.sort();
    (secs, l)
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Runs the load against one platform; returns records/s end to end.
fn run(
    name: &str,
    database: Option<PgOptions>,
    gates: u64,
    batches: u64,
) -> (f64, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tmp").keep();
    let p = BackgroundPlatform::start_with(&dir.join("platform"), database).expect("platform");
    let now_ms = yima_gate::clock::wall_clock_ms();
    let t = Instant::now();
    let clients: Vec<Gateway> = (0..gates)
        .map(|i| {
            let id = format!("BENCH-{i:04}");
            let token = p.admin.create_terminal(&id, &[]).expect("terminal");
            let e = yima_gate::sync::enroll(&p.sync_url(), &token, &id, &dir.join(&id))
                .expect("enroll");
            let tls =
                yima_gate::sync::tls::client_config(&e.ca_pem, Some((&e.cert_pem, &e.key_pem)))
                    .expect("tls");
            let local = std::net::Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250) as u8 + 1);
            Gateway {
                http: reqwest::blocking::Client::builder()
                    .use_preconfigured_tls(tls)
                    .local_address(std::net::IpAddr::V4(local))
                    .timeout(Duration::from_secs(120))
                    .build()
                    .expect("client"),
                url: format!("{}/v1/records", p.sync_url()),
                store: format!("{i:032x}"),
            }
        })
        .collect();
    println!(
        "[{name}] {gates} gateways enrolled over mutual TLS in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let n = gates * batches * BATCH;
    let (secs, lat) = push_all(&clients, batches, now_ms);
    let rate = n as f64 / secs;
    println!(
        "[{name}] ingest: {n} records from {gates} gateways in {secs:.2} s = {rate:.0} records/s; \
         batch acknowledgement p50 {:.0} ms, p99 {:.0} ms",
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3
    );
    let (resecs, _) = push_all(&clients, batches, now_ms);
    println!(
        "[{name}] re-push of every batch (answered from the cursor): {:.0} records/s",
        n as f64 / resecs
    );
    let stats = p.admin.get("/admin/v1/stats").expect("stats");
    assert_eq!(stats["records"].as_u64(), Some(n), "every record once");
    drop(clients);
    drop(p);
    (rate, dir)
}

fn main() {
    yima_gate::sync::tls::install_provider();
    let gates = env_or("YIMA_INGEST_GATES", 200);
    let batches = env_or("YIMA_INGEST_BATCHES", 5);
    let n = gates * batches * BATCH;

    let (sled_rate, sled_dir) = run("sled", None, gates, batches);
    println!(
        "[sled] {:.0} bytes per record on disk (the platform's whole sled directory)",
        dir_bytes(&sled_dir.join("platform")) as f64 / n as f64
    );
    let _ = std::fs::remove_dir_all(&sled_dir);

    let Some(cluster) = pg::OwnedCluster::start() else {
        println!("PostgreSQL not installed: apt-get install postgresql");
        return;
    };
    let db = cluster.fresh_database();
    let url = cluster.url(&db);
    let mut opts = PgOptions::new(&url);
    opts.pool_size = 16;
    let (pg_rate, pg_dir) = run("postgres", Some(opts), gates, batches);
    let _ = std::fs::remove_dir_all(&pg_dir);

    // Bytes per record, and the raw COPY rate into the same table (a second database).
    // The raw COPY goes to a second database with the same schema.
    let raw_db = cluster.fresh_database();
    drop(yima_gate::platform::records::pg_store::PgRecords::open(
        &PgOptions::new(&cluster.url(&raw_db)),
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (per_record, raw_rate) = rt.block_on(async {
        let connect = |url: String| async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            client
        };
        let client = connect(url.clone()).await;
        let row = client
            .query_one(
                "SELECT sum(pg_total_relation_size(relid))::bigint, (SELECT count(*) FROM records)
                   FROM pg_partition_tree('records')",
                &[],
            )
            .await
            .expect("sizes");
        let (bytes, rows): (i64, i64) = (row.get(0), row.get(1));
        // Raw: binary COPY of the same rows, one transaction per 1,000, one connection.
        let mut raw = connect(cluster.url(&raw_db)).await;
        let body = serde_json::to_vec(&record(1, 0)).expect("json");
        let start = Instant::now();
        for b in 0..n / BATCH {
            let tx = raw.transaction().await.expect("tx");
            let sink = tx
                .copy_in("COPY records (terminal, store_id, seq, body) FROM STDIN BINARY")
                .await
                .expect("copy");
            let writer = tokio_postgres::binary_copy::BinaryCopyInWriter::new(
                sink,
                &[
                    tokio_postgres::types::Type::TEXT,
                    tokio_postgres::types::Type::TEXT,
                    tokio_postgres::types::Type::INT8,
                    tokio_postgres::types::Type::BYTEA,
                ],
            );
            tokio::pin!(writer);
            for s in 0..BATCH {
                let seq = (b * BATCH + s) as i64;
                writer
                    .as_mut()
                    .write(&[&"RAW", &"raw-store", &seq, &body.as_slice()])
                    .await
                    .expect("row");
            }
            writer.finish().await.expect("finish");
            tx.commit().await.expect("commit");
        }
        let raw_rate = n as f64 / start.elapsed().as_secs_f64();
        (bytes as f64 / rows.max(1) as f64, raw_rate)
    });
    println!("[postgres] {per_record:.0} bytes per record on disk (records table, its partitions and index)");
    println!(
        "[postgres] raw binary COPY into the same table, one connection, 1,000 rows a transaction: \
         {raw_rate:.0} records/s; end to end is {:.0} % of it",
        100.0 * pg_rate / raw_rate
    );
    println!(
        "summary: postgres {pg_rate:.0} records/s, sled {sled_rate:.0} records/s, raw COPY {raw_rate:.0} records/s ({gates} gateways, {n} records)"
    );
    drop(cluster);
}
