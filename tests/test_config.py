import argparse
import json

import pytest
from pydantic import ValidationError

from contrast_core.__main__ import add_config_flags, config_from_args
from contrast_core.config import MAX_SNAPSHOTS, ConfigError, RunConfig
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
        ({"batch_size": 1}, "batch_size", "at least 2"),
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
        ({"steps": "many"}, "steps", "not a whole number"),
        ({"colour": "red"}, "colour", "unknown setting"),
        ({"margin": 1e308}, "margin", "at most 10,000"),  # accepted, it diverged at step 1
        (
            {"loss": "nt-xent", "sampler": "augmented-views", "augment": 0.5, "temperature": 1e-300},
            "temperature",
            "at least 0.001",
        ),  # fmt: skip
        ({"steps": 2000, "snapshot_every": 1}, "snapshot_every", "at least 11 for 2,000 steps (at most 200 snapshots"),
        ({"steps": 399, "snapshot_every": 2}, "snapshot_every", "at least 3 for 399 steps"),
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


@pytest.mark.parametrize(
    "loss, sampler, natural",
    [("contrastive", "random-pairs", "euclidean"), ("triplet", "semi-hard", "euclidean"),
     ("cosine-embedding", "random-pairs", "cosine"), ("nt-xent", "augmented-views", "cosine"),
     ("supcon", "batch-all", "cosine")],
)  # fmt: skip
def test_a_run_without_a_distance_gets_its_losss_natural_one(loss, sampler, natural, tmp_path):
    values = {"loss": loss, "sampler": sampler, "augment": 0.5}
    assert RunConfig(**values).distance == natural
    assert RunConfig(**values, distance=None).distance == natural
    assert RunConfig.model_validate_json(json.dumps(values)).distance == natural  # a config file
    # the CLI: flags left out, and a --config file without a distance
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    flags = ["--loss", loss, "--sampler", sampler, "--augment", "0.5"]
    assert config_from_args(parser.parse_args(flags)).distance == natural
    path = tmp_path / "run.json"
    path.write_text(json.dumps(values))
    assert config_from_args(parser.parse_args(["--config", str(path)])).distance == natural
    # an explicit choice is kept
    assert RunConfig(**values, distance="squared-euclidean").distance == "squared-euclidean"
    assert config_from_args(parser.parse_args([*flags, "--distance", "squared-euclidean"])).distance == (
        "squared-euclidean"
    )


def test_the_natural_distance_round_trips_and_raises_no_note():
    c = RunConfig(loss="cosine-embedding", margin=0.2)
    assert c.notes() == [] and RunConfig.model_validate_json(c.model_dump_json()) == c
    assert "distance" in RunConfig(loss="cosine-embedding", distance="euclidean").notes()[0]


def test_reduction_is_a_knob_of_the_margin_losses_only():
    assert RunConfig(reduction="mean-nonzero").reduction == "mean-nonzero"
    assert "reduction" in errors(reduction="median")
    note = RunConfig(loss="nt-xent", sampler="augmented-views", augment=0.5, reduction="mean-nonzero").notes()
    assert note and note[0].startswith("reduction is not used")


def test_the_rules_come_from_the_loss_class():
    c = RunConfig(loss="cosine-embedding", margin=0.2)
    assert (c.measured_distance, c.margin_distance) == ("cosine", pytest.approx(0.8))
    assert RunConfig(loss="nt-xent", sampler="augmented-views", augment=0.5).margin_distance is None
    assert RunConfig(margin=0.4).collapsed_loss() == pytest.approx(0.5 * 0.4**2)  # half the random pairs negative
    assert RunConfig(loss="triplet", sampler="semi-hard").collapsed_loss() == 0.0  # nothing semi-hard to mine


def test_the_snapshot_cap_counts_what_training_writes():
    """The first snapshot (step 0), one every snapshot_every steps, and the last step's."""
    from contrast_core.train import train

    config = RunConfig(steps=398, snapshot_every=2, eval_size=20, checkpoint_every=398)
    written = []
    train(config, lambda event: written.append(event.step) if event.kind == "snapshot" else None)
    assert len(written) == MAX_SNAPSHOTS  # the most a run may write, and a config that writes it is accepted
    assert RunConfig(steps=1_000_000).resolved_snapshot_every() == 25_000  # the default: about 40 a run


@pytest.mark.parametrize("size, said", [(512 * 2**20, "512 MB"), (10.2 * 2**30, "10.2 GB"),
                                        (2_622_368 * 2**30, "2,622,368 GB")])  # fmt: skip
def test_memory_is_said_in_mb_or_gb_with_thousands_apart(size, said):
    from contrast_core.config import _size

    assert _size(size) == said


def test_a_config_that_names_no_margin_gets_its_loss_s_default_for_its_distance():
    assert RunConfig(loss="cosine-embedding").margin == 0.0  # torch's; 1 (a similarity) would push no negative
    assert RunConfig(distance="cosine").margin == 0.5 and RunConfig(distance="squared-euclidean").margin == 1.0
    assert RunConfig(loss="cosine-embedding", margin=0.3).margin == 0.3 and RunConfig().margin == 1.0
    assert RunConfig(loss="nt-xent", sampler="augmented-views", augment=0.5).notes() == []  # no margin: untouched
