"""Lab 02 (instruction tuning): its graded exercise and solution.

**Your turn: the labels SFT trains on.** For a new two-turn chat, rendered by the lab's tokenizer
and chat template, the learner builds the ``labels`` that TRL's ``SFTTrainer`` builds with
``assistant_only_loss=True``: one label per token of ``input_ids``, the token's own id where the
loss counts (each assistant reply and the ``<|end|>`` that closes it) and −100 everywhere else.
:func:`check_sft_labels` grades them and recognises the usual slips: the mask inverted, shifted
by one, 0 instead of −100, the markers or the closing ``<|end|>`` on the wrong side, one turn missed.

The solution is at the bottom of this file (``SOLUTIONS``): look only when stuck.
"""
from __future__ import annotations

from typing import Any

from labkit.exercises.common import Verdict, grade
from labkit.tokenizer import ASSISTANT, END, assistant_mask

__all__ = ["check_sft_labels"]

IGNORE = -100  # the label PyTorch's cross-entropy skips (its ignore_index)


def _ints(labels: Any) -> list[int]:
    """``labels`` as a list of ints (a list, tuple, tensor or array of whole numbers); raise otherwise."""
    if isinstance(labels, (str, bytes, dict)) or labels is None:
        raise TypeError("not a sequence of ints")
    if hasattr(labels, "tolist"):
        labels = labels.tolist()
    out = []
    for x in labels:
        if isinstance(x, bool) or not isinstance(x, int):
            if isinstance(x, float) and x.is_integer():
                x = int(x)
            else:
                raise TypeError("not an int")
        out.append(x)
    return out


def _keep(ids: list[int], keep: list[bool]) -> list[int]:
    """Labels that keep ``ids`` where ``keep`` is true and ignore the rest."""
    return [i if k else IGNORE for i, k in zip(ids, keep)]


def _slips(tokenizer, messages: list[dict]) -> tuple[list[int], list[int], dict[str, list[list[int]]]]:
    """The token ids, the right labels, and what each usual slip produces."""
    ids = list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    mask = [bool(m) for m in assistant_mask(tokenizer, messages)]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    right = _keep(ids, mask)
    marker = [t == ASSISTANT for t in tokens]
    closing = [m and t == END for m, t in zip(mask, tokens)]
    turns: list[list[bool]] = []  # one keep-list per assistant turn (a run of 1s in the mask)
    for t, m in enumerate(mask):
        if m and (t == 0 or not mask[t - 1]):
            turns.append([False] * len(ids))
        if m:
            turns[-1][t] = True
    one_turn_only = [_keep(ids, turn) for turn in turns] if len(turns) > 1 else []
    slips = {
        "shifted": [right[1:] + [IGNORE], right[1:], [IGNORE] + right[:-1], right[:-1]],
        "window_one_early": [_keep(ids, mask[1:] + [False])],   # from <|assistant|> to before <|end|>
        "no_mask": [ids],
        "mask_itself": [[int(m) for m in mask]],
        "inverted": [_keep(ids, [not m for m in mask])],
        "markers_too": [_keep(ids, [m or k for m, k in zip(mask, marker)])],
        "no_closing_end": [_keep(ids, [m and not c for m, c in zip(mask, closing)])],
        "every_end": [_keep(ids, [m or t == END for m, t in zip(mask, tokens)])],
        "one_turn_only": one_turn_only,
    }
    return ids, right, slips


def _other_filler(labels: list[int], right: list[int]) -> bool:
    """Right positions kept, but the ignored ones hold something other than −100 (e.g. 0)."""
    return (len(labels) == len(right) and labels != right
            and all(got == want for got, want in zip(labels, right) if want != IGNORE)
            and all(got != IGNORE for got, want in zip(labels, right) if want == IGNORE))


