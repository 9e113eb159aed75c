#!/usr/bin/env bash
# Install what labelgate needs to build and to run its host tests on Debian 12.
# Idempotent: packages already present are not reinstalled; apt-get update runs
# only when something is missing.
set -euo pipefail

PKGS=(
  # build: the selinux crate runs bindgen against libselinux
  build-essential pkg-config libselinux1-dev libclang-dev
  # host integration tests: namespaces, iptables NFQUEUE, traffic probes
  iproute2 iptables util-linux python3 iputils-ping netcat-openbsd conntrack
  # labelgate run --offload (its table) and tests/offload.rs
  nftables
  # benchmark reference consumer (C, libnetfilter_queue)
  libnetfilter-queue-dev libmnl-dev
  # packaging checks: systemd-analyze, the SELinux policy module build,
  # rpmbuild and rpm (the RPM, on Debian), objcopy (its stripped binary)
  systemd selinux-policy-dev checkpolicy make rpm binutils
  # audit records against the SELinux tools: secilc, semodule, audit2allow
  secilc policycoreutils policycoreutils-python-utils
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install-deps: all packages present"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found; install the Rust toolchain (rustup) first" >&2
  exit 1
fi

# cargo-deb builds the .deb (scripts/package.sh); from crates.io, only if missing.
if ! cargo deb --version >/dev/null 2>&1; then
  echo "install-deps: installing cargo-deb"
  cargo install cargo-deb --locked --quiet
fi
