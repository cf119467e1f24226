"""The graded exercises of labs 00–02: each asks for a function, which the check calls on inputs of its own.

Solutions pass, the shipped `...` is not attempted, each usual mistake gets its own hint, no hint gives
the answer away, a function that ignores its input (or answers the lab's own case only) fails, and odd
answers get a hint, not a traceback."""
import json
import math

import pytest
import torch

from labkit import exercises, prompts
from labkit.exercises import lab00, lab01, lab02
from labkit.exercises.common import NOT_ATTEMPTED, RIGHT, WRONG
from labkit.tokenizer import train_tokenizer


def hint_of(verdict) -> str:
    assert verdict.status == WRONG, f"expected a hint, got {verdict}"
    return verdict.message


def raises(*args):
    raise KeyError("oops")


ODD_ANSWERS = ["forty-two", None, 3, 2.5, [], {"a": 1}, torch.zeros(2, 3), lambda *a: None, lambda *a: "text",
               lambda *a: 3, lambda *a: [[1, 2], [3]], lambda *a: {"a": 1}, lambda: 1, raises]


def test_each_lab_exports_its_check_and_keeps_its_solution():
    assert exercises.check_few_shot_prompt is lab00.check_few_shot_prompt
    assert exercises.check_text_loss is lab01.check_text_loss
    assert exercises.check_sft_labels is lab02.check_sft_labels
    assert set(lab00.SOLUTIONS) == {"few_shot_prompt"} and set(lab01.SOLUTIONS) == {"text_loss"}
    assert set(lab02.SOLUTIONS) == {"sft_labels"}


# --------------------------------------------------------------------------- lab 00: a one-shot prompt

def prompt(*changes):
    """The solution as a function of the query, with (index, key, value) changes applied."""
    def build(query):
        messages = [dict(m) for m in lab00.solution_few_shot_prompt(query)]
        for i, key, value in changes:
            messages[i][key] = value(query) if callable(value) else value
        return messages
    return build


def test_lab00_solution_is_right_and_placeholder_not_attempted():
    assert exercises.check_few_shot_prompt(lab00.solution_few_shot_prompt).status == RIGHT
    assert exercises.check_few_shot_prompt(...).status == NOT_ATTEMPTED
    assert exercises.check_few_shot_prompt(lambda query: ...).status == NOT_ATTEMPTED  # the cell's `return ...`
    # a tuple of messages, another confidence and extra spaces are fine too
    other = prompt((2, "content", prompts.answer_json("negative", 0.7, "thin and cold")),
                   (3, "content", lambda q: "  " + q))
    assert exercises.check_few_shot_prompt(lambda q: tuple(other(q))).status == RIGHT


def test_lab00_the_check_passes_reviews_of_its_own():
    assert lab00.QUERY in lab00._QUERIES and len(set(lab00._QUERIES)) >= 3
    assert lab00.SHOWN_QUERY not in lab00._QUERIES and lab00.EXAMPLE_REVIEW not in lab00._QUERIES


LAB00_MISTAKES = {
    "one string": (lambda q: prompts.SYSTEM + " " + lab00.EXAMPLE_REVIEW + " " + q, "a *list* of messages"),
    "content a dict": (prompt((2, "content", {"label": "negative", "confidence": 0.9, "evidence": "thin and cold"})),
                       "prompts.answer_json"),
    "extra key": (prompt((0, "name", "narrator")), 'exactly two keys, "role" and "content"'),
    "unknown role": (prompt((1, "role", "human")), "'human' is not one"),
    "answered the query": (lambda q: prompt()(q) + [{"role": "assistant",
                                                     "content": prompts.answer_json("neutral", 0.5, "the")}],
                           "ends with an assistant turn"),
    "no system": (lambda q: prompt()(q)[1:], "start with a system message"),
    "two examples in a row": (lambda q: prompt()(q)[:3] + prompt()(q)[1:], "four messages, in this order"),
    "the lab's list, whatever the review": (lambda q: lab00.solution_few_shot_prompt(lab00.QUERY),
                                            "same prompt whatever review"),
    "swapped reviews": (prompt((1, "content", lambda q: q), (3, "content", lab00.EXAMPLE_REVIEW)), "swapped places"),
    "edited review": (prompt((1, "content", "the soup was thin and cold")), "exactly as given"),
    "empty system": (prompt((0, "content", "  ")), "system message is empty"),
    "not JSON": (prompt((2, "content", "negative")), "not valid JSON"),
    "evidence not quoted": (prompt((2, "content", prompts.answer_json("negative", 0.9, "awful soup"))),
                            "does not occur in the review"),
    "confidence above 1": (prompt((2, "content", prompts.answer_json("negative", 1.5, "thin and cold"))),
                           "confidence must be"),
    "wrong label": (prompt((2, "content", prompts.answer_json("neutral", 0.9, "thin and cold"))),
                    "read the example review again"),
}


