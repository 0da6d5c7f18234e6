"""One small HTTP listener per address for the routes plugins declare."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kdns.plugins.http import Route, split_addr

log = logging.getLogger("kdns.server")


class HttpEndpoint:
    def __init__(self, addr: str, routes: list[Route]) -> None:
        host, port = split_addr(addr, 80)
        self.table = {r.path: r.func for r in routes}
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
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
