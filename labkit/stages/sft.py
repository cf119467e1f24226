"""Stage ``sft``: the pretrained model learns to follow instructions (lab 02).

Its data (:func:`sft_rows`: the task mixture to train on, the exact-answer categories to judge),
its recipe (:func:`train_sft_stage`), its bench slice and its place in lab 08's race: the SFT
policy itself, the reference every aligned policy is judged against.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from labkit import checkpoint, measure, runtime
from labkit.evaluate import PolicyRun, evaluate_policy
from labkit.metrics import instruction_scores, score_summary
from labkit.models import refresh_embeddings
from labkit.presets import Preset
from labkit.stages.base import Contender, RaceInputs, Stage, StageOutput, register
from labkit.train.sft import tokens_new_to_the_model, train_sft
from labkit.world import preferences as prefs
from labkit.world.tasks import exact_categories, task_mixture, task_split


def sft_rows(preset: Preset, split: str) -> list[dict]:
    """The instruction examples of ``split`` for ``preset`` (``train``, or ``test`` for evaluation)."""
    if split == "train":
        return task_mixture("train", preset.sft.train_examples, dict(preset.sft.category_weights),
                            seed=preset.world_seed)
    # exact match judges the categories with one exact answer; the preference task has the gold reward
    categories = exact_categories(c for c, weight in preset.sft.category_weights if weight > 0)
    return task_split(split, preset.sft.eval_per_category, seed=preset.world_seed, categories=categories)


def train_sft_stage(preset: Preset, inputs: dict[str, Path], progress: bool, callback: Callable | None):
    """Instruction-tune the pretrained model; measure exact match per category before and after,
    and the gold reward of its sampled answers to the held-out alignment prompts."""
    model, tokenizer, _ = checkpoint.load_checkpoint(inputs["pretrain"])
    test = sft_rows(preset, "test")
    base = score_summary(instruction_scores(model, tokenizer, test, max_new_tokens=preset.sft.max_new_tokens))
    # Tokens pretraining never showed the model (chat markers, digits, JSON pieces) all collapsed to
    # one direction; give them distinct vectors so fine-tuning can tell them apart (see lab 02).
    refresh_embeddings(model, tokens_new_to_the_model(tokenizer), seed=preset.seed)
    model.train()
    train = sft_rows(preset, "train")
    result = train_sft(model, tokenizer, train, preset.sft, seed=preset.seed,
                       progress=progress, callback=callback)
    scores = instruction_scores(model, tokenizer, test, max_new_tokens=preset.sft.max_new_tokens)
    after = score_summary(scores)
    heldout = prefs.alignment_prompts("heldout")
    judged = evaluate_policy(model, tokenizer, heldout, samples_per_prompt=preset.sft.eval_samples,
                             seed=preset.seed, max_new_tokens=preset.sft.max_new_tokens, name="SFT", progress=progress)
    metrics = {
        "exact_match": float(after.loc["overall", "exact_match"]),
        "json_valid": float(after.loc["classify", "json_valid"]),
        "base_exact_match": float(base.loc["overall", "exact_match"]),
        "base_json_valid": float(base.loc["classify", "json_valid"]),
        "per_category": {c: {"exact_match": float(after.loc[c, "exact_match"]),
                             "base_exact_match": float(base.loc[c, "exact_match"])}
                         for c in after.index if c != "overall"},
        "train_seconds": result.seconds,
        "steps": result.steps,
        "train_examples": len(train),
        "test_examples": len(test),
        "final_train_loss": result.history[-1]["train_loss"] if result.history else None,
        "gold_reward": judged.gold_reward,
        "best_gold_reward": prefs.best_mean_gold_reward(heldout),
        "demonstrator_gold_reward": prefs.demonstrator_gold_reward(heldout, seed=preset.world_seed),
        "gold_helpfulness": judged.helpfulness,
        "gold_safety": judged.safety,
        "heldout_answers": len(judged.answers),
    }
    return StageOutput(model, tokenizer, metrics, result.history)


# ------------------------------------------------------------------------------- the bench

def sft_slice(preset: Preset, start_dir: Path, rows: list[dict], config, sample: str,
              prepare: Callable | None = None) -> dict:
    """TRL's SFTTrainer on ``rows`` from the checkpoint in ``start_dir`` with ``config``, timed and measured.

    ``prepare(model, tokenizer)`` runs after loading (e.g. the ``sft_math`` stage's answer marker).
    Shared by the ``sft`` and ``sft_math`` stages' bench slices.
    """
    device = runtime.device()
    before = measure.memory_start(device)
    model, tokenizer, _ = checkpoint.load_checkpoint(start_dir, device=device)
    if prepare is not None:
        prepare(model, tokenizer)
    model.train()
    clock = measure.StepClock()
    result = train_sft(model, tokenizer, rows, config, seed=preset.seed, progress=False, callback=clock)
    n = sum(p.numel() for p in model.parameters())
    return {**measure.memory_row(device, before, n, n),
            **measure.timing_row(result.seconds, result.steps, clock, config.batch_size, sample)}


def bench_sft_slice(preset: Preset, inputs: dict[str, Path], steps: int, rank: int = 0) -> dict:
    """``steps`` steps of the ``sft`` stage's training from ``pretrain``: its batch, learning rate and
    warm-up, its data's first ``steps`` batches."""
    config = dataclasses.replace(preset.sft, train_examples=steps * preset.sft.batch_size, epochs=1)
    rows = sft_rows(preset.replace(sft=config), "train")[:config.train_examples]
    return sft_slice(preset, inputs["pretrain"], rows, config, "conversation")


# ------------------------------------------------------------------------------- lab 08's race

def judge_sft(inputs: RaceInputs, name: str = "SFT"):
    """The SFT policy's own final evaluation on the held-out prompts, as every contender's is made."""
    preset = inputs.preset
    return evaluate_policy(inputs.reference, inputs.tokenizer, prefs.alignment_prompts("heldout"), inputs.reference,
                           reward_model=inputs.reward_model, reward_tokenizer=inputs.reward_tokenizer,
                           samples_per_prompt=preset.ppo.final_eval_samples, seed=preset.seed,
                           max_new_tokens=preset.sft.max_new_tokens, name=name, progress=False)


def race_sft(inputs: RaceInputs, rank: int = 0) -> PolicyRun:
    """The SFT policy in the race: nothing trained, judged as the others are (its win rate is about ½)."""
    return PolicyRun.judged("SFT", judge_sft(inputs), prefs.alignment_prompts("heldout"),
                            outputs={"policy": inputs.reference, "tokenizer": inputs.tokenizer})


register(Stage(
    "sft", needs=("pretrain",),
    fields=("name", "world_seed", "sft", "seed"),
    report=("seconds", "exact_match", "json_valid", "base_exact_match", "base_json_valid", "per_category",
            "gold_reward", "best_gold_reward", "demonstrator_gold_reward", "gold_helpfulness", "gold_safety",
            "train_seconds", "steps", "train_examples", "test_examples"),
    train=train_sft_stage, bench=bench_sft_slice, contenders=(Contender("SFT", race_sft),)))
