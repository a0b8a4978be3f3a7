"""A memory squeeze three ways, side by side in one VM boot: the kernel alone, systemd-oomd, aios-host.

Run (host, root): .venv/bin/python tests/bench/bench_memguard.py [--runs 10] [--out DIR] [--json]
It boots the QEMU test VM (3 GiB, 2 vCPUs, no swap) once and runs the guest side there (`--guest`).

Each run: a protected workload (memprot: holds 300 MiB and keeps touching it, counting rounds) as a
transient unit in prot.slice; after it settles, a batch workload (memhog: 32 MiB more every 0.1 s)
in batch.slice, until one of them dies or 90 s pass. Ways:
  kernel     nothing watches: the kernel's OOM killer decides;
  oomd       systemd-oomd: batch.slice ManagedOOMMemoryPressure=kill, limit 10%, oomd.conf
             DefaultMemoryPressureDurationSec=2s (its shortest useful setting: what a user would tune);
  aios-host  the installed service with [memory_guard] enabled: prot protected (priority 10,
             memory.protect), batch priority 0; both matched by comm and moved into their classes.
Reported per way: protected survival (runs out of --runs), protected throughput during the squeeze /
solo (rounds per second, solo measured first in the same boot), seconds from the hog's start to the
first action (the kernel's or oomd's kill from the kernel log / oomd's journal, aios-host's first
memory_guard step), and who was killed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tests.vm import squeeze  # noqa: E402 - the workloads and policy the VM test uses too

POLICY = squeeze.policy("memory squeeze bench")


def sh(*argv: str, check: bool = False, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: {out.stderr.strip()}")
    return out


def unit_pid(unit: str) -> int:
    out = sh("systemctl", "show", unit, "--property=MainPID", "--value").stdout.strip()
    return int(out or 0)


def one_run(way: str, i: int) -> dict:
    rfile = Path(f"/tmp/prot-{way}-{i}.rate")
    rfile.unlink(missing_ok=True)
    sh("systemctl", "reset-failed", check=False)
    sh("systemd-run", f"--unit=memprot-{way}-{i}", "--slice=prot.slice", squeeze.exe("memprot"), "-c",
       squeeze.PROT, str(rfile),
       check=True)
    time.sleep(7)  # settle (aios-host: its 5 s rescan moves it into its class)
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    t_solo_end = time.monotonic()
    t0, t0_unix = time.monotonic(), time.time()
    sh("systemd-run", f"--unit=memhog-{way}-{i}", "--slice=batch.slice", squeeze.exe("memhog"), "-c",
       squeeze.HOG, "32", check=True)
    hog, prot = f"memhog-{way}-{i}.service", f"memprot-{way}-{i}.service"
    while time.monotonic() - t0 < 90:
        if unit_pid(hog) == 0 or unit_pid(prot) == 0:
            break
        time.sleep(0.2)
    t_end = time.monotonic()
    time.sleep(1)
    prot_alive, hog_alive = unit_pid(prot) != 0, unit_pid(hog) != 0
    res = {"way": way, "run": i, "prot_survived": prot_alive, "hog_killed": not hog_alive,
           "squeeze_s": round(t_end - t0, 2),
           "prot_rate_solo": squeeze.rate(rfile, t_solo_end - 5, t_solo_end),
           "prot_rate_squeeze": squeeze.rate(rfile, t0, t_end)}
    kern = sh("journalctl", "-k", "--since", since, "-o", "json", "--no-pager").stdout
    kills = [json.loads(x) for x in kern.splitlines() if x.startswith("{") and "Killed process" in x]
    firsts = [int(k["__REALTIME_TIMESTAMP"]) / 1e6 for k in kills]
    res["kernel_killed"] = [k.get("MESSAGE", "")[:120] for k in kills]
    if way == "oomd":
        j = sh("journalctl", "-u", "systemd-oomd", "--since", since, "-o", "json", "--no-pager").stdout
        acts = [json.loads(x) for x in j.splitlines() if x.startswith("{") and "Killed" in x]
        firsts += [int(a["__REALTIME_TIMESTAMP"]) / 1e6 for a in acts]
        res["oomd_actions"] = [a.get("MESSAGE", "")[:160] for a in acts]
    if way == "aios-host":
        acts = squeeze.guard_events(since)
        firsts += [int(a["__REALTIME_TIMESTAMP"]) / 1e6 for a in acts]
        res["guard_steps"] = squeeze.steps_of(acts)
    res["first_action_s"] = round(min(firsts) - t0_unix, 2) if firsts else None
    sh("systemctl", "stop", hog, prot)
    time.sleep(2)
    return res


def guest_main(args: argparse.Namespace) -> int:
    out = Path(args.out or "/out")
    results = []
    ways = args.ways.split(",")
    sh("systemctl", "stop", "systemd-oomd", "systemd-oomd.socket")
    for i in range(args.runs if "kernel" in ways else 0):
        results.append(one_run("kernel", i))
    # systemd-oomd as a user would set it up for the batch slice
    Path("/etc/systemd/oomd.conf.d").mkdir(parents=True, exist_ok=True)
    Path("/etc/systemd/oomd.conf.d/bench.conf").write_text("[OOM]\nDefaultMemoryPressureDurationSec=2s\n")
    sh("systemctl", "start", "systemd-oomd.socket", "systemd-oomd", check=True)
    sh("systemctl", "set-property", "--runtime", "batch.slice", "ManagedOOMMemoryPressure=kill",
       "ManagedOOMMemoryPressureLimit=10%", check=True)
    for i in range(args.runs if "oomd" in ways else 0):
        results.append(one_run("oomd", i))
    sh("systemctl", "stop", "systemd-oomd", "systemd-oomd.socket")
    sh("systemctl", "set-property", "--runtime", "batch.slice", "ManagedOOMMemoryPressure=auto")
    sh("bash", str(REPO / "systemd/install.sh"), "install", check=True, timeout=600)
    Path("/etc/aios-host/policy.toml").write_text(POLICY)
    sh("systemctl", "start", "aios-host.service", check=True, timeout=300)
    for i in range(args.runs if "aios-host" in ways else 0):
        results.append(one_run("aios-host", i))
    (out / "aios-host.journal").write_text(sh("journalctl", "-u", "aios-host", "-o", "short-monotonic",
                                              "--no-pager").stdout)
    sh("systemctl", "stop", "aios-host.service")
    (out / "memguard-bench.json").write_text(json.dumps(results, indent=1))
    return 0


def summary(results: list[dict]) -> dict:
    out = {}
    for way in ("kernel", "oomd", "aios-host"):
        rs = [r for r in results if r["way"] == way]
        if not rs:
            continue
        ratios = [r["prot_rate_squeeze"] / r["prot_rate_solo"] for r in rs
                  if r["prot_rate_squeeze"] and r["prot_rate_solo"]]
        firsts = [r["first_action_s"] for r in rs if r["first_action_s"] is not None]
        out[way] = {"runs": len(rs), "prot_survived": sum(r["prot_survived"] for r in rs),
                    "hog_killed": sum(r["hog_killed"] for r in rs),
                    "prot_throughput_vs_solo_median": round(statistics.median(ratios), 3) if ratios else None,
                    "first_action_s_median": round(statistics.median(firsts), 2) if firsts else None}
    return out


def host_main(args: argparse.Namespace) -> int:
    out = Path(args.out or f"/tmp/aios-bench-memguard-{time.strftime('%Y%m%d-%H%M%S')}")
    cmd = f"python3 -B tests/bench/bench_memguard.py --guest --out /out --runs {args.runs} --ways {args.ways}"
    r = subprocess.run([str(REPO / "vagrant/qemu-vm"), "run", "--out", str(out), "--timeout", str(args.timeout),
                        "--", cmd], cwd=REPO)
    f = out / "memguard-bench.json"
    if not f.exists():
        print(f"bench_memguard: no result (qemu-vm exit {r.returncode}); see {out}", file=sys.stderr)
        return 1
    results = json.loads(f.read_text())
    s = summary(results)
    if args.json:
        print(json.dumps({"summary": s, "runs": results}, indent=1))
        return 0
    print(f"memory squeeze, {args.runs} runs per way (VM 3 GiB, no swap; prot 300 MiB touched in a loop, "
          "batch +320 MiB/s)")
    print(f"{'way':<10} {'prot survived':>13} {'batch killed':>12} {'prot tput/solo':>14} {'first action s':>14}")
    for way, v in s.items():
        print(f"{way:<10} {v['prot_survived']:>9}/{v['runs']:<3} {v['hog_killed']:>8}/{v['runs']:<3} "
              f"{str(v['prot_throughput_vs_solo_median']):>14} {str(v['first_action_s_median']):>14}")
    print(f"per-run results and aios-host's journal: {out}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--ways", default="kernel,oomd,aios-host", help="a subset, comma separated")
    ap.add_argument("--out")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--timeout", type=int, default=2400)
    ap.add_argument("--guest", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    return guest_main(args) if args.guest else host_main(args)


if __name__ == "__main__":
    sys.exit(main())
