"""The listen address of health, ready and prometheus: one parser (kdns/plugins/http.py) for
all three, what it accepts, the canonical form the server binds, and located errors; then a
real listener on the address a port-less argument names."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.plugins import registry
from kdns.plugins.http import join_addr, split_addr
from kdns.plugins.setup_context import SetupContext
from kdns.server.httpd import HttpEndpoint
from tests.ports import free_tcp_port

PLUGINS = {"health": (":8080", 8080), "ready": (":8181", 8181),
           "prometheus": ("localhost:9153", 9153)}


@pytest.mark.parametrize("text,default,expected", [
    (":8080", 1, ("", 8080)),
    ("127.0.0.1:8181", 1, ("127.0.0.1", 8181)),
    ("localhost:9153", 1, ("localhost", 9153)),
    ("[::1]:9153", 1, ("::1", 9153)),
    ("127.0.0.1", 8080, ("127.0.0.1", 8080)),
    ("[::1]", 8181, ("::1", 8181)),
    ("::1", 8181, ("::1", 8181)),
    ("fd00::53", 9153, ("fd00::53", 9153)),
    ("dns-probe.local", 8080, ("dns-probe.local", 8080)),
    ("0.0.0.0:0", 1, ("0.0.0.0", 0)),
])
def test_split_accepts(text: str, default: int, expected: tuple[str, int]) -> None:
    assert split_addr(text, default) == expected


@pytest.mark.parametrize("text,message", [
    (":http", "port must be 0..65535"),
    ("127.0.0.1:65536", "port must be 0..65535"),
    ("127.0.0.1:", "port must be 0..65535"),
    ("[::1", "missing ']'"),
    ("[::1]9153", "expected ':PORT'"),
    ("[127.0.0.1]:80", "not an IPv6 address"),
    ("fd00::53:x", "[ADDRESS]:PORT"),
    ("a b:80", "not a host name"),
    ("-bad-:80", "not a host name"),
])
def test_split_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        split_addr(text, 8080)


@pytest.mark.parametrize("host,port,text", [("", 8080, ":8080"), ("::1", 53, "[::1]:53"),
                                            ("127.0.0.1", 0, "127.0.0.1:0")])
def test_join_is_the_inverse_of_split(host: str, port: int, text: str) -> None:
    assert join_addr(host, port) == text
    assert split_addr(text, 1) == (host, port)


def _setup(line: str) -> Any:
    block = parse_corefile(f".:53 {{\n    {line}\n}}\n", "Corefile")[0]
    d = block.directives[0]
    func = registry.setup_func(d.name.text)
    assert func is not None
    return func(d, SetupContext(block.keys, Path("."), process={}))


@pytest.mark.parametrize("plugin", sorted(PLUGINS))
@pytest.mark.parametrize("arg,canonical", [
    ("", None), ("127.0.0.1", "127.0.0.1:{port}"), ("[::1]", "[::1]:{port}"),
    ("::1", "[::1]:{port}"), ("127.0.0.1:1234", "127.0.0.1:1234"), (":1234", ":1234"),
])
def test_each_plugin_binds_the_canonical_address(plugin: str, arg: str,
                                                 canonical: str | None) -> None:
    default, port = PLUGINS[plugin]
    handler = _setup(f"{plugin} {arg}".strip())
    addr = handler.addr
    assert addr == (canonical.format(port=port) if canonical else default)
    assert {r.addr for r in handler.routes} == {addr}


@pytest.mark.parametrize("plugin", sorted(PLUGINS))
@pytest.mark.parametrize("arg,where,message", [
    (":http", "2:{col}", "port must be 0..65535"),
    ("[::1", "2:{col}", "missing ']'"),
    ("127.0.0.1:1 :2", "2:{col2}", "expected at most one address"),
])
def test_each_plugin_reports_a_bad_address_where_it_is(plugin: str, arg: str, where: str,
                                                       message: str) -> None:
    col = 5 + len(plugin) + 1
    col2 = col + len(arg.split()[0]) + 1
    with pytest.raises(ConfigError) as exc:
        _setup(f"{plugin} {arg}")
    assert str(exc.value).startswith(f"Corefile:{where.format(col=col, col2=col2)}: {plugin}: ")
    assert message in str(exc.value)


def test_a_port_less_address_is_served_on_the_plugins_port() -> None:
    # Before one parser, setup checked "127.0.0.1" with the plugin's default port but the
    # listener parsed it again with port 80. Bind the canonical address of a free port.
    free = free_tcp_port()
    handler = _setup(f"health 127.0.0.1:{free}")
    assert handler.addr == f"127.0.0.1:{free}"
    ep = HttpEndpoint(handler.addr, list(handler.routes))
    ep.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{free}/health", timeout=3) as r:
            assert r.status == 200 and r.read() == b"OK"
    finally:
        ep.stop()
    # And the port-less form resolves to the plugin's default, never to HTTP's 80.
    assert split_addr(_setup("health 127.0.0.1").addr, 80) == ("127.0.0.1", 8080)
