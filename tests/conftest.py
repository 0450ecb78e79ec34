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
