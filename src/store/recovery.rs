//! Opening sled so that a gate never bricks itself: sled's panics become errors, a store held
//! by another process is named as such, and known crash leftovers are repaired in escalating
//! steps (`open_with_recovery`).

use std::path::{Path, PathBuf};

use super::{io_err, OpenState, StoreError};

/// sled's page cache; small, because a gate has little memory and records are written once.
const CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// How long `open` waits for sled's own directory lock once it holds the store lock: a store
/// closed a moment ago in this process releases sled's lock only when sled's background
/// flusher exits.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The store lock: an exclusive `flock` on `<state_dir>/store.lock`, held for as long as the
/// store is open. sled's own lock reports a holder only through an error message, so this lock
/// is what tells "another process has this store" apart from everything else.
#[derive(Debug)]
pub(super) struct StoreLock {
    _file: std::fs::File,
}

impl StoreLock {
    pub(super) fn acquire(state_dir: &Path) -> Result<StoreLock, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = state_dir.join("store.lock");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(crate::files::PRIVATE_FILE)
            .open(&path)
            .map_err(io_err(&path))?;
        // A child process forked by this one between a store's open and its exec holds a
        // copy of the descriptor (and so the lock) for a moment: wait briefly before saying
        // another process has the store.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(StoreLock { _file: file }),
                Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    return Err(StoreError::InUse {
                        path: state_dir.to_path_buf(),
                    })
                }
                Err(e) => return Err(io_err(&path)(e.into())),
            }
        }
    }
}

/// Opens sled, waiting briefly for its lock (see [`LOCK_WAIT`]), turning its panics (it has
/// some on damaged files) into errors. Called only with the [`StoreLock`] held, so an I/O
/// error of kind `Other` here is sled's lock still held by this process's previous store.
fn open_sled(path: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let cfg = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .mode(sled::Mode::LowSpace);
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || cfg.open())) {
            Ok(Ok(db)) => return Ok(db),
            Ok(Err(sled::Error::Io(e)))
                if e.kind() == std::io::ErrorKind::Other
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Ok(Err(sled::Error::Io(e))) => return Err(io_err(path)(e)),
            Ok(Err(e)) => {
                return Err(StoreError::Corrupt {
                    what: "store",
                    detail: e.to_string(),
                })
            }
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
pub(super) fn open_with_recovery(
    state_dir: &Path,
    path: &Path,
    now_ms: i64,
) -> Result<(sled::Db, OpenState), StoreError> {
    let first = match open_sled(path) {
        Ok(db) => return Ok((db, OpenState::Existing)),
        Err(e @ (StoreError::Io { .. } | StoreError::InUse { .. })) => return Err(e),
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
            Err(e @ (StoreError::Io { .. } | StoreError::InUse { .. })) => return Err(e),
            Err(_) => {}
        }
    }

    let snapshots = snapshot_files(path, false)?;
    if !snapshots.is_empty() {
        let moved_to = state_dir.join(format!("snapshots.damaged-{now_ms}"));
        crate::files::create_private_dir(&moved_to).map_err(StoreError::Files)?;
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
            Err(e @ (StoreError::Io { .. } | StoreError::InUse { .. })) => return Err(e),
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

pub(super) fn fsync_dir(path: &Path) -> Result<(), StoreError> {
    std::fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_err(path))
}
