"""Where each local rank runs and what it finds in its environment. Pure.

Ranks are contiguous per host (global rank = node_rank * nproc + local_rank, like torchrun), and
each local rank is placed near its hardware:

- with GPUs (backend nccl): local rank r gets the r-th GPU in (NUMA node, PCI address) order and
  CPUs of that GPU's NUMA node; CUDA_VISIBLE_DEVICES lists the job's GPUs in local-rank order
  (with CUDA_DEVICE_ORDER=PCI_BUS_ID), so the usual `torch.cuda.set_device(LOCAL_RANK)` picks
  the GPU we placed the rank near;
- without: ranks are spread over NUMA nodes in proportion to their CPUs, contiguous blocks;
- cpu_affinity "numa": a rank may run on every CPU of its node; "cores": whole cores are split
  between the node's ranks (SMT siblings stay together); "none": no affinity.
OMP_NUM_THREADS is the rank's share of the CPUs it may use (of the class allocation when a
policy gives one), at least 1: torchrun sets 1 for nproc > 1, which leaves cores idle when a
rank has several to itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aios_host.errors import AiosError
from aios_host.kernel.inventory import Inventory


@dataclass(frozen=True)
class RankPlacement:
    rank: int
    local_rank: int
    node_rank: int
    numa_node: int
    cpus: tuple[int, ...]  # allowed CPUs; () = no affinity
    gpu: int | None  # GPU index (PCI order) or None
    omp_threads: int


def _split(items: Sequence[int], parts: int) -> list[list[int]]:
    """Contiguous near-equal blocks; with more parts than items, items are reused round-robin."""
    if parts <= len(items):
        out, start = [], 0
        for i in range(parts):
            size = len(items) // parts + (1 if i < len(items) % parts else 0)
            out.append(list(items[start:start + size]))
            start += size
        return out
    return [[items[i % len(items)]] for i in range(parts)] if items else [[] for _ in range(parts)]


def _spread(nproc: int, node_cpus: Mapping[int, Sequence[int]]) -> list[int]:
    """NUMA node of each local rank: proportional to CPU count, in node order, contiguous."""
    nodes = sorted(n for n, c in node_cpus.items() if c)
    total = sum(len(node_cpus[n]) for n in nodes)
    counts = {n: math.floor(nproc * len(node_cpus[n]) / total) for n in nodes}
    # largest remainders get the leftover ranks
    rest = nproc - sum(counts.values())
    by_rem = sorted(nodes, key=lambda n: (-(nproc * len(node_cpus[n]) / total - counts[n]), n))
    for n in by_rem[:rest]:
        counts[n] += 1
    return [n for n in nodes for _ in range(counts[n])]


def place_ranks(
    inv: Inventory,
    nproc: int,
    node_rank: int,
    *,
    use_gpus: bool,
    affinity: str = "numa",
    cpu_cores: float | None = None,
) -> list[RankPlacement]:
    """`cpu_cores`: the class's CPU allocation on this host (None = every CPU)."""
    node_cpus = {n: sorted(c) for n, c in inv.numa_nodes.items()}
    if not any(node_cpus.values()):
        node_cpus = {0: [c.id for c in inv.cpus]}
    gpus: list[tuple[int, int]] = []  # (index, numa node)
    if use_gpus:
        if len(inv.gpus) < nproc:
            raise AiosError(f"backend nccl needs one GPU per rank: nproc {nproc}, this host has "
                            f"{len(inv.gpus)} GPU(s); use backend = \"gloo\" or fewer ranks")
        ordered = sorted(range(len(inv.gpus)), key=lambda i: (max(inv.gpus[i].numa_node, 0), i))
        gpus = [(i, inv.gpus[i].numa_node) for i in ordered[:nproc]]
        rank_nodes = [n if n in node_cpus else min(node_cpus) for _, n in gpus]
    else:
        rank_nodes = _spread(nproc, node_cpus)
    cores_of = {}
    for n, cpus in node_cpus.items():
        seen: list[tuple[int, ...]] = []
        for core in inv.cores:
            if core[0] in cpus and core not in seen:
                seen.append(core)
        cores_of[n] = seen or [(c,) for c in cpus]
    per_node_ranks: dict[int, list[int]] = {}
    for lr, n in enumerate(rank_nodes):
        per_node_ranks.setdefault(n, []).append(lr)
    cpus_of: dict[int, tuple[int, ...]] = {}
    for n, lrs in per_node_ranks.items():
        if affinity == "cores":
            blocks = _split(list(range(len(cores_of[n]))), len(lrs))
            for lr, blk in zip(lrs, blocks, strict=True):
                cpus_of[lr] = tuple(sorted(c for i in blk for c in cores_of[n][i]))
        elif affinity == "numa" and len(node_cpus) > 1:
            for lr in lrs:
                cpus_of[lr] = tuple(node_cpus[n])
        else:  # one node: the node's CPUs are all CPUs, no mask to set
            for lr in lrs:
                cpus_of[lr] = ()
    total_cpus = sum(len(c) for c in node_cpus.values())
    budget = min(float(total_cpus), cpu_cores) if cpu_cores is not None else float(total_cpus)
    out = []
    for lr in range(nproc):
        n = rank_nodes[lr]
        usable = len(cpus_of[lr]) if cpus_of[lr] else total_cpus
        omp = max(1, math.floor(min(usable, budget / nproc) + 1e-9))
        out.append(RankPlacement(
            rank=node_rank * nproc + lr, local_rank=lr, node_rank=node_rank, numa_node=n,
            cpus=cpus_of[lr], gpu=gpus[lr][0] if gpus else None, omp_threads=omp,
        ))
    return out


