"""The solver's input and output: plain frozen values, no pydantic, no kernel.

Units: cpu in cores, memory in bytes, io as a fraction of the host's I/O share (capacity 1.0).
For class i and resource r the solver picks x[i][r] in [0, 1], the satisfied fraction of demand
c[i][r]; the allocation is a[i][r] = x[i][r] * c[i][r]. The seed LP, per resource:

    maximize  sum_i w_i x_ir   subject to  sum_i c_ir x_ir <= C_r,  0 <= x_ir <= 1,
              min_ir <= c_ir x_ir <= max_ir

solved tier by tier (higher `priority` first), with a max-min fairness term inside each tier.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aios_host.errors import AiosError

RESOURCES = ("cpu", "memory", "io")
UNITS = {"cpu": "cores", "memory": "bytes", "io": "share"}


@dataclass(frozen=True)
class ClassDemand:
    name: str
    weight: float  # > 0
    priority: int  # tier: higher is served first
    demand: Mapping[str, float]  # c_ir >= 0 per resource, absolute units
    min: Mapping[str, float] = field(default_factory=dict)  # guarantee, absolute
    max: Mapping[str, float] = field(default_factory=dict)  # cap, absolute


@dataclass(frozen=True)
class Problem:
    capacity: Mapping[str, float]  # C_r after the host reserve
    classes: tuple[ClassDemand, ...]


@dataclass(frozen=True)
class Binding:
    """One constraint that holds with equality at the optimum, and what relaxing it is worth."""

    kind: str  # "capacity" | "min" | "max" | "demand"
    resource: str
    cls: str | None  # None for capacity constraints
    tier: int
    dual: float  # objective gain per unit (per core, per byte...) of relaxation; 0 if none


@dataclass(frozen=True)
class Allocation:
    amounts: Mapping[str, Mapping[str, float]]  # class -> resource -> a_ir
    satisfaction: Mapping[str, Mapping[str, float]]  # class -> resource -> x_ir
    bindings: tuple[Binding, ...]
    objective: float  # sum over tiers and resources of sum_i w_i x_ir


@dataclass(frozen=True)
class CoreRequest:
    """A class that wants `cores` whole physical cores for itself (cpuset partition)."""

    name: str
    cores: int
    numa_node: int | None = None  # preferred node (explicit, or the node of its GPUs)


@dataclass(frozen=True)
class CoreAssignment:
    cpus: Mapping[str, tuple[int, ...]]  # class -> cpu ids (all SMT siblings of each core)
    numa_nodes: Mapping[str, tuple[int, ...]]  # class -> nodes those cpus are on


class InfeasibleError(AiosError):
    """Guarantees that cannot all be met. The message names the classes and the shortfall."""
