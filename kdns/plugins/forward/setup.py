"""forward setup: ``forward FROM TO... { ... }`` parsed into a frozen :class:`ForwardConfig`.

Owns the directive's syntax and its checks (CoreDNS ``plugin/forward/setup.go`` option set),
reading ``resolv.conf`` files named as a TO, and the self-loop guard: a ``nameserver`` line of
such a file that points back at kdns's own listener (``127.0.0.1:53`` when kdns serves ``:53``)
is dropped with a warning, because forwarding to it would send every query around in a circle.

A TO is ``[dns://]IP[:port]``, ``tls://IP[:port]`` (DNS over TLS, RFC 7858, port 853), a
resolv.conf file, or a ``host[:port]`` name resolved once, here, through the system resolver
(getaddrinfo, as CoreDNS resolves through the Go resolver); every address it has becomes an
upstream. ``tls [CERT KEY [CA]] | tls CA`` and ``tls_servername`` build the TLS client context
here, so a missing or bad file is a located error at load time.

The directive may appear several times in a block with different FROMs (CoreDNS chains them):
the first ``setup`` returns the handler, later ones join it and return None; a query goes to the
first one, in Corefile order, whose FROM covers it.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import ssl
from dataclasses import dataclass, field, replace
from pathlib import Path

from dnslib import RCODE

from kdns.config.durations import parse_duration
from kdns.config.model import ConfigError, Directive, Token, error
from kdns.config.zones import in_zone
from kdns.plugins.forward.handler import ForwardHandler
from kdns.plugins.setup_context import SetupContext

NAME = "forward"
MAX_UPSTREAMS = 15
"""CoreDNS's limit on TOs (after resolv.conf files are expanded)."""
DEFAULT_PORT = 53
TLS_PORT = 853

log = logging.getLogger("kdns.forward")

POLICIES = ("random", "round_robin", "sequential")

_UNSUPPORTED_SCHEMES = ("https", "grpc", "quic")
_UNSUPPORTED_OPTIONS = frozenset({"doh_method", "resolver", "next_on_nodata"})
_HOSTNAME = re.compile(r"(?=.{1,253}\.?$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)"
                       r"(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?", re.I)


@dataclass(frozen=True, slots=True)
class UpstreamAddr:
    host: str
    """An IP address literal (IPv6 without brackets)."""
    port: int
    from_file: str | None = None
    """The resolv.conf the address came from, when it was not written in the Corefile."""
    transport: str = "dns"
    """``dns`` (UDP, TCP when asked) or ``tls`` (DNS over TLS, always over TCP)."""
    hostname: str | None = None
    """The name the address was resolved from (``dns.example:53``), if any: the TLS server
    name to verify unless ``tls_servername`` says otherwise."""

    @property
    def label(self) -> str:
        """``IP:port`` / ``[IPv6]:port``: the ``to`` label of the forward metrics."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    from_zone: str
    upstreams: tuple[UpstreamAddr, ...]
    except_zones: tuple[str, ...] = ()
    force_tcp: bool = False
    prefer_udp: bool = False
    expire: float = 10.0
    """Seconds a pooled TCP connection may sit idle before it is closed."""
    max_idle_conns: int = 0
    """Pooled connections kept per upstream; 0 means no limit."""
    max_fails: int = 2
    """Consecutive failures that mark an upstream down; 0 disables health checking."""
    max_connect_attempts: int = 0
    """Cap on failed upstream attempts per query; 0 means one attempt per upstream."""
    health_check: float = 0.5
    hc_recursion_desired: bool = True
    hc_domain: str = "."
    policy: str = "random"
    max_concurrent: int = 0
    """Queries in flight at once; over it a query gets REFUSED. 0 means no limit."""
    next_rcodes: tuple[int, ...] = ()
    failover_rcodes: tuple[int, ...] = ()
    failfast_all_unhealthy_upstreams: bool = False
    tls_files: tuple[str, ...] = ()
    """``tls`` arguments as written: (), (CA,), (CERT, KEY) or (CERT, KEY, CA)."""
    tls_servername: str | None = None
    source_address: str | None = None
    """Local address outgoing queries are sent from (``source_address``)."""
    tls_context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)
    """Client context for ``tls://`` upstreams (built from ``tls_files``)."""

    def matches(self, qname_lower: str) -> bool:
        """Should a query for ``qname_lower`` be forwarded? (under FROM, and not excepted)."""
        if not in_zone(qname_lower, self.from_zone):
            return False
        if qname_lower == self.from_zone:  # CoreDNS: FROM itself is never excepted
            return True
        return not any(in_zone(qname_lower, z) for z in self.except_zones)



