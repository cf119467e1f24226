"""The workbook's tokenizer: one token per word, plus a chat template.

The synthetic world writes lowercase words and punctuation separated by single spaces
(``once upon a time , mia the baker lived near the mill .``), so the simplest tokenizer is also
the clearest one: split on whitespace and give every distinct word an id. Loss is then measured
in nats per *word*, the same unit as the world's known entropy floor.

We train it with the ``tokenizers`` library and wrap it for ``transformers`` so that TRL's trainers
and ``model.generate`` use it like any hub tokenizer. In transformers 5 the fast-tokenizer class is
``TokenizersBackend``; ``PreTrainedTokenizerFast`` is kept as an alias of it.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

# Special tokens; their position in this list is their id (ids 0..7 in every labkit tokenizer).
PAD = "<pad>"                # fills short rows in a batch; never trained on
UNK = "<unk>"                # a word the tokenizer never saw
BOS = "<s>"                  # start of every text (prepended by the post-processor)
EOS = "</s>"                 # end of a document
SYSTEM = "<|system|>"        # opens a system message in a chat
USER = "<|user|>"            # opens a user message
ASSISTANT = "<|assistant|>"  # opens an assistant message (also the generation prompt)
END = "<|end|>"              # closes any chat message; the model learns to stop on it
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS, SYSTEM, USER, ASSISTANT, END]
PAD_ID, UNK_ID, BOS_ID, EOS_ID, SYSTEM_ID, USER_ID, ASSISTANT_ID, END_ID = range(len(SPECIAL_TOKENS))

# Renders [{"role", "content"}, ...] as
#   <s> <|system|> ... <|end|> <|user|> ... <|end|> <|assistant|> ... <|end|>
# The {% generation %} block marks the assistant's content and its <|end|>: those are the tokens
# SFT trains on (`return_assistant_tokens_mask=True`, TRL's `assistant_only_loss=True`).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    " <|assistant|> {% generation %}{{ message['content'] }} <|end|>{% endgeneration %}"
    "{% elif message['role'] in ['system', 'user'] %}"
    " <|{{ message['role'] }}|> {{ message['content'] }} <|end|>"
    "{% else %}"
    "{{ raise_exception('unknown chat role ' ~ message['role'] ~ \"; use 'system', 'user' or 'assistant'\") }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %} <|assistant|>{% endif %}"
)


def train_tokenizer(texts: Iterable[str], extra_words: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """Train a word-level tokenizer on ``texts`` and wrap it for transformers.

    Every whitespace-separated word of ``texts`` gets an id (min_frequency 1), as does every word of
    ``extra_words`` (e.g. words that only appear in instructions or answers). Ids 0..7 are
    ``SPECIAL_TOKENS``; the rest are ordered by frequency, ties alphabetically, so the same texts
    always give the same ``tokenizer.json``.

    Encoding a string prepends ``<s>`` (no ``</s>``: a document's end is added by whoever packs
    documents). Decoding joins words with single spaces.
    """
    extra_words = list(extra_words)
    bad = [w for w in extra_words if not w or w != w.strip() or len(w.split()) != 1]
    if bad:
        raise ValueError(f"extra_words must be single words without spaces; got {bad[:5]}")

    backend = Tokenizer(models.WordLevel(unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordLevelTrainer(min_frequency=1, special_tokens=SPECIAL_TOKENS, show_progress=False)
    backend.train_from_iterator(itertools.chain(texts, [" ".join(extra_words)]), trainer=trainer)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, BOS_ID)]
    )

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,  # otherwise decode turns "mill ." into "mill."
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def marks_assistant_turns(tokenizer) -> bool:
    """Whether ``tokenizer``'s chat template marks the assistant's tokens with ``{% generation %}`` (labkit's does;
    most hub models' templates, SmolLM2's among them, do not). The same test as TRL's ``has_generation_markers``."""
    template = tokenizer.chat_template
    template = template.get("default", "") if isinstance(template, dict) else template
    return bool(template) and re.search(r"\{%-?\s*generation\s*-?%\}", template) is not None


def _chat_ids(tokenizer, messages: list[dict], **options) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **options)["input_ids"])


def assistant_mask(tokenizer, messages: list[dict]) -> list[int]:
    """1 for each token of the chat that SFT trains on (assistant content and its ``<|end|>``), else 0.

    The mask lines up with ``tokenizer.apply_chat_template(messages)`` token for token. A template
    without ``{% generation %}`` markers (a hub model's) gets the tokens each assistant turn adds after
    the generation prompt: its words and end-of-turn token (``<|im_end|>`` and the line break after it
    in ChatML), the tokens :mod:`labkit.train.sft` trains such a model on.
    """
    if marks_assistant_turns(tokenizer):
        out = tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        return list(out["assistant_masks"])
    ids = _chat_ids(tokenizer, messages)
    mask = [0] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            start = len(_chat_ids(tokenizer, messages[:i], add_generation_prompt=True)) if i else 0
            end = len(_chat_ids(tokenizer, messages[:i + 1]))
            mask[start:end] = [1] * (end - start)
    return mask


def save_tokenizer(tokenizer, path: str | Path) -> Path:
    """Save ``tokenizer`` (``tokenizer.json``, config, chat template) into the directory ``path``."""
    path = Path(path)
    tokenizer.save_pretrained(path)
    return path


def load_tokenizer(path: str | Path):
    """Load a tokenizer saved by :func:`save_tokenizer` (or any ``save_pretrained`` directory)."""
    path = Path(path).expanduser()
    if not (path / "tokenizer_config.json").is_file() and not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"No tokenizer at {path} (expected tokenizer.json / tokenizer_config.json there). "
            "Train one with labkit.tokenizer.train_tokenizer(texts) and save it with save_tokenizer(tok, path), "
            "or check the path."
        )
    return AutoTokenizer.from_pretrained(str(path))


def loss_mask_table(tokenizer, messages: list[dict]):
    """A pandas table of the chat's tokens, one row each, with ``trained`` = 1 where SFT puts loss."""
    import pandas as pd

    ids = _chat_ids(tokenizer, messages)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    roles = _roles(tokens) if marks_assistant_turns(tokenizer) else _turn_roles(tokenizer, messages, len(ids))
    return pd.DataFrame({"token": tokens, "role": roles, "trained": assistant_mask(tokenizer, messages)})


def _roles(tokens: list[str]) -> list[str]:
    """Which message each token belongs to (the marker that opened it)."""
    role, out = "-", []
    for token in tokens:
        role = {SYSTEM: "system", USER: "user", ASSISTANT: "assistant"}.get(token, role)
        out.append(role)
    return out


def _turn_roles(tokenizer, messages: list[dict], n: int) -> list[str]:
    """Which message each of the ``n`` tokens belongs to, for any template: the tokens each message adds."""
    out: list[str] = []
    for i, message in enumerate(messages):
        out += [message["role"]] * (len(_chat_ids(tokenizer, messages[:i + 1])) - len(out))
    return (out + ["-"] * n)[:n]
