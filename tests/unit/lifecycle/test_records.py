"""Non-finite floats in the records the registry stores: an optional measurement becomes None (not known), a
required one is refused naming the field — at validation, and again by :func:`storable` for a record that skipped
it (``model_copy``), so the registry refuses before publishing anything."""

from __future__ import annotations

import math

import pytest

from lifecycle.records import ItemResult, storable
from tests.unit.records_world import lineage, report

NAN, INF = float("nan"), float("inf")




def test_a_diverged_runs_losses_are_not_known():
    got = lineage(train_loss=NAN, eval_loss=-INF)
    assert got.train_loss is None and got.eval_loss is None
    assert lineage(train_loss=0.5).train_loss == 0.5


def test_non_finite_recipe_values_become_none_nested_ones_too():
    got = lineage(recipe={"lr": 1e-3, "clip": INF, "betas": [0.9, NAN], "sub": {"x": NAN, "y": "text"}})
    assert got.recipe == {"lr": 1e-3, "clip": None, "betas": [0.9, None], "sub": {"x": None, "y": "text"}}


@pytest.mark.parametrize("field", ["wall_time_s", "tokens_per_s"])
def test_a_required_lineage_float_that_is_not_finite_is_refused_by_name(field):
    with pytest.raises(ValueError, match=field):
        lineage(**{field: NAN})


@pytest.mark.parametrize(("fields", "name"), [
    ({"exact_match": NAN}, "exact_match"),
    ({"latency_p95_ms": INF}, "latency_p95_ms"),
    ({"per_route_accuracy": {"a": NAN}}, "per_route_accuracy.a"),
    ({"items": [{"item_id": "i", "expected": "a", "predicted": "a", "correct": True, "latency_ms": NAN,
                 "malformed": False}]}, "items.0.latency_ms"),
])
def test_a_non_finite_eval_figure_is_refused_by_name(fields, name):
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        report(**fields)


def test_storable_validates_a_record_again():
    """``model_copy(update=...)`` skips validation: storable catches what it let through."""
    copied = lineage().model_copy(update={"train_loss": NAN})
    assert math.isnan(copied.train_loss) and storable(copied).train_loss is None
    with pytest.raises(ValueError, match="exact_match"):
        storable(report().model_copy(update={"exact_match": NAN}))
    item = ItemResult.model_construct(item_id="i", expected="a", predicted="a", correct=True, latency_ms=NAN,
                                      malformed=False)
    with pytest.raises(ValueError, match=r"items\.0\.latency_ms"):  # a nested record built without validation
        storable(report(items=[item]))
    assert storable(report()) == report()
