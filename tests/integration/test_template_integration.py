"""template over real sockets: CoreDNS's README examples, the cluster patterns (an AAAA filter
for cluster names, NXDOMAIN for search-path junk), the fast path and the metrics.

Every upstream is a FakeUpstream on 127.0.0.1 started by the test; nothing leaves loopback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from kdns.server.app import KdnsServer
from tests.conftest import DEMO, Running, start_server
from tests.integration.test_forward import FakeUpstream


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[str], Running]]:
    servers: list[KdnsServer] = []

    def start(corefile: str) -> Running:
        server = start_server(corefile, tmp_path)
        servers.append(server)
        return Running(server)

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    up = FakeUpstream({"google.com.": "192.0.2.99", "www.example.org.": "192.0.2.7"})
    yield up
    up.close()


def ask(r: Running, qname: str, qtype: str = "A", rdclass: str = "IN", *, source: str = "",
        **kw: object) -> dns.message.Message:
    q = dns.message.make_query(qname, qtype, rdclass, **kw)  # type: ignore[arg-type]
    return dns.query.udp(q, "127.0.0.1", port=r.port, source=source or None, timeout=3)


def texts(section: list[dns.rrset.RRset]) -> list[str]:
    return sorted(f"{rr.name} {rr.ttl} {dns.rdataclass.to_text(rr.rdclass)} "
                  f"{dns.rdatatype.to_text(rr.rdtype)} {rd.to_text()}"
                  for rr in section for rd in rr)


def test_everything_nxdomain(serve: Callable[[str], Running]) -> None:
    r = serve(". {\n template ANY ANY {\n  rcode NXDOMAIN\n }\n}\n")
    for name, qtype in (("a.example.", "A"), ("x.", "MX"), ("cluster.local.", "AAAA")):
        m = ask(r, name, qtype)
        assert m.rcode() == dns.rcode.NXDOMAIN and m.flags & dns.flags.AA
        assert not m.answer and not m.authority
    assert ask(r, "version.bind.", "TXT", "CH").rcode() == dns.rcode.NXDOMAIN


def test_soa_ns_for_a_dynamic_domain(serve: Callable[[str], Running]) -> None:
    r = serve(r"""engineering.coredns.io. {
    template IN SOA {
      match ^engineering\.coredns\.io\.$
      answer "{{ .Zone }} 3600 IN SOA ns1.{{ .Zone }} admin.{{ .Zone }} (1 60 120 86400 3600)"
      fallthrough
    }
    template IN SOA {
      authority "{{ .Zone }} 3600 IN SOA host1.engineering.coredns.io. engineering.coredns.io. (1 60 120 86400 3600)"
    }
    template IN NS {
      match ^engineering\.coredns\.io\.$
      answer "{{ .Zone }} 900 IN NS ns1.engineering.coredns.io."
      answer "{{ .Zone }} 900 IN NS ns2.engineering.coredns.io."
      fallthrough
    }
    template IN NS {
      authority "{{ .Zone }} 3600 IN SOA host1.engineering.coredns.io. engineering.coredns.io. (1 60 120 86400 3600)"
    }
}
""")  # noqa: E501
    soa = ask(r, "engineering.coredns.io.", "SOA")
    assert texts(soa.answer) == ["engineering.coredns.io. 3600 IN SOA ns1.engineering.coredns.io. "
                                 "admin.engineering.coredns.io. 1 60 120 86400 3600"]
    ns = ask(r, "Engineering.CoreDNS.io.", "NS")
    assert texts(ns.answer) == ["engineering.coredns.io. 900 IN NS ns1.engineering.coredns.io.",
                                "engineering.coredns.io. 900 IN NS ns2.engineering.coredns.io."]
    for qtype in ("SOA", "NS"):
        sub = ask(r, "host1.engineering.coredns.io.", qtype)
        assert sub.rcode() == dns.rcode.NOERROR and not sub.answer
        assert [rr.rdtype for rr in sub.authority] == [dns.rdatatype.SOA]
    # Zone and class match but no template matches the type: on to the next plugin (none).
    assert ask(r, "engineering.coredns.io.", "A").rcode() == dns.rcode.SERVFAIL


def test_invalid_is_nxdomain_with_soa_and_ede(serve: Callable[[str], Running],
                                              upstream: FakeUpstream) -> None:
    r = serve(f""". {{
    forward . {upstream.addr}
    template ANY ANY invalid {{
      rcode NXDOMAIN
      authority "invalid. 60 {{{{ .Class }}}} SOA ns.invalid. hostmaster.invalid. (1 60 60 60 60)"
      ederror 21 "Blocked according to RFC2606"
    }}
}}
""")
    m = ask(r, "foo.invalid.", "A", use_edns=0)
    assert m.rcode() == dns.rcode.NXDOMAIN
    assert texts(m.authority) == ["invalid. 60 IN SOA ns.invalid. hostmaster.invalid. 1 60 60 60 60"]
    ede = [o for o in m.options if o.otype == dns.edns.EDE]
    assert len(ede) == 1 and ede[0].code == 21 and ede[0].text == "Blocked according to RFC2606"
    ch = ask(r, "foo.invalid.", "TXT", "CH")
    assert ch.rcode() == dns.rcode.NXDOMAIN and texts(ch.authority)[0].startswith("invalid. 60 CH SOA")
    assert texts(ask(r, "www.example.org.").answer) == ["www.example.org. 60 IN A 192.0.2.7"]
    assert upstream.seen("foo.invalid.") == []


def test_search_domain_completions(serve: Callable[[str], Running],
                                   upstream: FakeUpstream) -> None:
    zone_based = serve(f""". {{
    forward . {upstream.addr}
    template IN ANY example.com.dc1.example.com {{
      rcode NXDOMAIN
      authority "{{{{ .Zone }}}} 60 IN SOA ns.example.com hostmaster.example.com (1 60 60 60 60)"
    }}
}}
""")
    regex_based = serve(f""". {{
    forward . {upstream.addr}
    template IN ANY example.com {{
      match "example\\.com\\.(dc1\\.example\\.com\\.)$"
      rcode NXDOMAIN
      authority "{{{{ index .Match 1 }}}} 60 IN SOA ns.{{{{ index .Match 1 }}}} hostmaster.{{{{ index .Match 1 }}}} (1 60 60 60 60)"
      fallthrough
    }}
}}
""")  # noqa: E501
    for r, soa_name in ((zone_based, "example.com.dc1.example.com."),
                        (regex_based, "dc1.example.com.")):
        m = ask(r, "something.example.com.dc1.example.com.", "A")
        assert m.rcode() == dns.rcode.NXDOMAIN
        assert [str(rr.name) for rr in m.authority] == [soa_name]
    # The regex form falls through for the rest of example.com: to the upstream.
    up = FakeUpstream({"www.example.com.": "192.0.2.8"})
    try:
        r = serve(f""". {{
    forward . {up.addr}
    template IN ANY example.com {{
      match "example\\.com\\.(dc1\\.example\\.com\\.)$"
      rcode NXDOMAIN
      fallthrough
    }}
}}
""")
        assert texts(ask(r, "www.example.com.").answer) == ["www.example.com. 60 IN A 192.0.2.8"]
    finally:
        up.close()


def test_a_and_ptr_for_ip_names(serve: Callable[[str], Running], upstream: FakeUpstream) -> None:
    r = serve(f""". {{
    forward . {upstream.addr}
    template IN A example {{
      match (^|[.])ip-(?P<a>[0-9]*)-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$
      answer "{{{{ .Name }}}} 60 IN A {{{{ .Group.a }}}}.{{{{ .Group.b }}}}.{{{{ .Group.c }}}}.{{{{ .Group.d }}}}"
      fallthrough
    }}
    template IN PTR in-addr.arpa {{
      match ^(?P<d>[0-9]*)[.](?P<c>[0-9]*)[.](?P<b>[0-9]*)[.](?P<a>[0-9]*)[.]in-addr[.]arpa[.]$
      answer "{{{{ .Name }}}} 60 IN PTR ip-{{{{ .Group.a }}}}-{{{{ .Group.b }}}}-{{{{ .Group.c }}}}-{{{{ .Group.d }}}}.example."
    }}
}}
""")  # noqa: E501
    assert texts(ask(r, "ip-10-95-12-8.example.").answer) == ["ip-10-95-12-8.example. 60 IN A 10.95.12.8"]
    # The README's note: a subdomain of the address name resolves too (the regex is a wildcard).
    assert texts(ask(r, "www.ip-192-0-2-1.example.").answer) == [
        "www.ip-192-0-2-1.example. 60 IN A 192.0.2.1"]
    assert texts(ask(r, "8.12.95.10.in-addr.arpa.", "PTR").answer) == [
        "8.12.95.10.in-addr.arpa. 60 IN PTR ip-10-95-12-8.example."]
    # No fallthrough on the PTR template: a name it does not match is SERVFAIL.
    assert ask(r, "x.in-addr.arpa.", "PTR").rcode() == dns.rcode.SERVFAIL
    # The A template falls through; the upstream answers NXDOMAIN for it.
    assert ask(r, "other.example.").rcode() == dns.rcode.NXDOMAIN
    assert upstream.seen("other.example.")


def test_parse_int_multiple_patterns_mx_and_authority(serve: Callable[[str], Running],
                                                      upstream: FakeUpstream) -> None:
    r = serve(f""". {{
    forward . {upstream.addr}
    template IN A example {{
      match "^ip0a(?P<b>[a-f0-9]{{2}})(?P<c>[a-f0-9]{{2}})(?P<d>[a-f0-9]{{2}})[.]example[.]$"
      answer "{{{{ .Name }}}} 60 IN A 10.{{{{ parseInt .Group.b 16 8 }}}}.{{{{ parseInt .Group.c 16 8 }}}}.{{{{ parseInt .Group.d 16 8 }}}}"
      fallthrough
    }}
    template IN A example {{
      match "^ip-(?P<a>10)-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]dc[.]example[.]$"
      match "^(?P<a>[0-9]*)[.](?P<b>[0-9]*)[.](?P<c>[0-9]*)[.](?P<d>[0-9]*)[.]ext[.]example[.]$"
      answer "{{{{ .Name }}}} 60 IN A {{{{ .Group.a}}}}.{{{{ .Group.b }}}}.{{{{ .Group.c }}}}.{{{{ .Group.d }}}}"
      fallthrough
    }}
    template IN MX example {{
      match ^ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$
      answer "{{{{ .Name }}}} 60 IN MX 10 {{{{ .Name }}}}"
      additional "{{{{ .Name }}}} 60 IN A 10.{{{{ .Group.b }}}}.{{{{ .Group.c }}}}.{{{{ .Group.d }}}}"
      authority  "example. 60 IN NS ns0.example."
      authority  "example. 60 IN NS ns1.example."
      additional "ns0.example. 60 IN A 203.0.113.8"
      additional "ns1.example. 60 IN A 198.51.100.8"
      fallthrough
    }}
}}
""")  # noqa: E501
    assert texts(ask(r, "ip0a7b7b0c.example.").answer) == ["ip0a7b7b0c.example. 60 IN A 10.123.123.12"]
    assert texts(ask(r, "ip-10-1-2-3.dc.example.").answer) == ["ip-10-1-2-3.dc.example. 60 IN A 10.1.2.3"]
    assert texts(ask(r, "1.2.3.4.ext.example.").answer) == ["1.2.3.4.ext.example. 60 IN A 1.2.3.4"]
    mx = ask(r, "ip-10-1-2-3.example.", "MX")
    assert texts(mx.answer) == ["ip-10-1-2-3.example. 60 IN MX 10 ip-10-1-2-3.example."]
    assert texts(mx.authority) == ["example. 60 IN NS ns0.example.", "example. 60 IN NS ns1.example."]
    assert texts(mx.additional) == ["ip-10-1-2-3.example. 60 IN A 10.1.2.3",
                                    "ns0.example. 60 IN A 203.0.113.8",
                                    "ns1.example. 60 IN A 198.51.100.8"]
    # Not hexadecimal: no template matches, they all fall through, the upstream answers.
    assert ask(r, "ip0azz0000.example.").rcode() == dns.rcode.NXDOMAIN
    assert upstream.seen("ip0azz0000.example.")


def test_cname_with_and_without_upstream(serve: Callable[[str], Running],
                                         upstream: FakeUpstream) -> None:
    body = """
  template IN ANY foogle.com {{
    match "^foogle\\.com\\.$"
    answer "foogle.com 60 IN CNAME google.com"
    {extra}
  }}
  forward . {addr}
