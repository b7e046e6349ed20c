#!/usr/bin/env bash
# Redis decisions per second: tower-ratelimit's RedisStore from 64 concurrent tasks, beside
# `redis-benchmark -c 64` running the very same script (decide.lua, by EVALSHA) with the same
# policy arguments and the same number of random callers. Prints both and the ratio
# (target ≥ 0.8×).
#
# Usage: benches/ratelimit-redis.sh            (Redis at 127.0.0.1:6379)
#        REDIS_HOST=h REDIS_PORT=p BENCH_SECONDS=5 REQUESTS=300000 benches/ratelimit-redis.sh
set -euo pipefail
cd "$(dirname "$0")/.."

host=${REDIS_HOST:-127.0.0.1}
port=${REDIS_PORT:-6379}
tasks=64
requests=${REQUESTS:-300000}
export REDIS_URL="redis://$host:$port" BENCH_SECONDS=${BENCH_SECONDS:-5} TASKS=$tasks

for tool in redis-cli redis-benchmark; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found (install redis-tools)" >&2; exit 2; }
done
redis-cli -h "$host" -p "$port" ping >/dev/null \
  || { echo "error: no Redis answers at $host:$port (start redis-server, or set REDIS_HOST/REDIS_PORT)" >&2; exit 2; }

echo "== tower-ratelimit RedisStore ($tasks tasks, one multiplexed connection)"
ours=$(cargo bench -q -p guardrail-benches --bench ratelimit_redis 2>/dev/null | tee /dev/stderr \
  | sed -n 's/.*: \([0-9]*\) decisions\/s.*/\1/p')

# The same script and arguments the store sends: cost 1; GCRA (kind 1), 1 µs interval,
# burst 1,000,000 (always admits: the write path); one key per caller, hash-tagged.
sha=$(redis-cli -h "$host" -p "$port" -x SCRIPT LOAD < ratelimit/src/store/decide.lua)
echo "== redis-benchmark ($tasks connections, $requests requests, EVALSHA $sha)"
theirs=$(redis-benchmark -h "$host" -p "$port" -c "$tasks" -n "$requests" -r 100000 --csv \
  EVALSHA "$sha" 1 "{rlbench-rb:ip:__rand_int__}:sustained:g1:1000000" 1 1 1 1000000 \
  | tee /dev/stderr | awk -F'","' 'NR==2 {print int($2)}')

echo
printf '%-40s %12s\n' "client" "decisions/s"
printf '%-40s %12s\n' "tower-ratelimit RedisStore" "$ours"
printf '%-40s %12s\n' "redis-benchmark (same script)" "$theirs"
awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "ratio (ours / redis-benchmark): %.2f (target >= 0.80)\n", a / b }'
