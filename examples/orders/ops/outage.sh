#!/usr/bin/env bash
# What a Redis outage costs: three `orders` instances on one private Redis, under POST
# /v2/orders with a fresh Idempotency-Key per request (wrk, one per instance), for 10 s
# healthy, 10 s with Redis stopped, and 10 s with Redis frozen (SIGSTOP); then how long each
# recovery took from Redis being back to the first 201. Needs redis-server, wrk, curl, python3.
#
#   examples/orders/ops/outage.sh BINARY [LABEL]     # e.g. target/release/orders
#
# Prints one Markdown table row: label, req/s healthy, stopped, hung (with the ratios), and
# the two recovery times. Responses of every status count: during an outage the answer is
# 503 + Retry-After (idempotency fails closed), and what matters is how fast it comes.
set -euo pipefail
binary="$1"; label="${2:-$1}"; seconds="${SECONDS_PER_PHASE:-10}"
key=outage_key_123
dir="$(mktemp -d)"
pids=()
cleanup() {
  kill -CONT "${redis_pid:-0}" 2>/dev/null || true
  kill "${pids[@]}" "${redis_pid:-0}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port="$(free_port)"
start_redis() {
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
    --logfile "$dir/redis.log" &
  redis_pid=$!
  for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && return; sleep 0.02; done
  echo "redis-server did not start" >&2; exit 1
}
start_redis

ports=()
for i in 1 2 3; do
  port="$(free_port)"; ports+=("$port")
  "$binary" --listen "127.0.0.1:$port" --database "sqlite://$dir/orders-$i.db" --api-keys "$key" \
    --redis "redis://127.0.0.1:$redis_port" --redis-prefix outage \
    --rate-limit-per-second 1000000 --rate-limit-burst 1000000 >"$dir/orders-$i.log" 2>&1 &
  pids+=($!)
done
for port in "${ports[@]}"; do
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.05; done
done

cat >"$dir/post.lua" <<'EOF'
local n = 0
local prefix = os.getenv("PREFIX") .. "-" .. tostring(math.random(1, 1000000000))
local body = '{"customer_id":"cus_1","items":[{"sku":"a","quantity":1,"unit_price":{"amount":1,"currency":"usd"}}]}'
request = function()
  n = n + 1
  return wrk.format("POST", "/v2/orders", {
    ["Authorization"] = "Bearer outage_key_123",
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = '"' .. prefix .. "-" .. n .. '"',
  }, body)
end
EOF

# Requests per second, all statuses, summed over the three instances.
load() { # phase
  local total=0 i=0 wrk_pids=()
  for port in "${ports[@]}"; do
    i=$((i + 1))
    PREFIX="$1-$i" wrk -t1 -c16 -d"${seconds}s" --timeout 5s -s "$dir/post.lua" \
      "http://127.0.0.1:$port" >"$dir/wrk-$1-$i.txt" 2>&1 &
    wrk_pids+=($!)
  done
  wait "${wrk_pids[@]}"
  for i in 1 2 3; do
    total=$(awk -v t="$total" '/Requests\/sec/ {printf "%d", t + $2}' "$dir/wrk-$1-$i.txt")
  done
  echo "$total"
}

# Milliseconds from now until a POST is answered 201.
recovery_ms() {
  python3 - "${ports[0]}" "$key" <<'EOF'
import http.client, json, sys, time, uuid
port, key = int(sys.argv[1]), sys.argv[2]
body = json.dumps({"customer_id": "cus_1", "items": [{"sku": "a", "quantity": 1, "unit_price": {"amount": 1, "currency": "usd"}}]})
start = time.monotonic()
while time.monotonic() - start < 30:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("POST", "/v2/orders", body, {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "Idempotency-Key": f'"{uuid.uuid4()}"'})
    if c.getresponse().status == 201:
        print(round((time.monotonic() - start) * 1000))
        sys.exit(0)
    c.close()
    time.sleep(0.005)
print("none in 30 s")
EOF
}

healthy="$(load healthy)"

kill "$redis_pid"; wait "$redis_pid" 2>/dev/null || true
stopped="$(load stopped)"
start_redis
back_from_stop="$(recovery_ms)"

kill -STOP "$redis_pid"
hung="$(load hung)"
kill -CONT "$redis_pid"
back_from_hang="$(recovery_ms)"

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
printf '| %s | %s | %s (%s×) | %s (%s×) | %s ms | %s ms |\n' "$label" "$healthy" \
  "$stopped" "$(ratio "$stopped" "$healthy")" "$hung" "$(ratio "$hung" "$healthy")" \
  "$back_from_stop" "$back_from_hang"
