"""``kdns top``: per client namespace, what a running server answered and what it could save.

This module owns reading a server's ``/metrics`` text (``kdns_client_requests_total`` and
``kdns_search_waste_total``), the per-namespace table and the advice in it. It does the one
HTTP GET and nothing else; the CLI (:mod:`kdns.cli`) turns :class:`TopError` into exit 2.

The fix for a namespace follows from the share of its queries that were search waste (names
the resolver built by appending a search suffix, which cannot exist):

* half or more: the application asks for external names without a trailing dot; an FQDN with
  a trailing dot (``api.example.com.``) is asked once, with no search walk at all;
* a fifth or more: ``dnsConfig.options: [{name: ndots, value: "2"}]`` in the Pod spec makes
  names with two dots or more absolute first, which cuts most of the walk;
* any: ``autopath @kubernetes`` answers the walk's first query with the final answer (one
  round trip instead of up to four), with no change to the workloads.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "kdns_client_requests"
WASTE = "kdns_search_waste"
TIMEOUT = 5.0
MAX_BODY = 64 * 1024 * 1024
"""Largest /metrics body read (a server's own is a few hundred kilobytes)."""


class TopError(Exception):
    """What makes ``kdns top`` give up: a bad URL, no server, or not a kdns /metrics."""


@dataclass(frozen=True, slots=True)
class Row:
    namespace: str
    queries: int
    nxdomain: int
    waste: int

    @property
    def nxdomain_share(self) -> float:
        return self.nxdomain / self.queries if self.queries else 0.0

    @property
    def waste_share(self) -> float:
        return self.waste / self.queries if self.queries else 0.0

    @property
    def fix(self) -> str:
        if self.namespace == "unknown" or not self.waste:
            return "-"
        if self.waste_share >= 0.5:
            return "FQDN with a trailing dot"
        if self.waste_share >= 0.2:
            return "dnsConfig ndots:2"
        return "autopath @kubernetes"


def check_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TopError(f"--metrics: {url!r} is not an http(s) URL "
                       "(e.g. http://127.0.0.1:9153/metrics)")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as err:
        raise TopError(f"--metrics: {url!r}: {err}") from None
    return url


def fetch(url: str, timeout: float = TIMEOUT) -> str:
    """The text at ``url``; :class:`TopError` when it cannot be read."""
    check_url(url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body: bytes = resp.read(MAX_BODY + 1)
    except urllib.error.HTTPError as err:
        raise TopError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TopError(f"{url}: cannot read metrics: {reason}") from None
    if len(body) > MAX_BODY:
        raise TopError(f"{url}: more than {MAX_BODY} bytes: not a kdns /metrics")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise TopError(f"{url}: not text: not a kdns /metrics") from None


def rows(text: str, source: str = "metrics") -> list[Row]:
    """Per-namespace rows from a /metrics text, most queries first; :class:`TopError` when
    the text is not Prometheus text or has no kdns per-client family."""
    queries: dict[str, int] = {}
    nx: dict[str, int] = {}
    waste: dict[str, int] = {}
    seen: set[str] = set()
    try:
        for fam in text_string_to_metric_families(text):
            # Without a TYPE line the family keeps the sample's name, suffix and all.
            name = fam.name.removesuffix("_total")
            if name not in (REQUESTS, WASTE):
                continue
            seen.add(name)
            for s in fam.samples:
                if not s.name.endswith("_total"):
                    continue
                ns = s.labels.get("client_namespace")
                if ns is None:
                    raise TopError(f"{source}: {s.name} has no client_namespace label")
                n = int(s.value)
                if name == REQUESTS:
                    queries[ns] = queries.get(ns, 0) + n
                    if s.labels.get("rcode") == "NXDOMAIN":
                        nx[ns] = nx.get(ns, 0) + n
                else:
                    waste[ns] = waste.get(ns, 0) + n
    except (ValueError, TypeError) as err:
        raise TopError(f"{source}: not Prometheus text: {err}") from None
    if REQUESTS not in seen:
        raise TopError(f"{source}: no {REQUESTS}_total: not a kdns /metrics")
    out = [Row(ns, queries.get(ns, 0), nx.get(ns, 0), waste.get(ns, 0))
           for ns in sorted(set(queries) | set(waste))]
    out.sort(key=lambda r: (-r.queries, r.namespace))
    return out


def render(table: list[Row], limit: int) -> str:
    """The table as text, at most ``limit`` namespaces, then the meaning of each fix."""
    if not table:
        return ("no per-client counts yet (kdns counts them when a kubernetes block has "
                "'pods verified')\n")
    shown = table[:limit]
    width = max(len("NAMESPACE"), *(len(r.namespace) for r in shown))
    lines = [f"{'NAMESPACE':<{width}}  {'QUERIES':>10}  {'NXDOMAIN':>8}  {'WASTE':>10}  "
             f"{'WASTE%':>6}  FIX"]
    for r in shown:
        lines.append(f"{r.namespace:<{width}}  {r.queries:>10}  {r.nxdomain_share:>8.1%}  "
                     f"{r.waste:>10}  {r.waste_share:>6.1%}  {r.fix}")
    if len(table) > limit:
        lines.append(f"... {len(table) - limit} more namespaces (--limit)")
    total = sum(r.queries for r in table)
    wasted = sum(r.waste for r in table)
    lines.append("")
    lines.append(f"{total} queries, {wasted} search waste "
                 f"({wasted / total if total else 0:.1%}): NXDOMAIN for names a resolver built "
                 "from another name and a search suffix")
    lines.append("fixes: 'FQDN with a trailing dot' (api.example.com.) skips the search walk; "
                 "'dnsConfig ndots:2' (Pod spec dnsConfig.options) makes dotted names absolute "
                 "first; 'autopath @kubernetes' answers the walk in one query, server side")
    return "\n".join(lines) + "\n"
