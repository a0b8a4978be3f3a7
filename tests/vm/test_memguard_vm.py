"""The memory guard on real systemd + cgroup v2 (the QEMU VM, 3 GiB, no swap).

1. A squeeze: a protected class runs a steady workload (memprot: holds 300 MiB and keeps touching
   it); a batch class grows (memhog: 32 MiB more every 0.1 s) until the VM would run out. The
   installed service, with [memory_guard] enabled, must act before the kernel does: the batch class
   is tightened, then frozen, then killed, in that order (journald events), and the protected
   workload is never OOM-killed.
2. The same squeeze by a job: two ranks of an `aios-host job` (systemd launcher), matched into the
   batch class by its label (match.job), grow together. The guard freezes and kills the class, so
   both ranks at once, and the supervisor ends the job naming the memory guard.
3. senpai's loop (memory.high = "auto") squeezes what can be reclaimed (page cache) and stops at
   what cannot (shmem, anon without swap, unevictable).
(The squeeze without aios-host, and with systemd-oomd, is tests/bench/bench_memguard.py, in a VM boot
of its own: a kernel OOM kill there may take any process of the VM, which the rest of this suite
needs.) Results go to /out/memguard.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.vm import squeeze

REPO = Path(__file__).resolve().parents[2]
AIOS = "/opt/aios-host/venv/bin/aios-host"
CLASSES = Path("/sys/fs/cgroup/aios.slice/aios-classes.scope")
POLICY = Path("/etc/aios-host/policy.toml")
JOB_LABEL = "squeezejob"


def sh(*argv: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {out.returncode}: {out.stdout}{out.stderr}")
    return out


def _use_policy(text: str) -> None:
    """A new policy for the running daemon: SIGHUP re-reads it (an invalid one would be refused)."""
    POLICY.write_text(text)
    sh("systemctl", "reload", "aios-host.service")
    time.sleep(2)


def _kernel_oom_kills(since: str) -> list[str]:
    kern = sh("journalctl", "-k", "--since", since, "--no-pager", "-o", "cat", check=False).stdout
    return [ln for ln in kern.splitlines() if "Killed process" in ln]


def _squeeze(tmp: Path, timeout_s: float = 150.0) -> dict:
    rate = tmp / "prot.rate"
    prot = subprocess.Popen([squeeze.exe("memprot", tmp), "-c", squeeze.PROT, str(rate)])
    time.sleep(7)  # the protected workload settles (the daemon's 5 s rescan moves it into its class)
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    t0, t0_unix = time.monotonic(), time.time()
    hog = subprocess.Popen([squeeze.exe("memhog", tmp), "-c", squeeze.HOG, "32", "0", "1000"])
    while squeeze.alive(hog.pid) and squeeze.alive(prot.pid) and time.monotonic() - t0 < timeout_s:
        time.sleep(0.2)
    hog_gone_s = time.monotonic() - t0 if not squeeze.alive(hog.pid) else None
    time.sleep(2)
    res = {"prot_alive": squeeze.alive(prot.pid), "hog_alive": squeeze.alive(hog.pid),
           "hog_gone_after_s": hog_gone_s, "prot_rate": squeeze.rate(rate, t0 - 5, time.monotonic())}
    for p in (hog, prot):
        p.kill()
        p.wait()
    res["kernel_oom_kills"] = _kernel_oom_kills(since)
    events = squeeze.guard_events(since)
    res["guard_steps"] = squeeze.steps_of(events)
    firsts = [e for e in events if e.get("STEP") == "tighten"]
    if firsts:
        res["first_action_after_hog_start_s"] = round(int(firsts[0]["__REALTIME_TIMESTAMP"]) / 1e6 - t0_unix, 2)
    return res


@pytest.fixture(scope="module")
def guarded_service():
    sh("bash", str(REPO / "systemd/install.sh"), "install", timeout=600)
    POLICY.write_text(squeeze.policy("vm memory guard test"))
    sh("systemctl", "start", "aios-host.service", timeout=300)
    yield
    out = os.environ.get("AIOS_VM_OUT_DIR", "/out")
    if os.path.isdir(out):
        Path(out, "aios-host-memguard.journal").write_text(
            sh("journalctl", "-u", "aios-host", "-o", "short-monotonic", "--no-pager", check=False).stdout)
    sh("systemctl", "stop", "aios-host.service", check=False)
    POLICY.unlink(missing_ok=True)


def test_squeeze_the_guard_tightens_freezes_kills_batch_and_protects_prot(guarded_service, tmp_path):
    res = _squeeze(tmp_path)
    _report("aios-host", res)
    assert res["prot_alive"], res
    batch_steps = [s for s, cls in res["guard_steps"] if cls == "batch"]
    assert batch_steps[:3] == ["tighten", "freeze", "kill"], res
    assert not any(cls == "prot" for _, cls in res["guard_steps"]), res
    assert not [ln for ln in res["kernel_oom_kills"] if "memprot" in ln], res


# A rank of the gang: checkpoints on the memory guard's notice (SIGUSR1); grows until the host is
# just past the guard's danger level, then holds what it has and idles. (A rank still allocating when it is thawed for
# the notice runs its Python handler only after the allocation, which memory.high's throttling can
# stretch past any grace: the kernel applies the penalty on every return to user space.)
GANG_RANK = r"""
import os, signal, sys, time
ckpt = sys.argv[1] + "-" + os.environ["RANK"]
signal.signal(signal.SIGUSR1, lambda *_: open(ckpt, "w").write(f"{time.time():.3f}"))
time.sleep(8)  # the daemon's rescan moves both ranks into the batch class (match.job)

