"""The ``kdns`` command: ``serve``, ``resolve``, ``check``, ``node-cache``. The only place that
exits the process.

Process-level flags only (where to read the cluster from, where to listen); everything else
lives in the Corefile. ``kdns resolve`` runs the same code as the server (in-process, or against a
running server with ``--server``), so debugging shows what the server would say.
"""

from __future__ import annotations

import logging
import os
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
DNS_PORT = 53


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
           resolve_trace: Any = None, reply_store_mb: int = 16) -> Any:
    from kdns.server.app import KdnsServer, ServeOptions

    blocks, config_dir = _load(conf)
    if dns_port is not None:
        # --dns-port moves port 53 (written or implied) and nothing else; a block on another
        # port would silently stay there, so say so instead of half-applying the flag.
        for key in (k for b in blocks for k in b.keys):
            if key.port is not None and key.port != DNS_PORT:
                raise ConfigError(key.loc, f"--dns-port {dns_port} replaces port {DNS_PORT} "
                                           f"only, and this server block asks for port "
                                           f"{key.port}: drop the flag, or the port from the "
                                           "Corefile")
    _check_manifest_paths(blocks, config_dir)
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
    server = KdnsServer(blocks, opts)
    if resolve_trace is not None:
        # Binds nothing: forward skips its self-loop guard and reports instead of sending.
        server.process["resolve_trace"] = resolve_trace
    return server.build()


def _check_manifest_paths(blocks: tuple[ServerBlock, ...], config_dir: Path) -> None:
    """A ``manifests`` path that does not exist, located at its Corefile token (the source
    itself would only say so once started)."""
    from kdns.config.model import error

    for d in (d for b in blocks for d in b.directives if d.name.text == "kubernetes"):
        for opt in d.block or ():
            if opt.name.text == "manifests" and len(opt.args) == 1:
                path = config_dir / Path(opt.args[0].text)
                if not path.exists():
                    raise error(opt.args[0], "kubernetes",
                                f"manifests: {path}: no such file or directory")


class _Discard:
    """A sink that keeps nothing: ``kdns check`` only wants to know the manifests load."""

    def begin_list(self, kind: str) -> None: ...
    def upsert(self, kind: str, obj: Any) -> None: ...
    def delete(self, kind: str, key: Any) -> None: ...
    def end_list(self, kind: str, seen: Any) -> None: ...
    def set_stale(self, kind: str, stale: bool, reason: str = "") -> None: ...


def _read_manifests(cfg: Any) -> None:
    from kdns.plugins.kubernetes.handler import default_source

    source = default_source(cfg)(cfg.resource_specs(), _Discard())
    load_once = getattr(source, "load_once", None)
    if callable(load_once):
        load_once()


def _preflight(server: Any, *, probe: bool, incluster: bool = True,
               manifests: bool = False) -> None:
    """Fail at once, in one line, when a kubernetes plugin cannot reach its API: the
    kubeconfig cannot be loaded (always) or the API does not answer a list (``probe``)."""
    from kdns.k8s.client import ConnectionConfig, load_api_client, probe_api

    # A --workers supervisor reads the API for its workers through its front server's plugins.
    handlers = getattr(getattr(server, "front", server), "handlers", None)
    if handlers is None:
        return
    seen: set[ConnectionConfig] = set()
    for h in handlers():
        cfg = getattr(h, "cfg", None)
        if h.name != "kubernetes" or cfg is None:
            continue
        if cfg.manifests:
            if manifests:  # read them as serve would at start (errors name file:line:col)
                _read_manifests(cfg)
            continue
        conn = ConnectionConfig(kubeconfig=cfg.kubeconfig, context=cfg.context,
                                endpoint=cfg.endpoint, tls=cfg.tls)
        if conn in seen or (not incluster and not conn.kubeconfig and not conn.endpoint):
            continue
        seen.add(conn)
        if probe:
            probe_api(conn)
        elif conn.kubeconfig:
            load_api_client(conn).close()


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
              help="Serve DNS on this port instead of 53 (0: a free port). Every server block "
                   "must be on port 53, written or implied; another port is refused.")
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
                        log_level, reply_store_mb=reply_store_mb)
        # A kubeconfig that cannot be loaded is a configuration error, not an outage to
        # ride out; an API that does not answer yet is (the informers retry and log it).
        _preflight(server, probe=False)
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
        from kdns.server.listeners import ListenError

        click.echo(f"kdns: {err}" if isinstance(err, ListenError) else
                   f"kdns: cannot listen: {err}", err=True)
        server.stop()
        sys.exit(EXIT_CONFIG)
    for lst in server.listeners:
        # A machine-readable line so scripts can find a port chosen with --dns-port 0; the
        # log's "listening on" line names the same address.
        print(f"kdns: serving on {lst.host or '0.0.0.0'}:{lst.port}", flush=True)
    while not server.wait(1.0):
        pass
    if server.fatal_message is not None:
        click.echo(f"kdns: {server.fatal_message}", err=True)
        sys.exit(1)
    sys.exit(0)


@main.command()
@click.argument("corefile", type=click.Path(dir_okay=False))
@click.option("--kubeconfig", type=click.Path(dir_okay=False), default=None, envvar="KUBECONFIG",
              help="kubeconfig for a kubernetes plugin that does not set its own source.")
