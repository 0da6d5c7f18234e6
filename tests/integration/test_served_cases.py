"""The kubernetes case table (tests/unit/k8s_cases.py) over real UDP and TCP sockets.

The same rows the pure answer function is tested with, asked of a served kdns with dnspython:
what the table says is what a client on the wire gets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from kdns.server.app import KdnsServer
from tests.conftest import start_server
from tests.unit import k8s_cases
from tests.unit.k8s_cases import CASES, CONFIGS, Case, canon_section, expected


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    tmp = tmp_path_factory.mktemp("cases")
    manifests = tmp / "demo.json"
    manifests.write_text(json.dumps({"kind": "List", "items": k8s_cases.OBJECTS}))
    started: list[KdnsServer] = []
    ports: dict[str, int] = {}
    try:
        for name in CONFIGS:
            sub = tmp / name
            sub.mkdir()
            server = start_server(k8s_cases.corefile(name, str(manifests)), sub)
            started.append(server)
            ports[name] = server.listeners[0].port
        yield ports
    finally:
        for s in started:
            s.stop()


def _sections(msg: dns.message.Message) -> dict[str, object]:
    def rrs(section: list[dns.rrset.RRset]) -> list[str]:
        out: list[str] = []
        for rrset in section:
            out.extend(rrset.to_text().splitlines())
        return canon_section(out)

    return {
        "rcode": dns.rcode.to_text(msg.rcode()),
        "aa": bool(msg.flags & dns.flags.AA),
        "answer": rrs(msg.answer),
        "authority": rrs(msg.authority),
        "additional": rrs(msg.additional),
    }


SOCKET_CASES = [c for c in CASES if not c.host_dependent and not c.upstream and c.qtype != "AXFR"]


@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize("case", SOCKET_CASES,
                         ids=[f"{c.config}:{c.qname}:{c.qtype}" for c in SOCKET_CASES])
def test_case_over_the_wire(servers: dict[str, int], case: Case, proto: str) -> None:
    q = dns.message.make_query(case.qname, case.qtype, use_edns=0, payload=4096)
    ask = dns.query.udp if proto == "udp" else dns.query.tcp
    first = ask(q, "127.0.0.1", port=servers[case.config], timeout=3)
    assert _sections(first) == expected(case), case.note
    # the same question again comes from the fast path: it must say exactly the same
    again = ask(q, "127.0.0.1", port=servers[case.config], timeout=3)
    assert _sections(again) == expected(case), case.note
    assert again.question[0].name.to_text() == case.qname


def test_axfr_is_refused_over_tcp(servers: dict[str, int]) -> None:
    q = dns.message.make_query("cluster.local.", "AXFR")
    r = dns.query.tcp(q, "127.0.0.1", port=servers["default"], timeout=3)
    assert r.rcode() == dns.rcode.REFUSED


def test_every_row_is_run_somewhere() -> None:
    skipped = [c for c in CASES if c not in SOCKET_CASES]
    # host-dependent rows (this host's NS glue) and upstream-dependent rows are checked
    # through the pure function in tests/unit/test_kubernetes_answer.py
    assert all(c.host_dependent or c.upstream or c.qtype == "AXFR" for c in skipped)
    assert len(SOCKET_CASES) > 80

