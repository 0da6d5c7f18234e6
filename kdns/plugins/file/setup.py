"""file: parse the directive into a frozen :class:`FileConfig`, and an RFC 1035 master file into
an immutable :class:`Zone`.

This module owns the option grammar of ``file DBFILE [ZONES...] { reload; fallthrough }`` and
the master-file reader. dnslib 0.9.26 has a ``ZoneParser``, but it loses line numbers (a bad
record could not be named ``db.example.org:12``), takes TTLs only as plain digits, only in the
order TTL-then-class, and resolves ``@`` and relative SRV targets wrongly. So this module splits
the file into records itself (RFC 1035 §5.1: ``;`` comments, ``( )`` continuation, quoted
strings, blank owner = previous owner, ``$ORIGIN``, ``$TTL``) and hands each record's RDATA to
dnslib's per-type ``fromZone`` (A, AAAA, TXT and SOA times are converted here, where dnslib
parses too loosely). Every record is packed once at load, so a record dnslib cannot encode fails
the load with its line, not a query later.

Not supported, and a located error if present: ``$INCLUDE``, ``$GENERATE``, classes other than
IN, backslash escapes in names.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dnslib import AAAA, QTYPE, RR, SOA, TXT, A, DNSBuffer, DNSLabel
from dnslib.dns import RD, RDMAP

from kdns.config.model import Directive, Token, error
from kdns.config.zones import in_zone, zone_args
from kdns.plugins.poller import reload_interval
from kdns.plugins.setup_context import SetupContext

if TYPE_CHECKING:
    from kdns.plugins.file.handler import FileHandler

NAME = "file"
log = logging.getLogger("kdns.file")
DEFAULT_RELOAD = 60.0
DEFAULT_TTL = 3600
"""TTL of records before any ``$TTL`` or explicit TTL (miekg/dns, which CoreDNS uses, says 3600)."""
MAX_TTL = 2**31 - 1  # RFC 2181 §8


@dataclass(frozen=True, slots=True)
class FileConfig:
    path: Path
    zones: tuple[str, ...]
    reload: float = DEFAULT_RELOAD
    """Seconds between checks of the file; 0 disables reloading."""
    fallthrough: tuple[str, ...] | None = None
    """None: off; (): every name; else the zones it covers (applies to NXDOMAIN only)."""

    def fallthrough_covers(self, name: str) -> bool:
        if self.fallthrough is None:
            return False
        return not self.fallthrough or any(in_zone(name, z) for z in self.fallthrough)



def parent(name: str) -> str:
    dot = name.find(".")
    return name[dot + 1 :] or "."


# -- the zone ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Zone:
    """One loaded zone. Owner names are stored lower case; lookups use lower-case keys."""

    origin: str
    path: Path
    soa: RR
    nodes: dict[str, dict[int, tuple[RR, ...]]]
    """Owner -> type -> RRset, in file order."""
    names: frozenset[str]
    """Every name that exists (RFC 4592 §2.2.2): owners and their ancestors down to the origin,
    so empty non-terminals answer NODATA rather than NXDOMAIN."""
    cuts: frozenset[str]
    """Non-apex owners with NS records: zone cuts, answered with a referral."""
    records: int
    digest: bytes
    """SHA-256 of the file bytes: the reload check compares it (covers serial and content)."""

    @property
    def serial(self) -> int:
        return int(self.soa.rdata.times[0])

    @property
    def ns(self) -> tuple[RR, ...]:
        return self.nodes.get(self.origin, {}).get(QTYPE.NS, ())


class ZoneFileError(Exception):
    """A zone file that cannot be loaded; ``line`` is 1-based, or None for a whole-file fault."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message

    def where(self, path: Path | str) -> str:
        return f"{path}:{self.line}: {self.message}" if self.line else f"{path}: {self.message}"


def load_zone(path: Path, origin: str) -> Zone:
    """Read and build the zone at ``path`` for ``origin``; OSError or :class:`ZoneFileError`."""
    data = path.read_bytes()
    return build_zone(data, origin, path)


