"""A class's [class.energy]: `gpu_power_limit = "auto"` and the search's parameters, checked as the
rest of the schema is (one line naming file and key), and never together with a host-wide cap."""

from __future__ import annotations

import pytest

from aios_host.energy.auto_jobs import auto_classes
from aios_host.policy.schema import PolicyError, load_policy

BAD = [
    ('energy.gpu_power_limit = "70%"', "class[0].energy.gpu_power_limit: '70%': input should be 'auto'"),
    ("energy.max_slowdown = 0.9", "class[0].energy.max_slowdown: 0.9: input should be less than or equal to 0.5"),
    ("energy.max_slowdown = nan", "class[0].energy.max_slowdown: nan: input should be a finite number"),
    ("energy.steps_per_measurement = 0", "class[0].energy.steps_per_measurement: 0: input should be greater"),
    ("energy.measure_seconds = inf", "class[0].energy.measure_seconds: inf: input should be a finite number"),
    ("energy.power_step_watts = 0.5", "class[0].energy.power_step_watts: 0.5: input should be greater"),
    ("energy.max_slowdwn = 0.1",
     "class[0].energy.max_slowdwn: unknown key 'max_slowdwn' (did you mean 'max_slowdown'?)"),
]


@pytest.mark.parametrize(("line", "expected"), BAD)
def test_bad_values_are_one_line(tmp_path, line, expected):
    f = tmp_path / "x.toml"
    f.write_text(f'[[class]]\nname = "train"\n{line}\n')
    with pytest.raises(PolicyError) as exc:
        load_policy(f)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{f}: {expected}")


def test_auto_and_a_host_wide_cap_are_refused_together(tmp_path):
    f = tmp_path / "x.toml"
    f.write_text('[[class]]\nname = "train"\nenergy.gpu_power_limit = "auto"\n[energy]\ngpu_power_limit = "70%"\n')
    with pytest.raises(PolicyError, match="class 'train': energy.gpu_power_limit = 'auto' and \\[energy\\] "
                                          "gpu_power_limit = '70%' both set the GPUs' power limit: keep one of them"):
        load_policy(f)


def test_auto_classes_with_their_defaults(tmp_path):
    f = tmp_path / "x.toml"
    f.write_text('[[class]]\nname = "train"\nmatch.job = "llm"\ncpu.gpus = [2, 3]\nenergy.gpu_power_limit = "auto"\n'
                 '[[class]]\nname = "web"\nenergy.max_slowdown = 0.1\n')
    (a,) = auto_classes(load_policy(f))
    assert (a.name, a.label, a.gpus) == ("train", "llm", (2, 3))
    assert (a.spec.max_slowdown, a.spec.steps_per_measurement, a.spec.measure_seconds, a.spec.power_step_watts) == \
        (0.05, 20, 30.0, 25.0)
