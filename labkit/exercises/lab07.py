"""Lab 07 (GRPO): compute group advantages yourself, ``check_group_advantages(your_function)``.

The learner's function gets a flat tensor of rewards, ``group_size`` consecutive answers per prompt,
and returns one advantage per reward, in the same order and shape:

    A_i = (r_i − mean of its group) / (unbiased std of its group + 1e-4)

The check calls it on reward batches the learner never sees and compares with
:func:`labkit.losses.grpo_advantages` (TRL's GRPO advantages).
"""
from __future__ import annotations

from typing import Callable

import torch

from labkit import losses
from labkit.exercises.common import Verdict
from labkit.exercises.functions import Attempt, all_same, as_values, attempt, check_function, same, type_hints

__all__ = ["check_group_advantages"]

EXERCISE = "GRPO's group advantages"
_RTOL = 1e-3  # a std + 1e-8 (or another tiny constant) instead of the lab's 1e-4 is fine

# Hidden batches (rewards, G): right/wrong groups, graded rewards, and groups whose rewards are all equal.
_BATCHES = [([1, 0, 0, 0, 1, 1, 0, 1, 0.5, 0.2, 0.9, 0.4, 1, 1, 1, 1], 4),
            ([0, 2, 1, 3, 3, 3, 0.5, 0, 2], 3),
            ([1, 0, 0, 1, 0, 0, 0, 0, 0.2, 0.4, 0.6, 0.8, 1.0, 0.0, 0.0, 0.0], 8)]


def _cases() -> list[tuple[torch.Tensor, int]]:
    return [(torch.tensor(rewards, dtype=torch.float32), g) for rewards, g in _BATCHES]


def _variant(kind: str, rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """The advantages as a typical mistake computes them (the tests check each gets its own hint)."""
    grouped = rewards.view(-1, group_size)
    mean, std = grouped.mean(dim=1, keepdim=True), grouped.std(dim=1, keepdim=True)
    if kind == "batch std":
        out = (grouped - mean) / (rewards.std() + 1e-4)
    elif kind == "batch mean and std":
        out = (grouped - rewards.mean()) / (rewards.std() + 1e-4)
    elif kind == "batch mean":
        out = (grouped - rewards.mean()) / (std + 1e-4)
    elif kind == "no mean":
        out = grouped / (std + 1e-4)
    elif kind == "population std":
        out = (grouped - mean) / (grouped.std(dim=1, keepdim=True, unbiased=False) + 1e-4)
    elif kind == "no scale":
        out = grouped - mean
    elif kind == "no epsilon":
        out = (grouped - mean) / std
    elif kind == "strided":  # groups taken as every (n/G)-th reward instead of G consecutive ones
        columns = rewards.view(group_size, -1)
        out = (columns - columns.mean(dim=0)) / (columns.std(dim=0) + 1e-4)
    else:
        raise ValueError(kind)
    return out.reshape(-1)


def check_group_advantages(fn: Callable) -> Verdict:
    """Check ``fn(rewards, group_size)`` against GRPO's group advantages on hidden batches."""
    cases = _cases()
    expected = [losses.grpo_advantages(*case).double() for case in cases]
    run = attempt(fn, cases)

    def like(kind: str) -> Callable[[Attempt], bool]:
        return lambda r: all_same(r, [_variant(kind, *case).double() for case in cases], rtol=_RTOL)

    def no_epsilon(r: Attempt) -> bool:  # right, except non-finite numbers where a group's rewards are all equal
        for out, want, (rewards, g) in zip(r.outputs, expected, cases):
            values = as_values(out)
            flat = (rewards.view(-1, g).std(dim=1) == 0).repeat_interleave(g)
            if values.shape != want.shape or torch.isfinite(values[flat]).any():
                return False
            if not same(values[~flat], want[~flat], rtol=_RTOL):
                return False
        return True

    def some_sizes(r: Attempt) -> bool:  # right on some batches, each with its own G, wrong on others
        right = [same(o, e, rtol=_RTOL) for o, e in zip(r.outputs, expected)]
        return any(right) and not all(right)

    def hints(run: Attempt) -> list:
        return type_hints(run, "my_group_advantages(rewards, group_size)",
                          "exercises.check_group_advantages(my_group_advantages)",
                          "a tensor with one advantage per reward") + [
            (lambda r: all(same(as_values(o).reshape(-1), e, rtol=_RTOL) for o, e in zip(r.outputs, expected)),
             "the numbers are right but the shape is not: return them flat, one per reward, in the order the "
             "rewards came."),
            (lambda r: any(as_values(o).numel() != e.numel() for o, e in zip(r.outputs, expected)),
             "return one advantage per reward: as many numbers as `rewards` has."),
            (no_epsilon, "a group whose rewards are all equal has a standard deviation of 0, and your function "
                         "divides by it. Look again at the lab's formula: what keeps the division safe? (Such a "
                         "group teaches nothing, so every advantage in it should come out 0.)"),
            (like("strided"), "the groups are consecutive: the first `group_size` rewards are the answers to the "
                              "first prompt, the next `group_size` to the second, and so on."),
            (like("batch std"), "you divided by the standard deviation of the whole batch. Each group is scaled by "
                                "its own spread."),
            (lambda r: like("batch mean and std")(r) or like("batch mean")(r),
             "you subtracted the mean of the whole batch. The baseline is each group's own mean: answers compete "
             "only with other answers to the same prompt."),
            (like("no mean"), "you forgot to subtract the group's mean: an answer's advantage says how much better "
                              "it did than its group, so a group's advantages add up to 0."),
            (like("population std"), "almost: you used the population standard deviation (dividing by G). The lab, "
                                     "like TRL, uses the unbiased one, dividing by G − 1."),
            (like("no scale"), "you subtracted the group's mean but did not divide by the group's spread."),
            (some_sizes, "right for one group size, wrong for another: does your function use the `group_size` "
                         "argument everywhere, rather than a fixed number?"),
        ]

    return check_function(
        EXERCISE, run, expected, rtol=_RTOL,
        praise="Those are GRPO's advantages: the group's mean is the baseline a critic would have had to learn, and "
               "a group whose answers all score alike gives no signal at all.",
        hints=hints,
        otherwise="check your function on one group from the lab: 1 of 8 right should give +2.474 for the right "
                  "answer and −0.353 for each wrong one.")


def solution_group_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """One solution (look only when stuck): one row per prompt, then each row against its own mean and spread."""
    groups = rewards.view(-1, group_size)
    centred = groups - groups.mean(dim=1, keepdim=True)
    scaled = centred / (groups.std(dim=1, keepdim=True) + 1e-4)
    return scaled.reshape(-1)


SOLUTIONS = {"group_advantages": solution_group_advantages}  # look only when stuck
