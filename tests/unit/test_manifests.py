"""ManifestSource: files and folders, multi-doc and List, implicit namespaces, selectors,
change detection, and YAML errors (fail fast at startup, keep the old state on reload)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kdns.k8s.manifests import ManifestError, ManifestSource
from kdns.k8s.source import RESOURCES, Key, ResourceSpec

ALL = [ResourceSpec(kind) for kind in RESOURCES]

SERVICES = """\
apiVersion: v1
kind: Service
metadata: {namespace: default, name: kubia, labels: {app: kubia}}
spec:
  clusterIP: 10.98.237.175
  ports: [{name: http, port: 80, protocol: TCP}]
---
# an empty document and an unrelated kind are ignored
---
apiVersion: apps/v1
kind: Deployment
metadata: {namespace: default, name: kubia}
---
apiVersion: v1
kind: Service
metadata: {namespace: shop, name: cart, labels: {app: cart}}
spec: {clusterIP: None}
"""

SLICES_LIST = """\
apiVersion: v1
kind: List
items:
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    namespace: shop
    name: cart-1
    labels: {kubernetes.io/service-name: cart}
    annotations:
      endpoints.kubernetes.io/last-change-trigger-time: 2021-03-04T05:06:07Z
  addressType: IPv4
  endpoints: [{addresses: [10.1.0.5], hostname: cart-0}]
  ports: [{name: http, port: 8080}]
- apiVersion: v1
  kind: Pod
  metadata: {namespace: shop, name: cart-0}
  status: {phase: Running, podIP: 10.1.0.5}
"""


class Sink:
    """Records the sink calls and keeps the resulting state, like the real view builder."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, dict[Key, Any]] = {kind: {} for kind in RESOURCES}
        self.calls: list[tuple[Any, ...]] = []

    def begin_list(self, kind: str) -> None:
        with self.lock:
            self.calls.append(("begin", kind))

    def upsert(self, kind: str, obj: Any) -> None:
        with self.lock:
            self.calls.append(("upsert", kind, obj.key))
            self.data[kind][obj.key] = obj

    def delete(self, kind: str, key: Key) -> None:
        with self.lock:
            self.calls.append(("delete", kind, key))
            self.data[kind].pop(key, None)

    def end_list(self, kind: str, seen: set[Key]) -> None:
        with self.lock:
            self.calls.append(("end", kind, frozenset(seen)))
            for key in set(self.data[kind]) - seen:
                del self.data[kind][key]

    def set_stale(self, kind: str, stale: bool, reason: str = "") -> None:
        with self.lock:
            self.calls.append(("stale", kind, stale))

    def keys(self, kind: str) -> set[Key]:
        with self.lock:
            return set(self.data[kind])

    def upserts(self) -> list[tuple[Any, ...]]:
        with self.lock:
            return [c for c in self.calls if c[0] == "upsert"]


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    # Make the change visible even within one mtime tick of the previous write.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_folder_multidoc_list_and_implicit_namespaces(tmp_path: Path) -> None:
    write(tmp_path / "b" / "slices.yml", SLICES_LIST)
    write(tmp_path / "a.yaml", SERVICES)
    write(tmp_path / "ns.json", '{"apiVersion": "v1", "kind": "Namespace",'
                                ' "metadata": {"name": "declared", "labels": {"team": "dns"}}}')
    write(tmp_path / "notes.txt", "kind: Service\n")  # not a manifest extension
    sink = Sink()
    src = ManifestSource(str(tmp_path), ALL, sink)
    src.load_once()
    assert src.synced()
    assert sink.keys("services") == {("default", "kubia"), ("shop", "cart")}
    assert sink.data["services"][("shop", "cart")].headless
    sl = sink.data["endpointslices"][("shop", "cart-1")]
    assert sl.service == "cart" and sl.endpoints[0].addresses == ("10.1.0.5",)
    assert sl.trigger_time == 1614834367.0  # an unquoted YAML timestamp becomes the API's string
    assert sink.keys("pods") == {("shop", "cart-0")}
    # "declared" comes from its file; default and shop are implied by the objects in them.
    assert sink.keys("namespaces") == {("", "declared"), ("", "default"), ("", "shop")}
    for kind in RESOURCES:
        assert ("end", kind, frozenset(sink.keys(kind))) in sink.calls


def test_single_file_and_only_specified_kinds(tmp_path: Path) -> None:
    write(tmp_path / "all.yaml", SERVICES + "---\n" + SLICES_LIST)
    sink = Sink()
    ManifestSource(str(tmp_path / "all.yaml"), [ResourceSpec("services")], sink).load_once()
    assert sink.keys("services") == {("default", "kubia"), ("shop", "cart")}
    assert not sink.keys("endpointslices") and not sink.keys("namespaces")
    assert {c[1] for c in sink.calls} == {"services"}


