"""Slow sources run off the control loop, each on its own thread, with a deadline.

A source's `sample()` (bcc map reads now, NVML later) can stall: a map with many cgroups, a GPU
that does not answer. The loop never calls it; it takes the latest sample the thread produced. A
sample older than the deadline is stale: the loop uses it anyway (or nothing, before the first),
counts a skip and logs `source_stale` once per episode, never waits. `setup()` (attaching the
probes: a few seconds of LLVM) also runs on the thread, so the loop starts without waiting for it
unless it asks to (wait_ready).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from aios_host import osthread
from aios_host.daemon.view import SourceHealth
from aios_host.log import get_logger

T = TypeVar("T")
log = get_logger("aios_host.daemon")


@dataclass(frozen=True)
class Sampled(Generic[T]):
    value: T | None  # None: no sample yet
    age_s: float | None
    fresh: bool


class SlowSource(Generic[T]):
    def __init__(
        self,
        name: str,
        sample: Callable[[], T],
        interval_s: float,
        deadline_s: float,
        setup: Callable[[], None] | None = None,
        teardown: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._sample = sample
        self._setup = setup
        self._teardown = teardown
        self.interval_s = interval_s
        self.deadline_s = deadline_s
        self._clock = clock
        self._lock = threading.Lock()
        self._value: T | None = None
        self._at: float | None = None
        self._error: str | None = None
        self._failed = False  # setup failed: the source is gone for good
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=osthread.named(f"aios-{name}", self._run), name=f"source-{name}",
                                        daemon=True)
        self.skips = 0
        self._stale = False
        self._started_at: float | None = None

    def start(self) -> SlowSource[T]:
        self._started_at = self._clock()
        self._thread.start()
        return self

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait for setup and the first sample (or a failure). True when a sample is there."""
        self._ready.wait(timeout_s)
        with self._lock:
            return self._at is not None

    def _run(self) -> None:
        try:
            if self._setup is not None:
                self._setup()
        except Exception as exc:  # noqa: BLE001 - any failure to attach leaves the source absent
            with self._lock:
                self._error, self._failed = str(exc).splitlines()[0] if str(exc) else type(exc).__name__, True
            log.warning("source_unavailable", source=self.name, error=self._error)
            self._ready.set()
            return
        try:
            while not self._stop.is_set():
                try:
                    value = self._sample()
                except Exception as exc:  # noqa: BLE001 - a failed sample is a skip, not a crash
                    with self._lock:
                        self._error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    log.warning("source_sample_failed", source=self.name, error=self._error)
                else:
                    with self._lock:
                        self._value, self._at, self._error = value, self._clock(), None
                self._ready.set()
                self._stop.wait(self.interval_s)
        finally:
            if self._teardown is not None:
                self._teardown()

    def sample_now(self) -> None:
        """Take one sample on the caller's thread (a test's deterministic step)."""
        value = self._sample()
        with self._lock:
            self._value, self._at, self._error = value, self._clock(), None

    def latest(self) -> Sampled[T]:
        """The newest sample; counts a skip and logs once when it is older than the deadline."""
        with self._lock:
            value, at, err = self._value, self._at, self._error
        now = self._clock()
        age = None if at is None else now - at
        fresh = age is not None and age <= self.deadline_s
        starting = at is None and self._started_at is not None and now - self._started_at <= self.deadline_s
        if not fresh and not self._failed and not starting:  # the first sample is not late until its deadline
            self.skips += 1
            if not self._stale:
                log.warning("source_stale", source=self.name, age_s=None if age is None else round(age, 3),
                            deadline_s=self.deadline_s, error=err)
            self._stale = True
        elif fresh and self._stale:
            log.info("source_recovered", source=self.name, skips=self.skips)
            self._stale = False
        return Sampled(value, age, fresh)

    def health(self) -> SourceHealth:
        with self._lock:
            at, err = self._at, self._error
        age = None if at is None else self._clock() - at
        return SourceHealth(self.name, age is not None and age <= self.deadline_s and not self._failed,
                            age, self.skips, err)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
