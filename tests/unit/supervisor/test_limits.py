"""The class's share from the policy engine -> per-rank limits (systemd properties, cgroup files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aios_host.errors import AiosError
from aios_host.supervisor.limits import ClassShare, RankLimits, class_share, split_limits
from tests.unit.supervisor.test_placement import inventory


def test_split_and_render() -> None:
    share = ClassShare("training", weight=300, cpu_cores=3.0, cpu_max_cores=2.0, memory_bytes=8 << 30,
                       memory_high_bytes=6 << 30, memory_max_bytes=8 << 30)
    lims = split_limits(share, 4, [(), (), (), ()])
    assert lims[0] == RankLimits(300, 50.0, (), (6 << 30) // 4, (8 << 30) // 4)
    assert lims[0].systemd_properties() == ["CPUWeight=300", "CPUQuota=50%", f"MemoryHigh={(6 << 30) // 4}",
                                            f"MemoryMax={(8 << 30) // 4}"]
    assert lims[0].cgroup_files()["cpu.max"] == "50000 100000"
    assert RankLimits().empty and RankLimits().systemd_properties() == []


def test_exclusive_cores_are_split_in_blocks() -> None:
    share = ClassShare("inf", 100, 4.0, None, 0.0, None, None, exclusive_cpus=(4, 5, 6, 7))
    lims = split_limits(share, 2, [(), ()])
    assert [x.allowed_cpus for x in lims] == [(4, 5), (6, 7)]
    assert lims[0].systemd_properties() == ["CPUWeight=100", "AllowedCPUs=4,5"]
    assert lims[1].cgroup_files() == {"cpu.weight": "100", "cpuset.cpus": "6,7"}


def test_class_share_from_a_policy(tmp_path: Path) -> None:
    pytest.importorskip("ortools")
    p = tmp_path / "policy.toml"
    p.write_text('[host]\nreserve_cores = 0\nreserve_memory = 0\nmanaged_root = "aios.slice"\n'
                 '[[class]]\nname = "training"\nweight = 300\ncpu.max = 2\nmemory.max = "8G"\n'
                 'memory.high = "auto"\n[[class]]\nname = "batch"\n')
    inv = inventory(1, 4)
    share = class_share(str(p), "training", inv)
    assert share.weight == 300 and share.cpu_max_cores == 2.0
    # memory.high = "auto": the allocation + 25%, never above memory.max
    assert share.memory_max_bytes == 8 << 30 and 0 < share.memory_high_bytes <= 8 << 30
    assert 0 < share.cpu_cores <= 2.0 and share.managed_root == "aios.slice"
    with pytest.raises(AiosError, match="no class 'nope' \\(classes: training, batch\\)"):
        class_share(str(p), "nope", inv)
