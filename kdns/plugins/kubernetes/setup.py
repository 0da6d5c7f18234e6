"""kubernetes: parse the directive into a frozen :class:`KubernetesConfig` and build the handler.

This module owns the option grammar of ``kubernetes [ZONES...] { ... }`` (reference §2.1), the
choice of resources to watch, and the process-flag overrides. Every error names the place:
``Corefile:12:5: kubernetes: ttl must be in [0, 3600], got 9000``.

It does no I/O except reading the host's own addresses (for the apex NS glue); the source is
built and started by the handler's ``start()``.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kdns.config.durations import parse_duration
from kdns.config.model import Directive, Token, error
from kdns.config.zones import in_zone, zone_args
from kdns.k8s.source import ResourceSpec
from kdns.plugins.setup_context import SetupContext

if TYPE_CHECKING:
    from kdns.plugins.kubernetes.handler import KubernetesHandler

NAME = "kubernetes"
log = logging.getLogger("kdns.kubernetes")

PODS_MODES = ("disabled", "insecure", "verified")
TTL_MAX = 3600
DEFAULT_TTL = 5
DEFAULT_STARTUP_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Isolation:
    """``isolate { allow NAMESPACE...; unknown allow|deny }``: which namespaces' names a
    client may resolve, by the namespace of the Pod that asks (README, Isolation)."""

    allow: frozenset[str] = frozenset()
    """Namespaces every client may see."""
    unknown_allow: bool = True
    """Clients whose address is no known Pod see everything (True) or only ``allow`` and
    namespaces annotated ``*`` (False)."""


@dataclass(frozen=True, slots=True)
class KubernetesConfig:
    zones: tuple[str, ...]
    """Every zone the plugin answers (lower case, trailing dot), reverse zones included."""
    primary_zone: str
    """The first non-reverse zone: PTR targets are written under it."""
    endpoint: str | None = None
    tls: tuple[str, str, str] | None = None
    kubeconfig: str | None = None
    context: str | None = None
    manifests: str | None = None
    """kdns extension: serve objects read from a file or directory instead of an API server."""
    namespaces: frozenset[str] = frozenset()
    """Exposed namespaces; empty means all."""
    namespace_labels: str | None = None
    labels: str | None = None
    pods: str = "disabled"
    endpoint_pod_names: bool = False
    ttl: int = DEFAULT_TTL
    noendpoints: bool = False
    fallthrough: tuple[str, ...] | None = None
    """None: off; (): every name; else the zones it covers."""
    ignore_empty_service: bool = False
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT
    apiserver_qps: float | None = None
    apiserver_burst: int | None = None
    apiserver_max_inflight: int | None = None
    local_ips: tuple[str, ...] = ("127.0.0.1",)
    """Addresses of this host, published as the glue of ``ns.dns.<zone>``."""
    isolate: Isolation | None = None
    """Per-namespace name hiding; None: every client sees every name."""
    kinds: tuple[str, ...] = field(default=("services", "endpointslices", "namespaces"))
    """Resources to watch, derived from the options."""
    multicluster: tuple[str, ...] = ()
    """Zones (among ``zones``) answered from ServiceImports (KEP-1645), not Services."""

    def resource_specs(self) -> list[ResourceSpec]:
        """What the source lists and watches: ``labels`` narrows the namespaced kinds,
        ``namespace_labels`` the namespaces."""
        specs: list[ResourceSpec] = []
        for kind in self.kinds:
            selector = self.namespace_labels if kind == "namespaces" else self.labels
            specs.append(ResourceSpec(kind, label_selector=selector))
        return specs

    def fallthrough_covers(self, qname_lower: str) -> bool:
        if self.fallthrough is None:
            return False
        if not self.fallthrough:
            return True
        return any(in_zone(qname_lower, z) for z in self.fallthrough)



def is_reverse(zone: str) -> bool:
    return in_zone(zone, "in-addr.arpa.") or in_zone(zone, "ip6.arpa.")


@functools.lru_cache(maxsize=1)
def local_addresses() -> tuple[str, ...]:
    """This host's non-loopback addresses (from its own name), else ``127.0.0.1``.

    Cached: the answer only feeds the apex NS glue, and resolving our own hostname on every
    reload would be wasted work (and, without an /etc/hosts entry, a DNS query).
    """
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, proto=socket.IPPROTO_UDP)
    except (OSError, UnicodeError):
        infos = []
    found: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        try:
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        except ValueError:
            continue
        if not ip.is_loopback:
            found.append(str(ip))
    return tuple(dict.fromkeys(found)) or ("127.0.0.1",)


def _selector(d: Directive) -> str:
    """Validate a label selector (the Corefile lexer split it at spaces) and return the
    canonical form the API server is sent."""
    from kdns.k8s.selectors import parse_selector

    opt = d.name.text
    if not d.args:
        raise error(d, NAME, f"{opt} needs a label selector")
    expr = " ".join(t.text for t in d.args)
    try:
        return str(parse_selector(expr))
    except ValueError as err:
        raise error(d, NAME, f"{opt}: {err}") from None


def _nargs(d: Directive, lo: int, hi: int | None = None) -> None:
    n, opt = len(d.args), d.name.text
    hi = lo if hi is None else hi
    if lo <= n <= hi:
        return
    if lo == hi:
        want = "no arguments" if lo == 0 else f"exactly {lo} argument" + ("s" if lo > 1 else "")
    elif hi > 1000:
        want = f"at least {lo} argument" + ("s" if lo > 1 else "")
    else:
        want = f"{lo} to {hi} arguments"
    raise error(d, NAME, f"{opt} takes {want}, got {n}")


def _int(d: Directive, lo: int, hi: int | None = None) -> int:
    _nargs(d, 1)
    opt, text = d.name.text, d.args[0].text
    try:
        value = int(text, 10)
    except ValueError:
        raise error(d, NAME, f"{opt} must be an integer, got {text!r}") from None
    if value < lo or (hi is not None and value > hi):
        bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise error(d, NAME, f"{opt} must be {bound}, got {value}")
    return value


_UNSUPPORTED = {
    "zonal": "zonal (zone-scoped headless names) is not supported by kdns yet",
}


def parse_config(
    directive: Directive, ctx: SetupContext, *, local_ips: tuple[str, ...] | None = None
) -> KubernetesConfig:
    """The directive as a frozen config; raises :class:`ConfigError` naming the bad token."""
    zones = _zones_of(directive.args) if directive.args else list(ctx.zones)
    forward = [z for z in zones if not is_reverse(z)]
    if not forward:
        raise error(directive, NAME, "at least one non-reverse zone is required")
    multicluster: list[str] = []

    opts: dict[str, object] = {}
    namespaces: list[str] = []
    seen: dict[str, Directive] = {}
    for d in directive.block or ():
        opt = d.name.text
        if opt == "isolate":
            if "isolate" in seen:
                raise error(d, NAME, "isolate may be given only once")
            seen[opt] = d
            opts["isolate"] = _isolation(d)
            continue
        if d.block is not None:
            raise error(d, NAME, f"{opt} does not take a block")
        seen.setdefault(opt, d)
        if opt in _UNSUPPORTED:
            raise error(d, NAME, _UNSUPPORTED[opt])
        if opt == "endpoint":
            _nargs(d, 1, 1 << 30)
            if len(d.args) > 1:
                log.warning("%s: kubernetes: multiple endpoints are deprecated; using %s",
                            d.loc, d.args[0].text)
            opts["endpoint"] = d.args[0].text
        elif opt == "tls":
            _nargs(d, 3)
            opts["tls"] = (d.args[0].text, d.args[1].text, d.args[2].text)
        elif opt == "kubeconfig":
            _nargs(d, 1, 2)
            opts["kubeconfig"] = d.args[0].text
            opts["context"] = d.args[1].text if len(d.args) > 1 else None
        elif opt == "manifests":
            _nargs(d, 1)
            opts["manifests"] = str(ctx.config_dir / Path(d.args[0].text))
        elif opt == "namespaces":
            _nargs(d, 1, 1 << 30)
            namespaces.extend(t.text.lower() for t in d.args)
        elif opt == "namespace_labels":
            opts["namespace_labels"] = _selector(d)
        elif opt == "labels":
            opts["labels"] = _selector(d)
        elif opt == "pods":
            _nargs(d, 1)
            mode = d.args[0].text
            if mode not in PODS_MODES:
                raise error(d.args[0], NAME,
                            f"pods must be one of {', '.join(PODS_MODES)}, got {mode!r}")
            opts["pods"] = mode
        elif opt == "endpoint_pod_names":
            _nargs(d, 0)
            opts["endpoint_pod_names"] = True
        elif opt == "noendpoints":
            _nargs(d, 0)
            opts["noendpoints"] = True
        elif opt == "ttl":
            opts["ttl"] = _int(d, 0, TTL_MAX)
        elif opt == "fallthrough":
            opts["fallthrough"] = tuple(_zones_of(d.args))
        elif opt == "ignore":
            _nargs(d, 1)
            if d.args[0].text != "empty_service":
                raise error(d.args[0], NAME,
                            f"ignore takes 'empty_service', got {d.args[0].text!r}")
            opts["ignore_empty_service"] = True
        elif opt == "startup_timeout":
            _nargs(d, 1)
            try:
                opts["startup_timeout"] = parse_duration(d.args[0].text)
            except ValueError as err:
                raise error(d, NAME, f"startup_timeout: {err}") from None
        elif opt == "apiserver_qps":
            _nargs(d, 1)
            try:
                qps = float(d.args[0].text)
            except ValueError:
                raise error(d, NAME,
                            f"apiserver_qps must be a number, got {d.args[0].text!r}") from None
            if not qps >= 0 or qps == float("inf"):
                raise error(d, NAME, f"apiserver_qps must be >= 0, got {d.args[0].text}")
            opts["apiserver_qps"] = qps
        elif opt == "apiserver_burst":
            opts["apiserver_burst"] = _int(d, 0)
        elif opt == "apiserver_max_inflight":
            opts["apiserver_max_inflight"] = _int(d, 0)
        elif opt == "multicluster":
            _nargs(d, 1, 1 << 30)
            for tok in d.args:
                for z in _zones_of([tok]):
                    # CoreDNS: the multicluster zones must be zones the plugin serves.
                    if z not in zones or is_reverse(z):
                        raise error(tok, NAME, f"multicluster zone {z!r} is not one of the "
                                    f"plugin's zones ({', '.join(zones)}); list it after "
                                    "'kubernetes' too")
                    multicluster.append(z)
        else:
            raise error(d, NAME, f"unknown property '{opt}'")

    if namespaces and "namespace_labels" in opts:
        raise error(seen["namespace_labels"], NAME,
                    "namespaces and namespace_labels cannot both be set")
    if "manifests" in opts and ("endpoint" in opts or "kubeconfig" in opts):
        raise error(seen["manifests"], NAME,
                    "manifests cannot be combined with endpoint or kubeconfig")
    if "manifests" in opts:
        for opt in ("apiserver_qps", "apiserver_burst", "apiserver_max_inflight"):
            if opt in opts:
                # Documented no-op: manifests make no API requests to limit.
                log.info("%s: %s has no effect with manifests (no API requests are made)",
                         seen[opt].loc, opt)

    if multicluster:
        if "manifests" in opts:
            raise error(seen["multicluster"], NAME,
                        "multicluster reads ServiceImports from the API server; it cannot be "
                        "combined with manifests")
        forward = [z for z in forward if z not in multicluster]
        if not forward:
            raise error(seen["multicluster"], NAME,
                        "at least one zone must be a cluster zone, not multicluster")

    # Process flags fill in only when the Corefile does not say where the objects come from,
    # so an explicit Corefile stays the single source of truth.
    ov = ctx.overrides
    if not any(k in opts for k in ("kubeconfig", "endpoint", "manifests")):
        if ov.manifests:
            opts["manifests"] = ov.manifests
        elif ov.kubeconfig or ov.context:
            opts["kubeconfig"] = ov.kubeconfig
            opts["context"] = ov.context

    pods = str(opts.get("pods", "disabled"))
    if "isolate" in opts and pods != "verified":
        # The client's namespace comes from the Pod index only `pods verified` keeps.
        raise error(seen["isolate"], NAME, "isolate needs 'pods verified' in the same block "
                    f"(the client's namespace comes from its Pod), got pods {pods}")
    kinds = ["services"]
    if not opts.get("noendpoints"):
        kinds.append("endpointslices")
    kinds.append("namespaces")
    if pods == "verified":
        kinds.append("pods")

    return KubernetesConfig(
        zones=tuple(zones),
        primary_zone=forward[0],
        namespaces=frozenset(namespaces),
        local_ips=local_ips if local_ips is not None else local_addresses(),
        kinds=tuple(kinds),
        multicluster=tuple(dict.fromkeys(multicluster)),
        **opts,  # type: ignore[arg-type]
    )


def _isolation(d: Directive) -> Isolation:
    """Parse ``isolate { allow NAMESPACE...; unknown allow|deny }``."""
    if d.args:
        raise error(d.args[0], NAME, "isolate takes no arguments, only a block")
    allow: list[str] = []
    unknown_allow = True
    seen: set[str] = set()
    for sub in d.block or ():
        opt = sub.name.text
        if sub.block is not None:
            raise error(sub, NAME, f"isolate: {opt} does not take a block")
        if opt == "allow":
            if not sub.args:
                raise error(sub, NAME, "isolate: allow needs at least one namespace")
            for t in sub.args:
                ns = t.text.lower()
                if not _NS_NAME.fullmatch(ns):
                    raise error(t, NAME, f"isolate: allow: {t.text!r} is not a namespace name")
                allow.append(ns)
        elif opt == "unknown":
            if opt in seen:
                raise error(sub, NAME, "isolate: unknown may be given only once")
            if len(sub.args) != 1 or sub.args[0].text not in ("allow", "deny"):
                got = " ".join(t.text for t in sub.args) or "nothing"
                raise error(sub, NAME, f"isolate: unknown takes 'allow' or 'deny', got {got}")
            unknown_allow = sub.args[0].text == "allow"
        else:
            raise error(sub, NAME, f"isolate: unknown property '{opt}'")
        seen.add(opt)
    return Isolation(frozenset(allow), unknown_allow)


_NS_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def setup(directive: Directive, ctx: SetupContext) -> KubernetesHandler:
    from kdns.plugins.kubernetes.handler import KubernetesHandler, SourceKey

    if NAME in ctx.shared:
        raise error(directive, NAME, "kubernetes may be used only once per server block")
    cfg = parse_config(directive, ctx)
    # In a worker of `kdns serve --workers N` the objects come from the supervisor's one shared
    # source per configuration, not from watches of this process's own.
    hub = ctx.process.get("source_hub")
    factory = hub.factory(SourceKey.of(cfg)) if hub else None
    if cfg.multicluster:
        from kdns.plugins.kubernetes.multicluster import MulticlusterHandler

        handler: KubernetesHandler = MulticlusterHandler(cfg, source_factory=factory)
    else:
        handler = KubernetesHandler(cfg, source_factory=factory)
    ctx.shared[NAME] = handler
    # The transfer plugin finds zone sources here (kdns.plugins.base.Transferer).
    from kdns.plugins.kubernetes.xfr import KubernetesTransfer

    ctx.shared.setdefault("transferers", []).append(KubernetesTransfer(handler))
    return handler


def _zones_of(tokens: Iterable[Token]) -> list[str]:
    """Normalise zone arguments; a CIDR expands to its reverse zones like a Corefile key."""
    return zone_args(tokens, NAME)
