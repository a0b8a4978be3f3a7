"""Benchmark sizes (nccl-tests style), the ring and parameter-server models, their fits and crossover."""

from __future__ import annotations

import pytest

from aios_host.workloads.sizes import format_size, parse_sizes


def test_sizes() -> None:
    assert parse_sizes("4K:32K") == [4096, 8192, 16384, 32768]
    assert parse_sizes("4K:256M", 4)[-1] == 256 << 20 and len(parse_sizes("4K:256M", 4)) == 9
    assert parse_sizes("1M") == [1 << 20]
    assert parse_sizes("4K,1M") == [4096, 1 << 20]
    assert format_size(256 << 20) == "256M" and format_size(4096) == "4K" and format_size(100) == "100"
    for bad in ("4Q:8K", "8K:4K", "0:8K", "0", "65G", "1:99999999G"):  # 0 would loop for ever
        with pytest.raises(ValueError):
            parse_sizes(bad)


@pytest.mark.parametrize(("model", "world", "servers"), [("ring", 4, 0), ("ring", 2, 0), ("ps", 4, 1), ("ps", 4, 2),
                                                        ("ps", 3, 2)])
def test_fit_recovers_alpha_and_bandwidth(model: str, world: int, servers: int) -> None:
    pytest.importorskip("torch")
    from aios_host.workloads.collectives import fit_link_model, model_terms, predict

    alpha, bw = 50e-6, 2e9
    sizes = [4096 * 4**i for i in range(9)]
    times = []
    for s in sizes:
        steps, wire = model_terms(model, s, world, servers)
        times.append(steps * alpha + wire / bw)
    fit = fit_link_model(model, sizes, times, world, servers)
    assert abs(fit.alpha_s - alpha) / alpha < 1e-6 and abs(fit.bandwidth_Bps - bw) / bw < 1e-6
    assert fit.max_rel_err < 1e-9
    assert predict(fit, sizes[-1], world, servers) == pytest.approx(times[-1])


def test_model_terms_are_the_textbook_formulas() -> None:
    pytest.importorskip("torch")
    from aios_host.workloads.collectives import bus_bandwidth, model_terms

    m = 1 << 20
    assert model_terms("ring", m, 4) == (6.0, 6 * m / 4)  # 2(N-1) steps, 2(N-1)/N M per link
    assert model_terms("ps", m, 4, 1) == (2.0, 2 * 3 * m)  # one server: W M in, W M out
    assert model_terms("ps", m, 4, 2) == (2.0, 2 * 2 * m / 2)  # K = W = 2: M each way, like the ring
    assert bus_bandwidth(1.0, 4) == 1.5 and bus_bandwidth(1.0, 2) == 1.0


@pytest.mark.parametrize(("servers", "world"), [("0", 4), ("4", 4), ("5", 4), ("x", 4), ("1", 1)])
def test_a_bad_servers_value_is_one_line(servers: str, world: int) -> None:
    pytest.importorskip("torch")
    from aios_host.workloads.allreduce import algorithms

    with pytest.raises(ValueError) as exc:
        algorithms("torch,ring,ps", servers, world)
    assert "\n" not in str(exc.value) and "--servers" in str(exc.value)
    assert algorithms("ring,ps", "1,2,3", 4) == {"ring": ("ring", 0), "ps1": ("ps", 1), "ps2": ("ps", 2),
                                                   "ps3": ("ps", 3)}


def test_crossover_from_fitted_models() -> None:
    """Ring and PS fitted on the same link, compared at W data-parallel ranks: with K = W servers
    the parameter server wins on latency (small messages) and about ties on bandwidth; with K = 1
    it loses on large messages by about W."""
    pytest.importorskip("torch")
    from aios_host.workloads.collectives import LinkFit, predict
    from aios_host.workloads.crossover import best_ps, crossover_rows

    link = {"alpha_s": 50e-6, "bandwidth_Bps": 1e9, "max_rel_err": 0.0}
    res = {"world": 4, "columns": {"ring": ["ring", 0], "ps1": ["ps", 1]}, "rows": [],
           "fits": {"ring": {"model": "ring", **link}, "ps1": {"model": "ps", **link}}}
    rows = crossover_rows(res)
    small = next(r for r in rows if r["workers"] == 16 and r["size"] == 4096)
    assert small["faster"].startswith("ps") and small["ps_over_ring"] < 0.5
    big = next(r for r in rows if r["workers"] == 8 and r["size"] == 256 << 20)
    assert big["ps_best_k"] == 8 and 0.8 < big["ps_over_ring"] < 1.2  # K = W: a ring link's bytes
    assert big["ps1_over_ring"] > 6  # one server carries W M each way: about W times the ring
    ps, ring = LinkFit("ps", 50e-6, 1e9, 0.0), LinkFit("ring", 50e-6, 1e9, 0.0)
    assert best_ps(ps, 256 << 20, 8)[0] == 8
    assert predict(ps, 256 << 20, 9, 1) > predict(ring, 256 << 20, 8)