@pytest.mark.parametrize("name", LAB00_MISTAKES)
def test_lab00_each_mistake_gets_its_own_hint(name):
    answer, expected = LAB00_MISTAKES[name]
    message = hint_of(exercises.check_few_shot_prompt(answer))
    assert expected in message
    others = [e for n, (_, e) in LAB00_MISTAKES.items() if n != name]
    assert not any(e in message for e in others), f"{name}: the hint should be its own: {message}"


def test_lab00_a_function_right_for_one_review_only_fails():
    right_once = lambda q: lab00.solution_few_shot_prompt(q) if q == lab00.QUERY else []  # noqa: E731
    assert exercises.check_few_shot_prompt(right_once).status == WRONG
    shown = lambda q: lab00.solution_few_shot_prompt(lab00.SHOWN_QUERY)  # noqa: E731 (the review a hint shows)
    assert "same prompt whatever review" in hint_of(exercises.check_few_shot_prompt(shown))


def test_lab00_the_old_list_answer_is_told_to_pass_a_function():
    message = hint_of(exercises.check_few_shot_prompt(lab00.solution_few_shot_prompt(lab00.QUERY)))
    assert "pass your function itself" in message and "check_few_shot_prompt(one_shot_prompt)" in message


def test_lab00_no_hint_gives_the_answer_away():
    answer = lab00.solution_few_shot_prompt(lab00.QUERY)[2]["content"]
    for wrong, _ in LAB00_MISTAKES.values():
        message = exercises.check_few_shot_prompt(wrong).message
        assert answer not in message and '"label": "negative"' not in message and "'negative'" not in message


@pytest.mark.parametrize("odd", ODD_ANSWERS + [lambda q: [None] * 4, lambda q: ["system", "user"]], ids=repr)
def test_lab00_odd_answers_get_a_hint(odd):
    verdict = exercises.check_few_shot_prompt(odd)
    assert verdict.status == WRONG and verdict.message.startswith("Hint: ")


def test_lab00_exercise_uses_a_negative_example_so_the_json_hint_shows_no_answer():
    # parse_sentiment's "not JSON" message shows an example object with label "positive": the worked
    # example must not be positive, or that hint would give the label away.
    assert lab00.EXAMPLE_LABEL != "positive"
    assert prompts.parse_sentiment(lab00.solution_few_shot_prompt(lab00.QUERY)[2]["content"],
                                   review=lab00.EXAMPLE_REVIEW)["label"] == lab00.EXAMPLE_LABEL


# --------------------------------------------------------------------------- lab 01: a text's loss

NATS = -(math.log(0.9) + math.log(0.25) + math.log(0.6)) / 3
BITS = NATS / math.log(2)


def test_lab01_worked_values():
    assert lab01.solution_text_loss(lab01.TEXT_LOSS_STEPS) == pytest.approx((NATS, BITS))
    assert round(NATS, 3) == 0.667 and round(BITS, 3) == 0.963
    assert lab01.solution_text_loss(lab01.SHOWN) == pytest.approx((math.log(8) / 2, 1.5))  # the hints' text


