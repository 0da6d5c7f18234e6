"""A real secondary: BIND's named transfers the cluster zone from kdns and follows its NOTIFYs.

kdns serves a 5,000-Service cluster zone read from the fake API server over HTTP; named, started
by the test on 127.0.0.1 (its own port, config directory and PID, stopped at the end), is a
secondary of it. The secondary must answer a sample of names exactly as kdns does; after a
change in the cluster, kdns's NOTIFY makes named fetch the zone again (its SOA serial moves) and
answer the new data. named's refresh timer (7200 s) is far beyond the test, so only the NOTIFY
can explain the update.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from kdns.server.app import KdnsServer
from tests import fakeapi
from tests.conftest import start_server
from tests.ports import free_dns_port

NAMED = shutil.which("named") or ("/usr/sbin/named" if os.access("/usr/sbin/named", os.X_OK)
                                  else None)
pytestmark = pytest.mark.skipif(NAMED is None, reason="needs named (Debian bind9)")

ZONE = "cluster.local."
SERVICES = 5000
HEADLESS_EVERY = 5
"""Every fifth Service is headless with two named endpoints (per-endpoint names and SRV
targets); the others are ClusterIP Services with a named port."""


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s")


def _cluster(api: fakeapi.FakeApiServer) -> None:
    namespaces = [f"ns{i}" for i in range(20)]
    api.bulk_load("namespaces", (fakeapi.namespace(n) for n in namespaces))
    services, slices = [], []
    for i in range(SERVICES):
        ns = namespaces[i % len(namespaces)]
        name = f"svc{i}"
        if i % HEADLESS_EVERY == 0:
            services.append(fakeapi.service(ns, name, headless=True,
                                            ports=[("peer", 7000, "TCP")]))
            slices.append(fakeapi.endpoint_slice(
                ns, f"{name}-x", name, ports=[("peer", 7000, "TCP")],
                endpoints=[fakeapi.endpoint(f"10.1.{i // 250}.{i % 250}", hostname=f"{name}-0"),
                           fakeapi.endpoint(f"10.2.{i // 250}.{i % 250}",
                                            hostname=f"{name}-1")]))
        else:
            services.append(fakeapi.service(ns, name, cluster_ip=f"10.96.{i // 250}.{i % 250}",
                                            ports=[("http", 80, "TCP")]))
    api.bulk_load("services", services)
    api.bulk_load("endpointslices", slices)


class Named:
    """named as a secondary of kdns, in its own directory, on its own port."""

    def __init__(self, workdir: Path, port: int, primary_port: int) -> None:
        self.dir, self.port = workdir, port
        self.dir.mkdir()
        conf = self.dir / "named.conf"
        conf.write_text(f"""
