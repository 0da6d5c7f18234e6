"""template setup: parse ``template CLASS TYPE [ZONE...] { match REGEX...; answer RR;
additional RR; authority RR; rcode CODE; ederror CODE [REASON]; fallthrough [ZONE...];
upstream }`` (CoreDNS's syntax) into rules, with located errors.

The directive repeats within a block: the first builds the handler, later ones add their rule
to it and return ``None`` (the registry's REPEATABLE contract), so templates run in Corefile
order. Regexes are Python's ``re`` (RE2's syntax for the patterns CoreDNS documents, named
groups ``(?P<name>...)`` included); templates are parsed by :mod:`.gotemplate`, and a field the
plugin does not provide is rejected here rather than failing on every query.
"""

from __future__ import annotations

import re

from dnslib import QTYPE, RCODE, DNSError

from kdns.config.model import Directive, Token, error
from kdns.config.zones import zone_args
from kdns.plugins.gotemplate import TemplateSyntaxError, parse
from kdns.plugins.setup_context import SetupContext
from kdns.plugins.template.handler import (
    CLIENT_FIELDS,
    RRTemplate,
    TemplateConfig,
    TemplateHandler,
    TemplateRule,
)

NAME = "template"
CLASSES = {"IN": 1, "CS": 2, "CH": 3, "HS": 4, "NONE": 254, "ANY": 255}
RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5,
          "YXDOMAIN": 6, "YXRRSET": 7, "NXRRSET": 8, "NOTAUTH": 9, "NOTZONE": 10}
"""miekg/dns's StringToRcode for the codes a DNS header can carry (the TSIG/EDNS extended
ones, BADSIG and up, cannot be set by a template in kdns)."""
FIELDS: dict[str, frozenset[str] | None] = {
    "Zone": frozenset(), "Name": frozenset(), "Regex": frozenset(), "Match": frozenset(),
    "Group": None, "Class": frozenset(), "Type": frozenset(), "Remote": frozenset(),
    "Meta": frozenset(), "Question": frozenset({"Name", "Qtype", "Qclass"}),
    "Message": frozenset({"Id", "Opcode", "RecursionDesired", "CheckingDisabled",
                          "AuthenticatedData", "Question"}),
}
"""Top-level fields and the sub-fields each offers (None: any key, a map)."""
SECTIONS = ("answer", "additional", "authority")


def _qtype(tok: Token) -> int:
    text = tok.text.upper()
    if text == "ANY":
        return 255
    if text.startswith("TYPE") and text[4:].isdigit():
        return int(text[4:])
    try:
        return int(getattr(QTYPE, text))
    except (AttributeError, DNSError):
        raise error(tok, NAME, f"invalid RR class {tok.text}") from None


def _template(tok: Token, section: str) -> tuple[RRTemplate, bool]:
    try:
        tmpl = parse(tok.text)
    except TemplateSyntaxError as err:
        raise error(tok, NAME, f"could not compile template: {tok.text}, {err}") from None
    client = False
    for path in tmpl.fields():
        if not path:
            continue  # "." itself: the data, printed as a map
        top, rest = path[0], path[1:]
        if top not in FIELDS:
            raise error(tok, NAME, f"could not compile template: {tok.text}, can't evaluate "
                                   f"field {top} (fields: {', '.join(sorted(FIELDS))})")
        allowed = FIELDS[top]
        if rest and (len(rest) > 1 or (allowed is not None and rest[0] not in allowed)):
            raise error(tok, NAME, f"could not compile template: {tok.text}, can't evaluate "
                                   f"field {'.'.join(rest)} in .{top}")
        client = client or top in CLIENT_FIELDS
    return RRTemplate(section, tmpl), client


def _rule(d: Directive, ctx: SetupContext) -> TemplateRule:
    if len(d.args) < 2:
        raise error(d, NAME, "wrong argument count: want CLASS TYPE [ZONE...]")
    klass = CLASSES.get(d.args[0].text.upper())
    if klass is None:
        raise error(d.args[0], NAME, f"invalid query class {d.args[0].text}")
    qtype = _qtype(d.args[1])
    zone_toks = d.args[2:]
    zones = zone_args(zone_toks, NAME) if zone_toks else list(ctx.zones)
    regex: list[re.Pattern[str]] = []
    records: list[RRTemplate] = []
    client = False
    rcode = RCODE.NOERROR
    fallthrough: tuple[str, ...] | None = None
    upstream = False
    ede: tuple[int, str] | None = None
    for opt in d.block or ():
        name, args = opt.name.text, opt.args
        if opt.block is not None:
            raise error(opt, NAME, f"unexpected block after '{name}'")
        if name == "match":
            if not args:
                raise error(opt, NAME, "match: wrong argument count: want REGEX...")
            for tok in args:
                try:
                    regex.append(re.compile(tok.text))
                except re.error as err:
                    raise error(tok, NAME, f"could not parse regex: {tok.text}, {err}") from None
        elif name in SECTIONS:
            if not args:
                raise error(opt, NAME, f"{name}: wrong argument count: want RR...")
            for tok in args:
                rt, uses_client = _template(tok, name)
                records.append(rt)
                client = client or uses_client
        elif name == "rcode":
            if len(args) != 1:
                raise error(opt, NAME, "rcode: wrong argument count: want CODE")
            code = RCODES.get(args[0].text.upper())
            if code is None:
                raise error(args[0], NAME, f"unknown rcode {args[0].text}")
            rcode = code
        elif name == "ederror":
            if not 1 <= len(args) <= 2:
                raise error(opt, NAME, "ederror: wrong argument count: want CODE [REASON]")
            text = args[0].text
            if not text.isdigit() or int(text) > 24:
                raise error(args[0], NAME, f"ederror: invalid extended error code {text} "
                                           "(0-24, RFC 8914)")
            ede = (int(text), args[1].text if len(args) > 1 else "")
        elif name == "fallthrough":
            fallthrough = tuple(zone_args(args, NAME))
        elif name == "upstream":
            upstream = True  # CoreDNS ignores its arguments (deprecated); so does kdns
        else:
            raise error(opt.name, NAME, f"unknown property '{name}'")
    # Answer records in their section order as CoreDNS writes them: answer, additional,
    # authority, each in Corefile order.
    records.sort(key=lambda r: SECTIONS.index(r.section))
    return TemplateRule(
        qclass=klass, qtype=qtype, zones=tuple(sorted(zones, key=len, reverse=True)),
        regex=tuple(regex) or (re.compile(".*"),), records=tuple(records), rcode=rcode,
        fallthrough=fallthrough, upstream=upstream, ede=ede, client_dependent=client,
    )


def setup(d: Directive, ctx: SetupContext) -> TemplateHandler | None:
    rule = _rule(d, ctx)
    existing = ctx.shared.get(NAME)
    if isinstance(existing, TemplateHandler):
        existing.add(rule)
        return None
    handler = TemplateHandler(TemplateConfig())
    handler.add(rule)
    ctx.shared[NAME] = handler
    return handler


