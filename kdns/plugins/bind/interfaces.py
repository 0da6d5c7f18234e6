"""The host's interface addresses, read from the kernel over rtnetlink (RTM_GETADDR).

``bind IFACE`` listens on every address of an interface, IPv4 secondaries and IPv6 included.
The stdlib has interface names (``socket.if_nameindex``) but no address list, and the ioctl
route sees only an interface's primary IPv4 address; one netlink dump sees them all, with no
dependency and no subprocess.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

NETLINK_ROUTE = 0
RTM_NEWADDR = 20
RTM_GETADDR = 22
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
IFA_ADDRESS = 1
IFA_LOCAL = 2

_NLMSGHDR = struct.Struct("=IHHII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTATTR = struct.Struct("=HH")


def _align(n: int) -> int:
    return (n + 3) & ~3


def _parse(data: bytes, out: dict[str, list[str]]) -> bool:
    """Add the addresses of one recv()'s messages to ``out``; True once the dump is done."""
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        length, mtype, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size:
            return True
        if mtype == NLMSG_DONE:
            return True
        if mtype == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", data, off + _NLMSGHDR.size)
            raise OSError(-code, os.strerror(-code))
        if mtype == RTM_NEWADDR:
            body = off + _NLMSGHDR.size
            family, _plen, _flags, _scope, index = _IFADDRMSG.unpack_from(data, body)
            attrs: dict[int, bytes] = {}
            a = body + _IFADDRMSG.size
            while a + _RTATTR.size <= off + length:
                alen, atype = _RTATTR.unpack_from(data, a)
                if alen < _RTATTR.size:
                    break
                attrs[atype] = data[a + _RTATTR.size : a + alen]
                a += _align(alen)
            # IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on a
            # point-to-point link, and the only one IPv6 sends.
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw is not None and family in (socket.AF_INET, socket.AF_INET6):
                try:
                    name = socket.if_indextoname(index)
                except OSError:
                    name = None
                if name is not None:
                    out.setdefault(name, []).append(_text(family, raw, name))
        off += _align(length)
    return False


def _text(family: int, raw: bytes, iface: str) -> str:
    ip = ipaddress.ip_address(socket.inet_ntop(family, raw))
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_link_local:
        # A link-local address means nothing without its link: bind to it with the zone,
        # as CoreDNS does (fe80::1%eth0).
        return f"{ip}%{iface}"
    return str(ip)


def interface_addresses() -> dict[str, list[str]]:
    """Interface name -> its addresses (IPv4 then IPv6 as the kernel lists them), for every
    interface that exists, including those with no address."""
    out: dict[str, list[str]] = {name: [] for _, name in socket.if_nameindex()}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as s:
        s.settimeout(2.0)
        s.bind((0, 0))
        msg = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        s.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(msg), RTM_GETADDR,
                              NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + msg)
        while not _parse(s.recv(65536), out):
            pass
    return out
