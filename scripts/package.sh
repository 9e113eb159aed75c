#!/usr/bin/env bash
# Build the release binary and the generated assets (man pages, shell
# completions) that the Debian and RPM packages ship; then, if cargo-deb is
# installed (`cargo install cargo-deb`), build the .deb.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --release
bin=target/release/labelgate
rm -rf target/assets && mkdir -p target/assets/completions
"$bin" man target/assets/man >/dev/null
"$bin" completions bash > target/assets/completions/labelgate.bash
"$bin" completions zsh > target/assets/completions/_labelgate
"$bin" completions fish > target/assets/completions/labelgate.fish
echo "assets in target/assets"
if cargo deb --version >/dev/null 2>&1; then
  cargo deb --no-build
else
  echo "cargo-deb not installed: skipping the .deb (cargo install cargo-deb)"
fi
