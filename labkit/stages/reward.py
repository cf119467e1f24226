"""Stages ``reward`` and ``reward_naive``: a reward model learns the annotators' preferences (lab 04).

``reward`` learns from the world's preference pairs and from comparisons of the SFT policy's own
answers (the answers a policy will try once it is optimised against it); ``reward_naive`` from the
demonstrators' pairs alone (lab 05 over-optimises it). Both come from :func:`fit_reward_model`,
which lab 04's data-size sweep calls too. Best-of-n, the training-free use of a reward model, is
this module's entry in lab 08's race.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

import numpy as np

from labkit import checkpoint, measure, runtime
from labkit.metrics import pairwise_accuracy, scorer_accuracy
from labkit.presets import Preset
from labkit.evaluate import PolicyRun
from labkit.stages.base import Contender, RaceInputs, Stage, StageOutput, register
from labkit.stages.sft import judge_sft
from labkit.tokenizer import load_tokenizer
from labkit.train.reward import pair_scores, policy_comparisons, reward_model_from, train_reward
from labkit.world import preferences as prefs


def fit_reward_model(preset, sft_dir: Path, n_pairs: int, *, policy_pairs: int = 0, judge_policy_answers: bool = False,
                     progress: bool = False, callback: Callable | None = None) -> dict:
    """A reward model from the SFT checkpoint in ``sft_dir``, trained on the first ``n_pairs`` training pairs.

    With ``policy_pairs`` it also learns from that many comparisons of the SFT policy's own answers
    and wild variants of them (:func:`policy_comparisons`), the answers a policy will try once it is
    optimised against the reward model. Returns ``model``, ``tokenizer``, ``result`` (a
    :class:`TrainResult`), the held-out ``test`` pairs, the model's held-out ``accuracy`` and the
    ``bayes_ceiling`` of those pairs; with ``judge_policy_answers`` also ``policy_test`` (held-out
    comparisons of policy-like answers), ``policy_accuracy`` and ``policy_bayes_ceiling``. The
    ``reward`` and ``reward_naive`` stages and lab 04's data-size sweep all call it.
    """
    if n_pairs < 1:
        raise ValueError(f"number of training pairs must be >= 1, got {n_pairs}")
    train = prefs.preference_pairs("train", n_pairs, seed=preset.world_seed)
    test = prefs.preference_pairs("test", preset.reward.eval_pairs, seed=preset.world_seed)
    policy_test = []
    if policy_pairs or judge_policy_answers:
        sft_model, sft_tokenizer, _ = checkpoint.load_checkpoint(sft_dir, device=runtime.device())
        if policy_pairs:
            train = train + policy_comparisons(preset, sft_model, sft_tokenizer, "train", policy_pairs,
                                               progress=progress)
        if judge_policy_answers:
            policy_test = policy_comparisons(preset, sft_model, sft_tokenizer, "heldout",
                                             preset.reward.policy_eval_pairs, progress=progress)
        del sft_model
    runtime.seed_everything(preset.seed)  # the new scalar head's random init: the same in every run
    model, tokenizer = reward_model_from(sft_dir, preset.reward.pooling), load_tokenizer(sft_dir)
    result = train_reward(model, tokenizer, train, preset.reward, seed=preset.seed, progress=progress,
                          callback=callback)
    fit = {"model": model, "tokenizer": tokenizer, "result": result, "test": test, "train_pairs": len(train),
           "accuracy": pairwise_accuracy(*pair_scores(model, tokenizer, test)),
           "bayes_ceiling": prefs.bayes_ceiling(test)}
    if policy_test:
        fit.update(policy_test=policy_test, policy_accuracy=pairwise_accuracy(*pair_scores(model, tokenizer, policy_test)),
                   policy_bayes_ceiling=prefs.bayes_ceiling(policy_test))
    return fit


def train_reward_stage(preset: Preset, inputs: dict[str, Path], progress: bool, callback: Callable | None,
                       policy_pairs: int | None = None):
    """Train the reward model the alignment stages use: on the world's preference pairs and on
    comparisons of the SFT policy's own answers; compare with the Bayes ceilings."""
    policy_pairs = preset.reward.policy_pairs if policy_pairs is None else policy_pairs
    fit = fit_reward_model(preset, inputs["sft"], preset.reward.train_pairs, policy_pairs=policy_pairs,
                           judge_policy_answers=True, progress=progress, callback=callback)
    test, result = fit["test"], fit["result"]
    metrics = {
        "accuracy": fit["accuracy"],
        "bayes_ceiling": fit["bayes_ceiling"],
        "share_of_ceiling": fit["accuracy"] / fit["bayes_ceiling"],
        "policy_accuracy": fit["policy_accuracy"],
        "policy_bayes_ceiling": fit["policy_bayes_ceiling"],
        "policy_pairs": policy_pairs,
        "gold_reward_accuracy": scorer_accuracy(test, prefs.gold_reward),
        "length_only_accuracy": scorer_accuracy(test, prefs.length_score),
        "keyword_only_accuracy": scorer_accuracy(test, prefs.keyword_score),
        "train_seconds": result.seconds,
        "steps": result.steps,
        "train_pairs": preset.reward.train_pairs,
        "test_pairs": len(test),
    }
    return StageOutput(fit["model"], fit["tokenizer"], metrics, result.history)


