import pytest

from aios_host.errors import AiosError, KernelError, NotFoundError
from aios_host.kernel import cgroup_format as fmt
from aios_host.kernel.cgroup import CgroupFs, find_cgroup2_mount, normalize, sample
from aios_host.kernel.root import SysRoot
from tests.unit.fixtures import HYBRID, VM, fake_cgroup, fake_host, put


@pytest.fixture
def v2(tmp_path):
    fake_host(tmp_path, VM)
    fake_cgroup(tmp_path, "/sys/fs/cgroup", VM)
    fake_cgroup(tmp_path, "/sys/fs/cgroup/aios.slice", VM)
    fake_cgroup(tmp_path, "/sys/fs/cgroup/aios.slice/train", VM)
    return CgroupFs(SysRoot(tmp_path))


def test_mount_found_on_both_layouts(tmp_path):
    fake_host(tmp_path / "h", HYBRID)
    fake_host(tmp_path / "v", VM)
    assert find_cgroup2_mount(SysRoot(tmp_path / "h")) == "/sys/fs/cgroup/unified"
    assert find_cgroup2_mount(SysRoot(tmp_path / "v")) == "/sys/fs/cgroup"


def test_no_cgroup2_is_one_clear_error(tmp_path):
    put(tmp_path, "/proc/self/mountinfo", "22 1 0:5 / /proc rw - proc proc rw\n")
    with pytest.raises(NotFoundError, match="no cgroup2 mount"):
        CgroupFs(SysRoot(tmp_path))


def test_walk_is_preorder(v2):
    assert [str(c) for c in v2.walk()] == ["/", "/aios.slice", "/aios.slice/train"]
    assert [str(c) for c in v2.walk(max_depth=1)] == ["/", "/aios.slice"]


def test_unknown_cgroup(v2):
    with pytest.raises(NotFoundError, match="/nope: no such cgroup under /sys/fs/cgroup"):
        v2.cgroup("nope")


def test_normalize_rejects_dotdot():
    assert normalize("/a//b/") == "a/b"
    with pytest.raises(AiosError, match="'..'"):
        normalize("a/../../etc")


def test_pressure_reads(v2):
    cg = v2.cgroup("aios.slice/train")
    assert isinstance(cg.pressure("memory"), fmt.Pressure)
    assert cg.pressure("irq") is None  # the VM capture (6.1) has no irq.pressure


def test_write_to_a_file_the_controller_lacks_names_the_path(tmp_path):
    fake_host(tmp_path, HYBRID)
    fake_cgroup(tmp_path, "/sys/fs/cgroup/unified", HYBRID)
    fake_cgroup(tmp_path, "/sys/fs/cgroup/unified/job", HYBRID)
    cg = CgroupFs(SysRoot(tmp_path)).cgroup("job")
    with pytest.raises(KernelError) as exc:
        cg.write("memory.high", str(1 << 30))
    assert exc.value.path.endswith("/sys/fs/cgroup/unified/job/memory.high")
    assert exc.value.errno == 2


def test_enable_controllers_top_down(v2, monkeypatch):
    writes = []
    monkeypatch.setattr(v2.root, "write_text", lambda p, v: writes.append((p, v)))
    # the fixture root enables nothing below itself
    for rel in ("", "aios.slice"):
        put(v2.root.root, f"/sys/fs/cgroup/{rel}/cgroup.subtree_control".replace("//", "/"), "\n")
    done = v2.enable_controllers("aios.slice/train", ["memory", "cpu"])
    assert writes == [
        ("/sys/fs/cgroup/cgroup.subtree_control", "+cpu"),
        ("/sys/fs/cgroup/cgroup.subtree_control", "+memory"),
        ("/sys/fs/cgroup/aios.slice/cgroup.subtree_control", "+cpu"),
        ("/sys/fs/cgroup/aios.slice/cgroup.subtree_control", "+memory"),
    ]
    assert [(str(c), ctrl) for c, ctrl in done] == [
        ("/", "cpu"), ("/", "memory"), ("/aios.slice", "cpu"), ("/aios.slice", "memory")]


def test_enable_unavailable_controller_is_refused(tmp_path):
    fake_host(tmp_path, HYBRID)
    fake_cgroup(tmp_path, "/sys/fs/cgroup/unified", HYBRID)
    fake_cgroup(tmp_path, "/sys/fs/cgroup/unified/job", HYBRID)
    with pytest.raises(KernelError, match="controller not available"):
        CgroupFs(SysRoot(tmp_path)).enable_controllers("job", ["cpu"])


def test_create_and_remove(v2):
    leaf = v2.create("aios.slice/a/b")
    assert v2.exists("aios.slice/a/b") and leaf.rel == "aios.slice/a/b"
    with pytest.raises(AiosError, match="already exists"):
        v2.create("aios.slice/a/b")
    v2.remove("aios.slice/a/b")
    assert not v2.exists("aios.slice/a/b")
    with pytest.raises(AiosError, match="root cgroup"):
        v2.remove("/")


def test_cgroup_of_pid(v2):
    put(v2.root.root, "/proc/42/cgroup", "0::/aios.slice/train\n")
    assert v2.cgroup_of_pid(42).rel == "aios.slice/train"


def test_sample_reads_missing_controllers_as_none(tmp_path):
    fake_host(tmp_path, HYBRID)
    fake_cgroup(tmp_path, "/sys/fs/cgroup/unified", HYBRID)
    s = sample(CgroupFs(SysRoot(tmp_path)).cgroup(""))
    assert s.memory_current_bytes is None and s.cpu_usage_usec is not None
    assert s.nr_procs >= 1
