//! The Debian package (cross/package-deb.sh): its contents and control fields checked with
//! dpkg-deb and lintian, and the package on a real systemd — a minimal Debian 12 booted with
//! systemd-nspawn, the .deb installed, the README's steps followed, the gate verifying through
//! its API, restarted, upgraded, stopped and purged.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

/// Debian's name for the architecture the tests run on (the binary under test is packaged).
fn deb_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        "arm" => "armhf",
        _ => "amd64",
    }
}

fn build_deb(out: &Path) -> Option<PathBuf> {
    build_deb_version(out, env!("CARGO_PKG_VERSION"))
}

fn build_deb_version(out: &Path, version: &str) -> Option<PathBuf> {
    if !have("dpkg-deb") {
        assert!(std::env::var_os("CI").is_none(), "dpkg-deb missing in CI");
        eprintln!("SKIP: dpkg-deb not installed");
        return None;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new("bash")
        .arg(root.join("cross/package-deb.sh"))
        .arg(deb_arch())
        .arg(crate::common::bin())
        .arg(out)
        .env("YIMA_DEB_VERSION", version)
        .output()
        .expect("package-deb.sh");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Some(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
}

#[test]
fn the_package_holds_binary_unit_config_and_scripts() {
    let dir = tempfile::tempdir().expect("tmp");
    let Some(deb) = build_deb(dir.path()) else {
        return;
    };
    let listing = Command::new("dpkg-deb")
        .arg("-c")
        .arg(&deb)
        .output()
        .expect("-c");
    let listing = String::from_utf8_lossy(&listing.stdout);
    for want in [
        "./usr/bin/yima-gate",
        "./lib/systemd/system/yima-gate.service",
        "./etc/yima-gate/gate.toml",
        "./etc/yima-gate/status.example.json",
        "./lib/udev/rules.d/60-yima-gate-gpio.rules",
    ] {
        assert!(listing.contains(want), "{want} missing:\n{listing}");
    }
    assert!(listing.contains("-rwxr-xr-x root/root"), "{listing}");
    for want in [
        "./usr/share/doc/yima-gate/copyright",
        "./usr/share/doc/yima-gate/changelog.Debian.gz",
        "./usr/share/man/man1/yima-gate.1.gz",
    ] {
        assert!(listing.contains(want), "{want} missing:\n{listing}");
    }
    assert!(
        listing
            .lines()
            .next()
            .is_some_and(|l| l.starts_with("drwxr-xr-x root/root")),
        "package root 0755: {listing}"
    );
    assert!(
        listing.contains("-rw-r----- root/root") && listing.contains("gate.toml"),
        "the config is not world-readable: {listing}"
    );
    let field = |f: &str| {
        let o = Command::new("dpkg-deb")
            .arg("-f")
            .arg(&deb)
            .arg(f)
            .output()
            .expect("-f");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(field("Package"), "yima-gate");
    assert_eq!(field("Architecture"), deb_arch());
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    let depends = field("Depends");
    assert!(
        depends.contains("adduser") && depends.contains("libc6 (>="),
        "{depends}"
    );
    // Packages of the gate, not of a cross-building host.
    assert!(
        !depends.contains(':') && !depends.contains("-cross"),
        "{depends}"
    );
    let ctl = dir.path().join("control");
    assert!(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(&ctl)
        .status()
        .expect("-e")
        .success());
    let conffiles = std::fs::read_to_string(ctl.join("conffiles")).expect("conffiles");
    assert!(conffiles.contains("/etc/yima-gate/gate.toml"));
    let md5sums = std::fs::read_to_string(ctl.join("md5sums")).expect("md5sums");
    assert!(md5sums.contains("usr/bin/yima-gate"), "{md5sums}");
    // No maintainer script drives the service with a bare systemctl.
    for s in ["postinst", "prerm", "postrm"] {
        let text = std::fs::read_to_string(ctl.join(s)).expect(s);
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            if line.contains("systemctl") {
                assert!(line.contains("daemon-reload"), "{s}: {line}");
            }
        }
    }
    for s in ["postinst", "prerm", "postrm"] {
        let mode = std::fs::metadata(ctl.join(s))
            .expect(s)
            .permissions()
            .mode();
        assert_eq!(mode & 0o755, 0o755, "{s} executable");
    }
    // The packaged binary is the one built, stripped, and it runs.
    let data = dir.path().join("data");
    assert!(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&data)
        .status()
        .expect("-x")
        .success());
    let v = crate::common::command_for(&data.join("usr/bin/yima-gate"))
        .arg("--version")
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&v.stdout).contains(env!("CARGO_PKG_VERSION")));
    let packaged = std::fs::metadata(data.join("usr/bin/yima-gate"))
        .expect("bin")
        .len();
    let built = std::fs::metadata(crate::common::bin()).expect("bin").len();
    assert!(packaged <= built, "stripped: {packaged} vs {built}");
}

