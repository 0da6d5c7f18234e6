"""forward over TLS and the other upstream forms, over real sockets on 127.0.0.1.

A DNS-over-TLS server (RFC 7858) made with the ``ssl`` module answers every A query with
192.0.2.44; its CA, server and client certificates are made by the test with the ``openssl``
CLI. Plain upstreams are dnslib responders that record where queries came from.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.rcode
import pytest
from dnslib import QTYPE, RCODE, RR, DNSRecord

from tests.conftest import Running, start_server

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")

ANSWER = "192.0.2.44"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for dns.test and 127.0.0.1, and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "1", "-subj", "/CN=kdns test CA", cwd=d)
    for name, ext in (("server", "subjectAltName=DNS:dns.test,IP:127.0.0.1\n"
                                 "extendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        (d / f"{name}.ext").write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,"
                                       "keyEncipherment\nsubjectKeyIdentifier=hash\n"
                                       "authorityKeyIdentifier=keyid,issuer\n" + ext)
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                f"{name}.csr", "-subj", f"/CN=kdns {name}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile",
                f"{name}.ext", cwd=d)
    return d


class DotServer:
    """DNS over TLS on 127.0.0.1: length-prefixed queries inside TLS, one thread per client."""

    def __init__(self, pki: Path, *, require_client_cert: bool) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki / "server.pem", pki / "server.key")
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(pki / "ca.pem")
        self.ctx = ctx
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.handshakes = 0
        self.resumed = 0
        self.failed_handshakes = 0
        self.queries = 0
        self.client_names: list[str] = []
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True, name="dot-accept")

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                raw, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(raw,), daemon=True, name="dot-conn")
            self.threads.append(t)
            t.start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(5)
        try:
            conn = self.ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            with self.lock:
                self.failed_handshakes += 1
            raw.close()
            return
        with self.lock:
            self.handshakes += 1
            self.resumed += int(conn.session_reused)
            peer = conn.getpeercert()
            if peer:
                self.client_names.append(dict(x[0] for x in peer["subject"])["commonName"])
        with conn:
            while not self.stopping.is_set():
                try:
                    head = conn.recv(2)
                    if len(head) < 2:
                        return
                    (size,) = struct.unpack("!H", head)
                    data = b""
                    while len(data) < size:
                        chunk = conn.recv(size - len(data))
                        if not chunk:
                            return
                        data += chunk
                except (OSError, ssl.SSLError):
                    return
                query = DNSRecord.parse(data)
                reply = query.reply()
                if query.q.qtype == QTYPE.A:
                    reply.add_answer(*RR.fromZone(f"{query.q.qname} 60 IN A {ANSWER}"))
                out = reply.pack()
                with self.lock:
                    self.queries += 1
                conn.sendall(struct.pack("!H", len(out)) + out)

    def __enter__(self) -> DotServer:
        self.acceptor.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.acceptor.join(5)
        self.sock.close()
        for t in self.threads:
            t.join(5)


class PlainUpstream:
    """UDP DNS on ``addr``: answers A with ``answer`` (NXDOMAIN for nx.*), records the source
    address of every query."""

    def __init__(self, answer: str, addr: str = "127.0.0.1") -> None:
        self.answer = answer
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((addr, 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]
        self.sources: list[str] = []
        self.names: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="plain-upstream")

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            query = DNSRecord.parse(data)
            name = str(query.q.qname).lower()
            self.sources.append(peer[0])
            self.names.append(name)
            reply = query.reply()
            if name.startswith("nx."):
                reply.header.rcode = RCODE.NXDOMAIN
            elif query.q.qtype == QTYPE.A:
                reply.add_answer(*RR.fromZone(f"{query.q.qname} 60 IN A {self.answer}"))
            self.sock.sendto(reply.pack(), peer)

    def __enter__(self) -> PlainUpstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.sock.close()


def serve(corefile: str, tmp: Path) -> Iterator[Running]:
    server = start_server(corefile, tmp)
    try:
        yield Running(server)
    finally:
        server.stop()


def forward_handler(k: Running) -> object:
    return next(h for h in k.server.handlers() if h.name == "forward")


def a_of(reply: object) -> list[str]:
    return [rd.address for rr in reply.answer for rd in rr]  # type: ignore[attr-defined]


def test_tls_with_client_certificate_and_pooled_connection(pki: Path, tmp_path: Path) -> None:
    with DotServer(pki, require_client_cert=True) as dot:
        corefile = f"""\
            .:53 {{
                forward . tls://127.0.0.1:{dot.port} {{
                    tls {pki}/client.pem {pki}/client.key {pki}/ca.pem
                    tls_servername dns.test
                }}
            }}
            """
        for k in serve(corefile, tmp_path):
            for name in ("a.example.", "b.example.", "c.example."):
                assert a_of(k.udp(name)) == [ANSWER]
            assert a_of(k.tcp("d.example.")) == [ANSWER]
            assert dot.queries == 4
            assert dot.handshakes == 1  # one TLS connection, pooled and reused
            assert dot.client_names == ["kdns client"]
            up = forward_handler(k).upstreams[0]  # type: ignore[attr-defined]
            assert up.conn_cache_hits["tcp-tls"] == 3 and up.conn_cache_misses["tcp-tls"] == 1


def test_tls_sessions_are_resumed_on_new_connections(pki: Path, tmp_path: Path) -> None:
    with DotServer(pki, require_client_cert=False) as dot:
        # expire 0: no pooling, so every query opens a new TLS connection
        corefile = f"""\
            .:53 {{
                forward . tls://127.0.0.1:{dot.port} {{
                    tls {pki}/ca.pem
                    expire 0s
                }}
            }}
            """
        for k in serve(corefile, tmp_path):
            for i in range(3):
                assert a_of(k.udp(f"n{i}.example.")) == [ANSWER]
            assert dot.handshakes == 3
            assert dot.resumed >= 1  # the server saw abbreviated handshakes
            up = forward_handler(k).upstreams[0]  # type: ignore[attr-defined]
            assert up.tls_resumed == dot.resumed


@pytest.mark.parametrize("options", [
    "tls {pki}/ca.pem\n tls_servername wrong.test",   # certificate is not for that name
    "tls_servername dns.test",                          # system CAs do not know the test CA
])
def test_tls_verification_failures_are_servfail(pki: Path, tmp_path: Path, options: str) -> None:
    with DotServer(pki, require_client_cert=False) as dot:
        corefile = (f".:53 {{\n forward . tls://127.0.0.1:{dot.port} {{\n"
                    f" {options.format(pki=pki)}\n max_fails 0\n }}\n}}\n")
        for k in serve(corefile, tmp_path):
            assert k.udp("a.example.").rcode() == dns.rcode.SERVFAIL
            assert dot.queries == 0


def test_hostname_upstream_is_resolved_at_start(tmp_path: Path) -> None:
    with PlainUpstream("192.0.2.61") as up:
        for k in serve(f".:53 {{\n forward . localhost:{up.port}\n}}\n", tmp_path):
            assert a_of(k.udp("www.example.")) == ["192.0.2.61"]
            labels = [u.label for u in forward_handler(k).upstreams]  # type: ignore[attr-defined]
            assert f"127.0.0.1:{up.port}" in labels


def test_source_address(tmp_path: Path) -> None:
    with PlainUpstream("192.0.2.62") as up:
        corefile = (f".:53 {{\n forward . 127.0.0.1:{up.port} {{\n"
                    f" source_address 127.0.0.2\n }}\n}}\n")
        for k in serve(corefile, tmp_path):
            assert a_of(k.udp("www.example.")) == ["192.0.2.62"]
            assert a_of(k.udp("two.example.")) == ["192.0.2.62"]
            assert up.sources == ["127.0.0.2", "127.0.0.2"]


def test_several_forwards_per_block_by_from_and_next(tmp_path: Path) -> None:
    with PlainUpstream("192.0.2.1") as corp, PlainUpstream("192.0.2.2") as other, \
            PlainUpstream("192.0.2.3") as last:
        corefile = f"""\
            .:53 {{
                forward corp.example 127.0.0.1:{corp.port}
                forward . 127.0.0.1:{other.port} {{
                    next NXDOMAIN
                }}
                forward . 127.0.0.1:{last.port}
            }}
            """
        for k in serve(corefile, tmp_path):
            assert a_of(k.udp("a.corp.example.")) == ["192.0.2.1"]
            assert a_of(k.udp("www.example.")) == ["192.0.2.2"]
            # the second forward's NXDOMAIN goes on to the third
            assert k.udp("nx.example.").rcode() == dns.rcode.NXDOMAIN
            assert other.names.count("nx.example.") == 1 and last.names == ["nx.example."]
            assert corp.names == ["a.corp.example."]
            assert [h.name for h in k.server.handlers()].count("forward") == 1


def test_tls_pool_max_idle_conns_and_expire(pki: Path, tmp_path: Path) -> None:
    with DotServer(pki, require_client_cert=False) as dot:
        corefile = f"""\
            .:53 {{
                forward . tls://127.0.0.1:{dot.port} {{
                    tls {pki}/ca.pem
                    tls_servername dns.test
                    max_idle_conns 1
                    expire 300ms
                }}
            }}
            """
        for k in serve(corefile, tmp_path):
            up = forward_handler(k).upstreams[0]  # type: ignore[attr-defined]
            results: list[list[str]] = []

            def ask(i: int, k: Running = k, results: list[list[str]] = results) -> None:
                results.append(a_of(k.tcp(f"c{i}.example.")))

            threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            assert results == [[ANSWER]] * 6
            assert up.pooled() <= 1  # at most max_idle_conns kept after the burst
            opened = dot.handshakes
            deadline = time.monotonic() + 5
            while up.pooled():  # the sweeper closes it once idle for `expire`
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert a_of(k.udp("after.example.")) == [ANSWER]
            assert dot.handshakes == opened + 1
            assert up.tls_resumed >= 1  # the new connection resumed the earlier session