# -- small parsers -----------------------------------------------------------------------------


def _zones(tok: Token) -> list[str]:
    """A zone argument, normalised; a CIDR expands to its reverse zones like a server key."""
    if "/" in tok.text:
        from kdns.config.parser import reverse_zones

        try:
            return reverse_zones(tok.text, tok.loc)
        except ConfigError as err:
            raise error(tok, NAME, err.message) from None
    text = tok.text.lower()
    if text != "." and not text.endswith("."):
        text += "."
    labels = [] if text == "." else text[:-1].split(".")
    if any(not label or len(label) > 63 for label in labels) or len(text) > 254:
        raise error(tok, NAME, f"invalid zone {tok.text!r}")
    return [text]


class NotAnIPError(ValueError):
    """The host part is not an IP literal (so the TO may be a file name instead)."""


def parse_hostport(text: str) -> tuple[str, int]:
    """``IP``, ``IP:port``, ``[IPv6]:port`` or a bare IPv6 -> (ip, port); ValueError if not
    (:class:`NotAnIPError` when the host part is not an IP address)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"missing ']' in {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"unexpected {rest!r} after ']' in {text!r}")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise NotAnIPError(f"not an IP address: {host!r}") from None
    port = DEFAULT_PORT
    if port_text is not None:
        if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"invalid port {port_text!r} in {text!r}: must be 1..65535")
        port = int(port_text)
    return host, port


def parse_resolv_conf(text: str) -> list[str]:
    """The addresses of the ``nameserver`` lines of a resolv.conf, in order.

    Lines that are not IP literals are skipped (glibc ignores them too)."""
    found: list[str] = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                ipaddress.ip_address(fields[1])
            except ValueError:
                log.warning("resolv.conf: ignoring nameserver %r: not an IP address", fields[1])
                continue
            found.append(fields[1])
    return found


def _looks_like_path(text: str) -> bool:
    return "/" in text or text.endswith(".conf")


def _resolve(tok: Token, text: str, transport: str) -> list[UpstreamAddr]:
    """``host[:port]``: every address the system resolver has for ``host``, in its order."""
    host, sep, port_text = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    port = TLS_PORT if transport == "tls" else DEFAULT_PORT
    if sep:
        if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
            raise error(tok, NAME, f"invalid port {port_text!r} in {text!r}: must be 1..65535")
        port = int(port_text)
    if not _HOSTNAME.fullmatch(host) or host.replace(".", "").isdigit():
        raise error(tok, NAME, f"not an IP address, host name or file: {text!r}")
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)
    except OSError as err:
        raise error(tok, NAME, f"cannot resolve {host!r}: {err}") from None
    addrs = dict.fromkeys(str(info[4][0]) for info in infos)
    name = host.rstrip(".").lower()
    return [UpstreamAddr(a, port, transport=transport, hostname=name) for a in addrs]


def _parse_to(tok: Token, ctx: SetupContext) -> list[UpstreamAddr]:
    text = tok.text
    transport = "dns"
    if "://" in text:
        scheme, rest = text.split("://", 1)
        scheme = scheme.lower()
        if scheme in _UNSUPPORTED_SCHEMES:
            raise error(tok, NAME, f"{scheme}:// upstreams are not supported by kdns yet")
        if scheme not in ("dns", "tls"):
            raise error(tok, NAME, f"'{scheme}' is not supported as a destination protocol")
        transport = scheme
        try:
            host, port = parse_hostport(rest)
        except NotAnIPError:
            return _resolve(tok, rest, transport)
        except ValueError as err:
            raise error(tok, NAME, str(err)) from None
        if transport == "tls" and not _has_port(rest):
            port = TLS_PORT
        return [UpstreamAddr(host, port, transport=transport)]
    try:
        host, port = parse_hostport(text)
        return [UpstreamAddr(host, port)]
    except NotAnIPError:
        pass
    except ValueError as err:  # an IP with a bad port or brackets
        raise error(tok, NAME, str(err)) from None
    path = Path(text)
    if not path.is_absolute():
        path = ctx.config_dir / path
    if not path.is_file():
        if _looks_like_path(text):
            raise error(tok, NAME, f"cannot read resolv.conf file {text!r}: no such file")
        return _resolve(tok, text, transport)
    try:
        content = path.read_text(errors="replace")
    except OSError as err:
        raise error(tok, NAME, f"cannot read resolv.conf file {text!r}: {err.strerror}") from None
    servers = parse_resolv_conf(content)
    if not servers:
        raise error(tok, NAME, f"no nameservers found in {text!r}")
    return [UpstreamAddr(s, DEFAULT_PORT, text) for s in servers]


def _has_port(text: str) -> bool:
    return (text.startswith("[") and "]:" in text) or (not text.startswith("[")
                                                      and text.count(":") == 1)


def tls_context(files: tuple[str, ...], config_dir: Path, at: Directive | Token) -> ssl.SSLContext:
    """CoreDNS's ``NewTLSConfigFromArgs``: () system CAs; (CA,) that CA; (CERT, KEY) a client
    certificate and the system CAs; (CERT, KEY, CA) both. TLS 1.2 at least, as CoreDNS."""
    paths = [str(p if Path(p).is_absolute() else config_dir / p) for p in files]
    ca = paths[0] if len(paths) == 1 else paths[2] if len(paths) == 3 else None
    try:
        ctx = ssl.create_default_context(cafile=ca)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if len(paths) >= 2:
            ctx.load_cert_chain(paths[0], paths[1])
    except (OSError, ssl.SSLError, ValueError) as err:
        raise error(at, NAME, f"tls: cannot load {', '.join(files)}: {err}") from None
    return ctx


def _is_local_address(host: str) -> bool:
    """True when ``host`` is an address of this machine (binding to it succeeds)."""
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if ip.is_loopback or ip.is_unspecified:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
    except OSError:
        return False
    return True


def listen_ports(ctx: SetupContext) -> set[int]:
    """The DNS ports this server block listens on, as the server will compute them.

    ``ctx.process`` may carry ``dns_port`` (the ``--dns-port`` flag, which replaces port 53)."""
    override = ctx.process.get("dns_port")
    ports: set[int] = set()
    for key in ctx.keys:
        port = key.port if key.port is not None else DEFAULT_PORT
        if override is not None and port == DEFAULT_PORT:
            port = int(override)
        ports.add(port)
    return ports


def is_self(addr: UpstreamAddr, ports: set[int], bind_addr: str | None = None) -> bool:
    """Would a query sent to ``addr`` reach this kdns process's own listener?"""
    if addr.port not in ports:
        return False
    if bind_addr not in (None, "", "0.0.0.0", "::"):
        return ipaddress.ip_address(addr.host.split("%", 1)[0]) == ipaddress.ip_address(bind_addr)
    return _is_local_address(addr.host)


