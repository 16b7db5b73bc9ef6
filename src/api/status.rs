//! What the gate says about itself over HTTP: readiness with its reasons (`/readyz`), the
//! status document the status page draws (`/api/v1/status`), and Prometheus metrics
//! (`/metrics`, counters `_total`, latency histograms, `yima_build_info`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::ApiState;
use crate::telemetry::Histogram;
use crate::verification::verdict::Reason;

/// Why the gate is not ready, with a stable code and the Chinese message for the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadinessReason {
    /// The daemon is stopping.
    Stopping,
    /// No configured source delivers (camera unplugged, stream down, scanner port closed).
    NoSourceDelivering,
    /// The platform policy is older than the maximum offline age: every code is refused.
    PolicyStale,
    /// The store was lost or damaged: dynamic codes from before it are refused for a window.
    StoreRecovering,
    /// A write failed: the store is out of service until it is reopened from disk.
    StoreFailed,
    /// The store's filesystem is below its reserve of free space: every code is refused.
    DiskFull,
    /// The records waiting for the platform reached the quota: every code is refused.
    BacklogFull,
    /// The platform revoked this terminal: every code is refused.
    TerminalNotAuthorized,
    /// No key is trusted: every code would be refused.
    NoKeys,
    /// The gate relay cannot be driven.
    RelayDown,
}

impl ReadinessReason {
    pub fn message(self) -> &'static str {
        match self {
            ReadinessReason::Stopping => "终端正在停止",
            ReadinessReason::NoSourceDelivering => "摄像头或扫码器无输入",
            ReadinessReason::PolicyStale => "终端策略已过期",
            ReadinessReason::StoreRecovering => "终端恢复中",
            ReadinessReason::StoreFailed => "终端存储故障",
            ReadinessReason::DiskFull => "终端存储空间不足",
            ReadinessReason::BacklogFull => "终端存储已满",
            ReadinessReason::TerminalNotAuthorized => "终端未授权",
            ReadinessReason::NoKeys => "无可用密钥",
            ReadinessReason::RelayDown => "闸机继电器故障",
        }
    }
}

/// The gate's readiness now.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub reasons: Vec<ReadinessEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReadinessEntry {
    pub code: ReadinessReason,
    pub message: &'static str,
}

/// Ready means: a presented code would be judged on its merits and an accepted one would open
/// the gate. Every reason it is not is listed.
pub fn readiness(st: &ApiState) -> Readiness {
    let mut reasons = Vec::new();
    let now = st.checkpoint.clock().now();
    let trust = st.checkpoint.trust();
    let store = st.checkpoint.status();
    if !st.running.load(Ordering::SeqCst) {
        reasons.push(ReadinessReason::Stopping);
    }
    let sources = st.counters.source_reports();
    if !sources.is_empty() && !sources.iter().any(|s| s.up) {
        reasons.push(ReadinessReason::NoSourceDelivering);
    }
    if trust.valid_until_ms.is_some_and(|u| now.unix_ms > u) {
        reasons.push(ReadinessReason::PolicyStale);
    }
    let window_ms = (trust.settings.refresh_s() + trust.settings.skew_s()) * 1000;
    if store.replay_guard_pending
        || store
            .replay_guard_from_ms
            .is_some_and(|g| now.unix_ms < g.saturating_add(window_ms))
    {
        reasons.push(ReadinessReason::StoreRecovering);
    }
    if store.failed.is_some() {
        reasons.push(ReadinessReason::StoreFailed);
    }
    if store.low_space {
        reasons.push(ReadinessReason::DiskFull);
    }
    let limit = st.checkpoint.backlog_limit();
    if limit > 0 && store.backlog >= limit {
        reasons.push(ReadinessReason::BacklogFull);
    }
    if !trust.terminal.authorized {
        reasons.push(ReadinessReason::TerminalNotAuthorized);
    }
    if trust.keys.is_empty() {
        reasons.push(ReadinessReason::NoKeys);
    }
    if let Some(relay) = st.counters.relay.lock().ok().and_then(|r| r.clone()) {
        if !relay.report().up {
            reasons.push(ReadinessReason::RelayDown);
        }
    }
    Readiness {
        ready: reasons.is_empty(),
        reasons: reasons
            .into_iter()
            .map(|code| ReadinessEntry {
                code,
                message: code.message(),
            })
            .collect(),
    }
}

