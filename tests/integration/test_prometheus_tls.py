"""prometheus { tls ... }: /metrics over HTTPS on 127.0.0.1, with client certificates, using the
test CA and certificates made with the openssl CLI (see test_forward_tls)."""

from __future__ import annotations

import shutil
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import start_server
from tests.integration.test_forward_tls import pki
from tests.ports import free_tcp_port

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")

__all__ = ["pki"]


def fetch(port: int, ctx: ssl.SSLContext) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", timeout=5,
                                context=ctx) as r:
        return int(r.status), r.read()


def client(pki: Path, *, cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert:
        ctx.load_cert_chain(pki / "client.pem", pki / "client.key")
    return ctx


def test_metrics_over_https_need_a_client_certificate(pki: Path, tmp_path: Path) -> None:
    port = free_tcp_port()
    server = start_server(f"""\
        .:53 {{
            prometheus 127.0.0.1:{port} {{
                tls {pki}/server.pem {pki}/server.key {{
                    client_ca {pki}/ca.pem
                }}
            }}
            hosts {{
                192.0.2.1 a.example
            }}
        }}
        """, tmp_path)
    try:
        status, body = fetch(port, client(pki, cert=True))
        assert status == 200 and b"coredns_dns_requests_total" in body
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            fetch(port, client(pki, cert=False))  # TLS 1.3: refused after the handshake
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP: no answer
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        # the listener survives failed clients
        assert fetch(port, client(pki, cert=True))[0] == 200
    finally:
        server.stop()


def test_client_auth_none(pki: Path, tmp_path: Path) -> None:
    port = free_tcp_port()
    server = start_server(f"""\
        .:53 {{
            prometheus 127.0.0.1:{port} {{
                tls {pki}/server.pem {pki}/server.key {{
                    client_auth none
                    min_version 1.2
                }}
            }}
            hosts {{
                192.0.2.1 a.example
            }}
        }}
        """, tmp_path)
    try:
        assert fetch(port, client(pki, cert=False))[0] == 200
    finally:
        server.stop()
