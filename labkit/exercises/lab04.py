"""Lab 04 (reward modelling): two graded exercises and their solutions.

1. ``check_ranking_pairs(ranking_pairs)``: write a function that turns a ranking of K answers (best
   first) into its C(K, 2) comparisons, each an unordered pair of answers written (winner, loser); the
   check runs it on hidden rankings of 2 to 9 answers, the lab's own five among them.
2. ``check_bradley_terry_loss``: write the Bradley–Terry loss −mean log σ(r_chosen − r_rejected) as a
   function; it is run on hidden rewards and compared with :func:`labkit.losses.bradley_terry_loss`.

Each check names the slip it recognises (pairs in both orders, winner and loser swapped, a missing
minus sign or sigmoid, …) without giving the answer.
"""
from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from itertools import combinations

import torch

from labkit.exercises.common import WRONG, Verdict, grade
from labkit.exercises.functions import Attempt, attempt, output_for, type_hints
from labkit.losses import bradley_terry_loss
from labkit.world import preferences as prefs

__all__ = ["check_ranking_pairs", "check_bradley_terry_loss"]

PAIRS_EXERCISE = "pairs from a ranking"
LAB_RANKING = ("harbor", 5, 1)  # the ranking the lab prints (`five_ranked`): hidden case 1
LOSS_EXERCISE = "Bradley–Terry loss"


# ------------------------------------------------------------------ 1. from a ranking to pairs

# Hidden rankings (place, K, seed): the lab's own five harbor answers first, then rankings of 2, 3, 6
# and 9 answers (InstructGPT ranked 4 to 9). The learner's function never sees them printed.
_RANKINGS = [LAB_RANKING, ("dairy", 2, 2), ("market", 3, 3), ("forest", 6, 4), ("garden", 9, 5)]
# The example a hint may show: section 2's four bakery answers (`ranked` in the lab), whose six pairs the
# lab already prints in a table. It is not among the hidden rankings.
SHOWN = ("bakery", 4, 0)
_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}


def _ranking(place: str, k: int, seed: int) -> list[str]:
    return prefs.ranking(place, k, random.Random(seed))


def _cases() -> list[tuple[list[str]]]:
    """The hidden rankings, best first, one argument each: ``ranking_pairs(ranked)``."""
    return [(_ranking(*spec),) for spec in _RANKINGS]


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


def _slip(pairs: list[tuple], ranked: list) -> str:
    """What a function's pairs for one ranking are: ``"right"`` or the first slip they show, by name."""
    right = set(combinations(ranked, 2))
    unordered = Counter(frozenset(p) for p in right)
    got = set(pairs)
    once = len(got) == len(pairs)
    swapped = [p for p in pairs if (p[1], p[0]) in right]
    every_pair_once = once and Counter(frozenset(p) for p in pairs) == unordered
    k = len(ranked)
    if not pairs:
        return "empty"
    if not all(x in ranked and y in ranked for x, y in pairs):
        return "unknown answers"
    if any(x == y for x, y in pairs):
        return "against itself"
    if got == right | {(y, x) for x, y in right}:
        return "both ways round"
    if not once:
        return "duplicates"
    if got == right:
        return "right"
    if every_pair_once and len(swapped) == len(right):
        return "all swapped"
    if every_pair_once:
        return "some swapped"
    if got == {(ranked[i], ranked[i + 1]) for i in range(k - 1)}:
        return "neighbours only"
    if got == {(ranked[0], r) for r in ranked[1:]}:
        return "best against the rest"
    if got < right:
        return "missing"
    if swapped:
        return "missing and swapped"
    return "other"


