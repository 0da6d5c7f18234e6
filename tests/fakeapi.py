"""A fake Kubernetes API server over real HTTP, for tests and benchmarks.

It serves the four cluster-wide collections kdns reads (services, endpointslices, namespaces,
pods) the way the API server does, closely enough to exercise an informer end to end:

* **list**: ``limit``/``continue`` paging over a snapshot taken at the first page (like etcd),
  ``labelSelector`` and simple ``fieldSelector`` (``a.b=v``, ``a.b!=v``), and
  ``metadata.resourceVersion`` on the List.
* **watch** (``watch=1``): a chunked body with one JSON event per line, from ``resourceVersion``
  (unset or "0" first replays the current objects as ADDED), ``timeoutSeconds`` (then the stream
  ends cleanly), BOOKMARK events every ``bookmark_interval`` seconds when
  ``allowWatchBookmarks=true``, and 410 Gone for a resourceVersion older than the last
  :meth:`FakeApiServer.compact` (as HTTP 410 or as an in-stream ERROR event, see ``gone_mode``;
  an open stream that falls behind a compaction always gets the ERROR event).

Resource versions are one global counter, as in etcd. Objects are stored as dicts together with
their JSON encoding, made once per write, so a 50k-object list costs little more than joining
bytes. Every connection runs in its own daemon thread; :meth:`FakeApiServer.stop` closes them all.

Typical use::

    with FakeApiServer() as api:
        api.add("services", service("default", "kubia", cluster_ip="10.98.237.175",
                                    ports=[("http", 80, "TCP")]))
        source = ApiSource(ConnectionConfig(endpoint=api.url), specs, sink)

Fault injection: :meth:`compact`, :meth:`drop_watches`, :meth:`set_outage` (modes "refuse",
"close", "503"), :meth:`fail_next`, :meth:`stall_watches`, ``required_token`` (401 otherwise),
``forbidden`` (403 to everything), ``on_list_page`` (a hook called before each list page is
served, e.g. to compact mid-list) and ``response_delay`` (every answer starts late;
``peak_waiting`` counts concurrent requests).
Assert on traffic with :attr:`requests`, :meth:`count`, :meth:`list_pages`,
:meth:`watches_opened`.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import json
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from kdns.k8s.selectors import Selector, parse_selector

Obj = dict[str, Any]
Key = tuple[str, str]


@dataclass(frozen=True)
class Resource:
    path: str
    api_version: str
    kind: str
    namespaced: bool


RESOURCES: dict[str, Resource] = {
    "services": Resource("/api/v1/services", "v1", "Service", True),
    "endpointslices": Resource(
        "/apis/discovery.k8s.io/v1/endpointslices", "discovery.k8s.io/v1", "EndpointSlice", True
    ),
    "namespaces": Resource("/api/v1/namespaces", "v1", "Namespace", False),
    "pods": Resource("/api/v1/pods", "v1", "Pod", True),
    "serviceimports": Resource("/apis/multicluster.x-k8s.io/v1alpha1/serviceimports",
                               "multicluster.x-k8s.io/v1alpha1", "ServiceImport", True),
}
_BY_PATH = {r.path: kind for kind, r in RESOURCES.items()}


# ---- builders: API-shaped dicts ------------------------------------------------------------


def _meta(namespace: str | None, name: str, labels: Mapping[str, str] | None,
          annotations: Mapping[str, str] | None) -> Obj:
    meta: Obj = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def _ports(ports: Iterable[tuple[str, int, str] | Mapping[str, Any]]) -> list[Obj]:
    out: list[Obj] = []
    for p in ports:
        if isinstance(p, Mapping):
            out.append(dict(p))
        else:
            name, number, protocol = p
            out.append({"name": name, "port": number, "protocol": protocol})
    return out


def service(
    namespace: str,
    name: str,
    *,
    cluster_ip: str | None = None,
    cluster_ips: list[str] | None = None,
    type: str = "ClusterIP",
    ports: Iterable[tuple[str, int, str] | Mapping[str, Any]] = (),
    external_name: str | None = None,
    headless: bool = False,
    publish_not_ready: bool = False,
    selector: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Obj:
    """A v1 Service. ``headless=True`` sets clusterIP "None"; ExternalName needs external_name."""
    spec: Obj = {"type": "ExternalName" if external_name is not None else type}
    if external_name is not None:
        spec["externalName"] = external_name
    if headless:
        spec["clusterIP"], spec["clusterIPs"] = "None", ["None"]
    elif cluster_ips:
        spec["clusterIP"], spec["clusterIPs"] = cluster_ips[0], list(cluster_ips)
    elif cluster_ip:
        spec["clusterIP"], spec["clusterIPs"] = cluster_ip, [cluster_ip]
    if ports:
        spec["ports"] = _ports(ports)
    if publish_not_ready:
        spec["publishNotReadyAddresses"] = True
    if selector:
        spec["selector"] = dict(selector)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(namespace, name, labels, annotations), "spec": spec}


def endpoint(
    *addresses: str,
    hostname: str | None = None,
    ready: bool | None = True,
    pod: str | None = None,
    node: str | None = None,
    zone: str | None = None,
) -> Obj:
    """One entry of an EndpointSlice's ``endpoints``; ``ready=None`` omits the condition."""
    ep: Obj = {"addresses": list(addresses)}
    if ready is not None:
        ep["conditions"] = {"ready": ready}
    if hostname is not None:
        ep["hostname"] = hostname
    if pod is not None:
        ep["targetRef"] = {"kind": "Pod", "name": pod}
    if node is not None:
        ep["nodeName"] = node
    if zone is not None:
        ep["zone"] = zone
    return ep


