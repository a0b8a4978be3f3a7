"""AllReduce and a parameter server, written on torch.distributed point-to-point, with their bytes
counted rather than assumed.

- ring_allreduce: the seed's Ring AllReduce: N-1 reduce-scatter steps then N-1 all-gather steps;
  in each, rank r sends one chunk (M/N bytes) to r+1 and receives one from r-1 (isend/irecv, both
  in flight at once). Each rank sends and receives 2(N-1)/N x M bytes:

      T_ring = 2(N-1) (alpha + M / (N B))

- ParameterServer / ps_allreduce: K of the N ranks are servers (the last K: rank 0 stays a worker),
  W = N-K are workers. The parameters live on the servers in K shards (tensor_split); a worker
  pushes shard k of its gradient to server k, the server sums the W pushes, applies the update and
  sends the new shard back to every worker. A worker sends and receives M; each server receives
  W M/K and sends W M/K, so the busiest link (a server's) carries W M/K each way:

      T_ps = 2 (alpha + W M / (K B))      (receive all pushes, then send all shards back)

  Synchronous: each server waits for all W pushes of a step. Asynchronous: a server applies each
  push as it arrives (recv from any source) and answers that worker with the shard as it is then;
  a worker may run at most `staleness` steps ahead of the slowest (the server holds its answer
  until the slowest catches up).
- torch_allreduce: torch.distributed.all_reduce (gloo's own algorithms, NCCL's ring/tree), timed
  only: its bytes are the library's business.

Every send and receive of ring and ps goes through send()/recv() here, which add the tensor's size
to TRAFFIC (this process's counters). fit_link_model fits (alpha, B) to measured times for either
model by least squares on relative error, so 4 KiB and 256 MiB points count alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Traffic:
    """Bytes this process handed to / received from point-to-point calls."""

    sent_bytes: int = 0
    recv_bytes: int = 0

    def reset(self) -> None:
        self.sent_bytes = self.recv_bytes = 0


TRAFFIC = Traffic()


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def isend(t: torch.Tensor, dst: int) -> dist.Work:
    TRAFFIC.sent_bytes += _nbytes(t)
    return dist.isend(t, dst)


def irecv(t: torch.Tensor, src: int) -> dist.Work:
    TRAFFIC.recv_bytes += _nbytes(t)
    return dist.irecv(t, src)


def recv_any(t: torch.Tensor) -> int:
    """Blocking receive from whichever rank sends first; its rank."""
    src = dist.recv(t)
    TRAFFIC.recv_bytes += _nbytes(t)
    return int(src)


def _wait(works: Sequence[dist.Work]) -> None:
    for w in works:
        w.wait()


# -- ring --------------------------------------------------------------------------------------


def ring_allreduce(t: torch.Tensor) -> torch.Tensor:
    """In-place sum AllReduce of a contiguous tensor over a ring (reduce-scatter + all-gather)."""
    world = dist.get_world_size()
    if world == 1:
        return t
    rank = dist.get_rank()
    chunks = list(torch.tensor_split(t.view(-1), world))
    right, left = (rank + 1) % world, (rank - 1) % world
    recv = torch.empty(chunks[0].numel(), dtype=t.dtype, device=t.device)
    # reduce-scatter: after step s, chunk (rank - s - 1) holds the sum of s + 2 ranks
    for s in range(world - 1):
        recv_i = (rank - s - 1) % world
        buf = recv[: chunks[recv_i].numel()]
        _wait([isend(chunks[(rank - s) % world], right), irecv(buf, left)])
        chunks[recv_i].add_(buf)
    # all-gather: pass the fully reduced chunks around the ring
    for s in range(world - 1):
        _wait([isend(chunks[(rank + 1 - s) % world], right), irecv(chunks[(rank - s) % world], left)])
    return t


# -- parameter server --------------------------------------------------------------------------

Update = Callable[[torch.Tensor, torch.Tensor], None]  # (shard of parameters, summed pushes) -> in place


def replace_with_sum(params: torch.Tensor, pushed_sum: torch.Tensor) -> None:
    """The update that turns a parameter server into an AllReduce: the new value is the sum."""
    params.copy_(pushed_sum)


@dataclass(frozen=True)
class PsLayout:
    world: int
    servers: int

    def __post_init__(self) -> None:
        if not 1 <= self.servers < self.world:
            raise ValueError(f"--servers {self.servers}: need 1 <= K < N = {self.world} (K servers, N-K workers)")

    @property
    def workers(self) -> int:
        return self.world - self.servers

    def server_rank(self, k: int) -> int:
        return self.workers + k

    def is_server(self, rank: int) -> bool:
        return rank >= self.workers

    def shard_of(self, rank: int) -> int:
        return rank - self.workers

    def role(self, rank: int) -> str:
        return "server" if self.is_server(rank) else "worker"


class ParameterServer:
    """One step of a parameter server, on every rank. Workers call step(grad, out) with their
    gradient (M elements) and get the new parameters in `out`; servers call step() and hold their
    shard of the parameters in self.shard (initialised from `init`, the full parameter vector,
    which every rank passes alike; copy=False: the shard is a view of `init`, for a server whose
    tensor is scratch, as in ps_allreduce)."""

    def __init__(self, layout: PsLayout, init: torch.Tensor, update: Update = replace_with_sum,
                 staleness: int | None = None, copy: bool = True) -> None:
        self.layout = layout
        self.rank = dist.get_rank()
        self.update = update
        self.staleness = staleness  # None: synchronous
        shards = torch.tensor_split(init.view(-1), layout.servers)
        self.sizes = [s.numel() for s in shards]
        self.shard: torch.Tensor | None = None
        if layout.is_server(self.rank):
            mine = shards[layout.shard_of(self.rank)]
            self.shard = mine.clone() if copy else mine
        self.worker_steps = [0] * layout.workers  # async: steps each worker has pushed
        self._held: list[int] = []  # async: workers whose answer waits for the slowest
        self._done = 0

    # workers -------------------------------------------------------------------------------
    def push_pull(self, grad: torch.Tensor, out: torch.Tensor) -> None:
        """Push each shard of `grad` to its server and receive the new parameter shards into `out`."""
        lay = self.layout
        g = torch.tensor_split(grad.view(-1), lay.servers)
        o = torch.tensor_split(out.view(-1), lay.servers)
        works = []
        if self.staleness is not None:  # async: a header says who pushes (the server listens to any)
            for k in range(lay.servers):
                works.append(isend(torch.tensor([self.rank, 1], dtype=torch.int64), lay.server_rank(k)))
        for k in range(lay.servers):
            works.append(isend(g[k], lay.server_rank(k)))
            works.append(irecv(o[k], lay.server_rank(k)))
        _wait(works)

    def finish(self) -> None:
        """Async: tell every server this worker is done."""
        if self.staleness is None:
            return
        _wait([isend(torch.tensor([self.rank, 0], dtype=torch.int64), self.layout.server_rank(k))
               for k in range(self.layout.servers)])

    # servers -------------------------------------------------------------------------------
    def serve_sync_step(self) -> None:
        """Receive all W pushes of this step, sum them, update, send the shard back to each."""
        assert self.shard is not None
        w = self.layout.workers
        bufs = [torch.empty_like(self.shard) for _ in range(w)]
        _wait([irecv(bufs[i], i) for i in range(w)])
        total = bufs[0]
        for b in bufs[1:]:
            total.add_(b)
        self.update(self.shard, total)
        _wait([isend(self.shard, i) for i in range(w)])

    def serve_async(self) -> None:
        """Until every worker has said it is done: apply each push as it comes and answer that
        worker with the shard as it is now, unless it is more than `staleness` steps ahead of the
        slowest worker still running (then it waits)."""
        assert self.shard is not None and self.staleness is not None
        w = self.layout.workers
        head = torch.empty(2, dtype=torch.int64)
        buf = torch.empty_like(self.shard)
        running = set(range(w))
        while running:
            src = recv_any(head)
            worker, more = int(head[0]), int(head[1])
            if src != worker:
                raise RuntimeError(f"parameter server: header from rank {src} names {worker}")
            if not more:
                running.discard(worker)
            else:
                _wait([irecv(buf, worker)])
                self.update(self.shard, buf)
                self.worker_steps[worker] += 1
                self._held.append(worker)
            self._release(running)
        assert not self._held

    def _release(self, running: set[int]) -> None:
        slowest = min((self.worker_steps[i] for i in running), default=None)
        keep = []
        for worker in self._held:
            if slowest is not None and self.worker_steps[worker] - slowest > self.staleness:
                keep.append(worker)
            else:
                _wait([isend(self.shard, worker)])
        self._held = keep


def ps_allreduce(t: torch.Tensor, servers: int = 1) -> torch.Tensor:
    """Sum AllReduce over the workers through K server ranks (synchronous parameter server whose
    update is the sum). On workers, `t` becomes the sum of every worker's `t`; on servers it is
    left alone (they hold no data of their own)."""
    lay = PsLayout(dist.get_world_size(), servers)
    ps = ParameterServer(lay, t, copy=False)
    if lay.is_server(dist.get_rank()):
        ps.serve_sync_step()
    else:
        ps.push_pull(t, t)
    return t


def torch_allreduce(t: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def bus_bandwidth(algbw: float, world: int) -> float:
    """nccl-tests' busbw for AllReduce: algbw * 2(N-1)/N, the bandwidth each link must carry."""
    return algbw * 2 * (world - 1) / world


