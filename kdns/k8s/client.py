"""Connection settings for the Kubernetes API and the transport built from them.

This module owns turning the Corefile's ``endpoint`` / ``tls`` / ``kubeconfig`` options (or the
in-cluster service account) into a ``kubernetes.client.ApiClient``. The ``kubernetes`` library is
used only for configuration, authentication and its urllib3 transport; the informers read the
response bodies themselves (no generated models).

Building a client reads files (kubeconfig, service-account token) and may raise; callers do it in
their own threads so that constructing a source never does I/O.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SERVICE_TOKEN_FILENAME = "/var/run/secrets/kubernetes.io/serviceaccount/token"
SERVICE_CERT_FILENAME = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"


@dataclass(frozen=True)
class ConnectionConfig:
    """How to reach the API server; all None means in-cluster."""

    kubeconfig: str | None = None
    context: str | None = None
    endpoint: str | None = None
    tls: tuple[str, str, str] | None = None
    """(cert, key, cacert) for ``endpoint``."""

    def describe(self) -> str:
        """Where the API is, for log lines (paths and URLs only, never credentials)."""
        if self.kubeconfig:
            ctx = f" (context {self.context})" if self.context else ""
            return f"kubeconfig {self.kubeconfig}{ctx}"
        if self.endpoint:
            return f"endpoint {self.endpoint}" + (" with client TLS" if self.tls else "")
        return "in-cluster service account"


class _RotatingToken:
    """Re-reads the service-account token whenever the file changes.

    Bound service-account tokens are rotated by the kubelet (an atomic symlink swap), and the
    library's own ``try_refresh_token`` only re-reads once a minute. The configuration calls this
    hook for every request's auth settings, and a ``stat`` per request is cheap because the
    informers make few requests (one per list page or watch).
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._token = ""
        self._read()

    def _read(self) -> None:
        st = os.stat(self._path)
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        with open(self._path, encoding="utf-8") as f:
            token = f.read().strip()
        if not token:
            # Keep the previous token while the kubelet is mid-write; fail only at start.
            if self._token:
                return
            raise ValueError(f"service-account token file {self._path} is empty")
        self._token, self._stamp = token, stamp

    def __call__(self, cfg: Any) -> None:
        with self._lock:
            # A transient read error keeps the last good token.
            with contextlib.suppress(OSError, ValueError):
                self._read()
            cfg.api_key["BearerToken"] = self._token
            cfg.api_key_prefix["BearerToken"] = "Bearer"


def _incluster(
    cfg: Any,
    token_file: str,
    cert_file: str,
    environ: Mapping[str, str],
) -> None:
    from kubernetes.config import incluster_config

    loader_cls: Any = incluster_config.InClusterConfigLoader

    # The library validates the environment and files and sets host and CA; the token hook is
    # ours (see _RotatingToken).
    loader_cls(
        token_filename=token_file,
        cert_filename=cert_file,
        try_refresh_token=False,
        environ=environ,
    ).load_and_set(cfg)
    hook = _RotatingToken(token_file)
    cfg.api_key.pop("BearerToken", None)
    hook(cfg)
    cfg.refresh_api_key_hook = hook


def build_api_client(
    conn: ConnectionConfig,
    *,
    token_file: str = SERVICE_TOKEN_FILENAME,
    cert_file: str = SERVICE_CERT_FILENAME,
    environ: Mapping[str, str] | None = None,
) -> Any:
    """A ``kubernetes.client.ApiClient`` for ``conn``; reads files, may raise.

    ``token_file``, ``cert_file`` and ``environ`` only matter in-cluster (tests point them at
    temporary files).
    """
    from kubernetes import client, config

    load_kube_config: Any = config.load_kube_config
    cfg = client.Configuration()
    if conn.kubeconfig:
        load_kube_config(
            config_file=conn.kubeconfig,
            context=conn.context,
            client_configuration=cfg,
            persist_config=False,
        )
    elif conn.endpoint:
        cfg.host = conn.endpoint.rstrip("/")
        if conn.tls:
            cfg.cert_file, cfg.key_file, cfg.ssl_ca_cert = conn.tls
    else:
        _incluster(cfg, token_file, cert_file, os.environ if environ is None else environ)
    # The informers own retrying (with back-off and staleness tracking); urllib3's silent
    # immediate retries would only hide outages and delay stop().
    cfg.retries = False
    return client.ApiClient(cfg)


