//! The records on sled, beside the rest of the reference platform's state in the same sled
//! database (`db.rs`): trees `records` (chunks of JSON lines), `cursors`, `gaps`, `batches`,
//! `stats` and `audit`; the layout and why chunks stay small are in [`crate::platform::db`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{
    conflict_detail, count_stats, ranges_json, record_problem, subtract, Checked, RecordStats,
    RecordStore,
};
use crate::platform::db::{PlatformError, Result};
use crate::sync::wire::{PushReply, RecordBatch, RecordWire, SeqRange};

/// A record chunk is closed before it passes this many bytes (see Durability in `db.rs`).
const CHUNK_BYTES: usize = 6144;

/// The platform's sled database and what makes a change durable in it.
#[derive(Debug)]
pub struct SledLog {
    pub db: sled::Db,
    log_path: PathBuf,
    /// sled's files outside its log, made durable.
    pub files: crate::files::EngineFiles,
}

impl SledLog {
    /// Opens (or creates) sled at `path`, private, its files made durable.
    pub fn open(path: &Path) -> Result<Arc<SledLog>> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(16 * 1024 * 1024)
            .open()?;
        // sled's files hold the CA key, the bundle root key and every code-signing key.
        crate::files::restrict_tree(path).map_err(|e| PlatformError::Storage(e.to_string()))?;
        let files = crate::files::EngineFiles::open(path)
            .map_err(|e| PlatformError::Storage(e.to_string()))?;
        Ok(Arc::new(SledLog {
            db,
            log_path: path.join("db"),
            files,
        }))
    }

    /// sled flush + fsync of any blob file + fsync of its log (sled's flush alone is
    /// `sync_file_range`; see Durability in `db.rs`).
    pub fn durable(&self) -> Result<()> {
        self.db.flush()?;
        self.files
            .sync_blobs()
            .map_err(|e| PlatformError::Storage(e.to_string()))?;
        std::fs::File::open(&self.log_path)
            .and_then(|f| f.sync_data())
            .map_err(|e| PlatformError::Storage(format!("fsync: {e}")))
    }
}

/// The records in the platform's sled database.
#[derive(Debug)]
pub struct SledRecords {
    log: Arc<SledLog>,
    records: sled::Tree,
    cursors: sled::Tree,
    gaps: sled::Tree,
    batches: sled::Tree,
    stats: sled::Tree,
    audit: sled::Tree,
    /// Serialises ingest (cursor read-modify-write, counters).
    write: Mutex<()>,
}

