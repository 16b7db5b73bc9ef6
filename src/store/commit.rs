//! Group commit: writers publish the highest seq they wrote; one committer thread flushes sled
//! and fsyncs its log for everything written so far, then wakes every waiter it covered.
//! Writers never fsync themselves, so any number of them share one round. A failed commit
//! poisons the store: every waiter and every later write gets the error.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::{io_err, StoreError};

/// Records that make a full group-commit batch.
const COMMIT_BATCH: u64 = 64;
/// Longest a commit waits for more records, and only under load (see `committer_loop`).
const COMMIT_LINGER: std::time::Duration = std::time::Duration::from_millis(1);

/// Group commit: writers publish the highest seq they wrote; one committer thread flushes
/// sled and fsyncs its log for everything written so far, then wakes every waiter it covered.
/// Writers never fsync themselves, so any number of them share one round.
#[derive(Debug)]
pub(super) struct Durability {
    pub(super) db: sled::Db,
    pub(super) log_file: File,
    pub(super) log_path: PathBuf,
    /// sled's files outside its log (blob files, `conf`, directories), made durable.
    pub(super) files: crate::files::EngineFiles,
    pub(super) state: Mutex<DurableState>,
    /// Signalled when there is something to commit (or on shutdown).
    pub(super) work: Condvar,
    /// Signalled after every commit round.
    pub(super) done: Condvar,
    /// Flush + fsync rounds since open (records per round = batch size).
    pub(super) rounds: AtomicU64,
}

#[derive(Debug)]
pub(super) struct DurableState {
    /// Highest seq written to sled (in memory, maybe not yet on disk).
    pub(super) written: u64,
    /// Highest seq known on disk.
    pub(super) durable: u64,
    /// Set when a commit failed: the store is unusable and every waiter gets the error.
    pub(super) failed: Option<Arc<StoreError>>,
    pub(super) shutdown: bool,
}

impl Durability {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, DurableState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// sled flush (writes its buffers to the log) + fsync of any blob file it wrote + fsync
    /// of the log (sled's flush alone only issues `sync_file_range`, which does not survive
    /// power loss, and it never fsyncs blob files: see [`crate::files::EngineFiles`]).
    pub(super) fn sync(&self) -> Result<(), StoreError> {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        self.db.flush()?;
        self.files.sync_blobs()?;
        self.log_file.sync_data().map_err(io_err(&self.log_path))
    }

    pub(super) fn committer_loop(&self) {
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
                    st.failed = Some(Arc::new(e));
                }
            }
            self.done.notify_all();
        }
    }

    pub(super) fn published(&self, seq: u64) {
        let mut st = self.lock();
        let was_idle = st.written <= st.durable;
        st.written = st.written.max(seq);
        // Wake the committer when work appears and when a full batch is waiting; waking it
        // for every record would cost a context switch each.
        if was_idle || st.written - st.durable >= COMMIT_BATCH {
            self.work.notify_one();
        }
    }

    pub(super) fn wait(&self, seq: u64) -> Result<(), StoreError> {
        let mut st = self.lock();
        loop {
            if st.durable >= seq {
                return Ok(());
            }
            if let Some(e) = &st.failed {
                return Err(StoreError::CommitFailed(e.clone()));
            }
            if st.shutdown {
                return Err(StoreError::Closed);
            }
            st = self.done.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub(super) fn check_usable(&self) -> Result<(), StoreError> {
        match &self.lock().failed {
            Some(e) => Err(StoreError::CommitFailed(e.clone())),
            None => Ok(()),
        }
    }
}
