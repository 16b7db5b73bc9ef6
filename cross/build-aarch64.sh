#!/usr/bin/env bash
# Cross-builds yima-gate for 64-bit ARM (aarch64-unknown-linux-gnu) on Debian 12 without
# containers: Debian's rustc-web with the arm64 standard library through multiarch, the gcc
# cross linker, and qemu-user-static to run the tests.
#
#   cross/build-aarch64.sh            # the gate build (no reference platform, demo or minting)
#                                     #   → target/aarch64-unknown-linux-gnu/release/yima-gate
#   cross/build-aarch64.sh --test     # also build the gate build's test suite and run it under qemu
#
# Needs root (or sudo) once for the packages. rustup's own aarch64 target is not used: its
# downloads were unreliable where this was measured.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

# --- toolchain (Debian packages; the two rustc-web packages must have the same version) ---
PKGS="rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross
      linux-libc-dev-arm64-cross libclang-dev qemu-user-static"
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $SUDO dpkg --add-architecture arm64
  $SUDO apt-get update -qq
fi
# shellcheck disable=SC2086
if ! dpkg -s $PKGS >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq $PKGS >/dev/null
fi
host_v=$(dpkg-query -W -f='${Version}' rustc-web)
std_v=$(dpkg-query -W -f='${Version}' libstd-rust-web-dev:arm64)
if [ "$host_v" != "$std_v" ]; then
  echo "rustc-web $host_v and libstd-rust-web-dev:arm64 $std_v differ; install equal versions" >&2
  exit 1
fi

# --- environment: Debian's compiler, the cross linker, C compilers for -sys crates ---
# rustc-web installs as /usr/bin/rustc; any cargo drives it (rustup's, if present, first in PATH).
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
CARGO=cargo
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
# bindgen (nokhwa's V4L2 bindings) must see the arm64 kernel headers, not the host's.
export BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu="--target=aarch64-linux-gnu -I/usr/aarch64-linux-gnu/include"
# There is no binfmt_misc here: name the runner. The trap: without LD_LIBRARY_PATH the cross
# loader meets the multiarch libc and the first pthread_create spins forever.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib"
# Tests that start the yima-gate binary start it through the same runner.
export YIMA_TEST_RUNNER="$CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER"

# The shipped build: release with thin LTO. With --test, the binary and the test suite come
# from one `cargo test` build in a profile of their own (`cross-test`: release without LTO,
# more codegen units): the suite's dev-dependencies change the features of tokio, rustls, ring
# and ~60 other crates, so a separate `cargo build` of the binary would compile them twice;
# the integration tests start the binary that build makes. Release code runs the tests about
# ten times faster under emulation than a debug build would.
start=$(date +%s)
if [ "${1:-}" = "--test" ]; then
  PROFILE=cross-test
  "$CARGO" test --locked --profile "$PROFILE" --no-default-features --target "$TARGET" --no-run
else
  PROFILE=release
  "$CARGO" build --locked --profile "$PROFILE" --no-default-features --target "$TARGET" --bin yima-gate
fi
bin="target/$TARGET/$PROFILE/yima-gate"
aarch64-linux-gnu-strip -o "$bin.stripped" "$bin"
echo "built $bin in $(( $(date +%s) - start )) s; stripped $(stat -c %s "$bin.stripped") bytes"
# The binary runs (under qemu here, natively on the board).
$CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER "$bin" --version

if [ "${1:-}" = "--test" ]; then
  start=$(date +%s)
  "$CARGO" test --locked --profile "$PROFILE" --no-default-features --no-fail-fast --target "$TARGET"
  echo "aarch64 test suite under qemu: $(( $(date +%s) - start )) s"
fi
