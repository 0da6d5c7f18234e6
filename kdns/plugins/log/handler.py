"""log: one line per query, in CoreDNS's common log format or an operator's own format.

The handler only picks the rule for the query (the first whose name covers it) and marks the
request; the server writes the line after the reply is encoded, when its size, flags and the
time taken are known, by calling the rule's :meth:`LogRule.emit`. A block that uses ``log`` is
served without the fast path, so every query is seen.

Formats are parsed once at setup into literal text and placeholder functions, as CoreDNS's
``plugin/pkg/replacer`` does; a ``{/NAME}`` placeholder reads metadata lazily, so a provider's
value is only computed when a format asks for it.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from dnslib import CLASS, QTYPE, RCODE, DNSRecord

from kdns.config.zones import in_zone
from kdns.plugins.base import Next, Request, Response

log = logging.getLogger("kdns.log")

CLASSES = ("all", "denial", "error", "success")
COMMON = ('{remote}:{port} - {>id} "{type} {class} {name} {proto} {size} {>do} {>bufsize}" '
          "{rcode} {>rflags} {rsize} {duration}")
COMBINED = COMMON + ' "{>opcode}"'
EMPTY = "-"
DEFAULT_MIN_DURATION = 0.1

Value = Callable[[Request, bytes, float], str]


def _name(code: int, table: object, prefix: str) -> str:
    try:
        return str(table[code])  # type: ignore[index]
    except Exception:
        return f"{prefix}{code}"


def _rfc3986(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _rcode(_req: Request, reply: bytes, _d: float) -> str:
    if len(reply) < 4:
        return EMPTY
    return _name(reply[3] & 0xF, RCODE, "")


def _rflags(_req: Request, reply: bytes, _d: float) -> str:
    if len(reply) < 4:
        return EMPTY
    bits = (reply[2] << 8) | reply[3]
    return ",".join(label for bit, label in (
        (0x8000, "qr"), (0x0400, "aa"), (0x0200, "tc"), (0x0100, "rd"), (0x0080, "ra"),
        (0x0040, "z"), (0x0020, "ad"), (0x0010, "cd")) if bits & bit)


def _duration(_req: Request, _reply: bytes, d: float) -> str:
    # Go's strconv.FormatFloat(secs, 'f', -1, 64): shortest digits, never an exponent.
    return format(Decimal(repr(d)), "f") + "s"


PLACEHOLDERS: dict[str, Value] = {
    "{type}": lambda req, _r, _d: _name(req.qtype, QTYPE, "TYPE"),
    "{name}": lambda req, _r, _d: req.qname_lower,
    "{class}": lambda req, _r, _d: _name(req.qclass, CLASS, "CLASS"),
    "{proto}": lambda req, _r, _d: req.proto,
    "{size}": lambda req, _r, _d: str(len(req.msg.pack())),
    "{remote}": lambda req, _r, _d: _rfc3986(req.client[0]),
    "{port}": lambda req, _r, _d: str(req.client[1]),
    "{>id}": lambda req, _r, _d: str(req.msg.header.id),
    "{>opcode}": lambda req, _r, _d: str(req.msg.header.opcode),
    "{>do}": lambda req, _r, _d: "true" if req.do else "false",
    "{>bufsize}": lambda req, _r, _d: str(req.max_size),
    "{rcode}": _rcode,
    "{rsize}": lambda _req, reply, _d: str(len(reply)),
    "{duration}": _duration,
    "{>rflags}": _rflags,
}
"""CoreDNS's replacer labels kdns can fill ({local} is not among them: see setup)."""


def _metadata(label: str) -> Value:
    def value(req: Request, _reply: bytes, _d: float) -> str:
        md = req.meta.get("metadata")  # a kdns.plugins.base.Metadata, when the block has one
        fn = md.get(label) if md is not None else None
        return str(fn()) if callable(fn) else EMPTY
    return value


Part = str | Value


def parse_format(fmt: str, known: Mapping[str, Value] = PLACEHOLDERS) -> tuple[Part, ...]:
    """Literal text and placeholders, scanned as CoreDNS's replacer does: find a ``}``, go back
    to the nearest ``{``; a known label or ``{/metadata}`` becomes a value, anything else stays
    literal text (callers reject what looks like a mistyped label before this)."""
    parts: list[Part] = []
    s = fmt
    while True:
        j = s.find("}")
        if j < 0:
            break
        i = s.rfind("{", 0, j)
        if i < 0:
            parts.append(s[: j + 1])
            s = s[j + 1 :]
            continue
        label = s[i : j + 1]
        if label in known:
            value: Value | None = known[label]
        elif label.startswith("{/"):
            value = _metadata(label[2:-1])
        else:
            value = None
        if value is None:
            parts.append(s[: j + 1])
        else:
            if i:
                parts.append(s[:i])
            parts.append(value)
        s = s[j + 1 :]
    if s:
        parts.append(s)
    # Fold adjacent literals so emitting does one join over few parts.
    folded: list[Part] = []
    for p in parts:
        if isinstance(p, str) and folded and isinstance(folded[-1], str):
            folded[-1] += p
        else:
            folded.append(p)
    return tuple(folded)


def classify(reply: bytes) -> str:
    """CoreDNS's response.Classify(Typify(msg)): success (an answer, or a referral), denial
    (NXDOMAIN, or NOERROR without an answer: NODATA), error (anything else)."""
    if len(reply) < 12:
        return "error"
    rcode = reply[3] & 0xF
    if rcode == RCODE.NXDOMAIN:
        return "denial"
    if rcode != RCODE.NOERROR:
        return "error"
    ancount, nscount = struct.unpack_from("!HH", reply, 6)
    if ancount:
        return "success"
    if nscount:
        try:
            auth = DNSRecord.parse(reply).auth
        except Exception:
            return "denial"
        if any(rr.rtype == QTYPE.NS for rr in auth) and not any(
                rr.rtype == QTYPE.SOA for rr in auth):
            return "success"  # a delegation
    return "denial"


@dataclass(frozen=True, slots=True)
class LogRule:
    name: str
    """Name scope (lower case, trailing dot); ``.`` covers everything."""
    fmt: tuple[Part, ...]
    classes: frozenset[str]
    min_duration: float = 0.0
    """Seconds; a reply outside ``classes`` is still logged when it took longer (0: never)."""

    def emit(self, req: Request, reply: bytes, duration: float) -> None:
        if "all" not in self.classes and classify(reply) not in self.classes and not (
                self.min_duration and duration > self.min_duration):
            return
        try:
            line = "".join(p if isinstance(p, str) else p(req, reply, duration)
                           for p in self.fmt)
        except Exception:
            # A metadata provider's fault must not cost the client its reply (the server
            # writes this line after encoding it, before sending).
            log.exception("log: formatting the line for %s failed", req.qname)
            return
        log.info("%s", line)


class LogHandler:
    name = "log"
    sees_every_query = True  # each query is a log line: never answered around this plugin

    def __init__(self, rules: list[LogRule]) -> None:
        self.rules = rules

    def serve(self, req: Request, nxt: Next) -> Response:
        name = req.qname_lower
        for rule in self.rules:
            if in_zone(name, rule.name):
                req.meta["log"] = rule
                break
        return nxt(req)