def endpoint_slice(
    namespace: str,
    name: str,
    service: str | None = None,
    *,
    endpoints: Iterable[str | Mapping[str, Any]] = (),
    ports: Iterable[tuple[str, int, str] | Mapping[str, Any]] = (),
    address_type: str = "IPv4",
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Obj:
    """A discovery/v1 EndpointSlice; a plain string in ``endpoints`` is one ready address.

    ``service`` sets the ``kubernetes.io/service-name`` label.
    """
    all_labels = dict(labels or {})
    if service is not None:
        all_labels["kubernetes.io/service-name"] = service
    eps = [endpoint(e) if isinstance(e, str) else dict(e) for e in endpoints]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": _meta(namespace, name, all_labels, annotations),
        "addressType": address_type,
        "endpoints": eps,
        "ports": _ports(ports),
    }


def service_import(
    namespace: str,
    name: str,
    *,
    type: str = "ClusterSetIP",
    ips: Iterable[str] = (),
    ports: Iterable[tuple[str, int, str] | Mapping[str, Any]] = (),
    labels: Mapping[str, str] | None = None,
) -> Obj:
    """A multicluster.x-k8s.io/v1alpha1 ServiceImport (KEP-1645: spec.type, spec.ips,
    spec.ports)."""
    spec: Obj = {"type": type, "ports": _ports(ports)}
    if type == "ClusterSetIP":
        spec["ips"] = list(ips)
    return {"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
            "metadata": _meta(namespace, name, labels, None), "spec": spec}


def imported_slice(
    namespace: str,
    name: str,
    service: str,
    cluster: str,
    *,
    endpoints: Iterable[str | Mapping[str, Any]] = (),
    ports: Iterable[tuple[str, int, str] | Mapping[str, Any]] = (),
    address_type: str = "IPv4",
) -> Obj:
    """An EndpointSlice an MCS controller imported for ServiceImport ``service`` from
    ``cluster`` (the multicluster.kubernetes.io labels, no kubernetes.io/service-name)."""
    return endpoint_slice(namespace, name, None, endpoints=endpoints, ports=ports,
                          address_type=address_type, labels={
                              "multicluster.kubernetes.io/service-name": service,
                              "multicluster.kubernetes.io/source-cluster": cluster})


