"""`job run` with a bad spec: one line, exit 2, nothing started (no state, no cgroup)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aios_host.cli import job as job_cli
from aios_host.cli.job import build_parser, build_spec, main
from aios_host.kernel.root import SysRoot
from aios_host.supervisor.state import DEAD, JobState, JobStore, RankState


def test_bad_spec_one_line_nothing_started(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "job.toml"
    spec.write_text('name = "a"\ncommand = ["x"]\nnprocs = 4\n')
    assert main(["job", "run", str(spec), "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"aios-host: error: {spec}: unknown key 'nprocs'; did you mean 'nproc'?"
    assert not (tmp_path / "run").exists() and not (tmp_path / "sys").exists()


def test_bad_flags_name_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["job", "run", "--root", str(tmp_path), "--nproc", "0", "--", "train.py"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aios-host: error: command line: --nproc: '0': input should be greater than or equal to 1")
    assert "fix: nproc = 4" in err
    assert main(["job", "run", "--root", str(tmp_path), "--env", "NOEQ", "--", "x"]) == 1
    assert "--env 'NOEQ': expected NAME=VALUE" in capsys.readouterr().err


def test_spec_from_flags() -> None:
    args = build_parser().parse_args(["job", "run", "--nproc", "4", "--max-restarts", "2", "--env", "A=1",
                                      "--", "train.py", "--lr", "0.1"])
    spec, path = build_spec(args)
    assert path is None and spec.name == "train" and spec.nproc == 4 and spec.restart.max_restarts == 2
    assert spec.command == ["train.py", "--lr", "0.1"] and spec.env == {"A": "1"}
    args = build_parser().parse_args(["job", "run", "--name", "m", "--", "-m", "pkg.mod", "--x"])
    spec, _ = build_spec(args)
    assert spec.module == "pkg.mod" and spec.args == ["--x"]


def test_spec_file_with_flag_overrides(tmp_path: Path) -> None:
    spec_file = tmp_path / "job.toml"
    spec_file.write_text('name = "a"\nmodule = "m"\nnproc = 2\n[restart]\nmax_restarts = 1\n')
    args = build_parser().parse_args(["job", "run", str(spec_file), "--nproc", "3", "--backoff", "2s"])
    spec, path = build_spec(args)
    assert path == str(spec_file) and spec.nproc == 3 and spec.restart.backoff == 2.0
    assert spec.restart.max_restarts == 1


def test_status_of_unknown_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["job", "status", "nope", "--root", str(tmp_path)]) == 1
    assert "no job 'nope' on this host" in capsys.readouterr().err
    assert main(["job", "ls", "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "no jobs"


# -- hostile input ------------------------------------------------------------------------------


REPO = Path(__file__).resolve().parents[3]
SPEC_FLAGS = ("--stop-grace", "--heartbeat-timeout", "--backoff", "--backoff-max", "--jitter",
              "--straggler-factor", "--nproc", "--rdzv-port", "--node-rank", "--max-restarts")
BAD_NUMBERS = ("inf", "-inf", "nan", "NaN", "Infinity", "1e309", "-1", "99999999999999999999h",
               "1" + "0" * 400, "0x10", "")


def _main(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def _one_line_error(err: str) -> str:
    assert err.startswith("aios-host: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


@settings(max_examples=150, deadline=None)
@given(flag=st.sampled_from(SPEC_FLAGS), value=st.sampled_from(BAD_NUMBERS))
def test_bad_number_flags_are_one_line_naming_the_flag(flag: str, value: str) -> None:
    with tempfile.TemporaryDirectory() as root:
        rc, _, err = _main("job", "run", "--root", root, f"{flag}={value}", "--", "/bin/true")
        assert rc == 2, err
        assert _one_line_error(err).startswith(f"aios-host: error: command line: {flag}: "), err
        assert os.listdir(root) == []  # nothing started, nothing written


@given(flag=st.sampled_from(("--timeout",)), value=st.sampled_from(BAD_NUMBERS))
def test_stop_timeout_is_checked_first(flag: str, value: str) -> None:
    with tempfile.TemporaryDirectory() as root:
        rc, _, err = _main("job", "stop", "nojob", "--root", root, f"{flag}={value}")
    assert rc == 2 and _one_line_error(err).startswith(f"aios-host: error: {flag} {value!r}: "), err


@given(flag=st.sampled_from(("--rank", "--restart")), value=st.sampled_from(("-1", "x", "1.5", "inf", "1e3")))
def test_logs_rank_and_restart_are_whole_numbers(flag: str, value: str) -> None:
    with tempfile.TemporaryDirectory() as root:
        rc, _, err = _main("job", "logs", "nojob", "--root", root, f"{flag}={value}")
    assert rc == 2 and _one_line_error(err).startswith(f"aios-host: error: {flag} {value!r}: "), err


# -- concurrency: two `job run --detach` of one name -------------------------------------------


class _FakeChild:
    """Stands in for the detached supervisor: inherits the lock fd (a dup shares the flock, as
    exec does), reads the spec its --spec-json names and adopts the lock, as cmd_run does."""

    made: list[_FakeChild] = []

    def __init__(self, argv: list[str], *, pass_fds: tuple[int, ...], **_: object) -> None:
        fd = int(argv[argv.index("--lock-fd") + 1])
        assert fd in pass_fds
        self.lock = os.dup(fd)
        args = build_parser().parse_args(argv[argv.index("job"):])
        self.spec, _ = build_spec(args)
        store = JobStore(SysRoot(args.root))
        store.adopt_lock(self.spec.name, self.lock)
        self.pid = os.getpid()
        store.save(JobState(key=self.spec.name, name=self.spec.name, node_rank=0, nnodes=1, nproc=1, world_size=1,
                            supervisor_pid=self.pid, launcher="cgroup", backend="gloo", cls="training",
                            status="running", command=list(self.spec.command)))
        _FakeChild.made.append(self)

    def poll(self) -> int | None:
        return None


def test_concurrent_detach_one_wins_the_other_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(job_cli.subprocess, "Popen", _FakeChild)
    root = str(tmp_path)
    for round_ in range(25):
        name = f"race{round_}"
        barrier = threading.Barrier(2)
        rcs: dict[int, int] = {}
        errs = io.StringIO()

        def run(i: int, name: str = name, barrier: threading.Barrier = barrier, rcs: dict[int, int] = rcs,
                errs: io.StringIO = errs) -> None:
            args = build_parser().parse_args(["job", "run", "--detach", "--root", root, "--name", name,
                                              "--", "/bin/echo", f"invocation-{i}"])
            barrier.wait()
            try:
                rcs[i] = job_cli.cmd_run(args)
            except job_cli.AiosError as exc:
                errs.write(f"{exc}\n")
                rcs[i] = exc.exit_code

        _FakeChild.made.clear()
        threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(rcs.values()) == [0, 1], (rcs, errs.getvalue())
        winner = next(i for i, rc in rcs.items() if rc == 0)
        (child,) = _FakeChild.made
        assert child.spec.command == ["/bin/echo", f"invocation-{winner}"]  # its own spec, never the other's
        assert errs.getvalue().startswith(f"job {name} is already running") and errs.getvalue().count("\n") == 1
        store = JobStore(SysRoot(root))
        assert not list(store.dir.glob(f".{name}.spec.*"))  # the loser wrote no spec; the child removed its own
        assert store.holder_pid(name) == os.getpid()  # the child's copy holds the lock, not the parent's
        os.close(child.lock)
        assert not store.is_locked(name)


@pytest.mark.parametrize(("status", "rc"), [("running", 0), ("failed", 127)])
def test_detach_exit_status_says_whether_the_job_started(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str], status: str,
                                                         rc: int) -> None:
    """`job run --detach` returns once the supervisor has left "starting": 0 while the job runs,
    the job's own exit status with one line when it failed as it started (a rank command not found)."""
    from aios_host.supervisor.causes import Cause, CauseKind

    class Child(_FakeChild):
        def __init__(self, argv: list[str], **kw: object) -> None:
            super().__init__(argv, **kw)  # type: ignore[arg-type]
            store = JobStore(SysRoot(str(tmp_path)))
            st = store.load(self.spec.name)
            st.status = status
            if status == "failed":
                cause = Cause(CauseKind.LAUNCH, rank=0, code=127, detail="command not found")
                st.cause, st.exit_code = cause.to_dict(), cause.exit_code
            store.save(st)

    monkeypatch.setattr(job_cli.subprocess, "Popen", Child)
    _FakeChild.made.clear()
    got = main(["job", "run", "--detach", "--root", str(tmp_path), "--name", "d", "--", "/no/such/cmd"])
    out, err = capsys.readouterr()
    assert got == rc
    if rc:
        assert not out and err.count("\n") == 1 and "job d: failed as it started (rank 0 could not be started" in err
    else:
        assert not err and out.startswith("job d: supervisor pid") and "(running)" in out
    os.close(_FakeChild.made[0].lock)


