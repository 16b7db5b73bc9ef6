//! The command line: argument parsing and the subcommands that are also the contract the
//! other parts and the tests use (`init`, `keygen`, `mint`, `verify`).
//!
//! Exit codes: 0 success / accepted, 1 refused, 2 usage or setup error.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};

use crate::checkpoint::{Checked, Checkpoint};
use crate::clock::{Clock, FixedClock, SystemTimeSource, TrustedClock, VerifyTime};
use crate::code::{self, Claims};
use crate::keys::{self, Alg, KeyPair, Kid};
use crate::policy::{Scenes, Settings, Terminal, TrustState};
use crate::qr;
use crate::store::{Create, Store};
use crate::verdict::{AccessMode, CodeKind};

/// Exit code for a refused code.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code for usage and setup errors.
pub const EXIT_SETUP: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "yima-gate",
    version,
    about = "一码通办 edge scan-verification gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Provision a new terminal's state directory (no replay guard: nothing can have been used).
    Init {
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Generate a key pair: a private key file (mode 0600) and a trust file in the spec's JSON.
    Keygen {
        #[arg(long, value_enum)]
        alg: AlgArg,
        /// Key id (text, 1–16 bytes).
        #[arg(long)]
        kid: String,
        #[arg(long)]
        out: PathBuf,
        /// Start of validity (RFC 3339; default now).
        #[arg(long)]
        not_before: Option<String>,
        /// Days of validity.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
    /// Mint a code (platform side; for tests, audits and demos) and print its text.
    Mint(MintArgs),
    /// Verify one code (or a stream of codes with --stdin) and record it durably.
    Verify(VerifyArgs),
    /// Run the gate: capture → decode → verify → record → act, until SIGTERM or until every
    /// source has ended. Configuration errors exit 64.
    Run {
        #[arg(long, default_value = "/etc/yima-gate/gate.toml")]
        config: PathBuf,
    },
    /// Validate a gate configuration file: every problem with its key; exit 64 if any.
    CheckConfig { file: PathBuf },
    /// Read QR codes from image files: one JSON line per file with every text found and the
    /// decode time (the technician's "why does the gate not read this phone?").
    Decode {
        /// Look for several codes per image.
        #[arg(long)]
        multiple: bool,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Enroll this gate with the platform named in the config's `[platform]` section, using the
    /// one-time token the platform's operator issued for this terminal id.
    Enroll {
        #[arg(long, default_value = "/etc/yima-gate/gate.toml")]
        config: PathBuf,
        #[arg(long)]
        token: String,
    },
    /// One sync round now (pull the policy bundle, push waiting records) and print the result;
    /// for technicians while the daemon is stopped.
    Sync {
        #[arg(long, default_value = "/etc/yima-gate/gate.toml")]
        config: PathBuf,
    },
    /// Check this gate on site: config, camera, disk, keys, enrollment, API, clock, policy
    /// age, platform — one line each, OK / WARN / FAIL with the fix; exit 1 on any FAIL.
    Doctor {
        #[arg(long, default_value = "/etc/yima-gate/gate.toml")]
        config: PathBuf,
    },
    /// Run the reference platform: sync API over mutual TLS, admin API on loopback.
    Platform {
        /// Where the platform keeps its state (sled, CA, keys, admin token).
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8650")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value = "127.0.0.1:8651")]
        admin_listen: std::net::SocketAddr,
        /// Extra DNS names or addresses for the server certificate.
        #[arg(long)]
        hostname: Vec<String>,
    },
    /// The whole system on one machine: a reference platform, an enrolled gateway, gate frames
    /// of minted codes (valid, expired, replayed, lost static, suspended service), each
    /// verdict printed, ending with the platform's counts.
    Demo {
        /// Keep the state here instead of a temporary directory.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AlgArg {
    Ed25519,
    Es256,
    Sm2,
    Hmac,
}

impl From<AlgArg> for Alg {
    fn from(a: AlgArg) -> Alg {
        match a {
            AlgArg::Ed25519 => Alg::EdDSA,
            AlgArg::Es256 => Alg::ES256,
            AlgArg::Sm2 => Alg::SM2,
            AlgArg::Hmac => Alg::HMAC256,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    Dynamic,
    Static,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    Fused,
    Business,
    Independent,
}

#[derive(Debug, clap::Args)]
pub struct MintArgs {
    /// Private key file written by `keygen`.
    #[arg(long)]
    key: PathBuf,
    #[arg(long, value_enum)]
    kind: KindArg,
    /// Service / application code (应用编码).
    #[arg(long)]
    service: String,
    /// Scenes where the code is valid (repeat; none = every scene of the service).
    #[arg(long = "scene")]
    scenes: Vec<String>,
    /// Pseudonymous subject token (default: random). Never an ID number, phone or name.
    #[arg(long)]
    subject: Option<String>,
    /// Issue time (RFC 3339; default now).
    #[arg(long)]
    at: Option<String>,
    /// Lifetime in seconds (default: 60 for dynamic, 5 years for static).
    #[arg(long)]
    ttl: Option<i64>,
    #[arg(long, default_value = "HLJ-YMTB")]
    issuer: String,
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// Business codes carried by a fused code (repeat).
    #[arg(long = "biz")]
    business_codes: Vec<String>,
    /// Static codes: resource catalogue code.
    #[arg(long)]
    cat: Option<String>,
    /// Static codes: serial.
    #[arg(long)]
    sn: Option<String>,
    /// Static codes: version.
    #[arg(long)]
    ver: Option<u64>,
    /// Also write the code as a QR PNG.
    #[arg(long)]
    png: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Terminal state directory (replay tags and records).
    #[arg(long)]
    state_dir: PathBuf,
    /// Trust file (one spec JSON entry or an array of them).
    #[arg(long)]
    trust: PathBuf,
    /// Status file: static-code states and suspended services.
    #[arg(long)]
    status: Option<PathBuf>,
    /// Scenes this terminal serves (repeat; none = every scene).
    #[arg(long = "scene")]
    scenes: Vec<String>,
    /// Verify at this trusted time (RFC 3339) instead of the clock.
    #[arg(long)]
    at: Option<String>,
    /// Treat the system clock as trusted (GPS/PTP or otherwise disciplined).
    #[arg(long)]
    trust_system_clock: bool,
    /// Global refresh time of dynamic codes, seconds.
    #[arg(long, default_value_t = crate::policy::DEFAULT_REFRESH_S)]
    refresh: i64,
    /// Clock-skew tolerance, seconds (at most 30).
    #[arg(long, default_value_t = crate::policy::DEFAULT_SKEW_S)]
    skew: i64,
    /// Accept static codes missing from the status list.
    #[arg(long)]
    accept_unknown_static: bool,
    /// Read the code from an image file instead.
    #[arg(long, conflicts_with_all = ["code", "stdin"])]
    image: Option<PathBuf>,
    /// Read codes from standard input, one per line; print one JSON line each.
    #[arg(long, conflicts_with = "code")]
    stdin: bool,
    /// The code text.
    #[arg(required_unless_present_any = ["image", "stdin"])]
    code: Option<String>,
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_SETUP } else { 0 });
        }
    };
    init_logging();
    // Every HTTP client in the process (webhook, MJPEG camera, platform, doctor) uses rustls
    // with ring; installed before any is built.
    crate::tls::install_provider();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("yima-gate: {e:#}");
            ExitCode::from(EXIT_SETUP)
        }
    }
}