def available_mib():
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0

hold = []
while available_mib() > 560:  # just past the guard's danger (600 MiB): it tightens memory.high to this
    hold.append(bytearray(8 << 20))
    time.sleep(0.1)
while True:
    time.sleep(0.1)
"""


def test_a_job_in_the_squeezed_class_goes_as_one_gang_and_names_the_guard(guarded_service, tmp_path):
    _use_policy(squeeze.policy("vm memory guard, a job in batch", f'match.job = "{JOB_LABEL}"'))
    time.sleep(6)  # the thaw_seconds of the squeeze before: batch must be back to normal
    rate = tmp_path / "prot.rate"
    prot = subprocess.Popen([squeeze.exe("memprot", tmp_path), "-c", squeeze.PROT, str(rate)])
    time.sleep(7)
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    name = f"squeeze-{uuid.uuid4().hex[:6]}"
    # each rank waits 8 s, then grows 8 MiB per 0.1 s; it asked for SIGUSR1 and 3 s before a kill
    ckpt = Path(f"/var/tmp/aios-ckpt-{name}")
    job = sh(AIOS, "job", "run", "--name", name, "--nproc", "2", "--launcher", "systemd", "--class", "batch",
             "--label", JOB_LABEL,
             "--guard-notice", "SIGUSR1", "--guard-grace", "3s",
             "--", "/usr/bin/python3", "-c", GANG_RANK, str(ckpt), timeout=240, check=False)
    time.sleep(2)
    status = sh(AIOS, "job", "status", name, "--json", check=False)
    assert status.returncode == 0, (job.returncode, job.stdout[-3000:], job.stderr[-3000:], status.stderr)
    st = json.loads(status.stdout)["instances"][0]
    events = squeeze.guard_events(since)
    res = {"job_rc": job.returncode, "job_stderr": job.stderr[-2000:], "cause": st.get("cause"),
           "ranks": [(r["rank"], r["status"], r.get("exit")) for r in st["ranks"]],
           "guard_steps": squeeze.steps_of(events), "prot_alive": squeeze.alive(prot.pid),
           "kernel_oom_kills": _kernel_oom_kills(since),
           "checkpoints": sorted(p.name for p in ckpt.parent.glob(ckpt.name + "-*"))}
    notices = [e for e in events if e.get("STEP") == "notice"]
    kills = [e for e in events if e.get("STEP") == "kill"]
    if notices and kills:
        res["notice_to_kill_s"] = round((int(kills[0]["__REALTIME_TIMESTAMP"])
                                         - int(notices[0]["__REALTIME_TIMESTAMP"])) / 1e6, 2)
    prot.kill()
    prot.wait()
    _report("job-gang", res)
    assert res["prot_alive"], res
    batch_steps = [s for s, cls in res["guard_steps"] if cls == "batch"]
    assert "freeze" in batch_steps and "notice" in batch_steps and "kill" in batch_steps, res
    assert batch_steps.index("freeze") < batch_steps.index("notice") < batch_steps.index("kill"), res
    # both ranks took the notice and wrote their checkpoint; the kill waited the grace
    assert res["checkpoints"] == [f"{ckpt.name}-0", f"{ckpt.name}-1"], res
    assert res["notice_to_kill_s"] >= 2.5, res
    assert st["status"] == "failed" and st["cause"]["kind"] == "memory_guard", res
    assert "memory guard killed" in st["cause"]["detail"], res
    # both ranks died of the one kill, neither to the kernel's OOM killer
    assert all(r[1] in ("failed", "killed") for r in res["ranks"]), res
    assert not res["kernel_oom_kills"], res


CACHE_POLICY = squeeze.senpai_policy("vm senpai floor test", "memcache")
# 400 MiB of page cache (a file read once: reclaimable) and 200 MiB of shmem (a file in /dev/shm:
# without swap nothing can take it), then idle.
CACHE = r"""
import os, sys, time
data, shm = sys.argv[1], sys.argv[2]
time.sleep(8)  # the daemon's rescan moves it into its class first: pages are charged where they fault
with open(data, "wb") as f:
    for _ in range(400):
        f.write(os.urandom(1 << 20))
