"""Lab 03 (LoRA): count the numbers a LoRA adapter trains on one layer.

The layer maps a row of ``m`` inputs to ``n`` outputs (its weight, and any full update, is m×n).
A rank-``r`` adapter learns that update as L (m×r) × R (r×n). The learner gives the number of
trainable values; the check knows the usual slips (the full m×n, one factor only, r², r·m·n, …)
and names the slip without giving the count.
"""
from __future__ import annotations

import numbers

from labkit.exercises.common import WRONG, Verdict, grade
from labkit.lora import lora_parameter_counts

__all__ = ["check_lora_count"]

# The layer the lab asks about: LLaMA-7B's MLP up-projection (4096 features in, 11008 out), rank 16.
LAYER = {"m": 4096, "n": 11008, "r": 16}
EXERCISE = "LoRA parameter count"


def check_lora_count(answer, m: int = LAYER["m"], n: int = LAYER["n"], r: int = LAYER["r"]) -> Verdict:
    """Is ``answer`` the number of values a rank-``r`` LoRA adapter trains on an m×n layer?"""
    try:
        lora_parameter_counts(m, n, r)  # the layer itself must make sense before the answer can
    except (ValueError, TypeError) as error:
        return Verdict(EXERCISE, WRONG, f"Hint: the layer does not work as given ({error}). "
                                        "Use positive whole numbers m, n and a rank r no larger than either.")
    full = m * n

    def count(a):
        """The answer as an int, or an error for anything that is not a whole number."""
        if isinstance(a, bool) or not isinstance(a, numbers.Real) and not hasattr(a, "item"):
            raise TypeError("not a number")
        value = float(a.item() if hasattr(a, "item") else a)
        if value != int(value):
            raise ValueError("not a whole number")
        return int(value)

    def is_one_of(*candidates):
        return lambda a: count(a) in candidates

    hints = [
        (lambda a: isinstance(a, str), "write the count as a Python number (an int), not as text; "
                                       "an expression in m, n and r works too."),
        (lambda a: 0 < float(a) < 1, "that looks like a share of the full update. The question asks for a count: "
                                     "how many numbers the adapter trains."),
        (is_one_of(full), "that is the size of the full update: every entry of the m×n matrix, which full "
                          "fine-tuning trains. LoRA trains two thin factors instead."),
        (is_one_of(full + r * (m + n)), "you added the frozen weight W. Count only what trains: the adapter."),
        (is_one_of(full - r * (m + n)), "that is how many fewer numbers LoRA trains than full fine-tuning. "
                                        "The question asks how many it does train."),
        (is_one_of(r * m, r * n), "you counted one factor only. The update is L × R: L sits on the input side, "
                                  "R on the output side, and the adapter trains both."),
        (lambda a: m != n and count(a) in (2 * r * m, 2 * r * n),
         "you treated the layer as square. Its input and output sizes differ, and so do its two factors."),
        (is_one_of(r * r, 2 * r * r, r * r * (m + n), r * r * m, r * r * n),
         "no factor is r×r. Each factor has one side of length r; its other side is the layer's input "
         "size or its output size."),
        (is_one_of(r * full), "multiplying m, n and r counts a three-dimensional block. Each factor is a flat "
                              "matrix with one side of length r."),
        (is_one_of(m + n, m * r + n, m + r * n), "each factor has r rows or r columns: its side along the layer "
                                                 "has to be multiplied by the rank."),
        (lambda a: count(a) != r * (m + n) and count(a) > 0 and count(a) % (m + n) == 0,
         "the form is right but the rank is not: check which r this layer uses."),
        (lambda a: count(a) <= 0, "a count of trainable numbers is a positive whole number."),
        (lambda a: float(a) != int(float(a)), "a count is a whole number: no fractions."),
    ]
    return grade(EXERCISE, answer, lambda a: count(a) == r * (m + n),
                 praise=f"That is {r * (m + n) / full:.2%} of the {full:,} numbers a full update of this layer "
                        "trains. The share shrinks as the layer grows (r·(m + n) against m·n): that is where LoRA's "
                        "memory saving comes from.",
                 hints=hints,
                 otherwise="write down the shapes of the two factors L and R (one side of each is r, the other is "
                           "m or n) and add up their entries.")


# ------------------------------------------------------------------ solution: look only when stuck

def solution_lora_count(m: int = LAYER["m"], n: int = LAYER["n"], r: int = LAYER["r"]) -> int:
    """L is m×r and R is r×n: r·m + r·n = r·(m + n) trainable numbers."""
    return r * m + r * n


SOLUTIONS = {"check_lora_count": solution_lora_count}
