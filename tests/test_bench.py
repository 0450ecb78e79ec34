import numpy as np
import torch

from contrast_core import bench, data
from contrast_core.config import RunConfig


def test_tutorial_pairs_are_labelled_right_and_half_similar():
    labels = np.arange(200) % 4
    images = (np.arange(200)[:, None, None] * np.ones((1, 8, 8))).astype(np.uint8)  # pixel value = row index
    pairs = bench.TutorialPairs(images, labels)
    same_count = 0
    for i in range(200):
        first, second, same = pairs[i]
        assert first.shape == (1, 8, 8) and first.max() <= 1  # ToTensor scaled to [0, 1]
        j = round(second[0, 0, 0].item() * 255)
        assert same.item() == float(labels[j] == labels[i])
        same_count += int(same.item())
    assert 60 < same_count < 140


def test_compare_measures_both_sides_on_the_same_data():
    config = RunConfig(device="cpu", eval_size=100)
    row = bench.compare("digits", config, "rand_index", 0.5, seeds=1, seconds=0.3, budget=5.0)
    assert row["pairs_per_second"] > 0 and row["classic_pairs_per_second"] > 0
    assert row["throughput_ratio"] == row["pairs_per_second"] / row["classic_pairs_per_second"]
    assert 0 <= row["reached_share"] <= 1 and row["bar"] == "rand_index >= 0.5"


def test_classic_recipe_learns():
    dataset = data.load("digits", eval_size=100)
    recipe = bench.ClassicRecipe(dataset, RunConfig(device="cpu"), torch.device("cpu"))
    before = bench.quality(recipe.model, dataset, "knn_accuracy")
    for _ in range(150):
        recipe.train_step()
    assert bench.quality(recipe.model, dataset, "knn_accuracy") > max(before, 0.5)
