//! A filesystem that forgets, at a simulated power cut, everything that was not made durable:
//! a file's contents since its last `fsync`, a directory's entries (creations, renames,
//! removals) since that directory's last `fsync`. In memory, served over FUSE (the `fuser`
//! crate, pure Rust) by the test process itself, so that the gate runs unmodified on it.
//!
//! Strict on purpose, stricter than ext4's usual behaviour: nothing unsynced survives, and a
//! file whose directory entry was never synced is gone whatever its own fsyncs said.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

/// True when FUSE can be mounted here (root and `/dev/fuse`); otherwise says SKIP, and fails
/// in CI, which must run the power-cut tests.
pub fn usable() -> bool {
    let usable = rustix::process::geteuid().is_root() && Path::new("/dev/fuse").exists();
    if !usable {
        assert!(
            std::env::var_os("CI").is_none(),
            "FUSE (root and /dev/fuse) missing: CI must run the power-cut tests"
        );
        eprintln!("SKIP: FUSE needs root and /dev/fuse");
    }
    usable
}

const PAGE: usize = 4096;
/// The kernel asks again every time: nothing it caches can outlive a cut.
const TTL: Duration = Duration::ZERO;

/// File contents as shared pages: a durable copy costs a pointer per page, not the bytes.
#[derive(Clone, Default)]
struct Content {
    pages: Vec<Arc<[u8; PAGE]>>,
    len: u64,
}

impl Content {
    fn read(&self, offset: u64, size: u32) -> Vec<u8> {
        let end = (offset.saturating_add(u64::from(size))).min(self.len);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut at = offset;
        while at < end {
            let page = (at / PAGE as u64) as usize;
            let from = (at % PAGE as u64) as usize;
            let take = ((end - at) as usize).min(PAGE - from);
            out.extend_from_slice(&self.pages[page][from..from + take]);
            at += take as u64;
        }
        out
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        let need = end.div_ceil(PAGE as u64) as usize;
        while self.pages.len() < need {
            self.pages.push(Arc::new([0u8; PAGE]));
        }
        let mut done = 0usize;
        while done < data.len() {
            let at = offset + done as u64;
            let page = (at / PAGE as u64) as usize;
            let from = (at % PAGE as u64) as usize;
            let take = (data.len() - done).min(PAGE - from);
            Arc::make_mut(&mut self.pages[page])[from..from + take]
                .copy_from_slice(&data[done..done + take]);
            done += take;
        }
        self.len = self.len.max(end);
    }

    fn truncate(&mut self, len: u64) {
        if len < self.len {
            self.pages.truncate(len.div_ceil(PAGE as u64) as usize);
            let tail = (len % PAGE as u64) as usize;
            if tail > 0 {
                if let Some(last) = self.pages.last_mut() {
                    Arc::make_mut(last)[tail..].fill(0);
                }
            }
        } else {
            let need = len.div_ceil(PAGE as u64) as usize;
            while self.pages.len() < need {
                self.pages.push(Arc::new([0u8; PAGE]));
            }
        }
        self.len = len;
    }
}

enum Body {
    File {
        now: Content,
        durable: Content,
    },
    Dir {
        now: BTreeMap<OsString, u64>,
        durable: BTreeMap<OsString, u64>,
    },
}

struct Node {
    body: Body,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
}

struct Tree {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
}

/// What the filesystem did since it was made.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub cuts: u64,
    pub file_syncs: u64,
    pub dir_syncs: u64,
    pub writes: u64,
}

/// The filesystem's state, shared by every mount of it.
#[derive(Clone)]
pub struct PowerFs {
    tree: Arc<Mutex<Tree>>,
    counts: Arc<Mutex<Counts>>,
}

/// A mount of a [`PowerFs`]; unmounted when dropped.
pub struct Mounted {
    _session: fuser::BackgroundSession,
    pub path: PathBuf,
}

impl PowerFs {
    pub fn new() -> PowerFs {
        let mut nodes = HashMap::new();
        nodes.insert(
            INodeNo::ROOT.0,
            Node {
                body: Body::Dir {
                    now: BTreeMap::new(),
                    durable: BTreeMap::new(),
                },
                perm: 0o755,
                uid: 0,
                gid: 0,
                mtime: SystemTime::now(),
            },
        );
        PowerFs {
            tree: Arc::new(Mutex::new(Tree { nodes, next_ino: 2 })),
            counts: Arc::new(Mutex::new(Counts::default())),
        }
    }

