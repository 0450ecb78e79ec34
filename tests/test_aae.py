"""The adversarial autoencoder: its terms against torch's BCE, its prior, its alternating step, its
checkpoints, its quality on digits with and without a working discriminator, the CLI and the pages."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_app import button, chart, next_to, open_app, values, watch

from contrast_core import losses, models
from contrast_core.__main__ import main
from contrast_core.config import ConfigError, RunConfig
from contrast_core.projection import project
from contrast_core.train import Trainer
from ui.live import prior_points

# Quality runs: short, on one CPU thread (about 6 s each; two threads on a shared 2-core machine took 50 s).
QUALITY = dict(model="aae", steps=200, batch_size=64, eval_size=200, device="cpu", contrastive_weight=0.0)


# --- the terms --------------------------------------------------------------------------------------


def test_discriminator_and_generator_terms_are_torch_s_binary_cross_entropy():
    prior_logits = torch.tensor([2.0, -1.0, 0.5], requires_grad=True)
    code_logits = torch.tensor([-3.0, 0.0, 1.5], requires_grad=True)
    ours = losses.discriminator_loss(prior_logits, code_logits)
    bce = F.binary_cross_entropy_with_logits
    reference = bce(prior_logits, torch.ones(3)) + bce(code_logits, torch.zeros(3))
    assert ours.item() == pytest.approx(reference.item(), rel=1e-6)
    by_hand = -np.mean(np.log(1 / (1 + np.exp(-np.array([2.0, -1.0, 0.5]))))) - np.mean(
        np.log(1 - 1 / (1 + np.exp(-np.array([-3.0, 0.0, 1.5]))))
    )
    assert ours.item() == pytest.approx(by_hand, rel=1e-6)
    ours_grads = torch.autograd.grad(ours, (prior_logits, code_logits))
    reference_grads = torch.autograd.grad(reference, (prior_logits, code_logits))
    for mine, theirs in zip(ours_grads, reference_grads, strict=True):
        assert mine.numpy() == pytest.approx(theirs.numpy(), abs=1e-7)

    generator = losses.generator_loss(code_logits)
    reference = bce(code_logits, torch.ones(3))  # the codes labelled as the prior's: non-saturating
    assert generator.item() == pytest.approx(reference.item(), rel=1e-6)
    (mine,), (theirs,) = torch.autograd.grad(generator, code_logits), torch.autograd.grad(reference, code_logits)
    assert mine.numpy() == pytest.approx(theirs.numpy(), abs=1e-7)
    assert mine.numpy() == pytest.approx((torch.sigmoid(code_logits.detach()) - 1).numpy() / 3, abs=1e-7)


# --- the prior and the discriminator --------------------------------------------------------------


def test_mixture_means_lie_on_a_circle_in_2d_and_on_their_own_axes_in_more():
    circle = models.mixture_means(2, 4, radius=2.0)
    assert circle.numpy() == pytest.approx(np.array([[2, 0], [0, 2], [-2, 0], [0, -2]]), abs=1e-6)
    wide = models.mixture_means(3, 5)  # fewer axes than classes: the circle, in the first two axes
    assert torch.linalg.norm(wide, dim=1).numpy() == pytest.approx([models.MIXTURE_RADIUS] * 5)
    assert not wide[:, 2].any()
    axes = models.mixture_means(12, 10)
    assert axes.numpy() == pytest.approx(models.MIXTURE_RADIUS * np.eye(10, 12))


def test_prior_samples_come_from_n01_or_from_their_class_s_mode():
    g = torch.Generator().manual_seed(0)
    gaussian = models.Prior(2).sample(torch.zeros(20_000, dtype=torch.long), g).numpy()
    assert gaussian.mean(0) == pytest.approx([0, 0], abs=0.03)
    assert np.cov(gaussian.T) == pytest.approx(np.eye(2), abs=0.05)
    prior = models.Prior(2, classes=10)
    labels = torch.arange(10).repeat(2000)
    samples = prior.sample(labels, g)
    for c in (0, 3, 9):
        mine = samples[labels == c].numpy()
        assert mine.mean(0) == pytest.approx(prior.means[c].numpy(), abs=0.05)
        assert mine.std(0) == pytest.approx([models.MIXTURE_STD] * 2, abs=0.03)


def test_a_mixture_s_discriminator_sees_the_class_and_a_gaussian_s_does_not():
    torch.manual_seed(0)
    z = torch.randn(4, 2)
    conditioned = models.Discriminator(2, classes=3)
    assert conditioned(z, torch.tensor([0, 0, 0, 0])).shape == (4,)
    assert not torch.allclose(conditioned(z, torch.tensor([0, 0, 0, 0])), conditioned(z, torch.tensor([1, 1, 1, 1])))
    plain = models.Discriminator(2)
    assert torch.equal(plain(z), plain(z, torch.tensor([0, 1, 2, 0])))


# --- the step, the snapshot, the checkpoint -------------------------------------------------------


def test_a_step_reports_each_term_and_the_total_weighs_them():
    config = RunConfig(model="aae", steps=3, batch_size=16, eval_size=40, contrastive_weight=0.5,
                       adversarial_weight=2.0, device="cpu")  # fmt: skip
    terms = {name: value.item() for name, value in Trainer(config).train_step().items()}
    assert list(terms) == ["loss", "recon", "contrastive", "discriminator", "generator"]
    assert all(math.isfinite(value) for value in terms.values())
    expected = terms["recon"] + 0.5 * terms["contrastive"] + terms["discriminator"] + 2.0 * terms["generator"]
    assert terms["loss"] == pytest.approx(expected, rel=1e-5)
    assert terms["discriminator"] == pytest.approx(2 * math.log(2), abs=0.3)  # D starts near 1/2 on both


def test_the_generator_term_moves_the_encoder_and_nothing_else():
    """One step from the same start with and without the adversarial term: the reconstruction phase is the
    same, so the decoder ends equal; the encoder differs by the generator phase's update alone."""
    trained = {}
    for weight in (0.0, 1.0):
        config = RunConfig(model="aae", steps=2, batch_size=16, eval_size=40, adversarial_weight=weight, device="cpu")
        trainer = Trainer(config)
        trainer.train_step()
        trained[weight] = trainer
    without, with_ = trained[0.0], trained[1.0]
    for name, value in without.model.decoder.state_dict().items():
        assert torch.equal(value, with_.model.decoder.state_dict()[name]), name
    assert not all(torch.equal(a, b) for a, b in zip(without.model.encoder.parameters(),
                                                      with_.model.encoder.parameters(), strict=True))  # fmt: skip
    for a, b in zip(without.discriminator.parameters(), with_.discriminator.parameters(), strict=True):
        assert torch.equal(a, b)  # the discriminator's update comes before the generator's


