"""`aios-host energy status` in the VM (QEMU/TCG: no cpufreq driver, no RAPL, no GPU): each part
says it is absent and why, exit 0, and the installed command agrees with the machine."""

from __future__ import annotations

from tests.energy_honesty import PYTHON_CLI, check_against_the_machine, energy_status


def test_energy_status_in_the_vm_is_honest():
    doc = energy_status(PYTHON_CLI)
    check_against_the_machine(doc)
    assert not doc["cpufreq"]["available"] and not doc["gpus"]["available"]  # what this VM is
