"""bench/suite.py's summary: a goal with no result is NOT MEASURED and counts as missed."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


suite = _load("suite")


def qps_goal(w: str, ok: bool = True) -> dict[str, Any]:
    return {"workload": w, "ratio": 1.0 if ok else 0.5, "target": 0.9, "pass": ok}


def scale_goal(what: str, ok: bool = True) -> dict[str, Any]:
    return {"what": what, "text": f"{what} figure", "pass": ok}


def all_measured(sizes: list[int]) -> dict[str, Any]:
    return {
        "qps": {"goals": [qps_goal(w) for w in suite.QPS_GOALS]},
        "scale": {"goals": [scale_goal(f"scale {n} {k}") for n in sizes
                            for k in suite.SCALE_GOALS]
                  + [scale_goal(f"headless {k}") for k in suite.HEADLESS_GOALS]},
    }


def test_everything_measured_and_met_is_none_missed() -> None:
    lines, missed = suite.summarize(all_measured([500]), [], sizes=[500])
    assert missed == []
    assert lines[-1] == "SUITE goals missed: none"
    assert not [ln for ln in lines if ln.startswith(("NOT MEASURED", "FAIL"))]


def test_dnsmasq_absent_leaves_the_throughput_goals_not_measured() -> None:
    results = all_measured([500])
    results["qps"] = {"goals": []}  # udp_qps.py computes no kdns/dnsmasq ratio without dnsmasq
    lines, missed = suite.summarize(results, [], sizes=[500])
    assert missed == [f"{w} throughput (not measured)" for w in suite.QPS_GOALS]
    for w in suite.QPS_GOALS:
        assert any(ln.startswith(f"NOT MEASURED  {w}:") for ln in lines)
    assert lines[-1] != "SUITE goals missed: none"
    assert lines[-1].startswith("SUITE goals missed: hits throughput (not measured)")


def test_a_failed_scale_run_leaves_every_scale_goal_not_measured() -> None:
    results = all_measured([10_000, 50_000])
    del results["scale"]
    lines, missed = suite.summarize(results, [("scale", 1)], sizes=[10_000, 50_000])
    assert missed[0] == "scale benchmark (exit 1)"
    expected = 2 * len(suite.SCALE_GOALS) + len(suite.HEADLESS_GOALS)
    assert len([m for m in missed if m.endswith("(not measured)")]) == expected
    assert "NOT MEASURED  scale 50000 change_max" in "\n".join(lines)


def test_a_figure_not_recorded_is_not_measured() -> None:
    # scale.py sets no change goals when it timed no change.
    results = all_measured([500])
    results["scale"]["goals"] = [g for g in results["scale"]["goals"]
                                 if "change" not in g["what"]]
    _, missed = suite.summarize(results, [], sizes=[500])
    assert missed == ["scale 500 change_p50 (not measured)", "scale 500 change_max (not measured)"]


def test_failed_goals_are_missed_and_unexpected_ones_still_shown() -> None:
    results = all_measured([500])
    results["qps"]["goals"][1] = qps_goal("podmix", ok=False)
    results["scale"]["goals"].append(scale_goal("scale 500 extra", ok=False))
    lines, missed = suite.summarize(results, [], sizes=[500])
    assert missed == ["podmix throughput", "scale 500 extra"]
    assert "FAIL  podmix: kdns/dnsmasq 0.50 >= 0.90" in lines


def test_expected_goals_match_what_the_benchmarks_set() -> None:
    src = (BENCH / "scale.py").read_text()
    set_keys = set(re.findall(r'res\.goals\["(\w+)"\]', src))
    assert set_keys == set(suite.SCALE_GOALS) | set(suite.HEADLESS_GOALS)
    goals = re.search(r"^GOALS = \{(.*?)\}", (BENCH / "udp_qps.py").read_text(), re.M)
    assert goals is not None
    assert tuple(re.findall(r'"(\w+)":', goals.group(1))) == suite.QPS_GOALS
    assert "500" in src and "10000,50000" in src  # scale.py's default sizes, as scale_sizes


@pytest.mark.parametrize("quick,sizes", [(True, [500]), (False, [10_000, 50_000])])
def test_scale_sizes(quick: bool, sizes: list[int]) -> None:
    assert suite.scale_sizes(quick) == sizes


def test_a_suite_that_measured_nothing_says_so() -> None:
    # Both benchmarks skipped: the real script, end to end, must not claim "none missed".
    r = subprocess.run([sys.executable, str(BENCH / "suite.py"), "--quick", "--skip-qps",
                        "--skip-scale"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "SUITE goals missed: none" not in r.stdout
    assert r.stdout.count("NOT MEASURED") == (len(suite.QPS_GOALS) + len(suite.SCALE_GOALS)
                                              + len(suite.HEADLESS_GOALS))