def check_ranking_pairs(fn: Callable) -> Verdict:
    """Check ``fn(ranked)``, every (winner, loser) comparison a ranking (best first) implies, on hidden rankings."""
    cases = _cases()
    run = attempt(fn, cases)
    if isinstance(run, Attempt) and run.ran:  # a generator can be read once only: keep what it gives
        run = Attempt(run.fn, outputs=[list(o) if isinstance(o, Iterator) else o for o in run.outputs])

    def listed(r: Attempt) -> list[list[tuple]]:
        return [_pairs(out) for out in r.outputs]

    def slips(r: Attempt) -> list[str]:
        return [_slip(pairs, ranked) for pairs, (ranked,) in zip(listed(r), cases)]

    def first_wrong(r: Attempt) -> tuple[str, int]:
        """The first hidden ranking the function gets wrong: (its slip, its length)."""
        return next((slip, len(ranked)) for slip, (ranked,) in zip(slips(r), cases) if slip != "right")

    def slip_is(*names: str) -> Callable[[Attempt], bool]:
        return lambda r: first_wrong(r)[0] in names

    k = 0
    if isinstance(run, Attempt) and run.ran:  # the length of the ranking a slip is first seen on, for its hint
        try:
            k = first_wrong(run)[1]
        except Exception:
            k = 0

    def shown() -> str:
        """What the learner's function gives for section 2's ranking, beside what it should give."""
        place, size, seed = SHOWN
        ranked = _ranking(place, size, seed)
        right = set(combinations(ranked, 2))
        got = output_for(fn, (ranked,))
        text = (f" Try it on `ranked`, section 2's ranking of {_WORDS[size]} bakery answers: "
                f"`ranking_pairs(ranked)` should give the {len(right)} pairs in the table there")
        try:
            pairs = _pairs(got)
        except Exception:
            return text + "."
        hits = sum(p in right for p in set(pairs))
        return text + f"; yours gives {len(pairs)}, {hits} of them in that table."

    def hints(run: Attempt) -> list:
        return [
            (lambda r: r.error is not None and "IndexError" in r.error,
             f"your function raised {run.error}. The check gives it rankings of several lengths, not only five: "
             "take the length from the ranking itself (`len(ranked)`)."),
        ] + type_hints(run, "ranking_pairs(ranked)", "exercises.check_ranking_pairs(ranking_pairs)",
                       "a list of (winner, loser) pairs", text=False) + [
            (lambda r: any(isinstance(o, (str, bytes)) for o in r.outputs),
             "your function returned text; return a list of pairs, each a tuple (winner, loser) of two answers "
             "from `ranked`."),
            (lambda r: all(list(out) == list(ranked) for out, (ranked,) in zip(r.outputs, cases)),
             "your function hands back the ranking it was given. Return the comparisons inside it: a list of "
             "(winner, loser) pairs." + shown()),
            (lambda r: any(isinstance(o, dict) or not isinstance(o, Iterable) for o in r.outputs),
             "return a list of pairs, each pair a tuple (winner, loser) of two answers from `ranked`."),
            (lambda r: not all(_reads_as_pairs(o) for o in r.outputs),
             "every item of the list should be one pair: two answers, (winner, loser)."),
            (slip_is("empty"), "your function returned an empty list: a ranking of several answers says who beats "
                               "whom."),
            (lambda r: len({repr(sorted(map(repr, p))) for p in listed(r)}) == 1,
             "your function gives the same pairs whatever ranking it is given. Build them from its argument "
             "`ranked` (not from `five_ranked`): the check tries rankings of its own, of several lengths."
             + shown()),
            (slip_is("unknown answers"),
             "use the answers exactly as they are written in the ranking your function gets (`ranked[i]`), not "
             "their positions, numbers or new text."),
            (slip_is("against itself"), "an answer is never compared with itself."),
            (slip_is("both ways round"),
             "each comparison appears twice, once each way round. (a, b) and (b, a) are the same two answers: "
             "one comparison, written once, with its winner first."),
            (slip_is("duplicates"), "some pairs appear more than once: two answers make one comparison."),
            (slip_is("all swapped"),
             "every pair has the loser first. Put the better-ranked answer (the one earlier in `ranked`) first."),
            (slip_is("some swapped"),
             "some of your pairs have the loser first; the better-ranked answer (earlier in `ranked`) goes first."),
            (slip_is("neighbours only"),
             "you compared only neighbours in the ranking. A ranking says more: the best answer also beats the "
             "third, the fourth, and so on." + shown()),
            (slip_is("best against the rest"),
             "you compared only the best answer with the others. The second best also beats everything below it, "
             "and so on down the ranking." + shown()),
            (slip_is("missing"),
             f"some comparisons are missing: a ranking of {k} answers gives C({k}, 2) pairs. Count yours (are the "
             "loop's ends right?)." + shown()),
            (slip_is("missing and swapped"),
             "some pairs have the loser first, and some comparisons are missing; the better-ranked answer (earlier "
             "in `ranked`) goes first." + shown()),
        ]

    if run is Ellipsis:
        return grade(PAIRS_EXERCISE, ..., bool, praise="", otherwise="")
    size = LAB_RANKING[1]
    return grade(PAIRS_EXERCISE, run, lambda r: r.ran and all(s == "right" for s in slips(r)),
                 praise=f"Right on every ranking the check tried, from 2 answers to 9. The lab's {_WORDS[size]} "
                        f"harbor answers give C({size}, 2) = {math.comb(size, 2)} comparisons, each two answers once "
                        "with a known winner; 9 answers give 36. That is why InstructGPT had annotators rank several "
                        "answers at once. (`itertools.combinations(ranked, 2)` gives exactly these pairs, winner "
                        "first.)",
                 hints=hints(run),
                 otherwise="go down the ranking: each answer beats every answer ranked below it, and each two "
                           "answers make exactly one comparison." + shown())


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
