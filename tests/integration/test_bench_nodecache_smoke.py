"""bench/nodecache.py --quick: the footprint benchmark works end to end (not a speed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.netns import can_use_netns

ROOT = Path(__file__).resolve().parents[2]
why_not = can_use_netns() or next((f"{t} is not installed" for t in ("dnsmasq", "dnsperf",
                                                                      "taskset")
                                   if shutil.which(t) is None), None)


@pytest.mark.skipif(why_not is not None, reason=why_not or "")
def test_quick_run_prints_every_figure_and_cleans_up() -> None:
    before = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            timeout=10, check=True).stdout
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "nodecache.py"), "--quick"],
                          capture_output=True, text=True, timeout=110, check=False)
    log = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, log
    for pattern in (r"idle RSS: +[\d.]+ MB", r"full cache RSS: +[\d.]+ MB +\(200 success \+ 200 "
                    r"denial", r"CPU per 1,000 cached QPS: +[\d.]+ millicores",
                    r"cache-hit QPS, one core: +kdns [\d,]+ vs dnsmasq [\d,]+ = [\d.]+x",
                    r"published: node-cache",
                    # both servers answer a link-local address (the same kernel route path)
                    r"kdns on 169\.254\.20\.10, dnsmasq on 169\.254\.20\.11"):
        assert re.search(pattern, proc.stdout), (pattern, log)
    assert len(re.findall(r"^GOAL \w+: .*: (PASS|FAIL)$", proc.stdout, re.M)) == 3, log
    after = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                           timeout=10, check=True).stdout
    assert "ncb-" not in after.replace(before, ""), "a benchmark namespace was left behind"
