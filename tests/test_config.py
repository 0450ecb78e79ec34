import pytest
from pydantic import ValidationError

from contrast_core.config import ConfigError, RunConfig
from contrast_core.losses import LOSSES
from contrast_core.samplers import SAMPLERS


def errors(**values) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        RunConfig.check(**values)
    return info.value.errors


def test_defaults_are_the_classic_recipe():
    c = RunConfig()
    assert (c.dataset, c.model, c.loss, c.distance, c.sampler) == (
        "digits",
        "mlp",
        "contrastive",
        "euclidean",
        "random-pairs",
    )


def test_json_round_trip():
    c = RunConfig(loss="triplet", sampler="semi-hard", margin=0.3, embedding_dim=8)
    assert RunConfig.model_validate_json(c.model_dump_json()) == c


def test_frozen():
    with pytest.raises(ValidationError):
        RunConfig().margin = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "values, field, words",
    [
        ({"margin": -1}, "margin", ">= 0"),
        ({"batch_size": 1}, "batch_size", "greater than or equal to 2"),
        ({"loss": "hinge"}, "loss", "unknown 'hinge'"),
        ({"loss": "triplet", "sampler": "random-pairs"}, "sampler", "cannot feed the 'triplet' loss"),
        ({"loss": "nt-xent", "sampler": "batch-hard"}, "sampler", "augmented-views"),
        ({"distance": "cosine", "margin": 2.5}, "margin", "[0, 2]"),
        ({"loss": "cosine-embedding", "margin": 1.5}, "margin", "[-1, 1]"),
        ({"lr": 0}, "lr", "> 0"),
        ({"lr": float("nan")}, "lr", "finite"),
        ({"lr": float("inf")}, "lr", "finite"),
        ({"dataset": "imagenet"}, "dataset", "unknown"),
        ({"model": "vit"}, "model", "unknown"),
        ({"distance": "manhattan"}, "distance", "unknown"),
        ({"sampler": "augmented-views"}, "augment", "augment > 0"),
        ({"dataset": "csv"}, "csv_path", "needs a file"),
        ({"steps": "many"}, "steps", "integer"),
        ({"colour": "red"}, "colour", "unknown setting"),
    ],
)
def test_bad_fields_are_named(values, field, words):
    found = errors(**values)
    assert field in found, found
    assert words in found[field]


def test_every_loss_has_a_sampler_that_feeds_it():
    for name, loss in LOSSES.items():
        assert any(loss.kind in s.kinds for s in SAMPLERS.values()), name


def test_unused_knobs_give_notes_not_errors():
    c = RunConfig.check(temperature=0.5, beta=2.0)
    notes = c.notes()
    assert any(n.startswith("temperature") for n in notes)
    assert any(n.startswith("beta") for n in notes)
    assert not any(n.startswith("margin") for n in notes)
    assert RunConfig().notes() == []
