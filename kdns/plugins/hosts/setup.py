"""hosts: parse the directive into a frozen :class:`HostsConfig`, and hosts-file text into an
immutable :class:`HostsData` (CoreDNS ``hosts``).

This module owns the option grammar of ``hosts [FILE [ZONES...]] { INLINE...; ttl; no_reverse;
reload; fallthrough; fallthrough_unsupported }``, the hosts(5) line format (``IP name
[aliases...]``, ``#`` comments) and the index the handler answers from: names to addresses per
family, reverse names to host names (the generated PTRs), and leftmost-label ``*`` wildcards.

Lines of a hosts *file* that do not parse are skipped, as every resolver does with a hosts file;
inline entries in the Corefile are checked, and a bad one is a located error.
"""

from __future__ import annotations

import ipaddress
import logging
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kdns.config.model import Directive, Token, error
from kdns.config.zones import in_zone, zone_args
from kdns.plugins.poller import reload_interval
from kdns.plugins.setup_context import SetupContext

if TYPE_CHECKING:
    from kdns.plugins.hosts.handler import HostsHandler

NAME = "hosts"
log = logging.getLogger("kdns.hosts")

DEFAULT_PATH = "/etc/hosts"
DEFAULT_TTL = 3600
TTL_MAX = 65535
"""CoreDNS accepts ``ttl`` in [1, 65535]."""
DEFAULT_RELOAD = 5.0


@dataclass(frozen=True, slots=True)
class Entry:
    """One hosts line: an address and the (normalised, in-zone) names that map to it."""

    ip: str
    """Canonical text of the address (``ipaddress``'s ``str``), IPv6 zone index dropped."""
    names: tuple[str, ...]
    """Lower case, trailing dot; ``*.`` leftmost for a wildcard."""


@dataclass(frozen=True, slots=True)
class HostsConfig:
    path: Path
    zones: tuple[str, ...]
    inline: tuple[Entry, ...] = ()
    ttl: int = DEFAULT_TTL
    reverse: bool = True
    reload: float = DEFAULT_RELOAD
    """Seconds between checks of the file's mtime and size; 0 disables reloading."""
    fallthrough: tuple[str, ...] | None = None
    """None: off; (): every name; else the zones it covers."""
    fallthrough_unsupported: bool = False

    def covers(self, name: str) -> bool:
        return any(in_zone(name, z) for z in self.zones)

    def fallthrough_covers(self, name: str) -> bool:
        if self.fallthrough is None:
            return False
        return not self.fallthrough or any(in_zone(name, z) for z in self.fallthrough)


