//! `yima-gate doctor`: the technician's checklist on site — configuration, camera, clock, keys
//! and status list, platform, disk, local API — one line each, OK / WARN / FAIL with the fix.
//! Reads only; safe to run while the service runs.

use std::path::Path;
use std::time::Duration;

use crate::daemon::config::{Config, SourceConfig};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Finding {
    pub level: Level,
    pub check: &'static str,
    pub detail: String,
    /// What to do about it (empty for OK).
    pub fix: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tag = match self.level {
            Level::Ok => "OK  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        write!(f, "{tag} {:<10} {}", self.check, self.detail)?;
        if !self.fix.is_empty() {
            write!(f, "\n     → {}", self.fix)?;
        }
        Ok(())
    }
}

fn finding(level: Level, check: &'static str, detail: String, fix: &str) -> Finding {
    Finding {
        level,
        check,
        detail,
        fix: fix.to_string(),
    }
}

/// Free bytes under `path`'s file system below which the gate is in trouble.
const DISK_FAIL: u64 = 100 * 1024 * 1024;
const DISK_WARN: u64 = 1024 * 1024 * 1024;

/// Runs every check for the configuration at `config_path`. A check that fails never stops
/// the others: with a configuration that does not load, the checks that need nothing from it
/// (disk, local API, clock) run on the package's defaults.
pub fn run(config_path: &Path) -> Vec<Finding> {
    let mut out = Vec::new();
    let user = ServiceUser::lookup();
    let cfg = match Config::load(config_path) {
        Ok(c) => {
            out.push(finding(
                Level::Ok,
                "config",
                format!("{} (terminal {})", config_path.display(), c.terminal_id),
                "",
            ));
            Some(c)
        }
        Err(e) => {
            out.push(finding(
                Level::Fail,
                "config",
                e.to_string(),
                &format!(
                    "fix the keys named above, then `yima-gate check-config --config {}`",
                    config_path.display()
                ),
            ));
            None
        }
    };
    if let Some(u) = &user {
        readable_by_service(u, config_path, "config", &mut out);
    }
    let Some(cfg) = cfg else {
        disk(
            Path::new(crate::daemon::config::DEFAULT_STATE_DIR),
            &mut out,
        );
        let _ = api_at(
            &format!("http://{}", crate::daemon::config::DEFAULT_API_LISTEN),
            &Path::new(crate::daemon::config::DEFAULT_STATE_DIR).join("api.token"),
            &mut out,
        );
        clock_check(false, None, &mut out);
        return out;
    };
    cameras(&cfg, &mut out);
    disk(&cfg.state_dir, &mut out);
    let status = api(&cfg, &mut out);
    trust(&cfg, status.as_ref(), &mut out);
    relay(&cfg, status.as_ref(), &mut out);
    outputs(&cfg, &mut out);
    match &user {
        Some(u) => modes(&cfg, u, &mut out),
        None => out.push(finding(
            Level::Warn,
            "files",
            "no `yima-gate` system user: not installed from the package".into(),
            "install the .deb (it creates the user and /var/lib/yima-gate)",
        )),
    }
    clock_check(cfg.trust_system_clock, status.as_ref(), &mut out);
    platform(&cfg, status.as_ref(), &mut out);
    out
}

/// The service user and its groups, from the system's account files.
#[derive(Debug)]
struct ServiceUser {
    uid: u32,
    gids: Vec<u32>,
}

impl ServiceUser {
    const NAME: &'static str = "yima-gate";

    fn lookup() -> Option<ServiceUser> {
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        let (uid, gid) = passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == Self::NAME)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })?;
        let mut gids = vec![gid];
        if let Ok(groups) = std::fs::read_to_string("/etc/group") {
            for l in groups.lines() {
                let f: Vec<&str> = l.split(':').collect();
                if f.len() > 3 && f[3].split(',').any(|m| m == Self::NAME) {
                    if let Ok(g) = f[2].parse() {
                        gids.push(g);
                    }
                }
            }
        }
        Some(ServiceUser { uid, gids })
    }

    fn can(&self, meta: &std::fs::Metadata, bits: u32) -> bool {
        use std::os::unix::fs::MetadataExt;
        let mode = meta.mode();
        (meta.uid() == self.uid && mode & (bits << 6) != 0)
            || (self.gids.contains(&meta.gid()) && mode & (bits << 3) != 0)
            || mode & bits != 0
    }
}

