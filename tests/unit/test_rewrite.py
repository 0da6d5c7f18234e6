"""rewrite: every match type, groups, answer rewrites, type/class/ttl, stop/continue, case echo,
and setup (valid forms, repeated directives, errors that name file:line:col)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from dnslib import (
    CNAME,
    EDNS0,
    MX,
    QTYPE,
    RD,
    RR,
    SRV,
    A,
    DNSHeader,
    DNSLabel,
    DNSQuestion,
    DNSRecord,
)

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.plugins.base import Request, Response
from kdns.plugins.rewrite.handler import (
    ClassRule,
    NameRule,
    RewriteError,
    RewriteHandler,
    TTLRule,
    TypeRule,
)
from kdns.plugins.rewrite.setup import parse_rule, setup
from kdns.plugins.setup_context import SetupContext

README = Path(__file__).resolve().parents[2] / "kdns" / "plugins" / "rewrite" / "README.md"


# ---------------------------------------------------------------------------------------------
# helpers


def request(qname: str, qtype: int = QTYPE.A, qclass: int = 1) -> Request:
    msg = DNSRecord(DNSHeader(id=4321, rd=1), q=DNSQuestion(qname, qtype, qclass))
    name = qname if qname.endswith(".") else qname + "."
    return Request(msg, name, name.lower(), qtype, qclass, ("127.0.0.1", 5353), "udp",
                   "dns://:53", ".", 512)


Records = Callable[[Request], list[RR]]


def a_for_question(req: Request) -> list[RR]:
    return [RR(req.msg.questions[0].qname, QTYPE.A, rdata=A("10.0.0.1"), ttl=300)]


class Backend:
    """The next plugin: records what it was asked and answers with crafted records."""

    def __init__(self, records: Records = a_for_question, *, fast: bool = True,
                 generation: int = 7) -> None:
        self.records = records
        self.fast = fast
        self.generation = generation
        self.seen: list[Request] = []

    def __call__(self, req: Request) -> Response:
        self.seen.append(req)
        h = req.msg.header
        reply = DNSRecord(DNSHeader(id=h.id, qr=1, aa=1, rd=h.rd, ra=1), q=req.msg.questions[0])
        reply.rr.extend(self.records(req))
        return Response(reply, "kubernetes", fast=self.fast, generation=self.generation)

    @property
    def asked(self) -> tuple[str, int, int]:
        q = self.seen[-1].msg.questions[0]
        return str(q.qname), int(q.qtype), int(q.qclass)


def rules(*lines: str) -> RewriteHandler:
    """A handler from Corefile lines (``rewrite`` omitted), set up as the server would."""
    body = "".join(f"    rewrite {line}\n" for line in lines)
    return handler_from(".:53 {\n" + body + "}\n")


def handler_from(text: str) -> RewriteHandler:
    block = parse_corefile(text, "Corefile", env={})[0]
    ctx = SetupContext(block.keys, Path("."))
    built = [setup(d, ctx) for d in block.directives if d.name.text == "rewrite"]
    first = built[0]
    assert isinstance(first, RewriteHandler)
    assert all(h is None for h in built[1:])
    return first


def serve(h: RewriteHandler, qname: str, backend: Backend | None = None,
          qtype: int = QTYPE.A, qclass: int = 1) -> tuple[Response, Backend, Request]:
    backend = backend or Backend()
    req = request(qname, qtype, qclass)
    return h.serve(req, backend), backend, req


def names(msg: DNSRecord) -> list[str]:
    return [str(rr.rname) for rr in msg.rr]


# ---------------------------------------------------------------------------------------------
# name rules: the five match types


def test_exact_rewrites_the_question_and_maps_the_answer_back() -> None:
    h = rules("name kubia.example.com kubia.default.svc.cluster.local")
    resp, backend, req = serve(h, "kubia.example.com.")
    assert backend.asked == ("kubia.default.svc.cluster.local.", QTYPE.A, 1)
    assert backend.seen[0].qname_lower == "kubia.default.svc.cluster.local."
    assert str(resp.msg.q.qname) == "kubia.example.com."
    assert names(resp.msg) == ["kubia.example.com."]
    assert resp.fast and resp.generation == 7 and resp.plugin == "kubernetes"
    # the client's message is untouched
    assert str(req.msg.q.qname) == "kubia.example.com." and req.qname == "kubia.example.com."


def test_exact_ignores_other_names_and_passes_the_same_request() -> None:
    h = rules("name kubia.example.com kubia.default.svc.cluster.local")
    backend = Backend()
    req = request("other.example.com.")
    resp = h.serve(req, backend)
    assert backend.seen == [req]  # not even copied
    assert names(resp.msg) == ["other.example.com."]


def test_case_is_ignored_when_matching_and_echoed_in_the_reply() -> None:
    h = rules("name Kubia.Example.COM kubia.default.svc.cluster.local")
    resp, backend, _ = serve(h, "KuBiA.eXample.com.")
    assert backend.asked[0] == "kubia.default.svc.cluster.local."
    assert str(resp.msg.q.qname) == "KuBiA.eXample.com."
    assert names(resp.msg) == ["KuBiA.eXample.com."]
    # Same spelling as the question: the owner is a pointer to it, so a fast-path replay that
    # patches the question bytes echoes the next client's spelling in the answer too.
    wire = resp.msg.pack()
    assert wire[12 + len(b"\x05KuBiA\x07eXample\x03com\x00") + 4:][:2] == b"\xc0\x0c"


def test_prefix_without_answer_option_leaves_the_answer_as_the_backend_wrote_it() -> None:
    h = rules("name prefix foo bar")
    resp, backend, _ = serve(h, "foo.example.com.")
    assert backend.asked[0] == "bar.example.com."
    assert str(resp.msg.q.qname) == "foo.example.com."
    assert names(resp.msg) == ["bar.example.com."]  # CoreDNS: no answer rewrite unless asked


def test_prefix_is_label_aligned_like_coredns() -> None:
    # FROM is made fully qualified ("foo."), so it does not match inside a label.
    h = rules("name prefix foo bar")
    _, backend, _ = serve(h, "food.example.com.")
    assert backend.asked[0] == "food.example.com."


def test_prefix_answer_auto() -> None:
    h = rules("name prefix foo bar answer auto")
    resp, backend, _ = serve(h, "foo.example.com.")
    assert backend.asked[0] == "bar.example.com."
    assert names(resp.msg) == ["foo.example.com."]


def test_suffix_answer_auto_swaps_the_suffix_back_in_names_and_values() -> None:
    def chain(req: Request) -> list[RR]:
        return [RR("www.example.org.", QTYPE.CNAME, rdata=CNAME("web.example.org."), ttl=60),
                RR("web.example.org.", QTYPE.A, rdata=A("10.0.0.2"), ttl=60),
                RR("elsewhere.net.", QTYPE.A, rdata=A("10.0.0.3"), ttl=60)]

    h = rules("name suffix com org answer auto")
    resp, backend, _ = serve(h, "www.example.com.", Backend(chain))
    assert backend.asked[0] == "www.example.org."
    assert names(resp.msg) == ["www.example.com.", "web.example.com.", "elsewhere.net."]
    assert str(resp.msg.rr[0].rdata.label) == "web.example.com."


def test_substring() -> None:
    h = rules("name substring service.us-west-1.example.org service.us-west-1.consul")
    _, backend, _ = serve(h, "ftp.service.us-west-1.example.org.")
    assert backend.asked[0] == "ftp.service.us-west-1.consul."


def test_regex_groups_and_answer_name() -> None:
    h = handler_from(
        ".:53 {\n"
        "    rewrite stop {\n"
        r"        name regex (.*)-(us-west-1)\.example\.org {1}.service.{2}.consul" "\n"
        r"        answer name (.*)\.service\.(us-west-1)\.consul {1}-{2}.example.org" "\n"
        "    }\n"
        "}\n")
    resp, backend, _ = serve(h, "ftp-us-west-1.example.org.")
    assert backend.asked[0] == "ftp.service.us-west-1.consul."
    assert names(resp.msg) == ["ftp-us-west-1.example.org."]


def test_regex_answer_auto_maps_back_names_under_the_new_name_too() -> None:
    def srv(req: Request) -> list[RR]:
        return [RR("_http._tcp.web.shop.svc.cluster.local.", QTYPE.SRV,
                   rdata=SRV(0, 100, 80, "web-0.web.shop.svc.cluster.local."), ttl=5)]

    h = rules(r"name regex ^_http\._tcp\.(.*)\.example\.com\.$ _http._tcp.{1}.shop.svc.cluster.local "
              "answer auto")
    resp, backend, _ = serve(h, "_http._tcp.web.example.com.", Backend(srv), qtype=QTYPE.SRV)
    assert backend.asked[0] == "_http._tcp.web.shop.svc.cluster.local."
    assert names(resp.msg) == ["_http._tcp.web.example.com."]
    # the target is not under the rewritten name: auto leaves it alone
    assert str(resp.msg.rr[0].rdata.target) == "web-0.web.shop.svc.cluster.local."


def test_answer_value_rewrites_targets_and_keyword_may_be_omitted_after_the_first() -> None:
    def records(req: Request) -> list[RR]:
        return [RR("mail.internal.", QTYPE.MX, rdata=MX("mx1.internal.", 10), ttl=60),
                RR("srv.internal.", QTYPE.SRV, rdata=SRV(1, 2, 25, "mx1.internal."), ttl=60),
                RR("mx1.internal.", QTYPE.A, rdata=A("10.0.0.9"), ttl=60)]

    h = rules(r"name regex (.*)\.example\.com {1}.internal answer name (.*)\.internal\. "
              r"{1}.example.com value (.*)\.internal\. {1}.example.com")
    resp, backend, _ = serve(h, "mail.example.com.", Backend(records), qtype=QTYPE.MX)
    assert backend.asked[0] == "mail.internal."
    assert names(resp.msg) == ["mail.example.com.", "srv.example.com.", "mx1.example.com."]
    assert str(resp.msg.rr[0].rdata.label) == "mx1.example.com."
    assert resp.msg.rr[0].rdata.preference == 10
    assert str(resp.msg.rr[1].rdata.target) == "mx1.example.com."
    assert resp.msg.rr[1].rdata.port == 25


def test_invalid_name_after_rewrite_fails_without_asking_the_backend() -> None:
    h = rules(r"name regex (.*)\.example\.com {1}..bad")
    backend = Backend()
    with pytest.raises(RewriteError, match="invalid name"):
        h.serve(request("x.example.com."), backend)
    assert backend.seen == []
    long_label = "x" * 64
    h = rules(rf"name regex (.*)\.example\.com {long_label}.{{1}}")
    with pytest.raises(RewriteError):
        h.serve(request("a.example.com."), backend)


# ---------------------------------------------------------------------------------------------
# type, class, ttl


def test_type_rewrite_restores_the_question_type() -> None:
    def hinfo(req: Request) -> list[RR]:
        return [RR(req.msg.q.qname, QTYPE.HINFO, rdata=RD(b"\x07RFC8482\x00"), ttl=60)]

    h = rules("type ANY HINFO")
    resp, backend, _ = serve(h, "a.nl.", Backend(hinfo), qtype=QTYPE.ANY)
    assert backend.asked == ("a.nl.", QTYPE.HINFO, 1)
    assert backend.seen[0].qtype == QTYPE.HINFO and backend.seen[0].qname == "a.nl."
    assert resp.msg.q.qtype == QTYPE.ANY
    assert [rr.rtype for rr in resp.msg.rr] == [QTYPE.HINFO]
    _, backend, _ = serve(h, "a.nl.")
    assert backend.asked == ("a.nl.", QTYPE.A, 1)


def test_class_rewrite() -> None:
    h = rules("class CH IN")
    resp, backend, _ = serve(h, "a.nl.", qclass=3)
    assert backend.asked == ("a.nl.", QTYPE.A, 1) and backend.seen[0].qclass == 1
    assert resp.msg.q.qclass == 3


def test_ttl_set_and_clamped_in_every_section_but_opt() -> None:
    def mixed(req: Request) -> list[RR]:
        return [RR(req.msg.q.qname, QTYPE.A, rdata=A("10.0.0.1"), ttl=5),
                RR(req.msg.q.qname, QTYPE.A, rdata=A("10.0.0.2"), ttl=100),
                RR(req.msg.q.qname, QTYPE.A, rdata=A("10.0.0.3"), ttl=9000)]

    class WithExtra(Backend):
        def __call__(self, req: Request) -> Response:
            resp = super().__call__(req)
            resp.msg.add_ar(RR("ns.example.com.", QTYPE.A, rdata=A("10.9.9.9"), ttl=1))
            resp.msg.add_ar(EDNS0(udp_len=1232, flags="do"))
            return resp

    resp, _, _ = serve(rules("ttl example.com 30-300"), "example.com.", WithExtra(mixed))
    assert [rr.ttl for rr in resp.msg.rr] == [30, 100, 300]
    assert resp.msg.ar[0].ttl == 30
    assert resp.msg.ar[1].rtype == QTYPE.OPT and resp.msg.ar[1].ttl == 0x8000  # DO flag intact

    resp, _, _ = serve(rules("ttl suffix .example.com 15"), "www.example.com.", WithExtra(mixed))
    assert [rr.ttl for rr in resp.msg.rr] == [15, 15, 15]
    resp, _, _ = serve(rules("ttl regex ^www\\. -60"), "www.example.com.", Backend(mixed))
    assert [rr.ttl for rr in resp.msg.rr] == [5, 60, 60]
    resp, _, _ = serve(rules("ttl prefix www 50-"), "www.example.com.", Backend(mixed))
    assert [rr.ttl for rr in resp.msg.rr] == [50, 100, 9000]
    resp, _, _ = serve(rules("ttl substring example 1"), "www.example.com.", Backend(mixed))
    assert [rr.ttl for rr in resp.msg.rr] == [1, 1, 1]
    resp, _, _ = serve(rules("ttl example.com 1"), "www.example.com.", Backend(mixed))
    assert [rr.ttl for rr in resp.msg.rr] == [5, 100, 9000]  # exact: no match


# ---------------------------------------------------------------------------------------------
# stop / continue, ordering


def test_continue_and_stop_as_in_coredns() -> None:
    h = rules("continue class HS CH", "stop class CH IN", "class IN CS")
    _, backend, _ = serve(h, "a.nl.", qclass=4)
    assert backend.asked[2] == 1  # HS -> CH -> IN, and the stop keeps IN -> CS from running
    _, backend, _ = serve(h, "a.nl.", qclass=1)
    assert backend.asked[2] == 2  # IN matches only the third rule


def test_stop_is_the_default() -> None:
    h = rules("name a.example b.example", "name b.example c.example")
    _, backend, _ = serve(h, "a.example.")
    assert backend.asked[0] == "b.example."


def test_chained_name_rules_are_reverted_in_reverse_order() -> None:
    def chain(req: Request) -> list[RR]:
        return [RR("c.example.", QTYPE.CNAME, rdata=CNAME("t.c.example."), ttl=5),
                RR("t.c.example.", QTYPE.A, rdata=A("10.0.0.1"), ttl=5)]

    h = rules("continue name a.example b.example", "name b.example c.example")
    resp, backend, _ = serve(h, "A.Example.", Backend(chain))
    assert backend.asked[0] == "c.example."
    # c -> b (second rule's auto) then b -> a (first rule's auto), names and values alike;
    # the question's own name gets the client's spelling
    assert names(resp.msg) == ["A.Example.", "t.a.example."]
    assert str(resp.msg.rr[0].rdata.label) == "t.a.example."


def test_continue_then_ttl_sees_the_rewritten_name() -> None:
    h = rules("continue name a.example b.example", "ttl b.example 42")
    resp, backend, _ = serve(h, "a.example.")
    assert backend.asked[0] == "b.example."
    assert [(str(rr.rname), rr.ttl) for rr in resp.msg.rr] == [("a.example.", 42)]


# ---------------------------------------------------------------------------------------------
# what the handler must not do


def test_shared_records_and_the_client_message_are_never_mutated() -> None:
    shared = [RR("b.example.", QTYPE.A, rdata=A("10.0.0.1"), ttl=300)]
    h = rules("continue name a.example b.example", "ttl b.example 5")
    req = request("a.example.")
    before = req.msg.pack()
    for _ in range(2):
        resp = h.serve(req, Backend(lambda _r: list(shared)))
        assert names(resp.msg) == ["a.example."] and resp.msg.rr[0].ttl == 5
    assert str(shared[0].rname) == "b.example." and shared[0].ttl == 300
    assert req.msg.pack() == before


def test_variants_are_reverted_too_and_meta_is_shared() -> None:
    class Varied(Backend):
        def __call__(self, req: Request) -> Response:
            req.meta["seen-by-backend"] = True
            resp = super().__call__(req)
            other = DNSRecord(resp.msg.header, q=resp.msg.q)
            other.rr.extend(self.records(req))
            resp.variants = [other]
            return resp

    h = rules("name a.example b.example")
    req = request("a.example.")
    resp = h.serve(req, Varied())
    assert resp.variants is not None and len(resp.variants) == 1
    assert str(resp.variants[0].q.qname) == "a.example." and names(resp.variants[0]) == ["a.example."]
    assert req.meta["seen-by-backend"] is True


def test_slow_replies_stay_slow() -> None:
    resp, _, _ = serve(rules("name a.example b.example"), "a.example.", Backend(fast=False))
    assert not resp.fast


# ---------------------------------------------------------------------------------------------
# setup


def first_rule(line: str) -> object:
    block = parse_corefile(f".:53 {{\n    rewrite {line}\n}}\n", "Corefile", env={})[0]
    return parse_rule(block.directives[0])


def test_setup_rule_shapes() -> None:
    r = first_rule("name Example.NET example.org")
    assert isinstance(r, NameRule)
    assert (r.mode, r.kind, r.source, r.target, r.auto) == ("stop", "exact", "example.net.",
                                                             "example.org.", True)
    r = first_rule("continue name prefix foo bar")
    assert isinstance(r, NameRule) and (r.mode, r.kind, r.source, r.target, r.auto) == (
        "continue", "prefix", "foo.", "bar.", False)
    r = first_rule("STOP name regex (.*)\\.a\\.com {1}.b.com answer auto")
    assert isinstance(r, NameRule) and r.regex is not None and r.auto
    assert r.source == "(.*)\\.a\\.com" and r.target == "{1}.b.com."
    r = first_rule("name suffix .a.com .b.com answer auto")
    assert isinstance(r, NameRule) and not r.auto and len(r.answers) == 2  # static reverse rules
    assert first_rule("type any a") == TypeRule("stop", QTYPE.ANY, QTYPE.A)
    assert first_rule("continue class ch in") == ClassRule("continue", 3, 1)
    r = first_rule("ttl example.com 30-300")
    assert isinstance(r, TTLRule) and (r.kind, r.source, r.answer.low, r.answer.high) == (
        "exact", "example.com.", 30, 300)
    r = first_rule("ttl regex (.*)\\.rocks -30")
    assert isinstance(r, TTLRule) and (r.kind, r.answer.low, r.answer.high) == ("regex", 0, 30)
    r = first_rule("ttl prefix foo 30-")
    assert isinstance(r, TTLRule) and (r.answer.low, r.answer.high) == (30, 2**31 - 1)
    r = first_rule("ttl foo 0")
    assert isinstance(r, TTLRule) and (r.answer.low, r.answer.high) == (0, 0)


def test_setup_block_form_is_one_rule() -> None:
    text = (".:53 {\n    rewrite continue {\n        ttl regex (.*)\\.coredns\\.rocks 15\n"
            "    }\n}\n")
    h = handler_from(text)
    (r,) = h.cfg.rules
    assert isinstance(r, TTLRule) and r.mode == "continue" and r.answer.low == 15


def test_setup_repeated_directives_share_one_handler_in_corefile_order() -> None:
    text = (".:53 {\n    rewrite name a.example b.example\n    errors\n"
            "    rewrite continue type ANY HINFO\n    rewrite ttl a.example 10\n}\n")
    block = parse_corefile(text, "Corefile", env={})[0]
    ctx = SetupContext(block.keys, Path("."))
    results = [setup(d, ctx) for d in block.directives if d.name.text == "rewrite"]
    assert isinstance(results[0], RewriteHandler) and results[1:] == [None, None]
    assert ctx.shared["rewrite"] is results[0]
    assert [type(r) for r in results[0].cfg.rules] == [NameRule, TypeRule, TTLRule]
    # another server block gets its own handler
    other = SetupContext(block.keys, Path("."))
    assert setup(block.directives[0], other) is not results[0]


INVALID = [
    ("rewrite", "2:5: rewrite: expected a rule"),
    ("rewrite stop", "2:13: rewrite: expected a FIELD"),
    ("rewrite stop {\n    }", "2:13: rewrite: expected a FIELD (name, type, class or ttl) after 'stop'"),
    ("rewrite bogus a b", "2:13: rewrite: unknown field 'bogus'"),
    ("rewrite rcode SERVFAIL NXDOMAIN", "2:13: rewrite: too few (2) arguments for a rcode rule"),
    ("rewrite rcode a.com SERVFAIL NOPE", "2:34: rewrite: invalid replacement RCODE 'NOPE'"),
    ("rewrite rcode a.com 16 NXDOMAIN", "2:25: rewrite: invalid matching RCODE '16'"),
    ("rewrite rcode fuzzy a.com 2 3", "2:19: rewrite: rcode rules support only exact"),
    ("rewrite rcode exact a.com 2 3 4", "2:35: rewrite: unexpected '4'"),
    ("rewrite edns0 local", "2:13: rewrite: too few arguments for an EDNS0 rule"),
    ("rewrite edns0 local add 0xffee abcd", "2:25: rewrite: invalid action: 'add'"),
    ("rewrite edns0 cookie set", "2:19: rewrite: invalid rule type 'cookie'"),
    ("rewrite edns0 nsid set x", "2:28: rewrite: EDNS0 NSID rules do not accept args"),
    ("rewrite edns0 local set 0xffee", "2:13: rewrite: EDNS0 local rules require exactly three"),
    ("rewrite edns0 local set 0x1ffff a", "2:29: rewrite: invalid EDNS0 option code '0x1ffff'"),
    ("rewrite edns0 local set 0xffee 0xabc", "2:36: rewrite: invalid hex data '0xabc'"),
    ("rewrite edns0 local set 0xffee {server_ip}", "2:36: rewrite: unsupported variable name"),
    ("rewrite edns0 subnet set 33 56", "2:30: rewrite: invalid IPv4 bit mask length '33'"),
    ("rewrite edns0 subnet set 24 129", "2:33: rewrite: invalid IPv6 bit mask length '129'"),
    ("rewrite edns0 subnet set 24 56 x", "2:36: rewrite: EDNS0 subnet rules require exactly three"),
    ("rewrite cname a. b.", "2:13: rewrite: cname rules need MATCH FROM TO, got 2 arguments"),
    ("rewrite cname exact a. b. c.", "2:31: rewrite: cname rules need MATCH FROM TO"),
    ("rewrite cname glob a. b.", "2:19: rewrite: unknown cname rewrite type: 'glob'"),
    ("rewrite cname regex ([ b.", "2:25: rewrite: invalid regex"),
    ("rewrite cname regex (a) {2}.", "2:29: rewrite: '{2}.' uses group {2}"),
    ("rewrite answer name a b", "2:13: rewrite: response rewrites must begin with a name rule"),
    ("rewrite name", "2:13: rewrite: name rules need [MATCH] FROM TO"),
    ("rewrite name a.com", "2:13: rewrite: name rules need [MATCH] FROM TO"),
    ("rewrite name a.com b.com c.com", "2:18: rewrite: name rules support only exact"),
    ("rewrite name fuzzy a b", "2:18: rewrite: name rules support only exact"),
    ("rewrite name exact a.com b..com", "2:30: rewrite: 'b..com' is not a valid domain name"),
    ("rewrite name regex ([a]\\.com new-{1}.com", "2:24: rewrite: invalid regex"),
    ("rewrite name regex (.*)\\.a {1}.{2}.b", "2:32: rewrite: '{1}.{2}.b' uses group {2}"),
    ("rewrite name substring a b c", "2:32: rewrite: unexpected 'c' after FROM TO"),
    ("rewrite name prefix a b answer", "2:29: rewrite: answer needs auto"),
    ("rewrite name prefix a b answer ttl x y", "2:36: rewrite: unknown answer rewrite 'ttl'"),
    ("rewrite name prefix a b answer name x", "2:36: rewrite: answer name needs FROM TO"),
    ("rewrite name prefix a b answer name ([x y", "2:41: rewrite: invalid regex"),
    ("rewrite name regex (a) b answer auto answer name (x) y", "2:49: rewrite: answer auto cannot be "
                                                             "combined with answer name"),
    ("rewrite type ANY", "2:13: rewrite: type rules need exactly two arguments"),
    ("rewrite type ANY A A", "2:24: rewrite: type rules need exactly two arguments"),
    ("rewrite type XY A", "2:18: rewrite: invalid type 'XY'"),
    ("rewrite class IN WV", "2:22: rewrite: invalid class 'WV'"),
    ("rewrite ttl a.com", "2:13: rewrite: ttl rules need"),
    ("rewrite ttl a.com x", "2:23: rewrite: invalid TTL 'x'"),
    ("rewrite ttl a.com -", "2:23: rewrite: invalid TTL '-'"),
    ("rewrite ttl a.com 300-30", "2:23: rewrite: invalid TTL range '300-30'"),
    ("rewrite ttl a.com 2147483648", "2:23: rewrite: invalid TTL"),
    ("rewrite ttl a.com +5", "2:23: rewrite: invalid TTL"),
    ("rewrite ttl glob a.com 5", "2:17: rewrite: ttl rules support only exact"),
    ("rewrite ttl exact a.com 5 6", "2:31: rewrite: unexpected '6'"),
    ("rewrite ttl regex ([ 5", "2:23: rewrite: invalid regex"),
    ("rewrite continue name a b {\n        answer auto\n    }",
     "3:9: rewrite: write a rule either on the directive line or in its block"),
    ("rewrite stop {\n        name a {\n        }\n    }", "3:9: rewrite: a rule's block cannot hold"),
]


@pytest.mark.parametrize(("body", "message"), INVALID, ids=[b for b, _ in INVALID])
def test_setup_invalid(body: str, message: str) -> None:
    text = f".:53 {{\n    {body}\n}}\n"
    block = parse_corefile(text, "Corefile", env={})[0]
    with pytest.raises(ConfigError) as info:
        setup(block.directives[0], SetupContext(block.keys, Path(".")))
    assert str(info.value).startswith(f"Corefile:{message}"), str(info.value)


def test_readme_corefile_blocks_parse_and_set_up() -> None:
    blocks = re.findall(r"```corefile\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 4
    for text in blocks:
        for block in parse_corefile(text, "README.md", env={}):
            ctx = SetupContext(block.keys, Path("."))
            for d in block.directives:
                if d.name.text == "rewrite":
                    setup(d, ctx)
            assert isinstance(ctx.shared["rewrite"], RewriteHandler)


def test_readme_regex_example_does_what_it_says() -> None:
    text = re.findall(r"```corefile\n(.*?)```", README.read_text(), re.S)[2]
    h = handler_from(text)
    resp, backend, _ = serve(h, "api-shop.example.com.")
    assert backend.asked[0] == "api.shop.svc.cluster.local."
    assert names(resp.msg) == ["api-shop.example.com."]


def test_dnslabel_compare_is_case_insensitive() -> None:
    # the case echo relies on it
    assert DNSLabel("A.b.") == DNSLabel("a.B.")
