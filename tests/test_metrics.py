import json
import math

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import (
    adjusted_mutual_info_score,
    adjusted_rand_score,
    davies_bouldin_score,
    normalized_mutual_info_score,
    rand_score,
    silhouette_score,
)
from sklearn.neighbors import KNeighborsClassifier

from contrast_core.metrics import (
    LIGHT_METRICS,
    WHOLE_SET_METRICS,
    cluster_metrics,
    evaluate,
    map_at_r,
    retrieval_metrics,
    vae_metrics,
)
from contrast_core.pair_stats import neighbours, pair_distance_stats, triplet_violation_fraction
from contrast_core.rules import METRICS


def blobs(n, dim=4, classes=3, spread=0.6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(classes, dim))
    labels = np.arange(n) % classes
    return (centres[labels] + rng.normal(scale=spread, size=(n, dim))).astype(np.float32), labels


# --- cluster_metrics --------------------------------------------------------------------------


def test_cluster_metrics_match_sklearn_calls():
    emb, labels = blobs(60, spread=2.0)
    clusters = KMeans(n_clusters=3, n_init=3, random_state=7).fit_predict(emb)
    found = cluster_metrics(emb, labels, n_clusters=3, seed=7)
    assert found["rand_index"] == pytest.approx(rand_score(labels, clusters))
    assert found["adjusted_rand"] == pytest.approx(adjusted_rand_score(labels, clusters))
    assert found["nmi"] == pytest.approx(normalized_mutual_info_score(labels, clusters))
    assert found["ami"] == pytest.approx(adjusted_mutual_info_score(labels, clusters))
    assert found["davies_bouldin"] == pytest.approx(davies_bouldin_score(emb, labels))
    assert found["silhouette"] == pytest.approx(silhouette_score(emb, labels))


def test_separation_scores_use_true_labels_not_clusters():
    emb, _ = blobs(60, spread=0.1)  # three tight clusters that KMeans finds exactly
    shuffled = np.random.default_rng(1).permutation(np.arange(60) % 3)  # labels unrelated to them
    found = cluster_metrics(emb, shuffled, n_clusters=3)
    assert found["silhouette"] == pytest.approx(silhouette_score(emb, shuffled))
    assert found["silhouette"] < 0.1  # the clusters would score about 0.9
    assert found["adjusted_rand"] < 0.2


def test_perfect_clusters_score_one():
    emb, labels = blobs(30, spread=0.05)
    found = cluster_metrics(emb, labels, n_clusters=3)
    assert found["rand_index"] == found["adjusted_rand"] == pytest.approx(1.0)
    assert found["nmi"] == pytest.approx(1.0)


CLUSTER_KEYS = {"rand_index", "adjusted_rand", "nmi", "ami", "davies_bouldin", "silhouette"}


@pytest.mark.parametrize(
    "emb, labels, n_clusters, nan_keys",
    [
        (np.ones((10, 3)), np.arange(10) % 2, 2, CLUSTER_KEYS),
        (blobs(12)[0], np.zeros(12, int), 3, {"davies_bouldin", "silhouette"}),  # one class
        (blobs(12)[0], np.arange(12) % 3, 1, {"rand_index", "adjusted_rand", "nmi", "ami"}),  # one cluster
        (np.repeat(np.eye(3)[:2], 5, axis=0), np.arange(10) % 2, 3, {"rand_index", "adjusted_rand", "nmi", "ami"}),
        (np.full((10, 3), np.nan), np.arange(10) % 2, 2, CLUSTER_KEYS),
    ],
    ids=["one-point", "one-class", "one-cluster", "fewer-points-than-clusters", "nan"],
)  # fmt: skip
def test_degenerate_clusterings_give_nan_not_an_exception(emb, labels, n_clusters, nan_keys):
    found = cluster_metrics(emb, labels, n_clusters)
    assert {key for key, value in found.items() if math.isnan(value)} == nan_keys


def test_mismatched_labels_name_the_field():
    with pytest.raises(ValueError, match="labels: expected shape"):
        cluster_metrics(np.zeros((4, 2)), np.zeros(3), 2)


# --- retrieval --------------------------------------------------------------------------------

