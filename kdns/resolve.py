"""``kdns resolve``: how a Pod's C library would look a name up, step by step, and its verdict.

This module owns the models of the two stub resolvers Pods actually run, written from their
sources, and the askers that put each question to kdns:

* **glibc** (resolv/res_query.c ``__res_context_search``, res_send.c): a name with at least
  ``ndots`` dots (or a trailing dot) is asked as is first; a trailing dot ends there. Then the
  search list: NXDOMAIN and NODATA go on; SERVFAIL goes on (``got_servfail``); a timeout or a
  REFUSED/FORMERR/NOTIMP reply ends the search list, after which the name is still asked as is
  if it was not yet. A reply with answers (``ancount > 0``) ends everything: when its CNAME
  chain holds no record of the asked type, glibc fails the name there. No reply at all from any
  server (connection refused) gives up at once.
* **musl** (src/network/lookup_name.c ``name_from_dns_search``): no search list at all for a name
  with at least ``ndots`` dots or a trailing dot; otherwise each search domain then the name as
  is, going on only after NXDOMAIN. SERVFAIL, a timeout, another error rcode, NODATA or an answer
  without address (CNAME only) all end the lookup. ``res_search`` is ``res_query`` in musl, so
  for other record types the name is asked once, as given. musl before 1.2.4 never retries over
  TCP: a truncated reply is used as it is.

Questions go to an in-process server built from the same Corefile (the very dispatchers the
listeners use; nothing leaves the process unless ``--upstream`` says where forwarded names go)
or to a running server, over UDP without EDNS and again over TCP on truncation, as glibc does.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnslib import QTYPE, RCODE, DNSRecord

LIBRARIES = ("glibc", "musl")
ADDR = -1
"""``--type A+AAAA``: both questions for each name, as getaddrinfo(AF_UNSPEC) asks them."""
MAX_NAME = 253
"""Longest name in presentation form without the trailing dot (RFC 1035 §2.3.4: 255 octets on
the wire)."""
MAX_LABEL = 63


@dataclass(frozen=True, slots=True)
class Reply:
    """What one question got: a reply, or why there was none."""

    msg: DNSRecord | None
    server: str
    """Who answered (or would have): ``kdns (in-process)``, ``127.0.0.1:53``, an upstream."""
    failure: str | None = None
    """``timeout`` (a server was reached but did not answer in time), ``unreachable`` (no
    server at all: connection refused) or ``forwarded`` (kdns would forward the name upstream
    and no ``--upstream`` was given, so nothing was sent)."""


Asker = Callable[[str, int], Reply]
"""Ask one question (absolute name, qtype)."""


def _describe(r: Reply) -> str:
    if r.failure == "forwarded":
        return f"would be forwarded upstream ({r.server}): not sent"
    if r.failure is not None:
        return r.failure.upper()
    assert r.msg is not None
    rcode = str(RCODE.get(r.msg.header.rcode))
    extra = " (NODATA)" if r.msg.header.rcode == RCODE.NOERROR and not r.msg.rr else ""
    tc = " truncated" if r.msg.header.tc else ""
    return f"{rcode}{extra} answers={len(r.msg.rr)}{tc}"


@dataclass(slots=True)
class Step:
    name: str
    reply: Reply
    kind: str
    """As glibc sees it: positive | nodata | nxdomain | servfail | error | timeout |
    unreachable | forwarded"""
    aaaa: Reply | None = None
    """With ``--type A+AAAA``: the AAAA reply (``reply`` is the A one)."""

    @property
    def replies(self) -> list[Reply]:
        return [self.reply] if self.aaaa is None else [self.reply, self.aaaa]

    def describe(self) -> str:
        r = self.reply
        if r.failure == "forwarded":
            return _describe(r)
        if self.aaaa is None:
            return f"{_describe(r)} from {r.server}"
        return f"A {_describe(r)}, AAAA {_describe(self.aaaa)} from {r.server}"


@dataclass(slots=True)
class Verdict:
    library: str
    status: str
    """resolves | fails | undetermined"""
    steps: list[int]
    """1-based indexes into ``Result.steps``, in the order this library asked."""
    reason: str
    records: list[str] = field(default_factory=list)

    def render(self) -> str:
        tried = ",".join(str(i) for i in self.steps) or "-"
        head = f"{self.library + ':':<6} {self.status}"
        return f"{head}: {self.reason} (steps {tried})"


@dataclass(slots=True)
class Result:
    query: str
    qtype: str
    search: list[str]
    ndots: int
    reasoning: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0: every library shown resolves the name; 3: one cannot tell without the upstream;
        1: otherwise."""
        if all(v.status == "resolves" for v in self.verdicts):
            return 0
        if any(v.status == "undetermined" for v in self.verdicts):
            return 3
        return 1

    def render(self) -> str:
        out = [f"resolving {self.query} ({self.qtype}) with search "
               f"[{' '.join(self.search)}] ndots:{self.ndots}"]
        out.extend(f"  {line}" for line in self.reasoning)
        width = max((len(s.name) for s in self.steps), default=10)
        for i, s in enumerate(self.steps, 1):
            out.append(f"  {i}. {s.name:<{width}}  {s.describe()}")
        for v in self.verdicts:
            out.append(v.render())
            out.extend(f"   {rr}" for rr in v.records)
        return "\n".join(out)


