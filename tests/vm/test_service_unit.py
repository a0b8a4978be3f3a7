"""systemd/aios-host.service in the test VM: install, systemd-analyze verify/security, and its sandbox.

The daemon itself is not started: these tests install the unit with systemd/install.sh (what
`make install` runs; the VM has no make), then check the unit file, its exposure score beside
systemd-oomd.service's, and run commands *inside the unit's sandbox* through runtime drop-ins that
replace ExecStart=: the probes (bcc), class matching and cgroup writes must work with exactly the
unit's capabilities, syscall filter and mount namespace, and workloads below the unit must keep
their devices and survive a stop. The security scores go to /out/security.txt.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2]
UNIT = "aios-host.service"
UNIT_PATH = Path("/usr/local/lib/systemd/system") / UNIT
VENV = Path("/opt/aios-host/venv")
POLICY = Path("/etc/aios-host/policy.toml")
# A runtime drop-in: replaces ExecStart= for one test, gone after the test (and at any reboot).
DROPIN = Path("/run/systemd/system") / f"{UNIT}.d" / "zz-test.conf"
SCRIPTS = Path("/run/aios-host-test")  # outside the unit's writable paths; the sandbox only reads it
RESULTS = Path("/run/aios-host/sandbox")  # RuntimeDirectory=: writable inside the sandbox
OUT = Path("/out")

# systemd-analyze security checks that fail for aios-host.service but pass for systemd-oomd.service,
# each for a reason in systemd/aios-host.service. Anything else failing only for us fails the test.
ACCEPTED_ABOVE_OOMD = {
    "User=/DynamicUser=": "root: bpf()/perf_event_open and root-owned cgroupfs files",
    "CapabilityBoundingSet=~CAP_SYS_PTRACE": "match.exe reads other users' /proc/PID/exe",
    "CapabilityBoundingSet=~CAP_BPF": "the eBPF probes",
    "CapabilityBoundingSet=~CAP_SYS_(NICE|RESOURCE)": "CAP_SYS_NICE: moving a root workload into a class "
                                                      "cgroup (cpuset can_attach -> cap_safe_nice)",
    "SystemCallFilter=~@debug": "perf_event_open (the probes attach through it)",
    "MemoryDenyWriteExecute=": "bcc's LLVM JIT",
    "DeviceAllow=": "PrivateDevices=yes leaves the pseudo devices (null, zero, random...) allowed",
    "ProtectKernelModules=": "hides /lib/modules, where bcc finds the kernel headers",
    "ProtectControlGroups=": "writing cgroupfs is the daemon's job",
    "RootDirectory=/RootImage=": "bcc needs the host's kernel headers (/lib/modules, /usr/src)",
}
# The overall score may not exceed systemd-oomd's (systemd 252, scale 0-10): the checks above are
# paid for by what oomd leaves open and we close (PrivateNetwork=, with the metrics socket passed
# in by aios-host.socket; RestrictAddressFamilies=AF_UNIX; ProtectKernelTunables=). History:
# 3.8 with the workloads below the service, 3.4 once they moved to the classes scope, 1.8 (oomd's)
# without CAP_SYS_ADMIN and CAP_DAC_READ_SEARCH and with the network gone.
MARGIN = 0.0


def _run(*argv: str, timeout: float = 120, env: dict[str, str] | None = None,
         cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=env, cwd=cwd)


def _clean_env() -> dict[str, str]:
    # The VM runner puts /src on PYTHONPATH; the installed service does not see it.
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _venv_import(code: str) -> subprocess.CompletedProcess[str]:
    # Run from / : `python -c` puts the cwd first on sys.path, and the cwd is /src.
    return _run(str(VENV / "bin" / "python"), "-c", code, env=_clean_env(), cwd="/")


def _journal() -> str:
    return _run("journalctl", "-u", UNIT, "-o", "cat", "-n", "80", "--no-pager").stdout


@pytest.fixture(scope="module")
def installed() -> Iterator[None]:
    res = _run("bash", str(SRC / "systemd" / "install.sh"), "install", timeout=900, env=_clean_env())
    assert res.returncode == 0, res.stdout + res.stderr
    yield


@pytest.fixture
def sandbox(installed: None) -> Iterator:
    """start(exec_start, extra_lines, type_): the unit with ExecStart= (and more) replaced."""
    SCRIPTS.mkdir(parents=True, exist_ok=True)

    def start(exec_start: str, extra: str = "", type_: str = "oneshot") -> subprocess.CompletedProcess[str]:
        DROPIN.parent.mkdir(parents=True, exist_ok=True)
        DROPIN.write_text(
            "[Service]\n"
            f"Type={type_}\nExecStart=\nExecStart={exec_start}\nExecReload=\n"
            "WatchdogSec=0\nRestart=no\nTimeoutStartSec=600\n" + extra + "\n")
        assert _run("systemctl", "daemon-reload").returncode == 0
        return _run("systemctl", "start", UNIT, timeout=660)

    try:
        yield start
    finally:
        _run("systemctl", "stop", UNIT)
        DROPIN.unlink(missing_ok=True)
        _run("systemctl", "daemon-reload")
        _run("systemctl", "reset-failed", UNIT)


# -- install ----------------------------------------------------------------------------------


def test_install_is_idempotent_and_keeps_the_policy(installed: None) -> None:
    assert UNIT_PATH.read_text() == (SRC / "systemd" / UNIT).read_text()
    assert POLICY.read_text() == (SRC / "policies" / "default.toml").read_text()
    with POLICY.open("a") as f:
        f.write("# edited by the admin\n")
    res = _run("bash", str(SRC / "systemd" / "install.sh"), "install", timeout=900, env=_clean_env())
    assert res.returncode == 0, res.stdout + res.stderr
    assert POLICY.read_text().endswith("# edited by the admin\n")
    # A real (non-editable) install in the venv: the service imports it without /src.
    where = _venv_import("import aios_host; print(aios_host.__file__)")
    assert where.stdout.startswith(str(VENV / "lib")), where.stdout + where.stderr
    assert Path("/run/aios-host").is_dir()  # tmpfiles.d applied


def test_systemd_analyze_verify_is_clean(installed: None) -> None:
    res = _run("systemd-analyze", "verify", str(UNIT_PATH))
    ours = [line for line in (res.stdout + res.stderr).splitlines() if "aios-host" in line]
    assert res.returncode == 0 and not ours, res.stdout + res.stderr


def _security(unit: str) -> tuple[float, set[str], str]:
    res = _run("systemd-analyze", "security", "--no-pager", unit)
    text = res.stdout + res.stderr
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", text)
    assert m, text
    # Rows start with a check or cross mark (✓/✗, or +/- where the locale has no UTF-8).
    failing = {mm.group(2) for mm in re.finditer(r"^(✗|-) (\S+)", text, re.M)}
    return float(m.group(1)), failing, text


def test_security_exposure_beside_systemd_oomd(installed: None) -> None:
    ours, ours_bad, ours_text = _security(UNIT)
    oomd, oomd_bad, oomd_text = _security("systemd-oomd.service")
    only_ours = sorted(ours_bad - oomd_bad)
    report = [f"aios-host.service overall exposure {ours}", f"systemd-oomd.service overall exposure {oomd}",
              f"margin allowed {MARGIN}", "", "failing for aios-host.service, passing for systemd-oomd.service:"]
    report += [f"  {name}: {ACCEPTED_ABOVE_OOMD.get(name, 'NOT ACCEPTED')}" for name in only_ours]
    report += ["", "passing for aios-host.service, failing for systemd-oomd.service:"]
    report += [f"  {name}" for name in sorted(oomd_bad - ours_bad)]
    report += ["", "-" * 40, ours_text, "-" * 40, oomd_text]
    if OUT.is_dir():
        (OUT / "security.txt").write_text("\n".join(report) + "\n")
    print("\n".join(report[:len(only_ours) + 8]))
    assert not [n for n in only_ours if n not in ACCEPTED_ABOVE_OOMD], only_ours
    assert ours <= oomd + MARGIN, (ours, oomd)


# -- the sandbox ------------------------------------------------------------------------------

SANDBOX_SCRIPT = r"""
set -euxo pipefail
out=/run/aios-host/sandbox
rm -rf "$out"; mkdir -p "$out"
cg=$CLASSES_CG  # a delegated scope, as the daemon starts aios.slice/aios-classes.scope
# Class matching on another user's process (CAP_SYS_PTRACE).
readlink "/proc/$VICTIM/exe" > "$out/exe"
# ... but not its environment: no CAP_DAC_READ_SEARCH (match.job reads the supervisors' records).
if cat "/proc/$VICTIM/environ" > /dev/null 2>&1; then echo readable; else echo refused; fi > "$out/environ"
# /proc/sys read-only (ProtectKernelTunables=), no network but loopback (PrivateNetwork=).
if echo 1 > /proc/sys/kernel/bpf_stats_enabled 2>/dev/null; then echo writable; else echo read-only; fi > "$out/sysctl"
ls /sys/class/net > "$out/net"
# Cgroup writes in the delegated scope: move its holder to a leaf (no internal processes once
# controllers are on), enable them, make a class, set it, take a process in (a process with
# capabilities we lack: CAP_SYS_NICE), kill it (no CAP_KILL).
mkdir "$cg/_holder"; for p in $(cat "$cg/cgroup.procs"); do echo "$p" > "$cg/_holder/cgroup.procs"; done
echo +cpu > "$cg/cgroup.subtree_control"; echo +memory > "$cg/cgroup.subtree_control"
mkdir "$cg/cls"; echo 50 > "$cg/cls/cpu.weight"; echo 256M > "$cg/cls/memory.high"
cat "$cg/cls/cpu.weight" "$cg/cls/memory.high" > "$out/cls"
echo "$VICTIM" > "$cg/cls/cgroup.procs"
echo "$ROOTVICTIM" > "$cg/cls/cgroup.procs"
echo 1 > "$cg/cls/cgroup.kill"
# The probes: bcc compiles (LLVM JIT), loads, attaches and measures.
/opt/aios-host/venv/bin/aios-host probe run --duration 2 --probes sched --json > "$out/stats.json"
echo ok > "$out/done"
"""


@pytest.fixture
def victim() -> Iterator[int]:
    """A process of another user (nobody), as a workload to match, move and kill."""
    unit = "aios-test-victim.service"
    res = _run("systemd-run", f"--unit={unit}", "-p", "User=nobody", "--setenv=AIOS_TEST_MARK=1",
               "/bin/sleep", "600")
    assert res.returncode == 0, res.stderr
    pid = int(_run("systemctl", "show", "-p", "MainPID", "--value", unit).stdout)
    assert pid > 0
    try:
        yield pid
    finally:
        _run("systemctl", "stop", unit)
        _run("systemctl", "reset-failed", unit)


@pytest.fixture
def classes_scope() -> Iterator[tuple[Path, int]]:
    """A delegated scope in aios.slice, as the daemon starts one (its holder a root `sleep`), and
    a root workload with full capabilities in a unit of its own."""
    holder = subprocess.Popen(["systemd-run", "--scope", "--quiet", "--unit=aios-test-classes.scope",
                               "--slice=aios.slice", "-p", "Delegate=yes", "sleep", "600"])
    root_unit = "aios-test-rootvictim.service"
    _run("systemd-run", f"--unit={root_unit}", "/bin/sleep", "600")
    try:
        deadline = time.monotonic() + 30
        cg = ""
        while not cg and time.monotonic() < deadline:
            cg = _run("systemctl", "show", "-p", "ControlGroup", "--value", "aios-test-classes.scope").stdout.strip()
            time.sleep(0.2)
        assert cg, "the test scope did not start"
        pid = int(_run("systemctl", "show", "-p", "MainPID", "--value", root_unit).stdout)
        yield Path("/sys/fs/cgroup" + cg), pid
    finally:
        holder.kill()
        _run("systemctl", "stop", "aios-test-classes.scope", root_unit)


def test_probes_matching_and_cgroup_writes_work_in_the_sandbox(sandbox, victim: int, classes_scope) -> None:
    script = SCRIPTS / "sandbox.sh"
    script.write_text(SANDBOX_SCRIPT)
    cg, root_victim = classes_scope
    res = sandbox(f"/bin/bash {script}",
                  extra=f"Environment=VICTIM={victim} ROOTVICTIM={root_victim} CLASSES_CG={cg}")
    assert res.returncode == 0, res.stderr + "\n" + _journal()
    assert (RESULTS / "done").read_text() == "ok\n", _journal()
    assert (RESULTS / "exe").read_text().strip() in ("/usr/bin/sleep", "/bin/sleep")
    assert (RESULTS / "environ").read_text() == "refused\n"
    assert (RESULTS / "sysctl").read_text() == "read-only\n"
    assert (RESULTS / "net").read_text().split() == ["lo"]
    assert (RESULTS / "cls").read_text().split() == ["50", str(256 << 20)]
    deadline = time.monotonic() + 10
    while Path(f"/proc/{victim}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{victim}").exists(), "cgroup.kill from the sandbox did not kill the workload"
    assert not Path(f"/proc/{root_victim}").exists(), "the root workload was not moved in (CAP_SYS_NICE?)"
    stats = json.loads((RESULTS / "stats.json").read_text())
    print("probe run in the sandbox:", {k: v for k, v in stats.items() if k != "cgroups"})
    assert sum(c["runq_count"] for c in stats["cgroups"]) > 0, stats


# -- uninstall (last: the tests above need the unit) ------------------------------------------


def test_uninstall_keeps_the_policy(installed: None) -> None:
    res = _run("bash", str(SRC / "systemd" / "install.sh"), "uninstall", timeout=300, env=_clean_env())
    assert res.returncode == 0, res.stdout + res.stderr
    assert not UNIT_PATH.exists()
    assert not Path("/usr/local/lib/tmpfiles.d/aios-host.conf").exists()
    assert not Path("/opt/aios-host/bpf").exists()
    assert POLICY.exists()
    assert "could not be found" in _run("systemctl", "status", UNIT).stderr
    # The provisioned venv keeps its dependencies; only aios-host left it.
    assert (VENV / "bin" / "python").exists()
    gone = _venv_import("import aios_host")
    assert gone.returncode != 0