# -- what each algorithm must move, and the models ----------------------------------------------


def expected_bytes(algo: str, size_bytes: int, world: int, rank: int, servers: int = 1) -> tuple[int, int]:
    """(sent, received) bytes of one AllReduce of `size_bytes` on `rank`, by the algorithm's
    construction (tensor_split's uneven chunks included), for checking the counters."""
    elems = size_bytes // 4
    if algo == "ring":
        sizes = [c.numel() for c in torch.tensor_split(torch.empty(elems), world)]
        sent = sum(sizes[(rank - s) % world] for s in range(world - 1))
        sent += sum(sizes[(rank + 1 - s) % world] for s in range(world - 1))
        recv = sum(sizes[(rank - s - 1) % world] for s in range(world - 1))
        recv += sum(sizes[(rank - s) % world] for s in range(world - 1))
        return sent * 4, recv * 4
    lay = PsLayout(world, servers)
    shard = [c.numel() for c in torch.tensor_split(torch.empty(elems), servers)]
    if lay.is_server(rank):
        n = shard[lay.shard_of(rank)] * lay.workers * 4
        return n, n
    return elems * 4, elems * 4


@dataclass(frozen=True)
class LinkFit:
    """T = steps x alpha + wire_bytes / B, fitted; `model` names which wire_bytes."""

    model: str
    alpha_s: float
    bandwidth_Bps: float
    max_rel_err: float


