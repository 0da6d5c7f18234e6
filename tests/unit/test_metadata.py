"""metadata: lazy collection from providers, the kubernetes labels, and setup errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from dnslib import DNSRecord

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.plugins.base import Metadata, Request
from kdns.plugins.kubernetes.metadata import NameParts, labels, parse_name
from kdns.plugins.metadata.setup import setup
from kdns.plugins.setup_context import SetupContext


class Provider:
    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def metadata(self, req: Request) -> dict[str, Callable[[], str]]:
        self.calls += 1
        return {"counting/name": lambda: req.qname_lower}


def _req(name: str) -> Request:
    return Request(DNSRecord.question(name), name, name.lower(), 1, 1, ("127.0.0.1", 1), "udp",
                   "dns://:53", ".", 512)


def test_providers_are_asked_once_and_only_when_read() -> None:
    p = Provider()
    md = Metadata(_req("A.example."), (p,))
    assert p.calls == 0
    fn = md.get("counting/name")
    assert fn is not None and fn() == "a.example."
    assert md.get("counting/other") is None
    assert p.calls == 1


@pytest.mark.parametrize(("name", "want"), [
    ("kubia.default.svc.cluster.local.", NameParts("svc", "default", "kubia")),
    ("_http._tcp.kubia.default.svc.cluster.local.",
     NameParts("svc", "default", "kubia", port="http", protocol="tcp")),
    ("web-0.nginx.shop.svc.cluster.local.", NameParts("svc", "shop", "nginx", endpoint="web-0")),
    ("10-244-1-10.default.pod.cluster.local.", NameParts("pod", "default", "10-244-1-10")),
    ("default.svc.cluster.local.", NameParts("svc", "default")),
    ("svc.cluster.local.", NameParts()),
    ("cluster.local.", NameParts()),
    ("a.b.c.kubia.default.svc.cluster.local.", None),
    ("kubia.default.cluster.local.", None),
    ("www.example.org.", None),
])
def test_name_parts_as_coredns_parses_them(name: str, want: NameParts | None) -> None:
    zone = "cluster.local." if name.endswith("cluster.local.") else None
    assert parse_name(name, zone) == want


def _values(name: str, zone: str | None, pod: tuple[str, str] | None) -> dict[str, str]:
    return {k: f() for k, f in labels(name, zone, lambda: pod).items()}


def test_kubernetes_labels_as_coredns_sets_them() -> None:
    assert _values("_dns._udp.kube-dns.kube-system.svc.cluster.local.", "cluster.local.",
                   ("shop", "web-0")) == {
        "kubernetes/kind": "svc", "kubernetes/namespace": "kube-system",
        "kubernetes/service": "kube-dns", "kubernetes/endpoint": "",
        "kubernetes/port-name": "dns", "kubernetes/protocol": "udp",
        "kubernetes/client-namespace": "shop", "kubernetes/client-pod-name": "web-0"}
    # Under the zone but not a cluster shape: the parse error (and still who asked).
    assert _values("foo.bar.notapod.cluster.local.", "cluster.local.", ("shop", "web-0")) == {
        "kubernetes/parse-error": "invalid query name", "kubernetes/client-namespace": "shop",
        "kubernetes/client-pod-name": "web-0"}
    # Outside the zones: only who asked; nothing at all from an unknown client.
    assert _values("example.com.", None, ("shop", "web-0")) == {
        "kubernetes/client-namespace": "shop", "kubernetes/client-pod-name": "web-0"}
    assert _values("example.com.", None, None) == {}
    assert "kubernetes/client-namespace" not in _values("a.b.svc.cluster.local.",
                                                        "cluster.local.", None)


def _setup(text: str) -> object:
    blocks = parse_corefile(f"example.:53 {{\n{text}\n}}\n", "Corefile")
    return setup(blocks[0].directives[0], SetupContext(blocks[0].keys, Path(".")))


def test_zones_default_to_the_block() -> None:
    assert _setup("metadata").cfg.zones == ("example.",)  # type: ignore[attr-defined]
    assert _setup("metadata a.example b.example.").cfg.zones == (  # type: ignore[attr-defined]
        "a.example.", "b.example.")


MAP = """metadata {
    map "{{ .Type }} {{ .IP }}" key1 key2 {
        "A 127.0.0.1"    val11    val12
        "AAAA 127.0.0.1" "val 21" "val 22"
        default          val31    val32
    }
}"""


def _labels(h: object, req: Request) -> dict[str, str]:
    return {k: f() for k, f in h.metadata(req).items()}  # type: ignore[attr-defined]


def test_map_rows_and_default() -> None:
    h = _setup(MAP)
    a, aaaa, mx = _req("x.example."), _req("x.example."), _req("x.example.")
    aaaa.qtype, mx.qtype = 28, 15
    assert _labels(h, a) == {"metadata/key1": "val11", "metadata/key2": "val12"}
    assert _labels(h, aaaa) == {"metadata/key1": "val 21", "metadata/key2": "val 22"}
    assert _labels(h, mx) == {"metadata/key1": "val31", "metadata/key2": "val32"}
    no_default = _setup("metadata {\n map {{.Type}} server {\n  A 192.0.2.1\n }\n}")
    assert _labels(no_default, mx) == {}
    rcode = _setup("metadata {\n map {{.Type}} server {\n  A 192.0.2.1\n  default SERVFAIL\n }\n}")
    assert _labels(rcode, mx) == {"metadata/error": "no values found for {{.Type}} 'MX'"}
    assert rcode.cfg.map.rcode_on_miss == 2  # type: ignore[attr-defined]


@pytest.mark.parametrize(("text", "where", "message"), [
    ("metadata {\n map\n}", "3:2", "map: missing source"),
    ("metadata {\n map {{end}} k {\n  A v\n }\n}", "3:6", "map: invalid source"),
    ("metadata {\n map {{.LocalIP}} k {\n  A v\n }\n}", "3:6", "not .LocalIP"),
    ("metadata {\n map {{.Type}} {\n  A v\n }\n}", "3:2", "missing label(s)"),
    ("metadata {\n map {{.Type}} k1 k2\n}", "3:2", "missing value(s)"),
    ("metadata {\n map {{.Type}} k1 k2 {\n }\n}", "3:2", "missing value(s)"),
    ("metadata {\n map {{.Type}} k1 k2 {\n  A v1 v2 v3\n }\n}", "4:3",
     "number of values must match labels"),
    ("metadata {\n map {{.Type}} k1 k2 {\n  A v1 v2\n  default v\n }\n}", "5:3",
     "number of values must match labels"),
    ("metadata {\n map {{.Type}} k {\n  A v\n }\n map {{.IP}} k {\n  A v\n }\n}", "6:2",
     "only one map"),
    ("metadata {\n labels x\n}", "3:2", "unknown property 'labels'"),
    ("metadata example.com. {\n some_param\n}", "3:2", "unknown property 'some_param'"),
    ("metadata bad..zone", "2:10", "invalid zone"),
])
def test_setup_errors_are_located(text: str, where: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _setup(text)
    assert str(exc.value).startswith(f"Corefile:{where}: metadata: "), str(exc.value)
    assert message in str(exc.value)
