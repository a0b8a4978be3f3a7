"""`job run` with a bad spec: one line, exit 2, nothing started (no state, no cgroup)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aios_host.cli.job import build_parser, build_spec, main


def test_bad_spec_one_line_nothing_started(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "job.toml"
    spec.write_text('name = "a"\ncommand = ["x"]\nnprocs = 4\n')
    assert main(["job", "run", str(spec), "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"aios-host: error: {spec}: unknown key 'nprocs'; did you mean 'nproc'?"
    assert not (tmp_path / "run").exists() and not (tmp_path / "sys").exists()


def test_bad_flags_name_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["job", "run", "--root", str(tmp_path), "--nproc", "0", "--", "train.py"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aios-host: error: command line: --nproc: 0: input should be greater than or equal to 1")
    assert "fix: nproc = 4" in err
    assert main(["job", "run", "--root", str(tmp_path), "--env", "NOEQ", "--", "x"]) == 1
    assert "--env 'NOEQ': expected NAME=VALUE" in capsys.readouterr().err


def test_spec_from_flags() -> None:
    args = build_parser().parse_args(["job", "run", "--nproc", "4", "--max-restarts", "2", "--env", "A=1",
                                      "--", "train.py", "--lr", "0.1"])
    spec, path = build_spec(args)
    assert path is None and spec.name == "train" and spec.nproc == 4 and spec.restart.max_restarts == 2
    assert spec.command == ["train.py", "--lr", "0.1"] and spec.env == {"A": "1"}
    args = build_parser().parse_args(["job", "run", "--name", "m", "--", "-m", "pkg.mod", "--x"])
    spec, _ = build_spec(args)
    assert spec.module == "pkg.mod" and spec.args == ["--x"]


def test_spec_file_with_flag_overrides(tmp_path: Path) -> None:
    spec_file = tmp_path / "job.toml"
    spec_file.write_text('name = "a"\nmodule = "m"\nnproc = 2\n[restart]\nmax_restarts = 1\n')
    args = build_parser().parse_args(["job", "run", str(spec_file), "--nproc", "3", "--backoff", "2s"])
    spec, path = build_spec(args)
    assert path == str(spec_file) and spec.nproc == 3 and spec.restart.backoff == 2.0
    assert spec.restart.max_restarts == 1


def test_status_of_unknown_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["job", "status", "nope", "--root", str(tmp_path)]) == 1
    assert "no job 'nope' on this host" in capsys.readouterr().err
    assert main(["job", "ls", "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "no jobs"
