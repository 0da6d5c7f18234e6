"""kubernetes ``isolate``: the option grammar (located errors), the namespace annotation, and
the pure answer with a viewer; plus the search-waste rule of the handler."""

from __future__ import annotations

from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE

from kdns.config.model import ConfigError
from kdns.config.parser import parse_corefile
from kdns.k8s.objects import Namespace, ObjectError, Pod, parse_namespace, parse_service
from kdns.plugins.kubernetes import setup as ksetup
from kdns.plugins.kubernetes.answer import AMBIGUOUS, UNKNOWN, answer
from kdns.plugins.kubernetes.builder import ViewBuilder
from kdns.plugins.kubernetes.handler import KubernetesHandler
from kdns.plugins.kubernetes.setup import Isolation, KubernetesConfig, parse_config
from kdns.plugins.setup_context import Overrides, SetupContext
from tests import fakeapi

Z = "cluster.local."


@pytest.fixture(autouse=True)
def _no_hostname_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ksetup, "local_addresses", lambda: ("192.0.2.1",))


def _cfg(*lines: str) -> KubernetesConfig:
    body = "".join(f"        {line}\n" for line in lines)
    text = ".:53 {\n    kubernetes cluster.local in-addr.arpa {\n" + body + "    }\n}\n"
    block = parse_corefile(text, "Corefile")[0]
    ctx = SetupContext(keys=block.keys, config_dir=Path("/etc/kdns"), overrides=Overrides())
    (d,) = [d for d in block.directives if d.name.text == "kubernetes"]
    return parse_config(d, ctx)


def test_isolate_parses() -> None:
    cfg = _cfg("pods verified", "isolate {", "    allow default Kube-System", "    allow x",
               "    unknown deny", "}")
    assert cfg.isolate == Isolation(frozenset({"default", "kube-system", "x"}), False)
    assert _cfg("pods verified", "isolate").isolate == Isolation()
    assert _cfg("pods verified").isolate is None


