"""k8s_external setup: CoreDNS's defaults and ranges, and located errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.plugins import registry
from kdns.plugins.k8s_external.handler import ExternalHandler
from kdns.plugins.k8s_external.setup import ExternalConfig, setup
from kdns.plugins.setup_context import SetupContext


def _setup(body: str, key: str = "example.org:53") -> ExternalHandler:
    block = parse_corefile(f"{key} {{\n    {body}\n}}\n", "Corefile", env={})[0]
    return setup(block.directives[0], SetupContext(block.keys, Path(".")))


@pytest.mark.parametrize(("body", "cfg"), [
    ("k8s_external", ExternalConfig(("example.org.",))),
    ("k8s_external Example.COM ext.local.", ExternalConfig(("example.com.", "ext.local."))),
    ("k8s_external {\n apex NS\n ttl 0\n headless\n fallthrough\n}",
     ExternalConfig(("example.org.",), "ns", 0, True, ())),
    ("k8s_external a.org {\n ttl 3600\n fallthrough b.a.org\n}",
     ExternalConfig(("a.org.",), ttl=3600, fallthrough=("b.a.org.",))),
])
def test_valid(body: str, cfg: ExternalConfig) -> None:
    assert _setup(body).cfg == cfg


def test_fallthrough_covers() -> None:
    assert not ExternalConfig(("a.",)).fallthrough_covers("x.a.")
    assert ExternalConfig(("a.",), fallthrough=()).fallthrough_covers("x.a.")
    only = ExternalConfig(("a.",), fallthrough=("b.a.",))
    assert only.fallthrough_covers("x.b.a.") and not only.fallthrough_covers("x.a.")


def test_registered_between_hosts_and_kubernetes() -> None:
    assert registry.setup_func("k8s_external") is setup
    assert registry.rank("hosts") < registry.rank("k8s_external") < registry.rank("kubernetes")


@pytest.mark.parametrize(("body", "where", "message"), [
    ("k8s_external {\n ttl 3601\n}", "3:6", "ttl must be in range [0, 3600]: 3601"),
    ("k8s_external {\n ttl -1\n}", "3:6", "ttl must be in range [0, 3600]: -1"),
    ("k8s_external {\n ttl soon\n}", "3:6", "ttl must be an integer"),
    ("k8s_external {\n ttl\n}", "3:2", "ttl needs one TTL"),
    ("k8s_external {\n apex a.b\n}", "3:7", "apex must be one DNS label"),
    ("k8s_external {\n apex\n}", "3:2", "apex needs one APEX label"),
    ("k8s_external {\n headless yes\n}", "3:11", "headless takes no arguments"),
    ("k8s_external {\n upstream\n}", "3:2", "unknown property 'upstream'"),
    ("k8s_external bad..zone", "2:18", "invalid zone"),
])
def test_invalid_is_located(body: str, where: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _setup(body)
    assert str(err.value).startswith(f"Corefile:{where}: k8s_external: {message}"), str(err.value)


def test_once_per_block() -> None:
    block = parse_corefile(".:53 {\n k8s_external a.org\n k8s_external b.org\n}\n", "Corefile",
                           env={})[0]
    ctx = SetupContext(block.keys, Path("."))
    setup(block.directives[0], ctx)
    with pytest.raises(ConfigError, match=r"Corefile:3:2: k8s_external: .* only once"):
        setup(block.directives[1], ctx)
