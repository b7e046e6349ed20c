#!/usr/bin/env bash
# What the edge costs: GET /v2/orders/{id} with wrk against two builds of `orders`, alternating,
# the server pinned to core 0 and wrk to core 1 (needs wrk, curl, python3 and taskset).
#
#   examples/orders/docs/edge-cost.sh BEFORE_BINARY AFTER_BINARY [ROUNDS]
set -euo pipefail
before="$1"; after="$2"; rounds="${3:-2}"
key=wrk_key_123
order='{"customer_id":"cus_1","items":[{"sku":"a","quantity":1,"unit_price":{"amount":1,"currency":"usd"}}]}'

run() { # label binary
  local dir port pid id
  dir="$(mktemp -d)"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  taskset -c 0 "$2" --listen "127.0.0.1:$port" --database "sqlite://$dir/o.db" --api-keys "$key" \
    --rate-limit-per-second 1000000 --rate-limit-burst 1000000 >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
  id="$(curl -fs "http://127.0.0.1:$port/v2/orders" -H "Authorization: Bearer $key" \
    -H 'Idempotency-Key: "wrk-1"' -H 'Content-Type: application/json' -d "$order" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
  printf '%s: ' "$1"
  taskset -c 1 wrk -t1 -c32 -d10s -H "Authorization: Bearer $key" \
    "http://127.0.0.1:$port/v2/orders/$id" | awk '/Requests\/sec/ {printf "%s req/s", $2} /Latency/ {printf "mean latency %s, ", $2}'
  echo
  kill "$pid"; wait "$pid" 2>/dev/null || true; rm -rf "$dir"
}

for _ in $(seq 1 "$rounds"); do
  run before "$before"
  run after "$after"
done
