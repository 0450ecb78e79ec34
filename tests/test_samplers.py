import pytest
import torch

from contrast_core.distances import build as distance
from contrast_core.samplers import SAMPLERS, ClassIndex, build

LABELS = torch.arange(60) % 5  # 5 classes of 12 rows
POOL = torch.arange(0, 60, 2)  # every other row may be drawn (30 rows, 6 per class)


def sampler(name, batch_size=20, m=4, metric="euclidean", margin=1.0):
    s = build(name, POOL, LABELS, batch_size, m)
    s.distance, s.margin = distance(metric), margin
    return s


def test_class_index_draws_only_from_the_class():
    index = ClassIndex(LABELS[POOL])
    g = torch.Generator().manual_seed(0)
    classes = torch.arange(5).repeat_interleave(200)
    rows = index.draw(classes, g)
    assert torch.equal(LABELS[POOL][rows], classes)
    assert len(rows.unique()) == 30  # every row of every class is reachable


def paired_rows(s, batch):
    """The dataset rows of each pair's two sides, as the miner pairs them (embedding = row id)."""
    first, second, _ = s.mine(batch.index[:, None].float(), batch, "pairs")
    return first[:, 0].long(), second[:, 0].long()


def test_random_pairs_are_half_similar_and_labelled_right():
    s = sampler("random-pairs", batch_size=200)
    batch = s.draw(torch.Generator().manual_seed(0))
    assert len(batch.index) == 400 and batch.same.shape == (200,)
    assert batch.same.sum().item() == 100
    assert set(batch.index.tolist()) <= set(POOL.tolist())
    first, second = paired_rows(s, batch)
    assert torch.equal((LABELS[first] == LABELS[second]).long(), batch.same)
    assert torch.equal(batch.labels, LABELS[batch.index])


def test_random_pairs_negatives_cover_other_classes_uniformly():
    s = sampler("random-pairs", batch_size=4000)
    batch = s.draw(torch.Generator().manual_seed(1))
    first, second = paired_rows(s, batch)
    neg = batch.same == 0
    shift = (LABELS[second[neg]] - LABELS[first[neg]]) % 5
    counts = torch.bincount(shift, minlength=5)
    assert counts[0] == 0 and counts[1:].min() > 0.8 * counts[1:].max()


@pytest.mark.parametrize("name", ["batch-all", "batch-hard", "semi-hard"])
def test_class_balanced_batches_have_m_per_class(name):
    batch = sampler(name, batch_size=12, m=4).draw(torch.Generator().manual_seed(0))
    counts = torch.bincount(batch.labels, minlength=5)
    assert sorted(counts.tolist()) == [0, 0, 4, 4, 4]
    assert torch.equal(batch.labels, LABELS[batch.index])


def test_class_balanced_batch_keeps_its_size_with_few_classes():
    batch = sampler("batch-all", batch_size=20, m=2).draw(torch.Generator().manual_seed(0))
    assert torch.bincount(batch.labels, minlength=5).tolist() == [4, 4, 4, 4, 4]  # 5 classes x 4, not 5 x 2


def test_batch_all_mines_every_valid_triplet_and_pair():
    s = sampler("batch-all", batch_size=8, m=4)
    batch = s.draw(torch.Generator().manual_seed(0))
    z = torch.randn(8, 2)
    a, p, n = s.mine(z, batch, "triplets")
    assert len(a) == 8 * 3 * 4  # each anchor: 3 positives x 4 negatives
    x1, x2, same = s.mine(z, batch, "pairs")
    assert len(same) == 28 and same.sum() == 2 * 6  # C(8, 2) pairs, C(4, 2) positives per class


def test_batch_hard_picks_farthest_positive_and_closest_negative():
    s = sampler("batch-hard")
    from contrast_core.samplers import Batch

    labels = torch.tensor([0, 0, 0, 1, 1])
    z = torch.tensor([[0.0], [1.0], [3.0], [3.5], [10.0]])
    batch = Batch(torch.arange(5), labels)
    a, p, n = s.mine(z, batch, "triplets")
    assert a[:, 0].tolist() == [0.0, 1.0, 3.0, 3.5, 10.0]
    assert p[:, 0].tolist() == [3.0, 3.0, 0.0, 10.0, 3.5]
    assert n[:, 0].tolist() == [3.5, 3.5, 3.5, 3.0, 3.0]


def test_semi_hard_triplets_satisfy_the_condition():
    s = sampler("semi-hard", margin=1.0)
    from contrast_core.samplers import Batch

    labels = torch.tensor([0, 0, 1, 1])
    z = torch.tensor([[0.0], [1.0], [1.5], [5.0]])  # d(0,1) = 1: negative 2 at 1.5 is semi-hard, 3 at 5 is not
    a, p, n = s.mine(z, Batch(torch.arange(4), labels), "triplets")
    d_ap, d_an = (a - p).abs()[:, 0], (a - n).abs()[:, 0]
    assert len(a) > 0 and ((d_an > d_ap) & (d_an < d_ap + 1.0)).all()
    assert [0.0, 1.0, 1.5] in torch.stack([a[:, 0], p[:, 0], n[:, 0]], 1).tolist()


def test_augmented_views_pairs_two_views_of_one_item():
    s = sampler("augmented-views", batch_size=6)
    batch = s.draw(torch.Generator().manual_seed(0))
    assert batch.views and torch.equal(batch.index[:6], batch.index[6:])
    z = torch.arange(12.0)[:, None]
    z_a, z_b = s.mine(z, batch, "views")
    assert torch.equal(z_b - z_a, torch.full((6, 1), 6.0))
    x1, x2, same = s.mine(z, batch, "pairs")
    assert same.tolist() == [1] * 6 + [0] * 6
    assert ((x2 - x1)[:6] == 6).all() and ((x2 - x1)[6:] != 6).all()


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_feeds_its_loss_kinds(name):
    s = sampler(name, batch_size=12, m=3)
    batch = s.draw(torch.Generator().manual_seed(0))
    z = torch.randn(len(batch.index), 3, requires_grad=True)
    for kind in s.kinds:
        out = s.mine(z, batch, kind)
        assert all(isinstance(t, torch.Tensor) for t in out)
