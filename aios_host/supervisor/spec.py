"""Job specs: a TOML file or the same keys as `aios-host job run` flags -> JobSpec (pydantic v2).

    name = "allreduce"                 # job name: state, cgroup and unit names derive from it
    module = "aios_host.workloads.allreduce"   # or: command = ["train.py", "--epochs", "2"]
    args = ["--sizes", "4K:1M"]
    nproc = 4                          # ranks per host
    backend = "gloo"                   # gloo | nccl | auto
    class = "training"                 # policy class: cgroup <managed_root>/<class>, its limits
    heartbeat_timeout = "60s"          # no health.step() for this long = hang (0 = off)
    hosts = ["10.0.0.1", "10.0.0.2"]   # more than one host: an agent on each, node 0 is the master
    [restart]
    max_restarts = 3                   # 0 = fail on the first failure (torchrun's default)
    backoff = "1s"                     # first delay; doubles per restart, up to backoff_max, +-jitter
    [env]
    NCCL_DEBUG = "WARN"

Every problem is ONE line naming the file, the key and the fix, and nothing is started:

    job.toml: nproc: 'four' is not a whole number; fix: nproc = 4 (ranks per host)

Numbers are finite (TOML's inf and nan are refused) and within a range: nproc 1..1024, hosts at
most 1024, ports 1..65535, max_restarts 0..10000, and every duration 0..MAX_DURATION_S (one year:
a deadline the supervisor polls towards, time.sleep and systemd's TimeoutStopSec= all take it).
"""

from __future__ import annotations

import difflib
import math
import re
import shlex
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from aios_host.errors import AiosError
from aios_host.tomlfile import loc_str, read_toml


class JobSpecError(AiosError):
    """A job spec that cannot be run; the message is one line: source, key, problem, fix."""

    exit_code = 2


JOB_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
CLASS_NAME_RE = r"^[a-z0-9][a-z0-9_-]{0,62}$"  # policy/schema.py NAME_RE: class cgroup names
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# What the supervisor sets for every rank; a spec that sets them would break the rendezvous.
RESERVED_ENV = frozenset({
    "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK",
    "MASTER_ADDR", "MASTER_PORT", "AIOS_JOB", "AIOS_JOB_NAME", "AIOS_RESTART",
    "AIOS_HEALTH_SOCKET", "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS",
})

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", re.ASCII)
_DURATION_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
MAX_DURATION_S = 365 * 86400.0  # one year
MAX_HOSTS = 1024


def parse_duration(value: object, max_s: float = MAX_DURATION_S) -> float:
    """Seconds from 30, 2.5, "500ms", "30s", "2m", "1h"; finite, 0..max_s."""
    secs: float
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        secs = value
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        secs = float(m.group(1)) * _DURATION_SCALE[m.group(2)]  # a 400-digit string: inf
    else:
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(secs, float) and math.isnan(secs):
        raise ValueError(f"{value!r} is not a number of seconds")
    if secs < 0:
        raise ValueError(f"{value!r} is negative")
    if secs > max_s:  # ints compare exactly: float() of a huge TOML integer would overflow
        raise ValueError(f"{value!r} is over the maximum, {max_s / 3600:g}h")
    return float(secs)


Duration = Annotated[float, BeforeValidator(parse_duration)]

# key -> how to write it right; appended to every error about that key.
FIXES: dict[str, str] = {
    "name": 'name = "train-resnet" (letters, digits, - and _; at most 63)',
    "command": 'command = ["train.py", "--epochs", "2"] (a .py file runs with python)',
    "module": 'module = "pkg.train" (run as python -m pkg.train)',
    "args": 'args = ["--lr", "0.1"]',
    "python": 'python = "/usr/bin/python3" (the interpreter for .py commands and modules)',
    "nproc": "nproc = 4 (ranks per host, 1..1024)",
    "backend": 'backend = "gloo" | "nccl" | "auto"',
    "class": 'class = "training" (a policy class name)',
    "policy": 'policy = "/etc/aios-host/policy.toml" (where class limits come from)',
    "restart": "[restart] max_restarts = 3, backoff = \"1s\", backoff_max = \"60s\", jitter = 0.2",
    "restart.max_restarts": "max_restarts = 3 (0 = no restart, as torchrun; at most 10000)",
    "restart.backoff": 'backoff = "1s" (first delay; 0 = restart at once; at most 8760h)',
    "restart.backoff_max": 'backoff_max = "60s" (at most 8760h)',
    "restart.multiplier": "multiplier = 2 (>= 1)",
    "restart.jitter": "jitter = 0.2 (0..1: delay varies by +-20%)",
    "env": '[env] NAME = "value"',
    "workdir": 'workdir = "/srv/train" (an existing directory)',
    "heartbeat_timeout": 'heartbeat_timeout = "60s" (0 = no hang detection; at most 8760h)',
    "straggler_factor": "straggler_factor = 2.0 (> 1: step time over 2x the others' median)",
    "stop_grace": 'stop_grace = "10s" (SIGTERM, then cgroup.kill after this; at most 8760h)',
    "hosts": 'hosts = ["10.0.0.1", "10.0.0.2"] (node 0 first, at most 1024; empty = this host only)',
    "rdzv_port": "rdzv_port = 29400 (the agents' TCPStore on hosts[0]; 1..65535)",
    "node_rank": "node_rank = 1 (this host's index in hosts; default: found from local addresses)",
    "cpu_affinity": 'cpu_affinity = "numa" | "cores" | "none"',
    "launcher": 'launcher = "auto" | "systemd" | "cgroup"',
    "label": 'label = "train" (what a policy class match.job names, from the supervisor\'s record; '
             'AIOS_JOB= of every rank)',
    "master_addr": 'master_addr = "10.0.0.1" (default: hosts[0], or 127.0.0.1 on one host)',
    "guard_notice": 'guard_notice = "SIGUSR1" (the memory guard signals the ranks before it kills their class)',
    "guard_grace": 'guard_grace = "10s" (how long the memory guard waits after its notice; at most 8760h)',
}


