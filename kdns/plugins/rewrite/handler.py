"""rewrite: what the rules do at query time, and the handler that applies them.

This module owns the rule objects (built by ``setup``), the response rules they hand back, and
the two rewrites of a query's life:

* on the way in, the rules run in order over the question (name, type, class); ``stop`` ends
  the walk after a rule that fired, ``continue`` goes on with the rewritten question. The rest
  of the chain gets a *new* Request with a new question: the client's message is never touched;
* on the way back, the collected response rules run in reverse order over every record of the
  reply (CoreDNS's ResponseReverter), the question becomes the client's own again (as sent, so
  0x20 clients see their spelling), and records named after the question get that spelling too.

``cname`` rules retarget CNAME records of the reply and resolve the new target through the rest
of the chain (CoreDNS resolves it through the whole server; kdns from after *rewrite*, which is
where every answering plugin sits); ``rcode`` rules change the reply's RCODE on the way back;
``edns0`` rules add or change an EDNS0 option (local, NSID, client subnet) of the query the rest
of the chain (``forward`` above all) sends on. An ``edns0 subnet`` or ``{client_ip}`` rule makes
the query depend on the client, and the upstream's reply with it; those replies are never stored
in the fast path by ``forward``.

The result depends only on the question, so a fast reply stays fast with the inner generation.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from dnslib import (
    CNAME,
    DNAME,
    MX,
    NAPTR,
    NS,
    PTR,
    QTYPE,
    RR,
    SOA,
    SRV,
    DNSHeader,
    DNSLabel,
    DNSQuestion,
    DNSRecord,
    EDNSOption,
)

from kdns.plugins.base import Next, Request, Response

STOP = "stop"
CONTINUE = "continue"
KINDS = ("exact", "prefix", "suffix", "substring", "regex")
MAX_TTL = 2**31 - 1
"""RFC 2181 §8: a TTL is an unsigned 31-bit number."""

_GROUP = re.compile(r"\{(\d+)\}")


class RewriteError(Exception):
    """A rule produced something that is not a domain name (the query gets SERVFAIL)."""


@dataclass(slots=True)
class State:
    """The question as the rules see it while they run: name lower case, with the trailing dot."""

    name: str
    qtype: int
    qclass: int
    req: Request | None = None
    """The client's request, for rules that read where it came from (``edns0``)."""
    options: list[EDNSOption] | None = None
    """The query's EDNS0 options as the ``edns0`` rules leave them; None until one of them
    runs (then the query the chain sees carries an OPT record with exactly these)."""


def expand(template: str, m: re.Match[str]) -> str:
    """``{0}``, ``{1}``... in ``template`` replaced by the match's groups (CoreDNS's syntax)."""
    return _GROUP.sub(lambda g: m.group(int(g[1])) or "", template)


def name_matches(kind: str, source: str, regex: re.Pattern[str] | None, name: str) -> bool:
    if kind == "exact":
        return name == source
    if kind == "prefix":
        return name.startswith(source)
    if kind == "suffix":
        return name.endswith(source)
    if kind == "substring":
        return source in name
    return regex is not None and regex.search(name) is not None


def check_name(name: str) -> DNSLabel:
    """``name`` as a DNSLabel, or RewriteError when it is no legal domain name (RFC 1035 §2.3.4:
    labels of 1 to 63 bytes, 255 bytes in all)."""
    try:
        label = DNSLabel(name)
    except (UnicodeError, ValueError) as err:
        raise RewriteError(f"invalid name after rewrite: {name!r}") from err
    if any(not 0 < len(part) <= 63 for part in label.label) or \
            sum(len(part) + 1 for part in label.label) + 1 > 255:
        raise RewriteError(f"invalid name after rewrite: {name!r}")
    return label


# -- response rules --------------------------------------------------------------------------
# A string rewriter maps a (lower-case) name to its replacement, or None when it does not apply.

StringRewriter = Callable[[str], "str | None"]


@dataclass(frozen=True, slots=True)
class RegexRewriter:
    """``answer name|value FROM TO``: a name matching FROM becomes TO with its groups filled in."""

    regex: re.Pattern[str]
    template: str

    def __call__(self, name: str) -> str | None:
        m = self.regex.search(name)
        return expand(self.template, m) if m is not None else None


