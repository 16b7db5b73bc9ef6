//! The platform's sync API as blocking HTTP calls over mutual TLS (reqwest on rustls): bundle
//! pulls, record pushes, online decode. Knows URLs and status codes; nothing about the store.

use std::time::Duration;

use super::enrollment::Enrollment;
use super::wire::{self, DecodeReply, DecodeRequest, PushReply, SignedBundle};
use super::SyncError;

pub(crate) fn transport(e: reqwest::Error) -> SyncError {
    // reqwest's Display names the URL but never a body: no personal data leaves here.
    SyncError::Transport(e.to_string())
}

pub(crate) fn http_client(
    tls: rustls::ClientConfig,
    timeout: Duration,
) -> Result<reqwest::blocking::Client, SyncError> {
    crate::sync::tls::install_provider();
    reqwest::blocking::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(transport)
}

pub(crate) fn base_url(url: &str) -> String {
    url.trim_end_matches('/').to_string()
}

/// Error text of a non-2xx answer (the platform's `ErrorBody`, else the status).
pub(crate) fn status_error(resp: reqwest::blocking::Response) -> SyncError {
    let status = resp.status().as_u16();
    let message = resp
        .json::<wire::ErrorBody>()
        .map(|b| b.error)
        .unwrap_or_else(|_| "no error body".into());
    SyncError::Status { status, message }
}

/// HTTP calls to the platform over mutual TLS.
#[derive(Debug)]
pub struct PlatformClient {
    http: reqwest::blocking::Client,
    base: String,
}

impl PlatformClient {
    pub fn new(enrollment: &Enrollment, timeout: Duration) -> Result<PlatformClient, SyncError> {
        let tls = crate::sync::tls::client_config(
            &enrollment.ca_pem,
            Some((&enrollment.cert_pem, &enrollment.key_pem)),
        )
        .map_err(|e| SyncError::Enrollment(e.to_string()))?;
        Ok(PlatformClient {
            http: http_client(tls, timeout)?,
            base: base_url(&enrollment.platform_url),
        })
    }

    /// The newest bundle, with status changes after `since`.
    pub fn pull(&self, since: u64) -> Result<SignedBundle, SyncError> {
        let resp = self
            .http
            .get(format!("{}/v1/bundle?since={since}", self.base))
            .header("X-Yima-Protocol", wire::PROTOCOL)
            .send()
            .map_err(transport)?;
        if !resp.status().is_success() {
            return Err(status_error(resp));
        }
        resp.json().map_err(|e| SyncError::Reply(e.to_string()))
    }

    /// Pushes one batch (its JSON already encoded) to `url`: the platform's `/v1/records` or
    /// its data-receiving address.
    pub fn push(
        &self,
        url: Option<&str>,
        key: &str,
        body: Vec<u8>,
    ) -> Result<PushReply, SyncError> {
        let url = url.map_or_else(|| format!("{}/v1/records", self.base), str::to_string);
        let resp = self
            .http
            .post(url)
            .header("X-Yima-Protocol", wire::PROTOCOL)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .map_err(transport)?;
        if resp.status() == reqwest::StatusCode::CONFLICT {
            return Err(SyncError::Conflict {
                key: key.to_string(),
            });
        }
        if !resp.status().is_success() {
            return Err(status_error(resp));
        }
        resp.json().map_err(|e| SyncError::Reply(e.to_string()))
    }

    /// Asks the platform's decode engine, waiting at most `timeout`.
    pub fn decode(&self, code: &str, timeout: Duration) -> Result<DecodeReply, SyncError> {
        let resp = self
            .http
            .post(format!("{}/v1/decode", self.base))
            .header("X-Yima-Protocol", wire::PROTOCOL)
            .timeout(timeout)
            .json(&DecodeRequest {
                code: code.to_string(),
            })
            .send()
            .map_err(transport)?;
        if !resp.status().is_success() {
            return Err(status_error(resp));
        }
        resp.json().map_err(|e| SyncError::Reply(e.to_string()))
    }
}
