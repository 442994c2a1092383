"""Rebuild `recovery_prompts.jsonl`, the prompts the dense model answers to make recovery data.

Recovery (export/recover.py) distils a pruned variant from its dense parent on text the
parent writes itself: its greedy answers to these prompts, chat-templated, plus the
calibration prose. The prompts were written for this project (templates and fillers in
this file; nothing copied from a benchmark or from the evaluation suite) and span what the
harness measures: instructions with a format constraint, factual questions, multi-step
problems, and French, Spanish, German and Swahili. They must never overlap the suite:
tests/export/test_recovery_data.py checks every prompt against every suite prompt.

Run: `python export/data/build_prompts.py` (writes recovery_prompts.jsonl beside this file).
Licence: Apache-2.0, like the project (RECOVERY_DATA.md).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

VERSION = "1.0.0"
PROMPTS: list[dict[str, Any]] = []


def add(kind: str, lang: str, text: str) -> None:
    PROMPTS.append({"id": f"{kind}-{lang}-{len(PROMPTS):03d}", "kind": kind, "lang": lang, "prompt": text})


# --------------------------------------------------------------------------- format constraints

TOPICS = ["autumn in a small town", "a lighthouse keeper", "learning to ride a bicycle", "a rainy market day",
          "a robot that learns to paint", "the first day at a new job", "a train journey through mountains",
          "a garden in spring", "a grandmother's recipe book", "a night sky full of stars",
          "a library after closing time", "a fisherman at dawn"]
THINGS = [("musical instruments", 4), ("kinds of trees", 3), ("sports played with a ball", 5),
          ("kitchen tools", 4), ("ocean animals", 3), ("things to pack for a hike", 5), ("board games", 3),
          ("ways to save water at home", 4), ("parts of a bicycle", 4), ("birds", 3), ("metals", 4),
          ("programming languages", 3), ("types of clouds", 3), ("African countries", 4), ("insects", 5)]
STYLES = ["each on its own line", "as a numbered list", "separated by semicolons",
          "as a bulleted list using dashes"]
RECORDS = [
    ('a car made by Toyota in 2015', '{"make": "", "year": 0}'),
    ('a movie called "Night Harbor" released in 1998', '{"title": "", "year": 0}'),
    ('a student named Kofi who is 19', '{"student": "", "age": 0}'),
    ('a mountain called Kilimanjaro, 5895 metres high', '{"mountain": "", "height_m": 0}'),
    ('a river called the Danube that flows into the Black Sea', '{"river": "", "mouth": ""}'),
    ('a laptop that costs 899 dollars and weighs 1.4 kg', '{"price_usd": 0, "weight_kg": 0}'),
    ('a song named "Blue Morning" by a band called The Lanterns', '{"song": "", "band": ""}'),
    ('a recipe for pancakes that takes 20 minutes', '{"dish": "", "minutes": 0}'),
    ('an employee named Marta in the sales team', '{"employee": "", "team": ""}'),
    ('a planet with two moons and a red surface', '{"moons": 0, "color": ""}'),
]


def format_prompts(rng: random.Random) -> None:
    for topic in TOPICS:
        add("format", "en", f"Write exactly two sentences about {topic}.")
        add("format", "en", f"Give a title of at most six words for a story about {topic}. Reply with the title only.")
    for i, (things, n) in enumerate(THINGS):
        add("format", "en", f"Name {n} {things}, {STYLES[i % len(STYLES)]}.")
    for what, shape in RECORDS:
        add("format", "en", f"Describe {what} as JSON using exactly this shape: {shape}. Output only the JSON.")
    for word in ["ocean", "winter", "friendship", "machine", "forest", "silence"]:
        add("format", "en", f"Write a haiku about the {word}, three lines, nothing else.")
        add("format", "en", f"Give one synonym for the word '{word}'. Answer with a single word.")
    for sentence in ["the meeting starts at nine", "please close the window", "our team won the final",
                     "the bakery opens early on sundays"]:
        add("format", "en", f"Rewrite this in capital letters only: {sentence}")
        add("format", "en", f"Turn this into a polite question: {sentence}")
    yesno = ["Does ice float on water?", "Is a whale a fish?", "Do spiders have six legs?",
             "Is copper a good conductor of electricity?", "Can penguins fly?", "Is Mount Everest in Asia?",
             "Does sound travel faster than light?", "Is the Pacific the largest ocean?"]
    for q in yesno:
        add("format", "en", f"{q} Start your answer with Yes or No, then give one short reason.")


# --------------------------------------------------------------------------- factual questions

FACTS = [
    "Why does a metal spoon feel colder than a wooden one?", "What causes the seasons on Earth?",
    "How do vaccines help the body fight disease?", "What is photosynthesis, in simple words?",
    "Why is the sky blue during the day?", "What does a thermometer measure?",
    "How does a compass work?", "What is the difference between weather and climate?",
    "Who wrote the play Romeo and Juliet?", "Which languages are official in Canada?",
    "Which gas do humans breathe out?", "What is the freezing point of water in Fahrenheit?",
    "How many continents are there, and which is the largest?", "What is hummus usually made from?",
    "What does the formula H2O stand for?", "Why do we have leap years?",
    "What is an octopus known for?", "Which organ pumps blood through the body?",
    "What does a librarian do?", "Which desert covers much of Mongolia?",
    "Why do boats float?", "What is a volcano?", "How do bats find their way in the dark?",
    "What did the Wright brothers invent?", "What is the euro, and where is it used?",
    "What is a prime number? Give two examples.", "What is the tallest animal?",
    "Why do leaves change color in autumn?", "What is the job of the lungs?",
    "What is the speed of light, roughly?", "Where is the Sahara desert?",
    "What is a noun? Give an example sentence.", "How long does the Moon take to orbit the Earth?",
    "What do carpenters work with?", "What is recycling and why does it matter?",
    "Why should you wash your hands before eating?", "What is the difference between a lake and a sea?",
    "Who painted the Mona Lisa?", "Why were castles built with thick walls?", "What is gravity?",
]


def factual_prompts(rng: random.Random) -> None:
    for q in FACTS:
        add("fact", "en", q)
    for q in FACTS[::3]:
        add("fact", "en", f"{q} Answer in one sentence.")


# --------------------------------------------------------------------------- multi-step problems


def problem_prompts(rng: random.Random) -> None:
    names = ["Amina", "Lukas", "Priya", "Diego", "Mei", "Tomasz", "Zawadi", "Olivier"]
    items = ["pencils", "stickers", "marbles", "books", "oranges", "stamps"]
    for i in range(24):
        n, it = names[i % len(names)], items[i % len(items)]
        a, b, c = rng.randint(12, 60), rng.randint(2, 9), rng.randint(2, 5)
        form = i % 4
        if form == 0:
            q = f"{n} has {a} {it}, buys {b} packs of {c} more, then gives away {b + c}. How many {it} are left?"
        elif form == 1:
            q = f"A shop sells {it} at {c} dollars each. {n} buys {b} and pays with a {c * b + a} dollar note. How much change?"
        elif form == 2:
            q = f"{n} reads {b} pages a day for {a % 10 + 3} days, then {c} pages a day for 4 days. How many pages in total?"
        else:
            q = f"A box holds {c * 6} {it}. {n} shares them equally among {c} friends and keeps none. How many does each friend get?"
        add("problem", "en", q + (" Explain step by step, then give the final answer." if i % 2 else " Give only the final number."))
    for i in range(8):
        x, y = rng.randint(11, 99), rng.randint(3, 19)
        add("problem", "en", f"Compute {x} multiplied by {y}, then subtract {y}. Show your steps.")
        add("problem", "en", f"If a train leaves at {i + 6}:15 and the trip takes {y * 5} minutes, when does it arrive?")


# --------------------------------------------------------------------------- other languages

LANGS: dict[str, list[str]] = {
    "fr": [
        "Explique en deux phrases pourquoi il pleut.", "Donne trois conseils pour bien dormir.",
        "Quelle est la différence entre un fleuve et une rivière ?", "Écris une courte phrase sur la mer.",
        "Traduis en anglais : « Le chat dort sur le canapé. »", "Cite quatre légumes verts, un par ligne.",
        "Combien font 14 plus 27 ? Réponds avec le nombre seulement.", "Qui a écrit « Les Misérables » ?",
        "Décris ta saison préférée en une phrase.", "Comment dit-on « thank you very much » en français ?",
        "Pourquoi les abeilles sont-elles importantes ?", "Donne un titre court pour une histoire de pirates.",
        "Qu'est-ce qu'un ordinateur ? Réponds simplement.", "Écris trois mots qui riment avec « chanson ».",
    ],
    "es": [
        "Explica en dos frases qué es la energía solar.", "Dame tres consejos para aprender un idioma.",
        "¿Cuál es el océano más grande del mundo?", "Escribe una frase corta sobre la montaña.",
        "Traduce al inglés: «Mi hermano cocina muy bien.»", "Nombra cuatro animales de granja, uno por línea.",
        "¿Cuánto es 8 por 7? Responde solo con el número.", "¿Quién escribió «Don Quijote»?",
        "Describe un día de playa en una frase.", "¿Cómo se dice «good night» en español?",
        "¿Por qué es importante beber agua?", "Escribe un título corto para una historia de dragones.",
        "¿Qué es una biblioteca? Responde brevemente.", "Enumera tres colores del arcoíris separados por comas.",
    ],
    "de": [
        "Erkläre in zwei Sätzen, wie ein Regenbogen entsteht.", "Nenne drei Tipps für gesundes Essen.",
        "Was ist der längste Fluss in Deutschland?", "Schreibe einen kurzen Satz über den Wald.",
        "Übersetze ins Englische: „Das Wetter ist heute schön.“", "Nenne vier Musikinstrumente, eines pro Zeile.",
        "Wie viel ist 45 minus 18? Antworte nur mit der Zahl.", "Wer hat „Faust“ geschrieben?",
        "Beschreibe einen Wintertag in einem Satz.", "Wie sagt man „good morning“ auf Deutsch?",
        "Warum schlafen Menschen?", "Gib einen kurzen Titel für eine Geschichte über einen Zug.",
        "Was ist ein Bahnhof? Antworte kurz.", "Nenne drei Wochentage, durch Kommas getrennt.",
    ],
    "sw": [
        "Eleza kwa sentensi mbili kwa nini mvua inanyesha.", "Taja matunda matatu, moja kwa kila mstari.",
        "Mlima mrefu zaidi Afrika unaitwaje?", "Andika sentensi fupi kuhusu bahari.",
        "Tafsiri kwa Kiingereza: «Ninapenda kusoma vitabu.»", "Taja wanyama wanne wa porini.",
        "Tano jumlisha saba ni ngapi? Jibu kwa namba tu.", "Habari ya asubuhi inamaanisha nini kwa Kiingereza?",
        "Eleza shule kwa sentensi moja.", "Kwa nini maji ni muhimu kwa maisha?",
        "Andika kichwa kifupi cha hadithi kuhusu simba.", "Sema «thank you» kwa Kiswahili.",
        "Taja siku mbili za mwisho wa wiki.", "Kompyuta ni nini? Jibu kwa ufupi.",
    ],
}
TRANSLATE = ["The children are playing in the park.", "I would like a cup of tea, please.",
             "The library closes at six o'clock.", "Tomorrow we will visit our grandparents.",
             "This road leads to the old bridge.", "She bought fresh bread at the market."]
LANG_NAMES = {"fr": "French", "es": "Spanish", "de": "German", "sw": "Swahili"}


def language_prompts(rng: random.Random) -> None:
    for lang, prompts in LANGS.items():
        for p in prompts:
            add("language", lang, p)
        for s in TRANSLATE:
            add("translate", lang, f"Translate into {LANG_NAMES[lang]}: {s}")


def build() -> list[dict[str, Any]]:
    PROMPTS.clear()
    rng = random.Random(20261127)
    format_prompts(rng)
    factual_prompts(rng)
    problem_prompts(rng)
    language_prompts(rng)
    return list(PROMPTS)


def main() -> None:
    out = Path(__file__).with_name("recovery_prompts.jsonl")
    rows = build()
    header = {"prompts": "edge-recovery", "version": VERSION, "license": "Apache-2.0",
              "provenance": "written for this project (export/data/build_prompts.py)"}
    with out.open("w", encoding="utf-8") as f:
        for row in [header, *rows]:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} prompts to {out}")


if __name__ == "__main__":
    main()