def build_zone(data: bytes, origin: str, path: Path) -> Zone:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ZoneFileError(line, "not valid UTF-8") from None
    nodes: dict[str, dict[int, list[RR]]] = {}
    soa: RR | None = None
    count = 0
    for line, rr in parse_master(text, origin):
        owner = str(rr.rname).lower()
        if not in_zone(owner, origin):
            raise ZoneFileError(line, f"out of zone data: {owner} is not in zone {origin}")
        if rr.rtype == QTYPE.SOA:
            if owner != origin:
                raise ZoneFileError(line, f"SOA record for {owner} is not at the zone apex {origin}")
            if soa is not None:
                raise ZoneFileError(line, f"a second SOA record for {origin}")
            soa = rr
        rr = RR(DNSLabel(owner), rr.rtype, rr.rclass, rr.ttl, rr.rdata)
        nodes.setdefault(owner, {}).setdefault(rr.rtype, []).append(rr)
        count += 1
    if soa is None:
        raise ZoneFileError(None, f"no SOA record for origin {origin}")
    names: set[str] = set()
    for owner in nodes:
        n = owner
        while n not in names:
            names.add(n)
            if n == origin:
                break
            n = parent(n)
    cuts = frozenset(o for o, types in nodes.items() if o != origin and QTYPE.NS in types)
    return Zone(origin, path, nodes[origin][QTYPE.SOA][0],
                {o: {t: tuple(rrs) for t, rrs in types.items()} for o, types in nodes.items()},
                frozenset(names), cuts, count, hashlib.sha256(data).digest())


# -- the master-file reader ----------------------------------------------------------------------

_TTL_RE = re.compile(r"(?:\d+[wdhms]?)+", re.I)
_TTL_PART = re.compile(r"(\d+)([wdhms]?)", re.I)
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_CLASSES = ("IN", "CH", "CS", "HS")
_NAME_FIELDS = {"NS": (0,), "CNAME": (0,), "PTR": (0,), "DNAME": (0,), "MX": (1,), "SRV": (3,),
                "SOA": (0, 1), "RP": (0, 1), "NAPTR": (5,)}
"""RDATA positions that hold domain names, resolved against $ORIGIN here (dnslib gets ``@``
and relative SRV targets wrong)."""
_MIN_FIELDS = {"A": 1, "AAAA": 1, "NS": 1, "CNAME": 1, "PTR": 1, "DNAME": 1, "MX": 2, "SRV": 4,
               "SOA": 7, "TXT": 1, "CAA": 3, "RP": 2, "NAPTR": 6, "DS": 4, "DNSKEY": 4,
               "SSHFP": 3, "TLSA": 4}


def _ttl(text: str) -> int | None:
    """A TTL in BIND notation (``3600``, ``1h``, ``1h30m``), or None when ``text`` is not one."""
    if not _TTL_RE.fullmatch(text):
        return None
    total = sum(int(n) * _UNIT[u.lower()] for n, u in _TTL_PART.findall(text))
    return total


def _records(text: str) -> Iterator[tuple[int, bool, list[str]]]:
    """Logical records of a master file: (first line, owner left blank, tokens).

    Quotes are removed from quoted strings, whose backslash escapes are kept for the caller
    (only character-strings need them decoded); ``\\`` also escapes a delimiter outside quotes.
    """
    tokens: list[str] = []
    start, blank, depth = 1, False, 0
    i, n, line = 0, len(text), 1
    at_line_start = True
    while i < n:
        c = text[i]
        if at_line_start:
            at_line_start = False
            if depth == 0 and not tokens:
                start, blank = line, c in " \t"
        if c == "\n":
            line += 1
            at_line_start = True
            if depth == 0 and tokens:
                yield start, blank, tokens
                tokens = []
            i += 1
        elif c in " \t\r":
            i += 1
        elif c == ";":
            while i < n and text[i] != "\n":
                i += 1
        elif c == "(":
            depth += 1
            i += 1
        elif c == ")":
            if depth == 0:
                raise ZoneFileError(line, "unbalanced ')'")
            depth -= 1
            i += 1
        elif c == '"':
            j, buf = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    buf.append(text[j : j + 2])
                    j += 2
                    continue
                if text[j] == "\n":
                    raise ZoneFileError(line, "newline in a quoted string")
                buf.append(text[j])
                j += 1
            if j >= n:
                raise ZoneFileError(line, "unterminated quoted string")
            tokens.append("".join(buf))
            i = j + 1
        else:
            j = i
            while j < n and text[j] not in ' \t\r\n;()"':
                j += 2 if text[j] == "\\" else 1
            tokens.append(text[i:j])
            i = j
    if depth:
        raise ZoneFileError(start, "unbalanced '(' (the record never closes)")
    if tokens:
        yield start, blank, tokens


