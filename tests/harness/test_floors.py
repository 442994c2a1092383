"""Floors: setting them from dense scores, the TOML round trip, validation, the gate, profiles."""

from __future__ import annotations

import math

import pytest

from edge_runtime.errors import EvalError
from harness.floors import (
    DIMENSIONS,
    FloorRule,
    Floors,
    delivered_quality,
    gate,
    gate_profiles,
    set_floors,
)

DENSE = {"common": 0.9, "edge": 0.6, "adversarial": 0.5, "multilingual": 0.4, "format": 0.8, "instruction": 0.3,
         "ppl_retention": 1.0, "latency": 1.0, "size": 1.0}
COUNTS = {"common": 100, "edge": 70, "adversarial": 60, "multilingual": 70, "format": 20, "instruction": 40}
CHANCE = {"common": 0.25, "edge": 0.27, "adversarial": 0.3, "multilingual": 0.3}


@pytest.fixture
def floors() -> Floors:
    return set_floors(DENSE, COUNTS, CHANCE, suite_version="1.0.0", model="tiny")


def test_floor_rule_is_dense_minus_the_larger_of_min_margin_and_two_standard_errors(floors):
    # common: 2 * sqrt(0.9 * 0.1 / 100) = 0.06 > 0.05
    assert floors.floors["common"] == pytest.approx(0.9 - 0.06)
    # edge: 2 * sqrt(0.24 / 70) = 0.1171
    assert floors.floors["edge"] == pytest.approx(0.6 - 2 * math.sqrt(0.24 / 70), abs=1e-4)
    # multilingual: 0.4 - 0.117 = 0.283 < chance 0.3 -> the floor is chance
    assert floors.floors["multilingual"] == 0.3
    assert floors.floors["ppl_retention"] == 0.5
    assert floors.ceilings == {"latency": 1.10, "size": 1.05}
    assert floors.margins["common"] == pytest.approx(0.06)
    assert floors.dense["common"] == 0.9
    assert floors.profiles["default"]["common"] == pytest.approx(0.75)
    assert set(floors.profiles["default"]) == {"common", "edge", "adversarial", "multilingual"}


def test_floor_rule_min_margin_wins_for_large_confident_slices():
    f = set_floors({"common": 1.0}, {"common": 10}, {}, FloorRule(min_margin=0.05))
    assert f.floors["common"] == 0.95


def test_floor_never_exceeds_dense_and_warns_near_chance(caplog):
    f = set_floors({"multilingual": 0.4}, {"multilingual": 70}, {"multilingual": 0.45})
    assert f.floors["multilingual"] == 0.4
    assert "within its margin" in caplog.text and "multilingual" in caplog.text


def test_dense_passes_its_own_floors(floors):
    assert gate(DENSE, floors).status == "pass"


def test_gate_lists_every_failed_dimension(floors):
    worse = {**DENSE, "edge": 0.3, "ppl_retention": 0.4, "latency": 1.3}
    g = gate(worse, floors)
    assert g.status == "fail"
    assert g.failed == ("edge", "ppl_retention", "latency")


def test_gate_treats_a_missing_dimension_as_failed(floors):
    g = gate({k: v for k, v in DENSE.items() if k != "format"}, floors)
    assert g.failed == ("format",)


def test_gate_is_exact_at_the_floor(floors):
    at = {**DENSE, "common": floors.floors["common"], "size": floors.ceilings["size"]}
    assert gate(at, floors).status == "pass"


def test_toml_round_trip_and_version_bump(tmp_path, floors):
    p = tmp_path / "floors.toml"
    floors.write(p)
    back = Floors.from_toml(p)
    assert back.floors == floors.floors and back.ceilings == floors.ceilings
    assert back.profiles == floors.profiles and back.suite_version == "1.0.0" and back.version == 1
    assert back.rule["z"] == 2.0
    text = p.read_text()
    assert text.startswith("# Deployment floors") and 'format = "edge-floors/1"' in text
    again = set_floors(DENSE, COUNTS, CHANCE, previous=back)
    assert again.version == 2


