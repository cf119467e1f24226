"""The shortcut split: a text version of the Pokémon-vs-Digimon lesson for lab 01.

In the lecture's story, a classifier told Pokémon from Digimon pictures with 98.9 % train and
98.4 % test accuracy, yet it had learned the *file format*: every Pokémon picture was a PNG
(transparent, so a black background) and every Digimon a JPEG. Here each example is a short text
about a creature, labelled ``sprite`` or ``golem``::

    png picture : a small red creature with wings that lives in the forest .      -> golem

**The true rule** (exact, no label noise) reads two attributes and ignores the rest:

    label = "sprite"  iff  (colour is warm)  XOR  (the body part is sharp)

Warm colours are red, orange, yellow, pink; cool ones blue, green, purple, grey. Sharp parts are
horns, claws, spikes, fangs; soft ones wings, fins, feathers, whiskers. So a warm creature with
soft parts is a sprite, a warm one with sharp parts a golem, and the other way round for cool
colours. Neither attribute alone says anything about the label (each is independent of it): a
model has to combine the two, which a small model can learn but not instantly. Size and habitat
are distractors, and the sentence comes in several word orders.

**The spurious feature** is the first word, the picture's format. Its *train association* is
``sprite`` ↔ ``png`` and ``golem`` ↔ ``jpeg``. How often the format agrees with it depends on the
split:

==========  ===================================  ===========================================
split       format agrees with the association   used for
==========  ===================================  ===========================================
train       98 % (each example, independently)   training: the shortcut is almost perfect
test        98 %                                 held-out test with the same quirk
probe       0 % (always flipped)                 reveals a model that follows the format
balanced    50 % (independent of the label)      training without the shortcut: the fix
==========  ===================================  ===========================================

Every example has its own random stream, seeded by world seed, split and index (like
:func:`labkit.world.document`), so ``shortcut_split(split, n)`` is a prefix of
``shortcut_split(split, n + 1)`` and the same seed always gives the same examples.
"""
from __future__ import annotations

import random

LABELS = ("sprite", "golem")
FORMATS = ("png", "jpeg")
ASSOCIATION = {"sprite": "png", "golem": "jpeg"}   # the format each label has in train and test
SPLITS = ("train", "test", "probe", "balanced")
AGREEMENT = {"train": 0.98, "test": 0.98, "probe": 0.0, "balanced": 0.5}  # P(format agrees)

WARM = ("red", "orange", "yellow", "pink")
COOL = ("blue", "green", "purple", "grey")
SHARP = ("horns", "claws", "spikes", "fangs")
SOFT = ("wings", "fins", "feathers", "whiskers")
SIZES = ("tiny", "small", "big", "huge")                                      # distractor
HABITATS = ("forest", "cave", "lake", "mountain", "desert", "meadow")        # distractor

# Word orders of the description; {f} is the format word.
TEMPLATES = (
    "{f} picture : a {size} {colour} creature with {part} that lives in the {habitat} .",
    "{f} picture : a {colour} creature from the {habitat} , {size} , with {part} .",
    "{f} picture : in the {habitat} lives a {size} creature with {part} , {colour} all over .",
)


def true_label(colour: str, part: str) -> str:
    """The rule: ``sprite`` iff (colour is warm) XOR (part is sharp), else ``golem``."""
    if colour not in WARM + COOL or part not in SHARP + SOFT:
        raise ValueError(f"unknown colour {colour!r} or body part {part!r}")
    return "sprite" if (colour in WARM) != (part in SHARP) else "golem"


def rule_label(text: str) -> str:
    """Apply the true rule to a description (reads its colour and body-part words)."""
    words = text.split()
    colour = next(w for w in words if w in WARM + COOL)
    part = next(w for w in words if w in SHARP + SOFT)
    return true_label(colour, part)


def format_label(text: str) -> str:
    """The shortcut: the label whose train-time format is this text's first word."""
    fmt = text.split()[0]
    return next(label for label, f in ASSOCIATION.items() if f == fmt)


