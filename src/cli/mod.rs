//! The command line: arguments parsed by clap, every subcommand dispatched from one place, and
//! the exit codes below — the contract technicians' scripts and the systemd unit rely on.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success; the code was accepted (`verify`); every check passed (`doctor`) |
//! | 1 | a code was refused (`verify`); a check failed (`doctor`); an image held no code (`decode`) |
//! | 2 | usage: the arguments are wrong (`--help` says how) |
//! | 64 | configuration: the configuration, trust or status file is invalid (every problem listed) |
//! | 69 | runtime: something the command needs is unavailable (store, port, platform, device) |
//! | 70 | internal error: a pipeline stage panicked (a bug; the log has its message) |
//!
//! **Must not know:** how anything is done — each arm hands over to the module that does it.

pub mod decode;
pub mod doctor;
#[cfg(feature = "platform")]
pub mod mint;
pub mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Success; accepted; every check passed.
pub const EXIT_OK: u8 = 0;
/// A code was refused, a check failed, an image held no code.
pub const EXIT_REFUSED: u8 = 1;
/// The arguments are wrong.
pub const EXIT_USAGE: u8 = 2;
/// The configuration (or a trust or status file it names) is invalid.
pub const EXIT_CONFIG: u8 = 64;
/// Something the command needs is unavailable: the store, a port, the platform, a device.
pub const EXIT_RUNTIME: u8 = 69;
/// A pipeline stage panicked.
pub const EXIT_INTERNAL: u8 = 70;

/// The default configuration path (the package installs it there).
pub const DEFAULT_CONFIG: &str = "/etc/yima-gate/gate.toml";

#[derive(Debug, Parser)]
#[command(
    name = "yima-gate",
    version,
    about = "一码通办 edge scan-verification gateway: reads YM1 codes from cameras and scanners, verifies them locally, records every verification durably and syncs with the platform",
    after_help = "Exit codes: 0 success/accepted, 1 refused or a check failed, 2 usage, 64 configuration, 69 runtime, 70 internal error."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The `--config FILE` every gate command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// The gate's configuration file (TOML).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Provision a new terminal's state directory (no replay guard: nothing can have been used).
    Init {
        /// The state directory to create (the package uses /var/lib/yima-gate).
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
    },
    /// Run the gate: capture → decode → verify → record → act, until SIGTERM or until every
    /// source has ended.
    Run(ConfigArg),
    /// Validate a gate configuration: every problem with its key; exit 64 if any.
    CheckConfig {
        /// The configuration file (as a positional argument, or with --config).
        #[arg(value_name = "FILE", conflicts_with = "config")]
        file: Option<PathBuf>,
        /// The configuration file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Verify one code (or a stream of codes with --stdin) against local trust files and
    /// record it durably.
    Verify(verify::VerifyArgs),
    /// Read codes from image files: one JSON line per file with every text found and the
    /// decode time (the technician's "why does the gate not read this phone?").
    Decode(decode::DecodeArgs),
    /// Enroll this gate with the platform named in the config's `[platform]` section, using the
    /// one-time token the platform's operator issued for this terminal id.
    Enroll {
        #[command(flatten)]
        config: ConfigArg,
        /// The one-time enrollment token (`ymt1.…`) from the platform operator.
        #[arg(long, value_name = "TOKEN")]
        token: String,
    },
    /// One sync round now (pull the policy bundle, push waiting records) and print the result;
    /// for technicians while the daemon is stopped.
    Sync(ConfigArg),
    /// Check this gate on site: config, sources, relay, outputs, disk, keys, enrollment, file
    /// modes, API, clock, policy age, platform — one line each, OK / WARN / FAIL with the fix;
    /// exit 1 on any FAIL.
    Doctor(ConfigArg),
    /// Print the man page (roff), generated from these definitions (the package ships it).
    #[command(hide = true)]
    Manpage,
    /// Generate a key pair: a private key file (mode 0600) and a trust file in the spec's JSON.
    #[cfg(feature = "platform")]
    Keygen(mint::KeygenArgs),
    /// Mint a code (platform side; for tests, audits and demos) and print its text.
    #[cfg(feature = "platform")]
    Mint(mint::MintArgs),
    /// Run the reference platform: sync API over mutual TLS, admin API on loopback.
    #[cfg(feature = "platform")]
    Platform {
        /// Where the platform keeps its state (sled, CA, keys, admin token); created 0700.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Address of the sync API (mutual TLS).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8650")]
        listen: std::net::SocketAddr,
        /// Address of the admin API (plain HTTP: loopback only).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8651")]
        admin_listen: std::net::SocketAddr,
        /// Extra DNS names or addresses for the server certificate (repeat).
        #[arg(long, value_name = "NAME")]
        hostname: Vec<String>,
        /// Keep pushed records in PostgreSQL instead of the sled database under --data
        /// (`postgres://user@host/db` or `host=/run/postgresql dbname=…`).
        #[arg(long, value_name = "URL")]
        database: Option<String>,
        /// With --database: drop whole days of records older than this many days.
        #[arg(long, value_name = "DAYS", requires = "database")]
        retention_days: Option<u32>,
    },
    /// The whole system on one machine: a reference platform, an enrolled gateway, gate frames
    /// of minted codes (valid, expired, replayed, lost static, suspended service), each
    /// verdict printed, ending with the platform's counts.
    #[cfg(feature = "platform")]
    Demo {
        /// Keep the state here instead of a temporary directory.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Keep the platform's records in this PostgreSQL database (URL as for `platform`).
        #[arg(long, value_name = "URL")]
        database: Option<String>,
    },
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> ExitCode {
    // Whatever this process creates (stores, tokens, keys, sled's files) is private, whatever
    // umask it was started with.
    crate::files::restrict_umask();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    init_logging();
    // Every HTTP client in the process (webhook, MJPEG camera, platform, doctor) uses rustls
    // with ring; installed before any is built.
    crate::sync::tls::install_provider();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("yima-gate: {e:#}");
            ExitCode::from(exit_code_of(&e))
        }
    }
}

