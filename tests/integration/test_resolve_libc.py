"""``kdns resolve`` against the real C libraries, in a network namespace the test creates.

Inside the namespace kdns serves the demo cluster (plus a few ExternalName Services) on
127.0.0.1:53, with server blocks forwarding ``broken.test`` to a server that SERVFAILs,
``slow.test`` to one that never answers and everything else to an authoritative
``corp.example`` (see netns_peers.py). A Pod's resolv.conf is bind-mounted over /etc/resolv.conf
by ``ip netns exec``; glibc (``getent ahostsv4`` / ``getent ahosts``: getaddrinfo for IPv4 /
for any family) and a static musl program (getaddrinfo, AF_INET / AF_UNSPEC) look each name
up, and ``kdns resolve [-t A+AAAA] --server 127.0.0.1:53 --resolv-conf /etc/resolv.conf`` must
give the same verdict and addresses for each library;
so must ``kdns resolve`` in-process from the same Corefile (``--upstream`` the same upstream)
wherever one upstream address is enough.

The namespace also checks that ``kdns resolve`` builds its in-process server on a machine whose
resolv.conf names a local stub (127.0.0.53 or 127.0.0.1): it binds nothing, so forward's
self-loop guard does not apply, and it sends nothing to that stub.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import DEMO, ROOT

KDNS = str(Path(sys.executable).parent / "kdns")
SERVFAIL_PORT, SILENT_PORT, ZONE_PORT = 5301, 5302, 5303

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("getent")
    or not shutil.which("musl-gcc"),
    reason="needs root (network namespaces), iproute2, getent and musl-gcc "
           "(scripts/system-deps installs musl-tools)")

MUSL_LOOKUP = r"""
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

/* getaddrinfo(NAME, AF_INET or AF_UNSPEC) as an application linked with musl does it. */
int main(int argc, char **argv) {
    struct addrinfo hints, *res, *p;
    char buf[INET6_ADDRSTRLEN];
    memset(&hints, 0, sizeof hints);
    if (argc != 3) return 64;
    hints.ai_family = strcmp(argv[2], "4") == 0 ? AF_INET : AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(argv[1], NULL, &hints, &res);
    if (rc != 0) {
        printf("error %d %s\n", rc, gai_strerror(rc));
        return 2;
    }
    for (p = res; p; p = p->ai_next) {
        if (p->ai_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)p->ai_addr)->sin_addr, buf, sizeof buf);
        else
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)p->ai_addr)->sin6_addr, buf, sizeof buf);
        printf("%s\n", buf);
    }
    freeaddrinfo(res);
    return 0;
}
"""

EXTRA_SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: corpweb, namespace: default}
spec: {type: ExternalName, externalName: www.corp.example}
---
apiVersion: v1
kind: Service
metadata: {name: inalias, namespace: default}
spec: {type: ExternalName, externalName: kubia.default.svc.cluster.local}
"""

COREFILE = """
.:53 {{
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        manifests {manifests}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    forward . 127.0.0.1:{zone}
}}
broken.test:53 {{
    forward . 127.0.0.1:{servfail}
}}
slow.test:53 {{
    forward . 127.0.0.1:{silent}
}}
"""

POD = "default.svc.cluster.local svc.cluster.local cluster.local"
SEARCH = {
    "pod": POD,
    "shop": "shop.svc.cluster.local svc.cluster.local cluster.local",
    "corp": POD + " corp.example",
    "servfail": "default.svc.cluster.local broken.test svc.cluster.local cluster.local",
    "timeout": "default.svc.cluster.local slow.test svc.cluster.local cluster.local",
    "servfail+timeout": "broken.test slow.test svc.cluster.local cluster.local",
}


def resolv_conf(search: str, ndots: int) -> str:
    return (f"search {SEARCH[search]}\noptions ndots:{ndots} timeout:1 attempts:1\n"
            "nameserver 127.0.0.1\n")


@dataclass(frozen=True)
class Case:
    name: str
    search: str = "pod"
    ndots: int = 5
    why: str = ""