def test_hand_written_profile_tables_survive_a_reset(tmp_path, floors):
    p = tmp_path / "floors.toml"
    p.write_text(floors.to_toml() + '\n[profiles."commute-low-battery"]\ncommon = 0.7\n')
    back = Floors.from_toml(p)
    assert back.profile("commute-low-battery") == {"common": 0.7}
    assert back.profile("unknown-profile") == back.profiles["default"]
    again = set_floors(DENSE, COUNTS, CHANCE, previous=back)
    assert again.profiles["commute-low-battery"] == {"common": 0.7}


BASE = 'format = "edge-floors/1"\nversion = 1\n'


@pytest.mark.parametrize(
    "text, match",
    [
        (BASE + "[floors]\nfluency = 0.5\n", r"\[floors\] names unknown dimension 'fluency'; known: \["),
        (BASE + "[floors]\nlatency = 0.5\n", r"'latency' is a ceiling dimension; move it from \[floors\] to \[ceilings\]"),
        (BASE + "[ceilings]\ncommon = 0.5\n", r"'common' is a floor dimension; move it from \[ceilings\] to \[floors\]"),
        (BASE + "[floors]\ncommon = 1.5\n", r"\[floors\] common must be a number in \[0, 1\], got 1.5"),
        (BASE + "[ceilings]\nsize = -1\n", r"\[ceilings\] size must be a positive number, got -1"),
        (BASE + "[floors]\ncommon = 0.5\n[profiles.x]\nformat = 0.5\n", r"\[profiles.x\] names unknown slices \['format'\]"),
        (BASE, r"no \[floors\] or \[ceilings\]: nothing to gate on"),
        ('format = "edge-floors/9"\n[floors]\ncommon = 0.5\n', r"format must be 'edge-floors/1', got 'edge-floors/9'"),
        (BASE + "colour = 1\n[floors]\ncommon = 0.5\n", r"unknown key 'colour'; known keys: floors, ceilings, .*format"),
        (BASE + '[floors]\ncommon = "high"\n', r"floors.toml.floors.common must be a number, got str 'high'"),
        ('format = "edge-floors/1"\nversion = 0\n[floors]\ncommon = 0.5\n', r"floors.toml.version must be a positive integer, got 0"),
        (BASE + "[floors\n", r"not valid TOML"),
    ],
)
def test_bad_floors_files(tmp_path, text, match):
    p = tmp_path / "floors.toml"
    p.write_text(text)
    with pytest.raises(EvalError, match=match):
        Floors.from_toml(p)


def test_missing_floors_file_says_how_to_make_one(tmp_path):
    with pytest.raises(EvalError, match=r"does not exist; write one with edge-eval --bundle DIR --set-floors"):
        Floors.from_toml(tmp_path / "nope.toml")


def test_every_dimension_is_floor_or_ceiling():
    assert {d.kind for d in DIMENSIONS.values()} == {"floor", "ceiling"}
    assert set(DIMENSIONS) >= {"common", "edge", "adversarial", "multilingual", "format", "instruction",
                               "ppl_retention", "latency", "size"}


# --------------------------------------------------------------------------- whole-system gating

SCORES = {"dense": {"common": 0.9, "edge": 0.6, "adversarial": 0.5, "multilingual": 0.5},
          "wanda-50": {"common": 0.8, "edge": 0.4, "adversarial": 0.3, "multilingual": 0.3}}


def test_delivered_quality_is_the_share_weighted_mean():
    q = delivered_quality(SCORES, {"dense": 3, "wanda-50": 1})
    assert q["common"] == pytest.approx(0.875)
    assert q["edge"] == pytest.approx(0.55)


def test_delivered_quality_per_slice_routing():
    q = delivered_quality(SCORES, {"wanda-50": 1}, per_slice_mix={"edge": {"dense": 1}})
    assert q["edge"] == 0.6 and q["common"] == 0.8


