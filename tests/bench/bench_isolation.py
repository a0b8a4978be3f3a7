"""Isolation of a latency-sensitive service from CPU hogs: no daemon, static systemd settings, aios-host.

Run (host, root): .venv/bin/python tests/bench/bench_isolation.py [--json] [--out DIR] [--phases ...]
It boots the QEMU test VM once (vagrant/qemu-vm run; this host's cgroup v2 has no controllers), runs
the guest side there (`--guest`, which writes /out/isolation.json) and prints the table from that
file. About 13 minutes. Before booting it waits (up to --wait-max s) while another QEMU VM runs,
and during the run it watches for one: a configuration that overlapped another VM is marked `*`
(the host has 2 CPUs, so a second TCG guest halves this one's speed and makes the timings
meaningless), and the solo reference is taken from uncontended solo runs where there is one.

The workloads, identical in every configuration:
  protected  `iso-prot.service` (a transient unit; its processes rename themselves to comm
             "iso-prot"): a request/response server over a unix socket with 2 worker processes,
             each request costing a fixed amount of CPU (sha256 over 16 KiB blocks, calibrated once
             to --req-ms on the idle VM), and its own client. Its demand changes over time, in
             phases: busy (2 closed-loop clients: both workers saturated, i.e. all the VM's 2 CPUs)
             and light (one open-loop client at --light-rps; latency counted from the intended
             send time). Default B15 L25 B15 L25 (s). (A light periodic sleeper would not do: the
             scheduler's wake-up preference already shields it from hogs.)
  batch      `iso-batch.service`: stress-ng --cpu 2 --cpu-method int64 --metrics-brief (bogo ops:
             the batch's own work done), through a warm-up (--warmup s) before the phases and to
             their end.
Configurations, one after the other in the same boot:
  solo            protected alone (the reference; run first and last as a drift check)
  none            both as transient units in system.slice with systemd's defaults
  static-weights  what a user would write instead: protected CPUWeight=1000 MemoryLow=256M,
                  batch CPUWeight=10
  static-cpuset   protected AllowedCPUs=0 MemoryLow=256M, batch AllowedCPUs=1
  aios-comm       aios-host.service (systemd/install.sh) with a policy whose protected class
                  matches comm ^iso-prot$ (priority 10, weight 1000, cpu.min 25%, memory.low 256M)
                  and batch class comm ^stress-ng (priority 0, weight 10): both are moved into the
                  daemon's class cgroups
  aios-unit       the same policy, but the protected class matches the unit (match.unit
                  iso-prot.service), changed through D-Bus; batch still by comm
Reported per configuration: busy-phase throughput (requests/s), isol% = that / solo, busy-phase p99
and p99 / solo p99, light-phase p99, the batch's bogo ops (and its CPU seconds in the measured
window), isol% per busy phase (the second follows a light phase: how fast protection comes back),
with ratios against the static settings. Targets (the issue): aios-host isol% >= 90 and busy p99
<= 2x solo, no worse than the static settings on either, and more batch work than the static cpuset
split. The JSON also has, once a second: requests/s, cpu.weight of every cgroup on the path of each
side, CPU used by each side and by the daemon (over the window also per daemon thread), and the
daemon's own view of each class (usage, PSI, run-queue p99, demand, allocation, from its API); the
out dir has the daemon's journal and status per aios configuration (aios-*.journal.txt,
aios-*.status-*.json) and its policies.

Timings on a 2-vCPU TCG guest are noisy: compare only within one run.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve()
CG = Path("/sys/fs/cgroup")
SYS_SLICE = CG / "system.slice"
AIOS_CG = SYS_SLICE / "aios-host.service"
AIOS = "/opt/aios-host/venv/bin/aios-host"
PROT_UNIT = "iso-prot.service"
BATCH_UNIT = "iso-batch.service"
PROT_COMM = "iso-prot"
SOCK = "/run/iso-prot.sock"
RUN = Path("/run/iso")
BLOCK = 16384
PAYLOAD = b"\xa5" * BLOCK
TARGET_ISOL = 90.0
HOST_BUSY_LIMIT = 0.15  # CPUs busy on the host outside our QEMU, on average over a config: contended
TARGET_P99_X = 2.0

# ============================================================== the protected workload (in its unit)


def set_comm(name: str) -> None:
    PR_SET_NAME = 15
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except Exception:  # noqa: BLE001 - only matching by comm needs it
        pass


def work(iters: int) -> bytes:
    d = b""
    for _ in range(iters):
        d = hashlib.sha256(PAYLOAD).digest()
    return d


def calibrate(req_ms: float) -> dict[str, float]:
    """Blocks per request for req_ms of CPU on this (idle) machine: the best of several timings."""
    work(50)
    per = []
    for _ in range(15):
        t = time.thread_time()
        work(40)
        per.append((time.thread_time() - t) / 40)
    block_ms = sorted(per)[len(per) // 4] * 1000  # lower quartile: the least disturbed
    iters = max(1, round(req_ms / block_ms))
    return {"block_ms": block_ms, "iters": iters, "req_ms": iters * block_ms}


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return b""
        buf += chunk
    return buf


def _worker(srv: socket.socket, iters: int) -> None:
    while True:
        conn, _ = srv.accept()
        with conn:
            while True:
                req = _recv_exact(conn, 8)
                if not req:
                    break
                work(iters)
                conn.sendall(req)


def _connect() -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(SOCK)
    return s


def _closed_loop(end: float, out: list[tuple[float, float]]) -> None:
    with _connect() as s:
        while True:
            t = time.time()
            if t >= end:
                return
            s.sendall(b"reqreq!!")
            _recv_exact(s, 8)
            done = time.time()
            out.append((done, done - t))


def _open_loop(start: float, end: float, rps: float, out: list[tuple[float, float]]) -> None:
    with _connect() as s:
        k = 0
        while True:
            due = start + k / rps
            if due >= end:
                return
            now = time.time()
            if due > now:
                time.sleep(due - now)
            s.sendall(b"reqreq!!")
            _recv_exact(s, 8)
            done = time.time()
            out.append((done, done - due))  # from the intended send time: no coordinated omission
            k += 1


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def parse_phases(spec: str) -> list[tuple[str, float]]:
    """"B15,L15,B15,L15" -> [("busy", 15.0), ("light", 15.0), ...]"""
    out = []
    for part in spec.split(","):
        kind = {"B": "busy", "L": "light"}[part[0].upper()]
        out.append((kind, float(part[1:])))
    return out


def protected_main(args: argparse.Namespace) -> int:
    set_comm(PROT_COMM)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally below ends the workers
    phases = parse_phases(args.phases)
    if os.path.exists(SOCK):
        os.unlink(SOCK)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(SOCK)
    srv.listen(16)
    kids = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            try:
                _worker(srv, args.iters)
            finally:
                os._exit(0)
        kids.append(pid)
    try:
        t0 = args.t0
        wait = t0 - time.time()
        if wait > 0:
            time.sleep(wait)
        results = []
        start = t0
        for kind, dur in phases:
            end = start + dur
            recs: list[list[tuple[float, float]]] = []
            threads = []
            if kind == "busy":
                for _ in range(args.workers):
                    r: list[tuple[float, float]] = []
                    recs.append(r)
                    threads.append(threading.Thread(target=_closed_loop, args=(end, r), daemon=True))
            else:
                r = []
                recs.append(r)
                threads.append(threading.Thread(target=_open_loop, args=(start, end, args.light_rps, r),
                                                daemon=True))
            now = time.time()
            if start > now:
                time.sleep(start - now)
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            allr = [x for r in recs for x in r]
            done = [x for x in allr if x[0] <= end]
            lat = [x[1] for x in allr]
            per_s = [0] * int(math.ceil(dur))
            for d, _ in done:
                i = int(d - start)
                if 0 <= i < len(per_s):
                    per_s[i] += 1
            results.append({
                "kind": kind, "start_rel_s": start - t0, "duration_s": dur, "requests": len(done),
                "rps": len(done) / dur,
                "p50_ms": _ms(pct(lat, 0.50)), "p99_ms": _ms(pct(lat, 0.99)), "max_ms": _ms(max(lat, default=None)),
                "latencies_ms_sorted_sample": [round(x * 1000, 3) for x in sorted(lat)[-20:]],
                "rps_per_s": per_s, "latencies_s": lat,
            })
            start = end
    finally:
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        srv.close()
        try:
            os.unlink(SOCK)
        except OSError:
            pass
    tmp = Path(args.result + ".tmp")
    tmp.write_text(json.dumps({"phases": results, "iters": args.iters, "t0": args.t0}))
    tmp.rename(args.result)
    # Linger (workers gone, nothing running) until stopped: the unit outlives the measurement, so
    # that the daemon is stopped, and restores it, while it is still there, as on a real host.
    while True:
        time.sleep(3600)


def _ms(x: float | None) -> float | None:
    return None if x is None else x * 1000

# ============================================================== the guest driver (root, in the VM)


def sh(*argv: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {out.returncode}: {out.stdout}{out.stderr}")
    return out


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def comm_pids() -> dict[str, list[int]]:
    out: dict[str, list[int]] = {"prot": [], "batch": []}
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            comm = Path(f"/proc/{e}/comm").read_text().strip()
        except OSError:
            continue
        if comm == PROT_COMM:
            out["prot"].append(int(e))
        elif comm.startswith("stress-ng"):
            out["batch"].append(int(e))
    return out


CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


_LAST_CPU: dict[int, float] = {}


def cpu_s(pids: list[int]) -> float:
    """CPU seconds of these processes; one that has exited counts with its last reading."""
    tot = 0.0
    for p in pids:
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            _LAST_CPU[p] = (int(f[11]) + int(f[12])) / CLK  # utime, stime (fields 14, 15)
        except (OSError, IndexError, ValueError):
            pass
        tot += _LAST_CPU.get(p, 0.0)
    return tot


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of each of a process's threads, summed by the name the kernel shows (the daemon
    names its threads: aios-probes, aios-api, ...; the main thread, the loop, keeps the process's).
    Threads alive now only: the API's one-per-request threads that have ended are not in it, so the
    names add up to a little less than the process's own figure (daemon_cpu_s_window)."""
    out: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            f = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a thread that ended
        out[comm] = out.get(comm, 0.0) + (int(f[11]) + int(f[12])) / CLK
    return out


