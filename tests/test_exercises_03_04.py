"""Labs 03 and 04's graded exercises: each solution is right, the shipped `...` is not attempted, each
typical slip gets its own hint, no hint gives the answer away, and odd answers get a hint, not a traceback."""
import math
import random

import pytest
import torch

from labkit import exercises, losses
from labkit.exercises import lab03, lab04
from labkit.exercises.common import NOT_ATTEMPTED, RIGHT, WRONG
from labkit.world import preferences as prefs

ODD = ["241664", None, [1, 2], {"a": 1}, True, float("nan"), object(), torch.zeros(3), -1.5, (1, 2)]
F = torch.nn.functional


def test_the_checks_and_solutions_are_exposed_and_paired():
    assert exercises.check_lora_count is lab03.check_lora_count
    assert exercises.check_ranking_pairs is lab04.check_ranking_pairs
    assert exercises.check_bradley_terry_loss is lab04.check_bradley_terry_loss
    assert set(lab03.SOLUTIONS) == set(lab03.__all__) and set(lab04.SOLUTIONS) == set(lab04.__all__)


# ------------------------------------------------------------------ lab 03: LoRA parameter count

M, N, R = lab03.LAYER["m"], lab03.LAYER["n"], lab03.LAYER["r"]
LORA_COUNT = R * (M + N)  # 241,664


@pytest.mark.parametrize("layer", [{}, {"m": 5, "n": 4, "r": 2}, {"m": 4096, "n": 4096, "r": 8}, {"m": 7, "n": 3, "r": 3}])
def test_lab03_the_solution_is_right_for_the_lab_layer_and_others(layer):
    answer = lab03.solution_lora_count(**layer)
    assert exercises.check_lora_count(answer, **layer).status == RIGHT
    assert exercises.check_lora_count(torch.tensor(answer), **layer)  # a one-element tensor counts too
    assert exercises.check_lora_count(float(answer), **layer)


def test_lab03_the_lecture_layer_and_the_default_layer_give_the_known_counts():
    assert lab03.solution_lora_count(5, 4, 2) == 18 and lab03.solution_lora_count() == LORA_COUNT == 241_664
    assert lab03.solution_lora_count(4096, 4096, 8) == 65_536


def test_lab03_the_shipped_placeholder_is_not_attempted():
    verdict = exercises.check_lora_count(...)
    assert verdict.status == NOT_ATTEMPTED and not verdict


LORA_SLIPS = {
    "the full update m·n": (M * N, "size of the full update"),
    "frozen weight added": (M * N + LORA_COUNT, "added the frozen weight"),
    "the saving instead of the count": (M * N - LORA_COUNT, "how many fewer"),
    "only L": (R * M, "one factor only"),
    "only R": (R * N, "one factor only"),
    "square, input side": (2 * R * M, "treated the layer as square"),
    "square, output side": (2 * R * N, "treated the layer as square"),
    "r²": (R * R, "no factor is r×r"),
    "r²·(m + n)": (R * R * (M + N), "no factor is r×r"),
    "r·m·n": (R * M * N, "three-dimensional block"),
    "no rank": (M + N, "multiplied by the rank"),
    "the lecture's rank 8": (8 * (M + N), "the rank is not"),
    "a share, not a count": (LORA_COUNT / (M * N), "looks like a share"),
    "text": (str(LORA_COUNT), "not as text"),
    "negative": (-LORA_COUNT, "positive whole number"),
    "a fraction": (LORA_COUNT + 0.5, "whole number"),
}


@pytest.mark.parametrize("slip", LORA_SLIPS, ids=str)
def test_lab03_each_slip_gets_its_own_hint(slip):
    answer, expected = LORA_SLIPS[slip]
    verdict = exercises.check_lora_count(answer)
    assert verdict.status == WRONG and expected in verdict.message, verdict.message


def test_lab03_hints_differ_between_slips():
    messages = {exercises.check_lora_count(a).message for a, _ in LORA_SLIPS.values()}
    assert len(messages) >= 11


def test_lab03_no_hint_gives_the_count_away():
    for answer in [a for a, _ in LORA_SLIPS.values()] + ODD:
        message = exercises.check_lora_count(answer).message
        assert "241664" not in message.replace(",", "").replace(" ", "") and "r·(m + n)" not in message, message
        assert "r * (m + n)" not in message and "r(m + n)" not in message


@pytest.mark.parametrize("answer", ODD, ids=repr)
def test_lab03_odd_answers_get_a_hint_not_a_traceback(answer):
    verdict = exercises.check_lora_count(answer)
    assert verdict.status == WRONG and verdict.message.startswith("Hint: ")


