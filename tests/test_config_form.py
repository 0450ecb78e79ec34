"""Margin translation between metrics and the presets (the form itself is tested in test_app.py)."""

import math

import pytest

from contrast_core import rules
from contrast_core.config import ConfigError, RunConfig
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
    assert rules.margin_scale(loss, distance) == expected


def test_translate_margin_keeps_its_meaning_on_unit_vectors():
    # unit vectors: d_euclid^2 = d_sq = 2 * d_cos
    assert rules.translate_margin(1.0, ("contrastive", "euclidean"), ("contrastive", "cosine")) == 0.5
    assert rules.translate_margin(0.5, ("triplet", "cosine"), ("triplet", "squared-euclidean")) == 1.0
    assert rules.translate_margin(0.5, ("contrastive", "cosine"), ("cosine-embedding", "euclidean")) == 0.5
    assert rules.translate_margin(4.0, ("contrastive", "euclidean"), ("contrastive", "cosine")) == 2.0  # clamped
    assert rules.translate_margin(0.3, ("nt-xent", "cosine"), ("contrastive", "euclidean")) == 1.0  # unused: default


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


def test_reasons_are_in_plain_words_on_every_surface():
    cases = {"steps": (0, "at least 1"), "n_samples": (10**7, "at most 100,000"), "margin": ("abc", "not a number"),
             "seed": (1.5, "a whole number"), "temperature": (1e-4, "at least 0.001"), "delta": (0, "more than 0")}  # fmt: skip
    for field, (value, reason) in cases.items():
        with pytest.raises(ConfigError) as refused:
            RunConfig.check(**{field: value})
        assert config_form.plain_reason(field, refused.value.errors[field]) == f"{field}: {reason}"


def test_a_link_whose_settings_go_together_but_not_with_the_first_recipe_reads_them_over_one_that_takes_them():
    values, refused = config_form.config_from_link({"loss": "nt-xent", "sampler": "augmented-views"})
    assert refused == {}  # was: the whole link refused as "its settings do not go together"
    simclr = config_form.recipe_values("SimCLR-style NT-Xent")
    assert RunConfig(**values) == RunConfig(**simclr)
    values, refused = config_form.config_from_link({"loss": "triplet", "margin": "0.3"})
    assert refused == {} and (values["sampler"], values["margin"]) == ("semi-hard", 0.3)


def test_a_link_the_page_wrote_reads_back_as_its_config_over_the_first_recipe():
    """The page's links hold what differs from the first recipe: a triplet run with m_per_class back at the
    first recipe's 4 must not pick up the triplet recipe's 8."""
    config = RunConfig(loss="triplet", sampler="batch-hard", margin=0.5, steps=700)
    values, refused = config_form.config_from_link(config_form.link_params(config.model_dump(mode="json")))
    assert refused == {} and RunConfig(**values) == config


def test_a_link_s_refused_field_is_named_even_where_another_recipe_would_take_the_rest():
    values, refused = config_form.config_from_link({"loss": "nt-xent", "sampler": "augmented-views", "augment": "0"})
    assert list(refused) == ["augment"] and "augment > 0" in refused["augment"]
    assert (values["loss"], values["sampler"], values["augment"]) == ("nt-xent", "augmented-views", 0.5)


@pytest.mark.parametrize(
    ("loss", "sampler", "expected"),
    [
        ("triplet", "random-pairs", "semi-hard"),  # the triplet recipe's
        ("triplet", "batch-hard", "batch-hard"),  # it feeds triplets: kept
        ("nt-xent", "batch-all", "augmented-views"),
        ("supcon", "random-pairs", "batch-all"),  # no recipe: the first that feeds labels
        ("supcon", "augmented-views", "augmented-views"),  # with a label_fraction
        ("contrastive", "semi-hard", "random-pairs"),
    ],
)
def test_fitting_sampler_keeps_one_that_feeds_the_loss_and_otherwise_finds_one(loss, sampler, expected):
    found = config_form.fitting_sampler(loss, sampler)
    assert found == expected
    fraction = 0.1 if loss == "supcon" and found == "augmented-views" else None
    RunConfig(loss=loss, sampler=found, augment=0.5, label_fraction=fraction)  # a config that goes together


def test_a_link_that_changes_the_loss_carries_the_recipe_s_margin_as_the_form_does():
    values, refused = config_form.config_from_link({"loss": "cosine-embedding"})
    assert refused == {} and values["margin"] == 0.5  # the recipe's Euclidean 1, not a similarity of 1
    vacuous = RunConfig(loss="cosine-embedding", margin=1.0)  # chosen on purpose: a link keeps it
    back, _ = config_form.config_from_link(config_form.link_params(vacuous.model_dump(mode="json")))
    assert RunConfig(**back) == vacuous


def test_a_link_gets_what_the_form_fills_in_for_its_loss_and_sampler():
    values, refused = config_form.config_from_link({"loss": "supcon", "sampler": "augmented-views", "augment": "0.3"})
    assert refused == {} and (values["augment"], values["label_fraction"]) == (0.3, 0.1)  # was: the whole link lost
    link = {"loss": "supcon", "sampler": "augmented-views", "augment": "0.3", "dataset": "diabetes"}  # no classes
    values, refused = config_form.config_from_link(link)
    assert list(refused) == ["link"] and "diabetes has a continuous target" in refused["link"]
    assert "none of them is used" in refused["link"] and values["dataset"] == "digits"
