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
