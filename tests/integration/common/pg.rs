//! A throw-away PostgreSQL cluster from Debian's `postgresql` binaries: `initdb` and `postgres`
//! on a Unix socket in a temporary directory (no TCP), run as the `postgres` user when the
//! tests run as root (initdb refuses root). One cluster per test binary, a fresh database per
//! test; the server is stopped, and its directory removed, when the test process exits (a
//! shell holding the server waits on a pipe from this process).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// The running cluster: its socket directory and the write end of the pipe that keeps it up.
pub struct Cluster {
    socket_dir: PathBuf,
    _keepalive: Mutex<std::process::ChildStdin>,
}

static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

/// The directory of the newest installed PostgreSQL's binaries.
fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, d)| d)
}

/// uid and gid of the `postgres` user, from /etc/passwd.
fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let f: Vec<&str> = line.split(':').collect();
    Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
}

fn as_cluster_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
}

/// Where the binaries are, who runs them, and a fresh cluster directory (`initdb` done).
struct Prepared {
    bin: PathBuf,
    user: Option<(u32, u32)>,
    dir: PathBuf,
}

fn prepare() -> Result<Prepared, String> {
    let bin =
        bin_dir().ok_or("no PostgreSQL under /usr/lib/postgresql (apt-get install postgresql)")?;
    let user = if rustix::process::geteuid().is_root() {
        Some(postgres_user().ok_or("no postgres user")?)
    } else {
        None
    };
    let dir = tempfile::Builder::new()
        .prefix("yima-pg-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
    }
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .args([
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
            "-U",
            "postgres",
            "--auth=trust",
            "-D",
        ])
        .arg(dir.join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    as_cluster_user(&mut initdb, user);
    let out = initdb.output().map_err(|e| format!("initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!("initdb: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(Prepared { bin, user, dir })
}

/// The server's arguments: a Unix socket in the cluster directory, no TCP.
const SERVER_ARGS: &str = "-c listen_addresses= -c max_connections=200 -c shared_buffers=128MB \
                           -c log_min_messages=fatal";

/// Waits until the server in `dir` answers (bounded: 10 s).
fn wait_up(dir: &Path) -> Result<(), String> {
    let socket = dir.join(".s.PGSQL.5432");
    for _ in 0..200 {
        if socket.exists() && psql(dir, "postgres", "SELECT 1").is_ok() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    Err(format!("postgres did not come up: {log}"))
}

fn start() -> Result<Cluster, String> {
    let Prepared { bin, user, dir } = prepare()?;
    // The shell starts the server and stops it (fast shutdown) when its stdin closes, that is
    // when this test process exits, then removes the directory.
    let mut keeper = Command::new("sh");
    keeper
        .args([
            "-c",
            &format!(
                r#"postgres -D "$1/data" -k "$1" {SERVER_ARGS} >"$1/server.log" 2>&1 &
                   pid=$!
                   cat >/dev/null
                   kill -INT $pid; wait $pid; rm -rf "$1""#
            ),
            "pg-keeper",
        ])
        .arg(&dir)
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    as_cluster_user(&mut keeper, user);
    let mut child = keeper.spawn().map_err(|e| format!("postgres: {e}"))?;
    let stdin = child.stdin.take().ok_or("keeper stdin")?;
    wait_up(&dir)?;
    Ok(Cluster {
        socket_dir: dir,
        _keepalive: Mutex::new(stdin),
    })
}

/// A cluster of one test's own, which it may kill (-9, every server process) and start
/// again; stopped and removed when dropped.
pub struct OwnedCluster {
    prepared: Prepared,
    server: Option<std::process::Child>,
}

impl OwnedCluster {
    /// A new cluster, running; `None` (SKIP) as [`cluster`] says.
    pub fn start() -> Option<OwnedCluster> {
        let started = prepare().and_then(|prepared| {
            let mut c = OwnedCluster {
                prepared,
                server: None,
            };
            c.restart()?;
            Ok(c)
        });
        match started {
            Ok(c) => Some(c),
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "PostgreSQL is needed in CI: {e}"
                );
                eprintln!("SKIP: PostgreSQL: {e}");
                None
            }
        }
    }

    /// Starts the server (after [`OwnedCluster::kill`]: crash recovery from its WAL).
    pub fn restart(&mut self) -> Result<(), String> {
        let p = &self.prepared;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p.dir.join("server.log"))
            .map_err(|e| e.to_string())?;
        let mut server = Command::new(p.bin.join("postgres"));
        server
            .arg("-D")
            .arg(p.dir.join("data"))
            .arg("-k")
            .arg(&p.dir)
            .args(SERVER_ARGS.split_whitespace())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0);
        as_cluster_user(&mut server, p.user);
        self.server = Some(server.spawn().map_err(|e| format!("postgres: {e}"))?);
        wait_up(&p.dir)
    }

    /// kill -9 of the server and every backend (its process group), as a crash does.
    pub fn kill(&mut self) {
        if let Some(mut s) = self.server.take() {
            if let Some(pid) = rustix::process::Pid::from_raw(s.id() as i32) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            let _ = s.wait();
        }
    }

    pub fn fresh_database(&self) -> String {
        fresh_database(&self.prepared.dir)
    }

    pub fn url(&self, name: &str) -> String {
        url(&self.prepared.dir, name)
    }
}

impl Drop for OwnedCluster {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.prepared.dir);
    }
}

/// Creates a new empty database in the cluster at `socket_dir`; returns its name (unique in
/// this process, with the process id so that two test binaries never collide).
fn fresh_database(socket_dir: &Path) -> String {
    let name = format!(
        "yima_{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::SeqCst)
    );
    psql(socket_dir, "postgres", &format!("CREATE DATABASE {name}")).expect("create database");
    name
}

/// The connection string of database `name` (key=value form, Unix socket).
fn url(socket_dir: &Path, name: &str) -> String {
    format!("host={} user=postgres dbname={name}", socket_dir.display())
}

/// Runs one statement with a short-lived client (the crate's own driver).
fn psql(socket_dir: &Path, db: &str, sql: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut config = tokio_postgres::Config::new();
        config.host_path(socket_dir).user("postgres").dbname(db);
        let (client, conn) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        let task = tokio::spawn(conn);
        let r = client.batch_execute(sql).await.map_err(|e| e.to_string());
        drop(client);
        let _ = task.await;
        r
    })
}

/// The cluster, started on first use; `None` (with SKIP) where PostgreSQL is not installed
/// outside CI — in CI (`CI` set) a missing server fails the test.
pub fn cluster() -> Option<&'static Cluster> {
    CLUSTER
        .get_or_init(|| match start() {
            Ok(c) => Some(c),
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "PostgreSQL is needed in CI: {e}"
                );
                eprintln!("SKIP: PostgreSQL: {e}");
                None
            }
        })
        .as_ref()
}

impl Cluster {
    /// A new empty database; returns its name ([`Cluster::url`] gives its connection string).
    pub fn fresh_database(&self) -> String {
        fresh_database(&self.socket_dir)
    }

    /// The connection string of database `name` (key=value form, Unix socket).
    pub fn url(&self, name: &str) -> String {
        url(&self.socket_dir, name)
    }

    /// Runs SQL in database `name`.
    pub fn execute(&self, name: &str, sql: &str) -> Result<(), String> {
        psql(&self.socket_dir, name, sql)
    }
}