def test_lab01_solution_rounded_and_tensor_answers_are_right():
    assert exercises.check_text_loss(lab01.solution_text_loss).status == RIGHT
    rounded = lambda steps: tuple(round(x, 3) for x in lab01.solution_text_loss(steps))  # noqa: E731
    assert exercises.check_text_loss(rounded).status == RIGHT
    assert exercises.check_text_loss(lambda s: torch.tensor(lab01.solution_text_loss(s))).status == RIGHT
    assert exercises.check_text_loss(lambda s: [torch.tensor(x) for x in lab01.solution_text_loss(s)]).status == RIGHT
    assert exercises.check_text_loss(...).status == NOT_ATTEMPTED
    assert exercises.check_text_loss(lambda steps: ...).status == NOT_ATTEMPTED
    assert exercises.check_text_loss(lambda steps: (..., ...)).status == NOT_ATTEMPTED


def test_lab01_the_check_passes_texts_of_its_own_and_each_fools_the_favourite():
    texts = [case[0] for case in lab01._cases()]
    assert texts[0] == lab01.TEXT_LOSS_STEPS and len(texts) >= 3 and len({len(t) for t in texts}) >= 3
    assert lab01.SHOWN not in texts
    for text in texts + [lab01.SHOWN]:
        assert any(probs[truth] < max(probs.values()) for _, probs, truth in text)


def mean(xs):
    return sum(xs) / len(xs)


def p_true(steps):
    return [probs[truth] for _, probs, truth in steps]


def with_bits(nats_of):
    """A learner's function whose nats come from ``nats_of(steps)``; bits converted right."""
    return lambda steps: (nats_of(steps), nats_of(steps) / math.log(2))


def right_nats(steps):
    return lab01.solution_text_loss(steps)[0]


LAB01_MISTAKES = {
    "one left blank": (lambda s: (right_nats(s), ...), "fill in both"),
    "one number": (right_nats, "return two numbers"),
    "strings": (lambda s: ("0.5", "0.7"), "plain numbers"),
    "None inside": (lambda s: (None, 1.0), "plain numbers"),
    "a list inside": (lambda s: ([0.1, 0.2], 1.0), "plain numbers"),
    "typed-in numbers": (lambda s: (0.667, 0.963), "same numbers for every text"),
    "the lab's text, whatever steps": (lambda s: lab01.solution_text_loss(lab01.TEXT_LOSS_STEPS),
                                       "same numbers for every text"),
    "swapped": (lambda s: lab01.solution_text_loss(s)[::-1], "swapped places"),
    "minus sign": (lambda s: tuple(-x for x in lab01.solution_text_loss(s)), "never negative"),
    "sum": (with_bits(lambda s: sum(-math.log(p) for p in p_true(s))), "the sum over the positions"),
    "log base 2": (lambda s: (mean([-math.log2(p) for p in p_true(s)]),) * 2, "that is the loss in bits"),
    "log base 10": (with_bits(lambda s: mean([-math.log10(p) for p in p_true(s)])), "math.log10"),
    "favourite": (with_bits(lambda s: mean([-math.log(max(probs.values())) for _, probs, _ in s])),
                  "the model's favourite"),
    "mean of p": (with_bits(lambda s: -math.log(mean(p_true(s)))), "averaged the probabilities"),
    "every candidate": (with_bits(lambda s: mean([sum(-math.log(p) for p in probs.values()) for _, probs, _ in s])),
                        "over every candidate"),
    "other nats": (with_bits(lambda s: 1.0 + len(s)), "work position by position"),
    "bits not converted": (lambda s: (right_nats(s), right_nats(s)), "still holds the value in nats"),
    "multiplied by ln 2": (lambda s: (right_nats(s), right_nats(s) * math.log(2)), "rather than multiply"),
    "other bits": (lambda s: (right_nats(s), 2.0), "bits = nats ÷ ln 2"),
}


@pytest.mark.parametrize("name", LAB01_MISTAKES)
def test_lab01_each_mistake_gets_its_own_hint(name):
    answer, expected = LAB01_MISTAKES[name]
    message = hint_of(exercises.check_text_loss(answer))
    assert expected in message
    others = [e for n, (_, e) in LAB01_MISTAKES.items() if n != name and e != expected]
    assert not any(e in message for e in others), f"{name}: the hint should be its own: {message}"


