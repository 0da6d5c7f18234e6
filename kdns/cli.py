"""The ``kdns`` command: ``serve``, ``resolve``, ``check``. The only place that exits the process.

Process-level flags only (where to read the cluster from, where to listen); everything else
lives in the Corefile. ``kdns resolve`` runs the same code as the server (in-process, or against a
running server with ``--server``), so debugging shows what the server would say.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import click

from kdns import __version__
from kdns.config.model import ConfigError, ServerBlock
from kdns.defaults import DEFAULT_COREFILE
from kdns.plugins.setup_context import Overrides

log = logging.getLogger("kdns")

EXIT_CONFIG = 2
EXIT_NOT_FOUND = 1
MAX_WORKERS = 256


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s [%(levelname)s] %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _load(conf: str | None) -> tuple[tuple[ServerBlock, ...], Path]:
    from kdns.config.parser import load_corefile, parse_corefile

    if conf is None:
        return parse_corefile(DEFAULT_COREFILE, "<default Corefile>"), Path.cwd()
    return load_corefile(conf), Path(conf).resolve().parent


def _port(_ctx: click.Context, _param: click.Parameter, value: int | None) -> int | None:
    if value is not None and not 0 <= value <= 65535:
        raise click.BadParameter("must be in 0..65535")
    return value


def _workers(_ctx: click.Context, _param: click.Parameter, value: str) -> int:
    from kdns.server.supervisor import default_workers

    if value == "auto":
        return default_workers()
    try:
        n = int(value, 10)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number or 'auto'") from None
    if not 1 <= n <= MAX_WORKERS:
        raise click.BadParameter(f"must be in 1..{MAX_WORKERS} or 'auto', got {n}")
    return n


def _addr(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        socket.getaddrinfo(value, None, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        raise click.BadParameter(f"{value!r} is not an IP address") from None
    return value


source_options = [
    click.option("--conf", "-c", type=click.Path(dir_okay=False), default=None,
                 help="Corefile to load (default: the built-in kubeadm-style Corefile)."),
    click.option("--kubeconfig", type=click.Path(dir_okay=False), default=None,
                 envvar="KUBECONFIG",
                 help="kubeconfig for a kubernetes plugin that does not set its own source."),
    click.option("--context", default=None, help="kubeconfig context to use."),
    click.option("--manifests", type=click.Path(exists=True), default=None,
                 help="Serve Kubernetes objects from YAML/JSON files instead of an API server."),
]


def _with_source_options(fn: Any) -> Any:
    for opt in reversed(source_options):
        fn = opt(fn)
    return fn


def _build(conf: str | None, kubeconfig: str | None, context: str | None,
           manifests: str | None, dns_addr: str | None = None,
           dns_port: int | None = None, workers: int = 1, log_level: str = "info",
           reply_store_mb: int = 16) -> Any:
    from kdns.server.app import KdnsServer, ServeOptions

    blocks, config_dir = _load(conf)
    if manifests is not None:
        manifests = str(Path(manifests).resolve())
    if kubeconfig is not None:
        kubeconfig = str(Path(kubeconfig).expanduser().resolve())
    opts = ServeOptions(config_dir, Overrides(kubeconfig, context, manifests), dns_addr,
                        Path(conf).resolve() if conf is not None else None, dns_port,
                        reply_store_bytes=reply_store_mb << 20)
    if workers > 1:
        from kdns.server.supervisor import Supervisor

        return Supervisor(blocks, opts, workers, log_level=log_level).build()
    return KdnsServer(blocks, opts).build()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kdns")
def main() -> None:
    """kdns: Kubernetes cluster DNS, configured by a CoreDNS Corefile."""


@main.command()
@_with_source_options
@click.option("--dns-addr", callback=_addr, default=None,
              help="Bind DNS to this address instead of all interfaces, in server blocks "
                   "without a bind directive.")
@click.option("--dns-port", type=int, callback=_port, default=None,
              help="Serve DNS on this port wherever the Corefile says 53 (0: a free port).")
@click.option("--workers", callback=_workers, default="1", show_default=True, metavar="N|auto",
              help="Serve from N processes on the same port (SO_REUSEPORT), with one set of "
                   "API watches and one /metrics for all; 'auto': one per usable CPU.")
@click.option("--reply-store-mb", type=click.IntRange(1, 4096), default=16, show_default=True,
              help="Memory for ready-made replies, per listener and protocol (and per worker); "
                   "see docs/operations.md, Sizing.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
def serve(conf: str | None, kubeconfig: str | None, context: str | None,
          manifests: str | None, dns_addr: str | None, dns_port: int | None,
          workers: int, reply_store_mb: int, log_level: str) -> None:
    """Serve DNS until SIGTERM/SIGINT (graceful: lameduck, then exit 0)."""
    _setup_logging(log_level)
    try:
        server = _build(conf, kubeconfig, context, manifests, dns_addr, dns_port, workers,
                        log_level, reply_store_mb)
    except ConfigError as err:
        click.echo(f"kdns: {err}", err=True)
        sys.exit(EXIT_CONFIG)
    except ValueError as err:  # e.g. a manifest that fails to load at start-up
        click.echo(f"kdns: {err}", err=True)
        sys.exit(EXIT_CONFIG)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        # The lameduck wait must not run inside the signal handler of the main thread's wait.
        import threading

        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.start()
    except (ConfigError, ValueError) as err:
        click.echo(f"kdns: {err}", err=True)
        server.stop()
        sys.exit(EXIT_CONFIG)
    except OSError as err:
        click.echo(f"kdns: cannot listen: {err}", err=True)
        server.stop()
        sys.exit(EXIT_CONFIG)
    for lst in server.listeners:
        # A machine-readable line so scripts can find a port chosen with --dns-port 0.
        print(f"kdns: serving on {lst.host or '0.0.0.0'}:{lst.port}", flush=True)
    while not server.wait(1.0):
        pass
    if server.fatal_message is not None:
        click.echo(f"kdns: {server.fatal_message}", err=True)
        sys.exit(1)
    sys.exit(0)


@main.command()
@click.argument("corefile", type=click.Path(dir_okay=False))
def check(corefile: str) -> None:
    """Parse and set up a Corefile without serving; exit 2 with a located error if invalid."""
    try:
        _build(corefile, None, None, None)
    except (ConfigError, ValueError) as err:
        click.echo(f"kdns: {err}", err=True)
        sys.exit(EXIT_CONFIG)
    click.echo(f"{corefile}: OK")


@main.command()
@click.argument("name")
@click.option("--type", "-t", "qtype", default="A", show_default=True,
              help="Record type to ask for (A, AAAA, SRV, PTR, TXT, CNAME, ...).")
@click.option("--namespace", "-n", default="default", show_default=True,
              help="Namespace of the Pod whose resolver is simulated.")
@click.option("--zone", default="cluster.local", show_default=True, help="Cluster domain.")
@click.option("--search", "search", multiple=True,
              help="Search domain (repeatable); default: <ns>.svc.<zone> svc.<zone> <zone>.")
@click.option("--ndots", type=click.IntRange(0, 15), default=5, show_default=True)
@click.option("--server", default=None, metavar="HOST:PORT",
              help="Ask a running DNS server instead of building one in-process.")
@click.option("--timeout", type=click.FloatRange(0.1, 60), default=2.0, show_default=True)
@_with_source_options
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="warning", show_default=True)
def resolve(name: str, qtype: str, namespace: str, zone: str, search: tuple[str, ...],
            ndots: int, server: str | None, timeout: float, conf: str | None,
            kubeconfig: str | None, context: str | None, manifests: str | None,
            log_level: str) -> None:
    """Show how a Pod's resolver would look NAME up, step by step, and what it gets."""
    from kdns.resolve import Asker, local_asker, remote_asker, walk

    _setup_logging(log_level)
    try:
        plan_search = list(search) or [f"{namespace}.svc.{zone}", f"svc.{zone}", zone]
        asker: Asker
        built = None
        if server is not None:
            asker = remote_asker(server, timeout)
        else:
            built = _build(conf, kubeconfig, context, manifests)
            asker = local_asker(built)
        result = walk(name, qtype, plan_search, ndots, asker)
    except (ConfigError, ValueError) as err:
        click.echo(f"kdns: {err}", err=True)
        sys.exit(EXIT_CONFIG)
    finally:
        if "built" in locals() and built is not None:
            built.stop()
    click.echo(result.render())
    sys.exit(0 if result.found else EXIT_NOT_FOUND)


@main.command()
@click.option("--metrics", "url", required=True, metavar="URL",
              help="The server's /metrics, e.g. http://127.0.0.1:9153/metrics.")
@click.option("--limit", type=click.IntRange(1, 10000), default=30, show_default=True,
              help="Namespaces shown (most queries first).")
@click.option("--timeout", type=click.FloatRange(0.1, 60), default=5.0, show_default=True)
def top(url: str, limit: int, timeout: float) -> None:
    """Per client namespace: queries, NXDOMAIN share, search waste and the fix for it."""
    from kdns.top import TopError, fetch, render, rows

    try:
        table = rows(fetch(url, timeout), url)
    except TopError as err:
        click.echo(f"kdns: {err}", err=True)
        sys.exit(EXIT_CONFIG)
    click.echo(render(table, limit), nl=False)


if __name__ == "__main__":  # pragma: no cover - `python -m kdns.cli`
    main()

