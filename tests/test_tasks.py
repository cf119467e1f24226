"""Instruction tasks: deterministic, checkable answers, words the tokenizer knows."""
import json
import re

import pytest

from labkit import world
from labkit.world import tasks


def test_same_index_same_example_and_splits_differ():
    assert tasks.task_example("extract", "train", 3) == tasks.task_example("extract", "train", 3)
    assert tasks.task_example("extract", "train", 3) != tasks.task_example("extract", "test", 3)


def test_unknown_category_or_split_is_a_clear_error():
    with pytest.raises(ValueError, match="classify"):
        tasks.task_example("poetry", "train", 0)
    with pytest.raises(ValueError, match="validation"):
        tasks.task_example("classify", "dev", 0)


def test_every_word_is_in_the_world_vocabulary():
    vocab = set(world.vocabulary())
    for ex in tasks.task_split("train", 60):
        for message in ex["messages"]:
            assert set(message["content"].split()) <= vocab, message["content"]


def test_sentiment_answers_are_valid_json_quoting_the_review():
    for ex in tasks.task_split("validation", 50, categories=("classify",)):
        answer = tasks.parse_json_answer(ex["answer"])
        assert answer is not None and answer["label"] in {"positive", "negative", "neutral"}
        assert f' was "{answer["evidence"]}" .' in ex["messages"][0]["content"]
        assert json.loads(ex["answer"]) == answer
    assert tasks.parse_json_answer('{ "label" : "positive" }') is None
    assert tasks.parse_json_answer("not json") is None


def test_arithmetic_answers_are_right():
    for ex in tasks.task_split("test", 50, categories=("arithmetic",)):
        a, op, b, result = re.match(r"(\d+) ([+-]) (\d+) = (\d+) \. the answer is \4 \.$", ex["answer"]).groups()
        assert int(result) == (int(a) + int(b) if op == "+" else int(a) - int(b))


def test_closed_qa_answer_comes_from_the_world_story():
    ex = tasks.task_example("closed_qa", "train", 0)
    prompt = ex["messages"][0]["content"]
    story = prompt.split("story : ")[1].split(" question : ")[0]
    question = prompt.split(" question : ")[1]
    # The world itself wrote "question : ... answer : ..." after this story: replaying confirms it.
    assert world.score_text(f"{story} question : {question} answer : {ex['answer']}").nll > 0


def test_extract_lists_every_place_visited_in_order():
    examples = tasks.task_split("test", 60, categories=("extract",))
    for ex in examples:
        story = ex["messages"][0]["content"].split("story : ")[1]
        places = re.findall(r"went to the (\w+)", story)
        assert ex["answer"] == (" , ".join(places) if places else "none")
    share_none = sum(ex["answer"] == "none" for ex in examples) / len(examples)
    assert 0.05 < share_none < 0.4  # some stories have nobody going anywhere, most do


def test_wrong_answers_replace_the_requested_share_with_fluent_wrong_ones():
    rows = tasks.task_split("train", 100, categories=("rewrite", "arithmetic"))
    noisy = tasks.with_wrong_answers(rows, 0.4, seed=1)
    changed = [n for r, n in zip(rows, noisy) if n["noisy"]]
    assert 0.3 < len(changed) / len(rows) < 0.5
    for r, n in zip(rows, noisy):
        assert n["category"] == r["category"] and n["messages"][0] == r["messages"][0]
        assert (n["answer"] != r["answer"]) == n["noisy"] and n["messages"][1]["content"] == n["answer"]
    assert all(not n["noisy"] for n in tasks.with_wrong_answers(rows, 0.0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tasks.with_wrong_answers(rows, 1.5)


def test_mixture_follows_the_shares():
    rows = tasks.task_mixture("train", 200, {"arithmetic": 0.9, "classify": 0.1})
    counts = {c: sum(r["category"] == c for r in rows) for c in ("arithmetic", "classify")}
    assert counts == {"arithmetic": 180, "classify": 20}
    with pytest.raises(ValueError, match="non-negative"):
        tasks.task_mixture("train", 10, {"arithmetic": -1.0})


def test_ambiguous_brainstorm_uses_two_conventions():
    rows = tasks.ambiguous_brainstorm("train", 6, clear=False)
    assert [r["convention"] for r in rows] == ["shop", "alphabetical"] * 3
    alphabetical = rows[1]["answer"].split(" , ")
    assert alphabetical == sorted(alphabetical)
    assert rows[1]["messages"][0]["content"].startswith("name the goods sold at the")
    clear = tasks.ambiguous_brainstorm("train", 6, clear=True)
    assert clear[1]["messages"][0]["content"].startswith("list the goods sold at the")
    assert clear[0]["messages"] == rows[0]["messages"]


def test_shifted_arithmetic_is_outside_the_training_range():
    for row in tasks.shifted_arithmetic("test", 30):
        have, less, result = map(int, re.match(r"(\d+) - (\d+) = (\d+)", row["answer"]).groups())
        assert 10 <= have <= 19 and result == have - less
    for row in tasks.task_split("train", 200, categories=("arithmetic",)):
        assert int(row["answer"].split()[0]) <= 9


def test_open_brainstorm_is_the_preference_task_with_imperfect_answers():
    from labkit.world import preferences as prefs

    rows = tasks.task_mixture("train", 400, {"open_brainstorm": 1.0})
    heldout = {p["prompt"][0]["content"] for p in prefs.alignment_prompts("heldout")}
    assert all(r["category"] == "open_brainstorm" and r["messages"][0]["content"] not in heldout for r in rows)
    gold = [prefs.gold_reward(r["place"], r["answer"], r["count"]) for r in rows]
    best = [prefs.best_gold_reward(r["place"], r["count"]) for r in rows]
    assert sum(g == b for g, b in zip(gold, best)) < 0.2 * len(rows)  # demonstrators are rarely perfect
    assert tasks.task_example("open_brainstorm", "test", 0)["messages"][0]["content"] in heldout
    # the exact brainstorm of lab 02's demonstrations is unchanged: the shop's goods in order
    assert tasks.task_example("brainstorm", "train", 0)["answer"].count(" , ") == 4
    assert tasks.exact_categories(["classify", "open_brainstorm", "brainstorm"]) == ("classify", "brainstorm")