# -- names -------------------------------------------------------------------------------------


def check_name(name: str) -> None:
    """Raise ValueError saying why ``name`` cannot be looked up (RFC 1035 §2.3.4 limits)."""
    if not name:
        raise ValueError("invalid name '': empty")
    if name == ".":
        return
    bare = name[:-1] if name.endswith(".") else name
    if len(bare) > MAX_NAME:
        raise ValueError(f"invalid name {name!r}: {len(bare)} characters, more than {MAX_NAME}")
    for i, label in enumerate(bare.split("."), 1):
        if not label:
            raise ValueError(f"invalid name {name!r}: label {i} is empty")
        if len(label) > MAX_LABEL:
            raise ValueError(f"invalid name {name!r}: label {i} ({label[:12]}...) has "
                             f"{len(label)} characters, more than {MAX_LABEL}")


def reverse_name(name: str) -> str | None:
    """The PTR name for an IP address given as NAME (``getnameinfo`` asks that), else None."""
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return None
    return ip.reverse_pointer + "."


def type_name(qtype: int) -> str:
    return "A+AAAA" if qtype == ADDR else str(QTYPE[qtype])


def _qtype(qtype: str) -> int:
    if qtype.upper() == "A+AAAA":
        return ADDR
    try:
        return int(getattr(QTYPE, qtype.upper()))
    except Exception:  # dnslib raises its own DNSError for unknown mnemonics
        raise ValueError(f"unknown record type {qtype!r}") from None


# -- one walk ----------------------------------------------------------------------------------


def _classify(reply: Reply) -> str:
    if reply.failure is not None:
        return reply.failure
    assert reply.msg is not None
    rcode = reply.msg.header.rcode
    if rcode == RCODE.NOERROR:
        return "positive" if reply.msg.rr else "nodata"
    if rcode == RCODE.NXDOMAIN:
        return "nxdomain"
    if rcode == RCODE.SERVFAIL:
        return "servfail"
    return "error"


