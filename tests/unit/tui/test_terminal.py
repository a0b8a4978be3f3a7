"""`aios-host top` in a real terminal: tmux runs the command (.venv's python -m aios_host top),
send-keys types what a person types, capture-pane reads what they would see. Against a local
snapshot of a fake cgroup tree, and against a live observe-only daemon on this host."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.fixtures import VM, fake_cgroup
from tests.unit.tui.test_sources import count_descendants, fake_tree

REPO = Path(__file__).resolve().parents[3]
# COLUMNS / LINES (the test process's terminal, or none) would fix the app's size at 80x24 whatever
# the tmux window's: the server and the command must not inherit them.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    """One tmux server of our own (-L), so that a person's sessions are never touched."""

    def __init__(self, name: str) -> None:
        self.argv = ["tmux", "-L", f"aios-top-test-{os.getpid()}-{name}"]

    def __call__(self, *args: str, check: bool = True) -> str:
        out = subprocess.run([*self.argv, *args], capture_output=True, text=True, timeout=10, env=CLEAN_ENV)
        if check and out.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def start(self, command: list[str], width: int = 200, height: int = 50) -> None:
        env = {"TERM": "xterm-256color", "TZ": "UTC"}
        self("new-session", "-d", "-s", "top", "-x", str(width), "-y", str(height),
             *(x for k, v in env.items() for x in ("-e", f"{k}={v}")),
             " ".join(_quote(c) for c in command))

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "top")

    def wait_for(self, text: str, timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + timeout_s
        screen = ""
        while time.monotonic() < deadline:
            screen = self("capture-pane", "-p", "-t", "top", check=False)
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not on the screen within {timeout_s} s:\n{screen}")

    def keys(self, *keys: str) -> None:
        self("send-keys", "-t", "top", *keys)

    def alive(self) -> bool:
        out = subprocess.run([*self.argv, "has-session", "-t", "top"], capture_output=True, env=CLEAN_ENV)
        return out.returncode == 0

    def wait_gone(self, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.alive():
            if time.monotonic() > deadline:
                raise AssertionError(f"still running after {timeout_s} s:\n{self.screen()}")
            time.sleep(0.2)

    def kill(self) -> None:
        subprocess.run([*self.argv, "kill-server"], capture_output=True, env=CLEAN_ENV)


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


@pytest.fixture
def tmux(request):
    t = Tmux(request.node.name[:40].replace("[", "-").replace("]", ""))
    yield t
    t.kill()


def top_argv(*args: str) -> list[str]:
    return ["env", "-u", "COLUMNS", "-u", "LINES", f"PYTHONPATH={REPO}", sys.executable, "-m", "aios_host", "top",
            *args]


def table_names(screen: str) -> list[str]:
    """The NAME column of the table on screen, top to bottom."""
    lines = screen.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("NAME"))
    names = []
    for line in lines[start + 1:]:
        if not line.strip() or line.lstrip().startswith(("╭", "┌", "▔", "─")):
            break
        names.append(line.split()[0])
    return names


def test_sort_filter_and_quit_on_a_local_snapshot(tmp_path, tmux):
    root = fake_tree(tmp_path)
    fake_cgroup(root, "/sys/fs/cgroup/zz-big.slice", VM, {"memory.current": str(9 << 30) + "\n"})
    count_descendants(root)
    tmux.start(top_argv("--root", str(root), "--interval", "0.5"))
    screen = tmux.wait_for("source: local snapshot")
    assert "web.slice" in screen and "zz-big.slice" in screen and "gpu no GPU" in screen
    # sort by name (four columns to the left of CPU), then flat: whole paths, A to Z
    tmux.keys("<", "<", "<", "t")
    screen = tmux.wait_for("sort: NAME asc")
    assert "NAME▲" in screen and "flat" in screen
    assert table_names(screen) == ["/", "/web.slice", "/web.slice/app", "/zz-big.slice"]
    # by memory: the 9 GiB cgroup first
    tmux.keys(">", ">", ">", ">", ">")
    screen = tmux.wait_for("sort: MEM desc")
    assert table_names(screen)[0] == "/zz-big.slice" and "9.0G" in screen
    # filter
    tmux.keys("/", "app", "Enter")
    screen = tmux.wait_for("filter: app")
    assert table_names(screen) == ["/web.slice/app"] and "1/4 rows" in screen
    tmux.keys("q")
    tmux.wait_gone()


def test_against_a_live_daemon(tmp_path, tmux):
    sock = tmp_path / "api.sock"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "aios_host", "daemon", "--policy", str(REPO / "policies/default.toml"),
         "--no-probes", "--dry-run", "--metrics-port", "0", "--socket", str(sock)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            if daemon.poll() is not None:
                pytest.fail(f"the daemon exited {daemon.returncode}: {daemon.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the daemon did not open its socket within 60 s")
            time.sleep(0.2)
        tmux.start(top_argv("--socket", str(sock), "--interval", "0.5"))
        screen = tmux.wait_for("source: daemon")
        assert f"pid {daemon.pid}" in screen and "mode dry-run" in screen
        assert "policy " + str(REPO / "policies/default.toml") in screen
        # the default policy's classes, as rows of their own
        assert {"training", "inference", "batch"} <= set(table_names(screen))
        assert "last plan" in screen
        tmux.keys("<", "<", "<")
        screen = tmux.wait_for("sort: NAME asc")
        assert [n for n in table_names(screen) if not n.startswith("/")] == ["batch", "inference", "training"]
        tmux.keys("q")
        tmux.wait_gone()
    finally:
        daemon.terminate()
        daemon.wait(30)
