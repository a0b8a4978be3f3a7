"""Energy in the daemon's loop: the energy source off the loop, the `auto` GPU power search driven
by a job's record and restored at its end through the journal, the energy API answer and the
metrics; a host with no GPU, RAPL or cpufreq; an NVML that hangs."""

from __future__ import annotations

import json
import os
import time

import pytest

from aios_host import api, metrics
from aios_host.actuate.state import StateStore
from aios_host.daemon.loop import Daemon, DaemonOptions
from aios_host.daemon.service import make_handler
from aios_host.energy import plan as energy
from aios_host.kernel.gpu import GpuUnavailable
from aios_host.supervisor.state import JobState, JobStore, RankState
from tests.unit.daemon.test_loop import make
from tests.unit.energy.fake_nvml import FakeGpu, fake_gpu_backend
from tests.unit.energy.sim_job import Clock, SimJob
from tests.unit.energy.test_auto_search import Job
from tests.unit.fixtures import FakeCgroupRoot, fake_v2_host

POLICY = """
[[class]]
name = "train"
energy.gpu_power_limit = "auto"
energy.steps_per_measurement = 5
energy.power_step_watts = 100
energy.max_slowdown = 0.08
"""
ROOT_PEER = api.Peer(1, 0, 0)
PATH = "nvml/0/GPU-0/power_limit_mw"


@pytest.fixture
def host(tmp_path):
    fake_v2_host(tmp_path / "root", cpus=4)
    (tmp_path / "p.toml").write_text(POLICY)
    return FakeCgroupRoot.make(tmp_path / "root"), tmp_path


_GANGS: list[Gang] = []


@pytest.fixture(autouse=True)
def _release_locks():
    yield
    while _GANGS:
        os.close(_GANGS.pop().fd)


@pytest.fixture
def gpu():
    """One H100-like GPU an administrator set to 600 W, on the test's clock; the daemon's writes
    reach it through the process's shared backend, as NVML's do."""
    clock = Clock()
    fake = FakeGpu(uuid="GPU-0", limit_mw=600_000)
    backend, nvml = fake_gpu_backend(fake, clock=clock)
    energy._GPU[:] = [backend]
    yield clock, fake, backend
    energy._GPU.clear()


class Gang:
    """A job's supervisor as the daemon sees it: a record in the JobStore, its lock held."""

    def __init__(self, root, sim: SimJob, cls: str = "train") -> None:
        self.store = JobStore(root)
        self.sim = sim
        self.fd = self.store.lock("train1")
        _GANGS.append(self)
        self.st = JobState(key="train1", name="train1", node_rank=0, nnodes=1, nproc=1, world_size=1,
                           supervisor_pid=os.getpid(), launcher="cgroup", backend="nccl", cls=cls, status="running",
                           ranks=[RankState(0, 0, gpu=0, status="running")])
        self.flush()

    def flush(self) -> None:
        self.st.ranks[0].last_step = self.sim.step
        self.store.save(self.st)

    def end(self, status: str = "succeeded") -> None:
        self.st.status, self.st.ranks[0].status = status, "exited"
        self.flush()


def energy_daemon(host, clock, backend, **kw) -> Daemon:
    # interval 3600: the source's thread samples once at start; the test's sample_now does the rest
    d = make(host, clock, energy=True, gpu_factory=lambda: backend, interval_s=3600, **kw)
    assert d.wait_energy(5.0)
    return d


def tick(d: Daemon, gang: Gang, dt: float = 1.0) -> None:
    gang.sim.advance(dt)
    gang.flush()
    d._energy_source.sample_now()
    d.tick()


def scrape(d: Daemon) -> dict[tuple[str, frozenset], float]:
    reg = metrics.make_registry(lambda: d.view)
    return {(s.name, frozenset(s.labels.items())): s.value for fam in reg.collect() for s in fam.samples}


def test_the_loop_searches_while_the_job_runs_and_restores_the_journaled_original_at_its_end(host, gpu):
    root, _ = host
    clock, fake, backend = gpu
    # 500 W: 3.8 % slower and 5.6 % less energy than uncapped (550 W); 400 W: 13.8 % slower
    gang = Gang(root, SimJob(Job(need_w=550, static_w=120, compute=0.9, t0_s=0.3), [fake], clock))
    d = energy_daemon(host, clock, backend)
    tick(d, gang)
    (search,) = d.view.energy_auto
    assert (search["job"], search["class"], search["state"]) == ("train1", "train", "baseline")
    assert search["settings_watts"] == [600.0, 500.0, 400.0, 300.0, 200.0]
    while fake.limit_mw == 600_000:
        tick(d, gang)
        assert clock.t < 1100, d.view.energy_auto
    # the first setting below the original went through the journal before the write
    (rec,) = StateStore(root).load()
    (w,) = [w for w in rec.writes if w.op == "nvml"]
    assert (w.path, w.old, w.new) == (PATH, "600000", "500000") and w.reason.startswith("energy auto descend")
    while d.view.energy_auto[0]["state"] != "hold":
        tick(d, gang)
        assert clock.t < 1300, d.view.energy_auto
    held = d.view.energy_auto[0]["chosen"]["setting_watts"]
    assert held == 500.0 and fake.limit_mw == 500_000
    assert d.view.energy_auto[0]["chosen"]["energy_saved_ratio"] > 0

    # what the API and the metrics show meanwhile (the sample after the hold's write)
    tick(d, gang)
    reply = make_handler(d, root)({"cmd": "energy"}, ROOT_PEER)
    json.dumps(reply)
    assert reply["ok"] and reply["sampling"] and reply["gpus"]["available"]
    (dev,) = reply["gpus"]["devices"]
    assert dev["power_limit_watts"] == 500.0 and dev["power_watts"] == 500.0 and dev["energy_joules"] > 0
    assert reply["auto"][0]["state"] == "hold" and reply["auto"][0]["last_measurement"]["steps"] >= 5
    assert "energy" not in make_handler(d, root)({"cmd": "status"}, ROOT_PEER)["status"]
    m = scrape(d)
    lab = frozenset({"gpu": "0", "uuid": "GPU-0"}.items())
    assert m[("aios_gpu_power_limit_watts", lab)] == 500.0
    assert m[("aios_gpu_energy_joules_total", lab)] > 0
    assert m[("aios_energy_auto_power_limit_watts", frozenset({"class": "train", "gpu": "0"}.items()))] == 500.0

    gang.end()
    tick(d, gang)
    assert fake.limit_mw == 600_000  # the original as journaled, not the 700 W maximum
    assert d.view.energy_auto[0]["state"] == "ended" and d.view.energy_auto[0]["restored_watts"] == {"0": 600.0}
    assert d.view.last_error is None and d.view.writes_failed_total == 0
    d.shutdown()
    assert fake.limit_mw == 600_000 and StateStore(root).load() == []


