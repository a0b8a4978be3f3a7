"""Generated values for every numeric command-line flag: parsed into a finite number within the
flag's documented range, or refused with one line (`aios-host: error: ...`) and exit 2 before the
command starts. Parsing only: a value that is accepted would start a daemon or a measurement."""

from __future__ import annotations

import contextlib
import io
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aios_host.cli import build_parser
from tests.unit.fuzz.test_fuzz_policy import EDGE_VALUES, EXAMPLES, HOSTILE

FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
# argv before the flag, the flag, its destination, the range it documents
FLAGS = [
    (["policy", "diff", "p.toml"], "--sample-ms", "sample_ms", (0, 60_000)),
    (["snapshot"], "--depth", "depth", (0, 4096)),
    (["daemon"], "--interval", "interval", (0.05, 3600)),
    (["daemon"], "--hold-ticks", "hold_ticks", (1, 3600)),
    (["daemon"], "--cooldown", "cooldown", (0, 86400)),
    (["daemon"], "--metrics-port", "metrics_port", (0, 65535)),
    (["probe", "run"], "--duration", "duration", (0.01, 365 * 86400)),
    (["probe", "stats"], "--duration", "duration", (0.01, 365 * 86400)),
    (["status"], "--timeout", "timeout", (0.1, 3600)),
    (["energy", "status"], "--interval", "interval", (0, 60)),
]
VALUES = st.one_of(
    st.sampled_from([str(v) for kind in ("size", "cores", "int") for v in EDGE_VALUES[kind]]),
    HOSTILE.map(str), st.floats().map(str), st.integers().map(str),
    st.sampled_from(["1s", "500ms", "2m", "1h", "0", "1e-9", "-0", " 5 ", "5s5", "0x10", "1_000"]),
)


@FUZZ
@given(flag=st.sampled_from(FLAGS), value=VALUES)
def test_numeric_flags_are_in_range_or_refused_in_one_line(flag, value):
    argv, name, dest, (lo, hi) = flag
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            ns = build_parser().parse_args([*argv, f"{name}={value}"])
        except SystemExit as exc:
            assert exc.code == 2
            lines = err.getvalue().splitlines()
            assert len(lines) == 1 and lines[0].startswith("aios-host: error: ") and name in lines[0], lines
            return
    got = getattr(ns, dest)
    assert isinstance(got, int | float) and math.isfinite(got) and lo <= got <= hi, (value, got)
