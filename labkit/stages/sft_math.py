"""Stage ``sft_math``: the SFT policy learns the word problems from imperfect demonstrators (lab 07).

Most demonstrators skip the working, so the policy is right only sometimes (10–60 %): the start
GRPO must beat. Its data (:func:`problem_rows`, and :func:`add_answer_marker`, which gives the
tokenizer the ``####`` marker), its recipe and its bench slice.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from labkit import checkpoint
from labkit.evaluate import evaluate_problems, shows_working
from labkit.models import refresh_embeddings
from labkit.presets import Preset
from labkit.stages.base import Stage, StageOutput, register
from labkit.stages.sft import sft_slice
from labkit.train.sft import train_sft
from labkit.world import problems as word_problems


def add_answer_marker(model, tokenizer, seed: int = 0) -> list[int]:
    """Teach ``tokenizer`` the final-answer marker ``####`` as one new token, and give it a row in ``model``.

    The world's vocabulary has no ``####``; adding it at the end of the vocabulary leaves every
    other token's id (and the pretrained and SFT weights) as they were. The new embedding row is
    drawn like the other tokens new to the model (:func:`labkit.models.refresh_embeddings`).
    Returns the ids added (empty when the tokenizer already knows the marker, e.g. a hub model's
    sub-word tokenizer, which spells it from pieces).
    """
    marker = word_problems.MARKER
    if tokenizer.unk_token_id is None or tokenizer.unk_token_id not in tokenizer(marker, add_special_tokens=False)["input_ids"]:
        return []
    tokenizer.add_tokens([marker])
    model.resize_token_embeddings(len(tokenizer))
    added = [tokenizer.convert_tokens_to_ids(marker)]
    refresh_embeddings(model, added, seed=seed)
    return added


def problem_rows(preset: Preset, split: str, n: int | None = None) -> list[dict]:
    """Word problems of ``split``: the sft_math stage's demonstrations for ``train``
    (``preset.sft_math.worked_share`` of them with working), the held-out problems for ``test``."""
    config = preset.sft_math
    if split == "train":
        return word_problems.problems("train", n or config.train_problems, seed=preset.world_seed,
                                      worked_share=config.worked_share)
    return word_problems.problems("test", n or config.eval_problems, seed=preset.world_seed)


def math_sft_config(preset: Preset, n_rows: int):
    """The SFT trainer's settings for ``n_rows`` word problems: the sft stage's, with the sft_math batch,
    epochs, learning rate and warm-up."""
    config = preset.sft_math
    return dataclasses.replace(preset.sft, train_examples=n_rows, epochs=config.epochs, batch_size=config.batch_size,
                               lr=config.lr, warmup_steps=config.warmup_steps)


def train_sft_math_stage(preset: Preset, inputs: dict[str, Path], progress: bool, callback: Callable | None):
    """Teach the SFT policy the word problems from imperfect demonstrators (most skip the working);
    measure its held-out accuracy: the starting point GRPO must beat."""
    config = preset.sft_math
    model, tokenizer, _ = checkpoint.load_checkpoint(inputs["sft"])
    added = add_answer_marker(model, tokenizer, seed=preset.seed)
    test = problem_rows(preset, "test")
    before = evaluate_problems(model, tokenizer, test, max_new_tokens=config.max_new_tokens, seed=preset.seed)
    model.train()
    train = problem_rows(preset, "train")
    result = train_sft(model, tokenizer, train, math_sft_config(preset, len(train)), seed=preset.seed,
                       progress=progress, callback=callback)
    after = evaluate_problems(model, tokenizer, test, max_new_tokens=config.max_new_tokens, seed=preset.seed)
    metrics = {**after.summary(),
               "base_accuracy": before.accuracy,
               "worked_accuracy": float(after.answers.loc[after.answers["sampled"].map(shows_working), "right_sampled"].mean())
               if after.worked_share else None,
               "bare_accuracy": float(after.answers.loc[~after.answers["sampled"].map(shows_working), "right_sampled"].mean())
               if after.worked_share < 1 else None,
               "demonstrations_worked_share": sum(shows_working(r["messages"][-1]["content"]) for r in train) / len(train),
               "train_problems": len(train), "test_problems": len(test), "added_tokens": len(added),
               "train_seconds": result.seconds, "steps": result.steps}
    return StageOutput(model, tokenizer, metrics, result.history)


def bench_sft_math_slice(preset: Preset, inputs: dict[str, Path], steps: int, rank: int = 0) -> dict:
    """``steps`` steps of the ``sft_math`` stage's training from ``sft``, the answer marker added: its batch,
    learning rate and warm-up, its first ``steps`` batches of word problems, one epoch."""
    rows = problem_rows(preset, "train", steps * preset.sft_math.batch_size)
    config = dataclasses.replace(math_sft_config(preset, len(rows)), epochs=1)
    return sft_slice(preset, inputs["sft"], rows, config, "word problem",
                     prepare=lambda model, tokenizer: add_answer_marker(model, tokenizer, seed=preset.seed))


register(Stage(
    "sft_math", needs=("sft",), fields=("name", "world_seed", "sft_math", "seed"),
    report=("seconds", "accuracy", "sampled_accuracy", "worked_share", "length", "base_accuracy",
            "worked_accuracy", "bare_accuracy", "demonstrations_worked_share", "train_seconds", "steps",
            "train_problems", "test_problems"),
    train=train_sft_math_stage, bench=bench_sft_math_slice))
