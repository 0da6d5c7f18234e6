"""node-cache's command line, parsed the way Go's ``flag`` package parses it.

The upstream addon (``nodelocaldns.yaml``) passes single-dash flags such as ``-localip`` and
``-conf``, and operators write booleans as ``-setupiptables=false``; Go accepts ``-name``,
``--name``, ``-name=value`` and, for non-booleans, ``-name value``. Parsing stops at ``--`` or
at the first argument that is not a flag, as in Go; kdns rejects such leftovers instead of
ignoring them. Values are checked here (addresses, ports, durations) so a bad flag is one
clear line before anything touches the network.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from kdns.config.durations import parse_duration


class FlagError(ValueError):
    """A bad command line: the message names the flag."""


@dataclass(frozen=True, slots=True)
class Flag:
    name: str
    kind: str  # "str", "bool", "duration"
    default: str
    help: str


FLAGS: tuple[Flag, ...] = (
    Flag("localip", "str", "", "comma-separated IP addresses to serve on and put on the interface "
         "(the link-local address, and the kube-dns ClusterIP for transparent mode)"),
    Flag("conf", "str", "/etc/Corefile", "path of the Corefile node-cache writes and serves"),
    Flag("corefile", "str", "/etc/Corefile", "same as -conf (node-cache's own name for it)"),
    Flag("basecorefile", "str", "/etc/coredns/Corefile.base",
         "template Corefile whose __PILLAR__ placeholders are filled in"),
    Flag("kubednscm", "str", "", "directory of the kube-dns ConfigMap (stubDomains, "
         "upstreamNameservers); default /etc/kube-dns when it exists"),
    Flag("upstreamsvc", "str", "kube-dns", "Service whose ClusterIP (from <NAME>_SERVICE_HOST) "
         "fills __PILLAR__CLUSTER__DNS__"),
    Flag("health-port", "str", "8080", "port of the health plugin (its probes skip conntrack)"),
    Flag("dns.port", "str", "53", "DNS port the iptables rules and stub domains use"),
    Flag("setupinterface", "bool", "true", "create the interface holding the local IPs"),
    Flag("interfacename", "str", "nodelocaldns", "name of that interface"),
    Flag("setupiptables", "bool", "true", "install the NOTRACK and ACCEPT rules"),
    Flag("setupebtables", "bool", "false", "not supported by kdns (only false is accepted)"),
    Flag("skipteardown", "bool", "false", "leave the interface and rules in place on exit"),
    Flag("syncinterval", "duration", "1m", "how often the interface, rules and Corefile are "
         "checked and restored (a duration: 1s is one second)"),
    Flag("metrics-listen-address", "str", "0.0.0.0:9353",
         "host:port for node-cache's own set-up error metrics"),
    Flag("pidfile", "str", "", "write the process ID here once DNS is being served"),
    Flag("log-level", "str", "info", "debug, info, warning or error"),
)
_BY_NAME = {f.name: f for f in FLAGS}
_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class Params:
    local_ip_str: str
    """The -localip value as given (node-cache substitutes it with commas turned to spaces)."""
    local_ips: tuple[str, ...]
    corefile: str
    base_corefile: str
    kubedns_cm_path: str
    upstream_svc: str
    health_port: str
    local_port: str
    setup_interface: bool
    interface_name: str
    setup_iptables: bool
    skip_teardown: bool
    sync_interval: float
    metrics_listen_address: str
    pidfile: str
    log_level: str

    @property
    def ipv6(self) -> bool:
        return ":" in self.local_ips[0]


def usage() -> str:
    lines = ["Usage: kdns node-cache [flags]", "",
             "Runs kdns as the node-local DNS cache, as NodeLocal DNSCache's node-cache does.", ""]
    for f in FLAGS:
        kind = "" if f.kind == "bool" else f" {f.kind}"
        lines.append(f"  -{f.name}{kind}")
        lines.append(f"        {f.help} (default {f.default or chr(34) * 2})")
    return "\n".join(lines)


def _raw(args: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if len(arg) < 2 or not arg.startswith("-"):
            break
        body = arg[2:] if arg.startswith("--") else arg[1:]
        if not body or body.startswith(("-", "=")):
            raise FlagError(f"bad flag syntax: {arg}")
        name, eq, value = body.partition("=")
        flag = _BY_NAME.get(name)
        if flag is None:
            raise FlagError(f"flag provided but not defined: -{name}")
        if flag.kind == "bool":
            if not eq:
                value = "true"
            elif value not in _TRUE | _FALSE:
                raise FlagError(f"invalid boolean value {value!r} for -{name}: "
                                "use -{0}, -{0}=true or -{0}=false".format(name))
        elif not eq:
            if i + 1 >= len(args):
                raise FlagError(f"flag needs an argument: -{name}")
            i += 1
            value = args[i]
        values[name] = value
        i += 1
    if i < len(args):
        raise FlagError(f"unexpected argument {args[i]!r} (flags only; see -h)")
    return values


def _port(name: str, value: str) -> str:
    if not value.isdigit() or not 0 < int(value) <= 65535:
        raise FlagError(f"invalid -{name} {value!r}: must be a port number in 1..65535")
    return value


def parse(args: list[str]) -> Params:
    """``Params`` from node-cache's flags; raises FlagError naming the offending flag."""
    raw = _raw(args)

    def get(name: str) -> str:
        return raw.get(name, _BY_NAME[name].default)

    local_ip_str = get("localip")
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for part in local_ip_str.split(","):
        try:
            ips.append(ipaddress.ip_address(part))
        except ValueError:
            raise FlagError(f"invalid -localip {part!r}: want comma-separated IP addresses, "
                            "e.g. 169.254.20.10,10.96.0.10") from None
    if len({ip.version for ip in ips}) > 1:
        raise FlagError(f"-localip {local_ip_str!r} mixes IPv4 and IPv6; all addresses must "
                        "have the same family")
    try:
        interval = parse_duration(get("syncinterval"))
    except ValueError as err:
        raise FlagError(f"-syncinterval: {err}") from None
    if interval <= 0:
        raise FlagError(f"-syncinterval must be positive, got {get('syncinterval')!r}")
    if get("setupebtables") in _TRUE:
        raise FlagError("-setupebtables is not supported by kdns (its bridge redirect rules "
                        "are not implemented); leave it false")
    level = get("log-level")
    if level not in LOG_LEVELS:
        raise FlagError(f"invalid -log-level {level!r}: one of {', '.join(LOG_LEVELS)}")
    name = get("interfacename")
    if not 0 < len(name) < 16 or "/" in name or any(c.isspace() for c in name):
        raise FlagError(f"invalid -interfacename {name!r}: 1 to 15 characters, no '/' or "
                        "spaces")
    conf = raw["conf"] if "conf" in raw else get("corefile")
    addr = get("metrics-listen-address")
    _host, sep, mport = addr.rpartition(":")
    if not sep or not mport.isdigit() or int(mport) > 65535:
        raise FlagError(f"invalid -metrics-listen-address {addr!r}: want host:port")
    return Params(
        local_ip_str=local_ip_str,
        local_ips=tuple(str(ip) for ip in ips),
        corefile=conf,
        base_corefile=get("basecorefile"),
        kubedns_cm_path=get("kubednscm"),
        upstream_svc=get("upstreamsvc"),
        health_port=_port("health-port", get("health-port")),
        local_port=_port("dns.port", get("dns.port")),
        setup_interface=get("setupinterface") in _TRUE,
        interface_name=name,
        setup_iptables=get("setupiptables") in _TRUE,
        skip_teardown=get("skipteardown") in _TRUE,
        sync_interval=interval,
        metrics_listen_address=addr,
        pidfile=get("pidfile"),
        log_level=level,
    )
