"""Per-class cpufreq ([class.energy] cpu_governor / cpu_epp / cpu_max_freq) on a fake cpufreq
sysfs that behaves as the kernel does: the class's settings go on exactly the cpufreq policies
inside its exclusive CPUs, the host-wide [energy] on the others, a straddling policy gets a note
and no per-class write, and apply / rollback / a new placement go through the one machinery."""

from __future__ import annotations

from pathlib import Path

import pytest

from aios_host.actuate.apply import apply_plan, rollback
from aios_host.actuate.state import StateStore
from aios_host.energy import plan as energy
from aios_host.energy.cpufreq_classes import ClassCpufreq, class_cpufreq
from aios_host.errors import AiosError
from aios_host.kernel import cpufreq
from aios_host.policy.plan import Plan
from aios_host.policy.schema import EnergySpec, Policy
from tests.unit.energy.fake_cpufreq import FakeCpufreqKernel, FakePolicy

MOUNT = "/sys/fs/cgroup"
# host-wide: powersave (governor and EPP "power") at 60% of the 3.5 GHz turbo max
HOST = EnergySpec(profile="powersave", cpu_max_freq="60%")
TRAIN = ClassCpufreq("train", frozenset({2, 3}), governor="performance", max_freq="100%")


def per_cpu_host(tmp_path: Path, n: int = 4) -> FakeCpufreqKernel:
    """intel_pstate, one policy per CPU (as it has), each at powersave / balance_performance / 3 GHz."""
    return FakeCpufreqKernel(tmp_path, "intel_pstate", [FakePolicy((i,), max_req_khz=3_000_000) for i in range(n)])


def sysfs_bytes(tmp_path: Path) -> dict[str, bytes]:
    base = tmp_path / "sys"
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def plan_of(root, host=HOST, classes=(TRAIN,), **kw) -> energy.EnergyPlan:
    return energy.energy_plan(root, host, owners=lambda: [], classes=classes, **kw)


def ops(ep: energy.EnergyPlan) -> set[tuple[str, str, str | None, str]]:
    return {(w.path.rsplit("/", 2)[1], w.path.rsplit("/", 1)[1], w.old, w.new) for w in ep.writes}


def changes(ep: energy.EnergyPlan) -> list:
    """The writes that change a value: not the EPP journaled (kept) on entering performance."""
    return [w for w in ep.writes if w.old != w.new]


def state(root) -> dict[str, tuple[str, int, str | None]]:
    return {p.name: (p.governor, p.max_freq_khz, p.epp) for p in cpufreq.read_policies(root)}


def test_the_class_settings_hit_exactly_its_policies_the_rest_run_host_wide(tmp_path: Path) -> None:
    root = per_cpu_host(tmp_path)
    ep = plan_of(root)
    assert ops(ep) == {
        # host-wide on policy0 and 1: already powersave; EPP power; 60% of 3.5 GHz
        ("policy0", "energy_performance_preference", "balance_performance", "power"),
        ("policy0", "scaling_max_freq", "3000000", "2100000"),
        ("policy1", "energy_performance_preference", "balance_performance", "power"),
        ("policy1", "scaling_max_freq", "3000000", "2100000"),
        # the class's on policy2 and 3: performance at the full turbo max; no EPP (pinned by performance),
        # but the EPP intel_pstate hides under performance is journaled first, for the rollback
        ("policy2", "energy_performance_preference", "balance_performance", "balance_performance"),
        ("policy2", "scaling_governor", "powersave", "performance"),
        ("policy2", "scaling_max_freq", "3000000", "3500000"),
        ("policy3", "energy_performance_preference", "balance_performance", "balance_performance"),
        ("policy3", "scaling_governor", "powersave", "performance"),
        ("policy3", "scaling_max_freq", "3000000", "3500000"),
    }
    assert all(w.op == "cpufreq" for w in ep.writes) and ep.notes == ()
    assert {w.reason for w in changes(ep) if "policy2" in w.path} == {
        "class train: energy.cpu_governor performance", "class train: energy.cpu_max_freq 100% = 3500000 kHz"}
    # the hidden EPP before the governor (under performance it could not be read), then the max
    knobs = [w.path.rsplit("/", 1)[1] for w in ep.writes if "policy2" in w.path]
    assert knobs == ["energy_performance_preference", "scaling_governor", "scaling_max_freq"]


