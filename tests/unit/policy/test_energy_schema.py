"""A class's [class.energy]: `gpu_power_limit = "auto"` and the search's parameters, checked as the
rest of the schema is (one line naming file and key), and never together with a host-wide cap."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


# -- per-class cpufreq: cpu_governor / cpu_epp / cpu_max_freq, on exclusive cores only ------------

CPU_BAD = [
    ('energy.cpu_governor = "turbo"', "class[0].energy.cpu_governor: 'turbo': input should be 'performance', "),
    ('energy.cpu_epp = "fast"', "class[0].energy.cpu_epp: 'fast': input should be 'default', 'performance', "),
    ('energy.cpu_max_freq = "2.4 XHz"', "class[0].energy.cpu_max_freq: '2.4 XHz': string should match pattern"),
    ("energy.cpu_max_freq = 2400000", "class[0].energy.cpu_max_freq: 2400000: input should be a valid string"),
    ('energy.cpu_governor = "performance"\nenergy.cpu_epp = "power"',
     "class[0].energy: cpu_epp 'power' under cpu_governor 'performance': intel_pstate and amd-pstate take no EPP"),
]


@pytest.mark.parametrize(("line", "expected"), CPU_BAD)
def test_bad_class_cpufreq_values_are_one_line(tmp_path, line, expected):
    f = tmp_path / "x.toml"
    f.write_text(f'[[class]]\nname = "train"\ncpu.exclusive = true\ncpu.min = 2\n{line}\n')
    with pytest.raises(PolicyError) as exc:
        load_policy(f)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{f}: {expected}"), msg


def test_the_host_wide_and_the_class_keys_are_one_type(tmp_path):
    """The same values are taken and refused in [energy] and in [class.energy]: one definition."""
    from aios_host.policy.schema import ClassEnergySpec, EnergySpec

    for key in ("cpu_governor", "cpu_max_freq"):
        assert EnergySpec.model_fields[key].annotation == ClassEnergySpec.model_fields[key].annotation
    f = tmp_path / "x.toml"
    f.write_text('[energy]\ncpu_max_freq = "2.4 XHz"\n')
    with pytest.raises(PolicyError, match=r"energy\.cpu_max_freq: '2.4 XHz': string should match pattern"):
        load_policy(f)


def _check(tmp_path, capsys, text: str) -> tuple[int, str]:
    from aios_host.cli import main
    from tests.unit.fixtures import fake_v2_host

    root = tmp_path / "root"
    if not root.exists():
        fake_v2_host(root, cpus=8)
    f = tmp_path / "p.toml"
    f.write_text(text)
    capsys.readouterr()
    rc = main(["policy", "check", str(f), "--root", str(root)])
    return rc, capsys.readouterr().err


def test_check_refuses_class_cpufreq_without_exclusive_cores(tmp_path, capsys):
    rc, err = _check(tmp_path, capsys, '[[class]]\nname = "batch"\ncpu.min = 2\nenergy.cpu_max_freq = "60%"\n')
    assert rc == 1
    assert err == (f"{tmp_path / 'p.toml'}: class[0]: class 'batch': energy.cpu_max_freq needs exclusive cores "
                   "(cpu.exclusive = true with cpu.min = N): a CPU frequency setting covers whole CPUs, and this "
                   "class shares its CPUs\n")
    rc, err = _check(tmp_path, capsys, '[[class]]\nname = "train"\ncpu.exclusive = true\ncpu.min = 2\n'
                                       'energy.cpu_governor = "performance"\nenergy.cpu_max_freq = "100%"\n')
    assert (rc, err) == (0, "")


_VALID = {"cpu_governor": st.sampled_from(["performance", "powersave", "schedutil", "ondemand", "conservative"]),
          "cpu_epp": st.sampled_from(["default", "performance", "balance_performance", "balance_power", "power"]),
          "cpu_max_freq": st.sampled_from(["80%", "2.4GHz", "1200000kHz", "900 MHz", "0%", "1000%"])}
_HOSTILE = st.one_of(st.text(max_size=20), st.integers(-(1 << 70), 1 << 70), st.floats(allow_nan=True),
                     st.booleans(), st.sampled_from(["9" * 400 + "GHz", "1e400GHz", "nan%", "-1GHz", "80 %", "\x00"]))


@settings(max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(keys=st.fixed_dictionaries({}, optional=_VALID), exclusive=st.booleans(),
       cpu_min=st.sampled_from([None, 1, 2, 1.5]))
def test_class_cpufreq_needs_exclusive_cores(tmp_path, capsys, keys, exclusive, cpu_min):
    """Valid values: accepted with exclusive cores (and a whole cpu.min), else one line on stderr
    naming the class and the first key it set."""
    lines = ['[[class]]', 'name = "train"', f"cpu.exclusive = {'true' if exclusive else 'false'}"]
    lines += [f"cpu.min = {cpu_min}"] if cpu_min is not None else []
    lines += [f'energy.{k} = "{v}"' for k, v in keys.items()]
    rc, err = _check(tmp_path, capsys, "\n".join(lines) + "\n")
    whole = cpu_min in (1, 2)
    pinned = keys.get("cpu_governor") == "performance" and keys.get("cpu_epp") not in (None, "performance")
    if exclusive and not whole:
        assert rc == 1 and "exclusive = true needs min = a whole number" in err
    elif pinned:
        assert rc == 1 and "cpu_epp" in err and "under cpu_governor 'performance'" in err
    elif keys and not exclusive:
        first = next(k for k in ("cpu_governor", "cpu_epp", "cpu_max_freq") if k in keys)
        assert rc == 1 and f"class 'train': energy.{first} needs exclusive cores" in err
    else:
        assert (rc, err) == (0, "")
    assert err.count("\n") == (rc != 0) and "Traceback" not in err


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(key=st.sampled_from(["cpu_governor", "cpu_epp", "cpu_max_freq"]), value=_HOSTILE, exclusive=st.booleans())
def test_hostile_class_cpufreq_values_never_traceback(tmp_path, capsys, key, value, exclusive):
    text = (f'[[class]]\nname = "train"\ncpu.exclusive = {"true" if exclusive else "false"}\ncpu.min = 2\n'
            f"energy.{key} = {_toml_value(value)}\n")
    rc, err = _check(tmp_path, capsys, text)
    assert "Traceback" not in err
    if rc:
        assert err.count("\n") == 1 and str(tmp_path / "p.toml") in err, err
    elif key == "cpu_max_freq":  # a frequency the plan can turn into kHz within the cpuinfo range
        from aios_host.energy.plan import max_freq_khz
        from aios_host.kernel.cpufreq import CpufreqPolicy

        p = CpufreqPolicy("policy0", (0,), "intel_pstate", "powersave", (), 800_000, 3_500_000, 800_000, 3_500_000,
                          None, None, (), None)
        assert exclusive and 800_000 <= max_freq_khz(value, p) <= 3_500_000
    else:  # only what the schema offers gets through, and only onto exclusive cores
        assert exclusive and value in _VALID_VALUES[key], (key, value)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v != v:
        return "nan"
    if isinstance(v, float) and abs(v) == float("inf"):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(v, ensure_ascii=False)  # a TOML basic string: JSON's escapes are TOML's


_VALID_VALUES = {"cpu_governor": {"performance", "powersave", "schedutil", "ondemand", "conservative"},
                 "cpu_epp": {"default", "performance", "balance_performance", "balance_power", "power"}}