@pytest.mark.parametrize(("lines", "where", "message"), [
    (("isolate {", "}"), "3:9", "isolate needs 'pods verified' in the same block"),
    (("pods insecure", "isolate"), "4:9", "isolate needs 'pods verified'"),
    (("pods verified", "isolate a {", "}"), "4:17", "isolate takes no arguments"),
    (("pods verified", "isolate {", "allow", "}"), "5:9", "isolate: allow needs at least one"),
    (("pods verified", "isolate {", "allow ok b_ad", "}"), "5:18",
     "isolate: allow: 'b_ad' is not a namespace name"),
    (("pods verified", "isolate {", "unknown", "}"), "5:9",
     "isolate: unknown takes 'allow' or 'deny', got nothing"),
    (("pods verified", "isolate {", "unknown maybe", "}"), "5:9",
     "isolate: unknown takes 'allow' or 'deny', got maybe"),
    (("pods verified", "isolate {", "unknown allow", "unknown deny", "}"), "6:9",
     "isolate: unknown may be given only once"),
    (("pods verified", "isolate {", "hide a", "}"), "5:9", "isolate: unknown property 'hide'"),
    (("pods verified", "isolate {", "allow a {", "}", "}"), "5:9",
     "isolate: allow does not take a block"),
    (("pods verified", "isolate", "isolate"), "5:9", "isolate may be given only once"),
])
def test_malformed_isolate_is_a_located_error(lines: tuple[str, ...], where: str,
                                              message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _cfg(*lines)
    assert str(exc.value).startswith(f"Corefile:{where}: kubernetes: {message}"), str(exc.value)


def test_visible_to_annotation() -> None:
    def ns(value: str) -> Namespace:
        return parse_namespace(fakeapi.namespace(
            "n", annotations={"kdns.io/dns-visible-to": value}))

    assert ns("*").visible_to == frozenset({"*"})
    assert ns(" a, b ,c").visible_to == frozenset({"a", "b", "c"})
    assert parse_namespace(fakeapi.namespace("n")).visible_to is None
    for bad in ("", "a,,b", "A", "a b", "*,a", "a;b"):
        with pytest.raises(ObjectError, match="dns-visible-to"):
            ns(bad)


def _view(cfg: KubernetesConfig) -> ViewBuilder:
    b = ViewBuilder(cfg.kinds)
    for kind in cfg.kinds:
        b.begin_list(kind)
    for name, vis in (("a", None), ("b", frozenset({"a"})), ("c", None),
                      ("pub", frozenset({"*"})), ("shared", None)):
        b.upsert("namespaces", Namespace(name, vis))
    for i, name in enumerate(("a", "b", "c", "pub", "shared")):
        b.upsert("services", parse_service(fakeapi.service(name, "web",
                                                           cluster_ip=f"10.96.0.{i + 1}")))
    b.upsert("pods", Pod("a", "p", ("10.0.0.1",), True, False))
    listed = {"namespaces": {("", n) for n in ("a", "b", "c", "pub", "shared")},
              "services": {(n, "web") for n in ("a", "b", "c", "pub", "shared")},
              "pods": {("a", "p")}}
    for kind in cfg.kinds:
        b.end_list(kind, listed.get(kind, set()))
    b.flush()
    return b


def test_answer_by_viewer() -> None:
    iso = _cfg("pods verified", "isolate {", "allow shared", "unknown deny", "}")
    b = _view(iso)
    expect = {
        "a": {"a", "b", "pub", "shared"},
        "b": {"b", "pub", "shared"},
        UNKNOWN: {"pub", "shared"},
        AMBIGUOUS: {"pub", "shared"},
        None: {"a", "b", "c", "pub", "shared"},  # no viewer: not isolated
    }
    for viewer, visible in expect.items():
        for ns in ("a", "b", "c", "pub", "shared"):
            ans = answer(f"web.{ns}.svc.{Z}", QTYPE.A, b.view, iso, Z, viewer)
            assert (ans.rcode == RCODE.NOERROR and bool(ans.answer)) == (ns in visible), \
                (viewer, ns)
            ent = answer(f"{ns}.svc.{Z}", QTYPE.A, b.view, iso, Z, viewer)
            assert ent.rcode == (RCODE.NOERROR if ns in visible else RCODE.NXDOMAIN)
    allow = _cfg("pods verified", "isolate")
    assert answer(f"web.c.svc.{Z}", QTYPE.A, b.view, allow, Z, UNKNOWN).answer
    assert not answer(f"web.c.svc.{Z}", QTYPE.A, b.view, allow, Z, AMBIGUOUS).answer


def test_search_waste_rule() -> None:
    cfg = _cfg("pods verified")
    h = KubernetesHandler(cfg, builder=_view(cfg))
    assert h.waste_for(f"www.example.com.a.svc.{Z}") == "a"  # only a's first search element
    assert h.waste_for(f"web.b.a.svc.{Z}") == "a"            # 'b' is no Service of a
    assert h.waste_for(f"x.web.a.svc.{Z}") is None           # an endpoint name of web.a
    assert h.waste_for(f"www.example.com.svc.{Z}") == "*"    # 'com' is no namespace
    assert h.waste_for(f"www.example.com.{Z}") == "*"
    assert h.waste_for(f"web.a.svc.{Z}") is None             # a real name's shape
    assert h.waste_for(f"nosuch.a.svc.{Z}") is None          # a plain miss
    assert h.waste_for(f"1-2-3-4.a.pod.{Z}") is None
    assert h.waste_for("4.3.2.1.in-addr.arpa.") is None      # reverse names never
    assert h.waste_for("www.example.com.") is None           # not a kubernetes zone
    assert h.client_scope("10.0.0.1") == "a"
    assert h.client_scope("::ffff:10.0.0.1") == "a"
    assert h.client_scope("10.0.0.2") == UNKNOWN


def test_reply_store_evicts_scoped_entries_by_dependency() -> None:
    from kdns.plugins.base import GENERATION
    from kdns.server.stats import Entry, Stats
    from kdns.server.store import ReplyStore

    def entry(deps: tuple[object, ...]) -> Entry:
        reply = b"\0\0\x81\x80" + b"r" * 36
        return Entry(reply, ("z", "A", "NOERROR", "p", 0, len(reply), False), deps=deps)

    store = ReplyStore(Stats())
    key = b"q" * 20
    ns_c, svc_c = ("ns", "c"), ("svc", "c", "web")
    # One scoped entry alone under a key, then two sharing one, and an unscoped one.
    assert store.put(("a", key), entry((ns_c, svc_c)), None)
    assert store.put(("b", key), entry((ns_c,)), None)
    assert store.put(key, entry((("ns", "a"),)), None)
    assert store.put(("a", b"other" * 4), entry((svc_c,)), None)
    assert len(store) == 4
    GENERATION.bump([ns_c])  # c's annotation changed: who may see it changed
    store.catch_up()
    assert list(store.entries) == [key, ("a", b"other" * 4)]
    GENERATION.bump([svc_c])
    store.catch_up()
    assert list(store.entries) == [key]
    assert store.bytes == next(iter(store.entries.values())).size
