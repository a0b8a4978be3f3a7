import errno

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aios_host.errors import KernelError
from aios_host.kernel import cpufreq
from aios_host.kernel.cpufreq import FreqLimits
from aios_host.kernel.knob import KnobRefused, KnobUnavailable
from aios_host.kernel.root import SysRoot
from tests.unit.energy.fake_cpufreq import EPP_CHOICES, FakeCpufreqKernel, FakePolicy
from tests.unit.fixtures import put

P0 = "/sys/devices/system/cpu/cpufreq/policy0"
LO, HI = 800_000, 3_500_000
khz = st.integers(LO // 1000, HI // 1000).map(lambda m: m * 1000)


def kernel(tmp_path, **kw) -> FakeCpufreqKernel:
    return FakeCpufreqKernel(tmp_path, **kw)


# -- reading -------------------------------------------------------------------------------------


def test_read_policy_of_intel_pstate(tmp_path):
    k = kernel(tmp_path)
    p = cpufreq.read_policy(k, "policy2")
    assert p.cpus == (2, 3) and p.driver == "intel_pstate" and p.governor == "powersave"
    assert p.available_governors == ("performance", "powersave")
    assert (p.min_freq_khz, p.max_freq_khz) == (LO, HI)
    assert (p.cpuinfo_min_freq_khz, p.cpuinfo_max_freq_khz) == (LO, HI)
    assert p.epp == "balance_performance" and p.available_epp == EPP_CHOICES
    assert p.boost == cpufreq.Boost(True, "/sys/devices/system/cpu/intel_pstate/no_turbo", True, "global")


@pytest.mark.parametrize(("driver", "path", "scope"), [
    ("acpi-cpufreq", "/sys/devices/system/cpu/cpufreq/boost", "global"),
    ("amd-pstate-epp", f"{P0}/boost", "policy"),
])
def test_boost_in_each_drivers_form(tmp_path, driver, path, scope):
    p = cpufreq.read_policy(kernel(tmp_path, driver=driver), "policy0")
    assert p.boost == cpufreq.Boost(True, path, False, scope)


def test_acpi_cpufreq_has_no_epp(tmp_path):
    p = cpufreq.read_policy(kernel(tmp_path, driver="acpi-cpufreq"), "policy0")
    assert p.epp is None and p.available_epp == ()
    assert "schedutil" in p.available_governors


def test_policies_in_cpu_order_not_name_order(tmp_path):
    k = kernel(tmp_path, policies=[FakePolicy((i,)) for i in (0, 2, 10)])
    assert cpufreq.list_policies(k) == ["policy0", "policy2", "policy10"]
    assert [p.cpus for p in cpufreq.read_policies(k)] == [(0,), (2,), (10,)]


def test_no_cpufreq_says_why(tmp_path):
    root = SysRoot(tmp_path)
    assert cpufreq.list_policies(root) == []
    assert "absent" in cpufreq.absent_reason(root)
    put(tmp_path, "/sys/devices/system/cpu/cpufreq/ondemand/sampling_rate", "10000\n")
    assert cpufreq.list_policies(root) == []
    assert cpufreq.absent_reason(root) == ("/sys/devices/system/cpu/cpufreq has no policies: "
                                           "a VM or a kernel without a cpufreq driver")


def test_a_policy_name_that_is_not_one_is_refused(tmp_path):
    with pytest.raises(KnobUnavailable, match="not a cpufreq policy name"):
        cpufreq.read_policy(kernel(tmp_path), "../../../etc")


def test_unknown_current_frequency_reads_as_none(tmp_path):
    k = kernel(tmp_path)
    put(tmp_path, f"{P0}/scaling_cur_freq", "<unknown>\n")
    assert cpufreq.read_policy(k, "policy0").cur_freq_khz is None


# -- governor ------------------------------------------------------------------------------------


def test_set_governor_reads_back_and_returns_the_old(tmp_path):
    k = kernel(tmp_path)
    ch = cpufreq.set_governor(k, "policy0", "performance")
    assert (ch.old, ch.requested, ch.new, ch.written, ch.took) == ("powersave", "performance", "performance",
                                                                   True, True)
    assert k.writes == [(f"{P0}/scaling_governor", "performance")]
    back = cpufreq.set_governor(k, "policy0", ch.old)  # the rollback
    assert back.new == "powersave" and cpufreq.read_policy(k, "policy2").governor == "powersave"


def test_unknown_governor_is_refused_before_writing(tmp_path):
    k = kernel(tmp_path)
    with pytest.raises(KnobRefused) as exc:
        cpufreq.set_governor(k, "policy0", "schedutil")
    assert str(exc.value) == (f"{P0}/scaling_governor: governor 'schedutil' is not one of "
                              "scaling_available_governors (performance powersave)")
    assert k.writes == []


def test_the_fake_kernel_itself_answers_einval_for_an_unknown_governor(tmp_path):
    with pytest.raises(KernelError) as exc:
        kernel(tmp_path).write_text(f"{P0}/scaling_governor", "schedutil")
    assert exc.value.errno == errno.EINVAL


def test_a_governor_the_kernel_refuses_anyway_is_one_line(tmp_path, monkeypatch):
    k = kernel(tmp_path)

    def refuse(path, value):
        raise KernelError(f"write {value!r}", path, errno.EINVAL)

    monkeypatch.setattr(k, "write_text", refuse)
    with pytest.raises(KnobRefused, match="governor 'performance' refused: EINVAL"):
        cpufreq.set_governor(k, "policy0", "performance")


def test_same_governor_writes_nothing(tmp_path):
    k = kernel(tmp_path)
    ch = cpufreq.set_governor(k, "policy0", "powersave")
    assert not ch.written and ch.took and k.writes == []


# -- min / max -----------------------------------------------------------------------------------


def test_the_fake_kernel_clamps_a_min_above_the_max_and_brings_it_back(tmp_path):
    """The freq-QoS behaviour the writer has to live with (5.5+)."""
    k = kernel(tmp_path)
    k.write_text(f"{P0}/scaling_max_freq", "2000000")
    k.write_text(f"{P0}/scaling_min_freq", "3000000")
    p = cpufreq.read_policy(k, "policy0")
    assert (p.min_freq_khz, p.max_freq_khz) == (2_000_000, 2_000_000)
    k.write_text(f"{P0}/scaling_max_freq", "3500000")
    p = cpufreq.read_policy(k, "policy0")
    assert (p.min_freq_khz, p.max_freq_khz) == (3_000_000, 3_500_000)


def test_the_old_fake_kernel_refuses_min_above_max(tmp_path):
    k = kernel(tmp_path, qos=False)
    k.write_text(f"{P0}/scaling_max_freq", "2000000")
    with pytest.raises(KernelError) as exc:
        k.write_text(f"{P0}/scaling_min_freq", "3000000")
    assert exc.value.errno == errno.EINVAL


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(qos=st.booleans(), start=st.tuples(khz, khz), hidden_min=khz, target=st.tuples(khz, khz))
def test_freq_limits_land_exactly_from_any_start_on_both_kernels(tmp_path_factory, qos, start, hidden_min, target):
    tmp = tmp_path_factory.mktemp("cpufreq")
    lo, hi = sorted(start)
    # On a 5.5+ kernel, the start may hide a min request above the max (read as the max).
    pol = FakePolicy((0,), min_req_khz=max(lo, hidden_min) if qos else lo, max_req_khz=hi)
    k = kernel(tmp, qos=qos, policies=[pol])
    before = cpufreq.read_policy(k, "policy0")
    want = FreqLimits(*sorted(target))
    ch = cpufreq.set_freq_limits(k, "policy0", *want)
    assert ch.old == (before.min_freq_khz, before.max_freq_khz)
    assert ch.new == want and ch.took and not ch.note
    p = cpufreq.read_policy(k, "policy0")
    assert (p.min_freq_khz, p.max_freq_khz) == want
    # rollback: the old effective values come back
    back = cpufreq.set_freq_limits(k, "policy0", *ch.old)
    assert back.new == ch.old


@pytest.mark.parametrize("qos", [True, False])
def test_raising_above_the_current_max_writes_the_max_first(tmp_path, qos):
    k = kernel(tmp_path, qos=qos, policies=[FakePolicy((0,), max_req_khz=1_500_000)])
    cpufreq.set_freq_limits(k, "policy0", 2_000_000, 3_000_000)
    assert [w[0].rsplit("/", 1)[1] for w in k.writes] == ["scaling_max_freq", "scaling_min_freq"]


@pytest.mark.parametrize("qos", [True, False])
def test_lowering_below_the_current_min_writes_the_min_first(tmp_path, qos):
    k = kernel(tmp_path, qos=qos, policies=[FakePolicy((0,), min_req_khz=2_500_000)])
    cpufreq.set_freq_limits(k, "policy0", 1_000_000, 1_200_000)
    assert [w[0].rsplit("/", 1)[1] for w in k.writes] == ["scaling_min_freq", "scaling_max_freq"]


def test_a_frequency_table_rounds_and_the_change_says_so(tmp_path):
    k = kernel(tmp_path, driver="acpi-cpufreq")  # table: 800 MHz .. 3.5 GHz in 100 MHz steps
    ch = cpufreq.set_freq_limits(k, "policy0", 1_250_000, 2_950_000)
    assert ch.new == (1_300_000, 2_900_000) and not ch.took
    assert "rounded to its frequency table" in ch.note


@pytest.mark.parametrize(("lo", "hi", "msg"), [
    (2_000_000, 1_000_000, "min 2000000 kHz is above max 1000000 kHz"),
    (700_000, 1_000_000, "min 700000 kHz is outside cpuinfo_min_freq..cpuinfo_max_freq (800000..3500000 kHz)"),
    (800_000, 3_600_000, "max 3600000 kHz is outside"),
])
def test_limits_out_of_range_are_refused_before_writing(tmp_path, lo, hi, msg):
    k = kernel(tmp_path)
    with pytest.raises(KnobRefused) as exc:
        cpufreq.set_freq_limits(k, "policy0", lo, hi)
    assert str(exc.value).startswith(f"{P0}/scaling_{{min,max}}_freq: {msg}")
    assert k.writes == []


def test_a_refusal_half_way_hands_back_what_to_roll_back(tmp_path, monkeypatch):
    k = kernel(tmp_path, policies=[FakePolicy((0,), max_req_khz=1_500_000)])
    real = k.write_text

    def second_fails(path, value):
        if path.endswith("scaling_min_freq"):
            raise KernelError(f"write {value!r}", path, errno.EBUSY)
        real(path, value)

    monkeypatch.setattr(k, "write_text", second_fails)
    with pytest.raises(KnobRefused) as exc:
        cpufreq.set_freq_limits(k, "policy0", 2_000_000, 3_000_000)
    assert "reads 800000..3000000 kHz (was 800000..1500000)" in str(exc.value)
    assert exc.value.changed is not None and exc.value.changed.old == (800_000, 1_500_000)


# -- EPP -----------------------------------------------------------------------------------------


def test_set_epp(tmp_path):
    k = kernel(tmp_path)
    ch = cpufreq.set_epp(k, "policy0", "power")
    assert (ch.old, ch.new, ch.took) == ("balance_performance", "power", True)


def test_epp_default_reads_back_as_the_drivers_default(tmp_path):
    k = kernel(tmp_path)
    cpufreq.set_epp(k, "policy0", "power")
    ch = cpufreq.set_epp(k, "policy0", "default")
    assert ch.new == "balance_performance" and not ch.took and "driver's default" in ch.note


@pytest.mark.parametrize("driver", ["intel_pstate", "amd-pstate-epp"])
def test_epp_under_the_performance_governor_is_one_clear_line(tmp_path, driver):
    k = kernel(tmp_path, driver=driver)
    cpufreq.set_governor(k, "policy0", "performance")
    assert cpufreq.read_policy(k, "policy0").epp == "performance"
    with pytest.raises(KnobRefused) as exc:
        cpufreq.set_epp(k, "policy0", "power")
    assert str(exc.value) == (f"{P0}/energy_performance_preference: 'power' refused (EBUSY): under the "
                              f"performance governor {driver} accepts only 'performance'; set the governor "
                              "to powersave first")
    # "performance" is what it already reads: nothing to write, nothing refused
    assert not cpufreq.set_epp(k, "policy0", "performance").written
    # leaving the performance governor brings the previous preference back
    cpufreq.set_governor(k, "policy0", "powersave")
    assert cpufreq.read_policy(k, "policy0").epp == "balance_performance"


def test_epp_not_in_the_available_list_is_refused(tmp_path):
    k = kernel(tmp_path)
    with pytest.raises(KnobRefused, match=r"'128' is not one of energy_performance_available_preferences"):
        cpufreq.set_epp(k, "policy0", "128")
    assert k.writes == []


def test_epp_on_a_driver_without_it_is_unavailable(tmp_path):
    with pytest.raises(KnobUnavailable, match="driver acpi-cpufreq has no energy-performance preference"):
        cpufreq.set_epp(kernel(tmp_path, driver="acpi-cpufreq"), "policy0", "power")


# -- boost ---------------------------------------------------------------------------------------


def test_no_turbo_is_inverted_and_global_and_the_max_follows(tmp_path):
    k = kernel(tmp_path)
    ch = cpufreq.set_boost(k, "policy0", False)
    assert (ch.old, ch.new, ch.knob) == (True, False, "/sys/devices/system/cpu/intel_pstate/no_turbo")
    assert k.writes == [("/sys/devices/system/cpu/intel_pstate/no_turbo", "1")]
    for name in ("policy0", "policy2"):  # global: both policies lost turbo
        p = cpufreq.read_policy(k, name)
        assert not p.boost.enabled and p.cpuinfo_max_freq_khz == p.max_freq_khz == 2_400_000
    cpufreq.set_boost(k, "policy0", True)
    assert cpufreq.read_policy(k, "policy2").max_freq_khz == HI  # the max request came back


def test_turbo_disabled_by_the_bios(tmp_path):
    k = kernel(tmp_path, turbo_disabled_by_bios=True)
    with pytest.raises(KnobRefused, match="EPERM: turbo is disabled by the firmware"):
        cpufreq.set_boost(k, "policy0", True)


@pytest.mark.parametrize("driver", ["acpi-cpufreq", "amd-pstate-epp"])
def test_boost_off_and_back(tmp_path, driver):
    k = kernel(tmp_path, driver=driver)
    ch = cpufreq.set_boost(k, "policy0", False)
    assert ch.took and k.writes == [(ch.knob, "0")]
    assert cpufreq.set_boost(k, "policy0", ch.old).new is True


def test_no_boost_switch(tmp_path):
    k = kernel(tmp_path, driver="acpi-cpufreq")
    (tmp_path / "sys/devices/system/cpu/cpufreq/boost").unlink()
    with pytest.raises(KnobUnavailable, match="no boost switch"):
        cpufreq.set_boost(k, "policy0", False)
