"""A small collective loop for checking launchers (aios-host, torchrun) and the supervisor.

    python -m aios_host.workloads.gangcheck --steps 50 [--fail-rank 1 --fail-step 5 ...]

Each rank: init_process_group (env://), one all_reduce ("first collective"), then `steps` steps of
all_reduce + health.step(). Rank 0 appends "first_collective <restart> <unix time>" to --mark.
Fault injection (applies on restart --fault-restart only, -1 = every restart):
  --fail-rank R --fail-step K --fail-code C   rank R exits C at step K (C = "kill": SIGKILL itself)
  --hang-rank R --hang-step K                 rank R stops stepping (sleeps) at step K
  --slow-rank R --slow-ms M                   rank R spends M extra ms of "compute" per step
  --spawn-daemon                              every rank starts a `sleep` in a new session, as a
                                              careless data loader or helper would (an orphan
                                              unless the launcher kills by cgroup)
  --ignore-sigterm                            ranks ignore SIGTERM (stop must escalate)
  --pids DIR                                  each rank writes DIR/rank-<r>.pid (and daemon pids)
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

import torch
import torch.distributed as dist

from aios_host.supervisor import health


def _init(restart: int) -> None:
    """Under torchrun only: env:// rendezvous on the agent's store with a per-restart key prefix.
    torchrun's workers share the agent's TCPStore across restarts (TORCHELASTIC_USE_AGENT_STORE=
    True) and, with torch 2.13 and gloo, a restarted gang reads the dead gang's addresses from it
    and fails in connectFullMesh ("Connection refused"); the prefix avoids that. Under aios-host
    rank 0 hosts a fresh store for every restart, and plain init_process_group() is used."""
    from datetime import timedelta

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=False, timeout=timedelta(seconds=300))
    dist.init_process_group(backend=os.environ.get("AIOS_BACKEND", "gloo"),
                            store=dist.PrefixStore(f"gangcheck/restart{restart}", store),
                            rank=rank, world_size=world)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="aios_host.workloads.gangcheck")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--step-ms", type=float, default=0.0, help="sleep per step (compute stand-in)")
    p.add_argument("--numel", type=int, default=1024)
    p.add_argument("--mark", default=None)
    p.add_argument("--pids", default=None)
    p.add_argument("--fault-restart", type=int, default=0)
    p.add_argument("--fail-rank", type=int, default=-1)
    p.add_argument("--fail-step", type=int, default=0)
    p.add_argument("--fail-code", default="3")
    p.add_argument("--hang-rank", type=int, default=-1)
    p.add_argument("--hang-step", type=int, default=0)
    p.add_argument("--slow-rank", type=int, default=-1)
    p.add_argument("--slow-ms", type=float, default=0.0)
    p.add_argument("--spawn-daemon", action="store_true")
    p.add_argument("--ignore-sigterm", action="store_true")
    p.add_argument("--forever", action="store_true", help="keep stepping until killed")
    p.add_argument("--plain-init", action="store_true",
                   help="init_process_group(env://) without the per-restart key prefix")
    a = p.parse_args(argv)

    restart = int(os.environ.get("AIOS_RESTART", os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")))
    faults = a.fault_restart in (-1, restart)
    if a.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if a.plain_init or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        dist.init_process_group(backend=os.environ.get("AIOS_BACKEND", "gloo"))
    else:
        _init(restart)
    rank, world = dist.get_rank(), dist.get_world_size()
    t = torch.ones(a.numel)
    dist.all_reduce(t)
    assert int(t[0].item()) == world, t[0]
    if rank == 0 and a.mark:
        with open(a.mark, "a") as f:
            f.write(f"first_collective {restart} {time.time():.6f}\n")
    if a.pids:
        os.makedirs(a.pids, exist_ok=True)
        with open(os.path.join(a.pids, f"rank-{rank}.pid"), "w") as f:
            f.write(f"{os.getpid()}\n")
    if a.spawn_daemon:
        d = subprocess.Popen(["sleep", "3600"], start_new_session=True, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if a.pids:
            with open(os.path.join(a.pids, f"daemon-{rank}.pid"), "w") as f:
                f.write(f"{d.pid}\n")
    health.step()
    step = 0
    while a.forever or step < a.steps:
        step += 1
        with health.compute():
            if a.step_ms:
                time.sleep(a.step_ms / 1000)
            if faults and rank == a.slow_rank:
                time.sleep(a.slow_ms / 1000)
        if faults and rank == a.fail_rank and step == a.fail_step:
            print(f"rank {rank}: injected failure at step {step} ({a.fail_code})", flush=True)
            if a.fail_code == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            # os._exit, not sys.exit: interpreter shutdown with a live gloo process group can end
            # in std::terminate (SIGABRT) instead of the status we were asked to inject.
            sys.stderr.flush()
            os._exit(int(a.fail_code))
        if faults and rank == a.hang_rank and step == a.hang_step:
            print(f"rank {rank}: injected hang at step {step}", flush=True)
            while True:
                time.sleep(3600)
        t.fill_(1.0)
        dist.all_reduce(t)
        health.step()
    dist.barrier()
    if rank == 0:
        print(f"gangcheck: {world} ranks, {step} steps, restart {restart}: ok", flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
