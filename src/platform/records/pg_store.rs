//! The records on PostgreSQL: one database under any number of platform nodes. The schema is
//! applied by versioned migrations at start; scan records live in a table range-partitioned
//! by the platform's receive time (never the gate's clock), one partition a day, created ahead
//! by the platform and dropped whole past the retention.
//!
//! # Ingest, exactly once
//! One transaction a batch: the gateway's cursor row is locked `FOR UPDATE` (two nodes given
//! the same gateway's batches queue on it), the batch is checked against the idempotency key's
//! digest and against the records already held, the records above the cursor go in by binary
//! `COPY`, the statistics and the cursor move in the same transaction, and the batch is
//! acknowledged only after `COMMIT`. A batch the cursor already covers, received before with
//! the same content, is answered from the cursor without reading a record. Uniqueness of
//! (terminal, store, seq) comes from the cursor, not from a key: PostgreSQL refuses a primary
//! key without the partitioning column.
//!
//! # Schema (migration 1)
//! ```text
//! yima_schema     version → applied_at
//! records         received_at, terminal, store_id, seq, body (the record's JSON, as pushed)
//!                 PARTITION BY RANGE (received_at): records_pYYYYMMDD, records_default
//! record_cursors  (terminal, store_id) → through
//! record_batches  (terminal, idem_key) → digest
//! record_gaps     (terminal, store_id, from_seq) → to_seq
//! record_stats    (terminal, dim, value) → n   (one row set a terminal: no cross-gate locks)
//! audit           id → at_ms, kind, terminal, detail (JSON text)
//! ```
//! The async driver runs on a small runtime of its own; every method blocks on it (the
//! platform calls the store from blocking threads, as it does sled).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::NoTls;

use super::{
    conflict_detail, count_stats, ranges_json, record_problem, Checked, RecordStats, RecordStore,
};
use crate::platform::db::{PlatformError, Result};
use crate::sync::wire::{PushReply, RecordBatch, RecordWire, SeqRange};

/// The migrations, in order: migration `i + 1` is `MIGRATIONS[i]`, applied in one transaction.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE records (
    received_at timestamptz NOT NULL DEFAULT now(),
    terminal    text        NOT NULL,
    store_id    text        NOT NULL,
    seq         bigint      NOT NULL,
    body        bytea       NOT NULL
) PARTITION BY RANGE (received_at);
CREATE INDEX records_by_seq ON records (terminal, store_id, seq);
CREATE TABLE records_default PARTITION OF records DEFAULT;
CREATE TABLE record_cursors (
    terminal text   NOT NULL,
    store_id text   NOT NULL,
    through  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (terminal, store_id)
);
CREATE TABLE record_batches (
    terminal text  NOT NULL,
    idem_key text  NOT NULL,
    digest   bytea NOT NULL,
    PRIMARY KEY (terminal, idem_key)
);
CREATE TABLE record_gaps (
    terminal text   NOT NULL,
    store_id text   NOT NULL,
    from_seq bigint NOT NULL,
    to_seq   bigint NOT NULL,
    PRIMARY KEY (terminal, store_id, from_seq)
);
CREATE TABLE record_stats (
    terminal text   NOT NULL,
    dim      text   NOT NULL,
    value    text   NOT NULL,
    n        bigint NOT NULL,
    PRIMARY KEY (terminal, dim, value)
);
CREATE TABLE audit (
    id       bigserial PRIMARY KEY,
    at_ms    bigint NOT NULL,
    kind     text   NOT NULL,
    terminal text   NOT NULL,
    detail   text   NOT NULL
);
"#];

/// Advisory lock key serialising migrations and partition changes across nodes ("yima").
const SCHEMA_LOCK: i64 = 0x7969_6d61;
/// Partitions are created this many days ahead of today.
const DAYS_AHEAD: i64 = 7;
const DAY_MS: i64 = 86_400_000;

/// How a PostgreSQL record store is set up.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://…` or `host=… dbname=…` (libpq forms; several hosts with
    /// `target_session_attrs=read-write` for a primary and its standby).
    pub url: String,
    /// Whole daily partitions older than this many days are dropped; `None` keeps everything.
    pub retention_days: Option<u32>,
    /// Connections each node keeps at most.
    pub pool_size: usize,
}

