"""Pruning on the tiny model (Llama and Qwen2): exact levels, patterns, shapes, cache parity."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from transformers import DynamicCache

from edge_runtime.errors import RecipeError
from export import unstructured as us
from export.calibrate import collect_stats, layer_linears
from export.corpus import calibration_windows
from export.load import TinyConfig, tiny_model
from export.perplexity import perplexity
from export.prune import PRUNERS, PruneConfig, decoder_weight_count, prune_model

ARCHS = ["LlamaForCausalLM", "Qwen2ForCausalLM"]
pytestmark = pytest.mark.usefixtures("one_thread")
SAMPLES, SEQ = 8, 32
CAL = dict(samples=SAMPLES, seq_len=SEQ, plan_samples=4, batch_size=4)


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request):
    # 3 KV heads x 2 queries: GQA, and an odd group count
    return tiny_model(TinyConfig(architecture=request.param, layers=2, heads=6, kv_heads=3, hidden=96, intermediate=160))


@pytest.fixture(scope="module")
def ids(tiny):
    return torch.as_tensor(calibration_windows(tiny.tokenizer, SAMPLES, SEQ))


def _fresh(tiny):
    return copy.deepcopy(tiny.model)


def _zeros(model) -> tuple[int, int]:
    lins = [lin for layer in model.model.layers for lin in layer_linears(layer).values()]
    return sum(int((lin.weight == 0).sum()) for lin in lins), sum(lin.weight.numel() for lin in lins)


UNSTRUCTURED = [
    dict(method="magnitude", level=0.5),
    dict(method="magnitude", level=0.3, owl=True),
    dict(method="wanda", level=0.3),
    dict(method="wanda", level=0.7, owl=True),
    dict(method="wanda", level=0.5, sequential=False),
    dict(method="sparsegpt", level=0.5),
    dict(method="sparsegpt", level=0.37, owl=True, sequential=False),
    dict(method="sparsegpt", level=0.5, row_wise=True),
    dict(method="wanda", level=0.5, bias_correction=True),
]


@pytest.mark.parametrize("kw", UNSTRUCTURED, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_unstructured_level_is_exact(tiny, ids, kw):
    model = _fresh(tiny)
    embed = model.model.embed_tokens.weight.clone()
    norms = model.model.layers[0].input_layernorm.weight.clone()
    report = prune_model(model, PruneConfig(**kw, **CAL), ids, progress=False)
    zeros, total = _zeros(model)
    assert zeros == round(kw["level"] * total)
    assert report.sparsity == pytest.approx(zeros / total, abs=1e-12)
    assert report.decoder_weights == report.decoder_weights_dense == total
    assert torch.equal(model.model.embed_tokens.weight, embed)  # never pruned (tied lm_head too)
    assert torch.equal(model.model.layers[0].input_layernorm.weight, norms)
    assert report.params == sum(p.numel() for p in model.parameters())
    assert report.params - report.nonzero_params >= zeros
    if kw.get("bias_correction"):  # the mean error moved into new biases
        assert model.model.layers[0].mlp.down_proj.bias is not None
    if kw.get("owl"):
        levels = [lay.level for lay in report.layers]
        assert all(abs(v - kw["level"]) <= 0.08 + 1e-3 for v in levels)
    assert report.seconds > 0 and report.peak_rss_mb > 0
    assert math.isfinite(perplexity(model, ids[:2]))


@pytest.mark.parametrize("method", ["wanda", "sparsegpt", "magnitude"])
def test_two_four_pattern(tiny, ids, method):
    model = _fresh(tiny)
    report = prune_model(model, PruneConfig(method=method, level=0.5, pattern="2:4", **CAL), ids, progress=False)
    for layer in model.model.layers:
        for lin in layer_linears(layer).values():
            w = lin.weight.reshape(lin.out_features, -1, 4)  # [out, in/4, 4]
            assert torch.all((w != 0).sum(-1) == 2)
    assert report.sparsity == pytest.approx(0.5)


@pytest.mark.parametrize("row_wise", [False, True])
@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_sparsegpt_beats_wanda_beats_magnitude_on_reconstruction(row_wise, nm):
    """On one Linear with correlated inputs of uneven scale: OBS < Wanda < magnitude error."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 64, generator=g) @ torch.randn(64, 64, generator=g)  # [tokens, in] correlated
    x *= torch.logspace(-1, 1, 64)[torch.randperm(64, generator=g)]  # uneven column scales
    w = torch.randn(48, 64, generator=g)  # [out, in]
    h = x.T @ x / len(x)
    count = w.numel() // 2

    def err(w2: torch.Tensor) -> float:
        return float(((w - w2) @ x.T).pow(2).mean())

    def masked(scores: torch.Tensor) -> torch.Tensor:
        mask = us.nm_mask(scores, *nm) if nm else us.row_mask(scores, count)
        return w.masked_fill(mask, 0.0)

    (sgpt,) = us.sparsegpt([w], h, [count], nm=nm, block=16, per_row=row_wise)
    assert int((sgpt == 0).sum()) == count
    e_mag, e_wanda, e_sgpt = err(masked(w.abs())), err(masked(us.wanda_scores(w, x.norm(dim=0)))), err(sgpt)
    assert e_sgpt < e_wanda < e_mag


