"""kdns top's reading of /metrics text and its table (the command itself is tested against a
running server in tests/integration/test_isolation.py)."""

from __future__ import annotations

import pytest

from kdns.top import Row, TopError, check_url, render, rows

TEXT = """\
# HELP kdns_client_requests_total Replies by client namespace.
# TYPE kdns_client_requests_total counter
kdns_client_requests_total{client_namespace="shop",rcode="NOERROR"} 40.0
kdns_client_requests_total{client_namespace="shop",rcode="NXDOMAIN"} 60.0
kdns_client_requests_total{client_namespace="dev",rcode="NOERROR"} 70.0
kdns_client_requests_total{client_namespace="dev",rcode="NXDOMAIN"} 30.0
kdns_client_requests_total{client_namespace="ops",rcode="NOERROR"} 10.0
kdns_client_requests_total{client_namespace="unknown",rcode="NXDOMAIN"} 9.0
# HELP kdns_search_waste_total Search waste.
# TYPE kdns_search_waste_total counter
kdns_search_waste_total{client_namespace="shop"} 55.0
kdns_search_waste_total{client_namespace="dev"} 25.0
kdns_search_waste_total{client_namespace="ops"} 1.0
"""


def test_rows_and_fixes() -> None:
    table = rows(TEXT)
    assert [r.namespace for r in table] == ["dev", "shop", "ops", "unknown"]
    by = {r.namespace: r for r in table}
    assert by["shop"] == Row("shop", 100, 60, 55)
    assert by["shop"].fix == "FQDN with a trailing dot"   # 55 % of its queries
    assert by["dev"].fix == "dnsConfig ndots:2"           # 25 %
    assert by["ops"].fix == "autopath @kubernetes"        # 10 %
    assert by["unknown"].fix == "-"                       # no Pod: nothing to change
    out = render(table, 2)
    assert out.splitlines()[0].split() == ["NAMESPACE", "QUERIES", "NXDOMAIN", "WASTE",
                                           "WASTE%", "FIX"]
    assert out.splitlines()[1].split()[:5] == ["dev", "100", "30.0%", "25", "25.0%"]
    assert "... 2 more namespaces (--limit)" in out
    assert "219 queries, 81 search waste" in out


def test_no_counts_yet() -> None:
    text = "# HELP kdns_client_requests_total x\n# TYPE kdns_client_requests_total counter\n"
    assert rows(text) == []
    assert "pods verified" in render([], 10)


@pytest.mark.parametrize(("text", "message"), [
    ("# TYPE coredns_dns_requests_total counter\ncoredns_dns_requests_total 3\n",
     "no kdns_client_requests_total: not a kdns /metrics"),
    ("<html>hello</html>\n", "not Prometheus text"),
    ('kdns_client_requests_total{rcode="NOERROR"} 1\n', "has no client_namespace label"),
])
def test_not_kdns_metrics(text: str, message: str) -> None:
    with pytest.raises(TopError, match=message):
        rows(text)


@pytest.mark.parametrize("url", ["", "localhost:9153", "ftp://h/metrics", "http:///metrics",
                                 "http://h:0x/metrics"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(TopError, match="--metrics"):
        check_url(url)
