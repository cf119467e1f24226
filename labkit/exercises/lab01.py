"""Lab 01 (pretraining): its graded exercise and solution.

**Your turn: a text's loss by hand, in nats and bits.** A model reads the opening of a story and,
at three positions, gives the probabilities in :data:`TEXT_LOSS_STEPS`. The learner computes the
loss training would report for these three predictions, the mean of −ln p(true next token), in
nats and then in bits. :func:`check_text_loss` grades the pair and recognises the usual slips: the
log base, the minus sign, a sum instead of a mean, the model's favourite instead of the truth.

The solution is at the bottom of this file (``SOLUTIONS``): look only when stuck.
"""
from __future__ import annotations

import math
from typing import Any

from labkit.exercises.common import Verdict, close, grade

__all__ = ["check_text_loss"]

# (context, the model's probabilities for the next token, the token that really came next).
# At the second position the model prefers "tom", but the story goes on with "mia".
TEXT_LOSS_STEPS: list[tuple[str, dict[str, float], str]] = [
    ("once upon a", {"time": 0.9, "hill": 0.06, "day": 0.04}, "time"),
    ("once upon a time ,", {"tom": 0.5, "mia": 0.25, "the": 0.25}, "mia"),
    ("once upon a time , mia", {"the": 0.6, "lived": 0.3, "was": 0.1}, "the"),
]
TOLERANCE = 5e-3  # answers rounded to two or three decimals count as right


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _true_p() -> list[float]:
    return [probs[truth] for _, probs, truth in TEXT_LOSS_STEPS]


def _right_nats() -> float:
    return _mean([-math.log(p) for p in _true_p()])


def _right_bits() -> float:
    return _right_nats() / math.log(2)


# What the usual slips give, in the nats slot.
def _slips() -> dict[str, float]:
    p = _true_p()
    favourite = [max(probs.values()) for _, probs, _ in TEXT_LOSS_STEPS]
    return {
        "sum": sum(-math.log(x) for x in p),
        "log2": _mean([-math.log2(x) for x in p]),
        "log10": _mean([-math.log10(x) for x in p]),
        "favourite": _mean([-math.log(x) for x in favourite]),
        "mean_p": -math.log(_mean(p)),
        "all_terms": _mean([sum(-math.log(x) for x in probs.values()) for _, probs, _ in TEXT_LOSS_STEPS]),
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


def check_text_loss(loss_nats: Any, loss_bits: Any) -> Verdict:
    """Grade the mean next-token loss of :data:`TEXT_LOSS_STEPS` in nats (``loss_nats``) and bits (``loss_bits``)."""
    nats, bits = _right_nats(), _right_bits()
    slip = _slips()
    if loss_nats is Ellipsis and loss_bits is Ellipsis:
        answer: Any = ...
    else:
        answer = (loss_nats, loss_bits)
    return grade(
        "a text's loss by hand", answer,
        lambda a: _near(a[0], nats) and _near(a[1], bits),
        praise="That is the number a training curve shows for these three tokens: the mean of −ln p(true "
               "next token), here in nats and in bits.",
        hints=[
            (lambda a: a[0] is Ellipsis or a[1] is Ellipsis, "fill in both loss_nats and loss_bits."),
            (lambda a: not _is_number(a[0]) or not _is_number(a[1]),
             "both answers should be plain numbers (floats), for example the value of an expression "
             "built with math.log; not strings, lists or None."),
            (lambda a: _near(a[0], bits) and _near(a[1], nats),
             "the two numbers have swapped places: a bit is the smaller unit (1 nat ≈ 1.443 bits), "
             "so the same loss is a larger number in bits than in nats."),
            (lambda a: _number(a[0]) < 0,
             "a loss is never negative: L = −ln p, and ln p is below 0 for any p < 1. Check the minus sign."),
            (lambda a: _near(a[0], slip["sum"]),
             "that is the sum over the three positions; training reports the mean loss per token."),
            (lambda a: _near(a[0], slip["log2"]),
             "that is the loss in bits (log base 2). Nats use the natural logarithm, math.log."),
            (lambda a: _near(a[0], slip["log10"]),
             "math.log10 counts in base 10; nats use the natural logarithm, math.log."),
            (lambda a: _near(a[0], slip["favourite"]),
             "at one position the model's favourite is not the token that came next. The loss uses the "
             "probability of the true next token, whatever the model preferred."),
            (lambda a: _near(a[0], slip["mean_p"]),
             "you averaged the probabilities first and took −ln of the average. Take −ln of each "
             "position's probability first, then average those losses."),
            (lambda a: _near(a[0], slip["all_terms"]),
             "you added −ln p over every candidate. In −Σ yᵢ ln pᵢ only the true token has yᵢ = 1, so each "
             "position contributes one term."),
            (lambda a: not _near(a[0], nats),
             "work position by position: −ln p(true next token) at each of the three, then their mean."),
            (lambda a: _near(a[1], nats),
             "your nats are right, but loss_bits still holds the value in nats: convert it."),
            (lambda a: _near(a[1], nats * math.log(2)),
             "your nats are right. To convert to bits, divide by ln 2 (one bit is ln 2 ≈ 0.693 nats, "
             "so there are more bits than nats), rather than multiply."),
        ],
        otherwise="your nats are right. Convert them with bits = nats ÷ ln 2.")


def _is_number(x: Any) -> bool:
    try:
        _number(x)
    except Exception:
        return False
    return True


# ----------------------------------------------------------------------------------------------
# Solutions: look only when stuck.
# ----------------------------------------------------------------------------------------------

def solution_text_loss() -> tuple[float, float]:
    """The mean of −ln p(true next token) over the three positions, in nats, then ÷ ln 2 for bits."""
    losses = [-math.log(probs[truth]) for _context, probs, truth in TEXT_LOSS_STEPS]
    loss_nats = sum(losses) / len(losses)
    loss_bits = loss_nats / math.log(2)
    return loss_nats, loss_bits


SOLUTIONS = {"text_loss": solution_text_loss}
