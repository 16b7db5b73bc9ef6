//! The durable store: verification records, replay tags and the terminal's own counters, in
//! sled. The only module that knows the storage engine; the rest see typed operations.
//!
//! # Design constraints
//! - A record and (for an accepted dynamic code) its replay tag are written in **one atomic
//!   sled insert** (the stored record carries the tag), and are **fsynced** before
//!   [`Store::verify_and_record`] returns. The replay tree is an index written in the same
//!   durability round; `open` restores an index entry a crash cut off. sled transactions and
//!   batches are avoided on purpose: each forces a log write-out of its own (`roll_iobuf`). sled's own `flush()` only issues
//!   `sync_file_range` on Linux (measured: `flush()` alone lost acknowledged records under simulated power loss; upstream spacejam/sled #1452, #1351), so after it we `fsync` sled's
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
//! <state-dir>/policy.json                 → the platform policy cache (sync::bundle), JSON,
//!                                            written whole through `files` (0600, fsynced)
//! ```
//! Every sled value stays far below sled's blob threshold (a quarter of its 512 KiB segment:
//! records are a few hundred bytes, and 17 of them — the most a leaf holds before it splits —
//! about 10 KiB), so sled never writes one to a blob file of its own, which it would not make
//! durable ([`crate::files::EngineFiles`] fsyncs any that appears anyway). The policy cache
//! grows with the static-code status list (128 KiB at ~1,500 entries); kept in sled's meta
//! tree it made that tree's leaf — with the hash key, the store id and the cursor — a blob on
//! every rewrite, so it lives in a file of its own (a store written by an earlier version has
//! it moved out at open).
//!
//! # Sync (records leave the terminal exactly once)
//! Records with `seq` in `(synced_through, durable_seq]` are the backlog; only durable ones are
//! offered (a record a crash could still take back must never reach the platform). The
//! platform's cursor is persisted and fsynced **before** the records it covers are deleted; a
//! crash in between leaves confirmed records behind, never offered again and deleted at the
//! next open (and by the next acknowledgement).
//! `store_id` names the sequence space: a quarantined store's successor starts at seq 1 under
//! a new id, so the platform never confuses the two.

mod commit;
mod outbox;

pub use outbox::Outbox;
mod recovery;
mod replay;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use serde::{Deserialize, Serialize};

use crate::clock::VerifyTime;
use crate::verification::record::{Record, RecordHasher};
use crate::verification::verifier::{ReplayView, Verification};
use commit::{Durability, DurableState};
use recovery::{open_with_recovery, StoreLock};
use replay::{purge_tags_before, restore_replay_tags, TreeReplayView};

const K_NEXT_SEQ: &[u8] = b"next_seq";
const K_HASH_KEY: &[u8] = b"hash_key";
const K_CLOCK_FLOOR: &[u8] = b"clock_floor_ms";
const K_GUARD: &[u8] = b"guard_from_ms";
const K_STORE_ID: &[u8] = b"store_id";
const K_SYNCED: &[u8] = b"synced_through";
/// Where an earlier version kept the policy cache (moved to [`POLICY_FILE`] at open).
const K_POLICY: &[u8] = b"policy";
/// The platform policy cache, beside the store in the state directory.
const POLICY_FILE: &str = "policy.json";
const GUARD_PENDING: i64 = i64::MIN;

