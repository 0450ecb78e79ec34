"""What the kernel's memory cgroups say about a process: how much room it has left, and how many
processes were killed for memory where it lives.

A container (Docker's --memory, a hosted app's plan) limits memory through the process's cgroup, while
/proc/meminfo still shows the whole host: a run that fits the host can be killed by the kernel at the
container's limit. Both cgroup versions are read: v2 (one tree, memory.max, memory.current,
memory.events) and v1 (a memory tree, memory.limit_in_bytes, memory.usage_in_bytes, memory.oom_control).
Nothing here imports more than the standard library: the page process reads it too.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
UNLIMITED = 2**60  # v1 says "no limit" with a number near 2**63, v2 with "max"


def memory_cgroup(pid: int | str = "self", root: Path = ROOT) -> Path | None:
    """The folder of `pid`'s memory cgroup (v2 where its tree has the memory controller, else v1),
    or None where neither can be read (not Linux, no cgroup file system, the process gone)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:  # "4:memory:/a/b" (v1) or "0::/a/b" (v2)
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            folder, usage = root / path.lstrip("/"), "memory.current"
        elif "memory" in controllers.split(","):
            folder, usage = root / "memory" / path.lstrip("/"), "memory.usage_in_bytes"
        else:
            continue
        if (folder / usage).exists():
            return folder
    return None


def oom_kills(cgroup: Path | None) -> int | None:
    """How many processes the kernel has killed for memory in `cgroup` (and, for v2, below it);
    None where it does not say."""
    if cgroup is None:
        return None
    for name in ("memory.events", "memory.oom_control"):
        try:
            for line in (cgroup / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def room(cgroup: Path | None, root: Path = ROOT) -> int | None:
    """Bytes the processes of `cgroup` may still take before a limit on it or on a cgroup above it
    makes the kernel reclaim and then kill: the least of limit - usage up the tree; None without a limit.
    Usage leaves out inactive file cache, which the kernel drops before it kills anything."""
    if cgroup is None:
        return None
    least = None
    folder = cgroup
    while True:
        free = _free(folder)
        if free is not None:
            least = free if least is None else min(least, free)
        if folder in (root, root / "memory") or folder.parent == folder:
            return least
        folder = folder.parent


def _free(folder: Path) -> int | None:
    v2 = (folder / "memory.max").exists()
    limit = _number(folder / ("memory.max" if v2 else "memory.limit_in_bytes"))
    usage = _number(folder / ("memory.current" if v2 else "memory.usage_in_bytes"))
    if limit is None or usage is None or limit >= UNLIMITED:
        return None
    cache = _stat(folder / "memory.stat", "inactive_file" if v2 else "total_inactive_file") or 0
    return max(0, limit - max(0, usage - cache))


def _number(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return UNLIMITED
    try:
        return int(text)
    except ValueError:
        return None


def _stat(path: Path, key: str) -> int | None:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        return None
    return None
