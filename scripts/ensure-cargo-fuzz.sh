#!/usr/bin/env bash
# ensure-cargo-fuzz.sh
#
# Installs cargo-fuzz from crates.io into .tools/cargo (idempotent: nothing
# happens when the pinned version is already there) and prints the path of the
# binary. The machine has only the stable toolchain; scripts/fuzz.sh runs
# cargo-fuzz on it with RUSTC_BOOTSTRAP=1 (cargo-fuzz passes nightly-only
# flags such as -Zsanitizer and -Cpasses=sancov-module).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

version="${CARGO_FUZZ_VERSION:-0.13.2}"
root="$PWD/.tools/cargo"
bin="$root/bin/cargo-fuzz"

if [[ -x "$bin" ]] && [[ "$("$bin" fuzz --version 2>/dev/null)" == "cargo-fuzz $version" ]]; then
  printf '%s\n' "$bin"
  exit 0
fi
printf '==> installing cargo-fuzz %s into %s\n' "$version" "$root" >&2
# Its own target dir: never the workspace's, never a leftover of an older try.
build_dir="$(mktemp -d)"
trap 'rm -rf "$build_dir"' EXIT
CARGO_TARGET_DIR="$build_dir" CARGO_INCREMENTAL=0 \
  cargo install --locked --force --quiet --root "$root" cargo-fuzz --version "=$version" >&2
"$bin" fuzz --version >&2
printf '%s\n' "$bin"
