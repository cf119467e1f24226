"""Instruction tuning (SFT) with TRL's ``SFTTrainer``: learn to answer, not just to continue text.

The data are role/content conversations (the no_robots layout). The chat template wraps each
assistant turn in ``{% generation %}`` markers, so with ``assistant_only_loss=True`` the trainer
computes next-token cross-entropy on the assistant's tokens only: the model is never trained to
*write* instructions, only to answer them. ``eos_token="<|end|>"`` makes the end-of-turn token the
one the trained model stops on.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

import datasets
import pandas as pd
from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from trl import SFTConfig, SFTTrainer

from labkit import runtime
from labkit.presets import SFTStageConfig
from labkit.tokenizer import END


def messages_dataset(rows: list[dict]) -> datasets.Dataset:
    """A ``datasets.Dataset`` with one ``messages`` column (what SFTTrainer reads) from example rows."""
    return datasets.Dataset.from_list([{"messages": r["messages"]} for r in rows])


class _History(TrainerCallback):
    """Collects the trainer's logged losses, shows one progress bar, and feeds ``callback``.

    Replaces the trainer's own printing (which writes every log dict into the notebook).
    """

    def __init__(self, callback: Callable | None, progress: bool, desc: str = "SFT"):
        self.history: list[dict] = []
        self.callback = callback
        self.progress = progress
        self.desc = desc
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.progress:
            self.bar = tqdm(total=state.max_steps, desc=self.desc, unit="step")

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.history.append({"step": state.global_step, "train_loss": float(logs["loss"])})
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}")
            if self.callback is not None:
                self.callback(self.history)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()


@dataclass
class TrainResult:
    """What a TRL training run left: its logged losses, wall time and steps."""

    history: list[dict] = field(default_factory=list)  # {"step", "train_loss"} per logging step
    seconds: float = 0.0                                # wall time of trainer.train()
    steps: int = 0                                      # optimiser steps taken


def sft_config(config: SFTStageConfig, n_examples: int, output_dir: str, seed: int = 0,
               eos_token: str | None = END) -> SFTConfig:
    """The TRL ``SFTConfig`` for our stage config: assistant-only loss, stop on ``<|end|>``, no saving."""
    steps_per_epoch = max(1, -(-n_examples // config.batch_size))
    total = max(1, round(config.epochs * steps_per_epoch))
    return SFTConfig(
        output_dir=output_dir,
        assistant_only_loss=True,       # loss on the assistant's tokens only (the mask in lab 02)
        eos_token=eos_token,            # the token that ends an assistant turn
        max_length=None,                # our conversations are short; never truncate an answer away
        per_device_train_batch_size=config.batch_size,
        max_steps=total,
        learning_rate=config.lr,
        lr_scheduler_type="linear",
        warmup_steps=config.warmup_steps,
        weight_decay=0.0,
        logging_steps=max(1, total // 40),
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,              # our own bar (see _History) instead of printed log dicts
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        use_cpu=runtime.device().type == "cpu",
        bf16=False,
        fp16=False,
    )


def train_sft(model, tokenizer, rows: list[dict], config: SFTStageConfig, *, seed: int = 0,
              progress: bool = True, callback: Callable | None = None) -> TrainResult:
    """Fine-tune ``model`` in place on the conversations in ``rows`` with TRL's ``SFTTrainer``."""
    runtime.seed_everything(seed)
    recorder = _History(callback, progress)
    eos = END if END in tokenizer.get_vocab() else None  # a hub model keeps its own end-of-turn token
    with tempfile.TemporaryDirectory(prefix="labkit-sft-") as out:  # quiet: see runtime.quiet_third_party
        trainer = SFTTrainer(
            model=model,
            args=sft_config(config, len(rows), out, seed, eos),
            train_dataset=messages_dataset(rows),
            processing_class=tokenizer,
            callbacks=[recorder],
        )
        seconds = quiet_train(trainer)
    model.eval()
    return TrainResult(history=recorder.history, seconds=seconds, steps=trainer.state.global_step)


def quiet_train(trainer) -> float:
    """Run ``trainer.train()`` without the trainer's own printing (our ``_History`` bar reports); seconds."""
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


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


def fresh_from_pretrained(preset=None):
    """``(model, tokenizer)``: the pretrained stage's model, with fresh embeddings for new tokens.

    The starting point of every SFT run in lab 02 (and of the ``sft`` stage itself).
    """
    from labkit import checkpoint, pipeline
    from labkit.models import refresh_embeddings
    from labkit.presets import get_preset

    preset = preset or get_preset()
    model, tokenizer, _ = checkpoint.load_checkpoint(pipeline.ensure("pretrain", preset))
    refresh_embeddings(model, tokens_new_to_the_model(tokenizer), seed=preset.seed)
    return model, tokenizer


def demo_run(train_rows: list[dict], eval_rows: list[dict], preset=None, *, model=None, tokenizer=None,
             epochs: float | None = None, progress: bool = True) -> dict:
    """One short SFT run for lab 02: train on ``train_rows``, score ``eval_rows``.

    Starts from :func:`fresh_from_pretrained` unless ``model``/``tokenizer`` are given (to continue
    training one, as in the forgetting demo). Returns ``model``, ``tokenizer``, ``scores`` (one row per
    eval example), ``summary`` (per category), ``history`` and ``seconds``.
    """
    from labkit.metrics import instruction_scores, score_summary
    from labkit.presets import get_preset

    preset = preset or get_preset()
    if model is None:
        model, tokenizer = fresh_from_pretrained(preset)
    config = SFTStageConfig(**{**preset.sft.__dict__, "epochs": epochs or preset.lab02.epochs})
    model.train()
    result = train_sft(model, tokenizer, train_rows, config, seed=preset.seed, progress=progress)
    scores = instruction_scores(model, tokenizer, eval_rows, max_new_tokens=preset.sft.max_new_tokens)
    return {"model": model, "tokenizer": tokenizer, "scores": scores, "summary": score_summary(scores),
            "history": result.history, "seconds": result.seconds}


