"""Smoke run of ``bench/udp_qps.py --quick``: the benchmark starts kdns (and dnsmasq when it is
installed), checks their answers, measures, prints a positive QPS per server and workload, and
leaves no process or temp directory behind."""

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


@pytest.mark.slow
def test_quick_benchmark_prints_positive_qps(tmp_path: Path) -> None:
    servers = ["kdns", "dnsmasq"] if shutil.which("dnsmasq") else ["kdns"]
    out_json = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable, str(SCRIPT), "--quick",
            "--servers", ",".join(servers),
            "--n", "60", "--duration", "0.7", "--warmup", "0.2",
            "--json", str(out_json),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=100,
    )
    log = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, log

    results = {(m["server"], m["workload"]): m for m in RESULT.finditer(proc.stdout)}
    assert set(results) == {(s, w) for s in servers for w in ("hits", "mixed")}, log
    for key, m in results.items():
        assert float(m["qps"]) > 0, (key, log)
        assert m["ok"] == "yes", (key, log)  # response codes matched the workload's mix
    assert re.search(r"^memory kdns: VmRSS \d+\.\d MB when ready", proc.stdout, re.M), log
    if "dnsmasq" in servers:
        assert re.search(r"^ratio kdns/dnsmasq \(median QPS\): hits \d", proc.stdout, re.M), log

    data = json.loads(out_json.read_text())
    assert {(r["server"], r["workload"]) for r in data["results"]} == set(results)

    # Every server it started is gone (it waits for them, so not even a zombie is left) and
    # its temp directory is removed.
    pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", proc.stderr)]
    assert len(pids) == len(servers), log
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"server pid {pid} still running\n{log}"
    tmp_dirs = re.findall(r" in (/\S*kdns-bench-\S+)$", proc.stderr, re.M)
    assert tmp_dirs, log
    assert not Path(tmp_dirs[0]).exists(), log
