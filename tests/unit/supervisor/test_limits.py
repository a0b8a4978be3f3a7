"""The class's values from the policy engine -> per-rank limits (systemd properties, cgroup files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aios_host.errors import AiosError
from aios_host.kernel import cgroup_format as fmt
from aios_host.supervisor.limits import PAGE, ClassShare, RankLimits, class_share, split_limits
from tests.unit.supervisor.test_placement import inventory

GIB = 1 << 30


def test_split_and_render() -> None:
    share = ClassShare("training", cpu_weight=300, cpu_cores=3.0, cpu_max_cores=2.0,
                       memory_high_bytes=6 << 30, memory_max_bytes=8 << 30)
    lims = split_limits(share, 4, [(), (), (), ()])
    assert lims[0] == RankLimits(300, 50.0, (), (6 << 30) // 4, (8 << 30) // 4)
    assert lims[0].systemd_properties() == ["CPUWeight=300", "CPUQuota=50%", f"MemoryHigh={(6 << 30) // 4}",
                                            f"MemoryMax={(8 << 30) // 4}"]
    assert lims[0].cgroup_files()["cpu.max"] == "50000 100000"
    assert RankLimits().empty and RankLimits().systemd_properties() == []


def test_exclusive_cores_are_split_in_blocks() -> None:
    share = ClassShare("inf", 100, 4.0, None, None, None, exclusive_cpus=(4, 5, 6, 7))
    lims = split_limits(share, 2, [(), ()])
    assert [x.allowed_cpus for x in lims] == [(4, 5), (6, 7)]
    assert lims[0].systemd_properties() == ["CPUWeight=100", "AllowedCPUs=4,5"]
    assert lims[1].cgroup_files() == {"cpu.weight": "100", "cpuset.cpus": "6,7"}


# Host of inventory(1, 8): 8 cores, 64 GiB; no reserve, so percentages are of the whole host.
POLICY = """\
[host]
reserve_cores = 0
reserve_memory = 0
managed_root = "aios.slice"
[[class]]
name = "training"
weight = 300
priority = 10
cpu.max = 6
memory.high = "auto"
memory.max = "48G"
[[class]]
name = "inference"
weight = 200
priority = 10
cpu.min = 2
cpu.exclusive = true
memory.low = "8G"
memory.high = "auto"
[[class]]
name = "batch"
memory.min = "16G"
memory.high = "20G"
"""


def _class_files(policy_path: str, inv) -> dict[str, dict[str, str]]:
    """The class cgroups' files as `policy apply` computes them (engine.decide's steps)."""
    from aios_host.policy.demand import build_problem, capacity
    from aios_host.policy.engine import assign
    from aios_host.policy.mapping import desired_state
    from aios_host.policy.schema import load_policy
    from aios_host.policy.solver import solve
    from aios_host.policy.targets import ClassTarget

    policy = load_policy(policy_path)
    cap = capacity(policy, inv)
    alloc = solve(build_problem(policy, cap, {}))
    targets = {c.name: ClassTarget(c.name, (f"aios.slice/{c.name}",), owned=True) for c in policy.classes}
    desired = desired_state(policy, targets, alloc, assign(policy, inv), inv, cap.cpu_cores, cap.memory_bytes)
    return {d.cls: {f: v for f, (v, _) in d.files.items()} for d in desired}


@pytest.mark.parametrize("nproc", [1, 2, 3, 4])
@pytest.mark.parametrize("cls", ["training", "inference", "batch"])
def test_rank_limits_times_nproc_are_the_class_cgroup_values(tmp_path: Path, cls: str, nproc: int) -> None:
    pytest.importorskip("ortools")
    p = tmp_path / "policy.toml"
    p.write_text(POLICY)
    inv = inventory(1, 8)
    want = _class_files(str(p), inv)[cls]
    ranks = [lim.cgroup_files() for lim in split_limits(class_share(str(p), cls, inv), nproc, [()] * nproc)]
    for rank in ranks:
        assert rank["cpu.weight"] == want["cpu.weight"]  # relative: the same for every rank
    for f in ("memory.high", "memory.max"):
        if f not in want:
            assert all(f not in r for r in ranks)
            continue
        total = sum(int(r[f]) for r in ranks)
        # Whole pages, rounded down per rank: never above the class, less than a page per rank below.
        assert int(want[f]) - nproc * PAGE < total <= int(want[f])
    if "cpu.max" in want:
        quota = fmt.parse_cpu_max(want["cpu.max"]).quota_usec
        assert sum(fmt.parse_cpu_max(r["cpu.max"]).quota_usec for r in ranks) == pytest.approx(quota, abs=nproc)
    else:
        assert all("cpu.max" not in r for r in ranks)
    if cls == "inference":  # exclusive: the ranks cover its cpuset.cpus and nothing else
        excl = fmt.parse_cpu_list(want["cpuset.cpus"])
        per_rank = [fmt.parse_cpu_list(r["cpuset.cpus"]) for r in ranks]
        assert set().union(*per_rank) == set(excl)
        if len(excl) % nproc == 0:  # divisible: each cpu to exactly one rank
            assert sum(map(len, per_rank)) == len(excl)


def test_class_share_memory_high_auto_is_mappings(tmp_path: Path) -> None:
    pytest.importorskip("ortools")
    p = tmp_path / "policy.toml"
    p.write_text(POLICY)
    inv = inventory(1, 8)
    # "auto": the host's 64 GiB less the others' protection (inference low 8G, batch min 16G) = 40 GiB,
    # under training's max of 48 GiB; whatever the solver allocated plays no part.
    training = class_share(str(p), "training", inv)
    assert training.memory_high_bytes == 40 * GIB and training.memory_max_bytes == 48 * GIB
    # inference: 64 - 16 (batch) = 48 GiB, no max to cap it; batch: its own size.
    assert class_share(str(p), "inference", inv).memory_high_bytes == 48 * GIB
    assert class_share(str(p), "batch", inv).memory_high_bytes == 20 * GIB
    assert training.cpu_max_cores == 6.0 and training.managed_root == "aios.slice"
    assert class_share(str(p), "inference", inv).exclusive_cpus == (0, 1)
    assert training.exclusive_cpus == ()
    with pytest.raises(AiosError, match="no class 'nope' \\(classes: training, inference, batch\\)"):
        class_share(str(p), "nope", inv)
