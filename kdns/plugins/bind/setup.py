"""bind: the addresses a server block listens on (CoreDNS's *bind*).

Each argument is an IP address (IPv6 with an optional ``%zone``) or an interface name, which
stands for every address of that interface when the Corefile is loaded (or reloaded). Several
``bind`` lines in a block add up; ``except`` removes addresses from its own line only. The
result lands in the block's ``SetupContext.listen_hosts``; the server opens one listener per
address and port, and blocks share a listener only when both match. There is no handler: the
chain never sees *bind*.

Host names are not accepted (CoreDNS resolves one to at most one address): a listener must not
depend on a resolver being reachable when the server starts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence

from kdns.config.model import Directive, Token, error
from kdns.plugins.bind.interfaces import interface_addresses
from kdns.plugins.setup_context import SetupContext

NAME = "bind"


def _address(text: str) -> str | None:
    """The canonical text of an IP address (``fe80::1%eth0`` keeps its zone), or None."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _expand(tokens: Sequence[Token], ifaces: Callable[[], dict[str, list[str]]]) -> list[str]:
    out: list[str] = []
    for tok in tokens:
        addr = _address(tok.text)
        if addr is not None:
            out.append(addr)
            continue
        known = ifaces()
        if tok.text not in known:
            raise error(tok, NAME, f"not a valid IP address or interface name: {tok.text!r}")
        out.extend(known[tok.text])
    return out


def setup(d: Directive, ctx: SetupContext) -> None:
    if not d.args:
        raise error(d, NAME, "at least one address or interface name is expected")
    cached: dict[str, list[str]] = {}

    def ifaces() -> dict[str, list[str]]:
        if not cached:
            try:
                cached.update(interface_addresses())
            except OSError as err:
                raise error(d, NAME, f"failed to get the interfaces list: {err}") from None
        return cached

    hosts = _expand(d.args, ifaces)
    excluded: set[str] = set()
    for opt in d.block or ():
        if opt.name.text != "except":
            raise error(opt, NAME, f"invalid option {opt.name.text!r}")
        if not opt.args:
            raise error(opt, NAME, "except needs at least one address or interface name")
        excluded.update(_expand(opt.args, ifaces))
    kept = [h for h in dict.fromkeys(hosts) if h not in excluded]
    if not kept:
        raise error(d, NAME, f"no address left to listen on ({' '.join(t.text for t in d.args)}"
                             + (" has none" if not hosts else " are all excluded") + ")")
    for h in kept:
        if h not in ctx.listen_hosts:
            ctx.listen_hosts.append(h)
