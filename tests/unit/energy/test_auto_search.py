"""The auto search against a simulated job, and against a brute-force sweep of the same job."""

import random
from dataclasses import dataclass

import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from aios_host.energy.auto_search import AutoSearch, Hold, Measure, Measurement, Phase

CAPS_W = tuple(range(700, 199, -25))  # H100 power limits, 700 W down to 200 W


@dataclass(frozen=True)
class Job:
    """A training step under a power cap. Above the job's own draw the cap changes nothing; below,
    the SM clock drops until dynamic power (~ f^3) fits, and the compute share of the step slows
    down as 1/f while the rest (memory, communication) does not."""

    need_w: float  # what the job draws uncapped
    static_w: float  # what the board draws whatever the clock
    compute: float  # share of the step that scales with the clock
    t0_s: float

    def step_time_s(self, cap_w: float) -> float:
        if cap_w >= self.need_w:
            return self.t0_s
        f = ((cap_w - self.static_w) / (self.need_w - self.static_w)) ** (1 / 3)
        return self.t0_s * ((1 - self.compute) + self.compute / f)

    def energy_j(self, cap_w: float) -> float:
        return min(cap_w, self.need_w) * self.step_time_s(cap_w)


jobs = st.builds(Job, need_w=st.floats(150, 700), static_w=st.floats(40, 140), compute=st.floats(0.05, 1),
                 t0_s=st.floats(0.05, 5))
bounds = st.sampled_from([0.0, 0.02, 0.05, 0.10, 0.20])


def brute_force(job: Job, caps, bound: float) -> float:
    """Measure every setting; keep those within the bound of the top one; least energy, then the
    higher setting."""
    top = job.step_time_s(max(caps))
    ok = [c for c in caps if job.step_time_s(c) / top - 1 <= bound]
    return min(ok, key=lambda c: (job.energy_j(c), -c))


def run(search: AutoSearch, job: Job, noise: float = 0.0, rng: random.Random | None = None) -> tuple[Hold, list]:
    """The caller's loop: apply, measure whole steps, record, until the search holds."""
    asked = []
    for _ in range(10 * len(search.settings)):
        action = search.next_action()
        if isinstance(action, Hold):
            return action, asked
        asked.append((action.setting, action.why))
        t = job.step_time_s(action.setting) * (1 + (rng.gauss(0, noise) if noise else 0))
        p = min(action.setting, job.need_w) * (1 + (rng.gauss(0, noise) if noise else 0))
        search.record(Measurement(action.setting, action.steps, p * t, t))
    raise AssertionError("the search never settled")


@settings(max_examples=300, deadline=None)
@given(job=jobs, bound=bounds)
def test_finds_what_brute_force_finds(job, bound):
    top = job.step_time_s(max(CAPS_W))
    # a setting a rounding error from the bound is decided by rounding, in either search (an
    # uncapped setting's slowdown is exactly 0 in both)
    assume(all(abs(job.step_time_s(c) / top - 1 - bound) > 1e-9 or job.step_time_s(c) == top for c in CAPS_W))
    held, asked = run(AutoSearch(CAPS_W, max_slowdown=bound), job)
    assert held.setting == brute_force(job, CAPS_W, bound)
    # it walked down from the top, one setting at a time, and never below the first past the bound
    walked = sorted({s for s, _ in asked}, reverse=True)
    assert walked == list(CAPS_W[: len(walked)])
    past = [c for c in CAPS_W if job.step_time_s(c) / top - 1 > bound]
    assert not past or min(walked) == past[0]


@settings(max_examples=200, deadline=None)
@given(job=jobs, bound=st.sampled_from([0.05, 0.10]), noise=st.sampled_from([0.001, 0.003, 0.01]),
       seed=st.integers(0, 2**32 - 1))