/// Under systemd (`JOURNAL_STREAM` set) logs go to journald over its native protocol —
/// priorities and structured fields (`journalctl -u yima-gate PRIORITY=3`, `REASON=expired`)
/// — falling back to stderr lines without timestamps (journald stamps them). Elsewhere: stderr.
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

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Init { state_dir } => {
            let store = Store::open(&state_dir, Create::Provision, now_ms())?;
            println!(
                "{}",
                serde_json::json!({
                    "state_dir": state_dir.display().to_string(),
                    "open_state": format!("{:?}", store.open_state()),
                    "next_seq": store.next_seq(),
                })
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen {
            alg,
            kid,
            out,
            not_before,
            days,
        } => keygen(alg.into(), &kid, &out, not_before.as_deref(), days),
        Command::Mint(args) => mint(args),
        Command::Verify(args) => verify(args),
        Command::Run { config } => match crate::daemon::run(config) {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) if e.downcast_ref::<crate::config::ConfigError>().is_some() => {
                eprintln!("{e}");
                Ok(ExitCode::from(crate::config::EXIT_CONFIG))
            }
            Err(e) => Err(e),
        },
        Command::CheckConfig { file } => Ok(match crate::config::Config::load(&file) {
            Ok(c) => {
                println!(
                    "{}: OK (terminal {}, {} source(s), state in {})",
                    file.display(),
                    c.terminal_id,
                    c.sources.len(),
                    c.state_dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(crate::config::EXIT_CONFIG)
            }
        }),
        Command::Decode { multiple, files } => decode_files(&files, multiple),
        Command::Demo { state_dir } => crate::demo::run(state_dir.as_deref()),
        Command::Enroll { config, token } => {
            let cfg = load_config(&config)?;
            let platform = cfg
                .platform
                .as_ref()
                .context("the config has no [platform] section")?;
            let e = crate::sync::enroll(&platform.url, &token, &cfg.terminal_id, &cfg.state_dir)?;
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
        Command::Sync { config } => sync_once(&config),
        Command::Doctor { config } => {
            let report = crate::doctor::run(&config);
            for f in &report {
                println!("{f}");
            }
            let worst = report.iter().map(|f| f.level).max();
            Ok(if worst == Some(crate::doctor::Level::Fail) {
                ExitCode::from(EXIT_REFUSED)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Platform {
            data,
            listen,
            admin_listen,
            hostname,
        } => {
            crate::platform::run(crate::platform::PlatformOptions {
                data,
                listen,
                admin_listen,
                hostnames: hostname,
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load_config(path: &Path) -> anyhow::Result<crate::config::Config> {
    crate::config::Config::load(path).map_err(anyhow::Error::from)
}

fn sync_once(config: &Path) -> anyhow::Result<ExitCode> {
    let cfg = load_config(config)?;
    crate::tls::install_provider();
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
            "backlog": checkpoint.store().backlog(),
            "keys": checkpoint.trust().keys.len(),
        })
    );
    Ok(if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_SETUP)
    })
}

fn now_ms() -> i64 {
    crate::clock::wall_clock_ms()
}

fn parse_at(s: &str) -> anyhow::Result<i64> {
    keys::parse_time(s, "--at").map_err(Into::into)
}

fn keygen(
    alg: Alg,
    kid: &str,
    out: &Path,
    not_before: Option<&str>,
    days: i64,
) -> anyhow::Result<ExitCode> {
    if !(1..=36500).contains(&days) {
        bail!("--days must be 1..=36500");
    }
    let kid = Kid::new(kid.as_bytes().to_vec())?;
    let nb = match not_before {
        Some(s) => parse_at(s)?,
        None => now_ms() / 1000,
    };
    let pair = KeyPair::generate(alg, kid, nb, nb + days * 86_400);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let name = sanitize(&String::from_utf8_lossy(pair.kid.as_bytes()));
    let key_path = out.join(format!("{name}.key.json"));
    let trust_path = out.join(format!("{name}.trust.json"));
    keys::write_file_mode(&key_path, pair.to_json().as_bytes(), 0o600)
        .with_context(|| format!("writing {}", key_path.display()))?;
    let entry = serde_json::to_string_pretty(&pair.trusted_key().to_entry())?;
    let trust_mode = if alg.is_mac() { 0o600 } else { 0o644 };
    keys::write_file_mode(&trust_path, entry.as_bytes(), trust_mode)
        .with_context(|| format!("writing {}", trust_path.display()))?;
    println!(
        "{}",
        serde_json::json!({
            "kid": pair.kid.to_hex(),
            "alg": alg.name(),
            "key": key_path.display().to_string(),
            "trust": trust_path.display().to_string(),
        })
    );
    Ok(ExitCode::SUCCESS)
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn mint(a: MintArgs) -> anyhow::Result<ExitCode> {
    let pair = KeyPair::load(&a.key)?;
    let kind = match a.kind {
        KindArg::Dynamic => CodeKind::Dynamic,
        KindArg::Static => CodeKind::Static,
    };
    if kind == CodeKind::Static && (a.cat.is_none() || a.sn.is_none()) {
        bail!("static codes need --cat and --sn");
    }
    let iat = match &a.at {
        Some(s) => parse_at(s)?,
        None => now_ms() / 1000,
    };
    let ttl = a.ttl.unwrap_or(match kind {
        CodeKind::Dynamic => crate::policy::DEFAULT_REFRESH_S,
        CodeKind::Static => 5 * 365 * 86_400,
    });
    let mut cti = vec![0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut cti);
    let sub = match &a.subject {
        Some(s) => s.as_bytes().to_vec(),
        None => {
            let mut s = vec![0u8; 16];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut s);
            s
        }
    };
    let claims = Claims {
        iss: a.issuer,
        sub,
        exp: iat + ttl,
        nbf: None,
        iat,
        cti,
        kind,
        service: a.service,
        scenes: (!a.scenes.is_empty()).then_some(a.scenes),
        mode: a.mode.map(|m| match m {
            ModeArg::Fused => AccessMode::Fused,
            ModeArg::Business => AccessMode::Business,
            ModeArg::Independent => AccessMode::Independent,
        }),
        business_codes: a.business_codes,
        catalogue: a.cat,
        serial: a.sn,
        version: a.ver,
    };
    let text = code::mint(&pair.signing, &pair.kid, &claims);
    if let Some(png) = &a.png {
        qr::write_png(&text, png)?;
    }
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn trust_state(a: &VerifyArgs) -> anyhow::Result<TrustState> {
    crate::policy::load_trust(
        Some(&a.trust),
        a.status.as_deref(),
        Terminal {
            authorized: true,
            scenes: if a.scenes.is_empty() {
                Scenes::Any
            } else {
                Scenes::Only(a.scenes.iter().cloned().collect())
            },
            accept_unknown_static: a.accept_unknown_static,
        },
        Settings::new(a.refresh, a.skew)?,
    )
}

fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let trust = trust_state(&a)?;
    let store = Store::open(&a.state_dir, Create::Guarded, now_ms())?;
    let clock: Arc<dyn Clock> = match &a.at {
        Some(s) => Arc::new(FixedClock(VerifyTime::trusted(parse_at(s)? * 1000))),
        None => Arc::new(TrustedClock::new(
            SystemTimeSource::new(a.trust_system_clock),
            store.clock_floor_ms(),
            a.skew * 1000,
        )),
    };
    let live = a.at.is_none();
    let checkpoint = Checkpoint::new(store, clock.clone(), trust);
    let check = |text: &str| -> anyhow::Result<Checked> {
        Ok(if live {
            checkpoint.check(text)?
        } else {
            checkpoint.check_at(text, clock.now())?
        })
    };
    let stdout = std::io::stdout();
    if a.stdin {
        let mut out = stdout.lock();
        for line in std::io::stdin().lock().lines() {
            let line = line.context("reading standard input")?;
            if line.trim().is_empty() {
                continue;
            }
            let checked = check(&line)?;
            writeln!(out, "{}", serde_json::to_string(&checked.report())?)?;
            out.flush()?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let text = match (&a.image, &a.code) {
        (Some(path), _) => {
            let img = qr::load_gray(path)?;
            let found = crate::decode::Decoder::default().decode(&img);
            match found.into_iter().next() {
                Some(d) => d.text,
                None => bail!("no QR code found in {}", path.display()),
            }
        }
        (None, Some(t)) => t.clone(),
        (None, None) => bail!("give a code, --image FILE or --stdin"),
    };
    let checked = check(&text)?;
    println!("{}", serde_json::to_string(&checked.report())?);
    Ok(if checked.accepted() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_REFUSED)
    })
}

fn decode_files(files: &[PathBuf], multiple: bool) -> anyhow::Result<ExitCode> {
    let decoder = crate::decode::Decoder::new(crate::decode::DecoderConfig {
        multiple,
        ..Default::default()
    });
    let mut out = std::io::stdout().lock();
    let mut all_read = true;
    for file in files {
        let line = match qr::load_gray(file) {
            Ok(img) => {
                let start = std::time::Instant::now();
                let found = decoder.decode(&img);
                let ms = start.elapsed().as_secs_f64() * 1000.0;
                all_read &= !found.is_empty();
                serde_json::json!({
                    "file": file.display().to_string(),
                    "texts": found.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(),
                    "ms": (ms * 1000.0).round() / 1000.0,
                    "width": img.width(),
                    "height": img.height(),
                    "engines": found.iter().map(|d| serde_json::json!({"engine": d.engine, "stage": d.stage})).collect::<Vec<_>>(),
                })
            }
            Err(e) => {
                all_read = false;
                serde_json::json!({ "file": file.display().to_string(), "texts": [], "error": e.to_string() })
            }
        };
        writeln!(out, "{line}")?;
    }
    Ok(if all_read {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_REFUSED)
    })
}
