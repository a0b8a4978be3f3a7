"""Per-class cpufreq through decide() and the CLI: the settings follow the exclusive CPUs the
decision placed, a new placement moves them (the CPUs given up go back to the host-wide settings),
and a straddling cpufreq policy is a note that `policy diff` and `explain` print."""

from __future__ import annotations

from pathlib import Path

import pytest

from aios_host.actuate.apply import apply_plan, rollback
from aios_host.cli import main
from aios_host.energy import plan as energy
from aios_host.kernel import cpufreq
from aios_host.kernel.cgroup import CgroupFs
from aios_host.kernel.inventory import read_inventory
from aios_host.policy.engine import Decision, decide
from aios_host.policy.plan import Plan
from aios_host.policy.schema import load_policy
from aios_host.policy.targets import resolve_targets
from tests.unit.energy.fake_cpufreq import FakeCpufreqKernel, FakePolicy
from tests.unit.fixtures import fake_v2_host

MOUNT = "/sys/fs/cgroup"
POLICY = """
[host]
reserve_cores = 1
[energy]
profile = "powersave"
cpu_max_freq = "60%"
[[class]]
name = "train"
cpu.exclusive = true
cpu.min = 2
energy.cpu_governor = "performance"
energy.cpu_max_freq = "100%"
"""
# a second exclusive class, earlier by name: placed first, it takes train's cores
INFER = """
[[class]]
name = "infer"
cpu.exclusive = true
cpu.min = 2
"""


@pytest.fixture(autouse=True)
def no_power_daemons(monkeypatch):
    monkeypatch.setattr(energy, "_active_owners", lambda: [])  # this machine's tuned must not decide


def host(tmp_path: Path, related_cpus: list[tuple[int, ...]]) -> FakeCpufreqKernel:
    fake_v2_host(tmp_path / "root", cpus=sum(len(c) for c in related_cpus))
    return FakeCpufreqKernel(tmp_path / "root", "intel_pstate",
                             [FakePolicy(c, max_req_khz=3_000_000) for c in related_cpus])


def decided(root, tmp_path: Path, text: str) -> Decision:
    f = tmp_path / "p.toml"
    f.write_text(text)
    policy = load_policy(f)
    fs = CgroupFs(root)
    return decide(policy, fs, read_inventory(root), resolve_targets(fs, policy), {})


def cpufreq_plan(d: Decision) -> Plan:
    return Plan(tuple(w for w in d.plan.writes if w.op == "cpufreq"))


def settings(root) -> dict[int, tuple[str, int]]:
    return {p.cpus[0]: (p.governor, p.max_freq_khz) for p in cpufreq.read_policies(root)}


def sysfs_bytes(root) -> dict[str, bytes]:
    base = root.path("/sys/devices/system/cpu")
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


FAST, SLOW = ("performance", 3_500_000), ("powersave", 2_100_000)


def test_a_new_placement_moves_the_settings(tmp_path: Path) -> None:
    root = host(tmp_path, [(i,) for i in range(6)])
    before = sysfs_bytes(root)
    d1 = decided(root, tmp_path, POLICY)
    assert d1.cores.cpus["train"] == (1, 2) and d1.energy_notes == ()
    apply_plan(root, cpufreq_plan(d1), "v1", MOUNT)
    assert settings(root) == {0: SLOW, 1: FAST, 2: FAST, 3: SLOW, 4: SLOW, 5: SLOW}

    d2 = decided(root, tmp_path, POLICY + INFER)
    assert d2.cores.cpus == {"infer": (1, 2), "train": (3, 4)}
    moved = {(w.path.split("/")[-2], w.path.split("/")[-1], w.new) for w in cpufreq_plan(d2).writes if w.old != w.new}
    assert moved == {
        # train gave 1-2 up: the host-wide powersave, EPP power, 60% again
        ("policy1", "scaling_governor", "powersave"), ("policy1", "energy_performance_preference", "power"),
        ("policy1", "scaling_max_freq", "2100000"),
        ("policy2", "scaling_governor", "powersave"), ("policy2", "energy_performance_preference", "power"),
        ("policy2", "scaling_max_freq", "2100000"),
        # and has 3-4 now
        ("policy3", "scaling_governor", "performance"), ("policy3", "scaling_max_freq", "3500000"),
        ("policy4", "scaling_governor", "performance"), ("policy4", "scaling_max_freq", "3500000"),
    }
    apply_plan(root, cpufreq_plan(d2), "v2", MOUNT)
    assert settings(root) == {0: SLOW, 1: SLOW, 2: SLOW, 3: FAST, 4: FAST, 5: SLOW}
    assert cpufreq_plan(decided(root, tmp_path, POLICY + INFER)).writes == ()
    rollback(root)
    assert sysfs_bytes(root) == before


def test_diff_and_explain_print_the_note_for_a_straddling_policy(tmp_path: Path, capsys) -> None:
    root = host(tmp_path, [(0,), (1,), (2, 3), (4, 5)])  # train gets 1-2: policy2 is 2 and a shared 3
    (tmp_path / "p.toml").write_text(POLICY)
    note = ("energy: cpufreq policy2 (cpus 2-3) straddles exclusive cpu sets (class train: 2; other cpus: 3): one "
            "setting covers all its cpus, so it does not take train's energy.cpu_governor, energy.cpu_max_freq; the "
            "host-wide [energy] applies to it")
    for cmd in ("diff", "explain"):
        assert main(["policy", cmd, str(tmp_path / "p.toml"), "--root", str(root.root), "--sample-ms", "0"]) == 0
        out = capsys.readouterr().out
        assert note in out.splitlines(), out
    assert main(["policy", "diff", str(tmp_path / "p.toml"), "--root", str(root.root), "--sample-ms", "0"]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if "cpufreq/policy" in ln]
    assert any("policy1/scaling_governor" in r and "class train" in r for r in rows)
    assert not any("policy2/" in r and "class train" in r for r in rows)
