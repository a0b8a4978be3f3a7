"""Which AllReduce is faster where: the fitted models of a bench run, extrapolated.

From `aios-host bench allreduce`'s result: the ring's fit (alpha, B) and the parameter server's
(the best-fitting K's alpha, B: one server link) predict, for W data-parallel ranks (each holding
M bytes to sum), a ring over those W ranks against a parameter server of W workers and K more
ranks that only serve:

    T_ring = 2(W-1)(alpha_r + M/(W B_r))        T_ps(K) = 2(alpha_p + W M/(K B_p))

Compared at the same W, not the same rank count: a parameter server with K of N ranks as servers
sums only N-K ranks' data, so at equal N it does less work, and "fewer workers" would always win.
The table gives, per W and M, the faster of the ring and the parameter server at its best K (K up
to W: with K = W a server's link carries M each way, what a ring link carries, in 2 steps instead
of 2(W-1), at the price of W extra ranks), and T_ps/T_ring; K = 1 shows what a single server
costs. The run's own measurements (at its N ranks in all) are in its table, not here.
plot() draws the measurements with their models and the predicted ratios (matplotlib).
"""

from __future__ import annotations

from typing import Any

from aios_host.workloads import collectives as col
from aios_host.workloads.sizes import format_size

CROSSOVER_N = (2, 4, 8, 16, 32)
CROSSOVER_M = (4 << 10, 64 << 10, 1 << 20, 16 << 20, 256 << 20)


def _link(fit: dict[str, Any]) -> col.LinkFit:
    return col.LinkFit(fit["model"], fit["alpha_s"], fit["bandwidth_Bps"], fit["max_rel_err"])


def models(res: dict[str, Any]) -> tuple[col.LinkFit, col.LinkFit] | None:
    f = res.get("fits", {})
    ps = [v for v in f.values() if v["model"] == "ps"]
    if "ring" not in f or not ps:
        return None
    return _link(f["ring"]), _link(min(ps, key=lambda v: v["max_rel_err"]))


def ps_time(ps: col.LinkFit, size: float, workers: int, servers: int) -> float:
    """T_ps for `workers` data-parallel ranks and `servers` more (predict() takes N = W + K)."""
    return col.predict(ps, size, workers + servers, servers)


def best_ps(ps: col.LinkFit, size: float, workers: int) -> tuple[int, float]:
    """(K, T) of the fastest parameter server for W workers, K from 1 to W."""
    return min(((k, ps_time(ps, size, workers, k)) for k in range(1, workers + 1)), key=lambda kt: kt[1])


def crossover_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    fitted = models(res)
    if fitted is None:
        return []
    ring, ps = fitted
    rows = []
    for w in CROSSOVER_N:
        for m in CROSSOVER_M:
            t_ring = col.predict(ring, m, w)
            k, t_ps = best_ps(ps, m, w)
            t_ps1 = ps_time(ps, m, w, 1)
            rows.append({"workers": w, "size": m, "ring_s": t_ring, "ps_best_k": k, "ps_s": t_ps,
                         "faster": "ring" if t_ring <= t_ps else f"ps{k}", "ps_over_ring": t_ps / t_ring,
                         "ps1_over_ring": t_ps1 / t_ring})
    return rows


def crossover_table(res: dict[str, Any]) -> str:
    rows = crossover_rows(res)
    if not rows:
        return ""
    ring, ps = models(res)  # type: ignore[misc]
    out = [f"# crossover predicted by the fits (ring alpha {ring.alpha_s * 1e6:.1f} us "
           f"B {ring.bandwidth_Bps / 1e9:.3f} GB/s; ps alpha {ps.alpha_s * 1e6:.1f} us "
           f"B {ps.bandwidth_Bps / 1e9:.3f} GB/s), at W data-parallel ranks (a PS adds K server ranks): "
           "faster, T_ps/T_ring at the best K, and with K = 1"]
    out.append(f"{'M':>6} | " + " | ".join(f"{'W=' + str(n):>20}" for n in CROSSOVER_N))
    for m in CROSSOVER_M:
        cells = []
        for n in CROSSOVER_N:
            r = next(x for x in rows if x["workers"] == n and x["size"] == m)
            cell = f"{r['faster']} {r['ps_over_ring']:.2f} {r['ps1_over_ring']:.2f}"
            cells.append(f"{cell:>20}")
        out.append(f"{format_size(m):>6} | " + " | ".join(cells))
    return "\n".join(out)


def plot(res: dict[str, Any], path: str) -> None:
    """Two panels: measured time per call (points) and each fitted model (lines) against M; the
    predicted T_ps(best K) / T_ring against M for several N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    world = res["world"]
    sizes = [r["size"] for r in res["rows"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    for name in res["columns"]:
        pts = ax1.loglog(sizes, [r[name]["time_s"] for r in res["rows"]], "o", label=f"{name} measured")
        fit = res.get("fits", {}).get(name)
        if fit:
            ax1.loglog(sizes, fit["model_s"], "-", color=pts[0].get_color(),
                       label=f"{name} model (max err {fit['max_rel_err'] * 100:.0f}%)")
    ax1.set_xlabel("message size M (bytes)")
    ax1.set_ylabel("time per AllReduce (s)")
    ax1.set_title(f"N = {world} ranks, {res['backend']}")
    ax1.legend(fontsize=7)
    fitted = models(res)
    if fitted:
        ring, ps = fitted
        grid = [4096 * 2**i for i in range(17)]
        for n in CROSSOVER_N:
            line = ax2.loglog(grid, [best_ps(ps, m, n)[1] / col.predict(ring, m, n) for m in grid],
                              label=f"W = {n}, best K")
            ax2.loglog(grid, [ps_time(ps, m, n, 1) / col.predict(ring, m, n) for m in grid], "--",
                       color=line[0].get_color(), label=f"W = {n}, K = 1")
        ax2.axhline(1.0, color="grey", lw=0.8)
        ax2.set_xlabel("message size M (bytes)")
        ax2.set_ylabel("T_ps / T_ring (predicted)")
        ax2.set_title("W data-parallel ranks; below 1: the parameter server is faster")
        ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
