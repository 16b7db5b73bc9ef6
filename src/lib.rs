//! # yima-gate
//!
//! The edge scan-verification gateway of the 一码通办 platform: it reads YM1 codes (the format
//! is documented in [`verification::code`]) at gates and counters, verifies them locally
//! against keys and status lists cached from the platform, records every verification
//! durably, and acts.
//!
//! ## Data flow
//! ```text
//!  capture ──frames──▶ decode ──texts──▶ presentation ──▶ checkpoint ──▶ act
//!  (camera, MJPEG,    (QR cascade,      (one per code    (verification  (display, rules →
//!   files; scanners    Grid Matrix)      in view)         + store:       relay, webhook,
//!   on TTY/TCP/stdin ──texts──────────▶                   durable before command, serial)
//!   skip decode)                                           the answer)
//!  api (verify, records, status, metrics) ──▶ checkpoint      telemetry ◀── every stage
//!  sync ⇄ platform (ym-sync/1, mutual TLS): signed bundles ──▶ checkpoint's trust state;
//!         the checkpoint's outbox ──▶ records pushed exactly once ──▶ deleted
//! ```
//!
//! ## Code map (in data-flow order)
//! - [`verification`] — pure: the YM1 code format, verdicts and reason codes, the four
//!   algorithms and their keys, the trust state, the verifier, the record.
//! - [`clock`] — the injected clock; trusted-time floor from platform anchor + monotonic time.
//! - [`capture`] — sources, one file each (camera, MJPEG, files, scanners), the newest-frame
//!   slot, pixel conversion, image loading within limits.
//! - [`decode`] — frame → code texts: the cascade (one screen), engines (rxing and rqrr for
//!   QR, [`gridmatrix`] for Grid Matrix), a grey-level QR sampler for small blurred modules,
//!   QR Model 1's block order (rxing splits it the Model 2 way), filters, regions.
//! - [`gridmatrix`] — GB/T 27766 Grid Matrix, our own: Reed–Solomon over GF(2⁷), block
//!   tables, placement, data modes, encoder, decoder, clean-image reader, and the
//!   camera-frame detector (junction saddles → lattice → local fit → per-macromodule sampling).
//! - [`presentation`] — one presentation per code in view, whatever the frame count.
//! - [`store`] — sled: records, replay tags, sequence numbers; group commit with fsync; the
//!   recovery ladder; the outbox. Seen by nothing but the checkpoint.
//! - [`checkpoint`] — verify + record in one durable step, the only road to an open gate; the
//!   typed view of the store for everyone else (status snapshot, records, outbox).
//! - [`act`] — outputs of durable verdicts: display line, fusion rules, relay, webhook, local
//!   command, serial display; each on its own bounded worker.
//! - [`sync`] — beside the pipeline: enrollment, the platform client, signed bundles, wire
//!   types, the terminal's TLS.
//! - [`telemetry`] — counters, histograms, source and relay health, the frame thumbnail.
//! - [`api`] — the local HTTP API and status page; the HTTP server loop it shares with the
//!   reference platform.
//! - [`daemon`] — `yima-gate run`: configuration, wiring, the pipeline threads, shutdown.
//! - [`cli`] — the command line and its exit codes; `doctor`.
//! - [`files`] — files outside sled written durably and privately; secrets read from private
//!   files; tokens.
//! - [`local_trust`] — the offline trust path: trust, key and status files into trust values.
//! - [`render`] — code texts as QR or Grid Matrix images and PNG (minting, the platform's
//!   亮码, tests, the demo).
//! - [`platform`] (feature `platform`) — the reference central platform: sync API over
//!   mutual TLS, admin API, its CA and sled state, fault injection for tests; the pushed
//!   records behind one storage interface (`platform::records`) on sled or PostgreSQL.
//! - [`demo`] (feature `platform`) — the whole system on one machine; seeded synthetic gate
//!   frames.
//!
//! ## Architecture invariants
//! - **The verifier is pure.** [`verification`] does no I/O and reads no clock: it is handed
//!   the time, the trust state and a read-only replay view, so every rule is table-tested.
//!   It imports nothing of the crate but [`clock`]'s `VerifyTime` (checked by a test).
//! - **A refused code is a `Verdict`, not an `Err`.** `Err` means the program failed (disk,
//!   config); then the gate stays shut.
//! - **Durable before open.** [`checkpoint::Checkpoint::check`] returns only after the record —
//!   which carries the replay tag of an accepted dynamic code, in one atomic sled insert — is
//!   flushed and fsynced; outputs run only after that. Sequence numbers are never reused.
//! - **Only `store` knows sled** on the gateway (and `platform::db` on the reference platform);
//!   `Store` itself is seen by nothing but the checkpoint (checked by a test).
//! - **Records leave exactly once.** Only durable records are pushed; the platform's cursor is
//!   fsynced before the records it covers are deleted; `store_id` names the sequence space.
//!   The platform acknowledges a batch only after it is fsynced, and never claims a cursor
//!   over records it does not hold (checked at start and at ingest).
//! - **Nothing acknowledged lives in a file sled does not make durable.** sled writes an item
//!   above a quarter of its segment (128 KiB) to a blob file it never fsyncs: every value on
//!   both sides stays far below that (bounded records and chunks; the gate's policy cache is a
//!   file of its own), and [`files::EngineFiles`] fsyncs sled's `conf`, directories and any
//!   blob file that appears anyway.
//! - **Trust from the platform is signed and ages.** A bundle is checked against the root key
//!   pinned at enrollment before anything in it is used; the trust state it yields expires
//!   (`policy_stale`) after the platform's maximum offline age.
//! - **Sync never sits on the gate's path.** It runs on its own thread; online decode is
//!   bounded by a short timeout, then local verification decides.
//! - **Only `clock` reads the OS clocks** for verification time.
//! - **No personal data leaves the verifier.** `sub` and `cti` become keyed hashes in records;
//!   `Debug` of claims and keys hides them; secrets are written 0600 and never logged.
//! - **State is private.** The process runs with umask 077; directories it creates are 0700,
//!   files 0600, and files outside sled are written through [`files`] (temporary file, fsync,
//!   rename, fsync of the directory).
//! - **Wire types are separate from internal types.** The trust file's `TrustEntry`, the API's
//!   `VerdictReport` and `RecordEntry`, the sync protocol's `wire` types, against `TrustedKey`,
//!   `Verification`, the stored `Record`.
//! - **Frames may be dropped, verdicts never.** Camera frames go through a newest-wins slot;
//!   presented codes and verdicts through bounded channels that block.
//! - **Nothing panics on input.** Parsers are total; the QR engines run under `catch_unwind`;
//!   a stage that panics anyway ends the run with exit 70 instead of a silent exit 0.
//! - **Decode work is bounded, and counted.** Engines see only images the finder census
//!   admits; the live cascade stops by its work allowance (the same reads on any core), with
//!   the clock as a backstop; files stop by the clock, and no stage starts that would overrun.
//! - **A failing disk fails closed and heals.** Below the free-space reserve, or after a write
//!   fails, every code is refused `store_unavailable` without a record; the checkpoint reopens
//!   the store from disk by itself once space is back.
//! - **The gate build is the gate.** `--no-default-features` leaves out [`platform`], [`demo`]
//!   and the `mint`/`keygen`/`platform`/`demo` commands; nothing outside them imports them
//!   (checked by a test).

pub mod verification;

pub mod clock;

pub mod capture;
pub mod decode;
pub mod gridmatrix;
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
