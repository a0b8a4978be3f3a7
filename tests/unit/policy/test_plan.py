"""make_plan's diff: what counts as unchanged, what restores the old value, in what order."""

import pytest

from aios_host.kernel.cgroup import CgroupFs
from aios_host.kernel.root import SysRoot
from aios_host.policy.plan import DesiredCgroup, PlanError, make_plan
from tests.unit.fixtures import fake_cgroup, fake_v2_host, put

VM = "vm-bookworm-6.1"


@pytest.fixture
def fs(tmp_path):
    fake_v2_host(tmp_path)
    put(tmp_path, "/sys/fs/cgroup/cgroup.subtree_control", "cpu io memory\n")
    fake_cgroup(tmp_path, "/sys/fs/cgroup/a", VM, {
        "cpu.weight": "100\n", "io.weight": "default 100\n8:0 50\n", "memory.max": "max\n",
        "memory.high": "1073741824\n", "cpu.max": "max 100000\n",
    })
    return CgroupFs(SysRoot(tmp_path))


def plan_for(fs, **files):
    desired = DesiredCgroup("a", create=False, files={k.replace("_", "."): (v, "why") for k, v in files.items()})
    return {w.path.rsplit("/", 1)[1]: w for w in make_plan(fs, [desired]).writes if w.op == "write"}


def test_unchanged_values_plan_nothing_in_any_spelling(fs):
    # io.weight with per-device lines: only the default is compared; "max 100000" == "max 100000\n"
    assert plan_for(fs, cpu_weight="100", io_weight="default 100", memory_max="max",
                    memory_high="1073741824", cpu_max="max 100000") == {}


def test_cpu_weight_deadband(fs):
    assert plan_for(fs, cpu_weight="110") == {}  # 10% of 100: noise
    w = plan_for(fs, cpu_weight="111")["cpu.weight"]
    assert (w.old, w.new) == ("100", "111")


def test_restore_values(fs):
    got = plan_for(fs, io_weight="default 200", memory_high="2147483648", cpu_max="50000 100000")
    assert got["io.weight"].old == "default 100"  # the device line is not written back with it
    assert got["memory.high"].old == "1073741824"
    assert got["cpu.max"].old == "max 100000"


def test_memory_max_before_high_when_growing(fs):
    put(fs.root.root, "/sys/fs/cgroup/a/memory.max", "2147483648\n")
    grow = list(plan_for(fs, memory_high="3221225472", memory_max="4294967296"))
    shrink = list(plan_for(fs, memory_high="536870912", memory_max="1073741824"))
    assert grow == ["memory.max", "memory.high"] and shrink == ["memory.high", "memory.max"]


def test_missing_cgroup_is_an_error_and_empty_cpuset_refused(fs):
    with pytest.raises(PlanError, match="no such cgroup"):
        make_plan(fs, [DesiredCgroup("nope", create=False, files={"cpu.weight": ("100", "x")})])
    with pytest.raises(PlanError, match="empty cpuset"):
        plan_for(fs, cpuset_cpus="")
