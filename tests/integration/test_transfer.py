"""transfer over real sockets: AXFR of the cluster zone read from the fake API server.

Every record of the transfer is what a query for that name and type answers; the SOA comes
first and last; messages stay within 64 KiB; IXFR, UDP, unlisted clients and names below the
zone get CoreDNS's answers; a change sends a NOTIFY to the ``to`` address.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Iterator

import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from kdns.server.app import KdnsServer
from tests import fakeapi
from tests.conftest import start_server

ZONE = "cluster.local."
SERVICES = 600


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout}s")


class Env:
    def __init__(self, api: fakeapi.FakeApiServer, server: KdnsServer,
                 notify_sock: socket.socket) -> None:
        self.api, self.server, self.notify_sock = api, server, notify_sock
        self.port = server.listeners[0].port

    def ask(self, name: str, qtype: str = "A") -> dns.message.Message:
        return dns.query.udp(dns.message.make_query(name, qtype), "127.0.0.1", port=self.port,
                             timeout=2)

    def serial(self) -> int:
        return int(self.ask(ZONE, "SOA").answer[0][0].serial)

    def raw_xfr(self, query: dns.message.Message, source: str = "127.0.0.2"
                ) -> list[bytes]:
        """Every message of a transfer, as bytes (until the closing SOA or the peer closes)."""
        out: list[bytes] = []
        with socket.create_connection(("127.0.0.1", self.port), timeout=5,
                                      source_address=(source, 0)) as s:
            wire = query.to_wire()
            s.sendall(struct.pack("!H", len(wire)) + wire)
            buf = b""
            soas = 0
            while True:
                while len(buf) < 2 or len(buf) < 2 + struct.unpack_from("!H", buf)[0]:
                    chunk = s.recv(65536)
                    if not chunk:
                        return out
                    buf += chunk
                size = struct.unpack_from("!H", buf)[0]
                out.append(buf[2:2 + size])
                buf = buf[2 + size:]
                msg = dns.message.from_wire(out[-1], one_rr_per_rrset=True)
                soas += sum(1 for r in msg.answer if r.rdtype == dns.rdatatype.SOA)
                if msg.rcode() != dns.rcode.NOERROR or soas >= 2 or (
                        query.question[0].rdtype == dns.rdatatype.IXFR and len(out) == 1
                        and soas == 1 and len(msg.answer) == 1):
                    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("xfr")
    notify_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    notify_sock.bind(("127.0.0.2", 0))
    notify_port = notify_sock.getsockname()[1]
    with fakeapi.FakeApiServer() as api:
        api.add("namespaces", fakeapi.namespace("default"))
        api.add("namespaces", fakeapi.namespace("shop"))
        api.bulk_load("services", (
            fakeapi.service("default", f"s{i}", cluster_ip=f"10.96.{i // 250}.{i % 250}",
                            ports=[("http", 80, "TCP"), ("", 9000, "TCP")])
            for i in range(SERVICES)))
        api.add("services", fakeapi.service("shop", "db", headless=True))
        api.add("endpointslices", fakeapi.endpoint_slice(
            "shop", "db-1", "db", ports=[("pg", 5432, "TCP")],
            endpoints=[fakeapi.endpoint("10.244.0.1", hostname="db-0"), "10.244.0.2",
                       fakeapi.endpoint("10.244.0.3", ready=False)]))
        api.add("services", fakeapi.service("shop", "dual", cluster_ips=["10.97.0.1",
                                                                          "fd00::1"]))
        api.add("services", fakeapi.service("shop", "pay", external_name="pay.example.com"))
        api.add("services", fakeapi.service("shop", "inner",
                                            external_name="db.shop.svc.cluster.local"))
        kubeconfig = api.write_kubeconfig(str(tmp / "kubeconfig"))
        server = start_server(f"""
        .:53 {{
            transfer cluster.local {{
                to 127.0.0.2:{notify_port}
            }}
            kubernetes cluster.local in-addr.arpa {{
                kubeconfig {kubeconfig}
                startup_timeout 30s
            }}
        }}
        """, tmp)
        try:
            yield Env(api, server, notify_sock)
        finally:
            server.stop()
            notify_sock.close()


def _axfr(env: Env) -> list[dns.message.Message]:
    q = dns.message.make_query(ZONE, "AXFR")
    return [dns.message.from_wire(m, one_rr_per_rrset=True) for m in env.raw_xfr(q)]


def test_axfr_has_the_soa_first_and_last_and_fits_in_64k(env: Env) -> None:
    raw = env.raw_xfr(dns.message.make_query(ZONE, "AXFR"))
    assert len(raw) > 3, "a zone this size needs several messages"
    assert all(len(m) <= 65535 for m in raw)
    msgs = [dns.message.from_wire(m, one_rr_per_rrset=True) for m in raw]
    assert all(m.rcode() == 0 and m.flags & dns.flags.AA for m in msgs)
    rrs = [r for m in msgs for r in m.answer]
    assert rrs[0].rdtype == rrs[-1].rdtype == dns.rdatatype.SOA
    assert rrs[0] == rrs[-1] and rrs[0][0].serial == env.serial()
    assert sum(1 for r in rrs if r.rdtype == dns.rdatatype.SOA) == 2


def test_every_record_is_what_the_query_path_answers(env: Env) -> None:
    rrs = [r for m in _axfr(env) for r in m.answer][1:-1]
    zone: dict[tuple[str, int], set[str]] = {}
    for r in rrs:
        zone.setdefault((str(r.name), r.rdtype), set()).update(x.to_text() for x in r)
    for (name, rdtype), data in zone.items():
        ans = env.ask(name, dns.rdatatype.to_text(rdtype))
        got = {x.to_text() for rrset in ans.answer if str(rrset.name) == name
               and rrset.rdtype == rdtype for x in rrset}
        assert got == data, (name, rdtype)
    # and the names the query path answers are in the transfer
    for name, rdtype in [("s7.default.svc.cluster.local.", "A"),
                         ("_http._tcp.s7.default.svc.cluster.local.", "SRV"),
                         ("s7.default.svc.cluster.local.", "SRV"),
                         ("10-96-0-7.s7.default.svc.cluster.local.", "A"),
                         ("db.shop.svc.cluster.local.", "A"),
                         ("db-0.db.shop.svc.cluster.local.", "A"),
                         ("10-244-0-2.db.shop.svc.cluster.local.", "A"),
                         ("_pg._tcp.db.shop.svc.cluster.local.", "SRV"),
                         ("dual.shop.svc.cluster.local.", "AAAA"),
                         ("pay.shop.svc.cluster.local.", "CNAME"),
                         ("inner.shop.svc.cluster.local.", "CNAME"),
                         ("dns-version.cluster.local.", "TXT"),
                         ("cluster.local.", "NS")]:
        if name.startswith("10-96-0-7."):
            continue  # a ClusterIP Service without endpoints has no endpoint names
        assert (name, dns.rdatatype.from_text(rdtype)) in zone, (name, rdtype)
    names = {n for n, _t in zone}
    assert "10-244-0-3.db.shop.svc.cluster.local." not in names, "not-ready endpoint"
    # the ExternalName's in-zone target is transferred as its own records, not under the alias
    assert not any(n == "inner.shop.svc.cluster.local." and t != dns.rdatatype.CNAME
                   for n, t in zone)


def test_ixfr_up_to_date_gets_the_soa_else_a_full_transfer(env: Env) -> None:
    serial = env.serial()
    for client_serial, full in ((serial, False), (serial - 100, True)):
        q = dns.message.make_query(ZONE, "IXFR")
        soa = dns.rrset.from_text(ZONE, 0, "IN", "SOA",
                                  f"ns.dns.{ZONE} hostmaster.{ZONE} {client_serial} 1 1 1 1")
        q.authority.append(soa)
        msgs = [dns.message.from_wire(m, one_rr_per_rrset=True) for m in env.raw_xfr(q)]
        rrs = [r for m in msgs for r in m.answer]
        if full:
            assert len(rrs) > SERVICES and rrs[0].rdtype == rrs[-1].rdtype == 6
        else:
            assert len(rrs) == 1 and rrs[0][0].serial == serial


def test_bad_transfer_requests(env: Env) -> None:
    # over UDP: refused, as in CoreDNS (RFC 5936 §4.2: AXFR needs TCP)
    assert env.ask(ZONE, "AXFR").rcode() == dns.rcode.REFUSED
    # from a client not in 'to' (this one connects from 127.0.0.1)
    refused = env.raw_xfr(dns.message.make_query(ZONE, "AXFR"), source="127.0.0.1")
    assert [dns.message.from_wire(m).rcode() for m in refused] == [dns.rcode.REFUSED]
    # a name below the zone is not a zone we send: the kubernetes plugin refuses it
    below = env.raw_xfr(dns.message.make_query(f"svc.{ZONE}", "AXFR"))
    assert [dns.message.from_wire(m).rcode() for m in below] == [dns.rcode.REFUSED]
    # an IXFR without the client's SOA is malformed
    bare = env.raw_xfr(dns.message.make_query(ZONE, "IXFR"))
    assert [dns.message.from_wire(m).rcode() for m in bare] == [dns.rcode.FORMERR]
    # the reverse zone is not transferred
    rev = env.raw_xfr(dns.message.make_query("in-addr.arpa.", "AXFR"))
    assert [dns.message.from_wire(m).rcode() for m in rev] == [dns.rcode.REFUSED]


def test_a_change_sends_notify_with_the_zone(env: Env) -> None:
    sock = env.notify_sock
    sock.settimeout(0.2)
    # drain (and acknowledge) the NOTIFY of the first sync
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            data, addr = sock.recvfrom(4096)
        except TimeoutError:
            break
        sock.sendto(dns.message.make_response(dns.message.from_wire(data)).to_wire(), addr)
    before = env.serial()
    env.api.add("services", fakeapi.service("shop", "new", cluster_ip="10.97.1.1"))
    _until(lambda: env.ask("new.shop.svc.cluster.local.").rcode() == 0, 5, "the change")
    sock.settimeout(5)
    data, addr = sock.recvfrom(4096)
    msg = dns.message.from_wire(data)
    assert msg.opcode() == dns.opcode.NOTIFY and msg.flags & dns.flags.AA
    assert str(msg.question[0].name) == ZONE and msg.question[0].rdtype == dns.rdatatype.SOA
    assert addr[0] == "127.0.0.1"
    sock.sendto(dns.message.make_response(msg).to_wire(), addr)
    _until(lambda: env.serial() > before, 3, "the serial moves")
