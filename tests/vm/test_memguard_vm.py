"""The memory guard on real systemd + cgroup v2 (the QEMU VM, 3 GiB, no swap): a squeeze.

A protected class runs a steady workload (memprot: holds 300 MiB and keeps touching it, counting
rounds); a batch class grows (memhog: 32 MiB more every 0.1 s) until the VM would run out. The
installed service, with [memory_guard] enabled, must act before the kernel does: the batch class
is tightened, then frozen, then killed, in that order (journald events), and the protected
workload is never OOM-killed. (The same squeeze without aios-host, and with systemd-oomd, is
tests/bench/bench_memguard.py, in a VM boot of its own: a kernel OOM kill there may take any
process of the VM, which the rest of this suite needs.) Results go to /out/memguard.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
AIOS = "/opt/aios-host/venv/bin/aios-host"

PROT = r"""
import sys, time
blob = bytearray(300 << 20)
rounds = 0
out = sys.argv[1]
t0 = time.monotonic()
while True:
    for i in range(0, len(blob), 4096 * 16):
        blob[i] = (blob[i] + 1) & 0xFF
    rounds += 1
    if rounds % 5 == 0:
        open(out, "w").write(f"{rounds} {time.monotonic() - t0:.3f}\n")
"""
HOG = r"""
import time
open("/proc/self/oom_score_adj", "w").write("1000")  # if the kernel acts after all, it takes this first
hold = []
while True:
    hold.append(bytearray(32 << 20))  # bytearray zero-fills: every page is touched
    time.sleep(0.1)
"""
POLICY = """
description = "vm memory guard test"
[host]
reserve_cores = 0
reserve_memory = 0
[memory_guard]
enabled = true
danger_available = "600M"
safe_available = "900M"
danger_seconds = 4
step_seconds = 2
thaw_seconds = 5
[[class]]
name = "prot"
match.comm = "^memprot$"
priority = 10
memory.protect = true
memory.low = "400M"
[[class]]
name = "batch"
match.comm = "^memhog$"
priority = 0
"""


def sh(*argv: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {out.returncode}: {out.stdout}{out.stderr}")
    return out


def _exe(tmp: Path, name: str) -> str:
    """The interpreter under the workload's name: execve of a symlink gives the process that comm,
    and Python follows the link to find its standard library."""
    dst = tmp / name
    if not dst.exists():
        os.symlink(os.path.realpath("/usr/bin/python3"), dst)
    return str(dst)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _squeeze(tmp: Path, guarded: bool, timeout_s: float = 150.0) -> dict:
    rate = tmp / f"prot-{guarded}.rate"
    prot = subprocess.Popen([_exe(tmp, "memprot"), "-c", PROT, str(rate)])
    time.sleep(7)  # the protected workload settles (guarded: the 5 s rescan moves it into its class)
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    t0, t0_unix = time.monotonic(), time.time()
    hog = subprocess.Popen([_exe(tmp, "memhog"), "-c", HOG])
    while _alive(hog.pid) and _alive(prot.pid) and time.monotonic() - t0 < timeout_s:
        time.sleep(0.2)
    hog_gone_s = time.monotonic() - t0 if not _alive(hog.pid) else None
    time.sleep(2)
    res = {"guarded": guarded, "prot_alive": _alive(prot.pid), "hog_alive": _alive(hog.pid),
           "hog_gone_after_s": hog_gone_s, "prot_rounds": (rate.read_text().split() if rate.exists() else None)}
    for p in (hog, prot):
        p.kill()
        p.wait()
    kernel_ooms = sh("journalctl", "-k", "--since", since, "--no-pager", "-o", "cat", check=False).stdout
    res["kernel_oom_kills"] = [ln for ln in kernel_ooms.splitlines() if "Killed process" in ln]
    if guarded:
        out = sh("journalctl", "-u", "aios-host", "AIOS_EVENT=memory_guard", "--since", since, "-o", "json",
                 "--no-pager", check=False).stdout
        events = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
        res["guard_steps"] = [(e.get("STEP"), e.get("CGROUP", "").rsplit("/", 2)[-2]) for e in events]
        firsts = [e for e in events if e.get("STEP") == "tighten"]
        if firsts:
            res["first_action_after_hog_start_s"] = round(int(firsts[0]["__REALTIME_TIMESTAMP"]) / 1e6 - t0_unix, 2)
    return res


@pytest.fixture(scope="module")
def guarded_service():
    sh("bash", str(REPO / "systemd/install.sh"), "install", timeout=600)
    Path("/etc/aios-host/policy.toml").write_text(POLICY)
    sh("systemctl", "start", "aios-host.service", timeout=300)
    yield
    out = os.environ.get("AIOS_VM_OUT_DIR", "/out")
    if os.path.isdir(out):
        Path(out, "aios-host-memguard.journal").write_text(
            sh("journalctl", "-u", "aios-host", "-o", "short-monotonic", "--no-pager", check=False).stdout)
    sh("systemctl", "stop", "aios-host.service", check=False)
    Path("/etc/aios-host/policy.toml").unlink(missing_ok=True)


def test_squeeze_the_guard_tightens_freezes_kills_batch_and_protects_prot(guarded_service, tmp_path):
    res = _squeeze(tmp_path, guarded=True)
    _report("aios-host", res)
    assert res["prot_alive"], res
    batch_steps = [s for s, cls in res.get("guard_steps", []) if cls == "batch"]
    assert batch_steps[:3] == ["tighten", "freeze", "kill"], res
    assert not any(cls == "prot" for _, cls in res.get("guard_steps", [])), res
    assert not [ln for ln in res["kernel_oom_kills"] if "memprot" in ln], res


def _report(name: str, res: dict) -> None:
    out = Path(os.environ.get("AIOS_VM_OUT_DIR", "/out"))
    if out.is_dir():
        f = out / "memguard.json"
        data = json.loads(f.read_text()) if f.exists() else {}
        data[name] = res
        f.write_text(json.dumps(data, indent=1))
