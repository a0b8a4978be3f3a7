"""AllReduce benchmark in the style of nccl-tests' all_reduce_perf, run as a job's ranks:

    aios-host bench allreduce --nproc 4 --sizes 4K:256M
    (or any launcher: torchrun --nproc-per-node 4 -m aios_host.workloads.allreduce --sizes 4K:1M)

For each size and algorithm (torch all_reduce, our ring, parameter server): `warmup` untimed
runs, then `iters` timed runs; the time is the mean per run, the maximum over ranks (the slowest
rank decides when a collective is done); algbw = S / t, busbw = algbw * 2(N-1)/N. Each
algorithm's result is checked against the exact sum first (small integers: exact in float32).
Rank 0 prints the table and the ring model's fit T = 2(N-1)(alpha + S/(N B)), measured vs model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import torch
import torch.distributed as dist

from aios_host.supervisor import health
from aios_host.workloads.collectives import ALGORITHMS, bus_bandwidth, fit_ring_model
from aios_host.workloads.sizes import format_size, parse_sizes


def _check(algo: str, numel: int, rank: int, world: int, device: torch.device) -> bool:
    pattern = (torch.arange(numel, dtype=torch.float32, device=device) % 7) + 1
    t = pattern * (rank + 1)
    ALGORITHMS[algo](t)
    expected = pattern * (world * (world + 1) / 2)
    return bool(torch.equal(t, expected))


def _time(algo: str, t: torch.Tensor, warmup: int, iters: int, device: torch.device) -> float:
    fn = ALGORITHMS[algo]
    for _ in range(warmup):
        fn(t)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn(t)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = (time.perf_counter() - t0) / iters
    worst = torch.tensor([elapsed], dtype=torch.float64)
    if device.type == "cuda":
        worst = worst.to(device)
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    health.step()
    return float(worst.item())


def run(args: argparse.Namespace) -> dict[str, Any]:
    backend = args.backend or os.environ.get("AIOS_BACKEND") or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend=backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    health.step()
    sizes = parse_sizes(args.sizes, args.factor)
    algos = [a for a in args.algos.split(",") if a]
    rows = []
    ok_all = True
    for size in sizes:
        numel = max(1, size // 4)
        row: dict[str, Any] = {"size": numel * 4, "count": numel}
        for algo in algos:
            ok = _check(algo, numel, rank, world, device) if args.check else True
            flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            ok = bool(flag.item())
            ok_all &= ok
            iters = args.iters
            if args.max_bytes_per_algo and size * iters > args.max_bytes_per_algo:
                iters = max(args.min_iters, args.max_bytes_per_algo // size)
            t = torch.ones(numel, dtype=torch.float32, device=device)
            secs = _time(algo, t, args.warmup, iters, device)
            algbw = row["size"] / secs
            row[algo] = {"time_s": secs, "algbw_Bps": algbw, "busbw_Bps": bus_bandwidth(algbw, world),
                         "ok": ok, "iters": iters}
            del t
        rows.append(row)
    result: dict[str, Any] = {"world": world, "backend": backend, "warmup": args.warmup, "iters": args.iters,
                              "algos": algos, "rows": rows, "ok": ok_all}
    if "ring" in algos and world >= 2 and len(rows) >= 2:
        fit = fit_ring_model([r["size"] for r in rows], [r["ring"]["time_s"] for r in rows], world)
        result["ring_fit"] = {"alpha_s": fit.alpha_s, "bandwidth_Bps": fit.bandwidth_Bps,
                              "max_rel_err": fit.max_rel_err,
                              "model_s": [fit.predict(r["size"]) for r in rows],
                              "ps_model_s": [fit.predict_ps(r["size"]) for r in rows]}
    dist.barrier()
    dist.destroy_process_group()
    return result


def render(res: dict[str, Any]) -> str:
    world, algos = res["world"], res["algos"]
    lines = [f"# aios-host bench allreduce: N={world} ranks, {res['backend']}, float32, sum; "
             f"warmup {res['warmup']}, iters {res['iters']}; time = max over ranks",
             "# busbw = algbw * 2(N-1)/N (nccl-tests); GB/s = 1e9 B/s"]
    head = f"{'size':>8} {'count':>10}"
    for a in algos:
        head += f" | {a + ' time(us)':>15} {'algbw':>7} {'busbw':>7}"
    lines.append(head + " | check")
    for r in res["rows"]:
        line = f"{format_size(r['size']):>8} {r['count']:>10}"
        for a in algos:
            m = r[a]
            line += f" | {m['time_s'] * 1e6:>15.1f} {m['algbw_Bps'] / 1e9:>7.3f} {m['busbw_Bps'] / 1e9:>7.3f}"
        line += " | " + ("ok" if all(r[a]["ok"] for a in algos) else "WRONG")
        lines.append(line)
    fit = res.get("ring_fit")
    if fit:
        lines.append(f"# ring model T = 2(N-1)(alpha + S/(N B)): alpha = {fit['alpha_s'] * 1e6:.1f} us, "
                     f"B = {fit['bandwidth_Bps'] / 1e9:.3f} GB/s, max |error| {fit['max_rel_err'] * 100:.0f}%")
        lines.append(f"{'size':>8} | {'ring meas(us)':>14} {'model(us)':>11} {'meas/model':>10} | "
                     f"{'ps meas(us)':>12} {'ps model(us)':>13}")
        for r, m, pm in zip(res["rows"], fit["model_s"], fit["ps_model_s"], strict=True):
            meas = r["ring"]["time_s"]
            ps = r.get("ps", {}).get("time_s")
            ps_txt = f"{ps * 1e6:>12.1f}" if ps is not None else f"{'-':>12}"
            lines.append(f"{format_size(r['size']):>8} | {meas * 1e6:>14.1f} {m * 1e6:>11.1f} "
                         f"{meas / m:>10.2f} | {ps_txt} {pm * 1e6:>13.1f}")
    lines.append("# correctness: " + ("all results exact" if res["ok"] else "SOME RESULTS WRONG"))
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aios_host.workloads.allreduce", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="4K:256M", help="min:max (x factor) or a,b,c (default 4K:256M)")
    p.add_argument("--factor", type=int, default=2, help="size multiplication factor (default 2)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--min-iters", type=int, default=20, help="floor when --max-bytes-per-algo cuts iters")
    p.add_argument("--max-bytes-per-algo", type=int, default=0,
                   help="cap iters x size per algorithm and size (0 = no cap)")
    p.add_argument("--algos", default="torch,ring,ps")
    p.add_argument("--backend", default=None, help="gloo | nccl (default: AIOS_BACKEND, else by device)")
    p.add_argument("--no-check", dest="check", action="store_false")
    p.add_argument("--json", action="store_true", help="rank 0 prints JSON instead of the table")
    p.add_argument("--out", default=None, help="rank 0 also writes the JSON result here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.iters < 1 or args.warmup < 0:
        print("iters must be >= 1 and warmup >= 0", file=sys.stderr)
        return 2
    res = run(args)
    if int(os.environ.get("RANK", "0")) == 0:
        if args.out:
            with open(args.out, "w") as f:
                json.dump(res, f)
        print(json.dumps(res) if args.json else render(res), flush=True)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