def test_a_snapshot_holds_reconstructions_a_decoder_and_the_prior_s_samples():
    from contrast_core import decoding

    trainer = Trainer(RunConfig(model="aae", prior="mixture", steps=2, batch_size=16, eval_size=40, device="cpu"))
    trainer.train_step()
    arrays, found = trainer.snapshot()
    assert arrays["reconstructions"].shape == arrays["originals"].shape == (16, 1, 8, 8)
    assert "latent_grid" in arrays and np.isfinite(found["recon_mse"]) and "kl" not in found
    samples = arrays["prior_samples"]
    assert samples.shape == arrays["embeddings"].shape == (40, 2)
    means = trainer.prior.means.numpy()[arrays["labels"]]  # each sample near its item's class's mode
    assert np.linalg.norm(samples - means, axis=1).max() < 6 * models.MIXTURE_STD
    assert np.array_equal(trainer.snapshot()[0]["prior_samples"], samples)  # the same at every snapshot
    z = torch.randn(3, 2)
    trainer.model.eval()
    with torch.no_grad():  # the pages decode an AAE's codes as a VAE's
        assert decoding.decode(arrays, z.numpy()) == pytest.approx(trainer.model.decoder(z).numpy(), abs=1e-5)


def test_a_checkpoint_holds_the_discriminator_and_a_resumed_run_goes_on_exactly():
    config = RunConfig(model="aae", prior="mixture", steps=20, batch_size=16, eval_size=40, device="cpu")
    first = Trainer(config)
    for _ in range(10):
        first.train_step()
    state = first.state()
    assert {"discriminator", "discriminator_optimizer", "generator_optimizer"} <= state["adversary"].keys()
    fresh = Trainer(config)  # what a resume without the discriminator's state would start from
    resumed = Trainer(config, resume=state)
    for name, value in state["adversary"]["discriminator"].items():
        assert torch.equal(resumed.discriminator.state_dict()[name], value), name
    round_trip = resumed.state()["adversary"]
    for key in ("discriminator_optimizer", "generator_optimizer"):
        saved, loaded = state["adversary"][key]["state"], round_trip[key]["state"]
        assert saved.keys() == loaded.keys()
        assert all(torch.equal(saved[i][k], loaded[i][k]) for i in saved for k in saved[i])
    assert not torch.equal(fresh.discriminator.net[1].weight, resumed.discriminator.net[1].weight)
    for _ in range(10):
        a, b = first.train_step(), resumed.train_step()
        assert {k: v.item() for k, v in b.items()} == pytest.approx({k: v.item() for k, v in a.items()}, rel=1e-6)


