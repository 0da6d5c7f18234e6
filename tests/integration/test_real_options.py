"""Options real Corefiles use, over real sockets: ``cache { denial 0 }``, ``ready { monitor }``,
``prometheus { runtime_metrics }`` and ``loadbalance { prefer }``.

Everything listens on 127.0.0.1; the upstream is the counting dnslib responder of the cache tests.
"""

from __future__ import annotations

import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.rcode
import dns.rdatatype
import pytest
from dnslib import QTYPE, RR, DNSRecord

from tests.conftest import DEMO, Running, start_server
from tests.integration.test_cache_integration import Upstream
from tests.integration.test_rewrite_loadbalance import POOL, POOL_YAML
from tests.ports import free_tcp_port


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()


def serve(corefile: str, tmp_path: Path) -> Iterator[Running]:
    server = start_server(corefile, tmp_path)
    try:
        yield Running(server)
    finally:
        server.stop()


# -- cache: a zero capacity stores nothing of that kind ------------------------------------------


def test_cache_denial_zero_caches_successes_but_not_denials(upstream: Upstream,
                                                             tmp_path: Path) -> None:
    corefile = (f".:53 {{\n    cache 30 {{\n        denial 0\n    }}\n"
                f"    forward . 127.0.0.1:{upstream.port}\n}}\n")
    for k in serve(corefile, tmp_path):
        for _ in range(3):
            assert k.udp("nx.example.").rcode() == dns.rcode.NXDOMAIN
            assert k.udp("www.example.").answer[0][0].address == "192.0.2.7"
        assert upstream.count("nx.example.") == 3  # every denial went upstream
        assert upstream.count("www.example.") == 1  # the success was cached


def test_cache_success_zero_caches_denials_only(upstream: Upstream, tmp_path: Path) -> None:
    corefile = (f".:53 {{\n    cache {{\n        success 0\n    }}\n"
                f"    forward . 127.0.0.1:{upstream.port}\n}}\n")
    for k in serve(corefile, tmp_path):
        for _ in range(3):
            k.udp("nx.example.")
            k.udp("www.example.")
        assert (upstream.count("nx.example."), upstream.count("www.example.")) == (1, 3)


# -- ready: until-ready stops asking a plugin once it was ready; continuously keeps asking ---------


class Flip:
    """A readiness source the test turns on and off (a plugin losing its data source)."""

    name = "flip"

    def __init__(self) -> None:
        self.ok = False

    def ready(self) -> bool:
        return self.ok


@pytest.mark.parametrize(("monitor", "after_loss"), [
    ("", 200), ("monitor until-ready", 200), ("monitor continuously", 503)])
def test_ready_monitor_modes(monitor: str, after_loss: int, tmp_path: Path) -> None:
    rport = free_tcp_port()
    corefile = (f".:53 {{\n    ready 127.0.0.1:{rport} {{\n        {monitor}\n    }}\n"
                f"    kubernetes cluster.local {{\n        manifests {DEMO}\n    }}\n}}\n")
    for k in serve(corefile, tmp_path):
        flip = Flip()
        k.server.process["ready_reporters"].append(flip)
        assert get(rport, "/ready") == (503, b"flip")
        flip.ok = True
        assert get(rport, "/ready") == (200, b"OK")
        flip.ok = False
        assert get(rport, "/ready")[0] == after_loss
        assert k.udp("kubia.default.svc.cluster.local.").answer[0][0].address == "10.98.237.175"


# -- prometheus: runtime_metrics adds the process and GC families ------------------------------------


@pytest.mark.parametrize("runtime", [False, True])
def test_prometheus_runtime_metrics(runtime: bool, tmp_path: Path) -> None:
    mport = free_tcp_port()
    opt = " {\n        runtime_metrics\n    }" if runtime else ""
    corefile = (f".:53 {{\n    prometheus 127.0.0.1:{mport}{opt}\n    hosts {{\n"
                f"        192.0.2.1 a.example\n    }}\n}}\n")
    for k in serve(corefile, tmp_path):
        assert k.udp("a.example.").answer[0][0].address == "192.0.2.1"
        status, body = get(mport, "/metrics")
        assert status == 200
        assert b"coredns_dns_requests_total{" in body
        assert b"\nprocess_resident_memory_bytes " in body  # always, as in CoreDNS
        assert body.count(b"# TYPE process_resident_memory_bytes ") == 1
        assert (b"\npython_gc_collections_total{" in body) is runtime
        assert (b"\npython_gc_collections_total{" in body) is runtime
        assert body.count(b"# TYPE coredns_dns_requests_total ") == 1