/// Why the store could not do what was asked. A refused code is never a `StoreError`: these
/// mean the gate cannot vouch for what it records, so it stays shut.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the store at {path} is in use by another process (is another yima-gate running on this state directory?)")]
    InUse { path: PathBuf },
    #[error("storage engine: {0}")]
    Engine(#[from] sled::Error),
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("the storage engine panicked: {0}")]
    Panicked(String),
    #[error("an earlier commit failed; the store refuses further writes until restarted: {0}")]
    CommitFailed(#[source] Arc<StoreError>),
    #[error("the store was closed before the record was committed")]
    Closed,
    #[error("the store is out of service (being reopened after a failure)")]
    OutOfService,
    #[error(transparent)]
    Files(#[from] crate::files::FileError),
    #[error("the platform confirmed seq {through}, beyond the durable {durable}")]
    AckBeyondDurable { through: u64, durable: u64 },
}

impl StoreError {
    /// True when the disk (or the filesystem's quota) is full: the gate fails closed and
    /// recovers by itself once space returns.
    pub fn is_disk_full(&self) -> bool {
        fn full(e: &std::io::Error) -> bool {
            e.kind() == std::io::ErrorKind::StorageFull
                || e.kind() == std::io::ErrorKind::QuotaExceeded
                || e.raw_os_error() == Some(28)
        }
        match self {
            StoreError::Io { source, .. } => full(source),
            StoreError::Engine(sled::Error::Io(e)) => full(e),
            StoreError::CommitFailed(inner) => inner.is_disk_full(),
            _ => false,
        }
    }
}

/// A snapshot of the store's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreStatus {
    pub open_state: OpenState,
    pub store_id: String,
    pub next_seq: u64,
    pub durable_seq: u64,
    pub synced_through: u64,
    /// Records waiting for the platform.
    pub backlog: u64,
    /// Records held (waiting, or kept because the gate is not enrolled).
    pub records: u64,
    pub replay_tags: u64,
    /// Dynamic codes whose window began before this time are refused (`replay_guard_recovering`).
    pub replay_guard_from_ms: Option<i64>,
    /// A replay guard waits for the first trusted time to begin.
    pub replay_guard_pending: bool,
    /// The live clock's trusted-time floor persisted with the last record.
    pub clock_floor_ms: i64,
    pub bytes: u64,
    /// Flush + fsync rounds since open.
    pub commit_rounds: u64,
    /// Why the store refuses writes, after a failed commit.
    pub failed: Option<String>,
    /// Bytes still free on the store's filesystem (filled in by the checkpoint).
    pub free_bytes: Option<u64>,
    /// Free space is below the checkpoint's reserve: every code is refused, unrecorded.
    pub low_space: bool,
    /// Times the store was reopened after a failure since the daemon started.
    pub reopened: u64,
}

/// How a store directory came to be open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
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

/// The durable store.
#[derive(Debug)]
pub(crate) struct Store {
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
    /// `<state-dir>/store`.
    path: PathBuf,
    /// The platform policy cache's file (see the layout).
    policy_path: PathBuf,
    /// Records and replay tags at the last status taken while in service.
    counts: Mutex<(u64, u64)>,
    /// Held while the store is open (another process opening it gets `InUse`); released last.
    _lock: StoreLock,
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
        path: path.to_path_buf(),
        source,
    }
}

fn be_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

/// Deletes the records with `seq <= through` (the platform confirmed them); returns how many.
fn delete_through(records: &sled::Tree, through: u64) -> Result<usize, StoreError> {
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for kv in records.range(..=through.to_be_bytes()) {
        batch.remove(kv?.0);
        n += 1;
    }
    if n > 0 {
        records.apply_batch(batch)?;
    }
    Ok(n)
}

fn be_i64(v: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(v.try_into().ok()?))
}