class ApiAccessError(ValueError):
    """The API cannot be used as configured; the message is one line naming the kubeconfig,
    context or URL and the cause."""


def _check_kubeconfig(path: str, context: str | None) -> None:
    """Read and sanity-check a kubeconfig before the library does, so the error names the file
    and says what is wrong (the library says "No configuration found" for a missing file)."""
    import yaml

    where = f"kubeconfig {path}"
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise ApiAccessError(f"{where}: cannot read it: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ApiAccessError(f"{where}: not a text file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ApiAccessError(f"{where}: not valid YAML{at}: {problem}") from None
    if not isinstance(data, dict):
        raise ApiAccessError(f"{where}: not a kubeconfig (expected a mapping with clusters, "
                             "users and contexts)")
    contexts = [c.get("name") for c in data.get("contexts") or [] if isinstance(c, dict)]
    wanted = context or data.get("current-context")
    if not wanted:
        raise ApiAccessError(f"{where}: no current-context is set; give --context (one of: "
                             f"{', '.join(map(str, contexts)) or 'none defined'})")
    if wanted not in contexts:
        how = "--context" if context else "current-context"
        raise ApiAccessError(f"{where}: {how} {wanted!r} is not defined (contexts: "
                             f"{', '.join(map(str, contexts)) or 'none'})")


def load_api_client(conn: ConnectionConfig) -> Any:
    """:func:`build_api_client`, with every failure turned into a one-line ApiAccessError."""
    from kubernetes.config.config_exception import ConfigException

    if conn.kubeconfig:
        _check_kubeconfig(conn.kubeconfig, conn.context)
    try:
        return build_api_client(conn)
    except ConfigException as err:
        if not conn.kubeconfig and not conn.endpoint:
            raise ApiAccessError(
                f"no kubeconfig given and the in-cluster configuration cannot be loaded "
                f"({err}); give --kubeconfig or --manifests") from None
        raise ApiAccessError(f"{conn.describe()}: {err}") from None
    except OSError as err:  # a certificate or token file the kubeconfig names
        name = f" {err.filename}" if err.filename else ""
        raise ApiAccessError(f"{conn.describe()}: cannot read{name}: "
                             f"{err.strerror or err}") from None
    except Exception as err:  # the library's own checks raise plain exceptions as well
        raise ApiAccessError(f"{conn.describe()}: {type(err).__name__}: {err}") from None


def probe_api(conn: ConnectionConfig, timeout: float = 5.0) -> None:
    """One small list (namespaces, limit 1) so a bad URL, bad credentials or missing rights
    show at start instead of as SERVFAIL later; raises ApiAccessError."""
    import urllib3

    client = load_api_client(conn)
    url = client.configuration.host
    try:
        method, full, headers, _, _ = client.param_serialize(
            "GET", "/api/v1/namespaces", query_params=[("limit", "1")],
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
        try:
            rest = client.call_api(method, full, header_params=headers,
                                   _request_timeout=(timeout, timeout))
        except urllib3.exceptions.MaxRetryError as err:
            cause = err.reason if err.reason is not None else err
            raise ApiAccessError(f"Kubernetes API {url} ({conn.describe()}) is unreachable: "
                                 f"{short_error(cause)}") from None
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise ApiAccessError(f"Kubernetes API {url} ({conn.describe()}) is unreachable: "
                                 f"{short_error(err)}") from None
        status = rest.response.status
        if status == 401:
            raise ApiAccessError(f"Kubernetes API {url} answered 401 Unauthorized: the "
                                 f"credentials of {conn.describe()} were not accepted")
        if status == 403:
            raise ApiAccessError(f"Kubernetes API {url} answered 403 Forbidden: the user of "
                                 f"{conn.describe()} may not list namespaces (kdns needs "
                                 "list/watch on services, endpointslices, namespaces)")
        if status >= 400:
            raise ApiAccessError(f"Kubernetes API {url} answered HTTP {status} to a list of "
                                 "namespaces")
    finally:
        client.close()


def short_error(err: object) -> str:
    """The useful tail of a urllib3 error ("[Errno 111] Connection refused", not the
    connection pool's repr)."""
    text = str(err)
    if "]" in text and "Errno" in text:
        text = text[text.index("[Errno"):]
    return text
