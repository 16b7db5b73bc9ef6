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

/// Runs every check for the configuration at `config_path`.
pub fn run(config_path: &Path) -> Vec<Finding> {
    let mut out = Vec::new();
    let cfg = match Config::load(config_path) {
        Ok(c) => {
            out.push(finding(
                Level::Ok,
                "config",
                format!("{} (terminal {})", config_path.display(), c.terminal_id),
                "",
            ));
            c
        }
        Err(e) => {
            out.push(finding(
                Level::Fail,
                "config",
                e.to_string(),
                "fix the keys named above; `yima-gate check-config FILE` re-checks",
            ));
            return out;
        }
    };
    cameras(&cfg, &mut out);
    disk(&cfg.state_dir, &mut out);
    trust(&cfg, &mut out);
    let status = api(&cfg, &mut out);
    clock(&cfg, status.as_ref(), &mut out);
    platform(&cfg, status.as_ref(), &mut out);
    out
}

fn cameras(cfg: &Config, out: &mut Vec<Finding>) {
    for s in &cfg.sources {
        if let SourceConfig::Camera(c) = s {
            let dev = format!("/dev/video{}", c.index);
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
                    "add the service user to group `video` (the package does), then restart",
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

fn trust(cfg: &Config, out: &mut Vec<Finding>) {
    if let Some(path) = &cfg.trust_file {
        match crate::local_trust::load_key_ring(path) {
            Ok(r) if r.is_empty() => out.push(finding(
                Level::Fail,
                "keys",
                format!("{} holds no key", path.display()),
                "install the platform's trust file or enroll with the platform",
            )),
            Ok(r) => out.push(finding(
                Level::Ok,
                "keys",
                format!("{} key(s) in {}", r.len(), path.display()),
                "",
            )),
            Err(e) => out.push(finding(
                Level::Fail,
                "keys",
                e.to_string(),
                "reinstall the trust file (mode 0600 when it holds an HMAC key)",
            )),
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
                "ask the platform operator for a token; `yima-gate enroll --token …`",
            )),
            Err(e) => out.push(finding(
                Level::Fail,
                "enrolled",
                e.to_string(),
                "re-enroll with a new token",
            )),
        }
    }
}

/// The running daemon's status, if its API answers.
fn api(cfg: &Config, out: &mut Vec<Finding>) -> Option<serde_json::Value> {
    let base = format!("http://{}", cfg.api_listen);
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
                "systemctl status yima-gate; journalctl -u yima-gate -b",
            ));
            return None;
        }
    }
    let token = cfg
        .api_token_file
        .clone()
        .unwrap_or_else(|| cfg.state_dir.join("api.token"));
    let Ok(token) = crate::files::read_secret(&token) else {
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
    out.push(finding(
        Level::Ok,
        "api",
        format!("{base} answers (the service is running)"),
        "",
    ));
    status
}

fn clock(cfg: &Config, status: Option<&serde_json::Value>, out: &mut Vec<Finding>) {
    let trusted = match status {
        Some(s) => s["clock"]["trusted"].as_bool().unwrap_or(false),
        None => {
            use crate::clock::TimeSource;
            crate::clock::SystemTimeSource::new(cfg.trust_system_clock).wall_synchronized()
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
    fn a_broken_config_is_one_fail_line_with_its_fix() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("gate.toml");
        std::fs::write(&path, "[terminal]\nid = \"bad id\"\n").expect("write");
        let report = run(&path);
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].level, Level::Fail);
        assert!(report[0].to_string().contains("terminal.id"));
        assert!(report[0].to_string().contains("check-config"));
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
