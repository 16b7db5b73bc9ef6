//! The three OpenAPI documents against the servers' live answers: the gate's local API
//! (`src/api/openapi.json`), the sync protocol (`src/platform/openapi.json`) and the reference
//! platform's admin API (`src/platform/admin-openapi.json`). Every route is called — with the
//! error replies a client can cause — through the real routers, and every answer is checked
//! against its document by openapi-core (PyPI, `tests/interop/requirements.txt`), which also
//! validates the documents and reports operations never exercised.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use base64::Engine as _;
use serde_json::{json, Value};
use tower_service::Service;
use yima_gate::api::server::ConnInfo;

/// Calls routers in-process and writes each exchange as one JSON line.
struct Recorder {
    rt: tokio::runtime::Runtime,
    lines: Vec<String>,
}

struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl Recorder {
    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        api: &str,
        router: &axum::Router,
        method: Method,
        uri: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
        conn: Option<&ConnInfo>,
    ) -> Answer {
        let mut req = Request::builder().method(method.clone()).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(c) = content_type {
            req = req.header("content-type", c);
        }
        let mut req = req.body(Body::from(body)).expect("request");
        if let Some(c) = conn {
            req.extensions_mut().insert(c.clone());
            req.extensions_mut().insert(axum::Extension(c.clone()));
        }
        let mut router = router.clone();
        let (status, ctype, bytes) = self.rt.block_on(async move {
            let resp = router.call(req).await.unwrap_or_else(|e| match e {});
            let status = resp.status().as_u16();
            let ctype = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
                .await
                .expect("body")
                .to_vec();
            (status, ctype, bytes)
        });
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        self.lines.push(
            json!({
                "api": api, "method": method.as_str(), "path": path, "query": query,
                "status": status, "content_type": ctype,
                "body_b64": base64::engine::general_purpose::STANDARD.encode(&bytes),
            })
            .to_string(),
        );
        Answer {
            status,
            body: bytes,
        }
    }
}

fn checker() -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/openapi_check.py");
    let ok = Command::new("python3")
        .args(["-c", "import openapi_core, openapi_spec_validator"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(script);
    }
    let msg = "python3 with openapi-core is needed (pip install -r tests/interop/requirements.txt)";
    assert!(std::env::var_os("CI").is_none(), "{msg}");
    eprintln!("SKIP: {msg}");
    None
}

fn png(text: &str) -> Vec<u8> {
    yima_gate::render::png_bytes(&yima_gate::render::render(text, 4).expect("qr")).expect("png")
}