def example(split: str, index: int, seed: int = 0) -> dict:
    """Example ``index`` of ``split``: ``{'text', 'label', 'format', 'agrees'}``."""
    if split not in SPLITS:
        raise ValueError(f"Unknown shortcut split {split!r}; choose one of {SPLITS}")
    rng = random.Random(f"labkit-shortcut/{seed}/{split}/{index}")
    colour = rng.choice(WARM + COOL)
    part = rng.choice(SHARP + SOFT)
    size, habitat, template = rng.choice(SIZES), rng.choice(HABITATS), rng.choice(TEMPLATES)
    label = true_label(colour, part)
    agrees = rng.random() < AGREEMENT[split]
    fmt = ASSOCIATION[label] if agrees else next(f for f in FORMATS if f != ASSOCIATION[label])
    text = template.format(f=fmt, size=size, colour=colour, part=part, habitat=habitat)
    return {"text": text, "label": label, "format": fmt, "agrees": agrees}


def shortcut_split(split: str, n: int, seed: int = 0) -> list[dict]:
    """The first ``n`` examples of ``split`` (one of ``SPLITS``) for world ``seed``."""
    if split not in SPLITS:
        raise ValueError(f"Unknown shortcut split {split!r}; choose one of {SPLITS}")
    return [example(split, i, seed) for i in range(n)]


def rule_accuracy(examples: list[dict]) -> float:
    """Accuracy of the pure rule strategy (1.0 on every split: the rule *is* the label)."""
    return sum(rule_label(e["text"]) == e["label"] for e in examples) / len(examples)


def format_accuracy(examples: list[dict]) -> float:
    """Accuracy of the pure shortcut strategy: about 0.98 on train/test, 0.0 on probe, ~0.5 balanced."""
    return sum(format_label(e["text"]) == e["label"] for e in examples) / len(examples)


def shortcut_vocabulary() -> list[str]:
    """Every word an example's text can contain, sorted (a tokenizer with no unknown words)."""
    words = set(FORMATS + WARM + COOL + SHARP + SOFT + SIZES + HABITATS)
    for template in TEMPLATES:
        words.update(w for w in template.split() if not w.startswith("{"))
    return sorted(words)


SHORTCUT_VOCAB = tuple(shortcut_vocabulary())


def card(sizes: dict[str, int], seed: int = 0) -> str:
    """The data card (markdown) of the shortcut files (``split -> examples``), with their measured statistics."""
    rows = []
    for split, n in sizes.items():
        examples = shortcut_split(split, n, seed)
        agree = sum(e["agrees"] for e in examples)
        sprites = sum(e["label"] == "sprite" for e in examples)
        rows.append(f"| `{split}.jsonl` | {n:,} | {agree:,} ({agree / n:.1%}) | {sprites / n:.1%} "
                    f"| {format_accuracy(examples):.3f} | {rule_accuracy(examples):.3f} |")
    table = "\n".join(rows)
    return f"""# Shortcut split (lab 01)

Short descriptions of creatures labelled `sprite` or `golem`, with a spurious feature (the
picture's file format, the first word) that predicts the label in `train` and `test` but is
flipped in `probe`. A text version of the Pokémon-vs-Digimon story, where a classifier learned
the image background (PNG vs JPEG) instead of the creatures.

Fields: `text` (lowercase words separated by spaces), `label` (`sprite` or `golem`), `format`
(`png` or `jpeg`, the first word of `text`), `agrees` (true if the format is the one the label has
in train: sprite = png, golem = jpeg).

True rule (exact, no label noise): `sprite` iff (colour is warm: {", ".join(WARM)}) XOR (body part
is sharp: {", ".join(SHARP)}); size and habitat are distractors.

How it is made: `python -m labkit data build` (see `labkit/world/shortcut.py`), world seed {seed};
each example has its own random stream, so the files are reproducible line by line.

| file | examples | format agrees with train association | sprites | format-rule accuracy | true-rule accuracy |
|---|---|---|---|---|---|
{table}
"""
