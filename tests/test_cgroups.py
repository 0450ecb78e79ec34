"""What a process's memory cgroup says: its room under every limit above it, and the kernel's kills."""

import subprocess
import sys
from pathlib import Path

import pytest

from contrast_core import cgroups

GB = 2**30


def write(folder: Path, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_", ".", 1)).write_text(text)
    return folder


def test_v2_room_is_the_least_left_under_any_limit_above_and_cache_does_not_count(tmp_path):
    root = write(tmp_path, memory_max="max", memory_current=str(5 * GB))  # a container's cgroup with no limit
    app = write(root / "app", memory_max=str(4 * GB), memory_current=str(3 * GB),
                memory_stat=f"anon {2 * GB}\ninactive_file {GB // 2}\n")  # fmt: skip
    worker = write(app / "worker", memory_max="max", memory_current=str(GB))
    assert cgroups.room(app, root=root) == 4 * GB - (3 * GB - GB // 2)  # the cache is dropped before a kill
    assert cgroups.room(worker, root=root) == cgroups.room(app, root=root)  # the limit above binds it
    (worker / "memory.max").write_text(str(GB + GB // 4))
    assert cgroups.room(worker, root=root) == GB // 4  # its own, tighter
    assert cgroups.room(root, root=root) is None  # no limit anywhere


def test_v1_room_and_the_no_limit_number(tmp_path):
    root = write(tmp_path / "memory", memory_limit_in_bytes="9223372036854771712", memory_usage_in_bytes="0")
    box = write(root / "box", memory_limit_in_bytes=str(2 * GB), memory_usage_in_bytes=str(GB),
                memory_stat="cache 0\ntotal_inactive_file 0\n")  # fmt: skip
    assert cgroups.room(box, root=tmp_path) == GB
    assert cgroups.room(root, root=tmp_path) is None


@pytest.mark.parametrize(
    ("name", "text", "kills"),
    [
        ("memory.events", "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n", 2),  # v2
        ("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n", 7),  # v1
        ("memory.events", "garbled", None),
    ],
)
def test_oom_kills_reads_either_version(tmp_path, name, text, kills):
    (tmp_path / name).write_text(text)
    assert cgroups.oom_kills(tmp_path) == kills
    assert cgroups.oom_kills(None) is None


def test_this_process_s_cgroup_is_the_one_proc_names():
    found = cgroups.memory_cgroup()
    if found is None:
        pytest.skip("no cgroup file system here")
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    paths = [line.split(":", 2)[2] for line in lines if line.split(":", 2)[1] in ("", "memory")]
    assert any(str(found).endswith(path.rstrip("/")) for path in paths)
    assert cgroups.memory_cgroup(pid=10**9) is None  # no such process


def test_a_run_is_measured_against_its_container_s_limit_not_the_host(memory_limit):
    """In a cgroup with 64 MB to grow, a process's available memory is what is left of those 64 MB after
    its imports, not the host's free gigabytes."""
    script = (
        "import sys; sys.stdin.readline(); from contrast_core.config import available_memory; print(available_memory())"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    memory_limit(child.pid, 64 * 2**20)
    out, _ = child.communicate("go\n", timeout=60)
    assert 0 < int(out) <= 64 * 2**20
