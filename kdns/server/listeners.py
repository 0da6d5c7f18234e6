"""UDP and TCP listeners: sockets and threads, nothing else.

UDP runs a plain blocking ``recvfrom``/``sendto`` loop in its own thread: measured on the bench
machine it is several times faster than asyncio for small datagrams (see the benchmark notes),
and the fast path's work per query is a dict lookup. TCP accepts in one thread and serves each
connection in its own thread, several queries per connection, with an idle timeout and a cap on
connections so a slow client cannot hold resources forever.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import queue
import socket
import struct
import threading
import time
from dataclasses import dataclass, replace

from kdns.dns import wire
from kdns.plugins.base import WouldBlock
from kdns.server.dispatch import Dispatcher

log = logging.getLogger("kdns.server")

UDP_RECV_SIZE = 4096
UDP_RCVBUF = 4 << 20
"""Bytes of receive buffer asked for each UDP socket (the kernel caps it at
net.core.rmem_max). The default (net.core.rmem_default, 208 KiB) holds 256 small queries: at
20k QPS any 10 ms pause of the serving thread (a GC pass, the GIL held by an informer applying a
change) overflows it and the kernel drops queries that kdns would have answered a moment later;
4 MiB rides out pauses of about 200 ms at that rate."""
TCP_IDLE_TIMEOUT = 10.0
"""Seconds a TCP connection may sit without a complete query (CoreDNS's idle timeout)."""
TCP_MAX_CONNECTIONS = 1000
TCP_READ_TIMEOUT = 3.0
"""Seconds to receive the rest of a TCP query once its first byte came (CoreDNS's read 3s)."""
TCP_WRITE_TIMEOUT = 5.0
DRAIN_MAX = 1.0
DRAIN_QUIET_ROUNDS = 10
"""Consecutive empty 5 ms polls that end a drain."""
"""Upper bound on the seconds a stopping UDP listener spends answering its queue."""


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _sockaddr(host: str, port: int) -> tuple[str, int] | tuple[str, int, int, int]:
    """``bind``'s argument for ``host``: a link-local IPv6 address keeps its ``%zone`` as the
    scope id (a plain 2-tuple would bind with scope 0, which the kernel rejects)."""
    if "%" not in host:
        return (host, port)
    info = socket.getaddrinfo(host, port, socket.AF_INET6, socket.SOCK_DGRAM, 0,
                              socket.AI_NUMERICHOST)
    addr = info[0][4]
    return (str(addr[0]), port, 0, int(addr[3]))  # type: ignore[misc]


class ListenError(OSError):
    """A listener could not bind: says which one, where, why, and what to try."""

    def __init__(self, what: str, host: str, port: int, err: OSError) -> None:
        where = f"[{host}]:{port}" if ":" in host else f"{host or '0.0.0.0'}:{port}"
        hint = ""
        if err.errno == errno.EACCES:
            hint = ("; ports below 1024 need root or CAP_NET_BIND_SERVICE: try --dns-port "
                    "1053 (or another port above 1023)")
        elif err.errno == errno.EADDRINUSE:
            hint = "; another program holds that port: stop it, or use --dns-port"
        elif err.errno == errno.EADDRNOTAVAIL:
            hint = "; that address is not on this machine (check --dns-addr)"
        self.text = f"cannot listen on udp+tcp {where} for {what}: {err.strerror or err}{hint}"
        super().__init__(err.errno, self.text)

    def __str__(self) -> str:
        return self.text


def shared_with_another(host: str, port: int) -> bool:
    """Is UDP ``host:port`` already bound by another socket? Binding without SO_REUSEPORT
    fails then, while kdns's own bind (with it) would share the port silently when the other
    process set it too (another kdns)."""
    if port == 0:
        return False
    with socket.socket(_family(host), socket.SOCK_DGRAM) as probe:
        if _family(host) == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            return err.errno == errno.EADDRINUSE
    return False


def bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """Bind a UDP and a TCP socket on the same port; port 0 picks one free for both."""
    for _ in range(20):
        udp = socket.socket(_family(host), socket.SOCK_DGRAM)
        tcp = socket.socket(_family(host), socket.SOCK_STREAM)
        try:
            for s in (udp, tcp):
                if _family(host) == socket.AF_INET6:
                    # "::" must not also claim IPv4: the 0.0.0.0 sockets serve that family.
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if hasattr(socket, "SO_REUSEPORT"):
                    # Lets a second instance (a rollout, or --workers) share the port.
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            with contextlib.suppress(OSError):
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
            udp.bind(_sockaddr(host, port))
            chosen = udp.getsockname()[1]
            tcp.bind(_sockaddr(host, chosen))
            tcp.listen(1024)
            return udp, tcp
        except OSError:
            udp.close()
            tcp.close()
            if port != 0:
                raise
    raise OSError(f"could not bind UDP and TCP on one free port on {host or '*'}")


SLOW_PATH_WORKERS = 32
"""Threads answering UDP misses when a zone's chain may block (``forward``)."""
SLOW_PATH_QUEUE = 2000
"""Queries waiting for a worker before new ones are shed (the client retries)."""


class UdpListener:
    """One UDP socket. Fast-path hits are answered inline. Misses are answered inline too,
    unless ``offload`` is set (a chain may wait on the network): then a bounded pool answers
    them so one slow upstream never stalls cluster names."""

    def __init__(self, sock: socket.socket, dispatcher: Dispatcher, *, offload: bool = False,
                 workers: int = SLOW_PATH_WORKERS, queue_size: int = SLOW_PATH_QUEUE) -> None:
        self.sock = sock
        self.dispatcher = dispatcher
        self.offload = offload
        self.workers = workers
        self.shed = 0
        """Queries dropped because the worker queue was full (the client retries)."""
        self._queue: queue.Queue[tuple[bytes, tuple[str, int]] | None] = queue.Queue(
            queue_size)
        self._pool: list[threading.Thread] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"udp-{self.port}", daemon=True)

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def start(self) -> None:
        if self.offload:
            for i in range(self.workers):
                t = threading.Thread(target=self._work, name=f"udp-{self.port}-w{i}", daemon=True)
                t.start()
                self._pool.append(t)
        self._thread.start()

    def set_offload(self, on: bool) -> None:
        """Start the worker pool (a reload added a blocking plugin); turning it off just stops
        handing work to it, so no in-flight query is lost."""
        if on and not self._pool:
            for i in range(self.workers):
                t = threading.Thread(target=self._work, name=f"udp-{self.port}-w{i}", daemon=True)
                t.start()
                self._pool.append(t)
        self.offload = on

    def _work(self) -> None:
        handle, sendto = self.dispatcher.handle_safely, self.sock.sendto
        while True:
            item = self._queue.get()
            if item is None:
                return
            reply = handle(*item)
            if reply is not None:
                try:
                    sendto(reply, item[1])
                except OSError as err:
                    log.debug("udp send to %s failed: %s", item[1][0], err)

    def _run(self) -> None:
        sock = self.sock
        recvfrom, sendto = sock.recvfrom, sock.sendto
        d = self.dispatcher
        lookup, handle, try_inline = d.lookup, d.answer, d.try_inline
        put = self._queue.put_nowait
        while True:
            try:
                data, addr = recvfrom(UDP_RECV_SIZE)
            except OSError:
                if self._stopping:
                    return
                continue
            if addr is None:  # shutdown() wakes recvfrom with no sender
                if self._stopping:
                    return
                continue
            try:
                reply = lookup(data, addr)
            except Exception:
                reply = None
            if reply is None:
                if self.offload:
                    # Answer inline what needs no network (cluster names, cache hits); only a
                    # query that would wait on an upstream goes to the worker pool.
                    self.dispatcher.counters.slow += 1
                    attempt = try_inline(data, addr)
                    if isinstance(attempt, WouldBlock):
                        try:
                            put((data, addr))
                        except queue.Full:
                            self.shed += 1
                        continue
                    reply = attempt
                else:
                    reply = handle(data, addr)
                if reply is None:
                    continue
            try:
                sendto(reply, addr)
            except OSError as err:
                log.debug("udp send to %s failed: %s", addr[0], err)

    def stop(self, drain: bool = False) -> None:
        """Stop receiving and close; with ``drain``, first answer what is already queued, so
        a rollout loses no query.

        Connecting a UDP socket makes the kernel stop choosing it for datagrams from any other
        peer: an SO_REUSEPORT sibling (the next instance) gets them. What was queued before is
        still ours to read. Then reads are shut down, which wakes the receive loop (shutdown
        works only on a connected UDP socket), the loop finishes the reply it may be sending
        (writes stay open), and only then is the socket closed.
        """
        steered = self._steer_away()
        if drain and steered:
            self._drain()
        self._stopping = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RD)
        self._thread.join(timeout=2)
        for _ in self._pool:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break
        deadline = time.monotonic() + (DRAIN_MAX if drain else 0.1)
        for t in self._pool:  # a worker may be sending the reply an upstream just gave it
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        self.sock.close()

    def _steer_away(self) -> bool:
        discard = ("::1", 9) if self.sock.family == socket.AF_INET6 else ("127.0.0.1", 9)
        try:
            self.sock.connect(discard)
        except OSError as err:
            log.debug("udp stop: cannot steer traffic away: %s", err)
            return False
        return True

    def _drain(self) -> None:
        idle = 0
        deadline = time.monotonic() + DRAIN_MAX
        # 50 ms without a datagram before closing: a packet routed here just before connect()
        # may still be on its way through a deferred softirq on a busy machine.
        while idle < DRAIN_QUIET_ROUNDS and time.monotonic() < deadline:
            try:
                data, addr = self.sock.recvfrom(UDP_RECV_SIZE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                idle += 1
                time.sleep(0.005)
                continue
            except OSError:
                return
            idle = 0
            if addr is None:
                continue
            reply = self.dispatcher.serve(data, addr)
            if reply is not None:
                with contextlib.suppress(OSError):
                    self.sock.sendto(reply, addr)
        while not self._queue.empty() and time.monotonic() < deadline:
            time.sleep(0.005)  # let the pool finish what it was handed


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-listener resource limits (the ``timeouts`` and ``limits`` directives)."""

    tcp_idle: float = TCP_IDLE_TIMEOUT
    """Seconds a connection may wait for the first byte of its next query."""
    tcp_read: float = TCP_READ_TIMEOUT
    """Seconds to receive the rest of a query once its first byte has arrived."""
    tcp_write: float = TCP_WRITE_TIMEOUT
    """Seconds to send a reply."""
    tcp_connections: int = TCP_MAX_CONNECTIONS
    tcp_queries: int = 0
    """Queries answered per connection before it is closed (0: no limit)."""
    udp_queue: int = SLOW_PATH_QUEUE
    udp_workers: int = SLOW_PATH_WORKERS


class _Conn:
    """A TCP connection's bookkeeping: whether it sits idle between queries, and since when."""

    __slots__ = ("idle_since", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.idle_since: float | None = time.monotonic()


class TcpListener:
    """Accepts in one thread and serves each connection in its own, several queries per
    connection (RFC 7766), within :class:`Limits`. At the connection limit the connection that
    has been idle longest is closed to admit the new one (RFC 7766 §6.2.3 lets a server close
    idle connections); with none idle, the new one is refused. Both are counted."""

    def __init__(self, sock: socket.socket, dispatcher: Dispatcher, *,
                 limits: Limits | None = None) -> None:
        self.sock = sock
        self.dispatcher = dispatcher
        self.limits = limits or Limits()
        self._lock = threading.Lock()
        self._conns: dict[socket.socket, _Conn] = {}
        self._stopping = False
        self._thread = threading.Thread(target=self._accept, name=f"tcp-{self.port}",
                                        daemon=True)
        self.rejected = 0
        """New connections refused at the limit with no idle one to close."""
        self.shed_idle = 0
        """Idle connections closed at the limit to admit a new one."""
        self.timed_out = 0
        """Connections closed because a query did not arrive in time."""
        self.query_limited = 0
        """Connections closed after ``tcp_queries`` answers."""

    @property
    def idle_timeout(self) -> float:
        return self.limits.tcp_idle

    @idle_timeout.setter
    def idle_timeout(self, value: float) -> None:
        self.limits = replace(self.limits, tcp_idle=value, tcp_read=value)

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def start(self) -> None:
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                conn, addr = self.sock.accept()
            except OSError:
                if self._stopping:
                    return
                continue
            with self._lock:
                if len(self._conns) >= self.limits.tcp_connections and not self._shed_one():
                    self.rejected += 1
                    conn.close()
                    continue
                self._conns[conn] = _Conn(conn)
            threading.Thread(target=self._serve, args=(conn, addr), daemon=True,
                             name="tcp-conn").start()

    def _shed_one(self) -> bool:
        """Close the connection idle longest (caller holds the lock); False if none is idle."""
        idle = [c for c in self._conns.values() if c.idle_since is not None]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.idle_since or 0.0)
        with contextlib.suppress(OSError):
            oldest.sock.shutdown(socket.SHUT_RDWR)  # its thread sees EOF and cleans up
        del self._conns[oldest.sock]
        self.shed_idle += 1
        return True

    def _serve(self, conn: socket.socket, addr: tuple[str, int]) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        state = self._conns.get(conn)
        limits = self.limits
        buf = b""
        answered = 0
        try:
            while not self._stopping:
                # Idle: waiting for the first byte of the next query. Then the rest of the
                # query must arrive within the read timeout: a deadline per message, not per
                # recv(), so a client trickling a byte at a time cannot hold a thread forever.
                deadline = time.monotonic() + limits.tcp_idle
                started = bool(buf)
                if state is not None:
                    state.idle_since = None if started else time.monotonic()
                while len(buf) < 2 or len(buf) < 2 + struct.unpack_from("!H", buf)[0]:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self.timed_out += 1
                        return
                    conn.settimeout(left)
                    chunk = conn.recv(65537)
                    if not chunk:
                        return
                    buf += chunk
                    if not started:
                        started = True
                        if state is not None:
                            state.idle_since = None
                        deadline = time.monotonic() + limits.tcp_read
                size = struct.unpack_from("!H", buf)[0]
                message, buf = buf[2 : 2 + size], buf[2 + size :]
                reply = self.dispatcher.serve(message, (addr[0], addr[1]))
                if reply is None:
                    # RFC 7766 §6.2.4: a message we will not answer ends the connection.
                    return
                conn.settimeout(limits.tcp_write)
                if type(reply) is wire.Framed:  # a zone transfer: already framed messages
                    conn.sendall(reply)
                else:
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
                answered += 1
                if limits.tcp_queries and answered >= limits.tcp_queries:
                    self.query_limited += 1
                    return
        except TimeoutError:
            self.timed_out += 1
        except OSError:
            return
        finally:
            with self._lock:
                self._conns.pop(conn, None)
            conn.close()

    def stop(self, drain: float = 0.0) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RD)
        self._thread.join(timeout=2)
