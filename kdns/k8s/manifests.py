"""The offline source: Kubernetes objects read from YAML/JSON manifest files.

This module owns serving DNS for a cluster described by files (``kubectl get -o yaml`` output or
hand-written manifests) instead of a live API server. It reads a file, or a folder's ``.yaml``,
``.yml`` and ``.json`` files recursively in name order; each file may hold several documents and
``kind: List`` documents with ``items``. Service, EndpointSlice, Namespace and Pod objects are
converted to the same JSON shape the API returns and parsed by the same
:data:`kdns.k8s.objects.PARSERS`; other kinds are ignored. Namespaces that objects use but no file
declares are added implicitly (without labels). The :class:`ResourceSpec` label and field
selectors are applied here, client-side, the way the API server would.

A poll thread notices changes (file list, mtimes, sizes) and re-feeds every kind through
``begin_list``/``upsert``/``end_list``. A file that stops parsing on reload is logged with
``file:line`` and the previous state is kept; :meth:`ManifestSource.load_once` instead raises
:class:`ManifestError` so startup can fail fast.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from kdns.k8s.objects import PARSERS, Namespace, meta_of
from kdns.k8s.selectors import Selector, parse_selector
from kdns.k8s.source import RESOURCES, Key, ResourceSpec, Sink

log = logging.getLogger("kdns.k8s")

KINDS = {
    "Service": "services",
    "EndpointSlice": "endpointslices",
    "Namespace": "namespaces",
    "Pod": "pods",
}
"""Manifest ``kind`` -> resource."""

EXTENSIONS = (".yaml", ".yml", ".json")


class ManifestError(ValueError):
    """A manifest file that cannot be read or parsed; the message starts with file[:line]."""


def _json_shape(value: Any) -> Any:
    """YAML's extra types -> what the API's JSON would hold (timestamps are RFC 3339 strings)."""
    if isinstance(value, dict):
        return {str(k): _json_shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_shape(v) for v in value]
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat() + "Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _files(path: str) -> list[str]:
    if os.path.isdir(path):
        found: list[str] = []
        for root, dirs, names in os.walk(path):
            dirs.sort()
            found.extend(os.path.join(root, n) for n in names
                         if n.lower().endswith(EXTENSIONS) and not n.startswith("."))
        return sorted(found, key=lambda p: os.path.relpath(p, path))
    if os.path.exists(path):
        return [path]
    raise ManifestError(f"{path}: no such file or directory")


def _fingerprint(path: str) -> tuple[tuple[str, int, int], ...] | None:
    try:
        stamps = []
        for f in _files(path):
            st = os.stat(f)
            stamps.append((f, st.st_mtime_ns, st.st_size))
        return tuple(stamps)
    except (OSError, ManifestError):
        return None


def _documents(file: str) -> Iterator[tuple[int, Any]]:
    """(line, document) for every document in ``file``; raises ManifestError."""
    try:
        with open(file, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{file}: cannot read: {exc}") from None
    if file.lower().endswith(".json"):
        try:
            doc = json.loads(text) if text.strip() else None
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{file}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
        yield 1, doc
        return
    loader = yaml.SafeLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            yield node.start_mark.line + 1, loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ManifestError(f"{where}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{file}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def _objects(doc: Any) -> Iterator[Any]:
    """The objects in a document, flattening ``kind: List`` (and ``*List``) items."""
    if isinstance(doc, dict) and isinstance(doc.get("kind"), str) and doc["kind"].endswith("List") \
            and isinstance(doc.get("items"), list):
        for item in doc["items"]:
            yield from _objects(item)
    elif doc is not None:
        yield doc


class _FieldSelector:
    """Equality field selectors (``a.b=v``, ``a.b!=v``), evaluated on the object's JSON."""

    def __init__(self, expr: str | None) -> None:
        self.terms: list[tuple[list[str], bool, str]] = []
        for term in filter(None, (t.strip() for t in (expr or "").split(","))):
            for op, equal in (("!=", False), ("==", True), ("=", True)):
                if op in term:
                    path, value = term.split(op, 1)
                    self.terms.append((path.strip().split("."), equal, value.strip()))
                    break
            else:
                raise ValueError(f"field selector {expr!r}: unsupported term {term!r}")

    def matches(self, obj: Any) -> bool:
        for path, equal, value in self.terms:
            cur: Any = obj
            for part in path:
                cur = cur.get(part) if isinstance(cur, dict) else None
            text = "" if cur is None else (str(cur).lower() if isinstance(cur, bool) else str(cur))
            if (text == value) != equal:
                return False
        return True


def _labels(obj: Any) -> Mapping[str, str]:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    labels = meta.get("labels") if isinstance(meta, dict) else None
    return labels if isinstance(labels, dict) else {}


_UNSET = object()

State = dict[str, dict[Key, Any]]
"""kind -> key -> slim object."""


