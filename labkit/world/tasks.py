"""Instruction data: tasks in the village, as role/content messages with checkable answers.

Each example is a user instruction and the one correct assistant answer, in the no_robots layout
(``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}], "category": ...}``). Every
category has an exact answer, so a model's reply is scored by exact match, and the sentiment task
answers with a JSON object, so its validity can be checked too.

Categories (and the no_robots category each stands for):

- ``classify`` (Classify): the sentiment of a short review, answered as JSON
  ``{ "label" : "positive" , "confidence" : 0.9 , "evidence" : "fresh" }``, where the evidence word is quoted in the review;
- ``closed_qa`` (Closed QA): a question about a story, answered from the story;
- ``extract`` (Extract): the places people went to in a story, in order (``none`` if none);
- ``arithmetic`` (Open QA, verifiable): a word problem with a numeric answer, ``the answer is 7 .``;
- ``rewrite`` (Rewrite): retell a sentence about someone else (names and pronouns change);
- ``brainstorm`` (Brainstorm): name the goods sold at a place, in the shop's order.

One more category has no single answer: ``open_brainstorm`` (Brainstorm) is the preference task of
:mod:`labkit.world.preferences`, requests in several phrasings answered by imperfect
demonstrators. The ``sft`` stage trains on it in place of ``brainstorm`` (the two share a prompt)
and judges it by the gold reward, not by exact match; lab 02's demonstrations use ``brainstorm``.
"""
from __future__ import annotations

import json
import random
import re

from labkit.world import lexicon as lx
from labkit.world.corpus import write_document
from labkit.world.writer import Writer

CATEGORIES = ("classify", "closed_qa", "extract", "arithmetic", "rewrite", "brainstorm")  # exact answers
OPEN_CATEGORIES = ("open_brainstorm",)  # no single answer: judged by the gold reward of the preference world
NO_ROBOTS = {"classify": "Classify", "closed_qa": "Closed QA", "extract": "Extract",
             "arithmetic": "Open QA", "rewrite": "Rewrite", "brainstorm": "Brainstorm",
             "open_brainstorm": "Brainstorm"}
SPLITS = ("train", "validation", "test")

# Sentiment words and how sure the label is when that word is the evidence.
POSITIVE = {"fresh": 0.9, "sweet": 0.9, "lovely": 0.9, "nice": 0.7, "good": 0.7, "fine": 0.6}
NEGATIVE = {"stale": 0.9, "awful": 0.9, "broken": 0.9, "bad": 0.7, "dull": 0.7, "poor": 0.6}
NEUTRAL = {"red": 0.6, "round": 0.6, "heavy": 0.6}
INSTRUCTION_WORDS = (
    "classify the sentiment of this review as json review from was "
    "read story and answer question list places that went to in order if none say nobody "
    "solve problem has gives more how many does now eats left + - = answer is "
    "rewrite sentence about instead of name goods sold at the "
    '{ } "label" "positive" "negative" "neutral" "confidence" "evidence" , : . ? 0.6 0.7 0.9'
).split()


def json_answer(label: str, confidence: float, evidence: str) -> str:
    """The sentiment answer written with a space between JSON tokens (one word per token)."""
    return f'{{ "label" : "{label}" , "confidence" : {confidence} , "evidence" : "{evidence}" }}'


def parse_json_answer(text: str) -> dict | None:
    """The answer's JSON object if it is valid with the three expected keys, else ``None``."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    if not isinstance(value, dict) or set(value) != {"label", "confidence", "evidence"}:
        return None
    return value


def _classify(rng: random.Random) -> tuple[str, str]:
    place = rng.choice(list(lx.PLACES))
    good = rng.choice(lx.PLACES[place])
    label, words = rng.choice([("positive", POSITIVE), ("negative", NEGATIVE), ("neutral", NEUTRAL)])
    word = rng.choice(sorted(words))
    size = rng.choice(["big", "small", "old", "tiny"])
    review = f'the {size} {good} from the {place} was "{word}" .'
    return (f"classify the sentiment of this review as json . review : {review}",
            json_answer(label, words[word], word))


def _story(rng: random.Random, want) -> str:
    """A story from the world's generator for which ``want(text)`` holds (retried until it does)."""
    while True:
        doc = write_document(Writer(rng=random.Random(rng.random())))
        if doc.tokens[1] != ":" and want(doc.text):
            return doc.text


