import pytest

from contrast_core.store import RunStore


@pytest.fixture
def store(tmp_path):
    """A run store in a fresh folder, closed after the test."""
    store = RunStore(tmp_path)
    yield store
    store.close()
