//! The durable store: verification records, replay tags and the terminal's own counters, in
//! sled. The only module that knows the storage engine; the rest see typed operations.
//!
//! # Design constraints
//! - A record and (for an accepted dynamic code) its replay tag are written in **one atomic
//!   sled insert** (the stored record carries the tag), and are **fsynced** before
//!   [`Store::verify_and_record`] returns. The replay tree is an index written in the same
//!   durability round; `open` restores an index entry a crash cut off. sled transactions and
//!   batches are avoided on purpose: each forces a log write-out of its own (`roll_iobuf`). sled's own `flush()` only issues
//!   `sync_file_range` on Linux (shared/notes/measured-facts.md), so after it we `fsync` sled's
//!   log file ourselves. One committer thread does every flush + fsync for all records written
//!   so far, so concurrent or pipelined verifications share one round (group commit). A failed
//!   commit poisons the store: every waiter and every later write gets an error.
//! - The next sequence number is derived from the records themselves at open (last key + 1,
//!   and never below meta's `next_seq`), so a crash can never hand out a number that was
//!   already acknowledged.
//! - Replay check and replay-tag insert happen under one writer lock: two presentations of one
//!   code cannot both be accepted.
//! - Opening never bricks the gate: a leftover `snap.*.generating` (sled #1527/#1533) is removed
//!   and the open retried; then unreadable snapshots are moved aside and sled rebuilds from its
//!   log; a store that still will not open is moved aside to `store.damaged-<ms>` (kept for
//!   salvage) and a fresh one started.
//! - A store that was missing (not provisioned with `init`) or damaged starts a **replay
//!   guard**: the first trusted verification time `G` is persisted, and a dynamic code whose
//!   window began before `G` is refused (`replay_guard_recovering`), since the lost store may
//!   have seen it. The guard lapses by itself one window later.
//!
//! # On-disk layout (`<state-dir>/store/`, sled)
//! ```text
//! tree "records": seq (u64 BE)            → Record as JSON (+ replay_tag, replay_until_ms)
//! tree "replay":  ReplayTag (16 bytes)     → window end, ms (i64 BE); index of the above
//! tree "meta":    "next_seq"              → u64 BE
//!                 "hash_key"              → 32 random bytes (RecordHasher)
//!                 "clock_floor_ms"        → i64 BE, the live clock's floor at the last record
//!                 "guard_from_ms"         → i64 BE; i64::MIN = pending (set at first trusted time)
//!                 "store_id"              → 16 random bytes, hex: this store generation's name
//!                 "synced_through"        → u64 BE, the platform's committed cursor
//!                 "policy"                → the platform policy cache (sync::bundle), JSON
//! ```
//!
//! # Sync (records leave the terminal exactly once)
//! Records with `seq` in `(synced_through, durable_seq]` are the backlog; only durable ones are
//! offered (a record a crash could still take back must never reach the platform). The
//! platform's cursor is persisted and fsynced **before** the records it covers are deleted; a
//! crash in between leaves deleted-later records that are simply never offered again.
//! `store_id` names the sequence space: a quarantined store's successor starts at seq 1 under
//! a new id, so the platform never confuses the two.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use serde::{Deserialize, Serialize};

use crate::clock::VerifyTime;
use crate::record::{Record, RecordHasher};
use crate::verifier::{ReplayStatus, ReplayTag, ReplayView, Verification};

const K_NEXT_SEQ: &[u8] = b"next_seq";
const K_HASH_KEY: &[u8] = b"hash_key";
const K_CLOCK_FLOOR: &[u8] = b"clock_floor_ms";
const K_GUARD: &[u8] = b"guard_from_ms";
const K_STORE_ID: &[u8] = b"store_id";
const K_SYNCED: &[u8] = b"synced_through";
const K_POLICY: &[u8] = b"policy";
const GUARD_PENDING: i64 = i64::MIN;

/// Records that make a full group-commit batch.
const COMMIT_BATCH: u64 = 64;
/// Longest a commit waits for more records, and only under load (see `committer_loop`).
const COMMIT_LINGER: std::time::Duration = std::time::Duration::from_millis(1);

