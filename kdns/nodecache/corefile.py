"""The served Corefile: the base Corefile with node-cache's pillars filled, plus stub domains.

Filled exactly as node-cache's ``updateCorefile`` (kubernetes/dns ``cmd/node-cache/app/
configmap.go``) fills them, so the upstream ``nodelocaldns.yaml`` ConfigMap works unchanged:

- ``__PILLAR__UPSTREAM__SERVERS__``: ``/etc/resolv.conf``, or the kube-dns ConfigMap's
  ``upstreamNameservers``; with custom upstreams a ``force_tcp`` forward block written exactly
  as the addon writes it becomes a plain (UDP) one;
- ``__PILLAR__CLUSTER__DNS__``: the ClusterIP of the ``-upstreamsvc`` Service;
- ``__PILLAR__LOCAL__DNS__``: the ``-localip`` addresses, space-separated;
- ``__PILLAR__DNS__SERVER__``: removed (it already appears in ``-localip`` in transparent mode);
- every ``stubDomains`` entry appends a server block (sorted by domain: node-cache's Go map
  order is random, a stable order keeps ``reload`` from seeing a change that is not one).

``__PILLAR__DNS__DOMAIN__`` is filled by whoever installs the manifest, not by node-cache.
Pure functions over text; reading the ConfigMap directory is ``read_kubedns_config``.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

UPSTREAM_SERVERS = "__PILLAR__UPSTREAM__SERVERS__"
CLUSTER_DNS = "__PILLAR__CLUSTER__DNS__"
LOCAL_DNS = "__PILLAR__LOCAL__DNS__"
DNS_SERVER = "__PILLAR__DNS__SERVER__"
STUB_CACHE_TTL = 30
UPSTREAM_TCP_BLOCK = f"""
    forward . {UPSTREAM_SERVERS} {{
            force_tcp
    }}
"""
UPSTREAM_UDP_BLOCK = f"""
    forward . {UPSTREAM_SERVERS}
"""
DEFAULT_KUBEDNS_CM_PATH = "/etc/kube-dns"


@dataclass(frozen=True, slots=True)
class KubeDnsConfig:
    """What node-cache reads from the kube-dns ConfigMap (federations are not used by it)."""

    stub_domains: tuple[tuple[str, tuple[str, ...]], ...] = ()
    upstream_nameservers: tuple[str, ...] = field(default=())


def svc_env(service: str) -> str:
    """The environment variable holding a Service's ClusterIP, as the kubelet names it."""
    return service.replace("-", "_").upper() + "_SERVICE_HOST"


def _check_nameserver(ns: str, where: str) -> None:
    """A forward target: an IP, an IP:port or [IPv6]:port, or a resolv.conf-style file path
    (node-cache accepts what CoreDNS's forward accepts, with the dns:// or tls:// transport)."""
    host = ns
    for prefix in ("dns://", "tls://"):
        if host.startswith(prefix):
            host = host[len(prefix):]
    if "://" in host:
        raise ValueError(f"{where}: unsupported transport in nameserver {ns!r}")
    if host.startswith("/"):
        return
    candidates = [host]
    if host.startswith("[") and "]:" in host:
        candidates = [host[1:host.index("]")]]
        port = host[host.index("]:") + 2:]
    elif host.count(":") == 1:
        candidates = [host.split(":")[0]]
        port = host.split(":")[1]
    else:
        port = "53"
    if not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"{where}: invalid port in nameserver {ns!r}")
    try:
        ipaddress.ip_address(candidates[0])
    except ValueError:
        raise ValueError(f"{where}: nameserver {ns!r} is not an IP address, IP:port or "
                         "file path") from None


def parse_kubedns_config(files: dict[str, str]) -> KubeDnsConfig:
    """The kube-dns ConfigMap from its keys' contents (JSON, as kube-dns reads them);
    raises ValueError naming the key on anything node-cache could not turn into a Corefile."""
    stubs: dict[str, list[str]] = {}
    upstreams: list[str] = []
    if files.get("stubDomains", "").strip():
        try:
            value = json.loads(files["stubDomains"])
        except json.JSONDecodeError as err:
            raise ValueError(f"stubDomains: not JSON: {err}") from None
        if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, list) and all(isinstance(s, str) for s in v)
                for k, v in value.items()):
            raise ValueError('stubDomains: want {"domain": ["nameserver", ...]}')
        stubs = value
    if files.get("upstreamNameservers", "").strip():
        try:
            ups = json.loads(files["upstreamNameservers"])
        except json.JSONDecodeError as err:
            raise ValueError(f"upstreamNameservers: not JSON: {err}") from None
        if not isinstance(ups, list) or not all(isinstance(s, str) for s in ups):
            raise ValueError('upstreamNameservers: want ["nameserver", ...]')
        if len(ups) > 3:
            raise ValueError("upstreamNameservers: cannot have more than three entries")
        upstreams = ups
    for domain, servers in stubs.items():
        labels = domain.rstrip(".").split(".")
        if not domain or not all(0 < len(lb) <= 63 and lb.replace("-", "").isalnum()
                                 for lb in labels):
            raise ValueError(f"stubDomains: invalid domain name {domain!r}")
        if not servers:
            raise ValueError(f"stubDomains: {domain!r} has no nameservers")
        for ns in servers:
            _check_nameserver(ns, f"stubDomains {domain!r}")
    for ns in upstreams:
        _check_nameserver(ns, "upstreamNameservers")
    return KubeDnsConfig(tuple(sorted((d, tuple(s)) for d, s in stubs.items())), tuple(upstreams))


def read_kubedns_config(directory: str) -> KubeDnsConfig:
    """The ConfigMap mounted at ``directory`` (missing keys are empty)."""
    files: dict[str, str] = {}
    for key in ("stubDomains", "upstreamNameservers"):
        path = Path(directory) / key
        if path.is_file():
            files[key] = path.read_text()
    return parse_kubedns_config(files)


def kubedns_cm_path(flag_value: str) -> str:
    """node-cache's rule: the flag, else /etc/kube-dns when it exists, else none."""
    if flag_value:
        return flag_value
    return DEFAULT_KUBEDNS_CM_PATH if os.path.exists(DEFAULT_KUBEDNS_CM_PATH) else ""


def stub_domain_blocks(kube: KubeDnsConfig, local_ip_str: str, port: str) -> str:
    out = []
    for domain, servers in kube.stub_domains:
        out.append(f"\n{domain}:{port} {{\n    errors\n    cache {STUB_CACHE_TTL}\n"
                   f"    bind {local_ip_str.replace(',', ' ')}\n"
                   f"    forward . {' '.join(servers)}\n}}\n")
    return "".join(out)


def fill(base: str, *, local_ip_str: str, cluster_dns: str, kube: KubeDnsConfig,
         port: str) -> str:
    """The Corefile node-cache would write from ``base``."""
    text = base
    upstreams = " ".join(kube.upstream_nameservers)
    if not upstreams:
        text = text.replace(UPSTREAM_SERVERS, "/etc/resolv.conf")
    else:
        # Custom upstreams are spoken to over UDP, as node-cache does.
        text = text.replace(UPSTREAM_TCP_BLOCK, UPSTREAM_UDP_BLOCK.replace(UPSTREAM_SERVERS,
                                                                           upstreams))
        text = text.replace(UPSTREAM_SERVERS, upstreams)
    text = text.replace(CLUSTER_DNS, cluster_dns)
    text = text.replace(LOCAL_DNS, local_ip_str.replace(",", " "))
    text = text.replace(DNS_SERVER, "")
    return text + stub_domain_blocks(kube, local_ip_str, port)
