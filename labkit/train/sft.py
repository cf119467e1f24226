"""Instruction tuning (SFT) with TRL's ``SFTTrainer``: learn to answer, not just to continue text.

The data are role/content conversations (the no_robots layout). The chat template wraps each
assistant turn in ``{% generation %}`` markers, so with ``assistant_only_loss=True`` the trainer
computes next-token cross-entropy on the assistant's tokens only: the model is never trained to
*write* instructions, only to answer them. ``eos_token="<|end|>"`` makes the end-of-turn token the
one the trained model stops on.

Most hub models' chat templates (SmolLM2's, for one) have no ``{% generation %}`` markers, and TRL
can patch only a few known templates. For those, each conversation goes to TRL as a prompt (every
turn before the last) and a completion (the final assistant turn): TRL renders both with the
model's own template and trains on the tokens the completion adds, the answer and its end-of-turn
token (``<|im_end|>`` in ChatML), as :func:`labkit.tokenizer.assistant_mask` shows them.
"""
from __future__ import annotations

from typing import Callable

import datasets
import torch
from trl import SFTConfig, SFTTrainer

from labkit import runtime
from labkit.presets import SFTStageConfig
from labkit.tokenizer import END, marks_assistant_turns
from labkit.train.common import TrainResult, common_args, fit, sort_batches_by_length, total_steps, trainer_dir
from labkit.train.muon import Joined, Muon, muon_matrices


def messages_dataset(rows: list[dict], tokenizer=None) -> datasets.Dataset:
    """The ``datasets.Dataset`` SFTTrainer reads, from example rows (role/content ``messages``).

    One ``messages`` column; or, for a ``tokenizer`` whose chat template has no ``{% generation %}``
    markers (a hub model's), ``prompt`` (the turns before the last) and ``completion`` (the last,
    the assistant's answer), so that TRL puts the loss on the answer alone (see the module docstring).
    """
    if tokenizer is None or marks_assistant_turns(tokenizer):
        return datasets.Dataset.from_list([{"messages": r["messages"]} for r in rows])
    for number, row in enumerate(rows, start=1):
        if row["messages"][-1]["role"] != "assistant":
            raise ValueError(f"SFT example {number} does not end with an assistant turn: there is no answer to "
                             f"train on (roles: {[m['role'] for m in row['messages']]})")
    return datasets.Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])


def sft_config(config: SFTStageConfig, n_examples: int, output_dir: str, seed: int = 0,
               eos_token: str | None = END, assistant_only_loss: bool = True) -> SFTConfig:
    """The TRL ``SFTConfig`` for our stage config: assistant-only loss, stop on ``<|end|>``, no saving.

    ``assistant_only_loss=False`` for prompt/completion data (:func:`messages_dataset` for a hub
    model's template): the loss then goes on the completion's tokens only.
    """
    return SFTConfig(
        assistant_only_loss=assistant_only_loss,        # loss on the assistant's tokens only (the mask in lab 02)
        completion_only_loss=not assistant_only_loss,   # or on the completion's (a hub model's template)
        eos_token=eos_token,                            # the token that ends an assistant turn
        max_length=None,                                # our conversations are short; never truncate an answer
        **common_args(output_dir=output_dir, steps=total_steps(n_examples, config.batch_size, config.epochs),
                      batch_size=config.batch_size, lr=config.lr, warmup_steps=config.warmup_steps, seed=seed,
                      micro_batches=config.micro_batches),
    )


def sft_optimizer(model, config) -> torch.optim.Optimizer | None:
    """The optimiser ``config.optimizer`` names: None for ``"adamw"`` (the trainer builds its own AdamW);
    for ``"muon"``, Muon on the blocks' weight matrices at ``config.muon_lr`` and AdamW (the trainer's
    settings) on the rest at ``config.lr``, joined so the trainer's schedule drives both. Configs
    without the setting (the word problems', lab 03's) train with AdamW."""
    if getattr(config, "optimizer", "adamw") == "adamw":
        return None
    matrices, rest = muon_matrices(model)
    return Joined(Muon(matrices, lr=config.muon_lr),
                  torch.optim.AdamW(rest, lr=config.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0))


def train_sft(model, tokenizer, rows: list[dict], config: SFTStageConfig, *, seed: int = 0,
              progress: bool = True, callback: Callable | None = None) -> TrainResult:
    """Fine-tune ``model`` in place on the conversations in ``rows`` with TRL's ``SFTTrainer``."""
    eos = END if END in tokenizer.get_vocab() else None  # a hub model keeps its own end-of-turn token
    marked = marks_assistant_turns(tokenizer)
    runtime.seed_everything(seed)  # before the trainer is built, as in every TRL stage (see labkit.train.common)
    with trainer_dir() as out:
        args = sft_config(config, len(rows), out, seed, eos, assistant_only_loss=marked)
        trainer = SFTTrainer(model=model, args=args, train_dataset=messages_dataset(rows, tokenizer),
                             processing_class=tokenizer, optimizers=(sft_optimizer(model, config), None))
        if config.micro_batches > 1:
            sort_batches_by_length(trainer, [len(ids) for ids in trainer.train_dataset["input_ids"]],
                                   config.batch_size, args.max_steps, seed)
        return fit(trainer, model, progress=progress, callback=callback, desc="SFT")


def tokens_new_to_the_model(tokenizer) -> list[int]:
    """Ids of the tokens pretraining never showed the model: chat markers and task-only words.

    Task words such as digits, ``"label"`` or ``stale`` appear only in instructions and answers;
    the chat markers ``<|user|>``, ``<|assistant|>``, ``<|end|>`` and ``<|system|>`` first appear here.
    Empty for a tokenizer that is not labkit's word-level one (a hub model knows all its tokens).
    """
    from labkit import tokenizer as tk
    from labkit.world import story_vocabulary

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or type(backend.model).__name__ != "WordLevel":
        return []  # a hub model's sub-word tokenizer: it was pretrained on all of its tokens
    seen = story_vocabulary() | {tk.PAD, tk.UNK, tk.BOS, tk.EOS}
    return sorted(i for word, i in tokenizer.get_vocab().items() if word not in seen)
