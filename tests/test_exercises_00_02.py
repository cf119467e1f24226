"""The graded exercises of labs 00–02: solutions pass, the shipped `...` is not attempted, each usual
mistake gets its own hint, no hint gives the answer away, and odd answers get a hint, not a traceback."""
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


ODD_ANSWERS = ["forty-two", None, 3, 2.5, [], [[1, 2], [3]], {"a": 1}, torch.zeros(2, 3)]


def test_each_lab_exports_its_check_and_keeps_its_solution():
    assert exercises.check_few_shot_prompt is lab00.check_few_shot_prompt
    assert exercises.check_text_loss is lab01.check_text_loss
    assert exercises.check_sft_labels is lab02.check_sft_labels
    assert set(lab00.SOLUTIONS) == {"few_shot_prompt"} and set(lab01.SOLUTIONS) == {"text_loss"}
    assert set(lab02.SOLUTIONS) == {"sft_labels"}


# --------------------------------------------------------------------------- lab 00: a one-shot prompt

def prompt(*changes):
    """The solution with (index, key, value) changes applied."""
    messages = [dict(m) for m in lab00.solution_few_shot_prompt()]
    for i, key, value in changes:
        messages[i][key] = value
    return messages


def test_lab00_solution_is_right_and_placeholder_not_attempted():
    assert exercises.check_few_shot_prompt(lab00.solution_few_shot_prompt()).status == RIGHT
    assert exercises.check_few_shot_prompt(...).status == NOT_ATTEMPTED
    # a tuple of messages, another confidence and extra spaces are fine too
    other = prompt((2, "content", prompts.answer_json("negative", 0.7, "thin and cold")),
                   (3, "content", "  " + lab00.QUERY))
    assert exercises.check_few_shot_prompt(tuple(other)).status == RIGHT