fn readable_by_service(
    user: &ServiceUser,
    path: &Path,
    check: &'static str,
    out: &mut Vec<Finding>,
) {
    if let Ok(meta) = std::fs::metadata(path) {
        if !user.can(&meta, 0o4) {
            out.push(finding(
                Level::Fail,
                check,
                format!(
                    "{} is not readable by the service user yima-gate",
                    path.display()
                ),
                &format!("chgrp yima-gate {p} && chmod 0640 {p}", p = path.display()),
            ));
        }
    }
}

fn cameras(cfg: &Config, out: &mut Vec<Finding>) {
    for s in &cfg.sources {
        if let SourceConfig::Camera(c) = s {
            let dev = c.device.display().to_string();
            match std::fs::File::open(&dev) {
                Ok(_) => out.push(finding(
                    Level::Ok,
                    "camera",
                    format!(
                        "{dev} present and readable ({}×{} requested)",
                        c.width, c.height
                    ),
                    "",
                )),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => out.push(finding(
                    Level::Fail,
                    "camera",
                    format!("{dev}: permission denied"),
                    "adduser yima-gate video && systemctl restart yima-gate",
                )),
                Err(e) => out.push(finding(
                    Level::Fail,
                    "camera",
                    format!("{dev}: {e}"),
                    "check the cable/CSI ribbon and `ls /dev/video*`; set [[source]] device",
                )),
            }
        }
    }
}

fn disk(state_dir: &Path, out: &mut Vec<Finding>) {
    let probe = if state_dir.exists() {
        state_dir
    } else {
        state_dir.parent().unwrap_or(Path::new("/"))
    };
    match rustix::fs::statvfs(probe) {
        Ok(v) => {
            let free = v.f_bavail.saturating_mul(v.f_frsize);
            let mb = free / (1024 * 1024);
            let (level, fix) = if free < DISK_FAIL {
                (
                    Level::Fail,
                    "free space: records wait here while the platform is away",
                )
            } else if free < DISK_WARN {
                (
                    Level::Warn,
                    "less than 1 GiB free; check what else writes to this disk",
                )
            } else {
                (Level::Ok, "")
            };
            out.push(finding(
                level,
                "disk",
                format!("{} MiB free under {}", mb, probe.display()),
                fix,
            ));
        }
        Err(e) => out.push(finding(
            Level::Fail,
            "disk",
            format!("{}: {e}", probe.display()),
            "create the state directory (the package makes /var/lib/yima-gate)",
        )),
    }
}