CASES = [
    Case("kubia", why="hit at the first search element"),
    Case("kubia.default", why="hit at the second element"),
    Case("kubia.default.svc", why="hit at the third element"),
    Case("nosuch", why="NXDOMAIN everywhere"),
    Case("default", why="NODATA (a namespace), then NXDOMAIN"),
    Case("kubia.", why="trailing dot: asked once, NXDOMAIN"),
    Case("kubia.default.svc.cluster.local.", why="trailing dot: asked once, found"),
    Case("db", "shop", why="headless Service: several addresses"),
    Case("payments", "shop", why="CNAME (ExternalName) without an address"),
    Case("corpweb", why="CNAME (ExternalName) to an outside name with an address"),
    Case("inalias", why="CNAME (ExternalName) inside the cluster with an address"),
    Case("intranet", "corp", why="hit at a search domain outside the cluster"),
    Case("alias", "corp", why="outside CNAME chain with an address"),
    Case("dangling", "corp", why="outside CNAME to a missing name (NXDOMAIN)"),
    Case("svc", "corp", why="NODATA in the middle, then a hit"),
    Case("nginx-svc.default", "servfail", why="SERVFAIL in the middle, then a hit"),
    Case("www.corp.example", "timeout", why="timeout in the middle, then as is"),
    Case("kubia.default", "timeout", why="timeout in the middle, as is NXDOMAIN"),
    Case("kubia.default", "servfail+timeout", why="SERVFAIL, then a timeout, then a hit"),
    Case("kubia.default", ndots=1, why="ndots:1: as is first (NXDOMAIN), then search"),
    Case("kubia.default", ndots=2, why="ndots:2: search first"),
    Case("www.corp.example", ndots=2, why="ndots:2: as is first, found"),
    Case("www.corp.example", why="ndots:5: search first, then as is"),
]


class Netns:
    def __init__(self, name: str) -> None:
        self.name = name
        self.etc = Path("/etc/netns") / name
        self.procs: list[subprocess.Popen[str]] = []

    def cmd(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def set_resolv_conf(self, text: str) -> None:
        (self.etc / "resolv.conf").write_text(text)

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cmd(*args), capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT)

    def start(self, *args: str, ready: str) -> subprocess.Popen[str]:
        p = subprocess.Popen(self.cmd(*args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT)
        self.procs.append(p)
        assert p.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line and p.poll() is not None:
                raise AssertionError(f"{args[0]} exited: {p.communicate()[1]}")
            if line.startswith(ready):
                return p
        raise AssertionError(f"{args} did not start in time")

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
            try:
                p.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
        subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)
        shutil.rmtree(self.etc, ignore_errors=True)


@pytest.fixture(scope="module")
def netns() -> Iterator[Netns]:
    ns = Netns(f"kdns-t{os.getpid()}-{secrets.token_hex(3)}")
    ns.etc.mkdir(parents=True)
    try:
        # Only what these lookups read: no other name source, no host entries to hit first.
        (ns.etc / "hosts").write_text("127.0.0.1 localhost\n")
        (ns.etc / "nsswitch.conf").write_text("hosts: files dns\n")
        ns.set_resolv_conf(resolv_conf("pod", 5))
        subprocess.run(["ip", "netns", "add", ns.name], check=True)
        subprocess.run(["ip", "-n", ns.name, "link", "set", "lo", "up"], check=True)
        # getent asks getaddrinfo with AI_ADDRCONFIG, and glibc's check_pf.c counts every
        # IPv4 address but 127.0.0.1: without one it asks no IPv4 question at all. A
        # documentation address (RFC 5737) on lo is enough; nothing is ever sent to it.
        subprocess.run(["ip", "-n", ns.name, "addr", "add", "198.51.100.1/32", "dev", "lo"],
                       check=True)
        # Likewise for IPv6, or `getent ahosts` would ask no AAAA question.
        subprocess.run(["ip", "-n", ns.name, "addr", "add", "2001:db8::1/128", "dev", "lo"],
                       check=True)
        yield ns
    finally:
        ns.close()