def _glibc_pair(a: Reply, aaaa: Reply) -> str:
    """How glibc's __res_context_query judges an A and an AAAA reply asked together: an answer
    in either is success; otherwise the A reply's rcode decides unless it is NOERROR, then the
    AAAA one's. The search list goes on after SERVFAIL only when the A reply (``hp``) says so."""
    for failure in ("forwarded", "unreachable", "timeout"):
        if failure in (a.failure, aaaa.failure):
            return failure
    assert a.msg is not None and aaaa.msg is not None
    if any(m.header.rcode == RCODE.NOERROR and m.rr for m in (a.msg, aaaa.msg)):
        return "positive"
    rcode = a.msg.header.rcode if a.msg.header.rcode != RCODE.NOERROR else aaaa.msg.header.rcode
    if rcode == RCODE.NOERROR:
        return "nodata"
    if rcode == RCODE.NXDOMAIN:
        return "nxdomain"
    if rcode == RCODE.SERVFAIL and a.msg.header.rcode == RCODE.SERVFAIL:
        return "servfail"
    return "error"


def _types(qtype: int) -> list[int]:
    return [int(QTYPE.A), int(QTYPE.AAAA)] if qtype == ADDR else [qtype]


def _records(step: Step, qtype: int, chain: bool) -> list[str]:
    """The records of the asked type(s) in a step's replies: along the CNAME chain (glibc) or
    wherever they are in the answer section (musl, for addresses)."""
    out: list[str] = []
    for r, t in zip(step.replies, _types(qtype), strict=True):
        if r.msg is None or r.msg.header.rcode != RCODE.NOERROR:
            continue
        out.extend(_chain_records(r.msg, step.name, t) if chain else _any_records(r.msg, t))
    return out


def _chain_records(msg: DNSRecord, name: str, qtype: int) -> list[str]:
    """Records of ``qtype`` at the end of the CNAME chain that starts at ``name`` (how glibc's
    getanswer reads an answer section: only records owned by the name it is following)."""
    owner = name.lower()
    out: list[str] = []
    for _ in range(len(msg.rr) + 1):
        follow = None
        for rr in msg.rr:
            if str(rr.rname).lower() != owner:
                continue
            if rr.rtype == qtype:
                out.append(rr.toZone())
            elif rr.rtype == QTYPE.CNAME and follow is None:
                follow = str(rr.rdata).lower()
        if out or follow is None or qtype == QTYPE.CNAME:
            return out
        owner = follow
    return out


def _any_records(msg: DNSRecord, qtype: int) -> list[str]:
    """Every record of ``qtype`` in the answer section (musl's dns_parse_callback takes each A or
    AAAA it meets, whatever its owner)."""
    return [rr.toZone() for rr in msg.rr if rr.rtype == qtype]


class _Walk:
    """Asks each distinct name once and remembers the step, so both models share the steps."""

    def __init__(self, ask: Asker, qtype: int, result: Result) -> None:
        self._ask = ask
        self._qtype = qtype
        self.result = result
        self._index: dict[str, int] = {}

    def step(self, name: str) -> tuple[int, Step]:
        key = name.lower()
        if key not in self._index:
            if self._qtype == ADDR:
                a, aaaa = self._ask(name, int(QTYPE.A)), self._ask(name, int(QTYPE.AAAA))
                self.result.steps.append(Step(name, a, _glibc_pair(a, aaaa), aaaa))
            else:
                reply = self._ask(name, self._qtype)
                self.result.steps.append(Step(name, reply, _classify(reply)))
            self._index[key] = len(self.result.steps)
        i = self._index[key]
        return i, self.result.steps[i - 1]


def _undetermined(lib: str, tried: list[int], step: Step) -> Verdict:
    return Verdict(lib, "undetermined", tried,
                   f"{step.name} would be forwarded upstream ({step.reply.server}) and the "
                   "upstream's answer decides; give --upstream HOST:PORT to ask one")