with open(data, "rb") as f:
    while f.read(1 << 20):
        pass
with open(shm, "wb") as f:
    for _ in range(200):
        f.write(b"\xa5" * (1 << 20))
open(sys.argv[3], "w").write("ready\n")
while True:
    time.sleep(1)
"""


def _stat(cg: Path) -> dict[str, int]:
    return {k: int(v) for k, v in (ln.split() for ln in (cg / "memory.stat").read_text().splitlines())}


def test_senpai_reclaims_the_cache_and_stops_at_what_cannot_be_reclaimed(guarded_service, tmp_path):
    _use_policy(CACHE_POLICY)
    ready = tmp_path / "ready"
    shm = Path(f"/dev/shm/aios-senpai-{os.getpid()}")
    data = Path(f"/var/tmp/aios-senpai-{os.getpid()}")
    p = subprocess.Popen([squeeze.exe("memcache", tmp_path), "-c", CACHE, str(data), str(shm), str(ready)])
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert ready.exists(), "the workload did not fill its cache"
        cg = CLASSES / "cache"
        deadline = time.monotonic() + 30  # the rescan moves it into its class
        while str(p.pid) not in (cg / "cgroup.procs").read_text().split() and time.monotonic() < deadline:
            time.sleep(0.5)
        samples = []
        for _ in range(40):
            high = (cg / "memory.high").read_text().strip()
            st = _stat(cg)
            floor = st["unevictable"] + st["shmem"] + st["anon"]  # no swap in the VM: anon stays
            cur = int((cg / "memory.current").read_text())
            samples.append((None if high == "max" else int(high), floor, cur, st["file"]))
            time.sleep(1)
        peak = int((cg / "memory.peak").read_text())
        _report("senpai-floor", {"samples_high_floor_current_file": samples, "peak": peak})
        highs = [s for s in samples if s[0] is not None]
        assert highs, samples
        assert all(h >= floor - (4 << 20) for h, floor, _, _ in highs), samples  # never below the floor
        last_high, last_floor, last_cur, last_file = highs[-1]
        assert last_high <= last_floor + (32 << 20), samples  # squeezed down to what cannot be reclaimed
        assert last_floor >= (200 << 20), samples  # the shmem, above min_size's 32M
        # of the 400 MiB file it wrote and read, no page cache is left charged: file pages are the shmem
        assert last_file <= st["shmem"] + (32 << 20) and last_cur <= last_floor + (32 << 20), (peak, samples)
    finally:
        p.kill()
        p.wait()
        shm.unlink(missing_ok=True)
        data.unlink(missing_ok=True)


def _report(name: str, res: dict) -> None:
    out = Path(os.environ.get("AIOS_VM_OUT_DIR", "/out"))
    if out.is_dir():
        f = out / "memguard.json"
        data = json.loads(f.read_text()) if f.exists() else {}
        data[name] = res
        f.write_text(json.dumps(data, indent=1))
