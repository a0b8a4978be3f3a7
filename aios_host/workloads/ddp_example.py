"""Example DDP training job on synthetic data (CPU/gloo or GPU/NCCL), supervised by aios-host.

    aios-host job run examples/ddp-example.toml
    aios-host job run --name ddp --nproc 2 -- -m aios_host.workloads.ddp_example --steps 50

A small MLP learns a fixed random linear map y = x W* + noise; each rank draws its own batches
(its own seed), DistributedDataParallel averages gradients with AllReduce. Rank 0 prints the loss
every --log-every steps and the first/last loss at the end; the loss must fall. health.step()
after every optimizer step feeds the supervisor's hang and straggler detection; health.compute()
times forward+backward as the rank's own work.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from aios_host.supervisor import health


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="aios_host.workloads.ddp_example")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--log-every", type=int, default=20)
    a = p.parse_args(argv)

    backend = os.environ.get("AIOS_BACKEND") or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend=backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)

    torch.manual_seed(0)  # same target and same initial weights on every rank
    w_true = torch.randn(a.dim, a.dim, device=device) / a.dim**0.5
    model = nn.Sequential(nn.Linear(a.dim, a.hidden), nn.ReLU(), nn.Linear(a.hidden, a.dim)).to(device)
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.SGD(ddp.parameters(), lr=a.lr, momentum=0.9)
    gen = torch.Generator(device="cpu").manual_seed(1000 + rank)  # each rank its own data
    losses = []
    health.step()
    for step in range(1, a.steps + 1):
        x = torch.randn(a.batch, a.dim, generator=gen).to(device)
        y = x @ w_true + 0.01 * torch.randn(a.batch, a.dim, generator=gen).to(device)
        with health.compute():
            loss = nn.functional.mse_loss(ddp(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # DDP all-reduces gradient buckets here
        opt.step()
        health.step()
        avg = loss.detach().clone()
        dist.all_reduce(avg)
        losses.append(float(avg.item()) / world)
        if rank == 0 and (step % a.log_every == 0 or step == 1):
            print(f"step {step:>5} loss {losses[-1]:.5f}", flush=True)
    # every rank holds the same weights: DDP keeps replicas identical
    flat = torch.cat([q.detach().reshape(-1) for q in model.parameters()])
    ref = flat.clone()
    dist.broadcast(ref, src=0)
    same = torch.allclose(flat, ref)
    ok = torch.tensor([1 if same else 0], device=device)
    dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    if rank == 0:
        print(f"ddp_example: {world} ranks, loss {losses[0]:.5f} -> {losses[-1]:.5f}, "
              f"replicas {'identical' if ok.item() else 'DIFFER'}", flush=True)
    dist.destroy_process_group()
    return 0 if ok.item() and losses[-1] < losses[0] else 1


if __name__ == "__main__":
    raise SystemExit(main())
