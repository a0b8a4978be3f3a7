"""Free rendezvous ports, allocated and never guessed.

reserve_port() asks the kernel for a free port (bind to port 0), then takes an flock on
/run/aios-host/ports/<port>.lock. The bound socket keeps the port out of the kernel's
ephemeral range and away from anyone's bind(); the lock keeps it away from other aios-host jobs
for the job's whole life, also after `handoff()` closes the socket so that rank 0's TCPStore can
bind it. Two concurrent jobs can get the same port from the kernel only after one closed its
socket, and then the second one finds the lock taken and asks again.

A lock file is only a name: flocks die with their process, so a crashed supervisor leaves a file
that the next reservation of that port takes over. Files are unlinked on release; the inode is
compared after locking so that a file unlinked while we waited cannot be mistaken for the live one.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path

from aios_host.errors import AiosError
from aios_host.kernel.root import SysRoot

PORTS_DIR = "/run/aios-host/ports"
ATTEMPTS = 64


class PortReservation:
    def __init__(self, port: int, lock_path: Path, lock_fd: int, socks: list[socket.socket]) -> None:
        self.port = port
        self.lock_path = lock_path
        self._lock_fd: int | None = lock_fd
        self._socks = socks

    def __repr__(self) -> str:
        return f"PortReservation({self.port}, bound={bool(self._socks)})"

    @property
    def bound(self) -> bool:
        return bool(self._socks)

    def handoff(self) -> int:
        """Close the bound sockets right before the rank that binds the port starts. The lock
        stays: no other aios-host job takes the port."""
        for s in self._socks:
            s.close()
        self._socks = []
        return self.port

    def rebind(self) -> bool:
        """Before a restart: hold the port again; False when someone else took it meanwhile."""
        if self._socks:
            return True
        try:
            self._socks = _bind_all(self.port)
        except OSError:
            return False
        return True

    def release(self) -> None:
        self.handoff()
        if self._lock_fd is not None:
            try:
                os.unlink(self.lock_path)
            except FileNotFoundError:
                pass
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> PortReservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _bind_all(port: int) -> list[socket.socket]:
    """Bind `port` on the IPv4 wildcard, and on the IPv6 one where IPv6 exists: TCPStore listens
    dual-stack, so a port taken on either family would make rank 0 fail."""
    socks = []
    s4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # SO_REUSEADDR: a restart re-reserves the port while the last gang's connections to it sit in
    # TIME_WAIT. It does not let anyone bind over a listener, nor does the kernel autobind a
    # connect() to a port that is bound.
    s4.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s4.bind(("0.0.0.0", port))
    except OSError:
        s4.close()
        raise
    socks.append(s4)
    if socket.has_ipv6:
        try:
            s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        except OSError:
            return socks  # no IPv6 in this kernel or namespace
        try:
            s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s6.bind(("::", socks[0].getsockname()[1]))
            socks.append(s6)
        except OSError as exc:
            s6.close()
            if exc.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                for s in socks:
                    s.close()
                raise
    return socks


def _try_lock(path: Path, owner: str) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:
        same = os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        same = False
    if not same:  # unlinked by its previous owner while we opened it
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{owner} pid={os.getpid()}\n".encode())
    return fd


def reserve_port(root: SysRoot, owner: str, port: int = 0) -> PortReservation:
    """A free TCP port held by a bound socket and a lock file. `port` != 0 reserves that port
    (an operator's choice), failing if it is in use."""
    d = Path(root.path(PORTS_DIR))
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o755)
    except OSError as exc:
        raise AiosError(f"{d}: cannot create the port lock directory ({exc.strerror})") from None
    for _ in range(ATTEMPTS if port == 0 else 1):
        try:
            socks = _bind_all(port)
        except OSError as exc:
            if port:
                raise AiosError(f"port {port} is in use ({exc.strerror}); leave it out to get a free one") from None
            raise AiosError(f"cannot bind a TCP port: {exc.strerror}") from None
        got = socks[0].getsockname()[1]
        path = d / f"{got}.lock"
        fd = _try_lock(path, owner)
        if fd is not None:
            return PortReservation(got, path, fd, socks)
        for s in socks:
            s.close()
        if port:
            raise AiosError(f"port {port} is reserved by another aios-host job ({path})")
    raise AiosError(f"no free port after {ATTEMPTS} tries: every port the kernel offered was "
                    f"locked in {d}")