/// The keys in force (from the running gate when it answers, else from the trust file) and
/// the enrollment. No key is a FAIL: every code would be refused.
fn trust(cfg: &Config, status: Option<&serde_json::Value>, out: &mut Vec<Finding>) {
    let fix_keys = if cfg.platform.is_some() {
        "the platform's bundle has no key for this terminal: ask the operator to create one (admin API /admin/v1/keys), then `yima-gate sync --config FILE` or wait for the next sync"
    } else {
        "install the platform's trust file: install -m 0640 -o root -g yima-gate trust.json /etc/yima-gate/trust.json"
    };
    match status.and_then(|s| s["trust"]["keys"].as_u64()) {
        Some(0) => out.push(finding(
            Level::Fail,
            "keys",
            format!(
                "the gate holds no key ({}): every code is refused",
                status
                    .and_then(|s| s["trust"]["source"].as_str())
                    .unwrap_or("?")
            ),
            fix_keys,
        )),
        Some(n) => out.push(finding(
            Level::Ok,
            "keys",
            format!("{n} key(s) in force"),
            "",
        )),
        None => {
            if let Some(path) = cfg
                .trust_file
                .as_ref()
                .filter(|p| p.exists() || cfg.platform.is_none())
            {
                match crate::local_trust::load_key_ring(path) {
                    Ok(r) if r.is_empty() => out.push(finding(
                        Level::Fail,
                        "keys",
                        format!(
                            "{} holds no key: every code would be refused",
                            path.display()
                        ),
                        fix_keys,
                    )),
                    Ok(r) => out.push(finding(
                        Level::Ok,
                        "keys",
                        format!("{} key(s) in {}", r.len(), path.display()),
                        "",
                    )),
                    Err(e) => out.push(finding(Level::Fail, "keys", e.to_string(), fix_keys)),
                }
            } else if cfg.platform.is_some() {
                out.push(finding(
                    Level::Warn,
                    "keys",
                    "the keys come in platform bundles; the service is not running to count them"
                        .into(),
                    "systemctl start yima-gate, then run doctor again",
                ));
            }
        }
    }
    if cfg.platform.is_some() {
        match crate::sync::Enrollment::load(&cfg.state_dir) {
            Ok(Some(e)) => out.push(finding(
                Level::Ok,
                "enrolled",
                format!("as {} with {}", e.terminal_id, e.platform_url),
                "",
            )),
            Ok(None) => out.push(finding(
                Level::Fail,
                "enrolled",
                "not enrolled with the platform".into(),
                "ask the platform operator for a token, then: yima-gate enroll --config /etc/yima-gate/gate.toml --token ymt1.…",
            )),
            Err(e) => out.push(finding(
                Level::Fail,
                "enrolled",
                e.to_string(),
                "re-enroll with a new token from the operator (yima-gate enroll …)",
            )),
        }
    }
}

/// The gate relay: configured, present, claimable (or held by the running gate) and, when
/// the gate runs, driven without failure.
fn relay(cfg: &Config, status: Option<&serde_json::Value>, out: &mut Vec<Finding>) {
    use crate::daemon::config::RelayLine;
    let Some(r) = &cfg.relay else {
        out.push(finding(
            Level::Warn,
            "relay",
            "no [relay]: an accepted code opens nothing".into(),
            "for a gate, add [relay] chip = \"/dev/gpiochipN\" and line = N (list them with `gpioinfo`)",
        ));
        return;
    };
    if let Some(rs) = status.map(|s| &s["relay"]).filter(|r| r.is_object()) {
        if rs["up"].as_bool() == Some(false) {
            out.push(finding(
                Level::Fail,
                "relay",
                format!(
                    "{} cannot be driven: {}",
                    rs["relay"].as_str().unwrap_or("?"),
                    rs["last_error"].as_str().unwrap_or("?")
                ),
                "check the wiring and the line number; journalctl -u yima-gate -p err",
            ));
            return;
        }
    }
    match &r.line {
        RelayLine::File { path } => {
            let dir = path.parent().unwrap_or(Path::new("/"));
            let level = if dir.is_dir() { Level::Warn } else { Level::Fail };
            out.push(finding(
                level,
                "relay",
                format!("commissioning double: openings go to {}, no gate opens", path.display()),
                "for a gate, replace `file` with chip + line",
            ));
        }
        RelayLine::Gpio { chip, line, .. } => match gpio_line(chip, *line) {
            Ok(state) => out.push(finding(Level::Ok, "relay", state, "")),
            Err(e) => out.push(finding(
                Level::Fail,
                "relay",
                e,
                "list the chips and lines with `gpiodetect` / `gpioinfo` (package gpiod) and set [relay] chip and line",
            )),
        },
    }
}

