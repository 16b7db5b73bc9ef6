#!/usr/bin/env bash
# Builds the Debian package of yima-gate from a built binary, with dpkg-deb only:
#   cross/package-deb.sh amd64 target/release/yima-gate [OUTDIR]
#   cross/package-deb.sh arm64 target/aarch64-unknown-linux-gnu/release/yima-gate [OUTDIR]
# Contents: /usr/bin/yima-gate (stripped), /lib/systemd/system/yima-gate.service, the
# example configuration in /etc/yima-gate/ (conffiles), maintainer scripts that create the
# `yima-gate` system user (groups video/gpio) and /var/lib/yima-gate.
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=${1:?arch: amd64 or arm64}
BIN=${2:?path to the built yima-gate binary}
OUT=${3:-target/deb}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
case "$ARCH" in
  amd64) STRIP=strip ;;
  arm64) STRIP=aarch64-linux-gnu-strip ;;
  armhf) STRIP=arm-linux-gnueabihf-strip ;;
  *) echo "unknown arch $ARCH" >&2; exit 2 ;;
esac
command -v "$STRIP" >/dev/null || STRIP=true

ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
install -D -m 0755 "$BIN" "$ROOT/usr/bin/yima-gate"
"$STRIP" "$ROOT/usr/bin/yima-gate" 2>/dev/null || true
install -D -m 0644 systemd/yima-gate.service "$ROOT/lib/systemd/system/yima-gate.service"
install -D -m 0640 config/gate.toml "$ROOT/etc/yima-gate/gate.toml"
install -D -m 0644 config/status.example.json "$ROOT/etc/yima-gate/status.example.json"
install -D -m 0644 cross/debian/60-yima-gate-gpio.rules "$ROOT/lib/udev/rules.d/60-yima-gate-gpio.rules"
install -D -m 0644 README.md "$ROOT/usr/share/doc/yima-gate/README.md"
install -d "$ROOT/DEBIAN"
install -m 0755 cross/debian/postinst cross/debian/prerm cross/debian/postrm "$ROOT/DEBIAN/"
printf '/etc/yima-gate/gate.toml\n/etc/yima-gate/status.example.json\n' > "$ROOT/DEBIAN/conffiles"
SIZE=$(du -k -s "$ROOT" | cut -f1)
cat > "$ROOT/DEBIAN/control" <<CONTROL
Package: yima-gate
Version: $VERSION
Architecture: $ARCH
Maintainer: yima-gate maintainers <yima-gate@example.invalid>
Installed-Size: $SIZE
Depends: libc6 (>= 2.34), adduser, systemd
Section: net
Priority: optional
Description: 一码通办 edge scan-verification gateway
 Reads YM1 codes from cameras and scanners at gates and counters, verifies them
 locally with keys cached from the platform, records every verification durably
 and syncs with the central platform.
CONTROL
mkdir -p "$OUT"
DEB="$OUT/yima-gate_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group --build "$ROOT" "$DEB" >/dev/null
echo "$DEB"
