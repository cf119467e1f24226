"""Lab 03 (LoRA): count the numbers a LoRA adapter trains, ``check_lora_count(your_function)``.

A layer maps a row of ``m`` inputs to ``n`` outputs (its weight, and any full update, is m×n). A
rank-``r`` adapter learns that update as L (m×r) × R (r×n). The learner writes ``lora_count(m, n, r)``,
the number of values the adapter trains; the check calls it on layers the learner never sees (LLaMA-7B's
MLP projections among them), knows the usual slips (the full m×n, one factor only, r², r·m·n, a fixed
rank, …) and names the slip without giving the count.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable

from labkit.exercises.common import Verdict, grade
from labkit.exercises.functions import Attempt, attempt, converts, output_for, type_hints

__all__ = ["check_lora_count"]

EXERCISE = "LoRA parameter count"

# The layer the lab asks about: LLaMA-7B's MLP up-projection (4096 features in, 11008 out), rank 16.
LAYER = {"m": 4096, "n": 11008, "r": 16}
# Hidden layers (m, n, r): LLaMA-7B's up- and down-projections and a square attention layer, a
# BERT-sized MLP layer and two small odd ones. No two give the same count, and none is the lecture's.
_LAYERS = [(4096, 11008, 16), (11008, 4096, 8), (4096, 4096, 8), (768, 3072, 4), (7, 3, 3), (10, 6, 1)]
# The layer a hint may show with its count: the lecture's 5×4 layer at rank 2 (18, as the lab says).
SHOWN = (5, 4, 2)


def _cases() -> list[tuple[int, int, int]]:
    return list(_LAYERS)


def _count(out: Any) -> int:
    """A returned count as an int; raises for anything that is not a whole number."""
    if isinstance(out, (bool, str, bytes)) or out is None:
        raise TypeError("not a number")
    if not isinstance(out, numbers.Real) and not hasattr(out, "item"):
        raise TypeError("not a number")
    value = float(out.item() if hasattr(out, "item") else out)
    if value != int(value):
        raise ValueError("not a whole number")
    return int(value)


def _variant(kind: str, m: int, n: int, r: int) -> int:
    """The count as a typical slip computes it (the tests check each gets its own hint)."""
    return {
        "full": m * n,
        "frozen weight added": m * n + r * (m + n),
        "saving": m * n - r * (m + n),
        "only L": r * m,
        "only R": r * n,
        "square, input side": 2 * r * m,
        "square, output side": 2 * r * n,
        "r squared": r * r,
        "r squared times m + n": r * r * (m + n),
        "r·m·n": r * m * n,
        "no rank": m + n,
        "fixed rank": 8 * (m + n),
    }[kind]


def check_lora_count(fn: Callable) -> Verdict:
    """Check ``fn(m, n, r)``, the values a rank-r LoRA adapter trains on an m×n layer, on hidden layers."""
    cases = _cases()
    expected = [r * (m + n) for m, n, r in cases]
    run = attempt(fn, cases)

    def counts(r: Attempt) -> list[int]:
        return [_count(o) for o in r.outputs]

    def like(*kinds: str) -> Callable[[Attempt], bool]:  # on every layer, one of these slips
        return lambda r: all(c in {_variant(k, *case) for k in kinds} for c, case in zip(counts(r), cases))

    def ignores_rank(r: Attempt) -> bool:  # k·(m + n) with the same k on every layer, not the layer's r
        quotients = {c // (m + n) for c, (m, n, _) in zip(counts(r), cases) if c % (m + n) == 0}
        return all(c % (m + n) == 0 for c, (m, n, _) in zip(counts(r), cases)) and len(quotients) == 1

    def shown() -> str:
        """What the learner's function gives for the lecture's layer, beside the right count."""
        got = output_for(fn, SHOWN)
        m, n, r = SHOWN
        return (f" For the lecture's {m}×{n} layer at rank {r}, lora_count({m}, {n}, {r}) should give {r * (m + n)}"
                + (f"; yours gives {got!r}." if got is not None else "."))

    def hints(run: Attempt) -> list:
        return type_hints(run, "lora_count(m, n, r)", "exercises.check_lora_count(lora_count)",
                          "one whole number") + [
            (lambda r: any(0 < float(o) < 1 for o in r.outputs),
             "that looks like a share of the full update. The question asks for a count: how many numbers the "
             "adapter trains."),
            (lambda r: any(not converts(_count, o) for o in r.outputs),
             "return one whole number, the count, as a Python int (or an expression in m, n and r); not a list, "
             "a tuple or a fraction."),
            (lambda r: len(set(counts(r))) == 1,
             "your function gives the same count for every layer. Use its arguments m, n and r: the check tries "
             "layers of other sizes and ranks." + shown()),
            (like("full"), "that is the size of the full update: every entry of the m×n matrix, which full "
                           "fine-tuning trains. LoRA trains two thin factors instead."),
            (like("frozen weight added"), "you added the frozen weight W. Count only what trains: the adapter."),
            (like("saving"), "that is how many fewer numbers LoRA trains than full fine-tuning. The question asks "
                             "how many it does train."),
            (like("only L", "only R"), "you counted one factor only. The update is L × R: L sits on the input side, "
                                       "R on the output side, and the adapter trains both."),
            (like("square, input side", "square, output side"),
             "you treated the layer as square. Its input and output sizes differ, and so do its two factors."),
            (lambda r: all(c in {r_ * r_, 2 * r_ * r_, r_ * r_ * (m + n), r_ * r_ * m, r_ * r_ * n}
                           for c, (m, n, r_) in zip(counts(r), cases)),
             "no factor is r×r. Each factor has one side of length r; its other side is the layer's input "
             "size or its output size."),
            (like("r·m·n"), "multiplying m, n and r counts a three-dimensional block. Each factor is a flat "
                            "matrix with one side of length r."),
            (lambda r: all(c in {m + n, m * r_ + n, m + r_ * n} for c, (m, n, r_) in zip(counts(r), cases)),
             "each factor has r rows or r columns: its side along the layer has to be multiplied by the rank."),
            (ignores_rank, "the form is right but the rank is not: use the rank r your function is given, not a "
                           "number of your own."),
            (lambda r: min(counts(r)) <= 0, "a count of trainable numbers is a positive whole number."),
        ]

    def praise() -> str:
        m, n, r = LAYER["m"], LAYER["n"], LAYER["r"]
        full, count = m * n, r * (m + n)
        return (f"Right on every layer the check tried. For LLaMA-7B's up-projection ({m} in, {n} out) at rank {r} "
                f"that is {count:,} numbers, {count / full:.2%} of the {full:,} a full update of the layer trains. "
                "The share shrinks as the layer grows (r·(m + n) against m·n): that is where LoRA's memory saving "
                "comes from.")

    if run is Ellipsis:
        return grade(EXERCISE, ..., bool, praise="", otherwise="")
    return grade(EXERCISE, run, lambda r: r.ran and counts(r) == expected, praise=praise(), hints=hints(run),
                 otherwise="write down the shapes of the two factors L and R (one side of each is r, the other is "
                           "m or n) and add up their entries." + shown())



# ------------------------------------------------------------------ solution: look only when stuck

def solution_lora_count(m: int, n: int, r: int) -> int:
    """L is m×r and R is r×n: r·m + r·n = r·(m + n) trainable numbers."""
    return r * m + r * n


SOLUTIONS = {"lora_count": solution_lora_count}
