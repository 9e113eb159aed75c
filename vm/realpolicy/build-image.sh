#!/bin/bash
# Build (or reuse) the base image of the real-policy VM tier: a Debian 12
# root made by mmdebstrap with the distribution's reference SELinux policy
# (selinux-policy-default), apache2, PostgreSQL, auditd and the tools the
# scenarios use, plus the modules of the kernel vm/setup.sh extracted.
#
# The image is cached outside the clone, under a key made from this
# script's text and the kernel ABI, so it is rebuilt when the recipe (this
# file) or the kernel changes, and reused otherwise. Nothing labelgate-specific
# goes in here: vm/realpolicy/prepare.sh adds the package and the test
# scripts to a copy of this image for each run.
#
# Usage: vm/realpolicy/build-image.sh        (root; prints the image dir)
# env:   LABELGATE_VM_CACHE (default /var/cache/labelgate-vm)
set -euo pipefail

CACHE="${LABELGATE_VM_CACHE:-/var/cache/labelgate-vm}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { printf 'realpolicy-build: %s\n' "$*" >&2; }
die() { printf 'realpolicy-build: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap --mode=root, loop mounts)"
[ -s "$CACHE/kernel-abi" ] || die "no extracted kernel: run vm/setup.sh first"
ABI="$(cat "$CACHE/kernel-abi")"
KROOT="$CACHE/kernel"
[ -d "$KROOT/lib/modules/$ABI" ] || die "kernel modules missing in $KROOT: run vm/setup.sh"
for t in mmdebstrap mkfs.ext4 depmod; do
  command -v "$t" >/dev/null || die "$t missing: run scripts/install-deps.sh / vm/setup.sh"
done

# Packages in the guest. The first line is what the scenarios run; the
# second builds labelgate's SELinux module inside the guest.
PKGS="systemd-sysv,selinux-basics,selinux-policy-default,selinux-utils,policycoreutils,auditd,apache2,postgresql,postgresql-client,iproute2,nftables,iptables,netlabel-tools,socat,curl,procps,kmod,less"
PKGS="$PKGS,policycoreutils-python-utils,selinux-policy-dev,policycoreutils-dev,semodule-utils,make,m4,gawk"
SIZE=6G

KEY="$( { cat "$HERE/build-image.sh"; echo "$ABI"; } | sha256sum | cut -c1-16)"
OUT="$CACHE/realpolicy/$KEY"
if [ -s "$OUT/base.img" ] && [ -f "$OUT/complete" ]; then
  log "cached: $OUT"
  echo "$OUT"
  exit 0
fi

# Only one build at a time; a second caller waits for the first.
mkdir -p "$CACHE/realpolicy"
exec 9>"$CACHE/realpolicy/.lock"
flock 9
if [ -s "$OUT/base.img" ] && [ -f "$OUT/complete" ]; then
  log "cached (built meanwhile): $OUT"; echo "$OUT"; exit 0
fi

# The machine's apt sources and options (a mirror or proxy set up there is
# what reaches the package registry).
SOURCES=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -s "$f" ] && SOURCES+=("$f")
done
[ "${#SOURCES[@]}" -gt 0 ] || die "no apt sources on this machine"
APTOPTS=()
for f in /etc/apt/apt.conf /etc/apt/apt.conf.d/*; do
  [ -f "$f" ] && APTOPTS+=(--aptopt="$f")
done

rm -rf "$OUT"
mkdir -p "$OUT"
TMP="$(mktemp -d "$CACHE/realpolicy/build.XXXXXX")"
MNT="$TMP/mnt"
mkdir -p "$MNT"
cleanup() {
  mountpoint -q "$MNT" && umount "$MNT" || true
  rm -rf "$TMP"
}
trap cleanup EXIT

start=$(date +%s)
truncate -s "$SIZE" "$TMP/base.img"
mkfs.ext4 -q -F -L lgroot "$TMP/base.img"
mount -o loop "$TMP/base.img" "$MNT"
rmdir "$MNT/lost+found"

log "mmdebstrap bookworm ($(echo "$PKGS" | tr ',' ' ' | wc -w) packages) into $MNT"
mmdebstrap --mode=root --variant=minbase --include="$PKGS" \
  "${APTOPTS[@]}" \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  bookworm "$MNT" "${SOURCES[@]}" >&2
mkdir -p "$MNT/lost+found"
log "mmdebstrap done in $(( $(date +%s) - start )) s"

# The extracted kernel's modules, for the netfilter, virtio and ext4 code
# the guest loads (vm/setup.sh extracted them from linux-image-$ABI).
mkdir -p "$MNT/lib/modules"
cp -a "$KROOT/lib/modules/$ABI" "$MNT/lib/modules/"
depmod -b "$MNT" "$ABI"

umount "$MNT"
mv "$TMP/base.img" "$OUT/base.img"
echo "$ABI" > "$OUT/kernel-abi"
echo "built $(date -u +%FT%TZ) in $(( $(date +%s) - start )) s" > "$OUT/complete"
log "built $OUT in $(( $(date +%s) - start )) s"
# Older builds (another recipe) are no longer used.
for d in "$CACHE"/realpolicy/*/; do
  [ "${d%/}" = "$OUT" ] || rm -rf "${d%/}"
done
echo "$OUT"
