from aios_host.kernel.inventory import read_inventory
from aios_host.kernel.root import SysRoot
from tests.unit.fixtures import HYBRID, fake_host, put


def _two_socket_smt(root):
    """2 sockets x 2 cores x 2 threads, one NUMA node and one L3 per socket, one GPU on node 1."""
    fake_host(root, HYBRID, cpus=8)
    for cpu in range(8):
        sock = 0 if cpu in (0, 1, 4, 5) else 1
        core = {0: 0, 4: 0, 1: 1, 5: 1, 2: 0, 6: 0, 3: 1, 7: 1}[cpu]
        sib = {0: "0,4", 4: "0,4", 1: "1,5", 5: "1,5", 2: "2,6", 6: "2,6", 3: "3,7", 7: "3,7"}[cpu]
        t = f"/sys/devices/system/cpu/cpu{cpu}/topology"
        put(root, f"{t}/core_id", f"{core}\n")
        put(root, f"{t}/physical_package_id", f"{sock}\n")
        put(root, f"{t}/thread_siblings_list", sib + "\n")
        c = f"/sys/devices/system/cpu/cpu{cpu}/cache"
        put(root, f"{c}/index0/level", "1\n")
        put(root, f"{c}/index0/shared_cpu_list", sib + "\n")
        put(root, f"{c}/index3/level", "3\n")
        put(root, f"{c}/index3/shared_cpu_list", ("0-1,4-5" if sock == 0 else "2-3,6-7") + "\n")
    put(root, "/sys/devices/system/node/node0/cpulist", "0-1,4-5\n")
    put(root, "/sys/devices/system/node/node1/cpulist", "2-3,6-7\n")
    gpu = "/sys/bus/pci/devices/0000:41:00.0"
    put(root, f"{gpu}/vendor", "0x10de\n")
    put(root, f"{gpu}/class", "0x030200\n")
    put(root, f"{gpu}/device", "0x2330\n")
    put(root, f"{gpu}/numa_node", "1\n")
    nic = "/sys/bus/pci/devices/0000:01:00.0"
    put(root, f"{nic}/vendor", "0x15b3\n")
    put(root, f"{nic}/class", "0x020000\n")
    return root


def test_topology(tmp_path):
    inv = read_inventory(SysRoot(_two_socket_smt(tmp_path)))
    assert inv.cpu_count == 8 and inv.smt
    assert inv.cores == ((0, 4), (1, 5), (2, 6), (3, 7))
    assert inv.numa_nodes == {0: (0, 1, 4, 5), 1: (2, 3, 6, 7)}
    by_id = {c.id: c for c in inv.cpus}
    assert by_id[6].numa_node == 1 and by_id[6].llc_id == 2 and by_id[5].llc_id == 0
    assert by_id[7].package_id == 1
    assert [(g.pci_address, g.numa_node) for g in inv.gpus] == [("0000:41:00.0", 1)]


def test_this_hosts_shape(tmp_path):
    # minimal sysfs (no topology dirs): every CPU is its own core on node 0
    inv = read_inventory(SysRoot(fake_host(tmp_path, HYBRID, cpus=2)))
    assert inv.cores == ((0,), (1,)) and not inv.smt and inv.numa_nodes == {0: (0, 1)}
    assert inv.memory_total_bytes > 0 and inv.gpus == ()
