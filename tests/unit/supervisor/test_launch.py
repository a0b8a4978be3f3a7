"""Pure parts of the launchers: systemd-run command lines, unit and slice names."""

from __future__ import annotations

import fnmatch
import os
import re
from typing import Any

import pytest
from dbus_fast import Variant
from hypothesis import given
from hypothesis import strategies as st

from aios_host.errors import AiosError
from aios_host.kernel import systemd
from aios_host.kernel.root import SysRoot
from aios_host.supervisor import launch
from aios_host.supervisor.launch import (
    LaunchRequest,
    SystemdLauncher,
    jobs_slice,
    supervisor_scope_name,
    systemd_run_argv,
    unit_escape,
    unit_name,
)
from aios_host.supervisor.limits import RankLimits
from aios_host.supervisor.spec import JOB_NAME_RE


def test_names() -> None:
    assert jobs_slice("training") == "aios-training-jobs.slice"
    assert jobs_slice("low-lat") == "aios-low\\x2dlat-jobs.slice"  # '-' would add a slice level
    assert unit_escape("a.b_c:d") == "a.b_c:d"
    assert unit_name("train", 2, 3) == "aios-job-train-g2-r3.service"


def test_systemd_run_argv() -> None:
    req = LaunchRequest(rank=3, local_rank=1, argv=["/py", "-u", "t.py"],
                        env={"RANK": "3", "PATH": "/bin", "INVOCATION_ID": "x", "BAD": "a\nb"},
                        cwd="/srv", cpus=(2, 3), limits=RankLimits(cpu_weight=200, cpu_quota_percent=50.0,
                                                                  memory_max_bytes=1 << 30),
                        restart=1)
    argv = systemd_run_argv("aios-job-j-g1-r3.service", "aios-training-jobs.slice", req, "j", 10.0)
    assert argv[0] == "systemd-run" and "--service-type=exec" in argv
    assert "--unit=aios-job-j-g1-r3.service" in argv and "--slice=aios-training-jobs.slice" in argv
    for prop in ("LogExtraFields=JOB=j", "LogExtraFields=RANK=3", "LogExtraFields=RESTART=1",
                 "CPUWeight=200", "CPUQuota=50%", f"MemoryMax={1 << 30}", "AllowedCPUs=2,3",
                 "RemainAfterExit=yes", "KillMode=control-group", "TimeoutStopSec=10s"):
        assert f"--property={prop}" in argv, prop
    assert "--setenv=RANK=3" in argv and "--setenv=PATH=/bin" in argv
    assert not [a for a in argv if "INVOCATION_ID" in a or "BAD=" in a]
    assert "--working-directory=/srv" in argv
    assert argv[argv.index("--") + 1:] == ["/py", "-u", "t.py"]


# -- ranks bound to their supervisor's scope -------------------------------------------------------


UNIT_CHARS = re.compile(r"^[A-Za-z0-9:_.\\-]+$")  # systemd's VALID_CHARS, plus '\' of escapes
KEYS = st.tuples(st.from_regex(JOB_NAME_RE, fullmatch=True),
                 st.one_of(st.just(""), st.integers(0, 1023).map(lambda k: f".node{k}"))).map("".join)


def _req(rank: int = 0) -> LaunchRequest:
    return LaunchRequest(rank=rank, local_rank=rank, argv=["/bin/true"], env={}, cwd="/", cpus=(), limits=RankLimits(),
                         restart=0)


@given(key=KEYS, pid=st.integers(1, 2**22), other=st.integers(1, 2**22))
def test_supervisor_scope_names(key: str, pid: int, other: int) -> None:
    name = supervisor_scope_name(key, pid)
    assert UNIT_CHARS.match(name) and name.startswith("aios-jobsup-") and name.endswith(f"-{pid}.scope")
    assert "\\" not in name  # systemd-run --property= would unescape it into another name (the VM)
    assert not fnmatch.fnmatch(name, "aios-job-*")  # `systemctl list-units aios-job-*` lists ranks only
    assert (supervisor_scope_name(key, other) == name) == (other == pid)  # one scope per supervisor


@given(key=KEYS, scope=st.one_of(st.none(), st.builds(supervisor_scope_name, KEYS, st.integers(1, 2**22))))
def test_rank_units_bind_to_the_supervisor_scope(key: str, scope: str | None) -> None:
    argv = systemd_run_argv(unit_name(key, 0, 0), "aios-training-jobs.slice", _req(), key, 10.0, scope)
    props = argv[:argv.index("--")]
    binds = [a for a in props if a.startswith(("--property=BindsTo=", "--property=After="))]
    if scope is None:
        assert binds == []
    else:
        assert binds == [f"--property=BindsTo={scope}", f"--property=After={scope}"]


