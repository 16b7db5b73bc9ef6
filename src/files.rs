//! Files outside sled — the API token, the enrollment, key files, trust files a command writes —
//! written durably and privately, secrets read only from files nobody else can read, and the
//! files sled itself leaves undurable ([`EngineFiles`]).
//!
//! **Invariants:** a file written here is complete or absent after a power cut: it goes to a
//! temporary file in the same directory (created with its final mode, so there is no moment
//! where a secret is readable by others), is fsynced, renamed over the target, and the
//! directory is fsynced so that the rename itself survives. Directories this process creates
//! are 0700. This is the only module that writes such files; `std::fs::write` elsewhere is a
//! bug.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use zeroize::Zeroizing;

/// Mode of every file this process writes that holds a secret or state.
pub const PRIVATE_FILE: u32 = 0o600;
/// Mode of every directory this process creates.
pub const PRIVATE_DIR: u32 = 0o700;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: holds a secret but is readable by group or others (mode {mode:o}); run chmod 600 {path}")]
    InsecureMode { path: PathBuf, mode: u32 },
    #[error("{path}: a bearer token must be at least {MIN_TOKEN_LEN} characters of A–Z a–z 0–9 - _ . ~ (got {len}); remove the file to have a new one generated")]
    WeakToken { path: PathBuf, len: usize },
}

/// Shortest bearer token accepted (a generated one has 32).
pub const MIN_TOKEN_LEN: usize = 16;

impl FileError {
    /// The I/O error kind, when this is an I/O error (callers branch on `NotFound`).
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            FileError::Io { source, .. } => Some(source.kind()),
            FileError::InsecureMode { .. } | FileError::WeakToken { .. } => None,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Sets this process's umask to 077, so that whatever a library creates (sled's files, a
/// temporary directory) is private whatever umask the process was started with. Called once
/// at start by every command.
pub fn restrict_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Writes `contents` to `path` durably with `mode` (see the module invariants). The parent
/// directory must exist.
pub fn write_durable(path: &Path, contents: &[u8], mode: u32) -> Result<(), FileError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io(&tmp))?;
        // A leftover temporary file keeps its old mode on open: set it explicitly.
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io(&tmp))?;
        f.write_all(contents).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// fsyncs a directory, so that entries created, renamed or removed in it survive a power cut.
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// The files sled 0.34 keeps beside its log that it never makes durable itself, made durable.
///
/// sled fsyncs neither its `conf` file nor the directories it creates (its own directory,
/// `blobs/`), and writes every log item larger than a quarter of its segment size (a value,
/// or a whole leaf node when it is rewritten: 128 KiB with the default 512 KiB segments) to a
/// file of its own under `blobs/` that it never fsyncs either; after a power cut, recovery
/// skips a log item whose blob file is missing without a word (`LogRead::DanglingBlob`). Our
/// stores keep their values and leaves below that size (see their module docs), so `blobs/`
/// stays empty; this is the guard for when it does not: [`EngineFiles::sync_blobs`] fsyncs
/// every blob file not synced yet, and `blobs/`, before the caller fsyncs sled's log.
/// Written here because sled offers no hook for it (upstream spacejam/sled #1351).
#[derive(Debug)]
pub struct EngineFiles {
    dir: PathBuf,
    /// Blob files already fsynced (sled never rewrites one; it removes it when obsolete).
    synced: Mutex<HashSet<OsString>>,
}

impl EngineFiles {
    /// After sled opened (or created) its directory `dir`: fsyncs `conf`, every blob file,
    /// `blobs/`, `dir` itself and its parent, so that a store created a moment before a power
    /// cut is still there after it.
    pub fn open(dir: &Path) -> Result<EngineFiles, FileError> {
        let conf = dir.join("conf");
        if conf.exists() {
            std::fs::File::open(&conf)
                .and_then(|f| f.sync_all())
                .map_err(io(&conf))?;
        }
        let files = EngineFiles {
            dir: dir.to_path_buf(),
            synced: Mutex::new(HashSet::new()),
        };
        files.sync_blobs()?;
        sync_dir(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(files)
    }

    /// fsyncs each blob file written since the last call, then `blobs/` if there was one;
    /// returns how many files it synced. One directory listing when there is nothing to do.
    pub fn sync_blobs(&self) -> Result<usize, FileError> {
        let blobs = self.dir.join("blobs");
        let listing = match std::fs::read_dir(&blobs) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io(&blobs)(e)),
        };
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = HashSet::new();
        let mut fresh = 0;
        for entry in listing {
            let name = entry.map_err(io(&blobs))?.file_name();
            if !synced.contains(&name) {
                let path = blobs.join(&name);
                match std::fs::File::open(&path).and_then(|f| f.sync_all()) {
                    Ok(()) => {
                        fresh += 1;
                        synced.insert(name.clone());
                    }
                    // Removed by sled since the listing: obsolete, nothing to keep.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io(&path)(e)),
                }
            }
            present.insert(name);
        }
        synced.retain(|n| present.contains(n));
        if fresh > 0 {
            sync_dir(&blobs)?;
            tracing::debug!(fresh, dir = %self.dir.display(), "storage: blob files made durable");
        }
        Ok(fresh)
    }

    /// Blob files present at the last [`EngineFiles::sync_blobs`].
    pub fn blob_count(&self) -> usize {
        self.synced.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Creates `dir` and any missing parents with mode 0700 (existing directories are left as
/// they are, except `dir` itself: group or world access to it is removed, with a log line).
/// Each directory it creates is made durable: its parent is fsynced, so that a power cut
/// cannot take away a state directory (and everything written into it) after the fact.
pub fn create_private_dir(dir: &Path) -> Result<(), FileError> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.exists() {
        missing.push(at);
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => break,
        }
    }
    for d in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(PRIVATE_DIR).create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(d)(e)),
        }
        let parent = match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        sync_dir(parent)?;
    }
    restrict_mode(dir, PRIVATE_DIR)
}

