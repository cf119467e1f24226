"""Lab 02 (instruction tuning): its graded exercise and solution.

**Your turn: the labels SFT trains on.** A chat rendered by the lab's chat template is a list of
token ids (``ids``) and the same tokens as text (``tokens``). The learner writes ``sft_labels(ids,
tokens)``, the ``labels`` that TRL's ``SFTTrainer`` builds with ``assistant_only_loss=True``: one
label per token, the token's own id where the loss counts (each assistant reply and the ``<|end|>``
that closes it) and −100 everywhere else. :func:`check_sft_labels` calls it on chats the learner
never sees and recognises the usual slips: the mask inverted, shifted by one, 0 instead of −100, the
markers or the closing ``<|end|>`` on the wrong side, one reply missed, labels that ignore the chat.

The solution is at the bottom of this file (``SOLUTIONS``): look only when stuck.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable

from labkit.exercises.common import Verdict, grade
from labkit.exercises.functions import Attempt, attempt, converts, output_for, type_hints
from labkit.tokenizer import ASSISTANT, END, assistant_mask, train_tokenizer

__all__ = ["check_sft_labels"]

EXERCISE = "the labels SFT trains on"
IGNORE = -100  # the label PyTorch's cross-entropy skips (its ignore_index)

# The lab's chat (the lab's cell shows it): two requests, each with its reply.
CHAT = [
    {"role": "user", "content": "solve the problem . mia has 3 pies . tom gives mia 2 more . "
                                "how many pies does mia have now ?"},
    {"role": "assistant", "content": "3 + 2 = 5 . the answer is 5 ."},
    {"role": "user", "content": "name the goods sold at the orchard ."},
    {"role": "assistant", "content": "apples , plums , cherries , pears , baskets"},
]
# Hidden chats the check adds: a system message and one reply; three requests, one reply a single word.
_CHATS = [
    CHAT,
    [{"role": "system", "content": "you answer questions about the village ."},
     {"role": "user", "content": "who bakes the bread ?"},
     {"role": "assistant", "content": "the baker bakes the bread ."}],
    [{"role": "user", "content": "is the mill open ?"},
     {"role": "assistant", "content": "yes"},
     {"role": "user", "content": "and the inn ?"},
     {"role": "assistant", "content": "no , the inn is closed today ."},
     {"role": "user", "content": "thank you ."},
     {"role": "assistant", "content": "you are welcome ."}],
]
# The chat a hint may show with its right labels (not one of the hidden ones).
SHOWN = [{"role": "user", "content": "where is tom ?"}, {"role": "assistant", "content": "at the mill ."}]


@lru_cache(maxsize=1)
def _tokenizer():
    """A word-level tokenizer with the lab's chat template that knows every word of the chats above."""
    return train_tokenizer(m["content"] for chat in _CHATS + [SHOWN] for m in chat)


