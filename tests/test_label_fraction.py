"""Semi-supervised augmented views: a `label_fraction` of each class labelled, the other items each a class
of its own. At 0 the batches and the loss are the self-supervised sampler's (NT-Xent), at 1 SupCon over
two views with every class (Khosla et al. 2020); in between, labelled views of a class are positives."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from streamlit.testing.v1 import AppTest

from contrast_core import losses
from contrast_core.__main__ import main
from contrast_core.augment import augment
from contrast_core.config import ConfigError, RunConfig
from contrast_core.samplers import Batch, build, labelled_items
from contrast_core.train import Trainer

LABELS = torch.arange(120) // 2 % 6  # 6 classes of 20 rows
POOL = torch.arange(0, 120, 2)  # 60 rows may be drawn: 10 per class
X = torch.rand(120, 1, 8, 8, generator=torch.Generator().manual_seed(0))  # images for the augmentations
APP = str(Path(__file__).resolve().parent.parent / "app.py")


def views_sampler(label_fraction=None, batch_size=16, seed=0, pool=POOL, labels=LABELS):
    return build("augmented-views", pool, labels, batch_size, label_fraction=label_fraction, seed=seed)


def embed(model, batch, g):
    """The embeddings of a batch as a training step makes them: both views augmented, then the model."""
    x = augment(X[batch.index], 0.5, g)
    return model(x.to(next(model.parameters()).dtype))


def model():
    """A small encoder in float64: the reductions hold to rounding, which float64 keeps far below any test."""
    torch.manual_seed(0)
    layers = torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)
    return torch.nn.Sequential(*layers).double()


def loss_and_grads(net, loss, mined):
    value = loss(*mined)
    return value.detach(), torch.autograd.grad(value, list(net.parameters()), retain_graph=True)


def khosla_supcon(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """SupCon L_out written out anchor by anchor, cosine similarities (the paper's formula, eq. 2)."""
    s = F.normalize(z, dim=1) @ F.normalize(z, dim=1).T / temperature
    terms = []
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        positives = [p for p in others if labels[p] == labels[i]]
        if positives:
            log_denominator = torch.logsumexp(s[i, others], 0)
            terms.append(-torch.stack([s[i, p] - log_denominator for p in positives]).mean())
    return torch.stack(terms).mean()


# --- the labelled subset ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction, per_class", [(0.0, 0), (0.1, 1), (0.26, 3), (0.5, 5), (1.0, 10)])
def test_each_class_keeps_its_share_of_labelled_items(fraction, per_class):
    chosen = labelled_items(LABELS[POOL], fraction, seed=3)
    assert torch.bincount(LABELS[POOL][chosen], minlength=6).tolist() == [per_class] * 6
    assert torch.equal(chosen, labelled_items(LABELS[POOL], fraction, seed=3))  # seeded


def test_the_labelled_subset_is_uniform_within_a_class():
    counts = sum(labelled_items(LABELS[POOL], 0.3, seed).long() for seed in range(600))  # 3 of 10: 180 each
    assert counts.min() > 0.8 * 180 and counts.max() < 1.2 * 180


# --- label_fraction 0: the self-supervised sampler ---------------------------------------------------------


@pytest.mark.parametrize("distance, temperature", [("cosine", 0.1), ("cosine", 0.5), ("euclidean", 0.2)])
def test_fraction_zero_is_the_self_supervised_sampler_and_nt_xent(distance, temperature):
    plain, semi = views_sampler(), views_sampler(label_fraction=0.0)
    g_plain, g_semi = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    net = model()
    for _ in range(3):
        expected, batch = plain.draw(g_plain), semi.draw(g_semi)
        assert torch.equal(batch.index, expected.index) and torch.equal(batch.labels, expected.labels)
        assert batch.views and batch.same is None
        z_plain, z_semi = embed(net, expected, g_plain), embed(net, batch, g_semi)
        assert torch.equal(z_plain, z_semi)  # the generators went the same way: same augmentations
        nt_xent = losses.build("nt-xent", distance, 0.0, temperature)
        supcon = losses.build("supcon", distance, 0.0, temperature)
        value, grads = loss_and_grads(net, supcon, semi.mine(z_semi, batch, "labels"))
        value_ref, grads_ref = loss_and_grads(net, nt_xent, plain.mine(z_plain, expected, "views"))
        torch.testing.assert_close(value, value_ref, rtol=1e-12, atol=1e-12)
        for grad, grad_ref in zip(grads, grads_ref, strict=True):
            torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-12)