# 1-D references on a line (second coordinate 0) and three queries, worked by hand:
#   query 0.1, label 0: R = 3, ranking 0(0) 1(0) 2(1) -> AP@R = (1/1 + 2/2 + 0) / 3 = 2/3, P@1 hit
#   query 2.9, label 1: R = 2, ranking 3(0) 2(1)      -> AP@R = (0 + 1/2) / 2 = 1/4,     P@1 miss
#   query 9.0, label 2: R = 0 (left out of MAP@R), nearest is 10 (label 1)               P@1 miss
TRAIN = np.array([[0, 0], [1, 0], [2, 0], [3, 0], [10, 0]], dtype=float)
TRAIN_LABELS = np.array([0, 0, 1, 0, 1])
QUERIES = np.array([[0.1, 0], [2.9, 0], [9.0, 0]])
QUERY_LABELS = np.array([0, 1, 2])


def test_map_at_r_and_precision_at_1_hand_case():
    found = retrieval_metrics(TRAIN, TRAIN_LABELS, QUERIES, QUERY_LABELS, k=1)
    assert found["map_at_r"] == pytest.approx((2 / 3 + 1 / 4) / 2)
    assert found["precision_at_1"] == pytest.approx(1 / 3)
    assert found["knn_accuracy"] == pytest.approx(1 / 3)


def test_map_at_r_counts_only_the_first_r_ranks():
    relevant = np.array([[False, True, True, True]])  # R = 2: ranks 3 and 4 do not count
    assert map_at_r(relevant, np.array([2])) == pytest.approx((0 + 1 / 2) / 2)
    assert math.isnan(map_at_r(relevant, np.array([0])))


def test_knn_accuracy_matches_sklearn_classifier():
    train, train_labels = blobs(60, spread=2.5, seed=0)
    test, test_labels = blobs(30, spread=2.5, seed=0)
    expected = KNeighborsClassifier(n_neighbors=5).fit(train, train_labels).score(test, test_labels)
    assert retrieval_metrics(train, train_labels, test, test_labels, k=5)["knn_accuracy"] == pytest.approx(expected)


def test_cosine_ranks_by_angle_and_squared_euclidean_by_distance():
    # A far along x (label 0), B close to the origin on y (label 1); the query at 30 degrees is label 0.
    train, train_labels = np.array([[10.0, 0.0], [0.0, 0.1]]), np.array([0, 1])
    query, query_labels = np.array([[np.cos(np.pi / 6), np.sin(np.pi / 6)]]), np.array([0])
    assert retrieval_metrics(train, train_labels, query, query_labels, k=1, metric="cosine")["precision_at_1"] == 1
    for metric in ("euclidean", "squared-euclidean"):
        assert retrieval_metrics(train, train_labels, query, query_labels, k=1, metric=metric)["precision_at_1"] == 0


def test_linear_probe_separable_and_one_class():
    train, train_labels = blobs(60, spread=0.3)
    test, test_labels = blobs(30, spread=0.3)
    assert retrieval_metrics(train, train_labels, test, test_labels)["linear_probe_accuracy"] == 1.0
    one_class = retrieval_metrics(train, np.zeros(60, int), test, test_labels)
    assert math.isnan(one_class["linear_probe_accuracy"])
    assert math.isnan(
        retrieval_metrics(train, train_labels, test, test_labels, linear_probe=False)["linear_probe_accuracy"]
    )


def test_retrieval_bad_metric_and_nan_embeddings():
    with pytest.raises(ValueError, match="metric: unknown 'manhattan'"):
        retrieval_metrics(TRAIN, TRAIN_LABELS, QUERIES, QUERY_LABELS, metric="manhattan")
    nan_train = np.full_like(TRAIN, np.nan)
    assert all(math.isnan(v) for v in retrieval_metrics(nan_train, TRAIN_LABELS, QUERIES, QUERY_LABELS).values())


# --- pair distances ---------------------------------------------------------------------------

# Points 0, 1, 3 on a line, labels A A B: positive pair (0,1) d=1; negative pairs d=3 and d=2.
LINE = np.array([[0.0], [1.0], [3.0]])
LINE_LABELS = np.array([0, 0, 1])