@pytest.fixture(scope="module")
def musl_lookup(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("musl")
    (d / "lookup.c").write_text(MUSL_LOOKUP)
    subprocess.run(["musl-gcc", "-static", "-O1", "-o", str(d / "lookup"), str(d / "lookup.c")],
                   check=True, capture_output=True, timeout=120)
    return str(d / "lookup")


@pytest.fixture(scope="module")
def cluster(netns: Netns, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cluster")
    manifests = d / "manifests"
    shutil.copytree(DEMO, manifests, ignore=shutil.ignore_patterns("Corefile"))
    (manifests / "extra.yaml").write_text(EXTRA_SERVICES)
    corefile = d / "Corefile"
    corefile.write_text(COREFILE.format(manifests=manifests, zone=ZONE_PORT,
                                        servfail=SERVFAIL_PORT, silent=SILENT_PORT))
    netns.start(sys.executable, "-m", "tests.integration.netns_peers", str(SERVFAIL_PORT),
                str(SILENT_PORT), str(ZONE_PORT), ready="ready")
    netns.start(KDNS, "serve", "--conf", str(corefile), "--dns-addr", "127.0.0.1",
                ready="kdns: serving on")
    return corefile


def _libc_verdict(proc: subprocess.CompletedProcess[str], glibc: bool) -> tuple[str, set[str]]:
    if proc.returncode != 0:
        return "fails", set()
    if glibc:
        return "resolves", {ln.split()[0] for ln in proc.stdout.splitlines() if ln.strip()}
    return "resolves", {ln.strip() for ln in proc.stdout.splitlines() if ln.strip()}


def _kdns_verdicts(out: str) -> dict[str, tuple[str, set[str]]]:
    """{library: (status, addresses)} from ``kdns resolve`` output."""
    found: dict[str, tuple[str, set[str]]] = {}
    lib = None
    for line in out.splitlines():
        head = line.split(":", 1)[0]
        if head in ("glibc", "musl"):
            lib = head
            found[lib] = (line.split(":", 2)[1].strip(), set())
        elif lib is not None and line.startswith("   ") and line.split()[-2] in ("A", "AAAA"):
            found[lib][1].add(line.split()[-1])
    return found


FAMILIES = {
    # getaddrinfo(AF_INET): the A question only.
    "ipv4": ("ahostsv4", "4", "A"),
    # getaddrinfo(AF_UNSPEC): A and AAAA together for every name.
    "any": ("ahosts", "any", "A+AAAA"),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("case", CASES, ids=[f"{c.name}-{c.search}-ndots{c.ndots}" for c in CASES])
def test_verdict_matches_glibc_and_musl(case: Case, family: str, netns: Netns, cluster: Path,
                                        musl_lookup: str) -> None:
    database, musl_family, qtype = FAMILIES[family]
    netns.set_resolv_conf(resolv_conf(case.search, case.ndots))
    glibc = _libc_verdict(netns.run("getent", database, case.name), glibc=True)
    musl = _libc_verdict(netns.run(musl_lookup, case.name, musl_family), glibc=False)
    r = netns.run(KDNS, "resolve", case.name, "-t", qtype, "--server", "127.0.0.1:53",
                  "--resolv-conf", "/etc/resolv.conf")
    assert r.returncode in (0, 1), r.stdout + r.stderr
    ours = _kdns_verdicts(r.stdout)
    assert ours == {"glibc": glibc, "musl": musl}, f"{case.why}\n{r.stdout}"
    if family != "ipv4" or case.search in ("servfail", "timeout", "servfail+timeout"):
        return  # --upstream is one address; these need the broken and silent servers as well
    # In-process, from the same Corefile, with forwarded names sent to the same upstream.
    r = netns.run(KDNS, "resolve", case.name, "--conf", str(cluster), "--resolv-conf",
                  "/etc/resolv.conf", "--upstream", f"127.0.0.1:{ZONE_PORT}")
    assert r.returncode in (0, 1), r.stdout + r.stderr
    assert _kdns_verdicts(r.stdout) == {"glibc": glibc, "musl": musl}, f"{case.why}\n{r.stdout}"


def test_the_cases_cover_both_outcomes_and_a_disagreement(netns: Netns, cluster: Path,
                                                           musl_lookup: str) -> None:
    """The table is not all-resolving or all-failing, and glibc and musl differ somewhere
    (SERVFAIL in the middle): otherwise the comparison above could not catch a wrong model."""
    netns.set_resolv_conf(resolv_conf("servfail", 5))
    glibc = _libc_verdict(netns.run("getent", "ahostsv4", "nginx-svc.default"), glibc=True)
    musl = _libc_verdict(netns.run(musl_lookup, "nginx-svc.default", "4"), glibc=False)
    assert glibc == ("resolves", {"10.96.10.80"})
    assert musl == ("fails", set())


@pytest.mark.parametrize("stub", ["127.0.0.53", "127.0.0.1"])
def test_resolve_ignores_the_loop_guard_and_sends_nothing_to_a_local_stub(
        netns: Netns, stub: str) -> None:
    """The built-in Corefile forwards to /etc/resolv.conf; a stub on 127.0.0.53 or 127.0.0.1
    there would be kdns's own listener for `kdns serve`, but `kdns resolve` binds nothing."""
    netns.set_resolv_conf(f"nameserver {stub}\n")
    r = netns.run(KDNS, "resolve", "kubia.default", "--manifests", str(DEMO))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "glibc: resolves: answer for kubia.default.svc.cluster.local." in r.stdout
    r = netns.run(KDNS, "resolve", "kubia.default", "--conf", "deploy/base/Corefile",
                  "--manifests", str(DEMO), "--libc", "musl")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "musl:  resolves" in r.stdout and "glibc" not in r.stdout.split("\n", 2)[2]
    # An outside name is reported, not sent: nothing listens on the stub in this namespace,
    # and the answer says where it would have gone.
    r = netns.run(KDNS, "resolve", "www.example.org", "--manifests", str(DEMO))
    assert r.returncode == 3, r.stdout + r.stderr
    step4 = next(ln for ln in r.stdout.splitlines() if ln.startswith("  4. "))
    assert step4.split() == ["4.", "www.example.org.", "would", "be", "forwarded", "upstream",
                             f"({stub}:53", "from", "/etc/resolv.conf):", "not", "sent"]
    assert "glibc: undetermined" in r.stdout and "musl:  undetermined" in r.stdout
