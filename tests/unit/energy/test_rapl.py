import errno
import os

from hypothesis import given
from hypothesis import strategies as st

from aios_host.errors import KernelError
from aios_host.kernel import rapl
from aios_host.kernel.root import SysRoot
from tests.unit.fixtures import put

RANGE_UJ = 262_143_328_850  # a server package's max_energy_range_uj
DEVICES = "/sys/devices/virtual/powercap/intel-rapl"


def fake_rapl(tmp_path, zones: dict[str, tuple[str, int]], max_range_uj: int = RANGE_UJ) -> SysRoot:
    """Zones as sysfs lays them out: directories under /sys/devices, symlinks in the class dir."""
    cls = tmp_path / "sys/class/powercap"
    cls.mkdir(parents=True, exist_ok=True)
    for zone, (name, energy_uj) in zones.items():
        parent = zone.rsplit(":", 1)[0] if zone.count(":") == 2 else None
        dev = f"{DEVICES}/{parent}/{zone}" if parent else f"{DEVICES}/{zone}"
        put(tmp_path, f"{dev}/name", name + "\n")
        put(tmp_path, f"{dev}/energy_uj", f"{energy_uj}\n")
        put(tmp_path, f"{dev}/max_energy_range_uj", f"{max_range_uj}\n")
        os.symlink(tmp_path / dev.lstrip("/"), cls / zone)
    return SysRoot(tmp_path)


class UnreadableEnergy(SysRoot):
    """energy_uj as a non-root reader meets it on 5.10+: mode 0400, EACCES."""

    def read_text(self, kernel_path):
        if str(kernel_path).endswith("/energy_uj"):
            raise KernelError("read", self.path(kernel_path), errno.EACCES)
        return super().read_text(kernel_path)


def test_zones_behind_class_symlinks_in_numeric_order(tmp_path):
    root = fake_rapl(tmp_path, {"intel-rapl:10": ("package-10", 5), "intel-rapl:0": ("package-0", 1),
                                "intel-rapl:0:0": ("core", 2), "intel-rapl:1": ("package-1", 3)})
    (tmp_path / "sys/class/powercap/intel-rapl-mmio:0").mkdir()  # same energy over MMIO: not counted twice
    found = rapl.find_zones(root)
    assert found.reason is None
    assert [(z.zone, z.name, z.is_package) for z in found.zones] == [
        ("intel-rapl:0", "package-0", True), ("intel-rapl:0:0", "core", False),
        ("intel-rapl:1", "package-1", True), ("intel-rapl:10", "package-10", True)]
    assert rapl.read_energy_uj(root, found.zones[3]) == 5


def test_no_powercap_says_why(tmp_path):
    found = rapl.find_zones(SysRoot(tmp_path))
    assert found.zones == () and found.reason.startswith("/sys/class/powercap absent")
    (tmp_path / "sys/class/powercap").mkdir(parents=True)
    assert "has no intel-rapl zones" in rapl.find_zones(SysRoot(tmp_path)).reason


def test_root_only_energy_is_observe_nothing_with_the_reason(tmp_path):
    fake_rapl(tmp_path, {"intel-rapl:0": ("package-0", 1)})
    found = rapl.find_zones(UnreadableEnergy(tmp_path))
    assert found.zones == ()
    assert found.reason == ("/sys/class/powercap/intel-rapl:0/energy_uj: readable by root only "
                            "(Linux 5.10+, CVE-2020-8694); run as root to measure CPU energy")


@given(max_range=st.integers(1, 2**40), prev_frac=st.floats(0, 1, exclude_max=True),
       energy_frac=st.floats(0, 1, exclude_max=True))
def test_delta_across_one_wrap_is_the_energy_spent(max_range, prev_frac, energy_frac):
    prev, energy = int(prev_frac * max_range), int(energy_frac * max_range)
    cur = (prev + energy) % max_range  # the counter starts again at 0 after max_range
    assert rapl.energy_delta_uj(prev, cur, max_range) == energy


@given(start=st.integers(0, 999), steps=st.lists(st.integers(0, 999), max_size=60))
def test_counter_sums_any_sequence_of_wraps(start, steps):
    zone = rapl.RaplZone("intel-rapl:0", "package-0", 1000)
    c = rapl.EnergyCounter(zone)
    assert c.update(start) == 0  # the first reading is the origin
    reading = start
    for e in steps:
        reading = (reading + e) % 1000
        assert c.update(reading) == e
    assert c.total_uj == sum(steps)


def test_sample_reads_the_zone_and_wraps(tmp_path):
    root = fake_rapl(tmp_path, {"intel-rapl:0": ("package-0", RANGE_UJ - 1_000_000)})
    c = rapl.EnergyCounter(rapl.find_zones(root).zones[0])
    c.sample(root)
    put(tmp_path, f"{DEVICES}/intel-rapl:0/energy_uj", "4000000\n")
    assert c.sample(root) == 5_000_000 and c.total_uj == 5_000_000