def _rcodes(opt: Directive, *, allow_noerror: bool) -> tuple[int, ...]:
    if not opt.args:
        raise error(opt, NAME, f"{opt.name.text} needs at least one RCODE")
    codes: list[int] = []
    for a in opt.args:
        code = RCODE.reverse.get(a.text.upper())
        if code is None:
            raise error(a, NAME, f"unknown rcode {a.text!r}")
        if code == RCODE.NOERROR and not allow_noerror:
            raise error(a, NAME, f"{opt.name.text}: NOERROR cannot be used")
        codes.append(int(code))
    return tuple(dict.fromkeys(codes))


def _int(opt: Directive) -> int:
    if len(opt.args) != 1:
        raise error(opt, NAME, f"{opt.name.text} needs one INTEGER")
    tok = opt.args[0]
    if not (tok.text.isascii() and tok.text.isdigit()):
        raise error(tok, NAME, f"{opt.name.text}: not a non-negative integer: {tok.text!r}")
    return int(tok.text)


def _duration(opt: Directive, tok: Token) -> float:
    try:
        return parse_duration(tok.text)
    except ValueError as err:
        raise error(tok, NAME, f"{opt.name.text}: {err}") from None


def _no_args(opt: Directive) -> None:
    if opt.args:
        raise error(opt.args[0], NAME, f"{opt.name.text} takes no arguments")


