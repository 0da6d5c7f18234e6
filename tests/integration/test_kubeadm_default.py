"""The kubeadm default Corefile, as kubeadm writes it, answers cluster names from the view and
other names through forward (reference §2.2; issue acceptance: loads unchanged).

The one substitution is the path of resolv.conf: the test cannot edit the machine's, so it
writes its own naming an upstream on 127.0.0.2:53 (resolv.conf has no port syntax, hence
port 53, hence root). Nothing leaves the machine.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from kdns.config.parser import parse_corefile
from kdns.defaults import DEFAULT_COREFILE
from kdns.plugins.setup_context import Overrides
from kdns.server.app import KdnsServer, ServeOptions
from tests.conftest import DEMO

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="the resolv.conf upstream needs port 53 on 127.0.0.2")


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()


def test_kubeadm_default_corefile_serves_cluster_and_forwarded_names(tmp_path: Path) -> None:
    upstream = KdnsServer(
        parse_corefile("example.test:53 {\n    hosts {\n        192.0.2.99 ext.example.test\n"
                       "    }\n}\n", "upstream"),
        ServeOptions(config_dir=tmp_path, dns_addr="127.0.0.2")).build()
    upstream.start()
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.2\n")
    text = DEFAULT_COREFILE.replace("/etc/resolv.conf", str(resolv))
    assert text.count("\n") == DEFAULT_COREFILE.count("\n")
    server = KdnsServer(parse_corefile(text, "kubeadm-Corefile"),
                        ServeOptions(config_dir=tmp_path, overrides=Overrides(manifests=str(DEMO)),
                                     dns_addr="127.0.0.1", dns_port=0)).build()
    server.start()
    try:
        port = server.listeners[0].port

        def ask(name: str) -> dns.message.Message:
            return dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port,
                                 timeout=3)

        assert [r.address for r in ask("kubia.default.svc.cluster.local.").answer[0]] == [
            "10.98.237.175"]
        assert ask("nope.default.svc.cluster.local.").rcode() == dns.rcode.NXDOMAIN
        ext = ask("ext.example.test.")
        assert [r.address for r in ext.answer[0]] == ["192.0.2.99"]
        assert ask("ext.example.test.").answer[0].ttl <= ext.answer[0].ttl  # from cache
        assert _get(8181, "/ready")[0] == 200
        assert _get(8080, "/health") == (200, b"OK")
        status, metrics = _get(9153, "/metrics")
        assert status == 200
        assert b'coredns_dns_responses_total{plugin="forward"' in metrics
        assert b'coredns_dns_responses_total{plugin="kubernetes"' in metrics
    finally:
        server.stop()
        upstream.stop()
