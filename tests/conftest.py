"""Shared fixtures: an in-process kdns on 127.0.0.1 (port 0) and a dnspython client for it."""

from __future__ import annotations

import socket
import struct
import textwrap
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest

from kdns.config.parser import parse_corefile
from kdns.server.app import KdnsServer, ServeOptions

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "zones" / "demo"


class Running:
    """A started server and helpers that speak DNS to it over real sockets."""

    def __init__(self, server: KdnsServer) -> None:
        self.server = server
        self.port = server.listeners[0].port

    def udp(self, qname: str, qtype: str = "A", **kw: object) -> dns.message.Message:
        q = dns.message.make_query(qname, qtype, **kw)  # type: ignore[arg-type]
        return dns.query.udp(q, "127.0.0.1", port=self.port, timeout=3)

    def tcp(self, qname: str, qtype: str = "A", **kw: object) -> dns.message.Message:
        q = dns.message.make_query(qname, qtype, **kw)  # type: ignore[arg-type]
        return dns.query.tcp(q, "127.0.0.1", port=self.port, timeout=3)

    def raw_udp(self, data: bytes, timeout: float = 1.0) -> bytes | None:
        """Send raw bytes; the reply bytes, or None when the server stays silent."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(data, ("127.0.0.1", self.port))
            try:
                return s.recv(65535)
            except TimeoutError:
                return None

    def raw_tcp(self, data: bytes, timeout: float = 2.0) -> bytes | None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(struct.pack("!H", len(data)) + data)
            head = s.recv(2)
            if len(head) < 2:
                return None
            size = struct.unpack("!H", head)[0]
            buf = b""
            while len(buf) < size:
                chunk = s.recv(size - len(buf))
                if not chunk:
                    break
                buf += chunk
            return buf


def start_server(corefile: str, tmp: Path, *, dns_port: int = 0) -> KdnsServer:
    text = textwrap.dedent(corefile)
    path = tmp / "Corefile"
    path.write_text(text)
    blocks = parse_corefile(text, str(path))
    server = KdnsServer(blocks, ServeOptions(config_dir=tmp, dns_addr="127.0.0.1",
                                             corefile=path, dns_port=dns_port)).build()
    server.start()
    return server


DEMO_COREFILE = f"""\
.:53 {{
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        manifests {DEMO}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
}}
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    server = start_server(DEMO_COREFILE, tmp_path_factory.mktemp("demo"))
    try:
        yield Running(server)
    finally:
        server.stop()
