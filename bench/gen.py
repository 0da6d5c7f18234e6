"""Generate the benchmark cluster: the same names for kdns, dnsmasq and unbound, and the queries.

This module owns the data every server in ``udp_qps.py`` serves, so all are fed the same names
and addresses:

- ``services.yaml``: Namespace, Service and EndpointSlice manifests (what ``kubectl get -o yaml``
  returns, trimmed), read by kdns through the kubernetes plugin's ``manifests`` option. N
  ClusterIP services ``svc{i}`` with a named port ``http``, and N/5 headless services ``hl{j}``
  with 3 ready endpoints each (no hostnames, so the endpoint names are the dashed IPs);
- ``dnsmasq.conf``: the same names as ``host-record`` lines, plus ``local=/cluster.local/`` so
  unknown in-zone names get NXDOMAIN from dnsmasq itself;
- ``dnsmasq-srv.conf``: every SRV record as ``srv-host`` lines, kept apart because dnsmasq scans
  its SRV list linearly on *every* query (1000 of them cut its A rate to a third), so only the
  SRV workload's dnsmasq instance loads them;
- ``unbound-zone.conf``: the same records as unbound ``local-zone``/``local-data`` lines (the
  server part of unbound's config is written by ``udp_qps.py``, it knows the ports);
- ``upstream.conf``: a dnsmasq config for the local "internet": ``ext{k}.example.com`` with an A
  and an AAAA record each, which every server forwards to and caches;
- ``queries-<workload>.txt``: dnsperf input (``name TYPE`` per line), one file per workload.

Service ``i`` is ``svc{i}`` in namespace ``ns{i % namespaces}`` with ClusterIP
``10.200.0.0 + i + 1``; headless service ``j`` is ``hl{j}`` in ``ns{j % namespaces}`` with
endpoints ``10.201.x.y`` counting up. SRV numbers are CoreDNS's: priority 0, weight
``max(1, 100 // targets)`` (reference §1.3).

Workloads (query files):

- ``hits``: every ClusterIP service name once, A, in a fixed shuffled order;
- ``mixed``: 80 % hits, 20 % in-zone NXDOMAINs shaped like search-list misses (the old "mixed"
  workload, kept for comparison with earlier runs);
- ``podmix``: what pods' resolvers really send (``ndots:5``, search list
  ``<ns>.svc.cluster.local svc.cluster.local cluster.local``): 7 in 10 lookups are short internal
  names (``svc{i}.ns{k}`` asked from a pod in another namespace: one NXDOMAIN candidate, then the
  hit), 3 in 10 are external names (``ext{k}.example.com``: three NXDOMAIN candidates, then the
  real name, answered by the upstream through the cache); each candidate A then AAAA, in the
  order glibc sends them;
- ``srv``: one third ``_http._tcp.svc{i}...`` SRV, one third headless ``hl{j}...`` A (3
  addresses), one third headless ``_http._tcp.hl{j}...`` SRV (3 targets, 3 additional A);
- ``cached``: ``ext{k}.example.com`` A, forwarded once and then answered from each server's cache;
- ``tcp``: the ``hits`` file, sent over TCP (``udp_qps.py`` picks the transport);
- ``latency``: the ``podmix`` file, sent at a fixed rate (``udp_qps.py`` picks the rate).

Run as a script to look at the files: ``python bench/gen.py --n 100 --out /tmp/kdns-gen``.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
from dataclasses import dataclass, field
from pathlib import Path

ZONE = "cluster.local"
SERVICE_NET = ipaddress.ip_network("10.200.0.0/16")
ENDPOINT_NET = ipaddress.ip_network("10.201.0.0/16")
EXT_NET4 = ipaddress.ip_network("198.18.0.0/16")
EXT_NET6 = ipaddress.ip_network("2001:db8::/64")
MAX_SERVICES = SERVICE_NET.num_addresses - 2
SEARCH_SUFFIXES = (f"default.svc.{ZONE}", f"svc.{ZONE}", ZONE)
"""What a pod in namespace ``default`` appends to a name with fewer than 5 dots."""
MISS_EVERY = 5
"""One NXDOMAIN query per this many lines of the mixed workload (20 %)."""
ENDPOINTS_PER_HEADLESS = 3
EXT_DOMAIN = "example.com"
WORKLOADS = ("hits", "mixed", "podmix", "srv", "cached", "tcp", "latency")
DEFAULT_WORKLOADS = ("hits", "podmix", "srv", "cached", "tcp", "latency")
"""The suite's six: 1 cluster A hits, 2 pod mix, 3 SRV + headless, 4 cached forwarded names,
5 TCP pipelined, 6 latency at a fixed rate."""
UPSTREAM_TTL = 300
"""TTL of the upstream's answers; every server caps what it caches at 30 s anyway."""