class _Strict(BaseModel):
    # allow_inf_nan=False: TOML has inf and nan, and `--jitter nan` parses too; a non-finite
    # number slips past every ge/le bound and crashes the supervisor later (poll(inf)).
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, allow_inf_nan=False)


class RestartSpec(_Strict):
    max_restarts: int = Field(default=0, ge=0, le=10000, description="gang restarts before giving up")
    backoff: Duration = Field(default=1.0, description="delay before the first restart")
    backoff_max: Duration = Field(default=60.0, description="longest delay")
    multiplier: float = Field(default=2.0, ge=1.0, le=100.0, description="delay growth per restart")
    jitter: float = Field(default=0.2, ge=0.0, le=1.0, description="relative random spread of a delay")


class JobSpec(_Strict):
    name: str = Field(pattern=JOB_NAME_RE)
    command: list[str] = Field(default_factory=list, description="argv; a .py first word runs with python")
    module: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")
    args: list[str] = Field(default_factory=list, description="arguments after module")
    python: str | None = Field(default=None, description="interpreter (default: aios-host's own)")
    nproc: int = Field(default=1, ge=1, le=1024, description="ranks per host")
    backend: Literal["gloo", "nccl", "auto"] = "auto"
    cls: str = Field(default="training", alias="class", pattern=CLASS_NAME_RE)
    policy: str | None = Field(default=None, description="policy file with the class's limits")
    restart: RestartSpec = Field(default_factory=RestartSpec)
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    heartbeat_timeout: Duration = Field(default=0.0, description="0 = off")
    straggler_factor: float = Field(default=2.0, gt=1.0, le=1000.0)
    stop_grace: Duration = Field(default=10.0)
    hosts: list[str] = Field(default_factory=list, max_length=MAX_HOSTS)
    rdzv_port: int = Field(default=29400, ge=1, le=65535)
    node_rank: int | None = Field(default=None, ge=0, lt=MAX_HOSTS)
    master_addr: str | None = None
    cpu_affinity: Literal["numa", "cores", "none"] = "numa"
    launcher: Literal["auto", "systemd", "cgroup"] = "auto"
    label: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    # The memory guard's pre-kill notice: before it kills the class this job's ranks are in, the
    # daemon thaws it, sends this signal to every rank and waits guard_grace (to checkpoint).
    guard_notice: Literal["SIGUSR1", "SIGUSR2", "SIGTERM", "SIGINT"] | None = None
    guard_grace: Duration = Field(default=10.0, description="the memory guard's wait after its notice")

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, v: object) -> object:
        if isinstance(v, str):
            try:
                return shlex.split(v)
            except ValueError as exc:
                raise ValueError(f"{v!r}: {exc}") from None
        return v

    @field_validator("command", "args", "python", "workdir", "policy", "master_addr")
    @classmethod
    def _no_nul(cls, v: object) -> object:
        # exec and open take C strings: a NUL would end in a ValueError deep in posix_spawn
        for item in v if isinstance(v, list) else [v]:
            if isinstance(item, str) and "\0" in item:
                raise ValueError(f"{item!r} contains a NUL character")
        return v

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, v: object) -> object:
        if not isinstance(v, dict):
            return v
        out: dict[str, str] = {}
        for key, val in v.items():
            if not isinstance(key, str) or not ENV_NAME_RE.match(key):
                raise ValueError(f"{key!r} is not an environment variable name")
            if key in RESERVED_ENV:
                raise ValueError(f"{key} is set by aios-host for every rank; remove it")
            if isinstance(val, bool):
                val = "1" if val else "0"
            if not isinstance(val, str | int | float):
                raise ValueError(f"{key}: {val!r} is not a string or number")
            if isinstance(val, float) and not math.isfinite(val):
                raise ValueError(f"{key}: {val!r} is not a finite number")
            if "\0" in str(val):
                raise ValueError(f"{key}: {val!r} contains a NUL character")
            out[key] = str(val)
        return out

    @field_validator("hosts", mode="before")
    @classmethod
    def _hosts(cls, v: object) -> object:
        if isinstance(v, str):
            v = [h for h in re.split(r"[,\s]+", v) if h]
        if isinstance(v, list):
            if len(set(map(str, v))) != len(v):
                raise ValueError("a host is listed twice")
            for h in v:
                if not isinstance(h, str) or not re.match(r"^[A-Za-z0-9.:_-]+$", h):
                    raise ValueError(f"{h!r} is not a host name or address")
        return v

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).is_dir():
            raise ValueError(f"{v!r} is not an existing directory")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        if not self.command and not self.module:
            raise ValueError("nothing to run: give command = [...] or module = \"...\"")
        if self.command and self.module:
            raise ValueError("both command and module are given; keep one")
        if self.args and not self.module:
            raise ValueError("args goes with module; put arguments in command instead")
        if self.node_rank is not None and self.node_rank >= max(1, len(self.hosts)):
            raise ValueError(f"node_rank {self.node_rank} is not an index of hosts ({len(self.hosts)} given)")
        if self.restart.backoff_max < self.restart.backoff:
            raise ValueError(f"restart.backoff_max {self.restart.backoff_max:g}s is below backoff "
                             f"{self.restart.backoff:g}s")
        return self

    # -- derived -------------------------------------------------------------------------------

    @property
    def nnodes(self) -> int:
        return max(1, len(self.hosts))

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc

    def instance_key(self, node_rank: int) -> str:
        """Name of this host's part of the job: state file, cgroup, units, log directory."""
        return self.name if self.nnodes == 1 else f"{self.name}.node{node_rank}"

    def argv(self, default_python: str) -> list[str]:
        py = self.python or default_python
        if self.module:
            return [py, "-u", "-m", self.module, *self.args]
        if self.command[0].endswith(".py"):
            return [py, "-u", *self.command]
        return list(self.command)


