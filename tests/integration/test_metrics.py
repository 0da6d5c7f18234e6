"""/metrics: only CoreDNS's metric names (reference §3), and counts that match what was sent."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kdns.server.app import KdnsServer
from tests.conftest import DEMO, ROOT, start_server
from tests.ports import free_tcp_port

REFERENCE_COPY = ROOT / "tests" / "reference" / "coredns-metrics.md"
"""A verbatim copy of the reference's §3 (CoreDNS's metric names, from its source): CI has only
the repository. Where the reference itself sits next to the checkout, the copy is checked
against it (test_the_reference_copy_is_current)."""
REFERENCE = ROOT.parent / "shared" / "reference" / "k8s-dns-reference.md"


def reference_families(text: str) -> set[str]:
    """Family names (counters without ``_total``) of every metric in the table rows of §3.

    The table abbreviates siblings: ``coredns_proxy_conn_cache_hits_total`` / ``_misses_total``
    and ``…_rate_limiter_duration_seconds`` after ``coredns_kubernetes_rest_client_request_…``;
    those are expanded against the full name before them in the same row."""
    names: set[str] = set()
    for row in (ln for ln in text.splitlines() if ln.startswith("| ")):
        last = ""
        for code in re.findall(r"`([^`]+)`", row.split(" | ")[0]):
            code = code.split("{")[0]
            if code.startswith("coredns_"):
                last = code
            elif code.startswith("_") and last:  # `_misses_total`: replace the last word
                head = last.rsplit("_", 2)[0]
                code = f"{head}{code}"
            elif code.startswith("…"):  # `…_requests_total`
                code = "coredns_kubernetes_rest_client" + code.lstrip("…")
            else:
                continue
            names.add(code.removesuffix("_total"))
    return names


REFERENCE_FAMILIES = reference_families(REFERENCE_COPY.read_text()) | {
    # The acl plugin's own counters (CoreDNS plugin/acl README; not in the dashboard table).
    "coredns_acl_blocked_requests", "coredns_acl_filtered_requests",
    "coredns_acl_allowed_requests", "coredns_acl_dropped_requests",
    # The local plugin's counter (CoreDNS plugin/local/metrics.go).
    "coredns_local_localhost_requests",
    # The dns64 plugin's counter (CoreDNS plugin/dns64/metrics.go).
    "coredns_dns64_requests_translated",
    # The template plugin's counters (CoreDNS plugin/template README, metrics.go).
    "coredns_template_matches", "coredns_template_template_failures",
    "coredns_template_rr_failures",
}


def test_the_reference_copy_is_current() -> None:
    if not REFERENCE.exists():
        pytest.skip(f"{REFERENCE} is not here (the copy in the repository is used)")
    section = REFERENCE.read_text().split("## 3. ", 1)[1].split("\n---\n", 1)[0].rstrip()
    assert "## 3. " + section + "\n" in REFERENCE_COPY.read_text()


def test_the_reference_table_parses_to_the_known_names() -> None:
    # Spot checks of the expansion rules, so a parsing slip cannot widen or empty the set.
    fams = reference_families(REFERENCE_COPY.read_text())
    for name in ("coredns_dns_requests", "coredns_dns_response_size_bytes",
                 "coredns_proxy_conn_cache_misses", "coredns_build_info",
                 "coredns_kubernetes_rest_client_rate_limiter_duration_seconds",
                 "coredns_kubernetes_rest_client_requests", "coredns_hosts_entries",
                 "coredns_cache_served_stale", "coredns_forward_healthcheck_failures"):
        assert name in fams, name
    assert not {n for n in fams if not re.fullmatch(r"coredns_[a-z_]+", n)}
    # Pre-1.7 names are listed in prose only, as names no longer exported.
    assert "coredns_dns_request_count" not in fams and "coredns_cache_size" not in fams
    assert len(fams) == 38


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[KdnsServer, KdnsServer, int]]:
    """An upstream kdns serving the demo cluster, and a kdns with the kubeadm plugin set in
    front of it (cache, forward, prometheus, reload)."""
    up_dir, front_dir = tmp_path / "up", tmp_path / "front"
    up_dir.mkdir()
    front_dir.mkdir()
    upstream = start_server(f"""
        example.test:53 {{
            kubernetes example.test {{
                manifests {DEMO}
            }}
        }}
        """, up_dir)
    mport = free_tcp_port()
    front = start_server(f"""
        .:53 {{
            errors
            prometheus 127.0.0.1:{mport}
            reload
            kubernetes cluster.local in-addr.arpa ip6.arpa {{
                manifests {DEMO}
                fallthrough in-addr.arpa ip6.arpa
            }}
            cache 30
            forward . 127.0.0.1:{upstream.listeners[0].port}
        }}
        """, front_dir)
    try:
        yield front, upstream, mport
    finally:
        front.stop()
        upstream.stop()


def _scrape(port: int) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3).read().decode()
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples]
            for f in text_string_to_metric_families(text)}


def test_every_exported_coredns_name_is_in_the_reference(
    pair: tuple[KdnsServer, KdnsServer, int],
) -> None:
    front, _, mport = pair
    port = front.listeners[0].port
    for name in ("kubia.default.svc.cluster.local.", "kubia.default.svc.example.test."):
        dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=3)
    families = _scrape(mport)
    coredns = {n for n in families if n.startswith("coredns_")}
    assert coredns <= REFERENCE_FAMILIES, coredns - REFERENCE_FAMILIES
    assert all(n.startswith(("coredns_", "kdns_", "python_", "process_")) for n in families)
    for must in ("coredns_dns_requests", "coredns_dns_responses",
                 "coredns_dns_request_duration_seconds", "coredns_cache_hits",
                 "coredns_proxy_request_duration_seconds", "coredns_reload_failed",
                 "coredns_kubernetes_dns_programming_duration_seconds", "coredns_build_info",
                 "coredns_plugin_enabled"):
        assert must in families, must


def test_requests_counted_match_what_was_sent(pair: tuple[KdnsServer, KdnsServer, int]) -> None:
    front, _, mport = pair
    port = front.listeners[0].port
    names = ["kubia.default.svc.cluster.local.", "nope.default.svc.cluster.local.",
             "web.shop.svc.cluster.local.", "kubia.default.svc.example.test."]
    sent = {"udp": 0, "tcp": 0}
    for i in range(400):  # most are fast-path hits after the first of each name
        q = dns.message.make_query(names[i % len(names)], "A")
        if i % 10 == 0:
            dns.query.tcp(q, "127.0.0.1", port=port, timeout=3)
            sent["tcp"] += 1
        else:
            dns.query.udp(q, "127.0.0.1", port=port, timeout=3)
            sent["udp"] += 1
    samples = _scrape(mport)["coredns_dns_requests"]
    for proto, n in sent.items():
        got = sum(v for name, labels, v in samples
                  if name == "coredns_dns_requests_total" and labels["proto"] == proto)
        assert got == n, (proto, got, n)
    responses = _scrape(mport)["coredns_dns_responses"]
    by_plugin: dict[str, float] = {}
    for _, labels, v in responses:
        by_plugin[labels["plugin"]] = by_plugin.get(labels["plugin"], 0) + v
    assert by_plugin.get("kubernetes", 0) == 300
    assert by_plugin.get("forward", 0) + by_plugin.get("cache", 0) == 100


def test_readmes_mention_only_exported_or_reference_names() -> None:
    """Metric names in the plugin READMEs are real CoreDNS names (docs are tested too)."""
    for readme in (ROOT / "kdns" / "plugins").glob("*/README.md"):
        for name in re.findall(r"\bcoredns_[a-z0-9_]+", readme.read_text()):
            base = re.sub(r"_(total|bucket|sum|count)$", "", name)
            assert base in REFERENCE_FAMILIES, f"{readme}: {name}"
