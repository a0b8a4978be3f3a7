"""One model trained three ways as aios-host jobs, side by side in one run: DDP (ring AllReduce over
N ranks), a synchronous and an asynchronous parameter server (K server ranks, N-K workers), from
the same seed (aios_host/workloads/ps_train.py). Reported per way: steps and seconds to the target
loss, the final loss, seconds for all steps, and the largest difference of the final parameters
from DDP's (sync PS must agree within float tolerance; async takes another path).

Run (root): .venv/bin/python tests/bench/bench_ps_train.py [--nproc 4] [--servers 1,2] [--steps 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def train(mode: str, nproc: int, steps: int, out: Path, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "aios_host", "job", "run", "--name", f"bench-pst-{mode}-{uuid.uuid4().hex[:6]}",
           "--nproc", str(nproc), "--quiet", "--", "-m", "aios_host.workloads.ps_train", "--mode", mode,
           "--steps", str(steps), "--out", str(out), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    if r.returncode != 0:
        raise SystemExit(f"bench_ps_train: {mode} failed: {r.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", type=int, default=4)
    ap.add_argument("--servers", default="1,2")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_ps_train: needs root (jobs run in cgroups)", file=sys.stderr)
        return 1
    import torch

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        ddp = train("ddp", args.nproc, args.steps, d / "ddp.json")
        runs.append(("ddp", ddp))
        for k in (int(x) for x in args.servers.split(",") if x):
            runs.append((f"sync K={k}", train("sync", args.nproc, args.steps, d / f"s{k}.json", "--servers", str(k))))
            runs.append((f"async K={k}", train("async", args.nproc, args.steps, d / f"a{k}.json", "--servers", str(k))))
    ref = torch.tensor(ddp["params"])
    rows = []
    for label, r in runs:
        diff = float((torch.tensor(r["params"]) - ref).abs().max())
        rows.append({"way": label, "workers": r["workers"], "servers": r["servers"],
                     "steps_to_target": r["steps_to_target"], "seconds_to_target": r["seconds_to_target"],
                     "final_loss": r["final_loss"], "seconds": r["seconds"], "max_abs_diff_vs_ddp": diff})
    if args.json:
        print(json.dumps({"nproc": args.nproc, "steps": args.steps, "target_loss": ddp["target_loss"], "rows": rows}))
        return 0
    print(f"training three ways: {args.nproc} ranks, {args.steps} steps, target loss {ddp['target_loss']}, "
          "same seed, same global batch per step")
    print(f"{'way':<12} {'workers':>7} {'steps->target':>13} {'s->target':>9} {'final loss':>10} "
          f"{'s total':>8} {'max |p - p_ddp|':>16}")
    for r in rows:
        st = r["seconds_to_target"]
        print(f"{r['way']:<12} {r['workers']:>7} {str(r['steps_to_target']):>13} "
              f"{(f'{st:.2f}' if st is not None else '-'):>9} {r['final_loss']:>10.4f} {r['seconds']:>8.2f} "
              f"{r['max_abs_diff_vs_ddp']:>16.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
