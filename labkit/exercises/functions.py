"""Exercises whose answer is a *function*: call it on hidden inputs, compare, hint.

:func:`attempt` calls the learner's function on inputs the learner never sees and records what came
back (or what it raised); :func:`check_function` grades that against the expected values, trying the
:func:`type_hints` (not a function, it raised, it returned nothing or text) before the lab's own.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch

from labkit.exercises.common import Verdict, grade


@dataclass(frozen=True)
class Attempt:
    """What a learner's function did on the hidden inputs."""

    fn: Any                        # what the learner passed to the check
    outputs: list | None = None    # one return value per hidden case, as returned
    error: str | None = None       # "NameError: name 'x' is not defined" when it raised

    @property
    def ran(self) -> bool:
        return self.outputs is not None


def attempt(fn: Any, cases: list[tuple]) -> Any:
    """Call ``fn(*case)`` for each hidden case (on copies: a function may change its inputs).

    Returns ``...`` when ``fn`` is ``...`` or returns ``...`` (the shipped placeholder: not
    attempted yet), else an :class:`Attempt`. Never raises.
    """
    if fn is Ellipsis:
        return Ellipsis
    if not callable(fn):
        return Attempt(fn)
    outputs = []
    for case in cases:
        try:
            out = fn(*copy.deepcopy(case))
        except Exception as error:  # the learner's bug becomes a hint, not a traceback
            return Attempt(fn, error=f"{type(error).__name__}: {error}")
        if out is Ellipsis:
            return Ellipsis
        outputs.append(out)
    return Attempt(fn, outputs=outputs)


def as_values(out: Any) -> torch.Tensor:
    """A learner's return value as a float64 tensor (raises on something that is not numbers)."""
    if isinstance(out, torch.Tensor):
        return out.detach().to(torch.float64)
    if isinstance(out, (str, bytes)) or out is None:
        raise TypeError(f"not numbers: {type(out).__name__}")
    return torch.as_tensor(out, dtype=torch.float64)


def same(out: Any, expected: torch.Tensor, *, rtol: float = 1e-4, atol: float = 1e-6) -> bool:
    """``out`` holds the numbers of ``expected``, in its shape (a one-element result may be any scalar)."""
    values = as_values(out)
    if expected.numel() == 1 and values.numel() == 1:
        values = values.reshape(expected.shape)
    if values.shape != expected.shape:
        return False
    return bool(torch.allclose(values, expected.to(torch.float64), rtol=rtol, atol=atol))


def all_same(run: Any, expected: list[torch.Tensor], cases: range | None = None, *, rtol: float = 1e-4) -> bool:
    """The learner's outputs equal ``expected`` on every hidden case (or on the ``cases`` given)."""
    picked = range(len(expected)) if cases is None else cases
    return all(same(run.outputs[i], expected[i], rtol=rtol) for i in picked)


def _a(name: str) -> str:
    return ("an " if name[:1].lower() in "aeiou" else "a ") + name


def type_hints(run: Attempt, call: str, check: str, returns: str,
               text: bool = True) -> list[tuple[Callable[[Any], bool], str]]:
    """The hints every function exercise tries first: not a function, it raised, it returned nothing or text.

    ``text=False`` leaves out the "returned text" hint, for an exercise whose own hints say more about it.
    """
    hints = [
        (lambda r: not callable(r.fn),
         f"pass your function itself, by its name without brackets: `{check}`. You passed "
         f"{'None' if run.fn is None else _a(type(run.fn).__name__)}."),
        (lambda r: r.error is not None,
         f"your function raised {run.error}. It is called as `{call}` and must return {returns}."
         + (" Python's `min`, `max` and `if` cannot compare tensors element by element; torch has functions that "
            "do." if run.error and "Boolean value of Tensor" in run.error else "")),
        (lambda r: any(o is None for o in r.outputs), "your function returned None: is its `return` line missing?"),
    ]
    if text:
        hints.append((lambda r: any(isinstance(o, (str, bytes)) for o in r.outputs),
                      f"your function returned text; it must return {returns}."))
    return hints


def converts(convert: Callable, value: Any) -> bool:
    """Whether ``convert(value)`` succeeds: the learner's output has the form a check reads."""
    try:
        convert(value)
    except Exception:
        return False
    return True


def output_for(fn: Any, case: tuple) -> Any:
    """What ``fn(*case)`` returns for one case a hint shows (``None`` if it raised or is no function)."""
    tried = attempt(fn, [case])
    return tried.outputs[0] if isinstance(tried, Attempt) and tried.ran else None


def check_function(exercise: str, run: Any, expected: list[torch.Tensor], *, praise: str,
                   hints: Callable[[Attempt], list], otherwise: str, rtol: float = 1e-4) -> Verdict:
    """Grade an :func:`attempt`: right when every hidden case matches ``expected``.

    ``hints(run)`` builds the hints (some quote what the learner's function raised). A hint's predicate
    may assume the function ran: on one that did not, it raises, which :func:`grade` counts as "no".
    """
    if run is Ellipsis:
        return grade(exercise, ..., bool, praise=praise, otherwise=otherwise)
    return grade(exercise, run, lambda r: r.ran and all_same(r, expected, rtol=rtol), praise=praise, hints=hints(run),
                 otherwise=otherwise)