"""
    plain = serve(". {" + body.format(extra="", addr=upstream.addr) + "}\n")
    assert texts(plain.udp("foogle.com.").answer) == ["foogle.com. 60 IN CNAME google.com."]
    chased = serve(". {" + body.format(extra="upstream", addr=upstream.addr) + "}\n")
    assert texts(chased.udp("foogle.com.").answer) == ["foogle.com. 60 IN CNAME google.com.",
                                                       "google.com. 60 IN A 192.0.2.99"]
    # Not A/AAAA: the CNAME alone, as CoreDNS.
    assert texts(chased.udp("foogle.com.", "MX").answer) == ["foogle.com. 60 IN CNAME google.com."]


CLUSTER = f"""
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        manifests {DEMO}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
"""


def test_aaaa_filter_for_cluster_names(serve: Callable[[str], Running],
                                       upstream: FakeUpstream) -> None:
    r = serve(f""".:53 {{
    errors
    template ANY AAAA cluster.local {{
      rcode NOERROR
    }}
    {CLUSTER}
    forward . {upstream.addr}
}}
""")
    kubia = "kubia.default.svc.cluster.local."
    for _ in range(2):  # the second time from the fast path
        m = r.udp(kubia, "AAAA")
        assert m.rcode() == dns.rcode.NOERROR and not m.answer and m.flags & dns.flags.AA
        assert texts(r.udp(kubia).answer) == [f"{kubia} 5 IN A 10.98.237.175"]
        # Even a name the cluster does not have: an empty NOERROR, not a lookup.
        assert r.udp("nosuch.default.svc.cluster.local.", "AAAA").rcode() == dns.rcode.NOERROR
    # Outside cluster.local the template does not apply: the upstream is asked.
    assert not r.udp("www.example.org.", "AAAA").flags & dns.flags.AA
    assert upstream.seen("www.example.org.")


def test_aks_search_junk_templates(serve: Callable[[str], Running],
                                   upstream: FakeUpstream) -> None:
    """The templates AKS appends to its default Corefile, so search-list completions of the
    node's domain never reach Azure DNS."""
    r = serve(f""".:53 {{
    errors
    ready
    {CLUSTER}
    forward . {upstream.addr}
    cache 30
    loop
    loadbalance
    template ANY ANY internal.cloudapp.net {{
      match "^(?:[^.]+\\.){{4,}}internal\\.cloudapp\\.net\\.$"
      rcode NXDOMAIN
      fallthrough
    }}
    template ANY ANY reddog.microsoft.com {{
      rcode NXDOMAIN
    }}
}}
""")
    junk = "kubia.default.svc.cluster.local.abc.internal.cloudapp.net."
    assert r.udp(junk).rcode() == dns.rcode.NXDOMAIN
    assert r.udp("www.google.com.reddog.microsoft.com.", "AAAA").rcode() == dns.rcode.NXDOMAIN
    assert r.udp("vm1.internal.cloudapp.net.").rcode() == dns.rcode.NXDOMAIN  # upstream's
    assert upstream.seen("vm1.internal.cloudapp.net.") and not upstream.seen(junk)
    assert texts(r.udp("kubia.default.svc.cluster.local.").answer) == [
        "kubia.default.svc.cluster.local. 5 IN A 10.98.237.175"]


