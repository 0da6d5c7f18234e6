"""``kdns serve --workers N`` as a user runs it: real processes, a fake API server over HTTP,
DNS over real sockets.

What must hold: every worker answers (SO_REUSEPORT spreads fresh client sockets over them),
every worker sees every cluster change, the API server sees one set of watches whatever N is,
/metrics reads as one instance, a killed worker comes back with the whole state, reload reaches
every worker, SIGTERM drains all of them, and an orphaned worker does not linger.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from kdns.server.supervisor import default_workers
from tests import fakeapi
from tests.integration.test_cli import KDNS, Proc
from tests.integration.test_cli import _get as get
from tests.integration.test_k8s_dns import _seed as seed
from tests.ports import free_dns_port, free_tcp_port

N_ASK = 40
"""Queries from fresh sockets per check: all landing on one of two workers has odds 2^-40."""


@dataclass
class Instance:
    api: fakeapi.FakeApiServer
    proc: Proc
    corefile: Path
    ready: int
    metrics: int
    timeout: float = 3.0

    @property
    def port(self) -> int:
        return self.proc.port

    def ask(self, name: str, qtype: str = "A", tcp: bool = False) -> dns.message.Message:
        q = dns.message.make_query(name, qtype)
        if tcp:
            return dns.query.tcp(q, "127.0.0.1", port=self.port, timeout=self.timeout)
        return dns.query.udp(q, "127.0.0.1", port=self.port, timeout=self.timeout)

    def addresses(self, name: str) -> list[list[str]]:
        """The A answer from N_ASK fresh UDP sockets (each a new source port)."""
        out = []
        for _ in range(N_ASK):
            r = self.ask(name)
            out.append(sorted(rr.address for rrset in r.answer for rr in rrset
                              if hasattr(rr, "address")))
        return out

    def workers(self) -> list[int]:
        return children(self.proc.p.pid)

    def scrape(self) -> str:
        return get(self.metrics, "/metrics")[1]


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True, check=False).stdout
    return sorted(int(x) for x in out.split())


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def corefile_text(api: fakeapi.FakeApiServer, tmp: Path, ready: int, metrics: int,
                  *, ttl: int = 30, extra: str = "") -> str:
    kubeconfig = api.write_kubeconfig(str(tmp / "kubeconfig"), token="s3cret")
    return f"""