@dataclass(frozen=True, slots=True)
class RemapRewriter:
    """``answer auto``: the rewritten name, or a name under it, maps back to the one before."""

    new: str
    old: str

    def __call__(self, name: str) -> str | None:
        if name == self.new:
            return self.old
        if name.endswith("." + self.new):
            return name[: len(name) - len(self.new)] + self.old
        return None


@dataclass(frozen=True, slots=True)
class SuffixRewriter:
    """``answer auto`` of a suffix rule: the replaced suffix turns back into the matched one."""

    suffix: str
    replacement: str

    def __call__(self, name: str) -> str | None:
        if name.endswith(self.suffix):
            return name[: len(name) - len(self.suffix)] + self.replacement
        return None


class ResponseRule(Protocol):
    def apply(self, rr: RR) -> RR:
        """The record rewritten (a new RR), or ``rr`` itself when the rule leaves it alone."""
        ...


def _with(rr: RR, *, rname: DNSLabel | None = None, ttl: int | None = None,
          rdata: object | None = None) -> RR:
    # A new record: the original may be shared with a view or cache that hands it out again.
    return RR(rname if rname is not None else rr.rname, rr.rtype, rr.rclass,
              ttl if ttl is not None else rr.ttl, rdata if rdata is not None else rr.rdata)


@dataclass(frozen=True, slots=True)
class NameAnswer:
    rewriter: StringRewriter

    def apply(self, rr: RR) -> RR:
        old = str(rr.rname).lower()
        new = self.rewriter(old)
        if new is None or new == old:
            return rr
        return _with(rr, rname=check_name(new))


_VALUE_ATTR: dict[type, str] = {
    CNAME: "label", DNAME: "label", PTR: "label", NS: "label", MX: "label",
    SRV: "target", SOA: "mname", NAPTR: "replacement",
}
"""The name-valued field of each record type whose value ``answer value`` rewrites (CoreDNS:
CNAME, DNAME, SOA, SRV, MX, NAPTR, NS, PTR)."""


@dataclass(frozen=True, slots=True)
class ValueAnswer:
    rewriter: StringRewriter

    def apply(self, rr: RR) -> RR:
        attr = _VALUE_ATTR.get(type(rr.rdata))
        if attr is None:
            return rr
        old = str(getattr(rr.rdata, attr)).lower()
        new = self.rewriter(old)
        if new is None or new == old:
            return rr
        rdata = copy.copy(rr.rdata)
        setattr(rdata, attr, check_name(new))
        return _with(rr, rdata=rdata)


@dataclass(frozen=True, slots=True)
class TTLAnswer:
    """``ttl``: clamp every record's TTL into [low, high] (a single value sets it)."""

    low: int
    high: int

    def apply(self, rr: RR) -> RR:
        if self.low <= rr.ttl <= self.high:
            return rr
        return _with(rr, ttl=min(max(rr.ttl, self.low), self.high))


@dataclass(frozen=True, slots=True)
class RcodeAnswer:
    """``rcode``: a reply with RCODE ``old`` gets RCODE ``new`` (records are left alone)."""

    old: int
    new: int

    def apply(self, rr: RR) -> RR:
        return rr


# -- request rules ---------------------------------------------------------------------------


class Rule(Protocol):
    @property
    def mode(self) -> str:
        """``stop`` or ``continue``: what happens after this rule fired."""
        ...

    def rewrite(self, state: State) -> tuple[ResponseRule, ...] | None:
        """Rewrite ``state`` and return the response rules to apply on the way back, or None
        when the rule does not match (and leaves ``state`` alone)."""
        ...


