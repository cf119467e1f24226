"""Lab 01 (pretraining): its graded exercise and solution.

**Your turn: a text's loss, in nats and bits.** A model reads the opening of a story and, at three
positions, gives the probabilities in :data:`TEXT_LOSS_STEPS`. The learner writes ``text_loss(steps)``:
the loss training would report for such a list of predictions, the mean of −ln p(true next token),
in nats and then in bits. :func:`check_text_loss` calls it on texts the learner never sees and
recognises the usual slips: the log base, the minus sign, a sum instead of a mean, the model's
favourite instead of the truth, numbers typed in instead of computed.

The solution is at the bottom of this file (``SOLUTIONS``): look only when stuck.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from labkit.exercises.common import Verdict, close, grade
from labkit.exercises.functions import Attempt, attempt, converts, output_for, type_hints

__all__ = ["check_text_loss"]

EXERCISE = "a text's loss, in nats and bits"

Step = tuple[str, dict[str, float], str]  # (context, the model's probabilities for the next token, the true next token)

# The lab's text. At the second position the model prefers "tom", but the story goes on with "mia".
TEXT_LOSS_STEPS: list[Step] = [
    ("once upon a", {"time": 0.9, "hill": 0.06, "day": 0.04}, "time"),
    ("once upon a time ,", {"tom": 0.5, "mia": 0.25, "the": 0.25}, "mia"),
    ("once upon a time , mia", {"the": 0.6, "lived": 0.3, "was": 0.1}, "the"),
]
# Hidden texts the check adds, of other lengths; in each the model's favourite misses at least once.
_TEXTS: list[list[Step]] = [
    TEXT_LOSS_STEPS,
    [("tom went to the", {"mill": 0.4, "bakery": 0.35, "inn": 0.15}, "bakery"),
     ("tom went to the bakery and bought", {"a": 0.45, "two": 0.3, "bread": 0.05}, "two")],
    [("the baker", {"sold": 0.7, "baked": 0.2, "saw": 0.05}, "sold"),
     ("the baker sold", {"a": 0.4, "two": 0.3, "three": 0.2}, "three"),
     ("the baker sold three", {"pies": 0.55, "buns": 0.35, "cakes": 0.05}, "buns"),
     ("the baker sold three buns", {".": 0.8, "to": 0.15, "and": 0.05}, ".")],
]
# The text a hint may show with its loss (not one of the hidden ones): p(true) = 0.5 and 0.25.
SHOWN: list[Step] = [
    ("mia baked a", {"pie": 0.5, "cake": 0.3, "bun": 0.2}, "pie"),
    ("mia baked a pie for", {"tom": 0.6, "the": 0.25, "her": 0.15}, "the"),
]
TOLERANCE = 5e-3  # answers rounded to two or three decimals count as right


def _cases() -> list[tuple[list[Step]]]:
    return [([(context, dict(probs), truth) for context, probs, truth in text],) for text in _TEXTS]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _true_p(steps: list[Step]) -> list[float]:
    return [probs[truth] for _, probs, truth in steps]


def _right(steps: list[Step]) -> tuple[float, float]:
    nats = _mean([-math.log(p) for p in _true_p(steps)])
    return nats, nats / math.log(2)


def _slips(steps: list[Step]) -> dict[str, float]:
    """What the usual slips give, in the nats slot."""
    p = _true_p(steps)
    favourite = [max(probs.values()) for _, probs, _ in steps]
    return {
        "sum": sum(-math.log(x) for x in p),
        "log2": _mean([-math.log2(x) for x in p]),
        "log10": _mean([-math.log10(x) for x in p]),
        "favourite": _mean([-math.log(x) for x in favourite]),
        "mean_p": -math.log(_mean(p)),
        "all_terms": _mean([sum(-math.log(x) for x in probs.values()) for _, probs, _ in steps]),
    }


def _number(x: Any) -> float:
    """A plain number (or a one-element tensor/array); raise for anything else."""
    if isinstance(x, (bool, str, bytes)) or x is None or x is Ellipsis:
        raise TypeError("not a number")
    value = float(x.item() if hasattr(x, "item") else x)
    if not math.isfinite(value):
        raise ValueError("not finite")
    return value


def _near(x: Any, target: float) -> bool:
    return close(_number(x), target, TOLERANCE)


def _pair(out: Any) -> tuple[Any, Any]:
    """A returned (loss_nats, loss_bits): a tuple, list or two-element tensor/array; raise otherwise."""
    if isinstance(out, (str, bytes, dict)) or out is None:
        raise TypeError("not a pair")
    if hasattr(out, "tolist") and not isinstance(out, (list, tuple)):
        out = out.tolist()
    if len(out) != 2:
        raise ValueError("not two values")
    return out[0], out[1]


def _show(steps: list[Step]) -> str:
    """The true tokens' probabilities of ``steps``, and the favourite's where it missed, in words."""
    parts = []
    for _, probs, truth in steps:
        best = max(probs.values())
        parts.append(f"p = {probs[truth]}" + (f" (its favourite there had {best})" if probs[truth] < best else ""))
    return "the model gave the true next token " + ", then ".join(parts)


def check_text_loss(fn: Callable) -> Verdict:
    """Check ``fn(steps)`` → ``(loss_nats, loss_bits)``, the mean next-token loss of ``steps``, on hidden texts."""
    cases = _cases()
    right = [_right(*case) for case in cases]
    slips = [_slips(*case) for case in cases]
    run = attempt(fn, cases)
    if isinstance(run, Attempt) and run.ran and all(_both_blank(o) for o in run.outputs):
        run = ...  # `return ..., ...`: not attempted yet either

    def every(test: Callable[[Any, Any, int], bool]) -> Callable[[Attempt], bool]:
        """``test(nats, bits, i)`` holds for the learner's answer on every hidden text i."""
        return lambda r: all(test(*_pair(o), i) for i, o in enumerate(r.outputs))

    def slip(name: str) -> Callable[[Attempt], bool]:
        return every(lambda nats, bits, i: _near(nats, slips[i][name]))

    def shown() -> str:
        nats, bits = _right(SHOWN)
        got = output_for(fn, (SHOWN,))
        try:
            yours = "; yours gives ({:.3f}, {:.3f})".format(*(_number(x) for x in _pair(got)))
        except Exception:
            yours = ""
        return (f" For example, on a text where {_show(SHOWN)}, text_loss should give {nats:.3f} nats and "
                f"{bits:.3f} bits{yours}.")

    def hints(run: Attempt) -> list:
        return type_hints(run, "text_loss(steps)", "exercises.check_text_loss(text_loss)",
                          "two numbers, loss_nats and loss_bits") + [
            (lambda r: not all(converts(_pair, o) for o in r.outputs),
             "return two numbers, the loss in nats and the same loss in bits: `return loss_nats, loss_bits`."),
            (lambda r: any(x is Ellipsis for o in r.outputs for x in _pair(o)),
             "fill in both loss_nats and loss_bits."),
            (lambda r: not all(converts(_number, x) for o in r.outputs for x in _pair(o)),
             "both values should be plain numbers (floats), for example the value of an expression built with "
             "math.log; not strings, lists or None."),
            (lambda r: len({tuple(_number(x) for x in _pair(o)) for o in r.outputs}) == 1,
             "your function gives the same numbers for every text. Compute them from `steps`, the list it is given "
             "(the check passes texts of its own), not from TEXT_LOSS_STEPS or from numbers typed in." + shown()),
            (every(lambda nats, bits, i: _near(nats, right[i][1]) and _near(bits, right[i][0])),
             "the two numbers have swapped places: a bit is the smaller unit (1 nat ≈ 1.443 bits), "
             "so the same loss is a larger number in bits than in nats."),
            (lambda r: any(_number(_pair(o)[0]) < 0 for o in r.outputs),
             "a loss is never negative: L = −ln p, and ln p is below 0 for any p < 1. Check the minus sign."),
            (slip("sum"), "that is the sum over the positions; training reports the mean loss per token."),
            (slip("log2"), "that is the loss in bits (log base 2). Nats use the natural logarithm, math.log."),
            (slip("log10"), "math.log10 counts in base 10; nats use the natural logarithm, math.log."),
            (slip("favourite"),
             "at some positions the model's favourite is not the token that came next. The loss uses the "
             "probability of the true next token, whatever the model preferred."),
            (slip("mean_p"),
             "you averaged the probabilities first and took −ln of the average. Take −ln of each "
             "position's probability first, then average those losses."),
            (slip("all_terms"),
             "you added −ln p over every candidate. In −Σ yᵢ ln pᵢ only the true token has yᵢ = 1, so each "
             "position contributes one term."),
            (lambda r: not every(lambda nats, bits, i: _near(nats, right[i][0]))(r),
             "work position by position: −ln p(true next token) at each position, then their mean." + shown()),
            (every(lambda nats, bits, i: _near(bits, right[i][0])),
             "your nats are right, but loss_bits still holds the value in nats: convert it."),
            (every(lambda nats, bits, i: _near(bits, right[i][0] * math.log(2))),
             "your nats are right. To convert to bits, divide by ln 2 (one bit is ln 2 ≈ 0.693 nats, "
             "so there are more bits than nats), rather than multiply."),
        ]

    if run is Ellipsis:
        return grade(EXERCISE, ..., bool, praise="", otherwise="")
    return grade(
        EXERCISE, run,
        lambda r: r.ran and every(lambda nats, bits, i: _near(nats, right[i][0]) and _near(bits, right[i][1]))(r),
        praise="Right on every text the check tried. That is the number a training curve shows: the mean of −ln "
               "p(true next token) over the positions, here in nats and in bits.",
        hints=hints(run),
        otherwise="your nats are right. Convert them with bits = nats ÷ ln 2.")


def _both_blank(out: Any) -> bool:
    """``out`` is the pair ``(..., ...)``: neither value filled in."""
    return converts(_pair, out) and all(x is Ellipsis for x in _pair(out))




# ----------------------------------------------------------------------------------------------
# Solutions: look only when stuck.
# ----------------------------------------------------------------------------------------------

def solution_text_loss(steps: list[Step]) -> tuple[float, float]:
    """The mean of −ln p(true next token) over the positions, in nats, then ÷ ln 2 for bits."""
    losses = [-math.log(probs[true_next]) for _context, probs, true_next in steps]
    loss_nats = sum(losses) / len(losses)
    loss_bits = loss_nats / math.log(2)
    return loss_nats, loss_bits


SOLUTIONS = {"text_loss": solution_text_loss}