def test_nxdomain_for_search_path_junk_under_svc(serve: Callable[[str], Running]) -> None:
    r = serve(f""".:53 {{
    template IN ANY svc.cluster.local {{
      match "\\.(com|net|org|io)\\.svc\\.cluster\\.local\\.$"
      rcode NXDOMAIN
      authority "cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. (1 7200 1800 86400 30)"
      fallthrough
    }}
    {CLUSTER}
}}
""")  # noqa: E501
    for junk in ("www.google.com.svc.cluster.local.", "api.github.io.svc.cluster.local."):
        m = r.udp(junk, "AAAA")
        assert m.rcode() == dns.rcode.NXDOMAIN
        assert [rr.rdtype for rr in m.authority] == [dns.rdatatype.SOA]
    # A real Service under svc.cluster.local falls through to the cluster view.
    assert texts(r.udp("kubia.default.svc.cluster.local.").answer) == [
        "kubia.default.svc.cluster.local. 5 IN A 10.98.237.175"]


def test_client_dependent_replies_are_not_replayed(serve: Callable[[str], Running]) -> None:
    r = serve(""". {
    template IN TXT example {
      answer "{{ .Name }} 0 IN TXT \\"{{ .Remote }}\\" \\"{{ .Message.Id }}\\""
    }
    template IN A example {
      answer "{{ .Name }} 60 IN A 192.0.2.1"
    }
}
""")
    seen = []
    for source in ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.2"):
        q = dns.message.make_query("who.example.", "TXT")
        m = dns.query.udp(q, "127.0.0.1", port=r.port, source=source, timeout=3)
        seen.append(m.answer[0][0].strings)
        assert m.answer[0][0].strings == (source.encode(), str(q.id).encode())
    udp = r.server.listeners[0].udp
    assert udp is not None
    assert not any(b"\x03who" in (k if isinstance(k, bytes) else k[1])
                   for k in udp.dispatcher.store.entries)
    r.udp("a.example.")
    # The question-only reply is stored.
    assert any(b"\x01a\x07example" in k for k in udp.dispatcher.store.entries
               if isinstance(k, bytes))


