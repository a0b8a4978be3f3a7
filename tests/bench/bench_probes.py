"""Cost of aios-host's whole probe set against bcc's runqlat-bpfcc alone, side by side.

Run: .venv/bin/python tests/bench/bench_probes.py [--rounds N] [--loops L] [--json]   (as root)

Per round, in a rotating order: `perf bench sched pipe -l L` (usec/op: two tasks passing a token
through pipes, i.e. a wakeup and a context switch per half-op, the probes' hottest path), run
twice per condition: as the issue states it (the two tasks wherever the scheduler puts them) and
pinned to one CPU (`taskset -c PIN`, -l 5L). Unpinned, each op crosses CPUs: on this VM that is an
IPI and an idle exit through the hypervisor, ~60 usec/op of which the probes are a small, noisy
part; pinned, an op is ~7 usec of pure scheduler work (2 wakeups, 2 switches), so the probes'
cost per event stands out of the noise. Conditions:
  none     no probes,
  aios     aios-host's whole probe set (all six probes, loaded in a child process the way the
           daemon loads them, draining its event buffers),
  runqlat  /usr/sbin/runqlat-bpfcc alone.
Reported: the median usec/op of each, the overhead (median over rounds of tool - none in the
same round), and the ratio
aios overhead / runqlat overhead (target: <= 0.5). Also each tool's start-up time (spawn ->
attached, i.e. interpreter + compile + load + attach) and RSS (steady VmRSS after the pipe bench,
and VmHWM, the peak) of its process.

Timings on a shared 2-core VM are noisy: compare only within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNQLAT = shutil.which("runqlat-bpfcc") or "/usr/sbin/runqlat-bpfcc"
PERF = shutil.which("perf") or "/usr/bin/perf"
TARGET_RATIO = 0.5


@dataclass
class ToolRun:
    startup_s: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    peak_mb: list[float] = field(default_factory=list)


def pipe_usec_per_op(loops: int, pin: int | None = None) -> float:
    argv = [PERF, "bench", "sched", "pipe", "-l", str(loops)]
    if pin is not None:
        argv = ["taskset", "-c", str(pin), *argv]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    m = re.search(r"([\d.]+)\s+usecs/op", out)
    if not m:
        raise RuntimeError(f"perf bench output without usecs/op:\n{out}")
    return float(m.group(1))


def _status_mb(pid: int) -> tuple[float, float]:
    text = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) / 1024
    hwm = int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) / 1024
    return rss, hwm


def start_tool(name: str) -> tuple[subprocess.Popen, float]:
    """Spawn the tool; return once it reports it is attached, with the time that took."""
    t0 = time.monotonic()
    if name == "aios":
        argv, ready = [sys.executable, str(Path(__file__).resolve()), "--serve"], "ready"
    else:
        argv, ready = [RUNQLAT, "3600", "1"], "Tracing"
    # both are Python programs: unbuffered, or the ready line arrives only when they exit
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
                         env=env)
    assert p.stdout is not None
    line = p.stdout.readline()
    if ready not in line:
        p.kill()
        raise RuntimeError(f"{name} did not start: {line!r}")
    return p, time.monotonic() - t0


def stop_tool(p: subprocess.Popen) -> None:
    p.terminate()
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def serve() -> int:
    """Child mode: load the whole probe set, say "ready", drain events until terminated."""
    import signal

    sys.path.insert(0, str(REPO))
    from aios_host import log
    from aios_host.probes.loader import LoadOptions, ProbeSet

    log.configure("warning", sink="json")  # stderr; stdout carries only the ready line

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with ProbeSet(options=LoadOptions(strict=True)) as probes:
        print(f"ready {probes.startup_s:.3f} {probes.choice.method}", flush=True)
        while True:
            probes.poll(timeout_ms=200)
            time.sleep(0.8)


MODES = ("spread", "pinned")


def _ratio(usec: dict[str, list[float]]) -> tuple[dict[str, float], float | None]:
    """Overhead of each tool: the median over rounds of (tool - none) within the same round, so
    that a slow round (the VM's neighbours) moves both sides of a difference together."""
    over = {k: statistics.median(t - n for t, n in zip(usec[k], usec["none"], strict=True))
            for k in ("aios", "runqlat")}
    return over, (over["aios"] / over["runqlat"] if over["runqlat"] > 0 else None)


def run(rounds: int, loops: int, pin: int) -> dict:
    order = ["none", "aios", "runqlat"]
    usec: dict[str, dict[str, list[float]]] = {m: {k: [] for k in order} for m in MODES}
    tools = {"aios": ToolRun(), "runqlat": ToolRun()}

    def measure(name: str) -> None:
        usec["spread"][name].append(pipe_usec_per_op(loops))
        usec["pinned"][name].append(pipe_usec_per_op(loops * 5, pin))

    for r in range(rounds):
        for name in order[r % 3:] + order[:r % 3]:  # rotate: no condition always first
            if name == "none":
                measure(name)
                continue
            p, startup = start_tool(name)
            try:
                time.sleep(0.5)
                measure(name)
                rss, hwm = _status_mb(p.pid)
            finally:
                stop_tool(p)
            tools[name].startup_s.append(startup)
            tools[name].rss_mb.append(rss)
            tools[name].peak_mb.append(hwm)
        print(f"round {r + 1}/{rounds}: " + "; ".join(
            f"{m}: " + ", ".join(f"{k} {usec[m][k][-1]:.2f}" for k in order) for m in MODES),
            file=sys.stderr, flush=True)
    modes = {}
    for m in MODES:
        med = {k: statistics.median(v) for k, v in usec[m].items()}
        over, ratio = _ratio(usec[m])
        modes[m] = {"usec_per_op": usec[m], "median_usec_per_op": med, "overhead_usec_per_op": over,
                    "ratio_aios_to_runqlat": ratio,
                    "meets_target": ratio is not None and ratio <= TARGET_RATIO}
    return {
        "loops": loops,
        "pinned_loops": loops * 5,
        "pin_cpu": pin,
        "rounds": rounds,
        "modes": modes,
        "target_ratio": TARGET_RATIO,
        "tools": {k: {**asdict(v), "median_startup_s": statistics.median(v.startup_s),
                      "median_rss_mb": statistics.median(v.rss_mb),
                      "median_peak_mb": statistics.median(v.peak_mb)} for k, v in tools.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--loops", type=int, default=100_000)
    ap.add_argument("--pin", type=int, default=1, metavar="CPU", help="CPU for the pinned runs (default 1)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        return serve()
    if os.geteuid() != 0:
        print("bench_probes: needs root (BPF programs)", file=sys.stderr)
        return 1
    res = run(args.rounds, args.loops, args.pin)
    if args.json:
        json.dump(res, sys.stdout, indent=2)
        print()
        return 0
    for m, what in (("spread", f"perf bench sched pipe -l {args.loops}"),
                    ("pinned", f"taskset -c {args.pin} perf bench sched pipe -l {args.loops * 5}")):
        r = res["modes"][m]
        med, over = r["median_usec_per_op"], r["overhead_usec_per_op"]
        print(f"{what}, {args.rounds} rounds, medians (usec/op)")
        print(f"  {'condition':<10} {'median':>8} {'overhead':>9}   all rounds (overhead: paired, median)")
        for k in ("none", "aios", "runqlat"):
            o = "" if k == "none" else f"{over[k]:+9.2f}"
            print(f"  {k:<10} {med[k]:8.2f} {o:>9}   " + " ".join(f"{x:.2f}" for x in r["usec_per_op"][k]))
        ratio = r["ratio_aios_to_runqlat"]
        print(f"  aios overhead / runqlat overhead = {'n/a' if ratio is None else f'{ratio:.2f}'} "
              f"(target <= {TARGET_RATIO}: {'met' if r['meets_target'] else 'NOT met'})\n")
    print("\nstart-up (spawn -> attached) and memory of the tool's process, medians")
    for k, t in res["tools"].items():
        print(f"  {k:<10} start-up {t['median_startup_s']:.2f} s   RSS {t['median_rss_mb']:.0f} MB   "
              f"peak {t['median_peak_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
