"""template: answer queries from Go-style templates, as CoreDNS's *template* plugin.

A block's ``template`` directives form one handler whose templates run in Corefile order. For
a query under one of the handler's zones, each template in turn: outside its own zones or
class/type, the next template; its class, type and zone match but no regex matches, the next
template when ``fallthrough`` covers the name, else SERVFAIL (README: "when the template's ZONE
matches a query but no regex match then a SERVFAIL response is returned"); a regex matches,
the reply is rendered (AA set, the template's rcode). A template with ``rcode SERVFAIL`` gives
the server's SERVFAIL. A render or RR-parse failure is SERVFAIL and counted, as CoreDNS counts
``coredns_template_template_failures_total`` / ``coredns_template_rr_failures_total``; the
reason goes to ``req.meta["error"]`` for the *errors* plugin to log.

A reply built only from the question (``.Name``, ``.Zone``, ``.Match``, ``.Group``, ``.Class``,
``.Type``) may be stored by the fast path; one that reads ``.Remote``, ``.Meta``, ``.Message``
or ``.Question`` (the client, its metadata, its message ID and spelling) is never stored.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from dnslib import CLASS, EDNS0, QTYPE, RCODE, RR, DNSHeader, DNSRecord, EDNSOption
from prometheus_client.core import CounterMetricFamily

from kdns.config.zones import in_zone, longest_zone
from kdns.dns import wire
from kdns.plugins.answering import chase
from kdns.plugins.base import GENERATION, Next, Request, Response
from kdns.plugins.gotemplate import Template, TemplateExecError
from kdns.plugins.metrics import VIEW, server_label
from kdns.plugins.setup_context import SetupContext

ANY = 255
CLIENT_FIELDS = frozenset({"Remote", "Meta", "Message", "Question"})
"""Fields whose value is not a function of the question alone (see the module docstring)."""


@dataclass(frozen=True, slots=True)
class RRTemplate:
    section: str
    """``answer``, ``additional`` or ``authority`` (the ``section`` metric label)."""
    template: Template


@dataclass(frozen=True, slots=True)
class TemplateRule:
    """One ``template CLASS TYPE [ZONE...] { ... }`` directive."""

    qclass: int
    qtype: int
    zones: tuple[str, ...]
    """Longest first."""
    regex: tuple[re.Pattern[str], ...]
    records: tuple[RRTemplate, ...]
    rcode: int = RCODE.NOERROR
    fallthrough: tuple[str, ...] | None = None
    """None: no ``fallthrough``; ``()``: every name; else only names under these zones."""
    upstream: bool = False
    ede: tuple[int, str] | None = None
    client_dependent: bool = False

    def falls_through(self, name: str) -> bool:
        if self.fallthrough is None:
            return False
        return not self.fallthrough or any(in_zone(name, z) for z in self.fallthrough)


@dataclass(slots=True)
class TemplateConfig:
    rules: list[TemplateRule] = field(default_factory=list)


class Question:
    """``.Question``: prints as miekg/dns does (``;name.\tIN\t A``)."""

    __slots__ = ("template_fields",)

    def __init__(self, req: Request) -> None:
        self.template_fields: dict[str, object] = {"Name": req.qname, "Qtype": req.qtype,
                                                   "Qclass": req.qclass}

    def __str__(self) -> str:
        f = self.template_fields
        return f";{f['Name']}\t{_name(f['Qclass'], CLASS)}\t {_name(f['Qtype'], QTYPE)}"


class Message:
    """``.Message``: prints as the whole query (dig style); a few header fields by name."""

    __slots__ = ("msg", "template_fields")

    def __init__(self, req: Request, question: Question) -> None:
        h = req.msg.header
        self.msg = req.msg
        self.template_fields: dict[str, object] = {
            "Id": h.id, "Opcode": h.opcode, "RecursionDesired": bool(h.rd),
            "CheckingDisabled": bool(h.cd), "AuthenticatedData": bool(h.ad),
            "Question": [question],
        }

    def __str__(self) -> str:
        return str(self.msg)


def _name(code: object, table: Any) -> str:
    try:
        return str(table[code])
    except Exception:
        return f"TYPE{code}" if table is QTYPE else f"CLASS{code}"


def metadata_func(req: Request) -> Callable[[str], str]:
    """``.Meta "key"``: the value a metadata provider published for this request, or ""."""
    def meta(key: object) -> str:
        md = req.meta.get("metadata")  # a kdns.plugins.base.Metadata, when the block has one
        fn = md.get(key) if md is not None and isinstance(key, str) else None
        return str(fn()) if callable(fn) else ""
    return meta


def _fix_parens(text: str) -> str:
    """miekg/dns accepts ``(1 60 60 60 60)`` without spaces around the parentheses; dnslib's
    zone tokenizer needs them apart (quoted text is left alone)."""
    out: list[str] = []
    quoted = escaped = False
    for c in text:
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif not quoted and c in "()":
            c = " "
        out.append(c)
    return "".join(out)


def parse_rr(text: str) -> RR:
    """One RFC 1035 presentation-format record, as miekg/dns's ``NewRR`` reads it (names
    relative to the root, a default TTL of 3600). ValueError when it is not exactly one RR."""
    try:
        rrs = RR.fromZone(_fix_parens(text), ttl=3600)
    except Exception as err:
        raise ValueError(f"dns: {err or type(err).__name__}") from None
    if len(rrs) != 1:
        raise ValueError(f"dns: expected one resource record, got {len(rrs)}")
    return rrs[0]


class TemplateHandler:
    name = "template"

    def __init__(self, cfg: TemplateConfig) -> None:
        self.cfg = cfg
        self.zones: tuple[str, ...] = ()
        self.matches: dict[tuple[str, str, str], int] = {}
        self.template_failures: dict[tuple[str, str, str, str, str], int] = {}
        self.rr_failures: dict[tuple[str, str, str, str, str], int] = {}

    def add(self, rule: TemplateRule) -> None:
        self.cfg.rules.append(rule)
        zones = set(self.zones) | set(rule.zones)
        self.zones = tuple(sorted(zones, key=len, reverse=True))

    def serve(self, req: Request, nxt: Next) -> Response:
        name = req.qname_lower
        if longest_zone(name, self.zones) is None:
            return nxt(req)
        for rule in self.cfg.rules:
            zone = longest_zone(name, rule.zones)
            if zone is None:
                continue
            if ANY not in (rule.qclass, req.qclass) and req.qclass != rule.qclass:
                continue
            if ANY not in (rule.qtype, req.qtype) and req.qtype != rule.qtype:
                continue
            m = next((m for r in rule.regex if (m := r.search(name)) is not None), None)
            if m is None:
                if rule.falls_through(name):
                    continue
                return self._reply(req, RCODE.SERVFAIL, fast=False)
            return self._answer(req, rule, zone, m, nxt)
        return nxt(req)

    def _answer(self, req: Request, rule: TemplateRule, zone: str, m: re.Match[str],
                nxt: Next) -> Response:
        klass = _name(req.qclass if req.qclass != ANY else rule.qclass, CLASS)
        qtype = _name(req.qtype if req.qtype != ANY else rule.qtype, QTYPE)
        key = (zone, klass, qtype)
        self.matches[key] = self.matches.get(key, 0) + 1
        if rule.rcode == RCODE.SERVFAIL:
            return self._reply(req, RCODE.SERVFAIL, fast=False)
        groups = {str(i): g or "" for i, g in enumerate((m.group(0), *m.groups()))}
        groups.update({k: v or "" for k, v in m.groupdict().items()})
        question = Question(req)
        data: dict[str, object] = {
            "Zone": zone, "Name": req.qname_lower, "Regex": m.re.pattern,
            "Match": [groups[str(i)] for i in range(len(m.groups()) + 1)], "Group": groups,
            "Class": klass, "Type": qtype, "Question": question,
            "Message": Message(req, question), "Remote": req.client[0],
            "Meta": metadata_func(req),
        }
        reply = _skeleton(req, rule.rcode)
        for rt in rule.records:
            fkey = (zone, klass, qtype, rt.section, rt.template.source)
            try:
                text = rt.template.execute(data)
            except TemplateExecError as err:
                self.template_failures[fkey] = self.template_failures.get(fkey, 0) + 1
                req.meta["error"] = f"template: {rt.section} {rt.template.source!r}: {err}"
                return self._reply(req, RCODE.SERVFAIL, fast=False)
            try:
                rr = parse_rr(text)
            except ValueError as err:
                self.rr_failures[fkey] = self.rr_failures.get(fkey, 0) + 1
                req.meta["error"] = (f"template: {rt.section} {rt.template.source!r} rendered "
                                     f"{text!r}: {err}")
                return self._reply(req, RCODE.SERVFAIL, fast=False)
            if rt.section == "answer":
                reply.add_answer(rr)
                if (rule.upstream and rr.rtype == QTYPE.CNAME
                        and req.qtype in (QTYPE.A, QTYPE.AAAA)):
                    chase(req, str(rr.rdata.label), reply, nxt, last_rcode=False)
            elif rt.section == "additional":
                reply.add_ar(rr)
            else:
                reply.add_auth(rr)
        fast = not rule.client_dependent and not rule.upstream
        if rule.ede is not None:
            _add_ede(req, reply, rule.ede)
        return Response(reply, self.name, fast=fast, generation=GENERATION.value)

    def _reply(self, req: Request, rcode: int, *, fast: bool) -> Response:
        return Response(_skeleton(req, rcode), self.name, fast=fast,
                        generation=GENERATION.value)

    def metrics(self, ctx: SetupContext) -> Iterator[Any]:
        server = server_label(ctx)
        fam = CounterMetricFamily("coredns_template_matches",
                                  "Counter of template regex matches.",
                                  labels=["server", "zone", "view", "class", "type"])
        for (zone, klass, qtype), n in sorted(self.matches.copy().items()):
            fam.add_metric([server, zone, VIEW, klass, qtype], n)
        yield fam
        for name, doc, table in (
            ("coredns_template_template_failures", "Counter of go template failures.",
             self.template_failures),
            ("coredns_template_rr_failures", "Counter of mis-templated RRs.", self.rr_failures),
        ):
            f = CounterMetricFamily(name, doc, labels=["server", "zone", "view", "class", "type",
                                                       "section", "template"])
            for (zone, klass, qtype, section, tmpl), n in sorted(table.copy().items()):
                f.add_metric([server, zone, VIEW, klass, qtype, section, tmpl], n)
            yield f


def _skeleton(req: Request, rcode: int) -> DNSRecord:
    h = req.msg.header
    # A SERVFAIL is what CoreDNS's server writes for the plugin (not authoritative); any
    # other reply is the template's own, authoritative one.
    header = DNSHeader(id=h.id, qr=1, opcode=h.opcode, aa=int(rcode != RCODE.SERVFAIL),
                       rd=h.rd, rcode=rcode)
    header.cd = h.cd
    return DNSRecord(header, q=req.msg.questions[0])


def _add_ede(req: Request, reply: DNSRecord, ede: tuple[int, str]) -> None:
    """RFC 8914 Extended DNS Error, for a client that sent EDNS (it has an OPT to carry it)."""
    opt = next((r for r in req.msg.ar if r.rtype == QTYPE.OPT), None)
    if opt is None:
        return
    data = struct.pack("!H", ede[0]) + ede[1].encode()
    reply.add_ar(EDNS0(udp_len=wire.EDNS_ADVERTISED_SIZE, flags="do" if req.do else "",
                       opts=[EDNSOption(15, data)]))
