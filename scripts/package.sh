#!/usr/bin/env bash
# Build labelgate's Debian and RPM packages from one release build:
#   target/debian/labelgate_*.deb       (cargo-deb; the package the
#                                        real-policy VM tier installs)
#   target/rpm/RPMS/*/labelgate-*.rpm   (rpmbuild with
#                                        packaging/labelgate.spec, fed the
#                                        binary and assets built here)
# and the generated assets both ship, in target/assets: man pages, bash/zsh/
# fish completions, the SELinux module compiled against this host's policy
# development files (selinux-policy-dev), a stripped binary for the RPM.
# Needs what scripts/install-deps.sh installs (cargo-deb, rpm, selinux-policy-dev).
# LABELGATE_DEB_FAST=1 compresses the .deb faster (larger; tests use it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

for tool in rpmbuild make; do
  command -v "$tool" >/dev/null || { echo "package.sh: $tool missing (scripts/install-deps.sh)" >&2; exit 1; }
done
cargo deb --version >/dev/null 2>&1 || { echo "package.sh: cargo-deb missing (scripts/install-deps.sh)" >&2; exit 1; }
makefile=/usr/share/selinux/devel/Makefile
[[ -f $makefile ]] || { echo "package.sh: $makefile missing (selinux-policy-dev)" >&2; exit 1; }

cargo build --locked --release
bin=target/release/labelgate
rm -rf target/assets && mkdir -p target/assets/completions target/assets/selinux
"$bin" man target/assets/man >/dev/null
"$bin" completions bash > target/assets/completions/labelgate.bash
"$bin" completions zsh > target/assets/completions/_labelgate
"$bin" completions fish > target/assets/completions/labelgate.fish
objcopy --strip-debug "$bin" target/assets/labelgate

# The SELinux module, built in a scratch copy (the devel Makefile writes
# tmp/ and the .pp beside the sources).
se=$(mktemp -d)
trap 'rm -rf "$se"' EXIT
cp packaging/selinux/labelgate.te packaging/selinux/labelgate.fc packaging/selinux/labelgate.if "$se"/
make -s -f "$makefile" -C "$se" labelgate.pp >/dev/null
cp "$se"/labelgate.pp target/assets/selinux/
echo "package.sh: assets in target/assets"

rm -f target/debian/labelgate_*.deb
cargo deb --no-build ${LABELGATE_DEB_FAST:+--fast}
deb=$(ls target/debian/labelgate_*.deb)

rm -rf target/rpm
rpmbuild -bb --nodeps --quiet \
  --define "_topdir $root/target/rpm" \
  --define "prebuilt $root" \
  packaging/labelgate.spec
rpm=$(ls target/rpm/RPMS/*/labelgate-*.rpm)

echo "package.sh: $deb"
echo "package.sh: $rpm"
