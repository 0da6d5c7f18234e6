"""kubernetes setup: every option, its defaults, and errors that name file:line:col."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.k8s.selectors import parse_selector
from kdns.plugins.kubernetes import setup as ksetup
from kdns.plugins.kubernetes.handler import KubernetesHandler
from kdns.plugins.kubernetes.setup import KubernetesConfig, parse_config, setup
from kdns.plugins.setup_context import Overrides, SetupContext

HEAD = ".:53 {\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n"


@pytest.fixture(autouse=True)
def _no_hostname_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    # Resolving our own hostname could leave the machine; the tests pin the answer.
    monkeypatch.setattr(ksetup, "local_addresses", lambda: ("192.0.2.1",))


def _parse(text: str, overrides: Overrides | None = None) -> KubernetesConfig:
    block = parse_corefile(text, "Corefile")[0]
    ctx = SetupContext(keys=block.keys, config_dir=Path("/etc/kdns"),
                       overrides=overrides or Overrides())
    (d,) = [d for d in block.directives if d.name.text == "kubernetes"]
    return parse_config(d, ctx)


def _opts(*lines: str, overrides: Overrides | None = None) -> KubernetesConfig:
    body = "".join(f"        {line}\n" for line in lines)
    return _parse(HEAD + body + "    }\n}\n", overrides)


def test_defaults() -> None:
    cfg = _opts()
    assert cfg.zones == ("cluster.local.", "in-addr.arpa.", "ip6.arpa.")
    assert cfg.primary_zone == "cluster.local."
    assert (cfg.pods, cfg.ttl, cfg.startup_timeout) == ("disabled", 5, 5.0)
    assert cfg.fallthrough is None and not cfg.fallthrough_covers("x.in-addr.arpa.")
    assert not cfg.endpoint_pod_names and not cfg.noendpoints and not cfg.ignore_empty_service
    assert cfg.kinds == ("services", "endpointslices", "namespaces")
    assert cfg.local_ips == ("192.0.2.1",)
    assert (cfg.endpoint, cfg.kubeconfig, cfg.manifests, cfg.tls) == (None, None, None, None)


def test_every_option() -> None:
    cfg = _opts(
        "endpoint https://10.0.0.1:6443",
        "tls cert.pem key.pem ca.pem",
        "namespaces Default kube-system",
        "labels environment in (staging, qa),application=nginx",
        "pods verified",
        "endpoint_pod_names",
        "ttl 30",
        "noendpoints",
        "fallthrough in-addr.arpa ip6.arpa",
        "ignore empty_service",
        "startup_timeout 1m30s",
        "apiserver_qps 12.5",
        "apiserver_burst 20",
        "apiserver_max_inflight 0",
    )
    assert cfg.endpoint == "https://10.0.0.1:6443"
    assert cfg.tls == ("cert.pem", "key.pem", "ca.pem")
    assert cfg.namespaces == frozenset({"default", "kube-system"})
    assert cfg.labels == str(parse_selector("environment in (staging, qa),application=nginx"))
    assert cfg.pods == "verified" and cfg.endpoint_pod_names and cfg.ttl == 30
    assert cfg.noendpoints and cfg.ignore_empty_service
    assert cfg.fallthrough == ("in-addr.arpa.", "ip6.arpa.")
    assert cfg.fallthrough_covers("1.0.0.10.in-addr.arpa.")
    assert not cfg.fallthrough_covers("x.cluster.local.")
    assert cfg.startup_timeout == 90.0
    assert (cfg.apiserver_qps, cfg.apiserver_burst, cfg.apiserver_max_inflight) == (12.5, 20, 0)
    assert cfg.kinds == ("services", "namespaces", "pods")
    specs = {s.kind: s.label_selector for s in cfg.resource_specs()}
    assert specs == {"services": cfg.labels, "namespaces": None, "pods": cfg.labels}


def test_namespace_labels_filter_the_namespace_watch() -> None:
    cfg = _opts("namespace_labels team=dns")
    assert {s.kind: s.label_selector for s in cfg.resource_specs()}["namespaces"] == "team=dns"


def test_kubeconfig_and_fallthrough_everywhere() -> None:
    cfg = _opts("kubeconfig /k/config staging", "fallthrough", "startup_timeout 500ms")
    assert (cfg.kubeconfig, cfg.context) == ("/k/config", "staging")
    assert cfg.fallthrough == () and cfg.fallthrough_covers("anything.cluster.local.")
    assert cfg.startup_timeout == 0.5


def test_manifests_are_relative_to_the_corefile() -> None:
    assert _opts("manifests demo/cluster.yaml").manifests == "/etc/kdns/demo/cluster.yaml"
    assert _opts("manifests /abs.yaml").manifests == "/abs.yaml"


def test_zones_from_block_keys_and_cidrs() -> None:
    cfg = _parse("cluster.local:53 10.0.0.0/24 {\n    kubernetes\n}\n")
    assert cfg.zones == ("cluster.local.", "0.0.10.in-addr.arpa.")
    cfg = _parse(".:53 {\n    kubernetes Cluster.Local 10.0.0.0/23 fd00:10::/32\n}\n")
    assert cfg.zones == ("cluster.local.", "0.0.10.in-addr.arpa.", "1.0.10.in-addr.arpa.",
                         "0.1.0.0.0.0.d.f.ip6.arpa.")
    cfg = _parse(".:53 {\n    kubernetes 10.0.0.0/8 example.org cluster.local\n}\n")
    assert cfg.primary_zone == "example.org."


@pytest.mark.parametrize(("overrides", "lines", "want"), [
    (Overrides(kubeconfig="/o/kc", context="c1"), (), ("/o/kc", "c1", None, None)),
    (Overrides(manifests="/o/m.yaml"), (), (None, None, None, "/o/m.yaml")),
    (Overrides(context="c2"), (), (None, "c2", None, None)),
    (Overrides(kubeconfig="/o/kc"), ("endpoint https://api:6443",),
     (None, None, "https://api:6443", None)),
    (Overrides(manifests="/o/m.yaml"), ("kubeconfig /k",), ("/k", None, None, None)),
    (Overrides(kubeconfig="/o/kc"), ("manifests m.yaml",), (None, None, None, "/etc/kdns/m.yaml")),
])
def test_overrides_fill_in_only_when_the_corefile_is_silent(
        overrides: Overrides, lines: tuple[str, ...], want: tuple[Any, ...]) -> None:
    cfg = _opts(*lines, overrides=overrides)
    assert (cfg.kubeconfig, cfg.context, cfg.endpoint, cfg.manifests) == want


ERRORS = [
    (("ttl 9000",), "Corefile:3:9: kubernetes: ttl must be in [0, 3600], got 9000"),
    (("ttl -1",), "Corefile:3:9: kubernetes: ttl must be in [0, 3600], got -1"),
    (("ttl abc",), "Corefile:3:9: kubernetes: ttl must be an integer, got 'abc'"),
    (("ttl",), "Corefile:3:9: kubernetes: ttl takes exactly 1 argument, got 0"),
    (("ttl 1 2",), "Corefile:3:9: kubernetes: ttl takes exactly 1 argument, got 2"),
    (("tls a b",), "Corefile:3:9: kubernetes: tls takes exactly 3 arguments, got 2"),
    (("kubeconfig",), "Corefile:3:9: kubernetes: kubeconfig takes 1 to 2 arguments, got 0"),
    (("kubeconfig a b c",), "Corefile:3:9: kubernetes: kubeconfig takes 1 to 2 arguments, got 3"),
    (("endpoint",), "Corefile:3:9: kubernetes: endpoint takes at least 1 argument, got 0"),
    (("namespaces",), "Corefile:3:9: kubernetes: namespaces takes at least 1 argument, got 0"),
    (("pods foo",),
     "Corefile:3:14: kubernetes: pods must be one of disabled, insecure, verified, got 'foo'"),
    (("ignore foo",), "Corefile:3:16: kubernetes: ignore takes 'empty_service', got 'foo'"),
    (("endpoint_pod_names x",),
     "Corefile:3:9: kubernetes: endpoint_pod_names takes no arguments, got 1"),
    (("noendpoints x",), "Corefile:3:9: kubernetes: noendpoints takes no arguments, got 1"),
    (("manifests",), "Corefile:3:9: kubernetes: manifests takes exactly 1 argument, got 0"),
    (("foo bar",), "Corefile:3:9: kubernetes: unknown property 'foo'"),
    (("resyncperiod 1m",), "Corefile:3:9: kubernetes: unknown property 'resyncperiod'"),
    (("ttl 5", "upstream"), "Corefile:4:9: kubernetes: unknown property 'upstream'"),
    (("multicluster clusterset.local",),
     "Corefile:3:22: kubernetes: multicluster zone 'clusterset.local.' is not one of the "
     "plugin's zones (cluster.local., in-addr.arpa., ip6.arpa.); list it after "
     "'kubernetes' too"),
    (("zonal",),
     "Corefile:3:9: kubernetes: zonal (zone-scoped headless names) is not supported by kdns yet"),
    (("namespaces a", "namespace_labels x=y"),
     "Corefile:4:9: kubernetes: namespaces and namespace_labels cannot both be set"),
    (("manifests m.yaml", "endpoint https://x"),
     "Corefile:3:9: kubernetes: manifests cannot be combined with endpoint or kubeconfig"),
    (("startup_timeout 5",),
     "Corefile:3:9: kubernetes: startup_timeout: invalid duration '5' (use e.g. 500ms, 5s, 1m)"),
    (("apiserver_qps x",), "Corefile:3:9: kubernetes: apiserver_qps must be a number, got 'x'"),
    (("apiserver_qps -1",), "Corefile:3:9: kubernetes: apiserver_qps must be >= 0, got -1"),
    (("apiserver_qps nan",), "Corefile:3:9: kubernetes: apiserver_qps must be >= 0, got nan"),
    (("apiserver_burst 1.5",),
     "Corefile:3:9: kubernetes: apiserver_burst must be an integer, got '1.5'"),
    (("apiserver_max_inflight -2",),
     "Corefile:3:9: kubernetes: apiserver_max_inflight must be >= 0, got -2"),
    (("ttl 30 {", "}"), "Corefile:3:9: kubernetes: ttl does not take a block"),
]


@pytest.mark.parametrize(("lines", "message"), ERRORS, ids=[e[1].split(": ", 2)[2] for e in ERRORS])
def test_errors_name_the_place(lines: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _opts(*lines)
    assert str(exc.value) == message


def test_selector_errors_name_the_option() -> None:
    with pytest.raises(ConfigError) as exc:
        _opts("labels a in (")
    assert str(exc.value).startswith("Corefile:3:9: kubernetes: labels: label selector")


@pytest.mark.parametrize(("text", "message"), [
    (".:53 {\n    kubernetes in-addr.arpa\n}\n",
     "Corefile:2:5: kubernetes: at least one non-reverse zone is required"),
    ("10.0.0.0/8 {\n    kubernetes\n}\n",
     "Corefile:2:5: kubernetes: at least one non-reverse zone is required"),
    (".:53 {\n    kubernetes cluster.local 10.0.0.0/33\n}\n",
     "Corefile:2:30: kubernetes: invalid CIDR '10.0.0.0/33': "),
    (".:53 {\n    kubernetes cluster..local\n}\n",
     "Corefile:2:16: kubernetes: invalid zone 'cluster..local'"),
])
def test_zone_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _parse(text)
    assert str(exc.value).startswith(message)


def test_setup_publishes_the_handler_once_per_block() -> None:
    block = parse_corefile(HEAD + "    }\n}\n", "Corefile")[0]
    ctx = SetupContext(keys=block.keys, config_dir=Path("/etc/kdns"))
    (d,) = block.directives
    handler = setup(d, ctx)
    assert isinstance(handler, KubernetesHandler) and ctx.shared["kubernetes"] is handler
    assert handler.name == "kubernetes" and handler.zones == handler.cfg.zones
    with pytest.raises(ConfigError, match=r"^Corefile:2:5: kubernetes: kubernetes may be used"):
        setup(d, ctx)


def test_local_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real function, with a pinned resolver
    fake = [
        (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("127.0.1.1", 0)),
        (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("10.1.2.3", 0)),
        (socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("fe80::1%eth0", 0, 0, 2)),
        (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("10.1.2.3", 0)),
    ]
    ksetup.local_addresses.cache_clear()
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: fake)
    try:
        assert ksetup.local_addresses() == ("10.1.2.3", "fe80::1")
        ksetup.local_addresses.cache_clear()

        def fail(*a: Any, **k: Any) -> Any:
            raise socket.gaierror("no such host")

        monkeypatch.setattr(socket, "getaddrinfo", fail)
        assert ksetup.local_addresses() == ("127.0.0.1",)
    finally:
        ksetup.local_addresses.cache_clear()


def test_readme_examples_parse() -> None:
    import re

    readme = (Path(ksetup.__file__).parent / "README.md").read_text()
    blocks = re.findall(r"```corefile\n(.*?)```", readme, re.S)
    assert len(blocks) >= 4
    for text in blocks:
        cfg = _parse(text)
        assert cfg.zones and cfg.ttl >= 0
