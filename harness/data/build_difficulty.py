"""Rebuild `difficulty.jsonl`: the cases the difficulty model is trained on, never gated on.

The gate scores `suite.jsonl`; the difficulty model (`harness.difficulty`) learns from
per-case outcomes on *these* cases, so the gate's floors are never fitted to. The cases are
generated from the tables below with a fixed seed, in the suite's format (`harness.suite`),
spanning what makes a request hard for a pruned model: easy and rare facts, one- and
multi-step arithmetic, the same questions in French, Spanish, German and Swahili, lists of
N items and JSON to fill in. A test checks that no id or prompt is shared with the suite.

Run: `python harness/data/build_difficulty.py` (writes difficulty.jsonl beside this file).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

VERSION = "1.0.0"
SEED = 1616

# country, capital, well known (1) or rare (0)
CAPITALS = [
    ("France", "Paris", 1), ("Spain", "Madrid", 1), ("Italy", "Rome", 1), ("Germany", "Berlin", 1),
    ("Japan", "Tokyo", 1), ("Egypt", "Cairo", 1), ("Russia", "Moscow", 1), ("Canada", "Ottawa", 1),
    ("China", "Beijing", 1), ("Greece", "Athens", 1), ("Portugal", "Lisbon", 1), ("Kenya", "Nairobi", 1),
    ("Burkina Faso", "Ouagadougou", 0), ("Bhutan", "Thimphu", 0), ("Eritrea", "Asmara", 0),
    ("Kyrgyzstan", "Bishkek", 0), ("Suriname", "Paramaribo", 0), ("Moldova", "Chisinau", 0),
    ("Mongolia", "Ulaanbaatar", 0), ("Malawi", "Lilongwe", 0), ("Laos", "Vientiane", 0),
    ("Tajikistan", "Dushanbe", 0), ("Vanuatu", "Port Vila", 0), ("Paraguay", "Asuncion", 0),
]
# language, question template (a, b), answer instruction
ARITH_LANG = [
    ("en", "What is {a} plus {b}?", "Answer with just the number."),
    ("fr", "Combien font {a} plus {b} ?", "Réponds seulement avec le nombre."),
    ("es", "¿Cuánto es {a} más {b}?", "Responde solo con el número."),
    ("de", "Was ist {a} plus {b}?", "Antworte nur mit der Zahl."),
    ("sw", "Jumla ya {a} na {b} ni ngapi?", "Jibu kwa namba tu."),
]
CATEGORIES = ["colors", "fruits", "animals", "countries", "vegetables", "musical instruments", "planets",
              "tools", "sports", "metals"]
PEOPLE = ["Ana", "Bruno", "Chen", "Dara", "Emeka", "Farah", "Goran", "Hana", "Ivo", "Juma"]
OPPOSITES = [("hot", "cold"), ("up", "down"), ("early", "late"), ("full", "empty"), ("heavy", "light"),
             ("ancient", "modern"), ("generous", "stingy"), ("scarce", "plentiful"), ("rigid", "flexible"),
             ("humble", "arrogant")]


def _choice(rng: random.Random, id_: str, slice_: str, prompt: str, right: str, wrong: list[str],
            lang: str = "en") -> dict[str, Any]:
    options = [" " + right] + [" " + w for w in wrong]
    order = list(range(len(options)))
    rng.shuffle(order)
    return {"id": id_, "slice": slice_, "type": "choice", "prompt": prompt, "lang": lang,
            "options": [options[i] for i in order], "answer": order.index(0)}


def build(rng: random.Random) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    caps = [c for _, c, _ in CAPITALS]
    for country, capital, known in CAPITALS:
        wrong = rng.sample([c for c in caps if c != capital], 3)
        cases.append(_choice(rng, f"diff-capital-{country.lower().replace(' ', '-')}", "common" if known else "edge",
                             f"Question: Which city is the capital of {country}?\nAnswer:", capital, wrong))
    for i in range(40):
        lang, q, inst = ARITH_LANG[i % len(ARITH_LANG)]
        big = i % 2 == 1
        a, b = (rng.randint(100, 999), rng.randint(100, 999)) if big else (rng.randint(1, 9), rng.randint(1, 9))
        cases.append({"id": f"diff-add-{lang}-{i:02d}", "slice": "multilingual" if lang != "en" else
                      ("edge" if big else "common"), "type": "exact", "template": "chat", "lang": lang,
                      "prompt": f"{q.format(a=a, b=b)} {inst}", "answer": [str(a + b)], "max_new_tokens": 8})
    for i in range(20):
        a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 9)
        cases.append({"id": f"diff-chain-{i:02d}", "slice": "edge", "type": "exact", "template": "chat",
                      "prompt": f"Compute {a} times {b}, then add {c}. Answer with just the number.",
                      "answer": [str(a * b + c)], "max_new_tokens": 8})
    for i, cat in enumerate(CATEGORIES):
        n = 3 + i % 4
        cases.append({"id": f"diff-list-{i:02d}", "slice": "common", "type": "list", "template": "chat",
                      "tags": ["format", "instruction"], "prompt": f"Name {n} {cat}, one per line, nothing else.",
                      "n": n, "style": "lines", "max_new_tokens": 48})
    for i, who in enumerate(PEOPLE):
        age = rng.randint(18, 80)
        cases.append({"id": f"diff-json-{i:02d}", "slice": "adversarial", "type": "json", "template": "chat",
                      "tags": ["format"], "max_new_tokens": 40,
                      "prompt": f'Fill in this JSON for {who}, who is {age} years old, and output only the JSON: '
                                '{"name": "...", "age": ...}',
                      "keys": ["name", "age"], "expect": {"name": who, "age": age}})
    words = [w for pair in OPPOSITES for w in pair]
    for i, (w, opp) in enumerate(OPPOSITES):
        wrong = rng.sample([x for x in words if x not in (w, opp)], 3)
        cases.append(_choice(rng, f"diff-opposite-{w}", "common" if i < 5 else "edge",
                             f"The word that means the opposite of \"{w}\" is", opp, wrong))
        neg = _choice(rng, f"diff-not-opposite-{w}", "adversarial",
                      f"Which word is NOT the opposite of \"{w}\"? The answer is", rng.choice(wrong), [opp])
        cases.append(neg)
    return cases


def main() -> None:
    header = {"suite": "edge-eval", "version": VERSION, "changelog": [
        {"version": VERSION, "changes": "Difficulty-model training cases, generated (harness/data/build_difficulty.py); "
                                        "never scored by the gate."}]}
    cases = build(random.Random(SEED))
    out = Path(__file__).with_name("difficulty.jsonl")
    out.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in [header, *cases]) + "\n", encoding="utf-8")
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()