@click.option("--context", default=None, help="kubeconfig context to use.")
def check(corefile: str, kubeconfig: str | None, context: str | None) -> None:
    """Parse and set up a Corefile without serving; exit 2 with a located error if invalid.

    A kubernetes plugin reading a kubeconfig or an endpoint also has its API asked for one
    small list, so bad credentials or an unreachable URL show here."""
    try:
        _preflight(_build(corefile, kubeconfig, context, None), probe=True, manifests=True,
                   incluster=bool(os.environ.get("KUBERNETES_SERVICE_HOST")))
    except (ConfigError, ValueError) as err:
        click.echo(f"kdns: {err}", err=True)
        sys.exit(EXIT_CONFIG)
    click.echo(f"{corefile}: OK")


@main.command()
@click.argument("name")
@click.option("--type", "-t", "qtype", default="A", show_default=True,
              help="Record type to ask for (A, AAAA, SRV, PTR, TXT, CNAME, ...; A+AAAA: both, as "
                   "getaddrinfo with AF_UNSPEC asks). An IP address "
                   "given as NAME is always a PTR lookup.")
@click.option("--namespace", "-n", default="default", show_default=True,
              help="Namespace of the Pod whose resolver is simulated.")
@click.option("--zone", default="cluster.local", show_default=True, help="Cluster domain.")
@click.option("--search", "search", multiple=True,
              help="Search domain (repeatable); default: <ns>.svc.<zone> svc.<zone> <zone>.")
@click.option("--ndots", type=click.IntRange(0, 15), default=None,
              help="[default: 5, or the --resolv-conf's]")
@click.option("--resolv-conf", "resolv_conf", type=click.Path(dir_okay=False), default=None,
              help="Take search, ndots and timeout from a Pod's resolv.conf (its nameserver "
                   "lines are not used).")
@click.option("--libc", type=click.Choice(["glibc", "musl", "both"]), default="both",
              show_default=True, help="Whose stub resolver to model.")
@click.option("--server", default=None, metavar="HOST:PORT",
              help="Ask a running DNS server instead of building one in-process.")
@click.option("--upstream", default=None, metavar="HOST:PORT",
              help="Where the in-process server forwards names outside its zones (default: "
                   "nowhere; such names are reported as 'would be forwarded upstream').")
@click.option("--timeout", type=click.FloatRange(0.1, 60), default=None,
              help="Seconds one step may take before it counts as a timeout "
                   "[default: 5, or the --resolv-conf's timeout x attempts].")
@_with_source_options
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="warning", show_default=True)
def resolve(name: str, qtype: str, namespace: str, zone: str, search: tuple[str, ...],
            ndots: int | None, resolv_conf: str | None, libc: str, server: str | None,
            upstream: str | None, timeout: float | None, conf: str | None,
            kubeconfig: str | None, context: str | None, manifests: str | None,
            log_level: str) -> None:
    """Show how a Pod's C library (glibc, musl) would look NAME up, step by step, and whether
    it resolves. Exit 0: it resolves for every library shown; 1: it does not for one; 3: it
    depends on an upstream that was not asked; 2: bad input or configuration."""
    from kdns.resolve import (
        Asker,
        ForwardTrace,
        ResolvConf,
        local_asker,
        read_resolv_conf,
        remote_asker,
        split_hostport,
        walk,
    )

    _setup_logging(log_level)
    built = None
    try:
        rc = read_resolv_conf(resolv_conf) if resolv_conf else ResolvConf(ndots=5, attempts=1)
        plan_search = list(search) or list(rc.search) or [
            f"{namespace}.svc.{zone}", f"svc.{zone}", zone]
        plan_ndots = rc.ndots if ndots is None else ndots
        wait = timeout if timeout is not None else rc.timeout * rc.attempts
        libs = ("glibc", "musl") if libc == "both" else (libc,)
        asker: Asker
        if server is not None:
            if upstream is not None:
                raise click.UsageError("--upstream applies to the in-process server only; "
                                       "with --server the running server forwards")
            asker = remote_asker(server, wait)
        else:
            trace = ForwardTrace(split_hostport(upstream, "--upstream") if upstream else None)
            built = _build(conf, kubeconfig, context, manifests, resolve_trace=trace)
            _preflight(built, probe=True)
            asker = local_asker(built, trace, wait)
        result = walk(name, qtype, plan_search, plan_ndots, asker, libs)
    except (ConfigError, ValueError) as err:
        click.echo(f"kdns: {err}", err=True)
        sys.exit(EXIT_CONFIG)
    finally:
        if built is not None:
            built.stop()
    click.echo(result.render())
    sys.exit(result.exit_code)


@main.command("node-cache", add_help_option=False,
              context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def node_cache(args: tuple[str, ...]) -> None:
    """Run as the node-local DNS cache: NodeLocal DNSCache's node-cache flags (-h lists them)."""
    from kdns.nodecache.app import run
    from kdns.nodecache.flags import FlagError, parse, usage

    if any(a in ("-h", "-help", "--help") for a in args):
        click.echo(usage())
        sys.exit(0)
    try:
        params = parse(list(args))
    except FlagError as err:
        click.echo(f"kdns node-cache: {err}", err=True)
        sys.exit(EXIT_CONFIG)
    _setup_logging(params.log_level)
    sys.exit(run(params, lambda line: click.echo(line, err=True)))


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