def test_failures_are_servfail_counted_and_logged(serve: Callable[[str], Running],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="kdns.errors")
    r = serve(""". {
    errors
    template IN TXT example {
      match "^(?P<a>[a-z]+)[.]example[.]$"
      answer "{{ .Name }} 60 IN TXT \\"{{ index .Match 2 }}\\""
    }
    template IN A example {
      answer "{{ .Name }}"
    }
    prometheus 127.0.0.1:0
}
""")
    failed = r.udp("x.example.", "TXT")
    assert failed.rcode() == dns.rcode.SERVFAIL and not failed.flags & dns.flags.AA
    assert r.udp("x.example.", "A").rcode() == dns.rcode.SERVFAIL
    assert r.udp("x.example.", "A").rcode() == dns.rcode.SERVFAIL
    errors = [rec.getMessage() for rec in caplog.records if rec.name == "kdns.errors"]
    assert len(errors) == 3
    assert "x.example. 16: template: answer" in errors[0] and "index out of range: 2" in errors[0]
    assert "rendered 'x.example.'" in errors[1]
    assert r.server.registry.get_sample_value("coredns_panics_total") == 0
    samples = {(s.name, s.labels.get("section", ""), s.labels.get("type", "")): s.value
               for f in r.server.registry.collect() if f.name.startswith("coredns_template")
               for s in f.samples if s.name.endswith("_total")}
    assert samples[("coredns_template_matches_total", "", "TXT")] == 1
    assert samples[("coredns_template_matches_total", "", "A")] == 2
    assert samples[("coredns_template_template_failures_total", "answer", "TXT")] == 1
    assert samples[("coredns_template_rr_failures_total", "answer", "A")] == 2


