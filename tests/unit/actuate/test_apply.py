"""decide -> plan -> apply -> rollback on a fake cgroup v2 host (VM-captured files)."""

import errno
import json

import pytest

from aios_host.actuate.apply import ApplyError, apply_plan, rollback
from aios_host.actuate.state import StateStore
from aios_host.cli import main
from aios_host.kernel.cgroup import CgroupFs
from aios_host.kernel.inventory import read_inventory
from aios_host.policy.engine import decide
from aios_host.policy.schema import load_policy
from aios_host.policy.targets import resolve_targets
from tests.unit.fixtures import HYBRID, FakeCgroupRoot, fake_cgroup, fake_host, fake_v2_host

POLICY = """
[host]
reserve_cores = 1
[[class]]
name = "train"
weight = 300
priority = 10
cpu.min = 1
memory.min = "1G"
memory.high = "auto"
memory.max = "4G"
[[class]]
name = "batch"
cpu.max = 1.5
io.weight = 50
io.max."8:0" = { rbps = "10M" }
"""


@pytest.fixture
def host(tmp_path):
    fake_v2_host(tmp_path / "root")
    (tmp_path / "p.toml").write_text(POLICY)
    return FakeCgroupRoot.make(tmp_path / "root"), tmp_path / "p.toml"


def snapshot_tree(root):
    base = root.path("/sys/fs/cgroup")
    return {str(p.relative_to(base)): p.read_text() for p in sorted(base.rglob("*")) if p.is_file()}


def _decide(root, policy_path):
    fs = CgroupFs(root)
    policy = load_policy(policy_path)
    targets = resolve_targets(fs, policy)
    return decide(policy, fs, read_inventory(root), targets, {}), fs


def test_plan_order(host):
    root, policy = host
    d, _ = _decide(root, policy)
    ops = [w.op for w in d.plan.writes]
    assert ops == sorted(ops, key=["mkdir", "enable", "write", "move"].index)
    paths = [w.path for w in d.plan.writes]
    assert paths[:3] == ["/sys/fs/cgroup/aios.slice", "/sys/fs/cgroup/aios.slice/train",
                         "/sys/fs/cgroup/aios.slice/batch"]
    enables = [w for w in d.plan.writes if w.op == "enable"]
    depths = [w.path.count("/") for w in enables]
    assert depths == sorted(depths)  # parents before children
    assert {w.new for w in enables} == {"+cpu", "+memory", "+io"}
    assert all(w.reason for w in d.plan.writes)


def test_apply_then_reapply_plans_nothing_then_rollback_is_byte_exact(host):
    root, policy = host
    before = snapshot_tree(root)
    d, fs = _decide(root, policy)
    rec = apply_plan(root, d.plan, str(policy), fs.mount)
    assert rec is not None and rec.status == "applied"
    cg = fs.cgroup("aios.slice/batch")
    assert cg.read("cpu.max") == "150000 100000\n"
    assert cg.read("io.max").endswith("8:0 rbps=10485760 wbps=max riops=max wiops=max\n")
    assert fs.cgroup("aios.slice/train").read("memory.max") == f"{4 << 30}\n"
    assert fs.cgroup("").subtree_control() != ()
    state = json.loads(StateStore(root).path.read_text())
    assert state["applies"][0]["status"] == "applied"

    d2, _ = _decide(root, policy)
    assert d2.plan.writes == (), [w.path for w in d2.plan.writes]

    undone = rollback(root)
    assert len(undone) == 1
    assert snapshot_tree(root) == before
    assert StateStore(root).load() == []


def test_failed_write_undoes_everything(host, monkeypatch):
    root, policy = host
    before = snapshot_tree(root)
    d, fs = _decide(root, policy)
    bad = next(i for i, w in enumerate(d.plan.writes) if w.path.endswith("batch/cpu.max"))
    real = type(root).write_text

    def failing(self, path, value):
        if path == d.plan.writes[bad].path:
            from aios_host.errors import KernelError
            raise KernelError(f"write {value!r}", self.path(path), errno.EINVAL)
        return real(self, path, value)

    monkeypatch.setattr(type(root), "write_text", failing)
    with pytest.raises(ApplyError) as exc:
        apply_plan(root, d.plan, str(policy), fs.mount)
    assert "batch/cpu.max" in str(exc.value) and "EINVAL" in str(exc.value)
    assert f"all {bad} earlier writes were undone" in str(exc.value)
    assert snapshot_tree(root) == before


