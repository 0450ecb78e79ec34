import pytest
import torch

from contrast_core import losses
from contrast_core.distances import build as distance
from contrast_core.samplers import SAMPLERS, ClassIndex, Labelled, Pairs, Triplets, Views, build, distinct_positions

LABELS = torch.arange(60) % 5  # 5 classes of 12 rows
POOL = torch.arange(0, 60, 2)  # every other row may be drawn (30 rows, 6 per class)


def sampler(name, batch_size=20, m=4, metric="euclidean", margin=1.0, pool=POOL, labels=LABELS):
    return build(name, pool, labels, batch_size, m, distance=distance(metric), margin=margin)


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


KIND_TUPLES = {"pairs": Pairs, "triplets": Triplets, "views": Views, "labels": Labelled}


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_feeds_its_loss_kinds(name):
    s = sampler(name, batch_size=12, m=3)
    batch = s.draw(torch.Generator().manual_seed(0))
    z = torch.randn(len(batch.index), 3, requires_grad=True)
    for kind in s.kinds:
        out = s.mine(z, batch, kind)
        assert type(out) is KIND_TUPLES[kind]
        rows = {len(t) for t in out}
        assert len(rows) == 1 and rows.pop() > 0, f"{kind}: every part has the same, non-zero number of rows"
        assert all(t.shape[1:] == (3,) for t in out if t.dim() == 2)
        loss_name = next(n for n, loss in losses.LOSSES.items() if loss.kind == kind)
        value = losses.build(loss_name, "euclidean", margin=1.0, temperature=0.5)(*out)
        (grad,) = torch.autograd.grad(value, z)
        assert torch.isfinite(value) and grad.abs().sum() > 0, f"{kind}: the loss reaches the embeddings"


def _repeats(index: torch.Tensor) -> int:
    return len(index) - len(index.unique())


@pytest.mark.parametrize("name", ["batch-all", "batch-hard", "semi-hard"])
def test_class_balanced_batches_never_repeat_a_row_when_classes_are_large_enough(name):
    labels = torch.arange(2000) % 10  # 200 rows per class
    s = sampler(name, batch_size=100, m=10, pool=torch.arange(2000), labels=labels)
    g = torch.Generator().manual_seed(0)
    assert sum(_repeats(s.draw(g).index) for _ in range(200)) == 0


def test_class_balanced_rows_are_uniform_within_a_class():
    labels = torch.arange(60) % 3  # 20 rows per class, 10 drawn from each: every row half the time
    s = sampler("batch-all", batch_size=30, m=10, pool=torch.arange(60), labels=labels)
    g = torch.Generator().manual_seed(1)
    counts = torch.bincount(torch.cat([s.draw(g).index for _ in range(400)]), minlength=60).float()
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()


@pytest.mark.parametrize("pool_size", [300, 5000])  # the sorting path and the rejection path
def test_augmented_views_items_are_all_different(pool_size):
    s = sampler("augmented-views", batch_size=256, pool=torch.arange(pool_size), labels=torch.zeros(pool_size).long())
    g = torch.Generator().manual_seed(0)
    assert sum(_repeats(s.draw(g).index[:256]) for _ in range(100)) == 0


def test_random_pairs_first_items_differ_and_a_similar_partner_is_another_row():
    labels = torch.arange(400) % 4
    s = sampler("random-pairs", batch_size=200, pool=torch.arange(400), labels=labels)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        batch = s.draw(g)
        first, second = batch.index[:200], batch.index[200:]
        assert _repeats(first) == 0
        assert not (first[batch.same == 1] == second[batch.same == 1]).any()


def test_a_class_smaller_than_the_draw_gives_each_row_once_before_repeating():
    counts = torch.tensor([3, 50])
    g = torch.Generator().manual_seed(0)
    within = distinct_positions(counts, (3, 50), 6, g)
    assert sorted(within[0].tolist()) == [0, 0, 1, 1, 2, 2]
    assert len(within[1].unique()) == 6 and within[1].max() < 50


def test_rejection_draws_are_uniform_subsets():
    # 5000 positions, 20 drawn: the rejection path. Each position about equally often, never twice in a draw.
    g = torch.Generator().manual_seed(2)
    draws = distinct_positions(torch.tensor([400] * 50), (400, 400), 20, g)  # (50 rows, 20)
    assert all(len(row.unique()) == 20 for row in draws)
    counts = torch.bincount(torch.cat([distinct_positions(torch.tensor([400]), (400, 400), 20, g)[0]
                                       for _ in range(2000)]), minlength=400).float()  # fmt: skip
    assert counts.min() > 0.6 * counts.mean() and counts.max() < 1.4 * counts.mean()
