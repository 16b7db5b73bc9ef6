//! The gate's configuration: TOML parsed once into a validated [`Config`]; every problem is
//! reported with the key it concerns, all at once, so a technician fixes a file in one pass.
//!
//! **Invariant:** nothing outside this module sees raw TOML; a `Config` that exists is valid.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::capture::camera::{CameraConfig, PixelFormat};
use crate::presentation::DEFAULT_HOLD_OFF_MS;
use crate::verification::trust::{DEFAULT_REFRESH_S, DEFAULT_SKEW_S, MAX_REFRESH_S, MAX_SKEW_S};

/// Exit code for a configuration error (sysexits EX_CONFIG is 78; the unit and the brief use
/// EX_USAGE, 64, for "the file you gave me is wrong").
pub const EXIT_CONFIG: u8 = 64;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key, e.g. `source[1].url`.
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a configuration was refused: every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} problem(s) in {path}:\n{}", problems.len(), problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub path: String,
    pub problems: Vec<ConfigProblem>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub terminal_id: String,
    pub scenes: BTreeSet<String>,
    pub accept_unknown_static: bool,
    pub state_dir: PathBuf,
    /// Local trust file; optional when the platform provides keys through bundles.
    pub trust_file: Option<PathBuf>,
    pub status_file: Option<PathBuf>,
    pub refresh_s: i64,
    pub skew_s: i64,
    pub trust_system_clock: bool,
    pub sources: Vec<SourceConfig>,
    pub hold_off_ms: i64,
    pub decode_budget_ms: u64,
    pub api_listen: SocketAddr,
    pub api_token_file: Option<PathBuf>,
    pub relay: Option<RelayConfig>,
    pub webhook: Option<WebhookSettings>,
    pub command: Option<crate::act::command::CommandConfig>,
    pub rules: Vec<crate::act::rules::Rule>,
    pub platform: Option<PlatformConfig>,
    pub serial: Option<crate::act::serial::SerialConfig>,
}

/// The central platform this gate syncs with (`[platform]`).
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformConfig {
    /// `https://host:port` of the platform's sync API (used by `yima-gate enroll`).
    pub url: String,
    /// Records per push.
    pub batch: usize,
    /// Waiting records at which the gate fails closed (`backlog_full`); 0 = no quota.
    pub max_backlog: u64,
    /// Longest wait for the platform's online decode before local verification decides.
    pub online_timeout_ms: u64,
    /// Overrides the platform's sync interval, seconds.
    pub interval_s: Option<u64>,
}

/// The business webhook (the secret is read from `secret_file`, mode 0600).
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookSettings {
    pub url: String,
    pub secret_file: PathBuf,
    pub timeout_ms: u64,
    pub retries: u32,
}

/// The gate relay.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayConfig {
    pub line: RelayLine,
    pub pulse_ms: u64,
}

/// Which relay drives the gate.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayLine {
    /// A GPIO line through the character device.
    Gpio {
        chip: PathBuf,
        line: u32,
        active_low: bool,
    },
    /// Commissioning without hardware: pulses are appended to a file.
    File { path: PathBuf },
}

/// Where codes come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    Camera(CameraConfig),
    Mjpeg {
        url: String,
    },
    Files {
        paths: Vec<PathBuf>,
    },
    ScannerSerial {
        device: PathBuf,
    },
    /// A TCP port that keeps listening; `allow` lists the peers that may connect (empty: any).
    ScannerTcp {
        listen: SocketAddr,
        allow: Vec<std::net::IpAddr>,
    },
    ScannerStdin,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    terminal: RawTerminal,
    #[serde(default)]
    trust: RawTrust,
    platform: Option<RawPlatform>,
    #[serde(default)]
    clock: RawClock,
    #[serde(default, rename = "source")]
    sources: Vec<RawSource>,
    #[serde(default)]
    decode: RawDecode,
    #[serde(default)]
    api: RawApi,
    relay: Option<RawRelay>,
    webhook: Option<RawWebhook>,
    command: Option<RawCommand>,
    serial: Option<RawSerial>,
    #[serde(default, rename = "rule")]
    rules: Vec<crate::act::rules::Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSerial {
    device: PathBuf,
    #[serde(default = "default_baud")]
    baud: u32,
    #[serde(default = "default_serial_format")]
    format: crate::act::serial::SerialFormat,
    #[serde(default = "default_serial_encoding")]
    encoding: crate::act::serial::SerialEncoding,
}