/// The gate's local API: every route, authorized and not, good and bad bodies.
fn gate_api(rec: &mut Recorder, dir: &Path) {
    use yima_gate::api::{router, ApiState};
    let k = crate::common::key(yima_gate::verification::keys::Alg::EdDSA, "oa");
    let checkpoint = Arc::new(crate::common::open_checkpoint_as(
        &dir.join("gate"),
        yima_gate::checkpoint::Create::Provision,
        crate::common::trust_with(&[&k]),
        crate::common::T0,
    ));
    let token = "openapi-test-token";
    let state = Arc::new(ApiState::new(
        "GATE-OA".into(),
        checkpoint,
        Arc::default(),
        Arc::new(AtomicBool::new(true)),
        zeroize::Zeroizing::new(token.as_bytes().to_vec()),
        None,
    ));
    let app = router(state);
    let conn = ConnInfo {
        peer: "127.0.0.9:40000".parse().expect("addr"),
        client_cert: None,
    };
    let c = Some(&conn);
    let t = Some(token);
    let code = yima_gate::verification::code::mint(
        &k.signing,
        &k.kid,
        &crate::common::dynamic_claims(crate::common::T0 - 1, 42),
    );
    let g = "gate";
    for (m, uri) in [
        (Method::GET, "/healthz"),
        (Method::GET, "/readyz"),
        (Method::GET, "/"),
        (Method::GET, "/metrics"),
        (Method::GET, "/api/v1/status"),
        (Method::GET, "/api/v1/records"),
        (Method::GET, "/api/v1/records?reason=accepted&limit=5"),
        (Method::GET, "/api/v1/records?limit=many"),
        (Method::GET, "/api/v1/frame.png"),
        (Method::GET, "/api/v1/openapi.json"),
        (Method::GET, "/no/such/path"),
        (Method::DELETE, "/api/v1/status"),
    ] {
        rec.call(g, &app, m, uri, t, None, vec![], c);
    }
    for uri in [
        "/metrics",
        "/api/v1/status",
        "/api/v1/records",
        "/api/v1/frame.png",
        "/api/v1/openapi.json",
    ] {
        assert_eq!(
            rec.call(g, &app, Method::GET, uri, None, None, vec![], c)
                .status,
            401,
            "{uri}"
        );
    }
    let body = |v: Value| v.to_string().into_bytes();
    let json_ct = Some("application/json");
    let a = rec.call(
        g,
        &app,
        Method::POST,
        "/api/v1/verify",
        t,
        json_ct,
        body(json!({"code": code})),
        c,
    );
    assert_eq!(a.json()["reason"], "accepted");
    let a = rec.call(
        g,
        &app,
        Method::POST,
        "/api/v1/verify",
        t,
        json_ct,
        body(json!({"code": code})),
        c,
    );
    assert_eq!(a.json()["reason"], "replayed");
    rec.call(
        g,
        &app,
        Method::POST,
        "/api/v1/verify",
        t,
        json_ct,
        body(json!({"code": "YM1:abc"})),
        c,
    );
    rec.call(
        g,
        &app,
        Method::POST,
        "/api/v1/verify",
        t,
        Some("image/png"),
        png("YM1:NOT-A-CODE"),
        c,
    );
    rec.call(
        g,
        &app,
        Method::POST,
        "/api/v1/verify",
        t,
        Some("image/png"),
        b"not a png".to_vec(),
        c,
    );
    assert_eq!(
        rec.call(
            g,
            &app,
            Method::POST,
            "/api/v1/verify",
            t,
            json_ct,
            b"not json".to_vec(),
            c
        )
        .status,
        400
    );
    rec.call(
        g,
        &app,
        Method::POST,
        "/api/v1/verify",
        t,
        Some("text/plain"),
        b"x".to_vec(),
        c,
    );
    rec.call(
        g,
        &app,
        Method::POST,
        "/api/v1/verify",
        t,
        Some("image/png"),
        vec![0; 8 << 20 | 1],
        c,
    );
    rec.call(
        g,
        &app,
        Method::POST,
        "/api/v1/verify",
        None,
        json_ct,
        body(json!({"code": code})),
        c,
    );
    // Unauthenticated floods are limited per peer.
    let limited = (0..40)
        .map(|_| {
            rec.call(g, &app, Method::GET, "/", None, None, vec![], c)
                .status
        })
        .filter(|s| *s == 429)
        .count();
    assert!(
        limited > 0,
        "no 429 among 40 quick unauthenticated requests"
    );
}

