"""Thread names the kernel shows: what `top -H` needs to say which of the daemon's threads uses the CPU."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from aios_host import osthread
from aios_host.daemon.sources import SlowSource


def _comm_of(native_id: int) -> str:
    return Path(f"/proc/self/task/{native_id}/comm").read_text().strip()


def _run_named(name: str) -> str:
    seen: dict[str, str] = {}

    def body() -> None:
        seen["comm"] = _comm_of(threading.get_native_id())

    t = threading.Thread(target=osthread.named(name, body))
    t.start()
    t.join()
    return seen["comm"]


def test_a_named_thread_is_named_for_the_kernel_and_the_caller_is_not() -> None:
    before = _comm_of(threading.get_native_id())
    assert _run_named("aios-test") == "aios-test"
    assert _comm_of(threading.get_native_id()) == before


def test_a_long_name_is_cut_to_what_the_kernel_keeps() -> None:
    assert _run_named("aios-a-very-long-thread-name") == "aios-a-very-lon"  # 15 bytes


def test_a_slow_source_thread_carries_its_source_name() -> None:
    seen: list[str] = []

    def sample() -> int:
        seen.append(_comm_of(threading.get_native_id()))
        return 1

    src = SlowSource("probes", sample, 0.01, 1.0).start()
    try:
        assert src.wait_ready(5.0)
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        src.stop()
    assert seen[0] == "aios-probes"


def test_a_thread_a_library_started_is_named_from_outside() -> None:
    started = threading.Event()
    done = threading.Event()
    t = threading.Thread(target=lambda: (started.set(), done.wait(5)))
    t.start()
    started.wait(5)
    try:
        assert t.native_id is not None and osthread.name_thread(t.native_id, "aios-metrics")
        assert _comm_of(t.native_id) == "aios-metrics"
    finally:
        done.set()
        t.join()