@pytest.mark.parametrize(
    "distance, pos, neg", [("euclidean", [1.0], [3.0, 2.0]), ("squared-euclidean", [1.0], [9.0, 4.0])]
)
def test_pair_distances_hand_case(distance, pos, neg):
    stats = pair_distance_stats(LINE, LINE_LABELS, distance, margin=None)
    np.testing.assert_allclose(stats["pos_distances"], pos)
    np.testing.assert_allclose(stats["neg_distances"], neg)
    assert stats["pos_mean"] == pytest.approx(np.mean(pos)) and stats["neg_mean"] == pytest.approx(np.mean(neg))
    assert stats["violation_fraction"] is None and stats["pos_violation_fraction"] is None


def test_violation_fractions_hand_case():
    stats = pair_distance_stats(LINE, LINE_LABELS, "euclidean", margin=2.5)
    assert stats["violation_fraction"] == pytest.approx(0.5)  # negative d=2 < 2.5, d=3 is not
    assert stats["pos_violation_fraction"] == 0.0  # positive d=1 <= 2.5
    stats = pair_distance_stats(LINE, LINE_LABELS, "euclidean", margin=0.5)
    assert stats["violation_fraction"] == 0.0 and stats["pos_violation_fraction"] == 1.0
    stats = pair_distance_stats(LINE, LINE_LABELS, "euclidean", margin=2.0)  # d == margin violates nothing
    assert stats["violation_fraction"] == 0.0
    stats = pair_distance_stats(LINE, LINE_LABELS, "euclidean", margin=1.0)
    assert stats["pos_violation_fraction"] == 0.0


def test_cosine_pair_distance_is_one_minus_cos_from_torch_tensors():
    emb = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])  # 45 and 180 degrees from the first
    stats = pair_distance_stats(emb, torch.tensor([0, 0, 1]), "cosine", margin=1.8)
    np.testing.assert_allclose(stats["pos_distances"], [1 - np.cos(np.pi / 4)], rtol=1e-6)
    np.testing.assert_allclose(stats["neg_distances"], [2.0, 1 + np.cos(np.pi / 4)], rtol=1e-6)
    assert stats["violation_fraction"] == pytest.approx(0.5)  # 1.707 < 1.8, 2.0 is not


def test_pair_distances_cover_all_pairs_and_cap_with_a_seed():
    emb, labels = blobs(40, seed=3)
    full = pair_distance_stats(emb, labels, "euclidean", margin=None)
    brute = [(np.linalg.norm(emb[i] - emb[j]), labels[i] == labels[j]) for i in range(40) for j in range(i + 1, 40)]
    np.testing.assert_allclose(full["pos_distances"], [d for d, same in brute if same], rtol=1e-5)
    np.testing.assert_allclose(full["neg_distances"], [d for d, same in brute if not same], rtol=1e-5)
    capped = pair_distance_stats(emb, labels, "euclidean", margin=None, max_pairs=50, seed=1)
    assert len(capped["pos_distances"]) == 50 and len(capped["neg_distances"]) == 50
    assert np.isin(capped["neg_distances"], full["neg_distances"]).all()
    again = pair_distance_stats(emb, labels, "euclidean", margin=None, max_pairs=50, seed=1)
    np.testing.assert_array_equal(capped["neg_distances"], again["neg_distances"])
    assert capped["neg_mean"] == pytest.approx(full["neg_mean"])  # means use every pair


def test_pair_stats_degenerate_inputs_give_nan():
    one_class = pair_distance_stats(LINE, np.zeros(3, int), "euclidean", margin=1.0)
    assert math.isnan(one_class["neg_mean"]) and math.isnan(one_class["violation_fraction"])
    zeros = pair_distance_stats(np.zeros((4, 2)), np.array([0, 0, 1, 1]), "cosine", margin=0.5)
    assert math.isnan(zeros["pos_mean"]) and math.isnan(zeros["violation_fraction"])  # 1 - cos of a zero vector
    with pytest.raises(ValueError, match="distance: unknown 'l1'"):
        pair_distance_stats(LINE, LINE_LABELS, "l1", margin=None)


