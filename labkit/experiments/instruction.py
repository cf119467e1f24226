"""Lab 02's SFT demonstrations and lab 03's LoRA runs: short fine-tuning runs from the pretrained model.

Every run starts from :func:`fresh_from_pretrained` (the cached pretraining stage with fresh
embeddings for tokens it never saw), trains with :func:`labkit.train.sft.train_sft` and scores
held-out examples by exact match.
"""
from __future__ import annotations

from typing import Callable

import torch

from labkit import checkpoint, pipeline, runtime
from labkit.experiments import Run
from labkit.lora import peft_lora
from labkit.metrics import instruction_scores, score_summary, training_state_megabytes
from labkit.models import count_parameters, refresh_embeddings
from labkit.presets import SFTStageConfig, get_preset
from labkit.train.sft import tokens_new_to_the_model, train_sft
from labkit.world.tasks import (ambiguous_brainstorm, exact_categories, task_mixture, task_split,
                                with_wrong_answers)


def fresh_from_pretrained(preset=None):
    """``(model, tokenizer)``: the pretrained stage's model, with fresh embeddings for new tokens.

    The starting point of every SFT run in lab 02 (and of the ``sft`` stage itself).
    """
    preset = preset or get_preset()
    model, tokenizer, _ = checkpoint.load_checkpoint(pipeline.ensure("pretrain", preset))
    refresh_embeddings(model, tokens_new_to_the_model(tokenizer), seed=preset.seed)
    return model, tokenizer


def demo_run(train_rows: list[dict], eval_rows: list[dict], preset=None, *, model=None, tokenizer=None,
             epochs: float | None = None, progress: bool = True) -> Run:
    """One short SFT run for lab 02: train on ``train_rows``, score ``eval_rows``.

    Starts from :func:`fresh_from_pretrained` unless ``model``/``tokenizer`` are given (to continue
    training one, as in the forgetting demo). Returns a :class:`Run` whose row holds the training
    ``seconds`` and whose outputs are the ``model``, ``tokenizer``, ``scores`` (one row per eval
    example) and ``summary`` (exact match per category).
    """
    preset = preset or get_preset()
    if model is None:
        model, tokenizer = fresh_from_pretrained(preset)
    config = SFTStageConfig(**{**preset.sft.__dict__, "epochs": epochs or preset.sft_demos.epochs})
    model.train()
    result = train_sft(model, tokenizer, train_rows, config, seed=preset.seed, progress=progress)
    scores = instruction_scores(model, tokenizer, eval_rows, max_new_tokens=preset.sft.max_new_tokens)
    return Run(row={"seconds": result.seconds}, history=result.history,
               outputs={"model": model, "tokenizer": tokenizer, "scores": scores, "summary": score_summary(scores)})


# ---------------------------------------------------------------- lab 02's slider experiments

def imbalance_experiment(arithmetic_share: float, preset=None, progress: bool = False) -> Run:
    """Train on a fixed budget of arithmetic + classify examples with this share of arithmetic.

    The budget is ``2 × sft_demos.per_category`` examples; returns exact match on each category.
    """
    if not 0 <= arithmetic_share <= 1:
        raise ValueError(f"arithmetic share must lie in [0, 1], got {arithmetic_share}")
    preset = preset or get_preset()
    n = 2 * preset.sft_demos.per_category
    train = task_mixture("train", n, {"arithmetic": arithmetic_share, "classify": 1 - arithmetic_share},
                         seed=preset.world_seed)
    test = task_split("validation", preset.sft_demos.eval_per_category, preset.world_seed, ("arithmetic", "classify"))
    run = demo_run(train, test, preset, progress=progress)
    summary = run.outputs["summary"]
    return Run(row={"arithmetic share": arithmetic_share, "examples": len(train),
                    "arithmetic": float(summary.loc["arithmetic", "exact_match"]),
                    "classify": float(summary.loc["classify", "exact_match"]), **run.row},
               history=run.history)


NOISE_CATEGORIES = ("classify", "rewrite", "brainstorm")


