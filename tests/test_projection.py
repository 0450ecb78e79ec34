import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.decomposition import PCA

from contrast_core.projection import PROJECTIONS, align, mean_displacement, project, warm_up


def blobs(n, dim=16, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(classes, dim))
    return (centres[np.arange(n) % classes] + rng.normal(size=(n, dim))).astype(np.float32)


def rotation(angle):
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def anisotropic(n=200, seed=0):
    """Embeddings whose first feature dominates the first principal axis, second the second."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 6)) * [5.0, 2.0, 0.5, 0.5, 0.5, 0.5]).astype(np.float32)


# --- align and mean_displacement --------------------------------------------------------------


def rms_radius(layout):
    centred = layout - layout.mean(axis=0)
    return float(np.sqrt((centred**2).sum(axis=1).mean()))


@pytest.mark.parametrize("reflect", [False, True])
def test_align_recovers_rotation_and_shift_exactly_and_keeps_the_scale(reflect):
    previous = np.random.default_rng(0).normal(size=(50, 2))
    mirror = np.diag([1.0, -1.0]) if reflect else np.eye(2)
    moved = previous @ mirror @ rotation(1.1).T + [10.0, -4.0]  # (50, 2)
    np.testing.assert_allclose(align(moved, previous), previous, atol=1e-10)
    larger = align(moved * 3.5, previous)  # the new layout's own scale stays: never fitted to the old one
    np.testing.assert_allclose(larger, (previous - previous.mean(axis=0)) * 3.5 + previous.mean(axis=0), atol=1e-10)


def test_align_least_squares_on_noisy_copy_and_collapsed_layout():
    rng = np.random.default_rng(1)
    previous = rng.normal(size=(100, 2))
    noisy = (previous + rng.normal(scale=0.05, size=(100, 2))) @ rotation(-2.0).T * 0.1
    aligned = align(noisy, previous)
    centre = previous.mean(axis=0)
    assert np.abs(aligned - ((previous - centre) * 0.1 + centre)).mean() < 0.01  # rotated back, still a tenth
    assert rms_radius(aligned) == pytest.approx(rms_radius(noisy), rel=1e-12)
    collapsed = align(np.zeros((100, 2)), previous)
    np.testing.assert_allclose(collapsed, np.broadcast_to(previous.mean(axis=0), (100, 2)))
    with pytest.raises(ValueError, match="previous: shape"):
        align(np.zeros((3, 2)), np.zeros((4, 2)))


def test_aligned_pca_keeps_the_true_spread_over_a_run_of_snapshots():
    """40 snapshots of a slowly changing 8-D embedding, each PCA aligned to the one before (as training
    stores them): the spread stays that of the true PCA. A least-squares scale shrank it to 0.73 here."""
    rng = np.random.default_rng(4)
    embeddings = blobs(300, dim=8, classes=5) * 0.1
    layout = None
    for _ in range(40):
        embeddings = embeddings + rng.normal(scale=0.05, size=embeddings.shape).astype(np.float32)
        layout = project(embeddings, "pca", previous=layout)
        assert rms_radius(layout) == pytest.approx(rms_radius(project(embeddings, "pca")), rel=1e-6)


def test_mean_displacement_ignores_scale_and_shift_not_rotation():
    a = np.array([[1.0, 0.0], [-1.0, 0.0]])  # unit RMS radius already
    assert mean_displacement(a, a * 7 + 3) == pytest.approx(0.0)
    assert mean_displacement(a, -a) == pytest.approx(2.0)  # every point crosses the diameter


# --- project ----------------------------------------------------------------------------------


def test_pca_matches_sklearn_up_to_axis_signs():
    emb = blobs(120)
    expected = PCA(n_components=2).fit_transform(emb)
    layout = project(emb, "pca")
    assert layout.dtype == np.float32 and layout.shape == (120, 2)
    signs = np.sign((layout * expected).sum(axis=0))
    np.testing.assert_allclose(layout, expected * signs, rtol=1e-4, atol=1e-4)


def test_pca_axis_sign_follows_the_largest_loading():
    emb = anisotropic()
    for data in (emb, -emb):  # negating the data must flip the picture, not be undone by the solver
        layout = project(data, "pca")
        assert np.corrcoef(layout[:, 0], data[:, 0])[0, 1] > 0.9
        assert np.corrcoef(layout[:, 1], data[:, 1])[0, 1] > 0.9


def test_pca_aligned_to_previous_does_not_jump_when_an_axis_flips():
    emb = anisotropic()
    before = project(emb, "pca")
    flipped = emb * [-1, 1, 1, 1, 1, 1] + np.random.default_rng(1).normal(scale=0.01, size=emb.shape)
    assert mean_displacement(project(flipped, "pca"), before) > 1.0  # the raw frame is mirrored
    assert mean_displacement(project(flipped, "pca", previous=before), before) < 0.02


def test_pca_layouts_of_perturbed_snapshots_stay_close():
    rng = np.random.default_rng(2)
    snapshots = [blobs(200)]
    for _ in range(4):
        snapshots.append(snapshots[-1] + rng.normal(scale=0.05, size=snapshots[-1].shape).astype(np.float32))
    layout = project(snapshots[0], "pca")
    for emb in snapshots[1:]:
        nxt = project(emb, "pca", previous=layout)
        assert mean_displacement(nxt, layout) < 0.05
        layout = nxt


def test_umap_consecutive_snapshots_stay_close():
    threads = [threading.Thread(target=warm_up) for _ in range(2)]  # as the app does, off the main thread
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    warm_up()  # idempotent
    emb = blobs(300, dim=32, classes=10)
    first = project(emb, "umap")
    noisy = emb + np.random.default_rng(3).normal(scale=0.05, size=emb.shape).astype(np.float32)
    second = project(noisy, "umap", previous=first)
    assert mean_displacement(second, first) < 0.3  # about 0.17; clusters keep their places
    fresh = align(project(noisy, "umap"), first)  # same seed, no warm start: clusters land elsewhere
    assert mean_displacement(fresh, first) > 0.5  # about 0.8 to 1.1


@pytest.mark.parametrize("method", sorted(PROJECTIONS))
def test_every_projection_gives_a_finite_aligned_float32_layout(method):
    emb = blobs(60)
    first = project(emb, method, seed=1)
    second = project(emb, method, previous=first, seed=1)
    for layout in (first, second):
        assert layout.shape == (60, 2) and layout.dtype == np.float32 and np.isfinite(layout).all()
    np.testing.assert_allclose(second.mean(axis=0), first.mean(axis=0), atol=1e-3)  # aligned: same centre


@pytest.mark.parametrize("method", sorted(PROJECTIONS))
@pytest.mark.parametrize("n", [1, 3, 40])
def test_tiny_and_collapsed_inputs_do_not_crash(method, n):
    for emb in (np.random.default_rng(0).normal(size=(n, 8)), np.ones((n, 8))):
        layout = project(emb, method)
        assert layout.shape == (n, 2) and np.isfinite(layout).all()
        assert np.isfinite(project(emb, method, previous=np.ones((n, 2)))).all()


def test_two_dimensional_embeddings_come_back_as_a_float32_copy():
    emb = np.random.default_rng(0).normal(size=(10, 2))
    layout = project(emb, "umap", previous=np.zeros((10, 2)))
    np.testing.assert_allclose(layout, emb, rtol=1e-6)
    assert layout.dtype == np.float32
    layout[0, 0] = 99.0
    assert emb[0, 0] != 99.0
    np.testing.assert_array_equal(project(np.arange(4.0)[:, None], "pca"), [[0, 0], [1, 0], [2, 0], [3, 0]])


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"method": "isomap"}, "method: unknown 'isomap'"),
        ({"previous": np.zeros((5, 2))}, "previous: expected shape (4, 2)"),
        ({"previous": np.full((4, 2), np.nan)}, "previous: contains NaN"),
        ({"embeddings": np.zeros(4)}, "embeddings: expected a non-empty (E, D) array"),
        ({"embeddings": np.full((4, 3), np.inf)}, "embeddings: contain NaN"),
    ],
)
def test_bad_input_names_the_field(kwargs, words):
    arguments = {"embeddings": np.zeros((4, 3)), "method": "pca"} | kwargs
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        project(**arguments)


def test_live_projector_serves_the_newest_step_and_skips_stale_ones():
    from contrast_core.projection import LiveProjector

    rng = np.random.default_rng(0)
    snapshots = {step: rng.normal(size=(120, 8)).astype(np.float32) for step in (1, 2, 3, 4)}
    projector = LiveProjector()
    assert projector.get("run", 1, snapshots[1], "pca") is None  # nothing finished yet: never blocks
    for step in (2, 3, 4):  # asked faster than served: only the newest matters
        projector.get("run", step, snapshots[step], "pca")
    deadline = time.monotonic() + 60
    while (found := projector.get("run", 4, snapshots[4], "pca")) is None or found[0] < 4:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    step, layout = found
    assert step == 4 and layout.shape == (120, 2)
    # The layout is the step-4 embeddings' PCA, up to the alignment to the previous frame.
    reference = project(snapshots[4], "pca")
    assert np.allclose(align(layout, reference), reference, atol=1e-3)
    assert not np.allclose(align(project(snapshots[3], "pca"), reference), reference, atol=1e-3)


class ScriptedProject:
    """Stands in for `project` in the projector's thread: records each call, returns when released."""

    def __init__(self, fail: bool = False, released: int = 0):
        self.calls, self.fail, self.release = [], fail, threading.Semaphore(released)

    def __call__(self, embeddings, method, previous=None, seed=0):
        self.calls.append((method, int(embeddings[0, 0])))  # snapshots are filled with a tag
        assert self.release.acquire(timeout=30)
        if self.fail:
            raise ValueError("bad snapshot\nsecond line")
        return np.zeros((len(embeddings), 2))


