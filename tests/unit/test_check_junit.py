""".ci/check_junit.py: CI fails a tier that executed zero tests (pytest passes a tier whose
tests all skipped), names the tier in one line, and reports every tier's counts."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "check_junit.py"
_spec = importlib.util.spec_from_file_location("check_junit", _SCRIPT)
assert _spec is not None and _spec.loader is not None
check_junit = importlib.util.module_from_spec(_spec)
sys.modules["check_junit"] = check_junit  # dataclasses look the module up by name
_spec.loader.exec_module(check_junit)


def junit(tmp_path: Path, name: str, cases: str) -> str:
    """A junit file as pytest writes it (<testsuites><testsuite>...), with these <testcase>s."""
    p = tmp_path / f"{name}.xml"
    p.write_text('<?xml version="1.0" encoding="utf-8"?><testsuites>'
                 f'<testsuite name="pytest" errors="0" failures="0" skipped="0" tests="0">{cases}'
                 "</testsuite></testsuites>")
    return str(p)


RAN = '<testcase classname="t" name="ran" time="0.1" />'
FAILED = '<testcase classname="t" name="bad"><failure message="assert 0" /></testcase>'


def SKIPPED(reason: str = "needs root") -> str:
    return f'<testcase classname="t" name="s"><skipped type="pytest.skip" message="{reason}" /></testcase>'


def run(tiers: list[tuple[str, str]]) -> tuple[int, list[str]]:
    out = io.StringIO()
    rc = check_junit.check(tiers, out)
    return rc, out.getvalue().splitlines()


def test_a_tier_with_no_tests_fails_naming_it(tmp_path):
    rc, lines = run([("unit", junit(tmp_path, "unit", RAN)), ("bpf", junit(tmp_path, "bpf", ""))])
    assert rc == 1
    fails = [line for line in lines if "FAIL" in line]
    assert len(fails) == 1 and "tier bpf executed zero tests (0 collected)" in fails[0]


def test_a_tier_whose_tests_all_skipped_fails_with_the_reason(tmp_path):
    path = junit(tmp_path, "bpf", SKIPPED("bcc does not import") * 3 + SKIPPED("needs root"))
    rc, lines = run([("bpf", path)])
    assert rc == 1
    assert lines[0].split() == ["bpf:", "0", "executed,", "4", "skipped,", "0", "failed,", "0", "errors",
                                f"({path})"]
    assert lines[-1] == (f"check_junit: FAIL: tier bpf executed zero tests (4 collected; 3 skipped: "
                         f"bcc does not import) in {path}")


def test_tiers_that_ran_something_pass_and_are_all_counted(tmp_path):
    rc, lines = run([("unit", junit(tmp_path, "unit", RAN * 5 + SKIPPED() + FAILED)),
                     ("host", junit(tmp_path, "host", SKIPPED() + RAN))])
    assert rc == 0
    assert [" ".join(line.split()[:9]) for line in lines] == [
        "unit: 6 executed, 1 skipped, 1 failed, 0 errors",  # a failure ran: pytest's exit fails it
        "host: 1 executed, 1 skipped, 0 failed, 0 errors",
    ]


def test_a_missing_or_broken_file_fails_its_tier(tmp_path):
    broken = tmp_path / "vm.xml"
    broken.write_text("<testsuites><testsuite>")  # the VM died while pytest wrote it
    rc, lines = run([("unit", junit(tmp_path, "unit", RAN)), ("jobs", str(tmp_path / "nope.xml")),
                     ("vm", str(broken))])
    assert rc == 1
    fails = [line for line in lines if "FAIL" in line]
    assert len(fails) == 2
    assert fails[0].startswith("check_junit: FAIL: tier jobs: no junit XML at ") and "nope.xml" in fails[0]
    assert fails[1].startswith("check_junit: FAIL: tier vm: ") and "not readable junit XML" in fails[1]


def test_usage_mistakes_exit_2(capsys):
    assert check_junit.main([]) == 2
    assert check_junit.main(["unit"]) == 2
    assert "TIER=PATH" in capsys.readouterr().err


def test_real_pytest_junit_of_an_all_skipped_and_an_all_deselected_run(tmp_path):
    """What pytest itself writes: exit 0 with every test skipped, exit 5 with all deselected;
    both are zero executed for the checker, and a run with one real test is not."""
    tests = tmp_path / "test_some.py"
    tests.write_text("import pytest\n\n"
                     "@pytest.mark.skip(reason='not here')\ndef test_a():\n    pass\n\n"
                     "def test_b():\n    pytest.skip('nor here')\n\n"
                     "def test_c():\n    assert 1 + 1 == 2\n")

    def pytest_run(name: str, *args: str) -> tuple[int, str]:
        xml = tmp_path / f"{name}.xml"
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests),
                            f"--junitxml={xml}", *args], cwd=tmp_path, capture_output=True, text=True)
        return r.returncode, str(xml)

    skipped_rc, skipped = pytest_run("skipped", "-k", "test_a or test_b")
    deselected_rc, deselected = pytest_run("deselected", "-k", "no_such_test")
    ran_rc, ran = pytest_run("ran")
    assert (skipped_rc, deselected_rc, ran_rc) == (0, 5, 0)
    assert check_junit.read_counts(skipped).executed == 0
    assert check_junit.read_counts(deselected).tests == 0
    counts = check_junit.read_counts(ran)
    assert (counts.tests, counts.skipped, counts.executed) == (3, 2, 1)
    rc, lines = run([("a", skipped), ("b", deselected), ("c", ran)])
    assert rc == 1 and [line.split()[3] for line in lines if "FAIL" in line] == ["a", "b"]


def test_the_script_runs_standalone_with_the_system_python(tmp_path):
    """.ci/run calls it with python3 before any venv exists: standard library only."""
    r = subprocess.run(["/usr/bin/python3", "-I", str(_SCRIPT), f"bpf={junit(tmp_path, 'bpf', SKIPPED())}"],
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert r.stdout.splitlines()[-1].startswith("check_junit: FAIL: tier bpf executed zero tests")


@pytest.mark.parametrize("root", ["<testsuite name='x'>{}</testsuite>", "<testsuites><testsuite>{}</testsuite>"
                                  "<testsuite>{}</testsuite></testsuites>"])
def test_either_root_element_and_several_suites(tmp_path, root):
    p = tmp_path / "x.xml"
    p.write_text(root.replace("{}", RAN + SKIPPED()))
    c = check_junit.read_counts(str(p))
    per_suite = root.count("{}")
    assert (c.tests, c.skipped, c.executed) == (2 * per_suite, per_suite, per_suite)
