"""acl setup: parse ``acl [ZONES...] { ACTION [type QTYPE...] [net SOURCE...] [file FILE...] }``.

This module owns the directive's syntax (CoreDNS's, plus ``drop``) and its located errors. The
directive may appear several times in a server block: the first one builds the handler, later
ones append their rule to it and return ``None`` (the registry's REPEATABLE contract), so rules
run in Corefile order.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from dnslib import QTYPE

from kdns.config.model import Directive, Token, error
from kdns.config.zones import zone_arg
from kdns.plugins.acl.handler import ACTIONS, AclHandler, Network, Policy, Rule
from kdns.plugins.setup_context import SetupContext

NAME = "acl"
SECTIONS = ("type", "net", "file")


def parse_net(text: str) -> Network | None:
    """An address or CIDR (v4 or v6) as a network; ``*`` (every source) as None.

    Raises ValueError. Host bits under the prefix are masked, as Go's ``net.ParseCIDR`` does.
    """
    if text == "*":
        return None
    if "/" in text:
        _, _, prefix = text.partition("/")
        if not (prefix.isascii() and prefix.isdigit()):
            raise ValueError(f"illegal CIDR notation '{text}'")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"illegal CIDR notation '{text}'") from None


def _nets_from_file(tok: Token, ctx: SetupContext) -> list[str]:
    """One address or CIDR per line; ``#`` starts a comment (CoreDNS's ``file`` section)."""
    path = Path(tok.text)
    if not path.is_absolute():
        path = ctx.config_dir / path
    try:
        text = path.read_text()
    except (OSError, UnicodeError) as err:
        raise error(tok, NAME, f"unable to load networks from local file: {err}") from None
    out: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if entry:
            try:
                parse_net(entry)
            except ValueError as err:
                raise error(tok, NAME, f"{path}:{lineno}: {err}") from None
            out.append(entry)
    return out


def _policy(line: Directive, ctx: SetupContext) -> Policy:
    action = line.name.text.lower()
    if action not in ACTIONS:
        raise error(line.name, NAME, f"unexpected token '{line.name.text}'; expect 'allow', "
                                     "'block', 'filter' or 'drop'")
    if line.block is not None:
        raise error(line, NAME, f"unexpected block after '{line.name.text}'")
    qtypes: set[int] = set()
    any_type = False
    sources: list[tuple[Token, str]] = []
    args = list(line.args)
    i = 0
    while i < len(args):
        section = args[i]
        kind = section.text.lower()
        if kind not in SECTIONS:
            raise error(section, NAME, f"unexpected token '{section.text}'; expect 'type', "
                                       "'net' or 'file'")
        j = i + 1
        while j < len(args) and args[j].text.lower() not in SECTIONS:
            j += 1
        values = args[i + 1 : j]
        if not values:
            raise error(section, NAME, f"no token specified in '{kind}' section")
        for tok in values:
            if kind == "type":
                if tok.text == "*":
                    any_type = True
                    continue
                qtype = QTYPE.reverse.get(tok.text.upper())
                if qtype is None:
                    raise error(tok, NAME, f"unexpected token '{tok.text}'; expect legal QTYPE")
                qtypes.add(int(qtype))
            elif kind == "net":
                sources.append((tok, tok.text))
            else:
                sources.extend((tok, entry) for entry in _nets_from_file(tok, ctx))
        i = j
    nets: list[Network] = []
    any_source = not sources
    for tok, text in sources:
        try:
            net = parse_net(text)
        except ValueError as err:
            raise error(tok, NAME, str(err)) from None
        if net is None:
            any_source = True
        else:
            nets.append(net)
    return Policy(action, None if any_type or not qtypes else frozenset(qtypes),
                  None if any_source else tuple(nets))


def setup(d: Directive, ctx: SetupContext) -> AclHandler | None:
    zones = tuple(dict.fromkeys(z for tok in d.args for z in _zone_arg(tok))) if d.args \
        else (ctx.zones or (".",))
    rule = Rule(zones, tuple(_policy(line, ctx) for line in d.block or ()))
    existing = ctx.shared.get(NAME)
    if isinstance(existing, AclHandler):
        existing.rules.append(rule)
        return None
    handler = AclHandler([rule])
    ctx.shared[NAME] = handler
    return handler


def _zone_arg(tok: Token) -> list[str]:
    return zone_arg(tok, NAME)