options {{
    directory "{self.dir}";
    pid-file "{self.dir}/named.pid";
    session-keyfile "{self.dir}/session.key";
    managed-keys-directory "{self.dir}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
    allow-query {{ 127.0.0.1; }};
}};
controls {{ }};
zone "cluster.local" {{
    type secondary;
    primaries {{ 127.0.0.1 port {primary_port}; }};
    file "{self.dir}/cluster.local.db";
}};
""")
        self.log = open(self.dir / "named.log", "wb")  # noqa: SIM115 - closed in stop()
        assert NAMED is not None
        # -g: foreground, log to stderr; -n 1: one worker thread (a shared 2-core machine).
        self.proc = subprocess.Popen([NAMED, "-g", "-n", "1", "-c", str(conf)],
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def ask(self, name: str, qtype: str = "A") -> dns.message.Message:
        return dns.query.udp(dns.message.make_query(name, qtype), "127.0.0.1", port=self.port,
                             timeout=2)

    def serial(self) -> int | None:
        try:
            r = self.ask(ZONE, "SOA")
        except (OSError, dns.exception.Timeout):
            return None
        if r.rcode() != dns.rcode.NOERROR or not r.answer:
            return None
        return int(r.answer[0][0].serial)

    def logs(self) -> str:
        return (self.dir / "named.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()


class Env:
    def __init__(self, api: fakeapi.FakeApiServer, kdns: KdnsServer, named: Named) -> None:
        self.api, self.kdns, self.named = api, kdns, named
        self.port = kdns.listeners[0].port

    def ask(self, name: str, qtype: str = "A") -> dns.message.Message:
        return dns.query.udp(dns.message.make_query(name, qtype), "127.0.0.1", port=self.port,
                             timeout=2)

    def serial(self) -> int:
        return int(self.ask(ZONE, "SOA").answer[0][0].serial)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("xfr-bind9")
    named_port = free_dns_port()  # named binds UDP and TCP on the same port
    with fakeapi.FakeApiServer() as api:
        _cluster(api)
        kubeconfig = api.write_kubeconfig(str(tmp / "kubeconfig"))
        kdns = start_server(f"""
        .:53 {{
            transfer cluster.local {{
                to 127.0.0.1:{named_port}
            }}
            kubernetes cluster.local {{
                kubeconfig {kubeconfig}
                startup_timeout 30s
            }}
        }}
        """, tmp)
        named: Named | None = None
        try:
            named = Named(tmp / "named", named_port, kdns.listeners[0].port)
            e = Env(api, kdns, named)
            try:
                _until(lambda: named.serial() == e.serial(), 60, "named loads the zone")
            except AssertionError as err:
                raise AssertionError(f"{err}\n{named.logs()}") from None
            yield e
        finally:
            if named is not None:
                named.stop()
            kdns.stop()


def _rrsets(msg: dns.message.Message) -> set[tuple[str, int, frozenset[str]]]:
    return {(str(rrset.name).lower(), rrset.rdtype, frozenset(r.to_text().lower() for r in rrset))
            for rrset in msg.answer}


def _sample(rng: random.Random) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = [(ZONE, "SOA"), (ZONE, "NS"), (f"dns-version.{ZONE}", "TXT")]
    for i in rng.sample(range(SERVICES), 60):
        base = f"svc{i}.ns{i % 20}.svc.{ZONE}"
        if i % HEADLESS_EVERY == 0:
            out += [(base, "A"), (base, "SRV"), (f"_peer._tcp.{base}", "SRV"),
                    (f"svc{i}-1.{base}", "A")]
        else:
            out += [(base, "A"), (base, "SRV"), (f"_http._tcp.{base}", "SRV")]
    return out


def test_the_secondary_answers_as_kdns_does(env: Env) -> None:
    for name, qtype in _sample(random.Random(15)):
        ours, theirs = env.ask(name, qtype), env.named.ask(name, qtype)
        assert theirs.rcode() == ours.rcode() == dns.rcode.NOERROR, (name, qtype)
        assert ours.answer, (name, qtype)
        assert _rrsets(theirs) == _rrsets(ours), (name, qtype)
    # names that do not exist are absent from the secondary too
    for name in (f"nope.ns0.svc.{ZONE}", f"svc1.ns2.svc.{ZONE}"):
        assert env.named.ask(name).rcode() == env.ask(name).rcode() == dns.rcode.NXDOMAIN


def test_a_change_reaches_the_secondary_through_notify(env: Env) -> None:
    before = env.named.serial()
    assert before == env.serial()
    fresh = f"fresh.ns3.svc.{ZONE}"
    moved = f"svc1.ns1.svc.{ZONE}"
    env.api.add("services", fakeapi.service("ns3", "fresh", cluster_ip="10.99.0.1",
                                            ports=[("http", 80, "TCP")]))
    env.api.update("services", fakeapi.service("ns1", "svc1", cluster_ip="10.99.0.2",
                                               ports=[("http", 80, "TCP")]))
    _until(lambda: env.ask(fresh).rcode() == dns.rcode.NOERROR
           and env.ask(moved).answer[0][0].address == "10.99.0.2", 10, "kdns sees the change")
    try:
        # NOTIFY is paced at four times what the last transfer took to build (a few seconds
        # for this zone on a loaded machine), so allow for that plus the transfer itself.
        _until(lambda: (env.named.serial() or 0) > (before or 0)
               and env.named.serial() == env.serial(), 60, "named's serial moves")
    except AssertionError as err:
        raise AssertionError(f"{err}\n{env.named.logs()}") from None
    theirs = env.named.ask(fresh)
    assert [r.address for r in theirs.answer[0]] == ["10.99.0.1"]
    assert _rrsets(env.named.ask(moved)) == _rrsets(env.ask(moved))
    assert env.named.ask(f"_http._tcp.{fresh}", "SRV").answer
