"""What a plugin is: the request/response objects and the handler protocol of the chain.

A server block's chain is a list of handlers in the fixed order of ``registry.ORDER``. Each
handler gets the request and a ``next`` callable; it answers, or passes the request on. Handlers
raise on internal faults; the server turns an escaped exception into SERVFAIL and counts it
(one error policy, STYLE lesson 9).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from dnslib import DNSRecord


@dataclass(slots=True)
class Request:
    msg: DNSRecord
    """The parsed query (dnslib)."""
    qname: str
    """The question name exactly as sent, with a trailing dot."""
    qname_lower: str
    qtype: int
    qclass: int
    client: tuple[str, int]
    proto: str
    """``udp`` or ``tcp``."""
    server: str
    """The ``server`` metric label, e.g. ``dns://:53``."""
    zone: str
    """The server block zone that matched (lower case, trailing dot)."""
    max_size: int
    """Largest reply the client accepts: 512, the EDNS buffer size, or 65535 over TCP."""
    do: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    """Per-request scratch space for plugins (e.g. autopath's client namespace)."""


@dataclass(slots=True)
class Response:
    msg: DNSRecord
    plugin: str
    """The plugin that wrote the reply (the ``plugin`` label of coredns_dns_responses_total)."""
    fast: bool = False
    """The reply depends only on the question and the current view generation, so the server
    may store its encoded bytes in the fast path until the generation changes."""
    generation: int = -1
    """The view generation the reply was built from (meaningful when ``fast``)."""


Next = Callable[[Request], Response]


@runtime_checkable
class Handler(Protocol):
    name: str

    def serve(self, req: Request, nxt: Next) -> Response: ...


class Lifecycle(Protocol):
    """Optional hooks a handler may implement; the server calls those present."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class ReadyReporter(Protocol):
    """A plugin that can say whether it is ready (the *ready* plugin asks these)."""

    name: str

    def ready(self) -> bool: ...


class Generation:
    """A process-wide counter of answer-affecting data changes.

    Any plugin whose data changes (the kubernetes view, a reloaded zone file) calls
    :meth:`bump`. The server's fast path compares one integer per query and drops every stored
    reply when it moved, so precomputed bytes never outlive the data they were built from.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def bump(self) -> int:
        self.value += 1
        return self.value


GENERATION = Generation()