fn be_u64(v: &[u8]) -> u64 {
    v.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

/// `dimension \0 value`, or `records`: a counter's key in the `stats` tree.
fn stats_key(dim: &str, value: &str) -> Vec<u8> {
    if dim == "records" {
        return b"records".to_vec();
    }
    format!("{dim}\u{0}{value}").into_bytes()
}

fn record_key(terminal: &str, store: &str, seq: u64) -> Vec<u8> {
    let mut k = store_key(terminal, store);
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `terminal \0 store`: the key of a store's cursor, and the prefix of its records.
fn store_key(terminal: &str, store: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(terminal.len() + store.len() + 1);
    k.extend_from_slice(terminal.as_bytes());
    k.push(0);
    k.extend_from_slice(store.as_bytes());
    k
}

/// The first seq of a record chunk, from its key (the last 8 bytes).
fn chunk_seq(key: &[u8]) -> u64 {
    key.len().checked_sub(8).map_or(0, |i| be_u64(&key[i..]))
}

impl SledRecords {
    /// Opens the record trees of `log`'s database and checks every cursor against the records
    /// held (see Durability in `db.rs`).
    pub fn open(log: Arc<SledLog>) -> Result<SledRecords> {
        let db = &log.db;
        let fresh_gaps = !db.tree_names().iter().any(|n| n.as_ref() == b"gaps");
        let me = SledRecords {
            records: db.open_tree("records")?,
            cursors: db.open_tree("cursors")?,
            gaps: db.open_tree("gaps")?,
            batches: db.open_tree("batches")?,
            stats: db.open_tree("stats")?,
            audit: db.open_tree("audit")?,
            write: Mutex::new(()),
            log,
        };
        if fresh_gaps {
            me.gaps_from_audit()?;
        }
        me.check_cursors()?;
        me.log.durable()?;
        Ok(me)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores a batch exactly once and answers the store's contiguous cursor (see the
    /// guarantees in [`super`]).
    fn ingest_checked(&self, terminal: &str, checked: &Checked<'_>) -> Result<PushReply> {
        let batch = checked.batch;
        let (last, encoded, digest) = (checked.last, &checked.encoded, &checked.digest);
        let n = batch.records.len();
        let mut batch_key = terminal.as_bytes().to_vec();
        batch_key.push(0);
        batch_key.extend_from_slice(batch.idempotency_key.as_bytes());
        let store = batch.store_id.as_str();
        let cursor_key = store_key(terminal, store);

        let _g = self.lock();
        if let Some(prev) = self.batches.get(&batch_key)? {
            if prev.as_ref() != digest.as_slice() {
                return Err(PlatformError::Conflict(format!(
                    "batch {} was received with other content",
                    batch.idempotency_key
                )));
            }
        }
        let mut cursor = self.cursors.get(&cursor_key)?.map_or(0, |v| be_u64(&v));
        // The cursor must not claim more than is held (see Durability in the module doc).
        if !self.cursor_chunk_present(terminal, store, cursor)? {
            let checked = self.check_store(terminal, store, cursor)?;
            if checked != cursor {
                self.rebuild_stats()?;
                cursor = checked;
            }
        }
        // A terminal only deletes what a cursor confirmed, so a batch past this cursor means
        // this platform lost records it had confirmed (restored from a backup, or found
        // missing). Answering 409 would strand the terminal; the gap is recorded for the
        // operator instead and both sides go on from the batch.
        let mut gap = None;
        if batch.first_seq > cursor + 1 {
            let range = SeqRange {
                from: cursor + 1,
                to: batch.first_seq - 1,
            };
            let missing = self.missing_ranges(terminal, store, range.from, range.to)?;
            self.audit(
                "gap",
                terminal,
                serde_json::json!({ "store_id": store, "from": range.from, "to": range.to,
                                    "missing": ranges_json(&missing) }),
            )?;
            for m in &missing {
                self.gaps
                    .insert(record_key(terminal, store, m.0), &m.1.to_be_bytes())?;
            }
            tracing::error!(%terminal, store = %store, from = range.from, to = range.to,
                "platform: records this platform had confirmed are missing (restored from a backup?)");
            gap = Some(range);
            cursor = batch.first_seq - 1;
        }
        // Records already held (at or below the cursor, or above it from before a missing
        // range was found) must match what is held, byte for byte.
        let held = self.held_range(terminal, store, batch.first_seq, last)?;
        let mut is_held = vec![false; n];
        for (seq, bytes) in held {
            let i = (seq - batch.first_seq) as usize;
            if encoded
                .get(i)
                .is_none_or(|e| e.as_slice() != bytes.as_slice())
            {
                return Err(PlatformError::Conflict(format!(
                    "record {seq} of store {store} is held with other content"
                )));
            }
            is_held[i] = true;
        }
        // What is new becomes chunks of at most CHUNK_BYTES, each keyed by its first seq.
        let mut fresh: Vec<&RecordWire> = Vec::new();
        let mut chunk: Vec<u8> = Vec::new();
        let mut chunk_first = 0;
        for (i, e) in encoded.iter().enumerate() {
            let seq = batch.first_seq + i as u64;
            let new = seq > cursor && !is_held[i];
            if !chunk.is_empty() && (!new || chunk.len() + e.len() + 1 > CHUNK_BYTES) {
                self.records.insert(
                    record_key(terminal, store, chunk_first),
                    std::mem::take(&mut chunk),
                )?;
            }
            if new {
                if chunk.is_empty() {
                    chunk_first = seq;
                }
                chunk.extend_from_slice(e);
                chunk.push(b'\n');
                fresh.push(&batch.records[i]);
            }
        }
        if !chunk.is_empty() {
            self.records
                .insert(record_key(terminal, store, chunk_first), chunk)?;
        }
        if last > cursor {
            // Every seq up to `last` is held now; records held beyond it extend the cursor.
            let through = self.held_through(terminal, store, last)?;
            self.cursors.insert(&cursor_key, &through.to_be_bytes())?;
            cursor = through;
        }
        self.batches.insert(batch_key, digest.as_slice())?;
        // Records whose fields are out of bounds are held (they are the terminal's) but kept
        // out of the statistics, each recorded as an anomaly.
        let (sane, odd): (Vec<&RecordWire>, Vec<&RecordWire>) =
            fresh.into_iter().partition(|r| record_problem(r).is_none());
        for r in odd.iter().take(100) {
            self.audit(
                "anomalous_record",
                terminal,
                serde_json::json!({ "store_id": store, "seq": r.seq, "problem": record_problem(r) }),
            )?;
        }
        self.add_stats(terminal, &sane)?;
        self.log.durable()?;
        Ok(PushReply {
            committed_through: last.max(cursor),
            gap,
        })
    }

    /// The chunks of one store from the one holding `from` on, as (first seq, last seq, bytes),
    /// in seq order, up to the one holding `to`.
    fn chunks(
        &self,
        terminal: &str,
        store: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, u64, sled::IVec)>> {
        let start = record_key(terminal, store, 0);
        let first_chunk = self
            .records
            .range(start.clone()..=record_key(terminal, store, from))
            .next_back()
            .transpose()?
            .map(|(k, _)| k.to_vec())
            .unwrap_or(start);
        let mut out = Vec::new();
        for kv in self
            .records
            .range(first_chunk..=record_key(terminal, store, to))
        {
            let (k, v) = kv?;
            let first = chunk_seq(&k);
            let lines = v.iter().filter(|b| **b == b'\n').count() as u64;
            if lines == 0 {
                continue;
            }
            let last = first + lines - 1;
            if last >= from {
                out.push((first, last, v));
            }
        }
        Ok(out)
    }

    /// The held records `from..=to` of one store, as stored bytes.
    fn held_range(
        &self,
        terminal: &str,
        store: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::new();
        for (first, _, v) in self.chunks(terminal, store, from, to)? {
            let lines = v.split(|b| *b == b'\n').filter(|l| !l.is_empty());
            for (seq, line) in (first..).zip(lines) {
                if (from..=to).contains(&seq) {
                    out.push((seq, line.to_vec()));
                }
            }
        }
        Ok(out)
    }

    /// The ranges of `from..=to` that no chunk holds, in order.
    fn missing_ranges(
        &self,
        terminal: &str,
        store: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, u64)>> {
        let mut missing = Vec::new();
        let mut next = from;
        for (first, last, _) in self.chunks(terminal, store, from, to)? {
            if first > next {
                missing.push((next, first - 1));
            }
            next = next.max(last.saturating_add(1));
        }
        if next <= to {
            missing.push((next, to));
        }
        Ok(missing)
    }

    /// The end of the run of held seqs that starts at `seq` (held) and goes on contiguously.
    fn held_through(&self, terminal: &str, store: &str, seq: u64) -> Result<u64> {
        let mut through = seq;
        let mut prefix = store_key(terminal, store);
        prefix.push(0);
        for kv in self
            .records
            .range(record_key(terminal, store, seq.saturating_add(1))..)
        {
            let (k, v) = kv?;
            if !k.starts_with(&prefix) || chunk_seq(&k) != through.saturating_add(1) {
                break;
            }
            through += v.iter().filter(|b| **b == b'\n').count() as u64;
        }
        Ok(through)
    }

    /// True when the seq at `cursor` is held (or is the end of a recorded gap, or 0): the
    /// cheap check made at every ingest.
    fn cursor_chunk_present(&self, terminal: &str, store: &str, cursor: u64) -> Result<bool> {
        if cursor == 0 {
            return Ok(true);
        }
        let held = self
            .chunks(terminal, store, cursor, cursor)?
            .iter()
            .any(|(first, last, _)| (*first..=*last).contains(&cursor));
        Ok(held
            || self
                .known_gaps(terminal, store)?
                .iter()
                .any(|(f, t)| (*f..=*t).contains(&cursor)))
    }

    /// The recorded gaps of one store, as (from, to).
    fn known_gaps(&self, terminal: &str, store: &str) -> Result<Vec<(u64, u64)>> {
        let mut prefix = store_key(terminal, store);
        prefix.push(0);
        self.gaps
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((chunk_seq(&k), be_u64(&v)))
            })
            .collect()
    }

    /// Checks the records below one store's cursor; a missing range not recorded as a gap
    /// moves the cursor back to just before it and is audited. Returns the cursor.
    fn check_store(&self, terminal: &str, store: &str, cursor: u64) -> Result<u64> {
        let gaps = self.known_gaps(terminal, store)?;
        let missing: Vec<(u64, u64)> = self
            .missing_ranges(terminal, store, 1, cursor)?
            .into_iter()
            .flat_map(|m| subtract(m, &gaps))
            .collect();
        let Some(&(first_missing, _)) = missing.first() else {
            return Ok(cursor);
        };
        let corrected = first_missing - 1;
        let lost: u64 = missing.iter().map(|(f, t)| t - f + 1).sum();
        self.audit(
            "records_missing",
            terminal,
            serde_json::json!({ "store_id": store, "cursor_was": cursor, "cursor_now": corrected,
                                "missing": ranges_json(&missing), "records": lost }),
        )?;
        tracing::error!(%terminal, %store, cursor_was = cursor, cursor_now = corrected, records = lost,
            "platform: records below a cursor are missing; the cursor is moved back so the gate pushes them again");
        self.cursors
            .insert(store_key(terminal, store), &corrected.to_be_bytes())?;
        Ok(corrected)
    }

    /// Checks every cursor (at open); recounts the statistics if any moved back.
    fn check_cursors(&self) -> Result<()> {
        let mut moved = false;
        let cursors: Vec<(Vec<u8>, u64)> = self
            .cursors
            .iter()
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), be_u64(&v))))
            .collect::<std::result::Result<_, _>>()?;
        for (k, cursor) in cursors {
            let mut parts = k.splitn(2, |b| *b == 0);
            let terminal = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let store = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            moved |= self.check_store(&terminal, &store, cursor)? != cursor;
        }
        if moved {
            self.rebuild_stats()?;
        }
        Ok(())
    }

    /// The statistics recounted from the records held (after records were found missing),
    /// chunk by chunk.
    fn rebuild_stats(&self) -> Result<()> {
        let mut counts = HashMap::new();
        let mut recounted = 0usize;
        for kv in self.records.iter() {
            let (k, v) = kv?;
            let terminal = String::from_utf8_lossy(k.split(|b| *b == 0).next().unwrap_or_default())
                .into_owned();
            for line in v.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let r: RecordWire = serde_json::from_slice(line)?;
                if record_problem(&r).is_none() {
                    count_stats(&terminal, &r, &mut counts);
                    recounted += 1;
                }
            }
        }
        self.stats.clear()?;
        let mut writes = sled::Batch::default();
        for ((dim, value), n) in counts {
            writes.insert(stats_key(dim, &value), &n.to_be_bytes());
        }
        self.stats.apply_batch(writes)?;
        tracing::warn!(
            records = recounted,
            "platform: statistics recounted from the records held"
        );
        Ok(())
    }

    /// Gaps recorded before the `gaps` tree existed, from their audit events.
    fn gaps_from_audit(&self) -> Result<()> {
        for kv in self.audit.iter() {
            let event: serde_json::Value = serde_json::from_slice(&kv?.1)?;
            let d = &event["detail"];
            if let (Some("gap"), Some(terminal), Some(store), Some(from), Some(to)) = (
                event["kind"].as_str(),
                event["terminal"].as_str(),
                d["store_id"].as_str(),
                d["from"].as_u64(),
                d["to"].as_u64(),
            ) {
                self.gaps
                    .insert(record_key(terminal, store, from), &to.to_be_bytes())?;
            }
        }
        Ok(())
    }

    /// Appends an audit event (gaps, anomalous records) for the operator.
    fn audit(&self, kind: &str, terminal: &str, detail: serde_json::Value) -> Result<()> {
        let seq = self.log.db.generate_id()?;
        let event = serde_json::json!({
            "seq": seq,
            "at_ms": crate::clock::wall_clock_ms(),
            "kind": kind,
            "terminal": terminal,
            "detail": detail,
        });
        self.audit
            .insert(seq.to_be_bytes(), serde_json::to_vec(&event)?)?;
        Ok(())
    }

    /// The newest audit events, newest first.
    fn audit_events_(&self, limit: usize) -> Result<Vec<serde_json::Value>> {
        self.audit
            .iter()
            .rev()
            .take(limit)
            .map(|kv| Ok(serde_json::from_slice(&kv?.1)?))
            .collect()
    }

    fn add_stats(&self, terminal: &str, records: &[&RecordWire]) -> Result<()> {
        let mut counts = HashMap::new();
        for r in records {
            count_stats(terminal, r, &mut counts);
        }
        let mut writes = sled::Batch::default();
        for ((dim, value), n) in counts {
            let k = stats_key(dim, &value);
            let old = self.stats.get(&k)?.map_or(0, |v| be_u64(&v));
            writes.insert(k, &(old + n).to_be_bytes());
        }
        self.stats.apply_batch(writes)?;
        Ok(())
    }

    /// Every record held for one terminal, by store then seq.
    fn records_of_(&self, terminal: &str) -> Result<Vec<(String, RecordWire)>> {
        let mut prefix = terminal.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for kv in self.records.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let rest = &k[prefix.len()..];
            let store = rest
                .split(|b| *b == 0)
                .next()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .unwrap_or_default();
            for line in v.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                out.push((store.clone(), serde_json::from_slice(line)?));
            }
        }
        Ok(out)
    }

    /// The contiguous cursor of one terminal's store.
    fn cursor_(&self, terminal: &str, store_id: &str) -> Result<u64> {
        Ok(self
            .cursors
            .get(store_key(terminal, store_id))?
            .map_or(0, |v| be_u64(&v)))
    }
}

