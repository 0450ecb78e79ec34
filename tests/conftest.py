import os
import signal
import time

import pytest

from contrast_core.jobs import JobQueue
from contrast_core.store import RunStore
from ui import backend


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A run store in a fresh folder, closed after the test; the app (CONTRAST_HOME) serves it too."""
    monkeypatch.setenv("CONTRAST_HOME", str(tmp_path))
    store = RunStore(tmp_path)
    yield store
    store.close()


@pytest.fixture
def queue(store, monkeypatch):
    """The real queue over the test store, not started: runs stay queued, no worker process."""
    queue = JobQueue(store, n_workers=1)
    monkeypatch.setattr(backend, "job_queue", lambda: queue)
    return queue


@pytest.fixture
def memory_limit():
    """Puts a process in a new memory cgroup below this test's, with `room` bytes to grow, as a
    container's limit would; the kernel kills it for memory beyond that. Needs root and a cgroup tree."""
    from contrast_core import cgroups

    own = cgroups.memory_cgroup()
    if own is None:
        pytest.skip("no memory cgroup to make a limited one under")
    limited = own / f"contrast-test-{os.getpid()}"
    try:
        limited.mkdir()
    except OSError as err:
        pytest.skip(f"cannot make a memory cgroup here ({err.strerror})")
    v2 = (limited / "memory.max").exists()
    if not v2 and not (limited / "memory.limit_in_bytes").exists():  # v2 without the memory controller below
        limited.rmdir()
        pytest.skip("the memory controller is not enabled for cgroups made here")

    def confine(pid: int, room: int) -> None:
        (limited / "cgroup.procs").write_text(str(pid))
        usage = int((limited / ("memory.current" if v2 else "memory.usage_in_bytes")).read_text())
        (limited / ("memory.max" if v2 else "memory.limit_in_bytes")).write_text(str(usage + room))
        swap = limited / ("memory.swap.max" if v2 else "memory.memsw.limit_in_bytes")  # no swapping out instead
        if swap.exists():
            swap.write_text("0" if v2 else str(usage + room))

    yield confine
    for pid in (limited / "cgroup.procs").read_text().split():  # none left by a passing test
        os.kill(int(pid), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (limited / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    limited.rmdir()