def _check_attention(model):
    for layer in model.model.layers:
        attn = layer.self_attn
        hd = attn.head_dim
        heads, kv = attn.q_proj.out_features // hd, attn.k_proj.out_features // hd
        assert attn.q_proj.out_features % hd == 0 and attn.v_proj.out_features == kv * hd
        assert attn.o_proj.in_features == heads * hd and heads % kv == 0 and kv >= 1
        assert attn.num_key_value_groups == heads // kv
        assert layer.mlp.up_proj.out_features == layer.mlp.gate_proj.out_features == layer.mlp.down_proj.in_features
        for lin in (attn.q_proj, attn.k_proj, attn.v_proj):
            if lin.bias is not None:  # Qwen2: biases travel with their heads
                assert lin.bias.shape == (lin.out_features,)


def _cache_parity(model, ids):
    """Logits of a prefill + one-token-at-a-time decode with a DynamicCache equal a full forward."""
    seq = ids[:2, :20]
    with torch.no_grad():
        full = model(input_ids=seq, use_cache=False).logits  # [2, 20, V]
        cache = DynamicCache()
        out = model(input_ids=seq[:, :12], cache=cache, use_cache=True)
        steps = [out.logits]
        cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        for t in range(12, 20):
            out = model(input_ids=seq[:, t : t + 1], cache=cache, use_cache=True)
            cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-4)


STRUCTURED = [
    dict(level=0.25),  # the defaults: uniform, MLP neurons only, FLAP score, least squares
    dict(level=0.25, allocation="global", attn_share=None, head_mode="group"),  # scores decide everything
    dict(level=0.35, head_mode="query", attn_share=0.3, allocation="uniform", compensation="bias"),
    dict(level=0.25, head_mode="group", attn_share=0.4, score="wanda-sp", compensation="none", sequential=False),
    dict(level=0.45, head_mode="query", attn_share=0.5, score="magnitude", compensation="none"),
    dict(level=0.3, score="obs", allocation="standardized", sequential=False),
    dict(level=0.3, score="obs", head_mode="query", attn_share=0.5),
]