# --- VAE --------------------------------------------------------------------------------------


def test_vae_metrics_match_torch():
    generator = torch.Generator().manual_seed(0)
    x, recon = torch.rand(8, 1, 4, 4, generator=generator), torch.rand(8, 1, 4, 4, generator=generator)
    mu, logvar = torch.randn(8, 3, generator=generator), torch.randn(8, 3, generator=generator)
    posterior = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    prior = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    expected_kl = torch.distributions.kl_divergence(posterior, prior).sum(dim=1).mean()
    found = vae_metrics(x, recon, mu, logvar)
    assert found["kl"] == pytest.approx(expected_kl.item(), rel=1e-5)
    assert found["recon_mse"] == pytest.approx(torch.nn.functional.mse_loss(recon, x).item(), rel=1e-6)
    assert vae_metrics(x.numpy(), x.numpy(), np.zeros((8, 3)), np.zeros((8, 3))) == {"recon_mse": 0.0, "kl": 0.0}


def test_vae_metrics_shape_mismatch_names_the_field():
    with pytest.raises(ValueError, match="recon: shape"):
        vae_metrics(torch.zeros(2, 4), torch.zeros(2, 5), torch.zeros(2, 3), torch.zeros(2, 3))


# --- evaluate ---------------------------------------------------------------------------------

EVALUATED = {key for key, metric in METRICS.items() if metric.group not in ("vae", "regression")}


def test_chance_clusterings_score_about_zero_ami_but_not_nmi():
    # AMI corrects NMI for chance: random clusters of many small classes have NMI well above 0, AMI about 0.
    rng = np.random.default_rng(3)
    emb, labels = rng.normal(size=(300, 4)), np.arange(300) % 20
    found = cluster_metrics(emb, labels, n_clusters=20)
    assert abs(found["ami"]) < 0.05 and found["nmi"] > 0.1


def test_every_metric_says_which_way_is_better():
    assert {m.better for m in METRICS.values()} <= {"higher", "lower", "neither"}
    assert METRICS["davies_bouldin"].better == "lower" and METRICS["ami"].better == "higher"


def test_evaluate_is_a_flat_json_dict_of_the_parts():
    train, train_labels = blobs(60, spread=1.5, seed=0)
    eval_emb, eval_labels = blobs(30, spread=1.5, seed=1)
    found = evaluate(train, train_labels, eval_emb, eval_labels, n_clusters=3, distance="cosine", margin=0.3)
    assert set(found) == EVALUATED and all(isinstance(v, float) for v in found.values())
    json.loads(json.dumps(found))
    assert found["adjusted_rand"] == cluster_metrics(eval_emb, eval_labels, 3)["adjusted_rand"]
    cosine = retrieval_metrics(train, train_labels, eval_emb, eval_labels, metric="cosine")
    assert found["map_at_r"] == cosine["map_at_r"] and found["linear_probe_accuracy"] == cosine["linear_probe_accuracy"]
    pairs = pair_distance_stats(eval_emb, eval_labels, "cosine", margin=0.3)
    assert found["violation_fraction"] == pairs["violation_fraction"] and found["neg_mean"] == pairs["neg_mean"]


def test_evaluate_without_margin_or_probe_and_on_collapsed_embeddings():
    emb, labels = np.zeros((20, 4)), np.arange(20) % 2
    found = evaluate(emb, labels, emb, labels, n_clusters=2, distance="euclidean", margin=None, full=False)
    assert set(found) == EVALUATED - {"linear_probe_accuracy"}  # not measured: left out, not NaN
    for key in ("violation_fraction", "pos_violation_fraction", "silhouette", "nmi"):
        assert math.isnan(found[key]), key
    assert found["pos_mean"] == found["neg_mean"] == 0.0