fn default_baud() -> u32 {
    9600
}
fn default_serial_format() -> crate::act::serial::SerialFormat {
    crate::act::serial::SerialFormat::Text
}
fn default_serial_encoding() -> crate::act::serial::SerialEncoding {
    crate::act::serial::SerialEncoding::Utf8
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    program: PathBuf,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default = "default_command_timeout")]
    timeout_ms: u64,
}

fn default_command_timeout() -> u64 {
    5000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    secret_file: PathBuf,
    #[serde(default = "default_webhook_timeout")]
    timeout_ms: u64,
    #[serde(default = "default_webhook_retries")]
    retries: u32,
}

fn default_webhook_timeout() -> u64 {
    2000
}
fn default_webhook_retries() -> u32 {
    3
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelay {
    chip: Option<PathBuf>,
    line: Option<u32>,
    #[serde(default)]
    active_low: bool,
    file: Option<PathBuf>,
    #[serde(default = "default_pulse")]
    pulse_ms: u64,
}

fn default_pulse() -> u64 {
    500
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTerminal {
    id: String,
    #[serde(default)]
    scenes: Vec<String>,
    #[serde(default)]
    accept_unknown_static: bool,
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
}

/// Where the package keeps the gate's state.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/yima-gate";
/// Where the local API listens unless configured.
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:8640";

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrust {
    keys: Option<PathBuf>,
    status: Option<PathBuf>,
    #[serde(default = "default_refresh")]
    refresh_s: i64,
}

impl Default for RawTrust {
    fn default() -> Self {
        RawTrust {
            keys: None,
            status: None,
            refresh_s: DEFAULT_REFRESH_S,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlatform {
    url: String,
    #[serde(default = "default_batch")]
    batch: usize,
    #[serde(default = "default_max_backlog")]
    max_backlog: u64,
    #[serde(default = "default_online_timeout")]
    online_timeout_ms: u64,
    interval_s: Option<u64>,
}

fn default_batch() -> usize {
    1000
}
fn default_max_backlog() -> u64 {
    2_000_000
}
fn default_online_timeout() -> u64 {
    300
}

fn default_refresh() -> i64 {
    DEFAULT_REFRESH_S
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClock {
    #[serde(default = "default_skew")]
    skew_s: i64,
    #[serde(default)]
    trust_system_clock: bool,
}

fn default_skew() -> i64 {
    DEFAULT_SKEW_S
}

impl Default for RawClock {
    fn default() -> Self {
        RawClock {
            skew_s: DEFAULT_SKEW_S,
            trust_system_clock: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
enum RawSource {
    Camera {
        #[serde(default)]
        device: CameraDevice,
        #[serde(default = "default_width")]
        width: u32,
        #[serde(default = "default_height")]
        height: u32,
        #[serde(default = "default_fps")]
        fps: u32,
        #[serde(default = "default_format")]
        format: PixelFormat,
    },
    Mjpeg {
        url: String,
    },
    Files {
        paths: Vec<PathBuf>,
    },
    Scanner {
        serial: Option<PathBuf>,
        tcp: Option<String>,
        #[serde(default)]
        allow: Vec<String>,
        #[serde(default)]
        stdin: bool,
    },
}

/// `device = 0` or `device = "/dev/video0"` (or a `/dev/v4l/by-id/…` link).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum CameraDevice {
    Index(u32),
    Path(PathBuf),
}

impl Default for CameraDevice {
    fn default() -> Self {
        CameraDevice::Index(0)
    }
}

fn default_width() -> u32 {
    1280
}
fn default_height() -> u32 {
    720
}
fn default_fps() -> u32 {
    30
}
fn default_format() -> PixelFormat {
    PixelFormat::Mjpeg
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDecode {
    #[serde(default = "default_hold_off")]
    hold_off_ms: i64,
    #[serde(default = "default_budget")]
    budget_ms: u64,
}

fn default_hold_off() -> i64 {
    DEFAULT_HOLD_OFF_MS
}
fn default_budget() -> u64 {
    8
}

impl Default for RawDecode {
    fn default() -> Self {
        RawDecode {
            hold_off_ms: DEFAULT_HOLD_OFF_MS,
            budget_ms: 10,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    #[serde(default = "default_listen")]
    listen: String,
    token_file: Option<PathBuf>,
}

fn default_listen() -> String {
    DEFAULT_API_LISTEN.into()
}

impl Default for RawApi {
    fn default() -> Self {
        RawApi {
            listen: default_listen(),
            token_file: None,
        }
    }
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.display().to_string(),
            problems: vec![ConfigProblem {
                key: "(file)".into(),
                message: e.to_string(),
            }],
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw: Raw = raw_config(text).map_err(|problems| ConfigError {
            path: origin.to_string(),
            problems,
        })?;
        let mut problems = Vec::new();
        let mut bad = |key: &str, message: String| {
            problems.push(ConfigProblem {
                key: key.to_string(),
                message,
            })
        };

        let id = raw.terminal.id.trim().to_string();
        if id.is_empty()
            || id.len() > 64
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bad(
                "terminal.id",
                "must be 1–64 characters of A–Z, a–z, 0–9, - _ .".into(),
            );
        }
        if raw.terminal.scenes.iter().any(|s| s.trim().is_empty()) {
            bad("terminal.scenes", "scene codes must not be empty".into());
        }
        if !raw.terminal.state_dir.is_absolute() {
            bad("terminal.state_dir", "must be an absolute path".into());
        }
        if !(1..=MAX_REFRESH_S).contains(&raw.trust.refresh_s) {
            bad(
                "trust.refresh_s",
                format!("must be 1..={MAX_REFRESH_S} seconds"),
            );
        }
        if !(0..=MAX_SKEW_S).contains(&raw.clock.skew_s) {
            bad(
                "clock.skew_s",
                format!("must be 0..={MAX_SKEW_S} seconds (the spec's limit)"),
            );
        }
        match (&raw.trust.keys, &raw.platform) {
            // With a platform, bundles bring the keys: a local trust file is optional (the
            // shipped example names one for the offline path; an enrolled gate needs none).
            (Some(keys), None) if !keys.exists() => bad(
                "trust.keys",
                format!(
                    "{} does not exist (put the platform's trust file there, or configure [platform] and enroll)",
                    keys.display()
                ),
            ),
            (None, None) => bad(
                "trust.keys",
                "required unless a [platform] provides keys through bundles".into(),
            ),
            _ => {}
        }
        let platform = raw.platform.map(|p| {
            if !p.url.starts_with("https://") {
                bad("platform.url", "must be an https:// URL".into());
            }
            if !(1..=crate::sync::wire::MAX_BATCH).contains(&p.batch) {
                bad(
                    "platform.batch",
                    format!("must be 1..={}", crate::sync::wire::MAX_BATCH),
                );
            }
            if !(10..=10_000).contains(&p.online_timeout_ms) {
                bad("platform.online_timeout_ms", "must be 10..=10000".into());
            }
            if p.interval_s.is_some_and(|i| !(1..=3600).contains(&i)) {
                bad("platform.interval_s", "must be 1..=3600".into());
            }
            PlatformConfig {
                url: p.url,
                batch: p.batch,
                max_backlog: p.max_backlog,
                online_timeout_ms: p.online_timeout_ms,
                interval_s: p.interval_s,
            }
        });
        if let Some(s) = &raw.trust.status {
            if !s.exists() {
                bad("trust.status", format!("{} does not exist", s.display()));
            }
        }
        if raw.sources.is_empty() {
            bad(
                "source",
                "at least one [[source]] is needed (camera, mjpeg, files or scanner)".into(),
            );
        }
        let mut sources = Vec::new();
        for (i, s) in raw.sources.into_iter().enumerate() {
            let key = |k: &str| format!("source[{i}].{k}");
            match s {
                RawSource::Camera {
                    device,
                    width,
                    height,
                    fps,
                    format,
                } => {
                    if !(160..=4096).contains(&width) || !(120..=4096).contains(&height) {
                        bad(
                            &key("width"),
                            "resolution must be within 160×120 .. 4096×4096".into(),
                        );
                    }
                    if !(1..=120).contains(&fps) {
                        bad(&key("fps"), "must be 1..=120".into());
                    }
                    let device = match device {
                        CameraDevice::Index(n) => PathBuf::from(format!("/dev/video{n}")),
                        CameraDevice::Path(p) => {
                            if !p.is_absolute() {
                                bad(
                                    &key("device"),
                                    "must be a number or an absolute path such as /dev/video0"
                                        .into(),
                                );
                            }
                            p
                        }
                    };
                    sources.push(SourceConfig::Camera(CameraConfig {
                        device,
                        width,
                        height,
                        fps,
                        format,
                    }));
                }
                RawSource::Mjpeg { url } => {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        bad(&key("url"), "must be an http:// or https:// URL".into());
                    }
                    sources.push(SourceConfig::Mjpeg { url });
                }
                RawSource::Files { paths } => {
                    if paths.is_empty() {
                        bad(
                            &key("paths"),
                            "must list at least one file or directory".into(),
                        );
                    }
                    sources.push(SourceConfig::Files { paths });
                }
                RawSource::Scanner {
                    serial,
                    tcp,
                    allow,
                    stdin,
                } => match (serial, tcp, stdin) {
                    (Some(device), None, false) => {
                        sources.push(SourceConfig::ScannerSerial { device })
                    }
                    (None, Some(addr), false) => {
                        let mut peers = Vec::new();
                        for (j, a) in allow.iter().enumerate() {
                            match a.parse::<std::net::IpAddr>() {
                                Ok(ip) => peers.push(ip),
                                Err(_) => bad(
                                    &key(&format!("allow[{j}]")),
                                    format!("{a:?} is not an IP address"),
                                ),
                            }
                        }
                        match addr.parse::<SocketAddr>() {
                            Ok(listen) => sources.push(SourceConfig::ScannerTcp {
                                listen,
                                allow: peers,
                            }),
                            Err(_) => bad(&key("tcp"), format!("{addr:?} is not an address:port")),
                        }
                    }
                    (None, None, true) => sources.push(SourceConfig::ScannerStdin),
                    _ => bad(
                        &key("kind"),
                        "a scanner needs exactly one of serial, tcp, stdin".into(),
                    ),
                },
            }
        }
        if !(0..=60_000).contains(&raw.decode.hold_off_ms) {
            bad("decode.hold_off_ms", "must be 0..=60000".into());
        }
        if !(1..=1000).contains(&raw.decode.budget_ms) {
            bad("decode.budget_ms", "must be 1..=1000".into());
        }
        let api_listen = match raw.api.listen.parse::<SocketAddr>() {
            Ok(a) => {
                if !a.ip().is_loopback() && raw.api.token_file.is_none() {
                    bad(
                        "api.token_file",
                        "required when api.listen is not a loopback address".into(),
                    );
                }
                a
            }
            Err(_) => {
                bad(
                    "api.listen",
                    format!("{:?} is not an address:port", raw.api.listen),
                );
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        };
        let relay = raw.relay.and_then(|r| {
            if !(10..=10_000).contains(&r.pulse_ms) {
                bad("relay.pulse_ms", "must be 10..=10000".into());
            }
            let line = match (r.chip, r.line, r.file) {
                (Some(chip), Some(line), None) => RelayLine::Gpio {
                    chip,
                    line,
                    active_low: r.active_low,
                },
                (None, None, Some(path)) => RelayLine::File { path },
                _ => {
                    bad(
                        "relay",
                        "give chip + line (GPIO) or file (commissioning), not both".into(),
                    );
                    return None;
                }
            };
            Some(RelayConfig {
                line,
                pulse_ms: r.pulse_ms,
            })
        });
        let webhook = raw.webhook.map(|w| {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                bad("webhook.url", "must be an http:// or https:// URL".into());
            }
            if !w.secret_file.exists() {
                bad(
                    "webhook.secret_file",
                    format!("{} does not exist", w.secret_file.display()),
                );
            }
            if !(100..=60_000).contains(&w.timeout_ms) {
                bad("webhook.timeout_ms", "must be 100..=60000".into());
            }
            if w.retries > 10 {
                bad("webhook.retries", "must be 0..=10".into());
            }
            WebhookSettings {
                url: w.url,
                secret_file: w.secret_file,
                timeout_ms: w.timeout_ms,
                retries: w.retries,
            }
        });
        let command = raw.command.map(|c| {
            if !c.program.is_absolute() {
                bad("command.program", "must be an absolute path".into());
            }
            if !(10..=600_000).contains(&c.timeout_ms) {
                bad("command.timeout_ms", "must be 10..=600000".into());
            }
            crate::act::command::CommandConfig {
                program: c.program,
                args: c.args,
                timeout: std::time::Duration::from_millis(c.timeout_ms),
            }
        });
        let serial = raw.serial.map(|s| {
            if !crate::act::serial::BAUDS.contains(&s.baud) {
                bad(
                    "serial.baud",
                    format!("must be one of {:?}", crate::act::serial::BAUDS),
                );
            }
            if !s.device.is_absolute() {
                bad("serial.device", "must be an absolute path".into());
            }
            crate::act::serial::SerialConfig {
                device: s.device,
                baud: s.baud,
                format: s.format,
                encoding: s.encoding,
            }
        });
        for (i, r) in raw.rules.iter().enumerate() {
            if r.actions.is_empty() {
                bad(
                    &format!("rule[{i}].actions"),
                    "must name at least one action".into(),
                );
            }
        }
        let rules = if raw.rules.is_empty() {
            crate::act::rules::Rule::default_set()
        } else {
            raw.rules
        };
        if !problems.is_empty() {
            return Err(ConfigError {
                path: origin.to_string(),
                problems,
            });
        }
        Ok(Config {
            terminal_id: id,
            scenes: raw.terminal.scenes.into_iter().collect(),
            accept_unknown_static: raw.terminal.accept_unknown_static,
            state_dir: raw.terminal.state_dir,
            trust_file: raw.trust.keys,
            status_file: raw.trust.status,
            refresh_s: raw.trust.refresh_s,
            skew_s: raw.clock.skew_s,
            trust_system_clock: raw.clock.trust_system_clock,
            sources,
            hold_off_ms: raw.decode.hold_off_ms,
            decode_budget_ms: raw.decode.budget_ms,
            platform,
            serial,
            api_listen,
            api_token_file: raw.api.token_file,
            relay,
            webhook,
            command,
            rules,
        })
    }
}

/// The raw configuration, or every problem of its shape at once: a syntax error (by line and
/// column), else each wrong type, unknown key or missing key by its key path
/// (`clock.skew_s: expected an integer, found a string`). After each problem the offending
/// key is set aside and the rest checked again, so one pass reports them all.
fn raw_config(text: &str) -> Result<Raw, Vec<ConfigProblem>> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| vec![toml_problem(&e, text)])?;
    let mut problems = Vec::new();
    // Bounded: each round removes one key (a file has far fewer wrong keys than this).
    for _ in 0..64 {
        let value = toml::Value::Table(table.clone());
        match serde_path_to_error::deserialize::<_, Raw>(value) {
            Ok(raw) if problems.is_empty() => return Ok(raw),
            Ok(_) => return Err(problems),
            Err(e) => {
                let path: Vec<String> = e
                    .path()
                    .iter()
                    .map(|s| match s {
                        serde_path_to_error::Segment::Seq { index } => format!("[{index}]"),
                        serde_path_to_error::Segment::Map { key } => key.clone(),
                        serde_path_to_error::Segment::Enum { variant } => variant.clone(),
                        serde_path_to_error::Segment::Unknown => "?".into(),
                    })
                    .collect();
                // toml appends "in `key`" lines: the key is named in front already.
                let text = e.inner().to_string();
                let text = text
                    .split("\nin `")
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                let message = humanize(&text);
                // An unknown key reported at its container: name the key itself.
                let mut key_path = path.clone();
                if let Some(unknown) = backticked(&message, "unknown field `") {
                    if key_path.last() != Some(&unknown) {
                        key_path.push(unknown);
                    }
                }
                let key = dotted(&key_path);
                problems.push(ConfigProblem {
                    key: if key.is_empty() { "(file)".into() } else { key },
                    message,
                });
                if !remove_key(&mut table, &key_path) {
                    return Err(problems);
                }
            }
        }
    }
    Err(problems)
}

/// `a`, `[1]`, `b` → `a[1].b`.
fn dotted(path: &[String]) -> String {
    let mut out = String::new();
    for p in path {
        if !p.starts_with('[') && !out.is_empty() {
            out.push('.');
        }
        out.push_str(p);
    }
    out
}

fn backticked(message: &str, after: &str) -> Option<String> {
    let start = message.find(after)? + after.len();
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// Removes the key at `path` from `table`; false when there is nothing to remove (a missing
/// key: its parent is reported, nothing more can be checked below it).
fn remove_key(table: &mut toml::Table, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut value: &mut toml::Value = match parents.first() {
        Some(first) => match table.get_mut(first) {
            Some(v) => v,
            None => return false,
        },
        None => return table.remove(last).is_some(),
    };
    for p in &parents[1..] {
        let next = match (p.strip_prefix('[').and_then(|s| s.strip_suffix(']')), value) {
            (Some(i), toml::Value::Array(a)) => i.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            (None, toml::Value::Table(t)) => t.get_mut(p),
            _ => None,
        };
        match next {
            Some(v) => value = v,
            None => return false,
        }
    }
    match (
        last.strip_prefix('[').and_then(|s| s.strip_suffix(']')),
        value,
    ) {
        (Some(i), toml::Value::Array(a)) => match i.parse::<usize>() {
            Ok(i) if i < a.len() => {
                a.remove(i);
                true
            }
            _ => false,
        },
        (None, toml::Value::Table(t)) => t.remove(last).is_some(),
        _ => false,
    }
}

/// serde's type errors in a technician's words: `invalid type: string "x", expected i64` →
/// `expected an integer, found a string ("x")`.
fn humanize(message: &str) -> String {
    let Some(rest) = message.strip_prefix("invalid type: ") else {
        return message.to_string();
    };
    let Some((found, expected)) = rest.split_once(", expected ") else {
        return message.to_string();
    };
    let kind = |t: &str| -> String {
        let t = t.trim();
        if [
            "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "usize", "isize",
        ]
        .iter()
        .any(|n| t == *n || t.starts_with(&format!("{n} ")))
            || t.contains("integer")
        {
            "an integer".into()
        } else if t == "a boolean" || t == "bool" {
            "true or false".into()
        } else {
            t.to_string()
        }
    };
    let (found_kind, found_value) = match found.split_once(' ') {
        Some((k, v)) => (k, Some(v)),
        None => (found, None),
    };
    let found_kind = match found_kind {
        "string" => "a string",
        "integer" => "an integer",
        "floating" => "a number with a fraction",
        "boolean" => "true or false",
        "sequence" => "a list",
        "map" => "a table",
        other => other,
    };
    match found_value {
        Some(v) if !v.starts_with("point") => {
            format!("expected {}, found {found_kind} ({v})", kind(expected))
        }
        _ => format!("expected {}, found {found_kind}", kind(expected)),
    }
}

/// A TOML syntax error as a problem located by line and column.
fn toml_problem(e: &toml::de::Error, text: &str) -> ConfigProblem {
    let message = e.message().trim().to_string();
    let key = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {col}")
        }
        None => "(file)".into(),
    };
    ConfigProblem { key, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_keys(body: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("tmp");
        let keys = dir.path().join("trust.json");
        std::fs::write(&keys, "[]").expect("write");
        let text = body.replace("KEYS", &keys.display().to_string());
        (dir, text)
    }

    #[test]
    fn a_complete_file_parses_with_defaults() {
        let (_d, text) = with_keys(
            r#"
            [terminal]
            id = "GATE-0001"
            scenes = ["GATE-1"]
            [trust]
            keys = "KEYS"
            [[source]]
            kind = "camera"
            [[source]]
            kind = "scanner"
            tcp = "127.0.0.1:9100"
            "#,
        );
        let c = Config::parse(&text, "t").expect("valid");
        assert_eq!(c.terminal_id, "GATE-0001");
        assert_eq!(c.refresh_s, 60);
        assert_eq!(c.skew_s, 5);
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/yima-gate"));
        assert_eq!(c.sources.len(), 2);
        assert!(matches!(
            c.sources[0],
            SourceConfig::Camera(CameraConfig {
                width: 1280,
                height: 720,
                ..
            })
        ));
        assert!(c.api_listen.ip().is_loopback());
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let (_d, text) = with_keys(
            r#"
            [terminal]
            id = "bad id!"
            state_dir = "relative"
            [trust]
            keys = "/nonexistent/trust.json"
            refresh_s = 0
            [clock]
            skew_s = 31
            [[source]]
            kind = "mjpeg"
            url = "rtsp://cam"
            [[source]]
            kind = "scanner"
            serial = "/dev/ttyUSB0"
            stdin = true
            [api]
            listen = "0.0.0.0:8640"
            "#,
        );
        let err = Config::parse(&text, "gate.toml").expect_err("invalid");
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "terminal.id",
            "terminal.state_dir",
            "trust.refresh_s",
            "clock.skew_s",
            "trust.keys",
            "source[0].url",
            "source[1].kind",
            "api.token_file",
        ] {
            assert!(keys.contains(&k), "missing {k} in {keys:?}");
        }
        assert!(err.to_string().contains("gate.toml"));
    }

    #[test]
    fn unknown_keys_and_bad_types_are_refused_by_key_path_all_at_once() {
        let (_d, text) = with_keys(
            "[terminal]\nid = \"G\"\ncolour = \"red\"\n[trust]\nkeys = \"KEYS\"\n[clock]\nskew_s = \"five\"\n\
             [decode]\nbudget_ms = true\n[[source]]\nkind = \"scanner\"\nstdin = true\n[[source]]\nkind = \"camera\"\nfps = \"30\"\n",
        );
        let err = Config::parse(&text, "t").expect_err("unknown key");
        let got: Vec<String> = err.problems.iter().map(|p| p.to_string()).collect();
        let want = [
            "terminal.colour: unknown field `colour`",
            "clock.skew_s: expected an integer, found a string (\"five\")",
            "decode.budget_ms: expected an integer, found true or false",
            "terminal.colour: unknown field `colour`, expected one of",
            "source[1]",
        ];
        for w in want {
            assert!(got.iter().any(|g| g.starts_with(w)), "no {w:?} in {got:#?}");
        }
        let err = Config::parse("[terminal]\nid = 5\n", "t").expect_err("type");
        assert!(err.problems[0].key.starts_with("terminal.id"), "{err}");
        let err = Config::parse("not toml [", "t").expect_err("syntax");
        assert!(err.problems[0].key.starts_with("line 1"), "{err}");
    }

    #[test]
    fn a_camera_is_a_number_or_a_device_path() {
        let (_d, text) = with_keys(
            "[terminal]\nid = \"G\"\n[trust]\nkeys = \"KEYS\"\n[[source]]\nkind = \"camera\"\ndevice = 2\n\
             [[source]]\nkind = \"camera\"\ndevice = \"/dev/v4l/by-id/usb-cam-video-index0\"\n",
        );
        let c = Config::parse(&text, "t").expect("valid");
        let devices: Vec<String> = c
            .sources
            .iter()
            .map(|s| match s {
                SourceConfig::Camera(c) => c.device.display().to_string(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(
            devices,
            ["/dev/video2", "/dev/v4l/by-id/usb-cam-video-index0"]
        );
    }

    #[test]
    fn an_enrolling_gate_needs_no_trust_file() {
        let text = "[terminal]\nid = \"G\"\n[trust]\nkeys = \"/nonexistent/trust.json\"\n\
                    [platform]\nurl = \"https://platform:8650\"\n[[source]]\nkind = \"scanner\"\nstdin = true\n";
        assert!(Config::parse(text, "t").is_ok());
        let offline = text.replace("[platform]\nurl = \"https://platform:8650\"\n", "");
        let err = Config::parse(&offline, "t").expect_err("no trust file, no platform");
        assert_eq!(err.problems[0].key, "trust.keys");
    }
}