/// Removes group and world access from `path` if it has any, saying so in the log.
pub fn restrict_mode(path: &Path, mode: u32) -> Result<(), FileError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    let current = meta.permissions().mode() & 0o7777;
    if current & 0o077 != 0 {
        let narrowed = (current & !0o077) | (mode & 0o700);
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(narrowed))
            .map_err(io(path))?;
        tracing::warn!(path = %path.display(), from = format!("{current:o}"), to = format!("{narrowed:o}"), "removed group/world access");
    }
    Ok(())
}

/// Removes group and world access from every file and directory under `dir` (a storage
/// engine's files created under a wide umask, or copied in by hand), saying so in the log.
pub fn restrict_tree(dir: &Path) -> Result<(), FileError> {
    restrict_mode(dir, PRIVATE_DIR)?;
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let p = entry.path();
        if entry.file_type().map_err(io(&p))?.is_dir() {
            restrict_tree(&p)?;
        } else {
            restrict_mode(&p, PRIVATE_FILE)?;
        }
    }
    Ok(())
}

/// Reads a text file.
pub fn read_text(path: &Path) -> Result<String, FileError> {
    std::fs::read_to_string(path).map_err(io(path))
}

/// Refuses a file that others can read or write, or that a group other than this process's
/// own can read (`root:yima-gate 0640` is private to the service; `0644` is not).
pub fn check_private(path: &Path) -> Result<(), FileError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    let own_group = meta.gid() == rustix::process::getegid().as_raw();
    let group_ok = mode & 0o070 == 0 || (own_group && mode & 0o030 == 0);
    if mode & 0o007 != 0 || !group_ok {
        return Err(FileError::InsecureMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Reads a secret (webhook secret, API token, key file) from a file that must not be readable
/// by group or others; surrounding whitespace is trimmed.
pub fn read_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>, FileError> {
    check_private(path)?;
    let bytes = Zeroizing::new(std::fs::read(path).map_err(io(path))?);
    Ok(Zeroizing::new(bytes.trim_ascii().to_vec()))
}

/// A bearer token (the gate API's, the platform admin API's): read from `path`, which must be
/// private and hold at least [`MIN_TOKEN_LEN`] token characters — an empty or short token is
/// refused, never taken as "no authentication" — or, when `path` does not exist and
/// `generate` is set, 24 random bytes (32 base64url characters) written there durably.
pub fn load_or_create_token(path: &Path, generate: bool) -> Result<Zeroizing<String>, FileError> {
    if !generate || path.exists() {
        let bytes = read_secret(path)?;
        let token = Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned());
        let valid = token.len() >= MIN_TOKEN_LEN
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b));
        if !valid {
            return Err(FileError::WeakToken {
                path: path.to_path_buf(),
                len: token.len(),
            });
        }
        return Ok(token);
    }
    let mut raw = [0u8; 24];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
    let token = Zeroizing::new(crate::verification::keys::b64_encode(&raw));
    write_durable(path, token.as_bytes(), PRIVATE_FILE)?;
    tracing::info!(path = %path.display(), "generated a bearer token");
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("meta").permissions().mode() & 0o777
    }

    #[test]
    fn durable_writes_replace_whole_files_with_the_given_mode() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("token");
        write_durable(&p, b"one", 0o600).expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"one");
        assert_eq!(mode(&p), 0o600);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_durable(&p, b"two", 0o600).expect("rewrite");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        assert_eq!(mode(&p), 0o600, "a rewrite never keeps a wider old mode");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 1, "no temporary file left behind: {left:?}");
    }

    #[test]
    fn secrets_must_be_private_and_are_trimmed() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("s");
        write_durable(&p, b"  s3cret\n", 0o600).expect("write");
        assert_eq!(read_secret(&p).expect("read").as_slice(), b"s3cret");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            read_secret(&p),
            Err(FileError::InsecureMode { mode: 0o644, .. })
        ));
        // Group-readable by this process's own group (root:yima-gate 0640 for the service).
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(read_secret(&p).is_ok());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o660)).expect("chmod");
        assert!(read_secret(&p).is_err(), "group-writable is not private");
        assert_eq!(
            read_secret(&dir.path().join("absent"))
                .err()
                .and_then(|e| e.io_kind()),
            Some(std::io::ErrorKind::NotFound)
        );
    }

    #[test]
    fn tokens_are_generated_once_and_never_empty_or_short() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("api.token");
        let t = load_or_create_token(&p, true).expect("generate");
        assert_eq!(t.len(), 32);
        assert_eq!(mode(&p), 0o600);
        assert_eq!(*load_or_create_token(&p, true).expect("again"), *t, "kept");
        for weak in ["", "   \n", "short", "has spaces in the middle!!"] {
            write_durable(&p, weak.as_bytes(), 0o600).expect("write");
            assert!(
                matches!(
                    load_or_create_token(&p, true),
                    Err(FileError::WeakToken { .. })
                ),
                "{weak:?}"
            );
        }
        assert!(load_or_create_token(&dir.path().join("absent"), false).is_err());
    }

    #[test]
    fn private_dirs_are_0700_and_wider_ones_are_narrowed() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path().join("a/b");
        create_private_dir(&d).expect("create");
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        create_private_dir(&d).expect("again");
        assert_eq!(mode(&d), 0o700);
    }
}