/// sled's page cache; small, because a gate has little memory and records are written once.
const CACHE_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O at {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("storage engine: {0}")]
    Engine(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the storage engine panicked: {0}")]
    Panicked(String),
    /// The backlog quota is reached (the platform has been unreachable for long): the terminal
    /// fails closed rather than drop a record to make room.
    #[error("backlog full: {backlog} records wait for the platform (quota {limit})")]
    BacklogFull { backlog: u64, limit: u64 },
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Engine(e.to_string())
    }
}

/// How a store directory came to be open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenState {
    /// An existing store opened normally.
    Existing,
    /// Created by `init` (deliberate provisioning): no replay guard.
    Provisioned,
    /// No store was there: created, replay guard active.
    WasMissing,
    /// A leftover `snap.*.generating` file was removed; all data kept.
    RepairedSnapshot { removed: Vec<String> },
    /// Snapshots were unreadable and moved aside; sled rebuilt from its log. Replay guard on.
    RebuiltFromLog { moved_to: PathBuf },
    /// The old store would not open; moved aside and a fresh one created, replay guard active.
    Quarantined { moved_to: PathBuf, error: String },
}

/// How to treat a missing store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// `yima-gate init`: a new terminal, nothing can have been spent.
    Provision,
    /// Every other start: a missing store may have been lost, so guard replays.
    Guarded,
}

#[derive(Debug)]
struct Writer {
    next_seq: u64,
    guard_from_ms: Option<i64>,
    /// The guard value last written to meta.
    guard_persisted: Option<i64>,
    clock_floor_ms: i64,
}

/// A record as stored: the record plus the replay tag it claimed (accepted dynamic codes).
#[derive(Debug, Serialize, Deserialize)]
struct StoredRecord {
    #[serde(flatten)]
    record: Record,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replay_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replay_until_ms: Option<i64>,
}

/// How many of the newest records `open` checks for a replay tag missing from the index. Only
/// the very last can be (a crash between its insert and the tag's), but checking a few more
/// costs nothing.
const TAG_RESTORE_WINDOW: usize = 16;

/// The durable store.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    db: sled::Db,
    records: sled::Tree,
    replay: sled::Tree,
    meta: sled::Tree,
    hasher: RecordHasher,
    writer: Mutex<Writer>,
    durability: Arc<Durability>,
    committer: Option<std::thread::JoinHandle<()>>,
    open_state: OpenState,
    store_id: String,
    /// The platform's cursor (mirrors meta `synced_through`); changed only under `sync_lock`.
    synced_through: AtomicU64,
    sync_lock: Mutex<()>,
}

/// Group commit: writers publish the highest seq they wrote; one committer thread flushes
/// sled and fsyncs its log for everything written so far, then wakes every waiter it covered.
/// Writers never fsync themselves, so any number of them share one round.
#[derive(Debug)]
struct Durability {
    db: sled::Db,
    log_file: File,
    log_path: PathBuf,
    state: Mutex<DurableState>,
    /// Signalled when there is something to commit (or on shutdown).
    work: Condvar,
    /// Signalled after every commit round.
    done: Condvar,
    /// Flush + fsync rounds since open (records per round = batch size).
    rounds: AtomicU64,
}

#[derive(Debug)]
struct DurableState {
    /// Highest seq written to sled (in memory, maybe not yet on disk).
    written: u64,
    /// Highest seq known on disk.
    durable: u64,
    /// Set when a commit failed: the store is unusable and every waiter gets the error.
    failed: Option<String>,
    shutdown: bool,
}

impl Durability {
    fn lock(&self) -> std::sync::MutexGuard<'_, DurableState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// sled flush (writes its buffers to the log) + fsync of the log (sled's flush alone only
    /// issues `sync_file_range`, which does not survive power loss).
    fn sync(&self) -> Result<(), StoreError> {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        self.db.flush()?;
        self.log_file.sync_data().map_err(io_err(&self.log_path))
    }