impl RecordStore for SledRecords {
    fn ingest(&self, terminal: &str, batch: &RecordBatch) -> Result<PushReply> {
        match self.ingest_checked(terminal, &Checked::new(batch)?) {
            Err(PlatformError::Conflict(m)) => {
                self.audit("conflict", terminal, conflict_detail(batch, &m))?;
                self.log.durable()?;
                Err(PlatformError::Conflict(m))
            }
            r => r,
        }
    }

    fn cursor(&self, terminal: &str, store_id: &str) -> Result<u64> {
        self.cursor_(terminal, store_id)
    }

    fn records_of(&self, terminal: &str) -> Result<Vec<(String, RecordWire)>> {
        self.records_of_(terminal)
    }

    fn record_stats(&self) -> Result<RecordStats> {
        let mut s = RecordStats::default();
        for kv in self.stats.iter() {
            let (k, v) = kv?;
            let k = String::from_utf8_lossy(&k);
            let (dim, value) = k.split_once('\u{0}').unwrap_or((&k, ""));
            s.add(dim, value, be_u64(&v));
        }
        Ok(s)
    }

    fn audit_events(&self, limit: usize) -> Result<Vec<serde_json::Value>> {
        self.audit_events_(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verification::verdict::{CodeKind, Reason};

    type Db = SledRecords;

    fn open(dir: &Path) -> Db {
        SledRecords::open(SledLog::open(&dir.join("db")).expect("sled")).expect("records")
    }

    fn records_count(db: &Db) -> u64 {
        db.record_stats().expect("stats").records
    }

    const T: &str = "GATE-T";
    const STORE: &str = "0123456789abcdef";

    fn record(seq: u64) -> RecordWire {
        RecordWire {
            seq,
            at_ms: 1_780_000_000_000 + seq as i64,
            clock_trusted: true,
            reason: Reason::Accepted,
            online_reason: None,
            kind: Some(CodeKind::Dynamic),
            service: Some("SVC-BUS".into()),
            scene: Some("GATE-1".into()),
            alg: Some("EdDSA".into()),
            kid: Some("0011223344556677".into()),
            issuer: Some("YMTB-REF".into()),
            cti_hash: Some("00112233445566778899aabbccddeeff".into()),
            sub_hash: Some("ffeeddccbbaa99887766554433221100".into()),
        }
    }

    fn batch(first: u64, n: u64) -> RecordBatch {
        RecordBatch {
            store_id: STORE.into(),
            idempotency_key: RecordBatch::key(STORE, first, first + n - 1),
            first_seq: first,
            records: (first..first + n).map(record).collect(),
        }
    }

    fn held_seqs(db: &Db) -> Vec<u64> {
        db.records_of(T)
            .expect("records")
            .into_iter()
            .map(|(_, r)| r.seq)
            .collect()
    }

    fn events(db: &Db, kind: &str) -> usize {
        db.audit_events(10_000)
            .expect("audit")
            .iter()
            .filter(|e| e["kind"] == kind)
            .count()
    }

    /// Removes the chunks whose first seq lies in `range`, as the blob loss of an earlier
    /// version did; returns the seqs they held.
    fn lose_chunks(db: &Db, range: std::ops::RangeInclusive<u64>) -> Vec<u64> {
        let mut lost = Vec::new();
        for (first, last, _) in db.chunks(T, STORE, 1, u64::MAX >> 1).expect("chunks") {
            if range.contains(&first) {
                db.records
                    .remove(record_key(T, STORE, first))
                    .expect("remove");
                lost.extend(first..=last);
            }
        }
        db.log.durable().expect("durable");
        lost
    }

    #[test]
    fn values_stay_below_the_blob_threshold() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = open(dir.path());
        db.ingest(T, &batch(1, 5000)).expect("ingest");
        let chunks = db.chunks(T, STORE, 1, 5000).expect("chunks");
        assert!(
            chunks.len() > 100,
            "5,000 records in {} chunks",
            chunks.len()
        );
        assert!(chunks.iter().all(|(_, _, v)| v.len() <= CHUNK_BYTES));
        assert_eq!(db.log.files.sync_blobs().expect("blobs"), 0);
        assert_eq!(db.log.files.blob_count(), 0, "sled wrote no blob file");
        assert_eq!(held_seqs(&db), (1..=5000).collect::<Vec<_>>());
    }

    #[test]
    fn a_cursor_over_missing_records_moves_back_is_audited_and_the_gate_refills_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = open(dir.path());
        for first in [1, 301] {
            db.ingest(T, &batch(first, 300)).expect("ingest");
        }
        assert_eq!(records_count(&db), 600);
        let lost = lose_chunks(&db, 320..=400);
        assert!(!lost.is_empty());
        drop(db);

        // Open: the cursor stops before the first missing record; audited; stats recounted.
        let db = open(dir.path());
        let first_lost = lost[0];
        assert_eq!(db.cursor(T, STORE).expect("cursor"), first_lost - 1);
        assert_eq!(events(&db, "records_missing"), 1);
        assert_eq!(records_count(&db), 600 - lost.len() as u64);
        // The gate still had them (it had not deleted yet): its re-push fills the hole, the
        // records held above it are not stored twice, the cursor runs to the end.
        let reply = db
            .ingest(T, &batch(first_lost, 601 - first_lost))
            .expect("refill");
        assert_eq!(reply.committed_through, 600);
        assert!(reply.gap.is_none());
        assert_eq!(held_seqs(&db), (1..=600).collect::<Vec<_>>());
        assert_eq!(records_count(&db), 600);
        // Other content for a record held above the hole is refused.
        let lost = lose_chunks(&db, 500..=520);
        drop(db);
        let db = open(dir.path());
        let mut other = batch(lost[0], 601 - lost[0]);
        other.records.last_mut().expect("last").reason = Reason::Replayed;
        assert!(matches!(
            db.ingest(T, &other),
            Err(PlatformError::Conflict(_))
        ));

        // A gate that had deleted them pushes on from where it is: a gap, recorded once.
        let reply = db.ingest(T, &batch(601, 10)).expect("past the hole");
        assert_eq!(reply.committed_through, 610);
        let gap = reply.gap.expect("gap");
        assert_eq!(gap.from, lost[0]);
        assert_eq!(events(&db, "gap"), 1);
        drop(db);
        let db = open(dir.path());
        assert_eq!(
            events(&db, "records_missing"),
            2,
            "the gap is not found again"
        );
        assert_eq!(db.cursor(T, STORE).expect("cursor"), 610);
        assert_eq!(records_count(&db), 610 - lost.len() as u64);
    }

    #[test]
    fn a_missing_cursor_chunk_is_found_at_ingest() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = open(dir.path());
        db.ingest(T, &batch(1, 100)).expect("ingest");
        let lost = lose_chunks(&db, 60..=100);
        // Not reopened: the next push finds the cursor's chunk gone.
        let reply = db
            .ingest(T, &batch(lost[0], 101 - lost[0] + 5))
            .expect("refill");
        assert_eq!(reply.committed_through, 105);
        assert_eq!(events(&db, "records_missing"), 1);
        assert_eq!(held_seqs(&db), (1..=105).collect::<Vec<_>>());
        assert_eq!(records_count(&db), 105);
    }
}
