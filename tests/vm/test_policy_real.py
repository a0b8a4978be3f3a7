"""Apply / rollback of the example policies on a real cgroup v2 tree with live processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aios_host.actuate.apply import ApplyError, apply_plan, rollback
from aios_host.kernel import cgroup_format as fmt
from aios_host.kernel.cgroup import CgroupFs
from aios_host.kernel.inventory import read_inventory
from aios_host.kernel.root import SysRoot
from aios_host.policy.demand import measure
from aios_host.policy.engine import decide
from aios_host.policy.plan import Plan, Write
from aios_host.policy.schema import load_policy
from aios_host.policy.targets import resolve_targets

POLICIES = sorted((Path(__file__).resolve().parents[2] / "policies").glob("*.toml"))
CONTROL = ("cgroup.subtree_control", "cpu.weight", "cpu.max", "cpuset.cpus", "cpuset.mems",
           "memory.min", "memory.low", "memory.high", "memory.max", "io.weight", "io.max")


@pytest.fixture
def root():
    r = SysRoot("/")
    yield r
    rollback(r)  # whatever a test left applied
    fs = CgroupFs(r)
    if fs.exists("aios.slice"):
        for cg in reversed(list(fs.walk("aios.slice"))):
            cg.kill()
            deadline = time.monotonic() + 10
            while cg.populated() and time.monotonic() < deadline:
                time.sleep(0.05)
            fs.remove(cg.rel)


def _spawn(argv, env=None, cgroup_procs=None) -> subprocess.Popen:
    def join() -> None:
        if cgroup_procs:
            with open(cgroup_procs, "w") as f:
                f.write(str(os.getpid()))

    return subprocess.Popen(argv, env=env, preexec_fn=join)


@pytest.fixture
def class_workloads(root):
    """Live processes already in each class cgroup (aios.slice/<class>), a CPU hog in training."""
    fs = CgroupFs(root)
    procs = []
    for cls in ("training", "inference", "batch"):
        cg = fs.create(f"aios.slice/{cls}", exist_ok=True)
        path = root.path(cg.file("cgroup.procs"))
        procs.append(_spawn(["/bin/sleep", "1000"], cgroup_procs=path))
        if cls == "training":
            procs.append(_spawn([sys.executable, "-c", "while True: pass"], cgroup_procs=path))
    yield procs
    for p in procs:
        p.kill()
        p.wait()


@pytest.fixture
def matched_workloads(tmp_path):
    """A 'vllm' process (matched by comm), the rank of a job labelled 'train' as its supervisor
    records it, and a process that only claims the label in its environment: all outside
    aios.slice. The last must stay where it is (match.job reads the record, not environ)."""
    from aios_host.supervisor.state import JobState, JobStore, RankState, pid_start

    vllm = tmp_path / "vllm"
    shutil.copy("/bin/sleep", vllm)
    procs = [
        _spawn([str(vllm), "1000"]),
        _spawn(["/bin/sleep", "1000"]),
        _spawn(["/bin/sleep", "1000"], env={**os.environ, "AIOS_JOB": "train"}),
    ]
    store = JobStore(SysRoot("/"))
    key = f"test-match-{os.getpid()}"
    store.save(JobState(key=key, name=key, node_rank=0, nnodes=1, nproc=1, world_size=1,
                        supervisor_pid=os.getpid(), launcher="cgroup", backend="gloo", cls="training",
                        label="train", status="running",
                        ranks=[RankState(0, 0, pid=procs[1].pid, pid_start=pid_start(procs[1].pid))]))
    yield procs
    store.remove(key)
    for p in procs:
        p.kill()
        p.wait()


def tree_state(fs: CgroupFs) -> dict[str, str | None]:
    """Every control file aios-host may write, in the root and in aios.slice, byte for byte."""
    state: dict[str, str | None] = {}
    cgs = [fs.cgroup("")] + (list(fs.walk("aios.slice")) if fs.exists("aios.slice") else [])
    for cg in cgs:
        for f in CONTROL:
            state[f"{cg}/{f}"] = cg.read_optional(f)
    return state


def _decide(root: SysRoot, path: Path, sample_s: float = 0.3):
    fs = CgroupFs(root)
    policy = load_policy(path)
    targets = resolve_targets(fs, policy)
    return decide(policy, fs, read_inventory(root), targets, measure(fs, targets, sample_s)), fs


def _read_back(fs: CgroupFs, w: Write) -> None:
    text = fs.root.read_text(w.path)
    name = w.path.rsplit("/", 1)[1]
    if w.op == "enable":
        assert w.new[1:] in text.split(), (w.path, text)
    elif w.op == "move":
        assert w.new in text.split(), (w.path, text)
    elif name == "io.max":
        dev = w.new.split()[0]
        assert fmt.parse_io_max(text)[dev] == fmt.parse_io_max(w.new)[dev]
    elif name == "cpu.max":
        assert fmt.parse_cpu_max(text) == fmt.parse_cpu_max(w.new)
    elif name in ("cpuset.cpus", "cpuset.mems"):
        assert fmt.parse_cpu_list(text) == fmt.parse_cpu_list(w.new)
    elif name == "io.weight":
        assert fmt.parse_io_weight(text)["default"] == fmt.parse_io_weight(w.new)["default"]
    else:
        assert text.strip() == w.new, (w.path, text, w.new)


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.stem)
def test_apply_reads_back_and_rollback_is_byte_exact(root, class_workloads, path):
    fs = CgroupFs(root)
    before = tree_state(fs)
    d, fs = _decide(root, path)
    assert not d.plan.unavailable
    rec = apply_plan(root, d.plan, str(path), fs.mount)
    assert rec is not None
    for w in d.plan.writes:
        if w.op != "mkdir":
            _read_back(fs, w)
    assert all(p.poll() is None for p in class_workloads)  # limits in place, workloads alive
    # applying the same policy again, same workloads: nothing to change
    d2, _ = _decide(root, path)
    assert d2.plan.writes == (), d2.plan.writes
    rollback(root)
    assert tree_state(fs) == before


def test_matching_processes_are_moved_in_and_back(root, matched_workloads):
    fs = CgroupFs(root)
    origin = {p.pid: fs.cgroup_of_pid(p.pid).rel for p in matched_workloads}
    d, fs = _decide(root, POLICIES[0])
    assert sum(w.op == "move" for w in d.plan.writes) == 2
    apply_plan(root, d.plan, "default", fs.mount)
    assert fs.cgroup_of_pid(matched_workloads[0].pid).rel == "aios.slice/inference"
    assert fs.cgroup_of_pid(matched_workloads[1].pid).rel == "aios.slice/training"
    assert fs.cgroup_of_pid(matched_workloads[2].pid).rel == origin[matched_workloads[2].pid]
    rollback(root)
    assert {p.pid: fs.cgroup_of_pid(p.pid).rel for p in matched_workloads} == origin
    assert not fs.exists("aios.slice")


def test_cgroup_removed_during_apply_leaves_tree_as_before(root):
    fs = CgroupFs(root)
    fs.create("aios.slice/batch")  # exists at plan time, removed before apply reaches it
    before = tree_state(fs)
    d, fs = _decide(root, POLICIES[0])
    fs.remove("aios.slice/batch")
    with pytest.raises(ApplyError, match="ENOENT"):
        apply_plan(root, d.plan, "default", fs.mount)
    fs.create("aios.slice/batch")
    assert tree_state(fs) == before


def test_value_the_kernel_rejects_leaves_tree_as_before(root):
    fs = CgroupFs(root)
    before = tree_state(fs)
    d, fs = _decide(root, POLICIES[0])
    writes = list(d.plan.writes)
    i = next(i for i, w in enumerate(writes) if w.path.endswith("batch/cpu.max"))
    writes.insert(i + 1, writes[i]._replace(new="0 100000", reason="test: rejected by the kernel"))
    with pytest.raises(ApplyError) as exc:
        apply_plan(root, Plan(tuple(writes)), "default", fs.mount)
    assert "EINVAL" in str(exc.value) and "batch/cpu.max" in str(exc.value)
    assert tree_state(fs) == before
    assert not fs.exists("aios.slice")


def test_cli_apply_dry_run_and_check():
    env = {**os.environ}
    check = subprocess.run([sys.executable, "-m", "aios_host", "policy", "check", *map(str, POLICIES)],
                           capture_output=True, text=True, env=env)
    assert check.returncode == 0, check.stderr
    dry = subprocess.run([sys.executable, "-m", "aios_host", "policy", "apply", "--dry-run",
                          str(POLICIES[0])], capture_output=True, text=True, env=env)
    assert dry.returncode == 0 and "aios.slice" in dry.stdout and "NO " not in dry.stdout


# A child that applies (or rolls back) and SIGKILLs itself just before its Nth change to the
# cgroup tree (SysRoot.write_text / mkdir / rmdir: every cgroupfs write goes through them). No
# hook in the product: the child patches SysRoot the way a debugger would stop it.
_KILLED_AT = r"""
import os, signal, sys
from aios_host.kernel import root as r
n = int(sys.argv[2]); count = [0]
def counted(name):
    orig = getattr(r.SysRoot, name)
    def f(self, *a, **k):
        count[0] += 1
        if count[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return orig(self, *a, **k)
    return f
for name in ("write_text", "mkdir", "rmdir"):
    setattr(r.SysRoot, name, counted(name))
from aios_host.actuate.apply import apply_plan, rollback
from aios_host.kernel.cgroup import CgroupFs
from aios_host.kernel.inventory import read_inventory
from aios_host.policy.demand import ClassUsage
from aios_host.policy.engine import decide
from aios_host.policy.schema import load_policy
from aios_host.policy.targets import resolve_targets
from aios_host.errors import AiosError
root = r.SysRoot("/")
try:
    if sys.argv[1] == "apply":
        fs = CgroupFs(root); policy = load_policy(sys.argv[3]); targets = resolve_targets(fs, policy)
        d = decide(policy, fs, read_inventory(root), targets, {})
        apply_plan(root, d.plan, sys.argv[3], fs.mount)
    else:
        rollback(root)
except AiosError as exc:  # what the CLI does with it: one line, exit 1
    print(exc, file=sys.stderr); sys.exit(1)
print("changes", count[0])
"""


def _killed_at(op: str, n: int, policy: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _KILLED_AT, op, str(n), str(policy)],
                          capture_output=True, text=True, timeout=120)


def test_sigkill_at_every_change_of_an_apply_and_of_a_rollback_loses_nothing(root, class_workloads):
    """The rule that nothing is lost: an apply SIGKILLed before each of its changes, then a
    rollback, leaves the tree byte-exact; so does a rollback SIGKILLed before each of its changes,
    then another rollback. Also reports how many kill points there were."""
    fs = CgroupFs(root)
    before = tree_state(fs)
    full = _killed_at("apply", 0, POLICIES[0])
    assert full.returncode == 0, full.stderr
    n_apply = int(full.stdout.split()[-1])
    undo = _killed_at("rollback", 0, POLICIES[0])
    assert undo.returncode == 0, undo.stderr
    n_rollback = int(undo.stdout.split()[-1])
    # a rollback makes fewer changes than the apply: values in files that only the apply's controller
    # enables brought into being have no original, and vanish when the controller is disabled again
    assert tree_state(fs) == before and n_apply > 5 and n_rollback > 0, (n_apply, n_rollback)
    for n in range(1, n_apply + 1):
        p = _killed_at("apply", n, POLICIES[0])
        assert p.returncode == -9, (n, p.stderr)
        rollback(root)
        assert tree_state(fs) == before, f"apply killed at change {n} of {n_apply}"
    for n in range(1, n_rollback + 1):
        assert _killed_at("apply", 0, POLICIES[0]).returncode == 0
        p = _killed_at("rollback", n, POLICIES[0])
        assert p.returncode == -9, (n, p.stderr)
        rollback(root)
        assert tree_state(fs) == before, f"rollback killed at change {n} of {n_rollback}"
    out = Path("/out")
    if out.is_dir():
        (out / "kill_points.json").write_text(f'{{"apply": {n_apply}, "rollback": {n_rollback}}}\n')


def test_concurrent_applies_and_rollbacks_lose_no_original(root, class_workloads):
    """Four processes at once, twice: two apply the policy, two roll back. The journal is locked,
    so whatever order they run in, a final rollback restores the tree byte-exact. An apply that
    planned before another changed the tree may be refused (its plan is stale: a cgroup it would
    make is there): one line, its own changes undone."""
    fs = CgroupFs(root)
    before = tree_state(fs)
    for _ in range(2):
        procs = [subprocess.Popen([sys.executable, "-c", _KILLED_AT, op, "0", str(POLICIES[0])],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for op in ("apply", "rollback", "apply", "rollback")]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode in (0, 1) and "Traceback" not in err and len(err.splitlines()) <= 1, err
    rollback(root)
    assert tree_state(fs) == before
