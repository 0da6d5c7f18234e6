"""What a plugin is: the request/response objects and the handler protocol of the chain.

A server block's chain is a list of handlers in the fixed order of ``registry.ORDER``. Each
handler gets the request and a ``next`` callable; it answers, or passes the request on. Handlers
raise on internal faults; the server turns an escaped exception into SERVFAIL and counts it
(one error policy, STYLE lesson 9).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol, runtime_checkable

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


@dataclass(frozen=True, slots=True)
class Countdown:
    """A fast reply whose records' TTLs count down by whole seconds (a cache hit): the server
    may replay it until :attr:`until`, rewriting its TTLs in the stored bytes, instead of
    asking the plugin again every second."""

    born: float
    """``time.monotonic()`` at which the records' TTLs were whole: elapsed seconds are
    ``int(now - born)``."""
    elapsed: int
    """Whole seconds elapsed since :attr:`born` when the reply was built: its TTLs plus this are
    the TTLs to count down from."""
    until: float
    """``time.monotonic()`` after which the plugin must see the query again (expiry, or where
    its own rules start: a prefetch window, a TTL cap)."""
    tick: Callable[[], bool]
    """Called on a replay whose elapsed second changed (so at most once a second): the plugin
    counts the replay for its own rules (popularity, recency); False: stop replaying."""
    fixed: bool = False
    """The TTLs stay as they are (``keepttl``): only the deadline and the ticks apply."""


@dataclass(slots=True)
class Response:
    msg: DNSRecord
    plugin: str
    """The plugin that wrote the reply (the ``plugin`` label of coredns_dns_responses_total)."""
    fast: bool = False
    """The reply depends only on the question and the data named by ``deps``, so the server
    may store its encoded bytes in the fast path until one of those changes."""
    deps: tuple[Hashable, ...] | None = None
    """With ``fast``: the dependency keys the reply was built from (a Service, a namespace's
    existence, a reverse IP, a pod IP, a plugin's zone data). The server drops the stored
    reply when :data:`GENERATION` reports a change of one of them; ``()`` means only a
    configuration change (a reload) can change it, ``None`` that any data change may."""
    generation: int = -1
    """Not read any more: the server stamps every reply with the data version it saw before
    running the chain (kept so plugins that still set it construct unchanged)."""
    expires: float = 0.0
    """With ``fast``: the ``time.monotonic()`` after which the stored reply must not be replayed
    (0: until its data changes). The cache sets it so its TTLs still count down."""
    variants: list[DNSRecord] | None = None
    """Alternative orderings of ``msg`` (set by ``loadbalance``). The server encodes each once
    and, for a fast reply, hands them out in turn, so shuffled order survives precomputation."""
    tally: Hashable | None = None
    """With ``fast``: a token the server counts this reply's fast-path replays under, so the
    plugin can report them (the cache's hits): ``ctx.process["replays"]()`` returns
    token -> replays so far."""
    countdown: Countdown | None = None
    """With ``fast``: the reply may be replayed past ``expires``, until ``countdown.until``,
    with its TTLs counted down in place. A plugin that builds a new message from this one
    keeps it only when its own records' TTLs count down the same way."""
    more: tuple[bytes, ...] = ()
    """Further complete messages sent after ``msg`` on the same TCP connection (a zone
    transfer, RFC 5936 §2.2); already encoded, each at most 65535 bytes."""


Next = Callable[[Request], Response]


def with_deps(resp: Response, deps: tuple[Hashable, ...]) -> Response:
    """``resp`` also depending on ``deps`` (a plugin that passed the query on because of
    its own data: the reply holds only while that data stays as it was)."""
    if not deps or resp.deps is None:
        return resp
    return replace(resp, deps=tuple(dict.fromkeys((*resp.deps, *deps))))


@runtime_checkable
class Handler(Protocol):
    name: str

    def serve(self, req: Request, nxt: Next) -> Response: ...


class WireAnswer(NamedTuple):
    """An answer already in wire form, for the server to put behind the header and the
    question it echoes (no dnslib objects on that path)."""

    rcode: int
    answers: int
    """Records in the Answer section (the first ``answers`` records of ``records``)."""
    authority: int
    """Records in the Authority section, after them."""
    records: bytes
    """The records, names compressed against the question (which starts at offset 12)."""
    deps: tuple[Hashable, ...]
    """What the answer was read from (as ``Response.deps``)."""


@runtime_checkable
class WireAnswerer(Protocol):
    """A plugin that can answer some questions in wire form, as its ``serve`` would.

    ``answer_wire`` returns None for anything it does not take this way (the server then runs
    the chain): it must never answer differently from ``serve``."""

    name: str

    def answer_wire(self, qname_lower: str, qtype: int) -> WireAnswer | None: ...


@runtime_checkable
class Transparent(Protocol):
    """A plugin that declares when it plays no part in a query.

    ``passes`` is True when ``serve`` would hand this question to the next plugin and return
    its reply unchanged, given that the reply has ``answers`` Answer records. It is asked only
    of plain queries (:func:`kdns.dns.wire.peek_plain`: class IN, one question, at most a bare
    OPT with no EDNS options). The server answers in wire form only when every plugin in front
    of the answerer passes."""

    def passes(self, qname_lower: str, qtype: int, answers: int) -> bool: ...


def passes_all_of(handler: object, answerer: object) -> bool:
    """Whether ``handler`` declared it passes every question ``answerer`` answers in wire form
    (its optional ``passes_all_of(answerer)``; the cache, for its block's kubernetes plugin).
    The server then leaves it out of the cold path instead of asking it per query."""
    declared = getattr(handler, "passes_all_of", None)
    return declared is not None and bool(declared(answerer))


def passes_below(handler: object) -> int:
    """How many Answer records a reply may have below which ``handler`` passes every question
    (its optional ``passes_below`` attribute; 0: none declared). ``loadbalance`` passes every
    reply with fewer than 2 (nothing to reorder), so the cold path asks it only of replies
    with several records."""
    return int(getattr(handler, "passes_below", 0))


def always_passes(self: object, qname_lower: str, qtype: int, answers: int) -> bool:
    """``passes`` of a plugin whose ``serve`` hands every question on and returns the reply
    as is (``passes = always_passes`` in its class): the cold path does not even ask it."""
    return True


@runtime_checkable
class ClientScoper(Protocol):
    """A plugin that knows which namespace a client address is (the kubernetes plugin with
    ``pods verified``): the server counts requests per client namespace with it, and, when
    ``isolating``, keys the stored replies of its zones by :meth:`client_scope`.

    A plugin whose reply depended on the client's scope adds that scope to the set
    ``req.meta["scopes"]`` (creating it when absent): the server stores such a reply only
    under that one scope; a plugin that keeps replies across clients must not keep it (the
    cache passes the kubernetes plugin's names by). The server creates the set before the
    chain runs and sub-requests copy ``meta`` shallowly, so a walk's steps share it."""

    name: str
    attributing: bool
    """Client addresses map to namespaces (``pods verified``)."""
    isolating: bool
    """Replies depend on the client's scope (``isolate``)."""

    def client_scope(self, ip: str) -> str:
        """The client's namespace, or a name starting with ``/`` (no Pod, several Pods)."""
        ...

    def waste_for(self, qname_lower: str) -> str | None:
        """For an NXDOMAIN to ``qname_lower``: ``*`` when it is search waste for every client
        of a known namespace, a namespace when only for that namespace's clients, else None."""
        ...


@runtime_checkable
class SeesEveryQuery(Protocol):
    """A plugin that must see every query (``log``, ``acl``): with it in a block, the server
    answers nothing from stored replies or in wire form; every query runs the chain.
    Declared as a class attribute ``sees_every_query = True``."""

    sees_every_query: bool


@runtime_checkable
class ErrorReporter(Protocol):
    """A plugin that reports the errors the chain raises (``errors``); the server then leaves
    the reporting of a failed query to it."""

    def report(self, message: str, exc: BaseException | None = None) -> None: ...


class SharedSourceKey(Protocol):
    """What names a plugin's data source (hashable): equal keys can share one source, which
    ``kdns serve --workers N`` runs in the supervisor and streams to every worker."""

    specs: Any

    def __hash__(self) -> int: ...

    def factory(self) -> Any:
        """A ``kdns.k8s.source.SourceFactory`` building that source."""


@runtime_checkable
class SharesSource(Protocol):
    """A plugin whose source the supervisor may run once for all workers."""

    def source_key(self) -> SharedSourceKey: ...


class Lifecycle(Protocol):
    """Optional hooks a handler may implement; the server calls those present.

    ``start`` runs before the DNS listeners bind (the kubernetes plugin waits for its first
    sync there); ``started`` runs once they serve, when ``ctx.process["listen_addrs"]`` holds
    the bound (host, port) pairs (the loop plugin queries itself then); ``stop`` at shutdown.
    A plugin that finds the process cannot run (a forwarding loop) calls
    ``ctx.process["fatal"](message)``: the server logs it and exits non-zero.
    """

    def start(self) -> None: ...

    def started(self) -> None: ...

    def stop(self) -> None: ...


class ReadyReporter(Protocol):
    """A plugin that can say whether it is ready (the *ready* plugin asks these)."""

    name: str

    def ready(self) -> bool: ...


class MetadataProvider(Protocol):
    """A plugin that publishes metadata for a request (CoreDNS's ``metadata.Provider``).

    The *metadata* plugin asks each provider of its block only when a consumer (a ``log``
    format's ``{/NAME}``, a template's ``.Meta "NAME"``) first reads a label, so queries nobody
    inspects pay nothing. Labels are ``plugin/NAME``; values are functions so a provider can
    defer its work to the label actually read.
    """

    name: str

    def metadata(self, req: Request) -> dict[str, Callable[[], str]]: ...


class Metadata:
    """One request's metadata: ``get(label)`` is the value function, or None when no provider
    set that label. Collected from the providers on the first ``get``."""

    __slots__ = ("_providers", "_req", "_values")

    def __init__(self, req: Request, providers: tuple[MetadataProvider, ...]) -> None:
        self._req = req
        self._providers = providers
        self._values: dict[str, Callable[[], str]] | None = None

    def get(self, label: str) -> Callable[[], str] | None:
        if self._values is None:
            values: dict[str, Callable[[], str]] = {}
            for p in self._providers:
                values.update(p.metadata(self._req))
            self._values = values
        return self._values.get(label)


class Transferer(Protocol):
    """A plugin whose zones the *transfer* plugin can send out (AXFR) and NOTIFY about.

    Published in ``ctx.shared["transferers"]`` by the plugin's setup, so *transfer* never
    imports it (CoreDNS's ``transfer.Transferer``).
    """

    zones: tuple[str, ...]

    def authoritative(self, zone: str) -> bool:
        """``zone`` (lower case, trailing dot) is one this plugin can transfer."""
        ...

    def serial(self, zone: str) -> int | None:
        """The zone's current SOA serial; None while there is nothing to serve yet."""
        ...

    def version(self, zone: str) -> int:
        """A number that changes whenever the zone's data may have (transfers are cached
        under it)."""
        ...

    def records(self, zone: str) -> tuple[int, int, list[Any]] | None:
        """(serial, version, every record of the zone with its SOA first, the closing SOA not
        repeated), taken from one consistent snapshot; None while there is nothing to serve."""
        ...


class Generation:
    """The process-wide log of answer-affecting data changes, by dependency key.

    A plugin whose data changes (the kubernetes view, a reloaded hosts or zone file) first
    publishes the new data (one reference swap), then calls :meth:`bump` with the keys it
    touched; a reload of the Corefile bumps with ``None`` (everything). ``value`` is the data
    version: the server reads it *before* running the chain and stamps the reply with it, so
    a reply built from data older than a change is always stamped older than that change.
    Each listener keeps its stored replies in step with :meth:`since` (one integer comparison
    per query while nothing changes) and evicts only the replies whose keys a change named.
    """

    __slots__ = ("_lock", "_log", "value")

    KEEP = 4096
    """Changes remembered; a listener further behind than that drops its whole store."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()
        self._log: deque[tuple[int, frozenset[Hashable] | None]] = deque(maxlen=self.KEEP)

    def bump(self, keys: Iterable[Hashable] | None = None) -> int:
        """Record one change of ``keys`` (None: of everything); returns the new version."""
        frozen = None if keys is None else frozenset(keys)
        # Plugins bump from their own threads; an unlocked += could lose one, and a lost bump
        # would leave the fast path serving replies built from the previous data.
        with self._lock:
            self.value += 1
            self._log.append((self.value, frozen))
            return self.value

    def since(self, version: int) -> tuple[int, frozenset[Hashable] | None]:
        """(current version, keys changed after ``version``); None when everything may have
        changed (a reload, or a change older than the log remembers)."""
        with self._lock:
            now = self.value
            if version >= now:
                return now, frozenset()
            if not self._log or self._log[0][0] > version + 1:
                return now, None
            out: set[Hashable] = set()
            for v, keys in reversed(self._log):
                if v <= version:
                    break
                if keys is None:
                    return now, None
                out |= keys
            return now, frozenset(out)


GENERATION = Generation()


class WouldBlock(BaseException):
    """Raised by a plugin that would wait on the network while :func:`must_not_block` holds.

    The UDP receive loop first tries every fast-path miss inline, under that flag: cluster
    names, cache hits and local zones are answered at once, and only a query that needs an
    upstream (``forward``) raises this and moves to the worker pool. A BaseException, so the
    ``except Exception`` of plugins that guard sub-queries lets it through untouched.
    """


_thread_state = threading.local()


def must_not_block() -> bool:
    """True in the UDP receive loop: a plugin about to wait on the network raises WouldBlock."""
    return bool(getattr(_thread_state, "inline", False))


class inline_only:
    """Context manager marking the current thread's chain call as must-not-block."""

    __slots__ = ()

    def __enter__(self) -> None:
        _thread_state.inline = True

    def __exit__(self, *exc: object) -> None:
        _thread_state.inline = False