LAB00_MISTAKES = {
    "one string": (prompts.SYSTEM + " " + lab00.EXAMPLE_REVIEW, "a *list* of messages"),
    "content a dict": (prompt((2, "content", {"label": "negative", "confidence": 0.9, "evidence": "thin and cold"})),
                       "prompts.answer_json"),
    "extra key": (prompt((0, "name", "narrator")), 'exactly two keys, "role" and "content"'),
    "unknown role": (prompt((1, "role", "human")), "'human' is not one"),
    "answered the query": (prompt() + [{"role": "assistant", "content": prompts.answer_json("neutral", 0.5, "warm")}],
                           "ends with an assistant turn"),
    "no system": (prompt()[1:], "start with a system message"),
    "two examples in a row": (prompt()[:3] + prompt()[1:], "four messages, in this order"),
    "swapped reviews": (prompt((1, "content", lab00.QUERY), (3, "content", lab00.EXAMPLE_REVIEW)), "swapped places"),
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


def test_lab00_no_hint_gives_the_answer_away():
    answer = lab00.solution_few_shot_prompt()[2]["content"]
    for wrong, _ in LAB00_MISTAKES.values():
        message = exercises.check_few_shot_prompt(wrong).message
        assert answer not in message and '"label": "negative"' not in message and "'negative'" not in message


@pytest.mark.parametrize("odd", ODD_ANSWERS + [[None, None, None, None], ["system", "user"]], ids=repr)
def test_lab00_odd_answers_get_a_hint(odd):
    assert exercises.check_few_shot_prompt(odd).status == WRONG


def test_lab00_exercise_uses_a_negative_example_so_the_json_hint_shows_no_answer():
    # parse_sentiment's "not JSON" message shows an example object with label "positive": the worked
    # example must not be positive, or that hint would give the label away.
    assert lab00.EXAMPLE_LABEL != "positive"
    assert prompts.parse_sentiment(lab00.solution_few_shot_prompt()[2]["content"],
                                   review=lab00.EXAMPLE_REVIEW)["label"] == lab00.EXAMPLE_LABEL


# --------------------------------------------------------------------------- lab 01: a text's loss by hand

NATS = -(math.log(0.9) + math.log(0.25) + math.log(0.6)) / 3
BITS = NATS / math.log(2)


def test_lab01_worked_values():
    assert lab01.solution_text_loss() == pytest.approx((NATS, BITS))
    assert round(NATS, 3) == 0.667 and round(BITS, 3) == 0.963


def test_lab01_solution_rounded_and_tensor_answers_are_right():
    assert exercises.check_text_loss(*lab01.solution_text_loss()).status == RIGHT
    assert exercises.check_text_loss(0.667, 0.963).status == RIGHT
    assert exercises.check_text_loss(torch.tensor(NATS), torch.tensor([BITS])).status == RIGHT
    assert exercises.check_text_loss(..., ...).status == NOT_ATTEMPTED


def mean(xs):
    return sum(xs) / len(xs)


P_TRUE, P_FAVOURITE = [0.9, 0.25, 0.6], [0.9, 0.5, 0.6]
LAB01_MISTAKES = {
    "one left blank": ((NATS, ...), "fill in both"),
    "strings": (("0.5", "0.7"), "plain numbers"),
    "None": ((None, BITS), "plain numbers"),
    "a list": (([0.1, 0.2], BITS), "plain numbers"),
    "swapped": ((BITS, NATS), "swapped places"),
    "minus sign": ((-NATS, -BITS), "never negative"),
    "sum": ((3 * NATS, 3 * BITS), "the sum over the three positions"),
    "log base 2": ((BITS, BITS), "that is the loss in bits"),
    "log base 10": ((mean([-math.log10(p) for p in P_TRUE]), BITS), "math.log10"),
    "favourite": ((mean([-math.log(p) for p in P_FAVOURITE]), BITS), "the model's favourite"),
    "mean of p": ((-math.log(mean(P_TRUE)), BITS), "averaged the probabilities"),
    "every candidate": ((mean([sum(-math.log(p) for p in probs.values())
                               for _, probs, _ in lab01.TEXT_LOSS_STEPS]), BITS), "over every candidate"),
    "other nats": ((1.0, BITS), "work position by position"),
    "bits not converted": ((NATS, NATS), "still holds the value in nats"),
    "multiplied by ln 2": ((NATS, NATS * math.log(2)), "rather than multiply"),
    "other bits": ((NATS, 2.0), "bits = nats ÷ ln 2"),
}


@pytest.mark.parametrize("name", LAB01_MISTAKES)
def test_lab01_each_mistake_gets_its_own_hint(name):
    answer, expected = LAB01_MISTAKES[name]
    message = hint_of(exercises.check_text_loss(*answer))
    assert expected in message
    others = [e for n, (_, e) in LAB01_MISTAKES.items() if n != name and e != expected]
    assert not any(e in message for e in others), f"{name}: the hint should be its own: {message}"


def test_lab01_no_hint_gives_the_answer_away():
    for answer, _ in LAB01_MISTAKES.values():
        message = exercises.check_text_loss(*answer).message
        for value in (NATS, BITS):
            assert f"{value:.2f}" not in message and f"{value:.3f}"[1:] not in message


@pytest.mark.parametrize("odd", ODD_ANSWERS, ids=repr)
def test_lab01_odd_answers_get_a_hint(odd):
    assert exercises.check_text_loss(odd, odd).status == WRONG
    assert exercises.check_text_loss(NATS, odd).status == WRONG


# --------------------------------------------------------------------------- lab 02: the labels SFT trains on

CHAT = [
    {"role": "user", "content": "solve the problem . mia has 3 pies . tom gives mia 2 more . how many pies "
                                "does mia have now ?"},
    {"role": "assistant", "content": "3 + 2 = 5 . the answer is 5 ."},
    {"role": "user", "content": "name the goods sold at the orchard ."},
    {"role": "assistant", "content": "apples , plums , cherries , pears , baskets"},
]


TOK = train_tokenizer(m["content"] for m in CHAT)
IDS = TOK.apply_chat_template(CHAT, tokenize=True, return_dict=True)["input_ids"]
TOKENS = TOK.convert_ids_to_tokens(IDS)


def test_lab02_solution_keeps_each_reply_and_its_end():
    labels = lab02.solution_sft_labels(TOK, CHAT)
    # by hand: every token after an <|assistant|> marker, up to and including the <|end|> that closes it
    kept, in_reply = [], False
    for t, token in enumerate(TOKENS):
        if in_reply:
            kept.append(t)
            in_reply = token != "<|end|>"
        in_reply = in_reply or token == "<|assistant|>"
    assert labels == [i if t in kept else -100 for t, i in enumerate(IDS)]
    assert [TOKENS[t] for t in kept].count("<|end|>") == 2 and "<|assistant|>" not in [TOKENS[t] for t in kept]
    assert exercises.check_sft_labels(labels, TOK, CHAT).status == RIGHT
    assert exercises.check_sft_labels(torch.tensor(labels), TOK, CHAT).status == RIGHT
    assert exercises.check_sft_labels(..., TOK, CHAT).status == NOT_ATTEMPTED


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
    assert labels == lab02.solution_sft_labels(TOK, CHAT)


def lab02_mistakes():
    right = lab02.solution_sft_labels(TOK, CHAT)
    in_reply = [label != -100 for label in right]
    marker = [t == "<|assistant|>" for t in TOKENS]
    end = [t == "<|end|>" for t in TOKENS]
    first_reply_end = next(t for t in range(len(IDS)) if in_reply[t] and end[t])
    return {
        "a string": (" ".join(TOKENS), "list of whole numbers"),
        "token strings": (TOKENS, "list of whole numbers"),
        "shifted left": (right[1:] + [-100], "don't shift"),
        "shifted right": ([-100] + right[:-1], "don't shift"),
        "too short": (right[:5], "one label per token"),
        "no mask": (list(IDS), "every token keeps its id"),
        "the mask": ([int(m) for m in in_reply], "that is the 0/1 mask"),
        "inverted": ([-100 if m else i for i, m in zip(IDS, in_reply)], "other way round"),
        "zero filler": ([i if m else 0 for i, m in zip(IDS, in_reply)], "must hold −100"),
        "window one early": ([i if (m or k) and not (m and e) else -100
                              for i, m, k, e in zip(IDS, in_reply, marker, end)], "starts one token early"),
        "marker kept": ([i if m or k else -100 for i, m, k in zip(IDS, in_reply, marker)],
                        "marker is part of the prompt"),
        "end dropped": ([i if m and not e else -100 for i, m, e in zip(IDS, in_reply, end)], "learns to stop"),
        "every end": ([i if m or e else -100 for i, m, e in zip(IDS, in_reply, end)], "closing the user's messages"),
        "first reply only": ([i if m and t <= first_reply_end else -100 for t, (i, m) in enumerate(zip(IDS, in_reply))],
                             "more than one assistant reply"),
        "nothing kept": ([-100] * len(IDS), "compare position by position"),
    }


LAB02_MISTAKES = lab02_mistakes()


@pytest.mark.parametrize("name", LAB02_MISTAKES)
def test_lab02_each_mistake_gets_its_own_hint(name):
    answer, expected = LAB02_MISTAKES[name]
    message = hint_of(exercises.check_sft_labels(answer, TOK, CHAT))
    assert expected in message
    others = [e for n, (_, e) in LAB02_MISTAKES.items() if n != name and e != expected]
    assert not any(e in message for e in others), f"{name}: the hint should be its own: {message}"


def test_lab02_no_hint_gives_the_answer_away():
    right = lab02.solution_sft_labels(TOK, CHAT)
    kept = [label for label in right if label != -100]
    for answer, _ in LAB02_MISTAKES.values():
        message = exercises.check_sft_labels(answer, TOK, CHAT).message
        assert str(right)[1:-1] not in message and str(kept)[1:-1] not in message
        assert json.dumps(right) not in message


@pytest.mark.parametrize("odd", ODD_ANSWERS + [[1.5] * len(IDS), [True] * len(IDS)], ids=repr)
def test_lab02_odd_answers_get_a_hint(odd):
    assert exercises.check_sft_labels(odd, TOK, CHAT).status == WRONG
