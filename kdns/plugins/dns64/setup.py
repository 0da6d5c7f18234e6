"""dns64: parse ``dns64 [PREFIX] { prefix PREFIX; translate_all; allow_ipv4 }`` (CoreDNS's
syntax and prefix checks)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from kdns.config.model import Directive, Token, error
from kdns.plugins.dns64.config import Dns64Config
from kdns.plugins.dns64.handler import Dns64Handler
from kdns.plugins.metrics import process_counter
from kdns.plugins.setup_context import SetupContext

NAME = "dns64"


def _prefix(tok: Token) -> ipaddress.IPv6Network:
    try:
        net = ipaddress.ip_network(tok.text, strict=False)
    except ValueError:
        raise error(tok, NAME, f"invalid prefix {tok.text!r}: not an IPv6 CIDR") from None
    if not isinstance(net, ipaddress.IPv6Network):
        raise error(tok, NAME, f"invalid prefix {tok.text!r}: not an IPv6 CIDR")
    # RFC 6052 §2.2: 32, 40, 48, 56, 64 or 96 bits.
    if net.prefixlen % 8 or not 32 <= net.prefixlen <= 96:
        raise error(tok, NAME, f"invalid prefix length {tok.text!r}: one of /32, /40, /48, "
                               "/56, /64, /96")
    return net


def parse(d: Directive) -> Dns64Config:
    cfg = Dns64Config()
    if len(d.args) > 1:
        raise error(d.args[1], NAME, "takes one PREFIX at most")
    if d.args:
        cfg = replace(cfg, prefix=_prefix(d.args[0]))
    for opt in d.block or ():
        key = opt.name.text
        if key == "prefix":
            if len(opt.args) != 1:
                raise error(opt, NAME, "prefix needs one PREFIX")
            cfg = replace(cfg, prefix=_prefix(opt.args[0]))
        elif key in ("translate_all", "allow_ipv4"):
            if opt.args:
                raise error(opt.args[0], NAME, f"{key} takes no argument")
            if key == "translate_all":
                cfg = replace(cfg, translate_all=True)
            else:
                cfg = replace(cfg, allow_ipv4=True)
        else:
            raise error(opt, NAME, f"unknown property '{key}'")
    return cfg


def setup(d: Directive, ctx: SetupContext) -> Dns64Handler:
    return Dns64Handler(parse(d), process_counter(ctx, "dns64.requests_translated"))
