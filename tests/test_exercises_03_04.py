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
    assert set(lab03.SOLUTIONS) == {"lora_count"} and set(lab04.SOLUTIONS) == set(lab04.__all__)


# ------------------------------------------------------------------ lab 03: LoRA parameter count

M, N, R = lab03.LAYER["m"], lab03.LAYER["n"], lab03.LAYER["r"]
LORA_COUNT = R * (M + N)  # 241,664
HIDDEN_COUNTS = [r * (m + n) for m, n, r in lab03._cases()]


@pytest.mark.parametrize("form", ["int", "tensor", "float", "numpy"])
def test_lab03_the_solution_is_right_in_any_number_type(form):
    import numpy as np

    wrap = {"int": int, "tensor": torch.tensor, "float": float, "numpy": np.int64}[form]
    assert exercises.check_lora_count(lambda m, n, r: wrap(lab03.solution_lora_count(m, n, r))).status == RIGHT


def test_lab03_the_lecture_layer_and_the_lab_layer_give_the_known_counts():
    assert lab03.solution_lora_count(5, 4, 2) == 18 and lab03.solution_lora_count(M, N, R) == LORA_COUNT == 241_664
    assert lab03.solution_lora_count(4096, 4096, 8) == 65_536
    assert "241,664 numbers" in exercises.check_lora_count(lab03.solution_lora_count).message


def test_lab03_the_check_tries_layers_of_its_own():
    layers = lab03._cases()
    assert (M, N, R) in layers and lab03.SHOWN not in layers and len(set(HIDDEN_COUNTS)) == len(layers)
    assert any(m == n for m, n, _ in layers) and any(m > n for m, n, _ in layers) and len({r for *_, r in layers}) >= 4


def test_lab03_the_shipped_placeholder_is_not_attempted():
    verdict = exercises.check_lora_count(...)
    assert verdict.status == NOT_ATTEMPTED and not verdict
    assert exercises.check_lora_count(lambda m, n, r: ...).status == NOT_ATTEMPTED


def slip(kind):
    return lambda m, n, r: lab03._variant(kind, m, n, r)


LORA_SLIPS = {
    "the full update m·n": (slip("full"), "size of the full update"),
    "frozen weight added": (slip("frozen weight added"), "added the frozen weight"),
    "the saving instead of the count": (slip("saving"), "how many fewer"),
    "only L": (slip("only L"), "one factor only"),
    "only R": (slip("only R"), "one factor only"),
    "square, input side": (slip("square, input side"), "treated the layer as square"),
    "square, output side": (slip("square, output side"), "treated the layer as square"),
    "r²": (slip("r squared"), "no factor is r×r"),
    "r²·(m + n)": (slip("r squared times m + n"), "no factor is r×r"),
    "r·m·n": (slip("r·m·n"), "three-dimensional block"),
    "no rank": (slip("no rank"), "multiplied by the rank"),
    "the lecture's rank 8 typed in": (slip("fixed rank"), "the rank is not"),
    "a share, not a count": (lambda m, n, r: r * (m + n) / (m * n), "looks like a share"),
    "text": (lambda m, n, r: str(r * (m + n)), "returned text"),
    "negative": (lambda m, n, r: -r * (m + n), "positive whole number"),
    "a fraction": (lambda m, n, r: r * (m + n) + 0.5, "whole number"),
    "the lab's count typed in": (lambda m, n, r: LORA_COUNT, "same count for every layer"),
    "a number, not a function": (LORA_COUNT, "pass your function itself"),
}


@pytest.mark.parametrize("name", LORA_SLIPS, ids=str)
def test_lab03_each_slip_gets_its_own_hint(name):
    answer, expected = LORA_SLIPS[name]
    verdict = exercises.check_lora_count(answer)
    assert verdict.status == WRONG and expected in verdict.message, verdict.message


def test_lab03_hints_differ_between_slips():
    messages = {exercises.check_lora_count(a).message for a, _ in LORA_SLIPS.values()}
    assert len(messages) >= 15


def test_lab03_a_wrong_function_is_shown_the_lecture_layer_it_was_not_checked_on():
    message = exercises.check_lora_count(lambda m, n, r: m).message
    assert "lora_count(5, 4, 2) should give 18; yours gives 5" in message


def test_lab03_no_hint_gives_the_count_away():
    for answer in [a for a, _ in LORA_SLIPS.values()] + ODD + [lambda m, n, r: value for value in ODD]:
        message = exercises.check_lora_count(answer).message.split("; yours gives")[0]  # not what they returned
        flat = message.replace(",", "").replace(" ", "")
        assert not any(str(count) in flat for count in HIDDEN_COUNTS if count > 100), message
        assert "r·(m + n)" not in message and "r * (m + n)" not in message and "r(m + n)" not in message


@pytest.mark.parametrize("answer", ODD + [lambda m, n, r: value for value in ODD], ids=repr)
def test_lab03_odd_answers_get_a_hint_not_a_traceback(answer):
    verdict = exercises.check_lora_count(answer)
    assert verdict.status == WRONG and verdict.message.startswith("Hint: ")


def test_lab03_the_learner_no_longer_picks_the_layer():
    # the example: 18 is right for m=5, n=4, r=2 but the check does not take the learner's layer
    with pytest.raises(TypeError):
        exercises.check_lora_count(18, m=5, n=4, r=2)
    assert not exercises.check_lora_count(lambda m, n, r: 18)


# ------------------------------------------------------------------ lab 04: from a ranking to pairs

RANKED = prefs.ranking("harbor", 5, random.Random(1))  # the lab's ranking of five
SOLUTION = lab04.solution_ranking_pairs
HIDDEN = [ranked for (ranked,) in lab04._cases()]
SHOWN = prefs.ranking(lab04.SHOWN[0], lab04.SHOWN[1], random.Random(lab04.SHOWN[2]))  # section 2's `ranked`


