"""Lab 08 (showdown): compute a win rate yourself, ``check_win_rate(your_function)``.

The learner's function gets two equally long lists of gold rewards, the policy's answers and the SFT
policy's answers to the same prompts, pair by pair, and returns the share of pairs the policy wins,
a tie counting as half a win: the showdown table's `win rate`. The check calls it on lists the
learner never sees and compares with :func:`labkit.metrics.win_rate`.
"""
from __future__ import annotations

from typing import Callable

import torch

from labkit import metrics
from labkit.exercises.common import Verdict
from labkit.exercises.functions import Attempt, all_same, as_values, attempt, check_function, type_hints

__all__ = ["check_win_rate"]

EXERCISE = "a win rate, ties counted as half"

# Hidden lists (policy's gold rewards, SFT's gold rewards), pair by pair: wins, losses and ties in each.
_LISTS = [([1.0, 2.0, 0.0, -1.0, 2.0, 3.0, 1.0, 0.0], [0.0, 2.0, 1.0, -1.0, 1.0, 3.0, 2.0, -2.0]),
          ([2.0, -1.0, 0.5, 0.5, 1.5, 3.0], [1.0, 0.0, 0.5, 2.0, 0.5, 1.0]),
          ([-0.5, 2.0, 2.0, 1.0, 0.0, 1.0, 2.5, -1.0, 3.0, 0.0], [-0.5, 1.0, 2.5, 1.0, -1.0, 1.0, 2.0, 0.0, 3.0, 1.5])]


def _cases() -> list[tuple[list[float], list[float]]]:
    return [(list(policy), list(sft)) for policy, sft in _LISTS]


def _variant(kind: str, policy: list[float], sft: list[float]) -> torch.Tensor:
    """The win rate as a typical mistake computes it (the tests check each gets its own hint)."""
    p, s = torch.tensor(policy, dtype=torch.float64), torch.tensor(sft, dtype=torch.float64)
    wins, ties, losses = (p > s).sum(), (p == s).sum(), (p < s).sum()
    return {
        "ties lose": lambda: wins / len(p),
        "ties win": lambda: (wins + ties) / len(p),
        "swapped": lambda: (losses + ties / 2) / len(p),
        "count": lambda: wins + ties / 2,
        "percent": lambda: 100 * (wins + ties / 2) / len(p),
        "ties left out": lambda: wins / (wins + losses),
        "means": lambda: (p.mean() > s.mean()).double(),
    }[kind]().double()


def check_win_rate(fn: Callable) -> Verdict:
    """Check ``fn(policy_gold, sft_gold)`` against the win rate with ties counted as half, on hidden lists."""
    cases = _cases()
    expected = [torch.tensor(metrics.win_rate(*case), dtype=torch.float64) for case in cases]
    run = attempt(fn, cases)

    def like(kind: str) -> Callable[[Attempt], bool]:
        return lambda r: all_same(r, [_variant(kind, *case) for case in cases])

    def hints(run: Attempt) -> list:
        return type_hints(run, "my_win_rate(policy_gold, sft_gold)", "exercises.check_win_rate(my_win_rate)",
                          "one number between 0 and 1") + [
            (lambda r: any(as_values(o).numel() != 1 for o in r.outputs),
             "return one number for the two lists, the share of pairs won, not one value per pair."),
            (like("ties lose"), "your ties count as losses. A tie is half a win: neither answer was better."),
            (like("ties win"), "your ties count as wins. A tie is half a win: neither answer was better."),
            (like("ties left out"), "you left the ties out of the count of pairs. Every pair counts, a tie as half "
                                    "a win."),
            (like("swapped"), "you measured how often the SFT answer wins: the first list is the policy's."),
            (like("count"), "you returned a count of wins. A rate is a share of the pairs, between 0 and 1."),
            (like("percent"), "you returned a percentage; return the share as a number between 0 and 1."),
            (like("means"), "you compared the two lists' means. A win rate compares the answers pair by pair: "
                            "answer i of the policy against answer i of the SFT policy."),
        ]

    return check_function(
        EXERCISE, run, expected,
        praise="That is the showdown's win rate. 50 % means no better than the SFT policy; ties count half so that "
               "a policy that changes nothing scores exactly 50 %.",
        hints=hints,
        otherwise="try it on a small case you can do by hand: policy [1, 0, 2] against SFT [0, 0, 3] has one win, "
                  "one tie and one loss.")


def solution_win_rate(policy_gold: list[float], sft_gold: list[float]) -> float:
    """One solution (look only when stuck): count pair by pair, a tie as half a win, and divide by the pairs."""
    score = 0.0
    for mine, theirs in zip(policy_gold, sft_gold):
        if mine > theirs:
            score += 1.0
        elif mine == theirs:
            score += 0.5
    return score / len(policy_gold)


SOLUTIONS = {"win_rate": solution_win_rate}  # look only when stuck