def test_label_selectors_apply_client_side(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", SERVICES)
    write(tmp_path / "ns.yaml", "kind: Namespace\nmetadata: {name: shop, labels: {team: dns}}\n")
    sink = Sink()
    specs = [ResourceSpec("services", label_selector="app in (cart, other)"),
             ResourceSpec("namespaces", label_selector="team=dns")]
    ManifestSource(str(tmp_path), specs, sink).load_once()
    assert sink.keys("services") == {("shop", "cart")}
    # The implicit (label-less) "default" namespace does not match team=dns.
    assert sink.keys("namespaces") == {("", "shop")}


def test_field_selector(tmp_path: Path) -> None:
    write(tmp_path / "p.yaml", SLICES_LIST + "- kind: Pod\n  metadata: {namespace: shop, name: x}"
          "\n  status: {phase: Pending}\n")
    sink = Sink()
    ManifestSource(str(tmp_path), [ResourceSpec("pods", field_selector="status.phase=Running")],
                   sink).load_once()
    assert sink.keys("pods") == {("shop", "cart-0")}


def test_malformed_object_is_skipped_with_warning(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / "a.yaml", SERVICES + "---\nkind: Service\nmetadata: {namespace: default, "
          "name: broken}\nspec: {clusterIP: 300.1.1.1}\n")
    sink = Sink()
    with caplog.at_level(logging.WARNING, logger="kdns.k8s"):
        ManifestSource(str(tmp_path), [ResourceSpec("services")], sink).load_once()
    assert sink.keys("services") == {("default", "kubia"), ("shop", "cart")}
    [record] = [r for r in caplog.records if "broken" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "a.yaml:19" in record.getMessage() and "not an IP address" in record.getMessage()


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("bad.yaml", "kind: Service\nmetadata: {name: x\n", "bad.yaml:3:1"),
        ("bad.yaml", "a: b\n  c: d\n", "bad.yaml:2:4"),
        ("bad.json", '{"kind": "Service",\n "metadata": }', "bad.json:2:14"),
    ],
)
def test_load_once_raises_with_file_and_line(tmp_path: Path, name: str, text: str,
                                             where: str) -> None:
    write(tmp_path / "good.yaml", SERVICES)
    write(tmp_path / name, text)
    with pytest.raises(ManifestError) as info:
        ManifestSource(str(tmp_path), ALL, Sink()).load_once()
    assert isinstance(info.value, ValueError)
    assert where in str(info.value), str(info.value)


def test_load_once_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such file"):
        ManifestSource(str(tmp_path / "nope"), ALL, Sink()).load_once()


def test_unreadable_file(tmp_path: Path) -> None:
    write(tmp_path / "bin.yaml", "")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ManifestError, match=r"bin\.yaml: cannot read"):
        ManifestSource(str(tmp_path), ALL, Sink()).load_once()


def test_changes_are_noticed_and_yaml_errors_keep_old_state(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    svc_file = tmp_path / "svc.yaml"
    write(svc_file, SERVICES)
    sink = Sink()
    src = ManifestSource(str(tmp_path), [ResourceSpec("services"), ResourceSpec("namespaces")],
                         sink, poll_interval=0.02)
    src.load_once()
    src.start()
    try:
        assert len(sink.upserts()) == 4  # two services, two implicit namespaces
        # An edit: one service changed, one removed, one added; only changes are upserted.
        write(svc_file, SERVICES.replace("10.98.237.175", "10.98.0.1").replace("cart", "till"))
        wait_for(lambda: sink.keys("services") == {("default", "kubia"), ("shop", "till")})
        assert sink.data["services"][("default", "kubia")].cluster_ips == ("10.98.0.1",)
        assert len(sink.upserts()) == 6
        # A new file in the folder is noticed too.
        write(tmp_path / "sub" / "more.yaml",
              "kind: Service\nmetadata: {namespace: extra, name: new}\n")
        wait_for(lambda: ("extra", "new") in sink.keys("services"))
        assert ("", "extra") in sink.keys("namespaces")
        # A broken edit logs file:line once and keeps serving the previous state.
        with caplog.at_level(logging.ERROR, logger="kdns.k8s"):
            write(svc_file, "kind: Service\nmetadata: [\n")
            wait_for(lambda: any("keeping the previous state" in r.getMessage()
                                 for r in caplog.records))
            time.sleep(0.1)  # several polls: the error is not logged again
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "svc.yaml:3" in errors[0].getMessage()
        assert sink.keys("services") == {("default", "kubia"), ("shop", "till"), ("extra", "new")}
        # Fixing the file recovers; deleting a file drops its objects.
        write(svc_file, SERVICES)
        (tmp_path / "sub" / "more.yaml").unlink()
        wait_for(lambda: sink.keys("services") == {("default", "kubia"), ("shop", "cart")})
        assert ("", "extra") not in sink.keys("namespaces")
    finally:
        src.stop()
    assert not any(t.name == "kdns-manifests" for t in threading.enumerate())


def test_start_without_load_once_loads_in_background(tmp_path: Path) -> None:
    write(tmp_path / "svc.yaml", SERVICES)
    sink = Sink()
    src = ManifestSource(str(tmp_path), ALL, sink, poll_interval=0.02)
    assert not src.synced()
    src.start()
    try:
        wait_for(src.synced)
        assert len(sink.keys("services")) == 2
        assert "manifests at" in src.describe()
    finally:
        src.stop()


def test_malformed_update_keeps_previous_good_version(tmp_path: Path) -> None:
    write(tmp_path / "svc.yaml", SERVICES)
    sink = Sink()
    src = ManifestSource(str(tmp_path), [ResourceSpec("services")], sink)
    src.load_once()
    write(tmp_path / "svc.yaml", SERVICES.replace("10.98.237.175", "10.98.237.999"))
    src.load_once()
    assert sink.data["services"][("default", "kubia")].cluster_ips == ("10.98.237.175",)