@dataclass(frozen=True, slots=True)
class NameRule:
    """``name [exact|prefix|suffix|substring|regex] FROM TO [answer ...]``."""

    mode: str
    kind: str
    source: str
    """FROM: lower case and fully qualified, or the regular expression as written."""
    target: str
    """TO: lower case and fully qualified; for ``regex`` a template with ``{N}`` groups."""
    regex: re.Pattern[str] | None = None
    auto: bool = False
    """Map the rewritten name back to the one before (always on for ``exact``; ``suffix`` does
    its auto rewrite with static rules built by setup instead)."""
    answers: tuple[ResponseRule, ...] = ()

    def rewrite(self, state: State) -> tuple[ResponseRule, ...] | None:
        name = state.name
        new = self.renamed(name)
        if new is None:
            return None
        state.name = new
        if not self.auto:
            return self.answers
        back = RemapRewriter(new, name)
        return (NameAnswer(back), ValueAnswer(back), *self.answers)

    def renamed(self, name: str) -> str | None:
        kind, source = self.kind, self.source
        if kind == "exact":
            return self.target if name == source else None
        if kind == "prefix":
            return self.target + name[len(source):] if name.startswith(source) else None
        if kind == "suffix":
            return name[: len(name) - len(source)] + self.target if name.endswith(source) else None
        if kind == "substring":
            return name.replace(source, self.target) if source in name else None
        m = self.regex.search(name) if self.regex is not None else None
        return expand(self.target, m) if m is not None else None


@dataclass(frozen=True, slots=True)
class TypeRule:
    """``type FROM TO``: the question's type."""

    mode: str
    source: int
    target: int

    def rewrite(self, state: State) -> tuple[ResponseRule, ...] | None:
        if state.qtype != self.source:
            return None
        state.qtype = self.target
        return ()


@dataclass(frozen=True, slots=True)
class ClassRule:
    """``class FROM TO``: the question's class."""

    mode: str
    source: int
    target: int

    def rewrite(self, state: State) -> tuple[ResponseRule, ...] | None:
        if state.qclass != self.source:
            return None
        state.qclass = self.target
        return ()


@dataclass(frozen=True, slots=True)
class TTLRule:
    """``ttl [exact|prefix|suffix|substring|regex] NAME TTL|MIN-MAX``: matches the question
    name and rewrites the TTL of every record in the reply."""

    mode: str
    kind: str
    source: str
    regex: re.Pattern[str] | None
    answer: TTLAnswer

    def rewrite(self, state: State) -> tuple[ResponseRule, ...] | None:
        if not name_matches(self.kind, self.source, self.regex, state.name):
            return None
        return (self.answer,)


@dataclass(frozen=True, slots=True)
class RcodeRule:
    """``rcode [exact|prefix|suffix|substring|regex] NAME OLD NEW``: for a matching question
    name, a reply with RCODE OLD goes back with RCODE NEW."""

    mode: str
    kind: str
    source: str
    regex: re.Pattern[str] | None
    answer: RcodeAnswer

    def rewrite(self, state: State) -> tuple[ResponseRule, ...] | None:
        if not name_matches(self.kind, self.source, self.regex, state.name):
            return None
        return (self.answer,)


EDNS0_NSID = 3
EDNS0_SUBNET = 8
SET, REPLACE, APPEND = "set", "replace", "append"
VARIABLES = ("{qname}", "{qtype}", "{client_ip}", "{client_port}", "{protocol}")


def _variable(name: str, req: Request) -> bytes:
    """The wire form CoreDNS gives each ``edns0 local`` variable."""
    if name == "{qname}":
        return req.qname.encode()
    if name == "{qtype}":
        return struct.pack("!H", req.qtype)
    if name == "{client_ip}":
        return ipaddress.ip_address(req.client[0].split("%", 1)[0]).packed
    if name == "{client_port}":
        return struct.pack("!H", req.client[1])
    return req.proto.encode()  # {protocol}


