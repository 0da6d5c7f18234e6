"""metadata over real sockets: the kubernetes plugin's labels in log lines and templates,
with the asking pod identified by its address (a pod on 127.0.0.5 in the demo cluster)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from kdns.plugins.base import Request
from kdns.server.app import KdnsServer
from tests.conftest import DEMO, Running, start_server
from tests.integration.test_forward import FakeUpstream

CLIENT_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: client-7d9f
  namespace: shop
spec:
  containers: [{name: c, image: busybox}]
status:
  phase: Running
  podIP: 127.0.0.5
  podIPs: [{ip: 127.0.0.5}]
"""
KUBIA = "kubia.default.svc.cluster.local."
FORMAT = ('"{/kubernetes/client-namespace}/{/kubernetes/client-pod-name} {/kubernetes/kind} '
          '{/kubernetes/namespace} {/kubernetes/service} {/kubernetes/port-name} '
          '{/kubernetes/protocol} {/kubernetes/parse-error} {name}"')


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    out = tmp_path / "manifests"
    shutil.copytree(DEMO, out, ignore=shutil.ignore_patterns("Corefile", "*.md"))
    (out / "client.yaml").write_text(CLIENT_POD)
    return out


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    up = FakeUpstream({"www.example.org.": "192.0.2.7"})
    yield up
    up.close()


Serve = Callable[[str], tuple[Running, Callable[[], list[str]]]]


@pytest.fixture
def serve(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Serve]:
    caplog.set_level(logging.INFO, logger="kdns.log")
    servers: list[KdnsServer] = []

    def start(corefile: str) -> tuple[Running, Callable[[], list[str]]]:
        server = start_server(corefile, tmp_path)
        servers.append(server)

        def lines() -> list[str]:
            out = [r.getMessage() for r in caplog.records if r.name == "kdns.log"]
            caplog.clear()
            return out
        return Running(server), lines

    yield start
    for s in servers:
        s.stop()


def ask(r: Running, qname: str, qtype: str = "A", source: str = "127.0.0.5"
        ) -> dns.message.Message:
    q = dns.message.make_query(qname, qtype)
    return dns.query.udp(q, "127.0.0.1", port=r.port, source=source, timeout=3)


def corefile(manifests: Path, upstream: FakeUpstream, pods: str = "verified",
             metadata: str = "metadata", fmt: str = FORMAT) -> str:
    return f""".:53 {{
    {metadata}
    log . {fmt}
    template IN TXT svc.cluster.local {{
      match ^whoami[.]
      fallthrough
      answer "{{{{ .Name }}}} 0 IN TXT \\"{{{{ .Meta \\"kubernetes/client-namespace\\" }}}}\\" \\"{{{{ .Remote }}}}\\""
    }}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        manifests {manifests}
        pods {pods}
        fallthrough in-addr.arpa ip6.arpa
    }}
    forward . {upstream.addr}
}}
"""  # noqa: E501


def test_kubernetes_labels_in_log_lines(serve: Serve, manifests: Path,
                                        upstream: FakeUpstream) -> None:
    r, lines = serve(corefile(manifests, upstream))
    ask(r, KUBIA)
    ask(r, "_http._tcp." + KUBIA, "SRV")
    ask(r, KUBIA, source="127.0.0.9")  # not a pod's address
    ask(r, "www.example.org.")
    assert lines() == [
        f"shop/client-7d9f svc default kubia   - {KUBIA}",
        f"shop/client-7d9f svc default kubia http tcp - _http._tcp.{KUBIA}",
        f"-/- svc default kubia   - {KUBIA}",
        # Not a cluster name: only who asked.
        "shop/client-7d9f - - - - - - www.example.org.",
    ]


def test_client_namespace_needs_pods_verified(serve: Serve, manifests: Path,
                                              upstream: FakeUpstream) -> None:
    r, lines = serve(corefile(manifests, upstream, pods="insecure"))
    ask(r, KUBIA)
    assert lines() == [f"-/- svc default kubia   - {KUBIA}"]


def test_without_the_metadata_plugin_labels_are_dashes(serve: Serve, manifests: Path,
                                                       upstream: FakeUpstream) -> None:
    r, lines = serve(corefile(manifests, upstream, metadata=""))
    ask(r, KUBIA)
    assert lines() == [f"-/- - - - - - - {KUBIA}"]


def test_template_reads_metadata_and_is_not_replayed_to_another_client(
        serve: Serve, manifests: Path, upstream: FakeUpstream) -> None:
    r, _ = serve(corefile(manifests, upstream))
    for source, ns in (("127.0.0.5", b"shop"), ("127.0.0.9", b""), ("127.0.0.5", b"shop")):
        m = ask(r, "whoami.default.svc.cluster.local.", "TXT", source=source)
        assert m.answer[0][0].strings == (ns, source.encode())
    # Other TXT names under the zone fall through to the cluster.
    assert ask(r, KUBIA, "TXT").rcode() == 0


def test_labels_are_computed_only_when_read(serve: Serve, manifests: Path,
                                            upstream: FakeUpstream) -> None:
    r, lines = serve(corefile(manifests, upstream, fmt="{common}"))
    md = next(h for b in r.server.blocks for h in b.handlers if h.name == "metadata")
    (provider,) = md.providers
    calls: list[str] = []
    real = provider.metadata

    class Counting:
        name = provider.name

        def metadata(self, req: Request) -> dict[str, Callable[[], str]]:
            calls.append(req.qname_lower)
            return real(req)

    md.providers = (Counting(),)
    for _ in range(3):
        ask(r, KUBIA)
    assert len(lines()) == 3 and calls == []


def test_map_labels_in_log_lines_and_rcode_on_miss(serve: Serve, upstream: FakeUpstream) -> None:
    r, lines = serve(f""". {{
    metadata {{
        map {{{{.IP}}}}   VRF  comment {{
            127.0.0.1 VRF1 local
            ::1       VRF2 "local IPv6"
            default   VRF3 default
        }}
    }}
    log . "{{/metadata/VRF}} {{/metadata/comment}} {{name}}"
    forward . {upstream.addr}
}}
""")
    ask(r, "www.example.org.", source="127.0.0.1")
    ask(r, "www.example.org.", source="127.0.0.7")
    assert lines() == ["VRF1 local www.example.org.", "VRF3 default www.example.org."]
    strict, _ = serve(f""". {{
    metadata {{
        map "{{{{ .Type }}}}" server   port {{
            A             192.0.2.1  53
            AAAA          192.0.2.2  53
            default       REFUSED
        }}
    }}
    forward . {upstream.addr}
}}
""")
    assert ask(strict, "www.example.org.", "A").rcode() == 0
    assert ask(strict, "www.example.org.", "PTR").rcode() == dns.rcode.REFUSED
    assert upstream.seen("www.example.org.") and not [
        s for s in upstream.seen("www.example.org.") if s[2] == "PTR"]