/// A GPIO line's state: present and free (claimed and released again to prove it), or held by
/// the running gate; an error for a missing chip or line, or one another program holds.
fn gpio_line(chip: &Path, line: u32) -> Result<String, String> {
    let c =
        gpiocdev::chip::Chip::from_path(chip).map_err(|e| format!("{}: {e}", chip.display()))?;
    let info = c
        .line_info(line)
        .map_err(|e| format!("{}: line {line}: {e}", chip.display()))?;
    if info.used {
        return if info.consumer == "yima-gate" {
            Ok(format!(
                "{}:{line} held by the running gate",
                chip.display()
            ))
        } else {
            Err(format!(
                "{}:{line} is held by {:?}",
                chip.display(),
                info.consumer
            ))
        };
    }
    gpiocdev::Request::builder()
        .on_chip(chip)
        .with_consumer("yima-gate-doctor")
        .with_line(line)
        .as_input()
        .request()
        .map(|_| format!("{}:{line} present and claimable", chip.display()))
        .map_err(|e| format!("{}:{line}: {e}", chip.display()))
}

/// The webhook and serial outputs' settings.
fn outputs(cfg: &Config, out: &mut Vec<Finding>) {
    if let Some(w) = &cfg.webhook {
        match crate::files::read_secret(&w.secret_file) {
            Err(e) => out.push(finding(
                Level::Fail,
                "webhook",
                e.to_string(),
                &format!(
                    "chown root:yima-gate {p} && chmod 0640 {p}",
                    p = w.secret_file.display()
                ),
            )),
            Ok(s) if s.is_empty() => out.push(finding(
                Level::Fail,
                "webhook",
                format!("{} is empty", w.secret_file.display()),
                "put the shared secret the business system verifies signatures with in it",
            )),
            Ok(_) => match reachable(&w.url) {
                Ok(addr) => out.push(finding(
                    Level::Ok,
                    "webhook",
                    format!("{} reachable ({addr})", w.url),
                    "",
                )),
                Err(e) => out.push(finding(
                    Level::Warn,
                    "webhook",
                    format!("{}: {e}", w.url),
                    "verdicts are retried, then dropped: start the business system or fix [webhook] url",
                )),
            },
        }
    }
    if let Some(s) = &cfg.serial {
        use std::os::unix::fs::FileTypeExt;
        match std::fs::metadata(&s.device) {
            Ok(m) if m.file_type().is_char_device() => out.push(finding(
                Level::Ok,
                "serial",
                format!(
                    "{} present, {} baud, {:?} {:?}",
                    s.device.display(),
                    s.baud,
                    s.format,
                    s.encoding
                ),
                "",
            )),
            Ok(_) => out.push(finding(
                Level::Fail,
                "serial",
                format!("{} is not a character device", s.device.display()),
                "set [serial] device to the display's /dev/ttyUSBn or /dev/ttySn",
            )),
            Err(e) => out.push(finding(
                Level::Fail,
                "serial",
                format!("{}: {e}", s.device.display()),
                "plug in the display's serial adapter; `ls -l /dev/ttyUSB* /dev/ttyS*`",
            )),
        }
    }
}

/// Host and port of an http(s) URL answer a TCP connection within 2 s.
fn reachable(url: &str) -> Result<std::net::SocketAddr, String> {
    let rest = url
        .strip_prefix("https://")
        .map(|r| (r, 443))
        .or_else(|| url.strip_prefix("http://").map(|r| (r, 80)))
        .ok_or("not an http(s) URL")?;
    let authority = rest.0.split('/').next().unwrap_or_default();
    let hostport = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:{}", rest.1)
    };
    use std::net::ToSocketAddrs;
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map(|_| addr)
        .map_err(|e| e.to_string())
}