def _closed_qa(rng: random.Random) -> tuple[str, str]:
    text = _story(rng, lambda t: " question : " in t)
    story, qa = text.split(" question : ")
    question, answer = qa.split(" answer : ")
    return f"read the story and answer the question . story : {story} question : {question}", answer


def _extract(rng: random.Random) -> tuple[str, str]:
    text = _story(rng, lambda t: " question : " not in t)
    places = re.findall(r"went to the (\w+)", text)
    answer = " , ".join(places) if places else "none"
    return (f"read the story and list the places in the story in order . "
            f"if none say none . story : {text}", answer)


def _arithmetic(rng: random.Random) -> tuple[str, str]:
    name = rng.choice(lx.NAMES)
    other = rng.choice([n for n in lx.NAMES if n != name])
    good = lx.plural(rng.choice(lx.goods()), 2)
    have = rng.randint(2, 9)
    if rng.random() < 0.5:
        more = rng.randint(1, 10 - have)
        problem = f"{name} has {have} {good} . {other} gives {name} {more} more ."
        result, working = have + more, f"{have} + {more} = {have + more}"
    else:
        less = rng.randint(1, have)
        problem = f"{name} has {have} {good} . {name} gives {less} to {other} ."
        result, working = have - less, f"{have} - {less} = {have - less}"
    question = f"how many {good} does {name} have now ?"
    return (f"solve the problem . {problem} {question}", f"{working} . the answer is {result} .")


def _rewrite(rng: random.Random) -> tuple[str, str]:
    a = rng.choice(lx.NAMES)
    b = rng.choice([n for n in lx.NAMES if n != a])
    place = rng.choice(list(lx.PLACES))
    good = lx.plural(rng.choice(lx.PLACES[place]), 2)
    n = lx.NUMBERS[rng.randint(2, 4)]

    def sentence(who: str) -> str:
        return f"then {who} went to the {place} . there {lx.pronoun(who)} bought {n} {good} ."

    return (f"rewrite the sentence about {b} instead of {a} . sentence : {sentence(a)}", sentence(b))


def _brainstorm(rng: random.Random) -> tuple[str, str]:
    place = rng.choice(list(lx.PLACES))
    return (f"name the goods sold at the {place} .",
            " , ".join(lx.plural(g, 2) for g in lx.PLACES[place]))


_MAKERS = {"classify": _classify, "closed_qa": _closed_qa, "extract": _extract,
           "arithmetic": _arithmetic, "rewrite": _rewrite, "brainstorm": _brainstorm}


def exact_categories(categories) -> tuple[str, ...]:
    """The categories among ``categories`` whose examples have one exact answer (scored by exact match)."""
    return tuple(c for c in categories if c in CATEGORIES)


def _open_brainstorm(split: str, index: int, seed: int) -> dict:
    """A preference-task demonstration: training requests for ``train``, held-out requests otherwise."""
    from labkit.world.preferences import demonstration

    row = demonstration("train" if split == "train" else "heldout", index, seed)
    return {"id": f"{split}-open_brainstorm-{index}", "category": "open_brainstorm", **row}


def task_example(category: str, split: str, index: int, seed: int = 0) -> dict:
    """Example ``index`` of ``category`` in ``split``: messages, category and the exact answer."""
    if category not in _MAKERS and category not in OPEN_CATEGORIES:
        raise ValueError(f"Unknown category {category!r}; choose from {', '.join(CATEGORIES + OPEN_CATEGORIES)}")
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if category == "open_brainstorm":
        return _open_brainstorm(split, index, seed)
    rng = random.Random(f"labkit-tasks/{seed}/{split}/{category}/{index}")
    prompt, answer = _MAKERS[category](rng)
    return {"id": f"{split}-{category}-{index}", "category": category,
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
            "answer": answer}


def task_split(split: str, n_per_category: int, seed: int = 0,
               categories: tuple[str, ...] = CATEGORIES) -> list[dict]:
    """``n_per_category`` examples of each category, interleaved (c1, c2, ..., c1, c2, ...)."""
    return [task_example(c, split, i, seed) for i in range(n_per_category) for c in categories]


def task_vocabulary() -> set[str]:
    """Words the tasks use beyond the stories' (instruction words, digits, JSON pieces)."""
    words = set(INSTRUCTION_WORDS) | {str(n) for n in range(0, 25)}
    words |= set(POSITIVE) | set(NEGATIVE) | set(NEUTRAL)
    words |= {f'"{w}"' for w in [*POSITIVE, *NEGATIVE, *NEUTRAL]}
    from labkit.world.preferences import prompt_words

    return words | prompt_words()


