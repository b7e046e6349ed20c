#!/usr/bin/env python3
"""Edge attacks against a built `orders` binary, one table row per attack.

Starts its own `orders` processes (a free port each, a temporary directory holding the
SQLite file `o.db` and the captured logs, every ORDERS_* variable removed from the child
environment), attacks them over raw sockets, and prints a markdown table `| row | result |`
with the figure each attack measured. The PostgreSQL rows (7, 8, 9) use the server at
127.0.0.1:5432 (trust auth, user postgres) through `psql`, create databases named
`orders_attack_<pid>_r<row>` and drop them afterwards; rows 7 and 9 put a TCP proxy run by
this script between the service and PostgreSQL, so "PostgreSQL stopped" is the proxy cutting
every connection (the shared server is never stopped).

Only flags common to the old and the new service are passed: --listen, --database,
--api-keys, --rate-limit-per-second, --rate-limit-burst, --v1-deprecated-at, --v1-sunset-at,
--shutdown-grace-seconds. Everything else runs on the binary's defaults.

Every wait is bounded: an attack that hits its cap reports "still open after N s". Slow,
independent attacks run concurrently in threads; the whole run takes about 2 to 4 minutes.
Processes, temporary directories and databases are cleaned up on success, failure, Ctrl-C
and SIGTERM.

Usage:
    python3 examples/orders/docs/edge-attacks.py --binary PATH [--only ROW[,ROW...]]

Python 3.11, standard library only (plus the `psql` client on PATH).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

KEY_ONE = "edge_attack_key_one"
KEY_TWO = "edge_attack_key_two"
AUTH = f"Bearer {KEY_ONE}"
ORDER = (
    b'{"customer_id":"cus_1","items":[{"sku":"a","quantity":1,'
    b'"unit_price":{"amount":100,"currency":"usd"}}]}'
)
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
RUN_CAP = 300.0  # the whole run; a row still running then is reported as such

# --------------------------------------------------------------------------------------------
# Cleanup: everything that must not outlive the script registers here.
# --------------------------------------------------------------------------------------------

_resources: list = []
_resources_lock = threading.Lock()


def register(resource):
    with _resources_lock:
        _resources.append(resource)
    return resource


def cleanup_all():
    with _resources_lock:
        pending = list(reversed(_resources))
        _resources.clear()
    for resource in pending:
        try:
            resource.close()
        except Exception as error:  # keep cleaning the rest
            print(f"cleanup of {resource!r} failed: {error}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# HTTP over raw sockets
# --------------------------------------------------------------------------------------------


class Closed(Exception):
    """The peer closed the connection before a whole response arrived."""


class Response:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes, version: str):
        self.status = status
        self.headers = headers
        self.body = body
        self.version = version

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def will_close(self) -> bool:
        connection = (self.header("connection") or "").lower()
        return "close" in connection or self.version == "HTTP/1.0"

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def problem_type(self) -> str:
        document = self.json()
        if isinstance(document, dict) and "type" in document:
            return str(document["type"])
        return "(no problem type)"


def parse_head(head: bytes) -> tuple[int, list[tuple[str, str]], str]:
    lines = head.decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ", 2)[:2]
    headers = []
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers.append((key.strip().lower(), value.strip()))
    return int(status), headers, version


class Conn:
    """One client TCP connection with a receive buffer; every read has a deadline."""

    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = bytearray()

    def send(self, data: bytes):
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def _fill(self, deadline: float):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("read deadline")
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise Closed(bytes(self.buf[:200]))
        self.buf += chunk

    def _take(self, n: int) -> bytes:
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _line(self, deadline: float) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            self._fill(deadline)
        line = self._take(end)
        self._take(2)
        return line

    def read_response(self, timeout: float | None = None, head_only_body: bool = False) -> Response:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            searched = 0
            while (end := self.buf.find(b"\r\n\r\n", max(0, searched - 3))) < 0:
                searched = len(self.buf)
                self._fill(deadline)
            head = self._take(end)
            self._take(4)
            status, headers, version = parse_head(head)
            if status >= 200 or status == 101:
                break  # skip 1xx interim responses
        response = Response(status, headers, b"", version)
        length = response.header("content-length")
        chunked = "chunked" in (response.header("transfer-encoding") or "").lower()
        if status in (204, 304) or head_only_body:
            return response
        if length is not None:
            n = int(length)
            while len(self.buf) < n:
                self._fill(deadline)
            response.body = self._take(n)
        elif chunked:
            body = bytearray()
            while True:
                size = int(self._line(deadline).split(b";")[0], 16)
                while len(self.buf) < size + 2:
                    self._fill(deadline)
                body += self._take(size)
                self._take(2)
                if size == 0:
                    break
            response.body = bytes(body)
        else:
            try:
                while True:
                    self._fill(deadline)
            except Closed:
                pass
            response.body = self._take(len(self.buf))
        return response

    def closed_within(self, cap: float) -> tuple[float | None, bytes]:
        """Seconds until the peer closed (EOF or reset), or None after `cap`; and what it sent."""
        started = time.monotonic()
        received = bytearray(self.buf)
        while (left := cap - (time.monotonic() - started)) > 0:
            self.sock.settimeout(min(left, 1.0))
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return time.monotonic() - started, bytes(received)
            if not chunk:
                return time.monotonic() - started, bytes(received)
            received += chunk
        return None, bytes(received)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def request(port: int, method: str, path: str, headers: dict | None = None,
            body: bytes = b"", timeout: float = 10.0) -> Response:
    """One request on a fresh connection (Connection: close)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: edge", "Connection: close"]
    for key, value in (headers or {}).items():
        lines.append(f"{key}: {value}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    conn = Conn(port, timeout)
    try:
        conn.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return conn.read_response(timeout)
    finally:
        conn.close()


def timed(port: int, method: str, path: str, headers: dict | None = None,
          body: bytes = b"", cap: float = 10.0) -> tuple[str, float, Response | None]:
    """A request on a fresh connection: (outcome text, seconds, response or None)."""
    started = time.monotonic()
    try:
        response = request(port, method, path, headers, body, timeout=cap)
        return str(response.status), time.monotonic() - started, response
    except (TimeoutError, socket.timeout):
        return f"still open after {cap:g} s", time.monotonic() - started, None
    except Closed:
        return "closed without an answer", time.monotonic() - started, None
    except OSError as error:
        return type(error).__name__, time.monotonic() - started, None


def type_of(response: Response | None) -> str:
    """The problem type of an error answer (" `/problems/…`"), else an empty string."""
    if response is None or response.status < 400:
        return ""
    return f" `{response.problem_type()}`"


def authed(extra: dict | None = None, key: str = AUTH) -> dict:
    headers = {"Authorization": key}
    headers.update(extra or {})
    return headers


def post_headers(idempotency_key: str) -> dict:
    return authed({"Idempotency-Key": f'"{idempotency_key}"', "Content-Type": "application/json"})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def yes_no(value) -> str:
    return "yes" if value else "no"


def counts(counter: collections.Counter) -> str:
    return ", ".join(f"{key}×{n}" for key, n in sorted(counter.items(), key=lambda kv: str(kv[0]))) or "none"


# --------------------------------------------------------------------------------------------
# The service under attack
# --------------------------------------------------------------------------------------------


def child_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("ORDERS_")}


