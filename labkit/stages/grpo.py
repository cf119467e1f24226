"""Stage ``grpo``: the word-problem policy learns from a rule reward with TRL's GRPOTrainer (lab 07).

Its recipe (:func:`run_grpo`, which lab 07's runs call with other settings), GRPO against a learned
reward model on PPO's prompts (:func:`run_grpo_on_reward_model`, lab 08's race), its bench slice
and its entries in the race: GRPO at PPO's budget of sampled answers, with and without LoRA, and
GRPO with LoRA trained for longer.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Callable

from labkit import checkpoint, measure, runtime
from labkit.evaluate import (PolicyRun, evaluate_policy, evaluate_problems, gold_reward, heldout_judge,
                             reward_model_reward)
from labkit.presets import Preset
from labkit.rewards import correctness_reward
from labkit.stages.base import Contender, RaceInputs, Stage, StageOutput, register
from labkit.stages.sft_math import problem_rows
from labkit.train.grpo import train_grpo
from labkit.world import preferences as prefs
from labkit.world import problems as word_problems


def training_problems(preset: Preset, n: int) -> list[dict]:
    """GRPO's ``n`` training prompts: word problems after the sft_math demonstrations' (new problems, same
    distribution; their answers are never shown, only checked)."""
    return word_problems.problems("train", n, seed=preset.world_seed, start=preset.sft_math.train_problems)


def run_grpo(preset: Preset, start_dir: Path, config=None, *, reward_funcs: list | None = None,
             reward_weights: list[float] | None = None, progress: bool = False, callback: Callable | None = None) -> dict:
    """GRPO from the checkpoint in ``start_dir`` (the ``sft_math`` policy) on the training word problems.

    ``reward_funcs`` default to ``[labkit.rewards.correctness_reward]`` (``reward_weights``: see
    :func:`~labkit.train.grpo.train_grpo`); ``config`` to the preset's.
    The policy is judged before and after on the held-out problems, never trained on. Returns
    ``result`` (:class:`~labkit.train.grpo.GRPOResult`), ``before`` and ``after``
    (:class:`~labkit.evaluate.ProblemEvaluation`), ``tokenizer`` and ``metrics`` (the stage's
    report). The ``grpo`` stage and lab 07's runs call it.
    """
    config = config or preset.grpo
    reward_funcs = reward_funcs or [correctness_reward]
    policy, tokenizer, _ = checkpoint.load_checkpoint(start_dir, device=runtime.device())
    test = problem_rows(preset, "test", config.eval_problems)
    max_new = preset.sft_math.max_new_tokens
    before = evaluate_problems(policy, tokenizer, test, max_new_tokens=max_new, seed=preset.seed)
    train = training_problems(preset, config.steps * config.prompts_per_step)
    result = train_grpo(policy, tokenizer, train, reward_funcs, config, reward_weights=reward_weights, seed=preset.seed,
                        progress=progress, callback=callback)
    after = evaluate_problems(result.policy, tokenizer, test, max_new_tokens=max_new, seed=preset.seed)
    zero = [h["zero_std_share"] for h in result.history if "zero_std_share" in h]
    metrics = {
        "accuracy": after.accuracy, "sft_accuracy": before.accuracy,
        "sampled_accuracy": after.sampled_accuracy, "sft_sampled_accuracy": before.sampled_accuracy,
        "worked_share": after.worked_share, "sft_worked_share": before.worked_share,
        "right_working_share": after.right_working_share, "sft_right_working_share": before.right_working_share,
        "length": after.length, "sft_length": before.length,
        "zero_std_share": sum(zero) / len(zero) if zero else None,
        "train_seconds": result.seconds, "seconds_per_step": result.seconds / max(1, result.steps),
        "steps": result.steps, "trainable_parameters": result.trainable_parameters,
        "group_size": config.group_size, "prompts_per_step": config.prompts_per_step, "eps": config.eps,
        "beta": config.beta, "iterations": config.iterations, "lora_rank": config.lora_rank, "test_problems": len(test),
        "rewards": [getattr(f, "__name__", str(f)) for f in reward_funcs], "reward_weights": reward_weights,
    }
    return {"result": result, "before": before, "after": after, "tokenizer": tokenizer, "metrics": metrics}


def train_grpo_stage(preset: Preset, inputs: dict[str, Path], progress: bool, callback: Callable | None):
    """Train the word-problem policy with GRPO on the exact-answer reward; judge it on held-out problems."""
    run = run_grpo(preset, inputs["sft_math"], progress=progress, callback=callback)
    return StageOutput(run["result"].policy, run["tokenizer"], run["metrics"], run["result"].history)


def run_grpo_on_reward_model(preset: Preset, sft_dir: Path, reward_dir: Path, config, *, progress: bool = False,
                             callback: Callable | None = None, eval_every: int = 0) -> PolicyRun:
    """GRPO from the SFT policy against the reward model in ``reward_dir``, on PPO's training prompts.

    A reward model is just another reward function to GRPO (:func:`labkit.evaluate.reward_model_reward`);
    the gold reward is logged beside it at weight 0. Judged as PPO is: on the held-out prompts
    (every ``eval_every`` steps while it trains, when ≥ 1, and at the end), gold reward, win rate and
    KL vs the SFT policy. Returns a :class:`~labkit.evaluate.PolicyRun` whose ``outputs`` also hold
    the models it loaded (``reference``, ``reward_model``, ``reward_tokenizer``).
    """
    policy, tokenizer, _ = checkpoint.load_checkpoint(sft_dir)
    reference, _, _ = checkpoint.load_checkpoint(sft_dir)
    reward_model, reward_tokenizer, _ = checkpoint.load_checkpoint(reward_dir)
    judge = heldout_judge(preset, tokenizer, reference, reward_model, reward_tokenizer,
                          samples_per_prompt=preset.ppo.eval_samples) if eval_every else None
    result = train_grpo(policy, tokenizer, prefs.alignment_prompts("train"),
                        [reward_model_reward(reward_model, reward_tokenizer), gold_reward], config,
                        reward_weights=[1.0, 0.0], seed=preset.seed, progress=progress, callback=callback,
                        eval_fn=judge, eval_every=eval_every)
    heldout = prefs.alignment_prompts("heldout")
    final = evaluate_policy(result.policy, tokenizer, heldout, reference, reward_model=reward_model,
                            reward_tokenizer=reward_tokenizer, samples_per_prompt=preset.ppo.final_eval_samples,
                            seed=preset.seed, max_new_tokens=preset.sft.max_new_tokens, name="GRPO", progress=progress)
    return PolicyRun.judged("GRPO", final, heldout, result,
                            answers_sampled=result.steps * config.prompts_per_step * config.group_size,
                            extra={"group_size": config.group_size, "beta": config.beta, "lora_rank": config.lora_rank,
                                   "steps": result.steps},
                            outputs={"tokenizer": tokenizer, "reference": reference, "reward_model": reward_model,
                                     "reward_tokenizer": reward_tokenizer})


def on_reward_model_config(preset: Preset, **changes):
    """GRPO's settings against a reward model: the preset's, answers as long as PPO's and the SFT stage's
    evaluation allow (``preset.sft.max_new_tokens``), with ``changes`` (None values keep the preset's)."""
    return dataclasses.replace(preset.grpo, max_new_tokens=preset.sft.max_new_tokens,
                               **{k: v for k, v in changes.items() if v is not None})


# ------------------------------------------------------------------------------- the bench

def bench_grpo_slice(preset: Preset, inputs: dict[str, Path], steps: int, rank: int) -> dict:
    """Load the ``sft_math`` policy and take ``steps`` GRPO steps; memory and time, sampling apart.

    GRPO holds one model: the policy (no value head; the rule reward
    :func:`labkit.rewards.correctness_reward` is no model; with β = 0, the preset's, no reference).
    The prompts are training word problems after the sft_math demonstrations', as in the stage; the
    config is the preset's with ``lora_rank=rank``. ``rollout_seconds_per_step`` is the time in
    ``generate``, ``other_seconds_per_step`` the rest: scoring, log-probs, the gradient step and the
    trainer's own set-up and bookkeeping. ``tokens_per_step``: the mean answer length TRL logged
    times the answers per step.
    """
    device = runtime.device()
    config = dataclasses.replace(preset.grpo, steps=steps, lora_rank=rank,
                                 warmup_steps=min(preset.grpo.warmup_steps, steps))
    answers = config.group_size * config.prompts_per_step
    rows = training_problems(preset, steps * config.prompts_per_step)
    before = measure.memory_start(device)
    policy, tokenizer, _ = checkpoint.load_checkpoint(inputs["sft_math"], device=device)
    base = sum(p.numel() for p in policy.parameters())
    clock = measure.StepClock()
    with measure.GenerateClock(policy) as sampling:
        result = train_grpo(policy, tokenizer, rows, [correctness_reward], config, seed=preset.seed, progress=False,
                            callback=clock)
    reference = base if config.beta > 0 and not rank else 0   # TRL loads a reference copy only then
    in_memory = base + (result.trainable_parameters if rank else 0) + reference
    lengths = [h["length"] for h in result.history if "length" in h]
    taken = max(1, result.steps)
    return {**measure.memory_row(device, before, in_memory, result.trainable_parameters),
            **measure.timing_row(result.seconds, taken, clock, answers, "answer",
                                 answers * sum(lengths) / len(lengths) if lengths else None),
            "prompts_per_step": config.prompts_per_step, "samples_per_prompt": config.group_size,
            "answers_per_step": answers, "max_new_tokens": config.max_new_tokens, "updates_per_step": 1,
            "rollout_seconds_per_step": measure.sig(sampling.seconds / taken),
            "other_seconds_per_step": measure.sig((result.seconds - sampling.seconds) / taken)}


def models_held(rank: int, beta: float = 0.0) -> str:
    """What a GRPO step holds in memory, in words, at LoRA ``rank`` (0 = full fine-tuning) and KL weight ``beta``."""
    reference = ("no reference (beta 0)" if not beta else
                 "the reference as the base with adapters off" if rank else "a reference copy (beta > 0)")
    return (f"the policy only{' (a frozen base with LoRA adapters)' if rank else ''}: no value head, "
            f"no reward model (the reward is a rule), {reference}")


# ------------------------------------------------------------------------------- lab 08's race

def budget_steps(preset: Preset) -> int:
    """GRPO steps that sample as many answers in training as PPO's iterations do (the shared budget)."""
    ppo = preset.ppo.iterations * preset.ppo.prompts_per_batch * preset.ppo.samples_per_prompt
    return max(1, math.ceil(ppo / (preset.grpo.prompts_per_step * preset.grpo.group_size)))


def race_grpo(inputs: RaceInputs, rank: int, long: bool = False) -> PolicyRun:
    """GRPO in the race, against the same reward model and prompts as PPO: at PPO's budget of sampled
    answers, or with ``long`` for ``preset.showdown.long_grpo_steps`` steps (on a CPU about PPO's
    training time, since a GRPO step takes one update where a PPO iteration takes several)."""
    preset = inputs.preset
    steps = preset.showdown.long_grpo_steps if long else budget_steps(preset)
    return run_grpo_on_reward_model(preset, inputs.sft_dir, inputs.reward_dir,
                                    on_reward_model_config(preset, lora_rank=rank, steps=steps),
                                    eval_every=inputs.eval_every(steps))


register(Stage(
    "grpo", needs=("sft_math",), fields=("name", "world_seed", "sft_math", "grpo", "seed"),
    report=("seconds", "accuracy", "sft_accuracy", "sampled_accuracy", "sft_sampled_accuracy", "worked_share",
            "sft_worked_share", "right_working_share", "sft_right_working_share", "length", "sft_length",
            "zero_std_share", "train_seconds", "seconds_per_step",
            "steps", "trainable_parameters", "group_size", "prompts_per_step", "eps", "beta", "iterations",
            "lora_rank"),
    train=train_grpo_stage, bench=bench_grpo_slice, lora_rank=lambda preset: preset.grpo.lora_rank,
    comparisons=("ppo_vs_grpo",),
    # 1: reports the share of answers whose working is right step for step; 2: the update leaves out the answers of
    # zero advantage (the same steps, less arithmetic: labkit.train.grpo.InformativeGRPOTrainer)
    version=2,
    contenders=(Contender("GRPO", race_grpo), Contender("GRPO + LoRA", race_grpo, lora=True),
                Contender("GRPO + LoRA, long", functools.partial(race_grpo, long=True), lora=True))))
