"""Policy files (TOML) -> Policy, validated with pydantic v2.

A policy names classes of workloads, how to find them (match) and what each may have (weight,
priority tier, cpu/memory/io guarantees and limits). Every problem is reported as ONE line:

    policies/x.toml: class[2].memory.high: '12Q' is not a size (e.g. 4G)

and unknown keys get a did-you-mean. `extends = "default.toml"` deep-merges a base policy
(classes merged by name). `aios-host policy schema` exports the JSON Schema for editors.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from aios_host.errors import AiosError, shown
from aios_host.policy.regex import RegexError, compile_regex
from aios_host.policy.units import CORES_MAX, PAGE_SIZE_BYTES, SIZE_MAX_BYTES, Quantity, parse_cores, parse_size
from aios_host.tomlfile import deep_merge, describe, read_toml


class PolicyError(AiosError):
    """A policy file that cannot be used; the message is one line naming file and key."""


_SIZE_SCHEMA = {
    "anyOf": [
        {"type": "integer", "minimum": 0, "maximum": SIZE_MAX_BYTES},
        {"type": "string", "pattern": r"^\d+(\.\d+)?\s*([KMGTPkmgtp](i?B)?|B)?$|^\d+(\.\d+)?%$"},
    ],
    "description": "bytes, a size with a binary unit (512M, 4G, 1.5GiB) or a share of host memory (50%)",
}
_CORES_SCHEMA = {
    "anyOf": [{"type": "number", "minimum": 0, "maximum": CORES_MAX},
              {"type": "string", "pattern": r"^\d+(\.\d+)?%$"}],
    "description": "cores (2, 2.5) or a share of the host's CPUs (50%)",
}
_serialize = PlainSerializer(lambda q: str(q) if q.percent else q.value, return_type=Any)
Size = Annotated[Quantity, BeforeValidator(parse_size), WithJsonSchema(_SIZE_SCHEMA), _serialize]
Cores = Annotated[Quantity, BeforeValidator(parse_cores), WithJsonSchema(_CORES_SCHEMA), _serialize]
NAME_RE = r"^[a-z0-9][a-z0-9_-]{0,62}$"
DEVICE_RE = re.compile(r"^\d+:\d+$")
# systemd's unit names (unit-name.c): these characters, at most 255 of them; globs add *?[]!
UNIT_GLOB_PATTERN = r"^[A-Za-z0-9:_.\\@*?\[\]!-]{1,255}$"
NUMA_NODES_MAX = 1024  # MAX_NUMNODES with the largest NODES_SHIFT (10)
GPU_INDEX_MAX = 1023
IOPS_MAX = (1 << 63) - 1  # io.max parses u64; kept to the same bound as sizes

# cpufreq values, one type each for the host-wide [energy] and a class's [class.energy]: what
# energy/plan.py can turn into a write (it checks them again against what the driver offers).
CpuGovernor = Literal["performance", "powersave", "schedutil", "ondemand", "conservative"]
# energy_performance_available_preferences as intel_pstate and amd-pstate-epp list them
CpuEpp = Literal["default", "performance", "balance_performance", "balance_power", "power"]
# a share of cpuinfo_max_freq (80%) or a frequency (2.4GHz): energy/plan.py's max_freq_khz
CpuMaxFreq = Annotated[str, Field(pattern=r"^\d+(\.\d+)?\s*(%|[kMG]Hz)$")]
# [class.energy] keys that set the class's CPUs' cpufreq policies
CLASS_CPUFREQ_KEYS = ("cpu_governor", "cpu_epp", "cpu_max_freq")


def _no_dot_segments(path: str) -> str:
    """A cgroup path that stays where it is said to be: no '.' or '..' segment, no empty one, each
    a valid directory name (NAME_MAX 255)."""
    for seg in path.strip("/").split("/"):
        if seg in (".", ".."):
            raise ValueError(f"{shown(path)}: '{seg}' would leave the cgroup tree it names")
        if len(seg.encode()) > 255:
            raise ValueError(f"{shown(path)}: a path segment is longer than 255 bytes")
    return path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class HostSpec(_Strict):
    reserve_cores: Cores = Field(default=Quantity(0.0), description="CPU kept for the system")
    reserve_memory: Size = Field(default=Quantity(0.0), description="memory kept for the system")
    managed_root: str = Field(
        default="aios.slice",
        pattern=r"^[A-Za-z0-9_.@-]+(/[A-Za-z0-9_.@-]+)*$",
        max_length=4096,
        description="cgroup (relative to the cgroup2 mount) under which class cgroups are made",
    )

    @field_validator("managed_root")
    @classmethod
    def _stays_inside(cls, v: str) -> str:
        return _no_dot_segments(v)


class MatchSpec(_Strict):
    cgroup: list[str] = Field(default_factory=list, description="cgroup path globs, e.g. 'system.slice/vllm*'")
    unit: str | None = Field(default=None, pattern=UNIT_GLOB_PATTERN, description="systemd unit name (glob)")
    slice: str | None = Field(default=None, pattern=UNIT_GLOB_PATTERN, description="systemd slice name")
    comm: str | None = Field(default=None, description="regex (RE2 syntax) on the process comm")
    exe: str | None = Field(default=None, description="regex (RE2 syntax) on the process executable path")
    job: str | None = Field(default=None, max_length=255,
                            description="label of running aios-host jobs (their supervisors' records)")

    @field_validator("cgroup", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v

    @field_validator("cgroup")
    @classmethod
    def _globs_stay_inside(cls, v: list[str]) -> list[str]:
        for g in v:
            if not g.strip("/") or "\0" in g:
                raise ValueError(f"{shown(g)} is not a cgroup path or glob")
            _no_dot_segments(g)
        return v

    @field_validator("comm", "exe")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                compile_regex(v)
            except RegexError as exc:
                raise ValueError(f"{shown(v)} is not a regular expression RE2 takes ({exc})") from None
        return v


class CpuSpec(_Strict):
    min: Cores | None = Field(default=None, description="guaranteed cores")
    max: Cores | None = Field(default=None, description="hard cap (cpu.max)")
    exclusive: bool = Field(default=False, description="whole cores for this class alone; count = min")
    numa: int | None = Field(default=None, ge=0, lt=NUMA_NODES_MAX, description="preferred NUMA node")
    gpus: list[Annotated[int, Field(ge=0, le=GPU_INDEX_MAX)]] = Field(
        default_factory=list, description="GPU indexes to place cores near")

    @model_validator(mode="after")
    def _consistent(self) -> CpuSpec:
        if self.min and self.max and self.min.percent == self.max.percent and self.min.value > self.max.value:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if self.exclusive:
            if self.min is None or self.min.percent or self.min.value < 1 or self.min.value % 1:
                raise ValueError("exclusive = true needs min = a whole number of cores (e.g. 4)")
        return self


class MemorySpec(_Strict):
    min: Size | None = Field(default=None, description="hard protection (memory.min)")
    low: Size | None = Field(default=None, description="best-effort protection (memory.low)")
    high: Size | Literal["auto"] | None = Field(
        default=None, description="throttle limit (memory.high); 'auto' = host memory less the other classes' min/low"
    )
    max: Size | None = Field(default=None, description="hard limit, OOM above (memory.max)")
    protect: bool = Field(default=False, description="the memory guard never tightens, freezes or kills this class")

    @field_validator("high", mode="before")
    @classmethod
    def _auto_or_size(cls, v: object) -> object:
        return v if v == "auto" else parse_size(v)

    @model_validator(mode="after")
    def _at_least_a_page(self) -> MemorySpec:
        # The kernel rounds limits down to pages: below one, memory.high/max become 0 and every
        # process in the class is reclaimed to nothing or OOM-killed.
        for key, q in (("high", self.high), ("max", self.max)):
            if isinstance(q, Quantity) and not q.percent and q.value < PAGE_SIZE_BYTES:
                raise ValueError(f"{key} {q.value:g} bytes is below one page ({PAGE_SIZE_BYTES}): the kernel would "
                                 "set 0 and OOM-kill the class")
            if isinstance(q, Quantity) and q.percent and q.value <= 0:
                raise ValueError(f"{key} 0% would set 0 and OOM-kill the class")
        return self

    @model_validator(mode="after")
    def _ordered(self) -> MemorySpec:
        chain = [("min", self.min), ("low", self.low), ("high", self.high), ("max", self.max)]
        given = [(k, q) for k, q in chain if isinstance(q, Quantity)]
        for (ka, a), (kb, b) in zip(given, given[1:], strict=False):
            if a.percent == b.percent and a.value > b.value:
                raise ValueError(f"{ka} {a} is above {kb} {b}; need min <= low <= high <= max")
        return self


class IoMaxSpec(_Strict):
    rbps: Size | None = None
    wbps: Size | None = None
    riops: int | None = Field(default=None, gt=0, le=IOPS_MAX)
    wiops: int | None = Field(default=None, gt=0, le=IOPS_MAX)


class IoSpec(_Strict):
    weight: int | None = Field(default=None, ge=1, le=10000, description="io.weight")
    max: dict[str, IoMaxSpec] = Field(default_factory=dict, description="io.max per device MAJ:MIN")

    @field_validator("max")
    @classmethod
    def _devices(cls, v: dict[str, IoMaxSpec]) -> dict[str, IoMaxSpec]:
        for dev in v:
            if not DEVICE_RE.match(dev):
                raise ValueError(f"device {dev!r} is not MAJ:MIN (e.g. '8:0'; see lsblk)")
        return v


class ClassEnergySpec(_Strict):
    """GPU power for the class's jobs (aios-host jobs of this class, or with match.job's label):
    `gpu_power_limit = "auto"` searches, while such a job runs, the power limit of the GPUs its
    ranks use that costs the least GPU energy per training step within `max_slowdown` of the step
    time at the limit the GPUs had, holds it, and restores that limit when the job ends; where that
    cap never binds (no SwPowerCap), it searches the locked SM clock the same way and resets the
    clocks at the end (energy/auto_runner.py). A fixed limit is host-wide: [energy] gpu_power_limit.

    cpu_governor / cpu_epp / cpu_max_freq: the cpufreq settings of the class's exclusive CPUs
    (cpu.exclusive), instead of the host-wide [energy] ones, on every cpufreq policy that lies
    wholly inside them (energy/cpufreq_classes.py)."""

    cpu_governor: CpuGovernor | None = Field(
        default=None, description="cpufreq governor of the class's exclusive CPUs (needs cpu.exclusive)")
    cpu_epp: CpuEpp | None = Field(
        default=None, description="energy_performance_preference of the class's exclusive CPUs")
    cpu_max_freq: CpuMaxFreq | None = Field(
        default=None, description="scaling_max_freq of the class's exclusive CPUs: a share of cpuinfo_max_freq "
                                  "(80%) or a frequency (2.4GHz)")

    gpu_power_limit: Literal["auto"] | None = Field(
        default=None, description="'auto': search the power limit while a job of the class runs")
    max_slowdown: float = Field(default=0.05, ge=0, le=0.5, allow_inf_nan=False,
                                description="auto: largest step-time increase kept (0.05 = 5 %)")
    steps_per_measurement: int = Field(default=20, ge=1, le=1_000_000,
                                       description="auto: whole training steps in one measurement")
    measure_seconds: float = Field(default=30.0, ge=1, le=3600, allow_inf_nan=False,
                                   description="auto: shortest measurement window (the step boundaries "
                                               "are seen about once a second)")
    power_step_watts: float = Field(default=25.0, ge=1, le=1000, allow_inf_nan=False,
                                    description="auto: distance between two power limits tried")

    @model_validator(mode="after")
    def _epp_the_governor_allows(self) -> ClassEnergySpec:
        # intel_pstate and amd-pstate-epp pin the EPP under the performance governor and answer
        # EBUSY to any other: the pair could never be applied.
        if self.cpu_governor == "performance" and self.cpu_epp not in (None, "performance"):
            raise ValueError(f"cpu_epp {self.cpu_epp!r} under cpu_governor 'performance': intel_pstate and "
                             "amd-pstate take no EPP but 'performance' under that governor")
        return self


class ClassSpec(_Strict):
    name: str = Field(pattern=NAME_RE, description="also the class cgroup's name")
    description: str = ""
    match: MatchSpec = Field(default_factory=MatchSpec)
    weight: int = Field(default=100, ge=1, le=10000, description="relative share (cgroup weight units)")
    priority: int = Field(default=0, ge=0, le=100, description="tier: higher tiers are served first")
    cpu: CpuSpec = Field(default_factory=CpuSpec)
    memory: MemorySpec = Field(default_factory=MemorySpec)
    io: IoSpec = Field(default_factory=IoSpec)
    energy: ClassEnergySpec = Field(default_factory=ClassEnergySpec)

    @model_validator(mode="after")
    def _cpufreq_needs_exclusive_cores(self) -> ClassSpec:
        # A cpufreq policy sets the frequency of whole CPUs: only CPUs the class has to itself can
        # run at its settings without imposing them on every class it shares CPUs with.
        if not self.cpu.exclusive:
            key = next((k for k in CLASS_CPUFREQ_KEYS if getattr(self.energy, k) is not None), None)
            if key:
                raise ValueError(f"class {self.name!r}: energy.{key} needs exclusive cores (cpu.exclusive = true "
                                 "with cpu.min = N): a CPU frequency setting covers whole CPUs, and this class "
                                 "shares its CPUs")
        return self


class MemoryGuardSpec(_Strict):
    """The daemon's memory guard. `memory.high = "auto"` classes get senpai's loop whenever the
    daemon runs; the escalation (tighten -> freeze -> kill before the kernel's OOM killer) only
    when enabled. Senpai's defaults (facebookincubator/senpai) as a starting point."""

    enabled: bool = Field(default=False, description="escalate (tighten, freeze, kill) when the host is in danger")
    danger_available: Size = Field(default=Quantity(float(256 << 20)),
                                   description="act when MemAvailable + free swap falls below this")
    safe_available: Size = Field(default=Quantity(float(512 << 20)), description="safe again above this")
    danger_seconds: float = Field(default=10.0, gt=0, le=3600, allow_inf_nan=False,
                                  description="or when the host's time to OOM falls below this")
    danger_pressure_full: float | None = Field(
        default=None, gt=0, le=100, allow_inf_nan=False,
        description="or when the host's memory PSI full avg10 (percent) reaches this (off when unset)")
    step_seconds: float = Field(default=2.0, ge=0, le=3600, allow_inf_nan=False,
                                description="between two escalation steps of one class")
    thaw_seconds: float = Field(default=10.0, ge=0, le=86400, allow_inf_nan=False,
                                description="safe this long: thaw frozen classes, hand memory.high back")
    interval_seconds: int = Field(default=6, ge=1, le=3600, description="senpai: ticks between two probes")
    pressure_ms: float = Field(default=10.0, gt=0, le=60_000, allow_inf_nan=False,
                               description="senpai: target memory stall per interval (PSI some)")
    max_probe: float = Field(default=0.01, gt=0, le=0.5, allow_inf_nan=False,
                             description="senpai: largest tightening step (share of memory.high)")
    max_backoff: float = Field(default=1.0, gt=0, le=10, allow_inf_nan=False,
                               description="senpai: largest loosening step")
    min_size: Size = Field(default=Quantity(float(100 << 20)), description="senpai: memory.high never below this")
    max_size: Size = Field(default=Quantity(float(100 << 30)), description="senpai: nor above this")

    @model_validator(mode="after")
    def _ordered(self) -> MemoryGuardSpec:
        d, s = self.danger_available, self.safe_available
        if d.percent == s.percent and d.value > s.value:
            raise ValueError(f"danger_available {d} is above safe_available {s}")
        lo, hi = self.min_size, self.max_size
        if lo.percent == hi.percent and lo.value > hi.value:
            raise ValueError(f"min_size {lo} is above max_size {hi}")
        return self


class EnergySpec(_Strict):
    """CPU frequency (cpufreq) and GPU power (NVML) settings: energy/plan.py turns them into writes."""

    profile: Literal["performance", "balanced", "powersave"] = "balanced"
    cpu_governor: CpuGovernor | None = None
    cpu_max_freq: CpuMaxFreq | None = None
    gpu_power_limit: str | None = Field(default=None, pattern=r"^\d+(\.\d+)?\s*(%|W)$")
    cpu_owner: Literal["defer", "take-over"] = Field(
        default="defer", description="tuned, power-profiles-daemon or TLP active: leave the CPU knobs to them, or not")


class Policy(_Strict):
    extends: str | None = Field(default=None, description="base policy file, relative to this one")
    description: str = ""
    host: HostSpec = Field(default_factory=HostSpec)
    classes: list[ClassSpec] = Field(default_factory=list, alias="class")
    energy: EnergySpec = Field(default_factory=EnergySpec)
    memory_guard: MemoryGuardSpec = Field(default_factory=MemoryGuardSpec)

    @model_validator(mode="after")
    def _unique_names(self) -> Policy:
        seen: set[str] = set()
        for c in self.classes:
            if c.name in seen:
                raise ValueError(f"class name {c.name!r} is used twice")
            seen.add(c.name)
        return self

    @model_validator(mode="after")
    def _one_owner_of_gpu_power(self) -> Policy:
        # Both would write the same power limits: the plan every decision, the search every
        # measurement, each undoing the other.
        auto = [c.name for c in self.classes if c.energy.gpu_power_limit == "auto"]
        if auto and self.energy.gpu_power_limit:
            raise ValueError(f"class {auto[0]!r}: energy.gpu_power_limit = 'auto' and [energy] gpu_power_limit = "
                             f"{self.energy.gpu_power_limit!r} both set the GPUs' power limit: keep one of them")
        return self

    def cls(self, name: str) -> ClassSpec:
        for c in self.classes:
            if c.name == name:
                return c
        raise KeyError(name)


# -- loading -------------------------------------------------------------------------------------


def _format_validation(path: Path, exc: ValidationError) -> str:
    errors = exc.errors()
    where, what = describe(Policy, errors[0])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{path}: {where or '(top level)'}: {what}{more}"


def _merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, val in child.items():
        if key == "class" and isinstance(val, list) and isinstance(base.get("class"), list):
            by_name = {c.get("name"): i for i, c in enumerate(out["class"]) if isinstance(c, dict)}
            merged = list(out["class"])
            for c in val:
                i = by_name.get(c.get("name")) if isinstance(c, dict) else None
                if i is None:
                    merged.append(c)
                else:
                    merged[i] = _merge(merged[i], c)
            out["class"] = merged
        elif isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], val)
        else:
            out[key] = val
    return out


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (RuntimeError, OSError) as exc:  # 3.11: a symlink loop is a RuntimeError
        raise PolicyError(f"{path}: cannot read ({exc})") from None
    except ValueError:  # a NUL in the name
        raise PolicyError(f"{shown(str(path))}: not a file name (it holds a NUL byte)") from None


def _resolve(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    raw = read_toml(path, PolicyError, "policy file")
    base_name = raw.get("extends")
    if base_name is None:
        return raw
    if not isinstance(base_name, str):
        raise PolicyError(f"{path}: extends: {base_name!r} is not a file name")
    base_path = _resolved(path.parent / base_name)
    if base_path in seen:
        chain = " -> ".join(str(p) for p in (*seen, base_path))
        raise PolicyError(f"{path}: extends: cycle {chain}")
    base = _resolve(base_path, (*seen, base_path))
    try:
        Policy.model_validate(base)
    except ValidationError as exc:
        raise PolicyError(_format_validation(base_path, exc)) from None
    merged = _merge(base, {k: v for k, v in raw.items() if k != "extends"})
    merged["extends"] = base_name
    return merged


def load_policy(path: str | Path) -> Policy:
    """Read, merge (extends) and validate a policy file. Raises PolicyError with one line."""
    p = Path(path)
    data = _resolve(p, (_resolved(p),))
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(_format_validation(p, exc)) from None


def json_schema() -> dict[str, Any]:
    schema = Policy.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "aios-host policy"
    return schema
