#!/usr/bin/env bash
# REST vs gRPC: the same reads over JSON on HTTP/1.1, JSON on h2c and gRPC, with the guardrails
# on, the server pinned to core 0 and the client to core 1 (needs taskset, curl and python3).
# Writes the table to grpc-vs-rest-figures.md and the chart to grpc-vs-rest.svg beside this
# script; extra arguments go to orders-protocols (`--window-ms 10000`, say).
#
#   examples/orders/docs/grpc-vs-rest.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
docs=examples/orders/docs
key=bench_key_123
cargo build --release -q -p orders -p orders-storm --bin orders --bin orders-protocols

dir="$(mktemp -d)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rest="$(free_port)"; grpc="$(free_port)"
taskset -c 0 target/release/orders --listen "127.0.0.1:$rest" --grpc-listen "127.0.0.1:$grpc" \
  --database "sqlite://$dir/orders.db" --api-keys "$key" \
  --rate-limit-per-second 1000000 --rate-limit-burst 1000000 >"$dir/server.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$rest/ready" >/dev/null && break; sleep 0.1; done

{
  echo "Run on $(date -u +%Y-%m-%d), $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) vCPU;"
  echo "server on core 0, client on core 1; SQLite, memory rate-limit store, guardrails on."
  echo
  taskset -c 1 target/release/orders-protocols --rest "127.0.0.1:$rest" --grpc "127.0.0.1:$grpc" \
    --api-key "$key" --server-pid "$pid" --chart "$docs/grpc-vs-rest.svg" "$@"
} | tee "$docs/grpc-vs-rest-figures.md"
