"""Lab 05's PPO runs: the run panel's single runs and the over-optimisation run.

Each starts from the cached SFT policy and a cached reward model and calls
:func:`labkit.stages.run_ppo`, the same recipe as the ``ppo`` stage, with some settings changed.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from labkit import pipeline
from labkit.experiments import Run
from labkit.presets import Preset, get_preset
from labkit.stages import run_ppo


def ppo_experiment(eps: float | None = None, beta: float | None = None, rank: int | None = None,
                   lr: float | None = None, preset: Preset | None = None, *, reward_stage: str = "reward",
                   iterations: int | None = None, eval_every: int | None = None, progress: bool = False,
                   callback: Callable | None = None) -> Run:
    """One PPO run from the SFT policy against the reward model of ``reward_stage``.

    ``eps`` (clip range), ``beta`` (KL coefficient), ``rank`` (0 = full fine-tuning, else LoRA
    rank), ``lr`` (learning rate, for full fine-tuning and LoRA alike), ``iterations`` and
    ``eval_every`` replace the preset's PPO settings; ``None`` keeps them. The row holds the
    settings and the held-out results (gold reward of PPO and SFT, win rate, KL, proxy); outputs
    hold the final evaluation (with its answers), the trained policy, and the SFT policy and reward
    model the run loaded (for comparisons without loading them again).
    """
    preset = preset or get_preset()
    changes = {"eps": eps, "beta": beta, "lora_rank": rank, "iterations": iterations, "eval_every": eval_every}
    if lr is not None:
        changes.update(lr=lr, lora_lr=lr)
    config = dataclasses.replace(preset.ppo, **{k: v for k, v in changes.items() if v is not None})
    run = run_ppo(preset, pipeline.ensure("sft", preset, progress=progress),
                  pipeline.ensure(reward_stage, preset, progress=progress), config, progress=progress,
                  callback=callback)
    m = run["metrics"]
    row = {"ε": config.eps, "β": config.beta, "rank": config.lora_rank,
           "lr": config.lora_lr if config.lora_rank else config.lr, "reward model": reward_stage,
           "win rate": m["win_rate"], "gold": m["gold_reward"], "SFT gold": m["sft_gold_reward"], "KL": m["kl"],
           "proxy": m["proxy_reward"], "seconds": m["train_seconds"],
           "trainable parameters": m["trainable_parameters"]}
    return Run(row=row, history=run["result"].history,
               outputs={"evaluation": run["evaluation"], "policy": run["result"].policy, "tokenizer": run["tokenizer"],
                        "metrics": m, "reference": run["reference"], "reward_model": run["reward_model"],
                        "reward_tokenizer": run["reward_tokenizer"]})
