"""The systemd single-writer rule applied to plans (SystemdRouter.route), with an in-memory bus."""

from __future__ import annotations

import json

from aios_host.daemon.ownership import SystemdRouter
from aios_host.kernel.cgroup import CgroupFs
from aios_host.kernel.root import SysRoot
from aios_host.kernel.systemd import CGROUP_LIMIT_MAX, CGROUP_WEIGHT_INVALID
from aios_host.policy.plan import DesiredCgroup, Plan, Write
from tests.unit.fixtures import fake_v2_host, put

M = "/sys/fs/cgroup"
BASE = "aios.slice/aios-classes.scope"


class FakeBus:
    def __init__(self) -> None:
        self.props = {"web.service": {"MemoryMax": CGROUP_LIMIT_MAX, "CPUWeight": CGROUP_WEIGHT_INVALID},
                      "aios-classes.scope": {"CPUWeight": CGROUP_WEIGHT_INVALID, "MemoryMin": 0,
                                             "MemoryLow": 0},
                      "aios.slice": {"CPUWeight": CGROUP_WEIGHT_INVALID}}
        self.set: list[tuple[str, dict]] = []

    def get_properties(self, unit, names, interface=None):
        return {n: self.props[unit][n] for n in names}

    def set_properties(self, unit, props, runtime=True):
        self.set.append((unit, dict(props)))

    def close(self) -> None:
        pass


def router(tmp_path):
    fake_v2_host(tmp_path)
    for f, v in (("memory.min", "0\n"), ("memory.low", "0\n"), ("cpu.weight", "100\n")):
        put(tmp_path, f"{M}/{BASE}/{f}", v)
    put(tmp_path, f"{M}/aios.slice/cpu.weight", "100\n")
    bus = FakeBus()
    return SystemdRouter(CgroupFs(SysRoot(tmp_path)), bus, BASE, "aios-classes.scope"), bus


def w(op, path, old, new, ctrl="memory"):
    return Write(op, path, old, new, "why", ctrl, True)


def test_unit_cgroups_go_through_dbus_and_the_rest_is_refused_or_dropped(tmp_path):
    r, bus = router(tmp_path)
    plan = Plan((
        w("enable", f"{M}/cgroup.subtree_control", "-memory", "+memory"),
        w("enable", f"{M}/system.slice/cgroup.subtree_control", "-memory", "+memory"),
        w("enable", f"{M}/{BASE}/cgroup.subtree_control", "-memory", "+memory"),
        w("mkdir", f"{M}/{BASE}/train", None, ""),
        w("write", f"{M}/{BASE}/train/memory.max", None, "1073741824"),
        w("write", f"{M}/system.slice/web.service/memory.max", "max", "314572800"),
        w("write", f"{M}/user.slice/user@1000.service/app.slice/memory.max", "max", "1"),
    ))
    out = r.route(plan, [])
    ops = [(x.op, x.path, x.available) for x in out.writes]
    assert ("enable", f"{M}/cgroup.subtree_control", True) not in ops  # systemd's to enable
    assert ("enable", f"{M}/system.slice/cgroup.subtree_control", True) not in ops
    assert ("enable", f"{M}/{BASE}/cgroup.subtree_control", True) in ops  # our delegated root
    assert ("mkdir", f"{M}/{BASE}/train", True) in ops
    assert ("write", f"{M}/{BASE}/train/memory.max", True) in ops
    unit = next(x for x in out.writes if x.op == "unit")
    assert unit.path == "web.service/memory.max" and unit.new == "314572800"
    assert json.loads(unit.old) == {"MemoryMax": CGROUP_LIMIT_MAX}  # the unit's original, to restore
    refused = next(x for x in out.writes if "user@1000" in x.path)
    assert not refused.available and "user@1000.service's own subtree" in refused.reason


def test_the_service_carries_the_sum_of_its_classes_protection_and_weight(tmp_path):
    r, _ = router(tmp_path)
    desired = [
        DesiredCgroup(f"{BASE}/a", True, {"memory.min": ("1073741824", ""), "cpu.weight": ("150", "")}),
        DesiredCgroup(f"{BASE}/b", True, {"memory.min": ("536870912", ""), "memory.low": ("1048576", ""),
                                           "cpu.weight": ("50", "")}),
        DesiredCgroup("system.slice/web.service", False, {"memory.min": ("999999999", ""), "cpu.weight": ("7", "")}),
    ]
    out = {x.path: x for x in r.route(Plan(()), desired).writes}
    assert out["aios-classes.scope/memory.min"].new == str(1536 << 20)
    assert out["aios-classes.scope/cpu.weight"].new == "200"
    idle = [DesiredCgroup(f"{BASE}/a", True, {"cpu.weight": ("1", "")})]
    # idle classes never drag the scope below systemd's default weight
    assert {x.path: x.new for x in r.route(Plan(()), idle).writes}.get("aios-classes.scope/cpu.weight") in (None, "100")
    assert out["aios-classes.scope/memory.low"].new == "1048576"