/// The sync protocol (its handlers see the client certificate as the server loop gives it).
fn sync_api(rec: &mut Recorder, p: &yima_gate::platform::client::BackgroundPlatform) {
    use yima_gate::sync::enrollment::EnrollToken;
    let app = yima_gate::platform::sync_router(p.running().state.clone());
    let anonymous = ConnInfo {
        peer: "127.0.0.1:40001".parse().expect("addr"),
        client_cert: None,
    };
    let s = "sync";
    let token = p
        .admin
        .create_terminal("GATE-OA", &["GATE-1"])
        .expect("terminal");
    let secret = EnrollToken::parse(&token)
        .expect("token")
        .secret
        .to_string();
    let (_key, csr) = yima_gate::sync::tls::terminal_request("GATE-OA").expect("csr");
    let body = |v: Value| v.to_string().into_bytes();
    let json_ct = Some("application/json");
    let enrolled = rec.call(
        s,
        &app,
        Method::POST,
        "/v1/enroll",
        None,
        json_ct,
        body(json!({"token": secret, "csr_pem": csr, "terminal_id": "GATE-OA"})),
        Some(&anonymous),
    );
    assert_eq!(
        enrolled.status,
        200,
        "{}",
        String::from_utf8_lossy(&enrolled.body)
    );
    let cert_pem = enrolled.json()["cert_pem"]
        .as_str()
        .expect("cert_pem")
        .to_string();
    let der = yima_gate::sync::tls::certs_from_pem(&cert_pem).expect("pem");
    let terminal = ConnInfo {
        peer: anonymous.peer,
        client_cert: Some(yima_gate::sync::tls::fingerprint(&der[0])),
    };
    let stranger = ConnInfo {
        client_cert: Some("00".repeat(32)),
        ..anonymous.clone()
    };
    // Spent token, malformed bodies.
    rec.call(
        s,
        &app,
        Method::POST,
        "/v1/enroll",
        None,
        json_ct,
        body(json!({"token": secret, "csr_pem": csr})),
        Some(&anonymous),
    );
    rec.call(
        s,
        &app,
        Method::POST,
        "/v1/enroll",
        None,
        json_ct,
        b"{".to_vec(),
        Some(&anonymous),
    );
    let bundle = rec.call(
        s,
        &app,
        Method::GET,
        "/v1/bundle",
        None,
        None,
        vec![],
        Some(&terminal),
    );
    assert_eq!(bundle.status, 200);
    rec.call(
        s,
        &app,
        Method::GET,
        "/v1/bundle",
        None,
        None,
        vec![],
        Some(&anonymous),
    );
    rec.call(
        s,
        &app,
        Method::GET,
        "/v1/bundle",
        None,
        None,
        vec![],
        Some(&stranger),
    );
    rec.call(
        s,
        &app,
        Method::GET,
        "/v1/bundle?after=notanumber",
        None,
        None,
        vec![],
        Some(&terminal),
    );
    // Records: an empty batch, a malformed one.
    let store_id = "0f".repeat(16);
    rec.call(
        s,
        &app,
        Method::POST,
        "/v1/records",
        None,
        json_ct,
        body(
            json!({"terminal_id": "GATE-OA", "store_id": store_id, "first_seq": 1, "records": []}),
        ),
        Some(&terminal),
    );
    rec.call(
        s,
        &app,
        Method::POST,
        "/v1/records",
        None,
        json_ct,
        body(json!({"records": 5})),
        Some(&terminal),
    );
    rec.call(
        s,
        &app,
        Method::POST,
        "/v1/records",
        None,
        json_ct,
        body(json!({})),
        Some(&anonymous),
    );
    rec.call(
        s,
        &app,
        Method::POST,
        "/v1/decode",
        None,
        json_ct,
        body(json!({"code": "YM1:abc"})),
        Some(&terminal),
    );
    rec.call(
        s,
        &app,
        Method::POST,
        "/v1/decode",
        None,
        json_ct,
        body(json!({"code": "YM1:abc"})),
        Some(&anonymous),
    );
    rec.call(
        s,
        &app,
        Method::GET,
        "/v1/openapi.json",
        None,
        None,
        vec![],
        Some(&anonymous),
    );
}