@pytest.mark.parametrize(
    "mix, match",
    [
        ({"dense": 0}, "must be non-negative and not all zero"),
        ({"dense": -1, "wanda-50": 2}, "must be non-negative"),
        ({"ghost": 1}, r"names variants with no scores \['ghost'\]"),
    ],
)
def test_delivered_quality_rejects_bad_mixes(mix, match):
    with pytest.raises(EvalError, match=match):
        delivered_quality(SCORES, mix)


def test_gate_profiles_uses_each_profile_or_the_default(floors):
    f = Floors.from_dict({**_as_dict(floors), "profiles": {"default": {"edge": 0.5}, "strict": {"edge": 0.59}}})
    gates = gate_profiles({"strict": {"edge": 0.55}, "relaxed": {"edge": 0.55}}, f)
    assert gates["strict"].status == "fail" and gates["strict"].failed == ("edge",)
    assert gates["relaxed"].status == "pass"


def _as_dict(f: Floors) -> dict:
    import tomllib

    return tomllib.loads(f.to_toml())


# --------------------------------------------------------------------------- tiers

_DENSE = {"common": 0.8, "edge": 0.5, "adversarial": 0.4, "multilingual": 0.3, "format": 0.7, "instruction": 0.6}
_COUNTS = dict.fromkeys(_DENSE, 60)


def _tiered():
    return set_floors(_DENSE, _COUNTS, {"common": 0.25})


def test_tiers_widen_the_dense_margins_and_round_trip():
    import tomllib

    f = _tiered()
    assert list(f.tiers) == ["normal", "saver", "critical"]
    assert f.tiers["normal"] == f.floors
    for dim, floor in f.floors.items():
        assert f.tiers["saver"][dim] <= floor and f.tiers["critical"][dim] <= f.tiers["saver"][dim]
    assert f.tiers["saver"]["common"] == pytest.approx(f.floors["common"] - 0.05)
    assert Floors.from_dict(tomllib.loads(f.to_toml())).tiers == f.tiers


def test_gate_records_the_tiers_a_variant_clears():
    f = _tiered()
    ok_costs = {"latency": 1.0, "size": 1.0}
    assert gate({**f.tiers["normal"], **ok_costs}, f).extra["tiers"] == ["normal", "saver", "critical"]
    g = gate({**f.tiers["critical"], **ok_costs}, f)
    assert g.status == "fail" and g.extra["tiers"] == ["critical"]
    assert gate({**f.tiers["normal"], "latency": 2.0, "size": 1.0}, f).extra["tiers"] == []  # ceilings bind every tier


def _doc(**tiers):
    import tomllib

    d = tomllib.loads(_tiered().to_toml())
    d["tiers"] = tiers
    return d


def test_tier_lacking_a_dimension_is_refused():
    full = dict(_tiered().tiers["saver"])
    del full["edge"]
    with pytest.raises(EvalError, match=r"\[tiers.saver\] lacks dimensions \['edge'\]; give every dimension"):
        Floors.from_dict(_doc(saver=full))


def test_tier_naming_an_unknown_dimension_is_refused():
    with pytest.raises(EvalError, match=r"\[tiers.saver\] names unknown dimensions \['speed'\]"):
        Floors.from_dict(_doc(saver={**_tiered().tiers["saver"], "speed": 0.5}))


def test_unknown_tier_is_refused():
    with pytest.raises(EvalError, match=r"\[tiers.eco\]: unknown tier 'eco'; choose one of \['normal', 'saver', 'critical'\]"):
        Floors.from_dict(_doc(eco=_tiered().tiers["saver"]))


def test_whole_system_gate_holds_a_profile_to_its_tier():
    from harness.floors import gate_profiles

    f = _tiered()
    q = {s: f.tiers["saver"][s] for s in ("common", "edge", "adversarial", "multilingual")}
    gates = gate_profiles({"p@saver": q, "p@normal": q}, f, {"p@saver": "saver", "p@normal": "normal"})
    assert gates["p@saver"].status == "pass" and gates["p@normal"].status == "fail"
