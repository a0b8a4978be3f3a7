"""AllReduce three ways, on torch.distributed point-to-point and collective primitives.

- ring_allreduce: the seed's Ring AllReduce, written out: N-1 reduce-scatter steps then N-1
  all-gather steps; in each, rank r sends one chunk (S/N bytes) to r+1 and receives one from r-1
  (isend/irecv, both in flight at once). Every link carries 2(N-1) S/N bytes:

      T = 2(N-1) (alpha + S / (N B))

- ps_allreduce: the parameter-server baseline: reduce to rank 0, then broadcast from it. Rank 0's
  link carries (N-1) S in and (N-1) S out: T ~ 2(N-1)(alpha + S / B), N times the ring's
  bandwidth term.
- torch_allreduce: torch.distributed.all_reduce (gloo's own ring/halving-doubling, NCCL's ring/tree).

The model fit (fit_ring_model) is plain weighted least squares on T = a + b S, relative errors, so
4 KiB and 256 MiB points count alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist


def ring_allreduce(t: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """In-place sum AllReduce of a contiguous tensor over a ring (reduce-scatter + all-gather)."""
    world = dist.get_world_size(group)
    if world == 1:
        return t
    rank = dist.get_rank(group)
    flat = t.view(-1)
    chunks = list(torch.tensor_split(flat, world))
    right, left = (rank + 1) % world, (rank - 1) % world
    if group is not None:  # isend/irecv take global ranks
        right = dist.get_global_rank(group, right)
        left = dist.get_global_rank(group, left)
    recv = torch.empty(chunks[0].numel(), dtype=t.dtype, device=t.device)
    # reduce-scatter: after step s, chunk (rank - s - 1) holds the sum of s + 2 ranks
    for s in range(world - 1):
        send_c = chunks[(rank - s) % world]
        recv_i = (rank - s - 1) % world
        buf = recv[: chunks[recv_i].numel()]
        reqs = [dist.isend(send_c, right), dist.irecv(buf, left)]
        for r in reqs:
            r.wait()
        chunks[recv_i].add_(buf)
    # all-gather: pass the fully reduced chunks around the ring
    for s in range(world - 1):
        send_c = chunks[(rank + 1 - s) % world]
        recv_c = chunks[(rank - s) % world]
        reqs = [dist.isend(send_c, right), dist.irecv(recv_c, left)]
        for r in reqs:
            r.wait()
    return t


def ps_allreduce(t: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Parameter-server style: every rank sends to rank 0 (reduce), rank 0 sends back (broadcast)."""
    dist.reduce(t, dst=0, op=dist.ReduceOp.SUM, group=group)
    dist.broadcast(t, src=0, group=group)
    return t


def torch_allreduce(t: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t


ALGORITHMS = {"torch": torch_allreduce, "ring": ring_allreduce, "ps": ps_allreduce}


def bus_bandwidth(algbw: float, world: int) -> float:
    """nccl-tests' busbw for AllReduce: algbw * 2(N-1)/N, the bandwidth each link must carry."""
    return algbw * 2 * (world - 1) / world


@dataclass(frozen=True)
class RingFit:
    alpha_s: float  # per-step latency
    bandwidth_Bps: float  # link bandwidth B
    world: int
    max_rel_err: float

    def predict(self, size_bytes: float) -> float:
        return 2 * (self.world - 1) * (self.alpha_s + size_bytes / (self.world * self.bandwidth_Bps))

    def predict_ps(self, size_bytes: float) -> float:
        return 2 * (self.world - 1) * (self.alpha_s + size_bytes / self.bandwidth_Bps)


def fit_ring_model(sizes: Sequence[float], times: Sequence[float], world: int) -> RingFit:
    """Fit T = 2(N-1)(alpha + S/(N B)) to measured (S, T) by least squares on relative error."""
    import numpy as np

    if world < 2 or len(sizes) < 2:
        raise ValueError("need N >= 2 and at least two sizes")
    s = np.asarray(sizes, dtype=float)
    t = np.asarray(times, dtype=float)
    steps = 2 * (world - 1)
    a_mat = np.stack([np.full_like(s, steps), steps * s / world], axis=1) / t[:, None]
    coef, *_ = np.linalg.lstsq(a_mat, np.ones_like(t), rcond=None)
    alpha, inv_b = float(coef[0]), float(coef[1])
    if inv_b <= 0:  # pure latency: refit bandwidth-free is meaningless; take the largest point
        inv_b = float(t[-1] / (steps * s[-1] / world))
    if alpha < 0:  # the fit wants negative latency: hold alpha at 0 and fit B alone
        alpha = 0.0
        x = steps * s / world
        inv_b = float(np.sum(x / t) / np.sum((x / t) ** 2))
    fit = RingFit(alpha, 1.0 / inv_b, world, 0.0)
    errs = [abs(fit.predict(si) - ti) / ti for si, ti in zip(s, t, strict=True)]
    return RingFit(alpha, 1.0 / inv_b, world, float(max(errs)) if errs else math.nan)
