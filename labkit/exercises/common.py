"""What every graded exercise shares: the learner's placeholder, the verdict and how it is shown.

A lab's exercise cell ships with ``...`` (Python's ``Ellipsis``: "fill me in") where the answer goes,
as ``answer = ...`` or as a function whose body is ``return ...``, followed by
``exercises.check_<name>(answer)``. The check returns a :class:`Verdict`:

- ``...`` still there → **not attempted yet** (no error, so the notebook runs top to bottom as shipped);
- right → says so, with one sentence of why it matters;
- wrong → the hint of the first mistake it recognises (never the answer itself), else a general hint.

A check never raises on a learner's wrong answer (a wrong type or shape is a hint too).
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Callable, Sequence

NOT_ATTEMPTED, RIGHT, WRONG = "not attempted yet", "right", "not yet"
_ICONS = {NOT_ATTEMPTED: "✏️", RIGHT: "✅", WRONG: "❌"}
_COLOURS = {NOT_ATTEMPTED: "#555", RIGHT: "#1a7f37", WRONG: "#b3261e"}


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check: ``status`` (``right``, ``not yet``, ``not attempted yet``) and a message."""

    exercise: str
    status: str
    message: str

    @property
    def right(self) -> bool:
        return self.status == RIGHT

    def __bool__(self) -> bool:
        return self.right

    def __str__(self) -> str:
        return f"{_ICONS[self.status]} {self.exercise}: {self.status}. {self.message}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return (f'<div style="border-left:4px solid {_COLOURS[self.status]};padding:4px 10px">'
                f"{_ICONS[self.status]} <b>{html.escape(self.exercise)}: {self.status}.</b> "
                f"{html.escape(self.message)}</div>")


Hint = tuple[Callable[[Any], bool], str]  # (does this answer make that mistake?, what to look at)


def grade(exercise: str, answer: Any, is_right: Callable[[Any], bool], *, praise: str,
          hints: Sequence[Hint] = (), otherwise: str) -> Verdict:
    """Judge ``answer``: ``...`` is not attempted; ``is_right`` decides; else the first matching hint.

    Predicates (``is_right`` and each hint's) may raise on an answer of the wrong type or shape: that
    counts as "no" for them, so a learner's odd answer gets a hint, never a traceback.
    """
    if answer is Ellipsis:
        return Verdict(exercise, NOT_ATTEMPTED, "Replace the ... with your answer and run the cell again.")
    if _safely(is_right, answer):
        return Verdict(exercise, RIGHT, praise)
    for matches, hint in hints:
        if _safely(matches, answer):
            return Verdict(exercise, WRONG, "Hint: " + hint)
    return Verdict(exercise, WRONG, "Hint: " + otherwise)


def close(a: Any, b: float, tol: float = 1e-3) -> bool:
    """``a`` is a number (or a one-element tensor/array) within ``tol`` of ``b`` (absolute or relative)."""
    value = float(a.item() if hasattr(a, "item") else a)
    return abs(value - b) <= tol * max(1.0, abs(b))


def _safely(predicate: Callable[[Any], bool], answer: Any) -> bool:
    try:
        return bool(predicate(answer))
    except Exception:  # a wrong type or shape is a wrong answer, not a crash
        return False
