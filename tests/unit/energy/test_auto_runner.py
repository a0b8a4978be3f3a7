"""The `auto` GPU power search as the daemon runs it: power-limit Writes through the checking
writer, energy per step from the fake NVML's counter over whole steps of a simulated job, the
setting a brute-force sweep of the same job finds, and the journaled original back at the end."""

from __future__ import annotations

import pytest

from aios_host.energy import plan as energy
from aios_host.energy.auto_jobs import AutoClass, JobProgress
from aios_host.energy.auto_runner import (
    AUTO_REASON,
    AutoPowerRunner,
    clock_path,
    clock_settings_mhz,
    nvml_path,
    settings_w,
)
from aios_host.energy.telemetry import EnergySampler
from aios_host.errors import AiosError
from aios_host.kernel.root import SysRoot
from aios_host.policy.plan import Write
from aios_host.policy.schema import ClassEnergySpec
from tests.unit.energy.fake_nvml import H100_CLOCKS_MHZ, FakeGpu, fake_gpu_backend
from tests.unit.energy.sim_job import Clock, MemJob, SimJob
from tests.unit.energy.test_auto_search import Job, brute_force
from tests.unit.energy.test_rapl import fake_rapl

UUID0 = "GPU-0"  # Harness names its GPUs GPU-<index>
ADMIN_LIMIT_MW = 600_000  # below the 700 W maximum: the original to restore, and the search's ceiling
DT = 0.1  # simulated seconds per tick: a boundary is seen at most this late


class Harness:
    """A runner, the energy sampler over a fake NVML, and a journal that keeps first originals as
    the daemon's does; `apply` writes through energy/plan.py's checking writer."""

    def __init__(self, tmp_path, job: Job | MemJob, *, bound: float = 0.05, gpus: int = 1, root: SysRoot | None = None,
                 limit_mw: int = ADMIN_LIMIT_MW, **spec) -> None:
        self.clock = Clock()
        fakes = [FakeGpu(uuid=f"GPU-{i}", limit_mw=limit_mw) for i in range(gpus)]
        self.backend, self.nvml = fake_gpu_backend(*fakes, clock=self.clock)
        self.gpus = fakes
        self.sim = SimJob(job, fakes, self.clock)
        self.root = root or SysRoot(tmp_path)
        self.sampler = EnergySampler(self.root, lambda: self.backend, clock=self.clock)
        self.sampler.open()
        self.cls = AutoClass("train", None, (), ClassEnergySpec(gpu_power_limit="auto", max_slowdown=bound, **spec))
        self.runner = AutoPowerRunner()
        self.journal: dict[str, Write] = {}
        self.writes: list[Write] = []
        self.fail_writes = False
        self.restart = 0

    def apply(self, w: Write) -> bool:
        self.journal.setdefault(w.path, w)
        self.writes.append(w)
        if self.fail_writes:
            return False
        try:
            energy.set_value(self.root, w.op, w.path, w.new, gpu=lambda: self.backend)
        except AiosError:  # as the daemon's _write: logged, and the caller told
            return False
        return True

    def original_of(self, path: str) -> str | None:
        w = self.journal.get(path)
        return None if w is None else w.old

    def progress(self, key: str = "job1", status: str = "running") -> JobProgress:
        return JobProgress(key, "train", status, self.restart, self.sim.step, tuple(range(len(self.gpus))))

    def tick(self, jobs: list[JobProgress] | None = None, acting: bool = True, **kw) -> None:
        self.sim.advance(DT)
        sample = self.sampler.sample()
        self.runner.tick(self.clock.t, [self.progress()] if jobs is None else jobs, (self.cls,), sample,
                         self.apply if acting else None, self.original_of, **kw)

    def run_until_held(self, limit_s: float = 3000.0) -> float:
        if "job1" not in self.runner.searches:
            self.tick()
        s = self.runner.searches["job1"]
        t_end = self.clock.t + limit_s
        while s.search.chosen is None:
            assert self.clock.t < t_end, f"no choice after {limit_s} s: {s.view()}"
            self.tick()
        return s.search.chosen.setting

    def limits_w(self) -> list[float]:
        return [g.limit_mw / 1000 for g in self.gpus]