class Service:
    """One `orders` process on a free port; stdout (JSON log lines) goes to DIR/stdout.log."""

    def __init__(self, binary: str, name: str, args: list[str] | None = None,
                 database: str | None = None, nofile: int | None = None):
        self.binary = binary
        self.name = name
        self.args = list(args or [])
        self.nofile = nofile
        self.dir = tempfile.mkdtemp(prefix=f"edge-attack-{name}-")
        self.database = database or f"sqlite://{self.dir}/o.db"
        self.log_path = os.path.join(self.dir, "stdout.log")
        self.err_path = os.path.join(self.dir, "stderr.log")
        self.proc: subprocess.Popen | None = None
        self.port = 0
        register(self)

    def __repr__(self):
        return f"Service({self.name})"

    def start(self, healthy_cap: float = 30.0):
        self.port = free_port()
        command = [self.binary, "--listen", f"127.0.0.1:{self.port}", "--database", self.database,
                   "--api-keys", f"{KEY_ONE},{KEY_TWO}", *self.args]
        if self.nofile is not None:
            command = ["sh", "-c", f'ulimit -n {self.nofile} && exec "$0" "$@"', *command]
        with open(self.log_path, "ab") as out, open(self.err_path, "ab") as err:
            self.proc = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         env=child_env(), start_new_session=True)
        self.wait_healthy(healthy_cap)
        return self

    def wait_healthy(self, cap: float):
        deadline = time.monotonic() + cap
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.stderr_tail()}")
            try:
                if request(self.port, "GET", "/health", timeout=1.0).status == 200:
                    return
            except (OSError, Closed, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not healthy after {cap:g} s: {self.stderr_tail()}")

    def stderr_tail(self) -> str:
        try:
            with open(self.err_path, "rb") as f:
                return f.read()[-400:].decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return -1

    def log_bytes(self) -> int:
        return os.path.getsize(self.log_path)

    def terminate(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, cap: float) -> float | None:
        started = time.monotonic()
        try:
            self.proc.wait(timeout=cap)
            return time.monotonic() - started
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def close(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def create_order(service: Service, key: str) -> Response:
    return request(service.port, "POST", "/v2/orders", post_headers(key), ORDER)


# --------------------------------------------------------------------------------------------
# PostgreSQL: psql, throwaway databases, a controllable TCP proxy
# --------------------------------------------------------------------------------------------


def psql(sql: str, database: str = "postgres", timeout: float = 30.0) -> str:
    result = subprocess.run(
        ["psql", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, "-d", database,
         "-v", "ON_ERROR_STOP=1", "-X", "-Atc", sql],
        capture_output=True, text=True, timeout=timeout, env=child_env())
    if result.returncode != 0:
        raise RuntimeError(f"psql failed: {result.stderr.strip()}")
    return result.stdout.strip()


class Database:
    """A database of its own on the shared server, dropped (WITH FORCE) on close."""

    def __init__(self, row: int | str):
        self.name = f"orders_attack_{os.getpid()}_r{row}"
        psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        psql(f"CREATE DATABASE {self.name}")
        register(self)

    def __repr__(self):
        return f"Database({self.name})"

    def url(self, port: int = PG_PORT) -> str:
        return f"postgres://{PG_USER}@127.0.0.1:{port}/{self.name}"

    def close(self):
        psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


class Background:
    """A background process (psql holding a lock), killed on close."""

    def __init__(self, command: list[str]):
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, env=child_env())
        register(self)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Proxy:
    """TCP proxy to PostgreSQL with three modes: forward, cut (close all, refuse new), hang
    (stop forwarding bytes, keep every socket open, accept new connections but never answer)."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.mode = "forward"
        self.stopped = False
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept_loop, daemon=True).start()
        register(self)

    def __repr__(self):
        return f"Proxy({self.port})"

    def _accept_loop(self):
        while not self.stopped and self.mode != "cut":
            try:
                client, _ = self.listener.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                break
            with self.lock:
                self.sockets.append(client)
            if self.mode != "forward":
                continue  # hang: accepted, never answered
            try:
                upstream = socket.create_connection((PG_HOST, PG_PORT), timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets.append(upstream)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
        self.listener.close()  # cut: new connections are refused

    def _pump(self, client: socket.socket, upstream: socket.socket):
        peers = {client: upstream, upstream: client}
        try:
            while not self.stopped and self.mode != "cut":
                if self.mode == "hang":
                    time.sleep(0.1)
                    continue
                readable, _, _ = select.select(list(peers), [], [], 0.2)
                if self.mode != "forward":
                    continue
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    peers[source].sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            for s in (client, upstream):
                try:
                    s.close()
                except OSError:
                    pass

    def _close_sockets(self):
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def cut(self):
        self.mode = "cut"
        self._close_sockets()
        time.sleep(0.3)  # the accept loop closes the listener within 0.2 s

    def hang(self):
        self.mode = "hang"
        time.sleep(0.3)  # every pump has seen the mode (each wakes at least every 0.2 s)

    def close(self):
        self.stopped = True
        self._close_sockets()
        try:
            self.listener.close()
        except OSError:
            pass


# --------------------------------------------------------------------------------------------
# The rows
# --------------------------------------------------------------------------------------------

ROWS: dict[int, tuple[str, object]] = {}


def row(number: int, label: str):
    def wrap(function):
        ROWS[number] = (label, function)
        return function
    return wrap


def flood(service: Service, count: int, method_bytes: int, connections: int = 4,
          cap: float = 150.0) -> tuple[collections.Counter, collections.Counter, float]:
    """`count` requests with distinct `method_bytes`-byte methods over a few keep-alive
    connections (reconnecting when the server closes): (statuses, errors, seconds)."""
    statuses: collections.Counter = collections.Counter()
    errors: collections.Counter = collections.Counter()
    lock = threading.Lock()
    started = time.monotonic()
    deadline = started + cap

    def worker(indices):
        conn = None
        for i in indices:
            if time.monotonic() > deadline:
                with lock:
                    errors["not sent (cap)"] += 1
                continue
            method = f"M{i:04d}".encode() + b"X" * (method_bytes - 5)
            raw = method + b" /v2/orders HTTP/1.1\r\nHost: edge\r\n\r\n"
            try:
                if conn is None:
                    conn = Conn(service.port, timeout=10)
                conn.send(raw)
                response = conn.read_response()
                with lock:
                    statuses[response.status] += 1
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, Closed) as error:
                name = "closed before an answer" if isinstance(error, Closed) else type(error).__name__
                with lock:
                    errors[name] += 1
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, args=(range(k, count, connections),), daemon=True)
               for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 15)
    return statuses, errors, time.monotonic() - started


def fetch_metrics(service: Service, cap: float = 60.0) -> str:
    started = time.monotonic()
    try:
        response = request(service.port, "GET", "/metrics", timeout=cap)
        return f"{len(response.body):,} bytes in {time.monotonic() - started:.2f} s (status {response.status})"
    except (TimeoutError, socket.timeout):
        return f"still open after {cap:g} s"
    except (OSError, Closed) as error:
        return f"{type(error).__name__} after {time.monotonic() - started:.2f} s"


@row(1, "method flood")
def row_method_flood(binary: str):
    """2,400 distinct methods, 100 KB each and then 1,000 bytes each, no credentials."""
    results = []
    for size, label in ((100 * 1024, "100 KB methods"), (1000, "1,000-byte methods")):
        service = Service(binary, f"flood{size}").start()
        try:
            rss_before = service.rss_kib()
            log_before = service.log_bytes()
            statuses, errors, seconds = flood(service, 2400, size)
            time.sleep(1.0)  # let the log writer catch up
            rss_after = service.rss_kib()
            log_growth = service.log_bytes() - log_before
            metrics = fetch_metrics(service)
            rss_metrics = service.rss_kib()
            alive = "alive" if service.proc.poll() is None else f"exited {service.proc.returncode}"
            results.append((
                f"1 method flood, {label}",
                f"RSS {rss_before / 1024:.1f} → {rss_after / 1024:.1f} MiB "
                f"({rss_metrics / 1024:.1f} MiB after /metrics); /metrics {metrics}; "
                f"log +{log_growth:,} bytes; statuses {counts(statuses)}; "
                f"errors {counts(errors)}; flood took {seconds:.1f} s; server {alive}"))
        finally:
            service.close()
    return results


@row(2, "stalled head")
def row_stalled_head(binary: str):
    """An unfinished request head, then silence."""
    cap = 75.0
    service = Service(binary, "head").start()
    try:
        conn = Conn(service.port)
        conn.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        seconds, received = conn.closed_within(cap)
        conn.close()
        return closed_text(seconds, received, cap)
    finally:
        service.close()


def closed_text(seconds: float | None, received: bytes, cap: float) -> str:
    answer = ""
    if received.startswith(b"HTTP/"):
        status_line = received.split(b"\r\n", 1)[0].decode("latin-1")
        answer = f", answered `{status_line}`"
        end = received.find(b"\r\n\r\n")
        body = received[end + 4:] if end >= 0 else b""
        try:
            kind = json.loads(body).get("type")
            if kind:
                answer += f" type `{kind}`"
        except (ValueError, AttributeError):
            pass
    elif received:
        answer = f", sent {len(received)} bytes"
    else:
        answer = ", no answer"
    if seconds is None:
        return f"still open after {cap:g} s{answer}"
    return f"closed after {seconds:.1f} s{answer}"


@row(3, "stalled body")
def row_stalled_body(binary: str):
    """Content-Length: 100, one byte of body, then silence."""
    cap = 75.0
    service = Service(binary, "body").start()
    try:
        conn = Conn(service.port)
        conn.send((f"POST /v2/orders HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\n"
                   'Idempotency-Key: "stalled-1"\r\nContent-Type: application/json\r\n'
                   "Content-Length: 100\r\n\r\n{").encode())
        seconds, received = conn.closed_within(cap)
        conn.close()
        return closed_text(seconds, received, cap)
    finally:
        service.close()


@row(4, "idle keep-alive")
def row_idle_keep_alive(binary: str):
    """One GET /health on a keep-alive connection, then silence."""
    cap = 75.0
    service = Service(binary, "idle").start()
    try:
        conn = Conn(service.port)
        conn.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = conn.read_response()
        seconds, received = conn.closed_within(cap)
        conn.close()
        text = closed_text(seconds, received, cap)
        return f"GET /health {first.status}, then {text}"
    finally:
        service.close()


@row(5, "300 idle connections, ulimit -n 256")
def row_connection_flood(binary: str):
    """300 silent connections against a process allowed 256 descriptors, then one real request."""
    service = Service(binary, "nofile", nofile=256).start()
    idle: list[socket.socket] = []
    try:
        connect_errors: collections.Counter = collections.Counter()
        for _ in range(300):
            try:
                idle.append(socket.create_connection(("127.0.0.1", service.port), timeout=3))
            except OSError as error:
                connect_errors[type(error).__name__] += 1
        time.sleep(1.0)
        outcome, seconds, response = timed(service.port, "GET", "/health", cap=5.0)
        health = (f"GET /health {outcome} in {seconds:.2f} s" if response
                  else f"GET /health failed: {outcome} ({seconds:.2f} s)")
        open_count = closed_count = 0
        for s in idle:
            s.setblocking(False)
            try:
                data = s.recv(1, socket.MSG_PEEK)
                if data:
                    open_count += 1  # something was sent back, but still open
                else:
                    closed_count += 1
            except BlockingIOError:
                open_count += 1
            except OSError:
                closed_count += 1
        alive = "alive" if service.proc.poll() is None else f"exited {service.proc.returncode}"
        return (f"{health}; of the 300: {open_count} open, {closed_count} closed by the server"
                f"{'' if not connect_errors else ', connect errors ' + counts(connect_errors)}; "
                f"server {alive}")
    finally:
        for s in idle:
            s.close()
        service.close()


@row(6, "2 MiB body, write-first")
def row_write_first(binary: str):
    """http.client writes a 2 MiB body completely before it reads: 10 attempts."""
    service = Service(binary, "writefirst").start()
    try:
        body = b"x" * (2 * 1024 * 1024)
        outcomes: collections.Counter = collections.Counter()
        for attempt in range(10):
            conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
            try:
                conn.request("POST", "/v2/orders", body=body, headers=post_headers(f"big-{attempt}"))
                outcomes[f"status {conn.getresponse().status}"] += 1
            except OSError as error:  # BrokenPipeError, ConnectionResetError, RemoteDisconnected
                outcomes[type(error).__name__] += 1
            except http.client.HTTPException as error:
                outcomes[type(error).__name__] += 1
            finally:
                conn.close()
        return counts(outcomes)
    finally:
        service.close()


@row(7, "PostgreSQL stopped")
def row_postgres_stopped(binary: str):
    """The proxy to PostgreSQL closes every connection and refuses new ones."""
    per_request_cap = 35.0
    database = Database(7)
    proxy = Proxy()
    service = Service(binary, "pgcut", database=database.url(proxy.port)).start()
    try:
        created = create_order(service, "pg-cut-1").status
        listed = request(service.port, "GET", "/v2/orders", authed()).status
        proxy.cut()
        parts = []
        for _ in range(5):
            outcome, seconds, response = timed(service.port, "GET", "/v2/orders", authed(),
                                               cap=per_request_cap)
            retry = response.header("retry-after") if response else None
            parts.append(f"{outcome}{type_of(response)} ({seconds:.2f} s, Retry-After {retry or 'none'})")
        outcome, seconds, response = timed(service.port, "GET", "/ready", cap=per_request_cap)
        return (f"before: POST {created}, GET {listed}; after the cut, 5 × GET /v2/orders: "
                f"{'; '.join(parts)}; GET /ready {outcome}{type_of(response)} in {seconds:.2f} s")
    finally:
        service.close()
        proxy.close()
        database.close()


@row(8, "orders table locked 20 s")
def row_locked_table(binary: str):
    """Another session holds ACCESS EXCLUSIVE on `orders` for 20 s; one GET /v2/orders."""
    cap = 30.0
    database = Database(8)
    service = Service(binary, "pglock", database=database.url()).start()
    locker = None
    try:
        listed = request(service.port, "GET", "/v2/orders", authed()).status
        locker = Background(["psql", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, "-d",
                             database.name, "-X", "-c",
                             "BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; "
                             "SELECT pg_sleep(20); COMMIT;"])
        held = False
        for _ in range(50):
            held = psql("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                        "WHERE c.relname = 'orders' AND l.mode = 'AccessExclusiveLock' AND l.granted",
                        database.name, timeout=5) != "0"
            if held:
                break
            time.sleep(0.1)
        if not held:
            return "the lock was not taken within 5 s (no measurement)"
        outcome, seconds, response = timed(service.port, "GET", "/v2/orders", authed(), cap=cap)
        return (f"(before the lock: GET {listed}) GET /v2/orders {outcome}{type_of(response)} "
                f"after {seconds:.2f} s")
    finally:
        service.close()
        if locker:
            locker.close()
        database.close()


@row(9, "SIGTERM, grace 3 s, stuck database")
def row_shutdown_stuck_database(binary: str):
    """The proxy stops forwarding; a GET is in flight; SIGTERM after 0.5 s. Three independent
    trials at once (the old service's outcome varies from run to run)."""
    trials = 3
    outcomes: dict[int, str] = {}

    def trial(k: int):
        try:
            outcomes[k] = shutdown_trial(binary, k)
        except Exception as error:
            outcomes[k] = f"error: {type(error).__name__}: {error}"

    threads = [threading.Thread(target=trial, args=(k,), daemon=True) for k in range(trials)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(80)
    return " / ".join(f"trial {k + 1}: {outcomes.get(k, 'no outcome within 80 s')}" for k in range(trials))


def shutdown_trial(binary: str, k: int) -> str:
    cap = 40.0
    database = Database(f"9_{k}")
    proxy = Proxy()
    service = Service(binary, f"pghang{k}", args=["--shutdown-grace-seconds", "3"],
                      database=database.url(proxy.port)).start()
    try:
        listed = request(service.port, "GET", "/v2/orders", authed()).status
        proxy.hang()
        in_flight: dict = {}

        def get():
            outcome, in_flight["seconds"], response = timed(
                service.port, "GET", "/v2/orders", authed(), cap=cap + 5)
            in_flight["outcome"] = outcome + type_of(response)

        getter = threading.Thread(target=get, daemon=True)
        getter.start()
        time.sleep(0.5)
        service.terminate()
        exited = service.wait_exit(cap)
        getter.join(5)
        request_text = (f"the GET in flight: {in_flight['outcome']} after {in_flight['seconds']:.2f} s"
                        if "outcome" in in_flight else "the GET in flight: no outcome yet")
        exit_text = (f"exited {exited:.2f} s after SIGTERM (code {service.proc.returncode})"
                     if exited is not None else f"still running after {cap:g} s (killed)")
        return f"(before: GET {listed}) {exit_text}; {request_text}"
    finally:
        service.close()
        proxy.close()
        database.close()


@row(10, "/v1 without credentials, over quota")
def row_v1_headers_on_errors(binary: str):
    """Deprecation and Sunset on a 401 and on a 429 from /v1."""
    service = Service(binary, "v1errors",
                      args=["--rate-limit-per-second", "1", "--rate-limit-burst", "1"]).start()
    try:
        anonymous = request(service.port, "GET", "/v1/orders")
        statuses, limited = [], None
        for _ in range(3):
            response = request(service.port, "GET", "/v1/orders", authed())
            statuses.append(str(response.status))
            if response.status == 429 and limited is None:
                limited = response
        on_401 = (f"{anonymous.status}: Deprecation {yes_no(anonymous.header('deprecation'))}, "
                  f"Sunset {yes_no(anonymous.header('sunset'))}")
        on_429 = (f"Deprecation {yes_no(limited.header('deprecation'))}, "
                  f"Sunset {yes_no(limited.header('sunset'))}" if limited else "no 429 seen")
        return f"no credentials → {on_401}; 3 quick → {', '.join(statuses)}; on the 429: {on_429}"
    finally:
        service.close()


@row(11, "/v1 after its sunset")
def row_v1_after_sunset(binary: str):
    """A retired /v1 (sunset 2021) and a 1/s burst 2 quota: does /v1 spend the quota?"""
    service = Service(binary, "sunset", args=[
        "--v1-deprecated-at", "2020-01-01T00:00:00Z", "--v1-sunset-at", "2021-01-01T00:00:00Z",
        "--rate-limit-per-second", "1", "--rate-limit-burst", "2"]).start()
    try:
        v1 = []
        for _ in range(3):
            response = request(service.port, "GET", "/v1/orders", authed())
            v1.append(f"{response.status}" + (f" `{response.problem_type()}`" if response.status >= 400 else ""))
        v2 = request(service.port, "GET", "/v2/orders", authed())
        return (f"GET /v1/orders ×3 → {', '.join(v1)}; then GET /v2/orders {v2.status}, "
                f"RateLimit `{v2.header('ratelimit') or 'none'}`")
    finally:
        service.close()


@row(12, "two Authorization lines")
def row_two_authorizations(binary: str):
    """Two Authorization header lines, each a valid key of a different tenant."""
    service = Service(binary, "twoauth").start()
    try:
        create_order(service, "two-auth-1")  # one order for key one's tenant, none for key two's
        conn = Conn(service.port)
        conn.send((f"GET /v2/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_ONE}\r\n"
                   f"Authorization: Bearer {KEY_TWO}\r\nConnection: close\r\n\r\n").encode())
        response = conn.read_response()
        conn.close()
        if response.status >= 400:
            return f"{response.status}, type `{response.problem_type()}`"
        tenant = "the first" if (response.json() or {}).get("data") else "the second"
        return f"{response.status}, not a problem: answered as {tenant} key's tenant"
    finally:
        service.close()


@row(13, "duplicate JSON keys")
def row_duplicate_json_keys(binary: str):
    """customer_id twice in one order."""
    service = Service(binary, "dupkeys").start()
    try:
        body = ORDER.replace(b'{"customer_id":"cus_1",', b'{"customer_id":"cus_a","customer_id":"cus_b",')
        response = request(service.port, "POST", "/v2/orders", post_headers("dup-1"), body)
        if response.status == 201:
            order = response.json()
            stored = request(service.port, "GET", f"/v2/orders/{order['id']}", authed()).json()
            return f"201, stored customer_id `{stored.get('customer_id')}`"
        return f"{response.status}, type `{response.problem_type()}`"
    finally:
        service.close()


@row(14, "RateLimit-Policy 10/s burst 1")
def row_policy_header(binary: str):
    """The advertised policy versus what a client sending flat out for 1 s gets admitted."""
    service = Service(binary, "policy",
                      args=["--rate-limit-per-second", "10", "--rate-limit-burst", "1"]).start()
    try:
        statuses: collections.Counter = collections.Counter()
        policy = None
        conn = None
        errors = 0
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            try:
                if conn is None:
                    conn = Conn(service.port, timeout=5)
                conn.send(f"GET /v2/orders HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\n\r\n".encode())
                response = conn.read_response()
            except (OSError, Closed):
                errors += 1
                if conn:
                    conn.close()
                conn = None
                continue
            if policy is None:
                policy = response.header("ratelimit-policy")
            statuses[response.status] += 1
            if response.will_close:
                conn.close()
                conn = None
        if conn:
            conn.close()
        admitted = sum(n for status, n in statuses.items() if status != 429)
        sent = sum(statuses.values())
        return (f"RateLimit-Policy `{policy}`; admitted {admitted} of {sent} in 1 s "
                f"({counts(statuses)}{', errors ' + str(errors) if errors else ''})")
    finally:
        service.close()


@row(15, "restart, retried cancel")
def row_restart_retried_cancel(binary: str):
    """Cancel with key K, restart on the same SQLite file, retry the cancel with key K."""
    service = Service(binary, "restart").start()
    try:
        order_id = create_order(service, "restart-order").json()["id"]
        path = f"/v2/orders/{order_id}/cancel"
        first = request(service.port, "POST", path, post_headers("cancel-K"))
        service.terminate()
        exited = service.wait_exit(35)
        if exited is None:
            service.kill()
        service.start()
        retry = request(service.port, "POST", path, post_headers("cancel-K"))
        kind = f", type `{retry.problem_type()}`" if retry.status >= 400 else ""
        replayed = retry.header("idempotent-replayed")
        stopped = f"stopped in {exited:.2f} s" if exited is not None else "still running after 35 s (killed)"
        return (f"first cancel {first.status}; {stopped}; retried cancel after the restart "
                f"{retry.status}{kind}{', Idempotent-Replayed ' + replayed if replayed else ''}")
    finally:
        service.close()


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------

# Slowest first, so the long waits overlap.
SCHEDULE = [7, 2, 3, 4, 9, 8, 1, 5, 6, 15, 10, 11, 12, 13, 14]
CONCURRENCY = 7


def run_row(number: int, binary: str, results: dict, slots: threading.Semaphore):
    label, function = ROWS[number]
    with slots:
        started = time.monotonic()
        try:
            outcome = function(binary)
        except Exception as error:
            traceback.print_exc(file=sys.stderr)
            outcome = f"error: {type(error).__name__}: {error}"
        if isinstance(outcome, str):
            outcome = [(f"{number} {label}", outcome)]
        results[number] = outcome
        print(f"row {number} done in {time.monotonic() - started:.1f} s", file=sys.stderr)


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", required=True, help="the orders binary to attack")
    parser.add_argument("--only", help="row number(s), comma-separated")
    args = parser.parse_args()
    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        parser.error(f"{binary} is not an executable file")
    wanted = [int(n) for n in args.only.split(",")] if args.only else SCHEDULE
    unknown = [n for n in wanted if n not in ROWS]
    if unknown:
        parser.error(f"unknown row(s) {unknown}; rows are 1 to {max(ROWS)}")

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    results: dict[int, list[tuple[str, str]]] = {}
    slots = threading.Semaphore(CONCURRENCY)
    started = time.monotonic()
    try:
        threads = []
        for number in sorted(wanted, key=SCHEDULE.index):
            thread = threading.Thread(target=run_row, args=(number, binary, results, slots), daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(max(0.0, RUN_CAP - (time.monotonic() - started)))
    finally:
        cleanup_all()
    print(f"`{os.path.basename(binary)}`: {time.monotonic() - started:.0f} s in all", file=sys.stderr)
    print("| row | result |")
    print("|---|---|")
    for number in sorted(wanted):
        for label, outcome in results.get(number, [(f"{number} {ROWS[number][0]}",
                                                    f"still running after the run cap of {RUN_CAP:g} s")]):
            print(f"| {cell(label)} | {cell(outcome)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
