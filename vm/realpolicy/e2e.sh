#!/bin/bash
# The real-policy VM tier: labelgate installed from its .deb and run by its
# packaged systemd unit on Debian 12 with the distribution's reference SELinux
# policy (selinux-policy-default), apache2 and PostgreSQL started by systemd
# (httpd_t, postgresql_t) and auditd. One boot runs every scenario; the
# guest reports `RESULT PASS|FAIL scenario/check` lines on the serial console.
#
# Usage: vm/realpolicy/e2e.sh [PATH_TO_LABELGATE_DEB]
#   default: build the packages with scripts/package.sh (cargo-deb, rpmbuild:
#   scripts/install-deps.sh installs them)
# Env: LABELGATE_REALVM_SCENARIOS  space-separated subset of: article staging
#                                  auditd check lifecycle selinux-flow
#                                  other-netns (default: all);
#                                  selinux-module always runs (it loads
#                                  labelgate's SELinux module, which the others
#                                  need, and checks its denials at the end)
#      LABELGATE_REALVM_WORK       host dir for logs and results (default: new
#                                  temp dir)
#      LABELGATE_REALVM_TIMEOUT    seconds the guest may take (default 3600)
#      LABELGATE_REALVM_KEEP=1     keep the run's disk image in the work dir
#      LABELGATE_REALVM_VERBOSE=1  kernel and systemd boot messages on the console
#      LABELGATE_VM_CACHE          cache dir (default /var/cache/labelgate-vm)
# Exits 0 only if every selected scenario reported and passed.
set -euo pipefail
{ # the whole script is read before it runs: editing it meanwhile is safe
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${LABELGATE_VM_CACHE:-/var/cache/labelgate-vm}"
ALL="article staging auditd check lifecycle selinux-flow other-netns"
SCENARIOS="${LABELGATE_REALVM_SCENARIOS:-$ALL}"
TIMEOUT="${LABELGATE_REALVM_TIMEOUT:-3600}"
export PATH="$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

log() { printf 'realpolicy: %s\n' "$*"; }
die() { printf 'realpolicy: error: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (loop mounts, chroot, setfiles)"
for s in $SCENARIOS; do
  case " $ALL " in *" $s "*) ;; *) die "unknown scenario '$s' (known: $ALL)";; esac
done

WORK="${LABELGATE_REALVM_WORK:-$(mktemp -d /tmp/labelgate-realvm.XXXXXX)}"
mkdir -p "$WORK"; WORK="$(realpath "$WORK")"
MNT="$WORK/mnt"
t0=$(date +%s)
secs() { echo $(( $(date +%s) - $1 )); }

# --- host tools, kernel, base image ------------------------------------------
"$REPO/vm/setup.sh" >"$WORK/setup.log" 2>&1 || { cat "$WORK/setup.log"; die "vm/setup.sh failed"; }
ABI="$(cat "$CACHE/kernel-abi")"
KERNEL="$CACHE/kernel/boot/vmlinuz-$ABI"
tb=$(date +%s)
BASE="$("$HERE/build-image.sh" 2> >(tee "$WORK/build-image.log" >&2))"
log "base image $BASE ($(secs "$tb") s)"

# --- the package, built as a release would be ---------------------------------
DEB="${1:-}"
if [ -z "$DEB" ]; then
  log "building the packages (scripts/package.sh)"
  (cd "$REPO" && LABELGATE_DEB_FAST=1 ./scripts/package.sh) >"$WORK/package.log" 2>&1 || { tail -n 30 "$WORK/package.log"; die "scripts/package.sh failed"; }
  DEB="$(ls -t "$REPO"/target/debian/labelgate_*.deb 2>/dev/null | head -n1)"
fi
[ -f "$DEB" ] || die "no labelgate .deb (${DEB:-none found in target/debian})"
cp "$DEB" "$WORK/"
DEB="$WORK/$(basename "$DEB")"
log "package $(basename "$DEB") ($(dpkg-deb -f "$DEB" Version))"

