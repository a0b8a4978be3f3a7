"""What `aios-host energy status --json` must say on a real machine, from what the machine has:
shared by the host tier (tests/host) and the VM suite (tests/vm)."""

from __future__ import annotations

import ctypes.util
import glob
import json
import os
import subprocess
import sys


def energy_status(argv0: list[str]) -> dict:
    out = subprocess.run([*argv0, "energy", "status", "--json", "--interval", "0.2"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert not out.stderr.strip(), out.stderr  # nothing missing is a warning: each part says why
    return json.loads(out.stdout)


def check_against_the_machine(doc: dict) -> None:
    policies = glob.glob("/sys/devices/system/cpu/cpufreq/policy*")
    assert doc["cpufreq"]["available"] == bool(policies), doc["cpufreq"]
    assert len(doc["cpufreq"]["policies"]) == len(policies)
    if not policies:
        assert doc["cpufreq"]["reason"], doc["cpufreq"]
    zones = glob.glob("/sys/class/powercap/intel-rapl:*") if os.path.isdir("/sys/class/powercap") else []
    if not zones:
        assert not doc["rapl"]["available"] and doc["rapl"]["reason"], doc["rapl"]
    if ctypes.util.find_library("nvidia-ml") is None:  # ldconfig's view: what NVML's loader finds
        assert not doc["gpus"]["available"] and "NVML" in doc["gpus"]["reason"], doc["gpus"]


PYTHON_CLI = [sys.executable, "-m", "aios_host"]