/// Ownership and modes of the state directory and of every secret, for the service user.
fn modes(cfg: &Config, user: &ServiceUser, out: &mut Vec<Finding>) {
    use std::os::unix::fs::MetadataExt;
    let mut problems = Vec::new();
    let state = &cfg.state_dir;
    match std::fs::metadata(state) {
        Ok(m) => {
            if m.uid() != user.uid || m.mode() & 0o077 != 0 {
                problems.push((
                    format!("{} is {:o} uid {}", state.display(), m.mode() & 0o777, m.uid()),
                    format!("chown -R yima-gate:yima-gate {p} && chmod 0700 {p}", p = state.display()),
                ));
            }
        }
        Err(e) => problems.push((
            format!("{}: {e}", state.display()),
            format!("install -d -o yima-gate -g yima-gate -m 0700 {p} && runuser -u yima-gate -- yima-gate init --state-dir {p}", p = state.display()),
        )),
    }
    let mut secrets = vec![
        state.join(crate::sync::Enrollment::FILE),
        cfg.api_token_file
            .clone()
            .unwrap_or_else(|| state.join("api.token")),
    ];
    secrets.extend(cfg.webhook.as_ref().map(|w| w.secret_file.clone()));
    for p in secrets.iter().filter(|p| p.exists()) {
        let Ok(m) = std::fs::metadata(p) else {
            continue;
        };
        if m.mode() & 0o007 != 0 || !user.can(&m, 0o4) {
            problems.push((
                format!(
                    "{} is {:o} uid {} gid {}",
                    p.display(),
                    m.mode() & 0o777,
                    m.uid(),
                    m.gid()
                ),
                format!(
                    "chown yima-gate:yima-gate {p} && chmod 0600 {p}",
                    p = p.display()
                ),
            ));
        }
    }
    if let Some(t) = cfg.trust_file.as_ref().filter(|t| t.exists()) {
        if let Ok(m) = std::fs::metadata(t) {
            if !user.can(&m, 0o4) {
                problems.push((
                    format!("{} is not readable by yima-gate", t.display()),
                    format!(
                        "chown root:yima-gate {p} && chmod 0640 {p}",
                        p = t.display()
                    ),
                ));
            }
        }
    }
    if problems.is_empty() {
        out.push(finding(
            Level::Ok,
            "files",
            format!("{} and its secrets private to yima-gate", state.display()),
            "",
        ));
    }
    for (detail, fix) in problems {
        out.push(finding(Level::Fail, "files", detail, &fix));
    }
}

/// The running daemon's status, if its API answers.
fn api(cfg: &Config, out: &mut Vec<Finding>) -> Option<serde_json::Value> {
    let token = cfg
        .api_token_file
        .clone()
        .unwrap_or_else(|| cfg.state_dir.join("api.token"));
    api_at(&format!("http://{}", cfg.api_listen), &token, out)
}

