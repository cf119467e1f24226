"""Every worked number of labs 00 and 01, asserted exactly as the notebooks show it."""
import json
import math

import pytest

from labkit import prompts
from labkit.losses import nats_to_bits, nll
from labkit.metrics import storage_arithmetic


def test_cross_entropy_of_the_force_example():
    # "May the force be" -> "with" at 0.51 (on 0.21, in 0.13)
    assert round(nll(0.51), 3) == 0.673
    assert round(nll(0.21), 3) == 1.561
    # the one-hot sum -Σ y_i ln p_i keeps only the correct token's term
    probs, target = {"with": 0.51, "on": 0.21, "in": 0.13}, "with"
    full = -sum((word == target) * math.log(p) for word, p in probs.items())
    assert full == pytest.approx(nll(0.51))
    assert nll(1.0) == 0.0
    with pytest.raises(ValueError):
        nll(0.0)


def test_nats_to_bits_and_the_gpt3_back_of_envelope():
    assert round(nats_to_bits(1.9), 2) == 2.74
    gpt3 = storage_arithmetic(500e9, 1.9, 175e9)
    assert round(gpt3["bits_per_token"], 2) == 2.74
    assert round(gpt3["data_gigabytes"]) == 171
    assert round(gpt3["model_gigabytes"]) == 350
    assert gpt3["model_gigabytes"] > gpt3["data_gigabytes"]  # room, in principle, to memorise


def test_training_memory_table_of_lab00():
    from labkit.metrics import training_memory_gigabytes

    # weight + gradient + two AdamW moments, 4 bytes each
    assert training_memory_gigabytes(7e9) == pytest.approx(112.0)
    assert training_memory_gigabytes(175e9) == pytest.approx(2800.0)
    assert training_memory_gigabytes(135e6) == pytest.approx(2.16)
    assert training_memory_gigabytes(7e9, bytes_per_value=2) == pytest.approx(56.0)


def test_few_shot_prompt_layout_and_answers():
    messages = prompts.few_shot_sentiment_messages()
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert messages[-1]["content"] == prompts.DEFAULT_QUERY
    parsed = [prompts.parse_sentiment(a["content"], review=u["content"])
              for u, a in zip(messages[1::2], messages[2::2])]
    assert [(p["label"], p["confidence"]) for p in parsed] == [
        ("positive", 0.93), ("negative", 0.88), ("neutral", 0.71)]
    assert [p["evidence"] for p in parsed] == ["fresh and sweet", "old and cold", "i bought three buns"]
    for m in messages[1::2]:  # reviews are written like the world: lowercase words split by spaces
        assert m["content"] == m["content"].lower() and "  " not in m["content"]
    assert prompts.few_shot_sentiment_messages("the kite was red")[-1] == {"role": "user",
                                                                          "content": "the kite was red"}


@pytest.mark.parametrize("text, message", [
    ("positive", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"label": "positive", "confidence": 0.9}', "missing"),
    ('{"label": "great", "confidence": 0.9, "evidence": "fresh"}', "label"),
    ('{"label": "positive", "confidence": 1.7, "evidence": "fresh"}', "confidence"),
    ('{"label": "positive", "confidence": -0.1, "evidence": "fresh"}', "confidence"),
    ('{"label": "positive", "confidence": true, "evidence": "fresh"}', "confidence"),
    ('{"label": "positive", "confidence": "high", "evidence": "fresh"}', "confidence"),
    ('{"label": "positive", "confidence": 0.9, "evidence": ""}', "evidence"),
    ('{"label": "positive", "confidence": 0.9, "evidence": "delicious"}', "does not occur"),
])
def test_bad_sentiment_answers_raise_a_clear_error(text, message):
    with pytest.raises(ValueError, match=message):
        prompts.parse_sentiment(text, review="the cake was fresh and sweet")


def test_parse_sentiment_accepts_the_edges_and_whole_words_only():
    assert prompts.parse_sentiment(prompts.answer_json("neutral", 0, "cake"))["confidence"] == 0.0
    assert prompts.parse_sentiment(prompts.answer_json("neutral", 1, "cake"))["confidence"] == 1.0
    with pytest.raises(ValueError, match="does not occur"):  # "ake" is inside "cake" but not a word
        prompts.parse_sentiment(json.dumps({"label": "neutral", "confidence": 0.5, "evidence": "ake"}),
                                review="the cake")


def test_chat_template_and_mask_of_the_few_shot_prompt():
    from labkit.tokenizer import assistant_mask, train_tokenizer

    messages = prompts.few_shot_sentiment_messages()
    tokenizer = train_tokenizer(m["content"] for m in messages)
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    mask = assistant_mask(tokenizer, messages)
    assert len(ids) == len(mask) == 137 and sum(mask) == 28
    assert tokenizer.unk_token_id not in ids
    shown = prompts.show_mask(tokenizer.convert_ids_to_tokens(ids), mask)
    assert shown.splitlines()[2] == ('<|assistant|> [{"label":] ["positive",] ["confidence":] [0.93,] '
                                     '["evidence":] ["fresh] [and] [sweet"}] [<|end|>]')
