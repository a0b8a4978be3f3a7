"""One model trained three ways, as an aios-host job: DDP (ring AllReduce), a synchronous and an
asynchronous parameter server (collectives.ParameterServer).

    aios-host job run --name t --nproc 4 -- -m aios_host.workloads.ps_train --mode ddp --out r.json
    ... --mode sync --servers 1        ... --mode async --servers 1 --staleness 2

The same MLP (fixed seed) learns a fixed random linear map y = x W* + noise with plain SGD (no
momentum: the three must compute the same update). Each step draws one global batch of --batch
samples from a generator seeded by the step, the same on every rank, and the data-parallel ranks
take equal slices of it: DDP's N ranks, or the parameter server's W = N - K workers. The mean of
equal slices' mean gradients is the full batch's, so DDP and the synchronous parameter server (the
servers average the W pushes and apply p -= lr * g) compute the same parameters, up to float
summation order. The asynchronous one applies each worker's gradient as it arrives (p -= lr * g
/ W, so a round of W pushes moves as far as one synchronous step), and a worker runs at most
--staleness steps ahead of the slowest.

After every step rank 0 (a worker in every mode) evaluates the loss of its current parameters on a
fixed evaluation set; the result (JSON, rank 0) has the steps and seconds to --target-loss, the
losses, and the final parameters, so runs can be compared.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from aios_host.supervisor import health
from aios_host.workloads import collectives as col


def make_model(dim: int, hidden: int) -> nn.Module:
    torch.manual_seed(0)  # the same initial weights on every rank and in every mode
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))


def batch(step: int, size: int, w_true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(10_000 + step)
    x = torch.randn(size, w_true.shape[0], generator=gen)
    return x, x @ w_true + 0.01 * torch.randn(size, w_true.shape[1], generator=gen)


def grad_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    model.zero_grad(set_to_none=False)
    with health.compute():
        nn.functional.mse_loss(model(x), y).backward()
    return parameters_to_vector([p.grad for p in model.parameters()]).detach()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="aios_host.workloads.ps_train")
    p.add_argument("--mode", choices=["ddp", "sync", "async"], required=True)
    p.add_argument("--servers", type=int, default=1, help="parameter-server ranks K (sync, async)")
    p.add_argument("--staleness", type=int, default=2, help="async: steps a worker may run ahead")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=240, help="global batch; a multiple of the data-parallel ranks")
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.8)
    p.add_argument("--target-loss", type=float, default=0.1)
    p.add_argument("--out", default=None, help="rank 0 writes its result (JSON) here")
    a = p.parse_args(argv)

    dist.init_process_group(backend="gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    layout = col.PsLayout(world, a.servers) if a.mode != "ddp" else None
    workers = layout.workers if layout else world
    if a.batch % workers:
        raise SystemExit(f"ps_train: --batch {a.batch} is not a multiple of the {workers} data-parallel ranks")
    torch.manual_seed(1)
    w_true = torch.randn(a.dim, a.dim) / a.dim**0.5
    eval_x, eval_y = batch(-1, 1024, w_true)
    model = make_model(a.dim, a.hidden)
    params = parameters_to_vector(model.parameters()).detach().clone()
    per = a.batch // workers
    losses: list[float] = []
    reached: dict[str, Any] = {}
    if a.mode == "ddp":  # built before the clock starts: its constructor broadcasts and builds buckets
        ddp = nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=a.lr)
    dist.barrier()
    t0 = time.perf_counter()

    def after_step(step: int) -> None:
        health.step()
        if rank != 0:
            return
        with torch.no_grad():
            loss = float(nn.functional.mse_loss(model(eval_x), eval_y))
        losses.append(loss)
        if not reached and loss <= a.target_loss:
            reached.update(step=step, seconds=time.perf_counter() - t0)

    health.step()
    if a.mode == "ddp":
        for step in range(1, a.steps + 1):
            x, y = batch(step, a.batch, w_true)
            x, y = x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per]
            opt.zero_grad(set_to_none=True)
            with health.compute():
                nn.functional.mse_loss(ddp(x), y).backward()
            opt.step()
            after_step(step)
    else:
        assert layout is not None
        lr, w = a.lr, layout.workers
        if a.mode == "sync":
            def update(shard: torch.Tensor, pushed_sum: torch.Tensor) -> None:
                shard.sub_(pushed_sum, alpha=lr / w)  # the mean of the W gradients
            ps = col.ParameterServer(layout, params, update)
        else:
            def update(shard: torch.Tensor, pushed: torch.Tensor) -> None:
                shard.sub_(pushed, alpha=lr / w)  # one of W pushes per round
            ps = col.ParameterServer(layout, params, update, staleness=a.staleness)
        if layout.is_server(rank):
            if a.mode == "sync":
                for _ in range(a.steps):
                    ps.serve_sync_step()
                    health.step()
            else:
                ps.serve_async()
        else:
            for step in range(1, a.steps + 1):
                x, y = batch(step, a.batch, w_true)
                x, y = x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per]
                g = grad_of(model, x, y)
                ps.push_pull(g, params)
                with torch.no_grad():
                    vector_to_parameters(params, model.parameters())
                after_step(step)
            ps.finish()
    final = parameters_to_vector(model.parameters()).detach()
    dist.barrier()
    dist.destroy_process_group()
    if rank == 0:
        res = {"mode": a.mode, "world": world, "servers": a.servers if layout else 0, "workers": workers,
               "steps": a.steps, "target_loss": a.target_loss, "steps_to_target": reached.get("step"),
               "seconds_to_target": reached.get("seconds"), "seconds": time.perf_counter() - t0,
               "first_loss": losses[0], "final_loss": losses[-1], "losses": losses,
               "params": final.tolist()}
        if a.out:
            with open(a.out, "w") as f:
                json.dump(res, f)
        print(f"ps_train {a.mode}: {world} ranks ({workers} data-parallel), loss {losses[0]:.4f} -> "
              f"{losses[-1]:.4f}, target {a.target_loss} at step {reached.get('step')} "
              f"({reached.get('seconds', float('nan')):.2f} s)", flush=True)
        return 0 if losses[-1] < losses[0] else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
