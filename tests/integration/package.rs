//! The Debian package (cross/package-deb.sh): its contents and control fields checked with
//! dpkg-deb, and its maintainer scripts run against recording stand-ins for getent, adduser,
//! install and systemctl — install creates the user (groups video and gpio) and the state
//! directory once, purge removes the user and keeps unsynced records.

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
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));
    assert!(field("Depends").contains("adduser"));
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

/// Stand-ins that log every call; `getent` answers from `$STATE/users` and `$STATE/groups`.
fn stubs(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let log = r#"echo "$(basename "$0") $*" >> "$STATE/calls""#;
    let scripts = [
        (
            "getent",
            format!(
                "#!/bin/sh\n{log}\ncase \"$1\" in passwd) f=users;; group) f=groups;; esac\ngrep -qx \"$2\" \"$STATE/$f\" 2>/dev/null"
            ),
        ),
        (
            "addgroup",
            format!("#!/bin/sh\n{log}\nfor a; do last=$a; done\necho \"$last\" >> \"$STATE/groups\""),
        ),
        (
            "adduser",
            format!("#!/bin/sh\n{log}\ncase \"$*\" in *--system*) for a; do last=$a; done; echo \"$last\" >> \"$STATE/users\";; esac"),
        ),
        ("deluser", format!("#!/bin/sh\n{log}")),
        ("install", format!("#!/bin/sh\n{log}")),
        ("systemctl", format!("#!/bin/sh\n{log}")),
        ("udevadm", format!("#!/bin/sh\n{log}")),
    ];
    for (name, body) in scripts {
        let p = bin.join(name);
        std::fs::write(&p, body).expect("stub");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    bin
}

fn run_script(script: &Path, arg: &str, stubs: &Path, state: &Path) -> String {
    let _ = std::fs::remove_file(state.join("calls"));
    let o = Command::new("sh")
        .arg(script)
        .arg(arg)
        .env("PATH", format!("{}:/usr/bin:/bin", stubs.display()))
        .env("STATE", state)
        .output()
        .expect("script");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read_to_string(state.join("calls")).unwrap_or_default()
}

#[test]
fn maintainer_scripts_create_the_user_once_and_purge_keeps_records() {
    let dir = tempfile::tempdir().expect("tmp");
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("cross/debian");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state");
    std::fs::write(state.join("groups"), "video\n").expect("groups");
    let stubs = stubs(dir.path());

    let first = run_script(&scripts.join("postinst"), "configure", &stubs, &state);
    assert!(
        first.contains("addgroup --system --quiet yima-gate"),
        "{first}"
    );
    assert!(
        first.contains("addgroup --system --quiet gpio"),
        "the unit's SupplementaryGroups must exist: {first}"
    );
    assert!(first.contains("adduser --system"), "{first}");
    assert!(first.contains("adduser --quiet yima-gate video"), "{first}");
    assert!(first.contains("adduser --quiet yima-gate gpio"), "{first}");
    assert!(
        !first.contains("yima-gate dialout"),
        "no dialout group here: {first}"
    );
    assert!(
        first.contains("udevadm trigger --subsystem-match=gpio"),
        "{first}"
    );
    assert!(
        first.contains("install -d -o yima-gate -g yima-gate -m 0700 /var/lib/yima-gate"),
        "{first}"
    );

    // Upgrade: the user exists, nothing is created twice.
    let again = run_script(&scripts.join("postinst"), "configure", &stubs, &state);
    assert!(!again.contains("addgroup --system"), "{again}");
    assert!(again.contains("adduser --quiet yima-gate gpio"), "{again}");
    assert!(!again.contains("adduser --system"), "{again}");

    let remove = run_script(&scripts.join("postrm"), "remove", &stubs, &state);
    assert!(
        !remove.contains("deluser"),
        "remove keeps the user: {remove}"
    );
    let purge = run_script(&scripts.join("postrm"), "purge", &stubs, &state);
    assert!(
        purge.contains("deluser --quiet --system yima-gate"),
        "{purge}"
    );
    assert!(
        !purge.contains("rm "),
        "records are never deleted by the package"
    );
}
