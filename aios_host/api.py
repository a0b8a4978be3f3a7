"""The daemon's unix-socket API: one JSON request per connection, one JSON reply.

    request:  {"cmd": "status" | "snapshot" | "plan" | "explain" | "jobs" | "energy"
                      | "policy.apply" (+ "path") | "policy.rollback" | "reload"}\\n
    reply:    {"ok": true, ...} | {"ok": false, "error": "one line"}\\n

Who may ask (SO_PEERCRED, the kernel's word for the peer's uid/gid, not anything the client says):
root for anything that changes the host; root or a member of the `aios` group for reading;
everyone else is refused. Requests are read with a deadline and a size cap on their own threads:
a malformed, oversized or slow client gets an error or is dropped and never reaches the loop.
Reads are answered from the latest DaemonView; changes are queued to the loop (Daemon.request).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aios_host import osthread
from aios_host.errors import AiosError
from aios_host.log import get_logger

SOCKET_PATH = "/run/aios-host/api.sock"
READ_GROUP = "aios"
MAX_REQUEST_BYTES = 64 * 1024
REQUEST_TIMEOUT_S = 2.0
READ_CMDS = frozenset(("status", "snapshot", "plan", "explain", "jobs", "energy"))
WRITE_CMDS = frozenset(("policy.apply", "policy.rollback", "reload"))

log = get_logger("aios_host.api")


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


def peer_of(sock: socket.socket) -> Peer:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


def _in_group(peer: Peer, group: str) -> bool:
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return False
    if peer.gid == gid:
        return True
    try:
        name = pwd.getpwuid(peer.uid).pw_name
    except KeyError:
        return False
    return gid in os.getgrouplist(name, peer.gid)


def authorize(peer: Peer, cmd: str, group: str = READ_GROUP) -> str | None:
    """None when allowed, else why not (one line)."""
    if cmd in WRITE_CMDS:
        return None if peer.uid == 0 else f"{cmd}: changes the host; root only (uid {peer.uid})"
    if cmd in READ_CMDS:
        if peer.uid == 0 or _in_group(peer, group):
            return None
        return f"{cmd}: root or the '{group}' group only (uid {peer.uid})"
    return f"unknown command {cmd!r}; commands: {', '.join(sorted(READ_CMDS | WRITE_CMDS))}"


def parse_request(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_REQUEST_BYTES:
        raise AiosError(f"request larger than {MAX_REQUEST_BYTES} bytes")
    try:
        req = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AiosError(f"malformed request: not JSON ({str(exc).splitlines()[0]})") from None
    except RecursionError:  # "[[[[...": json recurses per level (found by the API fuzzer)
        raise AiosError("malformed request: nested too deeply") from None
    if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
        raise AiosError('malformed request: want a JSON object with a "cmd" string')
    return req


Handler = Callable[[dict[str, Any], Peer], dict[str, Any]]


class _Conn(socketserver.BaseRequestHandler):
    server: ApiServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(REQUEST_TIMEOUT_S)
        try:
            reply = self._answer(sock)
        except (TimeoutError, OSError):
            return  # a client that never finished its request: dropped
        try:
            sock.sendall(json.dumps(reply, default=str).encode() + b"\n")
        except OSError:
            pass

    def _answer(self, sock: socket.socket) -> dict[str, Any]:
        peer = peer_of(sock)
        buf = b""
        while b"\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
            if len(buf) > MAX_REQUEST_BYTES:
                return {"ok": False, "error": f"request larger than {MAX_REQUEST_BYTES} bytes"}
        try:
            req = parse_request(buf.split(b"\n", 1)[0])
        except AiosError as exc:
            return {"ok": False, "error": str(exc)}
        why = authorize(peer, req["cmd"], self.server.group)
        if why is not None:
            log.warning("api_refused", cmd=req["cmd"], uid=peer.uid, gid=peer.gid, reason=why)
            return {"ok": False, "error": why}
        try:
            return self.server.handler(req, peer)
        except AiosError as exc:
            return {"ok": False, "error": str(exc)}


class ApiServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, path: str, handler: Handler, group: str = READ_GROUP) -> None:
        self.handler = handler
        self.group = group
        self.path = path
        try:
            os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
            if os.path.exists(path):
                _refuse_if_live(path)
                os.unlink(path)
            super().__init__(path, _Conn)
        except PermissionError:
            # A daemon started by a non-root user runs observe-only; only the default socket's
            # directory (/run/aios-host) is root's.
            raise AiosError(f"{path}: permission denied (needs root, or a --socket in a directory "
                            "this user may write)") from None
        except OSError as exc:
            raise AiosError(f"{path}: cannot serve the API here ({os.strerror(exc.errno or 0)})") from None
        # The socket is the front door; SO_PEERCRED decides who gets in. 0666 lets any local
        # user connect and be refused with a reason rather than EACCES with none.
        os.chmod(path, 0o666)
        self._thread = threading.Thread(target=osthread.named("aios-api", self.serve_forever), name="api", daemon=True)

    def start(self) -> ApiServer:
        self._thread.start()
        return self

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        osthread.set_name("aios-api-req")  # each connection's own thread (ThreadingMixIn)
        super().process_request_thread(request, client_address)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _refuse_if_live(path: str) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(path)
    except OSError:
        return  # stale: left by a daemon that died
    finally:
        s.close()
    raise AiosError(f"{path}: another aios-host daemon is answering there; stop it first")


class NotRunning(AiosError):
    exit_code = 3  # as `systemctl status` of a unit that is not running


def call(request: dict[str, Any], path: str = SOCKET_PATH, timeout_s: float = 15.0) -> dict[str, Any]:
    """Ask the daemon; NotRunning when nothing answers at `path`."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout_s)
    try:
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NotRunning(f"{path}: the aios-host daemon is not running ({os.strerror(exc.errno or 0)})") from None
        except PermissionError:
            raise AiosError(f"{path}: permission denied (needs root)") from None
        s.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
    except TimeoutError:
        raise AiosError(f"{path}: the daemon did not answer within {timeout_s:g} s") from None
    finally:
        s.close()
    try:
        reply = json.loads(buf)
    except ValueError:
        raise AiosError(f"{path}: the daemon's reply is not JSON") from None
    return reply
