"""Smoke run of ``bench/workers.py --quick``: it starts ``kdns serve --workers N`` for N = 1 and 2
(unpinned for the fixed-rate run, pinned to one core for the saturation run), checks that every
worker answers, measures, prints both tables with numbers, the projection and its bounds note,
writes the JSON, and leaves no process (supervisor or worker) or temp directory behind. It
checks that the benchmark works, not a speed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "workers.py"
NUM = r"[\d,]+(?:\.\d+)?"


def _run(args: list[str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("dnsperf") is None, reason="needs dnsperf")
def test_quick_workers_benchmark(tmp_path: Path) -> None:
    out_json = tmp_path / "workers.json"
    proc = _run(["--quick", "--workloads", "hits", "--n", "100", "--json", str(out_json)])
    log = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, log
    out = proc.stdout

    # a. fixed rate: one row per worker and an "all" row per N, with CPU us/query and shares.
    for n, worker in ((1, "0"), (2, "0"), (2, "1")):
        assert re.search(rf"^ {n}  {worker} +{NUM} \({NUM}-{NUM}\) +{NUM}% ", out, re.M), log
    assert re.search(rf"^ 2  all +{NUM} \({NUM}-{NUM}\) +balance {NUM} ", out, re.M), log
    assert re.search(r"^supervisor CPU during the fixed-rate runs: N=2 [\d.]+% of one core",
                     out, re.M), log
    # b. saturation on one core: QPS per N.
    for n in (1, 2):
        assert re.search(rf"^ {n} +{NUM}  \({NUM} - {NUM}\) +{NUM} +\d+% +{NUM} +{NUM} +\d+$",
                         out, re.M), log
    assert re.search(r"^memory N=2: supervisor VmRSS [\d.]+ MB, workers [\d.]+ MB, [\d.]+ MB",
                     out, re.M), log
    # The projection, labelled as one, for 1..16 workers, and what bounds it.
    assert "PROJECTION (not a measurement) hits" in out, log
    projected = dict(re.findall(r"^PROJECTED workload=hits workers=(\d+) qps=(\d+) ", out, re.M))
    assert set(projected) == {"1", "2", "4", "8", "16"}, log
    assert all(int(q) > 0 for q in projected.values()), log
    assert "SO_REUSEPORT picks a worker by a hash of the 4-tuple" in out, log
    rows = re.findall(r"^WORKERS workload=hits n=(\d) us_per_query=([\d.]+) balance=([\d.]+) "
                      r"supervisor_cpu=(\S+) saturation_qps=(\d+) ", out, re.M)
    assert [r[0] for r in rows] == ["1", "2"], log
    assert all(float(r[1]) > 0 and 0 < float(r[2]) <= 1 and int(r[4]) > 0 for r in rows), log
    assert rows[0][3] == "-" and float(rows[1][3]) >= 0, log  # N=1 has no supervisor

    data = json.loads(out_json.read_text())
    assert {r["n"] for r in data["runs"]} == {1, 2}
    assert {r["kind"] for r in data["runs"]} == {"fixed", "saturation"}
    assert all(len(r["worker_requests"]) == r["n"] and min(r["worker_requests"]) > 0
               for r in data["runs"])
    assert data["problems"] == []

    # Nothing left running: every supervisor and worker it reported, and its temp dir.
    pids = [int(p) for m in re.finditer(r"\(pid (\d+)(?:, workers ([\d ]+))?", proc.stderr)
            for p in [m.group(1), *(m.group(2) or "").split()]]
    assert len(pids) == 2 * 1 + 2 * 3, log  # N=1 twice, N=2 twice (supervisor + 2 workers)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"pid {pid} still running\n{log}"
    tmp_dirs = re.findall(r" in (/\S*kdns-workers-\S+)$", proc.stderr, re.M)
    assert tmp_dirs and not Path(tmp_dirs[0]).exists(), log


def test_bad_workers_flag_is_refused() -> None:
    proc = _run(["--workers", "0"], timeout=30)
    assert proc.returncode == 2
    assert "--workers" in proc.stderr
