"""Lab 05 (PPO): write the clipped objective yourself, ``check_ppo_clip(your_function)``.

The learner's function gets tensors ``ratio`` and ``advantage`` (same shape) and a float ``eps``
and returns PPO's objective element by element, min(r·A, clip(r, 1 − ε, 1 + ε)·A). The check
calls it on inputs the learner never sees and compares with :func:`labkit.losses.ppo_clip_objective`.
"""
from __future__ import annotations

from typing import Callable

import torch

from labkit import losses
from labkit.exercises.common import Verdict
from labkit.exercises.functions import Attempt, all_same, as_values, attempt, check_function, same, type_hints

__all__ = ["check_ppo_clip"]

EXERCISE = "PPO's clipped objective"


# ------------------------------------------------------------------ lab 05's exercise

def _cases() -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """Hidden inputs: ratios below, inside and above the clip range, for A > 0 and A < 0, at two ε."""
    ratios = torch.tensor([0.5, 0.7, 0.9, 1.0, 1.1, 1.35, 1.7])
    first = (ratios.repeat(2), torch.tensor([2.0] * 7 + [-1.5] * 7), 0.2)
    second = (torch.tensor([0.85, 0.95, 1.05, 1.15] * 2), torch.tensor([1.0] * 4 + [-0.5] * 4), 0.1)
    return [first, second]


def _variant(kind: str, ratio: torch.Tensor, advantage: torch.Tensor, eps: float) -> torch.Tensor:
    """The objective as a typical mistake computes it (the tests check each gets its own hint)."""
    plain = ratio * advantage
    clipped = ratio.clamp(1 - eps, 1 + eps) * advantage
    if kind == "max":
        return torch.maximum(plain, clipped)
    if kind == "only clipped":
        return clipped
    if kind == "no clip":
        return plain
    if kind == "upper clip only":      # min(r·A, min(r, 1 + ε)·A): the lower bound 1 − ε never applied
        return torch.minimum(plain, ratio.clamp(max=1 + eps) * advantage)
    if kind == "wrong side for A < 0":  # for A < 0, the clip put on the side where it should not bind
        return torch.where(advantage >= 0, torch.minimum(plain, clipped), torch.maximum(plain, clipped))
    if kind == "clipped the product":
        return torch.minimum(plain, plain.clamp(1 - eps, 1 + eps))
    if kind == "loss":
        return -torch.minimum(plain, clipped)
    raise ValueError(kind)


def check_ppo_clip(fn: Callable) -> Verdict:
    """Check ``fn(ratio, advantage, eps)`` against PPO's clipped objective on hidden inputs."""
    cases = _cases()
    expected = [losses.ppo_clip_objective(*case).double() for case in cases]
    run = attempt(fn, cases)

    def like(kind: str) -> Callable[[Attempt], bool]:
        return lambda r: all_same(r, [_variant(kind, *case).double() for case in cases])

    def where(sign: int, case: int = 0) -> Callable[[Attempt], bool]:  # right on the entries with that sign of A
        def check(r: Attempt) -> bool:
            keep = (cases[case][1] > 0) if sign > 0 else (cases[case][1] < 0)
            values = as_values(r.outputs[case])
            return values.shape == expected[case].shape and same(values[keep], expected[case][keep])
        return check

    def hints(run: Attempt) -> list:
        return type_hints(run, "my_clip_objective(ratio, advantage, eps)", "exercises.check_ppo_clip(my_clip_objective)",
                          "a tensor with one objective value per element of ratio") + [
            (lambda r: all(same(o, e.mean()) for o, e in zip(r.outputs, expected)),
             "you returned one number, the average. Return one objective value per element (the average over "
             "tokens comes later, in the trainer)."),
            (lambda r: any(as_values(o).shape != e.shape for o, e in zip(r.outputs, expected)),
             "your result has the wrong shape: it should have exactly the shape of `ratio`, one value per element."),
            (like("loss"), "you returned the negative of the objective, which is the loss an optimiser minimises. "
                           "The check wants the objective itself, the quantity PPO maximises."),
            (like("max"), "your objective is too generous: where the clipped and the unclipped term disagree, PPO "
                          "keeps the pessimistic one, so that a big step never earns more than the clip allows."),
            (like("only clipped"), "you returned the clipped term alone. The objective also looks at the unclipped "
                                   "term r·A: with A = 2 and r = 2/3 the lab's table gives 4/3, not 1.6."),
            (like("no clip"), "your objective never clips: with ε = 0.2 and A = 2, r = 1.5 should earn 2.4, not 3.0."),
            (like("clipped the product"), "you clipped the product r·A. The clip range 1 ± ε is for the ratio r; "
                                          "multiply by A after clipping."),
            (like("upper clip only"), "right for A > 0, but for A < 0 your objective keeps pushing a token down even "
                                      "after its ratio fell below 1 − ε: the clip's lower bound never applies."),
            (like("wrong side for A < 0"), "right for A > 0. For A < 0 the clip binds on the other side: a bad token "
                                           "whose ratio fell below 1 − ε has been pushed down enough, while one that "
                                           "became more likely is still pushed down at full strength. Look at the table "
                                           "for A = −2 above."),
            (lambda r: all_same(r, expected, range(1)),
             "right at ε = 0.2, wrong at another ε: use the `eps` argument rather than a fixed number."),
            (where(+1), "right for A > 0, not for A < 0. Compare your function with the lab's table for A = −2."),
            (where(-1), "right for A < 0, not for A > 0. Compare your function with the lab's table for A = +2."),
        ]
    return check_function(
        EXERCISE, run, expected,
        praise="That is PPO's objective: one-sided, it stops rewarding a move once the ratio leaves 1 ± ε in the "
               "direction the advantage pushes, and never stops a move back.",
        hints=hints,
        otherwise="try your function on the lab's worked examples: ε = 0.2, A = 2, ratio 1.5 should give 2.4 and "
                  "ratio 2/3 should give 4/3; then compare with the table for A = −2.")


def solution_ppo_clip(ratio: torch.Tensor, advantage: torch.Tensor, eps: float) -> torch.Tensor:
    """One solution (look only when stuck): the two terms, element by element, and the smaller of them."""
    unclipped = ratio * advantage
    clipped = torch.clamp(ratio, 1 - eps, 1 + eps) * advantage
    return torch.minimum(unclipped, clipped)


SOLUTIONS = {"ppo_clip": solution_ppo_clip}  # look only when stuck