impl PgOptions {
    pub fn new(url: &str) -> PgOptions {
        PgOptions {
            url: url.to_string(),
            retention_days: None,
            pool_size: 8,
        }
    }
}

/// The records in PostgreSQL.
pub struct PgRecords {
    /// Taken (and shut down without blocking) on drop, which may happen on an async thread.
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    retention_days: Option<u32>,
    /// The day (ms since the epoch / DAY_MS) partitions were last made ready for.
    partitions_for_day: Mutex<i64>,
}

impl std::fmt::Debug for PgRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRecords").finish_non_exhaustive()
    }
}

impl Drop for PgRecords {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A driver error as the platform's: the connection lost or refused, the server shutting
/// down, out of connections, memory or disk (SQLSTATE classes 08, 53, 57P) is `Unavailable`
/// (retryable: the transaction did not commit); anything else is a storage error.
fn pg(e: tokio_postgres::Error) -> PlatformError {
    match e.as_db_error() {
        // The server's own message (`{e}` alone says only "db error").
        Some(d) => {
            let code = d.code().code();
            let detail = format!("PostgreSQL {code}: {}", d.message());
            if code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") {
                PlatformError::Unavailable(detail)
            } else {
                PlatformError::Storage(detail)
            }
        }
        // No answer from the server at all: the connection is gone.
        None => PlatformError::Unavailable(format!("PostgreSQL: {e}")),
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> PlatformError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg(e),
        other => PlatformError::Unavailable(format!("PostgreSQL pool: {other}")),
    }
}

impl PgRecords {
    /// Connects, applies the migrations this platform knows (refusing a newer schema), and
    /// makes the partitions of the coming days.
    pub fn open(opts: &PgOptions) -> Result<PgRecords> {
        let config: tokio_postgres::Config = opts
            .url
            .parse()
            .map_err(|e| PlatformError::BadRequest(format!("database URL: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("postgres")
            .enable_all()
            .build()
            .map_err(|e| PlatformError::Storage(format!("runtime: {e}")))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = {
            let _in = runtime.enter();
            Pool::builder(manager)
                .max_size(opts.pool_size.max(1))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                // A database on the same LAN connects in milliseconds: a request (or a
                // readiness probe) learns within seconds that it is down. Under load a
                // request waits its turn for a connection rather than fail.
                .wait_timeout(Some(Duration::from_secs(30)))
                .create_timeout(Some(Duration::from_secs(2)))
                .build()
                .map_err(|e| PlatformError::Storage(format!("PostgreSQL pool: {e}")))?
        };
        let me = PgRecords {
            runtime: Some(runtime),
            pool,
            retention_days: opts.retention_days,
            partitions_for_day: Mutex::new(i64::MIN),
        };
        me.block_on(me.migrate())?;
        me.partitions_ready()?;
        Ok(me)
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.runtime {
            Some(rt) => rt.block_on(f),
            None => unreachable!("the runtime is taken only by drop"),
        }
    }

    async fn migrate(&self) -> Result<()> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS yima_schema (
                     version    integer PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .await
            .map_err(pg)?;
        let known = MIGRATIONS.len() as i32;
        loop {
            let tx = client.transaction().await.map_err(pg)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
                .await
                .map_err(pg)?;
            let current: i32 = tx
                .query_one("SELECT coalesce(max(version), 0) FROM yima_schema", &[])
                .await
                .map_err(pg)?
                .get(0);
            if current > known {
                return Err(PlatformError::Storage(format!(
                    "the database schema is version {current}, newer than this platform knows \
                     ({known}): run the newer platform, or restore the database it came from"
                )));
            }
            if current == known {
                return Ok(());
            }
            let next = current + 1;
            tx.batch_execute(MIGRATIONS[current as usize])
                .await
                .map_err(pg)?;
            tx.execute("INSERT INTO yima_schema (version) VALUES ($1)", &[&next])
                .await
                .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            tracing::info!(version = next, "platform: database schema migrated");
        }
    }

    /// Partitions from yesterday to [`DAYS_AHEAD`] days ahead exist, and those past the
    /// retention are dropped; done at most once a day per node.
    fn partitions_ready(&self) -> Result<()> {
        let today = crate::clock::wall_clock_ms().div_euclid(DAY_MS);
        let mut done = self
            .partitions_for_day
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if *done == today {
            return Ok(());
        }
        self.block_on(self.make_partitions(today))?;
        *done = today;
        Ok(())
    }

    async fn make_partitions(&self, today: i64) -> Result<()> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await
            .map_err(pg)?;
        for day in today - 1..=today + DAYS_AHEAD {
            let name = partition_name(day);
            let (from, to) = (day_text(day), day_text(day + 1));
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {name} PARTITION OF records \
                 FOR VALUES FROM ('{from}') TO ('{to}')"
            ))
            .await
            .map_err(pg)?;
        }
        if let Some(days) = self.retention_days {
            let oldest_kept = today - i64::from(days);
            let rows = tx
                .query(
                    "SELECT c.relname FROM pg_inherits i
                       JOIN pg_class c ON c.oid = i.inhrelid
                       JOIN pg_class p ON p.oid = i.inhparent
                      WHERE p.relname = 'records' AND c.relname LIKE 'records\\_p%'",
                    &[],
                )
                .await
                .map_err(pg)?;
            for row in rows {
                let name: String = row.get(0);
                if partition_day(&name).is_some_and(|d| d < oldest_kept) {
                    tx.batch_execute(&format!("DROP TABLE {name}"))
                        .await
                        .map_err(pg)?;
                    tracing::info!(partition = %name, "platform: records past the retention dropped");
                }
            }
        }
        tx.commit().await.map_err(pg)
    }

