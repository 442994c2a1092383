"""What onnxruntime-genai needs to open a bundle variant on its own.

Each variant folder gets `genai_config.json` (the decoder's input and output names, which are
already genai's: docs/DESIGN.md section 3; heads, layers, context, special tokens, greedy
search defaults), plus `tokenizer.json` and `tokenizer_config.json` (genai's tokenizer reads
both). `og.Model("bundle/variants/dense")` then generates without edge_runtime.

What genai cannot express is recorded in the variant's manifest entry (`genai`), not
guessed later from files: it takes one head count for every layer, so a variant whose
structured pruning left layers with different head counts is marked `opens: false`.
Masked (bitmask) variants open: onnxruntime folds their expansion subgraph at load, at the
cost of the load-time peak memory docs/DESIGN.md section 6 measures.

Schema: onnxruntime-genai's configuration reference (docs/genai/reference/config.md);
tokenizer_class values as transformers names them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from edge_runtime import bundle as B

CONFIG = "genai_config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
MODEL_TYPES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2"}


def tokenizer_class(tokenizer: dict[str, Any]) -> str:
    """The transformers class genai's tokenizer should emulate, from tokenizer.json's pipeline."""
    pre = tokenizer.get("pre_tokenizer") or {}
    kinds = {pre.get("type")} | {p.get("type") for p in pre.get("pretokenizers", [])}
    if "Metaspace" in kinds or (tokenizer.get("decoder") or {}).get("type") == "Sequence":
        return "LlamaTokenizer"  # sentencepiece-style BPE (Llama 2, Mistral, TinyLlama)
    return "GPT2Tokenizer"  # byte-level BPE (SmolLM, GPT-2 family; checked token for token in the tests)


def config(model: B.ModelInfo, variant: B.Variant) -> tuple[dict[str, Any], str | None]:
    """genai_config.json for `variant`, and why genai cannot open it (None: it can)."""
    layers = variant.extra.get("layers") or []
    heads = {(int(q), int(kv)) for q, kv, *_ in layers}
    why = None
    if len(heads) != 1:
        why = f"layers have different attention head counts {sorted(heads)}; genai takes one count for all"
    q, kv = min(heads) if heads else (0, 0)
    eos = list(model.eos_token_ids)
    doc = {
        "model": {
            "bos_token_id": model.bos_token_id if model.bos_token_id is not None else eos[0],
            "context_length": model.context_length,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": Path(variant.onnx).name,
                "head_size": int(model.extra["head_dim"]),
                "hidden_size": int(model.extra["hidden_size"]),
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
                "num_attention_heads": q,
                "num_hidden_layers": model.num_layers,
                "num_key_value_heads": kv,
            },
            "eos_token_id": eos if len(eos) > 1 else eos[0],
            "pad_token_id": eos[0],
            "type": MODEL_TYPES.get(model.architecture, "llama"),
            "vocab_size": model.vocab_size,
        },
        "search": {  # greedy, as edge_runtime's defaults; the past grows (no shared max-length buffer)
            "do_sample": False, "max_length": model.context_length, "min_length": 0, "num_beams": 1,
            "num_return_sequences": 1, "past_present_share_buffer": False, "repetition_penalty": 1.0,
            "temperature": 1.0, "top_k": 1, "top_p": 1.0,
        },
    }
    return doc, why


def write(root: Path, model: B.ModelInfo, variant: B.Variant, folder: Path | None = None) -> dict[str, Any]:
    """Write the genai files beside `variant`'s graph under bundle `root`; its manifest record.

    `folder`: write there instead (a scratch folder that links to the graph, for bundles
    exported before these files existed: benchmarks/genai_parity.py).
    """
    folder = folder or (root / variant.onnx).parent
    doc, why = config(model, variant)
    (folder / CONFIG).write_text(json.dumps(doc, indent=2) + "\n")
    shutil.copyfile(root / B.TOKENIZER, folder / B.TOKENIZER)
    raw = json.loads((root / B.TOKENIZER).read_text())
    tok = Tokenizer.from_file(str(root / B.TOKENIZER))
    eos = tok.id_to_token(model.eos_token_ids[0]) if model.eos_token_ids else None
    bos = tok.id_to_token(model.bos_token_id) if model.bos_token_id is not None else eos
    tcfg = {"tokenizer_class": tokenizer_class(raw), "bos_token": bos, "eos_token": eos, "unk_token": eos,
            "add_bos_token": model.bos_token_id is not None, "add_prefix_space": False,
            "clean_up_tokenization_spaces": False, "model_max_length": model.context_length}
    if model.chat_template:
        tcfg["chat_template"] = model.chat_template
    (folder / TOKENIZER_CONFIG).write_text(json.dumps(tcfg, indent=2) + "\n")
    rel = (root / variant.onnx).parent.relative_to(root).as_posix()
    return {"config": f"{rel}/{CONFIG}", "opens": why is None, **({"why_not": why} if why else {})}


def compare_greedy(root: Path, variant: B.Variant, prompt_ids: list[int], new_tokens: int,
                   threads: int = 1, folder: Path | None = None) -> dict[str, Any]:
    """Greedy-decode `prompt_ids` with onnxruntime-genai and with edge_runtime's decoder, step by step.

    Returns both token lists and the largest logit difference over the steps; needs the
    `onnxruntime-genai` package (the dev extra). Stops early where both pick an end token.
    """
    import numpy as np
    import onnxruntime_genai as og

    from edge_runtime.engine.session import VariantSession

    decoder = VariantSession(root / variant.onnx, threads=threads).decoder(len(prompt_ids) + new_tokens)
    model = og.Model(str(folder or (root / variant.onnx).parent))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt_ids) + new_tokens)
    gen = og.Generator(model, params)
    gen.append_tokens(prompt_ids)
    logits = decoder.prefill(np.asarray(prompt_ids))
    ours: list[int] = []
    theirs: list[int] = []
    diff = 0.0
    while not gen.is_done() and len(ours) < new_tokens:
        diff = max(diff, float(np.abs(np.asarray(gen.get_logits()).reshape(-1) - logits.reshape(-1)).max()))
        ours.append(int(np.argmax(logits)))
        gen.generate_next_token()
        theirs.append(int(gen.get_next_tokens()[0]))
        if theirs[-1] != ours[-1]:
            break
        logits = decoder.step(ours[-1])
    return {"edge_runtime": ours, "genai": theirs, "same": ours == theirs, "max_logit_diff": diff}
