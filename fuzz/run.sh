#!/usr/bin/env bash
# Runs the libFuzzer targets on the stable toolchain: `fuzz/run.sh SECONDS [TARGET...]`
# (every target when none is named). New inputs go to fuzz/libfuzzer/corpus/<target>/, crashes
# to fuzz/libfuzzer/artifacts/<target>/; commit both (after `cargo fuzz cmin`) and
# `cargo test -p guardrail-fuzz` replays them. Needs `cargo install cargo-fuzz --locked`.
# With FUZZ_SCRATCH=1 (as .ci/run sets it) new inputs go to a temporary folder instead, and the
# committed corpus is only read.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
targets=("$@")
if [ ${#targets[@]} = 0 ]; then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/libfuzzer/Cargo.toml | grep -v '^guardrail-')
fi
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2; exit 1; }
# -s none: no sanitizer, so no nightly flags (the crates forbid unsafe code). One target dir
# with the workspace's, under target/fuzz.
fuzz=(--fuzz-dir fuzz/libfuzzer --target-dir target/fuzz -s none)
cargo fuzz build "${fuzz[@]}"
log=$(mktemp)
scratch=$(mktemp -d)
trap 'rm -rf "$log" "$scratch"' EXIT
for target in "${targets[@]}"; do
  printf '==> %s for %ss\n' "$target" "$seconds"
  mkdir -p "fuzz/libfuzzer/corpus/$target"
  # libFuzzer writes new inputs to the first folder and only reads the others.
  corpus=("fuzz/libfuzzer/corpus/$target")
  if [ -n "${FUZZ_SCRATCH:-}" ]; then
    mkdir -p "$scratch/$target"
    corpus=("$scratch/$target" "fuzz/libfuzzer/corpus/$target")
  fi
  status=0
  cargo fuzz run "${fuzz[@]}" "$target" "${corpus[@]}" -- \
    -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^stat::(number_of_executed_units|new_units_added)|^Done' "$log" || true
  if [ "$status" != 0 ]; then
    tail -n 40 "$log" >&2
    echo "$target found a failing input: see fuzz/libfuzzer/artifacts/$target" >&2
    exit 1
  fi
done