# --- the run's image: a copy of the base with labelgate and the tests ---------
tp=$(date +%s)
IMG="$WORK/disk.img"
cp --sparse=always "$BASE/base.img" "$IMG"
mkdir -p "$MNT"
cleanup() {
  for m in "$MNT/proc" "$MNT/sys" "$MNT/dev" "$MNT"; do
    mountpoint -q "$m" && umount -l "$m"
  done
  [ -n "${QEMU_PID:-}" ] && kill "$QEMU_PID" 2>/dev/null
  true
}
trap cleanup EXIT
mount -o loop "$IMG" "$MNT"
mount -t proc proc "$MNT/proc"
mount --bind /dev "$MNT/dev"
in_root() { chroot "$MNT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }

# mmdebstrap's path excludes (documentation, man pages) were for the base
# image's size; labelgate is installed as on any Debian system.
rm -f "$MNT"/etc/dpkg/dpkg.cfg.d/99mmdebstrap
cp "$DEB" "$MNT/tmp/labelgate.deb"
# dpkg, as an administrator would with a downloaded package (the image has no
# apt lists: its dependencies are already installed, or dpkg refuses).
in_root dpkg -i /tmp/labelgate.deb >"$WORK/install.log" 2>&1 \
  || { cat "$WORK/install.log"; die "installing the .deb in the image failed"; }
rm -f "$MNT/tmp/labelgate.deb"
in_root dpkg -s labelgate >/dev/null || die "labelgate is not installed in the image"

# The guest's test runner and the site configuration the scenarios use.
G="$HERE/guest"
install -d -m 755 "$MNT/usr/local/lib/labelgate-tests" "$MNT/usr/local/lib/labelgate-tests/scenarios"
install -m 755 "$G/run.sh" "$G/common.sh" "$G/load.py" "$MNT/usr/local/lib/labelgate-tests/"
install -m 755 "$G"/scenarios/*.sh "$MNT/usr/local/lib/labelgate-tests/scenarios/"
install -m 644 "$G/labelgate-tests.service" "$MNT/etc/systemd/system/"
ln -sf /etc/systemd/system/labelgate-tests.service "$MNT/etc/systemd/system/multi-user.target.wants/labelgate-tests.service"
echo "$SCENARIOS" > "$MNT/usr/local/lib/labelgate-tests/scenarios.list"

# apache: /db is proxied to PostgreSQL's TCP port, so apache itself (httpd_t)
# dials 5432. 502 = the connect was accepted (PostgreSQL answers HTTP with
# garbage), 503 = the connect failed (dropped SYNs: 3 s connect timeout).
# retry=0: a failed backend is tried again at once, not marked down for 60 s.
install -m 644 "$G/labelgate-db-proxy.conf" "$MNT/etc/apache2/conf-available/"
in_root a2enmod -q proxy proxy_http >/dev/null
in_root a2enconf -q labelgate-db-proxy >/dev/null
# PostgreSQL: TCP clients from 127.0.0.1 need no password (the test's psql).
PGHBA="$(ls "$MNT"/etc/postgresql/*/main/pg_hba.conf | head -n1)"
[ -f "$PGHBA" ] || die "no PostgreSQL cluster in the image"
sed -i '1i host all all 127.0.0.1/32 trust' "$PGHBA"

# Boot: permissive kernel (the scenarios switch to enforcing where it
# matters), the root on /dev/vda, no timers that compete for the CPU.
sed -i 's/^SELINUX=.*/SELINUX=permissive/; s/^SELINUXTYPE=.*/SELINUXTYPE=default/' "$MNT/etc/selinux/config"
grep -q '^SELINUX=permissive' "$MNT/etc/selinux/config" || echo 'SELINUX=permissive' >> "$MNT/etc/selinux/config"
echo '/dev/vda / ext4 rw,relatime 0 1' > "$MNT/etc/fstab"
echo labelgate-realvm > "$MNT/etc/hostname"
for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
         man-db.timer dpkg-db-backup.timer logrotate.timer systemd-tmpfiles-clean.timer getty@tty1.service \
         serial-getty@ttyS0.service; do
  ln -sf /dev/null "$MNT/etc/systemd/system/$u"
done
# auditd keeps every record of the run (no rotation during the scenarios).
sed -i 's/^max_log_file_action.*/max_log_file_action = ignore/' "$MNT/etc/audit/auditd.conf"

umount "$MNT/dev" "$MNT/proc"
# Labels, as the reference policy's file contexts say (SELinux is inactive
# on this host: setfiles -r writes the security.selinux xattrs of the image).
tl=$(date +%s)
setfiles -r "$MNT" "$MNT/etc/selinux/default/contexts/files/file_contexts" "$MNT" >"$WORK/setfiles.log" 2>&1 \
  || { tail "$WORK/setfiles.log"; die "setfiles failed"; }
log "labelled in $(secs "$tl") s: /usr/sbin/apache2 is $(getfattr --only-values -n security.selinux "$MNT/usr/sbin/apache2" 2>/dev/null | tr -d '\0')"
umount "$MNT"
log "run image prepared in $(secs "$tp") s"

