"""Margin translation between metrics and the presets (the form itself is tested in test_app.py)."""

import math

import pytest

from contrast_core.config import RunConfig
from ui import config_form


@pytest.mark.parametrize(
    ("loss", "distance", "expected"),
    [
        ("contrastive", "cosine", (0.0, 2.0, 0.5)),  # 1 - cos lies in [0, 2]
        ("contrastive", "euclidean", (0.0, 5.0, 1.0)),
        ("triplet", "squared-euclidean", (0.0, 10.0, 1.0)),
        ("cosine-embedding", "euclidean", (-1.0, 1.0, 0.0)),  # a similarity, as torch's
    ],
)
def test_margin_scale_follows_the_metric(loss, distance, expected):
    assert config_form.margin_scale(loss, distance) == expected


def test_translate_margin_keeps_its_meaning_on_unit_vectors():
    # unit vectors: d_euclid^2 = d_sq = 2 * d_cos
    assert config_form.translate_margin(1.0, ("contrastive", "euclidean"), ("contrastive", "cosine")) == 0.5
    assert config_form.translate_margin(0.5, ("triplet", "cosine"), ("triplet", "squared-euclidean")) == 1.0
    assert config_form.translate_margin(0.5, ("contrastive", "cosine"), ("cosine-embedding", "euclidean")) == 0.5
    assert config_form.translate_margin(4.0, ("contrastive", "euclidean"), ("contrastive", "cosine")) == 2.0  # clamped
    assert (
        config_form.translate_margin(0.3, ("nt-xent", "cosine"), ("contrastive", "euclidean")) == 1.0
    )  # unused: default


def test_equivalent_margins_names_the_other_metrics():
    line = config_form.equivalent_margins(1.0, "contrastive", "cosine")
    assert f"euclidean {math.sqrt(2):.3g}" in line and "squared-euclidean 2" in line and "cosine" not in line
    assert "No unit-vector equivalent" in config_form.equivalent_margins(3.0, "contrastive", "euclidean")


def test_presets_are_valid_configs():
    for preset in config_form.PRESETS.values():
        RunConfig.check(**preset)


@pytest.mark.parametrize("name", list(config_form.PRESETS))
def test_recipe_of_names_a_recipe_until_a_control_differs(name):
    values = config_form.recipe_values(name)
    assert config_form.recipe_of(values) == name
    assert config_form.recipe_of(values | {"steps": values["steps"] + 1}) is None  # "Custom"
    assert config_form.recipe_of({k: v for k, v in values.items() if k != "lr"}) == name  # fields not drawn


def test_plain_reason_names_the_field_and_its_limit():
    assert config_form.plain_reason("steps", "Input should be less than or equal to 1000000") == (
        "steps: at most 1,000,000"
    )
    assert config_form.plain_reason("n_samples", "Input should be greater than or equal to 20") == (
        "n_samples: at least 20"
    )
    fraction = "Input should be a valid integer, got a number with a fractional part"
    assert config_form.plain_reason("steps", fraction) == "steps: a whole number"
