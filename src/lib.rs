//! # yima-gate
//!
//! The edge scan-verification gateway of the 一码通办 platform: it reads YM1 codes
//! (`shared/spec/code-format.md`) at gates and counters, verifies them locally against keys
//! and status lists cached from the platform, records every verification durably, and acts.
//!
//! ## Data flow
//! ```text
//!  camera / mjpeg / files ─frames─▶ decode ─┐
//!  scanner (tty, tcp, stdin) ─texts─────────┤
//!                                presentation ─▶ checkpoint ─▶ act: display · rules → relay, webhook
//!                                               (verifier + store: durable before the answer)
//!  local API (verify, records, status, metrics) ─▶ checkpoint
//!
//!  sync thread ⇄ platform (ym-sync/1, mutual TLS): signed bundles ─▶ checkpoint.set_trust,
//!               durable records ─▶ pushed exactly once ─▶ store cursor, then deleted
//! ```
//!
//! ## Code map
//! Verification core:
//! - [`verdict`] — `Reason` (stable snake_case codes), Chinese messages, `Verdict`, business claims.
//! - [`code`] — the YM1 format: text ⇄ COSE_Sign1/COSE_Mac0 ⇄ CWT claims; parse and mint.
//! - [`keys`] — the four algorithms, trust entries (spec JSON), private key files, secrets.
//! - [`policy`] — the trust state: keys, static-code status list, services, terminal, settings.
//! - [`clock`] — injected clock; trusted-time floor from platform anchor + monotonic time.
//! - [`verifier`] — the pure verifier: (text, time, trust state, replay view) → verification.
//! - [`record`] — the verification record (keyed hashes, no personal data).
//! - [`store`] — sled: records, replay tags, sequence numbers; fsync; crash recovery.
//! - [`checkpoint`] — verify + record in one durable step; the only road to an open gate.
//!
//! Reading:
//! - [`capture`] — frame and text sources (files, MJPEG over HTTP, scanner lines from a TTY,
//!   TCP or stdin), the newest-frame-wins slot, camera pixel-format conversion.
//! - [`camera`] — V4L2 camera (nokhwa) as a source: own pixel conversion, reopen with backoff.
//! - [`decode`] — frame → code texts: rxing + rqrr cascade (half frame, regions of interest at
//!   full resolution, adaptive passes, image variants), time-bounded.
//! - [`presentation`] — one presentation per code in view, whatever the frame count.
//! - [`qr`] — render a code as a QR image; load images within size limits.
//! - [`synth`] — seeded synthetic 1280×720 gate frames (tests, benches, demo).
//!
//! The daemon:
//! - [`config`] — the gate's TOML configuration, validated once, every problem keyed.
//! - [`daemon`] — the pipeline threads and channels of `yima-gate run`; one shutdown path.
//! - [`rules`] — the fusion rule engine: verdict + kind/service/scene/mode → actions.
//! - [`relay`] — the gate relay: GPIO character device, pulsed off the verdict path.
//! - [`hook`] — a local program run per routed verdict, verdict in its environment, timed out.
//! - [`webhook`] — signed POSTs of verdicts to the business system, with timeout and retries.
//! - [`worker`] — a bounded queue drained by one thread: outputs off the verdict path.
//! - [`api`] — the local HTTP API (axum) and the status page; token, size and rate bounds.
//! - [`serial`] — verdict lines to a serial LED display or PLC (UTF-8 or GB18030).
//! - [`tls`] — the rustls crypto provider (ring), installed once.
//! - [`cli`] — the command line (`init`, `keygen`, `mint`, `verify`, `decode`, `run`,
//!   `check-config`, `enroll`, `sync`, `doctor`, `platform`, `demo`).
//! - [`doctor`] — the technician's on-site checklist.
//! - [`demo`] — the whole system on one machine: platform, enrolled gateway, gate frames.
//!
//! The platform conversation:
//! - [`sync`] — the gateway's client: enrollment, bundle pulls, record pushes, online decode;
//!   [`sync::wire`] the protocol's wire types, [`sync::bundle`] signing and checking bundles.
//! - [`pki`] — the platform CA (rcgen), terminal certificates, rustls configs (mutual TLS,
//!   CA-pinned enrollment).
//! - [`platform`] — the reference platform: sync API over mutual TLS, admin API, sled state
//!   ([`platform::db`]), fault injection for tests.
//!
//! ## Architecture invariants
//! - **The verifier is pure.** No I/O, no clock reads: it is handed the time, the trust state and
//!   a read-only replay view, so every rule is table-tested (`tests/verifier_table.rs`).
//! - **A refused code is a `Verdict`, not an `Err`.** `Err` means the program failed (disk, config);
//!   then the gate stays shut.
//! - **Durable before open.** [`checkpoint::Checkpoint::check`] returns only after the record —
//!   which carries the replay tag of an accepted dynamic code, in one atomic sled insert — is
//!   flushed and fsynced; outputs run only after that. Sequence numbers are never reused.
//! - **Only `store` knows sled** on the gateway (and `platform::db` on the reference platform).
//!   Everything else sees `Record`, `ReplayView`, typed operations.
//! - **Records leave exactly once.** Only durable records are pushed; the platform's cursor is
//!   fsynced before the records it covers are deleted; `store_id` names the sequence space.
//! - **Trust from the platform is signed and ages.** A bundle is checked against the root key
//!   pinned at enrollment before anything in it is used; the trust state it yields expires
//!   (`policy_stale`) after the platform's maximum offline age.
//! - **Sync never sits on the gate's path.** It runs on its own thread; online decode is
//!   bounded by a short timeout, then local verification decides.
//! - **Only `clock::SystemTimeSource` reads the OS clocks** for verification time.
//! - **No personal data leaves the verifier.** `sub` and `cti` become keyed hashes in records;
//!   `Debug` of claims and keys hides them; secrets are written 0600 and never logged.
//! - **Wire types are separate from internal types.** `keys::TrustEntry` (trust file JSON),
//!   `checkpoint::VerdictReport` (what callers see), the OpenAPI document, vs.
//!   `keys::TrustedKey`, `verifier::Verification`, `record::Record`.
//! - **Frames may be dropped, verdicts never.** Camera frames go through a newest-wins slot;
//!   presented codes and verdicts through bounded channels that block.
//! - **Nothing panics on input.** Parsers are total; the QR decoders run under `catch_unwind`.

pub mod verification;

pub mod clock;

pub mod capture;
pub mod decode;
pub mod presentation;

pub mod checkpoint;
pub mod store;

pub mod act;

pub mod sync;

pub mod api;
pub mod telemetry;

pub mod daemon;

pub mod cli;

pub mod files;
pub mod local_trust;
pub mod render;

#[cfg(feature = "platform")]
pub mod platform;

#[cfg(feature = "platform")]
pub mod demo;
