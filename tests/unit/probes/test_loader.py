"""The pure half of the loader: attach choice, cflags, statuses, preflight errors, kernel facts."""

import dataclasses

import pytest

from aios_host.errors import AiosError
from aios_host.kernel.root import SysRoot
from aios_host.probes import loader
from aios_host.probes.loader import (
    AttachChoice,
    KernelFacts,
    LoadOptions,
    ProbeError,
    cflags_for,
    choose_attach,
    choose_events,
    preflight,
    probe_statuses,
    program_label,
    read_kernel_facts,
)
from aios_host.probes.specs import PROBE_NAMES, PROBES, get_spec
from aios_host.probes.tracefs import SwitchStateBits
from tests.unit.probes.btfblob import kernel_like
from tests.unit.probes.fakes import fake_probe_host, load, put


@pytest.mark.parametrize(
    ("requested", "headers", "release", "method"),
    [
        ("auto", "matching", "6.1.0-56-amd64", "raw"),
        ("auto", "fallback", "6.18.44-fc", "tracepoint"),
        ("auto", "matching", "5.15.0-1", "tracepoint"),  # no prev_state argument before 5.18
        ("auto", "missing", "6.18.44", "tracepoint"),
        ("tracepoint", "matching", "6.1.0", "tracepoint"),
        ("raw", "matching", "6.1.0", "raw"),
    ],
)
def test_choose_attach(requested, headers, release, method):
    assert choose_attach(requested, headers, release).method == method


@pytest.mark.parametrize(
    ("requested", "headers", "release", "method", "offsets"),
    [
        ("auto", "fallback", "6.18.44-fc", "raw", "btf"),
        ("raw", "fallback", "6.18.44-fc", "raw", "btf"),
        ("auto", "matching", "6.1.0-56-amd64", "raw", "headers"),  # matching headers win
        ("auto", "fallback", "5.15.0", "tracepoint", "headers"),
        ("tracepoint", "fallback", "6.18.44", "tracepoint", "headers"),
    ],
)
def test_choose_attach_with_the_kernels_btf(requested, headers, release, method, offsets):
    c = choose_attach(requested, headers, release, btf_raw=True)
    assert (c.method, c.task_offsets) == (method, offsets)
    if (method, offsets) == ("raw", "btf") and requested == "auto":
        assert "BTF" in c.reason and "fallback" in c.reason


def test_choose_attach_reason_names_the_headers():
    assert "fallback" in choose_attach("auto", "fallback", "6.18.44").reason
    assert "match" in choose_attach("auto", "matching", "6.1.0").reason


def test_raw_is_refused_with_fallback_headers():
    with pytest.raises(ProbeError, match="raw tracepoints need kernel 5.18\\+ and either kernel headers matching"):
        choose_attach("raw", "fallback", "6.18.44")


def test_unknown_method_and_release():
    with pytest.raises(AiosError, match="expected auto, raw or tracepoint"):
        choose_attach("kprobe", "matching", "6.1.0")
    with pytest.raises(AiosError, match="kernel version"):
        choose_attach("auto", "matching", "weird")


def test_choose_events():
    assert choose_events("auto", "6.1.0") == "ringbuf"
    assert choose_events("auto", "5.4.0") == "perf"
    assert choose_events("perf", "6.18.0") == "perf"
    with pytest.raises(AiosError):
        choose_events("pipe", "6.1.0")


FACTS = KernelFacts(release="6.18.44", headers="fallback", tracefs="/sys/kernel/tracing",
                    available=frozenset(t for p in PROBES for t in p.all_tracepoints),
                    switch_bits=SwitchStateBits(0x100, 0x30), exit_has_group_dead=True,
                    oom_has_memory=True)


def test_cflags_tracepoint_mode():
    opts = LoadOptions()
    sched = cflags_for(get_spec("sched"), "tracepoint", "ringbuf", FACTS, opts)
    assert f"-I{loader.BPF_DIR}" in sched
    assert "-DTASK_REPORT_MAX=0x100" in sched and "-DTASK_REPORT_DEAD=0x30" in sched
    assert "-DAIOS_RAW_TP" not in sched and "-DRUNQ_WAKEUP_ONLY" not in sched
    assert "-DHIST_SLOTS=32" in sched and "-DFILENAME_LEN=128" in sched
    proc = cflags_for(get_spec("proc"), "tracepoint", "perf", FACTS, opts)
    assert "-DEXIT_HAS_GROUP_DEAD" in proc and "-DAIOS_PERF_OUTPUT" in proc
    assert "-DOOM_HAS_MEMORY" in cflags_for(get_spec("oom"), "tracepoint", "ringbuf", FACTS, opts)
    assert "-DAIOS_PERF_OUTPUT" not in cflags_for(get_spec("faults"), "tracepoint", "perf", FACTS, opts)


