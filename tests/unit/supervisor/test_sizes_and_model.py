"""Benchmark sizes (nccl-tests style) and the ring model fit T = 2(N-1)(alpha + S/(N B))."""

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


def test_fit_recovers_alpha_and_bandwidth() -> None:
    pytest.importorskip("torch")
    from aios_host.workloads.collectives import bus_bandwidth, fit_ring_model

    alpha, bw, n = 50e-6, 2e9, 4
    sizes = [4096 * 4**i for i in range(9)]
    times = [2 * (n - 1) * (alpha + s / (n * bw)) for s in sizes]
    fit = fit_ring_model(sizes, times, n)
    assert abs(fit.alpha_s - alpha) / alpha < 1e-6 and abs(fit.bandwidth_Bps - bw) / bw < 1e-6
    assert fit.max_rel_err < 1e-9
    assert fit.predict_ps(sizes[-1]) > fit.predict(sizes[-1])
    assert bus_bandwidth(1.0, 4) == 1.5 and bus_bandwidth(1.0, 2) == 1.0