# ------------------------------------------------------------------ variations for lab 02's demos

def _with_answer(row: dict, answer: str, **extra) -> dict:
    messages = [dict(m) for m in row["messages"]]
    messages[-1]["content"] = answer
    return {**row, "messages": messages, "answer": answer, **extra}


def with_wrong_answers(rows: list[dict], share: float, seed: int = 0) -> list[dict]:
    """A copy of ``rows`` where a ``share`` of answers is replaced by another example's answer.

    The wrong answer comes from a different example of the same category, so it is fluent and in
    the right format, just wrong: the kind of noise careless labelling produces. Rows keep their
    order; changed rows get ``"noisy": True``.
    """
    if not 0 <= share <= 1:
        raise ValueError(f"share of wrong answers must lie in [0, 1], got {share}")
    rng = random.Random(f"labkit-noise/{seed}")
    by_category: dict[str, list[str]] = {}
    for row in rows:
        by_category.setdefault(row["category"], []).append(row["answer"])
    out = []
    for row in rows:
        others = [a for a in by_category[row["category"]] if a != row["answer"]]
        if others and rng.random() < share:
            out.append(_with_answer(row, rng.choice(others), noisy=True))
        else:
            out.append({**row, "noisy": False})
    return out


def task_mixture(split: str, n_total: int, shares: dict[str, float], seed: int = 0) -> list[dict]:
    """``n_total`` examples whose categories follow ``shares`` (e.g. ``{"arithmetic": 0.9, ...}``).

    Shares are normalised to sum to 1; each category gets ``round(n_total * share)`` examples
    (at least one if its share is positive), interleaved.
    """
    if not shares or any(s < 0 for s in shares.values()) or sum(shares.values()) <= 0:
        raise ValueError(f"shares must be non-negative with a positive sum, got {shares}")
    total = sum(shares.values())
    counts = {c: max(1, round(n_total * s / total)) if s > 0 else 0 for c, s in shares.items()}
    rows = [task_example(c, split, i, seed) for c, n in counts.items() for i in range(n)]
    return sorted(rows, key=lambda r: (int(r["id"].rsplit("-", 1)[1]), r["category"]))


def ambiguous_brainstorm(split: str, n: int, clear: bool, seed: int = 0) -> list[dict]:
    """Brainstorm examples answered half in the shop's order, half alphabetically.

    With ``clear=False`` both conventions hide behind the same instruction ("name the goods sold
    at the ..."), so the data contradicts itself. With ``clear=True`` the alphabetical answers get
    their own instruction ("list the goods sold at the ... in order"). Rows carry ``convention``
    (``"shop"`` or ``"alphabetical"``).
    """
    rows = []
    for i in range(n):
        row = task_example("brainstorm", split, i, seed)
        place = row["messages"][0]["content"].split(" the ")[-1].rstrip(" .")
        if i % 2:
            answer = " , ".join(sorted(row["answer"].split(" , ")))
            prompt = (f"list the goods sold at the {place} in order ." if clear else row["messages"][0]["content"])
            row = _with_answer(row, answer, convention="alphabetical")
            row["messages"][0] = {"role": "user", "content": prompt}
        else:
            row = {**row, "convention": "shop"}
        rows.append(row)
    return rows


def shifted_arithmetic(split: str, n: int, seed: int = 0) -> list[dict]:
    """Arithmetic problems outside the training range: a person starts with 10 to 19 goods.

    Training problems start with 2 to 9, so these test a domain shift: same instruction and format,
    numbers the model never saw in this role.
    """
    rows = []
    for i in range(n):
        rng = random.Random(f"labkit-shift/{seed}/{split}/{i}")
        name = rng.choice(lx.NAMES)
        other = rng.choice([x for x in lx.NAMES if x != name])
        good = lx.plural(rng.choice(lx.goods()), 2)
        have, less = rng.randint(10, 19), rng.randint(1, 9)
        prompt = (f"solve the problem . {name} has {have} {good} . {name} gives {less} to {other} . "
                  f"how many {good} does {name} have now ?")
        answer = f"{have} - {less} = {have - less} . the answer is {have - less} ."
        rows.append({"id": f"{split}-shifted-{i}", "category": "arithmetic (shifted)",
                     "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                     "answer": answer})
    return rows