@pytest.mark.parametrize("kw", STRUCTURED, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_structured_shapes_level_and_cache(tiny, ids, kw):
    model = _fresh(tiny)
    dense_total = decoder_weight_count(model)
    report = prune_model(model, PruneConfig(method="structured", **kw, **CAL), ids, progress=False)
    _check_attention(model)
    removed = 1 - decoder_weight_count(model) / dense_total
    assert report.structured and report.decoder_weights == decoder_weight_count(model)
    assert removed == pytest.approx(report.sparsity, abs=1e-9)
    # within half an MLP neuron (3 x hidden weights) of the level
    assert abs(removed - kw["level"]) * dense_total <= 1.5 * model.config.hidden_size
    if kw.get("attn_share"):
        assert sum(lay.heads for lay in report.layers) < 6 * len(report.layers)
    assert [lay.heads for lay in report.layers] == [
        layer.self_attn.q_proj.out_features // layer.self_attn.head_dim for layer in model.model.layers
    ]
    assert report.params == sum(p.numel() for p in model.parameters())
    assert not any(p.is_inference() for p in model.parameters())  # the exporter must be able to trace them
    _cache_parity(model, ids)


def test_query_mode_keeps_every_kv_head(tiny, ids):
    model = _fresh(tiny)
    prune_model(model, PruneConfig(method="structured", level=0.3, head_mode="query", attn_share=1.0,
                                   allocation="uniform", **CAL), ids, progress=False)
    for layer in model.model.layers:
        attn = layer.self_attn
        assert attn.k_proj.out_features // attn.head_dim == 3  # all KV heads stay
        assert attn.num_key_value_groups == 1  # one query per group left


def test_group_mode_keeps_one_kv_head(tiny, ids):
    model = _fresh(tiny)
    prune_model(model, PruneConfig(method="structured", level=0.6, head_mode="group", attn_share=1.0,
                                   allocation="uniform", min_keep=0.5, **CAL), ids, progress=False)
    for layer in model.model.layers:
        attn = layer.self_attn
        assert attn.k_proj.out_features // attn.head_dim == 1
        assert attn.num_key_value_groups == 2
        assert layer.mlp.down_proj.in_features >= 80  # min_keep=0.5 of 160


def test_compensation_reduces_output_error(tiny, ids):
    """Same neurons removed: bias beats none, least squares beats bias (in sample, one layer)."""
    base = tiny_model(TinyConfig(architecture=tiny.model.config.architectures[0], layers=1, heads=6,
                                 kv_heads=3, hidden=96, intermediate=160)).model
    with torch.no_grad():
        ref = base.model(input_ids=ids).last_hidden_state
    err = {}
    for how in ("none", "bias", "lstsq"):
        model = copy.deepcopy(base)
        prune_model(model, PruneConfig(method="structured", level=0.3, attn_share=0.0, allocation="uniform",
                                       compensation=how, damp=1e-6, sequential=False, **CAL), ids, progress=False)
        with torch.no_grad():
            err[how] = float((model.model(input_ids=ids).last_hidden_state - ref).pow(2).mean())
    assert err["lstsq"] < err["bias"] < err["none"]
    assert isinstance(model.model.layers[0].mlp.down_proj.bias, torch.nn.Parameter)


def test_shared_stats_equal_one_pass(tiny, ids):
    cfg = PruneConfig(method="wanda", level=0.5, sequential=False, **CAL)
    a, b = _fresh(tiny), _fresh(tiny)
    prune_model(a, cfg, ids, progress=False)
    stats = collect_stats(tiny.model, ids, PRUNERS["wanda"].needs(cfg))
    report = prune_model(b, cfg, stats=stats, progress=False)
    assert report.calibration["shared_stats"]
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)
    with pytest.raises(RecipeError, match="the shared statistics hold"):
        prune_model(_fresh(tiny), PruneConfig(method="sparsegpt", sequential=False, **CAL), stats=stats)


def test_default_recipe_from_one_shared_pass(tiny, ids):
    """Every variant of the full recipe (every method), scaled to the tiny model, from one `collect_stats`."""
    from dataclasses import replace

    from export.prune import prune_configs, recipe_needs
    from export.recipe import bundled

    default = prune_configs(bundled("full"))
    recipe = {n: replace(c, samples=min(c.samples, SAMPLES), seq_len=SEQ, batch_size=4) for n, c in default.items()}
    needs = recipe_needs(recipe.values())
    assert needs["down_in"] >= {"xtx", "sum"} and needs["attn_in"] >= {"xtx"}
    stats = collect_stats(tiny.model, ids, needs)
    for name, cfg in recipe.items():
        report = prune_model(_fresh(tiny), cfg, ids, stats=stats, progress=False)
        assert report.sparsity == pytest.approx(cfg.level, abs=0.02), name
        assert report.calibration["shared_stats"]
        assert report.calibration["layer_forwards"] == (2 * 2 if cfg.sequential else 0), name


