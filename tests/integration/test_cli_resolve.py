"""``kdns resolve`` through the real command: where questions go, the ndots reasoning, PTR for
an address, and malformed names.

By default the in-process server forwards nothing: a name outside the cluster zones is reported
as "would be forwarded upstream" and the upstream the Corefile names gets no packet. With
``--upstream HOST:PORT`` forwarded names go there, and each step says who answered.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from tests.conftest import DEMO, ROOT

KDNS = str(Path(sys.executable).parent / "kdns")


def kdns(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KDNS, "resolve", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


class Upstream:
    """A loopback DNS server that answers www.example.org and counts every query."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.names: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            q = DNSRecord.parse(data)
            name = str(q.q.qname).lower()
            self.names.append(name)
            reply = q.reply()
            if name == "www.example.org." and q.q.qtype == QTYPE.A:
                reply.add_answer(RR(name, QTYPE.A, rdata=A("192.0.2.80"), ttl=60))
            elif name != "www.example.org.":
                reply.header.rcode = RCODE.NXDOMAIN
            self.sock.sendto(reply.pack(), peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    yield up
    up.close()


def test_outside_names_are_not_sent_without_upstream(upstream: Upstream, tmp_path: Path) -> None:
    corefile = tmp_path / "Corefile"
    corefile.write_text(f".:53 {{\n    kubernetes cluster.local {{\n        manifests {DEMO}\n"
                        f"    }}\n    forward . 127.0.0.1:{upstream.port}\n}}\n")
    r = kdns("www.example.org", "--conf", str(corefile))
    assert r.returncode == 3, r.stdout + r.stderr
    assert f"would be forwarded upstream (127.0.0.1:{upstream.port}): not sent" in r.stdout
    assert "glibc: undetermined" in r.stdout
    assert upstream.names == []


def test_upstream_answers_forwarded_names_and_each_step_says_who(upstream: Upstream) -> None:
    r = kdns("www.example.org", "--manifests", str(DEMO), "--upstream",
             f"127.0.0.1:{upstream.port}")
    assert r.returncode == 0, r.stdout + r.stderr
    steps = [ln.split() for ln in r.stdout.splitlines() if re.match(r"  \d+\. ", ln)]
    assert [s[1] for s in steps] == ["www.example.org.default.svc.cluster.local.",
                                     "www.example.org.svc.cluster.local.",
                                     "www.example.org.cluster.local.", "www.example.org."]
    assert all(s[-3:] == ["from", "kdns", "(in-process)"] for s in steps[:3])
    assert steps[3][-6:] == ["from", "upstream", f"127.0.0.1:{upstream.port}", "via", "kdns",
                             "forward"]
    assert "192.0.2.80" in r.stdout
    # Only the name kdns does not answer itself reached the upstream.
    assert upstream.names == ["www.example.org."]


def test_upstream_and_server_are_exclusive() -> None:
    r = kdns("kubia", "--server", "127.0.0.1:53", "--upstream", "127.0.0.1:53")
    assert r.returncode == 2 and "--upstream applies to the in-process server only" in r.stderr


@pytest.mark.parametrize("bad", ["dns.google", "127.0.0.1:0", "127.0.0.1:x"])
def test_bad_upstream_is_a_usage_error(bad: str) -> None:
    r = kdns("kubia", "--manifests", str(DEMO), "--upstream", bad)
    assert r.returncode == 2 and f"--upstream {bad!r}" in r.stderr


@pytest.mark.parametrize(("name", "ndots", "expected"), [
    ("kubia", 5, "0 dots < ndots:5: the search list is tried first, the name as is last"),
    ("kubia.default", 5, "1 dot < ndots:5: the search list is tried first, the name as is last"),
    ("kubia.default", 1, "1 dot >= ndots:1: glibc asks the name as is first, then the search "
                         "list"),
    ("kubia.default", 1, "1 dot >= ndots:1: musl asks the name as is only (no search list)"),
    ("kubia.default.svc.cluster.local.", 5,
     "trailing dot: the name is absolute and asked as is, once"),
])
def test_ndots_reasoning_is_shown(name: str, ndots: int, expected: str) -> None:
    r = kdns(name, "--manifests", str(DEMO), "--ndots", str(ndots))
    assert f"\n  {expected}\n" in r.stdout, r.stdout + r.stderr


def test_ndots_1_makes_glibc_and_musl_disagree(upstream: Upstream) -> None:
    r = kdns("kubia.default", "--manifests", str(DEMO), "--ndots", "1", "--upstream",
             f"127.0.0.1:{upstream.port}")
    assert r.returncode == 1, r.stdout
    assert "glibc: resolves: answer for kubia.default.svc.cluster.local." in r.stdout
    assert "musl:  fails" in r.stdout


@pytest.mark.parametrize(("ip", "ptr", "target"), [
    ("10.98.237.175", "175.237.98.10.in-addr.arpa.", "kubia.default.svc.cluster.local."),
    ("10.96.0.10", "10.0.96.10.in-addr.arpa.", "kube-dns.kube-system.svc.cluster.local."),
])
def test_an_ip_address_is_a_ptr_lookup(ip: str, ptr: str, target: str) -> None:
    r = kdns(ip, "--manifests", str(DEMO))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"is an IP address: getnameinfo asks {ptr} (PTR) directly" in r.stdout
    assert f"1. {ptr}" in r.stdout and "2. " not in r.stdout
    assert target in r.stdout


def test_an_ipv6_address_is_a_ptr_lookup() -> None:
    r = kdns("fd00::1", "--manifests", str(DEMO))
    assert "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa." \
        in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize(("name", "reason"), [
    ("a..b", "label 2 is empty"),
    (".kubia", "label 1 is empty"),
    ("x" * 64 + ".default", "label 1 (xxxxxxxxxxxx...) has 64 characters, more than 63"),
    (".".join(["a" * 63] * 4), "255 characters, more than 253"),
])
def test_malformed_names_say_why(name: str, reason: str) -> None:
    r = kdns(name, "--manifests", str(DEMO))
    assert r.returncode == 2, r.stdout
    assert r.stderr.strip() == f"kdns: invalid name {name!r}: {reason}"


def test_an_upstream_that_does_not_answer_is_a_timeout_step() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        r = kdns("www.example.org", "--manifests", str(DEMO), "--upstream", f"127.0.0.1:{port}",
                 "--timeout", "0.5")
    assert r.returncode == 1, r.stdout + r.stderr
    step4 = next(ln for ln in r.stdout.splitlines() if ln.startswith("  4. "))
    assert step4.split()[1:] == ["www.example.org.", "TIMEOUT", "from", "upstream",
                                 f"127.0.0.1:{port}", "via", "kdns", "forward"]
    assert "musl:  fails: www.example.org.: TIMEOUT ends the lookup (EAI_AGAIN)" in r.stdout
