"""The graded exercises of labs 05–08: each solution passes, each typical mistake gets its own hint.

Every exercise asks for a function (PPO's clipped objective, the DPO loss of a pair, GRPO's group
advantages, a win rate with ties as half); its check calls it on hidden inputs. A hint points at the
mistake and never carries the answer; an answer of the wrong kind gets a hint, never a traceback.
"""
import inspect
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import torch

from labkit import exercises
from labkit.exercises import lab05, lab06, lab07, lab08
from labkit.exercises.common import NOT_ATTEMPTED, RIGHT, WRONG

LABS = Path(__file__).resolve().parent.parent / "labs"

# exercise -> (check, solution, module, {typical mistake: words its own hint must contain})
EXERCISES = {
    "ppo_clip": (exercises.check_ppo_clip, lab05.solution_ppo_clip, lab05, {
        "max": "too generous",
        "only clipped": "clipped term alone",
        "no clip": "never clips",
        "upper clip only": "lower bound never applies",
        "wrong side for A < 0": "binds on the other side",
        "clipped the product": "clipped the product",
        "loss": "negative of the objective",
    }),
    "dpo_loss": (exercises.check_dpo_loss, lab06.solution_dpo_loss, lab06, {
        "no beta": "β is missing",
        "beta outside": "β is in the wrong place",
        "swapped": "wrong sign",
        "no reference": "ignores the reference",
        "no minus": "your loss is negative",
        "probability": "returned a probability",
        "one minus probability": "returned a probability",
        "quotient": "not a quotient",
    }),
    "group_advantages": (exercises.check_group_advantages, lab07.solution_group_advantages, lab07, {
        "batch std": "standard deviation of the whole batch",
        "batch mean and std": "mean of the whole batch",
        "batch mean": "mean of the whole batch",
        "no mean": "forgot to subtract the group's mean",
        "population std": "population standard deviation",
        "no scale": "did not divide",
        "no epsilon": "divides by it",
        "strided": "groups are consecutive",
    }),
    "win_rate": (exercises.check_win_rate, lab08.solution_win_rate, lab08, {
        "ties lose": "ties count as losses",
        "ties win": "ties count as wins",
        "swapped": "how often the SFT answer wins",
        "count": "count of wins",
        "percent": "percentage",
        "ties left out": "left the ties out",
        "means": "compared the two lists' means",
    }),
}
NAMES = list(EXERCISES)


def mistake(module, kind):
    return lambda *args: module._variant(kind, *args)


def odd_answers():
    """Answers of the wrong kind: none may raise, each must get a hint."""
    def raises(*args):
        raise KeyError("oops")

    return {"a string": "my answer", "None": None, "a number": 0.42, "a list": [1, 2], "a tensor": torch.ones(3),
            "returns None": lambda *a: None, "returns text": lambda *a: "0.5", "raises": raises,
            "takes no arguments": lambda: 1.0, "returns a wrong shape": lambda *a: torch.zeros(2, 5),
            "returns a list of text": lambda *a: ["a", "b"], "returns a dict": lambda *a: {"loss": 1.0}}


def all_messages(name):
    check, _, module, kinds = EXERCISES[name]
    messages = [check(mistake(module, kind)).message for kind in kinds]
    messages += [check(answer).message for answer in odd_answers().values()]
    return messages


@pytest.mark.parametrize("name", NAMES)
def test_the_solution_is_right(name):
    check, solution, _, _ = EXERCISES[name]
    verdict = check(solution)
    assert verdict.status == RIGHT and verdict, verdict
    assert EXERCISES[name][2].SOLUTIONS[name] is solution


@pytest.mark.parametrize("name", NAMES)
def test_the_shipped_placeholder_is_not_attempted(name):
    check = EXERCISES[name][0]
    assert check(...).status == NOT_ATTEMPTED
    assert check(lambda *args: ...).status == NOT_ATTEMPTED  # the notebook's `return ...`
    assert "Replace the" in check(lambda *args: ...).message


