"""One small HTTP listener per address for the routes plugins declare.

A route that carries a TLS context makes its address HTTPS: connections are accepted plain and
the TLS handshake runs in the connection's own thread (with a deadline), so a slow or broken
client never holds up the accept loop.
"""

from __future__ import annotations

import logging
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kdns.plugins.http import Route, split_addr

log = logging.getLogger("kdns.server")

HANDSHAKE_TIMEOUT = 10.0
"""Seconds a client gets to finish the TLS handshake."""


class HttpEndpoint:
    def __init__(self, addr: str, routes: list[Route]) -> None:
        host, port = split_addr(addr, 80)
        self.table = {r.path: r.func for r in routes}
        tls = next((r.tls for r in routes if r.tls is not None), None)
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def setup(self) -> None:
                if isinstance(self.request, ssl.SSLSocket):
                    self.request.settimeout(HANDSHAKE_TIMEOUT)
                    self.request.do_handshake()  # a failure ends this connection only
                super().setup()

            def do_GET(self) -> None:
                func = endpoint.table.get(self.path.split("?", 1)[0])
                if func is None:
                    status, ctype, body = 404, "text/plain", b"not found"
                else:
                    try:
                        status, ctype, body = func()
                    except Exception as err:  # a failing probe must not kill the listener
                        log.exception("http %s failed", self.path)
                        status, ctype, body = 500, "text/plain", str(err).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # probes every few seconds would flood the log

        class Server(ThreadingHTTPServer):
            allow_reuse_address = True
            # Like the DNS sockets: a new instance (a NodeLocal DaemonSet surge, a rollout on
            # hostNetwork) binds the probe and metrics ports before the old one has left.
            allow_reuse_port = True
            daemon_threads = True

            def get_request(self) -> tuple[Any, Any]:
                conn, peer = super().get_request()
                if tls is None:
                    return conn, peer
                return tls.wrap_socket(conn, server_side=True,
                                       do_handshake_on_connect=False), peer

            def handle_error(self, request: Any, client_address: Any) -> None:
                if tls is not None:
                    log.debug("https %s: connection from %s failed", addr, client_address)
                    return  # a client that fails the handshake is not the server's error
                super().handle_error(request, client_address)

        self.server = Server((host or "0.0.0.0", port), Handler)
        self.addr = addr
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                        name=f"http-{addr}")

    def set_routes(self, routes: list[Route]) -> None:
        self.table = {r.path: r.func for r in routes}

    @property
    def port(self) -> int:
        port: int = self.server.server_address[1]
        return port

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=2)