pub(super) async fn readyz(State(st): State<Arc<ApiState>>) -> Response {
    let r = readiness(&st);
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(r)).into_response()
}

pub(super) async fn status(State(st): State<Arc<ApiState>>) -> Response {
    let c = &st.counters;
    let store = st.checkpoint.status();
    let trust = st.checkpoint.trust();
    let by_reason: BTreeMap<&str, u64> = Reason::ALL
        .iter()
        .zip(c.by_reason.iter())
        .map(|(r, n)| (r.code(), n.load(Ordering::Relaxed)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let recent = c
        .recent
        .lock()
        .map(|r| r.iter().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    let now = st.checkpoint.clock().now();
    let sync = sync_summary(&st, now.unix_ms);
    let readiness = readiness(&st);
    let relay = c
        .relay
        .lock()
        .ok()
        .and_then(|r| r.clone())
        .map(|r| r.report());
    Json(serde_json::json!({
        "terminal": st.terminal,
        "version": env!("CARGO_PKG_VERSION"),
        "ready": readiness.ready,
        "readiness": readiness.reasons,
        "clock": {
            "trusted": now.trusted,
            "now_ms": now.unix_ms,
            "floor_ms": store.clock_floor_ms,
            // What the system clock says (technicians compare it with the trusted time).
            "wall_ms": crate::clock::wall_clock_ms(),
        },
        "store": store,
        "trust": {
            "keys": trust.keys.len(),
            "static_codes": trust.statuses.len(),
            "refresh_s": trust.settings.refresh_s(),
            "skew_s": trust.settings.skew_s(),
            "authorized": trust.terminal.authorized,
            "valid_until_ms": trust.valid_until_ms,
            "source": if st.syncer.is_some() { "platform bundle" } else { "local files" },
        },
        "sources": c.source_reports(),
        "relay": relay,
        "sync": sync,
        "counters": {
            "frames": c.frames.load(Ordering::Relaxed),
            "frames_dropped": c.frames_dropped.load(Ordering::Relaxed),
            "decoded": c.decoded.load(Ordering::Relaxed),
            "presentations": c.presentations.load(Ordering::Relaxed),
            "verified": c.verified.load(Ordering::Relaxed),
            "accepted": c.accepted.load(Ordering::Relaxed),
            "flood_suppressed": c.flood_suppressed.load(Ordering::Relaxed),
            "by_reason": by_reason,
        },
        "recent": recent,
    }))
    .into_response()
}

/// The sync section of the status: `null` when the gate is not enrolled.
fn sync_summary(st: &ApiState, now_ms: i64) -> serde_json::Value {
    let Some(syncer) = &st.syncer else {
        return serde_json::Value::Null;
    };
    let s = &syncer.status;
    let ms = |a: &std::sync::atomic::AtomicI64| {
        let v = a.load(Ordering::Relaxed);
        (v != 0).then_some(v)
    };
    let issued = ms(&s.bundle_issued_at_ms);
    let until = ms(&s.policy_valid_until_ms);
    let outbox = st.checkpoint.outbox();
    serde_json::json!({
        "terminal": syncer.terminal_id(),
        "last_pull_ok_ms": ms(&s.last_pull_ok_ms),
        "last_push_ok_ms": ms(&s.last_push_ok_ms),
        "bundle_issued_at_ms": issued,
        "policy_age_ms": issued.map(|i| now_ms - i),
        "policy_valid_until_ms": until,
        "policy_stale": until.is_some_and(|u| now_ms > u),
        "backlog": outbox.as_ref().map_or(0, |o| o.backlog()),
        "oldest_unsynced_ms": outbox.as_ref().ok().and_then(|o| o.oldest_unsynced_ms().ok().flatten()),
        "records_pushed": s.records_pushed.load(Ordering::Relaxed),
        "conflicts": s.conflicts.load(Ordering::Relaxed),
        "gaps": s.gaps.load(Ordering::Relaxed),
        "bundles_refused": s.bundles_refused.load(Ordering::Relaxed),
        "last_error": s.last_error(),
    })
}

/// Prometheus text exposition (format 0.0.4).
struct Exposition(String);

impl Exposition {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.head(name, kind, help);
        let _ = writeln!(self.0, "{name} {value}");
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.one(name, "counter", help, value);
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl std::fmt::Display) {
        self.one(name, "gauge", help, value);
    }

    fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.head(name, "histogram", help);
        let (buckets, count, sum) = h.snapshot();
        for (le, n) in buckets {
            let _ = writeln!(self.0, "{name}_bucket{{le=\"{le}\"}} {n}");
        }
        let _ = writeln!(self.0, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(self.0, "{name}_sum {sum}");
        let _ = writeln!(self.0, "{name}_count {count}");
    }
}

/// Label values are escaped as the exposition format says.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(super) async fn metrics(State(st): State<Arc<ApiState>>) -> Response {
    let c = &st.counters;
    let store = st.checkpoint.status();
    let outbox = st.checkpoint.outbox();
    let now_ms = st.checkpoint.clock().now().unix_ms;
    let mut out = Exposition(String::new());
    out.head(
        "yima_build_info",
        "gauge",
        "The running build (always 1; the version is a label).",
    );
    let _ = writeln!(
        out.0,
        "yima_build_info{{version=\"{}\",terminal=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        label(&st.terminal)
    );
    out.counter(
        "yima_frames_total",
        "Frames captured.",
        c.frames.load(Ordering::Relaxed),
    );
    out.counter(
        "yima_frames_dropped_total",
        "Frames replaced by a newer one before decoding.",
        c.frames_dropped.load(Ordering::Relaxed),
    );
    out.counter(
        "yima_decoded_total",
        "Code texts decoded from frames.",
        c.decoded.load(Ordering::Relaxed),
    );
    out.counter(
        "yima_presentations_total",
        "Codes presented (consecutive sightings count once).",
        c.presentations.load(Ordering::Relaxed),
    );
    out.head(
        "yima_verdicts_total",
        "counter",
        "Verdicts by reason (recorded, and the unrecorded backlog_full).",
    );
    for (r, n) in Reason::ALL.iter().zip(c.by_reason.iter()) {
        let _ = writeln!(
            out.0,
            "yima_verdicts_total{{reason=\"{}\"}} {}",
            r.code(),
            n.load(Ordering::Relaxed)
        );
    }
    out.counter(
        "yima_flood_suppressed_total",
        "Unauthenticated texts beyond a source's flood allowance: counted, not recorded.",
        c.flood_suppressed.load(Ordering::Relaxed),
    );
    out.counter(
        "yima_replay_tags_purged_total",
        "Replay tags forgotten because their window ended.",
        c.replay_tags_purged.load(Ordering::Relaxed),
    );
    out.counter(
        "yima_store_commit_rounds_total",
        "Flush + fsync rounds since start.",
        store.commit_rounds,
    );
    out.histogram(
        "yima_frame_to_verdict_seconds",
        "Frame captured (or text read) until its verdict is durable and handed to the outputs.",
        &c.frame_to_verdict,
    );
    out.histogram(
        "yima_decode_seconds",
        "One frame through the decode cascade.",
        &c.decode,
    );
    out.histogram(
        "yima_verify_commit_seconds",
        "Verification and durable commit of one presented code.",
        &c.verify_commit,
    );
    out.head(
        "yima_source_up",
        "gauge",
        "1 while the source delivers (frames arriving; a scanner's device or port open).",
    );
    let sources = c.source_reports();
    for s in &sources {
        let _ = writeln!(
            out.0,
            "yima_source_up{{source=\"{}\",kind=\"{}\"}} {}",
            label(&s.name),
            serde_json::to_value(s.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            u8::from(s.up)
        );
    }
    out.head(
        "yima_source_reconnects_total",
        "counter",
        "Times a source was lost and reopened.",
    );
    for s in &sources {
        let _ = writeln!(
            out.0,
            "yima_source_reconnects_total{{source=\"{}\"}} {}",
            label(&s.name),
            s.reconnects
        );
    }
    if let Some(relay) = c.relay.lock().ok().and_then(|r| r.clone()) {
        let r = relay.report();
        out.gauge(
            "yima_relay_up",
            "1 while the gate relay is claimed and its last change succeeded.",
            u8::from(r.up),
        );
        out.counter(
            "yima_relay_openings_total",
            "Openings asked for (accepted codes routed to the relay).",
            r.openings,
        );
        out.counter(
            "yima_relay_coalesced_total",
            "Openings that arrived while the gate was open (it stayed open longer).",
            r.coalesced,
        );
        out.counter(
            "yima_relay_failures_total",
            "Changes of the relay line that failed.",
            r.failures,
        );
    }
    let readiness = readiness(&st);
    out.gauge(
        "yima_ready",
        "1 when a presented code would be judged and an accepted one open the gate.",
        u8::from(readiness.ready),
    );
    out.gauge(
        "yima_sync_backlog_records",
        "Verification records waiting for the platform.",
        store.backlog,
    );
    out.gauge("yima_store_bytes", "Store size on disk.", store.bytes);
    out.gauge(
        "yima_store_durable_seq",
        "Highest durable sequence number.",
        store.durable_seq,
    );
    out.gauge("yima_replay_tags", "Replay tags held.", store.replay_tags);
    out.gauge(
        "yima_clock_trusted",
        "1 when the terminal vouches for its clock.",
        u8::from(st.checkpoint.clock().now().trusted),
    );
    if let Some(syncer) = &st.syncer {
        let s = &syncer.status;
        let secs = |v: i64| u64::try_from(v / 1000).unwrap_or(0);
        let oldest = outbox
            .as_ref()
            .ok()
            .and_then(|o| o.oldest_unsynced_ms().ok().flatten());
        out.gauge(
            "yima_sync_oldest_record_age_seconds",
            "Age of the oldest record waiting for the platform.",
            oldest.map_or(0, |o| secs(now_ms - o)),
        );
        out.gauge(
            "yima_sync_last_pull_timestamp_seconds",
            "Last successful bundle pull (Unix time).",
            secs(s.last_pull_ok_ms.load(Ordering::Relaxed)),
        );
        out.gauge(
            "yima_sync_last_push_timestamp_seconds",
            "Last successful record push (Unix time).",
            secs(s.last_push_ok_ms.load(Ordering::Relaxed)),
        );
        let issued = s.bundle_issued_at_ms.load(Ordering::Relaxed);
        out.gauge(
            "yima_policy_age_seconds",
            "Age of the policy bundle in force (keys, status list, settings).",
            if issued == 0 {
                0
            } else {
                secs(now_ms - issued)
            },
        );
        out.gauge(
            "yima_policy_stale",
            "1 when the policy is older than the platform's maximum offline age (fail closed).",
            u8::from(issued != 0 && now_ms > s.policy_valid_until_ms.load(Ordering::Relaxed)),
        );
        out.counter(
            "yima_sync_records_pushed_total",
            "Records the platform confirmed since start.",
            s.records_pushed.load(Ordering::Relaxed),
        );
        out.counter(
            "yima_sync_conflicts_total",
            "Batches the platform refused as conflicting (409).",
            s.conflicts.load(Ordering::Relaxed),
        );
        out.counter(
            "yima_sync_gaps_total",
            "Times the platform held less than this gate had deleted (a restored platform).",
            s.gaps.load(Ordering::Relaxed),
        );
        out.histogram(
            "yima_sync_push_seconds",
            "One record batch pushed and confirmed.",
            &s.push_latency,
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out.0).into_response()
}