#[test]
fn lintian_finds_no_error_in_the_package() {
    if !have("lintian") {
        assert!(std::env::var_os("CI").is_none(), "lintian missing in CI");
        eprintln!("SKIP: lintian not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let Some(deb) = build_deb(dir.path()) else {
        return;
    };
    let o = Command::new("lintian")
        .args(["--no-cfg", "--fail-on", "error,warning", "--suppress-tags"])
        .arg(LINTIAN_ACCEPTED.join(","))
        .arg(&deb)
        .output()
        .expect("lintian");
    let report = String::from_utf8_lossy(&o.stdout);
    eprintln!("lintian:\n{report}");
    assert!(
        o.status.success(),
        "lintian: {report}{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Warnings lintian raises on this package that are the package's design, each with why.
const LINTIAN_ACCEPTED: &[&str] = &[
    // The configuration holds site secrets' paths and is private to the service group; the
    // package ships it 0640 and postinst gives it to group yima-gate.
    "non-standard-file-perm",
    // Not uploaded to the Debian archive: there is no ITP bug for the changelog to close.
    "initial-upload-closes-no-bugs",
];

// ---- the package on a real systemd -------------------------------------------------------

/// A command inside the booted container.
struct Container {
    root: PathBuf,
    nspawn: std::process::Child,
    leader: u32,
}

impl Container {
    fn sh(&self, script: &str) -> std::process::Output {
        Command::new("nsenter")
            .args([
                "-t",
                &self.leader.to_string(),
                "-a",
                "--",
                "/bin/sh",
                "-c",
                script,
            ])
            .output()
            .expect("nsenter")
    }

    /// Runs `script` inside; its stdout, failing the test (with stderr) when it fails.
    fn ok(&self, script: &str) -> String {
        let o = self.sh(script);
        assert!(
            o.status.success(),
            "`{script}` failed ({:?}):\n{}{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Polls `script` until it succeeds (bounded).
    fn until(&self, what: &str, script: &str, secs: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if self.sh(script).status.success() {
                return;
            }
            if std::time::Instant::now() > deadline {
                let journal = self.sh("journalctl -u yima-gate --no-pager -n 50");
                panic!(
                    "timed out waiting for {what}\n{}",
                    String::from_utf8_lossy(&journal.stdout)
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.sh("systemctl poweroff");
        for _ in 0..100 {
            if self.nspawn.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
        let _ = Command::new("rm").arg("-rf").arg(&self.root).status();
    }
}

/// A minimal Debian 12 root with systemd, built once (kept under `target/`) and copied per run.
fn debian_root() -> Option<PathBuf> {
    let ci = std::env::var_os("CI").is_some();
    let usable = std::env::consts::ARCH == "x86_64"
        && rustix::process::geteuid().is_root()
        && have("debootstrap")
        && Command::new("systemd-nspawn")
            .arg("--version")
            .output()
            .is_ok()
        && Command::new("nsenter").arg("--version").output().is_ok()
        && std::env::var_os("YIMA_TEST_RUNNER").is_none();
    if !usable {
        // CI runs this natively on amd64 as root; under emulation it cannot boot a container.
        assert!(
            !ci || std::env::var_os("YIMA_TEST_RUNNER").is_some()
                || std::env::consts::ARCH != "x86_64",
            "the real-systemd test needs root, debootstrap and systemd-nspawn in CI"
        );
        eprintln!("SKIP: no root, debootstrap or systemd-nspawn here");
        return None;
    }
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debian12-root");
    if !cache.join(".complete").exists() {
        let _ = std::fs::remove_dir_all(&cache);
        let o = Command::new("debootstrap")
            .args([
                "--variant=minbase",
                "--include=systemd,systemd-sysv,dbus,adduser,init-system-helpers,curl",
                "bookworm",
            ])
            .arg(&cache)
            .output()
            .expect("debootstrap");
        assert!(
            o.status.success(),
            "debootstrap: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::write(cache.join(".complete"), b"").expect("mark");
    }
    Some(cache)
}

fn boot(base: &Path) -> Container {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(format!("debian12-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    assert!(Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(base)
        .arg(&root)
        .status()
        .expect("cp")
        .success());
    let nspawn = Command::new("systemd-nspawn")
        .args([
            "-q",
            "--keep-unit",
            "--register=no",
            "--boot",
            "--console=pipe",
            "-D",
        ])
        .arg(&root)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("systemd-nspawn");
    // The container's init: the child of nspawn that is PID 1 of its own namespace (nspawn
    // forks an intermediate child first, which exits once init is started).
    let is_init = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("NSpid:"))
            .is_some_and(|l| l.split_whitespace().count() >= 3 && l.ends_with("\t1"))
    };
    let mut leader = None;
    for _ in 0..600 {
        let children = std::fs::read_to_string(format!(
            "/proc/{}/task/{}/children",
            nspawn.id(),
            nspawn.id()
        ))
        .unwrap_or_default();
        leader = children
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .find(|&pid| is_init(pid));
        if leader.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let c = Container {
        root,
        nspawn,
        leader: leader.expect("the container's init"),
    };
    c.until(
        "the container's systemd",
        "s=$(systemctl is-system-running); [ \"$s\" = running ] || [ \"$s\" = degraded ]",
        // Booting shares two cores with the rest of the suite in CI.
        180,
    );
    c
}

#[test]
fn on_a_real_systemd_the_package_installs_runs_upgrades_and_purges() {
    let Some(base) = debian_root() else {
        return;
    };
    yima_gate::sync::tls::install_provider();
    let work = tempfile::tempdir().expect("tmp");
    let Some(deb) = build_deb_version(&work.path().join("v1"), "0.1.0") else {
        return;
    };
    let Some(upgrade) = build_deb_version(&work.path().join("v2"), "0.1.1") else {
        return;
    };
    let c = boot(&base);
    std::fs::copy(&deb, c.root.join("root/gate-1.deb")).expect("copy deb");
    std::fs::copy(&upgrade, c.root.join("root/gate-2.deb")).expect("copy deb");

    // Install. A fresh install provisions its state directory and leaves the gate stopped
    // until it is configured.
    c.ok("dpkg -i /root/gate-1.deb");
    assert_eq!(
        c.ok("stat -c '%U:%G %a' /etc/yima-gate/gate.toml"),
        "root:yima-gate 640"
    );
    assert_eq!(c.ok("stat -c '%U %a' /var/lib/yima-gate"), "yima-gate 700");
    assert!(
        c.sh("test -d /var/lib/yima-gate/store").status.success(),
        "provisioned"
    );
    // The README's offline path: the trust file in place, the terminal's id set.
    let now = crate::common::now_s();
    let key = yima_gate::verification::keys::KeyPair::generate(
        yima_gate::verification::keys::Alg::EdDSA,
        yima_gate::verification::keys::Kid::new(b"pkg".to_vec()).expect("kid"),
        now - 3600,
        now + 86_400,
    );
    let entry = serde_json::to_string(&key.trusted_key().to_entry()).expect("json");
    std::fs::write(c.root.join("root/trust.json"), entry).expect("trust");
    let port = crate::common::free_port();
    c.ok("install -m 0640 -o root -g yima-gate /root/trust.json /etc/yima-gate/trust.json");
    c.ok(&format!(
        "sed -i -e 's/^id = .*/id = \"GATE-PKG\"/' -e 's/^accept_unknown_static = false/accept_unknown_static = true/' \
         -e 's/^listen = .*/listen = \"127.0.0.1:{port}\"/' /etc/yima-gate/gate.toml"
    ));
    c.ok("yima-gate check-config --config /etc/yima-gate/gate.toml");
    c.ok("runuser -u yima-gate -- yima-gate check-config --config /etc/yima-gate/gate.toml");
    c.ok("systemctl enable --now yima-gate");
    // Type=notify: `active` means READY=1 arrived.
    c.until(
        "the gate to be active",
        "[ \"$(systemctl show -p ActiveState --value yima-gate)\" = active ]",
        60,
    );
    assert!(c
        .ok("systemctl show -p StatusText --value yima-gate")
        .contains("GATE-PKG"));
    let token = c.ok("cat /var/lib/yima-gate/api.token");
    let http = reqwest::blocking::Client::new();
    let base_url = format!("http://127.0.0.1:{port}");
    assert!(crate::common::wait_until_up(&format!("{base_url}/healthz")));
    let static_code = |sn: &str| {
        let claims = yima_gate::verification::code::Claims {
            scenes: None,
            ..crate::common::static_claims(crate::common::now_s() - 60, "CAT", sn, 1)
        };
        yima_gate::verification::code::mint(&key.signing, &key.kid, &claims)
    };
    let verify = |code: String| -> serde_json::Value {
        http.post(format!("{base_url}/api/v1/verify"))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "code": code }))
            .send()
            .expect("verify")
            .json()
            .expect("json")
    };
    let records = || -> usize {
        let page: serde_json::Value = http
            .get(format!("{base_url}/api/v1/records"))
            .bearer_auth(&token)
            .send()
            .expect("records")
            .json()
            .expect("json");
        page["records"].as_array().map_or(0, Vec::len)
    };
    let v = verify(static_code("0001"));
    assert_eq!(v["reason"], "accepted", "{v}");
    assert_eq!(v["seq"], 1);
    assert_eq!(records(), 1);
    // No camera in the container: honest health.
    let ready = http
        .get(format!("{base_url}/readyz"))
        .send()
        .expect("readyz");
    assert_eq!(ready.status().as_u16(), 503);
    let ready: serde_json::Value = ready.json().expect("json");
    assert_eq!(
        ready["reasons"][0]["code"], "no_source_delivering",
        "{ready}"
    );

    // Restart keeps the records.
    c.ok("systemctl restart yima-gate");
    c.until(
        "active after restart",
        "[ \"$(systemctl show -p ActiveState --value yima-gate)\" = active ]",
        60,
    );
    assert!(crate::common::wait_until_up(&format!("{base_url}/healthz")));
    assert_eq!(records(), 1, "records kept across a restart");
    assert_eq!(verify(static_code("0002"))["seq"], 2);

    // An upgrade restarts the running gate on the new binary and keeps the records.
    let pid_before = c.ok("systemctl show -p MainPID --value yima-gate");
    c.ok("dpkg -i /root/gate-2.deb");
    c.until(
        "active after upgrade",
        "[ \"$(systemctl show -p ActiveState --value yima-gate)\" = active ]",
        60,
    );
    let pid_after = c.ok("systemctl show -p MainPID --value yima-gate");
    assert_ne!(pid_before, pid_after, "the upgrade restarted the gate");
    assert_eq!(c.ok("dpkg-query -W -f '${Version}' yima-gate"), "0.1.1-1");
    assert!(crate::common::wait_until_up(&format!("{base_url}/healthz")));
    assert_eq!(records(), 2, "records kept across an upgrade");

    // A stop drains well inside TimeoutStopSec, cleanly.
    let started = std::time::Instant::now();
    c.ok("systemctl stop yima-gate");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(
        c.ok("systemctl show -p Result --value yima-gate"),
        "success"
    );

    // A bad config fails once with its message instead of looping.
    c.ok("cp /etc/yima-gate/gate.toml /tmp/good.toml && echo 'bogus = 1' >> /etc/yima-gate/gate.toml");
    let _ = c.sh("systemctl start yima-gate");
    c.until(
        "the failed start",
        "[ \"$(systemctl show -p ActiveState --value yima-gate)\" = failed ]",
        30,
    );
    assert_eq!(c.ok("systemctl show -p NRestarts --value yima-gate"), "0");
    c.ok("cp /tmp/good.toml /etc/yima-gate/gate.toml && systemctl reset-failed yima-gate");

    // Purge keeps the state directory and the user that owns it; no dangling link.
    c.ok("dpkg --purge yima-gate");
    assert_eq!(c.ok("stat -c '%U' /var/lib/yima-gate"), "yima-gate");
    assert!(
        c.sh("getent passwd yima-gate").status.success(),
        "user kept"
    );
    assert!(!c
        .sh("test -L /etc/systemd/system/multi-user.target.wants/yima-gate.service")
        .status
        .success());
    assert!(c.sh("test -d /var/lib/yima-gate/store").status.success());
}