def noise_experiment(examples_per_category: int, wrong_share: float, preset=None, progress: bool = False) -> Run:
    """Train on ``examples_per_category`` of three categories with a ``wrong_share`` of wrong answers.

    Quality vs quantity: compare e.g. 200 clean examples per category with 800 of which 40 % are wrong.
    Returns exact match on clean held-out examples.
    """
    if examples_per_category < 1:
        raise ValueError(f"examples per category must be >= 1, got {examples_per_category}")
    preset = preset or get_preset()
    train = with_wrong_answers(task_split("train", examples_per_category, preset.world_seed, NOISE_CATEGORIES),
                               wrong_share, seed=preset.seed)
    test = task_split("validation", preset.sft_demos.eval_per_category, preset.world_seed, NOISE_CATEGORIES)
    run = demo_run(train, test, preset, progress=progress,
                   epochs=preset.sft_demos.epochs * preset.sft_demos.per_category / max(examples_per_category, 1))
    return Run(row={"examples per category": examples_per_category, "wrong share": wrong_share,
                    "exact_match": float(run.outputs["summary"].loc["overall", "exact_match"]), **run.row},
               history=run.history)


def ambiguity_experiment(clear: bool, preset=None, progress: bool = True) -> Run:
    """Train on brainstorm answers in two conventions (shop order, alphabetical); exact match per convention.

    ``clear=False``: both conventions behind one instruction; ``clear=True``: each has its own. The
    row maps each convention to its exact match; ``outputs["scores"]`` has one row per example.
    """
    preset = preset or get_preset()
    train = ambiguous_brainstorm("train", preset.sft_demos.per_category, clear=clear, seed=preset.world_seed)
    held_out = ambiguous_brainstorm("validation", 2 * preset.sft_demos.eval_per_category, clear=clear,
                                    seed=preset.world_seed)
    run = demo_run(train, held_out, preset, progress=progress)
    scores = run.outputs["scores"]
    scores["convention"] = [r["convention"] for r in held_out]
    return Run(row={k: float(v) for k, v in scores.groupby("convention").exact.mean().items()},
               history=run.history, outputs={"scores": scores})


# ---------------------------------------------------------------------- lab 03's LoRA runs

def lora_experiment(rank: int | None, preset=None, *, progress: bool = False, callback: Callable | None = None) -> Run:
    """Fine-tune the pretrained model on lab 03's SFT mix with LoRA of ``rank`` (``None``: full).

    Every run starts from the same pretrained weights with the same data, steps and seed. The row:
    rank, trainable parameters, their share, exact match on held-out examples, training seconds,
    the training-state memory (MB, computed) and, on a GPU, the measured peak memory; the outputs:
    the trained ``model`` and its ``tokenizer``.
    """
    preset = preset or get_preset()
    lab = preset.lora_sweep
    if rank is not None and (int(rank) != rank or rank < 1):
        raise ValueError(f"LoRA rank must be an integer >= 1 (or None for full fine-tuning), got {rank}")
    model, tokenizer = fresh_from_pretrained(preset)
    total = count_parameters(model)
    if rank is not None:
        runtime.seed_everything(preset.seed)  # the adapters' random init: same for every run and order
        model = peft_lora(model, int(rank), new_token_ids=tokens_new_to_the_model(tokenizer))
    trainable = count_parameters(model, trainable_only=True)
    config = SFTStageConfig(**{**preset.sft.__dict__, "epochs": lab.epochs,
                               "lr": lab.lr if rank is None else lab.lora_lr})
    rows = task_mixture("train", lab.train_examples, dict(preset.sft.category_weights), seed=preset.world_seed)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = train_sft(model, tokenizer, rows, config, seed=preset.seed, progress=progress, callback=callback)
    categories = exact_categories(c for c, weight in preset.sft.category_weights if weight > 0)
    scores = instruction_scores(model, tokenizer, task_split("validation", lab.eval_per_category, preset.world_seed,
                                                             categories), max_new_tokens=preset.sft.max_new_tokens)
    return Run(row={"rank": "full" if rank is None else int(rank), "trainable parameters": trainable,
                    "trainable share": trainable / total,
                    "exact_match": float(score_summary(scores).loc["overall", "exact_match"]),
                    "seconds": result.seconds,
                    "training state MB": training_state_megabytes(total, trainable),
                    "peak GPU MB": torch.cuda.max_memory_allocated() / 1e6 if cuda else None},
               history=result.history, outputs={"model": model, "tokenizer": tokenizer})