def check_sft_labels(labels: Any, tokenizer, messages: list[dict]) -> Verdict:
    """Grade ``labels`` for ``messages`` rendered by ``tokenizer``'s chat template (assistant-only loss)."""
    ids, right, slips = _slips(tokenizer, messages)
    n = len(_ints(labels)) if _is_int_list(labels) else None

    def is_(name: str):
        return lambda a: _ints(a) in slips[name]

    return grade(
        "the labels SFT trains on", labels, lambda a: _ints(a) == right,
        praise="These are the labels TRL's SFTTrainer builds with assistant_only_loss=True: the loss "
               "teaches the model to write the replies (and to stop), never to write the user's messages.",
        hints=[
            (lambda a: not _is_int_list(a),
             "labels should be a list of whole numbers, one per token of ids (a Python list, or a tensor); "
             "not a string, None, or a list of tokens."),
            (is_("shifted"),
             "don't shift the labels: they line up with input_ids position by position. The model shifts "
             "them itself (the logits at position t are scored against the label at t + 1)."),
            (lambda a: n != len(ids),
             f"one label per token: ids has {len(ids)} tokens, your labels have {n}. Build exactly one "
             "label for each position of ids."),
            (is_("no_mask"),
             "every token keeps its id, so the loss would also teach the model to write the user's messages "
             "and the chat markers. Hide everything outside the assistant's replies."),
            (is_("mask_itself"),
             "that is the 0/1 mask. Labels hold the token's own id where the loss counts and −100 where it "
             "does not."),
            (is_("inverted"),
             "it's the other way round: you kept the prompt and hid the replies. The loss should count on "
             "the assistant's tokens and skip the rest."),
            (lambda a: _other_filler(_ints(a), right),
             "the right tokens are kept, but the skipped positions must hold −100, the value PyTorch's "
             "cross-entropy ignores. Any other number is a real target: 0, for instance, is the id of <pad>, "
             "which the model would be trained to predict."),
            (is_("window_one_early"),
             "your span starts one token early and stops one early: the <|assistant|> marker belongs to the "
             "prompt (the generation prompt writes it), while the <|end|> that closes the reply is trained on."),
            (is_("markers_too"),
             "the <|assistant|> marker is part of the prompt: at generation time it is written for the model "
             "(add_generation_prompt=True), so it is not trained on. Start after it."),
            (is_("no_closing_end"),
             "the <|end|> that closes each reply is trained on too: that is how the model learns to stop."),
            (is_("every_end"),
             "only the <|end|> that closes an assistant reply counts; the ones closing the user's messages "
             "belong to the prompt."),
            (is_("one_turn_only"),
             "this chat has more than one assistant reply, and the loss counts on every one of them."),
        ],
        otherwise="compare position by position with the tokens: the loss counts from the token after each "
                  "<|assistant|> up to and including the <|end|> that closes that reply, and −100 elsewhere.")


def _is_int_list(labels: Any) -> bool:
    try:
        _ints(labels)
    except Exception:
        return False
    return True


# ----------------------------------------------------------------------------------------------
# Solutions: look only when stuck.
# ----------------------------------------------------------------------------------------------

def solution_sft_labels(tokenizer, messages: list[dict]) -> list[int]:
    """Walk the tokens: after each <|assistant|> marker, keep ids up to and including the closing <|end|>.

    (With the lab's helper it is one line: ``[i if m else -100 for i, m in zip(ids,
    labkit.tokenizer.assistant_mask(tokenizer, messages))]``.)
    """
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    labels, in_reply = [], False
    for token_id, token in zip(ids, tokenizer.convert_ids_to_tokens(ids)):
        if token == "<|assistant|>":   # the marker opens a reply but is itself part of the prompt
            labels.append(-100)
            in_reply = True
            continue
        labels.append(token_id if in_reply else -100)
        if token == "<|end|>":         # the reply's closing <|end|> is trained on, then the reply is over
            in_reply = False
    return labels


SOLUTIONS = {"sft_labels": solution_sft_labels}
