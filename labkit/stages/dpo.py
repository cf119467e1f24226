"""Stage ``dpo``: the SFT policy learns from the preference pairs directly, with TRL's DPOTrainer (lab 06).

No reward model and no sampling in training: its recipe (:func:`run_dpo`, which lab 06's runs call
with other settings), its bench slice (with or without LoRA) and its entries in lab 08's race.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from labkit import checkpoint, measure, runtime
from labkit.evaluate import PolicyRun, evaluate_policy, heldout_judge
from labkit.presets import Preset
from labkit.stages.base import Contender, RaceInputs, Stage, StageOutput, register
from labkit.train.common import total_steps
from labkit.train.dpo import implicit_accuracy, train_dpo
from labkit.world import preferences as prefs


def run_dpo(preset: Preset, sft_dir: Path, config=None, *, pairs: list[dict] | None = None, progress: bool = False,
            callback: Callable | None = None, eval_fn: Callable | None = None, eval_every: int = 0,
            reference=None) -> PolicyRun:
    """DPO from the SFT checkpoint on preference ``pairs`` (default: the world's first
    ``config.train_pairs`` training pairs); ``config`` defaults to the preset's.

    Judged like PPO on the held-out prompts (gold reward, win rate and KL vs the SFT policy), plus
    the implicit reward's accuracy on the reward model's held-out pairs beside their Bayes ceiling.
    Returns a :class:`~labkit.evaluate.PolicyRun` (its ``report()`` is the stage's report; its
    ``outputs`` also hold the ``reference``, the SFT policy). The ``dpo`` stage, lab 06's runs and
    lab 08's race call it. ``eval_fn`` (e.g. a
    :func:`~labkit.evaluate.heldout_judge`) judges the policy every ``eval_every`` steps while it trains
    (lab 08's curves); ``reference``: the SFT policy if the caller has it loaded already (else it is loaded here).
    """
    config = config or preset.dpo
    device = runtime.device()
    policy, tokenizer, _ = checkpoint.load_checkpoint(sft_dir, device=device)
    if reference is None:
        reference, _, _ = checkpoint.load_checkpoint(sft_dir, device=device)
    if pairs is None:
        pairs = prefs.preference_pairs("train", config.train_pairs, seed=preset.world_seed)
    result = train_dpo(policy, tokenizer, pairs, config, reference=reference, seed=preset.seed, progress=progress,
                       callback=callback, eval_fn=eval_fn, eval_every=eval_every)
    heldout = prefs.alignment_prompts("heldout")
    final = evaluate_policy(result.policy, tokenizer, heldout, reference, samples_per_prompt=config.eval_samples,
                            seed=preset.seed, max_new_tokens=preset.sft.max_new_tokens, name="DPO", progress=progress)
    test = prefs.preference_pairs("test", config.eval_pairs, seed=preset.world_seed)
    implicit = implicit_accuracy(result.policy, reference, tokenizer, test, config.beta)
    extra = {"implicit_accuracy": implicit["accuracy"], "implicit_margin": implicit["margin"],
             "chosen_logratio": implicit["chosen_logratio"], "rejected_logratio": implicit["rejected_logratio"],
             "bayes_ceiling": prefs.bayes_ceiling(test), "test_pairs": len(test), "train_pairs": len(pairs),
             "steps": result.steps, "lora_rank": config.lora_rank, "beta": config.beta}
    return PolicyRun.judged("DPO", final, heldout, result, extra=extra,
                            outputs={"tokenizer": tokenizer, "reference": reference})


def train_dpo_stage(preset: Preset, inputs: dict[str, Path], progress: bool, callback: Callable | None):
    """Align the SFT policy with DPO on the world's preference pairs; judge it on held-out prompts by the gold reward."""
    run = run_dpo(preset, inputs["sft"], progress=progress, callback=callback)
    return StageOutput(run.outputs["policy"], run.outputs["tokenizer"], run.report(), run.history)


# ------------------------------------------------------------------------------- the bench

def bench_dpo_slice(preset: Preset, inputs: dict[str, Path], steps: int, rank: int) -> dict:
    """``steps`` steps of TRL's DPOTrainer from the SFT checkpoint: full fine-tuning against a reference
    copy (rank 0), or LoRA adapters whose base with adapters off is the reference."""
    config = dataclasses.replace(preset.dpo, train_pairs=steps * preset.dpo.batch_size, epochs=1, lora_rank=rank)
    pairs = prefs.preference_pairs("train", config.train_pairs, seed=preset.world_seed)
    device = runtime.device()
    before = measure.memory_start(device)
    policy, tokenizer, _ = checkpoint.load_checkpoint(inputs["sft"], device=device)
    base = sum(p.numel() for p in policy.parameters())
    reference = None if rank else checkpoint.load_checkpoint(inputs["sft"], device=device)[0]
    clock = measure.StepClock()
    result = train_dpo(policy, tokenizer, pairs, config, reference=reference, seed=preset.seed, progress=False,
                       callback=clock)
    in_memory = base + (result.trainable_parameters if rank else base)
    return {**measure.memory_row(device, before, in_memory, result.trainable_parameters),
            **measure.timing_row(result.seconds, result.steps, clock, config.batch_size, "preference pair")}


# ------------------------------------------------------------------------------- lab 08's race

def race_dpo(inputs: RaceInputs, rank: int) -> PolicyRun:
    """DPO in the race: the stage's recipe at LoRA ``rank`` on the world's fixed pairs (no sampling in
    training), judged along the way with the race's SFT policy and reward model."""
    preset = inputs.preset
    config = dataclasses.replace(preset.dpo, lora_rank=rank)
    steps = total_steps(config.train_pairs, config.batch_size, config.epochs)
    judge = heldout_judge(preset, inputs.tokenizer, inputs.reference, inputs.reward_model, inputs.reward_tokenizer,
                          samples_per_prompt=preset.ppo.eval_samples)
    return run_dpo(preset, inputs.sft_dir, config, eval_fn=judge, eval_every=inputs.eval_every(steps),
                   reference=inputs.reference)


register(Stage(
    "dpo", needs=("sft",), fields=("name", "world_seed", "dpo", "seed"),
    report=("seconds", *PolicyRun.NUMBERS, "implicit_accuracy", "implicit_margin", "chosen_logratio",
            "rejected_logratio", "bayes_ceiling", "steps", "train_pairs", "lora_rank", "beta"),
    train=train_dpo_stage, bench=bench_dpo_slice, lora_rank=lambda preset: preset.dpo.lora_rank,
    version=1,  # 1: the SFT answers its win rate meets are sampled independently of the policy's
    comparisons=("lora_vs_full",),
    contenders=(Contender("DPO", race_dpo), Contender("DPO + LoRA", race_dpo, lora=True))))