CAPS_W = settings_w(600, 200, 25)
# (job, max_slowdown): each decided clear of the measurement's resolution (DT over 30 s windows):
# no setting's slowdown within 1 % of the bound, no two candidates' energies within 2 %.
CASES = [
    (Job(need_w=500, static_w=120, compute=0.9, t0_s=0.3), 0.055),  # compute-bound: the bound stops the walk
    (Job(need_w=400, static_w=80, compute=0.15, t0_s=1.2), 0.10),  # memory-bound: down to the lowest limit
    (Job(need_w=550, static_w=140, compute=0.7, t0_s=2.0), 0.08),  # 2 s steps: 20-step windows of 40 s
    (Job(need_w=650, static_w=100, compute=0.7, t0_s=0.4), 0.12),
]


def _clear(job: Job, bound: float, margin: float = 0.01) -> bool:
    top = job.step_time_s(max(CAPS_W))
    slow = {c: job.step_time_s(c) / top - 1 for c in CAPS_W}
    within = sorted(job.energy_j(c) for c in CAPS_W if slow[c] <= bound)
    return all(abs(s - bound) > margin or s == 0 for s in slow.values()) and (
        len(within) < 2 or within[1] > within[0] * (1 + 2 * margin))


@pytest.mark.parametrize(("job", "bound"), CASES)
def test_the_runner_holds_what_a_brute_force_sweep_finds_and_restores_the_original(tmp_path, job, bound):
    assert _clear(job, bound)  # the case is decidable at this resolution: a mismatch is the runner's
    h = Harness(tmp_path, job, bound=bound)
    h.tick()
    s = h.runner.searches["job1"]
    assert list(s.search.settings) == CAPS_W  # from the administrator's 600 W, not the 700 W maximum
    held = h.run_until_held()
    assert held == brute_force(job, CAPS_W, bound)
    h.tick()
    assert h.limits_w() == [held]  # what it holds is what the GPU has
    assert s.knob == "power" and s.view()["knob_reason"].startswith("power limit: the cap bound (SwPowerCap)")
    assert h.gpus[0].locked_mhz is None
    # every measured setting's figures are the simulated job's, within the resolution
    for r in s.search.results():
        assert r.step_time_s == pytest.approx(job.step_time_s(r.setting), rel=0.01)
        assert r.energy_per_step_j == pytest.approx(job.energy_j(r.setting), rel=0.01)
    # holding: it keeps measuring at the held setting and writes nothing
    n = len(h.writes)
    for _ in range(int(90 / DT)):
        h.tick()
    assert len(h.writes) == n and s.measurements > len(s.search.results())
    # the job ends: the original limit is back (the journaled one, 600 W, not the maximum)
    h.tick(jobs=[])
    assert h.limits_w() == [ADMIN_LIMIT_MW / 1000]
    assert h.journal[nvml_path(0, UUID0)].old == str(ADMIN_LIMIT_MW)
    assert all(w.reason.startswith(AUTO_REASON) for w in h.writes)
    (ended,) = h.runner.view()
    assert ended["state"] == "ended" and ended["ended"] == "the job ended"
    assert ended["chosen"]["setting_watts"] == held and ended["restored_watts"] == {"0": 600.0}


