# Shared by service-ratio.sh and service-count.sh (sourced): the API key and order they use,
# a free port, and the wait for a fresh server followed by the order every GET reads.
key=wrk_key_123
order='{"customer_id":"cus_1","items":[{"sku":"a","quantity":1,"unit_price":{"amount":1,"currency":"usd"}}]}'

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits for the server on PORT to answer /health (at most TRIES × 0.2 s), creates one order
# and prints its id.
first_order() { # port tries
  for _ in $(seq 1 "$2"); do curl -fs "http://127.0.0.1:$1/health" >/dev/null && break; sleep 0.2; done
  curl -fs "http://127.0.0.1:$1/v2/orders" -H "Authorization: Bearer $key" \
    -H "Idempotency-Key: \"order-$RANDOM$RANDOM\"" -H 'Content-Type: application/json' -d "$order" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