def _absolute(text: str, origin: str, line: int) -> str:
    if "\\" in text:
        raise ZoneFileError(line, f"escapes in names are not supported: {text!r}")
    if text == "@":
        name = origin
    elif text.endswith("."):
        name = text
    else:
        name = text + "." + origin if origin != "." else text + "."
    labels = [] if name == "." else name[:-1].split(".")
    if any(not label or len(label) > 63 for label in labels) or len(name) > 254:
        raise ZoneFileError(line, f"invalid domain name {text!r}")
    return name


def _charstr(text: str, line: int) -> bytes:
    """A <character-string> with RFC 1035 §5.1 escapes (``\\X``, ``\\DDD``) decoded."""
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            if text[i + 1 : i + 4].isdigit() and len(text[i + 1 : i + 4]) == 3:
                value = int(text[i + 1 : i + 4])
                if value > 255:
                    raise ZoneFileError(line, f"bad escape \\{text[i + 1 : i + 4]}")
                out.append(value)
                i += 4
                continue
            out += text[i + 1].encode()
            i += 2
            continue
        out += c.encode()
        i += 1
    if len(out) > 255:
        raise ZoneFileError(line, "character-string longer than 255 bytes")
    return bytes(out)


def _rtype(text: str) -> tuple[str, int] | None:
    up = text.upper()
    m = re.fullmatch(r"TYPE(\d{1,5})", up)
    if m and int(m.group(1)) < 65536:
        return up, int(m.group(1))
    try:
        return up, int(getattr(QTYPE, up))
    except Exception:
        return None


def _rdata(tname: str, rd: list[str], origin: str, line: int) -> RD:
    if rd and rd[0] == "\\#":  # RFC 3597 generic form, any type
        try:
            size = int(rd[1])
            raw = bytes.fromhex("".join(rd[2:]))
        except (IndexError, ValueError):
            raise ZoneFileError(line, "bad \\# RDATA (want: \\# LENGTH HEX)") from None
        if len(raw) != size:
            raise ZoneFileError(line, f"\\# RDATA length {size} does not match {len(raw)} bytes")
        return RD(raw)
    if tname not in RDMAP:
        raise ZoneFileError(line, f"record type {tname} is not supported (use the \\# form)")
    if len(rd) < _MIN_FIELDS.get(tname, 1):
        raise ZoneFileError(line, f"{tname} record needs {_MIN_FIELDS.get(tname, 1)} RDATA fields,"
                                  f" got {len(rd)}")
    rd = list(rd)
    for pos in _NAME_FIELDS.get(tname, ()):
        rd[pos] = _absolute(rd[pos], origin, line)
    if tname == "A":
        if len(rd) != 1:
            raise ZoneFileError(line, "A record takes one address")
        try:
            return A(str(ipaddress.IPv4Address(rd[0])))
        except ValueError:
            raise ZoneFileError(line, f"invalid IPv4 address {rd[0]!r}") from None
    if tname == "AAAA":
        if len(rd) != 1:
            raise ZoneFileError(line, "AAAA record takes one address")
        try:
            return AAAA(tuple(ipaddress.IPv6Address(rd[0]).packed))
        except ValueError:
            raise ZoneFileError(line, f"invalid IPv6 address {rd[0]!r}") from None
    if tname == "TXT":
        return TXT([_charstr(s, line) for s in rd])
    if tname == "SOA":
        if len(rd) != 7:
            raise ZoneFileError(line, f"SOA record needs 7 RDATA fields, got {len(rd)}")
        times = [_ttl(t) for t in rd[2:]]
        if any(t is None or t > 0xFFFFFFFF for t in times):
            raise ZoneFileError(line, "SOA serial and timers must be numbers")
        return SOA(rd[0], rd[1], [t or 0 for t in times])
    try:
        rdata: RD = RDMAP[tname].fromZone(rd, DNSLabel(origin))
    except Exception as err:
        raise ZoneFileError(line, f"bad {tname} RDATA {' '.join(rd)!r}: {err}") from None
    return rdata


