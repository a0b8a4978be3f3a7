"""The solver's input and output: plain frozen values, no pydantic, no kernel.

The engine allocates one resource, cpu, in cores: cpu.weight is written from the allocation
(mapping.py). Memory and io are not allocated: nothing could write such an allocation without
overriding what the policy says (memory.min/low/high/max are the policy's, io.weight is its weight),
so demand.py leaves them out and explain shows no allocation that nothing uses. The solver itself is
generic over resource names (its tests use several, memory in bytes among them).

For class i and resource r the solver picks x[i][r] in [0, 1], the satisfied fraction of demand
c[i][r]; the allocation is a[i][r] = x[i][r] * c[i][r]. The seed LP, per resource:

    maximize  sum_i w_i x_ir   subject to  sum_i c_ir x_ir <= C_r,  0 <= x_ir <= 1,
              min_ir <= c_ir x_ir <= max_ir

solved tier by tier (higher `priority` first), with a max-min fairness term inside each tier.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from aios_host.errors import AiosError

# The resources decide() allocates, in display order; others a Problem names come after, by name.
RESOURCES = ("cpu",)
# Units of the resources messages name: cpu allocations, and memory guarantees, which are checked
# against the capacity (demand.check_memory_guarantees) though never allocated.
UNITS = {"cpu": "cores", "memory": "bytes"}


_NONE: Mapping[str, float] = MappingProxyType({})


# ClassDemand and Binding are NamedTuples, not frozen dataclasses: decide() makes one per class (and
# per bound class), and a frozen dataclass's __init__ costs 4x a tuple's.
class ClassDemand(NamedTuple):
    name: str
    weight: float  # > 0
    priority: int  # tier: higher is served first
    demand: Mapping[str, float]  # c_ir >= 0 per resource, absolute units
    min: Mapping[str, float] = _NONE  # guarantee, absolute
    max: Mapping[str, float] = _NONE  # cap, absolute


@dataclass(frozen=True)
class Problem:
    capacity: Mapping[str, float]  # C_r after the host reserve
    classes: tuple[ClassDemand, ...]


class Binding(NamedTuple):
    """One constraint that holds with equality at the optimum, and what relaxing it is worth."""

    kind: str  # "capacity" | "min" | "max" | "demand"
    resource: str
    cls: str | None  # None for capacity constraints
    tier: int
    dual: float  # objective gain per unit (per core, per byte...) of relaxation; 0 if none
    # capacity only: the classes one more unit would go to (the LP's marginal classes): those of
    # the best w_i / c_ir among the tier's classes still below their hi (demand capped by max);
    # several when they tie (step 4 of solver.py shares between them); () when none has room.
    to: tuple[str, ...] = ()


class ByClass(Mapping[str, Mapping[str, float]]):
    """{class: {resource: value}} over the solver's (resources x classes) table, without building a
    dict per class up front: decide() reads one resource of every class (`column`), explain and
    --json read them all."""

    def __init__(self, names: Sequence[str], resources: Sequence[str], rows: list[list[float]]) -> None:
        self._index = dict(zip(names, range(len(names)), strict=True))
        self._resources = tuple(resources)
        self._rows = rows  # rows[k][i]: resource k of class i

    def __getitem__(self, name: str) -> dict[str, float]:
        i = self._index[name]
        return {r: row[i] for r, row in zip(self._resources, self._rows, strict=True)}

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"ByClass({dict(self.items())!r})"

    def column(self, resource: str) -> dict[str, float]:
        """{class: value} of one resource."""
        return dict(zip(self._index, self._rows[self._resources.index(resource)], strict=True))


@dataclass(frozen=True)
class Allocation:
    amounts: ByClass  # class -> resource -> a_ir
    satisfaction: ByClass  # class -> resource -> x_ir
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