def model_terms(model: str, size_bytes: float, world: int, servers: int = 1) -> tuple[float, float]:
    """(latency steps, bytes on the busiest link one way) of one AllReduce: ring 2(N-1) steps and
    2(N-1)/N M; parameter server 2 steps and 2 W M / K (in, then out)."""
    if model == "ring":
        return 2.0 * (world - 1), 2.0 * (world - 1) * size_bytes / world
    workers = world - servers
    return 2.0, 2.0 * workers * size_bytes / servers


def predict(fit: LinkFit, size_bytes: float, world: int, servers: int = 1) -> float:
    steps, wire = model_terms(fit.model, size_bytes, world, servers)
    return steps * fit.alpha_s + wire / fit.bandwidth_Bps


def fit_link_model(model: str, sizes: Sequence[float], times: Sequence[float], world: int,
                   servers: int = 1) -> LinkFit:
    """Least squares on relative error of T = steps alpha + wire / B over the measured points."""
    import numpy as np

    if world < 2 or len(sizes) < 2:
        raise ValueError("need N >= 2 and at least two sizes")
    terms = np.array([model_terms(model, s, world, servers) for s in sizes], dtype=float)
    t = np.asarray(times, dtype=float)
    a_mat = terms / t[:, None]
    coef, *_ = np.linalg.lstsq(a_mat, np.ones_like(t), rcond=None)
    alpha, inv_b = float(coef[0]), float(coef[1])
    if alpha < 0 or inv_b <= 0:  # hold alpha at 0 and fit B alone (pure-bandwidth points)
        alpha = 0.0
        x = terms[:, 1]
        inv_b = float(np.sum(x / t) / np.sum((x / t) ** 2))
    fit = LinkFit(model, alpha, 1.0 / inv_b, 0.0)
    errs = [abs(predict(fit, s, world, servers) - ti) / ti for s, ti in zip(sizes, t, strict=True)]
    return LinkFit(model, alpha, 1.0 / inv_b, float(max(errs)) if errs else math.nan)
