#!/usr/bin/env bash
# Builds the Debian package of yima-gate from a built binary (the gate build:
# `--no-default-features`), with dpkg-deb and dpkg-shlibdeps:
#   cross/package-deb.sh amd64 target/release/yima-gate [OUTDIR]
#   cross/package-deb.sh arm64 target/aarch64-unknown-linux-gnu/release/yima-gate [OUTDIR]
# YIMA_DEB_VERSION overrides the version (Cargo.toml's otherwise; tests build upgrades).
# Contents: /usr/bin/yima-gate (stripped), its man page, the systemd unit, the example
# configuration in /etc/yima-gate/ (conffiles), the udev rule for GPIO chips, copyright and
# changelog, md5sums, and maintainer scripts that create the `yima-gate` system user and
# provision /var/lib/yima-gate. Prints the path of the .deb.
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=${1:?arch: amd64 or arm64}
BIN=${2:?path to the built yima-gate binary}
OUT=${3:-target/deb}
VERSION=${YIMA_DEB_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)}
# A Debian revision: this package is built from the upstream tree, not a Debian source package.
case "$VERSION" in *-*) ;; *) VERSION="$VERSION-1" ;; esac
case "$ARCH" in
  amd64) STRIP=strip; RUN=() ;;
  arm64) STRIP=aarch64-linux-gnu-strip
         RUN=(qemu-aarch64-static -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib) ;;
  *) echo "unknown arch $ARCH" >&2; exit 2 ;;
esac
command -v "$STRIP" >/dev/null || { echo "$STRIP is needed" >&2; exit 2; }

ROOT=$(mktemp -d)
WORK=$(mktemp -d)
trap 'rm -rf "$ROOT" "$WORK"' EXIT
chmod 0755 "$ROOT"
umask 022
install -D -m 0755 "$BIN" "$ROOT/usr/bin/yima-gate"
"$STRIP" --strip-unneeded --remove-section=.comment --remove-section=.note "$ROOT/usr/bin/yima-gate"
install -D -m 0644 systemd/yima-gate.service "$ROOT/lib/systemd/system/yima-gate.service"
# The configuration is root:root here; postinst gives it to group yima-gate (0640).
install -D -m 0640 config/gate.toml "$ROOT/etc/yima-gate/gate.toml"
install -D -m 0640 config/status.example.json "$ROOT/etc/yima-gate/status.example.json"
install -D -m 0644 cross/debian/60-yima-gate-gpio.rules "$ROOT/lib/udev/rules.d/60-yima-gate-gpio.rules"
DOC="$ROOT/usr/share/doc/yima-gate"
install -D -m 0644 README.md "$DOC/README.md"
install -D -m 0644 cross/debian/copyright "$DOC/copyright"
DATE=$(date -u -R -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")
cat > "$WORK/changelog" <<CHANGELOG
yima-gate ($VERSION) unstable; urgency=medium

  * Release $VERSION of the yima-gate scan-verification gateway.

 -- yima-gate maintainers <yima-gate@packages.yima-gate.org>  $DATE
CHANGELOG
gzip -9n -c "$WORK/changelog" > "$DOC/changelog.Debian.gz"
chmod 0644 "$DOC/changelog.Debian.gz"
# The man page, generated from the command line's own definitions.
install -d -m 0755 "$ROOT/usr/share/man/man1"
"${RUN[@]}" "$ROOT/usr/bin/yima-gate" manpage | gzip -9n > "$ROOT/usr/share/man/man1/yima-gate.1.gz"
chmod 0644 "$ROOT/usr/share/man/man1/yima-gate.1.gz"
install -d -m 0755 "$ROOT/DEBIAN"
install -m 0755 cross/debian/postinst cross/debian/prerm cross/debian/postrm "$ROOT/DEBIAN/"
printf '/etc/yima-gate/gate.toml\n/etc/yima-gate/status.example.json\n' > "$ROOT/DEBIAN/conffiles"
chmod 0644 "$ROOT/DEBIAN/conffiles"

# Depends: the shared libraries the binary links, as dpkg-shlibdeps computes them.
mkdir -p "$WORK/debian"
printf 'Source: yima-gate\n\nPackage: yima-gate\nArchitecture: %s\n' "$ARCH" > "$WORK/debian/control"
(
  cd "$WORK"
  dpkg-shlibdeps -O --ignore-missing-info -e"$ROOT/usr/bin/yima-gate" 2>/dev/null
) > "$WORK/substvars" || true
# On a cross-building host the libraries resolve to multiarch (`libc6:arm64`) or cross
# toolchain packages (`libgcc-s1-arm64-cross`); on the gate they are the plain packages.
SHLIBS=$(sed -n 's/^shlibs:Depends=//p' "$WORK/substvars" | sed -E "s/:$ARCH//g; s/-$ARCH-cross//g")
if [ -z "$SHLIBS" ]; then
  # No dpkg database for this architecture here: the glibc the binary needs, read off it.
  need=$(objdump -T "$ROOT/usr/bin/yima-gate" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1 | cut -d_ -f2)
  SHLIBS="libc6 (>= ${need:-2.34}), libgcc-s1 (>= 4.2)"
fi

(cd "$ROOT" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) > "$ROOT/DEBIAN/md5sums"
chmod 0644 "$ROOT/DEBIAN/md5sums"
SIZE=$(du -k -s --exclude=DEBIAN "$ROOT" | cut -f1)
cat > "$ROOT/DEBIAN/control" <<CONTROL
Package: yima-gate
Version: $VERSION
Architecture: $ARCH
Maintainer: yima-gate maintainers <yima-gate@packages.yima-gate.org>
Installed-Size: $SIZE
Depends: $SHLIBS, adduser, systemd, init-system-helpers (>= 1.54)
Section: net
Priority: optional
Homepage: https://packages.yima-gate.org/
Description: edge scan-verification gateway (一码通办)
 yima-gate runs on hardware gates and counter scanners. It reads YM1 codes
 (QR) from cameras and hardware scanners, verifies them locally with keys
 cached from the central platform, refuses expired, replayed, forged and
 revoked codes, records every verification durably before the gate opens,
 and syncs its records with the platform exactly once.
CONTROL
chmod 0644 "$ROOT/DEBIAN/control"
mkdir -p "$OUT"
DEB="$OUT/yima-gate_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "$DEB" >/dev/null
echo "$DEB"
