"""The dashboard served on this machine for the browser tests and `python -m ui.bench --browser`:
`streamlit run app.py` on 127.0.0.1 and a free port, over a store of its own, and the headless
Chromium flags that work here (Debian's package, see the Makefile)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_app(
    home: Path, log: Path | None = None, timeout: float = 90, env: dict[str, str] | None = None
) -> Iterator[tuple[str, int]]:
    """Yields (url, pid) once the app answers its health check; on leaving, stops it with its process
    group (the job queue's workers). `env`: settings added to this process's environment (e.g.
    CONTRAST_DEMO). Raises RuntimeError if it exits or does not answer in `timeout` s."""
    port = free_port()  # as `make run` serves it: .streamlit/config.toml turns the file watcher off
    flags = ["--server.headless", "true", "--server.address", "127.0.0.1", "--server.port", str(port),
             "--browser.gatherUsageStats", "false"]  # fmt: skip
    where = log.open("w") if log else subprocess.DEVNULL
    try:
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", *flags], cwd=ROOT,
                                env=os.environ | (env or {}) | {"CONTRAST_HOME": str(home)}, stdout=where,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    finally:
        if log:
            where.close()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, timeout, log)
        yield url, proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def memory_mb(pid: int) -> dict[str, int]:
    """Resident memory (MB) of the app's process and of each process it started (workers, projection
    processes: all of its session), keyed "pid command"."""
    found = subprocess.run(["ps", "-o", "pid=,rss=,args=", "--sid", str(pid)], capture_output=True, text=True).stdout
    rows = (line.split(maxsplit=2) for line in found.splitlines())
    return {f"{p} {args[:60]}": round(int(rss) / 1024) for p, rss, args in rows}


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float, log: Path | None) -> None:
    deadline = time.monotonic() + timeout
    see = f"; see {log}" if log else ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}{see}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"streamlit did not answer on {url} within {timeout} s{see}")
