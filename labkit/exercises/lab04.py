"""Lab 04 (reward modelling): two graded exercises and their solutions.

1. ``check_ranking_pairs``: turn a ranking of K answers (best first) into its C(K, 2) comparisons,
   each an unordered pair of answers written (winner, loser).
2. ``check_bradley_terry_loss``: write the Bradley–Terry loss −mean log σ(r_chosen − r_rejected) as a
   function; it is run on hidden rewards and compared with :func:`labkit.losses.bradley_terry_loss`.

Each check names the slip it recognises (pairs in both orders, winner and loser swapped, a missing
minus sign or sigmoid, …) without giving the answer.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Iterator
from itertools import combinations

import torch

from labkit.exercises.common import WRONG, Verdict, grade
from labkit.losses import bradley_terry_loss

__all__ = ["check_ranking_pairs", "check_bradley_terry_loss"]

PAIRS_EXERCISE = "pairs from a ranking"
LOSS_EXERCISE = "Bradley–Terry loss"


# ------------------------------------------------------------------ 1. from a ranking to pairs

def _pairs(answer) -> list[tuple]:
    """The answer as a list of 2-tuples; raises on anything else (a string, a number, a triple, …)."""
    if isinstance(answer, (str, bytes, dict)) or not isinstance(answer, Iterable):
        raise TypeError("not a list of pairs")
    pairs = []
    for item in answer:
        if isinstance(item, (str, bytes)) or len(item) != 2:
            raise TypeError("not a pair")
        pairs.append(tuple(item))
    return pairs


def check_ranking_pairs(answer, ranked) -> Verdict:
    """Is ``answer`` every comparison the ranking ``ranked`` (best first) implies, each once, winner first?"""
    ranked = list(ranked) if isinstance(ranked, Iterable) and not isinstance(ranked, (str, bytes)) else []
    if len(ranked) < 2 or not all(isinstance(r, Hashable) for r in ranked) or len(set(ranked)) < len(ranked):
        return Verdict(PAIRS_EXERCISE, WRONG, "Hint: `ranked` should list at least two different answers, best "
                                              "first. Run the cell that defines it again.")
    if isinstance(answer, Iterator):  # a generator can be read once only: keep what it gives
        answer = list(answer)
    k = len(ranked)
    right = set(combinations(ranked, 2))
    unordered = Counter(frozenset(p) for p in right)

    def known(a):
        return all(x in ranked and y in ranked for x, y in _pairs(a))

    def no_duplicates(a):
        return len(set(_pairs(a))) == len(_pairs(a))

    def swapped(a):
        return [p for p in _pairs(a) if (p[1], p[0]) in right]

    def every_pair_once(a):  # the right comparisons, each once, whatever the order inside each
        return no_duplicates(a) and Counter(frozenset(p) for p in _pairs(a)) == unordered

    try:
        n_swapped = len(swapped(answer))
    except Exception:
        n_swapped = 0
    hints = [
        (lambda a: isinstance(a, (str, bytes, dict)) or not isinstance(a, Iterable),
         "give a list of pairs, each pair a tuple (winner, loser) of two answers from `ranked`."),
        (lambda a: not _reads_as_pairs(a), "every item of the list should be one pair: two answers, (winner, loser)."),
        (lambda a: len(_pairs(a)) == 0, "the list is empty: a ranking of several answers says who beats whom."),
        (lambda a: not known(a), "use the answers exactly as they are written in `ranked` (copy them from the "
                                 "list, or index into it), not numbers or new text."),
        (lambda a: any(x == y for x, y in _pairs(a)), "an answer is never compared with itself."),
        (lambda a: set(_pairs(a)) == right | {(y, x) for x, y in right},
         "each comparison appears twice, once each way round. (a, b) and (b, a) are the same two answers: "
         "one comparison, written once, with its winner first."),
        (lambda a: not no_duplicates(a), "some pairs appear more than once: two answers make one comparison."),
        (lambda a: every_pair_once(a) and n_swapped == len(right),
         "every pair has the loser first. Put the better-ranked answer (the one earlier in `ranked`) first."),
        (lambda a: every_pair_once(a) and n_swapped > 0,
         f"{n_swapped} of your pairs have the loser first; the better-ranked answer (earlier in `ranked`) goes "
         "first."),
        (lambda a: set(_pairs(a)) == {(ranked[i], ranked[i + 1]) for i in range(k - 1)},
         "you compared only neighbours in the ranking. A ranking says more: the best answer also beats the "
         "third, the fourth, and so on."),
        (lambda a: set(_pairs(a)) == {(ranked[0], r) for r in ranked[1:]},
         "you compared only the best answer with the others. The second best also beats everything below it, "
         "and so on down the ranking."),
        (lambda a: set(_pairs(a)) < right, f"some comparisons are missing: {k} ranked answers give C({k}, 2) pairs. "
                                           "Count yours."),
        (lambda a: n_swapped > 0, "some pairs have the loser first; the better-ranked answer (earlier in `ranked`) "
                                  "goes first."),
    ]
    return grade(PAIRS_EXERCISE, answer, lambda a: no_duplicates(a) and set(_pairs(a)) == right,
                 praise=f"{len(right)} comparisons from one ranking of {k}: C({k}, 2) = {math.comb(k, 2)}, each two "
                        "answers once with a known winner. That is why InstructGPT had annotators rank several "
                        "answers at once.",
                 hints=hints,
                 otherwise="go down the ranking: each answer beats every answer ranked below it, "
                           "and each two answers make exactly one comparison.")


def _reads_as_pairs(answer) -> bool:
    try:
        _pairs(answer)
        return True
    except Exception:
        return False


# ------------------------------------------------------------------ 2. the Bradley–Terry loss

def _hidden_rewards() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two batches of reward-model scores the learner's function never sees printed."""
    g = torch.Generator().manual_seed(2024)
    batches = []
    for size in (6, 3):
        chosen = torch.randn(size, generator=g) * 1.5 + 0.5
        rejected = torch.randn(size, generator=g) * 1.5
        batches.append((chosen, rejected))
    return batches


