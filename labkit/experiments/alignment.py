"""Lab 05's PPO runs (the run panel's single runs, the over-optimisation run) and lab 06's DPO runs
(the β panel, off-policy vs on-policy pairs).

Each starts from the cached SFT policy (and, for PPO, a cached reward model) and calls
:func:`labkit.stages.ppo.run_ppo` or :func:`labkit.stages.dpo.run_dpo`, the same recipe as the ``ppo`` and
``dpo`` stages, with some settings changed.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from labkit import pipeline
from labkit.experiments import Run
from labkit.presets import Preset, get_preset
from labkit.stages.dpo import run_dpo
from labkit.stages.ppo import run_ppo


def ppo_experiment(eps: float | None = None, beta: float | None = None, rank: int | None = None,
                   lr: float | None = None, preset: Preset | None = None, *, reward_stage: str = "reward",
                   iterations: int | None = None, eval_every: int | None = None, progress: bool = False,
                   callback: Callable | None = None) -> Run:
    """One PPO run from the SFT policy against the reward model of ``reward_stage``.

    ``eps`` (clip range), ``beta`` (KL coefficient), ``rank`` (0 = full fine-tuning, else LoRA
    rank), ``lr`` (learning rate, for full fine-tuning and LoRA alike), ``iterations`` and
    ``eval_every`` replace the preset's PPO settings; ``None`` keeps them. The row holds the
    settings and the held-out results (gold reward of PPO and SFT, win rate, KL, proxy), under the
    names of :class:`~labkit.evaluate.PolicyRun`'s fields; outputs hold the final ``evaluation``
    (with its answers), the trained ``policy``, the SFT policy (``reference``) and reward model the
    run loaded (for comparisons without loading them again), and the whole ``run``.
    """
    preset = preset or get_preset()
    changes = {"eps": eps, "beta": beta, "lora_rank": rank, "iterations": iterations, "eval_every": eval_every}
    if lr is not None:
        changes.update(lr=lr, lora_lr=lr)
    config = dataclasses.replace(preset.ppo, **{k: v for k, v in changes.items() if v is not None})
    run = run_ppo(preset, pipeline.ensure("sft", preset, progress=progress),
                  pipeline.ensure(reward_stage, preset, progress=progress), config, progress=progress,
                  callback=callback)
    row = {"eps": config.eps, "beta": config.beta, "rank": config.lora_rank, "lr": config.effective_lr,
           "reward_model": reward_stage, **{k: getattr(run, k) for k in PPO_RESULTS}}
    return Run(row=row, history=run.history, outputs={**run.outputs, "run": run})


# What a PPO or DPO run's row reports (fields of labkit.evaluate.PolicyRun; plots.COLUMNS gives their headers)
PPO_RESULTS = ("win_rate", "gold_reward", "sft_gold_reward", "kl", "proxy_reward", "train_seconds",
               "trainable_parameters")


# ------------------------------------------------------------------------------- lab 06: DPO

def onpolicy_pairs(preset: Preset, n: int, *, reward_stage: str = "reward", progress: bool = False) -> list[dict]:
    """``n`` pairs of the SFT policy's own answers to the training prompts, labelled by the reward model.

    One round of on-policy data: ``preset.dpo_demos.onpolicy_samples`` answers per training prompt, two different
    ones per pair, the one the reward model scores higher chosen (see
    :func:`labkit.train.dpo.pairs_from_samples`).
    """
    from labkit import checkpoint
    from labkit.evaluate import proxy_scores, sample_answers
    from labkit.train.dpo import pairs_from_samples
    from labkit.world import preferences as prefs

    policy, tokenizer, _ = checkpoint.load_checkpoint(pipeline.ensure("sft", preset, progress=progress))
    reward_model, reward_tokenizer, _ = checkpoint.load_checkpoint(pipeline.ensure(reward_stage, preset,
                                                                                   progress=progress))
    samples = sample_answers(policy, tokenizer, prefs.alignment_prompts("train"), n=preset.dpo_demos.onpolicy_samples,
                             seed=preset.seed, max_new_tokens=preset.sft.max_new_tokens, progress=progress,
                             desc="SFT answers to the training prompts")
    return pairs_from_samples(samples, proxy_scores(reward_model, reward_tokenizer, samples), n, seed=preset.seed)


def dpo_experiment(beta: float | None = None, rank: int | None = None, lr: float | None = None,
                   preset: Preset | None = None, *, pairs: list[dict] | None = None, data: str = "world pairs",
                   progress: bool = False, callback: Callable | None = None) -> Run:
    """One DPO run from the SFT policy, as the ``dpo`` stage does it with some settings changed.

    ``beta``, ``rank`` (0 = full fine-tuning, else LoRA rank) and ``lr`` (for full fine-tuning and
    LoRA alike) replace the preset's DPO settings; ``None`` keeps them. ``pairs`` replaces the
    world's training pairs (``data`` names them in the row). The row holds the settings and the
    held-out results: gold reward of DPO and SFT, win rate, KL, the implicit reward's accuracy on
    held-out pairs and the mean change of log π for their chosen and rejected answers. Outputs hold
    the final evaluation, the trained policy, the SFT policy and the metrics.
    """
    preset = preset or get_preset()
    changes = {"beta": beta, "lora_rank": rank}
    if lr is not None:
        changes.update(lr=lr, lora_lr=lr)
    config = dataclasses.replace(preset.dpo, **{k: v for k, v in changes.items() if v is not None})
    run = run_dpo(preset, pipeline.ensure("sft", preset, progress=progress), config, pairs=pairs, progress=progress,
                  callback=callback)
    row = {"beta": config.beta, "rank": config.lora_rank, "lr": config.effective_lr, "pairs": data,
           **{k: getattr(run, k) for k in ("win_rate", "gold_reward", "sft_gold_reward", "kl")},
           **{k: run.extra[k] for k in DPO_EXTRA}, "train_seconds": run.train_seconds,
           "trainable_parameters": run.trainable_parameters}
    return Run(row=row, history=run.history, outputs={**run.outputs, "run": run})


DPO_EXTRA = ("implicit_accuracy", "chosen_logratio", "rejected_logratio")  # DPO's own numbers in its row