# -- loadbalance prefer: preferred subnets lead, in the order listed ------------------------------


def test_loadbalance_prefer_puts_preferred_subnets_first(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    shutil.copytree(DEMO, manifests, ignore=shutil.ignore_patterns("Corefile", "*.md"))
    (manifests / "pool.yaml").write_text(POOL_YAML)
    corefile = f"""\
        .:53 {{
            loadbalance round_robin {{
                prefer 10.244.7.4/32
                prefer 10.244.7.2/31 192.0.2.0/24
            }}
            kubernetes cluster.local {{
                manifests {manifests}
            }}
        }}
        """
    for k in serve(corefile, tmp_path):
        orders = set()
        for _ in range(12):  # the fast path replays a cycle of stored orders: walk it
            got = [rr.address for rr in k.udp("pool.default.svc.cluster.local.").answer[0]]
            assert sorted(got) == sorted(POOL)
            assert got[0] == "10.244.7.4"
            assert set(got[1:3]) == {"10.244.7.2", "10.244.7.3"}
            orders.add(tuple(got))
        assert len(orders) > 1  # still balanced within each group


# -- rewrite rcode and edns0 -----------------------------------------------------------------------


class OptionRecorder(Upstream):
    """The counting upstream, also keeping the EDNS0 options of every query it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[list[tuple[int, bytes]]] = []
        self.payloads: list[int] = []

    def _run(self) -> None:
        inner = self.sock

        class Tap:
            """Wraps the socket so every received query is decoded once more for its OPT."""

            def __init__(self, up: OptionRecorder) -> None:
                self.up = up

            def recvfrom(self, n: int) -> tuple[bytes, tuple[str, int]]:
                data, addr = inner.recvfrom(n)
                query = DNSRecord.parse(data)
                opts = [rr for rr in query.ar if rr.rtype == QTYPE.OPT]
                with self.up.lock:
                    self.up.seen.append([(o.code, bytes(o.data)) for rr in opts for o in rr.rdata])
                    self.up.payloads.append(opts[0].rclass if opts else 0)
                return data, addr

            def __getattr__(self, name: str) -> object:
                return getattr(inner, name)

        self.sock = Tap(self)  # type: ignore[assignment]
        try:
            super()._run()
        finally:
            self.sock = inner


def test_rewrite_rcode_changes_the_reply_code(upstream: Upstream, tmp_path: Path) -> None:
    corefile = (f".:53 {{\n    rewrite rcode suffix .example. NXDOMAIN REFUSED\n"
                f"    rewrite rcode exact nx.example.org. 3 0\n"
                f"    forward . 127.0.0.1:{upstream.port}\n}}\n")
    for k in serve(corefile, tmp_path):
        assert k.udp("nx.example.").rcode() == dns.rcode.REFUSED
        assert k.udp("nx.example.org.").rcode() == dns.rcode.NOERROR
        assert k.udp("nx.other.").rcode() == dns.rcode.NXDOMAIN  # no rule matches
        ok = k.udp("www.example.")  # matches, but NOERROR is not the rule's OLD
        assert ok.rcode() == dns.rcode.NOERROR and ok.answer[0][0].address == "192.0.2.7"


def test_rewrite_edns0_options_reach_the_upstream(tmp_path: Path) -> None:
    with OptionRecorder() as up:
        corefile = (f".:53 {{\n"
                    f"    rewrite continue edns0 local set 0xffee 0xabcd\n"
                    f"    rewrite continue edns0 local append 0xffed {{qtype}}\n"
                    f"    rewrite continue edns0 nsid append\n"
                    f"    rewrite edns0 subnet set 24 56\n"
                    f"    forward . 127.0.0.1:{up.port}\n}}\n")
        for k in serve(corefile, tmp_path):
            k.udp("www.example.", "AAAA")  # no EDNS from the client: kdns adds the OPT
            k.udp("www.example.", "A", use_edns=0, payload=1232,
                  options=[dns.edns.GenericOption(0xFFEE, b"old"),
                           dns.edns.GenericOption(0xFFED, b"keep")])
        first, second = up.seen
        ecs = (8, bytes([0, 1, 24, 0, 127, 0, 0]))  # family 1, /24, scope 0, 127.0.0
        assert first == [(0xFFEE, b"\xab\xcd"), (0xFFED, b"\x00\x1c"), (3, b""), ecs]
        # set replaces 0xffee in place; append leaves the client's 0xffed alone
        assert second == [(0xFFEE, b"\xab\xcd"), (0xFFED, b"keep"), (3, b""), ecs]
        assert up.payloads == [4096, 1232]


class CnameUpstream(Upstream):
    """``www.example.`` is a CNAME to ``edge.cdn-a.example.`` (192.0.2.7); ``edge.cdn-b.example.``
    has 192.0.2.8. Counts queries per name like its parent."""

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            query = DNSRecord.parse(data)
            name = str(query.q.qname).lower()
            with self.lock:
                self.queries[name] = self.queries.get(name, 0) + 1
            reply = query.reply()
            if name == "www.example.":
                reply.add_answer(*RR.fromZone("www.example. 300 IN CNAME edge.cdn-a.example.\n"
                                              "edge.cdn-a.example. 300 IN A 192.0.2.7"))
            elif name == "edge.cdn-b.example." and query.q.qtype == QTYPE.A:
                reply.add_answer(*RR.fromZone("edge.cdn-b.example. 300 IN A 192.0.2.8"))
            self.sock.sendto(reply.pack(), addr)


@pytest.mark.parametrize("rule", ["cname exact edge.cdn-a.example edge.cdn-b.example",
                                  "cname suffix .cdn-a.example. .cdn-b.example.",
                                  "cname regex ^edge\\.cdn-(a)\\.example\\.$ edge.cdn-b.example."])
def test_rewrite_cname_retargets_and_resolves_the_new_target(rule: str, tmp_path: Path) -> None:
    with CnameUpstream() as up:
        corefile = f".:53 {{\n    rewrite {rule}\n    forward . 127.0.0.1:{up.port}\n}}\n"
        for k in serve(corefile, tmp_path):
            r = k.udp("www.example.")
            got = [(rr.name.to_text(), dns.rdatatype.to_text(rr.rdtype), rd.to_text())
                   for rr in r.answer for rd in rr]
            assert got == [("www.example.", "CNAME", "edge.cdn-b.example."),
                           ("edge.cdn-b.example.", "A", "192.0.2.8")]
            assert up.count("edge.cdn-b.example.") == 1
            # a reply without a matching CNAME is left alone
            other = k.udp("edge.cdn-b.example.")
            assert [rd.address for rr in other.answer for rd in rr] == ["192.0.2.8"]


# -- loadbalance weighted: weights from a file, reloaded live ---------------------------------------


def test_loadbalance_weighted_leads_by_weight_and_reloads(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    shutil.copytree(DEMO, manifests, ignore=shutil.ignore_patterns("Corefile", "*.md"))
    (manifests / "pool.yaml").write_text(POOL_YAML)
    weights = tmp_path / "weights"
    name = "pool.default.svc.cluster.local."
    weights.write_text(f"{name}\n10.244.7.3 255\n")
    corefile = f"""\
        .:53 {{
            loadbalance weighted {weights} {{
                reload 100ms
            }}
            kubernetes cluster.local {{
                manifests {manifests}
            }}
        }}
        """

    def leaders(k: Running) -> list[str]:
        # the fast path hands out a cycle of 8 stored orders: one walk of it
        return [k.udp(name).answer[0][0].address for _ in range(8)]

    for k in serve(corefile, tmp_path):
        first = leaders(k)
        assert first.count("10.244.7.3") >= 7  # 255 of 259
        weights.write_text(f"{name}\n10.244.7.5 255\n10.244.7.3 1\n")
        deadline = time.monotonic() + 5
        while leaders(k).count("10.244.7.5") < 7:
            assert time.monotonic() < deadline, "the new weights never took effect"
            time.sleep(0.05)
