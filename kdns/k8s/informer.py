"""API-server informers: list, then watch, forever, feeding a :class:`~kdns.k8s.source.Sink`.

This module owns talking to the Kubernetes API for the resources DNS needs. It follows kopf's
three layers, one daemon thread per resource:

1. **run forever** (``_Informer.run``): on any failure log it, mark the kind stale in the sink
   (which keeps serving the last good view), back off with full jitter, and resume: re-watch from
   the last resourceVersion if there is one, else relist.
2. **list then watch** (``_list``): page through the collection with ``limit``/``continue``,
   streaming each decoded page into ``begin_list``/``upsert``/``end_list`` (never holding more
   than one page), and remember the list's resourceVersion.
3. **one stream** (``_watch``): ``watch=1&allowWatchBookmarks=true`` from that resourceVersion,
   one JSON event per line. BOOKMARK advances the resourceVersion; 410 Gone (HTTP or an ERROR
   event) means relist; a stream that ends normally is re-opened from the last resourceVersion;
   a stream that breaks or stalls past ``read_timeout`` is re-opened once at once, then treated as
   a failure.

Bodies are decoded with :mod:`json` and :data:`kdns.k8s.objects.PARSERS`, never into the client
library's generated models. A malformed object is logged and skipped; on a relist its key still
counts as seen so a previous good version is not dropped because one update was bad.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import urllib3

from kdns.k8s.client import ConnectionConfig, build_api_client, short_error
from kdns.k8s.objects import PARSERS, meta_of
from kdns.k8s.source import RESOURCES, Key, ResourceSpec, Sink
from kdns.k8s.throttle import ApiLimits, RequestGate

log = logging.getLogger("kdns.k8s")

_rng = random.Random()
"""This module's own random source: drawing from the shared ``random`` state would make
every other user of it (a test's seeded strategy, say) depend on this plugin's traffic."""

PATHS = {
    "services": "/api/v1/services",
    "endpointslices": "/apis/discovery.k8s.io/v1/endpointslices",
    "namespaces": "/api/v1/namespaces",
    "pods": "/api/v1/pods",
    "serviceimports": "/apis/multicluster.x-k8s.io/v1alpha1/serviceimports",
    # Imported slices are EndpointSlices; their spec's label selector picks the MCS ones.
    "importedslices": "/apis/discovery.k8s.io/v1/endpointslices",
}
"""Cluster-wide collection path per resource."""

_MAX_LINE = 64 << 20
"""A watch line longer than this is garbage, not an object (the API caps objects at ~1.5 MiB)."""


class _Gone(Exception):
    """410 Gone: the resourceVersion is too old; relist."""


class _Failure(Exception):
    """The API answered, but not usefully (bad status, garbage body)."""


class _Absent(Exception):
    """404 on the list of an optional resource: its CRD is not installed."""


ABSENT_RETRY = 60.0
"""How often an optional resource found absent (404) is looked for again."""


class _StreamBroken(Exception):
    """An established watch stream died (reset, truncated chunk, read timeout)."""


def _status_reason(status: int, body: bytes) -> str:
    """'HTTP 503: message' from an error response, using the Status object when there is one."""
    message = ""
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("message"), str):
            message = doc["message"]
    except ValueError:
        message = body[:200].decode("utf-8", "replace").strip()
    return f"HTTP {status}" + (f": {message[:300]}" if message else "")


def _rv_of(obj: Any) -> str | None:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
    return rv if isinstance(rv, str) and rv else None


class _Informer:
    """List and watch one resource forever (until stopped)."""

    def __init__(self, source: ApiSource, spec: ResourceSpec) -> None:
        self.source = source
        self.spec = spec
        self.kind = spec.kind
        self.path = PATHS[spec.kind]
        self.parse = PARSERS[spec.kind]
        self.sink = source.sink
        self.synced = False
        self.rv: str | None = None
        """Where the next watch starts; None means relist first."""
        self.thread = threading.Thread(target=self.run, name=f"kdns-informer-{self.kind}",
                                       daemon=True)
        self._lock = threading.Lock()
        self._resp: Any = None
        self._client: Any = None
        self._stale = False
        self._stale_since = 0.0
        self._failures = 0
        self._quick_retries = 0

    # ---- layer 1: forever ------------------------------------------------------------------

    def run(self) -> None:
        stop = self.source._stop
        try:
            while not stop.is_set():
                try:
                    if self._client is None:
                        self._client = build_api_client(self.source.conn)
                        self._client.user_agent = "kdns"
                    if self.rv is None:
                        self.rv = self._list()
                    self._watch()
                except _Absent as exc:
                    self._absent(str(exc))
                except _Gone:
                    if stop.is_set():
                        break
                    log.info("%s: resourceVersion %s is gone (410); relisting",
                             self.kind, self.rv)
                    self.rv = None
                    self._quick_pause()
                except _StreamBroken as exc:
                    if stop.is_set():
                        break
                    if self._quick_retries == 0:
                        log.info("%s: watch stream broke (%s); resuming from resourceVersion %s",
                                 self.kind, exc, self.rv)
                        self._quick_retries += 1
                    else:
                        self._failed(f"watch stream keeps breaking: {exc}")
                except Exception as exc:
                    if stop.is_set():
                        break
                    reason = str(exc) if isinstance(exc, _Failure) else (
                        f"{type(exc).__name__}: {exc}")
                    self._failed(reason)
        finally:
            client, self._client = self._client, None
            if client is not None:
                try:
                    client.close()
                except Exception:  # closing a pool must never turn stop() into a crash
                    log.debug("%s: closing the API client failed", self.kind, exc_info=True)

    def _absent(self, reason: str) -> None:
        """An optional resource's API is not there (a CRD not installed, e.g. ServiceImport
        without an MCS controller). That is a state, not an outage: serve it as an empty list
        (so readiness is not held and the zone answers NXDOMAIN, not SERVFAIL), say so once,
        and look again every ABSENT_RETRY seconds."""
        if not self.synced or self._failures == 0:
            log.warning("%s: %s is not served by the API server (%s); treating it as empty and "
                        "checking again every %.0f s (is its CRD installed?)", self.kind,
                        self.path, reason, ABSENT_RETRY)
        self._failures += 1
        self.sink.begin_list(self.kind)
        self.sink.end_list(self.kind, set())
        self.synced = True
        self.source._stop.wait(ABSENT_RETRY)

    def _quick_pause(self) -> None:
        """The first quick retry (410, broken stream) is immediate; repeats back off."""
        if self._quick_retries > 0:
            self.source._stop.wait(self.source._delay(self._quick_retries))
        self._quick_retries += 1

    def _failed(self, reason: str) -> None:
        self._failures += 1
        self._quick_retries = 0
        if not self.synced:
            # Never listed: there is no view to serve from, so say that (once per interval
            # for the whole source, not per resource and attempt) and name the URL.
            url = self._client.configuration.host if self._client is not None else None
            self.source.report_no_data(url, reason)
            if not self._stale:
                self._stale = True
                self._stale_since = time.monotonic()
                self.sink.set_stale(self.kind, True, reason)
            self.source._stop.wait(self.source._delay(self._failures))
            return
        if not self._stale:
            self._stale = True
            self._stale_since = time.monotonic()
            log.warning(
                "%s: Kubernetes API failed (%s); the data is stale and kdns keeps answering "
                "from the last good view while it retries", self.kind, reason)
            self.sink.set_stale(self.kind, True, reason)
        else:
            log.debug("%s: Kubernetes API still failing (%s), attempt %d",
                      self.kind, reason, self._failures)
        self.source._stop.wait(self.source._delay(self._failures))

    def _healthy(self) -> None:
        if self._stale:
            self._stale = False
            log.warning("%s: Kubernetes API recovered after %.1f s and %d failed attempts",
                        self.kind, time.monotonic() - self._stale_since, self._failures)
            self.sink.set_stale(self.kind, False)
        self._failures = 0

    # ---- transport -------------------------------------------------------------------------

    def _get(self, params: list[tuple[str, str]], read_timeout: float) -> Any:
        """Send a GET; returns the urllib3 response (body not read), registered for stop()."""
        client = self._client
        selectors = [("labelSelector", self.spec.label_selector),
                     ("fieldSelector", self.spec.field_selector)]
        params = params + [(k, v) for k, v in selectors if v]
        method, url, headers, _, _ = client.param_serialize(
            "GET", self.path, query_params=params,
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
        gate = self.source.gate
        timeout = (self.source.connect_timeout, read_timeout)
        try:
            # The gate (apiserver_qps/_burst/_max_inflight) holds a slot until the headers are
            # in, like a Go RoundTrip; reading the body (a watch stream) holds none.
            with gate.request():
                rest = client.call_api(method, url, header_params=headers,
                                       _request_timeout=timeout)
        except urllib3.exceptions.ProtocolError:
            # A pooled keep-alive connection the server closed while it sat idle (HTTP allows
            # that at any time) fails at once on reuse; that is not an outage. One immediate
            # retry gets a fresh connection; a second failure is a real one.
            if self.source._stop.is_set():
                raise
            with gate.request():
                rest = client.call_api(method, url, header_params=headers,
                                       _request_timeout=timeout)
        resp = rest.response
        with self._lock:
            self._resp = resp
        if self.source._stop.is_set():
            self.close_stream()
        return resp

    def _done(self, resp: Any, *, reuse: bool) -> None:
        """Forget ``resp``; keep its connection for the next request only if fully read."""
        with self._lock:
            if self._resp is resp:
                self._resp = None
        if not reuse:
            # A half-read body (a watch, or a failure mid-list) leaves bytes on the socket.
            resp.close()
        resp.release_conn()

    def close_stream(self) -> None:
        """Abort the response being read, from another thread (stop())."""
        with self._lock:
            resp = self._resp
        if resp is None:
            return
        try:
            resp.shutdown()  # unblocks a recv() in progress; close() alone would not
        except Exception:
            log.debug("%s: shutting down the stream failed", self.kind, exc_info=True)

    # ---- layer 2: list ---------------------------------------------------------------------

    def _upsert(self, raw: Any, seen: set[Key] | None) -> None:
        try:
            obj: Any = self.parse(raw)
        except Exception as exc:  # ObjectError, or a parser bug: skip the object either way
            ns, name = meta_of(raw)
            log.warning("%s %s: skipping malformed object: %s",
                        self.kind, f"{ns}/{name}" if ns else name, exc)
            if seen is not None:
                seen.add((ns, name))  # keep a previous good version on relist
            return
        self.sink.upsert(self.kind, obj)
        if seen is not None:
            seen.add(obj.key)

    def _list(self) -> str:
        page_size = self.source.page_size
        seen: set[Key] = set()
        token = ""
        begun = False
        pages = 0
        while True:
            params = [("limit", str(page_size))]
            if token:
                params.append(("continue", token))
            resp = self._get(params, self.source.read_timeout)
            complete = False
            try:
                body = resp.data
                complete = True
            finally:
                self._done(resp, reuse=complete)
            if resp.status == 410 and token:
                # The continue token expired (compaction) mid-list: start the list over.
                log.info("%s: list continue token expired (410); restarting the list", self.kind)
                token, seen = "", set()
                continue
            if resp.status == 410:
                raise _Failure(_status_reason(resp.status, body))
            if resp.status == 404 and self.spec.optional:
                raise _Absent(_status_reason(resp.status, body))
            if resp.status != 200:
                raise _Failure(_status_reason(resp.status, body))
            try:
                doc = json.loads(body)
            except ValueError as exc:
                raise _Failure(f"list response is not JSON: {exc}") from None
            meta = doc.get("metadata") if isinstance(doc, dict) else None
            items = doc.get("items") if isinstance(doc, dict) else None
            if not isinstance(meta, dict) or not (items is None or isinstance(items, list)):
                raise _Failure("list response is not a List object")
            rv = meta.get("resourceVersion")
            if not isinstance(rv, str) or not rv:
                raise _Failure("list response has no metadata.resourceVersion")
            if not begun:
                self.sink.begin_list(self.kind)
                begun = True
            pages += 1
            for raw in items or ():
                self._upsert(raw, seen)
            del doc, items, body  # one page at a time
            token = meta.get("continue") or ""
            if not isinstance(token, str) or not token:
                break
        self.sink.end_list(self.kind, seen)
        if not self.synced:
            log.info("%s: initial list done: %d objects in %d page(s)", self.kind, len(seen), pages)
        self.synced = True
        self._healthy()
        return rv

    # ---- layer 3: one watch stream ---------------------------------------------------------

    def _lines(self, resp: Any) -> Iterator[bytes]:
        buf = b""
        try:
            for chunk in resp.stream(1 << 16, decode_content=True):
                buf += chunk
                if b"\n" not in chunk:
                    if len(buf) > _MAX_LINE:
                        raise _Failure("watch stream line too long")
                    continue
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield line
        except (_Failure, GeneratorExit):
            raise
        except Exception as exc:
            raise _StreamBroken(f"{type(exc).__name__}: {exc}") from None
        if buf.strip():
            yield buf

    def _watch(self) -> None:
        """One watch stream from ``self.rv``, advancing it per event; returns on a clean end."""
        assert self.rv is not None
        params = [
            ("watch", "1"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(max(1, round(self.source.watch_timeout)))),
            ("resourceVersion", self.rv),
        ]
        resp = self._get(params, self.source.read_timeout)
        try:
            if resp.status == 410:
                raise _Gone()
            if resp.status != 200:
                raise _Failure(_status_reason(resp.status, resp.data))
            self._healthy()
            for line in self._lines(resp):
                try:
                    event = json.loads(line)
                    etype, obj = event["type"], event["object"]
                except (ValueError, KeyError, TypeError) as exc:
                    raise _Failure(f"watch event is not JSON: {exc}") from None
                if etype in ("ADDED", "MODIFIED"):
                    self._upsert(obj, None)
                elif etype == "DELETED":
                    ns, name = meta_of(obj)
                    if name == "?":
                        log.warning("%s: DELETED event without a name; ignored", self.kind)
                    else:
                        self.sink.delete(self.kind, (ns, name))
                elif etype == "BOOKMARK":
                    pass
                elif etype == "ERROR":
                    code = obj.get("code") if isinstance(obj, dict) else None
                    if code == 410:
                        raise _Gone()
                    raise _Failure("watch ERROR event: " + _status_reason(
                        code if isinstance(code, int) else 0, json.dumps(obj).encode()))
                else:
                    log.warning("%s: unknown watch event type %r; ignored", self.kind, etype)
                    continue
                self.rv = _rv_of(obj) or self.rv
                self._quick_retries = 0
        finally:
            self._done(resp, reuse=False)


BACKOFF_MAX = 5.0
"""Cap of the retry back-off. DNS must follow the cluster again within seconds of the API
server's return, however long it was gone; at one request per resource per 5 s, retrying
costs the API server nothing it would notice."""


class ApiSource:
    """Lists and watches ``specs`` on the API server and feeds ``sink`` (a Source)."""

    def __init__(
        self,
        conn: ConnectionConfig,
        specs: list[ResourceSpec],
        sink: Sink,
        *,
        page_size: int = 500,
        watch_timeout: float = 300.0,
        read_timeout: float = 330.0,
        connect_timeout: float = 10.0,
        backoff_initial: float = 0.2,
        backoff_max: float = BACKOFF_MAX,
        limits: ApiLimits | None = None,
        no_data_log_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for spec in specs:
            if spec.kind not in RESOURCES:
                raise ValueError(f"unknown resource {spec.kind!r}; expected one of {RESOURCES}")
        self.conn = conn
        self.specs = list(specs)
        self.sink = sink
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.no_data_log_interval = no_data_log_interval
        self._clock = clock
        self._log_lock = threading.Lock()
        self._no_data_logged: float | None = None
        self._stop = threading.Event()
        self.limits = limits or ApiLimits()
        self.gate = RequestGate(self.limits, self._stop)
        """Shared by the informers: the limits are per connection, as in client-go."""
        self._informers = [_Informer(self, spec) for spec in self.specs]
        self._started = False

    def report_no_data(self, url: str | None, reason: str) -> None:
        """An informer that never listed failed: log it as an error at most once per
        ``no_data_log_interval`` for the whole source."""
        now = self._clock()
        with self._log_lock:
            if self._no_data_logged is not None and \
                    now - self._no_data_logged < self.no_data_log_interval:
                return
            self._no_data_logged = now
        where = f"{url} ({self.conn.describe()})" if url else self.conn.describe()
        log.error("cannot list from the Kubernetes API at %s: %s; kdns has no cluster data yet "
                  "(cluster names get SERVFAIL) and keeps retrying", where, short_error(reason))

    def _delay(self, attempt: int) -> float:
        """Full-jitter exponential back-off (AWS architecture blog): uniform(0, min(cap, b*2^n))."""
        ceiling = min(self.backoff_max, self.backoff_initial * (2 ** min(attempt - 1, 30)))
        return _rng.uniform(0, ceiling)

    def start(self) -> None:
        if self._started or self._stop.is_set():
            return
        self._started = True
        log.info("watching %s from %s", ", ".join(s.kind for s in self.specs), self.describe())
        bucket = self.limits.bucket()
        if bucket is not None or self.limits.max_inflight:
            log.info("API request limits: %s, %s",
                     f"{bucket[0]:g} requests/s with bursts of {bucket[1]}" if bucket
                     else "no rate limit",
                     f"at most {self.limits.max_inflight} in flight"
                     if self.limits.max_inflight else "no in-flight limit")
        for inf in self._informers:
            inf.thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        for inf in self._informers:
            inf.close_stream()
        deadline = time.monotonic() + timeout
        for inf in self._informers:
            if inf.thread.is_alive():
                inf.thread.join(max(0.0, deadline - time.monotonic()))
                if inf.thread.is_alive():
                    log.warning("%s informer did not stop within %.1f s", inf.kind, timeout)

    def synced(self) -> bool:
        return all(inf.synced for inf in self._informers)

    def describe(self) -> str:
        return f"Kubernetes API via {self.conn.describe()}"
