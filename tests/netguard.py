"""A socket guard for the test suite: any connection to a non-loopback address fails.

forgeml promises to be offline; with this installed in every test process (and, via
sitecustomize, every subprocess the tests start), a code path that phones home fails
the suite instead of quietly sending traffic.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

ALLOWED_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


def _loopback_names_in_hosts_file(path: str = "/etc/hosts") -> set[str]:
    """Names /etc/hosts maps to a loopback address (this machine's own name, usually):
    looking them up reads that file, never DNS. Slurm's loopback node is named so."""
    names = set()
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return names
    for line in lines:
        fields = line.split("#")[0].split()
        try:
            loopback = len(fields) > 1 and ipaddress.ip_address(fields[0]).is_loopback
        except ValueError:
            continue
        if loopback:
            names.update(name.lower() for name in fields[1:])
    return names


ALLOWED_NAMES |= _loopback_names_in_hosts_file()


class NetworkBlocked(RuntimeError):
    pass


def is_local(host: object) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode()
    host = str(host).split("%")[0]
    if host.lower() in ALLOWED_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: resolving it would already query DNS


def check_address(address: object) -> None:
    if isinstance(address, (str, bytes)):
        return  # AF_UNIX path
    if isinstance(address, tuple) and address and not is_local(address[0]):
        raise NetworkBlocked(
            f"blocked a network connection to {address!r}: forgeml must stay offline"
        )


def guard(inner):
    def guarded_connect(sock, address, *args):
        check_address(address)
        return inner(sock, address, *args)

    guarded_connect.forgeml_guard = True
    return guarded_connect


def guard_getaddrinfo(inner):
    def guarded_getaddrinfo(host, *args, **kwargs):
        if not is_local(host):
            raise NetworkBlocked(f"blocked a DNS lookup of {host!r}: forgeml must stay offline")
        return inner(host, *args, **kwargs)

    guarded_getaddrinfo.forgeml_guard = True
    return guarded_getaddrinfo


def install() -> None:
    if getattr(socket.socket.connect, "forgeml_guard", False):
        return
    socket.socket.connect = guard(socket.socket.connect)
    socket.socket.connect_ex = guard(socket.socket.connect_ex)
    socket.socket.sendto = _guard_sendto(socket.socket.sendto)
    socket.getaddrinfo = guard_getaddrinfo(socket.getaddrinfo)


def _guard_sendto(inner):
    def guarded_sendto(sock, data, *args):
        check_address(args[-1])
        return inner(sock, data, *args)

    return guarded_sendto
