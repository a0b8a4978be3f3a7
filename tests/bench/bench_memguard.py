"""A memory squeeze three ways, side by side in one VM boot: the kernel alone, systemd-oomd, aios-host.

Run (host, root): .venv/bin/python tests/bench/bench_memguard.py [--runs 10] [--out DIR] [--json]
It boots the QEMU test VM (3 GiB, 2 vCPUs, no swap) once and runs the guest side there (`--guest`).

Each run: a protected workload (memprot: holds 300 MiB and keeps touching it, counting rounds) as a
transient unit in prot.slice; after it settles, a batch workload (memhog: 32 MiB more every 0.1 s)
in batch.slice, until one of them dies or 90 s pass. Ways:
  kernel     nothing watches: the kernel's OOM killer decides;
  oomd       systemd-oomd: batch.slice ManagedOOMMemoryPressure=kill, limit 10%, oomd.conf
             DefaultMemoryPressureDurationSec=2s (its shortest useful setting: what a user would tune);
  earlyoom   Debian's earlyoom.service with its defaults (act below 10% available) and what a user
             protecting the service would add: --avoid '^memprot$' --prefer '^memhog$';
  aios-host  the installed service with [memory_guard] enabled: prot protected (priority 10,
             memory.protect), batch priority 0; both matched by comm and moved into their classes.
Reported per way: protected survival (runs out of --runs), protected throughput during the squeeze /
solo (rounds per second, solo measured first in the same boot), seconds from the hog's start to the
first action (the kernel's, oomd's or earlyoom's kill from the kernel log / their journals,
aios-host's first memory_guard step), and who was killed.

Then, with aios-host still installed, senpai's loop on an idle-heavy class (--senpai-rounds, 0 to
skip): `memwork` writes and reads a 512 MiB file once (cold page cache), then does fixed work on a
64 MiB hot file (read it and hash it, --senpai-rounds times). Once with its class left alone and
once with memory.high = "auto" (interval 1 s, max_probe 0.25: faster than senpai's defaults of 6 s
and 0.01, to fit a bench). Reported: the class's memory.current over the work (mean and last), the
work's run time, and their ratios, beside senpai's README (a kernel build: peak 804 MB without a
limit, 348 MB under senpai, 3m58s -> 4m09s).
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
    if way == "earlyoom":
        j = sh("journalctl", "-u", "earlyoom", "--since", since, "-o", "json", "--no-pager").stdout
        acts = [json.loads(x) for x in j.splitlines() if x.startswith("{") and "sending SIG" in x]
        firsts += [int(a["__REALTIME_TIMESTAMP"]) / 1e6 for a in acts]
        res["earlyoom_actions"] = [a.get("MESSAGE", "")[:160] for a in acts]
    if way == "aios-host":
        acts = squeeze.guard_events(since)
        firsts += [int(a["__REALTIME_TIMESTAMP"]) / 1e6 for a in acts]
        res["guard_steps"] = squeeze.steps_of(acts)
    res["first_action_s"] = round(min(firsts) - t0_unix, 2) if firsts else None
    sh("systemctl", "stop", hog, prot)
    time.sleep(2)
    return res


# A cold 512 MiB file, written and read once; then fixed work on a hot 64 MiB file: read it all and
# hash it, argv[3] times; the seconds the work took go to argv[4] (after "ready" once the cold part
# is done). memory.current is sampled from "ready" on.
MEMWORK = r"""
import hashlib, os, sys, time
cold, hot, rounds, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
time.sleep(8)  # the daemon's rescan moves it into its class first: pages are charged where they fault
for path, mib in ((cold, 512), (hot, 64)):
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
with open(cold, "rb") as f:
    while f.read(1 << 20):
        pass