def train_reward_naive_stage(preset: Preset, inputs: dict[str, Path], progress: bool, callback: Callable | None):
    """The in-distribution reward model: the demonstrators' comparisons only, for ``reward_naive.epochs``
    passes (lab 05 over-optimises it)."""
    naive = preset.replace(reward=dataclasses.replace(preset.reward, epochs=preset.reward_naive.epochs))
    return train_reward_stage(naive, inputs, progress, callback, policy_pairs=0)


# ------------------------------------------------------------------------------- the bench

def _reward_slice(preset: Preset, sft_dir: Path, steps: int, with_policy_pairs: bool) -> dict:
    """``steps`` steps of TRL's RewardTrainer from the SFT checkpoint. Without ``with_policy_pairs`` (the
    ``reward_naive`` stage) it learns from the world's preference pairs; with them (``reward``) also
    from comparisons of the SFT policy's own answers, in the stage's proportion (sampled here, one
    answer per training prompt, before the measurement)."""
    config = dataclasses.replace(preset.reward, epochs=1)
    n = steps * config.batch_size
    n_policy = round(n * config.policy_pairs / (config.train_pairs + config.policy_pairs)) if with_policy_pairs else 0
    device = runtime.device()
    pairs = prefs.preference_pairs("train", n - n_policy, seed=preset.world_seed)
    if n_policy:
        sft_model, sft_tokenizer, _ = checkpoint.load_checkpoint(sft_dir, device=device)
        few = preset.replace(reward=dataclasses.replace(config, policy_samples=1))
        pairs += policy_comparisons(few, sft_model, sft_tokenizer, "train", n_policy)
        del sft_model
    before = measure.memory_start(device)
    runtime.seed_everything(preset.seed)
    model, tokenizer = reward_model_from(sft_dir, preset.reward.pooling), load_tokenizer(sft_dir)
    clock = measure.StepClock()
    result = train_reward(model, tokenizer, pairs, config, seed=preset.seed, progress=False, callback=clock)
    n_params = sum(p.numel() for p in model.parameters())
    return {**measure.memory_row(device, before, n_params, n_params),
            **measure.timing_row(result.seconds, result.steps, clock, config.batch_size, "preference pair")}


def bench_reward_slice(preset: Preset, inputs: dict[str, Path], steps: int, rank: int = 0) -> dict:
    return _reward_slice(preset, inputs["sft"], steps, with_policy_pairs=True)


def bench_reward_naive_slice(preset: Preset, inputs: dict[str, Path], steps: int, rank: int = 0) -> dict:
    return _reward_slice(preset, inputs["sft"], steps, with_policy_pairs=False)


# ------------------------------------------------------------------------------- lab 08's race: best-of-n