def glibc(name: str, search: list[str], ndots: int, walk: _Walk, qtype: int) -> Verdict:
    lib = "glibc"
    tried: list[int] = []
    dots = name.count(".")
    trailing = name.endswith(".")
    bare = name.rstrip(".")
    got_nodata = got_servfail = False
    saved: str | None = None

    def positive(step: Step) -> Verdict:
        records = _records(step, qtype, chain=True)
        if records:
            return Verdict(lib, "resolves", tried, f"answer for {step.name}", records)
        return Verdict(lib, "fails", tried,
                       f"{step.name} answered without any {type_name(qtype)} record at the end of "
                       "its CNAME chain; glibc takes this reply and does not search further")

    def ask(cand: str) -> Step:
        i, step = walk.step(cand)
        tried.append(i)
        return step

    tried_as_is = False
    if dots >= ndots or trailing:
        step = ask(bare + ".")
        if step.kind == "forwarded":
            return _undetermined(lib, tried, step)
        if step.kind == "positive":
            return positive(step)
        if trailing:
            return Verdict(lib, "fails", tried, f"{step.describe()} for an absolute name")
        saved = step.kind
        tried_as_is = True
    root_on_list = False
    for domain in search:
        d = domain.strip(".")
        if not d:
            root_on_list = True
        step = ask(f"{bare}.{d}." if d else bare + ".")
        if step.kind == "forwarded":
            return _undetermined(lib, tried, step)
        if step.kind == "positive":
            return positive(step)
        if step.kind == "unreachable":
            return Verdict(lib, "fails", tried, "no server reachable (connection refused): "
                                                "glibc gives up at once (TRY_AGAIN)")
        if step.kind == "nodata":
            got_nodata = True
            continue
        if step.kind == "nxdomain":
            continue
        if step.kind == "servfail":
            got_servfail = True
            continue
        # A timeout (TRY_AGAIN without a SERVFAIL reply; measured: also right after a
        # SERVFAIL step) or REFUSED/FORMERR/NOTIMP (NO_RECOVERY): the search list ends here.
        break
    if not (tried_as_is or root_on_list):
        step = ask(bare + ".")
        if step.kind == "forwarded":
            return _undetermined(lib, tried, step)
        if step.kind == "positive":
            return positive(step)
        if step.kind == "unreachable":
            return Verdict(lib, "fails", tried, "no server reachable (connection refused)")
    if saved is not None:
        why = f"the name as is got {saved.upper()}"
    elif got_nodata:
        why = "NODATA (the name exists without this type) at some step"
    elif got_servfail:
        why = "SERVFAIL (TRY_AGAIN)"
    else:
        last = walk.result.steps[tried[-1] - 1]
        why = f"last step: {last.describe()}"
    return Verdict(lib, "fails", tried, f"no step answered: {why}")


def musl(name: str, search: list[str], ndots: int, walk: _Walk, qtype: int) -> Verdict:
    lib = "musl"
    tried: list[int] = []
    bare = name[:-1] if name.endswith(".") else name
    address = qtype in (QTYPE.A, QTYPE.AAAA, ADDR)
    if not address or name.count(".") >= ndots or name.endswith("."):
        domains: list[str] = []
    else:
        domains = [d.strip(".") for d in search if d.strip(".")]
    candidates = [f"{bare}.{d}." for d in domains if len(bare) + len(d) + 1 < 255]
    candidates.append(bare + ".")
    for cand in candidates:
        i, step = walk.step(cand)
        tried.append(i)
        if any(r.failure == "forwarded" for r in step.replies):
            return _undetermined(lib, tried, step)
        # name_from_dns checks each reply in turn (A, then AAAA): NXDOMAIN in any one of
        # them sends the search on, before the other is even parsed.
        kinds = [_classify(r) for r in step.replies]
        stop = next((k for k in kinds if k not in ("positive", "nodata")), None)
        if stop == "nxdomain":
            continue
        if stop in ("servfail", "timeout", "unreachable"):
            return Verdict(lib, "fails", tried,
                           f"{step.name}: {stop.upper()} ends the lookup (EAI_AGAIN)")
        if stop == "error":
            return Verdict(lib, "fails", tried,
                           f"{step.name}: {step.describe()} ends the lookup (EAI_FAIL)")
        records = _records(step, qtype, chain=not address)
        if records:
            return Verdict(lib, "resolves", tried, f"answer for {step.name}", records)
        return Verdict(lib, "fails", tried,
                       f"{step.name}: no {type_name(qtype)} record in a NOERROR reply ends the "
                       "lookup (EAI_NODATA)")
    last = walk.result.steps[tried[-1] - 1]
    return Verdict(lib, "fails", tried, f"NXDOMAIN at every step (last: {last.name})")