# -- liveness ----------------------------------------------------------------------------------


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_status_of_a_dead_supervisor(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = str(tmp_path)
    store = JobStore(SysRoot(root))
    store.save(JobState(key="j", name="j", node_rank=0, nnodes=1, nproc=2, world_size=2, supervisor_pid=_dead_pid(),
                        launcher="cgroup", backend="gloo", cls="training", status="running",
                        ranks=[RankState(0, 0, pid=_dead_pid(), status="running"),
                               RankState(1, 1, pid=os.getpid(), status="running")]))
    assert main(["job", "status", "j", "--root", root]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"job j: {DEAD},") and " gone " in out and "running (orphan)" in out
    assert main(["job", "ls", "--root", root]) == 0
    assert DEAD in capsys.readouterr().out
    assert main(["job", "stop", "j", "--root", root]) == 0
    assert capsys.readouterr().out.strip() == "job j: stopped (supervisor was dead)"
    assert store.load("j").status == "stopped"


_HOLDER = """
import signal, sys, time
from aios_host.kernel.root import SysRoot
from aios_host.supervisor.state import JobStore
if sys.argv[2] == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
fd = JobStore(SysRoot(sys.argv[1])).lock("j")
print("locked", flush=True)
time.sleep(60)
"""


def _holder(root: str, mode: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", _HOLDER, root, mode], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.stdout is not None and p.stdout.readline() == "locked\n"
    return p


def test_stop_signals_the_lock_holder_not_the_state_pid(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = str(tmp_path)
    store = JobStore(SysRoot(root))
    bystander = subprocess.Popen(["sleep", "60"])  # the pid a stale state file names
    holder = _holder(root, "default")
    try:
        store.save(JobState(key="j", name="j", node_rank=0, nnodes=1, nproc=1, world_size=1,
                            supervisor_pid=bystander.pid, launcher="cgroup", backend="gloo", cls="training",
                            status="running", stop_grace=0.1))
        assert main(["job", "stop", "j", "--root", root, "--timeout", "20s"]) == 0
        assert holder.wait(5) == -signal.SIGTERM
        assert bystander.poll() is None
    finally:
        for p in (holder, bystander):
            p.kill()
            p.wait()
    capsys.readouterr()
    holder = _holder(root, "ignore")
    try:
        t0 = time.monotonic()
        assert main(["job", "stop", "j", "--root", root, "--timeout", "0.2"]) == 1
        assert time.monotonic() - t0 < 5
        err = capsys.readouterr().err
        assert err == (f"aios-host: error: job j: supervisor pid {holder.pid} did not stop within 0.2s "
                       "after the 0.1s grace\n")
    finally:
        holder.kill()
        holder.wait()


# -- non-root ------------------------------------------------------------------------------------


def _as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    """The job CLI as uid 65534."""
    return subprocess.run([sys.executable, "-m", "aios_host.cli.job", *argv], capture_output=True, text=True,
                          timeout=60, check=False, cwd="/", user=65534, group=65534, extra_groups=[],
                          env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"})


@pytest.fixture
def open_root() -> Iterator[str]:
    """A --root that uid 65534 can reach (pytest's tmp_path is under a 0700 directory)."""
    root = tempfile.mkdtemp()
    os.chmod(root, 0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the job files are root's, the CLI runs as uid 65534")
def test_non_root_reads_and_gets_one_line_for_writes(open_root: str) -> None:
    root = open_root
    old_umask = os.umask(0o077)  # a hardened root umask must not hide job states from other users
    try:
        store = JobStore(SysRoot(root))
        fd = store.lock("j")
        store.save(JobState(key="j", name="j", node_rank=0, nnodes=1, nproc=1, world_size=1,
                            supervisor_pid=os.getpid(), launcher="cgroup", backend="gloo", cls="training",
                            status="running", ranks=[RankState(0, 0, pid=os.getpid(), status="running")]))
    finally:
        os.umask(old_umask)
    log = store.rank_log("j", 0)
    log.parent.mkdir(parents=True, mode=0o755)
    log.write_text("secret\n")
    os.chmod(log, 0o600)
    try:
        for argv in (["job", "ls"], ["job", "status", "j"]):
            r = _as_nobody(*argv, "--root", root)
            assert r.returncode == 0 and "running" in r.stdout and not r.stderr, (argv, r.stdout, r.stderr)
        want = {
            ("job", "logs", "j"): "cannot read (permission denied)",
            ("job", "stop", "j"): "aios-host job stop needs root",
            ("job", "run", "--name", "k", "--", "/bin/true"): "k.lock: open failed: EACCES",
            ("job", "run", "--detach", "--name", "k", "--", "/bin/true"): "k.lock: open failed: EACCES",
        }
        for argv, text in want.items():
            r = _as_nobody(*argv[:2], "--root", root, *argv[2:])
            line = _one_line_error(r.stderr)
            assert r.returncode == 1 and text in line and ("root" in line or argv[1] == "logs"), (argv, r.stderr)
        assert not store.state_path("k").exists() and store.is_locked("j")
    finally:
        os.close(fd)
