"""Smoke runs of ``bench/udp_qps.py --quick`` (and ``--profile``): the benchmark starts kdns and
the reference servers it finds (dnsmasq, unbound) plus the upstream, checks their answers on
every workload, measures, prints a positive figure per server and workload, the ratios and the
goal lines, and leaves no process or temp directory behind. It checks that the benchmark works,
not a speed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "udp_qps.py"
RESULT = re.compile(
    r"^RESULT server=(?P<server>\S+) workload=(?P<workload>\S+) qps=(?P<qps>[\d.]+) "
    r".* ok=(?P<ok>\w+)$",
    re.M,
)
NEEDS_DNSPERF = pytest.mark.skipif(shutil.which("dnsperf") is None, reason="needs dnsperf")


def _run(args: list[str], timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def _assert_cleaned_up(proc: subprocess.CompletedProcess[str], expected_servers: int) -> None:
    log = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    # Every server it started is gone (it waits for them, so not even a zombie is left) and
    # its temp directory is removed.
    pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", proc.stderr)]
    assert len(pids) == expected_servers, log
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"server pid {pid} still running\n{log}"
    tmp_dirs = re.findall(r" in (/\S*kdns-bench-\S+)$", proc.stderr, re.M)
    assert tmp_dirs, log
    assert not Path(tmp_dirs[0]).exists(), log


@pytest.mark.slow
@NEEDS_DNSPERF
def test_quick_benchmark_runs_every_workload(tmp_path: Path) -> None:
    servers = ["kdns"] + [s for s in ("dnsmasq", "unbound") if shutil.which(s)]
    # TCP runs for kdns alone below: dnsperf itself sometimes dies ("Bad file descriptor")
    # on dnsmasq's fork-per-connection TCP in a 0.1 s run, which says nothing about kdns.
    workloads = ["hits", "podmix", "srv", "cached", "latency"]
    if not shutil.which("dnsmasq"):  # the upstream of the forwarded workloads is a dnsmasq
        workloads = ["hits", "srv"]
    out_json = tmp_path / "bench.json"
    proc = _run(["--quick", "--servers", ",".join(servers), "--workloads", ",".join(workloads),
                 "--n", "60", "--duration", "0.3", "--warmup", "0.1", "--json", str(out_json)])
    log = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, log

    results = {(m["server"], m["workload"]): m for m in RESULT.finditer(proc.stdout)}
    assert set(results) == {(s, w) for s in servers for w in workloads}, log
    for key, m in results.items():
        assert float(m["qps"]) > 0, (key, log)
        assert m["ok"] == "yes", (key, log)  # response codes matched the workload's mix
    if "latency" in workloads:
        # The fixed-rate run reports per-query latency percentiles for every server.
        lat = re.findall(r"^RESULT server=(\S+) workload=latency .* avg_ms=([\d.]+) "
                         r"p99_ms=([\d.]+) ok=yes$", proc.stdout, re.M)
        assert {s for s, _, _ in lat} == set(servers), log
        assert all(float(p99) >= float(avg) * 0.5 > 0 for _, avg, p99 in lat), log
    assert re.search(r"^memory kdns: VmRSS \d+\.\d MB when ready", proc.stdout, re.M), log
    for ref in servers[1:]:
        assert re.search(rf"^ratio kdns/{ref} \(median QPS\): hits \d", proc.stdout, re.M), log
    if "dnsmasq" in servers:
        goals = re.findall(r"^GOAL (\w+): kdns/dnsmasq [\d.]+ >= [\d.]+: (PASS|FAIL)$",
                           proc.stdout, re.M)
        assert {w for w, _ in goals} == {"hits", "podmix", "cached"} & set(workloads), log

    data = json.loads(out_json.read_text())
    assert {(r["server"], r["workload"]) for r in data["results"]} == set(results)
    _assert_cleaned_up(proc, len(servers))


@pytest.mark.slow
@NEEDS_DNSPERF
def test_profile_prints_where_kdns_spends_time() -> None:
    proc = _run(["--quick", "--profile", "hits", "--n", "40", "--duration", "0.5",
                 "--warmup", "0.1", "--profile-top", "10"])
    log = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, log
    assert "PROFILE kdns, workload hits, top 10 by tottime (all threads):" in proc.stdout, log
    # The listener thread's profile is merged in: the UDP loop and the fast path show up.
    assert re.search(r"listeners\.py:\d+\(_run\)", proc.stdout), log
    assert re.search(r"dispatch\.py:\d+\(lookup\)", proc.stdout), log
    _assert_cleaned_up(proc, 1)


def test_bad_workload_is_refused() -> None:
    proc = _run(["--workloads", "nope"], timeout=30)
    assert proc.returncode == 2
    assert "unknown workload 'nope'" in proc.stderr


def test_quick_benchmark_tcp_workload_for_kdns() -> None:
    proc = _run(["--quick", "--servers", "kdns", "--workloads", "tcp", "--n", "60",
                 "--duration", "0.3", "--warmup", "0.1"])
    log = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, log
    m = re.search(r"^RESULT server=kdns workload=tcp qps=([\d.]+) .* ok=yes$", proc.stdout, re.M)
    assert m is not None and float(m.group(1)) > 0, log


@NEEDS_DNSPERF
def test_churn_workload_counts_changes_and_stale_answers() -> None:
    proc = _run(["--workloads", "churn", "--servers", "kdns", "--churn-n", "50",
                 "--churn-rates", "0,20", "--reps", "1", "--duration", "1", "--warmup", "0.1",
                 "--timeout", "0.2"])
    log = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, log
    rows = dict(re.findall(r"^RESULT server=kdns workload=(churn-\S+) (.*)$", proc.stdout, re.M))
    assert set(rows) == {"churn-0", "churn-20"}, log
    assert re.search(r"qps_median=[1-9]\d* ratio_frozen=1.00 stale=0 checked=0", rows["churn-0"])
    m = re.search(r"stale=(\d+) checked=(\d+)", rows["churn-20"])
    assert m is not None and int(m.group(1)) == 0 and int(m.group(2)) >= 1, log
    assert "| churn, 20 changes/s (50 Services, one process) |" in proc.stdout, log


@NEEDS_DNSPERF
@pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="needs dnsmasq")
def test_cold_workload_runs_kdns_and_dnsmasq_on_fresh_names() -> None:
    proc = _run(["--workloads", "cold", "--servers", "kdns,dnsmasq", "--churn-n", "60",
                 "--reps", "1", "--duration", "0.3", "--warmup", "0.1", "--timeout", "0.2",
                 "--cold-lines", "200000"])
    log = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, log
    for server in ("kdns", "dnsmasq"):
        assert re.search(rf"^RESULT server={server} workload=cold qps_median=[1-9]", proc.stdout,
                         re.M), log
    assert "ratio kdns/dnsmasq cold:" in proc.stdout and "warning:" not in proc.stdout, log