fn api_at(base: &str, token: &Path, out: &mut Vec<Finding>) -> Option<serde_json::Value> {
    crate::sync::tls::install_provider();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .ok()?;
    match http.get(format!("{base}/healthz")).send() {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => {
            out.push(finding(
                Level::Fail,
                "api",
                format!("{base}/healthz answered {}", r.status()),
                "journalctl -u yima-gate",
            ));
            return None;
        }
        Err(_) => {
            out.push(finding(
                Level::Fail,
                "api",
                format!("nothing answers at {base}"),
                "systemctl start yima-gate (then: systemctl status yima-gate; journalctl -u yima-gate -b)",
            ));
            return None;
        }
    }
    let Ok(token) = crate::files::read_secret(token) else {
        out.push(finding(
            Level::Warn,
            "api",
            format!("{base} is up; its token is not readable here"),
            "run doctor as root or as the service user for the full report",
        ));
        return None;
    };
    let status = http
        .get(format!("{base}/api/v1/status"))
        .bearer_auth(String::from_utf8_lossy(&token))
        .send()
        .ok()
        .and_then(|r| r.json::<serde_json::Value>().ok());
    match status.as_ref() {
        Some(st) if st["ready"].as_bool() == Some(false) => out.push(finding(
            Level::Warn,
            "ready",
            format!(
                "the gate runs but is not ready: {}",
                st["readiness"]
                    .as_array()
                    .map(|r| r
                        .iter()
                        .filter_map(|x| x["code"].as_str())
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            ),
            "see the checks below; the status page shows the same",
        )),
        _ => {}
    }
    if let Some(sources) = status.as_ref().and_then(|s| s["sources"].as_array()) {
        for src in sources.iter().filter(|s| s["up"].as_bool() == Some(false)) {
            out.push(finding(
                Level::Fail,
                "source",
                format!(
                    "{} is {}: {}",
                    src["name"].as_str().unwrap_or("?"),
                    src["state"].as_str().unwrap_or("?"),
                    src["error"].as_str().unwrap_or("no input")
                ),
                "check the cable or stream; the gate reopens it by itself",
            ));
        }
    }
    out.push(finding(
        Level::Ok,
        "api",
        format!("{base} answers (the service is running)"),
        "",
    ));
    status
}

fn clock_check(declared: bool, status: Option<&serde_json::Value>, out: &mut Vec<Finding>) {
    let trusted = match status {
        Some(s) => s["clock"]["trusted"].as_bool().unwrap_or(false),
        None => {
            use crate::clock::TimeSource;
            crate::clock::SystemTimeSource::new(declared).wall_synchronized()
        }
    };
    if trusted {
        out.push(finding(Level::Ok, "clock", "trusted".into(), ""));
    } else {
        out.push(finding(
            Level::Fail,
            "clock",
            "not trusted: dynamic codes are refused (clock_untrusted)".into(),
            "enable systemd-timesyncd (timedatectl set-ntp true) or sync with the platform",
        ));
    }
}

fn platform(cfg: &Config, status: Option<&serde_json::Value>, out: &mut Vec<Finding>) {
    if cfg.platform.is_none() {
        return;
    }
    if let Some(sync) = status.map(|s| &s["sync"]).filter(|s| !s.is_null()) {
        let age_min = sync["policy_age_ms"].as_i64().map(|a| a / 60_000);
        if sync["policy_stale"].as_bool() == Some(true) {
            out.push(finding(
                Level::Fail,
                "policy",
                format!(
                    "stale ({} min old): every code is refused",
                    age_min.unwrap_or(-1)
                ),
                "restore the network path to the platform; `yima-gate sync` shows the error",
            ));
        } else if let Some(age) = age_min {
            out.push(finding(
                Level::Ok,
                "policy",
                format!("keys and status list from a bundle {age} min old"),
                "",
            ));
        }
        let backlog = sync["backlog"].as_u64().unwrap_or(0);
        match sync["last_error"].as_str() {
            Some(e) => out.push(finding(
                Level::Warn,
                "platform",
                format!("last sync failed: {e}; {backlog} record(s) waiting"),
                "check the route/firewall to the platform and the terminal's certificate",
            )),
            None => out.push(finding(
                Level::Ok,
                "platform",
                format!("reachable; {backlog} record(s) waiting"),
                "",
            )),
        }
        return;
    }
    // The daemon is not running: ask the platform directly.
    let Ok(Some(e)) = crate::sync::Enrollment::load(&cfg.state_dir) else {
        return;
    };
    crate::sync::tls::install_provider();
    match crate::sync::PlatformClient::new(&e, Duration::from_secs(5))
        .and_then(|c| c.pull(u64::MAX))
    {
        Ok(_) => out.push(finding(
            Level::Ok,
            "platform",
            format!("{} reachable over mutual TLS", e.platform_url),
            "",
        )),
        Err(err) => out.push(finding(
            Level::Fail,
            "platform",
            format!("{}: {err}", e.platform_url),
            "check the route/firewall; a 403 means the terminal was revoked",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_config_fails_with_its_fix_and_the_other_checks_still_run() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("gate.toml");
        std::fs::write(&path, "[terminal]\nid = \"bad id\"\n").expect("write");
        let report = run(&path);
        assert_eq!(report[0].level, Level::Fail);
        assert!(report[0].to_string().contains("terminal.id"));
        assert!(report[0].to_string().contains("check-config"));
        for check in ["disk", "api", "clock"] {
            assert!(report.iter().any(|f| f.check == check), "no {check} line");
        }
    }

    #[test]
    fn disk_space_is_reported_for_the_state_directory() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut out = Vec::new();
        disk(dir.path(), &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].detail.contains("MiB free"), "{}", out[0]);
    }
}