def test_with_noisy_measurements_it_is_as_good_as_brute_force_within_the_noise(job, bound, noise, seed):
    held, _ = run(AutoSearch(CAPS_W, max_slowdown=bound), job, noise, random.Random(seed))
    best = brute_force(job, CAPS_W, bound)
    top = job.step_time_s(max(CAPS_W))
    slow = job.step_time_s(held.setting) / top - 1
    margin = 6 * noise  # a ratio of two noisy step times, each off by a few sigma at most
    assert slow <= bound + margin
    # Noise can end the walk at a setting truly just within the bound, never at one clearly
    # within it: the choice is at least as good as brute force's under a bound tighter by the noise.
    tight = brute_force(job, CAPS_W, max(bound - margin, 0.0))
    assert job.energy_j(held.setting) <= job.energy_j(tight) * (1 + margin)
    # and exactly brute force's choice when no decision lies within the noise
    within = [c for c in CAPS_W if job.step_time_s(c) / top - 1 <= bound]
    energies = sorted(job.energy_j(c) for c in within)
    clear = all(abs(job.step_time_s(c) / top - 1 - bound) > margin for c in CAPS_W) and (
        len(energies) < 2 or energies[1] > energies[0] * (1 + 2 * margin))
    event(f"clear={clear}")
    if clear:
        assert held.setting == best


def scripted(search: AutoSearch, script: dict[float, list[tuple[float, float]]]) -> Hold:
    """Measurements from a script: setting -> [(energy per step, step time), ...] in order."""
    while isinstance(action := search.next_action(), Measure):
        e, t = script[action.setting].pop(0)
        search.record(Measurement(action.setting, action.steps, e, t))
    return action


def test_one_noisy_window_past_the_bound_is_confirmed_before_it_ends_the_walk():
    s = AutoSearch([300, 250, 200], max_slowdown=0.05)
    held = scripted(s, {300: [(300.0, 1.00)], 250: [(260.0, 1.08), (260.0, 1.01)], 200: [(230.0, 1.30)] * 2})
    # 250: 8 % then 1 %: the mean 4.5 % is within; 200: confirmed past the bound
    assert [r.measurements for r in s.results()] == [1, 2, 2]
    assert held.setting == 250 and held.slowdown == pytest.approx(0.045)


def test_a_confirmed_slowdown_ends_the_walk_and_nothing_below_is_measured():
    s = AutoSearch([400, 300, 200, 100], max_slowdown=0.05)
    held = scripted(s, {400: [(400.0, 1.0)], 300: [(330.0, 1.2), (330.0, 1.2)]})
    assert held.setting == 400 and [r.setting for r in s.results()] == [400, 300]


def test_lowest_energy_not_the_lowest_setting():
    # race to idle: the lowest setting within the bound costs more than the one above it
    s = AutoSearch([300, 250, 200], max_slowdown=0.10)
    held = scripted(s, {300: [(300.0, 1.0)], 250: [(250.0, 1.0)], 200: [(280.0, 1.05)]})
    assert held.setting == 250 and all(r.within_bound for r in s.results())


def test_step_time_drift_restarts_the_search_after_confirmations():
    s = AutoSearch([300, 200], max_slowdown=0.05, drift=0.10, drift_confirmations=2)
    held = scripted(s, {300: [(300.0, 1.0)], 200: [(210.0, 1.02)]})
    assert held.setting == 200
    s.record(Measurement(200, held.steps, 215.0, 1.30))  # one drifted window: noise, maybe
    s.record(Measurement(200, held.steps, 210.0, 1.03))  # back: the strike is forgotten
    s.record(Measurement(200, held.steps, 215.0, 1.30))
    assert s.phase is Phase.HOLD and s.restarts == 0
    s.record(Measurement(200, held.steps, 215.0, 1.30))  # second in a row: the job changed
    assert s.restarts == 1 and s.next_action() == Measure(300, held.steps, "baseline")
    assert s.results() == []


def test_a_single_setting_holds_after_its_baseline():
    s = AutoSearch([500])
    assert scripted(s, {500: [(100.0, 0.5)]}) == Hold(500, 100.0, 0.5, 0.0, 20)


@pytest.mark.parametrize(("m", "msg"), [
    (Measurement(250, 20, 1.0, 1.0), "measured setting 250, but the search asked for 300"),
    (Measurement(300, 19, 1.0, 1.0), "covers 19 steps, the search asked for 20"),
    (Measurement(300, 20, 1.0, 0.0), "is not a measurement"),
])
def test_a_measurement_of_something_else_is_a_caller_bug(m, msg):
    with pytest.raises(ValueError, match=msg):
        AutoSearch([300, 250]).record(m)


@pytest.mark.parametrize("kw", [{"settings": []}, {"settings": [1.0], "max_slowdown": 1.0},
                                {"settings": [float("nan")]}, {"settings": [1.0], "steps_per_measurement": 0}])
def test_bad_configuration(kw):
    with pytest.raises(ValueError):
        AutoSearch(**kw)
