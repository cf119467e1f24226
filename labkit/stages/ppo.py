"""Stage ``ppo``: the SFT policy learns from the reward model with our own PPO loop (lab 05).

Its recipe (:func:`run_ppo`, which lab 05's run panel calls with other settings), its bench slice
(PPO's models loaded and a few iterations taken, with or without LoRA) and its entries in lab 08's
race (PPO, and PPO with LoRA adapters).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from labkit import checkpoint, measure, runtime
from labkit.evaluate import PolicyRun, evaluate_policy, gold_reward_fn, heldout_judge, reward_model_fn
from labkit.presets import Preset
from labkit.stages.base import Contender, RaceInputs, Stage, StageOutput, register
from labkit.train.ppo import train_ppo
from labkit.world import preferences as prefs


def run_ppo(preset: Preset, sft_dir: Path, reward_dir: Path, config=None, *, gold: bool = False,
            progress: bool = False, callback: Callable | None = None) -> PolicyRun:
    """PPO from the SFT checkpoint against the reward model in ``reward_dir`` (``config``: default the preset's).

    With ``gold``, PPO is scored by the world's gold reward instead (a perfect reward model, lab 05's
    ceiling run); the reward model in ``reward_dir`` then only gives the proxy figures of the evaluations.

    Trains on the training prompts, evaluates on the held-out prompts every ``eval_every`` iterations
    (proxy, gold, KL, win rate vs SFT), and once more at the end with more samples. Returns a
    :class:`~labkit.evaluate.PolicyRun` (its ``report()`` is the stage's report) whose ``outputs``
    also hold the models it loaded: ``reference`` (the SFT policy), ``reward_model`` and
    ``reward_tokenizer``. The ``ppo`` stage, lab 05's run panel and lab 08's race call it.
    """
    config = config or preset.ppo
    device = runtime.device()
    policy, tokenizer, _ = checkpoint.load_checkpoint(sft_dir, device=device)
    reference, _, _ = checkpoint.load_checkpoint(sft_dir, device=device)
    reward_model, reward_tokenizer, _ = checkpoint.load_checkpoint(reward_dir, device=device)
    judge = heldout_judge(preset, tokenizer, reference, reward_model, reward_tokenizer,
                          samples_per_prompt=config.eval_samples)
    reward_fn = gold_reward_fn if gold else reward_model_fn(reward_model, reward_tokenizer)
    result = train_ppo(policy, tokenizer, prefs.alignment_prompts("train"), reward_fn,
                       config, reference=None if config.lora_rank else reference, gold_fn=gold_reward_fn,
                       eval_fn=judge, seed=preset.seed, progress=progress, callback=callback)
    heldout = prefs.alignment_prompts("heldout")
    final = evaluate_policy(result.policy, tokenizer, heldout, reference, reward_model=reward_model,
                            reward_tokenizer=reward_tokenizer, samples_per_prompt=config.final_eval_samples,
                            seed=preset.seed, max_new_tokens=preset.sft.max_new_tokens, name="PPO", progress=progress)
    extra = {"sft_proxy_reward": float(final.answers["reference proxy"].mean()),
             "rollout_seconds": result.rollout_seconds, "update_seconds": result.update_seconds,
             "sampled_tokens": result.sampled_tokens, "iterations": result.steps, "lora_rank": config.lora_rank,
             "beta": config.beta, "eps": config.eps, "evaluations": result.evaluations}
    return PolicyRun.judged("PPO", final, heldout, result, extra=extra,
                            answers_sampled=result.steps * config.prompts_per_batch * config.samples_per_prompt,
                            outputs={"tokenizer": tokenizer, "reference": reference, "reward_model": reward_model,
                                     "reward_tokenizer": reward_tokenizer})


def train_ppo_stage(preset: Preset, inputs: dict[str, Path], progress: bool, callback: Callable | None):
    """Align the SFT policy with PPO against the reward model; judge it on held-out prompts by the gold reward."""
    run = run_ppo(preset, inputs["sft"], inputs["reward"], progress=progress, callback=callback)
    return StageOutput(run.outputs["policy"], run.outputs["tokenizer"], run.report(), run.history)


# ------------------------------------------------------------------------------- the bench

def bench_ppo_slice(preset: Preset, inputs: dict[str, Path], steps: int, rank: int,
                    prompts: int | None = None, samples: int | None = None) -> dict:
    """Load PPO's models and take ``steps`` PPO iterations of ``prompts`` x ``samples`` answers (default
    the preset's); memory and time per iteration, sampling (rollout) and update apart.

    The models are the policy with its value head, the reference (a second copy with full
    fine-tuning; the same base with adapters off with LoRA) and the reward model; nothing else is
    loaded (no evaluation). The peak memory is reset just before loading them, so ``peak_MB`` is
    the highest the process reached while loading them and training, and ``added_MB`` what that
    added to Python, torch and transformers alone (``before_MB``).
    """
    device = runtime.device()
    config = dataclasses.replace(preset.ppo, iterations=steps, lora_rank=rank,
                                 prompts_per_batch=prompts or preset.ppo.prompts_per_batch,
                                 samples_per_prompt=samples or preset.ppo.samples_per_prompt)
    before = measure.memory_start(device)
    policy, tokenizer, _ = checkpoint.load_checkpoint(inputs["sft"], device=device)
    reward_model, reward_tokenizer, _ = checkpoint.load_checkpoint(inputs["reward"], device=device)
    reference = None if rank else checkpoint.load_checkpoint(inputs["sft"], device=device)[0]
    clock = measure.StepClock()
    result = train_ppo(policy, tokenizer, prefs.alignment_prompts("train"),
                       reward_model_fn(reward_model, reward_tokenizer), config, reference=reference,
                       seed=preset.seed, progress=False, callback=clock)
    in_memory = result.total_parameters + sum(p.numel() for p in reward_model.parameters())
    answers = config.prompts_per_batch * config.samples_per_prompt
    return {**measure.memory_row(device, before, in_memory, result.trainable_parameters),
            **measure.timing_row(result.seconds, steps, clock, answers, "answer", result.sampled_tokens / steps),
            "prompts_per_step": config.prompts_per_batch, "samples_per_prompt": config.samples_per_prompt,
            "answers_per_step": answers, "max_new_tokens": config.max_new_tokens,
            "updates_per_step": config.ppo_epochs * -(-answers // config.minibatch_size),
            "rollout_seconds_per_step": measure.sig(result.rollout_seconds / steps),
            "rollout_tokens_per_s": measure.sig(result.sampled_tokens / result.rollout_seconds),
            "update_seconds_per_step": measure.sig(result.update_seconds / steps)}


def models_held(rank: int) -> str:
    """What a PPO step holds in memory, in words, at LoRA ``rank`` (0 = full fine-tuning)."""
    if rank:
        return ("one frozen base serving as policy (adapters on), reference (adapters off) and value trunk, "
                "the value head, and the reward model")
    return "the policy with its value head, a reference copy of the SFT policy, and the reward model"


# ------------------------------------------------------------------------------- lab 08's race

def race_ppo(inputs: RaceInputs, rank: int) -> PolicyRun:
    """PPO in the race: the stage's recipe at LoRA ``rank``, judged along the way for the curve. It loads
    (and judges with) its own SFT policy and reward model, as the stage does."""
    preset = inputs.preset
    config = dataclasses.replace(preset.ppo, lora_rank=rank, eval_every=inputs.eval_every(preset.ppo.iterations))
    return run_ppo(preset, inputs.sft_dir, inputs.reward_dir, config)


register(Stage(
    "ppo", needs=("sft", "reward"), fields=("name", "world_seed", "ppo", "seed"),
    report=("seconds", *PolicyRun.NUMBERS, "sft_proxy_reward", "iterations", "lora_rank", "beta", "eps"),
    train=train_ppo_stage, bench=bench_ppo_slice, lora_rank=lambda preset: preset.ppo.lora_rank,
    comparisons=("lora_vs_full",),
    version=1,  # 1: the SFT answers its win rate meets are sampled independently of the policy's
    contenders=(Contender("PPO", race_ppo), Contender("PPO + LoRA", race_ppo, lora=True))))