def tagged(tag: int) -> np.ndarray:
    return np.full((10, 8), tag, dtype=np.float32)


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def scripted(monkeypatch):
    """A LiveProjector factory whose projections are scripted and whose UMAP warm-up is free."""
    from contrast_core import projection

    monkeypatch.setattr(projection, "warm_up", lambda: None)

    def make(fake: ScriptedProject):
        monkeypatch.setattr(projection, "project", fake)
        return projection.LiveProjector(runner=projection.call_here)

    return make


def test_live_projector_computes_a_step_once_while_pages_keep_asking(scripted):
    fake = ScriptedProject()
    projector = scripted(fake)
    assert projector.waiting("run", "tsne") is None
    for _ in range(3):
        projector.get("run", 7, tagged(7), "tsne")
    wait_until(lambda: fake.calls)
    for _ in range(3):  # a page polling while it computes (every 0.5 s) must not queue it again
        assert projector.get("run", 7, tagged(7), "tsne") is None
    assert projector.waiting("run", "tsne") >= 0
    fake.release.release(5)
    wait_until(lambda: projector.get("run", 7, tagged(7), "tsne") is not None)
    time.sleep(0.2)
    assert fake.calls == [("tsne", 7)]
    assert projector.waiting("run", "tsne") is None and projector.error("run", "tsne") is None