def test_a_daemon_that_died_mid_search_has_its_limit_put_back_by_the_next(host, gpu):
    root, _ = host
    clock, fake, backend = gpu
    gang = Gang(root, SimJob(Job(need_w=500, static_w=120, compute=0.9, t0_s=0.3), [fake], clock))
    d = energy_daemon(host, clock, backend)
    while fake.limit_mw == 600_000:
        tick(d, gang)
    d._energy_source.stop()  # SIGKILL: no restore; the journal keeps the original
    gang.end("failed")
    d2 = energy_daemon(host, clock, backend)
    tick(d2, gang)
    assert fake.limit_mw == 600_000
    d2.shutdown()


def test_a_host_without_gpu_rapl_or_cpufreq_has_no_energy_figures_and_no_errors(host):
    root, _ = host

    def no_gpu():
        raise GpuUnavailable("NVML: NVML Shared Library Not Found")

    clock = Clock()
    d = make(host, clock, energy=True, gpu_factory=no_gpu, interval_s=3600)
    assert d.wait_energy(5.0)
    for _ in range(3):
        d._energy_source.sample_now()
        d.tick()
        clock.t += 1
    assert d.view.last_error is None and d.view.verdict() == "active"
    reply = make_handler(d, root)({"cmd": "energy"}, ROOT_PEER)
    assert reply["gpus"] == {"available": False, "reason": "NVML: NVML Shared Library Not Found", "devices": []}
    assert not reply["rapl"]["available"] and not reply["cpufreq"]["available"]
    assert reply["host"]["parts"] == [] and reply["auto"] == []
    names = {name for name, _ in scrape(d)}
    assert not any(n.startswith(("aios_gpu_", "aios_rapl_", "aios_cpufreq_", "aios_energy_")) for n in names)
    assert ("aios_source_up", frozenset({"source": "energy"}.items())) in scrape(d)
    d.shutdown()


def test_energy_sampling_off(host):
    root, _ = host
    d = make(host, Clock())
    d.tick()
    reply = make_handler(d, root)({"cmd": "energy"}, ROOT_PEER)
    assert reply == {"ok": True, "sampling": False, "source": None, "auto": [],
                     "reason": "energy sampling is off (--no-energy)"}


def test_an_nvml_that_hangs_never_stalls_the_tick(host, gpu):
    """The sampler's thread is stuck in NVML: the loop ticks on time, says the source is stale,
    and the search waits for a fresh sample instead of measuring on old figures."""
    root, tmp = host
    _, fake, backend = gpu
    hang = [False]
    real = backend.sensors

    def slow_sensors(i):
        if hang[0]:
            time.sleep(3.0)
        return real(i)

    backend.sensors = slow_sensors
    opts = DaemonOptions(policy_path=str(tmp / "p.toml"), probes=False, root=str(root.root), interval_s=0.05)
    d = Daemon(opts, root=root, gpu_factory=lambda: backend)  # the real clock
    d.start()
    assert d.wait_energy(5.0)
    gang = Gang(root, SimJob(Job(need_w=500, static_w=120, compute=0.9, t0_s=0.3), [fake], Clock()))
    hang[0] = True
    worst = 0.0
    t_end = time.monotonic() + 2.5  # past the source's deadline (3 x 0.5 s)
    while time.monotonic() < t_end:
        gang.flush()
        t0 = time.monotonic()
        d.tick()
        worst = max(worst, time.monotonic() - t0)
        time.sleep(0.05)
    assert worst < 0.5
    (health,) = [s for s in d.view.sources if s.name == "energy"]
    assert not health.ok and d.view.verdict() == "degraded"
    assert d.view.energy_auto[0]["state"] in ("baseline", "waiting")
    assert fake.limit_mw == 600_000
    assert not any(n.startswith("aios_gpu_") for n, _ in scrape(d))  # stale figures are not exported
    hang[0] = False
    d.shutdown()
