import pytest

from aios_host.probes.sample import EMPTY_HIST, CgroupCounters, ProbeSample, SampleBuilder
from aios_host.probes.structs import HIST_SLOTS


def test_builder_sums_rows_and_histograms():
    b = SampleBuilder()
    b.add(5, oncpu_ns=10, preempt=1)
    b.add(5, oncpu_ns=5)
    b.add_hist(5, "runq_hist", 3, 2)
    b.add_hist(5, "runq_hist", 3, 1)
    b.add_hist(5, "runq_hist", 99, 1)  # capped like the C
    b.add(7, faults=4)
    out = b.build()
    assert out[5].oncpu_ns == 15 and out[5].preempt == 1
    assert out[5].runq_hist[3] == 3 and out[5].runq_hist[HIST_SLOTS - 1] == 1
    assert out[7] == CgroupCounters(faults=4)
    assert ProbeSample(t_ns=1, cgroups=out).counters(8).runq_hist == EMPTY_HIST


def test_a_whole_histogram_adds_as_its_slots_one_by_one():
    counts = [(i * 7) % 5 for i in range(HIST_SLOTS)]
    whole, slots = SampleBuilder(), SampleBuilder()
    whole.add_hist(5, "runq_hist", 3, 2)
    slots.add_hist(5, "runq_hist", 3, 2)
    whole.add_hist_counts(5, "runq_hist", counts)
    whole.add_hist_counts(6, "runq_hist", counts)
    for i, n in enumerate(counts):
        slots.add_hist(5, "runq_hist", i, n)
        slots.add_hist(6, "runq_hist", i, n)
    assert whole.build() == slots.build()
    with pytest.raises(ValueError, match="runq_hist: 3 slots"):
        whole.add_hist_counts(5, "runq_hist", [1, 2, 3])