.:53 {{
    errors
    health 127.0.0.1:{free_tcp_port()} {{
        lameduck 1s
    }}
    ready 127.0.0.1:{ready}
    prometheus 127.0.0.1:{metrics}
    loadbalance
    {extra}
    kubernetes cluster.local in-addr.arpa {{
        kubeconfig {kubeconfig}
        ttl {ttl}
    }}
}}
"""


def launch(api: fakeapi.FakeApiServer, tmp: Path, workers: str = "2", extra: str = "") -> Instance:
    ready, metrics = free_tcp_port(), free_tcp_port()
    corefile = tmp / "Corefile"
    corefile.write_text(corefile_text(api, tmp, ready, metrics, extra=extra))
    proc = Proc([*KDNS, "serve", "--conf", str(corefile), "--dns-addr", "127.0.0.1",
                 "--dns-port", "0", "--workers", workers])
    proc.wait_serving(timeout=30)
    return Instance(api, proc, corefile, ready, metrics)


@pytest.fixture
def api() -> Iterator[fakeapi.FakeApiServer]:
    with fakeapi.FakeApiServer(bookmark_interval=0.2) as server:
        server.required_token = "s3cret"
        seed(server)
        yield server


@pytest.fixture
def two(api: fakeapi.FakeApiServer, tmp_path: Path) -> Iterator[Instance]:
    inst = launch(api, tmp_path)
    try:
        yield inst
    finally:
        pids = inst.workers()
        inst.proc.stop()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_workers_answer_share_one_set_of_watches_and_count_as_one(two: Instance) -> None:
    assert len(two.workers()) == 2
    names = sorted(Path(f"/proc/{pid}/comm").read_text().strip() for pid in two.workers())
    assert names == ["kdns-worker-0", "kdns-worker-1"]  # what ps and top show
    assert two.addresses("kubia.default.svc.cluster.local.") == [["10.98.237.175"]] * N_ASK
    tcp = two.ask("_http._tcp.kubia.default.svc.cluster.local.", "SRV", tcp=True)
    assert [(r.port, r.target.to_text()) for r in tcp.answer[0]] == [
        (80, "kubia.default.svc.cluster.local.")]

    # every worker sees a change: each fresh socket may land on either worker
    two.api.add("services", fakeapi.service("default", "fresh", cluster_ip="10.96.7.7"))
    until(lambda: two.ask("fresh.default.svc.cluster.local.").rcode() == 0)
    assert two.addresses("fresh.default.svc.cluster.local.") == [["10.96.7.7"]] * N_ASK
    two.api.delete("services", "default", "fresh")
    until(lambda: all(two.ask("fresh.default.svc.cluster.local.").rcode() == dns.rcode.NXDOMAIN
                      for _ in range(N_ASK)))

    # one list and one watch per resource, as from a single-process kdns
    for kind in ("services", "endpointslices", "namespaces"):
        assert two.api.watches_opened(kind) == 1, kind
        assert two.api.count(kind, watch=False, status=200) == 1, kind

    # /metrics reads as one instance: the workers' counters add up to exactly what was sent
    before = two.scrape()
    two.addresses("kubia.default.svc.cluster.local.")
    text = two.scrape()
    delta = (metric(text, "coredns_dns_requests_total")
             - metric(before, "coredns_dns_requests_total"))
    assert delta == N_ASK
    per_worker = [metric(text, "kdns_worker_requests_total", worker=str(i))
                  - metric(before, "kdns_worker_requests_total", worker=str(i)) for i in (0, 1)]
    assert all(n > 0 for n in per_worker), per_worker  # the kernel spread them
    assert sum(per_worker) == N_ASK
    assert metric(text, "kdns_worker_up") == 2
    assert metric(text, "kdns_workers") == 2
    assert metric(text, "kdns_kubernetes_synced") == 1
    assert metric(text, "kdns_kubernetes_services") == 1  # max, not the sum of two workers
    assert metric(text, "coredns_build_info") == 1
    assert get(two.ready, "/ready") == (200, "OK")


def test_a_killed_worker_is_restarted_with_the_whole_state(two: Instance) -> None:
    first = two.workers()
    two.addresses("kubia.default.svc.cluster.local.")
    counted = metric(two.scrape(), "coredns_dns_requests_total")
    assert counted >= N_ASK
    os.kill(first[0], signal.SIGKILL)
    until(lambda: not alive(first[0]))
    # A query that races the kernel's teardown of the killed worker's socket can be lost (a
    # crash cannot drain; the client's retry covers it). Once it is gone, the other worker
    # takes the killed one's share.
    time.sleep(0.2)
    assert two.addresses("kubia.default.svc.cluster.local.") == [["10.98.237.175"]] * N_ASK
    # a change made while a worker is down reaches its replacement through the replay
    two.api.add("services", fakeapi.service("default", "during", cluster_ip="10.96.5.5"))
    until(lambda: len(two.workers()) == 2 and set(two.workers()) != set(first), timeout=10)
    until(lambda: metric(two.scrape(), "kdns_worker_up") == 2, timeout=15)
    assert two.addresses("during.default.svc.cluster.local.") == [["10.96.5.5"]] * N_ASK
    text = two.scrape()
    assert metric(text, "kdns_worker_restarts_total") == 1
    # the dead worker's counts stay in the instance's counters: no step back (a reset to
    # Prometheus, which would make rate() spike)
    assert metric(text, "coredns_dns_requests_total") >= counted + 2 * N_ASK
    # the restart did not open watches of its own
    assert two.api.watches_opened("services") == 1
    assert get(two.ready, "/ready") == (200, "OK")


def test_reload_reaches_every_worker(api: fakeapi.FakeApiServer, tmp_path: Path) -> None:
    inst = launch(api, tmp_path, extra="reload 2s 1s")
    pids = inst.workers()
    try:
        assert {inst.ask("kubia.default.svc.cluster.local.").answer[0].ttl
                for _ in range(10)} == {30}
        inst.corefile.write_text(inst.corefile.read_text().replace("ttl 30", "ttl 7"))

        def all_new() -> bool:
            return {inst.ask("kubia.default.svc.cluster.local.").answer[0].ttl
                    for _ in range(N_ASK)} == {7}

        until(all_new, timeout=15)
        assert metric(inst.scrape(), "coredns_reload_failed_total") == 0
        assert inst.workers() == pids  # reloaded in place, not restarted
    finally:
        inst.proc.stop()


def test_sigterm_drains_every_worker_through_lameduck(two: Instance) -> None:
    pids = two.workers()
    t0 = time.monotonic()
    two.proc.p.send_signal(signal.SIGTERM)
    until(lambda: get(two.ready, "/ready")[0] == 503, timeout=2)
    # still answering during the lameduck second
    assert two.ask("kubia.default.svc.cluster.local.").rcode() == 0
    assert two.proc.p.wait(timeout=20) == 0
    assert time.monotonic() - t0 >= 0.9
    until(lambda: not any(alive(p) for p in pids), timeout=5)


def test_orphaned_workers_stop(two: Instance) -> None:
    pids = two.workers()
    # Without workers to begin with there would be nothing to see stop.
    assert len(pids) == 2 and all(alive(p) for p in pids)
    os.kill(two.proc.p.pid, signal.SIGKILL)
    two.proc.p.wait(timeout=5)
    until(lambda: not any(alive(p) for p in pids), timeout=10)


@pytest.mark.parametrize("value, message", [
    ("0", "must be in 1..256"),
    ("-3", "must be in 1..256"),
    ("many", "is not a number or 'auto'"),
    ("1000", "must be in 1..256"),
])
def test_bad_workers_values_are_refused(value: str, message: str) -> None:
    r = subprocess.run([*KDNS, "serve", "--workers", value, "--dns-port", "0"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert message in r.stderr


def test_a_bad_corefile_fails_before_any_worker(tmp_path: Path) -> None:
    bad = tmp_path / "Corefile"
    bad.write_text(".:53 {\n    kubernetes cluster.local {\n        ttl 9000\n    }\n}\n")
    r = subprocess.run([*KDNS, "serve", "--conf", str(bad), "--workers", "2", "--dns-port",
                        "0"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert re.search(r"Corefile:3:\d+: kubernetes: ttl must be in \[0, 3600\], got 9000",
                     r.stderr), r.stderr
    assert "worker" not in r.stderr


def test_port_zero_gives_all_workers_one_port(api: fakeapi.FakeApiServer,
                                              tmp_path: Path) -> None:
    inst = launch(api, tmp_path, workers="auto")
    try:
        n = default_workers()
        assert len(inst.workers()) == (n if n > 1 else 0)
        # the port is held by kdns alone: a plain bind (no SO_REUSEPORT) must fail
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(OSError):
            s.bind(("127.0.0.1", inst.port))
        assert inst.addresses("kubia.default.svc.cluster.local.") == [["10.98.237.175"]] * N_ASK
    finally:
        inst.proc.stop()


def test_ctrl_c_to_the_process_group_stops_cleanly(api: fakeapi.FakeApiServer,
                                                   tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches every process of the group; the supervisor alone decides."""
    ready, metrics = free_tcp_port(), free_tcp_port()
    corefile = tmp_path / "Corefile"
    corefile.write_text(corefile_text(api, tmp_path, ready, metrics))
    p = subprocess.Popen([*KDNS, "serve", "--conf", str(corefile), "--dns-addr", "127.0.0.1",
                          "--dns-port", "0", "--workers", "2"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.startswith("kdns: serving on "), line
        pids = children(p.pid)
        assert len(pids) == 2
        os.killpg(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=20)
        assert p.returncode == 0, err
        assert "Traceback" not in err and "restarting" not in err, err
        until(lambda: not any(alive(pid) for pid in pids), timeout=5)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_fails_start_up_alike(workers: str, tmp_path: Path) -> None:
    from tests.conftest import DEMO

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))  # no SO_REUSEPORT: nobody may share it
        port = held.getsockname()[1]
        corefile = tmp_path / "Corefile"
        corefile.write_text((DEMO / "Corefile").read_text()
                            .replace(".:1053", f".:{port}")
                            .replace("manifests .", f"manifests {DEMO}")
                            .replace("127.0.0.1:8080", f"127.0.0.1:{free_tcp_port()}")
                            .replace("127.0.0.1:8181", f"127.0.0.1:{free_tcp_port()}")
                            .replace("127.0.0.1:9153", f"127.0.0.1:{free_tcp_port()}"))
        r = subprocess.run([*KDNS, "serve", "--conf", str(corefile), "--dns-addr", "127.0.0.1",
                            "--workers", workers], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert f"cannot listen on udp+tcp 127.0.0.1:{port} for zone" in r.stderr, r.stderr
    assert "Address already in use" in r.stderr


def test_a_forwarding_loop_stops_every_worker(tmp_path: Path) -> None:
    port = free_dns_port()
    corefile = tmp_path / "Corefile"
    corefile.write_text(f".:{port} {{\n    loop\n    forward . 127.0.0.1:{port}\n}}\n")
    r = subprocess.run([*KDNS, "serve", "-c", str(corefile), "--dns-addr", "127.0.0.1",
                        "--workers", "2"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert 'detected for zone ".", see https://coredns.io/plugins/loop#troubleshooting' \
        in r.stderr
    assert r.stderr.rstrip().splitlines()[-1].startswith("kdns: plugin/loop: Loop (")


def test_no_loop_is_no_loop_with_several_workers(tmp_path: Path) -> None:
    """All workers share the probe name and only one sends it: an honest probe, answered by
    the upstream, must not look like a loop to the worker that happens to receive it."""
    from tests.conftest import start_server

    (tmp_path / "up").mkdir()
    upstream = start_server(".:53 {\n    errors\n}\n", tmp_path / "up")
    try:
        up_port = upstream.listeners[0].port
        corefile = tmp_path / "Corefile"
        metrics = free_tcp_port()
        corefile.write_text(f".:53 {{\n    prometheus 127.0.0.1:{metrics}\n    loop\n"
                            f"    forward . 127.0.0.1:{up_port}\n}}\n")
        proc = Proc([*KDNS, "serve", "-c", str(corefile), "--dns-addr", "127.0.0.1",
                     "--dns-port", "0", "--workers", "2"])
        try:
            proc.wait_serving(timeout=30)
            time.sleep(4.0)  # the probe's reply plus its 2 s grace, with margin
            assert proc.p.poll() is None, proc.stderr()
            hinfo = metric(get(metrics, "/metrics")[1], "coredns_dns_requests_total",
                           type="other")
            assert hinfo >= 1  # the probe did reach a worker
        finally:
            assert proc.stop() == 0
    finally:
        upstream.stop()


def test_reload_that_changes_what_is_watched_moves_the_shared_watches(
        api: fakeapi.FakeApiServer, tmp_path: Path) -> None:
    """A reload that narrows the kubernetes plugin (``labels``) needs other watches: the
    supervisor starts them once for all workers, replays them, and stops the old ones when no
    worker reads them any more."""
    api.add("services", fakeapi.service("default", "teamed", cluster_ip="10.96.3.3",
                                        labels={"team": "a"}))
    inst = launch(api, tmp_path, extra="reload 2s 1s")
    try:
        assert inst.addresses("kubia.default.svc.cluster.local.") == [["10.98.237.175"]] * N_ASK
        assert api.watches_opened("services") == 1
        inst.corefile.write_text(inst.corefile.read_text().replace(
            "        ttl 30\n", "        ttl 30\n        labels team=a\n"))

        def narrowed() -> bool:
            return all(inst.ask("kubia.default.svc.cluster.local.").rcode() == dns.rcode.NXDOMAIN
                       for _ in range(N_ASK))

        until(narrowed, timeout=20)
        assert inst.addresses("teamed.default.svc.cluster.local.") == [["10.96.3.3"]] * N_ASK
        # one new set of watches for both workers, with the selector
        selected = [r for r in api.requests if r.kind == "services" and r.watch
                    and r.params.get("labelSelector") == "team=a"]
        assert len(selected) == 1
        # the old, unfiltered watches close once the old configuration's grace period is over
        until(lambda: api.open_watches() == 3, timeout=15)
        text = inst.scrape()
        assert metric(text, "kdns_shared_sources") == 1
        assert metric(text, "coredns_reload_failed_total") == 0
    finally:
        inst.proc.stop()


def test_a_change_evicts_only_what_it_touched_in_every_worker(two: Instance) -> None:
    """Each worker keeps its own stored replies and applies each change to them: a change of
    one Service's endpoints drops that Service's replies in every worker and nothing else.
    Read through the merged /metrics: the stored replies (summed over workers) and each
    worker's request count (so both workers are known to have served after the change)."""
    def slice_of(*ips: str) -> fakeapi.Obj:
        return fakeapi.endpoint_slice("default", "churn-1", "churn",
                                      ports=[("http", 80, "TCP")], endpoints=list(ips))

    two.api.add("services", fakeapi.service("default", "keep", cluster_ip="10.96.8.1"))
    two.api.add("services", fakeapi.service("default", "moved", cluster_ip="10.96.8.2"))
    two.api.add("services", fakeapi.service("default", "churn", headless=True,
                                            ports=[("http", 80, "TCP")]))
    two.api.add("endpointslices", slice_of("10.244.9.1"))
    keep, moved, churn = (f"{n}.default.svc.cluster.local." for n in ("keep", "moved", "churn"))
    until(lambda: all(two.ask(n).rcode() == 0 and two.ask(n).answer for n in (keep, moved, churn)))

    def stored() -> float:
        return metric(two.scrape(), "kdns_fast_path_entries")

    def served() -> list[float]:
        text = two.scrape()
        return [metric(text, "kdns_worker_requests_total", worker=str(i)) for i in (0, 1)]

    def everywhere(name: str, ips: list[str]) -> None:
        """Asked from N_ASK fresh sockets (both workers) until every answer is ``ips``."""
        until(lambda: two.addresses(name) == [ips] * N_ASK, timeout=10)

    for name, ips in ((keep, ["10.96.8.1"]), (moved, ["10.96.8.2"]), (churn, ["10.244.9.1"])):
        everywhere(name, ips)
    warm = stored()
    assert warm >= 6  # three names, each stored in both workers

    # Another Service's endpoints change: its replies go, keep's and moved's stay, per worker.
    before = served()
    two.api.update("endpointslices", slice_of("10.244.9.2"))
    everywhere(churn, ["10.244.9.2"])  # no stale answer from either worker
    after = served()
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)
    assert stored() == warm  # churn dropped and stored again in each worker; nothing else went

    # The control: a change of moved drops its reply in both workers, and only that one.
    two.api.update("services", fakeapi.service("default", "moved", cluster_ip="10.96.8.3"))
    # Each worker catches up on its next query: keep asking (churn) until both have.
    until(lambda: two.addresses(churn) == [["10.244.9.2"]] * N_ASK and stored() == warm - 2,
          timeout=10)
    everywhere(moved, ["10.96.8.3"])
    assert stored() == warm
