//! The integration tests: one binary (one link, shared fixtures in `integration/common`), one
//! module per part of the product, in data-flow order. Tests whose outside tool is absent say
//! SKIP outside CI and fail in CI (`CI` set).

#[path = "integration/common/mod.rs"]
mod common;

#[path = "integration/architecture.rs"]
mod architecture;
#[path = "integration/fuzz.rs"]
mod fuzz;
#[path = "integration/interop.rs"]
mod interop;

#[path = "integration/vectors.rs"]
mod vectors;
#[path = "integration/verifier_table.rs"]
mod verifier_table;

#[path = "integration/capture.rs"]
mod capture;
#[path = "integration/decode.rs"]
mod decode;
#[path = "integration/gridmatrix.rs"]
mod gridmatrix;
#[path = "integration/serial.rs"]
mod serial;

#[path = "integration/crash.rs"]
mod crash;
#[path = "integration/daemon.rs"]
mod daemon;
#[path = "integration/faults.rs"]
mod faults;
#[path = "integration/status_page.rs"]
mod status_page;
#[path = "integration/store.rs"]
mod store;

#[cfg(feature = "platform")]
#[path = "integration/sync.rs"]
mod sync;

#[cfg(feature = "platform")]
#[path = "integration/platform_crash.rs"]
mod platform_crash;
#[cfg(feature = "platform")]
#[path = "integration/platform_store.rs"]
mod platform_store;

#[cfg(feature = "platform")]
#[path = "integration/openapi.rs"]
mod openapi;

#[cfg(feature = "platform")]
#[path = "integration/cli.rs"]
mod cli;
#[path = "integration/package.rs"]
mod package;
#[path = "integration/systemd.rs"]
mod systemd;
