#!/usr/bin/env bash
# The whole test suite, as CI runs it: install what the tests need, build,
# run unit and root-only namespace tests (nextest), check that the fuzz
# targets build, build the packages, then the end-to-end scenarios in two
# throwaway SELinux VMs. Run as root. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

./scripts/install-deps.sh
export CARGO_TERM_COLOR=never

echo "== build"
cargo build --locked --release

echo "== unit and namespace tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --no-fail-fast
fi

echo "== fuzz targets still build against the library (committed lock)"
CARGO_TARGET_DIR="$PWD/target/fuzz-check" cargo check --locked --manifest-path fuzz/Cargo.toml

echo "== packages (.deb and RPM)"
./scripts/package.sh

echo "== SELinux VM end-to-end scenarios (test policy, 9p root)"
./vm/e2e.sh "$PWD/target/release/labelgate"

echo "== real-policy VM (Debian's reference policy, the .deb, its systemd unit)"
debs=(target/debian/labelgate_*.deb)
[ "${#debs[@]}" = 1 ] && [ -f "${debs[0]}" ] || { echo "test: expected one .deb in target/debian, found: ${debs[*]}" >&2; exit 1; }
./vm/realpolicy/e2e.sh "$PWD/${debs[0]}"
