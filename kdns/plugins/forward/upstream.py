"""One upstream resolver: the exchange over UDP or TCP, its TCP connection pool, its health
state and its counters.

An exchange sends the query under a fresh random ID and accepts only a reply that carries that
ID, QR=1 and the same question (compared case-insensitively on the wire bytes); anything else
on the socket is ignored and counted in ``mismatches``, so a spoofed or stale datagram can never
become an answer (RFC 5452 §9.1). UDP uses a new connected socket per query: the kernel picks a
random source port and drops datagrams from any other address, and a closed upstream port shows
up at once as ``ConnectionRefusedError`` instead of a timeout. TCP connections are pooled per
upstream and closed once idle for ``expire`` seconds (at most ``max_idle`` kept).

A ``tls://`` upstream (RFC 7858) always speaks TCP inside TLS, verified against the configured
CA and server name; its connections are pooled the same way, and a new connection offers the
session of the last one, so a reconnect after ``expire`` resumes instead of doing a full
handshake (counted in ``tls_resumed``). ``source`` binds every outgoing socket to that address.

Counters are plain integers read at scrape time by the metrics collector (see
:mod:`kdns.plugins.forward.handler` for the list).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import socket
import ssl
import struct
import threading
import time

from dnslib import RCODE, DNSRecord

DURATION_BUCKETS: tuple[float, ...] = tuple(0.00025 * 2**i for i in range(16))
"""CoreDNS's ``TimeBuckets``: ExponentialBuckets(0.00025, 2, 16), 0.25 ms to ~8 s."""


class UpstreamError(Exception):
    """The exchange with one upstream failed (timeout, socket error, unreadable reply)."""