@given(pids=st.lists(st.integers(1, 2**32 - 1), min_size=1, max_size=4), desc=st.text(max_size=40))
def test_scope_properties_have_the_manager_types(pids: list[int], desc: str) -> None:
    props = systemd.process_scope_properties(pids, desc, "system.slice")
    assert dict((n, v) for n, _, v in props) == {"Description": desc, "Slice": "system.slice", "PIDs": pids,
                                                 "CollectMode": "inactive-or-failed"}
    for name, sig, value in props:
        Variant(sig, value)  # raises when the value does not fit the signature the manager reads
        assert sig == {"PIDs": "au"}.get(name, "s")


class _FakeSystemd:
    """The launcher's systemd calls, recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cgroup: str, fail: bool = False) -> None:
        self.scopes: list[tuple[str, list[int], str]] = []
        self.argvs: list[list[str]] = []
        self.fail = fail
        monkeypatch.setattr(launch.shutil, "which", lambda _: "/usr/bin/systemd-run")
        monkeypatch.setattr(launch, "own_cgroup", lambda: cgroup)
        monkeypatch.setattr(systemd, "SystemdBus", _NullBus)
        monkeypatch.setattr(systemd, "start_process_scope", self.start_scope)
        monkeypatch.setattr(systemd, "run_transient", self.run_transient)
        monkeypatch.setattr(systemd, "reset_failed", lambda units: None)
        monkeypatch.setattr(systemd, "show", lambda units, props: [{"Id": u, "MainPID": "0"} for u in units])

    def start_scope(self, bus: Any, unit: str, pids: list[int], description: str, slice_: str) -> str:
        if self.fail:
            raise systemd.SystemdError(f"{unit}: StartTransientUnit failed: org.freedesktop.DBus.Error.AccessDenied")
        self.scopes.append((unit, list(pids), slice_))
        return f"system.slice/{unit}"

    def run_transient(self, argvs: list[list[str]]) -> list[str | None]:
        self.argvs += argvs
        return [None] * len(argvs)


class _NullBus:
    def __enter__(self) -> _NullBus:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def test_launcher_moves_the_supervisor_into_its_scope_and_binds_every_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeSystemd(monkeypatch, "user.slice/user-0.slice/session-4.scope")
    sl = SystemdLauncher(None, "train", "training", 2.0)  # type: ignore[arg-type]
    where = sl.prepare(2)
    scope = supervisor_scope_name("train", os.getpid())
    assert where["scope"] == scope and fake.scopes == [(scope, [os.getpid()], "system.slice")]
    sl.start([_req(0), _req(1)])
    assert len(fake.argvs) == 2
    for argv in fake.argvs:
        assert f"--property=BindsTo={scope}" in argv and f"--property=After={scope}" in argv


def test_launcher_reuses_its_own_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    mine = supervisor_scope_name("other", os.getpid())
    fake = _FakeSystemd(monkeypatch, f"system.slice/{mine}")
    assert SystemdLauncher(None, "train", "training", 2.0).prepare(1)["scope"] == mine  # type: ignore[arg-type]
    assert fake.scopes == []
    # a scope of the same name pattern that holds another pid is not ours
    fake = _FakeSystemd(monkeypatch, f"system.slice/{supervisor_scope_name('train', os.getpid() + 1)}")
    SystemdLauncher(None, "train", "training", 2.0).prepare(1)  # type: ignore[arg-type]
    assert [s[0] for s in fake.scopes] == [supervisor_scope_name("train", os.getpid())]


def test_launcher_refuses_unbound_ranks_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeSystemd(monkeypatch, "", fail=True)
    with pytest.raises(AiosError) as err:
        SystemdLauncher(None, "train", "training", 2.0).prepare(1)  # type: ignore[arg-type]
    msg = str(err.value)
    assert "\n" not in msg and "AccessDenied" in msg and msg.endswith("(use --launcher cgroup where the system "
                                                                        "bus is not reachable)")
    assert fake.argvs == []
    # a name whose escaped unit names would be over systemd's 255 characters: refused before any call
    fake = _FakeSystemd(monkeypatch, "")
    with pytest.raises(AiosError, match=r"unit names would be \d+ characters, over systemd's 255"):
        SystemdLauncher(None, "a" + "-" * 62, "training", 2.0).prepare(1)  # type: ignore[arg-type]
    assert fake.scopes == []


def test_own_cgroup_is_read_from_proc() -> None:
    got = launch.own_cgroup()
    want = SysRoot("/").read_text("/proc/self/cgroup")
    assert ("0::/" + got) in want or (got == "" and "0::/\n" in want)
