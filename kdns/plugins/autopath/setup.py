"""autopath: parse ``autopath [ZONE...] RESOLV-CONF|@kubernetes`` into a frozen config.

This module owns the directive's grammar, reading resolv.conf-style files (the named one, or
this host's for the tail of the ``@kubernetes`` search list), and the check that the
kubernetes plugin of the same block can name a client's namespace (``pods verified``).

Corefile order is free, so ``kubernetes`` may be set up after ``autopath``: the check then
runs from the handler's ``start()`` (see :meth:`AutopathHandler.finish_setup`), still as a
located :class:`ConfigError` at the ``@kubernetes`` token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdns.config.model import ConfigError, Directive, Token, error
from kdns.plugins.setup_context import SetupContext

if TYPE_CHECKING:
    from kdns.plugins.autopath.handler import AutopathHandler, NamespaceProvider

NAME = "autopath"
PROVIDER = "kubernetes"
log = logging.getLogger("kdns.autopath")

HOST_RESOLV_CONF = Path("/etc/resolv.conf")
"""The host's resolv.conf, whose search domains end the ``@kubernetes`` search list (CoreDNS's
kubernetes plugin reads the same file: in a cluster it is the node's, as the DNS pod runs with
``dnsPolicy: Default``). Module-level so tests can point it elsewhere."""


@dataclass(frozen=True, slots=True)
class AutopathConfig:
    zones: tuple[str, ...]
    """Names autopath may act on (lower case, trailing dot): the arguments, else the block's."""
    kubernetes: bool
    """``@kubernetes``: the search list is built per client from its namespace."""
    search: tuple[str, ...]
    """With a RESOLV-CONF file: its search domains. With ``@kubernetes``: the host's search
    domains, which follow ``<ns>.svc.<zone> svc.<zone> <zone>``. Never holds the final ``""``
    (the bare name), which the handler always tries last."""


def normalize_name(text: str) -> str | None:
    """Lower case with a trailing dot, or None when ``text`` is not a usable domain name."""
    name = text.lower()
    if name != "." and not name.endswith("."):
        name += "."
    labels = [] if name == "." else name[:-1].split(".")
    if any(not label or len(label) > 63 for label in labels) or len(name) > 254:
        return None
    return name


def search_domains(text: str) -> list[str]:
    """The search list of a resolv.conf, as glibc and miekg/dns read it: the last ``search``
    or ``domain`` line wins (``domain`` gives a one-element list). Bad names are skipped."""
    found: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "search":
            found = fields[1:]
        elif fields[0] == "domain":
            found = fields[1:2]
    out: list[str] = []
    for raw in found:
        name = normalize_name(raw)
        if name is None:
            log.warning("autopath: ignoring invalid search domain %r", raw)
            continue
        if name != "." and name not in out:
            out.append(name)
    return out


def host_search(path: Path | None = None) -> tuple[str, ...]:
    """This host's search domains; none when the file cannot be read (as CoreDNS)."""
    try:
        text = (path or HOST_RESOLV_CONF).read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        log.debug("autopath: cannot read %s: %s", path or HOST_RESOLV_CONF, err)
        return ()
    return tuple(search_domains(text))


def _zones(tokens: tuple[Token, ...], ctx: SetupContext) -> tuple[str, ...]:
    from kdns.config.parser import reverse_zones

    if not tokens:
        return ctx.zones
    zones: list[str] = []
    for tok in tokens:
        if "/" in tok.text:
            try:
                zones.extend(reverse_zones(tok.text, tok.loc))
            except ConfigError as err:
                raise error(tok, NAME, err.message) from None
            continue
        name = normalize_name(tok.text)
        if name is None:
            raise error(tok, NAME, f"invalid zone {tok.text!r}")
        zones.append(name)
    return tuple(dict.fromkeys(zones))


def parse_config(d: Directive, ctx: SetupContext, *,
                 host_resolv_conf: Path | None = None) -> AutopathConfig:
    """The directive as a frozen config; raises :class:`ConfigError` naming the bad token."""
    if d.block is not None:
        raise error(d, NAME, "autopath does not take a block")
    if not d.args:
        raise error(d, NAME, "no resolv-conf specified (RESOLV-CONF or @kubernetes)")
    source = d.args[-1]
    zones = _zones(d.args[:-1], ctx)
    if source.text.startswith("@"):
        plugin = source.text[1:]
        if plugin != PROVIDER:
            raise error(source, NAME, f"@{plugin}: only @kubernetes can provide a search path")
        return AutopathConfig(zones, True, host_search(host_resolv_conf))
    path = ctx.config_dir / Path(source.text)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise error(source, NAME, f"failed to parse {source.text!r}: "
                                  f"{err.strerror or err}") from None
    search = search_domains(text)
    if not search:
        raise error(source, NAME, f"{source.text!r} has no search domains to complete with")
    return AutopathConfig(zones, False, tuple(search))


def check_provider(provider: Any, at: Token) -> NamespaceProvider:
    """The kubernetes handler, if it can tell autopath a client's namespace; else a located
    error (CoreDNS silently does nothing then, which hides the misconfiguration)."""
    if provider is None:
        raise error(at, NAME, "@kubernetes needs the kubernetes plugin in the same server block")
    cfg = getattr(provider, "cfg", None)
    pods = getattr(cfg, "pods", None)
    if pods != "verified":
        raise error(at, NAME, f"@kubernetes needs 'pods verified' in the kubernetes plugin "
                              f"(it has 'pods {pods}'): only the pod watch of 'verified' maps a "
                              f"client's IP to its namespace")
    if not callable(getattr(provider, "namespace_of", None)):
        raise error(at, NAME, "the kubernetes plugin cannot map client IPs to namespaces")
    checked: NamespaceProvider = provider
    return checked


def setup(d: Directive, ctx: SetupContext) -> AutopathHandler:
    from kdns.plugins.autopath.handler import AutopathHandler

    cfg = parse_config(d, ctx)
    handler = AutopathHandler(cfg)
    if cfg.kubernetes:
        at = d.args[-1]
        shared = ctx.shared
        if PROVIDER in shared:
            handler.provider = check_provider(shared[PROVIDER], at)
        else:
            # kubernetes may come later in the block: check once every setup has run.
            handler.deferred_check = lambda: check_provider(shared.get(PROVIDER), at)
    ctx.shared[NAME] = handler
    return handler