def parse_master(text: str, origin: str) -> Iterator[tuple[int, RR]]:
    """(line, RR) for every record of a master file read with ``origin`` as initial $ORIGIN."""
    cur_origin = origin
    default_ttl: int | None = None
    last_ttl: int | None = None
    owner: str | None = None
    for line, blank, toks in _records(text):
        head = toks[0]
        if head.startswith("$") and not blank:
            word = head.upper()
            if word == "$ORIGIN":
                if len(toks) != 2:
                    raise ZoneFileError(line, "$ORIGIN takes one domain name")
                cur_origin = _absolute(toks[1], cur_origin, line).lower()
            elif word == "$TTL":
                value = _ttl(toks[1]) if len(toks) == 2 else None
                if value is None or value > MAX_TTL:
                    raise ZoneFileError(line, "$TTL takes one TTL (e.g. 3600 or 1h)")
                default_ttl = value
            elif word in ("$INCLUDE", "$GENERATE"):
                raise ZoneFileError(line, f"{word} is not supported")
            else:
                raise ZoneFileError(line, f"unknown directive {head}")
            continue
        if blank:
            if owner is None:
                raise ZoneFileError(line, "a record with a blank owner before any owner")
        else:
            owner = _absolute(toks.pop(0), cur_origin, line)
        ttl: int | None = None
        rclass = "IN"
        for _ in range(2):  # [TTL] [CLASS] in either order (RFC 1035 §5.1)
            if not toks:
                break
            t = _ttl(toks[0])
            if t is not None and ttl is None:
                ttl = t
                toks.pop(0)
            elif toks[0].upper() in _CLASSES:
                rclass = toks.pop(0).upper()
        if not toks:
            raise ZoneFileError(line, "record without a type")
        if rclass != "IN":
            raise ZoneFileError(line, f"class {rclass} is not supported (only IN)")
        if ttl is not None and ttl > MAX_TTL:
            raise ZoneFileError(line, f"TTL {ttl} is larger than {MAX_TTL}")
        found = _rtype(toks[0])
        if found is None:
            raise ZoneFileError(line, f"unknown record type {toks[0]!r}")
        tname, rtype = found
        if rtype in (QTYPE.OPT, QTYPE.ANY, QTYPE.AXFR, QTYPE.IXFR):
            raise ZoneFileError(line, f"{tname} cannot appear in a zone file")
        rdata = _rdata(tname, toks[1:], cur_origin, line)
        if ttl is None:
            ttl = default_ttl if default_ttl is not None else last_ttl
            if ttl is None:
                ttl = DEFAULT_TTL
        else:
            last_ttl = ttl
        rr = RR(DNSLabel(owner), rtype, 1, ttl, rdata)
        try:
            rr.pack(DNSBuffer())
        except Exception as err:
            raise ZoneFileError(line, f"cannot encode {tname} record: {err}") from None
        yield line, rr


# -- the directive -------------------------------------------------------------------------------


def parse_config(d: Directive, ctx: SetupContext) -> FileConfig:
    """The directive as a frozen config; raises :class:`ConfigError` naming the bad token."""
    if not d.args:
        raise error(d, NAME, "file needs a DBFILE argument")
    path = Path(d.args[0].text)
    if not path.is_absolute():
        path = ctx.config_dir / path
    zones = tuple(zones_of(d.args[1:])) if len(d.args) > 1 else ctx.zones
    reload = DEFAULT_RELOAD
    fall: tuple[str, ...] | None = None
    for opt in d.block or ():
        name, args = opt.name.text, opt.args
        if opt.block is not None:
            raise error(opt, NAME, f"{name} takes no block")
        if name == "reload":
            reload = reload_interval(opt, NAME)
        elif name == "reload_by_mtime":
            # kdns reloads on any content change (serial or not), which includes this.
            if args:
                raise error(args[0], NAME, "reload_by_mtime takes no arguments")
            log.info("%s: file: reload_by_mtime has no effect: kdns reloads on any change of "
                     "the file's content", opt.loc)
        elif name == "fallthrough":
            fall = tuple(zones_of(args))
        else:
            raise error(opt, NAME, f"unknown property '{name}'")
    return FileConfig(path, zones, reload, fall)


def load_zones(cfg: FileConfig, at: Token) -> dict[str, Zone]:
    """Load the file once per zone (each with that zone as $ORIGIN); errors name ``at`` (the
    DBFILE token) and the zone-file line."""
    zones: dict[str, Zone] = {}
    for origin in cfg.zones:
        try:
            zones[origin] = load_zone(cfg.path, origin)
        except OSError as err:
            raise error(at, NAME, f"cannot read zone file {cfg.path}: "
                                  f"{err.strerror or err}") from None
        except ZoneFileError as err:
            raise error(at, NAME, err.where(cfg.path)) from None
    return zones


def setup(d: Directive, ctx: SetupContext) -> FileHandler:
    from kdns.plugins.file.handler import FileHandler

    cfg = parse_config(d, ctx)
    handler = FileHandler(cfg, load_zones(cfg, d.args[0]))
    ctx.shared[NAME] = handler
    return handler


def zones_of(tokens: Iterable[Token]) -> list[str]:
    """Normalise zone arguments; a CIDR expands to its reverse zones like a Corefile key."""
    return zone_args(tokens, NAME)