SEMI_SUPERVISED = dict(loss="supcon", sampler="augmented-views", augment=0.5, label_fraction=0.5)


@pytest.mark.parametrize(
    "values, field",
    [
        (dict(model="aae", prior="mixture", dataset="diabetes"), "prior"),
        (dict(model="aae", prior="mixture", **SEMI_SUPERVISED), "prior"),
        (dict(model="aae", prior="uniform"), "prior"),
        (dict(model="aae", adversarial_weight=-1), "adversarial_weight"),
    ],
)
def test_bad_aae_settings_name_their_field(values, field):
    with pytest.raises(ConfigError) as caught:
        RunConfig.check(**values)
    assert list(caught.value.errors) == [field] and "\n" not in caught.value.errors[field]


def test_aae_knobs_on_another_model_are_noted_and_its_own_are_not():
    notes = RunConfig(model="mlp", prior="mixture", adversarial_weight=2).notes()
    assert any(n.startswith("prior") for n in notes) and any(n.startswith("adversarial_weight") for n in notes)
    assert RunConfig(model="aae", prior="mixture", adversarial_weight=2, contrastive_weight=3).notes() == []
    assert any(n.startswith("beta") for n in RunConfig(model="aae", beta=0.5).notes())


# --- quality: what a working discriminator gives ---------------------------------------------------