open(out, "w").write("ready\n")
t0 = time.monotonic()
for _ in range(rounds):
    h = hashlib.sha256()
    with open(hot, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
open(out, "a").write(f"{time.monotonic() - t0:.3f}\n")
"""


def senpai_run(auto: bool, rounds: int) -> dict:
    """The idle-heavy class once, with memory.high left alone or "auto"; memory.current sampled
    each second over the work."""
    Path("/etc/aios-host/policy.toml").write_text(
        squeeze.senpai_policy("senpai bench", "memwork", auto))
    sh("systemctl", "reload", "aios-host.service", check=True)
    time.sleep(2)
    out, cold, hot = Path("/tmp/memwork.out"), Path("/var/tmp/memwork.cold"), Path("/var/tmp/memwork.hot")
    for f in (out, cold, hot):
        f.unlink(missing_ok=True)
    sh("sync")
    Path("/proc/sys/vm/drop_caches").write_text("3\n")  # each run starts from the same empty cache
    cg = Path("/sys/fs/cgroup/aios.slice/aios-classes.scope/cache")
    p = subprocess.Popen([squeeze.exe("memwork"), "-c", MEMWORK, str(cold), str(hot), str(rounds), str(out)])
    samples: list[tuple[float, int, str]] = []
    t0 = time.monotonic()
    while p.poll() is None and time.monotonic() - t0 < 900:
        if out.exists() and (cg / "cgroup.procs").exists() and str(p.pid) in (cg / "cgroup.procs").read_text():
            samples.append((round(time.monotonic() - t0, 1), int((cg / "memory.current").read_text()),
                            (cg / "memory.high").read_text().strip()))
        time.sleep(1)
    p.wait()
    lines = out.read_text().split() if out.exists() else []
    work_s = float(lines[1]) if len(lines) > 1 else None
    cur = [c for _, c, _ in samples]
    for f in (cold, hot):
        f.unlink(missing_ok=True)
    return {"auto": auto, "rounds": rounds, "work_s": work_s, "samples_t_current_high": samples,
            "current_mean_mib": round(statistics.mean(cur) / 2**20, 1) if cur else None,
            "current_last_mib": round(cur[-1] / 2**20, 1) if cur else None}


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
    # earlyoom as Debian ships it, with the regexes a user protecting memprot would add
    Path("/etc/default/earlyoom").write_text('EARLYOOM_ARGS="-r 3600 --avoid ^memprot$ --prefer ^memhog$"\n')
    if "earlyoom" in ways:
        sh("systemctl", "start", "earlyoom", check=True)
    for i in range(args.runs if "earlyoom" in ways else 0):
        results.append(one_run("earlyoom", i))
    sh("systemctl", "stop", "earlyoom")
    sh("bash", str(REPO / "systemd/install.sh"), "install", check=True, timeout=600)
    Path("/etc/aios-host/policy.toml").write_text(POLICY)
    sh("systemctl", "start", "aios-host.service", check=True, timeout=300)
    for i in range(args.runs if "aios-host" in ways else 0):
        results.append(one_run("aios-host", i))
    senpai = [senpai_run(auto, args.senpai_rounds) for auto in (False, True)] if args.senpai_rounds else []
    (out / "aios-host.journal").write_text(sh("journalctl", "-u", "aios-host", "-o", "short-monotonic",
                                              "--no-pager").stdout)
    sh("systemctl", "stop", "aios-host.service")
    (out / "memguard-bench.json").write_text(json.dumps(results, indent=1))
    (out / "senpai-bench.json").write_text(json.dumps(senpai, indent=1))
    return 0


def summary(results: list[dict]) -> dict:
    out = {}
    for way in ("kernel", "oomd", "earlyoom", "aios-host"):
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
    cmd = (f"python3 -B tests/bench/bench_memguard.py --guest --out /out --runs {args.runs} --ways {args.ways} "
           f"--senpai-rounds {args.senpai_rounds}")
    r = subprocess.run([str(REPO / "vagrant/qemu-vm"), "run", "--out", str(out), "--timeout", str(args.timeout),
                        "--", cmd], cwd=REPO)
    f = out / "memguard-bench.json"
    if not f.exists():
        print(f"bench_memguard: no result (qemu-vm exit {r.returncode}); see {out}", file=sys.stderr)
        return 1
    results = json.loads(f.read_text())
    s = summary(results)
    if args.json:
        sf = out / "senpai-bench.json"
        print(json.dumps({"summary": s, "runs": results,
                          "senpai": json.loads(sf.read_text()) if sf.exists() else []}, indent=1))
        return 0
    print(f"memory squeeze, {args.runs} runs per way (VM 3 GiB, no swap; prot 300 MiB touched in a loop, "
          "batch +320 MiB/s)")
    print(f"{'way':<10} {'prot survived':>13} {'batch killed':>12} {'prot tput/solo':>14} {'first action s':>14}")
    for way, v in s.items():
        print(f"{way:<10} {v['prot_survived']:>9}/{v['runs']:<3} {v['hog_killed']:>8}/{v['runs']:<3} "
              f"{str(v['prot_throughput_vs_solo_median']):>14} {str(v['first_action_s_median']):>14}")
    sf = out / "senpai-bench.json"
    senpai = json.loads(sf.read_text()) if sf.exists() else []
    if len(senpai) == 2:
        off, on = senpai
        print(f"senpai's loop (memory.high = auto) on an idle-heavy class ({off['rounds']} rounds of work on a "
              "64 MiB hot file after a 512 MiB cold one)")
        print(f"{'memory.high':<12} {'current mean MiB':>16} {'last MiB':>9} {'work s':>7}")
        for r in senpai:
            print(f"{'auto' if r['auto'] else 'left alone':<12} {str(r['current_mean_mib']):>16} "
                  f"{str(r['current_last_mib']):>9} {str(r['work_s']):>7}")
        if off["current_mean_mib"] and on["current_mean_mib"] and off["work_s"] and on["work_s"]:
            print(f"auto / left alone: memory {on['current_mean_mib'] / off['current_mean_mib']:.2f}x (mean), "
                  f"{on['current_last_mib'] / off['current_last_mib']:.2f}x (last); work time "
                  f"{on['work_s'] / off['work_s']:.2f}x.  senpai's README (kernel build): memory 0.43x (peak), "
                  "time 1.05x")
    print(f"per-run results and aios-host's journal: {out}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--ways", default="kernel,oomd,earlyoom,aios-host", help="a subset, comma separated")
    ap.add_argument("--senpai-rounds", type=int, default=40)
    ap.add_argument("--out")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--timeout", type=int, default=4800)
    ap.add_argument("--guest", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    return guest_main(args) if args.guest else host_main(args)


if __name__ == "__main__":
    sys.exit(main())