@dataclass(frozen=True, slots=True)
class Check:
    """One query and what a correct server answers (for the pre-flight answer check)."""

    name: str
    qtype: str
    rcode: str
    answers: tuple[str, ...] | None
    """Sorted answer rdata that must match exactly; None: only the rcode is checked."""
    count: int | None = None
    """Number of answer records (used when the rdata text differs between servers)."""


@dataclass(frozen=True, slots=True)
class Generated:
    """Paths of the generated files and what a correct server answers for them."""

    manifests: Path
    dnsmasq_conf: Path
    dnsmasq_srv_conf: Path
    """``srv-host`` lines only; load it in addition to ``dnsmasq_conf``."""
    unbound_zone: Path
    """``local-zone``/``local-data`` lines for unbound's ``server:`` clause."""
    upstream_conf: Path
    """dnsmasq config of the upstream serving ``ext{k}.example.com``."""
    queries: dict[str, Path]
    """Workload name -> dnsperf query file."""
    names: dict[str, str]
    """Every ClusterIP service FQDN (no trailing dot) -> its ClusterIP."""
    misses: tuple[str, ...]
    """The NXDOMAIN names used by the mixed workload."""
    miss_fraction: dict[str, float]
    """Workload -> fraction of its lines that must be answered NXDOMAIN."""
    headless: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Headless service FQDN -> its endpoint addresses."""
    ext_names: dict[str, tuple[str, str]] = field(default_factory=dict)
    """External FQDN -> (IPv4, IPv6) the upstream answers."""
    checks: dict[str, tuple[Check, ...]] = field(default_factory=dict)
    """Workload -> sample queries with their correct answers."""


def service_fqdn(i: int, namespaces: int) -> str:
    return f"svc{i}.ns{i % namespaces}.svc.{ZONE}"


def headless_fqdn(j: int, namespaces: int) -> str:
    return f"hl{j}.ns{j % namespaces}.svc.{ZONE}"


def cluster_ip(i: int) -> str:
    return str(SERVICE_NET.network_address + i + 1)


def endpoint_ip(k: int) -> str:
    return str(ENDPOINT_NET.network_address + k + 1)


def ext_fqdn(k: int) -> str:
    return f"ext{k}.{EXT_DOMAIN}"


def dashed(ip: str) -> str:
    return ip.replace(".", "-")


def srv_weight(targets: int) -> int:
    return max(1, 100 // targets)


def _manifests(n: int, namespaces: int, headless: int) -> str:
    # Written as text rather than yaml.dump: 10^5 services stay a fraction of a second, and the
    # layout matches what kubectl prints, which is what the manifests reader is built for.
    parts: list[str] = []
    for ns in range(min(namespaces, max(n, headless))):
        parts.append(
            "apiVersion: v1\n"
            "kind: Namespace\n"
            "metadata:\n"
            f"  name: ns{ns}\n"
            "  labels:\n"
            f"    kubernetes.io/metadata.name: ns{ns}\n"
            "status:\n"
            "  phase: Active\n"
        )
    for i in range(n):
        ip = cluster_ip(i)
        parts.append(
            "apiVersion: v1\n"
            "kind: Service\n"
            "metadata:\n"
            f"  name: svc{i}\n"
            f"  namespace: ns{i % namespaces}\n"
            "  labels:\n"
            f"    app: svc{i}\n"
            "spec:\n"
            "  type: ClusterIP\n"
            f"  clusterIP: {ip}\n"
            f"  clusterIPs: [{ip}]\n"
            "  ipFamilies: [IPv4]\n"
            "  ipFamilyPolicy: SingleStack\n"
            "  selector:\n"
            f"    app: svc{i}\n"
            "  ports:\n"
            "  - name: http\n"
            "    port: 80\n"
            "    protocol: TCP\n"
            "    targetPort: 8080\n"
        )
    for j in range(headless):
        hns = f"ns{j % namespaces}"
        parts.append(
            "apiVersion: v1\n"
            "kind: Service\n"
            "metadata:\n"
            f"  name: hl{j}\n"
            f"  namespace: {hns}\n"
            "spec:\n"
            "  type: ClusterIP\n"
            "  clusterIP: None\n"
            "  clusterIPs: [None]\n"
            "  selector:\n"
            f"    app: hl{j}\n"
            "  ports:\n"
            "  - name: http\n"
            "    port: 80\n"
            "    protocol: TCP\n"
        )
        eps = "".join(
            f"- addresses: [{endpoint_ip(j * ENDPOINTS_PER_HEADLESS + e)}]\n"
            "  conditions:\n"
            "    ready: true\n"
            for e in range(ENDPOINTS_PER_HEADLESS)
        )
        parts.append(
            "apiVersion: discovery.k8s.io/v1\n"
            "kind: EndpointSlice\n"
            "metadata:\n"
            f"  name: hl{j}-abcde\n"
            f"  namespace: {hns}\n"
            "  labels:\n"
            f"    kubernetes.io/service-name: hl{j}\n"
            "addressType: IPv4\n"
            "endpoints:\n"
            f"{eps}"
            "ports:\n"
            "- name: http\n"
            "  port: 80\n"
            "  protocol: TCP\n"
        )
    return "---\n".join(parts)


def _dnsmasq_conf(names: dict[str, str], headless: dict[str, tuple[str, ...]]) -> str:
    lines = [
        "# Generated by bench/gen.py: the same services kdns reads from services.yaml.",
        # Answer unknown names under the zone with NXDOMAIN here instead of forwarding them.
        f"local=/{ZONE}/",
        "local=/200.10.in-addr.arpa/",
        "local=/201.10.in-addr.arpa/",
    ]
    for fqdn, ip in names.items():
        lines.append(f"host-record={fqdn},{ip}")
    for fqdn, ips in headless.items():
        for ip in ips:
            # One line per address: dnsmasq answers all of them for the name (A only, so no
            # PTR clash matters here) ...
            lines.append(f"host-record={fqdn},{ip}")
            # ... and the endpoint's own name, the SRV target.
            lines.append(f"host-record={dashed(ip)}.{fqdn},{ip}")
    return "\n".join(lines) + "\n"


def _dnsmasq_srv_conf(names: dict[str, str], headless: dict[str, tuple[str, ...]]) -> str:
    lines = ["# Generated by bench/gen.py: the named port of every service in services.yaml."]
    for fqdn in names:
        # srv-host=<_service._proto.name>,<target>,<port>,<priority>,<weight>: what kdns
        # answers for the named port (CoreDNS numbers: priority 0, weight 100 for one target).
        lines.append(f"srv-host=_http._tcp.{fqdn},{fqdn},80,0,100")
    for fqdn, ips in headless.items():
        w = srv_weight(len(ips))
        for ip in ips:
            lines.append(f"srv-host=_http._tcp.{fqdn},{dashed(ip)}.{fqdn},80,0,{w}")
    return "\n".join(lines) + "\n"


def _unbound_zone(names: dict[str, str], headless: dict[str, tuple[str, ...]]) -> str:
    # "static": names without local-data are NXDOMAIN (or NODATA for a known name with another
    # type); nothing under the zone is ever sent upstream. Same behaviour as dnsmasq's local=.
    lines = [
        "# Generated by bench/gen.py: the same services kdns reads from services.yaml.",
        f'local-zone: "{ZONE}." static',
        f'local-data: "{ZONE}. 30 IN SOA ns.dns.{ZONE}. hostmaster.{ZONE}. 1 7200 1800 86400 30"',
    ]
    for fqdn, ip in names.items():
        lines.append(f'local-data: "{fqdn}. 30 IN A {ip}"')
        lines.append(f'local-data: "_http._tcp.{fqdn}. 30 IN SRV 0 100 80 {fqdn}."')
    for fqdn, ips in headless.items():
        w = srv_weight(len(ips))
        for ip in ips:
            lines.append(f'local-data: "{fqdn}. 30 IN A {ip}"')
            lines.append(f'local-data: "{dashed(ip)}.{fqdn}. 30 IN A {ip}"')
            lines.append(f'local-data: "_http._tcp.{fqdn}. 30 IN SRV 0 {w} 80 {dashed(ip)}.{fqdn}."')
    return "\n".join(lines) + "\n"


def _upstream_conf(ext: dict[str, tuple[str, str]]) -> str:
    lines = [
        "# Generated by bench/gen.py: the local 'internet' every server forwards to.",
        f"local=/{EXT_DOMAIN}/",
    ]
    for fqdn, (v4, v6) in ext.items():
        lines.append(f"host-record={fqdn},{v4},{v6}")
    return "\n".join(lines) + "\n"


def _candidates(name: str, client_ns: str) -> list[str]:
    """What glibc asks for ``name`` (fewer than 5 dots) from a pod in ``client_ns``: every
    search-list expansion, then the name itself."""
    search = (f"{client_ns}.svc.{ZONE}", f"svc.{ZONE}", ZONE)
    return [f"{name}.{s}" for s in search] + [name]


def _podmix(order: list[int], namespaces: int, ext: list[str],
            all_names: set[str]) -> tuple[list[str], int]:
    """The pod-mix query lines and how many of them must be NXDOMAIN."""
    lines: list[str] = []
    nx = 0
    rng = random.Random(7)
    ext_set = set(ext)
    for step, i in enumerate(order):
        # Clients sit in a namespace of their own ("client{c}"), so the first candidate of a
        # short cluster name "svc{i}.ns{k}" is a miss, as for any cross-namespace lookup.
        client_ns = f"client{rng.randrange(8)}"
        short = f"svc{i}.ns{i % namespaces}" if step % 10 < 7 else ext[step % len(ext)]
        for cand in _candidates(short, client_ns):
            hit = cand in all_names or cand in ext_set
            # glibc sends A and AAAA for a candidate together and moves on only when neither
            # has an answer; an existing name stops the walk (its AAAA is NODATA, NOERROR).
            lines.append(f"{cand} A")
            lines.append(f"{cand} AAAA")
            if not hit:
                nx += 2
            else:
                break
    return lines, nx


def generate(out_dir: Path, n: int = 1000, namespaces: int = 20, seed: int = 1,
             headless: int | None = None, ext: int = 1000) -> Generated:
    """Write the manifests, every server's config and every workload's query file."""
    if not 1 <= n <= MAX_SERVICES:
        raise ValueError(f"n must be in 1..{MAX_SERVICES}, got {n}")
    if namespaces < 1:
        raise ValueError(f"namespaces must be at least 1, got {namespaces}")
    n_headless = max(1, n // 5) if headless is None else headless
    if n_headless * ENDPOINTS_PER_HEADLESS > ENDPOINT_NET.num_addresses - 2:
        raise ValueError(f"too many headless services: {n_headless}")
    if ext < 1:
        raise ValueError("ext must be at least 1")
    out_dir.mkdir(parents=True, exist_ok=True)
    names = {service_fqdn(i, namespaces): cluster_ip(i) for i in range(n)}
    hl = {
        headless_fqdn(j, namespaces): tuple(
            endpoint_ip(j * ENDPOINTS_PER_HEADLESS + e) for e in range(ENDPOINTS_PER_HEADLESS))
        for j in range(n_headless)
    }
    ext_names = {
        ext_fqdn(k): (str(EXT_NET4.network_address + k + 1), str(EXT_NET6.network_address + k + 1))
        for k in range(ext)
    }

    # A fixed shuffle: the same file every run, but consecutive queries do not walk the
    # namespaces in order (which would flatter any per-namespace locality in a server).
    rng = random.Random(seed)
    idx = list(range(n))
    rng.shuffle(idx)
    order = [service_fqdn(i, namespaces) for i in idx]
    hits = [f"{name} A" for name in order]

    mixed: list[str] = []
    misses: list[str] = []
    for i, name in enumerate(order):
        mixed.append(f"{name} A")
        if i % (MISS_EVERY - 1) == MISS_EVERY - 2:
            miss = f"{name}.{SEARCH_SUFFIXES[len(misses) % len(SEARCH_SUFFIXES)]}"
            misses.append(miss)
            mixed.append(f"{miss} A")
    if not misses:  # n < 4: still exercise the negative path once
        misses.append(f"{order[0]}.{SEARCH_SUFFIXES[0]}")
        mixed.append(f"{misses[0]} A")

    ext_order = list(ext_names)
    rng.shuffle(ext_order)
    podmix, podmix_nx = _podmix(idx, namespaces, ext_order, set(names))

    hl_order = list(hl)
    rng.shuffle(hl_order)
    srv: list[str] = []
    for step, name in enumerate(order):
        h = hl_order[step % len(hl_order)]
        kind = step % 3
        srv.append(f"_http._tcp.{name} SRV" if kind == 0
                   else f"{h} A" if kind == 1 else f"_http._tcp.{h} SRV")

    cached = [f"{name} A" for name in ext_order]

    manifests = out_dir / "services.yaml"
    manifests.write_text(_manifests(n, namespaces, n_headless))
    conf = out_dir / "dnsmasq.conf"
    conf.write_text(_dnsmasq_conf(names, hl))
    srv_conf = out_dir / "dnsmasq-srv.conf"
    srv_conf.write_text(_dnsmasq_srv_conf(names, hl))
    unbound_zone = out_dir / "unbound-zone.conf"
    unbound_zone.write_text(_unbound_zone(names, hl))
    upstream = out_dir / "upstream.conf"
    upstream.write_text(_upstream_conf(ext_names))
    files = {"hits": hits, "mixed": mixed, "podmix": podmix, "srv": srv, "cached": cached}
    queries = {w: out_dir / f"queries-{w}.txt" for w in files}
    for w, lines in files.items():
        queries[w].write_text("\n".join(lines) + "\n")
    queries["tcp"] = queries["hits"]
    queries["latency"] = queries["podmix"]

    checks = _checks(names, hl, ext_names, misses, order, namespaces)
    return Generated(
        manifests=manifests,
        dnsmasq_conf=conf,
        dnsmasq_srv_conf=srv_conf,
        unbound_zone=unbound_zone,
        upstream_conf=upstream,
        queries=queries,
        names=names,
        misses=tuple(misses),
        miss_fraction={
            "hits": 0.0, "tcp": 0.0, "srv": 0.0, "cached": 0.0,
            "mixed": len(misses) / len(mixed),
            "podmix": podmix_nx / len(podmix), "latency": podmix_nx / len(podmix),
        },
        headless=hl,
        ext_names=ext_names,
        checks=checks,
    )


def _checks(names: dict[str, str], hl: dict[str, tuple[str, ...]],
            ext: dict[str, tuple[str, str]], misses: list[str], order: list[str],
            namespaces: int, sample: int = 10) -> dict[str, tuple[Check, ...]]:
    step = max(1, len(order) // sample)
    picked = order[::step][:sample]
    hits = [Check(n, "A", "NOERROR", (names[n],)) for n in picked]
    nx = [Check(m, "A", "NXDOMAIN", None) for m in misses[:5]]
    hl_names = list(hl)[:5]
    srv = (
        [Check(f"_http._tcp.{n}", "SRV", "NOERROR", (f"0 100 80 {n}.",)) for n in picked[:5]]
        + [Check(h, "A", "NOERROR", tuple(sorted(hl[h]))) for h in hl_names]
        + [Check(f"_http._tcp.{h}", "SRV", "NOERROR", tuple(sorted(
            f"0 {srv_weight(len(hl[h]))} 80 {dashed(ip)}.{h}." for ip in hl[h])))
           for h in hl_names]
    )
    ext_names = list(ext)[:5]
    cached = [Check(e, "A", "NOERROR", (ext[e][0],)) for e in ext_names]
    podmix = (
        hits[:3] + cached[:3]
        + [Check(f"{e}.{SEARCH_SUFFIXES[0]}", "A", "NXDOMAIN", None) for e in ext_names[:2]]
        + [Check(f"{e}", "AAAA", "NOERROR", (ext[e][1],)) for e in ext_names[:2]]
        + [Check(n, "AAAA", "NOERROR", None, count=0) for n in picked[:2]]
    )
    return {
        "hits": tuple(hits), "tcp": tuple(hits), "mixed": tuple(hits + nx), "srv": tuple(srv),
        "cached": tuple(cached), "podmix": tuple(podmix), "latency": tuple(podmix),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=1000, help="number of services (default 1000)")
    parser.add_argument("--namespaces", type=int, default=20, help="namespaces (default 20)")
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    args = parser.parse_args()
    gen = generate(args.out, args.n, args.namespaces)
    for path in (gen.manifests, gen.dnsmasq_conf, gen.dnsmasq_srv_conf, gen.unbound_zone,
                 gen.upstream_conf, *dict.fromkeys(gen.queries.values())):
        print(path)


if __name__ == "__main__":
    main()
