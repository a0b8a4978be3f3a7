"""The `auto` GPU power search as the daemon runs it: energy/auto_search.py decides, this applies
each setting, measures it over whole training steps and restores the original at the end.

For each running job of a class with energy.gpu_power_limit = "auto" (energy/auto_jobs.py):

1. Start: the GPUs its ranks use; each one's original limit (as the daemon's journal recorded it
   before the daemon's first change, else as it is now); the settings, from the lowest original
   down to the highest minimum constraint in power_step_watts. The search only ever lowers a
   limit: one an administrator set below the maximum stays the ceiling.
2. Every setting is one power-limit Write per GPU, handed to the daemon's `apply`: journaled, then
   written through kernel/gpu.py's checking writer like every other energy write, so a stop, a
   rollback or a crash restores the originals.
3. Measure: after a write, `settle_s` and then one step boundary; a window runs from that
   boundary to the first one at least steps_per_measurement steps and measure_seconds later.
   Boundaries are the changes of the job's completed step as the records show them, each paired
   with the energy sample the loop has at that tick: GPU energy per step = the NVML energy
   counters' difference, summed over the job's GPUs, / steps; step time = window / steps. A window
   is thrown away when the gang restarted, a GPU reported a slowdown nothing of ours causes
   (HwSlowdown, thermal, power brake), a GPU could not be read, or a counter went back.
4. Hold the chosen setting and keep measuring (AutoSearch restarts from the top on drift).
   Locked SM clocks instead: when the power-limit walk is done and, over all its measured windows,
   no busy GPU of the job (no GpuIdle, utilisation above 0) ever reported SwPowerCap, the cap never
   bound (a memory-bound phase drawing less than the lowest limit: step time and energy do not
   move with it). The limits go back to their originals and the same search walks the SM clocks
   every GPU supports (telemetry's supported_sm_clocks_mhz), from the highest down in steps of at
   least CLOCK_STEP_MHZ, each one a lock of every GPU's SM clock to lowest..setting (a cap: idle
   phases may still clock down), one journaled Write per GPU (op "nvml", path
   nvml/<index>/<uuid>/locked_sm_clocks_mhz, original "none": undo resets the lock), and holds
   the least-energy clock within the bound. A GPU whose clocks cannot be locked (no supported
   list: MIG, NOT_SUPPORTED; or the lock write fails) stays on the power limit, and the view's
   knob_reason says why. NVML cannot read a lock back, so a lock set with nvidia-smi -lgc before
   the search is not seen, and the reset at the end clears it too.
5. End (the record says the job ended, its supervisor is gone, or the class is no longer auto):
   each GPU goes back to its original limit, and its SM clocks are reset if the search locked them.
   A limit left by a daemon that died mid-search (its journal adopted at start, `adopt`) is put
   back at the first tick no search claims its GPU; a clock lock it left is reset at once.

Precision: the supervisor flushes its record once a second and the loop reads it once a tick, so
each end of a window is seen late by up to ~2 s, by about the same at both ends: over the 30 s
default window, a few percent at worst. Host energy per step (GPU + RAPL where present) is
measured over the same window and reported; the search minimises the GPU part, which the limit
acts on (RAPL also counts whatever else the host runs).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aios_host.energy.auto_jobs import AutoClass, JobProgress
from aios_host.energy.auto_search import AutoSearch, Measurement, Phase
from aios_host.energy.plan import LOCKED_SM_CLOCKS_KNOB, NVML_PREFIX, UNLOCKED, locked_clocks_value
from aios_host.energy.telemetry import EnergySample
from aios_host.log import get_logger
from aios_host.policy.plan import Write

log = get_logger("aios_host.energy")

AUTO_REASON = "energy auto"  # every write the runner makes starts its reason so (adopt finds them)
SETTLE_S = 3.0  # after a write: the record's flush (1 s) and a tick pass before a boundary counts
FINISHED_KEPT = 8  # ended searches the API still shows
CLOCK_STEP_MHZ = 100  # the clock walk's settings are at least this far apart (NVML lists 15 MHz steps)

Apply = Callable[[Write], bool]  # journal and write one Write; False when the write failed


def nvml_path(index: int, uuid: str) -> str:
    return f"{NVML_PREFIX}{index}/{uuid}/power_limit_mw"


def clock_path(index: int, uuid: str) -> str:
    return f"{NVML_PREFIX}{index}/{uuid}/{LOCKED_SM_CLOCKS_KNOB}"


def clock_settings_mhz(supported: Iterable[int], step_mhz: int = CLOCK_STEP_MHZ) -> list[int]:
    """The highest supported clock, then each next one at least step_mhz below the last kept,
    and the lowest."""
    ordered = sorted(set(supported), reverse=True)
    out: list[int] = []
    for c in ordered:
        if not out or out[-1] - c >= step_mhz:
            out.append(c)
    if ordered and out[-1] != ordered[-1]:
        out.append(ordered[-1])
    return out


def gpu_of_path(path: str) -> int | None:
    head = path[len(NVML_PREFIX):].split("/", 1)[0] if path.startswith(NVML_PREFIX) else ""
    return int(head) if head.isdigit() else None


def settings_w(top_w: float, bottom_w: float, step_w: float) -> list[float]:
    """top, top - step, ... while above bottom, then bottom itself."""
    out = []
    s = top_w
    while s > bottom_w + 1e-6:
        out.append(round(s, 3))
        s -= step_w
    out.append(round(bottom_w, 3))
    return out


def _mw(value: str | None) -> int | None:
    return int(value) if value is not None and value.strip().isdigit() else None


def _limit_mw(sample: EnergySample | None, gpu: int) -> int | None:
    g = sample.gpu(gpu) if sample is not None else None
    return None if g is None or g.power_limit_watts is None else round(g.power_limit_watts * 1000)


@dataclass
class _Window:
    start_t: float
    start_step: int
    start_gpu_j: dict[int, float]
    start_cpu_j: float | None
    spoiled: str | None = None


class _Search:
    def __init__(self, job: JobProgress, cls: AutoClass, uuids: dict[int, str], original_mw: dict[int, int],
                 settings: list[float]) -> None:
        self.key, self.cls, self.spec = job.key, cls.name, cls.spec
        self.gpus = job.gpus
        self.uuids = uuids
        self.original_mw = original_mw
        self.search = AutoSearch(settings, cls.spec.max_slowdown, cls.spec.steps_per_measurement)
        self.applied_w: float | None = None  # what the runner has set the job's GPUs to
        self.written_at = -math.inf
        self.baseline_step: int | None = None  # first step read once settled: the next change is a boundary
        self.window: _Window | None = None
        self.window_now: tuple[int, float] | None = None  # (steps, seconds) so far, for the view
        self.last_step: int | None = None
        self.restart = job.restart
        self.measurements = 0
        self.discarded = 0
        self.last: dict[str, Any] | None = None
        # The knob: "power" first; "clocks" when the power walk found that the cap never binds.
        self.knob = "power"
        self.power_search = self.search
        self.knob_decided = False
        self.knob_reason: str | None = None
        self.cap_bound = False  # SwPowerCap seen on a busy GPU in a measured power-limit window
        self.busy_samples = 0  # busy-GPU samples in those windows
        self.applied_mhz: int | None = None  # the SM clock cap the runner has set (clock walk)
        self.clock_floor_mhz = 0  # the lowest supported clock: every lock is floor..setting
        self.clocks_locked: set[int] = set()  # GPUs whose SM clocks this search locked

    def setting(self) -> float | None:
        return self.applied_w if self.knob == "power" else self.applied_mhz

    def path(self, gpu: int) -> str:
        return nvml_path(gpu, self.uuids[gpu])

    def limit_mw(self, sample: EnergySample | None, gpu: int) -> int | None:
        """The GPU's limit now: the sample's if it was taken after our last write, else what that
        write set (the source samples on its own thread: the latest sample can predate it)."""
        if sample is not None and sample.t > self.written_at:
            return _limit_mw(sample, gpu)
        return None if self.applied_w is None else round(self.applied_w * 1000)

    def view(self) -> dict[str, Any]:
        chosen = self.power_search.chosen
        results = self.power_search.results()
        baseline = results[0].energy_per_step_j if results else None
        return {
            "job": self.key, "class": self.cls, "gpus": list(self.gpus), "state": self.search.phase.value,
            "knob": "power_limit" if self.knob == "power" else "sm_clock", "knob_reason": self.knob_reason,
            **self._clock_view(),
            "setting_watts": self.applied_w,
            "original_watts": {str(g): mw / 1000 for g, mw in self.original_mw.items()},
            "settings_watts": list(self.search.settings),
            "window": None if self.window is None or self.window_now is None else
            {"steps": self.window_now[0], "seconds": self.window_now[1]},
            "measurements": self.measurements, "discarded_windows": self.discarded,
            "restarts": self.power_search.restarts,
            "results": [{"setting_watts": r.setting, "energy_per_step_joules": r.energy_per_step_j,
                         "step_seconds": r.step_time_s, "slowdown_ratio": r.slowdown, "within_bound": r.within_bound,
                         "measurements": r.measurements} for r in results],
            "chosen": None if chosen is None else {
                "setting_watts": chosen.setting, "energy_per_step_joules": chosen.energy_per_step_j,
                "step_seconds": chosen.step_time_s, "slowdown_ratio": chosen.slowdown,
                "energy_saved_ratio": None if not baseline else 1 - chosen.energy_per_step_j / baseline},
            "last_measurement": self.last, "max_slowdown_ratio": self.spec.max_slowdown,
        }

    def _clock_view(self) -> dict[str, Any]:
        if self.knob != "clocks":
            return {}
        chosen = self.search.chosen
        results = self.search.results()
        baseline = results[0].energy_per_step_j if results else None
        return {"clocks": {
            "setting_mhz": self.applied_mhz, "floor_mhz": self.clock_floor_mhz,
            "settings_mhz": [int(c) for c in self.search.settings], "restarts": self.search.restarts,
            "results": [{"setting_mhz": int(r.setting), "energy_per_step_joules": r.energy_per_step_j,
                         "step_seconds": r.step_time_s, "slowdown_ratio": r.slowdown,
                         "within_bound": r.within_bound, "measurements": r.measurements} for r in results],
            "chosen": None if chosen is None else {
                "setting_mhz": int(chosen.setting), "energy_per_step_joules": chosen.energy_per_step_j,
                "step_seconds": chosen.step_time_s, "slowdown_ratio": chosen.slowdown,
                "energy_saved_ratio": None if not baseline else 1 - chosen.energy_per_step_j / baseline}}}


class AutoPowerRunner:
    """Ticked by the daemon; holds one search per followed job."""

    def __init__(self, settle_s: float = SETTLE_S) -> None:
        self.settle_s = settle_s
        self._searches: dict[str, _Search] = {}
        self._waiting: dict[str, dict[str, Any]] = {}
        self._finished: deque[dict[str, Any]] = deque(maxlen=FINISHED_KEPT)
        self._failed: dict[str, str] = {}  # job key -> why its search stopped: not started again for it
        self._orphans: dict[str, str] = {}  # path -> original, left by a daemon that died mid-search
        self._said: set[tuple[str, str]] = set()

    @property
    def searches(self) -> dict[str, _Search]:
        return self._searches

    def adopt(self, journaled: Iterable[Write]) -> None:
        """The journal a previous daemon left: its auto settings are restored unless a search takes
        their GPUs over (it starts from the same journaled original)."""
        for w in journaled:
            if w.op == "nvml" and w.reason.startswith(AUTO_REASON) and w.old is not None:
                self._orphans[w.path] = w.old

    def wants_jobs(self) -> bool:
        return bool(self._searches or self._orphans or self._waiting)

    # -- the tick --------------------------------------------------------------------------------

    def tick(self, now: float, jobs: list[JobProgress], classes: tuple[AutoClass, ...],
             sample: EnergySample | None, apply: Apply | None,
             original_of: Callable[[str], str | None], mode: str = "active") -> None:
        """`sample`: the latest fresh energy sample (None: stale or none); `apply`: None when the
        daemon may not write (observe-only, dry-run, paused); `original_of(path)`: the journaled
        original of a path, if any."""
        by_class = {c.name: c for c in classes}
        jobs = [j for j in jobs if j.cls in by_class]
        live = {j.key for j in jobs}
        self._waiting = {}
        if apply is None:
            self._not_acting(jobs, mode)
            return
        for key in [k for k in self._searches if k not in live]:
            why = "the job ended" if self._searches[key].cls in by_class else "the class is no longer auto"
            self._end(key, why, sample, apply, original_of)
        for key in [k for k in self._failed if k not in live]:
            del self._failed[key]
        self._said = {x for x in self._said if x[0] in live}
        for j in jobs:
            if j.key in self._failed:
                self._wait(j, f"stopped: {self._failed[j.key]}")
                continue
            s = self._searches.get(j.key)
            if s is None:
                if sample is None:
                    self._wait(j, "no fresh energy sample yet")
                    continue
                s = self._begin(j, by_class[j.cls], sample, original_of)
                if s is None:
                    continue
            self._step(s, j, sample, now, apply, original_of)
        if sample is not None and self._orphans:
            self._restore_orphans(sample, apply)

    def _not_acting(self, jobs: list[JobProgress], mode: str) -> None:
        if self._searches:
            # Only a rollback pauses an active daemon, and it restored the originals already.
            log.info("energy_auto_stopped", jobs=sorted(self._searches), mode=mode)
            for s in self._searches.values():
                self._finished.append({**s.view(), "state": "ended", "ended": f"daemon {mode}"})
            self._searches.clear()
        self._orphans.clear()
        for j in jobs:
            self._wait(j, f"daemon {mode}: the auto search writes power limits, so it does not run",
                       event="energy_auto_would")

    def _wait(self, j: JobProgress, reason: str, event: str = "energy_auto_waiting") -> None:
        self._waiting[j.key] = {"job": j.key, "class": j.cls, "gpus": list(j.gpus), "state": "waiting",
                                "reason": reason}
        if (j.key, reason) not in self._said:
            self._said.add((j.key, reason))
            log.info(event, job=j.key, cls=j.cls, reason=reason)

    # -- start and end -------------------------------------------------------------------------------

    def _begin(self, j: JobProgress, cls: AutoClass, sample: EnergySample,
               original_of: Callable[[str], str | None]) -> _Search | None:
        if not j.gpus:
            self._wait(j, "its ranks were placed on no GPU and the class names none (cpu.gpus)")
            return None
        busy = {g: k for k, s in self._searches.items() for g in s.gpus}
        for g in j.gpus:
            gs = sample.gpu(g)
            why = None
            if gs is None:
                why = f"gpu{g}: not seen by NVML" + (f" ({sample.gpu_reason})" if sample.gpu_reason else "")
            elif gs.error:
                why = f"gpu{g}: {gs.error}"
            elif gs.power_limit_watts is None or gs.power_limit_min_watts is None or gs.power_limit_max_watts is None:
                why = f"gpu{g}: the power limit is observe-only here (no permission, or not supported)"
            elif gs.energy_counter_joules is None:
                why = f"gpu{g}: no total energy counter (NVML has one from Volta on)"
            elif g in busy:
                why = f"gpu{g}: searched for job {busy[g]}"
            if why:
                self._wait(j, why)
                return None
        gpus = [sample.gpu(g) for g in j.gpus]
        uuids = {g.index: g.uuid for g in gpus if g is not None}
        original = {}
        for g in j.gpus:
            path = nvml_path(g, uuids[g])
            journaled = _mw(original_of(path))
            self._orphans.pop(path, None)  # claimed: the search starts from the same original
            original[g] = journaled if journaled is not None else _limit_mw(sample, g) or 0
        lo = max(g.power_limit_min_watts or 0.0 for g in gpus if g is not None)
        hi = min(g.power_limit_max_watts or 0.0 for g in gpus if g is not None)
        top = max(min(min(original.values()) / 1000, hi), lo)
        s = _Search(j, cls, uuids, original, settings_w(top, lo, cls.spec.power_step_watts))
        self._searches[j.key] = s
        log.info("energy_auto_start", job=j.key, cls=cls.name, gpus=list(j.gpus),
                 original_watts=[original[g] / 1000 for g in j.gpus], settings_watts=list(s.search.settings),
                 max_slowdown=cls.spec.max_slowdown, steps=cls.spec.steps_per_measurement,
                 measure_seconds=cls.spec.measure_seconds)
        return s

    def _end(self, key: str, why: str, sample: EnergySample | None, apply: Apply,
             original_of: Callable[[str], str | None]) -> None:
        s = self._searches.pop(key)
        restored = {}
        for g in s.gpus:
            path = s.path(g)
            journaled = _mw(original_of(path))
            want = journaled if journaled is not None else s.original_mw[g]
            current = s.limit_mw(sample, g)
            if current == want or s.applied_w is None:
                continue  # never changed by us, or already back
            old = current if current is not None else round(s.applied_w * 1000)
            ok = apply(Write("nvml", path, str(old), str(want),
                             f"{AUTO_REASON}: job {key} ended: back to the original {want / 1000:g} W", "nvml"))
            restored[str(g)] = want / 1000
            log.info("energy_auto_restore", job=key, cls=s.cls, gpu=g, watts=want / 1000, ok=ok, why=why)
        clocks = self._reset_clocks(s, sorted(s.clocks_locked), f"job {key} ended", apply, original_of)
        chosen = s.power_search.chosen
        log.info("energy_auto_end", job=key, cls=s.cls, why=why, measurements=s.measurements, knob=s.knob,
                 held_watts=None if chosen is None else chosen.setting, restored_watts=restored,
                 restored_clocks=clocks)
        self._finished.append({**s.view(), "state": "ended", "ended": why, "restored_watts": restored,
                               **({"restored_clocks": clocks} if clocks else {})})

    def _reset_clocks(self, s: _Search, gpus: list[int], why: str, apply: Apply,
                      original_of: Callable[[str], str | None]) -> dict[str, str]:
        """Each GPU's SM clocks back to the journaled original (unlocked); {gpu: value}."""
        out = {}
        for g in gpus:
            path = clock_path(g, s.uuids[g])
            want = original_of(path) or UNLOCKED
            old = UNLOCKED if s.applied_mhz is None else locked_clocks_value(s.clock_floor_mhz, s.applied_mhz)
            ok = apply(Write("nvml", path, old, want, f"{AUTO_REASON}: {why}: SM clocks back to {want}", "nvml"))
            s.clocks_locked.discard(g)
            out[str(g)] = want
            log.info("energy_auto_restore", job=s.key, cls=s.cls, gpu=g, sm_clocks=want, ok=ok, why=why)
        return out

    def _restore_orphans(self, sample: EnergySample, apply: Apply) -> None:
        busy = {g for s in self._searches.values() for g in s.gpus}
        for path, old in sorted(self._orphans.items()):
            g = gpu_of_path(path)
            if g is not None and path.endswith("/" + LOCKED_SM_CLOCKS_KNOB):
                # NVML cannot read a lock back: reset it (a search on the GPU measures from the
                # next step boundary on, after this)
                ok = apply(Write("nvml", path, old, old, f"{AUTO_REASON}: left by a daemon that stopped mid-search: "
                                 "SM clocks back to the original", "nvml"))
                log.info("energy_auto_restore", gpu=g, sm_clocks=old, ok=ok, why="left by a previous daemon")
                continue
            current = None if g is None else _limit_mw(sample, g)
            if g is None or g in busy or current is None or str(current) == old:
                continue
            ok = apply(Write("nvml", path, str(current), old,
                             f"{AUTO_REASON}: left by a daemon that stopped mid-search: back to the original", "nvml"))
            log.info("energy_auto_restore", gpu=g, watts=int(old) / 1000, ok=ok, why="left by a previous daemon")
        self._orphans.clear()

    # -- one job's tick ------------------------------------------------------------------------------

    def _step(self, s: _Search, j: JobProgress, sample: EnergySample | None, now: float, apply: Apply,
              original_of: Callable[[str], str | None]) -> None:
        if sample is not None:
            self._measure(s, j, sample, now)
            if s.knob == "power" and not s.knob_decided and s.search.chosen is not None:
                s.knob_decided = True
                if not self._to_clocks(s, sample, now, apply, original_of):
                    return
        action = s.search.next_action()
        if s.knob == "clocks":
            self._step_clocks(s, int(action.setting), sample, now, apply, original_of)
            return
        if s.applied_w == action.setting:
            return
        if sample is None:
            return  # the limits as they are now are not known: set the next one with a fresh sample
        new_mw = round(action.setting * 1000)
        for g in s.gpus:
            current = s.limit_mw(sample, g)
            if current == new_mw:
                continue
            if current is None:
                return  # the sample predates our last write: the next one tells
            w = Write("nvml", s.path(g), str(current), str(new_mw),
                      f"{AUTO_REASON} {action.why if s.search.phase is not Phase.HOLD else 'hold'}: job {s.key} "
                      f"class {s.cls}: {action.setting:g} W", "nvml")
            if not apply(w):
                self._fail(s, g, sample, apply, original_of)
                return
        log.info("energy_auto_setting", job=s.key, cls=s.cls, gpus=list(s.gpus), watts=action.setting,
                 phase=s.search.phase.value)
        s.applied_w, s.written_at = action.setting, now
        s.window, s.baseline_step, s.window_now = None, None, None

    def _fail(self, s: _Search, g: int, sample: EnergySample | None, apply: Apply,
              original_of: Callable[[str], str | None]) -> None:
        self._failed[s.key] = f"writing gpu{g}'s power limit failed (see the daemon's log)"
        log.warning("energy_auto_failed", job=s.key, cls=s.cls, gpu=g)
        self._end(s.key, f"a power-limit write failed on gpu{g}", sample, apply, original_of)

    def _to_clocks(self, s: _Search, sample: EnergySample, now: float, apply: Apply,
                   original_of: Callable[[str], str | None]) -> bool:
        """The power walk is done: switch to locked SM clocks if the cap never bound. False when a
        write failed (the search has ended)."""
        if s.cap_bound:
            s.knob_reason = "power limit: the cap bound (SwPowerCap) while the GPUs were busy"
            return True
        if not s.busy_samples:
            s.knob_reason = "power limit: no GPU of the job was busy in a measured window"
            return True
        common: set[int] | None = None
        for g in s.gpus:
            gs = sample.gpu(g)
            clocks = set(gs.supported_sm_clocks_mhz) if gs is not None else set()
            if not clocks:
                why = (gs.sm_clocks_absent if gs is not None else None) or "not read"
                s.knob_reason = (f"power limit: the cap never bound (no SwPowerCap while busy), but gpu{g}'s SM "
                                 f"clocks cannot be locked here ({why})")
                log.info("energy_auto_knob", job=s.key, cls=s.cls, knob="power", why=s.knob_reason)
                return True
            common = clocks if common is None else common & clocks
        if not common:
            s.knob_reason = "power limit: the cap never bound, but the job's GPUs share no supported SM clock"
            log.info("energy_auto_knob", job=s.key, cls=s.cls, knob="power", why=s.knob_reason)
            return True
        for g in s.gpus:  # the power limits back to their originals first
            path = s.path(g)
            journaled = _mw(original_of(path))
            want = journaled if journaled is not None else s.original_mw[g]
            current = s.limit_mw(sample, g)
            if current is None or current == want:
                continue
            if not apply(Write("nvml", path, str(current), str(want),
                               f"{AUTO_REASON}: job {s.key}: the cap never binds: back to the original "
                               f"{want / 1000:g} W, SM clocks next", "nvml")):
                self._fail(s, g, sample, apply, original_of)
                return False
        s.knob, s.applied_w, s.written_at = "clocks", None, now
        s.clock_floor_mhz = min(common)
        s.search = AutoSearch(clock_settings_mhz(common), s.spec.max_slowdown, s.spec.steps_per_measurement)
        s.window, s.baseline_step, s.window_now = None, None, None
        s.knob_reason = (f"SM clocks: the power cap never bound (no SwPowerCap on a busy GPU in "
                         f"{s.measurements} measured windows), so the limit changes nothing here")
        log.info("energy_auto_knob", job=s.key, cls=s.cls, knob="clocks", why=s.knob_reason,
                 settings_mhz=list(s.search.settings))
        return True

    def _step_clocks(self, s: _Search, mhz: int, sample: EnergySample | None, now: float, apply: Apply,
                     original_of: Callable[[str], str | None]) -> None:
        if s.applied_mhz == mhz or sample is None:
            return
        new = locked_clocks_value(s.clock_floor_mhz, mhz)
        for g in s.gpus:
            old = (locked_clocks_value(s.clock_floor_mhz, s.applied_mhz)
                   if g in s.clocks_locked and s.applied_mhz is not None else UNLOCKED)
            w = Write("nvml", clock_path(g, s.uuids[g]), old, new,
                      f"{AUTO_REASON} {s.search.phase.value}: job {s.key} "
                      f"class {s.cls}: SM clock {s.clock_floor_mhz}-{mhz} MHz", "nvml")
            if not apply(w):
                # Not lockable after all (NOT_SUPPORTED, NO_PERMISSION): back to the power limit's choice
                log.warning("energy_auto_clocks_refused", job=s.key, cls=s.cls, gpu=g, mhz=mhz)
                self._reset_clocks(s, sorted(s.clocks_locked), "locking SM clocks failed", apply, original_of)
                s.knob, s.search, s.applied_mhz = "power", s.power_search, None
                s.knob_reason = (f"power limit: the cap never bound, but locking gpu{g}'s SM clocks failed "
                                 "(see the daemon's log)")
                s.window, s.baseline_step, s.window_now, s.written_at = None, None, None, now
                return
            s.clocks_locked.add(g)
        log.info("energy_auto_setting", job=s.key, cls=s.cls, gpus=list(s.gpus), sm_clock_mhz=mhz,
                 phase=s.search.phase.value)
        s.applied_mhz, s.written_at = mhz, now
        s.window, s.baseline_step, s.window_now = None, None, None

    def _open_window(self, s: _Search, step: int, sample: EnergySample) -> _Window:
        start = {g: (sample.gpu(g).energy_counter_joules or 0.0) for g in s.gpus}  # type: ignore[union-attr]
        s.window_now = (0, 0.0)
        return _Window(sample.t, step, start, sample.cpu_energy_joules)

    def _discard(self, s: _Search, why: str) -> None:
        if s.window is not None:
            s.discarded += 1
            log.info("energy_auto_window_discarded", job=s.key, cls=s.cls, knob=s.knob, setting=s.setting(), why=why)
        s.window, s.baseline_step, s.window_now = None, None, None

    def _measure(self, s: _Search, j: JobProgress, sample: EnergySample, now: float) -> None:
        if s.setting() is None:
            return
        if j.status != "running" or j.step is None:
            self._discard(s, f"job {j.status}")
            s.last_step = j.step
            return
        if j.restart != s.restart or (s.last_step is not None and j.step < s.last_step):
            s.restart, s.last_step = j.restart, j.step
            self._discard(s, "the gang restarted")
            return
        changed = s.last_step is not None and j.step != s.last_step
        s.last_step = j.step
        found = {g: _limit_mw(sample, g) for g in s.gpus}
        ours = None if s.applied_w is None else round(s.applied_w * 1000)
        if (s.knob == "power" and ours is not None and sample.t > s.written_at and None not in found.values()
                and set(found.values()) != {ours}):
            # Someone else set the limit (nvidia-smi -pl, another tool): this window measured
            # theirs. The search owns the limit while the job runs: its setting goes back.
            log.warning("energy_auto_limit_changed", job=s.key, cls=s.cls, set_watts=s.applied_w,
                        found_watts={str(g): (mw or 0) / 1000 for g, mw in found.items()})
            self._discard(s, "the power limit was changed outside aios-host")
            s.applied_w = None
            return
        if s.window is None:
            if now - s.written_at < self.settle_s:
                return
            if s.baseline_step is None:
                s.baseline_step = j.step
            elif j.step > s.baseline_step:
                s.window = self._open_window(s, j.step, sample)
            return
        w = s.window
        for g in s.gpus:
            gs = sample.gpu(g)
            if gs is None or gs.error or gs.energy_counter_joules is None:
                w.spoiled = w.spoiled or f"gpu{g} could not be read"
            elif gs.external_slowdown:
                w.spoiled = w.spoiled or f"gpu{g}: {' '.join(gs.clock_event_reasons)}"
            elif s.knob == "power" and sample.t > s.written_at and "GpuIdle" not in gs.clock_event_reasons \
                    and (gs.utilization_ratio is None or gs.utilization_ratio > 0):
                s.busy_samples += 1  # does the cap bind on a busy GPU (SwPowerCap)?
                s.cap_bound = s.cap_bound or "SwPowerCap" in gs.clock_event_reasons
        steps, secs = j.step - w.start_step, sample.t - w.start_t
        s.window_now = (steps, secs)
        if not changed or steps < s.spec.steps_per_measurement or secs < s.spec.measure_seconds:
            return
        if w.spoiled:
            self._discard(s, w.spoiled)
            s.window = self._open_window(s, j.step, sample)  # the next one starts at this boundary
            return
        gpu_j = sum((sample.gpu(g).energy_counter_joules or 0.0) - w.start_gpu_j[g]  # type: ignore[union-attr]
                    for g in s.gpus)
        if gpu_j < 0 or secs <= 0:
            self._discard(s, "an energy counter went back (driver reloaded)")
            return
        cpu = sample.cpu_energy_joules
        cpu_j = None if cpu is None or w.start_cpu_j is None else cpu - w.start_cpu_j
        setting = s.setting()
        assert setting is not None
        m = Measurement(setting, steps, gpu_j / steps, secs / steps)
        phase, restarts = s.search.phase, s.search.restarts
        s.search.record(m)
        s.measurements += 1
        s.last = {"knob": s.knob, "setting_watts": s.applied_w, "setting_mhz": s.applied_mhz,
                  "steps": steps, "seconds": secs, "step_seconds": secs / steps,
                  "gpu_energy_per_step_joules": gpu_j / steps,
                  "rapl_energy_per_step_joules": None if cpu_j is None else cpu_j / steps,
                  "host_energy_per_step_joules": (gpu_j + (cpu_j or 0.0)) / steps,
                  "host_energy_parts": ["gpu", "rapl"] if cpu_j is not None else ["gpu"]}
        log.info("energy_auto_measurement", job=s.key, cls=s.cls, phase=phase.value, **s.last)
        if s.search.restarts != restarts:
            log.info("energy_auto_restart", job=s.key, cls=s.cls, why="the step time drifted while holding",
                     restarts=s.search.restarts)
        elif s.search.phase is Phase.HOLD and phase is not Phase.HOLD:
            held = s.search.chosen
            assert held is not None
            base = s.search.results()[0].energy_per_step_j
            log.info("energy_auto_hold", job=s.key, cls=s.cls, knob=s.knob, setting=held.setting,
                     energy_per_step_joules=held.energy_per_step_j, slowdown_ratio=held.slowdown,
                     energy_saved_ratio=1 - held.energy_per_step_j / base if base else None)
        # Back to back at the same setting; a new setting gets a fresh window after its write.
        same = s.search.next_action().setting == setting
        s.window = self._open_window(s, j.step, sample) if same else None
        if not same:
            s.window_now = None

    # -- what the API shows ----------------------------------------------------------------------

    def view(self) -> tuple[dict[str, Any], ...]:
        return (*(s.view() for s in self._searches.values()), *self._waiting.values(), *self._finished)