AKS_STYLE = r""".:53 {
    errors
    ready
    health {
      lameduck 5s
    }
    kubernetes cluster.local in-addr.arpa ip6.arpa {
      pods insecure
      fallthrough in-addr.arpa ip6.arpa
      ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
    loadbalance
    import custom/*.override
    template ANY ANY internal.cloudapp.net {
      match "^(?:[^.]+\.){4,}internal\.cloudapp\.net\.$"
      rcode NXDOMAIN
      fallthrough
    }
    template ANY ANY reddog.microsoft.com {
      rcode NXDOMAIN
    }
}
import custom/*.server
"""


def test_kdns_check_accepts_an_aks_style_corefile_and_locates_template_errors(
        tmp_path: Path) -> None:
    from click.testing import CliRunner

    from kdns.cli import main

    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "aaaa.override").write_text(
        "template ANY AAAA cluster.local {\n  rcode NOERROR\n}\n")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.1\n")  # set up only: nothing is sent anywhere
    good = tmp_path / "Corefile"
    good.write_text(AKS_STYLE.replace("/etc/resolv.conf", str(resolv)))
    r = CliRunner().invoke(main, ["check", str(good)])
    assert r.exit_code == 0, r.output
    (tmp_path / "custom" / "aaaa.override").write_text(
        "template ANY AAAA cluster.local {\n  answer \"{{ .Nmae }} 5 IN AAAA ::1\"\n}\n")
    r = CliRunner().invoke(main, ["check", str(good)])
    assert r.exit_code == 2 and "aaaa.override:2:10: template: could not compile" in r.output, \
        r.output
