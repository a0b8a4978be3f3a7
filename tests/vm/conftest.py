"""tests/vm: checks that need a real kernel with cgroup v2 controllers, systemd as PID 1 and bcc.

They run inside the QEMU test VM (`make vm-test`, i.e. `vagrant/qemu-vm test`), where the guest
runner sets AIOS_HOST_VM=1. Everywhere else every test here is collected and skipped, with the
reason shown by `-ra`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

IN_VM = os.environ.get("AIOS_HOST_VM") == "1"
SKIP_REASON = "needs the QEMU test VM (make vm-test)"
_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A conftest hook sees every item of the session, not only this directory's: filter by path.
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if _HERE not in Path(item.path).resolve().parents:
            continue
        item.add_marker(pytest.mark.vm)
        if not IN_VM:
            item.add_marker(skip)
