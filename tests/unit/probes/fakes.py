"""A fake kernel root with tracefs formats, headers and a hybrid cgroup tree, for probe unit tests."""

from __future__ import annotations

from pathlib import Path

from aios_host.probes.specs import PROBES
from tests.unit.fixtures import HYBRID, fake_cgroup, fake_host, put

DATA = Path(__file__).resolve().parent / "data"
TRACING = "/sys/kernel/tracing"
CAPTURED = {
    "sched:sched_switch": "sched_sched_switch.format",
    "sched:sched_process_exit": "sched_sched_process_exit.format",
    "oom:mark_victim": "oom_mark_victim.format",
}


def load(name: str) -> str:
    text = (DATA / name).read_text()
    first, _, rest = text.partition("\n")
    assert first.startswith("# captured:"), name
    return rest


def minimal_format(tracepoint: str) -> str:
    name = tracepoint.split(":", 1)[1]
    return (f"name: {name}\nID: 1\nformat:\n"
            "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n"
            "\tfield:int x;\toffset:8;\tsize:4;\tsigned:1;\n\nprint fmt: \"x=%d\", REC->x\n")


def fake_probe_host(
    root: Path,
    release: str = "6.18.44-test",
    headers: str | None = "6.1.0-56-amd64",
    tracefs: bool = True,
    missing: tuple[str, ...] = (),
    formats: dict[str, str] | None = None,
) -> Path:
    """headers: the UTS release of /lib/modules/<release>/build (None: no headers at all)."""
    fake_host(root, HYBRID, pid1="process_api")
    fake_cgroup(root, "/sys/fs/cgroup/unified", HYBRID)
    put(root, "/proc/sys/kernel/osrelease", release + "\n")
    if headers is not None:
        put(root, f"/lib/modules/{release}/build/include/generated/utsrelease.h",
            f'#define UTS_RELEASE "{headers}"\n')
    if tracefs:
        for spec in PROBES:
            for tp in spec.all_tracepoints:
                if tp in missing:
                    continue
                cat, name = tp.split(":", 1)
                text = (formats or {}).get(tp) or (load(CAPTURED[tp]) if tp in CAPTURED else minimal_format(tp))
                put(root, f"{TRACING}/events/{cat}/{name}/format", text)
    return root
