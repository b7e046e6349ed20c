#!/usr/bin/env bash
# Lint: fails when examples/orders/openapi.yaml has any error or warning under Redocly's
# default ruleset (`recommended`, redocly.yaml) or Spectral's (`spectral:oas`, .spectral.yaml).
# Both linters are npm packages pinned in package-lock.json, and run offline.
#
#   examples/orders/contract/lint.sh [spec]     lint openapi.yaml (or another description)
#
# Where a rule cannot apply, the exception is in .redocly.lint-ignore.yaml (one rule at one
# location, with the reason); no rule is turned off as a whole.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
if [ ! -x node_modules/.bin/redocly ] || [ ! -x node_modules/.bin/spectral ]; then
  npm ci --no-audit --no-fund --silent
fi
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
spec="${1:-../openapi.yaml}"
status=0

echo "== redocly lint (recommended)"
# Redocly exits non-zero on errors only: count the warnings from its JSON report. The first
# run is for people to read (less Redocly's boxed Node.js notice), the second for the count.
node_modules/.bin/redocly lint "$spec" --config redocly.yaml --lint-config error \
  --format stylish --max-problems 1000 2>&1 | grep -vF -e '╔' -e '║' -e '╚' || true
report="$(node_modules/.bin/redocly lint "$spec" --config redocly.yaml --lint-config error \
  --format json --max-problems 1000 2>/dev/null)" || true
if ! node -e '
  const totals = JSON.parse(process.argv[1]).totals;
  console.log(`redocly: ${totals.errors} errors, ${totals.warnings} warnings, ${totals.ignored} ignored`);
  process.exit(totals.errors === 0 && totals.warnings === 0 ? 0 : 1);
' "$report"; then
  status=1
fi

echo "== spectral lint (spectral:oas)"
node_modules/.bin/spectral lint "$spec" --ruleset .spectral.yaml --fail-severity warn || status=1

if [ "$status" != 0 ]; then
  echo "openapi.yaml has lint errors or warnings (above)" >&2
fi
exit "$status"