def test_magnitude_needs_no_data(tiny):
    report = prune_model(_fresh(tiny), PruneConfig(method="magnitude", level=0.5), progress=False)
    assert report.calibration["samples"] == 0


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(level=1.5), r"pruning level must be in \(0, 1\), got 1\.5; write 0\.5 for 50%"),
        (dict(level=0.0), r"pruning level must be in \(0, 1\), got 0\.0"),
        (dict(level=True), r"pruning level must be in \(0, 1\), got True"),
        (dict(method="obc"), r"unknown pruning method 'obc'; known: magnitude, wanda, sparsegpt, structured"),
        (dict(pattern="2:4", level=0.6), r"pattern '2:4' prunes 0\.5 of the weights, but level is 0\.6; set level = 0\.5"),
        (dict(pattern="2-4"), r"pattern must look like '2:4'"),
        (dict(pattern="4:2"), r"pattern '4:2' needs 0 < N < M"),
        (dict(pattern="2:4", owl=True), r"drop owl=true"),
        (dict(method="structured", owl=True), r"owl applies to unstructured methods"),
        (dict(method="structured", pattern="2:4"), r"pattern '2:4' applies to unstructured methods"),
        (dict(method="structured", head_mode="kv"), r"unknown head_mode 'kv'; known: group, query"),
        (dict(method="structured", score="taylor"), r"unknown score 'taylor'; known: flap, wanda-sp, magnitude, obs"),
        (dict(method="structured", allocation="owl"), r"unknown allocation 'owl'; known: uniform, global, standardized"),
        (dict(method="structured", bias_correction=True), r"bias_correction applies to unstructured methods"),
        (dict(method="structured", compensation="ridge"), r"unknown compensation 'ridge'; known: bias, lstsq, none"),
        (dict(method="structured", attn_share=None), r"allocation='uniform' needs attn_share"),
        (dict(method="structured", attn_share=1.2), r"attn_share must be in \[0, 1\] or None, got 1\.2"),
        (dict(method="structured", score="magnitude"), r"compensation 'lstsq' needs data"),
        (dict(samples=0), r"samples must be an integer >= 1, got 0"),
    ],
)
def test_bad_configs(kw, match):
    with pytest.raises(RecipeError, match=match):
        PruneConfig(**kw)


def test_from_dict_rejects_unknown_keys():
    assert PruneConfig.from_dict({"method": "wanda", "level": 0.3}).level == 0.3
    with pytest.raises(RecipeError, match=r"unknown pruning keys \['sparsity'\]"):
        PruneConfig.from_dict({"method": "wanda", "sparsity": 0.3})
    assert PruneConfig().to_json()["method"] == "sparsegpt"


def test_calibration_ids_checked(tiny, ids):
    with pytest.raises(RecipeError, match=r"calibration ids of shape \(8, 32\) are too small for samples=64"):
        prune_model(_fresh(tiny), PruneConfig(method="wanda", samples=64, seq_len=32), ids)
    with pytest.raises(RecipeError, match="needs calibration ids"):
        prune_model(_fresh(tiny), PruneConfig(method="wanda", **CAL))


def test_perplexity_matches_hf_loss(tiny, ids):
    with torch.no_grad():
        loss = tiny.model(input_ids=ids[:3], labels=ids[:3]).loss
    assert perplexity(tiny.model, ids[:3], batch_size=2) == pytest.approx(math.exp(float(loss)), rel=1e-4)


# --------------------------------------------------------------------------- real model (slow)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_real_model_recipe(smollm2):
    """Key variants of the default recipe on SmolLM2-135M, from one shared pass (~5 min, 2 cores)."""
    from export.prune import prune_configs, recipe_needs
    from export.recipe import bundled
    from harness.text import heldout_windows

    tok = smollm2.tokenizer
    ev = torch.as_tensor(heldout_windows(tok, 16, 512))
    dense_ppl = perplexity(smollm2.model, ev)
    assert dense_ppl < 25
    ids = torch.as_tensor(calibration_windows(tok, 128, 512))
    names = ("sparsegpt-50", "wanda-50", "structured-25")
    default = prune_configs(bundled("full"))
    stats = collect_stats(smollm2.model, ids, recipe_needs(default[n] for n in names))
    assert stats.peak_rss_mb < 2048  # 128 x 512 calibration, every Hessian of every layer kept
    bounds = {"sparsegpt-50": 1.55, "wanda-50": 2.0, "structured-25": 1.4}  # x dense perplexity
    for name in names:
        model = copy.deepcopy(smollm2.model)
        report = prune_model(model, default[name], stats=stats)
        ratio = perplexity(model, ev) / dense_ppl
        assert ratio < bounds[name], (name, ratio)
        assert report.sparsity == pytest.approx(default[name].level, abs=1e-3)
        if report.structured:
            _cache_parity(model, ids)
