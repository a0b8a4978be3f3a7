"""Rank placement (contiguous per host, near NUMA node and GPU) and the rank environment."""

from __future__ import annotations

import pytest

from aios_host.errors import AiosError
from aios_host.kernel.inventory import Cpu, GpuDevice, Inventory
from aios_host.supervisor.placement import Rendezvous, place_ranks, rank_env, resolve_backend


def inventory(nodes: int, cores_per_node: int, smt: int = 1, gpus: list[int] | None = None) -> Inventory:
    cpus = []
    numa: dict[int, tuple[int, ...]] = {}
    cid = 0
    for n in range(nodes):
        ids = []
        for c in range(cores_per_node):
            sib = tuple(range(cid, cid + smt))
            for t in sib:
                cpus.append(Cpu(t, c, n, n, sib, n * 100))
                ids.append(t)
            cid += smt
        numa[n] = tuple(ids)
    g = tuple(GpuDevice(f"0000:{i:02x}:00.0", "0x10de", "0x2330", node) for i, node in enumerate(gpus or []))
    return Inventory(tuple(cpus), 64 << 30, numa, g)


def test_ranks_are_contiguous_per_node() -> None:
    inv = inventory(1, 4)
    p = place_ranks(inv, 4, node_rank=2, use_gpus=False)
    assert [x.rank for x in p] == [8, 9, 10, 11] and [x.local_rank for x in p] == [0, 1, 2, 3]
    assert all(x.cpus == () for x in p)  # one NUMA node: no mask needed
    assert all(x.omp_threads == 1 for x in p)


def test_numa_spread_and_affinity() -> None:
    inv = inventory(2, 4)
    p = place_ranks(inv, 4, 0, use_gpus=False, affinity="numa")
    assert [x.numa_node for x in p] == [0, 0, 1, 1]
    assert p[0].cpus == (0, 1, 2, 3) and p[3].cpus == (4, 5, 6, 7)
    assert p[0].omp_threads == 2  # 8 CPUs / 4 ranks
    cores = place_ranks(inv, 4, 0, use_gpus=False, affinity="cores")
    assert [x.cpus for x in cores] == [(0, 1), (2, 3), (4, 5), (6, 7)]
    none = place_ranks(inv, 4, 0, use_gpus=False, affinity="none")
    assert all(x.cpus == () for x in none)


def test_cores_keep_smt_siblings_together() -> None:
    inv = inventory(1, 2, smt=2)
    p = place_ranks(inv, 2, 0, use_gpus=False, affinity="cores")
    assert [x.cpus for x in p] == [(0, 1), (2, 3)]


def test_gpus_in_numa_order_and_cpus_near_them() -> None:
    inv = inventory(2, 2, gpus=[1, 0, 1, 0])  # GPU 0 and 2 on node 1, 1 and 3 on node 0
    p = place_ranks(inv, 4, 0, use_gpus=True)
    assert [x.gpu for x in p] == [1, 3, 0, 2]
    assert [x.numa_node for x in p] == [0, 0, 1, 1]
    assert p[0].cpus == (0, 1) and p[2].cpus == (2, 3)


def test_nccl_needs_a_gpu_per_rank() -> None:
    with pytest.raises(AiosError, match="one GPU per rank"):
        place_ranks(inventory(1, 2, gpus=[0]), 2, 0, use_gpus=True)


def test_class_allocation_sets_omp_threads() -> None:
    inv = inventory(1, 8)
    assert [x.omp_threads for x in place_ranks(inv, 2, 0, use_gpus=False, cpu_cores=6.0)] == [3, 3]
    assert [x.omp_threads for x in place_ranks(inv, 4, 0, use_gpus=False, cpu_cores=1.0)] == [1] * 4


def test_backend_auto() -> None:
    assert resolve_backend("auto", 0, 4) == "gloo"
    assert resolve_backend("auto", 4, 4) == "nccl"
    assert resolve_backend("auto", 2, 4) == "gloo"
    assert resolve_backend("nccl", 0, 1) == "nccl"


def test_rank_env() -> None:
    inv = inventory(1, 4)
    p = place_ranks(inv, 2, node_rank=1, use_gpus=False)[1]
    rdzv = Rendezvous("10.0.0.1", 41234, world_size=4, nproc=2, nnodes=2)
    env = rank_env({"PATH": "/bin", "RANK": "99"}, p, rdzv, job="j", label="train", restart=2, max_restarts=3,
                   backend="gloo", health_socket="/run/h.sock", socket_ifname="veth0",
                   extra={"FOO": "bar"})
    assert env["PATH"] == "/bin" and env["FOO"] == "bar"
    assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"], env["LOCAL_WORLD_SIZE"]) == ("3", "1", "4", "2")
    assert (env["MASTER_ADDR"], env["MASTER_PORT"], env["GROUP_RANK"]) == ("10.0.0.1", "41234", "1")
    assert env["TORCHELASTIC_RESTART_COUNT"] == "2" and env["AIOS_RESTART"] == "2"
    assert env["AIOS_JOB"] == "train" and env["AIOS_HEALTH_SOCKET"] == "/run/h.sock"
    assert env["OMP_NUM_THREADS"] == "2"
    assert env["GLOO_SOCKET_IFNAME"] == "veth0" and env["CUDA_VISIBLE_DEVICES"] == ""
    # the user's own choice of OMP threads and interface is kept
    env2 = rank_env({}, p, rdzv, job="j", label="j", restart=0, max_restarts=0, backend="gloo",
                    health_socket=None, socket_ifname="lo",
                    extra={"OMP_NUM_THREADS": "7", "GLOO_SOCKET_IFNAME": "eth1"})
    assert env2["OMP_NUM_THREADS"] == "7" and env2["GLOO_SOCKET_IFNAME"] == "eth1"
    assert "AIOS_HEALTH_SOCKET" not in env2


def test_rank_env_gpus() -> None:
    inv = inventory(1, 4, gpus=[0, 0])
    p = place_ranks(inv, 2, 0, use_gpus=True)
    env = rank_env({}, p[0], Rendezvous("127.0.0.1", 1, 2, 2, 1), job="j", label="j", restart=0, max_restarts=0,
                   backend="nccl", health_socket=None, gpus=[x.gpu for x in p if x.gpu is not None])
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