impl Store {
    /// Opens (or creates) the store under `state_dir`, recovering by itself from the known
    /// crash leftovers. `now_ms` only names a quarantined directory.
    pub(crate) fn open(state_dir: &Path, create: Create, now_ms: i64) -> Result<Store, StoreError> {
        crate::files::create_private_dir(state_dir)?;
        let lock = StoreLock::acquire(state_dir)?;
        let path = state_dir.join("store");
        let existed = path.join("db").exists();

        let (db, mut open_state) = open_with_recovery(state_dir, &path, now_ms)?;
        // sled creates its files under the process umask; the store holds the HMAC key of
        // record hashes and the platform's policy (with any HMAC code key): private, always.
        crate::files::restrict_tree(&path)?;
        if !existed && open_state == OpenState::Existing {
            open_state = match create {
                Create::Provision => OpenState::Provisioned,
                Create::Guarded => OpenState::WasMissing,
            };
        }
        // sled's conf file and its directories (and the state directory's entry for it).
        let files = crate::files::EngineFiles::open(&path)?;

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
        let leftover = delete_through(&records, synced_through)?;
        if leftover > 0 {
            tracing::info!(
                leftover,
                "store: deleted records the platform had confirmed (a cut interrupted their deletion)"
            );
        }
        let policy_path = state_dir.join(POLICY_FILE);
        if let Some(old) = meta.get(K_POLICY)? {
            if !policy_path.exists() {
                crate::files::write_durable(&policy_path, &old, crate::files::PRIVATE_FILE)?;
            }
            meta.remove(K_POLICY)?;
        }
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
            files,
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
            path,
            policy_path,
            counts: Mutex::new((0, 0)),
            _lock: lock,
        })
    }

    /// The clock floor persisted by the last live verification (feeds the clock at start).
    pub(crate) fn clock_floor_ms(&self) -> i64 {
        self.lock_writer().clock_floor_ms
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Like [`Store::verify_and_record`] but returns as soon as the record is written, before
    /// it is durable: the caller **must** [`Store::wait_durable`] for `record.seq` before
    /// acting on the verdict. Lets one thread keep verifying while earlier records commit.
    pub(crate) fn verify_and_stage<F>(
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
            let value = serde_json::to_vec(&stored).map_err(|e| StoreError::Corrupt {
                what: "record",
                detail: format!("cannot encode: {e}"),
            })?;
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
    pub(crate) fn wait_durable(&self, seq: u64) -> Result<(), StoreError> {
        self.durability.wait(seq)
    }

    /// The highest sequence number known to be on disk.
    pub(crate) fn durable_seq(&self) -> u64 {
        self.durability.lock().durable
    }

    /// Up to `limit` records with `seq >= from`, in order.
    pub(crate) fn records_from(&self, from: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        self.usable()?;
        self.records
            .range(from.to_be_bytes()..)
            .take(limit)
            .map(|kv| decode_record(&kv?.1))
            .collect()
    }

    /// Flush + fsync rounds since open.
    pub(crate) fn sync_count(&self) -> u64 {
        self.durability.rounds.load(Ordering::Relaxed)
    }

    /// The next sequence number that will be issued.
    pub(crate) fn next_seq(&self) -> u64 {
        self.lock_writer().next_seq
    }

    /// Forgets replay tags whose window ended before `now_ms`; returns how many. Not made
    /// durable on purpose: a forgotten tag that reappears after a crash is merely expired.
    pub(crate) fn purge_expired_tags(&self, now_ms: i64) -> Result<usize, StoreError> {
        let _w = self.lock_writer();
        self.usable()?;
        purge_tags_before(&self.replay, now_ms)
    }

    /// Bytes the store occupies on disk.
    pub(crate) fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// The keyed hasher of record identifiers.
    pub(crate) fn hasher(&self) -> &RecordHasher {
        &self.hasher
    }

    /// The sync client's view.
    pub(crate) fn outbox(self: &Arc<Store>) -> Outbox {
        Outbox(self.clone())
    }

    /// Takes the store out of service after an error on its write path (sled keeps an I/O
    /// error for good once it has one): every waiter and every later write gets the error,
    /// and the owner reopens the store from disk.
    pub(crate) fn fail(&self, e: StoreError) {
        let mut st = self.durability.lock();
        if st.failed.is_none() {
            tracing::error!(error = %e, disk_full = e.is_disk_full(), "store: write failed; refusing further writes");
            st.failed = Some(Arc::new(e));
        }
        drop(st);
        self.durability.done.notify_all();
        self.durability.work.notify_all();
    }

    /// Why the store refuses writes, if it does.
    pub(crate) fn failure(&self) -> Option<Arc<StoreError>> {
        self.durability.lock().failed.clone()
    }

    /// An error once the store is out of service: sled is not touched again (after an I/O
    /// error some of its reads retry for ever).
    pub(super) fn usable(&self) -> Result<(), StoreError> {
        self.durability.check_usable()
    }

    /// The store's directory (free space is measured on its filesystem).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A snapshot of the store's state for the status page, metrics and `doctor`.
    pub(crate) fn status(&self) -> StoreStatus {
        // Counted by walking the trees; not once the store is out of service (see `usable`):
        // then the last counts stand.
        let (records, replay_tags) = if self.usable().is_ok() {
            let counted = (self.records.len() as u64, self.replay.len() as u64);
            *self.counts.lock().unwrap_or_else(|p| p.into_inner()) = counted;
            counted
        } else {
            *self.counts.lock().unwrap_or_else(|p| p.into_inner())
        };
        let (next_seq, clock_floor_ms, replay_guard_from_ms) = {
            let w = self.lock_writer();
            (w.next_seq, w.clock_floor_ms, w.guard_from_ms)
        };
        StoreStatus {
            open_state: self.open_state.clone(),
            store_id: self.store_id.clone(),
            next_seq,
            durable_seq: self.durable_seq(),
            synced_through: self.synced_through(),
            backlog: self.backlog(),
            records,
            replay_tags,
            replay_guard_from_ms: replay_guard_from_ms.filter(|g| *g != GUARD_PENDING),
            replay_guard_pending: replay_guard_from_ms == Some(GUARD_PENDING),
            clock_floor_ms,
            bytes: self.size_on_disk(),
            commit_rounds: self.sync_count(),
            failed: self
                .durability
                .lock()
                .failed
                .as_ref()
                .map(|e| e.to_string()),
            free_bytes: None,
            low_space: false,
            reopened: 0,
        }
    }
}

fn decode_stored(bytes: &[u8]) -> Result<StoredRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what: "record",
        detail: e.to_string(),
    })
}

fn decode_record(bytes: &[u8]) -> Result<Record, StoreError> {
    decode_stored(bytes).map(|s| s.record)
}