@dataclass(frozen=True, slots=True)
class HostsData:
    """The answerable index, rebuilt whole on every (re)load and swapped in one assignment."""

    v4: dict[str, tuple[str, ...]] = field(default_factory=dict)
    v6: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ptr: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Reverse name (``4.3.2.1.in-addr.arpa.``) -> host names, in file order."""
    entries: int = 0
    """Distinct (name, address) pairs: the ``coredns_hosts_entries`` gauge."""

    def addresses(self, name: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """(IPv4, IPv6) addresses of ``name`` (lower case, trailing dot), or None when the name
        has no entry. An exact entry hides a wildcard (RFC 4592 §2.2.1); ``*.example.com.``
        matches exactly one more label, never the apex ``example.com.`` itself."""
        v4, v6 = self.v4.get(name), self.v6.get(name)
        if v4 is None and v6 is None:
            dot = name.find(".")
            if dot <= 0 or dot == len(name) - 1:
                return None
            wild = "*" + name[dot:]
            v4, v6 = self.v4.get(wild), self.v6.get(wild)
            if v4 is None and v6 is None:
                return None
        return v4 or (), v6 or ()



def normalize_name(text: str) -> str | None:
    """``text`` as a lower-case absolute name, or None when it is not a valid host name.

    ``*`` is allowed only as the whole leftmost label (CoreDNS 1.14.5 wildcards).
    """
    name = text.lower().rstrip(".")
    if not name or len(name) > 253:
        return None
    labels = name.split(".")
    for i, label in enumerate(labels):
        if not label or len(label) > 63 or any(c.isspace() for c in label):
            return None
        if "*" in label and (label != "*" or i != 0 or len(labels) < 2):
            return None
    return name + "."


def parse_ip(text: str) -> str | None:
    """Canonical text of an address, or None. ``fe80::1%eth0``: the zone index is dropped, as
    CoreDNS does (DNS has no place for it)."""
    try:
        return str(ipaddress.ip_address(text.split("%", 1)[0]))
    except ValueError:
        return None


def parse_hosts_text(text: str, zones: tuple[str, ...]) -> list[Entry]:
    """Entries of a hosts file; lines that do not parse and names outside ``zones`` are
    skipped (CoreDNS keeps only names its origins cover)."""
    out: list[Entry] = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        ip = parse_ip(fields[0])
        if ip is None:
            continue
        names = [n for n in (normalize_name(f) for f in fields[1:]) if n is not None]
        names = [n for n in names if any(in_zone(n, z) for z in zones)]
        if names:
            out.append(Entry(ip, tuple(names)))
    return out


def reverse_name(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer + "."


def build_data(entries: Iterable[Entry], *, reverse: bool) -> HostsData:
    """The index over ``entries`` (the file's first, then the inline ones: CoreDNS merges
    both). Duplicate addresses and names collapse; order is kept."""
    v4: dict[str, dict[str, None]] = {}
    v6: dict[str, dict[str, None]] = {}
    ptr: dict[str, dict[str, None]] = {}
    for e in entries:
        family = v6 if ":" in e.ip else v4
        for name in e.names:
            family.setdefault(name, {})[e.ip] = None
            if reverse and not name.startswith("*."):  # wildcards get no PTR (CoreDNS)
                ptr.setdefault(reverse_name(e.ip), {})[name] = None
    count = sum(len(a) for a in v4.values()) + sum(len(a) for a in v6.values())
    return HostsData(
        {k: tuple(v) for k, v in v4.items()},
        {k: tuple(v) for k, v in v6.items()},
        {k: tuple(v) for k, v in ptr.items()},
        count,
    )


# -- the directive -------------------------------------------------------------------------------


def _inline_entry(d: Directive, ip: str, zones: tuple[str, ...]) -> Entry | None:
    if d.block is not None:
        raise error(d, NAME, "an inline hosts entry takes no block")
    if not d.args:
        raise error(d, NAME, f"inline entry {d.name.text!r} needs at least one host name")
    names: list[str] = []
    for tok in d.args:
        name = normalize_name(tok.text)
        if name is None:
            raise error(tok, NAME, f"invalid host name {tok.text!r}")
        if any(in_zone(name, z) for z in zones):
            names.append(name)
        else:
            log.warning("%s: hosts: %s is outside the plugin's zones %s; ignored",
                        tok.loc, name, ", ".join(zones))
    return Entry(ip, tuple(names)) if names else None


def _check_path(tok: Token, path: Path) -> None:
    """CoreDNS: a missing file is a warning (it may appear later and is then read); any other
    error reaching it fails setup."""
    try:
        st = path.stat()
    except FileNotFoundError:
        log.warning("%s: hosts: file does not exist: %s", tok.loc, path)
        return
    except OSError as err:
        raise error(tok, NAME, f"unable to access hosts file '{path}': {err.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        log.warning("%s: hosts: hosts file %s is a directory", tok.loc, path)


def parse_config(d: Directive, ctx: SetupContext) -> HostsConfig:
    """The directive as a frozen config; raises :class:`ConfigError` naming the bad token."""
    path = Path(DEFAULT_PATH)
    if d.args:
        path = Path(d.args[0].text)
        if not path.is_absolute():
            path = ctx.config_dir / path
        _check_path(d.args[0], path)
    zones = tuple(zones_of(d.args[1:])) if len(d.args) > 1 else ctx.zones
    ttl, reverse, reload = DEFAULT_TTL, True, DEFAULT_RELOAD
    fall: tuple[str, ...] | None = None
    fall_unsupported: Directive | None = None
    inline: list[Entry] = []
    for opt in d.block or ():
        name, args = opt.name.text, opt.args
        if name == "ttl":
            if len(args) != 1:
                raise error(opt, NAME, "ttl needs a number of seconds")
            try:
                ttl = int(args[0].text, 10)
            except ValueError:
                raise error(args[0], NAME, f"ttl needs a number of seconds, got {args[0].text!r}") from None
            if not 1 <= ttl <= TTL_MAX:
                raise error(args[0], NAME, f"ttl must be in [1, {TTL_MAX}], got {ttl}")
        elif name == "no_reverse":
            if args:
                raise error(args[0], NAME, "no_reverse takes no arguments")
            reverse = False
        elif name == "reload":
            reload = reload_interval(opt, NAME)
        elif name == "fallthrough":
            fall = tuple(zones_of(args))
        elif name == "fallthrough_unsupported":
            if args:
                raise error(args[0], NAME, "fallthrough_unsupported takes no arguments")
            fall_unsupported = opt
        else:
            ip = parse_ip(name)
            if ip is None:
                raise error(opt, NAME, f"unknown property '{name}'")
            entry = _inline_entry(opt, ip, zones)
            if entry is not None:
                inline.append(entry)
        if opt.block is not None and parse_ip(name) is None:
            raise error(opt, NAME, f"{name} takes no block")
    if fall_unsupported is not None and fall is None:
        raise error(fall_unsupported, NAME, "fallthrough_unsupported requires fallthrough")
    return HostsConfig(path, zones, tuple(inline), ttl, reverse, reload, fall,
                       fall_unsupported is not None)


def setup(d: Directive, ctx: SetupContext) -> HostsHandler:
    from kdns.plugins.hosts.handler import HostsHandler

    handler = HostsHandler(parse_config(d, ctx))
    ctx.shared[NAME] = handler
    return handler


def zones_of(tokens: Iterable[Token]) -> list[str]:
    """Normalise zone arguments; a CIDR expands to its reverse zones like a Corefile key."""
    return zone_args(tokens, NAME)