def _reasoning(name: str, ndots: int, qtype: int, libs: tuple[str, ...]) -> list[str]:
    if name.endswith("."):
        return ["trailing dot: the name is absolute and asked as is, once"]
    dots = name.count(".")
    word = "dot" if dots == 1 else "dots"
    out: list[str] = []
    if dots >= ndots:
        if "glibc" in libs:
            out.append(f"{dots} {word} >= ndots:{ndots}: glibc asks the name as is first, "
                       "then the search list")
        if "musl" in libs:
            out.append(f"{dots} {word} >= ndots:{ndots}: musl asks the name as is only "
                       "(no search list)")
    else:
        out.append(f"{dots} {word} < ndots:{ndots}: the search list is tried first, the name "
                   "as is last")
    if "musl" in libs and qtype not in (QTYPE.A, QTYPE.AAAA, ADDR):
        out.append(f"musl: res_search is res_query, so {QTYPE[qtype]} lookups use no search "
                   "list")
    return out


def walk(name: str, qtype: str, search: list[str], ndots: int, ask: Asker,
         libs: tuple[str, ...] = LIBRARIES) -> Result:
    """Look ``name`` up as each library in ``libs`` would and give each one's verdict."""
    check_name(name)
    qt = _qtype(qtype)
    ptr = reverse_name(name)
    if ptr is not None:
        result = Result(name, "PTR", [], ndots, [
            f"{name} is an IP address: getnameinfo asks {ptr} (PTR) directly, no search list"])
        w = _Walk(ask, int(QTYPE.PTR), result)
        for lib in libs:
            i, step = w.step(ptr)
            if step.kind == "forwarded":
                result.verdicts.append(_undetermined(lib, [i], step))
            elif step.kind == "positive" and step.reply.msg is not None:
                recs = _chain_records(step.reply.msg, ptr, int(QTYPE.PTR))
                status = "resolves" if recs else "fails"
                result.verdicts.append(Verdict(lib, status, [i], f"PTR for {ptr}", recs))
            else:
                result.verdicts.append(Verdict(lib, "fails", [i], step.describe()))
        return result
    result = Result(name, type_name(qt), list(search), ndots,
                    _reasoning(name, ndots, qt, libs))
    w = _Walk(ask, qt, result)
    models = {"glibc": glibc, "musl": musl}
    for lib in libs:
        result.verdicts.append(models[lib](name, search, ndots, w, qt))
    return result


# -- resolv.conf -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResolvConf:
    search: tuple[str, ...] = ()
    ndots: int = 1
    timeout: float = 5.0
    attempts: int = 2