def test_cflags_raw_mode_only_for_probes_with_a_raw_variant():
    opts = LoadOptions(runq_preempted=False, max_cgroups=64)
    assert "-DAIOS_RAW_TP" in cflags_for(get_spec("sched"), "raw", "ringbuf", FACTS, opts)
    assert "-DRUNQ_WAKEUP_ONLY" in cflags_for(get_spec("sched"), "raw", "ringbuf", FACTS, opts)
    assert "-DMAX_CGROUPS=64" in cflags_for(get_spec("sched"), "raw", "ringbuf", FACTS, opts)
    assert not any(f.startswith("-DTASK_REPORT") for f in cflags_for(get_spec("sched"), "raw", "ringbuf", FACTS, opts))
    assert "-DAIOS_RAW_TP" not in cflags_for(get_spec("blkio"), "raw", "ringbuf", FACTS, opts)
    assert "-DAIOS_RAW_TP" not in cflags_for(get_spec("oom"), "raw", "ringbuf", FACTS, opts)
    old = KernelFacts(release="6.1.0", headers="matching", tracefs="/t")
    assert "-DEXIT_HAS_GROUP_DEAD" not in cflags_for(get_spec("proc"), "raw", "ringbuf", old, opts)
    assert not any(f.startswith("-DTASK_EXIT_CODE_OFF") for f in cflags_for(get_spec("proc"), "raw", "ringbuf", old,
                                                                              opts))


def test_cflags_pass_the_btf_exit_code_offset_where_headers_do_not_match():
    opts = LoadOptions()
    btf_facts = dataclasses.replace(FACTS, task_exit_code_off=1164, btf_raw=True)
    for method in ("raw", "tracepoint"):
        assert "-DTASK_EXIT_CODE_OFF=1164" in cflags_for(get_spec("proc"), method, "ringbuf", btf_facts, opts)
        assert not any("EXIT_CODE" in f for f in cflags_for(get_spec("sched"), method, "ringbuf", btf_facts, opts))
    assert not any("EXIT_CODE" in f for f in cflags_for(get_spec("proc"), "raw", "ringbuf", FACTS, opts))


def test_every_probe_source_exists_and_names_its_tracepoints():
    for spec in PROBES:
        text = (loader.BPF_DIR / spec.source).read_text()
        for tp in spec.all_tracepoints:
            cat, name = tp.split(":")
            assert f"TRACEPOINT_PROBE({cat}, {name})" in text, (spec.name, tp)
        for name in spec.raw_tracepoints or ():
            assert f"RAW_TRACEPOINT_PROBE({name})" in text, (spec.name, name)


def test_attached_lists():
    proc = get_spec("proc")
    assert proc.attached(raw=True) == (("sched:sched_process_exit", "raw"),
                                       ("sched:sched_process_exec", "tracepoint"))
    assert proc.attached(raw=False) == (("sched:sched_process_exec", "tracepoint"),
                                        ("sched:sched_process_exit", "tracepoint"))
    # only where no task_struct field can be read: the syscall/signal join for exit codes
    assert ("signal:signal_deliver", "tracepoint") in proc.attached(raw=False, task_fields=False)
    assert ("syscalls:sys_enter_exit_group", "tracepoint") in proc.attached(raw=False, task_fields=False)
    assert get_spec("blkio").attached(raw=True) == get_spec("blkio").attached(raw=False)


def test_statuses_list_the_exit_join_only_without_task_fields():
    no_btf = dataclasses.replace(FACTS, task_exit_code_off=None)
    with_btf = dataclasses.replace(FACTS, task_exit_code_off=1164, btf_raw=True)
    tp = AttachChoice("tracepoint", "")
    (proc,) = probe_statuses(no_btf, tp, ["proc"])
    assert ("syscalls:sys_enter_exit", "tracepoint") in proc.tracepoints
    (proc,) = probe_statuses(with_btf, tp, ["proc"])
    assert not any(t.startswith(("syscalls:", "signal:")) for t, _ in proc.tracepoints)
    (sched,) = probe_statuses(with_btf, AttachChoice("raw", "", "btf"), ["sched"])
    assert {m for _, m in sched.tracepoints} == {"raw"}


