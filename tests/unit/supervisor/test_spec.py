"""Job spec validation: one line naming the source, the key and the fix; nothing is started."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aios_host.supervisor.spec import MAX_DURATION_S, JobSpecError, load_spec, parse_duration, spec_from_dict


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "job.toml"
    p.write_text(text)
    return p


def test_full_spec_loads(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("")
    p = _write(tmp_path, '''
name = "train-1"
command = ["train.py", "--lr", "0.1"]
nproc = 4
backend = "gloo"
class = "training"
heartbeat_timeout = "90s"
hosts = "10.0.0.1, 10.0.0.2"
[restart]
max_restarts = 3
backoff = "500ms"
backoff_max = "1m"
[env]
NCCL_DEBUG = "WARN"
SEED = 7
''')
    spec = load_spec(p)
    assert spec.name == "train-1" and spec.nproc == 4 and spec.cls == "training"
    assert spec.command[0] == str(tmp_path / "train.py")  # relative to the spec file
    assert spec.heartbeat_timeout == 90.0
    assert spec.restart.backoff == 0.5 and spec.restart.backoff_max == 60.0
    assert spec.env == {"NCCL_DEBUG": "WARN", "SEED": "7"}
    assert spec.hosts == ["10.0.0.1", "10.0.0.2"] and spec.nnodes == 2 and spec.world_size == 8
    assert spec.instance_key(1) == "train-1.node1"
    assert spec.argv("/py") == ["/py", "-u", str(tmp_path / "train.py"), "--lr", "0.1"]


def test_defaults_follow_torchrun() -> None:
    spec = spec_from_dict({"name": "x", "module": "pkg.train", "args": ["--a"]}, "t")
    assert spec.restart.max_restarts == 0 and spec.nproc == 1 and spec.backend == "auto"
    assert spec.argv("/py") == ["/py", "-u", "-m", "pkg.train", "--a"]
    assert spec.instance_key(0) == "x"
    assert spec_from_dict({"name": "x", "command": "/bin/echo hi"}, "t").argv("/py") == ["/bin/echo", "hi"]


H = 'name = "a"\ncommand = ["x"]\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (H + 'nprocs = 4\n', "job.toml: unknown key 'nprocs'; did you mean 'nproc'?"),
        (H + 'nproc = "four"\n', "job.toml: nproc: 'four': input should be a valid integer"),
        (H + 'nproc = 0\n', "job.toml: nproc: 0: input should be greater than or equal to 1"),
        ('name = "a"\n', "job.toml: command: nothing to run"),
        (H + 'module = "m"\n', "job.toml: command: both command and module"),
        ('name = "a b"\ncommand = ["x"]\n', "job.toml: name: 'a b': string should match pattern"),
        ('command = ["x"]\n', "job.toml: name: required"),
        (H + 'backend = "mpi"\n', "job.toml: backend: 'mpi': input should be 'gloo', 'nccl' or 'auto'"),
        (H + '[env]\nRANK = "3"\n', "job.toml: env: RANK is set by aios-host for every rank"),
        (H + 'heartbeat_timeout = "soon"\n', "job.toml: heartbeat_timeout: 'soon' is not a duration"),
        (H + '[restart]\nmax_restart = 2\n',
         "job.toml: restart: unknown key 'max_restart'; did you mean 'max_restarts'?"),
        (H + '[restart]\nbackoff = "10s"\nbackoff_max = "1s"\n', "backoff_max 1s is below backoff 10s"),
        (H + 'workdir = "/nonexistent/dir"\n', "job.toml: workdir: '/nonexistent/dir' is not an existing directory"),
        (H + 'hosts = ["h1", "h1"]\n', "job.toml: hosts: a host is listed twice"),
        (H + 'node_rank = 2\nhosts = ["a", "b"]\n', "node_rank 2 is not an index of hosts"),
        (H + 'class = "Training"\n', "job.toml: class: 'Training': string should match pattern"),
        ('name = "a"\ncommand = ["x"\n', "job.toml: invalid TOML"),
    ],
)
def test_bad_specs_are_one_line_with_source_and_key(tmp_path: Path, text: str, expected: str) -> None:
    p = _write(tmp_path, text)
    with pytest.raises(JobSpecError) as err:
        load_spec(p)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(str(tmp_path)), msg
    assert expected.replace("job.toml", str(p)) in msg, msg


def test_errors_give_a_fix(tmp_path: Path) -> None:
    with pytest.raises(JobSpecError, match=r"fix: nproc = 4 \(ranks per host"):
        load_spec(_write(tmp_path, 'name = "a"\ncommand = ["x"]\nnproc = -1\n'))
    with pytest.raises(JobSpecError, match="fix: heartbeat_timeout = \"60s\""):
        load_spec(_write(tmp_path, 'name = "a"\ncommand = ["x"]\nheartbeat_timeout = "x"\n'))


def test_flag_errors_name_the_flag() -> None:
    with pytest.raises(JobSpecError) as err:
        spec_from_dict({"name": "a", "command": ["x"], "max_restarts": 1}, "command line", flags=True)
    assert "unknown key 'max_restarts'" in str(err.value)
    with pytest.raises(JobSpecError) as err:
        spec_from_dict({"name": "a", "command": ["x"], "restart": {"max_restarts": -1}}, "command line", flags=True)
    assert str(err.value).startswith("command line: --max-restarts: -1: input should be greater than")


def test_overrides_win_and_command_replaces_module(tmp_path: Path) -> None:
    p = _write(tmp_path, 'name = "a"\nmodule = "m"\nargs = ["1"]\nnproc = 2\n')
    spec = load_spec(p, {"nproc": 3, "command": ["/bin/true"]})
    assert spec.nproc == 3 and spec.module is None and spec.command == ["/bin/true"]
    with pytest.raises(JobSpecError, match=r"\(with command-line flags\): nproc"):
        load_spec(p, {"nproc": 0})


def test_missing_file() -> None:
    with pytest.raises(JobSpecError, match="no such job spec file"):
        load_spec("/nonexistent/job.toml")


@pytest.mark.parametrize(("v", "s"), [(3, 3.0), (2.5, 2.5), ("500ms", 0.5), ("30s", 30.0), ("2m", 120.0),
                                      ("1h", 3600.0), ("0", 0.0)])
def test_durations(v: object, s: float) -> None:
    assert parse_duration(v) == s


@pytest.mark.parametrize("v", ["-1s", "1d", True, -2, "s"])
def test_bad_durations(v: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(v)


# -- hostile numbers: non-finite, huge, out of range --------------------------------------------


DURATION_KEYS = ("heartbeat_timeout", "stop_grace", "restart.backoff", "restart.backoff_max")
NUMBER_KEYS = (*DURATION_KEYS, "straggler_factor", "restart.multiplier", "restart.jitter", "nproc",
               "rdzv_port", "node_rank", "restart.max_restarts")


def _toml_with(key: str, literal: str) -> str:
    head, _, leaf = key.rpartition(".")
    return f"{H}{leaf} = {literal}\n" if not head else f"{H}[{head}]\n{leaf} = {literal}\n"


@given(key=st.sampled_from(NUMBER_KEYS), literal=st.sampled_from(["inf", "-inf", "nan", "+inf", "-nan"]))
def test_non_finite_toml_numbers_are_refused_naming_the_key(tmp_path_factory: pytest.TempPathFactory,
                                                            key: str, literal: str) -> None:
    p = _write(tmp_path_factory.mktemp("spec"), _toml_with(key, literal))
    with pytest.raises(JobSpecError) as err:
        load_spec(p)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{p}: {key}: "), msg


@given(value=st.one_of(st.floats(), st.integers(min_value=-(10**30), max_value=10**30)))
def test_parse_duration_is_finite_and_bounded_or_refuses(value: float) -> None:
    try:
        got = parse_duration(value)
    except ValueError as exc:
        assert value != value or not 0 <= value <= MAX_DURATION_S, (value, exc)  # nan, or out of range
        return
    assert 0 <= value <= MAX_DURATION_S and got == float(value)


@given(digits=st.text("0123456789", min_size=1, max_size=400), unit=st.sampled_from(["", "ms", "s", "m", "h"]))
def test_duration_strings_never_give_more_than_the_maximum(digits: str, unit: str) -> None:
    scale = {"": 1, "ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    try:
        got = parse_duration(digits + unit)
    except ValueError as exc:
        assert int(digits) * scale > MAX_DURATION_S, exc
        return
    assert got <= MAX_DURATION_S and got == pytest.approx(int(digits) * scale)


def test_duration_bound_is_one_year() -> None:
    assert parse_duration("8760h") == MAX_DURATION_S
    with pytest.raises(ValueError, match="over the maximum, 8760h"):
        parse_duration("8761h")
    with pytest.raises(ValueError, match="is not a number"):
        parse_duration(float("nan"))
    with pytest.raises(ValueError, match="over the maximum"):
        parse_duration(float("inf"))
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration("inf")


@given(port=st.integers(min_value=-(2**64), max_value=2**64))
def test_rdzv_port_range(port: int) -> None:
    data = {"name": "a", "command": ["x"], "rdzv_port": port}
    if 1 <= port <= 65535:
        assert spec_from_dict(data, "t").rdzv_port == port
        return
    with pytest.raises(JobSpecError, match=r"^t: rdzv_port: .*; fix: rdzv_port = 29400 .*1\.\.65535"):
        spec_from_dict(data, "t")


@given(n=st.integers(min_value=-(2**70), max_value=2**70))
def test_counts_are_bounded(n: int) -> None:
    for key, lo, hi in (("nproc", 1, 1024), ("max_restarts", 0, 10000)):
        data: dict[str, object] = {"name": "a", "command": ["x"]}
        if key == "max_restarts":
            data["restart"] = {key: n}
        else:
            data[key] = n
        if lo <= n <= hi:
            spec_from_dict(data, "t")
        else:
            with pytest.raises(JobSpecError, match=rf"^t: (restart\.)?{key}: "):
                spec_from_dict(data, "t")


def test_too_many_hosts_and_nul_bytes() -> None:
    hosts = [f"h{i}" for i in range(1025)]
    with pytest.raises(JobSpecError, match=r"^t: hosts: .*at most 1024"):
        spec_from_dict({"name": "a", "command": ["x"], "hosts": hosts}, "t")
    with pytest.raises(JobSpecError, match=r"^t: command: .*NUL"):
        spec_from_dict({"name": "a", "command": ["x\0y"]}, "t")
    with pytest.raises(JobSpecError, match=r"^t: env: A: .*NUL"):
        spec_from_dict({"name": "a", "command": ["x"], "env": {"A": "1\0"}}, "t")
    with pytest.raises(JobSpecError, match=r"^t: env: A: inf is not a finite number"):
        spec_from_dict({"name": "a", "command": ["x"], "env": {"A": float("inf")}}, "t")
