"""``kdns resolve``: walk a Pod resolver's search list the way glibc does, and show each step.

The questions go either through an in-process server built from the same Corefile (the very
dispatcher the listeners use) or to a running server over UDP, retried over TCP on truncation.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dnslib import QTYPE, RCODE, DNSRecord

Asker = Callable[[str, int], DNSRecord]
"""Ask one question (absolute name, qtype) and return the parsed reply."""


@dataclass(slots=True)
class Step:
    name: str
    rcode: str
    answers: int
    note: str = ""


@dataclass(slots=True)
class Result:
    query: str
    qtype: str
    steps: list[Step] = field(default_factory=list)
    final: DNSRecord | None = None
    found_name: str | None = None

    @property
    def found(self) -> bool:
        return self.found_name is not None

    def render(self) -> str:
        out = [f"resolving {self.query} ({self.qtype}):"]
        width = max((len(s.name) for s in self.steps), default=10)
        for i, s in enumerate(self.steps, 1):
            note = f"  {s.note}" if s.note else ""
            out.append(f"  {i}. {s.name:<{width}}  {s.rcode:<8} answers={s.answers}{note}")
        if self.final is not None and self.found_name is not None:
            out.append(f"=> the resolver takes the answer for {self.found_name}")
            for rr in self.final.rr:
                out.append(f"   {rr.toZone()}")
        else:
            last = self.steps[-1].rcode if self.steps else "no query"
            out.append(f"=> {self.query} does not resolve ({last})")
        return "\n".join(out)


def candidates(name: str, search: list[str], ndots: int) -> list[str]:
    """The names glibc tries, in order (resolv.conf(5)): an absolute name only as is; a name
    with at least ``ndots`` dots as is first, then with each search domain; otherwise the
    search domains first and the name as is last."""
    if name.endswith("."):
        return [name]
    expanded = [f"{name}.{d.strip('.')}." for d in search]
    if name.count(".") >= ndots:
        return [name + ".", *expanded]
    return [*expanded, name + "."]


def walk(name: str, qtype: str, search: list[str], ndots: int, ask: Asker) -> Result:
    if not name or len(name) > 253 or ".." in name:
        raise ValueError(f"invalid name {name!r}")
    try:
        qt = int(getattr(QTYPE, qtype.upper()))
    except Exception:  # dnslib raises its own DNSError for unknown mnemonics
        raise ValueError(f"unknown record type {qtype!r}") from None
    result = Result(name, qtype.upper())
    nodata: DNSRecord | None = None
    for cand in candidates(name, search, ndots):
        reply = ask(cand, qt)
        rcode = RCODE.get(reply.header.rcode)
        step = Step(cand, str(rcode), len(reply.rr))
        result.steps.append(step)
        if reply.header.rcode == RCODE.NOERROR and reply.rr:
            step.note = "<- answer"
            result.final, result.found_name = reply, cand
            return result
        if reply.header.rcode == RCODE.NOERROR:
            # glibc keeps searching after NODATA and reports "no data" only at the end; musl
            # stops here. Say so, since the two disagree on exactly this case.
            step.note = "NODATA: glibc goes on, musl stops here"
            nodata = nodata or reply
        elif reply.header.rcode != RCODE.NXDOMAIN:
            step.note = "glibc stops on a server failure"
            return result
    return result


def local_asker(server: Any) -> Asker:
    server.start_plugins()
    dispatcher = server.dispatcher("tcp")  # no truncation: show the whole answer

    def ask(name: str, qtype: int) -> DNSRecord:
        q = DNSRecord.question(name, QTYPE[qtype])
        raw = dispatcher.serve(bytes(q.pack()), ("127.0.0.1", 0))
        if raw is None:
            raise ValueError(f"the server dropped the query for {name}")
        return DNSRecord.parse(raw)

    return ask


def _split_server(server: str) -> tuple[str, int]:
    host, sep, port = server.rpartition(":")
    if not sep:
        return server, 53
    host = host.strip("[]")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--server {server!r}: port must be 1..65535")
    return host, int(port)


def remote_asker(server: str, timeout: float) -> Asker:
    host, port = _split_server(server)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    def ask(name: str, qtype: int) -> DNSRecord:
        q = DNSRecord.question(name, QTYPE[qtype])
        data = bytes(q.pack())
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.settimeout(timeout)
                s.sendto(data, (host, port))
                reply = DNSRecord.parse(s.recv(65535))
            if reply.header.tc:
                with socket.create_connection((host, port), timeout=timeout) as t:
                    t.sendall(struct.pack("!H", len(data)) + data)
                    size = struct.unpack("!H", _recv_exact(t, 2))[0]
                    reply = DNSRecord.parse(_recv_exact(t, size))
        except OSError as err:
            raise ValueError(f"no answer from {host}:{port}: {err}") from None
        return reply

    return ask


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return buf
