"""How a reward model turns a conversation into one number: its score head's pooling.

A reward model is a language model's trunk with a linear *score* head of one output in place of
the vocabulary head (transformers' ``…ForSequenceClassification``). The head can read the
conversation in two ways:

- ``"last"``: the head's output at the conversation's last token, transformers' own reading (and
  TRL's, and InstructGPT's). That one position has to carry the verdict on the whole answer.
- ``"sum"``: the head scores *every* token and the scores are added up. Each token can then be
  charged for what it adds (a name repeated, a stray word, one list item too many), and the prompt's
  tokens, the same in both answers to a prompt, add the same amount to both: a comparison
  r(x, a) − r(x, b) depends on the answers alone. The model's output is the sum over every token;
  :func:`labkit.models.reward_scores`, which PPO, GRPO, best-of-n and the labs score with, takes the
  prompt's part off (the score of the prompt alone), so that scores of answers to different prompts
  sit on one scale, as a last-token head's do.

:func:`summed` makes the ``"sum"`` form of any such class; a checkpoint saved from it records
``reward_pooling = "sum"`` in its config, and :func:`model_class` finds the class again on loading
(``labkit.checkpoint.load_checkpoint``).
"""
from __future__ import annotations

import functools

import torch
import transformers
from transformers.modeling_outputs import SequenceClassifierOutputWithPast

from labkit.presets import POOLINGS

PREFIX = "Summed"  # a summed model's class name: "Summed" + its base class's (config.architectures)


class _SummedScore:
    """The ``forward`` of a reward model whose score is the sum of its head over the unpadded tokens."""

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, **kwargs):
        if labels is not None:
            raise ValueError("a summed-score reward model returns scores only; compute its loss from them "
                             "(labkit.losses.bradley_terry_loss)")
        kwargs["use_cache"] = False  # a score needs no cache, and TRL asks for none either
        hidden = self.base_model(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                 **kwargs).last_hidden_state
        per_token = self.score(hidden)  # (rows, tokens, 1)
        if attention_mask is None:
            attention_mask = torch.ones(per_token.shape[:2], device=per_token.device)
        total = (per_token * attention_mask[..., None].to(per_token.dtype)).sum(dim=1)
        return SequenceClassifierOutputWithPast(logits=total)


@functools.cache
def summed(base: type) -> type:
    """The summed-score form of the sequence-classification class ``base`` (same weights, same saving)."""
    if not hasattr(base, "base_model_prefix"):
        raise TypeError(f"{base!r} is not a transformers model class")
    return type(f"{PREFIX}{base.__name__}", (_SummedScore, base),
                {"__doc__": f"{base.__name__} whose score is the sum of its head over the unpadded tokens."})


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise ValueError(f"a reward model's pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    return pooling


def reward_model_class(config, pooling: str = "last") -> type:
    """The class of a reward model (one score) on the trunk that ``config`` describes."""
    try:
        base = transformers.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)]
    except KeyError:
        raise ValueError(f"transformers has no sequence-classification (reward) head for {type(config).__name__} "
                         "models: pick a causal LM whose architecture has one (Llama, Qwen2, GPT-2, ...)") from None
    return summed(base) if check_pooling(pooling) == "sum" else base


def model_class(config) -> type | None:
    """The class a checkpoint with ``config`` was saved from (``config.architectures``), or None if
    transformers does not name it; a summed-score reward model comes back as one."""
    architecture = (config.architectures or [""])[0]
    if getattr(config, "reward_pooling", "last") == "sum":
        base = getattr(transformers, architecture.removeprefix(PREFIX), None)
        return summed(base) if base is not None else None
    return getattr(transformers, architecture, None) if architecture else None