def namespace(name: str, *, labels: Mapping[str, str] | None = None,
              annotations: Mapping[str, str] | None = None) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": _meta(None, name, labels, annotations),
            "status": {"phase": "Active"}}


def pod(
    namespace: str,
    name: str,
    ip: str | None = None,
    *,
    ips: list[str] | None = None,
    phase: str = "Running",
    host_network: bool = False,
    labels: Mapping[str, str] | None = None,
) -> Obj:
    all_ips = list(ips) if ips else ([ip] if ip else [])
    status: Obj = {"phase": phase}
    if all_ips:
        status["podIP"] = all_ips[0]
        status["podIPs"] = [{"ip": a} for a in all_ips]
    spec: Obj = {"containers": [{"name": "main", "image": "example"}]}
    if host_network:
        spec["hostNetwork"] = True
    return {"apiVersion": "v1", "kind": "Pod", "metadata": _meta(namespace, name, labels, None),
            "spec": spec, "status": status}


# ---- server state ----------------------------------------------------------------------------


@dataclass
class RequestRecord:
    """One request the server answered (status 0: the connection was closed without answer)."""

    method: str
    path: str
    kind: str | None
    watch: bool
    params: dict[str, str]
    authorization: str | None
    status: int = 0
    at: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class _Event:
    rv: int
    type: str
    obj: Obj
    raw: bytes
    old: Obj | None


@dataclass
class _KindState:
    objects: dict[Key, tuple[Obj, bytes]] = field(default_factory=dict)
    sorted_keys: list[Key] | None = None
    history: list[_Event] = field(default_factory=list)
    compacted: int = 0
    """A watch may not start from a resourceVersion older than this (410 Gone)."""
    forgotten: int = 0
    """The newest event compaction dropped: an open stream that has not sent it is gone."""


@dataclass
class _Snapshot:
    rv: int
    items: list[tuple[Obj, bytes]]


@dataclass
class _Failure:
    status: int
    body: bytes
    kind: str | None
    watch: bool | None


