#!/usr/bin/env bash
# Builds every fuzz target of cohort and runs each for a bounded time from its seeds.
#
#   bash fuzz/run.sh SECONDS_PER_TARGET [TARGET...]
#
# Each target starts from a copy of fuzz/seeds/<target>/ in a scratch directory, so the
# repository is not modified; the scratch directory is removed at the end. Any crash (a
# panic, a sanitizer report, a timeout or running out of memory) makes the script exit
# non-zero once every target has run; the crashing input is kept in fuzz/artifacts/<target>/
# (git-ignored) with the target's log, and libFuzzer's report is printed here.
#
# Toolchain: cargo-fuzz passes nightly-only flags (-Z, sanitizer coverage). A nightly
# toolchain is used when rustup has one (or the one named by COHORT_FUZZ_TOOLCHAIN);
# otherwise the default (stable) toolchain with RUSTC_BOOTSTRAP=1, which accepts those flags.
# AddressSanitizer works that way too on x86_64 Linux (its runtime ships with the standard
# library), so the targets are built with it and with debug assertions (overflow checks).
set -euo pipefail
cd "$(dirname "$0")/.."

usage="usage: bash fuzz/run.sh SECONDS_PER_TARGET [TARGET...]"
seconds="${1:?$usage}"
shift
case "$seconds" in
  '' | *[!0-9]*) echo "$usage" >&2; exit 2 ;;
esac
all_targets=(wire_frames wire_datagram handshake legacy_packet membership_messages config_file tls_ca_file)
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  targets=("${all_targets[@]}")
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

toolchain="${COHORT_FUZZ_TOOLCHAIN:-}"
if [ -z "$toolchain" ] && command -v rustup >/dev/null 2>&1 \
  && rustup toolchain list | grep -q '^nightly'; then
  toolchain=nightly
fi
cargo_fuzz=(cargo)
rustc=(rustc)
if [ -n "$toolchain" ]; then
  cargo_fuzz+=("+$toolchain")
  rustc+=("+$toolchain")
fi
cargo_fuzz+=(fuzz)
if ! "${rustc[@]}" --version | grep -q nightly; then
  export RUSTC_BOOTSTRAP=1
fi
# The same flags for build and run, so that `run` finds the build up to date.
build_flags=(--release --debug-assertions --sanitizer address)

echo "== toolchain: $("${rustc[@]}" --version)${RUSTC_BOOTSTRAP:+ (RUSTC_BOOTSTRAP=1)}"
echo "== building ${#targets[@]} fuzz targets ($(date -u +%H:%M:%S))"
for target in "${targets[@]}"; do
  "${cargo_fuzz[@]}" build "${build_flags[@]}" "$target"
done

scratch="$(mktemp -d -t cohort-fuzz.XXXXXX)"
trap 'rm -rf "$scratch"' EXIT

failed=()
for target in "${targets[@]}"; do
  seeds="fuzz/seeds/$target"
  corpus="$scratch/corpus/$target"
  log="$scratch/$target.log"
  mkdir -p "$corpus" "fuzz/artifacts/$target"
  if [ -d "$seeds" ]; then
    cp "$seeds"/* "$corpus"/
  fi
  start_files="$(find "$corpus" -type f | wc -l)"
  echo "== $target: ${seconds}s from $start_files seeds ($(date -u +%H:%M:%S))"
  status=0
  "${cargo_fuzz[@]}" run "${build_flags[@]}" "$target" "$corpus" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$target/" >"$log" 2>&1 || status=$?
  runs="$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 runs in \2 s/p' "$log" | tail -n 1)"
  end_files="$(find "$corpus" -type f | wc -l)"
  if [ "$status" -eq 0 ] && [ -n "$runs" ]; then
    echo "$target: $runs (libFuzzer's count), no crash; corpus $start_files -> $end_files inputs"
    rmdir "fuzz/artifacts/$target" 2>/dev/null || true
  else
    failed+=("$target")
    cp "$log" "fuzz/artifacts/$target/run.log"
    echo "$target: FAILED (exit status $status); libFuzzer's report:"
    # From the panic or sanitizer report on (the input, and how to reproduce it, follow).
    report="$(sed -n '/panicked at\|==ERROR\|ERROR: libFuzzer\|ERROR: AddressSanitizer/,$p' "$log")"
    if [ -n "$report" ]; then
      printf '%s\n' "$report" | head -n 150
    else
      tail -n 60 "$log"
    fi
    echo "(the whole log and the crashing input are in fuzz/artifacts/$target/)"
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "== fuzzing found crashes in: ${failed[*]}"
  exit 1
fi
rmdir fuzz/artifacts 2>/dev/null || true
echo "== fuzzing: ${#targets[@]} targets, ${seconds}s each, no crash"
