#!/usr/bin/env bash
# Break diff: fails when examples/orders/openapi.yaml breaks the last published contract
# (contract/baseline.yaml). Uses optic (npm, pinned in package-lock.json), which runs offline.
#
#   examples/orders/contract/break-diff.sh            check openapi.yaml against the baseline
#   examples/orders/contract/break-diff.sh --fixtures also show that the additive fixture passes
#                                                     and the breaking one fails
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
if [ ! -x node_modules/.bin/optic ]; then
  npm ci --no-audit --no-fund --silent
fi
export OPTIC_TELEMETRY_LEVEL=off

diff_against_baseline() { # $1: candidate; prints optic's report, returns its exit code
  node_modules/.bin/optic diff baseline.yaml "$1" --check 2>&1
}

echo "== openapi.yaml against the published baseline"
diff_against_baseline ../openapi.yaml

if [ "${1:-}" = "--fixtures" ]; then
  echo "== fixtures/additive.yaml (must pass)"
  diff_against_baseline fixtures/additive.yaml | tee fixtures/additive.out.txt
  echo "== fixtures/breaking.yaml (must fail)"
  if diff_against_baseline fixtures/breaking.yaml >fixtures/breaking.out.txt; then
    cat fixtures/breaking.out.txt
    echo "the breaking fixture passed the break diff: the check is not working" >&2
    exit 1
  fi
  cat fixtures/breaking.out.txt
  echo "== the breaking fixture was refused, as it must be"
fi
