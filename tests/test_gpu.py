"""CUDA-only behaviour: graphed steps, device round trips. Skipped where there is no GPU."""

import pytest
import torch

from contrast_core.config import RunConfig
from contrast_core.train import GRAPH_WARMUP_STEPS, Trainer, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")

GRAPHABLE = [
    dict(loss="contrastive", sampler="random-pairs"),
    dict(loss="cosine-embedding", sampler="random-pairs", margin=0.0),
    dict(loss="contrastive", sampler="random-pairs", model="cnn", dataset="digits-60k"),
    dict(loss="contrastive", sampler="random-pairs", model="vae", embedding_dim=4),
    dict(loss="nt-xent", sampler="augmented-views", augment=0.5, distance="cosine"),
    dict(loss="contrastive", sampler="augmented-views", augment=0.5),
    dict(loss="contrastive", sampler="batch-all"),
    dict(loss="contrastive", sampler="random-pairs", precision="bfloat16"),
    dict(loss="contrastive", sampler="random-pairs", model="vae", precision="bfloat16", embedding_dim=4),
]


@pytest.mark.parametrize("knobs", GRAPHABLE, ids=lambda k: "-".join(map(str, k.values())))
def test_graphed_steps_match_eager_steps(knobs, monkeypatch):
    """Replaying the captured step draws the same batches and makes the same updates as eager steps."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)  # same convolution algorithms both ways
    config = RunConfig(device="cuda", batch_size=64, eval_size=50, seed=3, **knobs)
    graphed, eager = Trainer(config), Trainer(config, graphs=False)
    assert graphed.graphed and not eager.graphed
    for step in range(GRAPH_WARMUP_STEPS + 6):
        got = {k: v.item() for k, v in graphed.train_step().items()}
        want = {k: v.item() for k, v in eager.train_step().items()}
        assert got == pytest.approx(want, rel=1e-3, abs=1e-6), f"step {step + 1}"
    assert graphed._graph is not None  # the later steps were replays
    for p, q in zip(graphed.model.parameters(), eager.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)


def test_shapes_that_change_stay_eager():
    trainer = Trainer(RunConfig(device="cuda", loss="triplet", sampler="semi-hard", steps=10))
    assert not trainer.graphed
    for _ in range(5):
        trainer.train_step()
    assert trainer._graph is None


def test_graphed_run_resumes_on_cpu_and_back():
    config = RunConfig(device="cuda", steps=20, batch_size=32, eval_size=40, checkpoint_every=10, snapshot_every=20)
    states = {}
    train(config, lambda e: e.kind == "checkpoint" and states.setdefault(e.step, e.data["state"]))
    on_cpu = train(config.model_copy(update={"device": "cpu"}), resume=states[10])
    assert on_cpu["step"] == 20 and on_cpu["status"] == "finished"
    cpu_states = {}
    cpu_config = config.model_copy(update={"device": "cpu", "steps": 10})
    train(cpu_config, lambda e: e.kind == "checkpoint" and cpu_states.setdefault(e.step, e.data["state"]))
    back = train(config, resume=cpu_states[10])
    assert back["step"] == 20 and back["device"] != "cpu"


def test_graphed_run_reaches_the_classic_quality():
    result = train(RunConfig(device="cuda", steps=2000, seed=0))
    assert result["metrics"]["rand_index"] > 0.9