def test_lab01_a_wrong_function_is_shown_the_right_loss_of_a_text_it_was_not_checked_on():
    message = hint_of(exercises.check_text_loss(LAB01_MISTAKES["other nats"][0]))
    assert "1.040 nats and 1.500 bits" in message and "yours gives (3.000, 4.328)" in message


def test_lab01_no_hint_gives_the_answer_away():
    hidden = [lab01.solution_text_loss(*case) for case in lab01._cases()]
    for answer, _ in LAB01_MISTAKES.values():
        message = exercises.check_text_loss(answer).message.split("; yours gives")[0]  # not what they returned
        for value in [x for pair in hidden for x in pair]:
            assert f"{value:.2f}" not in message and f"{value:.3f}"[1:] not in message


@pytest.mark.parametrize("odd", ODD_ANSWERS + [lambda s: (1.0, 2.0, 3.0), lambda s: s], ids=repr)
def test_lab01_odd_answers_get_a_hint(odd):
    verdict = exercises.check_text_loss(odd)
    assert verdict.status == WRONG and verdict.message.startswith("Hint: ")


# --------------------------------------------------------------------------- lab 02: the labels SFT trains on

CHAT = lab02.CHAT
TOK = train_tokenizer(m["content"] for m in CHAT)
IDS = TOK.apply_chat_template(CHAT, tokenize=True, return_dict=True)["input_ids"]
TOKENS = TOK.convert_ids_to_tokens(IDS)


def test_lab02_solution_keeps_each_reply_and_its_end():
    labels = lab02.solution_sft_labels(IDS, TOKENS)
    # by hand: every token after an <|assistant|> marker, up to and including the <|end|> that closes it
    kept, in_reply = [], False
    for t, token in enumerate(TOKENS):
        if in_reply:
            kept.append(t)
            in_reply = token != "<|end|>"
        in_reply = in_reply or token == "<|assistant|>"
    assert labels == [i if t in kept else -100 for t, i in enumerate(IDS)]
    assert [TOKENS[t] for t in kept].count("<|end|>") == 2 and "<|assistant|>" not in [TOKENS[t] for t in kept]
    assert exercises.check_sft_labels(lab02.solution_sft_labels).status == RIGHT
    assert exercises.check_sft_labels(lambda i, t: torch.tensor(lab02.solution_sft_labels(i, t))).status == RIGHT
    assert exercises.check_sft_labels(...).status == NOT_ATTEMPTED
    assert exercises.check_sft_labels(lambda ids, tokens: ...).status == NOT_ATTEMPTED