# -- the directive -----------------------------------------------------------------------------


def parse_config(d: Directive, ctx: SetupContext) -> ForwardConfig:
    if len(d.args) < 2:
        raise error(d, NAME, "needs FROM and at least one TO")
    from_zones = _zones(d.args[0])
    if len(from_zones) > 1:
        log.warning("%s: forward: %r expands to several zones; using only %s",
                    d.args[0].loc, d.args[0].text, from_zones[0])
    from_zone = from_zones[0]

    upstreams: list[UpstreamAddr] = []
    ports = listen_ports(ctx)
    bind_addr = ctx.process.get("dns_addr")
    # `kdns resolve` builds a server that binds nothing, so nothing it forwards can loop.
    binds = ctx.process.get("resolve_trace") is None
    for tok in d.args[1:]:
        addrs = _parse_to(tok, ctx)
        kept = []
        for addr in addrs:
            if binds and addr.from_file is not None and is_self(addr, ports, bind_addr):
                log.warning("%s: forward: dropping nameserver %s from %s: it is this kdns "
                            "server's own listener, forwarding to it would loop",
                            tok.loc, addr.label, addr.from_file)
                continue
            kept.append(addr)
        if addrs and not kept and len(d.args) == 2:
            labels = ", ".join(x.label for x in addrs)
            raise error(tok, NAME, f"every nameserver in {tok.text!r} ({labels}) is this kdns "
                                   "server's own listener: forwarding would loop; list a real "
                                   "upstream resolver")
        upstreams.extend(kept)
        if len(upstreams) > MAX_UPSTREAMS:
            raise error(tok, NAME, f"more than {MAX_UPSTREAMS} upstreams configured")
    if not upstreams:
        raise error(d, NAME, "no upstream left: every nameserver found is this kdns server's "
                             "own listener (forwarding would loop)")

    kw: dict[str, object] = {}
    tls_at: Directive = d
    for opt in d.block or ():
        name = opt.name.text
        if opt.block is not None:
            raise error(opt, NAME, f"{name} does not take a block")
        if name == "except":
            if not opt.args:
                raise error(opt, NAME, "except needs at least one zone")
            zones: list[str] = []
            for a in opt.args:
                zones.extend(_zones(a))
            kw["except_zones"] = tuple(dict.fromkeys(zones))
        elif name in ("force_tcp", "prefer_udp", "failfast_all_unhealthy_upstreams"):
            _no_args(opt)
            kw[name] = True
        elif name == "expire":
            if len(opt.args) != 1:
                raise error(opt, NAME, "expire needs one DURATION")
            kw["expire"] = _duration(opt, opt.args[0])
        elif name in ("max_fails", "max_idle_conns", "max_concurrent", "max_connect_attempts"):
            kw[name] = _int(opt)
        elif name == "health_check":
            if not opt.args:
                raise error(opt, NAME, "health_check needs a DURATION")
            kw["health_check"] = _duration(opt, opt.args[0])
            kw["hc_domain"] = "."
            rest = list(opt.args[1:])
            while rest:
                a = rest.pop(0)
                if a.text == "no_rec":
                    kw["hc_recursion_desired"] = False
                elif a.text == "domain":
                    if not rest:
                        raise error(a, NAME, "health_check: domain needs an FQDN")
                    dom = rest.pop(0)
                    zs = _zones(dom) if "/" not in dom.text else []
                    if not zs:
                        raise error(dom, NAME, f"health_check: invalid domain name {dom.text!r}")
                    kw["hc_domain"] = zs[0]
                else:
                    raise error(a, NAME, f"health_check: unknown option {a.text!r}")
        elif name == "policy":
            if len(opt.args) != 1:
                raise error(opt, NAME, "policy needs one of " + "|".join(POLICIES))
            if opt.args[0].text not in POLICIES:
                raise error(opt.args[0], NAME, f"unknown policy {opt.args[0].text!r}")
            kw["policy"] = opt.args[0].text
        elif name == "tls":
            if len(opt.args) > 3:
                raise error(opt.args[3], NAME, "tls takes at most CERT KEY CA")
            kw["tls_files"] = tuple(a.text for a in opt.args)
            tls_at = opt
        elif name == "tls_servername":
            if len(opt.args) != 1:
                raise error(opt, NAME, "tls_servername needs one NAME")
            kw["tls_servername"] = opt.args[0].text.rstrip(".")
        elif name == "source_address":
            if len(opt.args) != 1:
                raise error(opt, NAME, "source_address needs one IP address")
            try:
                src = ipaddress.ip_address(opt.args[0].text)
            except ValueError:
                raise error(opt.args[0], NAME,
                            f"source_address: not an IP address: {opt.args[0].text!r}") from None
            if not _is_local_address(str(src)):
                raise error(opt.args[0], NAME,
                            f"source_address: {src} is not an address of this host")
            families = {ipaddress.ip_address(u.host.split("%", 1)[0]).version for u in upstreams}
            if families != {src.version}:
                raise error(opt.args[0], NAME, f"source_address: {src} is IPv{src.version}, "
                                                "every upstream must be of the same family")
            kw["source_address"] = str(src)
        elif name == "next":
            kw["next_rcodes"] = _rcodes(opt, allow_noerror=True)
        elif name == "failover":
            kw["failover_rcodes"] = _rcodes(opt, allow_noerror=False)
        elif name in _UNSUPPORTED_OPTIONS:
            raise error(opt, NAME, f"{name} is not supported by kdns yet")
        else:
            raise error(opt, NAME, f"unknown property '{name}'")
    if kw.get("force_tcp") and kw.get("prefer_udp"):
        at = next(o for o in d.block or () if o.name.text == "prefer_udp")
        log.info("%s: forward: prefer_udp has no effect with force_tcp", at.loc)
    if any(u.transport == "tls" for u in upstreams):
        kw["tls_context"] = tls_context(kw.get("tls_files", ()), ctx.config_dir,  # type: ignore[arg-type]
                                        tls_at)
    else:
        # CoreDNS accepts these and applies them to tls:// upstreams only; say so rather than
        # take a Corefile that means DNS over TLS and quietly send plain DNS.
        for opt in d.block or ():
            if opt.name.text in ("tls", "tls_servername"):
                log.info("%s: forward: %s has no effect: no upstream is tls://", opt.loc,
                         opt.name.text)
    return ForwardConfig(from_zone, tuple(upstreams), **kw)  # type: ignore[arg-type]


def setup(d: Directive, ctx: SetupContext) -> ForwardHandler | None:
    cfg = parse_config(d, ctx)
    trace = ctx.process.get("resolve_trace")
    if trace is not None and trace.upstream is not None:
        # `kdns resolve --upstream HOST:PORT`: every forwarded name goes there instead.
        host, port = trace.upstream
        cfg = replace(cfg, upstreams=(UpstreamAddr(host, port),))
    handler = ForwardHandler(cfg, trace=trace)
    first = ctx.shared.get(NAME)
    if isinstance(first, ForwardHandler):
        # Another forward of this block (CoreDNS chains them in Corefile order): it joins the
        # first, which sits in the chain and hands each query to the first FROM that covers it.
        first.chain(handler)
        return None
    ctx.shared[NAME] = handler
    return handler