def test_apply_then_rollback_restores_the_sysfs_byte_exact(tmp_path: Path) -> None:
    root = per_cpu_host(tmp_path)
    before = sysfs_bytes(tmp_path)
    ep = plan_of(root)
    rec = apply_plan(root, Plan(ep.writes), "per-class", MOUNT)
    assert rec is not None and len(StateStore(root).load()[0].writes) == len(ep.writes)  # journaled, all
    assert state(root) == {
        "policy0": ("powersave", 2_100_000, "power"), "policy1": ("powersave", 2_100_000, "power"),
        "policy2": ("performance", 3_500_000, "performance"), "policy3": ("performance", 3_500_000, "performance"),
    }
    assert plan_of(root).writes == ()  # applied: nothing left to change
    rollback(root)
    assert sysfs_bytes(tmp_path) == before
    # EPP came back from under the performance governor as the kernel keeps it, not as read there
    assert state(root)["policy2"] == ("powersave", 3_000_000, "balance_performance")


def test_a_class_key_left_unset_is_the_host_wide_one(tmp_path: Path) -> None:
    root = per_cpu_host(tmp_path)
    only_max = ClassCpufreq("train", frozenset({2, 3}), max_freq="3GHz")
    writes = ops(plan_of(root, classes=(only_max,)))
    assert ("policy2", "energy_performance_preference", "balance_performance", "power") in writes  # host's EPP
    assert ("policy2", "scaling_max_freq", "3000000", "2100000") not in writes  # the class's 3 GHz: as it is
    assert not any(p == "policy2" and k == "scaling_max_freq" for p, k, _, _ in writes)


@pytest.mark.parametrize("related_cpus", [
    [(0, 1), (2, 3, 4, 5, 6, 7)],  # one policy over the class's 2-5 and the shared 6-7
    [(0, 1), (2, 3), (4, 5, 6, 7)],  # 2-3 wholly the class's; 4-5 with the shared 6-7
])
def test_a_straddling_policy_gets_the_note_and_no_per_class_write(tmp_path: Path, related_cpus) -> None:
    root = FakeCpufreqKernel(tmp_path, "intel_pstate", [FakePolicy(c, max_req_khz=3_000_000) for c in related_cpus])
    cls = ClassCpufreq("train", frozenset({2, 3, 4, 5}), governor="performance", max_freq="100%")
    ep = plan_of(root, classes=(cls,))
    shared = [p for p in cpufreq.read_policies(root) if not set(p.cpus) <= cls.cpus]
    inside = [p for p in cpufreq.read_policies(root) if set(p.cpus) <= cls.cpus]
    for p in shared:
        mine = {w.new for w in changes(ep) if w.path.startswith(p.path + "/")}
        assert mine == {"power", "2100000"}  # the host-wide settings, none of the class's
    for p in inside:
        assert {w.new for w in changes(ep) if w.path.startswith(p.path + "/")} == {"performance", "3500000"}
    assert len(shared) == 2 and len(inside) == len(related_cpus) - 2
    straddled, cpus, theirs = ("policy2", "2-7", "2-5") if len(related_cpus) == 2 else ("policy4", "4-7", "4-5")
    assert ep.notes == (
        f"cpufreq {straddled} (cpus {cpus}) straddles exclusive cpu sets (class train: {theirs}; other cpus: 6-7): "
        "one setting covers all its cpus, so it does not take train's energy.cpu_governor, energy.cpu_max_freq; "
        "the host-wide [energy] applies to it",)


def test_a_policy_over_two_classes_sets_is_left_to_the_host_wide_setting(tmp_path: Path) -> None:
    root = FakeCpufreqKernel(tmp_path, "intel_pstate", [FakePolicy((0, 1, 2, 3))])
    a = ClassCpufreq("train", frozenset({0, 1}), governor="performance")
    b = ClassCpufreq("batch", frozenset({2, 3}), epp="power")
    ep = plan_of(root, host=EnergySpec(), classes=(a, b))
    assert ep.writes == ()
    (note,) = ep.notes
    assert note.startswith("cpufreq policy0 (cpus 0-3) straddles exclusive cpu sets (class train: 0-1; class batch: "
                           "2-3): ") and "train's energy.cpu_governor; batch's energy.cpu_epp" in note


def test_a_class_epp_the_driver_cannot_take_is_said(tmp_path: Path) -> None:
    # the host-wide governor is performance and the class names only an EPP: pinned (EBUSY)
    root = per_cpu_host(tmp_path, 2)
    cls = ClassCpufreq("batch", frozenset({1}), epp="power")
    ep = plan_of(root, host=EnergySpec(profile="performance"), classes=(cls,))
    assert not any(w.path.endswith("energy_performance_preference") for w in changes(ep))
    assert ep.notes == ("cpufreq policy1: class batch: energy.cpu_epp power not applied: under the performance "
                        "governor intel_pstate takes only 'performance'",)
    acpi = FakeCpufreqKernel(tmp_path / "acpi", "acpi-cpufreq", [FakePolicy((0,)), FakePolicy((1,))])
    ep = plan_of(acpi, host=EnergySpec(), classes=(cls,))
    assert ep.writes == () and ep.notes == (
        "cpufreq policy1: acpi-cpufreq has no energy_performance_preference; class batch: energy.cpu_epp power "
        "not applied",)