def test_a_run_at_fraction_zero_trains_as_nt_xent():
    common = dict(sampler="augmented-views", augment=0.5, temperature=0.2, batch_size=32, embedding_dim=8,
                  eval_size=50, steps=3, device="cpu")  # fmt: skip
    semi = Trainer(RunConfig(loss="supcon", label_fraction=0.0, **common), graphs=False)
    plain = Trainer(RunConfig(loss="nt-xent", **common), graphs=False)
    for _ in range(3):
        torch.testing.assert_close(semi.train_step()["loss"], plain.train_step()["loss"], rtol=1e-5, atol=1e-6)
    for p_semi, p_plain in zip(semi.model.parameters(), plain.model.parameters(), strict=True):
        torch.testing.assert_close(p_semi, p_plain, rtol=1e-4, atol=1e-6)


# --- label_fraction 1: supervised SupCon over two views ----------------------------------------------------


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_fraction_one_is_supcon_over_two_views_with_every_class(temperature):
    plain, semi = views_sampler(), views_sampler(label_fraction=1.0)
    g_plain, g_semi = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    expected, batch = plain.draw(g_plain), semi.draw(g_semi)
    assert torch.equal(batch.index, expected.index)  # the same items as the self-supervised sampler
    classes = LABELS[batch.index]  # (2N,) both views of each item
    assert torch.equal(losses.positive_mask(batch.labels), losses.positive_mask(classes))
    net = model()
    z = embed(net, batch, g_semi)
    supcon = losses.build("supcon", "cosine", 0.0, temperature)
    value, grads = loss_and_grads(net, supcon, semi.mine(z, batch, "labels"))
    # The supervised miner (batch-all's, labels kind) given the two views with their classes: the very same loss
    batch_all = build("batch-all", POOL, LABELS, 16)
    value_ref, grads_ref = loss_and_grads(net, supcon, batch_all.mine(z, Batch(batch.index, classes), "labels"))
    assert torch.equal(value, value_ref) and all(map(torch.equal, grads, grads_ref))
    # ... and the paper's formula, anchor by anchor
    value_paper, grads_paper = loss_and_grads(net, lambda z, _: khosla_supcon(z, classes, temperature), (z, None))
    torch.testing.assert_close(value, value_paper, rtol=1e-12, atol=1e-12)
    for grad, grad_paper in zip(grads, grads_paper, strict=True):
        torch.testing.assert_close(grad, grad_paper, rtol=1e-10, atol=1e-12)


# --- in between: which views are positives ----------------------------------------------------------------