def test_live_projector_serves_the_oldest_ask_first(scripted):
    fake = ScriptedProject()
    projector = scripted(fake)
    projector.get("a", 1, tagged(11), "umap")
    wait_until(lambda: fake.calls)  # a's step 1 is computing
    projector.get("b", 1, tagged(21), "tsne")  # a finished run's t-SNE, asked once
    projector.get("a", 2, tagged(12), "umap")  # a live run asks again at every snapshot
    fake.release.release(3)
    wait_until(lambda: len(fake.calls) == 3)
    assert [tag for _, tag in fake.calls] == [11, 21, 12]


def test_live_projector_does_not_hold_tsne_behind_the_umap_compilation(scripted, monkeypatch):
    from contrast_core import projection

    compiled = threading.Event()
    monkeypatch.setattr(projection, "warm_up", lambda: compiled.wait(30))
    fake = ScriptedProject(released=10)
    projector = scripted(fake)
    projector.get("run", 1, tagged(1), "umap")  # compiling (held here until `compiled` is set)
    projector.get("run", 1, tagged(1), "tsne")
    wait_until(lambda: projector.get("run", 1, tagged(1), "tsne") is not None)  # waited behind it before
    assert projector.get("run", 1, tagged(1), "umap") is None and projector.waiting("run", "umap") > 0
    compiled.set()
    wait_until(lambda: projector.get("run", 1, tagged(1), "umap") is not None)
    assert fake.calls == [("tsne", 1), ("umap", 1)]