API_SOCK = "/run/aios-host/api.sock"
CLASS_KEYS = ("cpu_usage_cores", "cpu_some_avg10", "runq_p99_seconds", "populated", "demand", "allocation")


def daemon_classes() -> dict[str, dict[str, object]] | None:
    """The daemon's latest view of each class (its API, as `aios_host.api.call` speaks it), or None."""
    from aios_host import api
    from aios_host.errors import AiosError

    try:
        snap = api.call({"cmd": "snapshot"}, API_SOCK, timeout_s=0.5)
        return {c["name"]: {k: c.get(k) for k in CLASS_KEYS} for c in snap.get("classes", [])}
    except (AiosError, OSError, KeyError, TypeError):
        return None


def cgroup_of(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cgroup").read_text().strip().rpartition("::")[2]
    except OSError:
        return None


def read_weights(pids: dict[str, list[int]]) -> dict[str, int]:
    """cpu.weight of the units' cgroups and of every cgroup (and its ancestors) that the first process
    of each side sits in now: wherever the daemon has put it, that is what the kernel shares by."""
    paths = {SYS_SLICE / PROT_UNIT, SYS_SLICE / BATCH_UNIT, AIOS_CG}
    for v in pids.values():
        cg = cgroup_of(v[0]) if v else None
        while cg and cg != "/":
            paths.add(CG / cg.lstrip("/"))
            cg = cg.rpartition("/")[0] or "/"
    out = {}
    for p in sorted(paths):
        try:
            out[str(p.relative_to(CG))] = int((p / "cpu.weight").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


def parse_bogo(text: str) -> float | None:
    """bogo ops of the cpu stressor from --metrics-brief output (or the --yaml file)."""
    m = re.search(r"bogo-ops:\s*(\d+)", text)
    if m:
        return float(m.group(1))
    for line in text.splitlines():
        m = re.search(r"\]\s+cpu\s+(\d+)\s+[\d.]+\s", line)
        if m:
            return float(m.group(1))
    return None


POLICY = """description = "isolation bench: latency-sensitive server vs batch CPU hogs"
[host]
reserve_cores = 0
reserve_memory = "5%"
[[class]]
name = "prot"
{prot_match}
weight = 1000
priority = 10
cpu.min = "25%"
memory.low = "256M"
[[class]]
name = "batch"
match.comm = "^stress-ng"
weight = 10
priority = 0
"""

CONFIGS: list[dict[str, object]] = [
    {"name": "solo", "batch": False, "prot_props": [], "batch_props": [],
     "what": "protected alone (reference)"},
    {"name": "none", "batch": True, "prot_props": [], "batch_props": [],
     "what": "no daemon, systemd defaults"},
    {"name": "static-weights", "batch": True, "prot_props": ["CPUWeight=1000", "MemoryLow=256M"],
     "batch_props": ["CPUWeight=10"], "what": "CPUWeight=1000 MemoryLow=256M / CPUWeight=10"},
    {"name": "static-cpuset", "batch": True, "prot_props": ["AllowedCPUs=0", "MemoryLow=256M"],
     "batch_props": ["AllowedCPUs=1"], "what": "AllowedCPUs=0 MemoryLow=256M / AllowedCPUs=1"},
    {"name": "aios-comm", "batch": True, "prot_props": [], "batch_props": [],
     "policy": POLICY.format(prot_match=f'match.comm = "^{PROT_COMM}$"'),
     "what": "aios-host, protected by comm (delegated subtree)"},
    {"name": "aios-unit", "batch": True, "prot_props": [], "batch_props": [],
     "policy": POLICY.format(prot_match=f'match.unit = "{PROT_UNIT}"'),
     "what": "aios-host, protected by unit (D-Bus)"},
    {"name": "solo-end", "batch": False, "prot_props": [], "batch_props": [],
     "what": "protected alone again (drift check)"},
]


def unit_gone(unit: str) -> None:
    sh("systemctl", "stop", unit, check=False)
    sh("systemctl", "reset-failed", unit, check=False)


def start_daemon(cfg: dict[str, object], out: Path, res: dict[str, object], since: str) -> bool:
    Path("/etc/aios-host").mkdir(parents=True, exist_ok=True)
    Path("/etc/aios-host/policy.toml").write_text(str(cfg["policy"]))
    (out / f"{cfg['name']}.policy.toml").write_text(str(cfg["policy"]))
    t = time.time()
    r = sh("systemctl", "start", "aios-host.service", check=False, timeout=400)  # Type=notify: READY=1
    res["daemon_start_s"] = time.time() - t
    state = sh("systemctl", "show", "aios-host.service", "--property=ActiveState", "--value",
               check=False).stdout.strip()
    if r.returncode != 0 or state != "active":
        j = sh("journalctl", "-u", "aios-host", "--since", since, "-o", "cat", "--no-pager", check=False).stdout
        why = [ln for ln in j.splitlines() if "error" in ln.lower() or "Traceback" in ln][:2]
        res["error"] = (f"aios-host.service did not start (systemctl start exited {r.returncode}, state {state}); "
                        f"journal: {' | '.join(why) or '(no error line)'} -- see {cfg['name']}.journal.txt")
        return False
    time.sleep(5)  # a few ticks
    st = sh(AIOS, "status", "--json", check=False)
    (out / f"{cfg['name']}.status-before.json").write_text(st.stdout or st.stderr)
    try:
        s = json.loads(st.stdout)
        res["daemon_mode"] = s.get("mode")
        if s.get("mode") != "active":
            res["error"] = f"daemon mode {s.get('mode')!r}: {s.get('mode_reason')}"
            return False
    except ValueError:
        res["error"] = f"aios-host status --json: {st.stdout.strip()} {st.stderr.strip()}"
        return False
    return True


def stop_daemon(cfg: dict[str, object], out: Path, since: str) -> None:
    st = sh(AIOS, "status", "--json", check=False)
    (out / f"{cfg['name']}.status-after.json").write_text(st.stdout or st.stderr)
    sh("systemctl", "stop", "aios-host.service", check=False, timeout=120)
    j = sh("journalctl", "-u", "aios-host", "--since", since, "-o", "cat", "--no-pager", check=False)
    (out / f"{cfg['name']}.journal.txt").write_text(j.stdout)
    j = sh("journalctl", "-u", "aios-host", "--since", since, "-o", "json", "--no-pager", check=False)
    (out / f"{cfg['name']}.journal.json").write_text(j.stdout)


def _thread_delta(pid: int, start: dict[str, float]) -> dict[str, float]:
    now = thread_cpu_s(pid)
    return {k: round(v - start.get(k, 0.0), 2) for k, v in sorted(now.items(), key=lambda kv: -kv[1])}


def run_config(cfg: dict[str, object], args: argparse.Namespace, iters: int, out: Path) -> dict[str, object]:
    name = str(cfg["name"])
    res: dict[str, object] = {"name": name, "what": cfg["what"], "prot_props": cfg["prot_props"],
                              "batch_props": cfg["batch_props"]}
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    t_cfg = time.time()
    aios = "policy" in cfg
    if aios and not start_daemon(cfg, out, res, since):
        stop_daemon(cfg, out, since)
        say(f"{name}: {res['error']}")
        return res
    phases = parse_phases(args.phases)
    total = sum(d for _, d in phases)
    unit_gone(PROT_UNIT)
    unit_gone(BATCH_UNIT)
    RUN.mkdir(exist_ok=True)
    result = RUN / f"{name}.prot.json"
    blog = RUN / f"{name}.batch.log"
    byaml = RUN / f"{name}.batch.yaml"
    for p in (result, blog, byaml):
        p.unlink(missing_ok=True)
    t0 = time.time() + args.warmup
    procs = []
    if cfg["batch"]:
        props = [f"--property={p}" for p in cfg["batch_props"]]  # type: ignore[union-attr]
        argv = ["systemd-run", "--quiet", "--wait", "--collect", f"--unit={BATCH_UNIT}",
                f"--property=StandardOutput=file:{blog}", f"--property=StandardError=file:{blog}", *props,
                "stress-ng", "--cpu", "2", "--cpu-method", "int64", "--metrics-brief",
                "--yaml", str(byaml), "--timeout", f"{int(math.ceil(t0 - time.time() + total + 1))}s"]
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    props = [f"--property={p}" for p in cfg["prot_props"]]  # type: ignore[union-attr]
    argv = ["systemd-run", "--quiet", "--wait", "--collect", f"--unit={PROT_UNIT}", *props,
            "/usr/bin/python3", "-B", str(HERE), "--protected", "--iters", str(iters), "--t0", repr(t0),
            "--phases", args.phases, "--light-rps", str(args.light_rps), "--result", str(result)]
    prot = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Sample once a second: cpu.weight of every cgroup involved, where the processes are, CPU of each side.
    samples = []
    pids: dict[str, list[int]] = {}
    cpu_prev: dict[str, float] = {}
    batch_cpu_window = None
    where_at_t0: dict[str, list[str | None]] = {}
    next_t = time.time()
    while not result.exists():
        now = time.time()
        if now > t0 + total + 120 or (prot.poll() is not None and now > t0 + total + 10):
            break  # it failed (or hangs): no result
        if not pids and now >= t0 - 0.5:
            pids = comm_pids()
            if aios:
                mp = sh("systemctl", "show", "aios-host.service", "--property=MainPID", "--value", check=False)
                if mp.stdout.strip().isdigit() and int(mp.stdout) > 0:
                    pids["daemon"] = [int(mp.stdout)]
            where_at_t0 = {k: sorted({cgroup_of(p) for p in v} - {None}) for k, v in pids.items()}  # type: ignore[type-var]
            cpu_prev = {k: cpu_s(v) for k, v in pids.items()}
            cpu_start = dict(cpu_prev)
            threads_start = thread_cpu_s(pids["daemon"][0]) if "daemon" in pids else {}
        s: dict[str, object] = {"t": round(now - t0, 2), "w": read_weights(pids)}
        if aios:
            s["daemon"] = daemon_classes()
        if pids:
            c = {k: cpu_s(v) for k, v in pids.items()}
            s["cpu_cores"] = {k: round(c[k] - cpu_prev.get(k, c[k]), 3) for k in c}
            cpu_prev = c
            if batch_cpu_window is None and now >= t0 + total and pids.get("batch"):
                batch_cpu_window = c["batch"] - cpu_start["batch"]
                if "daemon" in c:
                    res["daemon_cpu_s_window"] = c["daemon"] - cpu_start["daemon"]
                    res["daemon_thread_cpu_s_window"] = _thread_delta(pids["daemon"][0], threads_start)
            if int(now - t0) % 5 == 0:
                s["where"] = {k: sorted({cgroup_of(p) for p in v} - {None}) for k, v in pids.items()}  # type: ignore[type-var]
        samples.append(s)
        next_t += 1.0
        time.sleep(max(0.0, next_t - time.time()))
    if pids and batch_cpu_window is None:  # the result came before a sample past the end
        c = {k: cpu_s(v) for k, v in pids.items()}
        if pids.get("batch"):
            batch_cpu_window = c["batch"] - cpu_start["batch"]
        if "daemon" in c:
            res["daemon_cpu_s_window"] = c["daemon"] - cpu_start["daemon"]
            res["daemon_thread_cpu_s_window"] = _thread_delta(pids["daemon"][0], threads_start)
    for p in procs:  # stress-ng ends on its own timeout, a second after the phases
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            unit_gone(BATCH_UNIT)
            p.wait()
    if aios:
        nr = sh("systemctl", "show", "aios-host.service", "--property=NRestarts", "--value", check=False)
        res["daemon_restarts"] = int(nr.stdout.strip()) if nr.stdout.strip().isdigit() else None
        stop_daemon(cfg, out, since)  # restores what it changed, with the protected unit still there
    unit_gone(PROT_UNIT)
    try:
        prot_out = prot.communicate(timeout=60)[0]
    except subprocess.TimeoutExpired:
        prot.kill()
        prot_out = prot.communicate()[0]
    res["samples"] = samples
    res["where_at_t0"] = where_at_t0
    res["t_start_unix"], res["t_end_unix"] = t_cfg, time.time()
    res["wall_s"] = time.time() - t_cfg
    if not result.exists():
        res["error"] = f"protected workload wrote no result: {prot_out.strip()[-2000:]}"
        say(f"{name}: {res['error']}")
        return res
    pr = json.loads(result.read_text())
    phases_out = pr["phases"]
    busy = [p for p in phases_out if p["kind"] == "busy"]
    light = [p for p in phases_out if p["kind"] == "light"]
    busy_lat = [x for p in busy for x in p.pop("latencies_s")]
    light_lat = [x for p in light for x in p.pop("latencies_s")]
    busy_s = sum(p["duration_s"] for p in busy)
    res["phases"] = phases_out
    res["busy_rps"] = sum(p["requests"] for p in busy) / busy_s if busy_s else None
    res["busy_p99_ms"] = _ms(pct(busy_lat, 0.99))
    res["busy_p50_ms"] = _ms(pct(busy_lat, 0.50))
    res["light_p99_ms"] = _ms(pct(light_lat, 0.99))
    res["light_p50_ms"] = _ms(pct(light_lat, 0.50))
    if cfg["batch"]:
        text = (byaml.read_text() if byaml.exists() else "") + "\n" + (blog.read_text() if blog.exists() else "")
        (out / f"{name}.batch.log").write_text(text)
        res["bogo_ops"] = parse_bogo(text)
        res["batch_cpu_s_window"] = batch_cpu_window
        if res["bogo_ops"] is None:
            res["error"] = f"no bogo ops in the stress-ng output: {text.strip()[-500:]}"
    say(f"{name}: busy {res['busy_rps']:.1f} req/s p99 {res['busy_p99_ms']:.1f} ms; light p99 "
        f"{res['light_p99_ms']:.1f} ms; bogo ops {res.get('bogo_ops')}; {res['wall_s']:.0f} s")
    return res


def summarize(configs: list[dict[str, object]]) -> dict[str, object]:
    by = {c["name"]: c for c in configs}
    solos = [by[n] for n in ("solo", "solo-end") if n in by and by[n].get("busy_rps")]
    if any(not s.get("contended") for s in solos):
        solos = [s for s in solos if not s.get("contended")]  # another VM ran during the other one
    if not solos:
        return {"error": "no solo reference"}

    def mean(k: str) -> float:
        return sum(float(s[k]) for s in solos) / len(solos)  # type: ignore[arg-type]

    ref = {"busy_rps": mean("busy_rps"), "busy_p99_ms": mean("busy_p99_ms"), "light_p99_ms": mean("light_p99_ms")}
    ref["drift_busy_rps_pct"] = (100 * (float(solos[-1]["busy_rps"]) / float(solos[0]["busy_rps"]) - 1)  # type: ignore[arg-type]
                                 if len(solos) == 2 else None)
    ref["from"] = [s["name"] for s in solos]
    rows = []
    for c in configs:
        if not c.get("busy_rps"):
            rows.append({"name": c["name"], "error": c.get("error", "no result")})
            continue
        rows.append({
            "name": c["name"], "what": c["what"],
            "busy_rps": c["busy_rps"], "isol_pct": 100 * float(c["busy_rps"]) / ref["busy_rps"],  # type: ignore[arg-type]
            "busy_p99_ms": c["busy_p99_ms"], "p99_x_solo": float(c["busy_p99_ms"]) / ref["busy_p99_ms"],  # type: ignore[arg-type]
            "light_p99_ms": c["light_p99_ms"],
            "light_p99_x_solo": float(c["light_p99_ms"]) / ref["light_p99_ms"],  # type: ignore[arg-type]
            "bogo_ops": c.get("bogo_ops"), "batch_cpu_s_window": c.get("batch_cpu_s_window"),
            "busy_phase_isol_pct": [100 * p["rps"] / ref["busy_rps"] for p in c["phases"]  # type: ignore[union-attr]
                                    if p["kind"] == "busy"],
            "busy_phase_p99_ms": [p["p99_ms"] for p in c["phases"] if p["kind"] == "busy"],  # type: ignore[union-attr]
            "daemon_cpu_s_window": c.get("daemon_cpu_s_window"), "where_at_t0": c.get("where_at_t0"),
            "daemon_restarts": c.get("daemon_restarts"),
        })
    rb = {r["name"]: r for r in rows if "error" not in r}
    verdicts = {}
    for a in ("aios-comm", "aios-unit"):
        if a not in rb:
            continue
        r = rb[a]
        v: dict[str, object] = {
            f"isol_pct >= {TARGET_ISOL:g}": r["isol_pct"] >= TARGET_ISOL,
            f"busy p99 <= {TARGET_P99_X:g}x solo": r["p99_x_solo"] <= TARGET_P99_X,
        }
        for s in ("static-weights", "static-cpuset"):
            if s in rb:
                v[f"isol >= {s}"] = r["isol_pct"] >= rb[s]["isol_pct"]
                v[f"busy p99 <= {s}"] = r["busy_p99_ms"] <= rb[s]["busy_p99_ms"]
                r[f"isol_minus_{s}"] = r["isol_pct"] - rb[s]["isol_pct"]
                r[f"p99_over_{s}"] = r["busy_p99_ms"] / rb[s]["busy_p99_ms"]
                if r.get("bogo_ops") and rb[s].get("bogo_ops"):
                    r[f"bogo_over_{s}"] = r["bogo_ops"] / rb[s]["bogo_ops"]
        if "static-cpuset" in rb and r.get("bogo_ops") and rb["static-cpuset"].get("bogo_ops"):
            v["bogo ops > static-cpuset"] = r["bogo_ops"] > rb["static-cpuset"]["bogo_ops"]
        v["all"] = all(bool(x) for x in v.values())
        verdicts[a] = v
    return {"solo_ref": ref, "rows": rows, "targets": verdicts}


_MEDIAN_KEYS = ("busy_rps", "busy_p99_ms", "light_p99_ms", "bogo_ops", "batch_cpu_s_window", "daemon_cpu_s_window")


def merge_rounds(configs: list[dict[str, object]]) -> list[dict[str, object]]:
    """One result per configuration: the median over its uncontended rounds (all, if none is) of
    each figure (per busy/light phase too), in the order of the first round. The VM's speed drifts
    by 10-20% over a run, so one round's ranking of configurations within a few points is noise;
    interleaved rounds and their median less so."""
    by: dict[str, list[dict[str, object]]] = {}
    for c in configs:
        if c.get("busy_rps"):
            by.setdefault(str(c["name"]), []).append(c)
    out = []
    for rs in by.values():
        if any(not r.get("contended") for r in rs):  # a round the host disturbed says nothing
            rs = [r for r in rs if not r.get("contended")]
        m: dict[str, object] = {**rs[0], "rounds": len(rs), "contended": any(r.get("contended") for r in rs)}
        for k in _MEDIAN_KEYS:
            vals = [float(r[k]) for r in rs if r.get(k) is not None]  # type: ignore[arg-type]
            m[k] = statistics.median(vals) if vals else None
        phases = [r["phases"] for r in rs if isinstance(r.get("phases"), list)]
        if phases and all(len(p) == len(phases[0]) for p in phases):
            m["phases"] = [{**ph0, **{k: statistics.median(float(p[i][k]) for p in phases)  # type: ignore[index]
                                      for k in ("rps", "p99_ms") if all(p[i].get(k) is not None for p in phases)}}  # type: ignore[index]
                           for i, ph0 in enumerate(phases[0])]
        out.append(m)
    return out


def summarize_rounds(configs: list[dict[str, object]]) -> dict[str, object]:
    """summarize() of the medians over rounds, with each round's own summary beside it."""
    rounds = sorted({int(c.get("round", 0)) for c in configs})  # type: ignore[call-overload]
    if len(rounds) <= 1:
        return summarize(configs)
    out = summarize(merge_rounds(configs))
    out["per_round"] = [summarize([c for c in configs if int(c.get("round", 0)) == r]) for r in rounds]  # type: ignore[call-overload]
    out["n_rounds"] = len(rounds)
    return out


def guest_main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    rep: dict[str, object] = {
        "params": {"phases": args.phases, "warmup_s": args.warmup, "light_rps": args.light_rps,
                   "req_ms": args.req_ms, "workers": 2, "hogs": "stress-ng --cpu 2 --cpu-method int64"},
        "guest": {"kernel": os.uname().release, "cpus": os.cpu_count(),
                  "stress_ng": sh("stress-ng", "--version", check=False).stdout.strip()},
    }
    only = set(args.only.split(",")) if args.only else None
    configs = [c for c in CONFIGS if only is None or c["name"] in only]
    if any("policy" in c for c in configs):
        say("installing aios-host (systemd/install.sh install)")
        t = time.time()
        r = sh("bash", str(REPO / "systemd/install.sh"), "install", check=False, timeout=900)
        rep["install_s"] = time.time() - t
        (out / "install.log").write_text(r.stdout + r.stderr)
        if r.returncode != 0:
            rep["install_error"] = f"install.sh exited {r.returncode}: {(r.stdout + r.stderr).strip()[-1500:]}"
            say(str(rep["install_error"]))
            configs = [c for c in configs if "policy" not in c]
    time.sleep(2)
    cal = calibrate(args.req_ms)
    rep["calibration"] = cal
    say(f"calibration: {cal['block_ms']:.3f} ms per 16 KiB sha256, {cal['iters']} blocks = "
        f"{cal['req_ms']:.2f} ms per request")
    results = []
    for rnd in range(args.rounds):  # interleaved: every configuration once per round
        for cfg in configs:
            say(f"config {cfg['name']} (round {rnd + 1}/{args.rounds}): {cfg['what']}")
            try:
                res = run_config(cfg, args, int(cal["iters"]), out)
            except Exception as e:  # noqa: BLE001 - one config failing must not lose the others
                res = {"name": cfg["name"], "what": cfg["what"], "error": f"{type(e).__name__}: {e}"}
                say(f"{cfg['name']}: {type(e).__name__}: {e}")
            res["round"] = rnd
            results.append(res)
            if "policy" in cfg:
                sh("systemctl", "stop", "aios-host.service", check=False, timeout=120)  # after a failure too
            unit_gone(PROT_UNIT)
            unit_gone(BATCH_UNIT)
    rep["configs"] = results
    rep["summary"] = summarize_rounds(results)
    rep["guest_wall_s"] = time.time() - t_all
    (out / "isolation.json").write_text(json.dumps(rep, indent=1))
    print(render(rep))
    return 0

# ============================================================== report


def _f(x: object, fmt: str) -> str:
    if x is None:
        m = re.match(r">?(\d+)", fmt)
        return "-".rjust(int(m.group(1))) if m else "-"
    return format(x, fmt)


def render(rep: dict[str, object]) -> str:
    summ = rep.get("summary") or {}
    lines = []
    p = rep.get("params", {})
    cal = rep.get("calibration", {})
    lines.append(f"isolation: phases {p.get('phases')} (B = 2 closed-loop clients, L = open loop at "
                 f"{p.get('light_rps')} req/s), {_f(cal.get('req_ms'), '.2f')} ms CPU per request, "
                 f"2 workers; batch: {p.get('hogs')}")
    if "error" in summ:
        lines.append(f"no summary: {summ['error']}")
    ref = summ.get("solo_ref", {})
    if ref:
        lines.append(f"solo reference ({' + '.join(ref.get('from', []))}): {ref['busy_rps']:.1f} req/s, busy p99 "
                     f"{ref['busy_p99_ms']:.2f} ms, light p99 {ref['light_p99_ms']:.2f} ms; drift between "
                     f"the two solos {_f(ref.get('drift_busy_rps_pct'), '+.1f')}% req/s")
    hdr = (f"{'config':<15} {'busy req/s':>10} {'isol%':>6} {'p99 ms':>8} {'p99/solo':>8} "
           f"{'light p99':>9} {'/solo':>6} {'batch bogo ops':>14} {'batch CPU s':>11} {'host+':>5}  "
           "isol% per busy phase")
    lines += [hdr, "-" * len(hdr)]
    contended = {c["name"] for c in rep.get("configs", []) if c.get("contended")}  # type: ignore[union-attr]
    other = {c["name"]: c.get("host_other_cpus_mean") for c in rep.get("configs", [])}  # type: ignore[union-attr]
    for r in summ.get("rows", []):
        name = r["name"] + ("*" if r["name"] in contended else "")
        if "error" in r:
            lines.append(f"{name:<15} ERROR: {r['error']}")
            continue
        lines.append(f"{name:<15} {r['busy_rps']:>10.1f} {r['isol_pct']:>6.1f} {r['busy_p99_ms']:>8.2f} "
                     f"{r['p99_x_solo']:>8.2f} {r['light_p99_ms']:>9.2f} {r['light_p99_x_solo']:>6.2f} "
                     f"{_f(r.get('bogo_ops'), '>14,.0f')} {_f(r.get('batch_cpu_s_window'), '>11.1f')} "
                     f"{_f(other.get(r['name']), '>5.2f')}  "
                     + " ".join(f"{x:.0f}" for x in r.get("busy_phase_isol_pct", [])))
    for r in summ.get("rows", []):
        if r["name"].startswith("aios") and "error" not in r:
            parts = []
            for s in ("static-weights", "static-cpuset"):
                if f"isol_minus_{s}" in r:
                    parts.append(f"vs {s}: isol {r[f'isol_minus_{s}']:+.1f} pts, p99 x{r[f'p99_over_{s}']:.2f}, "
                                 f"bogo ops x{_f(r.get(f'bogo_over_{s}'), '.2f')}")
            w = r.get("where_at_t0") or {}
            parts.append("at the first phase protected in " + ",".join(w.get("prot", [])) + ", batch in "
                         + ",".join(w.get("batch", [])))
            if r.get("daemon_cpu_s_window") is not None:
                parts.append(f"daemon CPU {r['daemon_cpu_s_window']:.1f} s in the window")
            by_thread = r.get("daemon_thread_cpu_s_window")
            if by_thread:
                parts.append("its threads in the first round: "
                             + ", ".join(f"{k} {v:.1f} s" for k, v in by_thread.items() if v >= 0.05))
            if r.get("daemon_restarts"):
                parts.append(f"daemon RESTARTED {r['daemon_restarts']}x (see its journal)")
            lines.append(f"{r['name']}: " + "; ".join(parts))
    if summ.get("n_rounds"):
        lines.append(f"the table: medians over {summ['n_rounds']} interleaved rounds; each round's own verdicts:")
        for i, pr in enumerate(summ.get("per_round", [])):
            for a, v in pr.get("targets", {}).items():
                rows = {r["name"]: r for r in pr.get("rows", []) if "error" not in r}
                lines.append(f"  round {i + 1} {a}: isol {_f(rows.get(a, {}).get('isol_pct'), '.1f')}%, p99 x solo "
                             f"{_f(rows.get(a, {}).get('p99_x_solo'), '.2f')}; "
                             + ", ".join(k for k, ok in v.items() if k != "all" and not ok)
                             + (" -> MET" if v["all"] else " NOT met"))
    for a, v in summ.get("targets", {}).items():
        lines.append(f"targets {a}: " + ", ".join(f"{k}: {'yes' if ok else 'NO'}" for k, ok in v.items()
                                                  if k != "all") + f" -> {'MET' if v['all'] else 'NOT met'}")
    if "host_other_cpus" in rep:
        lines.append(f"host+: CPUs busy on the host outside this VM's QEMU, mean over the config (2 CPUs; above "
                     f"{HOST_BUSY_LIMIT:g} the config is marked * and its timings are not comparable)")
    for q in rep.get("other_qemu_during_run") or []:
        lines.append(f"WARNING: another QEMU VM ran during this one (timings contended; * above: the configs it "
                     f"overlapped): pid {q['pid']} seen {time.strftime('%H:%M:%S', time.localtime(q['first']))}-"
                     f"{time.strftime('%H:%M:%S', time.localtime(q['last']))}: {q['cmd'][:100]}")
    for k in ("install_error",):
        if rep.get(k):
            lines.append(f"{k}: {rep[k]}")
    if rep.get("guest_wall_s"):
        lines.append(f"guest run {rep['guest_wall_s']:.0f} s" +
                     (f", host wall (boot to result) {rep['host_wall_s']:.0f} s" if rep.get("host_wall_s") else ""))
    return "\n".join(lines)

# ============================================================== host side: drive the VM


def other_qemu() -> list[str]:
    """Running QEMU processes ("PID CMDLINE"), matched by process name: not the `timeout` wrappers, nor
    a shell whose command line merely mentions qemu-system."""
    r = subprocess.run(["pgrep", "-a", "^qemu-system"], capture_output=True, text=True)
    return [ln for ln in r.stdout.splitlines() if ln.strip()]


def host_main(args: argparse.Namespace) -> int:
    qemu_vm = REPO / "vagrant/qemu-vm"
    if os.geteuid() != 0:
        print("bench_isolation: needs root (it boots the QEMU test VM: vagrant/qemu-vm run)", file=sys.stderr)
        return 1
    missing = [t for t in ("qemu-system-x86_64", "pgrep", "timeout") if not shutil.which(t)]
    if missing:
        print(f"bench_isolation: {', '.join(missing)} not found (make setup installs them)", file=sys.stderr)
        return 1
    deadline = time.monotonic() + args.wait_max
    while (busy := other_qemu()):
        if time.monotonic() > deadline:
            print(f"bench_isolation: another QEMU VM still runs after {args.wait_max} s; timings under "
                  f"contention are meaningless: {busy[0][:160]}", file=sys.stderr)
            return 1
        print(f"bench_isolation: waiting for another QEMU VM to finish: {busy[0][:120]}", file=sys.stderr, flush=True)
        time.sleep(20)
    out = Path(args.out) if args.out else Path(f"/tmp/aios-bench-isolation-{time.strftime('%Y%m%d-%H%M%S')}")
    guest = (f"python3 -B tests/bench/bench_isolation.py --guest --out /out --phases {args.phases} "
             f"--warmup {args.warmup} --light-rps {args.light_rps} --req-ms {args.req_ms}")
    if args.only:
        guest += f" --only {args.only}"
    if args.rounds != 1:
        guest += f" --rounds {args.rounds}"
    seen: dict[str, dict[str, object]] = {}
    load: list[tuple[float, float]] = []  # (unix time, host CPUs busy outside our QEMU)
    stop = threading.Event()

    def host_busy() -> float:
        f = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        return sum(int(f[i]) for i in (0, 1, 2, 5, 6, 7)) / CLK  # user nice system irq softirq steal

    def watch() -> None:
        """Another VM, or anything else busy on this 2-CPU host, during ours slows the guest: say when."""
        prev: tuple[float, float, float] | None = None
        while not stop.wait(2):
            try:
                mine = (out / ".qemu.pid").read_text().strip()
            except OSError:
                mine = ""
            now = time.time()
            for ln in other_qemu():
                pid, cmd = ln.split(None, 1)
                if pid != mine:
                    seen.setdefault(pid, {"pid": pid, "first": now - 2, "cmd": cmd[:300]})["last"] = now
            q = cpu_s([int(mine)]) if mine.isdigit() else 0.0
            cur = (now, host_busy(), q)
            if prev is not None and mine:
                load.append((now, max(0.0, ((cur[1] - prev[1]) - (cur[2] - prev[2])) / (now - prev[0]))))
            prev = cur

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    t = time.monotonic()
    r = subprocess.run([str(qemu_vm), "run", "--out", str(out), "--timeout", str(args.timeout), "--follow",
                        "--", guest], stdout=sys.stderr)
    host_wall = time.monotonic() - t
    stop.set()
    res = out / "isolation.json"
    if not res.exists():
        print(f"bench_isolation: the VM run left no {res} (qemu-vm exited {r.returncode})", file=sys.stderr)
        return 1
    rep = json.loads(res.read_text())
    rep["host_wall_s"] = host_wall
    rep["other_qemu_during_run"] = list(seen.values())
    rep["host_other_cpus"] = [(round(a, 1), round(b, 2)) for a, b in load]
    for c in rep.get("configs", []):
        a, b = c.get("t_start_unix", 0), c.get("t_end_unix", 0)
        during = [x for tt, x in load if a <= tt <= b]
        c["host_other_cpus_mean"] = sum(during) / len(during) if during else None
        c["host_other_cpus_max"] = max(during, default=None)
        c["contended"] = (any(q["first"] <= b and q["last"] >= a for q in seen.values())
                          or (c["host_other_cpus_mean"] or 0) > HOST_BUSY_LIMIT)
    rep["summary"] = summarize_rounds(rep.get("configs", []))  # the reference from uncontended solos
    res.write_text(json.dumps(rep, indent=1))
    if args.json:
        print(json.dumps(rep.get("summary"), indent=1))
    else:
        print(render(rep))
        print(f"results and the daemon's journals: {out}")
    return 0 if r.returncode == 0 else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    ap.add_argument("--out", help="host: out dir of the VM run (default /tmp/aios-bench-isolation-DATE); "
                                   "guest: where isolation.json goes")
    ap.add_argument("--phases", default="B15,L25,B15,L25",
                    help="B<s> busy / L<s> light, comma separated. Light time must exceed busy time for the "
                         "batch-work target to be reachable at all: a perfect isolator leaves the batch ~0 "
                         "CPUs while busy and 2 while light, the cpuset split 1 throughout")
    ap.add_argument("--warmup", type=float, default=8.0, help="s both sides run before the phases")
    ap.add_argument("--light-rps", type=float, default=15.0)
    ap.add_argument("--req-ms", type=float, default=8.0,
                    help="hashing CPU per request (calibrated in the guest); under TCG the request's own "
                         "overhead (syscalls, wake-ups across vCPUs) adds a few ms")
    ap.add_argument("--only", help="comma-separated configs (solo,none,static-weights,static-cpuset,"
                                   "aios-comm,aios-unit,solo-end)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the configurations this many times, interleaved, and report medians")
    ap.add_argument("--timeout", type=int, default=1800, help="host: kill the VM after this many s")
    ap.add_argument("--wait-max", type=int, default=1200, help="host: s to wait for another QEMU VM")
    ap.add_argument("--guest", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--protected", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--iters", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--t0", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.protected:
        return protected_main(args)
    if args.guest:
        return guest_main(args)
    return host_main(args)


if __name__ == "__main__":
    sys.exit(main())