def read_resolv_conf(path: str) -> ResolvConf:
    """The ``search`` and ``options`` a Pod's resolv.conf sets (resolv.conf(5); the last
    ``search`` line wins; ndots is capped at 15 as both libraries do)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise ValueError(f"--resolv-conf {path}: {err.strerror or err}") from None
    search: tuple[str, ...] = ()
    ndots, timeout, attempts = 1, 5.0, 2
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if not fields:
            continue
        if fields[0] in ("search", "domain"):
            search = tuple(fields[1:])
        elif fields[0] == "options":
            for opt in fields[1:]:
                key, _, value = opt.partition(":")
                if not value.isdigit():
                    continue
                if key == "ndots":
                    ndots = min(int(value), 15)
                elif key == "timeout":
                    timeout = float(max(1, min(int(value), 30)))
                elif key == "attempts":
                    attempts = max(1, min(int(value), 5))
    return ResolvConf(search, ndots, timeout, attempts)


# -- askers ------------------------------------------------------------------------------------


class ForwardTrace:
    """Where the ``forward`` plugin of an in-process server sent (or would send) each name.

    The server puts it in its process settings; ``forward`` reports through :meth:`note`.
    ``upstream`` (``--upstream``) replaces every forward's upstreams; without it nothing is
    sent and the step says where it would have gone."""

    def __init__(self, upstream: tuple[str, int] | None = None) -> None:
        self.upstream = upstream
        self._lock = threading.Lock()
        self._notes: dict[str, str] = {}

    def note(self, qname_lower: str, where: str) -> None:
        with self._lock:
            self._notes[qname_lower] = where

    def take(self, qname_lower: str) -> str | None:
        with self._lock:
            return self._notes.pop(qname_lower, None)


def local_asker(server: Any, trace: ForwardTrace, timeout: float) -> Asker:
    """Ask the in-process server; a step that takes longer than ``timeout`` is a timeout, as
    the Pod's resolver would see it."""
    server.start_plugins()
    # Over UDP without EDNS, as the C libraries ask (so forward uses UDP as well); a truncated
    # reply is asked again over TCP, as glibc does.
    udp, tcp = server.dispatcher("udp"), server.dispatcher("tcp")

    def serve(data: bytes) -> bytes | None:
        raw: bytes | None = udp.serve(data, ("127.0.0.1", 0))
        if raw is not None and DNSRecord.parse(raw).header.tc:
            raw = tcp.serve(data, ("127.0.0.1", 0))
        return raw

    def ask(name: str, qtype: int) -> Reply:
        q = DNSRecord.question(name, QTYPE[qtype])
        box: list[bytes | None] = []
        worker = threading.Thread(target=lambda: box.append(serve(bytes(q.pack()))),
                                  daemon=True, name="kdns-resolve")
        worker.start()
        worker.join(timeout)
        where = trace.take(name.lower())
        if where is not None and where.startswith("would:"):
            return Reply(None, where[len("would:"):], "forwarded")
        server_label = f"upstream {where} via kdns forward" if where else "kdns (in-process)"
        if not box:
            return Reply(None, server_label, "timeout")
        raw = box[0]
        if raw is None:
            raise ValueError(f"the server dropped the query for {name}")
        return Reply(DNSRecord.parse(raw), server_label)

    return ask


def split_hostport(text: str, flag: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or (host.count(":") and not host.startswith("[")):
        host, port = text, "53"  # a bare IPv6 address
    host = host.strip("[]")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{flag} {text!r}: port must be 1..65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{flag} {text!r}: {host!r} is not an IP address") from None
    return host, int(port)


def remote_asker(server: str, timeout: float) -> Asker:
    host, port = split_hostport(server, "--server")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    label = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def ask(name: str, qtype: int) -> Reply:
        q = DNSRecord.question(name, QTYPE[qtype])
        data = bytes(q.pack())
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                # Connected, so an ICMP port-unreachable shows as ECONNREFUSED (as in glibc).
                s.connect((host, port))
                s.settimeout(timeout)
                s.send(data)
                reply = DNSRecord.parse(s.recv(65535))
            if reply.header.tc:
                with socket.create_connection((host, port), timeout=timeout) as t:
                    t.sendall(struct.pack("!H", len(data)) + data)
                    size = struct.unpack("!H", _recv_exact(t, 2))[0]
                    reply = DNSRecord.parse(_recv_exact(t, size))
        except TimeoutError:
            return Reply(None, label, "timeout")
        except ConnectionRefusedError:
            raise ValueError(f"no answer from {label}: connection refused (is a DNS server "
                             "listening there?)") from None
        except OSError as err:
            raise ValueError(f"no answer from {label}: {err}") from None
        return Reply(reply, label)

    return ask


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return buf
