"""The errors a new user meets first, through the real ``kdns`` command.

A kubeconfig that is missing, unreadable or not YAML, an unknown ``--context``, an API that
refuses connections or answers 401/403: ``kdns resolve`` and ``kdns check`` exit 2 with one
line naming the file, context or URL and the cause; ``kdns serve`` exits 2 when the kubeconfig
cannot be loaded, and logs an unreachable API once (per minute) naming the URL without claiming
a "last good view" it never had. The API is tests/fakeapi.py over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.fakeapi import FakeApiServer, namespace, service
from tests.ports import free_tcp_port

KDNS = str(Path(sys.executable).parent / "kdns")


def kdns(*args: str, timeout: float = 60, user: str | None = None,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user else []
    clean = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    return subprocess.run([*prefix, KDNS, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**clean, **(env or {})})


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("kdns: ")
    return lines[0]


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as fake:
        fake.add("namespaces", namespace("default"))
        fake.add("services", service("default", "kubia", cluster_ip="10.98.237.175",
                                     ports=[("http", 80, "TCP")]))
        yield fake


def corefile_with(tmp_path: Path, kubeconfig: str, extra: str = "") -> str:
    path = tmp_path / "Corefile"
    path.write_text(f".:53 {{\n    kubernetes cluster.local {{\n        kubeconfig "
                    f"{kubeconfig}\n{extra}    }}\n}}\n")
    return str(path)


# -- the kubeconfig itself ------------------------------------------------------------------


def test_missing_kubeconfig(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    for cmd in (["resolve", "kubia", "--kubeconfig", str(missing)],
                ["check", corefile_with(tmp_path, str(missing))]):
        line = one_line_error(kdns(*cmd))
        assert line == f"kdns: kubeconfig {missing}: cannot read it: No such file or directory"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="root reads any file; needs root to drop to another user")
def test_unreadable_kubeconfig(api: FakeApiServer, tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    path = Path(api.write_kubeconfig(str(tmp_path / "kubeconfig")))
    path.chmod(0o600)
    line = one_line_error(kdns("resolve", "kubia", "--kubeconfig", str(path), user="65534"))
    assert line == f"kdns: kubeconfig {path}: cannot read it: Permission denied"


def test_kubeconfig_that_is_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("apiVersion: v1\nclusters: [\n  - name: x\n   bad: {\n")
    line = one_line_error(kdns("resolve", "kubia", "--kubeconfig", str(path)))
    assert line.startswith(f"kdns: kubeconfig {path}: not valid YAML at line ")
    path.write_text("- just\n- a list\n")
    line = one_line_error(kdns("check", corefile_with(tmp_path, str(path))))
    assert line == (f"kdns: kubeconfig {path}: not a kubeconfig (expected a mapping with "
                    "clusters, users and contexts)")


def test_unknown_context(api: FakeApiServer, tmp_path: Path) -> None:
    path = api.write_kubeconfig(str(tmp_path / "kubeconfig"))
    line = one_line_error(kdns("resolve", "kubia", "--kubeconfig", path, "--context", "prod"))
    assert line == f"kdns: kubeconfig {path}: --context 'prod' is not defined (contexts: fake)"
    line = one_line_error(kdns("check", corefile_with(tmp_path, f"{path} prod")))
    assert line == f"kdns: kubeconfig {path}: --context 'prod' is not defined (contexts: fake)"


# -- the API behind it ----------------------------------------------------------------------


def test_api_unreachable(api: FakeApiServer, tmp_path: Path) -> None:
    port = free_tcp_port()  # nothing listens there
    path = tmp_path / "kubeconfig"
    path.write_text(Path(api.write_kubeconfig(str(path))).read_text().replace(
        api.url, f"http://127.0.0.1:{port}"))
    for cmd in (["resolve", "kubia", "--kubeconfig", str(path)],
                ["check", corefile_with(tmp_path, str(path))]):
        line = one_line_error(kdns(*cmd))
        assert line.startswith(f"kdns: Kubernetes API http://127.0.0.1:{port} (kubeconfig "
                               f"{path}) is unreachable: "), line
        assert "Connection refused" in line


def test_api_answers_401(api: FakeApiServer, tmp_path: Path) -> None:
    api.required_token = "the-right-one"
    path = api.write_kubeconfig(str(tmp_path / "kubeconfig"), token="a-wrong-one")
    for cmd in (["resolve", "kubia", "--kubeconfig", path],
                ["check", corefile_with(tmp_path, path)]):
        line = one_line_error(kdns(*cmd))
        assert line == (f"kdns: Kubernetes API {api.url} answered 401 Unauthorized: the "
                        f"credentials of kubeconfig {path} were not accepted")


def test_api_answers_403(api: FakeApiServer, tmp_path: Path) -> None:
    api.forbidden = True
    path = api.write_kubeconfig(str(tmp_path / "kubeconfig"))
    line = one_line_error(kdns("resolve", "kubia", "--kubeconfig", path))
    assert line.startswith(f"kdns: Kubernetes API {api.url} answered 403 Forbidden: the user "
                           f"of kubeconfig {path} may not list namespaces")


def test_a_good_kubeconfig_resolves_and_checks(api: FakeApiServer, tmp_path: Path) -> None:
    path = api.write_kubeconfig(str(tmp_path / "kubeconfig"))
    r = kdns("resolve", "kubia", "--kubeconfig", path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "10.98.237.175" in r.stdout
    corefile = corefile_with(tmp_path, path)
    r = kdns("check", corefile)
    assert r.returncode == 0 and r.stdout.strip() == f"{corefile}: OK", r.stderr


def test_resolve_without_any_source_outside_a_cluster() -> None:
    line = one_line_error(kdns("resolve", "kubia", env={"KUBERNETES_SERVICE_HOST": ""}))
    assert "no kubeconfig given and the in-cluster configuration cannot be loaded" in line
    assert line.endswith("give --kubeconfig or --manifests")


def test_check_does_not_probe_an_in_cluster_source_outside_a_cluster() -> None:
    # deploy/base/Corefile reads the API in-cluster; checking it on a laptop is still useful.
    r = kdns("check", "deploy/base/Corefile", env={"KUBERNETES_SERVICE_HOST": ""})
    assert r.returncode == 0, r.stderr


# -- serve ----------------------------------------------------------------------------------


def test_serve_exits_2_when_the_kubeconfig_cannot_be_loaded(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    for workers in ("1", "2"):
        line = one_line_error(kdns("serve", "--conf", corefile_with(tmp_path, str(missing)),
                                   "--dns-addr", "127.0.0.1", "--dns-port", "0", "--workers",
                                   workers, timeout=30))
        assert line == f"kdns: kubeconfig {missing}: cannot read it: No such file or directory"
    bad = tmp_path / "bad"
    bad.write_text("clusters: [}\n")
    line = one_line_error(kdns("serve", "--conf", str(ROOT / "deploy/base/Corefile"),
                               "--kubeconfig", str(bad), "--dns-addr", "127.0.0.1",
                               "--dns-port", "0", timeout=30))
    assert line.startswith(f"kdns: kubeconfig {bad}: not valid YAML at line 1")


def test_serve_logs_an_unreachable_api_once_naming_the_url(api: FakeApiServer,
                                                            tmp_path: Path) -> None:
    port = free_tcp_port()  # nothing listens there
    path = tmp_path / "kubeconfig"
    path.write_text(Path(api.write_kubeconfig(str(path))).read_text().replace(
        api.url, f"http://127.0.0.1:{port}"))
    corefile = corefile_with(tmp_path, str(path), extra="        startup_timeout 1s\n")
    p = subprocess.Popen([KDNS, "serve", "--conf", corefile, "--dns-addr", "127.0.0.1",
                          "--dns-port", "0"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.startswith("kdns: serving on 127.0.0.1:"), line
        time.sleep(3)  # several retries (back-off starts at 0.2 s) fail meanwhile
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    errors = [ln for ln in err.splitlines() if "[ERROR]" in ln]
    assert len(errors) == 1, err
    assert f"cannot list from the Kubernetes API at http://127.0.0.1:{port} (kubeconfig " \
           f"{path})" in errors[0]
    assert "no cluster data yet" in errors[0]
    assert "last good view" not in err
