"""The device's byte-level codec (llguidance) gives the ids and text the `tokenizers` package gives."""

from __future__ import annotations

import json
import random

import pytest

from edge_runtime import extras
from edge_runtime.engine.codec import ByteLevelCodec, HFCodec, open_codec
from edge_runtime.engine.tokenizer import Tokenizer
from edge_runtime.errors import BundleError, MissingExtra

tokenizers = pytest.importorskip("tokenizers")


def _tiny() -> str:
    from export.load import tiny_tokenizer

    return tiny_tokenizer().to_str()


def _smollm2() -> str:
    """The default model's own tokenizer, read from its GGUF as the exporter reads it."""
    from edge_runtime.errors import ExportError
    from export.load import smollm2_gguf_path

    transformers = pytest.importorskip("transformers")
    try:
        path = smollm2_gguf_path()
    except ExportError as e:
        pytest.skip(str(e))
    return transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).backend_tokenizer.to_str()


def _with_bos() -> str:
    """Llama 3's layout: a ByteLevel then TemplateProcessing post-processor that adds a BOS."""
    spec = json.loads(_tiny())
    bos = next(t for t in spec["added_tokens"] if t["content"] == "<|im_start|>")
    spec["post_processor"] = {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": bos["content"], "type_id": 0}},
                                                  {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {bos["content"]: {"id": bos["content"], "ids": [bos["id"]], "tokens": [bos["content"]]}}}]}
    return json.dumps(spec)


def _qwen2_style() -> str:
    """Qwen2's layout: an NFC normalizer and a Split pre-tokenizer with its regex before ByteLevel."""
    spec = json.loads(_tiny())
    spec["normalizer"] = {"type": "NFC"}
    spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "behavior": "Isolated", "invert": False, "pattern": {"Regex": (
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
            r"|\s*[\r\n]+|\s+(?!\S)|\s+")}},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
    return json.dumps(spec)


def _texts(specials: list[str], n: int = 1500) -> list[str]:
    rng = random.Random(0)
    pieces = list("abc xyz  \n\t\r 0123 ,.!?-_'\" éüß 中文 日本語 🙂👍🏽 \u200b\x00\u0301") + specials + [
        "<|", "|>", " <", "> ", "I'm", "we'll", "e\u0301", "A\u030a"]  # decomposed forms for NFC
    out = ["", " ", "Hello, world!", "  leading", "trailing  ", "x" * 3000, "def f(x):\n    return x  # ok\n"]
    out += ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 48))) for _ in range(n)]
    return out + ["".join(chr(rng.randint(0x20, 0x2FFFF)) for _ in range(20)).encode("utf-8", "ignore").decode()
                  for _ in range(100)]


@pytest.fixture(scope="module", params=["tiny", "smollm2", "with_bos", "qwen2_style"])
def pair(request):
    text = {"tiny": _tiny, "smollm2": _smollm2, "with_bos": _with_bos, "qwen2_style": _qwen2_style}[request.param]()
    return ByteLevelCodec(json.loads(text)), HFCodec(text)


def test_encode_matches_tokenizers(pair):
    ours, theirs = pair
    assert ours.vocab_size == theirs.vocab_size and ours.specials == theirs.specials
    for text in _texts(sorted(theirs.specials)[:6]):
        for specials in (True, False):
            for template in (True, False):
                assert ours.encode(text, specials, template) == theirs.encode(text, specials, template), \
                    (text, specials, template)


def test_decode_and_stream_match_tokenizers(pair):
    ours, theirs = pair
    rng = random.Random(1)
    seqs = [theirs.encode(t, True, True) for t in _texts(sorted(theirs.specials)[:6], 400)]
    seqs += [[rng.randrange(ours.vocab_size) for _ in range(rng.randint(1, 12))] for _ in range(800)]  # any bytes
    for ids in seqs:
        for skip in (True, False):
            assert ours.decode(ids, skip) == theirs.decode(ids, skip), (ids, skip)
        stream = ours.stream(ids[:2])
        assert "".join(stream.push(i) for i in ids) + stream.flush() == theirs.decode(ids, True)


def test_token_names(pair):
    ours, theirs = pair
    for i in range(0, ours.vocab_size, 7):
        name = theirs.id_to_token(i)
        assert ours.id_to_token(i) == name and ours.token_to_id(name) == theirs.token_to_id(name)


def _metaspace() -> str:
    """A SentencePiece-style tokenizer (Llama 2, TinyLlama): the `tokenizers` package reads it."""
    from tokenizers import decoders, models, normalizers, trainers

    tok = tokenizers.Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(["hello world, this is a sentencepiece style tokenizer"] * 20, trainer)
    return tok.to_str()


def test_other_tokenizers_need_the_tokenizers_extra(monkeypatch):
    text = _metaspace()
    assert "not byte-level BPE" in ByteLevelCodec.unsupported(json.loads(text))
    codec = open_codec(text)
    assert isinstance(codec, HFCodec) and codec.decode(codec.encode("hello world", True, True), True) == "hello world"
    assert isinstance(open_codec(_tiny()), ByteLevelCodec)
    monkeypatch.setitem(extras.EXTRAS, "tokenizers", (("tokenizers", "tokenizers_absent_for_this_test"),))
    with pytest.raises(MissingExtra, match=r"Metaspace|Replace.*not byte-level BPE.*pip install 'edge-sparsity-runtime\[tokenizers\]'"):
        Tokenizer(text)
    assert isinstance(open_codec(_tiny()), ByteLevelCodec)  # byte-level BPE never needs it


def test_special_tokens_that_strip_text_use_tokenizers():
    spec = json.loads(_tiny())
    spec["added_tokens"][1]["lstrip"] = True
    assert "strip or normalize" in ByteLevelCodec.unsupported(spec)


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"version": "1.0"}', '{"model": {"type": "Unigram"}}',
                                  '{"model": {"type": "BPE"}, "decoder": {"type": "ByteLevel"}}',
                                  '{"model": {"type": "BPE", "vocab": {}}, "decoder": {"type": "ByteLevel"}, '
                                  '"added_tokens": [{"id": 1, "special": true}]}',
                                  '{"model": {"type": "BPE"}, "decoder": ["ByteLevel"]}'])
def test_unreadable_tokenizer_is_a_bundle_error(text):
    with pytest.raises(BundleError, match=r"cannot read the tokenizer 'x/tokenizer.json' \(.+\); re-export the bundle"):
        open_codec(text, source="x/tokenizer.json")
