"""Verifiable prompts for GRPO: word problems from the village, in two or three steps, one numeric answer.

A person starts with some goods; then they buy more at a shop, get some from a friend, give some
away or eat some. A worked answer shows one step per event and ends with the answer on a
``#### N`` line (the GSM8K convention), which :func:`labkit.rewards.extract_final_answer` reads::

    solve the problem . lily has 8 eggs . max gives lily 1 more . lily gives 2 to leo .
    how many eggs does lily have now ?
    8 + 1 = 9 . 9 - 2 = 7 . #### 7

Every number, the intermediate ones too, lies between 0 and 10: each step is a sum or difference
lab 02's SFT policy already gets right in one-step ``arithmetic``. What is hard for a small model
is doing two or three of them in its head.

**Imperfect demonstrators.** The ``sft_math`` stage learns the problems from demonstrations of
which only ``worked_share`` show the working; the others write the bare ``#### N``. The SFT policy
imitates that mix: it mostly answers without working, and is right far less often than when it
works the steps out. GRPO, rewarded only for the right final number, can find out that working
pays. ``####`` is not a word of the world: the ``sft_math`` stage adds it to the tokenizer as one
new token (:func:`labkit.stages.sft_math.add_answer_marker`).

Splits come from separate random streams; no held-out (``test``) problem is a training problem
(checked in the tests, by prompt). Lab 02's one-step ``arithmetic`` is the contrast where GRPO has
nothing to learn: the SFT policy solves every one, so all answers in a group get the same reward.
"""
from __future__ import annotations

import random

from labkit.world import lexicon as lx

SPLITS = ("train", "test")
MARKER = "####"                 # the final-answer marker (GSM8K's); one token once added
MAX_NUMBER = 10                 # the largest number in a problem: the sums and differences lab 02's SFT taught
FOODS = ("apple", "pear", "egg", "carrot", "bun", "cake", "cookie", "pie", "plum", "cherry", "berry", "cheese")


def _steps(rng: random.Random, name: str, good: str, start: int, n_steps: int) -> tuple[list[str], list[str], int]:
    """``n_steps`` events after starting with ``start``: their sentences, the working, the total."""
    sentences, working, total = [], [], start
    for _ in range(n_steps):
        other = rng.choice([n for n in lx.NAMES if n != name])
        kinds = (["buy", "get"] if total < MAX_NUMBER else []) + \
            (["give", "eat" if good in FOODS else "give"] if total >= 2 else [])
        kind = rng.choice(kinds)
        if kind in ("buy", "get"):
            amount = rng.randint(1, min(9, MAX_NUMBER - total))
            place = rng.choice([p for p, sold in lx.PLACES.items() if good in sold] or list(lx.PLACES))
            sentences.append(f"then {name} went to the {place} and bought {amount} more ." if kind == "buy"
                             else f"{other} gives {name} {amount} more .")
            working.append(f"{total} + {amount} = {total + amount} .")
            total += amount
        else:
            amount = rng.randint(1, min(9, total - 1))
            sentences.append(f"{name} gives {amount} to {other} ." if kind == "give" else f"{name} eats {amount} .")
            working.append(f"{total} - {amount} = {total - amount} .")
            total -= amount
    return sentences, working, total


def problem(split: str, index: int, seed: int = 0, steps: tuple[int, ...] = (2, 3), worked_share: float = 1.0) -> dict:
    """Word problem ``index`` of ``split``: ``prompt`` and ``messages`` (with the worked answer), ``answer``.

    ``answer`` is the final number as a string (what the correctness reward compares with);
    ``solution`` the assistant's worked text; ``steps`` how many events the problem has.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r} for word problems; choose from {', '.join(SPLITS)}")
    rng = random.Random(f"labkit-problems/{seed}/{split}/{index}")
    name = rng.choice(lx.NAMES)
    good = rng.choice(lx.goods())
    goods = lx.plural(good, 2)
    start = rng.randint(2, 9)
    n_steps = rng.choice(steps)
    sentences, working, total = _steps(rng, name, good, start, n_steps)
    prompt = (f"solve the problem . {name} has {start} {goods} . {' '.join(sentences)} "
              f"how many {goods} does {name} have now ?")
    solution = f"{' '.join(working)} {MARKER} {total}"
    worked = random.Random(f"labkit-problems-demo/{seed}/{split}/{index}").random() < worked_share
    return {"id": f"{split}-problem-{index}", "category": "word_problem", "steps": n_steps,
            "prompt": [{"role": "user", "content": prompt}],
            "messages": [{"role": "user", "content": prompt},
                         {"role": "assistant", "content": solution if worked else f"{MARKER} {total}"}],
            "solution": solution, "answer": str(total)}


def problems(split: str, n: int, seed: int = 0, start: int = 0, worked_share: float = 1.0) -> list[dict]:
    """Problems ``start .. start+n-1`` of ``split`` (problem *i* is the same whatever ``n`` is)."""
    return [problem(split, i, seed, worked_share=worked_share) for i in range(start, start + n)]


def check_problem_row(row: dict, where: str) -> dict:
    """``row`` if it has a user prompt and a numeric ``answer``; else a ``ValueError`` that starts with ``where``.

    GRPO's correctness reward compares each sampled answer with the row's ``answer``: a row
    without one could only ever score 0 and would teach nothing.
    """
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a problem is a JSON object with 'prompt' and 'answer', got {type(row).__name__}")
    if not row.get("prompt"):
        raise ValueError(f"{where}: no 'prompt' (a string, or a list of role/content messages ending with the "
                         f"user's question); got keys {sorted(row)}")
    answer = row.get("answer")
    if answer is None or str(answer).strip() == "":
        raise ValueError(f"{where}: no 'answer'. Each problem needs its final numeric answer, e.g. "
                         "\"answer\": \"12\", so the correctness reward can check a reply")
    try:
        float(str(answer).replace(",", ""))
    except ValueError:
        raise ValueError(f"{where}: the answer {answer!r} is not a number; the correctness reward compares "
                         "numbers (write e.g. \"12\" or \"1,234\")") from None
    return row


def check_problem_rows(rows: list[dict], where: str = "problems") -> list[dict]:
    """``rows`` if every one passes :func:`check_problem_row`; the message names the bad row
    (numbered from 1, like a file's lines) and ``where`` they came from."""
    if not rows:
        raise ValueError(f"{where}: no problems given; GRPO needs prompts with a known numeric answer")
    for number, row in enumerate(rows, start=1):
        check_problem_row(row, f"{where}, line {number}")
    return rows