def _render(messages: list[dict]) -> tuple[list[int], list[str]]:
    """(ids, tokens) of ``messages`` as the chat template renders them."""
    tok = _tokenizer()
    ids = list(tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    return ids, tok.convert_ids_to_tokens(ids)


def _cases() -> list[tuple[list[int], list[str]]]:
    return [_render(chat) for chat in _CHATS]


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
    # keeping one reply only is right when the chat has one reply
    one_turn_only = [_keep(ids, turn) for turn in turns] if len(turns) > 1 else [right]
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


def _kept(ids: list[int], tokens: list[str], labels: list[int]) -> str:
    """The tokens as one line, each position whose label is the token's own id in [brackets]."""
    return " ".join(f"[{t}]" if label == i else t for i, t, label in zip(ids, tokens, labels))


def check_sft_labels(fn: Callable) -> Verdict:
    """Check ``fn(ids, tokens)``, the assistant-only labels of a rendered chat, on hidden chats."""
    cases = _cases()
    found = [_slips(_tokenizer(), chat) for chat in _CHATS]
    right = [r for _, r, _ in found]
    run = attempt(fn, cases)

    def labels(r: Attempt) -> list[list[int]]:
        return [_ints(o) for o in r.outputs]

    def is_(name: str) -> Callable[[Attempt], bool]:  # that slip on every hidden chat
        return lambda r: all(got in slips[name] for got, (_, _, slips) in zip(labels(r), found))

    def length() -> str:
        """The length hint, quoting the first hidden chat whose labels have the wrong length."""
        try:
            got, ids = next((g, c[0]) for g, c in zip(labels(run), cases) if len(g) != len(c[0]))
        except Exception:  # the function did not run, or every length is right: this hint does not apply
            return ""
        return (f"one label per token: for a chat of {len(ids)} tokens your function returned {len(got)} labels. "
                "Build exactly one label for each position of ids.")

    def shown() -> str:
        ids, tokens = _render(SHOWN)
        line = _kept(ids, tokens, _slips(_tokenizer(), SHOWN)[1])
        try:
            got = _ints(output_for(fn, (ids, tokens)))
            yours = f" Your labels count on: {_kept(ids, tokens, got)}" if len(got) == len(ids) else ""
        except Exception:
            yours = ""
        return f" For example, in this chat the loss counts on the tokens in [brackets]: {line}.{yours}"

    def hints(run: Attempt) -> list:
        return type_hints(run, "sft_labels(ids, tokens)", "exercises.check_sft_labels(sft_labels)",
                          "a list of whole numbers, one per token", text=False) + [
            (lambda r: not all(converts(_ints, o) for o in r.outputs),
             "labels should be a list of whole numbers, one per token of ids (a Python list, or a tensor); "
             "not a string, None, or a list of tokens."),
            (lambda r: len({tuple(g) for g in labels(r)}) == 1,
             "your function returns the same labels for every chat. Build them from `ids` and `tokens`, the chat "
             "it is given (the check passes chats of its own)." + shown()),
            (is_("shifted"),
             "don't shift the labels: they line up with input_ids position by position. The model shifts "
             "them itself (the logits at position t are scored against the label at t + 1)."),
            (lambda r: any(len(g) != len(c[0]) for g, c in zip(labels(r), cases)), length()),
            (is_("no_mask"),
             "every token keeps its id, so the loss would also teach the model to write the user's messages "
             "and the chat markers. Hide everything outside the assistant's replies."),
            (is_("mask_itself"),
             "that is the 0/1 mask. Labels hold the token's own id where the loss counts and −100 where it "
             "does not."),
            (is_("inverted"),
             "it's the other way round: you kept the prompt and hid the replies. The loss should count on "
             "the assistant's tokens and skip the rest."),
            (lambda r: all(_other_filler(g, want) or g == want for g, want in zip(labels(r), right)),
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
             "some chats have more than one assistant reply, and the loss counts on every one of them."),
        ]

    if run is Ellipsis:
        return grade(EXERCISE, ..., bool, praise="", otherwise="")
    return grade(
        EXERCISE, run, lambda r: r.ran and labels(r) == right,
        praise="Right on every chat the check tried. These are the labels TRL's SFTTrainer builds with "
               "assistant_only_loss=True: the loss teaches the model to write the replies (and to stop), never "
               "to write the user's messages.",
        hints=hints(run),
        otherwise="compare position by position with the tokens: the loss counts from the token after each "
                  "<|assistant|> up to and including the <|end|> that closes that reply, and −100 elsewhere."
                  + shown())



# ----------------------------------------------------------------------------------------------
# Solutions: look only when stuck.
# ----------------------------------------------------------------------------------------------

def solution_sft_labels(ids: list[int], tokens: list[str]) -> list[int]:
    """Walk the tokens: after each <|assistant|> marker, keep ids up to and including the closing <|end|>.

    (With the lab's helper it is one line: ``[i if m else -100 for i, m in zip(ids,
    labkit.tokenizer.assistant_mask(tokenizer, messages))]``, given the chat's messages.)
    """
    labels, in_reply = [], False
    for token_id, token in zip(ids, tokens):
        if token == "<|assistant|>":   # the marker opens a reply but is itself part of the prompt
            labels.append(-100)
            in_reply = True
            continue
        labels.append(token_id if in_reply else -100)
        if token == "<|end|>":         # the reply's closing <|end|> is trained on, then the reply is over
            in_reply = False
    return labels


SOLUTIONS = {"sft_labels": solution_sft_labels}