@pytest.mark.parametrize("name", NAMES)
def test_each_typical_mistake_gets_its_own_hint(name):
    check, _, module, kinds = EXERCISES[name]
    for kind, words in kinds.items():
        verdict = check(mistake(module, kind))
        assert verdict.status == WRONG, (kind, verdict)
        assert words in verdict.message, (kind, verdict.message)
    hints = {check(mistake(module, kind)).message for kind in kinds}
    assert len(hints) >= len(set(kinds.values())), "two different mistakes share a hint"


@pytest.mark.parametrize("name", NAMES)
def test_an_odd_answer_gets_a_hint_not_a_traceback(name):
    check = EXERCISES[name][0]
    for what, answer in odd_answers().items():
        verdict = check(answer)
        assert verdict.status == WRONG and verdict.message.startswith("Hint: "), (what, verdict)
    assert "without brackets" in check("my answer").message and "None" in check(None).message
    assert "KeyError" in check(odd_answers()["raises"]).message
    assert "`return` line" in check(lambda *a: None).message


@pytest.mark.parametrize("name", NAMES)
def test_no_hint_gives_the_answer_away(name):
    check, solution, module, _ = EXERCISES[name]
    body = inspect.getsource(solution).split('"""')[-1]  # the solution's code, after its docstring
    lines = [line.strip() for line in body.splitlines() if len(line.strip()) > 8]
    numbers = set()
    for case in module._cases():  # the right results on the hidden inputs, as a learner might print them
        right = torch.as_tensor(solution(*case), dtype=torch.float64).reshape(-1)
        numbers |= {f"{v:.3f}" for v in right.tolist() if abs(v) > 1e-9}
    praise = check(solution).message
    for message in all_messages(name):
        for line in lines:
            assert line not in message, (line, message)
        for number in numbers:
            assert number not in message, (number, message)
    assert all(line not in praise for line in lines)


def test_the_checks_are_exported_by_name():
    for name in ("check_ppo_clip", "check_dpo_loss", "check_group_advantages", "check_win_rate"):
        assert callable(getattr(exercises, name))
    for module in (lab05, lab06, lab07, lab08):
        assert all(name.startswith("check_") for name in module.__all__)


def test_lab05_a_partly_right_objective_is_told_which_sign_of_a_fails():
    def right_for_positive_only(ratio, advantage, eps):
        return torch.where(advantage > 0, lab05.solution_ppo_clip(ratio, advantage, eps), ratio * 0)

    def fixed_eps(ratio, advantage, eps):
        return lab05.solution_ppo_clip(ratio, advantage, 0.2)

    assert "right for A > 0, not for A < 0" in exercises.check_ppo_clip(right_for_positive_only).message
    assert "`eps` argument" in exercises.check_ppo_clip(fixed_eps).message
    assert "the average" in exercises.check_ppo_clip(lambda r, a, e: lab05.solution_ppo_clip(r, a, e).mean()).message
    assert "torch has functions" in exercises.check_ppo_clip(lambda r, a, e: min(r * a, r)).message


def test_lab05_answers_as_lists_or_float64_count():
    assert exercises.check_ppo_clip(lambda r, a, e: lab05.solution_ppo_clip(r, a, e).tolist())
    assert exercises.check_ppo_clip(lambda r, a, e: lab05.solution_ppo_clip(r.double(), a.double(), e))


def test_lab06_a_tuple_like_labkits_and_math_on_floats():
    import math

    def like_labkit(*args):
        loss = lab06.solution_dpo_loss(*args)
        return loss, loss * 0, loss * 0

    def with_math(pi_w, pi_l, ref_w, ref_l, beta):
        margin = beta * ((pi_w - ref_w) - (pi_l - ref_l))
        return math.log1p(math.exp(-margin))

    assert "loss alone" in exercises.check_dpo_loss(like_labkit).message
    assert exercises.check_dpo_loss(with_math)


