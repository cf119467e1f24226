"""Lab 06 (DPO): write the loss of one preference pair yourself, ``check_dpo_loss(your_function)``.

The learner's function gets the four sequence log-probabilities of one pair, log π_θ(y_w),
log π_θ(y_l), log π_ref(y_w), log π_ref(y_l) (each a 0-d tensor), and β, and returns

    L = −log σ(β · [(log π_θ(y_w) − log π_ref(y_w)) − (log π_θ(y_l) − log π_ref(y_l))]).

The check calls it on pairs the learner never sees and compares with :func:`labkit.losses.dpo_loss`.
"""
from __future__ import annotations

from typing import Callable

import torch

from labkit import losses
from labkit.exercises.common import Verdict
from labkit.exercises.functions import Attempt, all_same, as_values, attempt, check_function, same, type_hints

__all__ = ["check_dpo_loss"]

EXERCISE = "the DPO loss of one pair"

# Hidden pairs: (log π_θ(y_w), log π_θ(y_l), log π_ref(y_w), log π_ref(y_l), β). Some the policy already
# ranks right, some wrongly; the third has the policy raise both answers, the fourth lower both.
_PAIRS = [(-12.0, -15.0, -13.0, -14.0, 0.5), (-20.0, -18.5, -19.0, -19.5, 0.1), (-7.0, -9.0, -7.5, -8.0, 1.0),
          (-30.0, -25.0, -28.0, -21.0, 0.2)]


def _cases() -> list[tuple]:
    return [(*(torch.tensor(v, dtype=torch.float64) for v in pair[:4]), pair[4]) for pair in _PAIRS]


def _variant(kind: str, pi_w, pi_l, ref_w, ref_l, beta) -> torch.Tensor:
    """The loss as a typical mistake computes it (the tests check each gets its own hint)."""
    margin = (pi_w - ref_w) - (pi_l - ref_l)
    logsig = torch.nn.functional.logsigmoid
    return {
        "no beta": lambda: -logsig(margin),
        "beta outside": lambda: -beta * logsig(margin),
        "swapped": lambda: -logsig(-beta * margin),
        "no reference": lambda: -logsig(beta * (pi_w - pi_l)),
        "no minus": lambda: logsig(beta * margin),
        "probability": lambda: torch.sigmoid(beta * margin),
        "one minus probability": lambda: torch.sigmoid(-beta * margin),
        "quotient": lambda: -logsig(beta * (pi_w / ref_w - pi_l / ref_l)),
    }[kind]()


def check_dpo_loss(fn: Callable) -> Verdict:
    """Check ``fn(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta)`` against DPO's loss on hidden pairs."""
    cases = _cases()
    expected = [losses.dpo_loss(*(v.reshape(1) for v in case[:4]), case[4])[0].reshape(()) for case in cases]
    run = attempt(fn, cases)

    def like(kind: str) -> Callable[[Attempt], bool]:
        return lambda r: all_same(r, [_variant(kind, *case) for case in cases])

    def hints(run: Attempt) -> list:
        return type_hints(run, "my_dpo_loss(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta)",
                          "exercises.check_dpo_loss(my_dpo_loss)", "one number, the loss of the pair") + [
            (lambda r: all(isinstance(o, (tuple, list)) and same(o[0], e) for o, e in zip(r.outputs, expected)),
             "you returned several values. `labkit.losses.dpo_loss` also returns the implicit rewards; your "
             "function should return the loss alone."),
            (lambda r: any(as_values(o).numel() != 1 for o in r.outputs),
             "your function should return one number for the pair (a float or a one-element tensor)."),
            (like("no beta"), "β is missing. The lab's L_DPO multiplies the difference of the two log-ratios by β "
                              "before it goes into σ: β sets how many nats of log-ratio count as one unit of reward."),
            (like("beta outside"), "β is in the wrong place: it scales the margin inside σ( … ), not the loss "
                                   "outside the log."),
            (like("swapped"), "your loss is large when the policy already favours the chosen answer: the margin "
                              "has the wrong sign. Check that y_w is the chosen answer, and that each log-ratio is "
                              "policy minus reference."),
            (like("no reference"), "your loss ignores the reference model. DPO asks how much the policy *raised* "
                                   "each answer relative to π_ref, not how likely the answers are outright."),
            (like("no minus"), "your loss is negative; −log of a probability never is. Check the sign in front of "
                               "the log."),
            (lambda r: like("probability")(r) or like("one minus probability")(r),
             "you returned a probability (σ of something, between 0 and 1). The loss is the negative log of the "
             "probability that the chosen answer wins."),
            (like("quotient"), "log(π_θ / π_ref) is a difference of log-probabilities, not a quotient of them: "
                               "the inputs are already logs."),
        ]

    return check_function(
        EXERCISE, run, expected,
        praise="That is DPO: Bradley–Terry on the implicit rewards β·log π_θ/π_ref, a classification loss on pairs "
               "with no reward model in sight.",
        hints=hints,
        otherwise="build it in steps: the two log-ratios (policy minus reference), their difference (chosen minus "
                  "rejected), times β, then −log σ of that. Print each step for one pair and check its sign.")


def solution_dpo_loss(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta):
    """One solution (look only when stuck): the implicit-reward margin, then −log σ of it."""
    chosen_logratio = pi_chosen - ref_chosen
    rejected_logratio = pi_rejected - ref_rejected
    margin = beta * (chosen_logratio - rejected_logratio)
    return -torch.nn.functional.logsigmoid(margin)


SOLUTIONS = {"dpo_loss": solution_dpo_loss}  # look only when stuck
