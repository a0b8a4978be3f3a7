"""Every aios-host command except the job commands, run as the unprivileged user nobody on this host:
it works read-only, or it says in one line that it needs root. Never a traceback.

Marked root: switching to nobody needs root. Skips (with the reason) where nobody cannot run this
checkout's interpreter.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
POLICY = str(REPO / "policies" / "default.toml")
NOBODY = 65534


def _as_nobody_popen(args: list[str]) -> subprocess.Popen[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.Popen([sys.executable, "-m", "aios_host", *args], cwd=REPO, env=env, user=NOBODY,
                            group=NOBODY, extra_groups=[], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def as_nobody(args: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    p = _as_nobody_popen(args)
    out, err = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (runs each command as the user nobody)"
    r = as_nobody(["--version"])
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        return f"nobody cannot run {sys.executable} on {REPO}: {last}"
    return None


@pytest.fixture(scope="module", autouse=True)
def _nobody_can_run():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)


# Read-only commands and the exit codes they may end with on any host (doctor: 1 without a cgroup2
# mount; status: 3 when no daemon answers; policy check: 1 when the policy does not fit this host).
READ_ONLY = [
    (["--help"], {0}),
    (["doctor"], {0, 1}),
    (["doctor", "--json"], {0, 1}),
    (["snapshot"], {0}),
    (["policy", "check", POLICY], {0, 1}),
    (["policy", "diff", POLICY], {0}),
    (["policy", "explain", POLICY], {0}),
    (["policy", "apply", "--dry-run", POLICY], {0}),
    (["policy", "schema"], {0}),
    (["probe", "list"], {0}),
]

# Commands that change the host or attach BPF programs. The daemon logs events on stderr: only its
# error line is asked for here.
NEEDS_ROOT = [
    ["policy", "apply", POLICY],
    ["policy", "rollback"],
    ["probe", "run", "--duration", "1"],
    ["probe", "stats", "--duration", "1"],
    ["--log-level", "error", "daemon", "--policy", POLICY, "--no-probes", "--metrics-port", "0"],
]


def _one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aios-host: error: "), r.stderr
    return lines[0]


@pytest.mark.parametrize(("argv", "codes"), READ_ONLY, ids=[" ".join(a) for a, _ in READ_ONLY])
def test_read_only_commands_work_as_nobody(argv, codes):
    r = as_nobody(argv)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode in codes, (r.returncode, r.stderr)
    assert r.stdout.strip(), "a read-only command prints what it read"
    if r.stderr.strip():
        _one_error_line(r)


def test_status_as_nobody_answers_or_needs_root():
    """Where root's /run/aios-host is 0700 (the journal made it), nobody cannot reach the socket."""
    r = as_nobody(["status"])
    assert "Traceback" not in r.stderr, r.stderr
    if r.returncode == 1:
        assert "permission denied (needs root)" in _one_error_line(r)
    else:
        assert r.returncode in (0, 3) and r.stdout.startswith("aios-host: "), (r.returncode, r.stderr)


@pytest.mark.parametrize("argv", NEEDS_ROOT, ids=" ".join)
def test_commands_that_need_root_say_so_in_one_line(argv):
    r = as_nobody(argv)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode not in (0, None), r.stdout
    line = _one_error_line(r)
    # The systemd-as-PID-1 refusal of `policy apply` comes first on such hosts and names the daemon.
    assert "root" in line or "systemd" in line, line


def test_daemon_as_nobody_on_its_own_socket_observes_and_stops_on_sigterm():
    """With a socket nobody may create, the daemon runs observe-only (it writes nothing) until SIGTERM."""
    # Not pytest's tmp_path: its parents are 0700 root.
    with tempfile.TemporaryDirectory(prefix="aios-nobody-") as d:
        sock_dir = Path(d)
        os.chown(sock_dir, NOBODY, NOBODY)
        p, err = _daemon_until_sigterm(sock_dir)
    assert "Traceback" not in err, err
    assert p.returncode == 0 and "observe-only" in err, err


def _daemon_until_sigterm(sock_dir: Path) -> tuple[subprocess.Popen[str], str]:
    p = _as_nobody_popen(["--log-level", "info", "daemon", "--policy", POLICY, "--no-probes", "--metrics-port", "0",
                          "--socket", str(sock_dir / "api.sock")])
    try:
        deadline = time.monotonic() + 60
        while not (sock_dir / "api.sock").exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert p.poll() is None, p.communicate()[1]
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    return p, err