def test_labelled_views_of_a_class_are_positives_and_an_unlabelled_item_only_of_itself():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])  # half of each class labelled: two items of each
    s = views_sampler(label_fraction=0.5, batch_size=8, pool=torch.arange(8), labels=labels)  # every item drawn
    batch = s.draw(torch.Generator().manual_seed(0))
    item = batch.index  # (16,) the item each view shows
    labelled = labelled_items(labels, 0.5, seed=0)
    assert labelled.sum() == 4 and torch.bincount(labels[labelled]).tolist() == [2, 2]
    expected = torch.zeros(16, 16, dtype=torch.bool)
    for r in range(16):
        for c in range(16):
            same_item = item[r] == item[c]
            same_class = labelled[item[r]] and labelled[item[c]] and labels[item[r]] == labels[item[c]]
            expected[r, c] = r != c and bool(same_item or same_class)
    assert torch.equal(losses.positive_mask(batch.labels), expected)
    for r in range(16):  # an unlabelled view: its other view is its only positive
        if not labelled[item[r]]:
            assert expected[r].nonzero().flatten().tolist() == [(r + 8) % 16]
        else:  # a labelled view: its other view and both views of its class's other labelled item
            assert expected[r].sum() == 3
    z = torch.randn(16, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    supcon = losses.build("supcon", "cosine", 0.0, 0.3)
    value = supcon(*s.mine(z, batch, "labels"))
    torch.testing.assert_close(value, khosla_supcon(z, batch.labels, 0.3), rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(value, z)
    (grad_paper,) = torch.autograd.grad(khosla_supcon(z, batch.labels, 0.3), z)
    torch.testing.assert_close(grad, grad_paper, rtol=1e-4, atol=1e-6)


def test_the_batches_are_the_same_at_every_fraction():
    draws = [views_sampler(f).draw(torch.Generator().manual_seed(2)).index for f in (None, 0.0, 0.3, 1.0)]
    assert all(torch.equal(index, draws[0]) for index in draws)


# --- the run: config, held-out metrics ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, words",
    [
        ({"loss": "nt-xent"}, "the nt-xent loss takes no labels on augmented-views (use supcon)"),
        ({"loss": "contrastive"}, "takes no labels"),
        ({"loss": "supcon", "sampler": "batch-all"}, "labels every item or none (use augmented-views)"),
        ({"loss": "supcon", "dataset": "diabetes"}, "needs classes"),
        ({"loss": "supcon", "label_fraction": None}, "needs one"),
        ({"loss": "supcon", "label_fraction": 1.5}, "at most 1"),
        ({"loss": "supcon", "label_fraction": -0.1}, "at least 0"),
    ],
)
def test_bad_label_fractions_are_refused_naming_the_field(values, words):
    with pytest.raises(ConfigError) as refused:
        RunConfig.check(**{"sampler": "augmented-views", "augment": 0.5, "label_fraction": 0.5} | values)
    assert words in refused.value.errors["label_fraction"]


def test_supcon_on_random_pairs_points_to_a_label_fraction():
    with pytest.raises(ConfigError) as refused:
        RunConfig.check(loss="supcon", sampler="random-pairs")
    assert "augmented-views with a label_fraction" in refused.value.errors["sampler"]


def test_a_run_labels_only_training_items_and_measures_on_held_out_ones():
    config = RunConfig.check(loss="supcon", sampler="augmented-views", augment=0.5, label_fraction=0.1,
                             batch_size=32, eval_size=50, steps=1, device="cpu")  # fmt: skip
    assert RunConfig.model_validate_json(config.model_dump_json()) == config
    trainer = Trainer(config, graphs=False)
    data, sampler = trainer.data, trainer.sampler
    labelled = sampler.pool[sampler.item_class >= 0]
    counts = torch.bincount(data.y[labelled], minlength=data.num_classes).float()
    share = counts / torch.bincount(data.y[data.train_index], minlength=data.num_classes)
    assert ((share - 0.1).abs() < 0.01).all()  # each class's tenth, rounded
    assert not torch.isin(data.eval_index, sampler.pool).any()  # the metrics' items are never drawn
    assert torch.isfinite(trainer.train_step()["loss"])


# --- the Playground and the command line -------------------------------------------------------------------


def test_the_playground_shows_the_labelled_share_only_where_it_applies(queue):
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not [s for s in at.slider if s.key == "cfg.label_fraction"]  # the first recipe: contrastive pairs
    at.selectbox(key="cfg.loss").set_value("supcon").run()
    at.selectbox(key="cfg.sampler").set_value("augmented-views").run()
    at.slider(key="cfg.augment").set_value(0.5).run()
    share = at.slider(key="cfg.label_fraction")
    assert (share.min, share.max, share.value) == (0.0, 1.0, 0.1) and not at.error
    share.set_value(0.5).run()
    next(b for b in at.button if b.label == "Train").click().run()
    assert queue.store.list_runs()[0].config["label_fraction"] == 0.5
    at.selectbox(key="cfg.loss").set_value("nt-xent").run()
    assert not [s for s in at.slider if s.key == "cfg.label_fraction"] and not at.error


def test_the_command_line_takes_label_fraction(capsys):
    assert main(["train", "--steps", "1", "--loss", "nt-xent", "--sampler", "augmented-views", "--augment", "0.5",
                 "--label-fraction", "0.5"]) == 2  # fmt: skip
    assert "--label-fraction: the nt-xent loss takes no labels" in capsys.readouterr().err