def test_lab03_a_layer_that_makes_no_sense_gets_a_hint():
    for layer in ({"m": 5, "n": 4, "r": 9}, {"m": 0, "n": 4, "r": 1}, {"m": "five", "n": 4, "r": 2}):
        verdict = exercises.check_lora_count(18, **layer)
        assert verdict.status == WRONG and "the layer does not work" in verdict.message


# ------------------------------------------------------------------ lab 04: from a ranking to pairs

RANKED = prefs.ranking("harbor", 5, random.Random(1))  # the lab's ranking of five
SOLUTION = lab04.solution_ranking_pairs(RANKED)


def test_lab04_the_ranking_in_the_lab_is_five_different_answers():
    assert len(RANKED) == len(set(RANKED)) == 5 and len(SOLUTION) == math.comb(5, 2) == 10


@pytest.mark.parametrize("form", ["list", "reversed list", "set", "generator", "lists inside", "labkit's own"])
def test_lab04_pairs_the_solution_is_right_in_any_order_and_container(form):
    answer = {"list": SOLUTION, "reversed list": SOLUTION[::-1], "set": set(SOLUTION),
              "generator": (p for p in SOLUTION), "lists inside": [list(p) for p in SOLUTION],
              "labkit's own": prefs.ranking_to_pairs(RANKED)}[form]
    assert exercises.check_ranking_pairs(answer, RANKED).status == RIGHT


def test_lab04_pairs_other_rankings_too():
    for k in (2, 3, 4, 6):
        ranked = [f"answer {i}" for i in range(k)]
        assert exercises.check_ranking_pairs(lab04.solution_ranking_pairs(ranked), ranked)
        assert len(lab04.solution_ranking_pairs(ranked)) == math.comb(k, 2)


def test_lab04_pairs_the_shipped_placeholder_is_not_attempted():
    assert exercises.check_ranking_pairs(..., RANKED).status == NOT_ATTEMPTED


PAIR_SLIPS = {
    "ordered pairs (both ways round)": (SOLUTION + [(b, a) for a, b in SOLUTION], "once each way round"),
    "every pair swapped": ([(b, a) for a, b in SOLUTION], "every pair has the loser first"),
    "two pairs swapped": ([(b, a) for a, b in SOLUTION[:2]] + SOLUTION[2:], "2 of your pairs have the loser first"),
    "a duplicate": (SOLUTION + SOLUTION[:1], "more than once"),
    "an answer against itself": (SOLUTION + [(RANKED[0], RANKED[0])], "never compared with itself"),
    "neighbours only": ([(RANKED[i], RANKED[i + 1]) for i in range(4)], "only neighbours"),
    "the best against the rest only": ([(RANKED[0], r) for r in RANKED[1:]], "only the best answer"),
    "pairs missing": (SOLUTION[:7], "comparisons are missing"),
    "positions instead of answers": ([(i, j) for i in range(5) for j in range(i + 1, 5)], "exactly as they are written"),
    "triples": ([tuple(RANKED[:3])], "one pair"),
    "empty": ([], "empty"),
    "one string": (RANKED[0], "give a list of pairs"),
    "missing and swapped": ([(b, a) for a, b in SOLUTION[:3]], "loser first"),
}


@pytest.mark.parametrize("slip", PAIR_SLIPS, ids=str)
def test_lab04_pairs_each_slip_gets_its_own_hint(slip):
    answer, expected = PAIR_SLIPS[slip]
    verdict = exercises.check_ranking_pairs(answer, RANKED)
    assert verdict.status == WRONG and expected in verdict.message, verdict.message


def test_lab04_pairs_no_hint_names_an_answer_or_a_pair():
    for answer in [a for a, _ in PAIR_SLIPS.values()] + ODD:
        message = exercises.check_ranking_pairs(answer, RANKED).message
        assert not any(response in message for response in RANKED), message


@pytest.mark.parametrize("answer", ODD, ids=repr)
def test_lab04_pairs_odd_answers_get_a_hint_not_a_traceback(answer):
    verdict = exercises.check_ranking_pairs(answer, RANKED)
    assert verdict.status == WRONG and verdict.message.startswith("Hint: ")


@pytest.mark.parametrize("ranked", [None, "abc", [], ["same", "same"], [["unhashable"], ["lists"]]], ids=repr)
def test_lab04_pairs_a_broken_ranking_gets_a_hint(ranked):
    verdict = exercises.check_ranking_pairs(SOLUTION, ranked)
    assert verdict.status == WRONG and "at least two different answers" in verdict.message


# ------------------------------------------------------------------ lab 04: the Bradley–Terry loss

