"""Recipes: the bundled ones parse; a bad file is rejected naming the key, the value and the fix."""

from __future__ import annotations

import pytest

from edge_runtime.errors import RecipeError
from export.recipe import Recipe, bundled, load

WANDA = {"name": "wanda-50", "method": "wanda", "sparsity": 0.5}


@pytest.mark.parametrize("name", ["default", "full", "quick", "recovered"])
def test_bundled_recipes_parse(name):
    recipe = bundled(name)
    assert recipe.name == name and recipe.variants[0].method == "dense"
    assert load(name) == recipe


def test_defaults_and_quantized_copies():
    r = Recipe.from_dict({"variant": [WANDA, {"name": "wanda-50-int8", "parent": "wanda-50", "quantization": "int8"}]})
    assert (r.calibration_samples, r.calibration_seq_len, r.ppl_windows, r.ppl_seq_len) == (64, 512, 60, 512)
    copy = r.variant("wanda-50-int8")
    assert (copy.method, copy.sparsity, copy.parent) == ("wanda", 0.5, "wanda-50")
    assert r.children("wanda-50") == [copy]


def test_grid_copy_of_the_dense_variant():
    r = Recipe.from_dict({"variant": [{"name": "d", "method": "dense"},
                                      {"name": "d-q4", "parent": "d", "quantization": "int4-grid"}]})
    assert (r.variant("d-q4").quantization, r.variant("d-q4").method) == ("int4-grid", "dense")


@pytest.mark.parametrize(
    "data, match",
    [
        ({"variant": [WANDA], "colour": 1}, r"r\.toml: unknown key 'colour'; known keys: name, description, calibration"),
        ({"variant": []}, r"r\.toml: needs at least one \[\[variant\]\] table"),
        ({"variant": 3}, r"r\.toml\.variant must be a list of tables, got 3"),
        ({"variant": [WANDA], "calibration": {"samples": 0}}, r"r\.toml\.calibration\.samples must be >= 1, got 0"),
        ({"variant": [WANDA], "calibration": {"sample": 8}}, r"r\.toml\.calibration: unknown key 'sample'; known keys: samples, seq_len"),
        ({"variant": [WANDA], "evaluation": {"ppl_windows": 1.5}}, r"r\.toml\.evaluation\.ppl_windows must be an integer, got float 1\.5"),
        ({"variant": [{**WANDA, "bogus": 1}]}, r"r\.toml\.variant\[0\]: unknown key 'bogus'; known keys: name, method"),
        ({"variant": [{**WANDA, "sparsity": "half"}]}, r"r\.toml\.variant\[0\]\.sparsity must be a number, got str 'half'"),
        ({"variant": [{**WANDA, "options": 3}]}, r"r\.toml\.variant\[0\]\.options must be a table, got int 3"),
        ({"variant": [{**WANDA, "name": "W!"}]}, r"variant\[0\]\.name 'W!' must match .* \(it becomes a directory name\)"),
        ({"variant": [WANDA, WANDA]}, r"variant\[1\] 'wanda-50': duplicate variant name"),
        ({"variant": [{**WANDA, "method": "obc"}]}, r"unknown method 'obc'; known: dense, magnitude, wanda"),
        ({"variant": [{**WANDA, "sparsity": 1.5}]}, r"'wanda-50': sparsity must be in \(0, 1\), got 1\.5"),
        ({"variant": [{**WANDA, "pattern": "2:4", "sparsity": 0.6}]}, r"pattern 2:4 fixes sparsity at 0\.5; drop 'sparsity'"),
        ({"variant": [{"name": "d", "method": "dense", "sparsity": 0.1}]}, r"a dense variant takes no sparsity; drop 'sparsity'"),
        ({"variant": [{"name": "q", "parent": "wanda-50", "quantization": "int8"}]}, r"parent 'wanda-50' must be an fp32 variant listed before it"),
        ({"variant": [WANDA, {"name": "q", "parent": "wanda-50", "quantization": "int3"}]}, r"unknown quantization 'int3'; known: none, int"),
        ({"variant": [WANDA, {"name": "q", "parent": "wanda-50", "quantization": "int4-grid"}]},
         r"'q': 'int4-grid' reads GGUF blocks back from dense float32 weights, not from wanda ones in float32; "
         r"quantize it with 'int4' or 'int8'$"),
        ({"variant": [{"name": "d", "method": "dense"}, {"name": "q", "parent": "d", "quantization": "int4-grid",
                                                         "dtype": "float16"}]},
         r"not from dense ones in float16; quantize it with 'int4' or 'int8'$"),
    ],
)
def test_bad_recipes(data, match):
    with pytest.raises(RecipeError, match=match):
        Recipe.from_dict(data, "r.toml")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(RecipeError, match=r"recipe 'nope\.toml' does not exist; bundled recipes: default, full, quick, recovered"):
        Recipe.from_toml("nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[variant]\n")
    with pytest.raises(RecipeError, match=r"bad\.toml' is not valid TOML"):
        Recipe.from_toml(bad)