def test_the_walk_is_one_write_per_setting_from_the_top_and_windows_cover_whole_steps(tmp_path):
    job, bound = CASES[0]
    h = Harness(tmp_path, job, bound=bound)
    h.run_until_held()
    news = [int(w.new) // 1000 for w in h.writes]
    # 600 W is what the GPU has: measured without a write; then each setting down to the first past
    # the bound (measured twice, one write), then back up to the choice
    assert news == [575, 550, 525, 500, 475, 450, 425, 450]
    s = h.runner.searches["job1"]
    assert [r.measurements for r in s.search.results()] == [1, 1, 1, 1, 1, 1, 1, 2]
    last = s.last
    assert last["steps"] >= 20 and last["seconds"] >= 30
    assert last["host_energy_parts"] == ["gpu"] and last["rapl_energy_per_step_joules"] is None


def test_two_gpus_take_the_same_setting_and_their_energy_adds_up(tmp_path):
    job, bound = CASES[0]
    h = Harness(tmp_path, job, bound=bound, gpus=2)
    assert h.run_until_held() == brute_force(job, CAPS_W, bound)
    h.tick()
    assert h.limits_w() == [450.0, 450.0]
    r = h.runner.searches["job1"].search.results()[0]
    assert r.energy_per_step_j == pytest.approx(2 * job.energy_j(600), rel=0.01)
    h.tick(jobs=[])
    assert h.limits_w() == [600.0, 600.0]


def test_host_energy_per_step_adds_rapl_where_present(tmp_path):
    root = fake_rapl(tmp_path, {"intel-rapl:0": ("package-0", 0), "intel-rapl:0:0": ("core", 0),
                                "intel-rapl:0:1": ("dram", 0)})
    job = Job(need_w=500, static_w=120, compute=0.9, t0_s=0.3)
    h = Harness(tmp_path, job, root=root)
    pkg_w, dram_w = 80.0, 20.0
    energy_uj = {"intel-rapl:0": 0.0, "intel-rapl:0:0": 0.0, "intel-rapl:0:1": 0.0}
    dev = "sys/devices/virtual/powercap/intel-rapl"
    while h.runner.searches.get("job1") is None or h.runner.searches["job1"].last is None:
        for zone, w in (("intel-rapl:0", pkg_w), ("intel-rapl:0:0", 60.0), ("intel-rapl:0:1", dram_w)):
            energy_uj[zone] += w * DT * 1e6  # the CPU draws the same whatever the GPU's cap
            path = f"{dev}/intel-rapl:0/{zone}" if zone.count(":") == 2 else f"{dev}/{zone}"
            (tmp_path / path / "energy_uj").write_text(f"{int(energy_uj[zone])}\n")
        h.tick()
    last = h.runner.searches["job1"].last
    # package + dram (core is part of the package): 100 W over each step
    assert last["rapl_energy_per_step_joules"] == pytest.approx(100.0 * last["step_seconds"], rel=0.01)
    assert last["host_energy_per_step_joules"] == pytest.approx(
        last["gpu_energy_per_step_joules"] + last["rapl_energy_per_step_joules"])
    assert last["host_energy_parts"] == ["gpu", "rapl"]


def test_a_gang_restart_throws_the_window_away(tmp_path):
    h = Harness(tmp_path, CASES[0][0])
    for _ in range(int(20 / DT)):  # settled and measuring the baseline
        h.tick()
    s = h.runner.searches["job1"]
    assert s.window is not None and s.measurements == 0
    h.restart, h.sim.progress = 1, 0.0  # the supervisor restarted the gang: steps from 0 again
    h.tick()
    assert s.window is None and s.discarded == 1
    while s.measurements == 0:
        h.tick()
    assert s.last["steps"] >= 20  # a whole window after the restart, none of it before


def test_an_external_slowdown_spoils_the_window(tmp_path):
    h = Harness(tmp_path, CASES[0][0])
    for _ in range(int(10 / DT)):
        h.tick()
    s = h.runner.searches["job1"]
    h.gpus[0].hw_slowdown = True  # the board's power brake: says nothing about our setting
    for _ in range(int(40 / DT)):
        h.tick()
    h.gpus[0].hw_slowdown = False
    assert s.measurements == 0 and s.discarded >= 1
    while s.measurements == 0:
        h.tick()
    assert s.search.results()[0].step_time_s == pytest.approx(CASES[0][0].t0_s, rel=0.01)


def test_the_original_is_the_journaled_one(tmp_path):
    """A previous daemon died mid-search: the GPU has its 300 W, the journal the host's 550 W."""
    h = Harness(tmp_path, CASES[0][0], limit_mw=300_000)
    path = nvml_path(0, UUID0)
    h.journal[path] = Write("nvml", path, "550000", "300000", f"{AUTO_REASON} descend: ...", "nvml")
    h.tick()
    s = h.runner.searches["job1"]
    assert s.search.settings[0] == 550.0 and h.limits_w() == [550.0]  # its first setting: the original
    h.tick(jobs=[])
    assert h.limits_w() == [550.0]


def test_a_limit_left_by_a_dead_daemon_goes_back_when_no_job_claims_it(tmp_path):
    h = Harness(tmp_path, CASES[0][0], limit_mw=300_000)
    path = nvml_path(0, UUID0)
    h.runner.adopt([Write("nvml", path, "600000", "300000", f"{AUTO_REASON} descend: job x", "nvml"),
                    Write("nvml", "nvml/0/x/power_limit_mw", "1", "2", "[energy] gpu_power_limit 70%", "nvml")])
    h.tick(jobs=[])
    assert h.limits_w() == [600.0] and [w.new for w in h.writes] == ["600000"]
    h.tick(jobs=[])
    assert len(h.writes) == 1  # once


def test_a_refused_write_stops_the_search_for_that_job_and_says_why(tmp_path):
    h = Harness(tmp_path, CASES[0][0])
    h.nvml.root = False  # the driver answers NO_PERMISSION to a set
    h.writes.clear()

    def apply(w):
        h.writes.append(w)
        try:
            energy.set_value(h.root, w.op, w.path, w.new, gpu=lambda: h.backend)
        except Exception:  # noqa: BLE001 - the daemon's _write logs and returns False
            return False
        return True

    h.apply = apply  # type: ignore[method-assign]
    for _ in range(int(60 / DT)):
        h.tick()
    assert "job1" not in h.runner.searches and h.limits_w() == [600.0]
    (waiting, ended) = h.runner.view()
    assert waiting["state"] == "waiting" and waiting["reason"].startswith("stopped: writing gpu0's power limit failed")
    assert ended["ended"] == "a power-limit write failed on gpu0"
    n = len(h.writes)
    h.tick()
    assert len(h.writes) == n  # not retried every tick
    h.tick(jobs=[])
    h.tick()  # the job again: the backend has learnt that the knob is not ours to set here
    (waiting,) = h.runner.view()[:1]
    assert waiting["reason"].startswith("gpu0: the power limit is observe-only here") and len(h.writes) == n


@pytest.mark.parametrize(("setup", "reason"), [
    (lambda h: h.nvml.unsupported.add("nvmlDeviceGetPowerManagementLimitConstraints"),
     "gpu0: the power limit is observe-only here"),
    (lambda h: h.nvml.unsupported.add("nvmlDeviceGetTotalEnergyConsumption"), "gpu0: no total energy counter"),
])
def test_a_gpu_that_cannot_be_searched_waits_with_the_reason(tmp_path, setup, reason):
    h = Harness(tmp_path, CASES[0][0])
    setup(h)
    h.tick()
    (w,) = h.runner.view()
    assert w["state"] == "waiting" and w["reason"].startswith(reason) and not h.writes


def test_no_gpu_a_gpu_less_job_and_a_shared_gpu_wait(tmp_path):
    h = Harness(tmp_path, CASES[0][0])
    h.tick(jobs=[h.progress(), JobProgress("job2", "train", "running", 0, 5, (0,)),
                 JobProgress("cpu-only", "train", "running", 0, 5, ())])
    by_job = {v["job"]: v for v in h.runner.view()}
    assert by_job["job1"]["state"] == "baseline"
    assert by_job["job2"]["reason"] == "gpu0: searched for job job1"
    assert by_job["cpu-only"]["reason"].startswith("its ranks were placed on no GPU")
    h.tick(jobs=[JobProgress("job3", "train", "running", 0, 5, (7,))])
    assert {v["job"]: v for v in h.runner.view()}["job3"]["reason"] == "gpu7: not seen by NVML"


def test_a_daemon_that_may_not_write_runs_no_search(tmp_path):
    h = Harness(tmp_path, CASES[0][0])
    h.tick()
    assert "job1" in h.runner.searches
    h.tick(acting=False, mode="paused")  # an API rollback restored every original already
    assert not h.runner.searches and not h.writes
    waiting = next(v for v in h.runner.view() if v["state"] == "waiting")
    assert waiting["reason"].startswith("daemon paused: the auto search writes power limits")


def test_a_job_between_gangs_keeps_its_setting_and_measures_nothing(tmp_path):
    h = Harness(tmp_path, CASES[0][0])
    for _ in range(int(10 / DT)):
        h.tick()
    s = h.runner.searches["job1"]
    for _ in range(int(60 / DT)):
        h.tick(jobs=[h.progress(status="restarting")])
    assert "job1" in h.runner.searches and s.measurements == 0 and s.window is None


def test_settings_from_the_top_down_to_the_minimum():
    assert settings_w(610, 200, 25)[:2] == [610, 585] and settings_w(610, 200, 25)[-2:] == [210, 200]
    assert settings_w(200, 200, 25) == [200]


def test_a_limit_changed_behind_the_search_is_set_back_and_its_window_discarded(tmp_path):
    h = Harness(tmp_path, CASES[0][0])
    for _ in range(int(15 / DT)):
        h.tick()
    s = h.runner.searches["job1"]
    assert s.window is not None and h.limits_w() == [600.0]
    h.gpus[0].limit_mw = 300_000  # nvidia-smi -pl 300
    h.tick()
    assert s.discarded == 1 and h.limits_w() == [600.0]  # the search's setting is back at once
    assert h.writes[-1].new == "600000" and h.writes[-1].old == "300000"
    while s.measurements == 0:
        h.tick()
    assert s.search.results()[0].energy_per_step_j == pytest.approx(CASES[0][0].energy_j(600), rel=0.01)


# -- locked SM clocks, where no power cap binds ------------------------------------------------------

CLOCKS_MHZ = clock_settings_mhz(H100_CLOCKS_MHZ)
# Memory-bound phases drawing 120-180 W, under the lowest limit (200 W): no cap ever binds. Each
# decided clear of the resolution, as CASES are.
MEM_CASES = [
    (MemJob(static_w=60, dyn_w=60, compute=0.3, t0_s=0.5), 0.12),
    (MemJob(static_w=60, dyn_w=60, compute=0.3, t0_s=0.8, exponent=3), 0.2),
    (MemJob(static_w=60, dyn_w=40, compute=0.5, t0_s=0.4, exponent=3), 0.08),
]


def _clear_clocks(job: MemJob, bound: float, margin: float = 0.01) -> bool:
    slow = {c: job.step_time_s(c) / job.step_time_s(CLOCKS_MHZ[0]) - 1 for c in CLOCKS_MHZ}
    within = sorted(job.energy_j(c) for c in CLOCKS_MHZ if slow[c] <= bound)
    return all(abs(s - bound) > margin or s == 0 for s in slow.values()) and (
        len(within) < 2 or within[1] > within[0] * (1 + 2 * margin))


def test_clock_settings_from_the_top_in_steps_down_to_the_lowest():
    assert CLOCKS_MHZ[:3] == [1980, 1875, 1770] and CLOCKS_MHZ[-2:] == [300, 210]
    assert all(a - b >= 90 for a, b in zip(CLOCKS_MHZ, CLOCKS_MHZ[1:], strict=False))
    assert set(CLOCKS_MHZ) <= set(H100_CLOCKS_MHZ)
    assert clock_settings_mhz([1410]) == [1410] and clock_settings_mhz([]) == []


@pytest.mark.parametrize(("job", "bound"), MEM_CASES)
def test_where_no_cap_binds_the_runner_locks_sm_clocks_and_holds_what_a_sweep_finds(tmp_path, job, bound):
    assert _clear_clocks(job, bound) and job.need_w < 200
    h = Harness(tmp_path, job, bound=bound)
    h.tick()
    s = h.runner.searches["job1"]
    # the power walk first: all the way down (nothing slows), SwPowerCap never set
    while s.knob == "power":
        assert s.search.phase.value != "hold" and h.clock.t < 5000
        h.tick()
    assert s.power_search.chosen is not None and s.cap_bound is False and s.busy_samples > 0
    assert [r.setting for r in s.power_search.results()] == CAPS_W
    assert h.limits_w() == [600.0]  # the limit it tried is back at its original
    assert s.view()["knob_reason"].startswith("SM clocks: the power cap never bound")
    held = h.run_until_held()
    assert list(s.search.settings) == CLOCKS_MHZ
    assert held == brute_force(job, CLOCKS_MHZ, bound)
    h.tick()
    assert h.gpus[0].locked_mhz == (210, held) and h.sim.sm_clock_mhz == held
    for r in s.search.results():
        assert r.step_time_s == pytest.approx(job.step_time_s(r.setting), rel=0.01)
        assert r.energy_per_step_j == pytest.approx(job.energy_j(r.setting), rel=0.01)
    # every lock a journaled Write whose original is "unlocked"
    path = clock_path(0, UUID0)
    assert h.journal[path].old == "none" and h.journal[path].op == "nvml"
    locks = [w for w in h.writes if w.path == path]
    walked = [int(r.setting) for r in s.search.results()]  # the top first, one write per setting
    assert [w.new for w in locks] == [f"210-{c}" for c in walked] + ([f"210-{held:g}"] if held != walked[-1] else [])
    assert all(w.reason.startswith(AUTO_REASON) for w in locks)
    view = s.view()
    assert view["knob"] == "sm_clock" and view["clocks"]["chosen"]["setting_mhz"] == held
    assert view["clocks"]["chosen"]["energy_saved_ratio"] > 0.05
    # holding writes nothing more; the job ends: the clocks are reset, the limit is the original
    n = len(h.writes)
    for _ in range(int(60 / DT)):
        h.tick()
    assert len(h.writes) == n
    h.tick(jobs=[])
    assert h.gpus[0].locked_mhz is None and h.limits_w() == [600.0]
    (ended,) = h.runner.view()
    assert ended["restored_clocks"] == {"0": "none"} and ended["knob"] == "sm_clock"


def _clock_search(h: Harness):
    h.tick()
    s = h.runner.searches["job1"]
    while s.knob == "power" and not s.knob_decided:
        assert h.clock.t < 5000
        h.tick()
    return s


def test_a_rollback_of_the_journal_resets_the_clocks_and_the_limit(tmp_path):
    h = Harness(tmp_path, *MEM_CASES[0][:1], bound=MEM_CASES[0][1])
    s = _clock_search(h)
    while len(s.search.results()) < 2:
        h.tick()
    h.tick()
    assert s.knob == "clocks" and h.gpus[0].locked_mhz is not None
    h.gpus[0].limit_mw = 450_000  # as if the walk were still on the limit: the journal has both
    for w in h.journal.values():  # actuate/apply.py's undo: the first write's old, through set_value
        energy.set_value(h.root, w.op, w.path, w.old, gpu=lambda: h.backend)
    assert h.gpus[0].locked_mhz is None and h.limits_w() == [600.0]
    h.tick(acting=False, mode="paused")
    assert not h.runner.searches


def test_a_lock_left_by_a_dead_daemon_is_reset(tmp_path):
    h = Harness(tmp_path, CASES[0][0])
    h.gpus[0].locked_mhz = (210, 1200)
    path = clock_path(0, UUID0)
    h.runner.adopt([Write("nvml", path, "none", "210-1200", f"{AUTO_REASON} descend: job x", "nvml")])
    h.tick()  # even with a search on the GPU: its measurements must not run under the old lock
    assert h.gpus[0].locked_mhz is None and [w.new for w in h.writes] == ["none"]
    h.tick()
    assert len(h.writes) == 1


@pytest.mark.parametrize(("unsupported", "reason"), [
    ("nvmlDeviceSetGpuLockedClocks", "power limit: the cap never bound, but locking gpu0's SM clocks failed"),
    ("nvmlDeviceGetSupportedGraphicsClocks", "power limit: the cap never bound (no SwPowerCap while busy), but "
                                             "gpu0's SM clocks cannot be locked here (gpu0 locked_sm_clocks"),
])
def test_a_gpu_whose_clocks_cannot_be_locked_stays_on_the_power_limit_and_says_why(tmp_path, unsupported, reason):
    h = Harness(tmp_path, MEM_CASES[0][0], bound=MEM_CASES[0][1])
    h.nvml.unsupported.add(unsupported)
    s = _clock_search(h)
    h.tick()
    assert s.knob == "power" and s.view()["knob_reason"].startswith(reason), s.view()["knob_reason"]
    assert h.gpus[0].locked_mhz is None and "job1" in h.runner.searches
    held = s.search.chosen
    assert held is not None and s.search is s.power_search
    for _ in range(int(40 / DT)):
        h.tick()
    assert h.limits_w() == [held.setting]  # it holds the power walk's choice
    n = len(h.writes)
    for _ in range(int(40 / DT)):
        h.tick()
    assert len(h.writes) == n  # and tries the clocks no more
    h.tick(jobs=[])
    assert h.limits_w() == [600.0] and h.gpus[0].locked_mhz is None


@pytest.mark.parametrize(("path", "value"), [
    ("nvml/0/GPU-0/locked_sm_clocks_mhz", "fast"), ("nvml/0/GPU-0/locked_sm_clocks_mhz", "1410"),
    ("nvml/0/GPU-0/locked_sm_clocks_mhz", "210-1411"), ("nvml/0/GPU-0/power_limit_mw", "300W"),
    ("nvml/0/GPU-0/fan_speed", "1"), ("nvml/x/GPU-0/power_limit_mw", "300000"),
])
def test_a_bad_nvml_write_is_a_one_line_error(tmp_path, path, value):
    backend, nvml = fake_gpu_backend()
    with pytest.raises(AiosError):
        energy.set_value(SysRoot(tmp_path), "nvml", path, value, gpu=lambda: backend)
    assert "nvmlDeviceSetGpuLockedClocks" not in nvml.calls and "nvmlDeviceSetPowerManagementLimit" not in nvml.calls