def test_live_projector_reports_a_failure_and_does_not_retry_the_same_step(scripted):
    fake = ScriptedProject(fail=True, released=10)
    projector = scripted(fake)
    projector.get("run", 3, tagged(3), "tsne")
    wait_until(lambda: projector.error("run", "tsne") is not None)
    assert projector.error("run", "tsne") == "tsne: bad snapshot"
    assert projector.waiting("run", "tsne") is None
    for _ in range(3):
        assert projector.get("run", 3, tagged(3), "tsne") is None
    time.sleep(0.2)
    assert fake.calls == [("tsne", 3)]
    projector.get("run", 4, tagged(4), "tsne")  # a newer snapshot is tried afresh
    wait_until(lambda: len(fake.calls) == 2)
    assert fake.calls[-1] == ("tsne", 4)


def test_tsne_runs_on_at_most_tsne_threads(monkeypatch):
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_info

    from contrast_core import projection

    seen = []
    real = TSNE.fit_transform

    def spy(self, x):
        seen.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp")
        return real(self, x)

    monkeypatch.setattr(TSNE, "fit_transform", spy)
    monkeypatch.setattr(projection, "TSNE_THREADS", 1)
    project(blobs(40), "tsne")
    assert seen and max(seen) == 1


def test_umap_and_tsne_take_their_own_settings(monkeypatch):
    import types

    from contrast_core import projection

    seen = {}

    class FakeUMAP:  # umap-learn's interface, without its 20 s of compilation
        def __init__(self, **kwargs):
            seen.update(kwargs)

        def fit_transform(self, x):
            return np.zeros((len(x), 2))

    monkeypatch.setattr(projection, "_umap_module", lambda: types.SimpleNamespace(UMAP=FakeUMAP))
    x = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    project(x, "umap", n_neighbors=7, min_dist=0.5)
    assert (seen["n_neighbors"], seen["min_dist"]) == (7, 0.5)
    project(x, "umap")
    assert (seen["n_neighbors"], seen["min_dist"]) == (15, 0.1)  # umap-learn's defaults
    from sklearn import manifold

    perplexities = []
    real = manifold.TSNE

    def tsne(**kwargs):
        perplexities.append(kwargs["perplexity"])
        return real(**kwargs)

    monkeypatch.setattr(manifold, "TSNE", tsne)
    project(x, "tsne", perplexity=5)
    project(x, "tsne")
    assert perplexities == [5.0, 13.0]  # the default 30, capped below (40 - 1) / 3


def test_a_child_process_answers_says_why_it_failed_and_comes_back_after_it_is_killed():
    import os
    import signal

    from contrast_core.projection import ChildProcess

    child = ChildProcess("t-SNE")
    x = np.random.default_rng(0).normal(size=(30, 5)).astype(np.float32)
    assert np.allclose(child(project, x, "pca"), project(x, "pca"))  # pickled there and back
    with pytest.raises(RuntimeError, match=r"^method: unknown 'nope'"):
        child(project, x, "nope")
    pid = child._proc.pid
    assert child(os.getpid) == pid  # the same child served every call
    with pytest.raises(RuntimeError, match="the t-SNE process stopped"):
        child(os.kill, pid, signal.SIGKILL)  # killed while it works on a call
    assert child(os.getpid) not in (pid, os.getpid())  # a new child


def test_umap_learn_s_compiled_code_is_kept_on_disk_for_the_next_process():
    """Without numba's cache each new process compiled umap-learn's fit again (about 7 s here)."""
    from contrast_core import projection

    umap = projection._umap_module()
    project(np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32), "umap")
    for dispatcher in (umap.umap_.smooth_knn_dist, umap.umap_.compute_membership_strengths):
        index = Path(dispatcher._cache._cache_file._index_path)  # numba's NullCache has no file: caching off
        assert index.exists(), dispatcher