    /// Mounts the filesystem on `dir` (FUSE; needs root or fusermount3).
    pub fn mount(&self, dir: &Path) -> std::io::Result<Mounted> {
        std::fs::create_dir_all(dir)?;
        let mut config = fuser::Config::default();
        config.mount_options = vec![fuser::MountOption::FSName("yima-powerfs".into())];
        let session = fuser::spawn_mount(self.clone(), dir, &config)?;
        Ok(Mounted {
            _session: session,
            path: dir.to_path_buf(),
        })
    }

    /// The power goes: every file and directory falls back to what was last made durable,
    /// and whatever no durable directory entry reaches is gone. Call it with the filesystem
    /// unmounted (after the processes using it have died), as a machine reboots.
    pub fn cut(&self) {
        let mut t = self.lock();
        for n in t.nodes.values_mut() {
            match &mut n.body {
                Body::File { now, durable } => *now = durable.clone(),
                Body::Dir { now, durable } => *now = durable.clone(),
            }
        }
        let mut keep = HashSet::from([INodeNo::ROOT.0]);
        let mut stack = vec![INodeNo::ROOT.0];
        while let Some(i) = stack.pop() {
            if let Some(Node {
                body: Body::Dir { now, .. },
                ..
            }) = t.nodes.get(&i)
            {
                for child in now.values() {
                    if keep.insert(*child) {
                        stack.push(*child);
                    }
                }
            }
        }
        t.nodes.retain(|k, _| keep.contains(k));
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).cuts += 1;
    }

    pub fn counts(&self) -> Counts {
        *self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, f: impl FnOnce(&mut Counts)) {
        f(&mut self.counts.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

fn attr(ino: u64, n: &Node) -> FileAttr {
    let (kind, size, nlink) = match &n.body {
        Body::File { now, .. } => (FileType::RegularFile, now.len, 1),
        Body::Dir { .. } => (FileType::Directory, 0, 2),
    };
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: n.mtime,
        mtime: n.mtime,
        ctime: n.mtime,
        crtime: n.mtime,
        kind,
        perm: n.perm,
        nlink,
        uid: n.uid,
        gid: n.gid,
        rdev: 0,
        blksize: PAGE as u32,
        flags: 0,
    }
}

impl Tree {
    fn dir_mut(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.body) {
            Some(Body::Dir { now, .. }) => Ok(now),
            Some(Body::File { .. }) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn child(&mut self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.dir_mut(parent)?
            .get(name)
            .copied()
            .ok_or(Errno::ENOENT)
    }

    fn is_dir(&self, ino: u64) -> bool {
        matches!(
            self.nodes.get(&ino).map(|n| &n.body),
            Some(Body::Dir { .. })
        )
    }

    fn add(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<FileAttr, Errno> {
        if self.dir_mut(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let a = attr(ino, &node);
        self.nodes.insert(ino, node);
        self.dir_mut(parent)?.insert(name.to_os_string(), ino);
        Ok(a)
    }
}

fn new_node(req: &Request, mode: u32, umask: u32, body: Body) -> Node {
    Node {
        body,
        perm: (mode & !umask & 0o7777) as u16,
        uid: req.uid(),
        gid: req.gid(),
        mtime: SystemTime::now(),
    }
}

impl Filesystem for PowerFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut t = self.lock();
        match t.child(parent.0, name) {
            Ok(ino) => match t.nodes.get(&ino) {
                Some(n) => reply.entry(&TTL, &attr(ino, n), Generation(0)),
                None => reply.error(Errno::ENOENT),
            },
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.lock().nodes.get(&ino.0) {
            Some(n) => reply.attr(&TTL, &attr(ino.0, n)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut t = self.lock();
        let Some(n) = t.nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(m) = mode {
            n.perm = (m & 0o7777) as u16;
        }
        if let Some(u) = uid {
            n.uid = u;
        }
        if let Some(g) = gid {
            n.gid = g;
        }
        if let Some(len) = size {
            match &mut n.body {
                Body::File { now, .. } => now.truncate(len),
                Body::Dir { .. } => return reply.error(Errno::EISDIR),
            }
            n.mtime = SystemTime::now();
        }
        reply.attr(&TTL, &attr(ino.0, n));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let node = new_node(
            req,
            mode,
            umask,
            Body::Dir {
                now: BTreeMap::new(),
                durable: BTreeMap::new(),
            },
        );
        match self.lock().add(parent.0, name, node) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let node = new_node(
            req,
            mode,
            umask,
            Body::File {
                now: Content::default(),
                durable: Content::default(),
            },
        );
        match self.lock().add(parent.0, name, node) {
            Ok(a) => reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut t = self.lock();
        match t.child(parent.0, name) {
            Ok(ino) if t.is_dir(ino) => reply.error(Errno::EISDIR),
            Ok(_) => {
                let _ = t.dir_mut(parent.0).map(|d| d.remove(name));
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut t = self.lock();
        match t.child(parent.0, name) {
            Ok(ino) => match t.nodes.get(&ino).map(|n| &n.body) {
                Some(Body::Dir { now, .. }) if !now.is_empty() => reply.error(Errno::ENOTEMPTY),
                Some(Body::Dir { .. }) => {
                    let _ = t.dir_mut(parent.0).map(|d| d.remove(name));
                    reply.ok();
                }
                _ => reply.error(Errno::ENOTDIR),
            },
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut t = self.lock();
        let ino = match t.child(parent.0, name) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        if let Ok(existing) = t.child(newparent.0, newname) {
            if let Some(Node {
                body: Body::Dir { now, .. },
                ..
            }) = t.nodes.get(&existing)
            {
                if !now.is_empty() {
                    return reply.error(Errno::ENOTEMPTY);
                }
            }
        }
        if let Err(e) = t.dir_mut(newparent.0) {
            return reply.error(e);
        }
        let _ = t.dir_mut(parent.0).map(|d| d.remove(name));
        let _ = t
            .dir_mut(newparent.0)
            .map(|d| d.insert(newname.to_os_string(), ino));
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.lock().nodes.contains_key(&ino.0) {
            reply.opened(FileHandle(0), FopenFlags::empty());
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.lock().nodes.get(&ino.0).map(|n| &n.body) {
            Some(Body::File { now, .. }) => reply.data(&now.read(offset, size)),
            Some(Body::Dir { .. }) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut t = self.lock();
        match t.nodes.get_mut(&ino.0) {
            Some(Node {
                body: Body::File { now, .. },
                mtime,
                ..
            }) => {
                now.write(offset, data);
                *mtime = SystemTime::now();
                drop(t);
                self.count(|c| c.writes += 1);
                reply.written(data.len() as u32);
            }
            Some(_) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut t = self.lock();
        match t.nodes.get_mut(&ino.0).map(|n| &mut n.body) {
            Some(Body::File { now, durable }) => {
                *durable = now.clone();
                drop(t);
                self.count(|c| c.file_syncs += 1);
            }
            Some(Body::Dir { now, durable }) => {
                *durable = now.clone();
                drop(t);
                self.count(|c| c.dir_syncs += 1);
            }
            None => return reply.error(Errno::ENOENT),
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.fsync(req, ino, fh, datasync, reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let t = self.lock();
        let Some(Node {
            body: Body::Dir { now, .. },
            ..
        }) = t.nodes.get(&ino.0)
        else {
            return reply.error(Errno::ENOTDIR);
        };
        let mut all: Vec<(u64, FileType, OsString)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (ino.0, FileType::Directory, "..".into()),
        ];
        for (name, child) in now {
            let kind = if t.is_dir(*child) {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            all.push((*child, kind, name.clone()));
        }
        for (i, (child, kind, name)) in all.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*child), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let blocks = 1u64 << 20; // 4 GiB of 4 KiB blocks, all free
        reply.statfs(
            blocks,
            blocks,
            blocks,
            1 << 20,
            1 << 20,
            PAGE as u32,
            255,
            PAGE as u32,
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }
}
