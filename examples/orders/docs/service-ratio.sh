#!/usr/bin/env bash
# What the guardrails cost the whole service: GET /v2/orders/{id} with wrk against one build of
# `orders` in three set-ups, alternating within each round so that all three share the
# machine's mood: guarded with memory stores, `--demo-disable-guardrails`, and guarded with
# Redis stores (`--redis`; a GET pays the rate limiter's EVALSHA). The server is pinned to
# core 0, wrk to core 1. Needs wrk, curl, python3, taskset, and for the Redis row a Redis at
# $REDIS_URL (default redis://127.0.0.1:6379).
#
#   cargo build --release -p orders
#   examples/orders/docs/service-ratio.sh target/release/orders [ROUNDS] [SECONDS]
set -euo pipefail
binary="$1"; rounds="${2:-3}"; seconds="${3:-10}"
redis="${REDIS_URL:-redis://127.0.0.1:6379}"
. "$(dirname "$0")/service-common.sh"
for tool in wrk curl python3 taskset; do
  command -v "$tool" >/dev/null || { echo "$tool is needed (wrk: apt-get install wrk)" >&2; exit 1; }
done

# Redis's command statistics, when redis-cli can reach it (the Redis row's accounting).
redis_stats() {
  if command -v redis-cli >/dev/null; then redis-cli -u "$redis" info commandstats 2>/dev/null || true; fi
}

# The CPU time the process has used, user and system, in clock ticks (/proc/PID/stat).
cpu_ticks() { # pid
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# Prints, for one wrk run against a fresh server given extra flags: requests per second, the
# server's own CPU (µs) per request, Redis EVALSHA calls per request, and Redis's own CPU
# (µs) per request. The server's CPU per request is the steadier figure on a shared machine:
# it does not move when another process (Redis, say) takes turns on the server's core.
rate() { # flags...
  local dir port pid id
  dir="$(mktemp -d)"
  port="$(free_port)"
  taskset -c 0 "$binary" --listen "127.0.0.1:$port" --database "sqlite://$dir/o.db" --api-keys "$key" \
    --rate-limit-per-second 1000000 --rate-limit-burst 1000000 "$@" >"$dir/log" 2>&1 &
  pid=$!
  id="$(first_order "$port" 50)"
  redis_stats >"$dir/before"
  cpu_ticks "$pid" >"$dir/cpu-before"
  # Every response must be a 200: a ratio of refusals would measure nothing.
  taskset -c 1 wrk -t1 -c32 "-d${seconds}s" -H "Authorization: Bearer $key" \
    "http://127.0.0.1:$port/v2/orders/$id" > "$dir/wrk"
  cpu_ticks "$pid" >"$dir/cpu-after"
  redis_stats >"$dir/after"
  if grep -q 'Non-2xx' "$dir/wrk"; then
    echo "non-2xx answers in $*:" >&2; cat "$dir/wrk" >&2; exit 1
  fi
  # The rate, then what Redis did meanwhile: commands per request and its own CPU per request
  # (commandstats counts the script's inner TIME, GET and SET apart from the EVALSHA).
  python3 - "$dir/wrk" "$dir/before" "$dir/after" "$(cat "$dir/cpu-before")" "$(cat "$dir/cpu-after")" \
    "$(getconf CLK_TCK)" <<'PY'
import re, sys
wrk = open(sys.argv[1]).read()
rate = float(re.search(r"Requests/sec:\s+([\d.]+)", wrk).group(1))
requests = int(re.search(r"(\d+) requests in", wrk).group(1))
server = (int(sys.argv[5]) - int(sys.argv[4])) / int(sys.argv[6]) * 1e6 / requests
def stats(path):
    out = {}
    for line in open(path):
        m = re.match(r"cmdstat_(\w+):calls=(\d+),usec=(\d+)", line)
        if m:
            out[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return out
before, after = stats(sys.argv[2]), stats(sys.argv[3])
if not after:  # no redis-cli, or no Redis: say so rather than print zeros
    print(f"{rate} {server:.1f} nan nan")
    sys.exit()
calls = {k: after[k][0] - before.get(k, (0, 0))[0] for k in after}
usec = sum(after[k][1] - before.get(k, (0, 0))[1] for k in after)
evalsha = calls.get("evalsha", 0)
print(f"{rate} {server:.1f} {evalsha / requests:.2f} {usec / requests:.1f}")
PY
  kill "$pid"; wait "$pid" 2>/dev/null || true; rm -rf "$dir"
}

echo "| round | guarded, memory stores | unguarded | guarded, Redis stores | guarded / unguarded | Redis / memory | server CPU per GET: guarded, unguarded, Redis | the same as ratios: unguarded / guarded, memory / Redis | EVALSHA per GET | Redis CPU per GET |"
echo "|---|---|---|---|---|---|---|---|---|---|"
rows="$(mktemp)"
for round in $(seq 1 "$rounds"); do
  read -r memory memory_cpu _ < <(rate)
  read -r bare bare_cpu _ < <(rate --demo-disable-guardrails)
  read -r redis_rate redis_server_cpu evalsha redis_cpu < <(rate --redis "$redis" --redis-prefix "ratio-$$-$round")
  python3 - "$round" "$memory" "$bare" "$redis_rate" "$memory_cpu" "$bare_cpu" "$redis_server_cpu" \
    "$evalsha" "$redis_cpu" <<'PY' | tee -a "$rows"
import sys
round_, memory, bare, redis, memory_cpu, bare_cpu, redis_server_cpu, evalsha, cpu = sys.argv[1], *map(float, sys.argv[2:])
print(f"| {round_} | {memory:,.0f}/s | {bare:,.0f}/s | {redis:,.0f}/s | {memory / bare:.2f} | {redis / memory:.2f} "
      f"| {memory_cpu:.1f}, {bare_cpu:.1f}, {redis_server_cpu:.1f} µs | {bare_cpu / memory_cpu:.2f}, {memory_cpu / redis_server_cpu:.2f} "
      f"| {evalsha:.2f} | {cpu:.1f} µs |")
PY
done
# The machine's speed moves between runs by more than the guardrails cost: the medians over
# the rounds are the figures to quote.
python3 - "$rows" <<'PY'
import statistics, sys
rows = [line.split("|") for line in open(sys.argv[1])]
def median(column):
    return statistics.median(float(row[column]) for row in rows)
print(f"| median of {len(rows)} | | | | {median(5):.2f} | {median(6):.2f} | | | | |")
PY
rm -f "$rows"
