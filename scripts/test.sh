#!/usr/bin/env bash
# The whole test suite, as CI runs it: install what the tests need, build,
# run unit and root-only namespace tests (nextest), then the end-to-end
# scenarios in a throwaway SELinux VM. Run as root. Idempotent.
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

echo "== SELinux VM end-to-end scenarios"
./vm/e2e.sh "$PWD/target/release/labelgate"
