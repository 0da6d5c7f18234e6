"""loop: at start-up, ask ourselves a random HINFO name and halt if it keeps coming back.

This module owns the probe (CoreDNS ``plugin/loop``): once the listeners serve, a daemon thread
sends ``<random>.<random>.<zone> HINFO`` over UDP to this block's listener, retrying every
second for up to 30 s until a reply (any reply) comes back; 2 s after that reply the plugin
disables itself. Meanwhile ``serve`` counts queries for exactly that name: the first is our
own probe, a second and third can only be the probe coming back through a forwarder, so
seeing it more than twice is a forwarding loop and the process must not run
(``ctx.process["fatal"]``, which logs and exits non-zero: a pod shows CrashLoopBackOff, as
with CoreDNS). A failed probe (no reply) resets the count, as CoreDNS does.

Replies to the probe name never enter the fast path: a stored reply would answer the next
probe before it reached this plugin.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from dnslib import QTYPE, RCODE, DNSHeader, DNSRecord

from kdns.plugins.base import Next, Request, Response, must_not_block

log = logging.getLogger("kdns.loop")

WINDOW = 30.0
"""Seconds after start-up during which the probe is (re)sent (CoreDNS: 30 s)."""
PROBE_TIMEOUT = 2.0
"""How long one probe waits for its reply (miekg/dns's default exchange timeout)."""
RETRY = 1.0
"""Pause after a probe got no reply (CoreDNS: 1 s)."""
GRACE = 2.0
"""How long the plugin keeps counting after a probe got its reply (CoreDNS: 2 s)."""
TROUBLESHOOTING = "https://coredns.io/plugins/loop#troubleshooting"
DEFAULT_DNS_PORT = 53


def probe_name(zone: str) -> str:
    """``<random>.<random>.<zone>`` like CoreDNS's (two non-negative 63-bit decimals)."""
    labels = f"{secrets.randbits(63)}.{secrets.randbits(63)}"
    return f"{labels}." if zone == "." else f"{labels}.{zone}"


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class LoopHandler:
    name = "loop"

    def __init__(self, zone: str, key_ports: tuple[int | None, ...] = (),
                 process: dict[str, Any] | None = None, shared: dict[str, Any] | None = None,
                 *, window: float | None = None, probe_timeout: float | None = None,
                 retry: float | None = None, grace: float | None = None,
                 qname: str | None = None, probe: bool = True) -> None:
        self.zone = zone
        self.qname = (qname or probe_name(zone)).lower()
        self.key_ports = key_ports
        self.process = process if process is not None else {}
        self.shared = shared if shared is not None else {}
        # Module defaults are read here, not bound at import, so tests can shorten them.
        self.window = WINDOW if window is None else window
        self.probe_timeout = PROBE_TIMEOUT if probe_timeout is None else probe_timeout
        self.retry = RETRY if retry is None else retry
        self.grace = GRACE if grace is None else grace
        self.probe = probe
        """False in workers other than the first of ``--workers N``: count, do not send."""
        self.address: tuple[str, int] | None = None
        """Where the probe was sent (the ``->`` side of the fatal message)."""
        self.seen = 0
        self.off = False
        self.detected: str | None = None
        """The fatal message, once a loop was seen."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- serving -------------------------------------------------------------------------------

    def passes(self, qname_lower: str, qtype: int, answers: int) -> bool:
        return self.off or qtype != QTYPE.HINFO or qname_lower != self.qname

    def serve(self, req: Request, nxt: Next) -> Response:
        if self.off or req.qtype != QTYPE.HINFO or req.qname_lower != self.qname:
            return nxt(req)
        if must_not_block():
            # The UDP loop's inline attempt: a probe that loops always goes through forward,
            # which never answers inline, so it is counted once, in the worker's pass.
            resp = nxt(req)
            return dataclasses.replace(resp, fast=False)
        with self._lock:
            self.seen += 1
            looping = self.seen > 2
            first_report = looping and self.detected is None
            if first_report:
                self.detected = self._message(req.client)
        if looping:
            if first_report and self.detected is not None:
                self._fatal(self.detected)
            # Stop feeding the loop: answer here instead of passing the query on again.
            return Response(_servfail(req), self.name)
        resp = nxt(req)
        return dataclasses.replace(resp, fast=False)

    def _message(self, client: tuple[str, int]) -> str:
        addr = self.address or self.target()
        to = _hostport(*addr) if addr is not None else "?"
        msg = (f'plugin/loop: Loop ({_hostport(client[0], client[1])} -> {to}) detected for '
               f'zone "{self.zone}", see {TROUBLESHOOTING}. Query: "HINFO {self.qname}"')
        hint = self._upstream_hint()
        return f"{msg}{hint}"

    def _upstream_hint(self) -> str:
        """Name the forward upstreams when the block has any (duck-typed: plugins never
        import each other, and a block without forward simply gets no hint)."""
        fwd = self.shared.get("forward")
        ups = getattr(fwd, "upstreams", None) or ()
        labels = [str(getattr(u, "label", u)) for u in ups]
        if not labels:
            return ""
        own = {(h, p) for h, p in self.process.get("listen_addrs", ())}
        selfish = [str(getattr(u, "label", u)) for u in ups
                   if (getattr(u, "host", None), getattr(u, "port", None)) in own]
        if selfish:
            return f" (forward sends it to this server's own listener {', '.join(selfish)})"
        return f" (forward upstreams: {', '.join(labels)})"

    def _fatal(self, message: str) -> None:
        fatal: Callable[[str], None] | None = self.process.get("fatal")
        if fatal is None:
            log.critical("%s", message)
            return
        fatal(message)

    # -- lifecycle -----------------------------------------------------------------------------

    def started(self) -> None:
        """The listeners serve: start probing in the background (start-up must not wait)."""
        if self._thread is not None or self._stop.is_set():
            return
        self._thread = threading.Thread(target=self._run, name="loop-probe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.probe_timeout + 1.0)

    def target(self) -> tuple[str, int] | None:
        """This block's listener: the first bound address on one of the block's key ports,
        else the first bound address (a ``--dns-port`` override hides the real port)."""
        addrs: list[tuple[str, int]] = list(self.process.get("listen_addrs", ()))
        if not addrs:
            return None
        override = self.process.get("dns_port")
        want = set()
        for port in self.key_ports:
            port = DEFAULT_DNS_PORT if port is None else port
            if override is not None and port == DEFAULT_DNS_PORT:
                port = int(override)
            want.add(port)
        host, port = next((a for a in addrs if a[1] in want), addrs[0])
        # A wildcard bind is reached through loopback.
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        return host, port

    def _run(self) -> None:
        try:
            if not self.probe:
                # Count probes the first worker sends for as long as it may send them.
                self._stop.wait(self.window + self.grace)
                return
            addr = self.target()
            if addr is None:
                log.warning("loop: no listener to probe; loop detection is off")
                return
            self.address = addr
            deadline = time.monotonic() + self.window
            while not self._stop.is_set() and time.monotonic() < deadline:
                if self.exchange(addr):
                    self._stop.wait(self.grace)
                    return
                with self._lock:
                    self.seen = 0
                self._stop.wait(self.retry)
        finally:
            self.off = True

    def exchange(self, addr: tuple[str, int]) -> bool:
        """Send the probe once; True when a reply to it came back in time."""
        query = DNSRecord.question(self.qname, "HINFO")
        data = bytes(query.pack())
        family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.settimeout(self.probe_timeout)
                s.connect(addr)
                s.send(data)
                end = time.monotonic() + self.probe_timeout
                while time.monotonic() < end and not self._stop.is_set():
                    reply = s.recv(65535)
                    if len(reply) >= 2 and reply[:2] == data[:2]:
                        return True
        except OSError as err:  # timeout, or ICMP port unreachable
            log.debug("loop: probe to %s: %s", _hostport(*addr), err)
        return False


def _servfail(req: Request) -> DNSRecord:
    h = req.msg.header
    header = DNSHeader(id=h.id, qr=1, opcode=h.opcode, rd=h.rd, ra=1, rcode=RCODE.SERVFAIL)
    return DNSRecord(header, q=req.msg.questions[0])