@dataclass(frozen=True)
class Rendezvous:
    master_addr: str
    master_port: int
    world_size: int
    nproc: int
    nnodes: int


def rank_env(
    base: Mapping[str, str],
    p: RankPlacement,
    rdzv: Rendezvous,
    *,
    job: str,
    label: str,
    restart: int,
    max_restarts: int,
    backend: str,
    health_socket: str | None,
    gpus: Sequence[int] = (),
    socket_ifname: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of one rank: base (the caller's), then the spec's env, then ours."""
    env = dict(base)
    env.update(extra or {})
    env.update({
        "MASTER_ADDR": rdzv.master_addr,
        "MASTER_PORT": str(rdzv.master_port),
        "RANK": str(p.rank),
        "LOCAL_RANK": str(p.local_rank),
        "WORLD_SIZE": str(rdzv.world_size),
        "LOCAL_WORLD_SIZE": str(rdzv.nproc),
        "GROUP_RANK": str(p.node_rank),
        "NODE_RANK": str(p.node_rank),
        "TORCHELASTIC_RESTART_COUNT": str(restart),
        "TORCHELASTIC_MAX_RESTARTS": str(max_restarts),
        "AIOS_JOB": label,
        "AIOS_JOB_NAME": job,
        "AIOS_RESTART": str(restart),
        "AIOS_BACKEND": backend,
        "PYTHONUNBUFFERED": "1",
    })
    if "OMP_NUM_THREADS" not in (extra or {}):
        env["OMP_NUM_THREADS"] = str(p.omp_threads)
    if health_socket:
        env["AIOS_HEALTH_SOCKET"] = health_socket
    else:
        env.pop("AIOS_HEALTH_SOCKET", None)
    if gpus:
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
    elif backend == "gloo" and "CUDA_VISIBLE_DEVICES" not in (extra or {}):
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU job must not grab a GPU context by accident
    if socket_ifname:
        # gloo and NCCL pick an interface from the hostname otherwise, which in a network
        # namespace or on a multi-homed host is often not the one that reaches MASTER_ADDR.
        for var in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
            if var not in (extra or {}):
                env[var] = socket_ifname
    if backend == "nccl":
        env.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    return env


def resolve_backend(requested: str, gpu_count: int, nproc: int) -> str:
    """auto: nccl when every local rank can have a GPU, gloo otherwise."""
    if requested != "auto":
        return requested
    return "nccl" if gpu_count >= nproc > 0 else "gloo"
