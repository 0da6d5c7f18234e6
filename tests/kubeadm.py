"""The kubeadm setting for reliability checks: its Corefile, a local dnsmasq upstream, churn.

The soak (tools/soak.py), the rollout check (tools/rollout_under_load.py) and the fuzzing of
the served packet path (tests/integration/test_fuzz_server.py, bench/fuzz_atheris.py) run kdns
the way kubeadm deploys it, not with the kubernetes plugin alone:

* :func:`kubeadm_corefile`: kubeadm's plugin set (errors, health with lameduck, ready,
  kubernetes with ``pods insecure``/``fallthrough``/``ttl 30``, prometheus, forward with
  ``max_concurrent 1000``, cache 30 with the cluster zone disabled, loop, reload, loadbalance),
  with ``forward`` pointed at the local upstream instead of the host's resolv.conf;
* :class:`Upstream`: a dnsmasq on 127.0.0.1 the caller starts and stops by PID, answering
  ``ext{k}.example.com`` (A) and NXDOMAIN under ``nx.example.com``; it never forwards;
* :class:`SliceChurn`: EndpointSlice changes through the fake API server over HTTP (new
  endpoint addresses for a pool of headless Services, at a fixed rate), the change kind a
  real cluster makes most often.

Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import random
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

from tests import fakeapi
from tests.ports import free_dns_port

ZONE = "cluster.local"
EXT = {f"ext{k}.example.com": f"192.0.2.{k + 1}" for k in range(50)}
"""External names the upstream answers (through forward and cache)."""
NX_DOMAIN = "nx.example.com"
"""The upstream answers NXDOMAIN for every name under it."""
KUBIA, KUBIA_IP = "kubia.default.svc.cluster.local.", "10.98.237.175"
NGINX, NGINX_IP = "nginx-svc.default.svc.cluster.local.", "10.104.64.15"


def dnsmasq_available() -> bool:
    return shutil.which("dnsmasq") is not None


def kubeadm_corefile(source: str, upstream_port: int, *, ready: int, prometheus: int,
                     health: int | None = None, lameduck: float = 5.0, key: str = ".:53") -> str:
    """kubeadm's Corefile (cmd/kubeadm/app/phases/addons/dns/manifests.go) with ``source`` as
    the kubernetes plugin's data line (``kubeconfig PATH`` or ``manifests DIR``)."""
    health_line = (f"    health 127.0.0.1:{health} {{\n        lameduck {lameduck:g}s\n    }}\n"
                   if health is not None else "")
    return (
        f"{key} {{\n"
        "    errors\n"
        f"{health_line}"
        f"    ready 127.0.0.1:{ready}\n"
        f"    kubernetes {ZONE} in-addr.arpa ip6.arpa {{\n"
        f"        {source}\n"
        "        pods insecure\n"
        "        fallthrough in-addr.arpa ip6.arpa\n"
        "        ttl 30\n"
        "    }\n"
        f"    prometheus 127.0.0.1:{prometheus}\n"
        f"    forward . 127.0.0.1:{upstream_port} {{\n"
        "        max_concurrent 1000\n"
        "    }\n"
        "    cache 30 {\n"
        f"        disable success {ZONE}\n"
        f"        disable denial {ZONE}\n"
        "    }\n"
        "    loop\n"
        "    reload\n"
        "    loadbalance\n"
        "}\n")


class Upstream:
    """A dnsmasq on 127.0.0.1 serving :data:`EXT` and NXDOMAIN under :data:`NX_DOMAIN`."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_dns_port()  # dnsmasq binds UDP and TCP on it
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Upstream:
        if not dnsmasq_available():
            raise RuntimeError("dnsmasq is not installed (Debian dnsmasq-base; scripts/system-deps)")
        conf = self.tmp / "upstream-dnsmasq.conf"
        conf.write_text("".join(f"host-record={n},{ip}\n" for n, ip in EXT.items())
                        + f"address=/{NX_DOMAIN}/\n")
        self.proc = subprocess.Popen(
            ["dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", f"--port={self.port}",
             "--listen-address=127.0.0.1", "--bind-interfaces", f"--conf-file={conf}",
             "--local-ttl=30", "--pid-file=", "--log-facility=-", "--cache-size=0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dnsmasq exited with {self.proc.returncode}")
            if self.answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("dnsmasq did not answer in time")

    def answers(self) -> bool:
        name = next(iter(EXT))
        q = struct.pack("!HHHHHH", 0x5151, 0x0100, 1, 0, 0, 0) + b"".join(
            bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00\x00\x01\x00\x01"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            try:
                s.sendto(q, ("127.0.0.1", self.port))
                data = s.recv(512)
            except OSError:
                return False
        return len(data) >= 12 and data[:2] == b"\x51\x51" and data[3] & 0xF == 0

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def seed_basics(api: fakeapi.FakeApiServer) -> None:
    """The ``default`` namespace with the demo cluster's two best-known Services."""
    api.add("namespaces", fakeapi.namespace("default"))
    for name, ip in (("kubia", KUBIA_IP), ("nginx-svc", NGINX_IP)):
        api.add("services", fakeapi.service("default", name, cluster_ip=ip,
                                            ports=[("http", 80, "TCP")]))
        api.add("endpointslices", fakeapi.endpoint_slice(
            "default", f"{name}-abcde", name, ports=[("http", 8080, "TCP")],
            endpoints=[f"10.244.{1 + k}.{10 + len(name)}" for k in range(3)]))


class SliceChurn:
    """New endpoint addresses for one of ``pool`` headless Services every ``interval`` s.

    The Services live in namespace ``churn`` (``hl-<k>``) so they never touch names a check
    expects to be stable. ``endpoints(k)`` is the latest address set written for Service k.
    """

    def __init__(self, api: fakeapi.FakeApiServer, interval: float = 0.05, pool: int = 20,
                 seed: int = 5) -> None:
        self.api, self.interval, self.pool = api, interval, pool
        self.rng = random.Random(seed)
        self.ops = 0
        self._gen = 0
        self._lock = threading.Lock()
        self._current: dict[int, list[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slice-churn", daemon=True)
        self.error: BaseException | None = None
        api.add("namespaces", fakeapi.namespace("churn"))
        for k in range(pool):
            api.add("services", fakeapi.service("churn", f"hl-{k}", headless=True,
                                                ports=[("http", 8080, "TCP")]))
            self._write(k, create=True)

    @staticmethod
    def name(k: int) -> str:
        return f"hl-{k}.churn.svc.{ZONE}."

    def endpoints(self, k: int) -> list[str]:
        with self._lock:
            return list(self._current[k])

    def _write(self, k: int, *, create: bool = False) -> None:
        self._gen += 1
        g = self._gen
        ips = [f"10.{200 + (g >> 16) % 50}.{(g >> 8) & 255}.{g & 255}"]
        ips += [f"10.250.{k}.{1 + j}" for j in range(self.rng.randrange(1, 4))]
        obj = fakeapi.endpoint_slice("churn", f"hl-{k}-x", f"hl-{k}",
                                     ports=[("http", 8080, "TCP")], endpoints=ips)
        with self._lock:
            (self.api.add if create else self.api.update)("endpointslices", obj)
            self._current[k] = ips

    def start(self) -> SliceChurn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        try:
            next_at = time.monotonic()
            while not self._stop.wait(max(0.0, next_at - time.monotonic())):
                next_at = max(next_at + self.interval, time.monotonic() - 1.0)
                self._write(self.rng.randrange(self.pool))
                self.ops += 1
        except BaseException as err:  # the caller reports it
            self.error = err