/// The exit code an error stands for: configuration problems are 64, everything else is a
/// runtime failure.
pub fn exit_code_of(e: &anyhow::Error) -> u8 {
    let config = e.chain().any(|c| {
        c.is::<crate::daemon::config::ConfigError>()
            || c.is::<crate::local_trust::LocalTrustError>()
    });
    if config {
        EXIT_CONFIG
    } else if e.chain().any(|c| c.is::<crate::daemon::StagePanicked>()) {
        EXIT_INTERNAL
    } else {
        EXIT_RUNTIME
    }
}

/// Under systemd (`JOURNAL_STREAM` set) logs go to journald over its native protocol —
/// priorities and structured fields (`journalctl -u yima-gate PRIORITY=3`, `REASON=expired`)
/// — falling back to stderr lines without timestamps (journald stamps them). Elsewhere: stderr.
/// The level comes from `YIMA_LOG` (default `warn`; the unit sets `info`).
fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("YIMA_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
    };
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journald) = tracing_journald::layer() {
            let _ = tracing_subscriber::registry()
                .with(filter())
                .with(journald.with_syslog_identifier("yima-gate".into()))
                .try_init();
            return;
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
}

/// Dispatches one command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Init { state_dir } => {
            let status = crate::checkpoint::provision(&state_dir)
                .with_context(|| format!("provisioning {}", state_dir.display()))?;
            println!(
                "{}",
                serde_json::json!({
                    "state_dir": state_dir.display().to_string(),
                    "open_state": status.open_state,
                    "next_seq": status.next_seq,
                })
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(a) => {
            crate::daemon::run(a.config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { file, config } => {
            let path = file
                .or(config)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
            let c = load_config(&path)?;
            println!(
                "{}: OK (terminal {}, {} source(s), state in {}, trust from {})",
                path.display(),
                c.terminal_id,
                c.sources.len(),
                c.state_dir.display(),
                match (&c.trust_file, &c.platform) {
                    (Some(f), _) => format!("{}", f.display()),
                    (None, Some(p)) => format!("platform bundles ({})", p.url),
                    (None, None) => "nowhere".into(),
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify(args) => verify::run(args),
        Command::Decode(args) => decode::run(args),
        Command::Enroll { config, token } => {
            let cfg = load_config(&config.config)?;
            let platform = cfg
                .platform
                .as_ref()
                .context("the config has no [platform] section")?;
            // An empty (or absent) state directory is a gate set up without the package (whose
            // install runs `init`): its store is provisioned as `init` does, so that the new
            // gate does not start behind a replay guard. A directory holding anything keeps its
            // history: a store missing there was lost, and keeps the guard.
            let fresh = match std::fs::read_dir(&cfg.state_dir) {
                Ok(mut entries) => entries.next().is_none(),
                Err(e) => e.kind() == std::io::ErrorKind::NotFound,
            };
            let e = crate::sync::enroll(&platform.url, &token, &cfg.terminal_id, &cfg.state_dir)?;
            if fresh {
                crate::checkpoint::provision(&cfg.state_dir)
                    .with_context(|| format!("provisioning {}", cfg.state_dir.display()))?;
            }
            println!(
                "{}",
                serde_json::json!({
                    "terminal_id": e.terminal_id,
                    "platform": e.platform_url,
                    "enrollment": cfg.state_dir.join(crate::sync::Enrollment::FILE).display().to_string(),
                })
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync(a) => sync_once(&a.config),
        Command::Manpage => {
            std::io::Write::write_all(&mut std::io::stdout(), &manpage()?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor(a) => {
            let report = doctor::run(&a.config);
            for f in &report {
                println!("{f}");
            }
            let worst = report.iter().map(|f| f.level).max();
            Ok(if worst == Some(doctor::Level::Fail) {
                ExitCode::from(EXIT_REFUSED)
            } else {
                ExitCode::SUCCESS
            })
        }
        #[cfg(feature = "platform")]
        Command::Keygen(args) => mint::keygen(args),
        #[cfg(feature = "platform")]
        Command::Mint(args) => mint::mint(args),
        #[cfg(feature = "platform")]
        Command::Platform {
            data,
            listen,
            admin_listen,
            hostname,
            database,
            retention_days,
        } => {
            let database = database.map(|url| {
                let mut o = crate::platform::records::pg_store::PgOptions::new(&url);
                o.retention_days = retention_days;
                o
            });
            crate::platform::run(crate::platform::PlatformOptions {
                data,
                listen,
                admin_listen,
                hostnames: hostname,
                database,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "platform")]
        Command::Demo {
            state_dir,
            database,
        } => crate::demo::run(state_dir.as_deref(), database.as_deref()),
    }
}

/// The man page: the main page, then one section per command with its synopsis, description
/// and options, and the exit-code table.
pub fn manpage() -> std::io::Result<Vec<u8>> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let mut out = Vec::new();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_subcommands_section(&mut out)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let page = clap_mangen::Man::new(
            sub.clone()
                .bin_name(format!("yima-gate {}", sub.get_name())),
        );
        let mut section = Vec::new();
        page.render_synopsis_section(&mut section)?;
        page.render_description_section(&mut section)?;
        page.render_options_section(&mut section)?;
        // Each command's sections become subsections of one COMMAND section.
        let text = String::from_utf8_lossy(&section).replace(".SH ", ".SS ");
        out.extend_from_slice(format!(".SH \"COMMAND {}\"\n", sub.get_name()).as_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    out.extend_from_slice(
        b".SH \"EXIT STATUS\"\n0 success, accepted, every check passed; 1 refused, a check failed, no code in an image; 2 usage; 64 configuration; 69 runtime (store, port, platform, device unavailable); 70 internal error (a pipeline stage panicked).\n.SH FILES\n/etc/yima-gate/gate.toml, /var/lib/yima-gate, /usr/share/doc/yima-gate/README.md\n",
    );
    man.render_version_section(&mut out)?;
    Ok(out)
}

fn load_config(path: &Path) -> anyhow::Result<crate::daemon::config::Config> {
    crate::daemon::config::Config::load(path).map_err(anyhow::Error::from)
}

/// `yima-gate sync`: one round, printed as JSON; exit 0 when both halves succeeded.
fn sync_once(config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = load_config(config)?;
    let enrollment = crate::sync::Enrollment::load(&cfg.state_dir)?
        .context("this gate is not enrolled: run `yima-gate enroll --token ...` first")?;
    let checkpoint = Arc::new(crate::daemon::checkpoint_from(&cfg)?);
    let syncer = crate::daemon::syncer_for(&cfg, checkpoint.clone(), enrollment)?;
    let result = syncer.round();
    let st = &syncer.status;
    println!(
        "{}",
        serde_json::json!({
            "ok": result.is_ok(),
            "error": result.as_ref().err().map(ToString::to_string),
            "bundle_issued_at_ms": st.bundle_issued_at_ms.load(std::sync::atomic::Ordering::Relaxed),
            "records_pushed": st.records_pushed.load(std::sync::atomic::Ordering::Relaxed),
            "backlog": checkpoint.status().backlog,
            "keys": checkpoint.trust().keys.len(),
        })
    );
    Ok(if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_RUNTIME)
    })
}

/// Parses an RFC 3339 time given on the command line to seconds since the epoch (a clap
/// value parser: a bad time is a usage error, exit 2).
pub(crate) fn parse_rfc3339(s: &str) -> Result<i64, String> {
    crate::verification::keys::parse_time(s, "time")
        .map_err(|_| format!("{s:?} is not an RFC 3339 time such as 2027-01-15T08:00:00Z"))
}