# -- errors as one line ----------------------------------------------------------------------


def _loc(loc: tuple[int | str, ...]) -> str:
    return loc_str(tuple("class" if part == "cls" else part for part in loc))


def _fields_of(model: type[BaseModel]) -> list[str]:
    return [(f.alias or n) for n, f in model.model_fields.items()]


def _fix(key: str) -> str:
    base = re.sub(r"\[\d+\]", "", key)
    hint = FIXES.get(base) or FIXES.get(base.split(".")[0])
    return f"; fix: {hint}" if hint else ""


def _flag(key: str) -> str:
    head = key.split(".")[-1] if key.startswith("restart.") else key.split(".")[0].split("[")[0]
    return "--" + re.sub(r"\[\d+\]", "", head).replace("_", "-")


def describe_error(exc: ValidationError, source: str, flags: bool = False) -> str:
    """The first pydantic error as `source: key: problem; fix: example` (+ how many more)."""
    errors = exc.errors()
    err = errors[0]
    loc = tuple(err["loc"])
    kind = err["type"]
    key = _loc(loc)
    if kind == "extra_forbidden":
        bad = str(loc[-1])
        model: type[BaseModel] = RestartSpec if loc[:1] == ("restart",) else JobSpec
        hint = difflib.get_close_matches(bad, _fields_of(model), n=1, cutoff=0.6)
        parent = _loc(loc[:-1])
        where = f"{source}: {parent}" if parent else f"{source}"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        fix = f"; did you mean {hint[0]!r}?" if hint else "; remove it"
        return f"{where}: unknown key {bad!r}{fix}{more}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if kind == "missing":
        msg = "required"
    elif kind not in ("value_error", "assertion_error"):
        given = repr(err.get("input"))
        given = given if len(given) <= 60 else given[:57] + "..."  # a 1025-host list, a huge number
        msg = f"{given}: {msg[0].lower()}{msg[1:]}"
    if not key:  # model-level checks name the key in the message
        m = re.match(r"^(?:nothing to run|both command)", msg)
        key = "command" if m else ""
    shown = _flag(key) if flags and key else key
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    head = f"{source}: {shown}: " if shown else f"{source}: "
    return f"{head}{msg}{_fix(key) if key else ''}{more}"


def spec_from_dict(data: dict[str, Any], source: str, flags: bool = False) -> JobSpec:
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise JobSpecError(describe_error(exc, source, flags)) from None


def read_spec_file(path: str | Path) -> dict[str, Any]:
    return read_toml(Path(path), JobSpecError, "job spec file")


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> JobSpec:
    """A spec file, with command-line values on top; relative paths are taken from the file."""
    p = Path(path)
    data = read_spec_file(p)
    base = p.resolve().parent
    for key in ("workdir", "policy"):
        if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
            data[key] = str(base / data[key])
    if isinstance(data.get("command"), list) and data["command"] and isinstance(data["command"][0], str):
        first = data["command"][0]
        if first.endswith(".py") and not Path(first).is_absolute() and (base / first).exists():
            data["command"] = [str(base / first), *data["command"][1:]]
    if overrides:
        data = merge(data, overrides)
        return spec_from_dict(data, f"{p} (with command-line flags)")
    return spec_from_dict(data, str(p))


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    if "command" in over:
        out.pop("module", None)
        out.pop("args", None) if "args" not in over else None
    if "module" in over:
        out.pop("command", None)
    return out
