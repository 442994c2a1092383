"""A recipe's [[pair]] tables: validated with the recipe, declared and measured when the bundle is built."""

from __future__ import annotations

import pytest

from edge_runtime.errors import RecipeError
from export.recipe import Recipe
from tests.conftest import build_tiny_bundle

VARIANTS = [{"name": "dense", "method": "dense"}]


@pytest.mark.parametrize("pair, match", [
    ({"verifier": "nope", "drafter": "prompt-lookup"}, r"pair\[0\]: verifier 'nope' and drafter 'prompt-lookup' must"),
    ({"verifier": "dense", "drafter": "prompt-lookup", "k_max": 0}, r"k_max must be a positive integer"),
    ({"verifier": "dense", "drafter": "prompt-lookup", "kmax": 2}, r"unknown key 'kmax'"),
])
def test_bad_pair_tables_are_refused(pair, match):
    with pytest.raises(RecipeError, match=match):
        Recipe.from_dict({"variant": VARIANTS, "pair": [{"name": "p", **pair}]})


def test_export_declares_and_measures_pairs(tmp_path):
    recipe = {"name": "tiny-pairs", "evaluation": {"ppl_windows": 0},
              "variant": VARIANTS, "pair": [{"name": "dense+lookup", "verifier": "dense", "drafter": "prompt-lookup"}]}
    from edge_runtime.bundle import read_manifest

    m = read_manifest(build_tiny_bundle(tmp_path / "b", recipe, measure_cost=True))
    (p,) = m.pairs
    assert p.name == "dense+lookup" and p.cost.decode_ms_per_token > 0 and p.acceptance is not None
