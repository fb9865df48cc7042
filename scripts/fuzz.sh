#!/usr/bin/env bash
# fuzz.sh: build and run the cargo-fuzz targets of fuzz/ (libFuzzer).
#
#   scripts/fuzz.sh build                  build every target
#   scripts/fuzz.sh run TARGET [ARGS...]   fuzz one target; ARGS go to libFuzzer
#                                          (e.g. -max_total_time=600 -jobs=2)
#   scripts/fuzz.sh smoke SECONDS          every target for SECONDS each (make test)
#   scripts/fuzz.sh repro TARGET FILE...   run the target on these inputs only
#                                          (a crash from fuzz/artifacts/TARGET/)
#   scripts/fuzz.sh list                   the targets
#
# FUZZ_BUILD picks the build: `release` (default for build and run: optimised,
# AddressSanitizer, debug assertions) or `dev` (default for smoke: unoptimised,
# no sanitizer, debug assertions; a fresh clone builds it in a third of the
# time, which is what a 20-second run in CI wants).
#
# cargo-fuzz is installed into .tools/cargo by scripts/ensure-cargo-fuzz.sh.
# It passes nightly-only flags (-Zsanitizer=address, -Cpasses=sancov-module,
# -Cllvm-args=-sanitizer-coverage-*); the machine has only a stable toolchain,
# and RUSTC_BOOTSTRAP=1 lets stable rustc accept them: the instrumentation and
# libFuzzer are the real ones (the run prints its coverage counters).
#
# A target writes its seeds (valid records, segments and bodies made by the
# code under test) into its working corpus fuzz/corpus/TARGET when it starts,
# and also reads the committed crash inputs in fuzz/regressions/TARGET. A
# panic, an abort, an out-of-memory (one allocation over 1 GiB, or 2 GiB in
# all) or a timeout (10 s for one input) stops the run with a non-zero exit
# and leaves the input in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo_fuzz="$(scripts/ensure-cargo-fuzz.sh)"
export RUSTC_BOOTSTRAP=1 CARGO_INCREMENTAL=0
# The harness of local_frame_reader writes segment files under TMPDIR: in
# memory where the machine has /dev/shm (the writer's fsyncs cost nothing
# there, which makes that target several times faster).
if [[ -d /dev/shm && -w /dev/shm ]]; then
  tmp_root=/dev/shm/courier-fuzz
else
  tmp_root="$PWD/fuzz/target/tmp"
fi

build_flags() {
  case "${FUZZ_BUILD:-$1}" in
    release) echo "--release --debug-assertions --sanitizer address" ;;
    dev) echo "--dev --debug-assertions --sanitizer none" ;;
    *) echo "FUZZ_BUILD must be release or dev" >&2; return 2 ;;
  esac
}

# The fuzz crate resolves to the same dependency versions as the services:
# its lock file is the workspace's (cargo drops what the fuzz crate does not
# use and adds libfuzzer-sys, pinned in fuzz/Cargo.toml).
sync_lock() {
  cp Cargo.lock fuzz/Cargo.lock
}

build() {
  sync_lock
  # shellcheck disable=SC2046
  "$cargo_fuzz" fuzz build $(build_flags "$1")
}

run() {
  local profile="$1" target="$2"
  shift 2
  local corpus="fuzz/corpus/$target"
  mkdir -p "$corpus" "fuzz/regressions/$target" "$tmp_root"
  local tmp
  tmp="$(mktemp -d "$tmp_root/$target.XXXXXX")"
  local status=0
  sync_lock
  # shellcheck disable=SC2046
  COURIER_FUZZ_SEEDS="$corpus" TMPDIR="$tmp" \
    "$cargo_fuzz" fuzz run $(build_flags "$profile") "$target" \
    "$corpus" "fuzz/regressions/$target" -- \
    -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 -print_final_stats=1 "$@" || status=$?
  rm -rf "$tmp"
  return "$status"
}

case "${1:-}" in
  build)
    build release
    ;;
  run)
    shift
    [[ $# -ge 1 ]] || { echo "usage: $0 run TARGET [LIBFUZZER_ARGS...]" >&2; exit 2; }
    run release "$@"
    ;;
  smoke)
    seconds="${2:?usage: $0 smoke SECONDS}"
    started=$SECONDS
    build dev
    printf 'fuzz: targets built in %ss\n' "$((SECONDS - started))"
    failed=()
    for target in $("$cargo_fuzz" fuzz list); do
      printf '==> fuzz %s for %ss\n' "$target" "$seconds"
      log="fuzz/target/smoke-$target.log"
      if run dev "$target" -max_total_time="$seconds" >"$log" 2>&1; then
        grep -E '^(#[0-9]+\s+(INITED|DONE)|Done [0-9]+ runs|stat::number_of_executed_units)' "$log" || true
      else
        tail -n 60 "$log"
        failed+=("$target")
      fi
    done
    if [[ ${#failed[@]} -gt 0 ]]; then
      echo "fuzz: ${failed[*]} crashed (inputs in fuzz/artifacts/; see docs/operations.md)" >&2
      exit 1
    fi
    echo "fuzz: every target ran ${seconds}s without a crash"
    ;;
  repro)
    [[ $# -ge 3 ]] || { echo "usage: $0 repro TARGET FILE..." >&2; exit 2; }
    target="$2"
    shift 2
    build "${FUZZ_BUILD:-release}"
    tmp="$(mktemp -d "$tmp_root.XXXXXX")"
    status=0
    profile_dir=release
    [[ "${FUZZ_BUILD:-release}" == dev ]] && profile_dir=debug
    TMPDIR="$tmp" "fuzz/target/x86_64-unknown-linux-gnu/$profile_dir/$target" \
      -rss_limit_mb=2048 -malloc_limit_mb=1024 "$@" || status=$?
    rm -rf "$tmp"
    exit "$status"
    ;;
  list)
    "$cargo_fuzz" fuzz list
    ;;
  *)
    sed -n '2,9p' "$0" >&2
    exit 2
    ;;
esac