def best_of_n_curve(inputs: RaceInputs, sft) -> tuple[object, list[dict]]:
    """Best-of-n for n = 1, 2, 4, … up to ``preset.showdown.best_of_n``: for each of the SFT evaluation's
    answers, n fresh SFT answers of which the reward model keeps its favourite. Returns the evaluation
    at the largest n (win rate against the reference answers every contender meets, ``sft``'s
    ``reference gold``) and the curve over n (``kl``: estimated on each request's answers drawn,
    :func:`labkit.evaluate.best_of_n_kl_estimate`; ``kl_bound``: log n − (n − 1)/n)."""
    from labkit.evaluate import (PolicyEvaluation, best_of_n_kl, best_of_n_sampled_kl, gold_table, proxy_scores,
                                 sample_answers)
    from labkit.metrics import win_rate

    preset, heldout = inputs.preset, prefs.alignment_prompts("heldout")
    n_max, per_prompt = preset.showdown.best_of_n, preset.ppo.final_eval_samples
    drawn = sample_answers(inputs.reference, inputs.tokenizer, heldout, n=per_prompt * n_max, seed=preset.seed + 1,
                           max_new_tokens=preset.sft.max_new_tokens)
    table = gold_table(drawn)
    table["proxy"] = proxy_scores(inputs.reward_model, inputs.reward_tokenizer, drawn).numpy()
    proxy = table["proxy"].to_numpy().reshape(-1, n_max)  # one row of n_max candidates per answer judged
    curve, n = [], 1
    while n <= n_max:
        # the first n candidates compete; the reward model's favourite is kept
        best = proxy[:, :n].argmax(axis=1) + np.arange(len(proxy)) * n_max
        picked = table.iloc[best].reset_index(drop=True)
        curve.append({"step": n, "n": n, "gold": float(picked["gold"].mean()),
                      "helpfulness": float(picked["helpfulness"].mean()), "safety": float(picked["safety"].mean()),
                      "proxy": float(picked["proxy"].mean()),
                      "kl": best_of_n_sampled_kl(drawn.answers, table["proxy"].tolist(), per_prompt * n_max, n),
                      "kl_bound": best_of_n_kl(n),
                      "win_rate": win_rate(picked["gold"].tolist(), sft.answers["reference gold"].tolist())})
        n *= 2
    picked["reference gold"] = sft.answers["reference gold"].values
    last = curve[-1]
    return PolicyEvaluation(name="best-of-n", gold_reward=last["gold"], helpfulness=last["helpfulness"],
                            safety=last["safety"], proxy_reward=last["proxy"], win_rate=last["win_rate"],
                            kl=last["kl"], length=float(picked["words"].mean()),
                            distinct=picked["answer"].nunique() / len(picked), answers=picked), curve


def race_best_of_n(inputs: RaceInputs, rank: int = 0) -> PolicyRun:
    """Best-of-n in the race: nothing trained; its cost comes at answer time (n answers drawn and scored
    per answer), timed as its ``train_seconds``. It has no greedy answer of its own."""
    sft = judge_sft(inputs, "best-of-n")
    start = time.perf_counter()
    final, curve = best_of_n_curve(inputs, sft)
    return PolicyRun.judged("best-of-n", final, prefs.alignment_prompts("heldout"),
                            train_seconds=time.perf_counter() - start, evaluations=curve,
                            extra={"kl_bound": curve[-1]["kl_bound"]},
                            outputs={"policy": inputs.reference, "tokenizer": inputs.tokenizer})


REWARD_REPORT = ("seconds", "accuracy", "bayes_ceiling", "share_of_ceiling", "policy_accuracy",
                 "policy_bayes_ceiling", "gold_reward_accuracy", "length_only_accuracy", "keyword_only_accuracy",
                 "train_seconds", "steps", "train_pairs", "policy_pairs", "test_pairs")

register(Stage("reward", needs=("sft",), fields=("name", "world_seed", "reward", "seed"), report=REWARD_REPORT,
               train=train_reward_stage, bench=bench_reward_slice,
               contenders=(Contender("best-of-n", race_best_of_n, greedy=False),)))
register(Stage("reward_naive", needs=("sft",), fields=("name", "world_seed", "reward", "reward_naive", "seed"),
               report=REWARD_REPORT, train=train_reward_naive_stage, bench=bench_reward_naive_slice,
               ignores=("reward.policy_edits", "reward.policy_additions")))  # it learns from no policy-like pairs
