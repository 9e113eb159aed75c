#!/bin/bash
# Prepare the host for the labelgate SELinux VM tests (idempotent).
#  - apt packages the guest uses (the guest sees the host's root read-only,
#    so every guest tool must be installed here)
#  - a virtualenv with virtme-ng (`vng`) under the cache dir
#  - Debian's SELinux-capable kernel, extracted (never installed) into the cache
# Usage: vm/setup.sh        (env: LABELGATE_VM_CACHE, default /var/cache/labelgate-vm)
set -euo pipefail

CACHE="${LABELGATE_VM_CACHE:-/var/cache/labelgate-vm}"
log() { printf 'setup: %s\n' "$*"; }

[ "$(id -u)" = 0 ] || { echo "setup: must run as root (apt-get)" >&2; exit 1; }

# --- apt packages -----------------------------------------------------------
PKGS=(
  qemu-system-x86 busybox python3-venv kmod    # virtme-ng runtime (depmod)
  secilc selinux-utils policycoreutils          # policy compile / runcon
  policycoreutils-python-utils auditd           # audit2allow, ausearch
  iptables nftables conntrack iproute2          # netfilter, ss
  netlabel-tools                                # CIPSO
  postgresql postgresql-client                  # real workload
  netcat-openbsd socat attr util-linux procps   # clients, getfattr, setpriv
  mmdebstrap e2fsprogs                          # the real-policy tier's image (vm/realpolicy)
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  log "apt packages: all present"
fi
# The Debian postgresql package starts a cluster on the host; the tests do
# not need it and it is left as the package configured it.

mkdir -p "$CACHE"

# --- virtme-ng in a virtualenv ---------------------------------------------
VENV="$CACHE/venv"
if [ -x "$VENV/bin/vng" ]; then
  log "virtme-ng: present ($("$VENV/bin/vng" --version 2>/dev/null | head -1))"
else
  log "creating virtualenv $VENV with virtme-ng"
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q virtme-ng
  log "virtme-ng: installed ($("$VENV/bin/vng" --version 2>/dev/null | head -1))"
fi

# --- kernel and a static busybox, extracted (not installed) into the cache ---
# extract PKG DEST: apt-get download PKG and unpack it under DEST.
extract() {
  local tmp; tmp="$(mktemp -d)"
  chmod 755 "$tmp"   # apt-get download runs as _apt
  (cd "$tmp" && apt-get download "$1" >/dev/null)
  mkdir -p "$2"
  dpkg-deb -x "$tmp"/"$1"_*.deb "$2"
  rm -rf "$tmp"
}
ABI_PKG="$(apt-cache depends linux-image-amd64 2>/dev/null \
  | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
if [ -z "$ABI_PKG" ]; then
  apt-get update -qq
  ABI_PKG="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
fi
[ -n "$ABI_PKG" ] || { echo "setup: cannot resolve linux-image-amd64 ABI" >&2; exit 1; }
ABI="${ABI_PKG#linux-image-}"
KROOT="$CACHE/kernel"
if [ -f "$KROOT/boot/vmlinuz-$ABI" ] && [ -d "$KROOT/lib/modules/$ABI" ]; then
  log "kernel $ABI: present in $KROOT"
else
  log "downloading and extracting $ABI_PKG into $KROOT"
  extract "$ABI_PKG" "$KROOT"
  log "kernel $ABI: extracted"
fi
# virtme-ng >= 1.4x refuses a dynamically linked busybox for its initramfs;
# busybox-static conflicts with the host's busybox, so keep it in the cache.
BBROOT="$CACHE/busybox-static"
if [ -x "$BBROOT/bin/busybox" ]; then
  log "busybox-static: present in $BBROOT"
else
  log "downloading and extracting busybox-static into $BBROOT"
  extract busybox-static "$BBROOT"
fi
# Later scripts read the chosen kernel from here.
echo "$ABI" > "$CACHE/kernel-abi"
log "done: cache=$CACHE kernel=$KROOT/boot/vmlinuz-$ABI vng=$VENV/bin/vng busybox=$BBROOT/bin/busybox"
