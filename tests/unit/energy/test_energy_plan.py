"""[energy] through the one machinery: planned as Writes, applied through the checking writers,
journaled, and rolled back to the originals, on a fake cpufreq that behaves as the kernel does and
a fake NVML with H100 constraints."""

from __future__ import annotations

from pathlib import Path

import pytest

from aios_host.actuate.apply import apply_plan, rollback
from aios_host.actuate.state import StateStore
from aios_host.energy import plan as energy
from aios_host.kernel import cpufreq
from aios_host.policy.plan import Plan
from aios_host.policy.schema import EnergySpec
from tests.unit.energy.fake_cpufreq import FakeCpufreqKernel, FakePolicy
from tests.unit.energy.fake_nvml import FakeGpu, fake_gpu_backend

MOUNT = "/sys/fs/cgroup"


@pytest.fixture
def gpu():
    backend, nvml = fake_gpu_backend(FakeGpu(), FakeGpu())
    energy._GPU[:] = [backend]
    yield backend, nvml
    energy._GPU.clear()


def _state(root) -> list[tuple[str, str, int, int, str | None]]:
    return [(p.name, p.governor, p.min_freq_khz, p.max_freq_khz, p.epp) for p in cpufreq.read_policies(root)]


def test_powersave_plans_governor_epp_and_max_then_rolls_back_to_the_originals(tmp_path: Path, gpu) -> None:
    root = FakeCpufreqKernel(tmp_path, "intel_pstate", [FakePolicy((0, 1), governor="performance"),
                                                        FakePolicy((2, 3))])
    before = _state(root)
    spec = EnergySpec(profile="powersave", cpu_max_freq="80%", gpu_power_limit="70%")
    ep = energy.energy_plan(root, spec, owners=lambda: [])
    ops = [(w.op, w.path.rsplit("/", 1)[1], w.old, w.new) for w in ep.writes]
    # policy0: performance -> powersave, then (no longer under performance) EPP, then 80% of 3.5 GHz
    assert ("cpufreq", "scaling_governor", "performance", "powersave") in ops
    assert ("cpufreq", "energy_performance_preference", "performance", "power") in ops
    assert ("cpufreq", "scaling_max_freq", "3500000", "2800000") in ops
    assert [o for o in ops if o[0] == "nvml"] == [("nvml", "power_limit_mw", "700000", "490000")] * 2
    rec = apply_plan(root, Plan(ep.writes), "energy-saver", MOUNT)
    assert rec is not None
    after = _state(root)
    assert {(g, m, e) for _, g, _, m, e in after} == {("powersave", 2_800_000, "power")}
    backend, nvml = gpu
    assert [backend.knobs(i).power.limit_mw for i in range(2)] == [490_000, 490_000]
    assert len(StateStore(root).load()[0].writes) == len(ep.writes)  # journaled, every one
    # the same policy again: nothing left to change
    assert energy.energy_plan(root, spec, owners=lambda: []).writes == ()
    rollback(root)
    assert _state(root) == before
    assert [backend.knobs(i).power.limit_mw for i in range(2)] == [700_000, 700_000]  # the originals


def test_a_refused_energy_write_undoes_the_whole_apply(tmp_path: Path, gpu) -> None:
    """The GPU refuses (no permission) after the CPU writes went through: all or nothing."""
    from aios_host.actuate.apply import ApplyError
    from aios_host.errors import AiosError

    root = FakeCpufreqKernel(tmp_path, "acpi-cpufreq", [FakePolicy((0, 1), governor="schedutil")])
    before = _state(root)
    ep = energy.energy_plan(root, EnergySpec(profile="powersave", gpu_power_limit="300W"), owners=lambda: [])
    backend, nvml = gpu
    nvml.root = False  # the driver now answers NO_PERMISSION
    with pytest.raises((ApplyError, AiosError)):
        apply_plan(root, Plan(ep.writes), "p", MOUNT)
    assert _state(root) == before
    assert [r.status for r in StateStore(root).load()] == ["undone"]  # the journal says what happened


def test_no_cpufreq_and_no_gpu_is_said_and_plans_nothing(tmp_path: Path) -> None:
    from aios_host.kernel.root import SysRoot

    def no_gpu():
        from aios_host.kernel.gpu import GpuUnavailable

        raise GpuUnavailable("NVML: NVML Shared Library Not Found")

    ep = energy.energy_plan(SysRoot(tmp_path), EnergySpec(profile="powersave", gpu_power_limit="70%"), gpu=no_gpu)
    assert ep.writes == ()
    assert any(n.startswith("cpufreq: ") and "not applied" in n for n in ep.notes)
    assert any(n.startswith("GPU: none (NVML: NVML Shared Library Not Found)") for n in ep.notes)
    assert energy.energy_plan(SysRoot(tmp_path), EnergySpec()).notes == ()  # balanced: nothing asked


def test_owners_of_the_cpu_knobs_are_deferred_to_unless_the_policy_takes_over(tmp_path: Path) -> None:
    root = FakeCpufreqKernel(tmp_path, "intel_pstate", [FakePolicy((0, 1))])
    deferred = energy.energy_plan(root, EnergySpec(profile="performance"), owners=lambda: ["tuned"])
    assert deferred.writes == () and any("tuned own the CPU knobs" in n for n in deferred.notes)
    taken = energy.energy_plan(root, EnergySpec(profile="performance", cpu_owner="take-over"),
                               owners=lambda: ["tuned"])
    # the EPP intel_pstate hides under performance is journaled (kept as it is) before the governor
    assert [(w.old, w.new) for w in taken.writes] == [("balance_performance", "balance_performance"),
                                                      ("powersave", "performance")]


@pytest.mark.parametrize(("spec", "khz"), [("80%", 2_800_000), ("2.4GHz", 2_400_000), ("100MHz", 800_000),
                                           ("9GHz", 3_500_000), ("1200000kHz", 1_200_000)])
def test_max_freq_is_clamped_to_the_cpuinfo_range(tmp_path: Path, spec: str, khz: int) -> None:
    root = FakeCpufreqKernel(tmp_path, "intel_pstate", [FakePolicy((0, 1))])
    assert energy.max_freq_khz(spec, cpufreq.read_policy(root, "policy0")) == khz


@pytest.mark.parametrize(("spec", "mw"), [("70%", 490_000), ("250W", 250_000), ("10W", 200_000), ("900W", 700_000)])
def test_power_limit_is_clamped_to_the_constraints(spec: str, mw: int) -> None:
    assert energy.power_limit_mw(spec, 200_000, 700_000) == mw
