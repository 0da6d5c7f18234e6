"""prometheus: ``/metrics`` (default ``localhost:9153``) with CoreDNS's metric names.

The families come from the server's collector and from each plugin's ``metrics()``; this
plugin only exposes them. Several blocks may name the same address: they share one endpoint.

``runtime_metrics`` is CoreDNS's switch for the Go runtime set; kdns's runtime is CPython, so it
adds prometheus-client's process, garbage-collector and platform collectors (``process_*``,
``python_gc_*``, ``python_info``) in a registry of their own, appended to each scrape.

``tls CERT KEY { client_ca FILE; min_version 1.0-1.3; client_auth MODE }`` serves the endpoint
over HTTPS with CoreDNS's defaults: TLS 1.3 at least and a client certificate required and
verified. The certificate files are loaded here, so a bad one is a located error.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)

from kdns.config.model import Directive, error
from kdns.plugins.base import Next, Request, Response, always_passes
from kdns.plugins.http import Route, listen_addr
from kdns.plugins.setup_context import SetupContext

log = logging.getLogger("kdns.prometheus")


class PrometheusHandler:
    name = "prometheus"

    def __init__(self, addr: str, process: dict[str, Any], runtime_metrics: bool = False,
                 tls: ssl.SSLContext | None = None) -> None:
        self.addr = addr
        self.runtime_metrics = runtime_metrics
        self._process = process
        self.routes = (Route(addr, "/metrics", self.scrape, tls),)
        self._runtime: CollectorRegistry | None = None
        if runtime_metrics:
            self._runtime = CollectorRegistry(auto_describe=False)
            # The process collector (memory, CPU, fds) is always in the server's registry, as
            # in CoreDNS; registering it here too would expose its families twice.
            for collector in (GC_COLLECTOR, PLATFORM_COLLECTOR):
                self._runtime.register(collector)

    def scrape(self) -> tuple[int, str, bytes]:
        registry = self._process.get("metrics_registry")
        if registry is None:
            return 503, "text/plain", b"metrics are not ready"
        body = generate_latest(registry)
        if self._runtime is not None:
            body += generate_latest(self._runtime)
        return 200, CONTENT_TYPE_LATEST, body

    passes = always_passes  # serve() hands every question on and returns the reply as is

    def serve(self, req: Request, nxt: Next) -> Response:
        return nxt(req)


def setup(d: Directive, ctx: SetupContext) -> PrometheusHandler:
    addr = listen_addr(d, "prometheus", "localhost:9153", 9153)
    runtime_metrics = False
    tls: ssl.SSLContext | None = None
    for opt in d.block or ():
        name = opt.name.text
        if name == "runtime_metrics":
            if opt.args or opt.block is not None:
                raise error(opt.args[0] if opt.args else opt, "prometheus",
                            "runtime_metrics takes no arguments")
            runtime_metrics = True
        elif name == "tls":
            if tls is not None:
                raise error(opt, "prometheus", "tls block already specified")
            tls = _tls(opt, ctx.config_dir)
        else:
            raise error(opt, "prometheus", f"unknown option: {name}")
    return PrometheusHandler(addr, ctx.process, runtime_metrics, tls)


TLS_VERSIONS = {"1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1,
                "1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
CLIENT_AUTH = {"none": ssl.CERT_NONE, "request": ssl.CERT_OPTIONAL, "verify": ssl.CERT_OPTIONAL,
               "require": ssl.CERT_REQUIRED, "require_and_verify": ssl.CERT_REQUIRED}
"""CoreDNS's client_auth modes. OpenSSL has no "ask but do not verify": a certificate a client
sends is always verified against client_ca, so request = verify and require =
require_and_verify here."""


def _tls(opt: Directive, config_dir: Path) -> ssl.SSLContext:
    if len(opt.args) != 2:
        raise error(opt, "prometheus", "tls needs CERT and KEY")

    def path(text: str) -> str:
        return str(Path(text) if Path(text).is_absolute() else config_dir / text)

    client_ca: str | None = None
    client_ca_at: Directive | None = None
    min_version = ssl.TLSVersion.TLSv1_3
    auth = "require_and_verify"
    for sub in opt.block or ():
        name, args = sub.name.text, sub.args
        if len(args) != 1 or sub.block is not None:
            raise error(sub, "prometheus", f"{name} needs one value")
        if name == "client_ca":
            client_ca, client_ca_at = path(args[0].text), sub
        elif name == "min_version":
            if args[0].text not in TLS_VERSIONS:
                raise error(args[0], "prometheus", f"unsupported TLS version: {args[0].text}")
            min_version = TLS_VERSIONS[args[0].text]
        elif name == "client_auth":
            if args[0].text.lower() not in CLIENT_AUTH:
                raise error(args[0], "prometheus",
                            f"unsupported client auth type: {args[0].text}")
            auth = args[0].text.lower()
        else:
            raise error(sub, "prometheus", f"unknown tls option: {name}")
    if auth != "none" and client_ca is None:
        raise error(opt, "prometheus", f"client_auth {auth} needs client_ca (the CA that signs "
                                       "the scrapers' certificates), or client_auth none")
    if auth == "none" and client_ca_at is not None:
        # Accepted as CoreDNS accepts it, but nothing asks a scraper for a certificate.
        log.info("%s: prometheus: client_ca has no effect with client_auth none", client_ca_at.loc)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.minimum_version = min_version
        ctx.load_cert_chain(path(opt.args[0].text), path(opt.args[1].text))
        ctx.verify_mode = CLIENT_AUTH[auth]
        if client_ca is not None:
            ctx.load_verify_locations(client_ca)
    except (OSError, ssl.SSLError, ValueError) as err:
        raise error(opt, "prometheus", f"tls: {err}") from None
    return ctx