def _train(**config) -> tuple[np.ndarray, dict, dict]:
    """(held-out codes, snapshot metrics, the last step's terms) after a short run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = Trainer(RunConfig(**QUALITY | config))
        for _ in range(trainer.config.steps):
            terms = trainer.train_step()
            assert all(torch.isfinite(value) for value in terms.values())
        arrays, found = trainer.snapshot()
    finally:
        torch.set_num_threads(threads)
    return arrays["embeddings"], found, {name: value.item() for name, value in terms.items()}


@pytest.fixture(scope="module")
def without_adversary():
    """The same run with no adversarial term: the discriminator trains, but never moves the encoder
    (with adversarial_weight 0 the prior's choice changes nothing else)."""
    return _train(prior="mixture", adversarial_weight=0.0)


def test_the_mixture_prior_alone_sorts_digits_by_class(without_adversary):
    """No contrastive term: the classes' modes reach the codes only through the discriminator."""
    _, found, terms = _train(prior="mixture")
    _, baseline, _ = without_adversary
    assert found["knn_accuracy"] >= 0.85  # measured 0.925
    assert found["knn_accuracy"] - baseline["knn_accuracy"] >= 0.1  # measured 0.745 without
    assert 1.0 < terms["discriminator"] < 1.6  # near 2 log 2: the discriminator is kept guessing


def test_the_gaussian_prior_brings_the_codes_to_n01(without_adversary):
    codes, _, _ = _train(prior="gaussian")
    baseline, _, _ = without_adversary

    def gap(z):  # how far the codes' first two moments are from N(0, I)
        return np.linalg.norm(z.mean(0)) + np.linalg.norm(np.cov(z.T) - np.eye(z.shape[1]))

    assert gap(codes) < 1.2  # measured 0.7
    assert gap(baseline) > 5.0  # measured 16


# --- the command line and the pages ---------------------------------------------------------------


def test_prior_samples_are_drawn_in_the_embedding_s_layout():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(50, 6)) * [3, 2, 1, 0.5, 0.2, 0.1]
    config = {"loss": "contrastive", "distance": "euclidean"}
    pca = project(embeddings, "pca")
    same = prior_points({"embeddings": embeddings, "prior_samples": embeddings}, config, pca, "PCA")
    assert same == pytest.approx(pca, abs=1e-4)  # a sample where an item is lies where that item is drawn
    flat = {"embeddings": embeddings[:, :2], "prior_samples": embeddings[:5, :2] + 1}
    assert prior_points(flat, config, flat["embeddings"], "2-D") == pytest.approx(embeddings[:5, :2] + 1)
    assert prior_points({"embeddings": embeddings, "prior_samples": embeddings}, config, pca, "UMAP") is None


def test_train_aae_from_the_command_line_and_its_pages_render(queue, store, capsys):
    args = ["train", "--model", "aae", "--prior", "mixture", "--adversarial-weight", "1.5", "--embedding-dim", "4",
            "--steps", "12", "--batch-size", "16", "--eval-size", "40", "--snapshot-every", "6",
            "--device", "cpu", "--json", "--quiet", "--home", str(store.home)]  # fmt: skip
    assert main(args) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["config"]["model"] == "aae" and line["config"]["adversarial_weight"] == 1.5
    assert math.isfinite(line["recon_mse"]) and math.isfinite(line["knn_accuracy"])
    (run,) = store.list_runs()
    assert {"discriminator", "generator", "recon", "contrastive"} <= store.read_metrics(run.id, since=0)[-1].keys()

    at = watch(store, run.id)
    names = [t["name"] for t in chart(at, "Loss")["data"] if not t["name"].endswith("(raw)")]
    assert names == ["loss", "recon", "discriminator", "generator", "contrastive"]
    scatter = chart(at, "PCA of the 4-D embedding")
    prior = scatter["data"][0]  # under the embedding's points
    assert prior["name"] == "prior samples" and len(values(prior["x"])) == 40
    assert any("reconstructions (bottom)" in image.captions[0] for image in at.image)
    for page in ("runs", "compare", "explore"):
        at = open_app(page)
        assert not at.exception, (page, [e.value for e in at.exception])


def test_the_playground_s_aae_controls_reach_the_run_and_a_mixture_without_classes_is_refused(queue, store):
    at = open_app()
    assert "aae" in at.selectbox(key="cfg.model").options
    at.selectbox(key="cfg.model").set_value("aae").run()
    assert at.selectbox(key="cfg.prior").options == ["gaussian", "mixture"]
    at.number_input(key="cfg.adversarial_weight").set_value(2.0).run()
    at.selectbox(key="cfg.prior").set_value("mixture").run()
    at.selectbox(key="cfg.dataset").set_value("diabetes").run()
    message = next_to(at, "cfg.prior")
    assert type(message).__name__ == "Error" and "continuous target" in message.value
    assert button(at, "Train").disabled
    at.selectbox(key="cfg.dataset").set_value("digits").run()
    button(at, "Train").click().run()
    config = store.get_run(at.session_state["playground_run"]).config
    assert (config["model"], config["prior"], config["adversarial_weight"]) == ("aae", "mixture", 2.0)
