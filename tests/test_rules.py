"""The rules the pages read (contrast_core.rules, no torch) are the ones the engine trains with."""

import pytest

from contrast_core import data, distances, losses, models, rules, samplers


def test_every_engine_choice_has_its_rules_and_no_other():
    assert list(rules.DATASETS) == list(data.DATASETS)
    assert list(rules.MODELS) == list(models.MODELS)
    assert list(rules.ENCODERS) == list(models.ENCODERS)
    assert rules.REDUCTIONS == losses.REDUCTIONS
    for engine, table in ((losses.LOSSES, rules.LOSSES), (samplers.SAMPLERS, rules.SAMPLERS),
                          (distances.DISTANCES, rules.DISTANCES)):  # fmt: skip
        assert list(engine) == list(table)


@pytest.mark.parametrize(
    "engine, table",
    [(losses.LOSSES, rules.LOSSES), (samplers.SAMPLERS, rules.SAMPLERS), (distances.DISTANCES, rules.DISTANCES)],
)
def test_each_implementation_inherits_its_rules_unchanged(engine, table):
    """An implementation adds computation and never redefines a rule: each rule resolves to rules.py."""
    for name, implementation in engine.items():
        assert issubclass(implementation, table[name]), name
        rule_names = {a for c in table[name].__mro__[:-1] for a in vars(c) if not a.startswith("__")}
        assert rule_names >= {"kinds"} if table is rules.SAMPLERS else rule_names
        for attribute in rule_names:
            owner = next(c for c in implementation.__mro__ if attribute in vars(c))
            assert owner.__module__ == "contrast_core.rules", (name, attribute, owner)


def test_a_torch_distance_and_its_rules_give_the_same_margins():
    for name in rules.DISTANCES:
        engine, rule = distances.build(name), rules.distance(name)
        assert (engine.name, engine.low, engine.high, engine.default_margin) == (
            name,
            rule.low,
            rule.high,
            rule.default_margin,
        )
        assert engine.from_cosine(0.3) == pytest.approx(rule.from_cosine(0.3))