def test_lab04_loss_the_solution_is_right_and_equals_labkits_loss():
    assert exercises.check_bradley_terry_loss(lab04.solution_bradley_terry_loss).status == RIGHT
    chosen, rejected = torch.tensor([1.0, -0.5, 2.0]), torch.tensor([0.0, 0.5, 2.5])
    assert torch.equal(lab04.solution_bradley_terry_loss(chosen, rejected), losses.bradley_terry_loss(chosen, rejected))


@pytest.mark.parametrize("name", ["naive log of sigmoid", "softplus", "a float", "a 1-element list", "numpy-free loop"])
def test_lab04_loss_other_right_ways_are_right(name):
    function = {
        "naive log of sigmoid": lambda c, r: -torch.log(torch.sigmoid(c - r)).mean(),
        "softplus": lambda c, r: F.softplus(r - c).mean(),
        "a float": lambda c, r: float(-F.logsigmoid(c - r).mean()),
        "a 1-element list": lambda c, r: [float(-F.logsigmoid(c - r).mean())],
        "numpy-free loop": lambda c, r: sum(math.log(1 + math.exp(-(a - b))) for a, b in zip(c.tolist(), r.tolist()))
        / len(c),
    }[name]
    assert exercises.check_bradley_terry_loss(function).status == RIGHT


def test_lab04_loss_the_shipped_placeholder_is_not_attempted():
    def shipped(r_chosen, r_rejected):
        return ...

    assert exercises.check_bradley_terry_loss(shipped).status == NOT_ATTEMPTED
    assert exercises.check_bradley_terry_loss(...).status == NOT_ATTEMPTED


LOSS_SLIPS = {
    "one loss per pair": (lambda c, r: -F.logsigmoid(c - r), "one loss per pair"),
    "summed": (lambda c, r: -F.logsigmoid(c - r).sum(), "summed over the pairs"),
    "no minus sign": (lambda c, r: F.logsigmoid(c - r).mean(), "check the sign"),
    "winner and loser swapped": (lambda c, r: -F.logsigmoid(r - c).mean(), "*rejected* answer scores higher"),
    "swapped and no minus": (lambda c, r: F.logsigmoid(r - c).mean(), "two slips"),
    "no log": (lambda c, r: -torch.sigmoid(c - r).mean(), "the log is missing"),
    "one minus sigma": (lambda c, r: (1 - torch.sigmoid(c - r)).mean(), "not one minus a probability"),
    "no sigmoid, no log": (lambda c, r: -(c - r).mean(), "the sigmoid and the log are missing"),
    "log without the sigmoid": (lambda c, r: -torch.log(c - r).mean(), "not a finite number"),
    "log base 2": (lambda c, r: -torch.log2(torch.sigmoid(c - r)).mean(), "log base 2"),
    "log base 10": (lambda c, r: -torch.log10(torch.sigmoid(c - r)).mean(), "log base 10"),
    "no return": (lambda c, r: None, "returns nothing"),
    "not a function": (0.69, "pass the function itself"),
    "python maths on tensors": (lambda c, r: -math.log(1 / (1 + math.exp(-(c - r)))), "raised"),
}


@pytest.mark.parametrize("slip", LOSS_SLIPS, ids=str)
def test_lab04_loss_each_slip_gets_its_own_hint(slip):
    answer, expected = LOSS_SLIPS[slip]
    verdict = exercises.check_bradley_terry_loss(answer)
    assert verdict.status == WRONG and expected in verdict.message, verdict.message


def test_lab04_loss_no_hint_gives_the_code_away():
    for answer in [a for a, _ in LOSS_SLIPS.values()] + ODD:
        message = exercises.check_bradley_terry_loss(answer).message
        assert "logsigmoid" not in message and ".mean()" not in message and "torch.log(" not in message, message


@pytest.mark.parametrize("answer", ODD + [lambda c, r: "x", lambda c, r: torch.zeros(2, 2), lambda c: c],
                         ids=lambda a: "function" if callable(a) else repr(a))
def test_lab04_loss_odd_answers_get_a_hint_not_a_traceback(answer):
    verdict = exercises.check_bradley_terry_loss(answer)
    assert verdict.status == WRONG and verdict.message.startswith("Hint: ")


def test_lab04_loss_the_learners_function_cannot_change_the_hidden_rewards():
    def in_place(c, r):
        c.sub_(r)  # a slip that would corrupt the check's own inputs if it handed them over
        return -F.logsigmoid(c).mean()

    assert exercises.check_bradley_terry_loss(in_place).status == RIGHT
    assert exercises.check_bradley_terry_loss(lab04.solution_bradley_terry_loss).status == RIGHT