class Histogram:
    """Bucket counts (Prometheus ``le`` semantics, last slot is +Inf), sum and count."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1


def question_end(data: bytes | bytearray) -> int:
    """Offset just past the first question of a packed message (no compression there)."""
    i = 12
    while data[i]:
        i += data[i] + 1
    return i + 5


def rcode_name(code: int) -> str:
    name = RCODE.forward.get(code)
    return str(name) if name is not None else str(code)


def _new_id() -> int:
    # os.urandom, not random: the ID is half of the defence against spoofed replies.
    return int.from_bytes(os.urandom(2), "big")


class Upstream:
    def __init__(self, host: str, port: int, *, expire: float = 10.0, max_idle: int = 0,
                 force_tcp_health: bool = False, tls: ssl.SSLContext | None = None,
                 server_name: str | None = None, source: str | None = None) -> None:
        info = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)[0]
        self.family: socket.AddressFamily = info[0]
        self.sockaddr = info[4]
        self.host = host
        self.port = port
        self.label = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.expire = expire
        self.max_idle = max_idle
        self.force_tcp_health = force_tcp_health
        self.tls = tls
        self.server_name = server_name or host
        self.source = source
        self._session: ssl.SSLSession | None = None
        self._tcp_proto = "tcp-tls" if tls is not None else "tcp"
        self._lock = threading.Lock()
        self._pool: list[tuple[socket.socket, float]] = []
        self._closed = False
        # health
        self.fails = 0
        """Consecutive failures (queries or health probes); reset by any good exchange."""
        self.probing = False
        # counters
        self.requests = 0
        self.failures = 0
        self.mismatches = 0
        self.healthcheck_failures = 0
        self.rcodes: dict[str, int] = {}
        self.durations: dict[str, Histogram] = {}
        self.conn_cache_hits: dict[str, int] = {"udp": 0, "tcp": 0, "tcp-tls": 0}
        self.conn_cache_misses: dict[str, int] = {"udp": 0, "tcp": 0, "tcp-tls": 0}
        self.tls_resumed = 0
        """TLS connections that resumed an earlier session (no full handshake)."""

    def __repr__(self) -> str:
        return f"Upstream({self.label})"

    # -- health ----------------------------------------------------------------------------

    def down(self, max_fails: int) -> bool:
        return max_fails > 0 and self.fails >= max_fails

    def failed(self) -> None:
        with self._lock:
            self.fails += 1
            self.failures += 1

    def succeeded(self, rcode: int, seconds: float) -> None:
        name = rcode_name(rcode)
        with self._lock:
            self.fails = 0
            self.rcodes[name] = self.rcodes.get(name, 0) + 1
            hist = self.durations.get(name)
            if hist is None:
                hist = self.durations[name] = Histogram()
            hist.observe(seconds)

    def probe(self, domain: str, rd: bool, timeout: float) -> bool:
        """One health check (``domain IN NS``): any reply at all means the upstream is up."""
        q = DNSRecord.question(domain, "NS")
        q.header.rd = int(rd)
        data = bytearray(q.pack())
        try:
            self.exchange(data, tcp=self.force_tcp_health,
                          deadline=time.monotonic() + timeout, count=False)
        except UpstreamError:
            with self._lock:
                self.fails += 1
                self.healthcheck_failures += 1
            return False
        with self._lock:
            self.fails = 0
        return True

    # -- exchange --------------------------------------------------------------------------

    def exchange(self, query: bytearray, *, tcp: bool, deadline: float,
                 count: bool = True) -> bytes:
        """Send ``query`` (its ID is overwritten) and return the matching reply's bytes.

        ``count``: add to ``requests`` (health probes do not)."""
        qid = _new_id()
        struct.pack_into("!H", query, 0, qid)
        qend = question_end(query)
        if count:
            with self._lock:
                self.requests += 1
        if tcp or self.tls is not None:
            return self._tcp(bytes(query), qend, deadline)
        return self._udp(bytes(query), qend, deadline)

    def _matches(self, reply: bytes, query: bytes, qend: int) -> bool:
        ok = (len(reply) >= qend and reply[:2] == query[:2] and reply[2] & 0x80 != 0
              and reply[4:6] == b"\x00\x01"
              and reply[12:qend].lower() == query[12:qend].lower())
        if not ok:
            with self._lock:
                self.mismatches += 1
        return ok

    def _udp(self, query: bytes, qend: int, deadline: float) -> bytes:
        with self._lock:
            self.conn_cache_misses["udp"] += 1
        try:
            with socket.socket(self.family, socket.SOCK_DGRAM) as s:
                if self.source is not None:
                    s.bind((self.source, 0))
                s.connect(self.sockaddr)
                s.send(query)
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError("timed out")
                    s.settimeout(remaining)
                    reply = s.recv(65535)
                    if self._matches(reply, query, qend):
                        return reply
        except OSError as err:
            raise UpstreamError(f"udp {self.label}: {err}") from None

    def _tcp(self, query: bytes, qend: int, deadline: float) -> bytes:
        framed = struct.pack("!H", len(query)) + query
        while True:
            conn, cached = self._checkout(deadline)
            try:
                conn.settimeout(max(deadline - time.monotonic(), 0.001))
                conn.sendall(framed)
                while True:
                    reply = _read_frame(conn, deadline)
                    if self._matches(reply, query, qend):
                        break
            except OSError as err:
                conn.close()
                if cached and time.monotonic() < deadline:
                    continue  # the peer closed a pooled connection: retry on a fresh one
                raise UpstreamError(f"tcp {self.label}: {err}") from None
            if isinstance(conn, ssl.SSLSocket) and conn.session is not None:
                # TLS 1.3 tickets arrive after the handshake: by now the session is resumable
                self._session = conn.session
            self._checkin(conn)
            return reply

    # -- TCP pool --------------------------------------------------------------------------

    def _checkout(self, deadline: float) -> tuple[socket.socket, bool]:
        now = time.monotonic()
        stale: list[socket.socket] = []
        found: socket.socket | None = None
        with self._lock:
            while self._pool:
                sock, used = self._pool.pop()
                if now - used < self.expire:
                    found = sock
                    self.conn_cache_hits[self._tcp_proto] += 1
                    break
                stale.append(sock)
            if found is None:
                self.conn_cache_misses[self._tcp_proto] += 1
        for s in stale:
            s.close()
        if found is not None:
            return found, True
        timeout = max(deadline - now, 0.001)
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            if self.source is not None:
                sock.bind((self.source, 0))
            sock.connect(self.sockaddr)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_hostname=self.server_name,
                                            session=self._session)  # handshake happens here
                if sock.session_reused:
                    with self._lock:
                        self.tls_resumed += 1
        except (OSError, ssl.SSLError, ValueError) as err:
            sock.close()
            what = "tls" if self.tls is not None else "tcp"
            raise UpstreamError(f"{what} {self.label}: connect: {err}") from None
        return sock, False

    def _checkin(self, sock: socket.socket) -> None:
        with self._lock:
            keep = (not self._closed and self.expire > 0
                    and (self.max_idle == 0 or len(self._pool) < self.max_idle))
            if keep:
                self._pool.append((sock, time.monotonic()))
        if not keep:
            sock.close()

    def pooled(self) -> int:
        with self._lock:
            return len(self._pool)

    def sweep(self, now: float | None = None) -> int:
        """Close pooled connections idle for ``expire`` or longer; returns how many."""
        now = time.monotonic() if now is None else now
        with self._lock:
            old = [s for s, used in self._pool if now - used >= self.expire]
            self._pool = [(s, used) for s, used in self._pool if now - used < self.expire]
        for s in old:
            s.close()
        return len(old)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, []
        for s, _ in pool:
            with contextlib.suppress(OSError):
                s.close()


def _read_frame(conn: socket.socket, deadline: float) -> bytes:
    """One length-prefixed DNS message from a TCP connection (RFC 1035 §4.2.2)."""
    buf = b""
    need = 2
    size: int | None = None
    while True:
        while len(buf) < need:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            conn.settimeout(remaining)
            chunk = conn.recv(need - len(buf))  # never past this frame: the next may follow
            if not chunk:
                raise ConnectionResetError("connection closed by upstream")
            buf += chunk
        if size is None:
            size = struct.unpack_from("!H", buf)[0]
            need = 2 + size
            continue
        return buf[2:]