# --- initramfs (cached per kernel) --------------------------------------------
INITRD="$CACHE/realpolicy-initrd-$ABI.cpio.gz"
INITRD_KEY="$(sha256sum "$HERE/initramfs-init" | cut -c1-16)"
if [ ! -s "$INITRD" ] || [ "$(cat "$INITRD.key" 2>/dev/null)" != "$INITRD_KEY" ]; then
  ir="$(mktemp -d)"
  mkdir -p "$ir/bin" "$ir/modules"
  cp "$CACHE/busybox-static/bin/busybox" "$ir/bin/busybox"
  install -m 755 "$HERE/initramfs-init" "$ir/init"
  : > "$ir/modules.order"
  for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk \
           crc16 mbcache jbd2 crc32c_generic ext4; do
    f="$(find "$CACHE/kernel/lib/modules/$ABI/kernel" -name "$m.ko" | head -n1)"
    [ -n "$f" ] || die "module $m.ko not found for $ABI"
    cp "$f" "$ir/modules/"; echo "$m" >> "$ir/modules.order"
  done
  (cd "$ir" && find . | "$CACHE/busybox-static/bin/busybox" cpio -o -H newc 2>/dev/null | gzip -1) > "$INITRD.tmp"
  mv "$INITRD.tmp" "$INITRD"; echo "$INITRD_KEY" > "$INITRD.key"
  rm -rf "$ir"
fi

# --- boot ----------------------------------------------------------------------
QUIET="quiet loglevel=3 systemd.show_status=error"
[ "${LABELGATE_REALVM_VERBOSE:-0}" = 1 ] && QUIET=""
CONSOLE="$WORK/console.log"
: > "$CONSOLE"
log "booting ($SCENARIOS; timeout ${TIMEOUT} s); console: $CONSOLE"
tboot=$(date +%s)
qemu-system-x86_64 -accel tcg -smp 2 -m 2G -nographic -no-reboot \
  -monitor none -serial "file:$CONSOLE" -nic none \
  -kernel "$KERNEL" -initrd "$INITRD" \
  -drive "file=$IMG,format=raw,if=virtio,cache=unsafe" \
  -append "root=/dev/vda rw console=ttyS0 security=selinux selinux=1 panic=-1 $QUIET" \
  </dev/null >"$WORK/qemu.log" 2>&1 &
QEMU_PID=$!
# The guest's report lines (kernel or systemd output may precede one on its line).
# Only complete lines: one still being written is read on the next pass.
console_lines() {
  head -n "$(wc -l <"$CONSOLE")" "$CONSOLE" | tr -d '\r' \
    | grep -aoE '(RESULT (PASS|FAIL) |SCENARIO |STAGE |DONE ).*' || true
}
seen=0 timed_out=0
while kill -0 "$QEMU_PID" 2>/dev/null; do
  if [ "$(secs "$tboot")" -ge "$TIMEOUT" ]; then
    log "guest did not finish in $TIMEOUT s: stopping it"
    kill "$QEMU_PID"; timed_out=1; break
  fi
  # Progress: print each new RESULT/SCENARIO/STAGE line as it arrives.
  n=$(console_lines | wc -l)
  if [ "$n" -gt "$seen" ]; then
    console_lines | tail -n +"$((seen + 1))" | sed "s/^/  [$(secs "$tboot") s] /"
    seen=$n
  fi
  sleep 5
done
wait "$QEMU_PID" 2>/dev/null || true
QEMU_PID=""
log "guest ran $(secs "$tboot") s"
console_lines | tail -n +"$((seen + 1))" | sed 's/^/  /'


# --- the guest's files (records, journal) --------------------------------------
mount -o loop,ro,noload "$IMG" "$MNT"
if [ -d "$MNT/var/log/labelgate-tests" ]; then
  rm -rf "$WORK/guest"; cp -a "$MNT/var/log/labelgate-tests" "$WORK/guest"
fi
umount "$MNT"
[ "${LABELGATE_REALVM_KEEP:-0}" = 1 ] || rm -f "$IMG"

# --- verdict (from the serial console) -----------------------------------------
console_lines | grep -E '^(RESULT|SCENARIO|DONE) ' > "$WORK/results.txt" || true
rc=0
echo
echo "================ labelgate real-policy VM summary ================"
grep '^RESULT FAIL' "$WORK/results.txt" | sed 's/^/  /' || true
echo "  checks: $(grep -c '^RESULT PASS' "$WORK/results.txt") passed, $(grep -c '^RESULT FAIL' "$WORK/results.txt") failed"
grep -q '^RESULT FAIL' "$WORK/results.txt" && rc=1
for s in selinux-module $SCENARIOS; do
  line="$(grep -m1 "^SCENARIO $s " "$WORK/results.txt" || true)"
  if [ -z "$line" ]; then echo "  $s NOT RUN (no report from the guest)"; rc=1
  else echo "  ${line#SCENARIO }"; case "$line" in *" PASS"*) ;; *) rc=1;; esac; fi
done
grep -q '^DONE ' "$WORK/results.txt" || { echo "  the guest never reported that it finished"; rc=1; }
[ "$timed_out" = 1 ] && rc=1
echo "  times: total $(secs "$t0") s, guest $(( $(date +%s) - tboot )) s"
echo "  logs: $WORK (console.log, results.txt, guest/)"
echo "  result: $([ "$rc" = 0 ] && echo PASS || echo FAIL)"
exit "$rc"
}
