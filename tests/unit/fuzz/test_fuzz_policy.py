"""Generated policy files, hostile ones most of all, through the commands a user runs.

Every generated file is either
- accepted: `policy check` says ok, and every value `policy diff` / `apply --dry-run` would write is
  one the kernel takes and that harms no one (kernel_ranges.problem, written from the kernel's
  parsers, independent of aios-host's own validation), or
- rejected: by check, diff, explain and apply alike, each with exactly one line on stderr, a
  non-zero exit, no traceback, and nothing under the kernel root changed.
Two generators: documents drawn from `aios-host policy schema` (what an editor would let through;
from_schema.py), and a hand-written one that puts hostile values (nan, inf, sizes past 2^64, '..',
backtracking regexes, NULs, kilobyte strings, wrong types) at random places of plausible policies.
The budget is fixed (max_examples); tests/bench/bench_fuzz.py reports the throughput.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from aios_host.cli import main
from aios_host.policy.schema import json_schema
from tests.unit.fixtures import fake_v2_host
from tests.unit.fuzz.from_schema import strategy as from_schema
from tests.unit.fuzz.kernel_ranges import problem
from tests.unit.fuzz.toml_out import document

CPUS, NODES = 4, 1
EXAMPLES = int(os.environ.get("AIOS_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

HOSTILE_STRINGS = [
    "16384P", "18446744073709551616", "9" * 400, "1e400", "nan", "inf", "-1", "-0", "0", "0.5K", "0%",
    "100.0001%", "1" * 30 + "%", "max", "", " ", "..", "../..", "aios.slice/../../etc", "/", "//",
    "(a+)+$", "(x+x+)+y", "(a|a)*b", "(a)\\1", "(?<=a)b", "[", "\x00", "a\x00b", "x" * 5000,
    "é" * 300, "\u202e", "\n", "system.slice/*", "*", "**/" * 50, "-", "8:0", "99999999999:0",
]
HOSTILE = st.one_of(
    st.sampled_from(HOSTILE_STRINGS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e15, 1e308, -1e-300, 5e-324]),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.sampled_from([0, -1, 1 << 63, (1 << 63) - 1, (1 << 64), (1 << 64) + 1, 10001, 1 << 44]),
    st.booleans(),
    st.text(max_size=40),
    st.lists(st.integers(-5, 5000), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


# Boundary values per kind of key: where the kernel's types end, and the numbers Python lets through.
NUMERIC_EDGES = [float("nan"), float("inf"), float("-inf"), -1, -0.0, 0, 1e15, 1e308, 5e-324, True,
                 (1 << 63) - 1, 1 << 63, (1 << 64) - 1, 1 << 64, (1 << 64) + 1, 1 << 70, 10001, 8193]
EDGE_VALUES: dict[str, list[Any]] = {
    "size": ([*NUMERIC_EDGES, "16384P", "8192P", "8191P", "8191.9999P", str(1 << 64), "1e400",
                             "9" * 400, "0", "1", "4095", "0.5K", "0%", "0.0000001%", "100.0001%", "-1G", "1Q"]),
    "cores": [*NUMERIC_EDGES, 0.001, 8192, 8192.5, "0%", "100.0001%", "1" * 30 + "%", "-1"],
    "int": [*NUMERIC_EDGES, 1023, 1024, 65535, 65536, "1", 1.5],
    "text": [s for s in HOSTILE_STRINGS if not s[:1].isdigit()],
}
EDGES = {kind: st.sampled_from(values) for kind, values in EDGE_VALUES.items()}
KEY_KIND = {"min": "size", "low": "size", "high": "size", "max": "size", "reserve_memory": "size",
            "rbps": "size", "wbps": "size", "reserve_cores": "cores", "weight": "int", "priority": "int",
            "numa": "int", "riops": "int", "wiops": "int", "gpus": "int"}


def hostile_for(path: tuple) -> st.SearchStrategy:
    key = next((k for k in reversed(path) if isinstance(k, str)), "")
    kind = KEY_KIND.get(key, "text")
    if key in ("min", "max") and "cpu" in path:
        kind = "cores"
    return st.one_of(EDGES[kind], EDGES[kind], HOSTILE)


SIZE = st.sampled_from(["512M", "1G", "4G", "100%", "50%", "0.001%", 1 << 30, "1.5GiB", 4096, 0])
CORES = st.sampled_from([0, 0.01, 0.5, 1, 2, 3.5, "25%", "100%", "0.1%"])
CLASS_KEYS: dict[str, dict[str, st.SearchStrategy]] = {
    "": {"weight": st.integers(1, 10000), "priority": st.integers(0, 100)},
    "cpu": {"min": CORES, "max": CORES, "numa": st.just(0), "gpus": st.just([0]), "exclusive": st.just(False)},
    "memory": {"min": SIZE, "low": SIZE, "high": st.one_of(st.just("auto"), SIZE), "max": SIZE},
    "match": {"comm": st.sampled_from(["^python", "x", "^(a|b)+$"]), "exe": st.just("/usr/bin/.*"),
              "cgroup": st.sampled_from(["system.slice/*", "user.slice", ["a", "b/*"]]),
              "unit": st.just("*.service"), "slice": st.just("aios.slice"), "job": st.just("train")},
    "io": {"weight": st.integers(1, 10000),
           "max": st.fixed_dictionaries({"8:0": st.fixed_dictionaries(
               {}, optional={"rbps": SIZE, "riops": st.integers(1, 10**6)})})},
}


@st.composite
def plausible_class(draw: st.DrawFn, i: int) -> dict[str, Any]:
    c: dict[str, Any] = {"name": f"c{i}"}
    for section, keys in CLASS_KEYS.items():
        at_least = 1 if section in ("cpu", "memory") else 0  # where the kernel's ranges matter most
        chosen = draw(st.lists(st.sampled_from(sorted(keys)), unique=True, min_size=at_least, max_size=3))
        values = {k: draw(keys[k]) for k in chosen}
        if section:
            if values:
                c[section] = values
        else:
            c.update(values)
    return c


def _leaves(doc: Any, path: tuple = ()) -> list[tuple]:
    """Every place a value sits (and every table, where an unknown key can be added)."""
    out = [path] if path else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _leaves(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _leaves(v, (*path, i))
    return out


def _get(doc: Any, path: tuple) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _put(doc: Any, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


@st.composite
def hostile_policy(draw: st.DrawFn) -> dict[str, Any]:
    """A plausible policy with 0-2 of its values (mostly one) replaced by hostile ones (or unknown keys added)."""
    # Copies: _put mutates the document, and a value a strategy returns (st.just of a list) is the
    # same object in every example; mutated in place, it changed what later examples drew
    # (hypothesis: FlakyStrategyDefinition, with seed 31).
    doc: dict[str, Any] = {"class": [copy.deepcopy(draw(plausible_class(i)))
                                     for i in range(draw(st.integers(1, 3)))]}
    if draw(st.booleans()):
        doc["host"] = draw(st.fixed_dictionaries({}, optional={
            "reserve_cores": CORES, "reserve_memory": SIZE,
            "managed_root": st.sampled_from(["aios.slice", "a/b.slice"])}))
    for _ in range(draw(st.sampled_from([1, 1, 2, 0]))):
        spots = _leaves(doc)
        values = [p for p in spots if not isinstance(_get(doc, p), dict | list)]
        if values and draw(st.integers(0, 4)) > 0:
            spots = values  # mostly a value: where the kernel's ranges matter
        if not spots or draw(st.integers(0, 9)) == 0:
            doc[draw(st.text(min_size=1, max_size=8))] = copy.deepcopy(draw(HOSTILE))  # an unknown top-level key
            continue
        spot = draw(st.sampled_from(spots))
        _put(doc, spot, copy.deepcopy(draw(hostile_for(spot))))
    return doc


@pytest.fixture(scope="module")
def kernel_root(tmp_path_factory) -> Path:
    return fake_v2_host(tmp_path_factory.mktemp("root"), cpus=CPUS)


def _tree(root: Path) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        h.update(dirpath.encode())
        for f in sorted(filenames):
            p = os.path.join(dirpath, f)
            h.update(f.encode())
            if not os.path.islink(p):
                h.update(Path(p).read_bytes())
    return h.hexdigest()


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse
            rc = exc.code if isinstance(exc.code, int) else 2
    return rc, out.getvalue(), err.getvalue()


def _one_line_refusal(what: str, rc: int, err: str) -> None:
    lines = [x for x in err.splitlines() if x.strip()]
    assert rc != 0, what
    assert "Traceback" not in err, (what, err)
    assert len(lines) == 1, (what, err)
    assert len(lines[0]) < 400, (what, lines[0])


def _check_policy(doc: dict[str, Any], kernel_root: Path, tmp_path: Path) -> None:
    f = tmp_path / "fuzz.toml"
    f.write_text(document(doc), encoding="utf-8")
    root = ["--root", str(kernel_root)]
    before = _tree(kernel_root)
    rc, _, err = _run(["policy", "check", *root, str(f)])
    if currently_in_test_context():
        event("accepted" if rc == 0 else "rejected")
    if rc == 0:
        for cmd in (["policy", "diff", "--json"], ["policy", "apply", "--dry-run", "--json"]):
            rc2, out, err2 = _run([*cmd, "--sample-ms", "0", *root, str(f)])
            assert rc2 == 0 and "Traceback" not in err2, (cmd, err2)
            for w in json.loads(out)["writes"]:
                if w["op"] in ("write", "enable", "mkdir"):
                    bad = problem(w["path"], w["new"] if w["op"] == "write" else "", CPUS, NODES)
                    assert bad is None, (bad, w)
    else:
        _one_line_refusal("check", rc, err)
        for cmd in (["policy", "diff"], ["policy", "explain"], ["policy", "apply"]):
            rc2, _, err2 = _run([*cmd, "--sample-ms", "0", *root, str(f)])
            _one_line_refusal(" ".join(cmd), rc2, err2)
    assert _tree(kernel_root) == before


def test_every_edge_value_in_every_key_is_refused_in_one_line_or_within_kernel_ranges(kernel_root, tmp_path):
    """The fuzzers' edge values, each in each key, systematically (hypothesis samples them; a value
    past the kernel's range in one key among many is exactly what sampling can miss)."""
    tried = 0
    for section, keys in CLASS_KEYS.items():
        for key in keys:
            kind = "cores" if section == "cpu" and key in ("min", "max") else KEY_KIND.get(key, "text")
            for v in EDGE_VALUES[kind]:
                cls: dict[str, Any] = {"name": "c0", "match": {"comm": "x"}}
                if section:
                    cls[section] = {key: v}
                else:
                    cls[key] = v
                _check_policy({"class": [cls]}, kernel_root, tmp_path)
                tried += 1
    for key, kind in (("reserve_cores", "cores"), ("reserve_memory", "size"), ("managed_root", "text")):
        for v in EDGE_VALUES[kind]:
            _check_policy({"host": {key: v}, "class": [{"name": "c0"}]}, kernel_root, tmp_path)
            tried += 1
    assert tried > 500


@FUZZ
@given(doc=hostile_policy())
def test_hostile_policies_are_refused_in_one_line_or_planned_within_kernel_ranges(doc, kernel_root, tmp_path):
    _check_policy(doc, kernel_root, tmp_path)


@FUZZ
@given(doc=from_schema(json_schema()))
def test_schema_generated_policies_are_refused_in_one_line_or_planned_within_kernel_ranges(
        doc, kernel_root, tmp_path):
    _check_policy(doc, kernel_root, tmp_path)