def test_hybrid_host_dry_run_marks_and_apply_refuses(tmp_path, capsys):
    fake_host(tmp_path / "root", HYBRID)
    fake_cgroup(tmp_path / "root", "/sys/fs/cgroup/unified", HYBRID,
                {"cgroup.controllers": "hugetlb\n"})
    (tmp_path / "p.toml").write_text(POLICY)
    root = str(tmp_path / "root")
    assert main(["policy", "apply", "--dry-run", "--sample-ms", "0", "--root", root,
                 str(tmp_path / "p.toml")]) == 0
    out = capsys.readouterr().out
    assert "NO cpu controller here" in out and "cannot be applied on this host" in out
    assert main(["policy", "apply", "--sample-ms", "0", "--root", root, str(tmp_path / "p.toml")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lacks cpu, io, memory" in err and "nothing was changed" in err
    assert not (tmp_path / "root/sys/fs/cgroup/unified/aios.slice").exists()


@pytest.mark.parametrize(("old_max", "first"), [(str(8 << 30), "memory.high"), (str(1 << 30), "memory.max")])
def test_memory_high_before_max_when_shrinking_max_first_when_growing(host, old_max, first):
    root, policy = host
    fs = CgroupFs(root)
    fs.create("aios.slice/train")  # exists, with memory.max = old_max; the policy wants 4G
    root.path("/sys/fs/cgroup/aios.slice/train/memory.max").write_text(old_max + "\n")
    d, _ = _decide(root, policy)
    names = [w.path.rsplit("/", 1)[1] for w in d.plan.writes if "/train/memory." in w.path]
    assert [n for n in names if n in ("memory.high", "memory.max")][0] == first


def test_processes_already_below_the_class_cgroup_are_not_moved(host):
    """A job rank lives in <class>/aios-jobs.slice/<job>/rank-N: moving it up to the class
    cgroup would take it out of the cgroup its supervisor kills."""
    from tests.unit.fixtures import put

    root, _ = host
    fs = CgroupFs(root)
    fs.create("aios.slice/train/aios-jobs.slice/j/rank-0")
    put(root.root, "/proc/4242/cgroup", "0::/aios.slice/train/aios-jobs.slice/j/rank-0\n")
    put(root.root, "/proc/4343/cgroup", "0::/system.slice/other.service\n")

    from aios_host.policy.plan import make_plan
    d, _ = _decide(root, host[1])
    desired = [x._replace(move_pids=(4242, 4343)) if x.cls == "train" else x for x in d.desired]
    moves = [w for w in make_plan(fs, desired).writes if w.op == "move"]
    assert [w.new for w in moves] == ["4343"]


def test_an_idle_guaranteed_class_is_not_taken_for_a_busy_one(host):
    """`train` has cpu.min = 1 (allocated whether it runs or not); only what it has demand for
    counts as use: the systemd router weighs aios.slice by its busy classes."""
    from aios_host.policy.demand import ClassUsage

    root, policy_path = host
    fs = CgroupFs(root)
    policy = load_policy(policy_path)
    targets = resolve_targets(fs, policy)
    idle = decide(policy, fs, read_inventory(root), targets, {"train": ClassUsage(cpu_cores=0.0),
                                                              "batch": ClassUsage(cpu_cores=1.0)})
    used = {d.cls: d.cpu_alloc_cores for d in idle.desired}
    assert idle.allocation.amounts["train"]["cpu"] >= 1.0  # the guarantee is allocated ...
    assert used["train"] == 0.0 and used["batch"] > 0.0  # ... but not used
    busy = decide(policy, fs, read_inventory(root), targets, {"train": ClassUsage(cpu_cores=1.0)})
    assert {d.cls: d.cpu_alloc_cores for d in busy.desired}["train"] > 0.0
