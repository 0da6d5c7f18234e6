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