    fn committer_loop(&self) {
        let mut last_batch = 0u64;
        loop {
            let target = {
                let mut st = self.lock();
                while st.written <= st.durable && !st.shutdown && st.failed.is_none() {
                    st = self.work.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                if st.failed.is_some() || (st.shutdown && st.written <= st.durable) {
                    return;
                }
                // Under load (the last round carried several records) linger briefly so that
                // one fsync covers more records; a lone verification never waits.
                if last_batch > 1 {
                    let deadline = std::time::Instant::now() + COMMIT_LINGER;
                    while st.written - st.durable < COMMIT_BATCH && !st.shutdown {
                        let left = deadline.saturating_duration_since(std::time::Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        st = self
                            .work
                            .wait_timeout(st, left)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                }
                st.written
            };
            let result = self.sync();
            let mut st = self.lock();
            last_batch = target - st.durable;
            match result {
                Ok(()) => st.durable = st.durable.max(target),
                Err(e) => {
                    tracing::error!(error = %e, "store: commit failed; refusing further writes");
                    st.failed = Some(e.to_string());
                }
            }
            self.done.notify_all();
        }
    }

    fn published(&self, seq: u64) {
        let mut st = self.lock();
        let was_idle = st.written <= st.durable;
        st.written = st.written.max(seq);
        // Wake the committer when work appears and when a full batch is waiting; waking it
        // for every record would cost a context switch each.
        if was_idle || st.written - st.durable >= COMMIT_BATCH {
            self.work.notify_one();
        }
    }

    fn wait(&self, seq: u64) -> Result<(), StoreError> {
        let mut st = self.lock();
        loop {
            if st.durable >= seq {
                return Ok(());
            }
            if let Some(e) = &st.failed {
                return Err(StoreError::Engine(format!("commit failed: {e}")));
            }
            if st.shutdown {
                return Err(StoreError::Engine("store closed before commit".into()));
            }
            st = self.done.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn check_usable(&self) -> Result<(), StoreError> {
        match &self.lock().failed {
            Some(e) => Err(StoreError::Engine(format!("an earlier commit failed: {e}"))),
            None => Ok(()),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.durability.lock().shutdown = true;
        self.durability.work.notify_all();
        if let Some(h) = self.committer.take() {
            let _ = h.join();
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn be_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

fn be_i64(v: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(v.try_into().ok()?))
}

/// Opens sled, turning its panics (it has some on damaged files) into errors.
/// How long `open` waits for sled's directory lock: a store closed a moment ago in this
/// process releases it when sled's background flusher exits; another running yima-gate never
/// does, and gets a clear error.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens sled, waiting briefly for its lock, turning its panics (it has some on damaged
/// files) into errors.
fn open_sled(path: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let cfg = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .mode(sled::Mode::LowSpace);
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || cfg.open())) {
            Ok(Ok(db)) => return Ok(db),
            Ok(Err(sled::Error::Io(e))) if e.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(StoreError::Io {
                        path: path.display().to_string(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::WouldBlock,
                            "the store is in use by another process (is another yima-gate running on this state directory?)",
                        ),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Ok(Err(sled::Error::Io(e))) => return Err(io_err(path)(e)),
            Ok(Err(e)) => return Err(StoreError::Corrupt(e.to_string())),
            Err(p) => return Err(StoreError::Panicked(panic_text(&p))),
        }
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// sled snapshot files in `path` (`snap.*`), with the given suffix filter.
fn snapshot_files(path: &Path, only_partial: bool) -> Result<Vec<PathBuf>, StoreError> {
    let entries = match std::fs::read_dir(path) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(path))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("snap.") && (!only_partial || name.ends_with(".generating")) {
            out.push(entry.path());
        }
    }
    Ok(out)
}

fn file_names(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect()
}

/// Opens sled, repairing in escalating steps; every step keeps what it removes unless it is
/// a known-worthless partial file:
/// 1. remove `snap.*.generating` left by a crash (sled #1527/#1533) — no data lost;
/// 2. move every snapshot aside: sled rebuilds its index from the log (replay guard, since
///    what the log still holds cannot be vouched for);
/// 3. move the whole store aside and start fresh (replay guard).
fn open_with_recovery(
    state_dir: &Path,
    path: &Path,
    now_ms: i64,
) -> Result<(sled::Db, OpenState), StoreError> {
    let first = match open_sled(path) {
        Ok(db) => return Ok((db, OpenState::Existing)),
        Err(e @ StoreError::Io { .. }) => return Err(e),
        Err(e) => e,
    };
    tracing::warn!(error = %first, "store: would not open; repairing");

    let partial = snapshot_files(path, true)?;
    if !partial.is_empty() {
        for p in &partial {
            std::fs::remove_file(p).map_err(io_err(p))?;
        }
        fsync_dir(path)?;
        let removed = file_names(&partial);
        match open_sled(path) {
            Ok(db) => {
                tracing::warn!(?removed, "store: removed partial snapshot left by a crash");
                return Ok((db, OpenState::RepairedSnapshot { removed }));
            }
            Err(e @ StoreError::Io { .. }) => return Err(e),
            Err(_) => {}
        }
    }

    let snapshots = snapshot_files(path, false)?;
    if !snapshots.is_empty() {
        let moved_to = state_dir.join(format!("snapshots.damaged-{now_ms}"));
        std::fs::create_dir_all(&moved_to).map_err(io_err(&moved_to))?;
        for p in &snapshots {
            let dest = moved_to.join(p.file_name().unwrap_or_default());
            std::fs::rename(p, &dest).map_err(io_err(p))?;
        }
        fsync_dir(path)?;
        match open_sled(path) {
            Ok(db) => {
                tracing::error!(
                    moved_to = %moved_to.display(),
                    "store: snapshots unreadable; rebuilt from the log, replay guard on"
                );
                return Ok((db, OpenState::RebuiltFromLog { moved_to }));
            }
            Err(e @ StoreError::Io { .. }) => return Err(e),
            Err(_) => {}
        }
    }

    let moved_to = state_dir.join(format!("store.damaged-{now_ms}"));
    std::fs::rename(path, &moved_to).map_err(io_err(path))?;
    fsync_dir(state_dir)?;
    tracing::error!(
        moved_to = %moved_to.display(),
        error = %first,
        "store: would not open; moved aside, starting fresh with replay guard"
    );
    let db = open_sled(path)?;
    Ok((
        db,
        OpenState::Quarantined {
            moved_to,
            error: first.to_string(),
        },
    ))
}

fn fsync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_err(path))
}

impl Store {
    /// Opens (or creates) the store under `state_dir`, recovering by itself from the known
    /// crash leftovers. `now_ms` only names a quarantined directory.
    pub fn open(state_dir: &Path, create: Create, now_ms: i64) -> Result<Store, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(io_err(state_dir))?;
        let path = state_dir.join("store");
        let existed = path.join("db").exists();

        let (db, mut open_state) = open_with_recovery(state_dir, &path, now_ms)?;
        if !existed && open_state == OpenState::Existing {
            open_state = match create {
                Create::Provision => OpenState::Provisioned,
                Create::Guarded => OpenState::WasMissing,
            };
        }
        fsync_dir(state_dir)?;
        fsync_dir(&path)?;

        let records = db.open_tree("records")?;
        let replay = db.open_tree("replay")?;
        let meta = db.open_tree("meta")?;

        // Meta: hash key, next seq, guard. Repair next_seq from the records if it is missing
        // or behind (it never should be: they are written in one transaction).
        let hash_key = match meta.get(K_HASH_KEY)? {
            Some(k) if k.len() == 32 => k.to_vec(),
            _ => {
                let mut k = vec![0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
                meta.insert(K_HASH_KEY, k.as_slice())?;
                k
            }
        };
        let last_record = records
            .last()?
            .and_then(|(k, _)| be_u64(&k))
            .map_or(0, |s| s + 1);
        let stored_next = meta.get(K_NEXT_SEQ)?.and_then(|v| be_u64(&v));
        let synced_through = meta.get(K_SYNCED)?.and_then(|v| be_u64(&v)).unwrap_or(0);
        // Synced records are deleted, so the cursor bounds the sequence from below too.
        let next_seq = stored_next
            .unwrap_or(1)
            .max(last_record)
            .max(synced_through + 1);
        let store_id = match meta.get(K_STORE_ID)? {
            Some(id) if !id.is_empty() => String::from_utf8_lossy(&id).into_owned(),
            _ => {
                let mut id = [0u8; 16];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
                let id = hex::encode(id);
                meta.insert(K_STORE_ID, id.as_bytes())?;
                id
            }
        };
        let mut guard_from_ms = meta.get(K_GUARD)?.and_then(|v| be_i64(&v));
        let damaged_meta = existed && stored_next.is_none() && last_record > 0;
        if matches!(
            open_state,
            OpenState::WasMissing
                | OpenState::RebuiltFromLog { .. }
                | OpenState::Quarantined { .. }
        ) || damaged_meta
        {
            guard_from_ms = Some(GUARD_PENDING);
            meta.insert(K_GUARD, &GUARD_PENDING.to_be_bytes())?;
        }
        meta.insert(K_NEXT_SEQ, &next_seq.to_be_bytes())?;
        let restored = restore_replay_tags(&records, &replay)?;
        if restored > 0 {
            tracing::warn!(restored, "store: restored replay tags cut off by a crash");
        }
        let clock_floor_ms = meta
            .get(K_CLOCK_FLOOR)?
            .and_then(|v| be_i64(&v))
            .unwrap_or(0);
        // Forget tags whose window ended before the last trusted time (never the wall clock:
        // a clock running ahead must not erase tags that are still needed).
        let purged = purge_tags_before(&replay, clock_floor_ms)?;
        if purged > 0 {
            tracing::debug!(purged, "store: purged expired replay tags");
        }

        let log_path = path.join("db");
        let log_file = File::open(&log_path).map_err(io_err(&log_path))?;
        let durability = Arc::new(Durability {
            db: db.clone(),
            log_file,
            log_path,
            state: Mutex::new(DurableState {
                written: next_seq - 1,
                durable: next_seq - 1,
                failed: None,
                shutdown: false,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            rounds: AtomicU64::new(0),
        });
        // Whatever open repaired or initialised is made durable before the first verification.
        durability.sync()?;
        let committer = {
            let d = durability.clone();
            std::thread::Builder::new()
                .name("store-commit".into())
                .spawn(move || d.committer_loop())
                .map_err(io_err(&path))?
        };
        Ok(Store {
            dir: path,
            db,
            records,
            replay,
            meta,
            hasher: RecordHasher::new(hash_key),
            writer: Mutex::new(Writer {
                next_seq,
                guard_from_ms,
                guard_persisted: guard_from_ms,
                clock_floor_ms,
            }),
            durability,
            committer: Some(committer),
            open_state,
            store_id,
            synced_through: AtomicU64::new(synced_through),
            sync_lock: Mutex::new(()),
        })
    }

    /// The sled directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// How this store came to be open (for logs, metrics and `doctor`).
    pub fn open_state(&self) -> &OpenState {
        &self.open_state
    }

    /// The keyed hasher for record identifiers.
    pub fn hasher(&self) -> &RecordHasher {
        &self.hasher
    }

    /// The clock floor persisted by the last live verification (feeds the clock at start).
    pub fn clock_floor_ms(&self) -> i64 {
        self.lock_writer().clock_floor_ms
    }

    /// True while a replay guard is set (pending or active).
    pub fn replay_guard(&self) -> Option<i64> {
        self.lock_writer().guard_from_ms
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Verifies and records in one step: `verify` runs under the writer lock with a view of
    /// the replay tags; its record (and replay tag) are committed atomically and made durable
    /// before this returns. An `Err` means nothing was acknowledged: the gate must stay shut.
    ///
    /// `clock_floor_ms` is the live clock's floor to persist with the record (`None` for
    /// verifications at a supplied time, which must not move the terminal's floor).
    pub fn verify_and_record<F>(
        &self,
        at: VerifyTime,
        clock_floor_ms: Option<i64>,
        verify: F,
    ) -> Result<(Verification, Record), StoreError>
    where
        F: FnOnce(&dyn ReplayView) -> Verification,
    {
        let (verification, record) = self.verify_and_stage(at, clock_floor_ms, verify)?;
        self.wait_durable(record.seq)?;
        Ok((verification, record))
    }

    /// Like [`Store::verify_and_record`] but returns as soon as the record is written, before
    /// it is durable: the caller **must** [`Store::wait_durable`] for `record.seq` before
    /// acting on the verdict. Lets one thread keep verifying while earlier records commit.
    pub fn verify_and_stage<F>(
        &self,
        at: VerifyTime,
        clock_floor_ms: Option<i64>,
        verify: F,
    ) -> Result<(Verification, Record), StoreError>
    where
        F: FnOnce(&dyn ReplayView) -> Verification,
    {
        self.durability.check_usable()?;
        let (verification, record) = {
            let mut w = self.lock_writer();
            if at.trusted && w.guard_from_ms == Some(GUARD_PENDING) {
                w.guard_from_ms = Some(at.unix_ms);
            }
            let view = TreeReplayView {
                replay: &self.replay,
                guard_from_ms: w.guard_from_ms,
                now_ms: at.unix_ms,
            };
            let verification = verify(&view);
            let seq = w.next_seq;
            let record = Record::of(seq, at, &verification, &self.hasher);
            let floor = w.clock_floor_ms.max(clock_floor_ms.unwrap_or(i64::MIN));
            let guard = w.guard_from_ms;
            let tag = verification.replay;
            // One sled insert is the atomic step: the record carries its replay tag. The replay
            // tree and meta are indexes written right after it, in the same durability round;
            // `open` restores a tag whose index write a crash cut off. (A sled transaction or
            // batch would force a log write-out of its own per record: sled `roll_iobuf`.)
            let stored = StoredRecord {
                record: record.clone(),
                replay_tag: tag.map(|c| hex::encode(c.tag.0)),
                replay_until_ms: tag.map(|c| c.expires_at_ms),
            };
            let value = serde_json::to_vec(&stored)
                .map_err(|e| StoreError::Engine(format!("encoding record: {e}")))?;
            self.records.insert(seq.to_be_bytes(), value)?;
            if let Some(claim) = &tag {
                self.replay
                    .insert(claim.tag.0, &claim.expires_at_ms.to_be_bytes())?;
            }
            self.meta.insert(K_NEXT_SEQ, &(seq + 1).to_be_bytes())?;
            if floor != w.clock_floor_ms {
                self.meta.insert(K_CLOCK_FLOOR, &floor.to_be_bytes())?;
            }
            if guard != w.guard_persisted {
                if let Some(g) = guard {
                    self.meta.insert(K_GUARD, &g.to_be_bytes())?;
                }
                w.guard_persisted = guard;
            }
            w.next_seq = seq + 1;
            w.clock_floor_ms = floor;
            self.durability.published(seq);
            (verification, record)
        };
        Ok((verification, record))
    }

    /// Blocks until every record up to `seq` is on disk (the committer thread fsyncs).
    pub fn wait_durable(&self, seq: u64) -> Result<(), StoreError> {
        self.durability.wait(seq)
    }

    /// The highest sequence number known to be on disk.
    pub fn durable_seq(&self) -> u64 {
        self.durability.lock().durable
    }

    /// One record by sequence number.
    pub fn record(&self, seq: u64) -> Result<Option<Record>, StoreError> {
        self.records
            .get(seq.to_be_bytes())?
            .map(|v| decode_record(&v))
            .transpose()
    }

    /// Up to `limit` records with `seq >= from`, in order.
    pub fn records_from(&self, from: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        self.records
            .range(from.to_be_bytes()..)
            .take(limit)
            .map(|kv| decode_record(&kv?.1))
            .collect()
    }

    /// Flush + fsync rounds since open.
    pub fn sync_count(&self) -> u64 {
        self.durability.rounds.load(Ordering::Relaxed)
    }

    /// Number of records held.
    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    /// The next sequence number that will be issued.
    pub fn next_seq(&self) -> u64 {
        self.lock_writer().next_seq
    }

    /// Number of replay tags held.
    pub fn replay_tag_count(&self) -> usize {
        self.replay.len()
    }

    /// Forgets replay tags whose window ended before `now_ms`; returns how many. Not made
    /// durable on purpose: a forgotten tag that reappears after a crash is merely expired.
    pub fn purge_expired_tags(&self, now_ms: i64) -> Result<usize, StoreError> {
        let _w = self.lock_writer();
        purge_tags_before(&self.replay, now_ms)
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// This store generation's name (the platform keys records by it and `seq`).
    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    /// The highest seq the platform has confirmed holding (every earlier one too).
    pub fn synced_through(&self) -> u64 {
        self.synced_through.load(Ordering::SeqCst)
    }

    /// Records written but not yet confirmed by the platform.
    pub fn backlog(&self) -> u64 {
        (self.next_seq() - 1).saturating_sub(self.synced_through())
    }

    /// Up to `limit` durable records the platform has not confirmed, oldest first.
    pub fn unsynced(&self, limit: usize) -> Result<Vec<Record>, StoreError> {
        self.unsynced_from(self.synced_through() + 1, limit)
    }

    /// Up to `limit` durable records with `seq >= from` (a sync client reading ahead of the
    /// platform's confirmations).
    pub fn unsynced_from(&self, from: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        let from = from.max(self.synced_through() + 1);
        let durable = self.durable_seq();
        let mut out = Vec::with_capacity(limit.min(1024));
        for kv in self.records.range(from.to_be_bytes()..) {
            let (k, v) = kv?;
            if be_u64(&k).is_none_or(|seq| seq > durable) || out.len() >= limit {
                break;
            }
            out.push(decode_record(&v)?);
        }
        Ok(out)
    }

    /// Time of the oldest record still waiting for the platform.
    pub fn oldest_unsynced_ms(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.unsynced(1)?.first().map(|r| r.at_ms))
    }

    /// The platform holds every record up to `through`: persist that (fsynced), then delete
    /// those records. A cursor behind the current one changes nothing; one beyond the durable
    /// records is refused (the platform cannot hold what was never offered).
    pub fn ack_synced(&self, through: u64) -> Result<usize, StoreError> {
        let _sync = self.sync_lock.lock().unwrap_or_else(|p| p.into_inner());
        let before = self.synced_through();
        if through <= before {
            return Ok(0);
        }
        if through > self.durable_seq() {
            return Err(StoreError::Corrupt(format!(
                "platform confirmed seq {through}, beyond the durable {}",
                self.durable_seq()
            )));
        }
        self.meta.insert(K_SYNCED, &through.to_be_bytes())?;
        self.durability.sync()?;
        self.synced_through.store(through, Ordering::SeqCst);
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for kv in self
            .records
            .range((before + 1).to_be_bytes()..=through.to_be_bytes())
        {
            batch.remove(kv?.0);
            n += 1;
        }
        self.records.apply_batch(batch)?;
        Ok(n)
    }

    /// Persists the platform policy cache (fsynced before this returns).
    pub fn save_policy(&self, bytes: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(K_POLICY, bytes)?;
        self.durability.sync()
    }

    /// The persisted platform policy cache, if any.
    pub fn load_policy(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(K_POLICY)?.map(|v| v.to_vec()))
    }
}

fn decode_stored(bytes: &[u8]) -> Result<StoredRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("record: {e}")))
}

fn decode_record(bytes: &[u8]) -> Result<Record, StoreError> {
    decode_stored(bytes).map(|s| s.record)
}

/// Removes replay-index entries whose window ended before `now_ms`.
fn purge_tags_before(replay: &sled::Tree, now_ms: i64) -> Result<usize, StoreError> {
    let mut n = 0;
    for kv in replay.iter() {
        let (k, v) = kv?;
        if be_i64(&v).is_none_or(|end| end < now_ms) {
            replay.remove(k)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Re-inserts replay tags of the newest records that are missing from the replay index.
fn restore_replay_tags(records: &sled::Tree, replay: &sled::Tree) -> Result<usize, StoreError> {
    let mut restored = 0;
    for kv in records.iter().rev().take(TAG_RESTORE_WINDOW) {
        let (_, v) = kv?;
        let stored = decode_stored(&v)?;
        if let (Some(tag), Some(until)) = (stored.replay_tag, stored.replay_until_ms) {
            let tag = hex::decode(tag).map_err(|e| StoreError::Corrupt(format!("tag: {e}")))?;
            if replay.get(&tag)?.is_none() {
                replay.insert(tag, &until.to_be_bytes())?;
                restored += 1;
            }
        }
    }
    Ok(restored)
}

/// The replay tree seen from inside the writer lock.
struct TreeReplayView<'a> {
    replay: &'a sled::Tree,
    guard_from_ms: Option<i64>,
    now_ms: i64,
}

impl ReplayView for TreeReplayView<'_> {
    fn replay_status(&self, tag: &ReplayTag, window_start_ms: i64) -> ReplayStatus {
        if let Some(g) = self.guard_from_ms {
            if g == GUARD_PENDING || window_start_ms < g {
                return ReplayStatus::Unknown;
            }
        }
        match self.replay.get(tag.0) {
            Ok(Some(v)) => match be_i64(&v) {
                Some(end) if end < self.now_ms => ReplayStatus::Fresh,
                _ => ReplayStatus::Spent,
            },
            Ok(None) => ReplayStatus::Fresh,
            // Cannot read the tag: fail closed.
            Err(_) => ReplayStatus::Unknown,
        }
    }
}
