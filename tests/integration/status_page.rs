//! The technician's status page, loaded in headless Chromium (Debian `chromium`): it shows a
//! verdict the test caused, and the test run saves a screenshot.

use std::process::{Command, Stdio};

fn chromium() -> Option<&'static str> {
    for c in ["chromium", "chromium-browser"] {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(c);
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("Debian chromium is needed in CI (apt-get install chromium)");
    }
    eprintln!("SKIP: chromium not installed");
    None
}

#[test]
fn status_page_shows_a_verdict_in_chromium() {
    let Some(browser) = chromium() else { return };
    yima_gate::sync::tls::install_provider();
    let fixture = crate::common::Gate::new();
    let dir = &fixture.dir;
    let trust = dir.path().join("trust.json");
    let port = fixture.port;
    // A camera-like source too: one frame (a QR image), for the page's last-frame thumbnail.
    let frames = dir.path().join("frames");
    std::fs::create_dir_all(&frames).expect("frames");
    yima_gate::render::write_png("not a YM1 code, just a frame", &frames.join("f.png"))
        .expect("png");
    let cfg = dir.path().join("gate.toml");
    std::fs::write(
        &cfg,
        format!(
            "[terminal]\nid = \"PAGE-1\"\nstate_dir = \"{}\"\n[trust]\nkeys = \"{}\"\n[clock]\ntrust_system_clock = true\n\
             [[source]]\nkind = \"scanner\"\nstdin = true\n[[source]]\nkind = \"files\"\npaths = [\"{}\"]\n\
             [api]\nlisten = \"127.0.0.1:{port}\"\n",
            dir.path().join("state").display(),
            trust.display(),
            frames.display()
        ),
    )
    .expect("config");
    let mut gate = crate::common::gate()
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gate");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::blocking::Client::new();
    assert!(
        crate::common::wait_until_up(&format!("{base}/healthz")),
        "API did not come up"
    );
    let token = std::fs::read_to_string(dir.path().join("state/api.token")).expect("token");
    let token = token.trim();
    // cause a verdict: an expired dynamic code → 码已过期
    let code = fixture.code(crate::common::now_s() - 600, None);
    let v: serde_json::Value = http
        .post(format!("{base}/api/v1/verify"))
        .header("Authorization", format!("Bearer {token}"))
        .body(serde_json::json!({ "code": code }).to_string())
        .send()
        .expect("verify")
        .json()
        .expect("json");
    assert_eq!(v["message"], "码已过期");

    let url = format!("{base}/#token={token}");
    let profile = dir.path().join("chromium-profile");
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=4000",
        "--window-size=1100,900",
    ];
    let dom = Command::new(browser)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("chromium");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("码已过期"),
        "the page shows the verdict; DOM was: {dom:.2000}"
    );
    assert!(dom.contains("PAGE-1"), "the page names the terminal");
    assert!(
        dom.contains(r#"id="thumb""#) && dom.contains("src=\"blob:"),
        "the page shows the last frame: {dom:.3000}"
    );
    assert!(dom.contains("expired"));
    assert!(
        dom.contains("码已过期 (expired)"),
        "Chinese beside the reason code"
    );

    let shot = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = Command::new(browser)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .expect("chromium screenshot");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = image::open(&shot).expect("a PNG screenshot");
    assert_eq!((png.width(), png.height()), (1100, 900));
    eprintln!("status page screenshot: {}", shot.display());

    let pid = gate.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    assert_eq!(gate.wait().expect("wait").code(), Some(0));
}

/// Loads `url` in headless Chromium: its DOM after the scripts ran, and a screenshot saved as
/// `shot` under the target's temporary directory.
fn render(browser: &str, dir: &std::path::Path, url: &str, shot: &str) -> String {
    let profile = dir.join(format!("profile-{shot}"));
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=4000",
        "--window-size=1100,900",
    ];
    let dom = Command::new(browser)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("chromium");
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(shot);
    let _ = std::fs::remove_file(&path);
    let out = Command::new(browser)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", path.display()))
        .arg(url)
        .output()
        .expect("chromium screenshot");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(image::open(&path).is_ok(), "a PNG screenshot");
    eprintln!("screenshot: {}", path.display());
    String::from_utf8_lossy(&dom.stdout).into_owned()
}

#[test]
fn an_unplugged_camera_is_not_ready_in_readyz_metrics_and_the_page() {
    let Some(browser) = chromium() else { return };
    yima_gate::sync::tls::install_provider();
    let gate = crate::common::Gate::new();
    let cfg = gate.config("[[source]]\nkind = \"camera\"\ndevice = \"/dev/video-unplugged\"\n");
    let mut child = crate::common::gate()
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gate");
    let base = format!("http://127.0.0.1:{}", gate.port);
    assert!(crate::common::wait_until_up(&format!("{base}/healthz")));
    let http = reqwest::blocking::Client::new();
    let ready = http.get(format!("{base}/readyz")).send().expect("readyz");
    assert_eq!(ready.status().as_u16(), 503);
    let ready: serde_json::Value = ready.json().expect("json");
    assert_eq!(ready["ready"], false);
    assert_eq!(
        ready["reasons"][0]["code"], "no_source_delivering",
        "{ready}"
    );
    let token = std::fs::read_to_string(gate.dir.path().join("state/api.token")).expect("token");
    let token = token.trim();
    let metrics = http
        .get(format!("{base}/metrics"))
        .bearer_auth(token)
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    assert!(
        metrics
            .contains("yima_source_up{source=\"camera:/dev/video-unplugged\",kind=\"frames\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("yima_ready 0"), "{metrics}");
    let dom = render(
        browser,
        gate.dir.path(),
        &format!("{base}/#token={token}"),
        "status-page-camera-unplugged.png",
    );
    assert!(dom.contains("未就绪"), "{dom:.3000}");
    assert!(dom.contains("摄像头或扫码器无输入"), "{dom:.3000}");
    assert!(
        dom.contains("重连中") || dom.contains("启动中"),
        "the source's state: {dom:.3000}"
    );
    assert!(
        dom.contains("暂无画面"),
        "a placeholder, not a broken image: {dom:.3000}"
    );
    // A wrong token: the page says so instead of showing nothing.
    let dom = render(
        browser,
        gate.dir.path(),
        &format!("{base}/#token=not-the-token"),
        "status-page-bad-token.png",
    );
    assert!(dom.contains("令牌无效"), "{dom:.3000}");
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill")
        .success());
    assert_eq!(child.wait().expect("wait").code(), Some(0));
}
