"""`aios-host job run | ls | status | stop | logs` and `aios-host bench allreduce`.

`job run` stays in the foreground until the job ends and exits with its status (like torchrun and
srun); rank output is shown with a [rankN]: prefix and kept in the rank logs. `--detach` starts the
supervisor in the background and returns once the ranks are up (like systemd-run): that supervisor
is `python -m aios_host.cli.job ...`, this module run on its own with only `job` and `bench`.

Every flag is checked before anything is done, and a bad one is one line naming it: spec flags go
through the spec's validation (so `--nproc four` and `nproc = "four"` get the same message), the
others through `_duration_flag` / `_int_flag`; hence no argparse `type=` on them (argparse would
print its usage block). `job run | stop` need root and say so in one line; `job ls | status | logs`
only read.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aios_host.cli import base as cli_base
from aios_host.errors import AiosError
from aios_host.kernel import systemd
from aios_host.kernel.root import SysRoot
from aios_host.output import print_json
from aios_host.table import render

# spec key -> (flag, type). The flags are the spec's keys: a TOML key `x_y` is `--x-y`.
_FLAG_KEYS = ("name", "nproc", "backend", "cls", "policy", "workdir", "heartbeat_timeout", "straggler_factor",
              "stop_grace", "hosts", "node_rank", "rdzv_port", "master_addr", "cpu_affinity", "launcher",
              "label", "module", "python", "guard_notice", "guard_grace")
_RESTART_KEYS = ("max_restarts", "backoff", "backoff_max", "jitter")


def _echo(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _flag_error(flag: str, value: object, problem: str) -> AiosError:
    err = AiosError(f"{flag} {value!r}: {problem}")
    err.exit_code = 2  # as a bad spec: usage, not a failure of the host
    return err


def _duration_flag(flag: str, value: str | float) -> float:
    """A duration flag ("30", "2.5s", "2m") as seconds: finite, 0..MAX_DURATION_S."""
    from aios_host.supervisor.spec import MAX_DURATION_S, parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise _flag_error(flag, value, f"{exc}; give seconds or 500ms/30s/2m/1h, "
                                       f"at most {MAX_DURATION_S / 3600:g}h") from None


def _int_flag(flag: str, value: str | int | None, lo: int, hi: int) -> int | None:
    if value is None:
        return None
    try:
        n = int(value, 10) if isinstance(value, str) else int(value)
    except ValueError:
        raise _flag_error(flag, value, "not a whole number") from None
    if not lo <= n <= hi:
        raise _flag_error(flag, value, f"outside {lo}..{hi}")
    return n


def _default_name(command: list[str], module: str | None) -> str:
    base = module.rsplit(".", 1)[-1] if module else Path(command[0]).stem if command else "job"
    name = re.sub(r"[^A-Za-z0-9_-]", "-", base).strip("-_") or "job"
    return name[:63]


def _overrides(args: argparse.Namespace, command: list[str]) -> dict[str, Any]:
    over: dict[str, Any] = {}
    for k in _FLAG_KEYS:
        v = getattr(args, k, None)
        if v is not None:
            over["class" if k == "cls" else k] = v
    restart = {k: getattr(args, k) for k in _RESTART_KEYS if getattr(args, k, None) is not None}
    if restart:
        over["restart"] = restart
    if args.env:
        env = {}
        for item in args.env:
            k, sep, v = item.partition("=")
            if not sep:
                raise AiosError(f"--env {item!r}: expected NAME=VALUE")
            env[k] = v
        over["env"] = env
    if command:
        over["command"] = command
    if args.args:
        over["args"] = list(args.args)
    return over


def build_spec(args: argparse.Namespace) -> tuple[Any, str | None]:
    """(JobSpec, spec file) from a spec file and/or flags; raises JobSpecError with one line."""
    from aios_host.supervisor.spec import load_spec, merge, spec_from_dict

    if getattr(args, "spec_json", None):
        return _detached_spec(args.spec_json)
    spec_file = args.spec
    command = list(args.command or [])
    if spec_file is not None and not spec_file.endswith(".toml"):
        command = [spec_file, *command]  # `job run -- train.py ...`: no spec file
        spec_file = None
    if command and command[0] == "-m" and len(command) >= 2:  # `-- -m pkg.mod args`
        args.module, args.args, command = command[1], command[2:], []
    over = _overrides(args, command)
    if spec_file is not None:
        return load_spec(spec_file, over or None), spec_file
    if "name" not in over:
        over["name"] = _default_name(over.get("command", []), over.get("module"))
    return spec_from_dict(merge({}, over), "command line", flags=True), None


def _detached_spec(path: str) -> tuple[Any, str | None]:
    """The spec that this detached supervisor's own `job run --detach` wrote for it (and only for
    it: the file name is unique to that invocation); read once, then removed."""
    from aios_host.supervisor.spec import spec_from_dict

    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise AiosError(f"--spec-json {path}: unreadable ({exc})") from None
    finally:
        with contextlib.suppress(OSError):
            p.unlink()
    if not isinstance(data, dict) or not isinstance(data.get("spec"), dict):
        raise AiosError(f"--spec-json {path}: no spec in it")
    return spec_from_dict(data["spec"], f"--spec-json {path}"), data.get("spec_file")


def cmd_run(args: argparse.Namespace) -> int:
    from aios_host.supervisor.gang import Supervisor

    spec, spec_file = build_spec(args)
    root = SysRoot(args.root)
    if args.detach:
        return _detach(args, spec, spec_file, root)
    # the node rank is in the spec (--node-rank is one of its flags)
    sup = Supervisor(spec, root, spec_file=spec_file, tee=None if args.quiet else sys.stdout, echo=_echo,
                     lock_fd=args.lock_fd)
    return sup.run()


def _detach(args: argparse.Namespace, spec: Any, spec_file: str | None, root: SysRoot) -> int:
    from aios_host.errors import KernelError
    from aios_host.supervisor.gang import Supervisor
    from aios_host.supervisor.state import JobStore, make_dirs

    probe = Supervisor(spec, root)  # resolves the node rank and key
    store = JobStore(root)
    # The lock before anything of the job is written, handed to the supervisor as an inherited
    # fd: of two `job run --detach` of one name the loser stops here with one line, and the
    # winner's supervisor can only ever run the spec that its own invocation wrote.
    lock_fd = store.lock(probe.key)
    spec_json: Path | None = None
    try:
        data = spec.model_dump(by_alias=True)
        data["workdir"] = data.get("workdir") or os.getcwd()
        data["node_rank"] = probe.node_rank
        spec_json = store.write_private(probe.key, {"spec": data, "spec_file": spec_file})
        log_dir = store.log_dir(probe.key)
        make_dirs(log_dir)
        sup_log = log_dir / "supervisor.log"
        before = None
        with contextlib.suppress(AiosError):
            before = store.load(probe.key).started_unix if probe.key in store.keys() else None
        try:
            out = open(sup_log, "ab")  # noqa: SIM115 - closed right after the spawn
        except OSError as exc:
            raise KernelError.from_oserror("open", sup_log, exc) from None
        with out, open(os.devnull, "rb") as devnull:
            child = subprocess.Popen(
                [sys.executable, "-m", "aios_host.cli.job", "--log-level", "info", "job", "run", "--quiet",
                 "--root", args.root, "--spec-json", str(spec_json), "--lock-fd", str(lock_fd)],
                stdin=devnull, stdout=out, stderr=out, start_new_session=True, close_fds=True,
                pass_fds=(lock_fd,),
            )
    except BaseException:
        if spec_json is not None:
            with contextlib.suppress(OSError):
                spec_json.unlink()
        raise
    finally:
        os.close(lock_fd)  # the supervisor holds the lock through its own copy from here on
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        rc = child.poll()
        st = None
        with contextlib.suppress(AiosError):
            if probe.key in store.keys():
                st = store.load(probe.key)
        if st is not None and st.supervisor_pid == child.pid and st.started_unix != before and \
                st.status == "failed":
            # ranks that could not start (or all died at once): the caller learns it from the exit
            # status, not from a "(failed)" on stdout it may not read
            print(f"job {probe.key}: failed as it started ({(st.cause or {}).get('text', 'no cause recorded')}); "
                  f"see {sup_log}",
                  file=sys.stderr)
            return st.exit_code or 1
        if st is not None and st.supervisor_pid == child.pid and st.started_unix != before and \
                st.status != "starting":
            if args.json:
                print_json({"job": probe.key, "supervisor_pid": child.pid, "status": st.status,
                           "master_port": st.master_port, "log": str(sup_log)})
            else:
                print(f"job {probe.key}: supervisor pid {child.pid}, {st.world_size} ranks ({st.status}); "
                      f"aios-host job status {spec.name}")
            return 0
        if rc is not None:
            tail = sup_log.read_text(errors="replace").strip().splitlines()[-5:]
            print("\n".join(tail), file=sys.stderr)
            return rc or 1
        time.sleep(0.05)
    raise AiosError(f"job {probe.key}: the supervisor (pid {child.pid}) did not start the ranks within 120s; "
                    f"see {sup_log}")


def _age(t: float) -> str:
    s = max(0, int(time.time() - t))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _live_dict(store: Any, st: Any) -> dict[str, Any]:
    """A state for --json, with the live status of the job and of each rank."""
    d = st.to_dict()
    d["status"] = store.live_status(st)
    for rd, rs in zip(d["ranks"], st.ranks, strict=True):
        rd["status"] = store.live_rank_status(st, rs)
    return d


def cmd_ls(args: argparse.Namespace) -> int:
    from aios_host.supervisor.state import JobStore

    store = JobStore(SysRoot(args.root))
    states = []
    for k in store.keys():
        try:
            states.append(store.load(k))
        except AiosError as exc:
            _echo(f"aios-host: warning: {exc}")  # one unreadable job must not hide the others
    if args.json:
        print_json({"jobs": [_live_dict(store, s) for s in states]})
        return 0
    if not states:
        print("no jobs")
        return 0
    rows = [(s.key, store.live_status(s), f"{s.nproc}x{s.nnodes}", f"{s.restart}/{s.max_restarts}",
             s.master_port or "-", s.launcher, s.supervisor_pid, _age(s.started_unix),
             "-" if s.exit_code is None else s.exit_code) for s in states]
    print(render(["job", "status", "ranks", "restarts", "port", "launcher", "supervisor", "age", "exit"], rows))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from aios_host.supervisor.state import JobStore

    store = JobStore(SysRoot(args.root))
    states = store.find(args.name)
    if args.json:
        print_json({"instances": [_live_dict(store, s) for s in states]})
        return 0
    for s in states:
        print(f"job {s.key}: {store.live_status(s)}, {s.world_size} ranks ({s.nproc} on node {s.node_rank} of "
              f"{s.nnodes}), {s.backend}, class {s.cls}, launcher {s.launcher}, restart {s.restart}/"
              f"{s.max_restarts}, MASTER {s.master_addr}:{s.master_port}, supervisor pid {s.supervisor_pid}")
        if s.cgroup:
            print(f"  cgroup: {s.cgroup_mount}/{s.cgroup}")
        print(f"  logs: {s.log_dir if s.launcher == 'cgroup' else 'journalctl JOB=' + s.key}")
        print(f"  command: {' '.join(s.command)}")
        rows = [(r.rank, r.local_rank, r.pid or "-", r.unit or r.cgroup or "-", store.live_rank_status(s, r),
                 r.exit or "-",
                 "-" if r.last_step is None else r.last_step,
                 "-" if r.step_s is None else f"{r.step_s * 1e3:.1f}",
                 ",".join(map(str, r.cpus)) or "all", "-" if r.gpu is None else r.gpu) for r in s.ranks]
        print(render(["rank", "local", "pid", "unit/cgroup", "state", "exit", "step", "step_ms", "cpus", "gpu"],
                     rows))
        if s.cause:
            print(f"  last gang ended: {s.cause.get('text')}")
        for ev in s.hangs:
            who = f"rank {ev['rank']}" if ev.get("rank") is not None else "ranks " + ",".join(
                map(str, ev.get("silent_ranks", [])))
            print(f"  hang: {who} silent {ev['silent_s']}s at step {ev['last_step']} "
                  f"(restart {ev['restart']}, stacks: {ev.get('stacks')})")
        for ev in s.stragglers:
            print(f"  straggler: rank {ev['rank']} {ev['step_s'] * 1e3:.1f} ms/step = {ev['factor']}x "
                  f"the others (restart {ev['restart']})")
    return 0


def _kill_dead_instance(root: SysRoot, st: Any) -> None:
    """The supervisor died: end its ranks ourselves (cgroup.kill, or stop the units)."""
    from aios_host.kernel.cgroup import CgroupFs
    from aios_host.supervisor.launch import wait_unpopulated

    if st.launcher == "cgroup" and st.cgroup:
        fs = CgroupFs(root, st.cgroup_mount)
        if fs.exists(st.cgroup):
            cg = fs.cgroup(st.cgroup)
            cg.kill()
            wait_unpopulated([cg], 10.0)
            for child in cg.children():
                with contextlib.suppress(AiosError):
                    fs.remove(child.rel)
            with contextlib.suppress(AiosError):
                fs.remove(cg.rel)
    else:
        units = [r.unit for r in st.ranks if r.unit]
        systemd.stop_and_reset(units)


def _wait_s(st: Any, timeout_s: float) -> float:
    """How long `job stop` waits: the job's stop_grace (as its state file says; bounded, whatever
    the file holds) plus --timeout."""
    from aios_host.supervisor.spec import MAX_DURATION_S

    grace = st.stop_grace
    if not isinstance(grace, int | float) or not math.isfinite(grace):
        grace = MAX_DURATION_S
    return min(max(float(grace), 0.0), MAX_DURATION_S) + timeout_s


def _stop_live(store: Any, st: Any, timeout_s: float) -> None:
    """SIGTERM to the process that holds the job's lock, until the lock is free. The holder, not
    the state file's pid: that pid may be a dead supervisor's, since reused; and a supervisor that
    takes over the lock (a detached one from its `job run`) is signalled too."""
    signalled: set[int] = set()
    deadline = time.monotonic() + _wait_s(st, timeout_s)
    while store.is_locked(st.key) and time.monotonic() < deadline:
        pid = store.holder_pid(st.key)
        if pid is not None and pid not in signalled:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            except PermissionError:
                raise AiosError(f"job {st.key}: cannot signal supervisor pid {pid} (permission denied); "
                                "aios-host job stop needs root") from None
            signalled.add(pid)
        time.sleep(0.05)
    if store.is_locked(st.key):
        who = f"supervisor pid {', '.join(map(str, sorted(signalled)))}" if signalled else "its supervisor"
        raise AiosError(f"job {st.key}: {who} did not stop within {timeout_s:g}s after the "
                        f"{_wait_s(st, 0):g}s grace")


def cmd_stop(args: argparse.Namespace) -> int:
    from aios_host.supervisor.state import JobStore

    timeout_s = _duration_flag("--timeout", args.timeout)
    root = SysRoot(args.root)
    store = JobStore(root)
    states = store.find(args.name)
    if any(st.active for st in states):
        store.require_writable("stop")  # one line before anything is done, not a traceback halfway
    results = []
    for st in states:
        if not st.active:
            results.append((st.key, st.status, st.exit_code))
            continue
        if not store.is_locked(st.key):
            _kill_dead_instance(root, st)
            run_dir = store.run_dir(st.key)  # the dead supervisor's health socket
            with contextlib.suppress(OSError):
                (run_dir / "health.sock").unlink()
            with contextlib.suppress(OSError):
                run_dir.rmdir()
            st.status = "stopped"
            store.save(st)
            results.append((st.key, "stopped (supervisor was dead)", None))
            continue
        _stop_live(store, st, timeout_s)
        st = store.load(st.key)
        results.append((st.key, st.status, st.exit_code))
    if args.json:
        print_json({"stopped": [{"job": k, "status": s, "exit_code": c} for k, s, c in results]})
    else:
        for k, s, c in results:
            print(f"job {k}: {s}" + (f" (exit {c})" if c is not None else ""))
    return 0


_HEADER = re.compile(rb"^--- aios-host: job \S+ rank (\d+) restart (\d+) ")


def _filter_restart(data: bytes, restart: int | None, state: dict[str, int]) -> bytes:
    if restart is None:
        return data
    out = []
    for line in data.splitlines(keepends=True):
        m = _HEADER.match(line)
        if m:
            state["restart"] = int(m.group(2))
        if state.get("restart", 0) == restart:
            out.append(line)
    return b"".join(out)


def cmd_logs(args: argparse.Namespace) -> int:
    from aios_host.supervisor.state import JobStore

    want_rank = _int_flag("--rank", args.rank, 0, 2**31 - 1)
    restart = _int_flag("--restart", args.restart, 0, 2**31 - 1)
    root = SysRoot(args.root)
    store = JobStore(root)
    states = store.find(args.name)
    if any(s.launcher == "systemd" for s in states):
        matches = [f"JOB={s.key}" for s in states if s.launcher == "systemd"]
        if want_rank is not None:
            matches.append(f"RANK={want_rank}")
        if restart is not None:
            matches.append(f"RESTART={restart}")
        return systemd.journal(matches, output="cat" if want_rank is not None else "short-iso",
                               follow=args.follow)
    files: list[tuple[int, Path]] = []
    for s in states:
        for r in s.ranks:
            if want_rank is None or r.rank == want_rank:
                files.append((r.rank, store.rank_log(s.key, r.rank)))
    if not files:
        raise AiosError(f"job {args.name} has no rank {want_rank}")
    prefix = want_rank is None and len(files) > 1
    offsets = {rank: 0 for rank, _ in files}
    fstate: dict[int, dict[str, int]] = {rank: {} for rank, _ in files}
    partial: dict[int, bytes] = {rank: b"" for rank, _ in files}
    out = sys.stdout.buffer

    def pump() -> bool:
        got = False
        for rank, path in files:
            try:
                with open(path, "rb") as f:
                    f.seek(offsets[rank])
                    data = f.read()
            except FileNotFoundError:
                continue
            except PermissionError:
                raise AiosError(f"{path}: cannot read (permission denied); rank logs may need root") from None
            if not data:
                continue
            got = True
            offsets[rank] += len(data)
            data = _filter_restart(partial[rank] + data, restart, fstate[rank]) if restart is not None \
                else partial[rank] + data
            *lines, rest = data.split(b"\n")
            partial[rank] = rest
            for line in lines:
                out.write((f"[rank{rank}]: ".encode() if prefix else b"") + line + b"\n")
        out.flush()
        return got

    pump()
    if args.follow:
        try:
            while True:
                if not pump():
                    if not any(store.is_locked(s.key) for s in states):
                        break
                    time.sleep(0.2)
        except KeyboardInterrupt:
            pass
    for rank, rest in partial.items():
        if rest:
            out.write((f"[rank{rank}]: ".encode() if prefix else b"") + rest + b"\n")
    out.flush()
    return 0


def cmd_bench_allreduce(args: argparse.Namespace) -> int:
    import tempfile

    from aios_host.supervisor.gang import Supervisor
    from aios_host.supervisor.spec import spec_from_dict
    from aios_host.workloads.allreduce import algorithms, render
    from aios_host.workloads.sizes import parse_sizes

    factor = _int_flag("--factor", args.factor, 2, 1024)
    warmup = _int_flag("--warmup", args.warmup, 0, 1_000_000)
    iters = _int_flag("--iters", args.iters, 1, 1_000_000)
    try:
        parse_sizes(args.sizes, factor or 2)
    except ValueError as exc:
        raise AiosError(f"--sizes: {exc}") from None
    nproc = _int_flag("--nproc", args.nproc, 1, 1024)
    try:
        algorithms(args.algos, args.servers, nproc)  # a K the job cannot have: one line, nothing started
    except ValueError as exc:
        raise AiosError(str(exc)) from None
    fd, tmp = tempfile.mkstemp(prefix="aios-allreduce-", suffix=".json")
    os.close(fd)
    out = args.out or tmp
    wl = ["--quiet", "--sizes", args.sizes, "--factor", str(factor), "--warmup", str(warmup),
          "--iters", str(iters), "--algos", args.algos, "--servers", args.servers, "--min-iters", str(iters),
          "--out", out]
    data: dict[str, Any] = {"name": args.name or f"bench-allreduce-{os.getpid()}", "nproc": args.nproc,
                            "module": "aios_host.workloads.allreduce", "args": wl, "backend": args.backend,
                            "class": args.cls or "training", "launcher": args.launcher}
    try:
        spec = spec_from_dict(data, "bench allreduce", flags=True)
        rc = Supervisor(spec, SysRoot(args.root), echo=None if args.json else _echo, tee=_ErrorsOnly()).run()
        try:
            res = json.loads(Path(out).read_text())
        except (OSError, ValueError):
            return rc or 1
        if args.plot:
            from aios_host.workloads.crossover import plot

            plot(res, args.plot)
        if args.json:
            print_json(res)
        else:
            print(render(res))
            if args.plot:
                print(f"# plot: {args.plot}")
        return rc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


class _ErrorsOnly:
    """Rank output of the benchmark: the table comes from rank 0's result file; only errors from
    the ranks are shown."""

    def write(self, text: str) -> int:
        if "Error" in text or "Traceback" in text or "error" in text:
            sys.stderr.write(text)
        return len(text)

    def flush(self) -> None:
        sys.stderr.flush()


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    j = sub.add_parser("job", help="run and manage distributed jobs (torch.distributed ranks)")
    jsub = j.add_subparsers(dest="job_command", required=True, metavar="ACTION")

    r = jsub.add_parser(
        "run", parents=[common],
        help="run a job in the foreground (exit with its status) or --detach",
        description="aios-host job run SPEC.toml | [--name N --nproc K ...] -- CMD... "
                    "(a .py CMD runs with python; `-- -m pkg.mod ARGS` runs a module)",
    )
    r.add_argument("spec", nargs="?", metavar="SPEC", help="job spec (TOML); flags override its keys")
    r.add_argument("command", nargs="*", metavar="CMD", help="after --: the rank command")
    r.add_argument("--name", help="job name (default: from the command)")
    r.add_argument("--nproc", help="ranks per host (default 1)")
    r.add_argument("--backend", choices=["gloo", "nccl", "auto"])
    r.add_argument("--class", dest="cls", metavar="CLASS", help="policy class (default training)")
    r.add_argument("--policy", help="policy file with the class's limits (default: the applied one)")
    r.add_argument("--max-restarts", dest="max_restarts", help="gang restarts (default 0)")
    r.add_argument("--backoff", help="first restart delay, e.g. 1s (doubles, up to --backoff-max)")
    r.add_argument("--backoff-max", dest="backoff_max")
    r.add_argument("--jitter")
    r.add_argument("--env", action="append", metavar="NAME=VALUE", help="rank environment (repeatable)")
    r.add_argument("--workdir")
    r.add_argument("--heartbeat-timeout", dest="heartbeat_timeout", help="hang after this silence, e.g. 60s")
    r.add_argument("--straggler-factor", dest="straggler_factor")
    r.add_argument("--stop-grace", dest="stop_grace")
    r.add_argument("--hosts", help="comma-separated hosts, node 0 first")
    r.add_argument("--node-rank", dest="node_rank")
    r.add_argument("--rdzv-port", dest="rdzv_port")
    r.add_argument("--master-addr", dest="master_addr")
    r.add_argument("--cpu-affinity", dest="cpu_affinity", choices=["numa", "cores", "none"])
    r.add_argument("--launcher", choices=["auto", "systemd", "cgroup"])
    r.add_argument("--label", help="what a policy class's match.job names (the supervisor records it; "
                                   "the ranks get it as AIOS_JOB=)")
    r.add_argument("--guard-notice", dest="guard_notice", metavar="SIGNAL",
                   help="SIGUSR1|SIGUSR2|SIGTERM|SIGINT: the memory guard signals the ranks before a kill")
    r.add_argument("--guard-grace", dest="guard_grace", metavar="S",
                   help="seconds the memory guard waits after its notice (default 10)")
    r.add_argument("-m", "--module", help="run a Python module (python -m MODULE ARGS)")
    r.add_argument("--python", help="interpreter for .py commands and modules")
    r.add_argument("--detach", action="store_true", help="return at once; the supervisor runs on")
    r.add_argument("--quiet", action="store_true", help="do not show rank output (it is still logged)")
    r.add_argument("--spec-json", dest="spec_json", help=argparse.SUPPRESS)
    r.add_argument("--lock-fd", dest="lock_fd", type=int, help=argparse.SUPPRESS)  # from --detach
    r.set_defaults(func=cmd_run, args=None)

    ls = jsub.add_parser("ls", parents=[common], help="jobs on this host")
    ls.set_defaults(func=cmd_ls)
    st = jsub.add_parser("status", parents=[common], help="a job's ranks, restarts, causes, stragglers")
    st.add_argument("name")
    st.set_defaults(func=cmd_status)
    sp = jsub.add_parser("stop", parents=[common], help="SIGTERM, the spec's stop_grace, then cgroup.kill")
    sp.add_argument("name")
    sp.add_argument("--timeout", default="120", help="give up this long after the grace (default 120s)")
    sp.set_defaults(func=cmd_stop)
    lg = jsub.add_parser("logs", parents=[common], help="rank logs (files, or journald under systemd)")
    lg.add_argument("name")
    lg.add_argument("--rank")
    lg.add_argument("--restart", help="only this restart's output")
    lg.add_argument("-f", "--follow", action="store_true")
    lg.set_defaults(func=cmd_logs)

    b = sub.add_parser("bench", help="benchmarks")
    bsub = b.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    ar = bsub.add_parser("allreduce", parents=[common],
                         help="AllReduce: torch vs ring vs parameter server, bytes counted, models fitted")
    ar.add_argument("--nproc", default=2)
    ar.add_argument("--sizes", default="4K:256M", help="min:max (x --factor) or a,b,c")
    ar.add_argument("--factor", default=2)
    ar.add_argument("--warmup", default=5)
    ar.add_argument("--iters", default=20)
    ar.add_argument("--algos", default="torch,ring,ps")
    ar.add_argument("--servers", default="1",
                    help="parameter-server ranks K for ps, comma separated, 1 <= K < nproc (default 1)")
    ar.add_argument("--plot", default=None, metavar="FILE",
                    help="draw measurements, fitted models and the predicted crossover (PNG, matplotlib)")
    ar.add_argument("--backend", default="auto", choices=["gloo", "nccl", "auto"])
    ar.add_argument("--class", dest="cls", default=None)
    ar.add_argument("--launcher", default="auto", choices=["auto", "systemd", "cgroup"])
    ar.add_argument("--name", default=None)
    ar.add_argument("--out", default=None, help="also write rank 0's JSON result here")
    ar.set_defaults(func=cmd_bench_allreduce)


def build_parser() -> argparse.ArgumentParser:
    """A parser with only `job` and `bench`, the same flags as in aios-host's: lets the detached
    supervisor (and tests) run without the rest of the CLI."""
    return cli_base.build_parser(add_parsers)


def main(argv: list[str] | None = None) -> int:
    return cli_base.run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