def test_lab02_the_check_passes_chats_of_its_own():
    chats = lab02._CHATS
    assert chats[0] == CHAT and len(chats) >= 3 and lab02.SHOWN not in chats
    replies = [sum(m["role"] == "assistant" for m in chat) for chat in chats]
    assert min(replies) == 1 and max(replies) >= 3 and any(m["role"] == "system" for chat in chats for m in chat)
    for ids, tokens in lab02._cases():
        assert lab02._tokenizer().unk_token not in tokens


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")  # raised inside TRL
def test_lab02_solution_equals_the_labels_trl_builds(tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from labkit import models

    model = models.build_model(models.tiny_llama_config(len(TOK), 16, 1, 2, 24, 64, tokenizer=TOK), seed=0)
    args = SFTConfig(output_dir=str(tmp_path), assistant_only_loss=True, report_to=[], use_cpu=True,
                     dataloader_pin_memory=False, disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list([{"messages": CHAT}]),
                         processing_class=TOK)
    labels = trainer.data_collator([trainer.train_dataset[0]])["labels"][0].tolist()
    assert labels == lab02.solution_sft_labels(IDS, TOKENS)


def masked(keep):
    """A learner's function: labels that keep ``ids[t]`` where ``keep(tokens, right, t)`` is true, −100 elsewhere."""
    def labels(ids, tokens):
        right = lab02.solution_sft_labels(ids, tokens)
        return [i if keep(tokens, right, t) else -100 for t, i in enumerate(ids)]
    return labels


def in_reply(tokens, right, t):
    return right[t] != -100


def first_reply_only(ids, tokens):
    right = lab02.solution_sft_labels(ids, tokens)
    first_end = next(t for t in range(len(ids)) if right[t] != -100 and tokens[t] == "<|end|>")
    return [label if t <= first_end else -100 for t, label in enumerate(right)]


LAB02_MISTAKES = {
    "a string": (lambda ids, tokens: " ".join(tokens), "list of whole numbers"),
    "token strings": (lambda ids, tokens: tokens, "list of whole numbers"),
    "the lab's labels, whatever the chat": (lambda ids, tokens: lab02.solution_sft_labels(IDS, TOKENS),
                                            "same labels for every chat"),
    "shifted left": (lambda ids, tokens: lab02.solution_sft_labels(ids, tokens)[1:] + [-100], "don't shift"),
    "shifted right": (lambda ids, tokens: [-100] + lab02.solution_sft_labels(ids, tokens)[:-1], "don't shift"),
    "too short": (lambda ids, tokens: lab02.solution_sft_labels(ids, tokens)[:-3], "one label per token"),
    "no mask": (lambda ids, tokens: list(ids), "every token keeps its id"),
    "the mask": (lambda ids, tokens: [int(x != -100) for x in lab02.solution_sft_labels(ids, tokens)],
                 "that is the 0/1 mask"),
    "inverted": (masked(lambda tok, right, t: not in_reply(tok, right, t)), "other way round"),
    "zero filler": (lambda ids, tokens: [0 if x == -100 else x for x in lab02.solution_sft_labels(ids, tokens)],
                    "must hold −100"),
    "window one early": (masked(lambda tok, right, t: (in_reply(tok, right, t) and tok[t] != "<|end|>")
                                or tok[t] == "<|assistant|>"), "starts one token early"),
    "marker kept": (masked(lambda tok, right, t: in_reply(tok, right, t) or tok[t] == "<|assistant|>"),
                    "marker is part of the prompt"),
    "end dropped": (masked(lambda tok, right, t: in_reply(tok, right, t) and tok[t] != "<|end|>"), "learns to stop"),
    "every end": (masked(lambda tok, right, t: in_reply(tok, right, t) or tok[t] == "<|end|>"),
                  "closing the user's messages"),
    "first reply only": (first_reply_only, "more than one assistant reply"),
    "nothing kept": (lambda ids, tokens: [-100] * len(ids), "compare position by position"),
}


@pytest.mark.parametrize("name", LAB02_MISTAKES)
def test_lab02_each_mistake_gets_its_own_hint(name):
    answer, expected = LAB02_MISTAKES[name]
    message = hint_of(exercises.check_sft_labels(answer))
    assert expected in message
    others = [e for n, (_, e) in LAB02_MISTAKES.items() if n != name and e != expected]
    assert not any(e in message for e in others), f"{name}: the hint should be its own: {message}"


def test_lab02_a_wrong_function_is_shown_the_right_labels_of_a_chat_it_was_not_checked_on():
    message = hint_of(exercises.check_sft_labels(LAB02_MISTAKES["nothing kept"][0]))
    assert "<|assistant|> [at] [the] [mill] [.] [<|end|>]" in message
    assert "Your labels count on: <s> <|user|> where is tom ? <|end|> <|assistant|> at the mill . <|end|>" in message


def test_lab02_no_hint_gives_the_answer_away():
    hidden = [lab02.solution_sft_labels(*case) for case in lab02._cases()]
    for answer, _ in LAB02_MISTAKES.values():
        message = exercises.check_sft_labels(answer).message
        for right in hidden:
            kept = [label for label in right if label != -100]
            assert str(right)[1:-1] not in message and str(kept)[1:-1] not in message
            assert json.dumps(right) not in message


@pytest.mark.parametrize("odd", ODD_ANSWERS + [lambda i, t: [1.5] * len(i), lambda i, t: [True] * len(i)], ids=repr)
def test_lab02_odd_answers_get_a_hint(odd):
    verdict = exercises.check_sft_labels(odd)
    assert verdict.status == WRONG and verdict.message.startswith("Hint: ")
