//! A platform on a background runtime plus a blocking client of its admin API: what the demo,
//! the tests and the benches use to run "the whole system on one machine".

use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use super::{PlatformOptions, RunningPlatform};

/// A reference platform serving from its own tokio runtime (stopped on drop).
#[derive(Debug)]
pub struct BackgroundPlatform {
    runtime: Option<tokio::runtime::Runtime>,
    running: Option<RunningPlatform>,
    pub admin: AdminClient,
}

impl BackgroundPlatform {
    /// Starts a platform on loopback ports chosen by the kernel, state in `data`.
    pub fn start(data: &std::path::Path) -> anyhow::Result<BackgroundPlatform> {
        BackgroundPlatform::start_with(data, None)
    }

    /// [`BackgroundPlatform::start`] with the records in PostgreSQL when `database` is given.
    pub fn start_with(
        data: &std::path::Path,
        database: Option<super::records::pg_store::PgOptions>,
    ) -> anyhow::Result<BackgroundPlatform> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("platform")
            .enable_all()
            .build()?;
        let running = runtime.block_on(super::start(PlatformOptions {
            data: data.to_path_buf(),
            listen: ([127, 0, 0, 1], 0).into(),
            admin_listen: ([127, 0, 0, 1], 0).into(),
            hostnames: vec![],
            database,
        }))?;
        let admin = AdminClient::new(&running.admin_url(), running.state.admin_token.as_str())?;
        Ok(BackgroundPlatform {
            runtime: Some(runtime),
            running: Some(running),
            admin,
        })
    }

    pub fn running(&self) -> &RunningPlatform {
        self.running.as_ref().expect("running until drop")
    }

    /// `https://127.0.0.1:PORT` of the sync API.
    pub fn sync_url(&self) -> String {
        self.running().sync_url()
    }

    pub fn db(&self) -> &super::db::Db {
        &self.running().state.db
    }

    pub fn faults(&self) -> &super::Faults {
        &self.running().state.faults
    }
}

impl Drop for BackgroundPlatform {
    fn drop(&mut self) {
        if let (Some(rt), Some(running)) = (self.runtime.take(), self.running.take()) {
            rt.block_on(running.shutdown());
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// Blocking calls to the admin API (bearer token).
#[derive(Debug, Clone)]
pub struct AdminClient {
    http: reqwest::blocking::Client,
    base: String,
    token: String,
}

impl AdminClient {
    pub fn new(base: &str, token: &str) -> anyhow::Result<AdminClient> {
        crate::sync::tls::install_provider();
        Ok(AdminClient {
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().with_context(|| format!("{method} {path}"))?;
        let status = resp.status();
        let value: Value = resp.json().unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{method} {path}: {status} {value}");
        }
        Ok(value)
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(reqwest::Method::GET, path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(reqwest::Method::POST, path, Some(body))
    }

    pub fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(reqwest::Method::PUT, path, Some(body))
    }

    /// Authorizes a terminal; returns its enrollment token.
    pub fn create_terminal(&self, id: &str, scenes: &[&str]) -> anyhow::Result<String> {
        let v = self.post(
            "/admin/v1/terminals",
            &serde_json::json!({ "id": id, "scenes": scenes }),
        )?;
        v["enrollment_token"]
            .as_str()
            .map(str::to_string)
            .context("no enrollment_token in the answer")
    }

    /// 生码: a dynamic code for a user and service, issued at `iat` (seconds; default now).
    pub fn mint_dynamic(
        &self,
        user: &str,
        service: &str,
        iat: Option<i64>,
    ) -> anyhow::Result<String> {
        let v = self.post(
            "/admin/v1/codes/dynamic",
            &serde_json::json!({ "user": user, "service": service, "iat": iat }),
        )?;
        v["code"].as_str().map(str::to_string).context("no code")
    }

    /// 亮码: a dynamic code as the phone shows it — the text and its PNG in `symbology`.
    pub fn show_dynamic(
        &self,
        user: &str,
        service: &str,
        symbology: crate::decode::Symbology,
    ) -> anyhow::Result<(String, Vec<u8>)> {
        use base64::Engine as _;
        let v = self.post(
            "/admin/v1/codes/dynamic",
            &serde_json::json!({ "user": user, "service": service, "render": symbology }),
        )?;
        let code = v["code"].as_str().context("no code")?.to_string();
        let png = base64::engine::general_purpose::STANDARD
            .decode(v["png_base64"].as_str().context("no png_base64")?)
            .context("png_base64")?;
        Ok((code, png))
    }

    /// A static code's action (`apply` returns the code text in `code`).
    pub fn static_action(&self, cat: &str, sn: &str, action: &str) -> anyhow::Result<Value> {
        self.post(
            &format!("/admin/v1/static/{cat}/{sn}/{action}"),
            &Value::Null,
        )
    }
}