def test_deferred_to_tuned_like_the_host_wide_settings(tmp_path: Path) -> None:
    root = per_cpu_host(tmp_path)
    ep = energy.energy_plan(root, EnergySpec(), owners=lambda: ["tuned"], classes=(TRAIN,))
    assert ep.writes == () and any("tuned own the CPU knobs" in n for n in ep.notes)


def test_a_new_placement_moves_the_settings_and_frees_cpus_go_back(tmp_path: Path) -> None:
    """Host-wide powersave: the CPUs the class gave up go back to it. Host-wide balanced (asks for
    nothing): they go back to what the journal says the host had before aios-host changed them."""
    root = per_cpu_host(tmp_path, 6)
    before = sysfs_bytes(tmp_path)
    for host in (HOST, EnergySpec()):
        apply_plan(root, Plan(plan_of(root, host=host).writes), "v1", MOUNT)
        moved = ClassCpufreq("train", frozenset({4, 5}), governor="performance", max_freq="100%")
        ep = plan_of(root, host=host, classes=(moved,))
        gone = {w.new for w in changes(ep) if w.path.split("/")[-2] in ("policy2", "policy3")}
        new = {w.new for w in changes(ep) if w.path.split("/")[-2] in ("policy4", "policy5")}
        assert new == {"performance", "3500000"}
        if host is HOST:
            assert gone == {"powersave", "power", "2100000"}
        else:
            assert gone == {"powersave", "3000000"}  # the originals, as journaled
            assert all("as aios-host found it" in w.reason for w in ep.writes if "policy2" in w.path)
        apply_plan(root, Plan(ep.writes), "v2", MOUNT)
        after = state(root)
        assert after["policy4"][:2] == after["policy5"][:2] == ("performance", 3_500_000)
        assert after["policy2"] == after["policy0"]  # like every CPU no class has
        assert plan_of(root, host=host, classes=(moved,)).writes == ()  # and it stays there
        rollback(root)
        assert sysfs_bytes(tmp_path) == before


def test_an_unreadable_journal_is_said_once_and_plans_the_rest(tmp_path: Path) -> None:
    root = per_cpu_host(tmp_path)

    def denied():
        raise AiosError("/run/aios-host/state.json: permission denied (needs root)")

    ep = plan_of(root, host=EnergySpec(), journal=denied)
    assert {o for o in ops(ep) if o[2] != o[3]} == {("policy2", "scaling_governor", "powersave", "performance"),
                       ("policy2", "scaling_max_freq", "3000000", "3500000"),
                       ("policy3", "scaling_governor", "powersave", "performance"),
                       ("policy3", "scaling_max_freq", "3000000", "3500000")}
    assert ep.notes == ("cpufreq: the journal cannot be read (/run/aios-host/state.json: permission denied (needs "
                        "root)); knobs no setting asks for are planned as they are, not back at the values aios-host "
                        "found",)
    # nothing asked at all: no note, no write, the policies not even read
    assert energy.energy_plan(root, EnergySpec(), journal=denied) == energy.EnergyPlan((), ())


def test_class_cpufreq_takes_the_placement_of_classes_with_settings() -> None:
    policy = Policy.model_validate({"class": [
        {"name": "train", "cpu": {"exclusive": True, "min": 2}, "energy": {"cpu_governor": "performance"}},
        {"name": "infer", "cpu": {"exclusive": True, "min": 2}},
        {"name": "batch", "cpu": {"exclusive": True, "min": 1}, "energy": {"cpu_epp": "power", "cpu_max_freq": "2GHz"}},
    ]})
    got = class_cpufreq(policy, {"train": (4, 5), "infer": (2, 3), "batch": (6,)})
    assert got == (ClassCpufreq("train", frozenset({4, 5}), governor="performance"),
                   ClassCpufreq("batch", frozenset({6}), epp="power", max_freq="2GHz"))


def test_no_cpufreq_says_the_class_settings_are_not_applied(tmp_path: Path) -> None:
    from aios_host.kernel.root import SysRoot

    ep = plan_of(SysRoot(tmp_path), host=EnergySpec())
    assert ep.writes == () and ep.notes == ("cpufreq: /sys/devices/system/cpu/cpufreq absent: a kernel without "
                                            "CONFIG_CPU_FREQ; [energy] and per-class CPU settings not applied",)
