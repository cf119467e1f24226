"""Every graded check judges on inputs of its own: an answer that ignores its input cannot pass.

For each checker of labs 00–08, the solution passes, while a constant answer (0, or the right answer of one
case returned for every case) and an identity answer (the function hands back its first input) both fail
with a hint, never a traceback. Labs 00–04's notebook cells, with the solution in place of `...`, pass.
"""
import random
from pathlib import Path

import nbformat
import pytest
import torch

from labkit import exercises
from labkit.exercises import lab00, lab01, lab02, lab03, lab04, lab05, lab06, lab07, lab08
from labkit.exercises.common import NOT_ATTEMPTED, RIGHT, WRONG
from labkit.world import preferences as prefs

LABS = Path(__file__).resolve().parent.parent / "labs"

# check(function) -> verdict, its solution, and the hidden cases it calls the function on
FUNCTION_CHECKS = {
    "lab00 one-shot prompt": (exercises.check_few_shot_prompt, lab00.solution_few_shot_prompt, lab00._cases()),
    "lab01 text loss": (exercises.check_text_loss, lab01.solution_text_loss, lab01._cases()),
    "lab02 SFT labels": (exercises.check_sft_labels, lab02.solution_sft_labels, lab02._cases()),
    "lab03 LoRA count": (exercises.check_lora_count, lab03.solution_lora_count, lab03._cases()),
    "lab04 ranking pairs": (exercises.check_ranking_pairs, lab04.solution_ranking_pairs, lab04._cases()),
    "lab04 Bradley–Terry loss": (exercises.check_bradley_terry_loss, lab04.solution_bradley_terry_loss,
                                 lab04._hidden_rewards()),
    "lab05 PPO clip": (exercises.check_ppo_clip, lab05.solution_ppo_clip, lab05._cases()),
    "lab06 DPO loss": (exercises.check_dpo_loss, lab06.solution_dpo_loss, lab06._cases()),
    "lab07 group advantages": (exercises.check_group_advantages, lab07.solution_group_advantages, lab07._cases()),
    "lab08 win rate": (exercises.check_win_rate, lab08.solution_win_rate, lab08._cases()),
}
NAMES = list(FUNCTION_CHECKS)
NOT_NUMBERS = {"lab00 one-shot prompt", "lab04 ranking pairs"}  # their answers are text, not numbers


def assert_fails_with_a_hint(verdict):
    assert verdict.status == WRONG and not verdict, verdict
    assert verdict.message.startswith("Hint: "), verdict


@pytest.mark.parametrize("name", NAMES)
def test_the_solution_passes(name):
    check, solution, _ = FUNCTION_CHECKS[name]
    assert check(solution).status == RIGHT


@pytest.mark.parametrize("name", NAMES)
def test_a_constant_answer_fails(name):
    check, _, _ = FUNCTION_CHECKS[name]
    for constant in (0, 1.0, torch.tensor(0.0), [0, 0]):
        assert_fails_with_a_hint(check(lambda *a, constant=constant, **k: constant))


@pytest.mark.parametrize("name", NAMES)
def test_the_right_answer_of_one_case_returned_for_every_case_fails(name):
    check, solution, cases = FUNCTION_CHECKS[name]
    for case in cases:
        answer = solution(*case)
        assert_fails_with_a_hint(check(lambda *a, answer=answer, **k: answer))


@pytest.mark.parametrize("name", NAMES)
def test_an_identity_answer_fails(name):
    check, _, _ = FUNCTION_CHECKS[name]
    assert_fails_with_a_hint(check(lambda first, *rest, **k: first))
    assert_fails_with_a_hint(check(lambda *a, **k: a))


@pytest.mark.parametrize("name", NAMES)
def test_the_hidden_cases_differ(name):
    """Cases whose right answers were all equal could not tell a constant from a solution."""
    _, solution, cases = FUNCTION_CHECKS[name]
    answers = [repr(solution(*case) if name in NOT_NUMBERS else torch.as_tensor(solution(*case)).tolist())
               for case in cases]
    assert len(cases) >= 2 and len(set(answers)) == len(answers)


# ------------------------------------------------------------------ lab 04's ranking: the lab's own among the hidden

RANKED = prefs.ranking("harbor", 5, random.Random(1))  # the lab's ranking of five (`five_ranked`)


def test_lab04_the_labs_ranking_is_a_hidden_case_and_answering_it_alone_fails():
    assert (RANKED,) in lab04._cases() and len({len(r) for (r,) in lab04._cases()}) >= 4
    right_for_the_lab = lab04.solution_ranking_pairs(RANKED)
    for answer in ([], [(RANKED[0], RANKED[1])], RANKED, list(zip(RANKED, RANKED)), right_for_the_lab):
        assert_fails_with_a_hint(exercises.check_ranking_pairs(lambda ranked, answer=answer: answer))
    assert_fails_with_a_hint(exercises.check_ranking_pairs(lambda ranked: ranked))


# ------------------------------------------------------------------ labs 00–04's notebook cells

NOTEBOOK_CELLS = {  # lab -> (id of the exercise cell, id of a cell it needs first, the function's name, check)
    "00_start_here.ipynb": ("exercise", None, "one_shot_prompt", exercises.check_few_shot_prompt,
                            lab00.solution_few_shot_prompt),
    "01_pretraining.ipynb": ("exercise", "exercise-data", "text_loss", exercises.check_text_loss,
                             lab01.solution_text_loss),
    "02_instruction_tuning.ipynb": ("exercise", None, "sft_labels", exercises.check_sft_labels,
                                    lab02.solution_sft_labels),
    "03_lora.ipynb": ("your-turn-lora-code", None, "lora_count", exercises.check_lora_count,
                      lab03.solution_lora_count),
    "04_reward_modelling.ipynb": ("your-turn-pairs-code", None, "ranking_pairs", exercises.check_ranking_pairs,
                                  lab04.solution_ranking_pairs),
}


def run_cell(lab, solution=None):
    """Execute the lab's exercise cell as shipped (or with the solution in place of `...`): (source, namespace)."""
    cell_id, before, _, _, _ = NOTEBOOK_CELLS[lab]
    cells = {c.get("id"): c.source for c in nbformat.read(LABS / lab, as_version=4).cells}
    source = cells[cell_id]
    assert source.count("return ...  # your code here") == 1
    if solution is not None:
        source = source.replace("return ...  # your code here", "return SOLUTION(*locals().values())")
    namespace = {"exercises": exercises, "SOLUTION": solution, "print": lambda *a, **k: None,
                 "prefs": prefs, "random": random}  # lab 04's cell prints the ranking it asks about
    if before:
        exec(cells[before], namespace)
    exec(compile(source, f"<{lab} exercise cell>", "exec"), namespace)
    return source, namespace


@pytest.mark.parametrize("lab", NOTEBOOK_CELLS)
def test_labs_00_to_04_cells_ship_unattempted_and_accept_the_solution(lab):
    _, _, function, check, solution = NOTEBOOK_CELLS[lab]
    source, shipped = run_cell(lab)
    assert source.strip().endswith(f"exercises.{check.__name__}({function})")
    assert check(shipped[function]).status == NOT_ATTEMPTED
    assert check(run_cell(lab, solution)[1][function]).status == RIGHT
