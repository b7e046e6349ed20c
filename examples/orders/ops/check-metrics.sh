#!/usr/bin/env bash
# Runs the orders service, sends it a few requests of every kind, and checks its /metrics
# exposition with `promtool check metrics` (Prometheus's linter): any finding fails.
#
#   examples/orders/ops/check-metrics.sh [path/to/orders binary]
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
cd "$root"
binary="${1:-target/debug/orders}"
command -v promtool >/dev/null || { echo "promtool is needed (Debian: apt-get install prometheus)" >&2; exit 1; }
[ -x "$binary" ] || cargo build --quiet -p orders

work="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$binary" --listen "127.0.0.1:$port" --database "sqlite://$work/orders.db" \
  --api-keys metrics_key_1 --rate-limit-per-second 1 --rate-limit-burst 2 >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$work"' EXIT
url="http://127.0.0.1:$port"
for _ in $(seq 1 50); do
  curl -fsS "$url/health" >/dev/null 2>&1 && break
  sleep 0.2
done

auth='Authorization: Bearer metrics_key_1'
order='{"customer_id":"cus_1","items":[{"sku":"a","quantity":1,"unit_price":{"amount":1,"currency":"usd"}}]}'
# Every series kind: an order placed and replayed, a 429, a 401, a 405 with an odd method,
# a /v1 call, a 404.
curl -s -o /dev/null "$url/v2/orders" -H "$auth" -H 'Idempotency-Key: "m1"' -H 'Content-Type: application/json' -d "$order"
curl -s -o /dev/null "$url/v2/orders" -H "$auth" -H 'Idempotency-Key: "m1"' -H 'Content-Type: application/json' -d "$order"
curl -s -o /dev/null "$url/v1/orders" -H "$auth"
curl -s -o /dev/null "$url/v1/orders"
curl -s -o /dev/null -X BREW "$url/health"
curl -s -o /dev/null "$url/nowhere"

curl -fsS "$url/metrics" >"$work/metrics.txt"
if ! promtool check metrics <"$work/metrics.txt"; then
  echo "promtool found problems in /metrics (above)" >&2
  exit 1
fi
echo "promtool check metrics: no findings ($(grep -c '^# HELP' "$work/metrics.txt") metric families)"
