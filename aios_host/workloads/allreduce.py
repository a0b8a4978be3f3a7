"""AllReduce benchmark in the style of nccl-tests' all_reduce_perf, run as a job's ranks:

    aios-host bench allreduce --nproc 4 --algos torch,ring,ps --servers 1,2 --sizes 4K:64M
    (or any launcher: torchrun --nproc-per-node 4 -m aios_host.workloads.allreduce --sizes 4K:1M)

For each size and algorithm (torch all_reduce, our ring, a parameter server with K = each of
--servers server ranks, shown as ps1, ps2, ...): the result is checked against the exact sum
first (small integers: exact in float32), one call is made with the byte counters reset (each
rank's sent/received bytes and role are gathered to rank 0; torch's own all_reduce is timed
only), then `warmup` untimed and `iters` timed calls; the time is the mean per call, the maximum
over ranks (the slowest rank decides when a collective is done); algbw = M / t, busbw = algbw *
2(N-1)/N. Rank 0 prints the table, each model fitted to what was measured with its error
(ring: T = 2(N-1)(alpha + M/(N B)); parameter server: T = 2(alpha + W M/(K B))), and the crossover
the fitted models predict (crossover.py).
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
from aios_host.workloads import collectives as col
from aios_host.workloads.sizes import format_size, parse_sizes


def algorithms(algos: str, servers: str, world: int) -> dict[str, tuple[str, int]]:
    """{column name: (algorithm, K)}; "ps" becomes one column per K in --servers. Raises
    ValueError with one line for a K the job cannot have."""
    out: dict[str, tuple[str, int]] = {}
    for a in (x for x in algos.split(",") if x):
        if a == "ps":
            for k_text in (x for x in servers.split(",") if x):
                try:
                    k = int(k_text)
                except ValueError:
                    raise ValueError(f"--servers {servers!r}: {k_text!r} is not a whole number") from None
                col.PsLayout(world, k)  # 1 <= K < N, or the one-line reason
                out[f"ps{k}"] = ("ps", k)
        elif a in ("torch", "ring"):
            out[a] = (a, 0)
        else:
            raise ValueError(f"--algos: unknown algorithm {a!r} (torch, ring, ps)")
    if not out:
        raise ValueError("--algos: nothing to run")
    return out


def _call(algo: str, k: int, t: torch.Tensor) -> None:
    if algo == "torch":
        col.torch_allreduce(t)
    elif algo == "ring":
        col.ring_allreduce(t)
    else:
        col.ps_allreduce(t, k)


def _contributes(algo: str, k: int, rank: int, world: int) -> bool:
    """Whether this rank's data is part of the sum (a parameter server's servers hold none)."""
    return algo != "ps" or not col.PsLayout(world, k).is_server(rank)


def _check(algo: str, k: int, numel: int, rank: int, world: int, device: torch.device) -> bool:
    pattern = (torch.arange(numel, dtype=torch.float32, device=device) % 7) + 1
    t = pattern * (rank + 1)
    _call(algo, k, t)
    if not _contributes(algo, k, rank, world):
        return True  # a server's tensor is not an output
    members = [r for r in range(world) if _contributes(algo, k, r, world)]
    return bool(torch.equal(t, pattern * float(sum(r + 1 for r in members))))


def _traffic(algo: str, k: int, t: torch.Tensor, rank: int, world: int) -> list[dict[str, Any]] | None:
    """One call with the counters reset; every rank's (role, sent, received), gathered."""
    if algo == "torch":
        return None
    col.TRAFFIC.reset()
    _call(algo, k, t)
    mine = torch.tensor([col.TRAFFIC.sent_bytes, col.TRAFFIC.recv_bytes], dtype=torch.int64)
    every = [torch.zeros(2, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(every, mine)
    lay = col.PsLayout(world, k) if algo == "ps" else None
    return [{"rank": r, "role": lay.role(r) if lay else "peer", "sent_bytes": int(v[0]), "recv_bytes": int(v[1])}
            for r, v in enumerate(every)]


def _time(algo: str, k: int, t: torch.Tensor, warmup: int, iters: int, device: torch.device) -> float:
    for _ in range(warmup):
        _call(algo, k, t)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(iters):
        _call(algo, k, t)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = (time.perf_counter() - t0) / iters
    worst = torch.tensor([elapsed], dtype=torch.float64)
    if device.type == "cuda":
        worst = worst.to(device)
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    health.step()
    return float(worst.item())


def fits(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each counted algorithm's model fitted to its measured times, with the model's predictions."""
    rows, world = res["rows"], res["world"]
    out: dict[str, dict[str, Any]] = {}
    if world < 2 or len(rows) < 2:
        return out
    for name, (algo, k) in res["columns"].items():
        if algo == "torch":
            continue
        sizes = [r["size"] for r in rows]
        fit = col.fit_link_model(algo, sizes, [r[name]["time_s"] for r in rows], world, k)
        out[name] = {"model": algo, "servers": k, "alpha_s": fit.alpha_s, "bandwidth_Bps": fit.bandwidth_Bps,
                     "max_rel_err": fit.max_rel_err,
                     "model_s": [col.predict(fit, s, world, k) for s in sizes]}
    return out


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
    columns = algorithms(args.algos, args.servers, world)
    rows = []
    ok_all = True
    for size in sizes:
        numel = max(1, size // 4)
        row: dict[str, Any] = {"size": numel * 4, "count": numel}
        for name, (algo, k) in columns.items():
            ok = _check(algo, k, numel, rank, world, device) if args.check else True
            flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            ok = bool(flag.item())
            ok_all &= ok
            iters = args.iters
            if args.max_bytes_per_algo and size * iters > args.max_bytes_per_algo:
                iters = max(args.min_iters, args.max_bytes_per_algo // size)
            t = torch.ones(numel, dtype=torch.float32, device=device)
            ranks = _traffic(algo, k, t, rank, world) if device.type == "cpu" else None
            secs = _time(algo, k, t, args.warmup, iters, device)
            algbw = row["size"] / secs
            row[name] = {"time_s": secs, "algbw_Bps": algbw, "busbw_Bps": col.bus_bandwidth(algbw, world),
                         "ok": ok, "iters": iters, "ranks": ranks}
            del t
        rows.append(row)
    result: dict[str, Any] = {"world": world, "backend": backend, "warmup": args.warmup, "iters": args.iters,
                              "columns": columns, "rows": rows, "ok": ok_all}
    result["fits"] = fits(result)
    dist.barrier()
    dist.destroy_process_group()
    return result


def render(res: dict[str, Any]) -> str:
    from aios_host.workloads.crossover import crossover_table

    world, columns = res["world"], res["columns"]
    lines = [f"# aios-host bench allreduce: N={world} ranks, {res['backend']}, float32, sum; "
             f"warmup {res['warmup']}, iters {res['iters']}; time = max over ranks",
             "# busbw = algbw * 2(N-1)/N (nccl-tests); GB/s = 1e9 B/s; psK = parameter server, K server ranks"]
    head = f"{'size':>8} {'count':>10}"
    for a in columns:
        head += f" | {a + ' time(us)':>15} {'algbw':>7} {'busbw':>7}"
    lines.append(head + " | check")
    for r in res["rows"]:
        line = f"{format_size(r['size']):>8} {r['count']:>10}"
        for a in columns:
            m = r[a]
            line += f" | {m['time_s'] * 1e6:>15.1f} {m['algbw_Bps'] / 1e9:>7.3f} {m['busbw_Bps'] / 1e9:>7.3f}"
        line += " | " + ("ok" if all(r[a]["ok"] for a in columns) else "WRONG")
        lines.append(line)
    counted = [a for a in columns if columns[a][0] != "torch"]
    if counted and res["rows"] and res["rows"][-1][counted[0]].get("ranks"):
        last = res["rows"][-1]
        lines.append(f"# bytes per call at {format_size(last['size'])}, counted in send/recv (M = {last['size']}): "
                     "rank role sent recv (sent/M)")
        for a in counted:
            parts = [f"{x['rank']}:{x['role'][0]} {x['sent_bytes']}/{x['recv_bytes']} "
                     f"({x['sent_bytes'] / last['size']:.3f})" for x in last[a]["ranks"]]
            lines.append(f"  {a:>5}: " + ", ".join(parts))
    for a, fit in res.get("fits", {}).items():
        eq = ("2(N-1)(alpha + M/(N B))" if fit["model"] == "ring"
              else f"2(alpha + W M/(K B)), K={fit['servers']}, W={world - fit['servers']}")
        lines.append(f"# {a} model T = {eq}: alpha = {fit['alpha_s'] * 1e6:.1f} us, "
                     f"B = {fit['bandwidth_Bps'] / 1e9:.3f} GB/s, max |error| {fit['max_rel_err'] * 100:.0f}%")
        meas = [r[a]["time_s"] for r in res["rows"]]
        lines.append("  meas/model: " + " ".join(f"{format_size(r['size'])}={m / p:.2f}"
                                                 for r, m, p in zip(res["rows"], meas, fit["model_s"], strict=True)))
    table = crossover_table(res)
    if table:
        lines.append(table)
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
    p.add_argument("--servers", default="1", help="parameter-server ranks K, comma separated (1 <= K < N)")
    p.add_argument("--backend", default=None, help="gloo | nccl (default: AIOS_BACKEND, else by device)")
    p.add_argument("--no-check", dest="check", action="store_false")
    p.add_argument("--json", action="store_true", help="rank 0 prints JSON instead of the table")
    p.add_argument("--out", default=None, help="rank 0 also writes the JSON result here")
    p.add_argument("--plot", default=None, help="rank 0 also draws the measurements and models (PNG)")
    p.add_argument("--quiet", action="store_true", help="rank 0 prints nothing (the result goes to --out)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.iters < 1 or args.warmup < 0:
        print("iters must be >= 1 and warmup >= 0", file=sys.stderr)
        return 2
    try:
        algorithms(args.algos, args.servers, int(os.environ.get("WORLD_SIZE", "2")))
    except ValueError as exc:
        print(f"aios_host.workloads.allreduce: {exc}", file=sys.stderr)
        return 2
    res = run(args)
    if int(os.environ.get("RANK", "0")) == 0:
        if args.out:
            with open(args.out, "w") as f:
                json.dump(res, f)
        if args.plot:
            from aios_host.workloads.crossover import plot

            plot(res, args.plot)
        if not args.quiet:
            print(json.dumps(res) if args.json else render(res), flush=True)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