def test_aios_slice_weighs_its_classes_against_unit_matched_ones_outside(tmp_path):
    r, bus = router(tmp_path)
    protected_unit = [
        DesiredCgroup(f"{BASE}/batch", True, {"cpu.weight": ("20", "")}),
        DesiredCgroup("system.slice/web.service", False, {"cpu.weight": ("10000", "")}),
    ]
    out = {x.path: x for x in r.route(Plan(()), protected_unit).writes}
    assert out["aios.slice/cpu.weight"].new == "1"  # 100 * 20 / 10000, at least 1
    assert json.loads(out["aios.slice/cpu.weight"].old) == {"CPUWeight": CGROUP_WEIGHT_INVALID}
    batch_unit = [
        DesiredCgroup(f"{BASE}/prot", True, {"cpu.weight": ("5000", "")}, cls="prot", class_weight=5000,
                      cpu_alloc_cores=1.0),
        DesiredCgroup("system.slice/web.service", False, {"cpu.weight": ("10", "")}),
    ]
    out = {x.path: x.new for x in r.route(Plan(()), batch_unit).writes}
    assert out["aios.slice/cpu.weight"] == "1000"  # 100 * 5000 / 10, capped at UNIT_CPU_WEIGHT_MAX
    # the same ratio with the class inside idle, or busy at weight 100: never above what it weighs
    idle_inside = [d._replace(cpu_alloc_cores=0.0) if d.rel.startswith(BASE) else d for d in batch_unit]
    assert "aios.slice/cpu.weight" not in {x.path for x in r.route(Plan(()), idle_inside).writes}  # 100
    hogs = [d._replace(class_weight=100) if d.rel.startswith(BASE) else d for d in batch_unit]
    assert "aios.slice/cpu.weight" not in {x.path for x in r.route(Plan(()), hogs).writes}  # 100, there
    light = [d._replace(class_weight=10) if d.rel.startswith(BASE) else d for d in batch_unit]
    assert {x.path: x.new for x in r.route(Plan(()), light).writes}["aios.slice/cpu.weight"] == "10"


def test_aios_slice_stands_for_its_weightiest_class_that_uses_cpu(tmp_path):
    """No class outside: aios.slice weighs what the policy gives its most important busy class, as
    a user would give a protected unit CPUWeight=1000; systemd's 100 while no class uses CPU."""
    r, _ = router(tmp_path)

    def slice_weight(prot_cores: float, batch_cores: float) -> str | None:
        desired = [
            DesiredCgroup(f"{BASE}/prot", True, {"cpu.weight": ("10000", "")}, cls="prot", class_weight=1000,
                          cpu_alloc_cores=prot_cores),
            DesiredCgroup(f"{BASE}/batch", True, {"cpu.weight": ("1", "")}, cls="batch", class_weight=10,
                          cpu_alloc_cores=batch_cores),
        ]
        return {x.path: x.new for x in r.route(Plan(()), desired).writes}.get("aios.slice/cpu.weight")

    assert slice_weight(2.0, 0.0) == "1000"
    assert slice_weight(1.0, 1.0) == "1000"
    assert slice_weight(0.0, 2.0) == "10"  # only the batch class runs: it weighs what it is given
    assert slice_weight(0.0, 0.0) is None  # systemd's default, already there: nothing to write
    huge = [DesiredCgroup(f"{BASE}/x", True, {"cpu.weight": ("100", "")}, cls="x", class_weight=10000,
                          cpu_alloc_cores=1.0)]
    assert {x.path: x.new for x in r.route(Plan(()), huge).writes}["aios.slice/cpu.weight"] == "1000"


def test_a_unit_matched_class_weighs_its_policy_weight_at_most(tmp_path):
    """Its CPUWeight is the solver's scaled so that the heaviest class weighs its policy weight, at
    most 1000: at the solver's 10000 it starved the services beside it in system.slice (the daemon
    itself, journald); at 100 the daemon's ticks took the protected service's share."""
    r, _ = router(tmp_path)
    put(tmp_path, f"{M}/system.slice/web.service/cpu.weight", "100\n")
    desired = [DesiredCgroup(f"{BASE}/batch", True, {"cpu.weight": ("10", "")}, class_weight=10),
               DesiredCgroup("system.slice/web.service", False, {"cpu.weight": ("10000", "")},
                             class_weight=1000)]
    plan = Plan((w("write", f"{M}/system.slice/web.service/cpu.weight", "100", "10000", "cpu"),))
    out = {x.path: x.new for x in r.route(plan, desired).writes}
    assert out["web.service/cpu.weight"] == "1000"  # the heaviest: its policy weight
    plan = Plan((w("write", f"{M}/system.slice/web.service/cpu.weight", "100", "5000", "cpu"),))
    out = {x.path: x.new for x in r.route(plan, desired).writes}
    assert out["web.service/cpu.weight"] == "500"
    assert out["aios.slice/cpu.weight"] == "1"  # 100 x 10 / 10000: the ratio carried across slices
    default = [DesiredCgroup("system.slice/web.service", False, {"cpu.weight": ("10000", "")})]
    plan = Plan((w("write", f"{M}/system.slice/web.service/cpu.weight", "100", "10000", "cpu"),))
    assert "web.service/cpu.weight" not in {x.path for x in r.route(plan, default).writes}  # 100: there
