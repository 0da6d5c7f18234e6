"""The kubernetes answers the server can send without dnslib: Service names, A/AAAA and NODATA,
and every NXDOMAIN / NODATA below ``svc``, as wire bytes.

This module owns the cold path of the cluster zone: a name asked for the first time (a new
Service, a search-list candidate that does not exist, a random subdomain) is answered here in a
few microseconds instead of going through dnslib and the chain. It is a pure function of
(question, view, config, zone) like :func:`kdns.plugins.kubernetes.answer.answer`, and must say
exactly what that function says; anything else (SRV, endpoint and pod names, reverse names,
ExternalName, the apex, fallthrough, an unsynced view) returns None and takes the general path.
``tests/unit/test_kubernetes_wire.py`` compares both, byte for byte, over a table of questions.

Names are compressed as dnslib compresses them: owners point at the question (offset 12), the
SOA's names at the zone's place in the question, so the client's spelling is echoed.
"""

from __future__ import annotations

import struct
from collections.abc import Hashable

from dnslib import QTYPE, RCODE

from kdns.plugins.base import WireAnswer
from kdns.plugins.kubernetes import deps as dep
from kdns.plugins.kubernetes.answer import SOA_EXPIRE, SOA_REFRESH, SOA_RETRY
from kdns.plugins.kubernetes.setup import KubernetesConfig
from kdns.plugins.kubernetes.view import View

_A, _AAAA, _SRV = QTYPE.A, QTYPE.AAAA, QTYPE.SRV
_GENERAL = frozenset({QTYPE.SRV, QTYPE.ANY, QTYPE.AXFR, QTYPE.IXFR})
"""Types left to the general path below ``svc`` (SRV has targets and glue)."""
_NOERROR, _NXDOMAIN = RCODE.NOERROR, RCODE.NXDOMAIN


def answer_wire(qname: str, qtype: int, view: View, cfg: KubernetesConfig, zone: str,
                fallthrough: bool = True) -> WireAnswer | None:
    """The wire answer for ``qname`` (lower case, trailing dot, plain labels) in ``zone``
    (one of the plugin's forward zones, not the root), or None for the general path.
    ``fallthrough`` False says no ``fallthrough`` zone can cover a name of ``zone``."""
    if qtype in _GENERAL or not view.synced:
        return None
    rel = qname[: len(qname) - len(zone) - 1]
    labels = rel.split(".")
    if len(labels) not in (2, 3) or labels[-1] != "svc":
        return None
    ns = labels[-2]
    if ns not in view._namespaces:  # view.namespace_exists(ns), inline on this path
        return _negative(qname, zone, view, cfg, _NXDOMAIN, (dep.namespace(ns),), fallthrough)
    if len(labels) == 2:  # an empty non-terminal
        return _negative(qname, zone, view, cfg, _NOERROR, (dep.namespace(ns),), fallthrough)
    entry = view.service(ns, labels[0])
    if entry is None:
        return _negative(qname, zone, view, cfg, _NXDOMAIN,
                         (dep.namespace(ns), dep.service(ns, labels[0])), fallthrough)
    deps = entry.deps  # the Service's key, which stands for its namespace's too
    rdata = entry.rdata
    if rdata is None:
        return None  # an ExternalName (a CNAME to chase), or an address that does not pack
    if not (rdata[0] or rdata[1]) or (cfg.ignore_empty_service and not entry.service.headless
                                      and entry.ip_count() == 0):
        return _negative(qname, zone, view, cfg, _NXDOMAIN, deps, fallthrough)
    if qtype == _A:
        packed, size = rdata[0], 4
    elif qtype == _AAAA:
        packed, size = rdata[1], 16
    else:
        return _negative(qname, zone, view, cfg, _NOERROR, deps, fallthrough)
    if not packed:
        return _negative(qname, zone, view, cfg, _NOERROR, deps, fallthrough)
    head = _HEADS.get(qtype << 32 | cfg.ttl)
    if head is None:
        head = _head(qtype, cfg.ttl)
    if len(packed) == size:  # most Services: one ClusterIP
        return _answer(WireAnswer, (_NOERROR, 1, 0, head + packed, deps))
    return _answer(WireAnswer, (_NOERROR, len(packed) // size, 0, b"".join(
        [head + packed[i : i + size] for i in range(0, len(packed), size)]), deps))


_answer = tuple.__new__
"""Builds a WireAnswer without the Python-level ``__new__`` NamedTuple generates."""


_HEADS: dict[int, bytes] = {}
"""``qtype << 32 | ttl`` -> :func:`_head`."""


def _head(qtype: int, ttl: int) -> bytes:
    """An A or AAAA record up to its address: owner (a pointer to the question), type, class,
    TTL and length."""
    size = 4 if qtype == _A else 16
    head = b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1, ttl, size)
    if len(_HEADS) > 16:
        _HEADS.clear()
    _HEADS[qtype << 32 | ttl] = head
    return head


def _negative(qname: str, zone: str, view: View, cfg: KubernetesConfig, rcode: int,
              deps: tuple[Hashable, ...], fallthrough: bool) -> WireAnswer | None:
    """NXDOMAIN or NODATA with the zone's SOA in Authority (RFC 2308)."""
    if rcode == _NXDOMAIN and fallthrough and cfg.fallthrough_covers(qname):
        return None  # the rest of the chain answers that
    # The zone's labels are the question's last ones: point at them there.
    ptr = (0xC000 | (12 + len(qname) - len(zone))).to_bytes(2, "big")
    parts = _SOA_PARTS.get((view.serial, cfg.ttl))
    if parts is None:
        parts = _soa_parts(view.serial, cfg.ttl)
    return _answer(WireAnswer, (rcode, 0, 1, b"".join((ptr, parts[0], ptr, parts[1], ptr,
                                                       parts[2])), deps))


_SOA_PARTS: dict[tuple[int, int], tuple[bytes, bytes, bytes]] = {}


def _soa_parts(serial: int, ttl: int) -> tuple[bytes, bytes, bytes]:
    """The SOA record around its three zone pointers: type, class, TTL, length and
    ``ns.dns``; ``hostmaster``; the five numbers. Kept for the last few serials."""
    numbers = struct.pack("!IIIII", serial & 0xFFFFFFFF, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, ttl)
    rdlength = 7 + 2 + 11 + 2 + len(numbers)
    parts = (b"\x00\x06\x00\x01" + struct.pack("!IH", min(ttl, 300), rdlength) + b"\x02ns\x03dns",
             b"\x0ahostmaster", numbers)
    if len(_SOA_PARTS) > 16:
        _SOA_PARTS.clear()
    _SOA_PARTS[(serial, ttl)] = parts
    return parts
