#!/usr/bin/env bash
# Instructions per request of one bench case, counted by valgrind's callgrind: unlike the
# wall clock, the count repeats from run to run on a shared machine.
#
#   benches/count.sh <bench> <case> [requests] [function]
#
# builds the bench (`idempotency` or `ratelimit`), runs <case> for 0 and for <requests>
# requests (default 5000) under callgrind, and prints the difference per request. With
# [function], a regular expression, it also prints the inclusive count of the first function
# matching it, per request, and the rest without it (idempotency: 'sha256.*compress', since
# valgrind runs SHA-256 in software where the CPU's SHA extensions would). Cases:
# idempotency: bare, first, replay; ratelimit: bare, ours, ours-decisions (with `decisions_in_extensions`), theirs.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${1:?bench: idempotency or ratelimit}
case=${2:?case}
requests=${3:-5000}
function=${4:-}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
var=$(printf '%s' "$bench" | tr '[:lower:]' '[:upper:]')_COUNT
binary=$(cargo bench -p guardrail-benches --bench "$bench" --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["kind"] == ["bench"] and m.get("executable"):
        print(m["executable"])')
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for n in 0 "$requests"; do
  env "$var=$case:$n" valgrind --tool=callgrind --callgrind-out-file="$out/$n" "$binary" >/dev/null 2>&1
done
total() { callgrind_annotate "$out/$1" | awk '/PROGRAM TOTALS/ && !done { gsub(",", "", $1); print $1; done = 1 }'; }
inclusive() {
  callgrind_annotate --inclusive=yes "$out/$1" | awk -v f="$function" '$1 ~ /^[0-9,]+$/ && $0 ~ f && !done { gsub(",", "", $1); print $1; done = 1 }'
}
all=$(( $(total "$requests") - $(total 0) ))
echo "$bench/$case: $(( all / requests )) instructions per request"
if [ -n "$function" ]; then
  with=$(inclusive "$requests"); without=$(inclusive 0)
  part=$(( ${with:-0} - ${without:-0} ))
  echo "  of which /$function/: $(( part / requests )); the rest: $(( (all - part) / requests ))"
fi
