"""The unix-socket API: real sockets, real SO_PEERCRED; who is refused; bad requests never stall it."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from aios_host import api


def serve(tmp_path, handler=None):
    path = str(tmp_path / "api.sock")
    seen = []

    def default(req, peer):
        seen.append((req, peer))
        return {"ok": True, "echo": req["cmd"], "uid": peer.uid}

    return api.ApiServer(path, handler or default).start(), path, seen


def test_a_request_is_answered_with_the_peers_credentials(tmp_path):
    srv, path, seen = serve(tmp_path)
    try:
        reply = api.call({"cmd": "status"}, path)
        assert reply == {"ok": True, "echo": "status", "uid": os.getuid()}
        assert seen[0][1].pid == os.getpid()
    finally:
        srv.stop()


@pytest.mark.parametrize("raw, error", [
    (b"not json\n", "not JSON"),
    (b"[1, 2]\n", "JSON object"),
    (b'{"cmd": 5}\n', "JSON object"),
    (b'{"cmd": "rm -rf"}\n', "unknown command"),
    (b"\xff\xfe\n", "not JSON"),
])
def test_malformed_requests_get_an_error_reply(tmp_path, raw, error):
    srv, path, seen = serve(tmp_path)
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        s.sendall(raw)
        reply = json.loads(s.makefile().readline())
        assert reply["ok"] is False and error in reply["error"]
        assert not seen
    finally:
        srv.stop()


def test_oversized_and_slow_clients_do_not_block_others(tmp_path):
    srv, path, _ = serve(tmp_path)
    try:
        slow = socket.socket(socket.AF_UNIX)
        slow.connect(path)
        slow.sendall(b'{"cmd": ')  # and never finishes
        big = socket.socket(socket.AF_UNIX)
        big.connect(path)
        big.sendall(b"x" * (api.MAX_REQUEST_BYTES + 10))
        assert "larger than" in json.loads(big.makefile().readline())["error"]
        t0 = time.monotonic()
        assert api.call({"cmd": "status"}, path)["ok"]
        assert time.monotonic() - t0 < 1.0
        slow.settimeout(api.REQUEST_TIMEOUT_S + 2)
        assert slow.recv(10) == b""  # dropped after the deadline
    finally:
        srv.stop()


def test_who_may_do_what():
    root, nobody = api.Peer(1, 0, 0), api.Peer(1, 65534, 65534)
    assert api.authorize(root, "policy.apply") is None
    assert api.authorize(root, "status") is None
    assert "root only" in api.authorize(nobody, "policy.rollback")
    assert "group only" in api.authorize(nobody, "status", group="aios-no-such-group")
    import grp
    nogroup = grp.getgrgid(65534).gr_name  # nobody's own group stands in for `aios`
    assert api.authorize(nobody, "status", group=nogroup) is None
    assert "root only" in api.authorize(nobody, "reload", group=nogroup)
    assert "unknown command" in api.authorize(root, "shutdown")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another uid")
def test_a_non_root_non_group_peer_is_refused_by_the_kernels_word():
    import shutil
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp(prefix="aios-api-"))  # pytest's tmp_path is root-only: nobody can't reach it
    os.chmod(d, 0o755)
    srv, path, seen = serve(d)
    try:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child becomes nobody and asks for a change, then for a read
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                try:
                    out = [api.call({"cmd": "policy.rollback"}, path), api.call({"cmd": "status"}, path)]
                except Exception as exc:  # noqa: BLE001 - reported to the parent
                    out = [{"child error": str(exc)}] * 2
                os.write(w, json.dumps(out).encode())
            finally:
                os._exit(0)
        os.close(w)
        os.waitpid(pid, 0)
        change, read = json.loads(os.read(r, 65536))
        assert change["ok"] is False and "root only" in change["error"]
        assert read["ok"] is False and "group only" in read["error"]
        assert not seen  # the handler (the loop) never saw them
    finally:
        srv.stop()
        shutil.rmtree(d)


def test_not_running_is_exit_code_3(tmp_path):
    with pytest.raises(api.NotRunning) as exc:
        api.call({"cmd": "status"}, str(tmp_path / "none.sock"))
    assert exc.value.exit_code == 3


def test_a_second_daemon_does_not_steal_a_live_socket(tmp_path):
    srv, path, _ = serve(tmp_path)
    try:
        with pytest.raises(api.AiosError, match="another aios-host daemon"):
            api.ApiServer(path, lambda r, p: {})
    finally:
        srv.stop()