    async fn ingest_async(&self, terminal: &str, checked: &Checked<'_>) -> Result<PushReply> {
        let batch = checked.batch;
        let (first, last) = (checked.first() as i64, checked.last as i64);
        let store = checked.store();
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute(
            "INSERT INTO record_cursors (terminal, store_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&terminal, &store],
        )
        .await
        .map_err(pg)?;
        let mut cursor: i64 = tx
            .query_one(
                "SELECT through FROM record_cursors WHERE terminal = $1 AND store_id = $2 FOR UPDATE",
                &[&terminal, &store],
            )
            .await
            .map_err(pg)?
            .get(0);
        let known = tx
            .query_opt(
                "SELECT digest FROM record_batches WHERE terminal = $1 AND idem_key = $2",
                &[&terminal, &batch.idempotency_key],
            )
            .await
            .map_err(pg)?
            .map(|r| r.get::<_, Vec<u8>>(0));
        match &known {
            Some(d) if d != &checked.digest => {
                return Err(PlatformError::Conflict(format!(
                    "batch {} was received with other content",
                    batch.idempotency_key
                )));
            }
            // Received before with this content and covered: answered from the cursor.
            Some(_) if last <= cursor => {
                tx.commit().await.map_err(pg)?;
                return Ok(PushReply {
                    committed_through: cursor as u64,
                    gap: None,
                });
            }
            _ => {}
        }
        let mut gap = None;
        if first > cursor + 1 {
            let range = SeqRange {
                from: cursor as u64 + 1,
                to: first as u64 - 1,
            };
            tx.execute(
                "INSERT INTO record_gaps (terminal, store_id, from_seq, to_seq) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[&terminal, &store, &(range.from as i64), &(range.to as i64)],
            )
            .await
            .map_err(pg)?;
            audit(
                &tx,
                "gap",
                terminal,
                serde_json::json!({ "store_id": store, "from": range.from, "to": range.to,
                                    "missing": ranges_json(&[(range.from, range.to)]) }),
            )
            .await?;
            tracing::error!(%terminal, %store, from = range.from, to = range.to,
                "platform: records this platform had confirmed are missing (restored from a backup?)");
            gap = Some(range);
            cursor = first - 1;
        }
        // Records already held must match what is held, byte for byte.
        if first <= cursor {
            let rows = tx
                .query(
                    "SELECT seq, body FROM records
                      WHERE terminal = $1 AND store_id = $2 AND seq BETWEEN $3 AND $4",
                    &[&terminal, &store, &first, &last.min(cursor)],
                )
                .await
                .map_err(pg)?;
            for row in rows {
                let seq: i64 = row.get(0);
                let body: &[u8] = row.get(1);
                let held_ok = checked
                    .encoded
                    .get((seq - first) as usize)
                    .is_some_and(|e| e.as_slice() == body);
                if !held_ok {
                    return Err(PlatformError::Conflict(format!(
                        "record {seq} of store {store} is held with other content"
                    )));
                }
            }
        }
        let mut fresh: Vec<&RecordWire> = Vec::new();
        if last > cursor {
            let skip = (cursor + 1 - first) as usize;
            let sink = tx
                .copy_in("COPY records (terminal, store_id, seq, body) FROM STDIN BINARY")
                .await
                .map_err(pg)?;
            let writer =
                BinaryCopyInWriter::new(sink, &[Type::TEXT, Type::TEXT, Type::INT8, Type::BYTEA]);
            tokio::pin!(writer);
            for (r, e) in batch.records[skip..].iter().zip(&checked.encoded[skip..]) {
                let seq = r.seq as i64;
                writer
                    .as_mut()
                    .write(&[&terminal, &store, &seq, &e.as_slice()])
                    .await
                    .map_err(pg)?;
                fresh.push(r);
            }
            writer.finish().await.map_err(pg)?;
            tx.execute(
                "UPDATE record_cursors SET through = $3 WHERE terminal = $1 AND store_id = $2",
                &[&terminal, &store, &last],
            )
            .await
            .map_err(pg)?;
            cursor = last;
        }
        if known.is_none() {
            tx.execute(
                "INSERT INTO record_batches (terminal, idem_key, digest) VALUES ($1, $2, $3)",
                &[&terminal, &batch.idempotency_key, &checked.digest],
            )
            .await
            .map_err(pg)?;
        }
        let (sane, odd): (Vec<&RecordWire>, Vec<&RecordWire>) =
            fresh.into_iter().partition(|r| record_problem(r).is_none());
        for r in odd.iter().take(100) {
            audit(
                &tx,
                "anomalous_record",
                terminal,
                serde_json::json!({ "store_id": store, "seq": r.seq, "problem": record_problem(r) }),
            )
            .await?;
        }
        if !sane.is_empty() {
            let mut counts = HashMap::new();
            for r in &sane {
                count_stats(terminal, r, &mut counts);
            }
            let (mut dims, mut values, mut ns) = (Vec::new(), Vec::new(), Vec::new());
            for ((dim, value), n) in counts {
                dims.push(dim.to_string());
                values.push(value);
                ns.push(n as i64);
            }
            tx.execute(
                "INSERT INTO record_stats (terminal, dim, value, n)
                 SELECT $1, d, v, n FROM unnest($2::text[], $3::text[], $4::bigint[]) AS u(d, v, n)
                 ON CONFLICT (terminal, dim, value) DO UPDATE SET n = record_stats.n + EXCLUDED.n",
                &[&terminal, &dims, &values, &ns],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(PushReply {
            committed_through: cursor as u64,
            gap,
        })
    }
}

async fn audit(
    tx: &deadpool_postgres::Transaction<'_>,
    kind: &str,
    terminal: &str,
    detail: serde_json::Value,
) -> Result<()> {
    tx.execute(
        "INSERT INTO audit (at_ms, kind, terminal, detail) VALUES ($1, $2, $3, $4)",
        &[
            &crate::clock::wall_clock_ms(),
            &kind,
            &terminal,
            &detail.to_string(),
        ],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// `records_pYYYYMMDD` of a day number (ms since the epoch / [`DAY_MS`]).
fn partition_name(day: i64) -> String {
    format!("records_p{}", day_text(day).replace('-', ""))
}

/// `YYYY-MM-DD` (UTC) of a day number.
fn day_text(day: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(day * 86_400)
        .map(|t| {
            let d = t.date();
            format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
        })
        .unwrap_or_else(|_| "1970-01-01".into())
}

/// The day number of a `records_pYYYYMMDD` partition.
fn partition_day(name: &str) -> Option<i64> {
    let digits = name.strip_prefix("records_p")?;
    if digits.len() != 8 {
        return None;
    }
    let (y, m, d) = (
        digits[..4].parse::<i32>().ok()?,
        digits[4..6].parse::<u8>().ok()?,
        digits[6..].parse::<u8>().ok()?,
    );
    let date = time::Date::from_calendar_date(y, time::Month::try_from(m).ok()?, d).ok()?;
    Some(
        date.midnight()
            .assume_utc()
            .unix_timestamp()
            .div_euclid(86_400),
    )
}

impl RecordStore for PgRecords {
    fn ingest(&self, terminal: &str, batch: &RecordBatch) -> Result<PushReply> {
        let checked = Checked::new(batch)?;
        self.partitions_ready()?;
        match self.block_on(self.ingest_async(terminal, &checked)) {
            // The ingest transaction rolled back; the refusal is recorded in one of its own.
            Err(PlatformError::Conflict(m)) => {
                self.block_on(async {
                    let mut client = self.pool.get().await.map_err(pool_err)?;
                    let tx = client.transaction().await.map_err(pg)?;
                    audit(&tx, "conflict", terminal, conflict_detail(batch, &m)).await?;
                    tx.commit().await.map_err(pg)
                })?;
                Err(PlatformError::Conflict(m))
            }
            r => r,
        }
    }

    fn cursor(&self, terminal: &str, store_id: &str) -> Result<u64> {
        self.block_on(async {
            let client = self.pool.get().await.map_err(pool_err)?;
            let row = client
                .query_opt(
                    "SELECT through FROM record_cursors WHERE terminal = $1 AND store_id = $2",
                    &[&terminal, &store_id],
                )
                .await
                .map_err(pg)?;
            Ok(row.map_or(0, |r| r.get::<_, i64>(0) as u64))
        })
    }

    fn records_of(&self, terminal: &str) -> Result<Vec<(String, RecordWire)>> {
        self.block_on(async {
            let client = self.pool.get().await.map_err(pool_err)?;
            let rows = client
                .query(
                    "SELECT store_id, body FROM records WHERE terminal = $1 ORDER BY store_id, seq",
                    &[&terminal],
                )
                .await
                .map_err(pg)?;
            rows.iter()
                .map(|r| Ok((r.get::<_, String>(0), serde_json::from_slice(r.get(1))?)))
                .collect()
        })
    }

    fn record_stats(&self) -> Result<RecordStats> {
        self.block_on(async {
            let client = self.pool.get().await.map_err(pool_err)?;
            let rows = client
                .query(
                    "SELECT dim, value, sum(n)::bigint FROM record_stats GROUP BY dim, value",
                    &[],
                )
                .await
                .map_err(pg)?;
            let mut s = RecordStats::default();
            for r in rows {
                s.add(r.get(0), r.get(1), r.get::<_, i64>(2) as u64);
            }
            Ok(s)
        })
    }

    fn audit_events(&self, limit: usize) -> Result<Vec<serde_json::Value>> {
        self.block_on(async {
            let client = self.pool.get().await.map_err(pool_err)?;
            let rows = client
                .query(
                    "SELECT id, at_ms, kind, terminal, detail FROM audit ORDER BY id DESC LIMIT $1",
                    &[&(limit as i64)],
                )
                .await
                .map_err(pg)?;
            rows.iter()
                .map(|r| {
                    Ok(serde_json::json!({
                        "seq": r.get::<_, i64>(0),
                        "at_ms": r.get::<_, i64>(1),
                        "kind": r.get::<_, String>(2),
                        "terminal": r.get::<_, String>(3),
                        "detail": serde_json::from_str::<serde_json::Value>(r.get(4))?,
                    }))
                })
                .collect()
        })
    }

    fn ready(&self) -> Result<()> {
        self.block_on(async {
            let client = self.pool.get().await.map_err(pool_err)?;
            client.simple_query("SELECT 1").await.map_err(pg)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_and_days_round_trip() {
        let day = 20_793; // 2026-12-06: 20,793 days after 1970-01-01
        assert_eq!(partition_name(day), "records_p20261206");
        assert_eq!(day_text(day + 1), "2026-12-07");
        assert_eq!(partition_day("records_p20261206"), Some(day));
        assert_eq!(partition_day("records_default"), None);
        assert_eq!(partition_day("records_p2026120"), None);
    }
}