def test_lab07_a_small_epsilon_numpy_and_a_2d_answer():
    def numpy_version(rewards, group_size):
        groups = rewards.numpy().reshape(-1, group_size)
        return (groups - groups.mean(1, keepdims=True)) / (groups.std(1, ddof=1, keepdims=True) + 1e-8)

    def right_on_groups_of_four_only(rewards, group_size):
        return lab07.solution_group_advantages(rewards, group_size) * (1 if group_size == 4 else 2)

    assert "return them flat" in exercises.check_group_advantages(numpy_version).message
    assert exercises.check_group_advantages(lambda r, g: numpy_version(r, g).reshape(-1))
    assert "`group_size`" in exercises.check_group_advantages(right_on_groups_of_four_only).message


def test_lab08_numpy_and_a_learner_who_sorts_the_lists():
    import numpy as np

    assert exercises.check_win_rate(lambda p, s: np.mean([(a > b) + 0.5 * (a == b) for a, b in zip(p, s)]))

    def sorts_first(policy, sft):  # changes its inputs in place: the check's own copies stay intact
        policy.sort()
        sft.sort()
        return lab08.solution_win_rate(policy, sft)

    assert not exercises.check_win_rate(sorts_first)
    assert exercises.check_win_rate(lab08.solution_win_rate)


# ------------------------------------------------------------------ the exercises in the notebooks

NOTEBOOK_EXERCISES = {"05_ppo.ipynb": ("ppo_clip", "my_clip_objective"),
                      "06_dpo.ipynb": ("dpo_loss", "my_dpo_loss"),
                      "07_grpo.ipynb": ("group_advantages", "my_group_advantages"),
                      "08_showdown.ipynb": ("win_rate", "my_win_rate")}


def exercise_cells(lab):
    cells = nbformat.read(LABS / lab, as_version=4).cells
    i = next(i for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith("## Your turn"))
    return cells[i], cells[i + 1]


def run_cell(source, solution=None, **names):
    """Execute the exercise cell as shipped (or with the solution's body in place of `...`); return its namespace."""
    if solution is not None:
        assert source.count("return ...  # your code here") == 1
        source = source.replace("return ...  # your code here", "return SOLUTION(*locals().values())")
    namespace = {"exercises": exercises, "torch": torch, "SOLUTION": solution, **names}
    exec(compile(source, "<exercise cell>", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("lab", NOTEBOOK_EXERCISES)
def test_lab05_to_lab08_ship_an_exercise_that_runs_and_says_not_attempted(lab):
    name, function = NOTEBOOK_EXERCISES[lab]
    intro, cell = exercise_cells(lab)
    assert cell.cell_type == "code" and f"exercises.check_{name}({function})" in cell.source
    assert "return ...  # your code here" in cell.source and "look only when stuck" in intro.source
    namespace = run_cell(cell.source)
    assert EXERCISES[name][0](namespace[function]).status == NOT_ATTEMPTED


@pytest.mark.parametrize("lab", NOTEBOOK_EXERCISES)
def test_lab05_to_lab08_exercise_cells_accept_the_solution(lab):
    name, function = NOTEBOOK_EXERCISES[lab]
    _, cell = exercise_cells(lab)
    race = None
    if lab == "08_showdown.ipynb":  # once right, the cell recomputes the race's win rates: a stand-in race
        answers = pd.DataFrame({"gold": [1.0, 0.0, 2.0, 1.0], "reference gold": [0.0, 0.0, 3.0, 0.5]})
        race = type("Race", (), {"answers": {"PPO": answers},
                                 "table": pd.DataFrame({"win_rate": [0.625]}, index=["PPO"])})()
    namespace = run_cell(cell.source, EXERCISES[name][1], race=race)
    assert EXERCISES[name][0](namespace[function]).status == RIGHT