def test_statuses():
    facts = KernelFacts(release="6.18", headers="fallback", tracefs="/t",
                        available=FACTS.available - {"exceptions:page_fault_user"})
    st = {s.name: s for s in probe_statuses(facts, AttachChoice("tracepoint", ""), PROBE_NAMES)}
    assert st["faults"].status == "unavailable" and "exceptions:page_fault_user" in st["faults"].detail
    assert st["sched"].status == "ready"
    none = KernelFacts(release="6.18", headers="fallback", tracefs=None)
    assert {s.status for s in probe_statuses(none, AttachChoice("tracepoint", ""), ["sched"])} == {"unavailable"}


def test_program_label():
    assert program_label("tracepoint__sched__sched_switch") == "sched:sched_switch"
    assert program_label("raw_tracepoint__sched_switch") == "raw:sched_switch"
    assert program_label("other") == "other"


def test_preflight_one_line_errors():
    with pytest.raises(ProbeError, match="need root") as e:
        preflight(SysRoot("/"), FACTS, euid=lambda: 1000)
    assert "\n" not in str(e.value)
    with pytest.raises(ProbeError, match="mount -t tracefs nodev /sys/kernel/tracing"):
        preflight(SysRoot("/"), KernelFacts("6.18", "fallback", None), euid=lambda: 0)
    with pytest.raises(ProbeError, match="no kernel headers"):
        preflight(SysRoot("/"), KernelFacts("6.18", "missing", "/t"), euid=lambda: 0)
    preflight(SysRoot("/"), FACTS, euid=lambda: 0)


def test_read_kernel_facts_on_a_fake_6_18_host(tmp_path):
    fake_probe_host(tmp_path)
    facts = read_kernel_facts(SysRoot(tmp_path))
    assert facts.release == "6.18.44-test" and facts.headers == "fallback"
    assert facts.tracefs == "/sys/kernel/tracing"
    assert facts.switch_bits == SwitchStateBits(0x100, 0x30)
    assert facts.exit_has_group_dead and facts.oom_has_memory
    assert "block:block_rq_issue" in facts.available
    assert facts.task_exit_code_off is None and not facts.btf_raw and "no kernel BTF" in facts.btf_note


def test_read_kernel_facts_reads_the_kernels_btf_on_a_fallback_host(tmp_path):
    fake_probe_host(tmp_path)
    put(tmp_path, "/sys/kernel/btf/vmlinux", "").write_bytes(kernel_like())
    facts = read_kernel_facts(SysRoot(tmp_path))
    assert facts.headers == "fallback" and facts.task_exit_code_off == 20 and facts.btf_raw
    c = choose_attach("auto", facts.headers, facts.release, facts.btf_raw)
    assert (c.method, c.task_offsets) == ("raw", "btf")


def test_read_kernel_facts_on_a_fake_6_1_host_with_matching_headers(tmp_path):
    fake_probe_host(tmp_path, release="6.1.0-56-amd64", headers="6.1.0-56-amd64",
                    formats={"sched:sched_process_exit": load("sched_sched_process_exit_6.1.format")},
                    missing=("exceptions:page_fault_user",))
    put(tmp_path, "/sys/kernel/btf/vmlinux", "not read: the headers match")
    facts = read_kernel_facts(SysRoot(tmp_path))
    assert facts.headers == "matching" and not facts.exit_has_group_dead
    assert facts.task_exit_code_off is None and facts.btf_note == ""
    assert "exceptions:page_fault_user" not in facts.available
    assert choose_attach("auto", facts.headers, facts.release).method == "raw"


def test_unknown_probe_name_is_a_one_line_error(tmp_path):
    with pytest.raises(AiosError, match="unknown probe 'nope'"):
        loader.ProbeSet(SysRoot(tmp_path), LoadOptions(probes=("nope",))).load()


def test_poll_without_event_probes_waits_instead_of_spinning(monkeypatch):
    from aios_host.probes import loader

    slept = []
    monkeypatch.setattr(loader.time, "sleep", slept.append)
    ps = loader.ProbeSet()
    assert ps.poll(timeout_ms=250) == [] and slept == [0.25]
    assert ps.poll(timeout_ms=0) == [] and slept == [0.25]


def test_max_tasks_must_be_a_power_of_two():
    assert "-DMAX_TASKS=4096" in cflags_for(get_spec("sched"), "raw", "ringbuf", FACTS, LoadOptions(max_tasks=4096))
    with pytest.raises(AiosError, match="max_tasks 5000: must be a power of two"):
        cflags_for(get_spec("sched"), "raw", "ringbuf", FACTS, LoadOptions(max_tasks=5000))
