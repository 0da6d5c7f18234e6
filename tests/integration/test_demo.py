"""The first ten minutes: scripts/demo, the demo and example Corefiles, /metrics, and the
memory panel and alert next to the Deployment's memory limit."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml

from kdns.config.parser import load_corefile
from tests.conftest import DEMO, ROOT
from tests.ports import free_tcp_port

KDNS = str(Path(sys.executable).parent / "kdns")


def executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


# -- scripts/demo -----------------------------------------------------------------------------


def test_demo_refuses_an_old_python_up_front(tmp_path: Path) -> None:
    old = tmp_path / "python3.10"
    executable(old, '#!/bin/sh\n[ "$1" = -V ] && { echo "Python 3.10.12"; exit 0; }\nexit 1\n')
    r = subprocess.run([str(ROOT / "scripts" / "demo")], env={**os.environ, "PYTHON": str(old)},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.strip() == (f"demo: kdns needs Python 3.11 or newer; {old} is Python "
                                "3.10.12 (set PYTHON=/path/to/python3.11 or newer)")


def test_demo_installs_only_the_runtime_and_says_what_it_does(tmp_path: Path) -> None:
    """scripts/demo and scripts/setup-venv run for real in a copy of the repository whose .venv
    holds stand-ins for pip and kdns that record how they were called."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in ("demo", "setup-venv"):
        shutil.copy2(ROOT / "scripts" / name, repo / "scripts" / name)
    (repo / "pyproject.toml").write_text("[project]\nname = 'kdns'\n")
    bin_dir = repo / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    calls = tmp_path / "calls"
    executable(bin_dir / "python", "#!/bin/sh\nexit 0\n")
    for tool in ("pip", "kdns"):
        executable(bin_dir / tool, f'#!/bin/sh\necho "{tool} $*" >> {calls}\n')
    env = {**os.environ, "PYTHON": sys.executable}
    first = subprocess.run([str(repo / "scripts" / "demo"), "--log-level", "debug"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert calls.read_text().splitlines() == [
        "pip install --disable-pip-version-check -q -e .",
        "kdns serve --conf zones/demo/Corefile --dns-addr 127.0.0.1 --log-level debug"]
    progress = first.stderr.splitlines()
    assert progress[0] == "demo: setting up .venv (the first time takes a minute)"
    assert progress[1] == "setup-venv: installing kdns (runtime dependencies) into .venv"
    assert progress[2].startswith("demo: serving zones/demo on 127.0.0.1:1053")
    # Installed once: the second run goes straight to serving.
    calls.unlink()
    second = subprocess.run([str(repo / "scripts" / "demo")], env=env, capture_output=True,
                            text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert calls.read_text().splitlines() == [
        "kdns serve --conf zones/demo/Corefile --dns-addr 127.0.0.1"]


def _ports(corefile: Path) -> tuple[set[int], set[str]]:
    """(DNS ports, HTTP addresses) a Corefile binds."""
    dns, http = set(), set()
    for block in load_corefile(corefile):
        dns.update(k.port or 53 for k in block.keys)
        for d in block.directives:
            if d.name.text in ("health", "ready", "prometheus") and d.args:
                http.add(d.args[0].text)
    return dns, http


def test_the_example_corefile_runs_beside_the_demo() -> None:
    demo_dns, demo_http = _ports(DEMO / "Corefile")
    example_dns, example_http = _ports(ROOT / "Corefile.example")
    assert demo_dns == {1053} and demo_http == {"127.0.0.1:8080", "127.0.0.1:8181",
                                                "127.0.0.1:9153"}
    assert not demo_dns & example_dns and not demo_http & example_http
    header = (ROOT / "Corefile.example").read_text()
    for port in example_dns - {1154}:
        assert f"dig @127.0.0.1 -p {port} " in header


# -- /metrics ---------------------------------------------------------------------------------


def test_demo_serves_metrics_with_the_process_collector(tmp_path: Path) -> None:
    metrics = free_tcp_port()
    corefile = tmp_path / "Corefile"
    corefile.write_text((DEMO / "Corefile").read_text()
                        .replace(".:1053", ".:53")
                        .replace("manifests .", f"manifests {DEMO}")
                        .replace("127.0.0.1:8080", f"127.0.0.1:{free_tcp_port()}")
                        .replace("127.0.0.1:8181", f"127.0.0.1:{free_tcp_port()}")
                        .replace("127.0.0.1:9153", f"127.0.0.1:{metrics}"))
    p = subprocess.Popen([KDNS, "serve", "--conf", str(corefile), "--dns-addr", "127.0.0.1",
                          "--dns-port", "0"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        assert p.stdout.readline().startswith("kdns: serving on 127.0.0.1:")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=30)
    values = {m.group(1): float(m.group(2))
              for m in re.finditer(r"^(process_\w+) (\S+)$", text, re.M)}
    assert 10 << 20 < values["process_resident_memory_bytes"] < 1 << 30
    assert values["process_cpu_seconds_total"] > 0
    assert values["process_open_fds"] >= 3 and values["process_max_fds"] > 0
    assert "coredns_build_info" in text


# -- the memory panel and alert ---------------------------------------------------------------


def _quantity(text: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    return int(text[:-2]) * units[text[-2:]] if text[-2:] in units else int(text)


def _memory_limit() -> int:
    deployment = yaml.safe_load((ROOT / "deploy/base/deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return _quantity(container["resources"]["limits"]["memory"])


def test_dashboard_has_a_memory_panel_marking_the_limit() -> None:
    limit = _memory_limit()
    dash = json.loads((ROOT / "deploy/observability/kdns-dashboard.json").read_text())
    panels = [p for p in dash["panels"]
              if any("process_resident_memory_bytes" in t["expr"] for t in p.get("targets", []))]
    assert len(panels) == 1
    defaults = panels[0]["fieldConfig"]["defaults"]
    assert defaults["unit"] == "bytes"
    assert defaults["thresholds"]["steps"][-1] == {"color": "red", "value": limit}
    assert defaults["custom"]["thresholdsStyle"]["mode"] == "line"


def test_an_alert_fires_near_the_memory_limit() -> None:
    limit = _memory_limit()
    rules = yaml.safe_load((ROOT / "deploy/observability/kdns-alerts.yaml").read_text())
    (rule,) = [r for g in rules["groups"] for r in g["rules"]
               if "process_resident_memory_bytes" in r["expr"]]
    threshold = re.search(r">\s*([\d\s*]+)$", rule["expr"].strip())
    assert threshold is not None, rule["expr"]
    value = math.prod(int(f) for f in threshold.group(1).split("*"))  # e.g. 150 * 1024 * 1024
    assert 0.8 * limit <= value < limit
    assert rule["labels"]["severity"] == "warning" and rule["for"]


# -- docs -------------------------------------------------------------------------------------


def test_operations_guide_cites_only_documents_in_the_repository() -> None:
    doc = ROOT / "docs" / "operations.md"
    text = doc.read_text()
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert local, "the guide links its companions"
    for link in local:
        assert (doc.parent / link).resolve().is_file(), link
    # Section marks of a document that is not in the repository ("reference §4", "P9").
    assert not re.search(r"\breference (§|P\d)", text)
    assert "/work/" not in text
