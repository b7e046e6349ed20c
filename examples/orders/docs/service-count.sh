#!/usr/bin/env bash
# What the guardrails cost the whole service, in instructions: GET /v2/orders/{id} from wrk
# against one build of `orders` under `valgrind --tool=callgrind`, in the three set-ups of
# service-ratio.sh (guarded with memory stores, `--demo-disable-guardrails`, guarded with
# Redis stores), over one connection: each request takes the same path, where several
# connections' requests are woken and batched differently from run to run (with four, the
# guarded-unguarded difference moved by half between runs). Counting starts after a warm-up
# and stops after the measured run, so the figure is the server's own user-space
# instructions per GET: unlike requests per second on a shared machine, it repeats from run
# to run (within about 1 %). It leaves out the kernel (the Redis round
# trip's system calls) and cache misses; service-ratio.sh measures those, noisily.
#
#   cargo build --release -p orders
#   examples/orders/docs/service-count.sh target/release/orders [SECONDS] [TOP]
#
# With TOP, also prints (on stderr) the TOP functions of each set-up by their own (exclusive)
# instructions per GET.
set -euo pipefail
binary="$1"; seconds="${2:-20}"; top="${3:-0}"
redis="${REDIS_URL:-redis://127.0.0.1:6379}"
. "$(dirname "$0")/service-common.sh"
for tool in valgrind callgrind_control callgrind_annotate wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is needed (apt-get install valgrind wrk)" >&2; exit 1; }
done

# Prints instructions per GET for a server given extra flags; with $top, its top functions
# on stderr.
count() { # flags...
  local dir port pid id requests
  dir="$(mktemp -d)"
  port="$(free_port)"
  # Uncompressed names: the dump taken while the server runs must stand on its own.
  valgrind --tool=callgrind --instr-atstart=no --compress-strings=no --compress-pos=no \
    --callgrind-out-file="$dir/out.%p" "$binary" --listen "127.0.0.1:$port" \
    --database "sqlite://$dir/o.db" --api-keys "$key" \
    --rate-limit-per-second 1000000 --rate-limit-burst 1000000 "$@" >"$dir/log" 2>&1 &
  pid=$!
  id="$(first_order "$port" 300)"
  # Warm-up: connections, caches and the tables reach their steady state uncounted.
  wrk -t1 -c4 -d3s -H "Authorization: Bearer $key" "http://127.0.0.1:$port/v2/orders/$id" >/dev/null
  callgrind_control --instr=on "$pid" >/dev/null 2>&1
  wrk -t1 -c1 "-d${seconds}s" -H "Authorization: Bearer $key" \
    "http://127.0.0.1:$port/v2/orders/$id" >"$dir/wrk"
  callgrind_control --instr=off "$pid" >/dev/null 2>&1
  callgrind_control --dump "$pid" >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  if grep -q 'Non-2xx' "$dir/wrk"; then
    echo "non-2xx answers in $*:" >&2; cat "$dir/wrk" >&2; exit 1
  fi
  requests="$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$dir/wrk")"
  # The dump taken while running is the first one after the start-up's part: `.1`.
  local out="$dir/out.$pid.1"
  callgrind_annotate "$out" | awk -v n="$requests" '/PROGRAM TOTALS/ { gsub(",", "", $1); printf "%.0f\n", $1 / n; exit }'
  if [ "$top" -gt 0 ]; then
    echo "-- top $top by own instructions per GET: ${*:-guarded, memory stores}" >&2
    callgrind_annotate "$out" | awk -v n="$requests" -v top="$top" '
      $1 ~ /^[0-9,]+$/ && $2 ~ /^\(/ { x = $1; gsub(",", "", x); $1 = ""; $2 = "";
        if (shown++ < top) printf "%9.0f %s\n", x / n, substr($0, 1, 160) }' >&2
  fi
  rm -rf "$dir"
}

guarded="$(count)"
bare="$(count --demo-disable-guardrails)"
with_redis="$(count --redis "$redis" --redis-prefix "count-$$")"
echo "| set-up | instructions per GET | ratio |"
echo "|---|---|---|"
echo "| unguarded (\`--demo-disable-guardrails\`) | $bare | 1.00 |"
python3 - "$bare" "$guarded" "$with_redis" <<'PY'
import sys
bare, guarded, redis = map(int, sys.argv[1:])
print(f"| guarded, memory stores | {guarded} | {guarded / bare:.2f} (unguarded / guarded: {bare / guarded:.2f}) |")
print(f"| guarded, Redis stores | {redis} | {redis / bare:.2f} (memory / Redis: {guarded / redis:.2f}) |")
PY