# ---------------------------------------------------------------- lab 02's slider experiments

def imbalance_experiment(arithmetic_share: float, preset=None, progress: bool = False) -> dict:
    """Train on a fixed budget of arithmetic + classify examples with this share of arithmetic.

    The budget is ``2 × lab02.per_category`` examples; returns exact match on each category.
    """
    from labkit.presets import get_preset
    from labkit.world.tasks import task_mixture, task_split

    if not 0 <= arithmetic_share <= 1:
        raise ValueError(f"arithmetic share must lie in [0, 1], got {arithmetic_share}")
    preset = preset or get_preset()
    n = 2 * preset.lab02.per_category
    train = task_mixture("train", n, {"arithmetic": arithmetic_share, "classify": 1 - arithmetic_share},
                         seed=preset.world_seed)
    test = task_split("validation", preset.lab02.eval_per_category, preset.world_seed, ("arithmetic", "classify"))
    run = demo_run(train, test, preset, progress=progress)
    summary = run["summary"]
    return {"arithmetic share": arithmetic_share, "examples": len(train),
            "arithmetic": float(summary.loc["arithmetic", "exact_match"]),
            "classify": float(summary.loc["classify", "exact_match"]), "seconds": run["seconds"]}


NOISE_CATEGORIES = ("classify", "rewrite", "brainstorm")


def noise_experiment(examples_per_category: int, wrong_share: float, preset=None, progress: bool = False) -> dict:
    """Train on ``examples_per_category`` of three categories with a ``wrong_share`` of wrong answers.

    Quality vs quantity: compare e.g. 200 clean examples per category with 800 of which 40 % are wrong.
    Returns exact match on clean held-out examples.
    """
    from labkit.presets import get_preset
    from labkit.world.tasks import task_split, with_wrong_answers

    if examples_per_category < 1:
        raise ValueError(f"examples per category must be >= 1, got {examples_per_category}")
    preset = preset or get_preset()
    train = with_wrong_answers(task_split("train", examples_per_category, preset.world_seed, NOISE_CATEGORIES),
                               wrong_share, seed=preset.seed)
    test = task_split("validation", preset.lab02.eval_per_category, preset.world_seed, NOISE_CATEGORIES)
    run = demo_run(train, test, preset, progress=progress,
                   epochs=preset.lab02.epochs * preset.lab02.per_category / max(examples_per_category, 1))
    return {"examples per category": examples_per_category, "wrong share": wrong_share,
            "exact_match": float(run["summary"].loc["overall", "exact_match"]), "seconds": run["seconds"]}


def ambiguity_experiment(clear: bool, preset=None, progress: bool = True):
    """Train on brainstorm answers in two conventions (shop order, alphabetical); exact match per convention.

    ``clear=False``: both conventions behind one instruction; ``clear=True``: each has its own.
    """
    from labkit.presets import get_preset
    from labkit.world.tasks import ambiguous_brainstorm

    preset = preset or get_preset()
    train = ambiguous_brainstorm("train", preset.lab02.per_category, clear=clear, seed=preset.world_seed)
    held_out = ambiguous_brainstorm("validation", 2 * preset.lab02.eval_per_category, clear=clear,
                                    seed=preset.world_seed)
    scores = demo_run(train, held_out, preset, progress=progress)["scores"]
    scores["convention"] = [r["convention"] for r in held_out]
    return scores.groupby("convention").exact.mean()


# ---------------------------------------------------------------------- lab 03's LoRA runs

def lora_experiment(rank: int | None, preset=None, *, progress: bool = False, callback: Callable | None = None) -> dict:
    """Fine-tune the pretrained model on lab 03's SFT mix with LoRA of ``rank`` (``None``: full).

    Every run starts from the same pretrained weights with the same data, steps and seed. Returns a
    table row: rank, trainable parameters, their share, exact match on held-out examples, training
    seconds, the training-state memory (MB, computed) and, on a GPU, the measured peak memory.
    """
    import torch

    from labkit.metrics import instruction_scores, score_summary, training_state_megabytes
    from labkit.models import count_parameters
    from labkit.presets import get_preset
    from labkit.world.tasks import exact_categories, task_mixture, task_split

    preset = preset or get_preset()
    lab = preset.lab03
    if rank is not None and (int(rank) != rank or rank < 1):
        raise ValueError(f"LoRA rank must be an integer >= 1 (or None for full fine-tuning), got {rank}")
    model, tokenizer = fresh_from_pretrained(preset)
    total = count_parameters(model)
    if rank is not None:
        from labkit.lora import peft_lora

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
    return {"rank": "full" if rank is None else int(rank), "trainable parameters": trainable,
            "trainable share": trainable / total,
            "exact_match": float(score_summary(scores).loc["overall", "exact_match"]),
            "seconds": result.seconds,
            "training state MB": training_state_megabytes(total, trainable),
            "peak GPU MB": torch.cuda.max_memory_allocated() / 1e6 if cuda else None,
            "history": result.history, "model": model, "tokenizer": tokenizer}