def test_triplet_violation_fraction_hand_case():
    # On a line: class 0 at 0 and 1, class 1 at 1.5 and 10; each anchor has one positive, and its
    # negative is one of two. With margin 1, d(a, n) < d(a, p) + 1 holds for
    # a=0 (d_ap 1): n=1.5 yes, n=10 no;   a=1 (d_ap 1): n=1.5 (0.5) yes, n=10 (9) no;
    # a=1.5 (d_ap 8.5): n=0 (1.5) and n=1 (0.5) both yes;   a=10 (d_ap 8.5): n=0 (10) no, n=1 (9) yes.
    # So the share is 1/4 + (one of each anchor's coin flips) / 4, between 1/4 and 1.
    emb = np.array([[0.0], [1.0], [1.5], [10.0]])
    labels = np.array([0, 0, 1, 1])
    found = [triplet_violation_fraction(emb, labels, "euclidean", 1.0, seed=s) for s in range(40)]
    assert set(found) <= {0.25, 0.5, 0.75, 1.0} and min(found) == 0.25 and max(found) == 1.0
    assert triplet_violation_fraction(emb, labels, "euclidean", 20.0) == 1.0  # everything inside a huge margin
    assert triplet_violation_fraction(emb, labels, "euclidean", 0.0, seed=0) <= 0.5  # only a=1.5 can violate
    assert math.isnan(triplet_violation_fraction(emb, np.zeros(4, int), "euclidean", 1.0))  # no negatives


@pytest.mark.parametrize("distance, sk_metric", [("euclidean", "euclidean"), ("cosine", "cosine")])
def test_neighbours_match_scikit_learn_and_split_by_class(distance, sk_metric):
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(3)
    x, labels = rng.normal(size=(80, 4)), rng.integers(0, 4, 80)
    found = neighbours(x, labels, query=7, distance=distance, margin=1.0, k=5)
    reference = NearestNeighbors(n_neighbors=6, metric=sk_metric).fit(x)
    ref_d, ref_rows = reference.kneighbors(x[7:8])
    rows, d = found["nearest"]
    assert list(rows) == list(ref_rows[0][1:]) and d == pytest.approx(ref_d[0][1:])  # itself left out
    neg_rows, neg_d = found["hardest_negatives"]
    assert all(labels[r] != labels[7] for r in neg_rows) and list(neg_d) == sorted(neg_d)
    all_d = neighbours(x, labels, 7, distance, 1.0, k=80)["nearest"]
    other = {r: v for r, v in zip(*all_d, strict=True) if labels[r] != labels[7]}
    assert neg_d[0] == pytest.approx(min(other.values()))  # the closest item of another class
    assert found["negatives_inside"] == sum(v < 1.0 for v in other.values())
    far_rows, far_d = found["far_positives"]
    same = {r: v for r, v in zip(*all_d, strict=True) if labels[r] == labels[7]}
    assert found["positives_beyond"] == sum(v > 1.0 for v in same.values())
    assert list(far_d) == sorted(far_d, reverse=True) and all(v > 1.0 for v in far_d)


def test_neighbours_name_a_bad_item():
    with pytest.raises(ValueError, match="item: 9 is not one of the 3 items"):
        neighbours(np.zeros((3, 2)), np.zeros(3), 9, "euclidean", None)


def test_a_light_evaluation_measures_the_cheap_metrics_alike_and_leaves_the_rest_out():
    train, train_labels = blobs(60, spread=2.5, seed=0)
    test, test_labels = blobs(30, spread=2.5, seed=1)
    light = evaluate(train, train_labels, test, test_labels, 3, "euclidean", 1.0, full=False, whole_set=False)
    whole = evaluate(train, train_labels, test, test_labels, 3, "euclidean", 1.0, full=False)
    assert set(light) == set(LIGHT_METRICS)
    assert set(whole) == set(LIGHT_METRICS) | set(WHOLE_SET_METRICS)
    assert light == {key: whole[key] for key in LIGHT_METRICS}  # precision@1 without the ranking: the same
    full = evaluate(train, train_labels, test, test_labels, 3, "euclidean", 1.0, whole_set=False)
    assert set(full) == EVALUATED  # full implies the whole set


def test_precision_at_1_from_the_nearest_neighbour_alone_matches_the_hand_case():
    found = retrieval_metrics(TRAIN, TRAIN_LABELS, QUERIES, QUERY_LABELS, k=1, ranked=False)
    assert found["precision_at_1"] == pytest.approx(1 / 3) and math.isnan(found["map_at_r"])
