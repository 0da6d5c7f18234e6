"""transfer setup: parse ``transfer [ZONES...] { to ADDRESS... }`` into a frozen rule.

This module owns the directive's syntax (CoreDNS's ``plugin/transfer``) and its located errors.
The directive may appear several times in a server block, one rule per zone list: the first
builds the handler, later ones add their rule to it and return ``None`` (the registry's
REPEATABLE contract).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from kdns.config.model import Directive, Location, Token, error
from kdns.config.zones import zone_args
from kdns.plugins.setup_context import SetupContext
from kdns.plugins.transfer.handler import TransferHandler

NAME = "transfer"
DEFAULT_PORT = 53


@dataclass(frozen=True, slots=True)
class Target:
    """One ``to`` address: who may transfer, and where NOTIFY goes (``host:port``)."""

    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if self.ip.version == 6 else f"{self.ip}:{self.port}"


@dataclass(frozen=True, slots=True)
class TransferRule:
    zones: tuple[str, ...]
    """Zones this rule covers (lower case, trailing dot)."""
    targets: tuple[Target, ...]
    """Addresses allowed to transfer, and sent NOTIFY when a zone changes."""
    anyone: bool
    """``to *``: every client may transfer (no NOTIFY goes to ``*``)."""
    loc: Location


def parse_target(text: str) -> Target:
    """``IP``, ``IP:PORT`` or ``[IPv6]:PORT`` (CoreDNS's ``parse.HostPort``: an address, not a
    name, with port 53 by default). Raises ValueError."""
    host, port = text, str(DEFAULT_PORT)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"not an IP address or IP:port: {text!r}")
        port = rest[1:] if rest else port
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"not an IP address or IP:port: {text!r}") from None
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"invalid port in {text!r}")
    return Target(ip, int(port))


def parse_rule(d: Directive, ctx: SetupContext) -> TransferRule:
    zones = tuple(zone_args(d.args, NAME)) if d.args else (ctx.zones or (".",))
    targets: list[Target] = []
    anyone = False
    to: Token | None = None
    for line in d.block or ():
        opt = line.name.text
        if opt != "to":
            raise error(line, NAME, f"unknown property '{opt}'")
        if line.block is not None:
            raise error(line, NAME, "to does not take a block")
        if not line.args:
            raise error(line, NAME, "to needs at least one address")
        to = line.name
        for tok in line.args:
            if tok.text == "*":
                anyone = True
                continue
            try:
                targets.append(parse_target(tok.text))
            except ValueError as err:
                raise error(tok, NAME, str(err)) from None
    if to is None:
        raise error(d, NAME, "'to' is required")
    return TransferRule(zones, tuple(dict.fromkeys(targets)), anyone, d.loc)


def setup(d: Directive, ctx: SetupContext) -> TransferHandler | None:
    rule = parse_rule(d, ctx)
    existing = ctx.shared.get(NAME)
    if isinstance(existing, TransferHandler):
        existing.add(rule)
        return None
    handler = TransferHandler([rule], ctx.shared, ctx.process)
    ctx.shared[NAME] = handler
    return handler
