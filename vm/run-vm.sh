#!/bin/bash
# Boot the throwaway SELinux VM (Debian kernel, TCG, host root read-only over
# 9p) and run GUEST_SCRIPT [ARGS] inside it as root.
#
# The guest gets a read-write work dir (LABELGATE_VM_WORK, default: a new
# temp dir) where it writes guest.log and the guest script's exit status;
# this script exits with that status (vng's own exit code does not carry it).
# Env: LABELGATE_VM_CACHE (see setup.sh), LABELGATE_VM_TIMEOUT (s, default 3600),
#      LABELGATE_VM_MEMORY (default 1G).
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 GUEST_SCRIPT [ARGS...]" >&2; exit 2; }
script="$(realpath "$1")"; shift
[ -x "$script" ] || { echo "run-vm: $script is not executable" >&2; exit 2; }

CACHE="${LABELGATE_VM_CACHE:-/var/cache/labelgate-vm}"
TIMEOUT="${LABELGATE_VM_TIMEOUT:-3600}"
VNG="$CACHE/venv/bin/vng"
ABI="$(cat "$CACHE/kernel-abi" 2>/dev/null || true)"
KERNEL="$CACHE/kernel/boot/vmlinuz-$ABI"
[ -x "$VNG" ] && [ -n "$ABI" ] && [ -f "$KERNEL" ] && [ -x "$CACHE/busybox-static/bin/busybox" ] \
  || { echo "run-vm: cache incomplete in $CACHE, run vm/setup.sh first" >&2; exit 2; }

WORK="${LABELGATE_VM_WORK:-$(mktemp -d /tmp/labelgate-vm.XXXXXX)}"
mkdir -p "$WORK"
WORK="$(realpath "$WORK")"
rm -f "$WORK/guest-status"

# The guest entry: run the script, record its status in the rwdir.
# Arguments are quoted once here so they survive vng's --exec string.
args=""
for a in "$@"; do args+=" $(printf '%q' "$a")"; done
cat > "$WORK/guest-entry.sh" <<ENTRY
#!/bin/bash
export LABELGATE_VM_WORK=$(printf '%q' "$WORK")
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
cd /
# virtme-ng mounts a tmpfs on /var/cache, hiding the kernel modules when the
# cache lives there (the default); drop it so modprobe finds them.
if [ ! -d "/lib/modules/\$(uname -r)/kernel" ]; then umount /var/cache 2>/dev/null || true; fi
set +e
$(printf '%q' "$script")$args > >(tee "\$LABELGATE_VM_WORK/guest.log") 2>&1
rc=\$?
sync
echo "\$rc" > "\$LABELGATE_VM_WORK/guest-status"
sync
exit "\$rc"
ENTRY
chmod +x "$WORK/guest-entry.sh"

echo "run-vm: kernel $ABI, work dir $WORK, timeout ${TIMEOUT}s" >&2
start=$(date +%s)
set +e
# KVM hangs on these hosts: force TCG. </dev/null: vng must not wait on a tty.
PATH="$CACHE/venv/bin:/usr/sbin:/sbin:$PATH" timeout -k 15 "$TIMEOUT" "$VNG" --run "$KERNEL" --disable-kvm --force-9p \
  --busybox "$CACHE/busybox-static/bin/busybox" \
  --memory "${LABELGATE_VM_MEMORY:-1G}" --cpus 2 --rwdir "$WORK" \
  --append "security=selinux selinux=1" \
  --exec "$WORK/guest-entry.sh" </dev/null > "$WORK/vng.log" 2>&1
vng_rc=$?
set -e
echo "run-vm: vng exited $vng_rc after $(( $(date +%s) - start ))s" >&2

if [ "$vng_rc" = 124 ]; then
  echo "run-vm: TIMEOUT after ${TIMEOUT}s (see $WORK/vng.log)" >&2
  exit 124
fi
if [ ! -s "$WORK/guest-status" ]; then
  echo "run-vm: guest wrote no status; last lines of $WORK/vng.log:" >&2
  tail -n 30 "$WORK/vng.log" >&2
  exit 3
fi
exit "$(cat "$WORK/guest-status")"