def _as_tensor(value) -> torch.Tensor:
    return torch.as_tensor(value.detach() if torch.is_tensor(value) else value, dtype=torch.float64)


def check_bradley_terry_loss(answer) -> Verdict:
    """Does the function ``answer(r_chosen, r_rejected)`` return −mean log σ(r_chosen − r_rejected)?

    ``answer`` gets two 1-D float tensors (rewards of the chosen and of the rejected answers, one per
    pair) and should return one number (a 0-dim tensor or a float).
    """
    if answer is Ellipsis:
        return grade(LOSS_EXERCISE, answer, lambda a: False, praise="", otherwise="")
    if not callable(answer):
        return Verdict(LOSS_EXERCISE, WRONG, "Hint: pass the function itself (its name, without brackets): the "
                                             "check calls it on rewards of its own.")
    runs = []
    for chosen, rejected in _hidden_rewards():
        try:
            runs.append(answer(chosen.clone(), rejected.clone()))
        except Exception as error:  # the learner's code broke: say how, as a hint
            return Verdict(LOSS_EXERCISE, WRONG, f"Hint: your function raised {type(error).__name__}: {error}. It is "
                                                 "called with two 1-D float tensors of the same length; use torch "
                                                 "operations on them.")
    if any(run is Ellipsis for run in runs):  # the shipped body `return ...`
        return grade(LOSS_EXERCISE, ..., lambda a: False, praise="", otherwise="")

    batches = _hidden_rewards()
    gaps = [c.double() - r.double() for c, r in batches]
    F = torch.nn.functional

    def value(run):
        out = _as_tensor(run)
        if out.numel() != 1:
            raise ValueError("not one number")
        return float(out)

    def every(reference):
        """The learner's output equals ``reference(gap)`` on every hidden batch."""
        return lambda rs: all(math.isclose(value(run), float(reference(gap)), rel_tol=1e-4, abs_tol=1e-6)
                              for run, gap in zip(rs, gaps))

    hints = [
        (lambda rs: any(run is None for run in rs), "your function returns nothing: end it with `return`."),
        (lambda rs: all(_as_tensor(run).shape == gap.shape and gap.numel() > 1 for run, gap in zip(rs, gaps)),
         "you return one loss per pair. The loss of a batch is one number: average over the pairs."),
        (lambda rs: any(_as_tensor(run).numel() != 1 for run in rs),
         "return one number for the whole batch (a 0-dim tensor or a float)."),
        (lambda rs: any(not math.isfinite(value(run)) for run in rs),
         "your loss is not a finite number: a log of zero or of a negative number? The sigmoid maps any reward "
         "gap into (0, 1), where the log is defined."),
        (every(lambda d: -F.logsigmoid(d).sum()), "you summed over the pairs; average instead, so that the loss "
                                                  "does not grow with the batch size."),
        (every(lambda d: F.logsigmoid(d).mean()), "a loss to minimise cannot be negative here: check the sign. "
                                                  "Maximum likelihood maximises log σ, so the loss is its negative."),
        (every(lambda d: -F.logsigmoid(-d).mean()),
         "your loss is small when the *rejected* answer scores higher. Check which reward is subtracted from which."),
        (every(lambda d: F.logsigmoid(-d).mean()), "two slips: the sign of the loss, and which reward is subtracted "
                                                   "from which."),
        (every(lambda d: -torch.sigmoid(d).mean()), "the log is missing: the loss is a negative *log*-probability."),
        (every(lambda d: (1 - torch.sigmoid(d)).mean()), "the log is missing: the loss is a negative *log*-probability, "
                                                         "not one minus a probability."),
        (every(lambda d: -d.mean()), "the sigmoid and the log are missing: first turn the reward gap into a "
                                     "probability with σ, then take −log of it."),
        (every(lambda d: -F.logsigmoid(d).mean() / math.log(2)), "you used log base 2 (bits); the loss is in "
                                                                 "nats, with the natural log."),
        (every(lambda d: -F.logsigmoid(d).mean() / math.log(10)), "you used log base 10; the loss is in nats, "
                                                                  "with the natural log."),
    ]
    return grade(LOSS_EXERCISE, runs, every(lambda d: bradley_terry_loss(d, torch.zeros_like(d))),
                 praise="Same as labkit.losses.bradley_terry_loss and TRL's RewardTrainer on hidden rewards. "
                        "(Both compute log σ with torch.nn.functional.logsigmoid, which stays finite even for a "
                        "huge reward gap.)",
                 hints=hints,
                 otherwise="go back to the formula, one step at a time, and try your function on one pair you "
                           "can work out by hand: rewards 1 (chosen) and 0 (rejected) give −log σ(1) ≈ 0.313.")


# ------------------------------------------------------------------ solutions: look only when stuck

def solution_ranking_pairs(ranked) -> list[tuple]:
    """Each answer against every answer ranked below it, winner first: C(K, 2) pairs."""
    return [(ranked[i], ranked[j]) for i in range(len(ranked)) for j in range(i + 1, len(ranked))]


def solution_bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """−mean log σ(r_chosen − r_rejected), with logsigmoid for numerical safety."""
    return -torch.nn.functional.logsigmoid(r_chosen - r_rejected).mean()


SOLUTIONS = {"check_ranking_pairs": solution_ranking_pairs, "check_bradley_terry_loss": solution_bradley_terry_loss}
