"""The calibration engine: statistics, propagation through layers, sequential vs one pass."""

from __future__ import annotations

import pytest
import torch

from edge_runtime.errors import ExportError
from export.calibrate import (
    Calibrator,
    InputStats,
    LayerStats,
    collect_stats,
    layer_linears,
)
from export.corpus import calibration_windows
from export.load import TinyConfig, tiny_model
from export.memory import PeakRSS

ARCHS = ["LlamaForCausalLM", "Qwen2ForCausalLM"]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request):
    return tiny_model(TinyConfig(architecture=request.param, layers=3))


@pytest.fixture(scope="module")
def ids(tiny):
    return torch.as_tensor(calibration_windows(tiny.tokenizer, 6, 32))


def _dense_inputs(model, ids):
    """Each layer's input hidden states, from the full model."""
    with torch.no_grad():
        out = model.model(input_ids=ids, output_hidden_states=True, use_cache=False)
    return out.hidden_states  # embeddings, then each layer's output


def test_stats_match_direct_computation(tiny, ids):
    model = tiny.model
    stats = collect_stats(model, ids, {"attn_in": frozenset({"sq", "sum", "xtx"}), "mlp_in": frozenset({"sq"})}, batch_size=4)
    hs = _dense_inputs(model, ids)
    for i, layer in enumerate(model.model.layers):
        with torch.no_grad():
            x = layer.input_layernorm(hs[i]).reshape(-1, hs[i].shape[-1])  # [tokens, H]
        s = stats.layers[i]["attn_in"]
        assert s.n == ids.numel()
        torch.testing.assert_close(s.mean, x.mean(0), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(s.hessian, x.T @ x / len(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(s.norm, x.norm(dim=0), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(s.var, x.var(0, unbiased=False), rtol=1e-3, atol=1e-5)
        assert stats.layers[i]["mlp_in"].sq.shape == (model.config.hidden_size,)
    assert "o_in" not in stats.layers[0].inputs  # only what was asked
    assert stats.peak_rss_mb > 0 and stats.seconds > 0


def test_sequential_sees_pruned_activations(tiny, ids):
    model = tiny.model
    needs = {"attn_in": frozenset({"sum"})}
    seen: dict[bool, list[torch.Tensor]] = {}
    for sequential in (True, False):
        m = type(model)(model.config).eval()
        m.load_state_dict(model.state_dict())
        got: list[torch.Tensor] = []

        def zero_mlp(i, layer, stats, got=got):
            got.append(stats["attn_in"].mean.clone())
            if i == 0:
                layer.mlp.down_proj.weight.zero_()

        Calibrator(m, ids, batch_size=4).run(needs, zero_mlp, sequential=sequential, progress=False)
        seen[sequential] = got
    dense = collect_stats(model, ids, needs).layers
    torch.testing.assert_close(seen[False][1], dense[1]["attn_in"].mean)  # one pass: dense inputs
    assert not torch.allclose(seen[True][1], dense[1]["attn_in"].mean, atol=1e-4)  # sequential: pruned
    torch.testing.assert_close(seen[True][0], seen[False][0])  # layer 0 is the same either way


def test_missing_statistic_is_named():
    s = InputStats(frozenset({"sq"}))
    s.add(torch.randn(10, 4))
    assert s.norm.shape == (4,)
    with pytest.raises(ExportError, match="statistic 'mean' needs 'sum'"):
        _ = s.mean
    assert not LayerStats({"attn_in": s}).covers({"attn_in": frozenset({"xtx"})})
    assert LayerStats({"attn_in": s}).covers({"attn_in": frozenset({"sq"})})


def test_bad_ids_and_layout(tiny):
    with pytest.raises(ExportError, match=r"calibration ids must be \[n, L\] integers"):
        Calibrator(tiny.model, torch.zeros(4, 8))
    with pytest.raises(ExportError, match="unknown statistic"):
        Calibrator(tiny.model, torch.zeros(2, 8, dtype=torch.long)).run({"attn_in": frozenset({"cube"})}, lambda *a: False)
    assert set(layer_linears(tiny.model.model.layers[0])) >= {"self_attn.q_proj", "mlp.down_proj"}


def test_peak_rss_sampler():
    with PeakRSS() as rss:
        big = torch.ones(2**23)  # 32 MB
        rss.sample()
        del big
    assert rss.peak_mb > 32


def test_packed_hessian_round_trips():
    s = InputStats(frozenset({"xtx", "sum"}))
    s.add(torch.randn(50, 9))
    h, cov, norm = s.hessian.clone(), s.cov.clone(), s.norm.clone()
    s.pack()
    assert s.xtx is None and s.packed.numel() == 9 * 10 // 2
    torch.testing.assert_close(s.hessian, h)
    torch.testing.assert_close(s.cov, cov)
    torch.testing.assert_close(s.norm, norm)
