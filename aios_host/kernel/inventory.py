"""What the host is made of: CPUs with their SMT siblings, LLC and NUMA node; memory; GPUs.

Read from sysfs and procfs through a SysRoot so tests can describe any topology. GPUs are listed
from PCI (vendor 0x10de, display class) here; NVML details come with the energy issue (kernel/gpu.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from aios_host.kernel.cgroup_format import parse_cpu_list
from aios_host.kernel.procfs import read_meminfo
from aios_host.kernel.root import SysRoot

CPU_DIR = "/sys/devices/system/cpu"
NODE_DIR = "/sys/devices/system/node"
PCI_DIR = "/sys/bus/pci/devices"
NVIDIA_VENDOR = "0x10de"


@dataclass(frozen=True)
class Cpu:
    id: int
    core_id: int
    package_id: int
    numa_node: int
    siblings: tuple[int, ...]  # SMT threads of the same core, this one included
    llc_id: int  # smallest CPU id sharing the last-level cache: a stable LLC domain name


@dataclass(frozen=True)
class GpuDevice:
    pci_address: str
    vendor: str
    device: str
    numa_node: int  # -1 when firmware does not say


@dataclass(frozen=True)
class Inventory:
    cpus: tuple[Cpu, ...]
    memory_total_bytes: int
    numa_nodes: dict[int, tuple[int, ...]]  # node -> cpu ids
    gpus: tuple[GpuDevice, ...]

    @property
    def cpu_count(self) -> int:
        return len(self.cpus)

    @property
    def cores(self) -> tuple[tuple[int, ...], ...]:
        """Physical cores as tuples of SMT siblings, sorted by first cpu id."""
        return tuple(sorted({c.siblings for c in self.cpus}))

    @property
    def smt(self) -> bool:
        return any(len(c.siblings) > 1 for c in self.cpus)


def _int_file(root: SysRoot, path: str, default: int) -> int:
    text = root.read_optional(path)
    try:
        return int(text.strip()) if text else default
    except ValueError:
        return default


def _llc_id(root: SysRoot, cpu: int) -> int:
    """Pick the highest cache level index and name the domain by its lowest sharing CPU."""
    base = f"{CPU_DIR}/cpu{cpu}/cache"
    best_level, best_shared = -1, (cpu,)
    for index in root.subdirs(base):
        if not index.startswith("index"):
            continue
        level = _int_file(root, f"{base}/{index}/level", -1)
        shared = root.read_optional(f"{base}/{index}/shared_cpu_list")
        if level > best_level and shared:
            best_level, best_shared = level, parse_cpu_list(shared)
    return min(best_shared)


def read_numa_nodes(root: SysRoot) -> dict[int, tuple[int, ...]]:
    nodes: dict[int, tuple[int, ...]] = {}
    for name in root.subdirs(NODE_DIR):
        if name.startswith("node") and name[4:].isdigit():
            text = root.read_optional(f"{NODE_DIR}/{name}/cpulist")
            nodes[int(name[4:])] = parse_cpu_list(text) if text else ()
    return nodes


def read_gpus(root: SysRoot) -> tuple[GpuDevice, ...]:
    gpus = []
    for addr in root.subdirs(PCI_DIR) if root.is_dir(PCI_DIR) else []:
        vendor = (root.read_optional(f"{PCI_DIR}/{addr}/vendor") or "").strip()
        pci_class = (root.read_optional(f"{PCI_DIR}/{addr}/class") or "").strip()
        # 0x03xxxx: display controllers (VGA 0x0300, 3D 0x0302 as on H100/A100).
        if vendor == NVIDIA_VENDOR and pci_class.startswith("0x03"):
            gpus.append(
                GpuDevice(
                    pci_address=addr,
                    vendor=vendor,
                    device=(root.read_optional(f"{PCI_DIR}/{addr}/device") or "").strip(),
                    numa_node=_int_file(root, f"{PCI_DIR}/{addr}/numa_node", -1),
                )
            )
    return tuple(gpus)


def read_inventory(root: SysRoot) -> Inventory:
    online = parse_cpu_list(root.read_text(f"{CPU_DIR}/online"))
    nodes = read_numa_nodes(root)
    node_of = {cpu: node for node, cpus in nodes.items() for cpu in cpus}
    cpus = []
    for cpu in online:
        topo = f"{CPU_DIR}/cpu{cpu}/topology"
        siblings_text = root.read_optional(f"{topo}/thread_siblings_list")
        cpus.append(
            Cpu(
                id=cpu,
                core_id=_int_file(root, f"{topo}/core_id", cpu),
                package_id=_int_file(root, f"{topo}/physical_package_id", 0),
                numa_node=node_of.get(cpu, 0),
                siblings=parse_cpu_list(siblings_text) if siblings_text else (cpu,),
                llc_id=_llc_id(root, cpu),
            )
        )
    return Inventory(
        cpus=tuple(cpus),
        memory_total_bytes=read_meminfo(root).get("MemTotal", 0),
        numa_nodes=nodes or {0: online},
        gpus=read_gpus(root),
    )