class _Matcher:
    """labelSelector + fieldSelector (equality on dotted paths) of one request."""

    def __init__(self, params: Mapping[str, str]) -> None:
        self.labels: Selector | None = None
        self.fields: list[tuple[list[str], bool, str]] = []
        if params.get("labelSelector"):
            self.labels = parse_selector(params["labelSelector"])
        for term in filter(None, (params.get("fieldSelector") or "").split(",")):
            for op, equal in (("!=", False), ("==", True), ("=", True)):
                if op in term:
                    path, value = term.split(op, 1)
                    self.fields.append((path.strip().split("."), equal, value.strip()))
                    break
            else:
                raise ValueError(f"unsupported field selector term {term!r}")

    @property
    def trivial(self) -> bool:
        return self.labels is None and not self.fields

    def __call__(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if self.labels is not None and not self.labels.matches(meta.get("labels") or {}):
            return False
        for path, equal, value in self.fields:
            cur: Any = obj
            for part in path:
                cur = cur.get(part) if isinstance(cur, dict) else None
            text = "" if cur is None else (str(cur).lower() if isinstance(cur, bool) else str(cur))
            if (text == value) != equal:
                return False
        return True


def _status(code: int, reason: str, message: str) -> bytes:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": message, "reason": reason, "code": code}).encode()


def _line(etype: str, raw: bytes) -> bytes:
    return b'{"type":"' + etype.encode() + b'","object":' + raw + b"}\n"


class _Dropped(Exception):
    pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], fake: FakeApiServer) -> None:
        self.fake = fake
        super().__init__(addr, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        t = threading.Thread(target=self.process_request_thread, args=(request, client_address),
                             daemon=True, name="fakeapi-conn")
        with self.fake._lock:
            self.fake._conns.add(request)
            self.fake._threads = [x for x in self.fake._threads if x.is_alive()]
            self.fake._threads.append(t)
        t.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (kdns stopping, a dropped watch) is normal here; anything
        # else is a bug in the fake and keeps socketserver's traceback.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.fake._lock:
                self.fake._conns.discard(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    dropped = False

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is in FakeApiServer.requests

    def do_GET(self) -> None:
        fake = self.server.fake
        parts = urlsplit(self.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        kind = _BY_PATH.get(parts.path)
        watch = params.get("watch") in ("1", "true")
        rec = RequestRecord("GET", parts.path, kind, watch, params,
                            self.headers.get("Authorization"))
        fake._record(rec)
        try:
            fake._delay()
            self._serve(fake, rec, kind, watch, params)
        except (OSError, _Dropped):
            self.close_connection = True

    def _send(self, rec: RequestRecord, status: int, body: bytes) -> None:
        rec.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _serve(self, fake: FakeApiServer, rec: RequestRecord, kind: str | None, watch: bool,
               params: dict[str, str]) -> None:
        outage = fake._outage
        if outage is not None:
            if outage == "503":
                self._send(rec, 503, _status(503, "ServiceUnavailable", "fake API outage"))
            else:
                self.close_connection = True  # answer nothing; the client sees a reset
            return
        if fake.required_token is not None:
            auth = self.headers.get("Authorization") or ""
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or token != fake.required_token:
                self._send(rec, 401, _status(401, "Unauthorized", "Unauthorized"))
                return
        if fake.forbidden:
            self._send(rec, 403, _status(403, "Forbidden", f"{kind or rec.path} is forbidden: "
                                         "User \"kdns\" cannot list resource"))
            return
        failure = fake._take_failure(kind, watch)
        if failure is not None:
            self._send(rec, failure.status, failure.body)
            return
        if kind is None or kind in fake.absent:
            self._send(rec, 404, _status(404, "NotFound", f"the server could not find {rec.path}"))
            return
        try:
            matcher = _Matcher(params)
        except ValueError as exc:
            self._send(rec, 400, _status(400, "BadRequest", str(exc)))
            return
        if watch:
            self._watch(fake, rec, kind, params, matcher)
        else:
            self._list(fake, rec, kind, params, matcher)

    # ---- list --------------------------------------------------------------------------------

    def _list(self, fake: FakeApiServer, rec: RequestRecord, kind: str, params: dict[str, str],
              matcher: _Matcher) -> None:
        try:
            limit = int(params.get("limit") or 0)
        except ValueError:
            self._send(rec, 400, _status(400, "BadRequest", "limit must be an integer"))
            return
        token = params.get("continue") or ""
        page = 0
        if token:
            with fake._lock:
                cont = fake._continues.get(token)
            if cont is None:
                self._send(rec, 410, _status(
                    410, "Expired", "The provided continue parameter is too old"))
                return
            page = cont[2]
        if fake.on_list_page is not None:
            fake.on_list_page(kind, page)
        with fake._lock:
            if token:
                cont = fake._continues.pop(token, None)
                if cont is None:
                    self._send(rec, 410, _status(
                        410, "Expired", "The provided continue parameter is too old"))
                    return
                snap, pos, _ = cont
            else:
                st = fake._kinds[kind]
                if st.sorted_keys is None:
                    st.sorted_keys = sorted(st.objects)
                snap = _Snapshot(fake._rv, [st.objects[k] for k in st.sorted_keys])
                pos = 0
            fake._pages[kind] += 1
        raws: list[bytes] = []
        items = snap.items
        while pos < len(items) and (limit <= 0 or len(raws) < limit):
            obj, raw = items[pos]
            pos += 1
            if matcher.trivial or matcher(obj):
                raws.append(raw)
        meta: Obj = {"resourceVersion": str(snap.rv)}
        if pos < len(items):
            new_token = f"{kind}-{next(fake._token_ids)}"
            meta["continue"] = new_token
            with fake._lock:
                fake._continues[new_token] = (snap, pos, page + 1)
                while len(fake._continues) > 64:  # forget abandoned lists
                    fake._continues.pop(next(iter(fake._continues)))
        res = RESOURCES[kind]
        head = json.dumps({"kind": res.kind + "List", "apiVersion": res.api_version,
                           "metadata": meta}).encode()
        body = head[:-1] + b',"items":[' + b",".join(raws) + b"]}"
        self._send(rec, 200, body)

    # ---- watch -------------------------------------------------------------------------------

    def _chunk(self, data: bytes) -> None:
        if self.dropped:
            raise _Dropped()
        self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))

    def _gone_event(self, rv: int, compacted: int) -> bytes:
        status = _status(410, "Expired",
                         f"too old resource version: {rv} ({compacted})")
        return _line("ERROR", status)

    def _watch(self, fake: FakeApiServer, rec: RequestRecord, kind: str, params: dict[str, str],
               matcher: _Matcher) -> None:
        res = RESOURCES[kind]
        rv_param = params.get("resourceVersion") or ""
        try:
            timeout = float(params.get("timeoutSeconds") or 1800)
            requested = int(rv_param) if rv_param not in ("", "0") else None
        except ValueError:
            self._send(rec, 400, _status(400, "BadRequest", "bad resourceVersion or timeout"))
            return
        bookmarks = params.get("allowWatchBookmarks") == "true"
        initial: list[bytes] = []
        with fake._lock:
            st = fake._kinds[kind]
            gone = requested is not None and requested < st.compacted
            if requested is None:
                cursor = fake._rv
                initial = [_line("ADDED", raw) for obj, raw in st.objects.values()
                           if matcher.trivial or matcher(obj)]
            else:
                cursor = requested
            fake._watches_opened[kind] += 1
            compacted = st.compacted
        if gone and fake.gone_mode == "http":
            self._send(rec, 410, _status(
                410, "Expired", f"too old resource version: {requested} ({compacted})"))
            return
        rec.status = 200
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        with fake._lock:
            fake._active.add(self)
        try:
            if gone:
                self._chunk(self._gone_event(cursor, compacted))
                self.wfile.write(b"0\r\n\r\n")
                return
            self._stream(fake, kind, res, cursor, timeout, bookmarks, initial, matcher)
        finally:
            with fake._lock:
                fake._active.discard(self)

    def _stream(self, fake: FakeApiServer, kind: str, res: Resource, cursor: int, timeout: float,
                bookmarks: bool, initial: list[bytes], matcher: _Matcher) -> None:
        for i in range(0, len(initial), 256):
            self._chunk(b"".join(initial[i:i + 256]))
        deadline = time.monotonic() + timeout
        last_sent = time.monotonic()
        st = fake._kinds[kind]
        while True:
            out: list[bytes] = []
            end = gone = False
            with fake._lock:
                while True:
                    if fake._stopping or self.dropped:
                        raise _Dropped()
                    now = time.monotonic()
                    if not fake._stalled:
                        if cursor < st.forgotten:
                            gone = True
                            break
                        start = bisect.bisect_right(st.history, cursor, key=lambda e: e.rv)
                        events = st.history[start:]
                        if events:
                            cursor = events[-1].rv
                            out = [x for x in map(lambda e: _filter(e, matcher), events) if x]
                            if out:
                                break
                            continue
                        if now >= deadline:
                            end = True
                            break
                        if bookmarks and now - last_sent >= fake.bookmark_interval:
                            cursor = max(cursor, fake._rv)
                            out = [_line("BOOKMARK", json.dumps({
                                "kind": res.kind, "apiVersion": res.api_version,
                                "metadata": {"resourceVersion": str(cursor)}}).encode())]
                            break
                    wait = 0.5
                    if not fake._stalled:
                        wait = min(wait, deadline - now)
                        if bookmarks:
                            wait = min(wait, fake.bookmark_interval - (now - last_sent))
                    fake._cond.wait(max(wait, 0.001))
                    if fake._stalled and self._peer_closed():
                        raise _Dropped()  # nothing is written while stalled, so look for EOF
            if gone:
                self._chunk(self._gone_event(cursor, st.compacted))
                self.wfile.write(b"0\r\n\r\n")
                return
            if end:
                self.wfile.write(b"0\r\n\r\n")
                return
            for i in range(0, len(out), 256):
                self._chunk(b"".join(out[i:i + 256]))
            last_sent = time.monotonic()

    def _peer_closed(self) -> bool:
        ready, _, _ = select.select([self.connection], [], [], 0)
        if not ready:
            return False
        try:
            return bool(self.connection.recv(1, socket.MSG_PEEK) == b"")
        except OSError:
            return True

    def drop(self) -> None:
        self.dropped = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def _filter(e: _Event, matcher: _Matcher) -> bytes | None:
    """The line to send for ``e`` to a watch with ``matcher`` (objects entering or leaving the
    selection become ADDED or DELETED, as in the API server)."""
    if matcher.trivial:
        return _line(e.type, e.raw)
    new = matcher(e.obj)
    if e.type == "DELETED":
        return _line("DELETED", e.raw) if new else None
    old = matcher(e.old)
    if new and old:
        return _line("MODIFIED", e.raw)
    if new:
        return _line("ADDED", e.raw)
    if old:
        return _line("DELETED", e.raw)
    return None


class FakeApiServer:
    """A fake API server on 127.0.0.1; see the module docstring.

    ``bookmark_interval``: seconds between BOOKMARK events on idle watches that asked for them.
    ``gone_mode``: "http" answers a watch from a compacted resourceVersion with HTTP 410, "event"
    with a 200 stream carrying one ERROR event (code 410).
    ``history_limit``: events kept per kind before the oldest half is compacted automatically.
    """

    def __init__(self, *, bookmark_interval: float = 1.0, gone_mode: str = "http",
                 history_limit: int = 1_000_000) -> None:
        if gone_mode not in ("http", "event"):
            raise ValueError("gone_mode must be 'http' or 'event'")
        self.bookmark_interval = bookmark_interval
        self.gone_mode = gone_mode
        self.history_limit = history_limit
        self.absent: set[str] = set()
        """Kinds answered 404 (a CRD that is not installed)."""
        self.required_token: str | None = None
        """When set, requests without ``Authorization: Bearer <required_token>`` get 401."""
        self.forbidden = False
        """When set, every authenticated request gets 403 Forbidden (RBAC says no)."""
        self.on_list_page: Callable[[str, int], None] | None = None
        """Called as ``hook(kind, page_index)`` before each list page (0 = first page)."""
        self.response_delay = 0.0
        """Seconds every request waits before its answer starts (a slow API server), so the
        number of requests waiting at once (``peak_waiting``) shows client concurrency."""
        self.peak_waiting = 0
        self._waiting = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._kinds = {kind: _KindState() for kind in RESOURCES}
        self._rv = 1
        self._continues: dict[str, tuple[_Snapshot, int, int]] = {}
        self._token_ids = itertools.count(1)
        self._failures: list[_Failure] = []
        self._requests: list[RequestRecord] = []
        self._pages = dict.fromkeys(RESOURCES, 0)
        self._watches_opened = dict.fromkeys(RESOURCES, 0)
        self._active: set[_Handler] = set()
        self._conns: set[Any] = set()
        self._threads: list[threading.Thread] = []
        self._outage: str | None = None
        self._stalled = False
        self._stopping = False
        self._httpd: _HTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._port = 0

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FakeApiServer:
        self._listen()
        return self

    def _listen(self) -> None:
        httpd = _HTTPServer(("127.0.0.1", self._port), self)
        self._port = httpd.server_address[1]
        self._httpd = httpd
        self._serve_thread = threading.Thread(target=httpd.serve_forever,
                                              kwargs={"poll_interval": 0.05},
                                              daemon=True, name="fakeapi-accept")
        self._serve_thread.start()

    def _unlisten(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._serve_thread is not None:
            self._serve_thread.join(5)
            self._serve_thread = None

    def stop(self) -> None:
        """Stop serving, close every connection and join the connection threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            conns = list(self._conns)
            threads = list(self._threads)
        self._unlisten()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for t in threads:
            t.join(5)

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def resource_version(self) -> int:
        """The newest resourceVersion handed out."""
        return self._rv

    # ---- mutations -----------------------------------------------------------------------------

    def _key(self, kind: str, obj: Obj) -> Key:
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("objects need metadata.name (other fields may be malformed)")
        ns = meta.get("namespace", "") if RESOURCES[kind].namespaced else ""
        return (ns if isinstance(ns, str) else "", name)

    def _write(self, kind: str, obj: Obj, must_exist: bool | None) -> Obj:
        """Store one object (lock held); returns the stored copy."""
        st = self._kinds[kind]
        key = self._key(kind, obj)
        old = st.objects.get(key)
        if must_exist is True and old is None:
            raise KeyError(f"{kind} {key} does not exist")
        if must_exist is False and old is not None:
            raise KeyError(f"{kind} {key} already exists")
        self._rv += 1
        stored = dict(obj)
        stored["metadata"] = meta = dict(obj.get("metadata") or {})
        meta["resourceVersion"] = str(self._rv)
        meta.setdefault("uid", f"uid-{kind}-{key[0]}-{key[1]}")
        res = RESOURCES[kind]
        stored.setdefault("apiVersion", res.api_version)
        stored.setdefault("kind", res.kind)
        raw = json.dumps(stored, separators=(",", ":")).encode()
        if old is None:
            st.sorted_keys = None
        st.objects[key] = (stored, raw)
        self._event(st, _Event(self._rv, "ADDED" if old is None else "MODIFIED", stored, raw,
                               old[0] if old else None))
        return stored

    def _event(self, st: _KindState, event: _Event) -> None:
        st.history.append(event)
        if len(st.history) > self.history_limit:
            cut = len(st.history) // 2
            st.compacted = st.forgotten = st.history[cut - 1].rv
            del st.history[:cut]

    def add(self, kind: str, obj: Obj) -> Obj:
        """Create ``obj`` (KeyError if it exists); returns the stored copy with its RV."""
        with self._cond:
            stored = self._write(kind, obj, False)
            self._cond.notify_all()
        return stored

    def update(self, kind: str, obj: Obj) -> Obj:
        """Replace an existing object (KeyError if missing)."""
        with self._cond:
            stored = self._write(kind, obj, True)
            self._cond.notify_all()
        return stored

    def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete one object (KeyError if missing); ``namespace`` is ignored for namespaces."""
        key = (namespace if RESOURCES[kind].namespaced else "", name)
        with self._cond:
            st = self._kinds[kind]
            obj, _ = st.objects.pop(key)
            st.sorted_keys = None
            self._rv += 1
            gone = dict(obj)
            gone["metadata"] = dict(obj["metadata"], resourceVersion=str(self._rv))
            raw = json.dumps(gone, separators=(",", ":")).encode()
            self._event(st, _Event(self._rv, "DELETED", gone, raw, obj))
            self._cond.notify_all()

    def bulk_load(self, kind: str, objs: Iterable[Obj]) -> int:
        """Create or replace many objects under one lock (fast for 50k); returns the count."""
        n = 0
        with self._cond:
            for obj in objs:
                self._write(kind, obj, None)
                n += 1
            self._cond.notify_all()
        return n

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        key = (namespace if RESOURCES[kind].namespaced else "", name)
        with self._lock:
            entry = self._kinds[kind].objects.get(key)
        return entry[0] if entry else None

    def objects(self, kind: str) -> list[Obj]:
        with self._lock:
            return [obj for obj, _ in self._kinds[kind].objects.values()]

    # ---- fault injection ---------------------------------------------------------------------

    def compact(self) -> None:
        """Forget all history and outstanding continue tokens: older RVs get 410 Gone."""
        with self._cond:
            for st in self._kinds.values():
                if st.history:
                    st.forgotten = st.history[-1].rv
                st.history.clear()
                st.compacted = self._rv
            self._continues.clear()
            self._cond.notify_all()

    def drop_watches(self) -> int:
        """Close every open watch stream abruptly (no terminating chunk); returns how many."""
        with self._cond:
            active = list(self._active)
            for h in active:
                h.dropped = True
            self._cond.notify_all()
        for h in active:
            h.drop()
        return len(active)

    def stall_watches(self, stalled: bool = True) -> None:
        """Keep watch streams open but send nothing (no events, no bookmarks) until unstalled."""
        with self._cond:
            self._stalled = stalled
            self._cond.notify_all()

    def set_outage(self, on: bool, mode: str = "refuse") -> None:
        """Simulate the API server being down; open watches are dropped when it starts.

        Modes: "refuse" stops listening (connection refused), "close" accepts and closes
        without an answer, "503" answers 503 Service Unavailable.
        """
        if mode not in ("refuse", "close", "503"):
            raise ValueError("mode must be 'refuse', 'close' or '503'")
        if on:
            with self._lock:
                self._outage = mode
            if mode == "refuse":
                self._unlisten()
            self.drop_watches()
        else:
            with self._lock:
                was, self._outage = self._outage, None
            if was == "refuse" and self._httpd is None:
                self._listen()

    def fail_next(self, n: int = 1, status: int = 500, body: bytes = b"garbage", *,
                  kind: str | None = None, watch: bool | None = None) -> None:
        """Answer the next ``n`` matching requests with ``status`` and ``body`` (a 200 with a
        garbage body makes a client's JSON decoding fail). ``kind``/``watch`` narrow which
        requests match (None: any)."""
        with self._lock:
            self._failures.extend(_Failure(status, body, kind, watch) for _ in range(n))

    def _take_failure(self, kind: str | None, watch: bool) -> _Failure | None:
        with self._lock:
            for i, f in enumerate(self._failures):
                if (f.kind is None or f.kind == kind) and (f.watch is None or f.watch == watch):
                    return self._failures.pop(i)
        return None

    def _delay(self) -> None:
        delay = self.response_delay
        if delay <= 0:
            return
        with self._lock:
            self._waiting += 1
            self.peak_waiting = max(self.peak_waiting, self._waiting)
        try:
            time.sleep(delay)
        finally:
            with self._lock:
                self._waiting -= 1

    # ---- observation -------------------------------------------------------------------------

    def _record(self, rec: RequestRecord) -> None:
        with self._lock:
            self._requests.append(rec)

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, oldest first."""
        with self._lock:
            return list(self._requests)

    def count(self, kind: str | None = None, *, watch: bool | None = None,
              status: int | None = None) -> int:
        """Requests seen, narrowed by kind, watch-ness and answered status."""
        return sum(1 for r in self.requests
                   if (kind is None or r.kind == kind) and (watch is None or r.watch == watch)
                   and (status is None or r.status == status))

    def list_pages(self, kind: str | None = None) -> int:
        """List pages served (200) for ``kind`` (or all kinds)."""
        with self._lock:
            return self._pages[kind] if kind else sum(self._pages.values())

    def watches_opened(self, kind: str | None = None) -> int:
        """Watch requests that got past auth and fault injection."""
        with self._lock:
            return self._watches_opened[kind] if kind else sum(self._watches_opened.values())

    def open_watches(self) -> int:
        """Watch streams open right now."""
        with self._lock:
            return len(self._active)

    def write_kubeconfig(self, path: str, token: str = "test-token") -> str:
        """Write a kubeconfig pointing at this server with a bearer token; returns ``path``."""
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake-user", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake-user"}}],
            "current-context": "fake",
        }
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)  # JSON is YAML
        return path