class ManifestSource:
    """Serves the objects in manifest files at ``path`` (a Source); see the module docstring."""

    def __init__(
        self,
        path: str,
        specs: list[ResourceSpec],
        sink: Sink,
        *,
        poll_interval: float = 1.0,
    ) -> None:
        for spec in specs:
            if spec.kind not in RESOURCES:
                raise ValueError(f"unknown resource {spec.kind!r}; expected one of {RESOURCES}")
        self.path = path
        self.specs = {spec.kind: spec for spec in specs}
        self.sink = sink
        self.poll_interval = poll_interval
        self._selectors: dict[str, tuple[Selector, _FieldSelector]] = {
            kind: (parse_selector(spec.label_selector or ""), _FieldSelector(spec.field_selector))
            for kind, spec in self.specs.items()
        }
        self._lock = threading.Lock()
        self._state: State = {}
        self._loaded = False
        self._fingerprint: object = _UNSET
        """The file stamps last loaded (or last failed to load, so an error is logged once)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- reading -------------------------------------------------------------------------------

    def _read(self) -> tuple[State, dict[str, set[Key]]]:
        """Read and parse every file; returns (objects, malformed keys). Raises ManifestError."""
        state: State = {kind: {} for kind in RESOURCES}
        malformed: dict[str, set[Key]] = {kind: set() for kind in RESOURCES}
        used_namespaces: set[str] = set()
        declared_labels: dict[str, Mapping[str, str]] = {}
        for file in _files(self.path):
            for line, doc in _documents(file):
                for raw in _objects(doc):
                    raw = _json_shape(raw)
                    kind_name = raw.get("kind") if isinstance(raw, dict) else None
                    kind = KINDS.get(kind_name) if isinstance(kind_name, str) else None
                    if kind is None:
                        log.debug("%s:%d: ignoring %s object", file, line,
                                  kind_name if isinstance(kind_name, str) else "a non-object")
                        continue
                    ns, name = meta_of(raw)
                    what = f"{file}:{line}: {kind_name} {ns + '/' if ns else ''}{name}"
                    try:
                        obj: Any = PARSERS[kind](raw)
                    except Exception as exc:  # ObjectError or a parser bug: skip the object
                        log.warning("%s: skipping malformed object: %s", what, exc)
                        malformed[kind].add((ns, name))
                        continue
                    if kind == "namespaces":
                        declared_labels[obj.name] = _labels(raw)
                    else:
                        used_namespaces.add(obj.namespace)
                    if kind in self._selectors:
                        labels, fields = self._selectors[kind]
                        if not (labels.matches(_labels(raw)) and fields.matches(raw)):
                            continue
                    if obj.key in state[kind]:
                        log.debug("%s: replaces an earlier object with the same name", what)
                    state[kind][obj.key] = obj
        # Namespaces objects use but no file declares exist implicitly, without labels.
        labels, fields = self._selectors.get("namespaces", (Selector(), _FieldSelector(None)))
        for ns in sorted(used_namespaces - declared_labels.keys()):
            implicit = {"kind": "Namespace", "metadata": {"name": ns}}
            if labels.matches({}) and fields.matches(implicit):
                state["namespaces"][("", ns)] = Namespace(ns)
        return state, malformed

    def _feed(self, state: State, malformed: dict[str, set[Key]]) -> None:
        """Hand the new state to the sink, upserting only what changed (lock held)."""
        for kind in self.specs:
            old = self._state.get(kind, {})
            new = state[kind]
            self.sink.begin_list(kind)
            for key, obj in new.items():
                if old.get(key) != obj:
                    self.sink.upsert(kind, obj)
            # A malformed object keeps its previous good version, as with the API informers.
            kept = {key: old[key] for key in malformed[kind] - new.keys() if key in old}
            new.update(kept)
            self.sink.end_list(kind, set(new))
        self._state = state
        self._loaded = True

    def load_once(self) -> None:
        """Read everything and feed the sink now; raises ManifestError naming file and line."""
        with self._lock:
            fingerprint = _fingerprint(self.path)
            state, malformed = self._read()
            self._feed(state, malformed)
            self._fingerprint = fingerprint
        log.info("loaded %s: %s", self.describe(), ", ".join(
            f"{len(state[kind])} {kind}" for kind in self.specs))

    def _poll(self) -> None:
        settling = None
        while not self._stop.is_set():
            fingerprint = _fingerprint(self.path)
            if fingerprint != self._fingerprint and fingerprint != settling:
                # Changed since the last poll: an editor or `cp` may be mid-write (a truncated
                # file would drop every object). Read it once it has stayed the same for one
                # more interval.
                settling = fingerprint
            elif fingerprint != self._fingerprint:
                settling = None
                try:
                    self.load_once()
                except ManifestError as exc:
                    log.error("%s; keeping the previous state", exc)
                    with self._lock:
                        self._fingerprint = fingerprint  # log once per change, not per poll
                except Exception:
                    log.exception("reloading %s failed; keeping the previous state", self.path)
                    with self._lock:
                        self._fingerprint = fingerprint
            self._stop.wait(self.poll_interval)

    # ---- Source ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None or self._stop.is_set():
            return
        self._thread = threading.Thread(target=self._poll, name="kdns-manifests", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(2.0)

    def synced(self) -> bool:
        return self._loaded

    def describe(self) -> str:
        return f"manifests at {self.path}"