def _subnet(req: Request, v4: int, v6: int) -> bytes:
    """RFC 7871 §6 ECS option data for the client's address cut to the configured prefix."""
    ip = ipaddress.ip_address(req.client[0].split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    bits, family = (v4, 1) if ip.version == 4 else (v6, 2)
    net = ipaddress.ip_network(f"{ip}/{bits}", strict=False)
    # the address is sent in as few octets as the prefix needs (§6: SOURCE PREFIX-LENGTH)
    return struct.pack("!HBB", family, bits, 0) + net.network_address.packed[: (bits + 7) // 8]


@dataclass(frozen=True, slots=True)
class Edns0Rule:
    """``edns0 local|nsid|subnet set|replace|append ...``: change the query's EDNS0 options.

    As CoreDNS: an option of the rule's code already there is changed by ``set`` and ``replace``
    (``append`` leaves it alone and the rule does not fire); a missing one is added by ``set``
    and ``append``. A query without EDNS gets an OPT record (4096 bytes, DO clear).
    """

    mode: str
    kind: str
    """``local``, ``nsid`` or ``subnet``."""
    action: str
    code: int
    data: bytes = b""
    variable: str = ""
    v4_bits: int = 0
    v6_bits: int = 0

    def rewrite(self, state: State) -> tuple[ResponseRule, ...] | None:
        req = state.req
        if req is None:
            return None
        if state.options is None:
            opt = next((rr for rr in req.msg.ar if rr.rtype == QTYPE.OPT), None)
            state.options = list(opt.rdata) if opt is not None else []
        if self.kind == "nsid":
            data = b""  # a query's NSID option is always empty (RFC 5001 §2.1)
        elif self.kind == "subnet":
            data = _subnet(req, self.v4_bits, self.v6_bits)
        elif self.variable:
            data = _variable(self.variable, req)
        else:
            data = self.data
        options = state.options
        for i, o in enumerate(options):
            if o.code == self.code:
                if self.action == APPEND:
                    return None
                options[i] = EDNSOption(self.code, data)
                return ()
        if self.action == REPLACE:
            return None
        options.append(EDNSOption(self.code, data))
        return ()


@dataclass(frozen=True, slots=True)
class CnameRule:
    """``cname MATCH FROM TO``: a CNAME in the reply whose target matches FROM is pointed at
    the target TO makes of it, and the records after it are replaced by TO's own (looked up
    with the question's type). As in CoreDNS the rule fires for every query."""

    mode: str
    kind: str
    source: str
    target: str
    regex: re.Pattern[str] | None = None

    def rewrite(self, state: State) -> tuple[ResponseRule, ...] | None:
        return ()

    def retarget(self, name: str) -> str | None:
        """The new target for CNAME target ``name`` (lower case), or None if FROM misses."""
        kind, source = self.kind, self.source
        if kind == "exact":
            return self.target if name == source else None
        if kind == "prefix":
            return self.target + name[len(source):] if name.startswith(source) else None
        if kind == "suffix":
            return name[: len(name) - len(source)] + self.target if name.endswith(source) else None
        if kind == "substring":
            return name.replace(source, self.target) if source in name else None
        m = self.regex.search(name) if self.regex is not None else None
        return expand(self.target, m) if m is not None else None


@dataclass(frozen=True, slots=True)
class RewriteConfig:
    rules: tuple[Rule, ...] = ()


# -- the handler -----------------------------------------------------------------------------


class RewriteHandler:
    name = "rewrite"

    def __init__(self, cfg: RewriteConfig) -> None:
        self.cfg = cfg

    def add(self, rules: tuple[Rule, ...]) -> None:
        """Append the rules of another ``rewrite`` directive of the same server block (CoreDNS
        allows the directive any number of times; its rules run in Corefile order)."""
        self.cfg = RewriteConfig(self.cfg.rules + rules)

    def serve(self, req: Request, nxt: Next) -> Response:
        state = State(req.qname_lower, req.qtype, req.qclass, req)
        answers: list[ResponseRule] = []
        cnames: list[CnameRule] = []
        fired = False
        for rule in self.cfg.rules:
            got = rule.rewrite(state)
            if got is None:
                continue
            fired = True
            answers.extend(got)
            if isinstance(rule, CnameRule):
                cnames.append(rule)
            if rule.mode == STOP:
                break
        if not fired:
            return nxt(req)
        renamed = state.name != req.qname_lower
        inner = self._request(req, state, renamed)
        resp = nxt(inner)
        if cnames:
            resp = self._retarget(inner, resp, cnames, nxt)
        back = _Reverter(req, tuple(reversed(answers)), renamed)
        variants = [back.revert(v) for v in resp.variants] if resp.variants else None
        # replace(): the inner plugin's other terms (the cache's replay deadline) stay
        return dataclasses.replace(resp, msg=back.revert(resp.msg), variants=variants)

    @staticmethod
    def _retarget(req: Request, resp: Response, rules: list[CnameRule], nxt: Next) -> Response:
        """Apply ``cname`` rules to the reply (CoreDNS's cnameTargetRule.RewriteResponse)."""
        msg = resp.msg
        for rr in msg.rr:
            if rr.rtype != QTYPE.CNAME:
                continue
            old = str(rr.rdata.label).lower()
            new = next((n for n in (r.retarget(old) for r in rules) if n is not None), None)
            if new is None or new == old:
                continue
            label = check_name(new)
            sub = Request(
                msg=DNSRecord(DNSHeader(id=req.msg.header.id, rd=1),
                              q=DNSQuestion(label, req.qtype, req.qclass)),
                qname=str(label), qname_lower=str(label).lower(), qtype=req.qtype,
                qclass=req.qclass, client=req.client, proto=req.proto, server=req.server,
                zone=req.zone, max_size=65535, do=req.do)
            got = nxt(sub).msg
            chain = [_with(c, rdata=CNAME(label)) for c in msg.rr if c.rtype == QTYPE.CNAME]
            tail = [a for a in got.rr if str(a.rname).lower() == str(label).lower()]
            h = msg.header
            out = DNSRecord(DNSHeader(id=h.id, bitmap=h.bitmap), questions=list(msg.questions),
                            rr=chain + tail, auth=list(msg.auth), ar=list(msg.ar))
            # the reply now holds data from another lookup: never replay it from the fast path
            return dataclasses.replace(resp, msg=out, fast=False, variants=None)
        return resp

    @staticmethod
    def _request(req: Request, state: State, renamed: bool) -> Request:
        if renamed:
            label = check_name(state.name)
            qname = state.name
        else:
            label = req.msg.questions[0].qname
            qname = req.qname
        h = req.msg.header
        additional = list(req.msg.ar)
        if state.options is not None:
            old = next((rr for rr in additional if rr.rtype == QTYPE.OPT), None)
            additional = [rr for rr in additional if rr.rtype != QTYPE.OPT]
            # CoreDNS adds OPT with a 4096-byte size and DO clear when the query had none
            additional.append(RR(DNSLabel("."), QTYPE.OPT,
                                 old.rclass if old is not None else 4096,
                                 old.ttl if old is not None else 0, list(state.options)))
        msg = DNSRecord(DNSHeader(id=h.id, bitmap=h.bitmap),
                        questions=[DNSQuestion(label, state.qtype, state.qclass)],
                        rr=list(req.msg.rr), auth=list(req.msg.auth), ar=additional)
        # meta stays the same dict: plugins before rewrite (log) keep reading what later ones set.
        return dataclasses.replace(req, msg=msg, qname=qname, qname_lower=qname.lower(),
                                   qtype=state.qtype, qclass=state.qclass)


class _Reverter:
    """Turns a reply to the rewritten question into the reply to the client's question."""

    __slots__ = ("echo", "question", "rules")

    def __init__(self, req: Request, rules: tuple[ResponseRule, ...], renamed: bool) -> None:
        self.question: DNSQuestion = req.msg.questions[0]
        self.rules = rules
        self.echo = renamed

    def revert(self, msg: DNSRecord) -> DNSRecord:
        h = msg.header
        header = DNSHeader(id=h.id, bitmap=h.bitmap)
        for rule in self.rules:  # already in reverse order, as CoreDNS's reverter runs them
            if isinstance(rule, RcodeAnswer) and header.rcode == rule.old:
                header.rcode = rule.new
        return DNSRecord(header,
                         questions=[self.question, *msg.questions[1:]],
                         rr=[self._fix(rr) for rr in msg.rr],
                         auth=[self._fix(rr) for rr in msg.auth],
                         ar=[self._fix(rr) for rr in msg.ar])

    def _fix(self, rr: RR) -> RR:
        if rr.rtype == QTYPE.OPT:  # its TTL field holds EDNS flags, not a TTL
            return rr
        for rule in self.rules:
            rr = rule.apply(rr)
        if self.echo:
            qname = self.question.qname
            # DNSLabel compares case-insensitively: same name, maybe another spelling. Echoing
            # the client's lets the encoder point this owner at the question, so a fast-path
            # replay for another spelling echoes that one too.
            if rr.rname == qname and rr.rname.label != qname.label:
                rr = _with(rr, rname=qname)
        return rr