/// The admin API: every route, with the errors an operator can cause.
fn admin_api(rec: &mut Recorder, p: &yima_gate::platform::client::BackgroundPlatform) {
    let state = p.running().state.clone();
    let token = state.admin_token.to_string();
    let app = yima_gate::platform::admin::router(state);
    let conn = ConnInfo {
        peer: "127.0.0.1:40002".parse().expect("addr"),
        client_cert: None,
    };
    let c = Some(&conn);
    let t = Some(token.as_str());
    let a = "admin";
    let json_ct = Some("application/json");
    let post = |rec: &mut Recorder, uri: &str, v: Value| {
        rec.call(
            a,
            &app,
            Method::POST,
            uri,
            t,
            json_ct,
            v.to_string().into_bytes(),
            c,
        )
    };
    post(
        rec,
        "/admin/v1/services",
        json!({"code": "SVC-OA", "name": "测试"}),
    );
    post(rec, "/admin/v1/services", json!({"code": 5}));
    let kid = post(
        rec,
        "/admin/v1/keys",
        json!({"alg": "ES256", "kinds": ["dynamic", "static"]}),
    )
    .json()["kid"]
        .as_str()
        .expect("kid")
        .to_string();
    post(
        rec,
        "/admin/v1/keys",
        json!({"alg": "RSA", "kinds": ["dynamic"]}),
    );
    post(rec, "/admin/v1/keys/rotate", json!({"kind": "dynamic"}));
    post(rec, "/admin/v1/keys/rotate", json!({"kind": "weekly"}));
    post(rec, &format!("/admin/v1/keys/{kid}/retire"), Value::Null);
    post(rec, "/admin/v1/keys/nope/retire", Value::Null);
    post(rec, "/admin/v1/services/SVC-OA/stop", Value::Null);
    post(rec, "/admin/v1/services/SVC-OA/resume", Value::Null);
    post(rec, "/admin/v1/services/SVC-NONE/stop", Value::Null);
    post(
        rec,
        "/admin/v1/codes/dynamic",
        json!({"user": "u-oa", "service": "SVC-OA"}),
    );
    post(
        rec,
        "/admin/v1/codes/dynamic",
        json!({"user": "u-oa", "service": "SVC-OA", "render": "grid_matrix"}),
    );
    post(
        rec,
        "/admin/v1/codes/dynamic",
        json!({"user": "u-oa", "service": "SVC-OA", "render": "pdf417"}),
    );
    post(
        rec,
        "/admin/v1/codes/dynamic",
        json!({"user": "u-oa", "service": "SVC-NONE"}),
    );
    post(
        rec,
        "/admin/v1/static",
        json!({"cat": "CAT-OA", "sn": "0001", "user": "u-oa", "service": "SVC-OA"}),
    );
    post(
        rec,
        "/admin/v1/static",
        json!({"cat": "CAT-OA", "sn": "0001", "user": "u-oa", "service": "SVC-OA"}),
    );
    post(rec, "/admin/v1/static", json!({"cat": "CAT-OA"}));
    for action in [
        "apply", "disable", "enable", "lost", "change", "replace", "cancel", "explode",
    ] {
        post(
            rec,
            &format!("/admin/v1/static/CAT-OA/0001/{action}"),
            Value::Null,
        );
    }
    post(rec, "/admin/v1/static/CAT-OA/9999/apply", Value::Null);
    let get =
        |rec: &mut Recorder, uri: &str| rec.call(a, &app, Method::GET, uri, t, None, vec![], c);
    get(rec, "/admin/v1/static/CAT-OA/0001");
    get(rec, "/admin/v1/static/CAT-OA/9999");
    post(
        rec,
        "/admin/v1/terminals",
        json!({"id": "GATE-ADM", "scenes": ["GATE-1"]}),
    );
    post(rec, "/admin/v1/terminals", json!({"id": "GATE-ADM"}));
    post(rec, "/admin/v1/terminals", json!({"scenes": []}));
    post(rec, "/admin/v1/terminals/GATE-ADM/token", Value::Null);
    post(rec, "/admin/v1/terminals/GATE-ADM/revoke", Value::Null);
    post(rec, "/admin/v1/terminals/GATE-ADM/authorize", Value::Null);
    post(rec, "/admin/v1/terminals/GATE-NONE/revoke", Value::Null);
    post(rec, "/admin/v1/faults", json!(["server_error"]));
    post(rec, "/admin/v1/faults", json!(["meteor"]));
    post(rec, "/admin/v1/faults", json!([]));
    let settings = get(rec, "/admin/v1/settings").json();
    rec.call(
        a,
        &app,
        Method::PUT,
        "/admin/v1/settings",
        t,
        json_ct,
        settings.to_string().into_bytes(),
        c,
    );
    rec.call(
        a,
        &app,
        Method::PUT,
        "/admin/v1/settings",
        t,
        json_ct,
        b"[]".to_vec(),
        c,
    );
    for uri in [
        "/admin/v1/keys",
        "/admin/v1/services",
        "/admin/v1/terminals",
        "/admin/v1/audit",
        "/admin/v1/records?terminal=GATE-OA",
        "/admin/v1/records",
        "/admin/v1/stats",
        "/admin/v1/openapi.json",
        "/readyz",
    ] {
        get(rec, uri);
    }
    assert_eq!(
        rec.call(
            a,
            &app,
            Method::GET,
            "/admin/v1/stats",
            None,
            None,
            vec![],
            c
        )
        .status,
        401
    );
    rec.call(
        a,
        &app,
        Method::GET,
        "/admin/v1/stats",
        Some("wrong"),
        None,
        vec![],
        c,
    );
}

#[test]
fn every_route_of_the_three_apis_answers_as_its_openapi_document_says() {
    let Some(script) = checker() else {
        return;
    };
    yima_gate::sync::tls::install_provider();
    let dir = tempfile::tempdir().expect("tmp");
    let mut rec = Recorder {
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime"),
        lines: Vec::new(),
    };
    gate_api(&mut rec, dir.path());
    let p = yima_gate::platform::client::BackgroundPlatform::start(&dir.path().join("platform"))
        .expect("platform");
    sync_api(&mut rec, &p);
    admin_api(&mut rec, &p);
    let exchanges = dir.path().join("exchanges.jsonl");
    std::fs::write(&exchanges, rec.lines.join("\n")).expect("write");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let o = Command::new("python3")
        .arg(&script)
        .arg(&exchanges)
        .arg(format!("gate={}", src.join("api/openapi.json").display()))
        .arg(format!(
            "sync={}",
            src.join("platform/openapi.json").display()
        ))
        .arg(format!(
            "admin={}",
            src.join("platform/admin-openapi.json").display()
        ))
        .output()
        .expect("python3");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let summary: Value = serde_json::from_str(&out).expect("summary");
    assert!(summary["exchanges"].as_u64() > Some(100), "{summary}");
    eprintln!("{summary}");
}