def test_lab04_the_ranking_in_the_lab_is_five_different_answers():
    assert len(RANKED) == len(set(RANKED)) == 5 and len(SOLUTION(RANKED)) == math.comb(5, 2) == 10


def test_lab04_pairs_the_check_tries_rankings_of_its_own_the_labs_among_them():
    assert RANKED in HIDDEN and len(HIDDEN) >= 4
    assert len({len(r) for r in HIDDEN}) == len(HIDDEN)  # several lengths, each once
    assert min(map(len, HIDDEN)) == 2 and all(len(set(r)) == len(r) for r in HIDDEN)
    # the example a hint shows is section 2's bakery ranking, not one of the hidden ones
    assert SHOWN == prefs.ranking("bakery", 4, random.Random(0)) and SHOWN not in HIDDEN


@pytest.mark.parametrize("form", ["list", "reversed list", "set", "generator", "lists inside", "labkit's own",
                                  "itertools"])
def test_lab04_pairs_the_solution_is_right_in_any_order_and_container(form):
    import itertools

    answer = {"list": SOLUTION, "reversed list": lambda r: SOLUTION(r)[::-1], "set": lambda r: set(SOLUTION(r)),
              "generator": lambda r: (p for p in SOLUTION(r)), "lists inside": lambda r: [list(p) for p in SOLUTION(r)],
              "labkit's own": prefs.ranking_to_pairs, "itertools": lambda r: itertools.combinations(r, 2)}[form]
    assert exercises.check_ranking_pairs(answer).status == RIGHT


def test_lab04_pairs_the_shipped_placeholder_is_not_attempted():
    assert exercises.check_ranking_pairs(...).status == NOT_ATTEMPTED

    def ranking_pairs(ranked):
        return ...

    assert exercises.check_ranking_pairs(ranking_pairs).status == NOT_ATTEMPTED


def _swap(pairs):
    return [(b, a) for a, b in pairs]


PAIR_SLIPS = {
    "ordered pairs (both ways round)": (lambda r: SOLUTION(r) + _swap(SOLUTION(r)), "once each way round"),
    "every pair swapped": (lambda r: _swap(SOLUTION(r)), "every pair has the loser first"),
    "two pairs swapped": (lambda r: _swap(SOLUTION(r)[:2]) + SOLUTION(r)[2:], "some of your pairs have the loser"),
    "sorted by text, not by rank": (lambda r: [(a, b) for a in r for b in r if a < b], "loser first"),
    "a duplicate": (lambda r: SOLUTION(r) + SOLUTION(r)[:1], "more than once"),
    "an answer against itself": (lambda r: SOLUTION(r) + [(r[0], r[0])], "never compared with itself"),
    "neighbours only": (lambda r: list(zip(r, r[1:])), "only neighbours"),
    "the best against the rest only": (lambda r: [(r[0], x) for x in r[1:]], "only the best answer"),
    "the last answer left out": (lambda r: SOLUTION(r[:-1]), "comparisons are missing"),
    "missing and swapped": (lambda r: _swap(SOLUTION(r)[:3]), "loser first, and some comparisons are missing"),
    "positions instead of answers": (lambda r: SOLUTION(list(range(len(r)))), "exactly as they are written"),
    "triples": (lambda r: [tuple(r[:3])], "one pair"),
    "empty": (lambda r: [], "empty"),
    "one string": (lambda r: r[0], "returned text"),
    "the ranking itself": (lambda r: r, "hands back the ranking"),
    "the lab's ranking, whatever the input": (lambda r: SOLUTION(RANKED), "same pairs whatever ranking"),
    "five answers assumed": (lambda r: [(r[i], r[j]) for i in range(5) for j in range(i + 1, 5)], "len(ranked)"),
    "a dict": (lambda r: dict(SOLUTION(r)), "return a list of pairs"),
}


@pytest.mark.parametrize("slip", PAIR_SLIPS, ids=str)
def test_lab04_pairs_each_slip_gets_its_own_hint(slip):
    answer, expected = PAIR_SLIPS[slip]
    verdict = exercises.check_ranking_pairs(answer)
    assert verdict.status == WRONG and expected in verdict.message, verdict.message


def test_lab04_pairs_a_hint_shows_the_labs_example_and_what_the_function_gives_there():
    message = exercises.check_ranking_pairs(PAIR_SLIPS["neighbours only"][0]).message
    assert "section 2's ranking of four bakery answers" in message and "the 6 pairs in the table there" in message
    assert "yours gives 3, 3 of them in that table" in message


def test_lab04_pairs_no_hint_names_an_answer_or_a_pair():
    answers = {response for ranked in HIDDEN + [SHOWN] for response in ranked}
    for answer in [a for a, _ in PAIR_SLIPS.values()] + ODD + [lambda r, v=v: v for v in ODD]:
        message = exercises.check_ranking_pairs(answer).message
        assert not any(response in message for response in answers), message


@pytest.mark.parametrize("answer", ODD + [lambda r, v=v: v for v in ODD] + [lambda: 1, lambda r: 1 / 0], ids=repr)
def test_lab04_pairs_odd_answers_get_a_hint_not_a_traceback(answer):
    verdict = exercises.check_ranking_pairs(answer)
    assert verdict.status == WRONG and verdict.message.startswith("Hint: ")


def test_lab04_pairs_the_learners_function_cannot_change_the_hidden_rankings():
    def greedy(ranked):
        pairs = SOLUTION(ranked)
        ranked.clear()
        return pairs

    assert exercises.check_ranking_pairs(greedy).status == RIGHT
    assert [r for (r,) in lab04._cases()] == HIDDEN and all(HIDDEN)


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
