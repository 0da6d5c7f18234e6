"""``kdns check`` rejects what ``kdns serve`` would reject, through the real command: a
``manifests`` path that does not exist, a manifest that does not parse, a zone file with a bad
record; and it accepts what serve accepts (a missing hosts file is a warning in both, as in
CoreDNS)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

KDNS = str(Path(sys.executable).parent / "kdns")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KDNS, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


def both(corefile: Path) -> tuple[subprocess.CompletedProcess[str], ...]:
    return (run("check", str(corefile)),
            run("serve", "--conf", str(corefile), "--dns-addr", "127.0.0.1", "--dns-port", "0"))


def error_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("kdns: ")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_missing_manifests_path_is_located(tmp_path: Path) -> None:
    conf = tmp_path / "Corefile"
    conf.write_text(".:53 {\n    kubernetes cluster.local {\n        manifests nope\n    }\n}\n")
    for r in both(conf):
        assert error_line(r) == (f"kdns: {conf}:3:19: kubernetes: manifests: {tmp_path}/nope: "
                                 "no such file or directory")


def test_a_manifest_that_does_not_parse_is_located(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "bad.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: default}\n"
        "spec: {clusterIP: 10.0.0.1, ports: [}\n")
    conf = tmp_path / "Corefile"
    conf.write_text(".:53 {\n    kubernetes cluster.local {\n        manifests m\n    }\n}\n")
    for r in both(conf):
        assert error_line(r).startswith(f"kdns: {tmp_path}/m/bad.yaml:4:")


def test_a_bad_zone_file_is_located(tmp_path: Path) -> None:
    (tmp_path / "db.example").write_text("$ORIGIN example.org.\n@ 3600 IN SOA ns hostmaster 1 2 "
                                         "3 4 5\nwww IN A 999.1.1.1\n")
    conf = tmp_path / "Corefile"
    conf.write_text(".:53 {\n    file db.example example.org\n}\n")
    for r in both(conf):
        assert error_line(r) == (f"kdns: {conf}:2:10: file: {tmp_path}/db.example:3: invalid "
                                 "IPv4 address '999.1.1.1'")


def test_a_missing_hosts_file_is_a_warning_in_both(tmp_path: Path) -> None:
    conf = tmp_path / "Corefile"
    conf.write_text(".:53 {\n    hosts missing.hosts\n}\n")
    r = run("check", str(conf))
    assert r.returncode == 0 and r.stdout.strip() == f"{conf}: OK"
    assert f"{conf}:2:11: hosts: file does not exist: {tmp_path}/missing.hosts" in r.stderr


def test_the_shipped_corefiles_check_ok() -> None:
    for conf in ("zones/demo/Corefile", "Corefile.example"):
        r = run("check", conf)
        assert r.returncode == 0, r.stderr
