"""Which interface reaches an address, and which of a job's hosts this one is."""

from __future__ import annotations

import contextlib
import socket

import psutil

from aios_host.errors import AiosError


def _resolve(host: str) -> str | None:
    try:
        return socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    except (socket.gaierror, IndexError, OSError):
        return None


def local_addresses() -> dict[str, str]:
    """IPv4 address -> interface, in this network namespace."""
    out = {}
    for ifname, addrs in psutil.net_if_addrs().items():
        for a in addrs:
            if a.family == socket.AF_INET:
                out[a.address] = ifname
    return out


def interface_for(host: str) -> str | None:
    """The interface the kernel would use to reach `host` (a UDP connect sends nothing)."""
    ip = _resolve(host)
    if ip is None:
        return None
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((ip, 9))
        local = s.getsockname()[0]
    except OSError:
        return None
    finally:
        with contextlib.suppress(OSError):
            s.close()
    return local_addresses().get(local)


def local_node_rank(hosts: list[str]) -> int:
    """Index in `hosts` of the first one whose address belongs to this host (namespace)."""
    mine = local_addresses()
    for i, h in enumerate(hosts):
        ip = _resolve(h)
        if ip is not None and ip in mine and not ip.startswith("127."):
            return i
    raise AiosError(f"none of hosts {hosts} is an address of this host; pass --node-rank")
