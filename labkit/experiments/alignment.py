"""Lab 05's PPO runs (the run panel's single runs, the over-optimisation run) and lab 06's DPO runs
(the β panel, off-policy vs on-policy pairs).

Each starts from the cached SFT policy (and, for PPO, a cached reward model) and calls
:func:`labkit.stages.ppo.run_ppo` or :func:`labkit.stages.dpo.run_dpo`, the same recipe as the ``ppo`` and
``dpo`` stages, with some settings changed.

The demonstrations whose figures the labs compare with a reference run are declared here as
measurements (:func:`labkit.reference.measurement`): ``lab05_overoptimisation``, ``lab05_overopt_penalty``,
``lab05_clip_vs_penalty``, ``lab05_gold_reward``, ``lab05_memory``,
``lab06_small_beta`` and ``lab06_onpolicy``. Each runs what its lab runs, with the preset's settings,
and turns the result into figures with the same functions the lab's cells call
(:func:`overoptimisation_figures`, :func:`memory_figures`, :func:`dpo_figures`, and for the pairs'
labels :func:`labkit.train.dpo.label_agreement`), under the names the cells show them by.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import pandas as pd

from labkit import pipeline, reference
from labkit.experiments import Run
from labkit.presets import Preset, get_preset, resolve_preset
from labkit.stages.dpo import run_dpo
from labkit.stages.ppo import run_ppo


def ppo_experiment(eps: float | None = None, beta: float | None = None, rank: int | None = None,
                   lr: float | None = None, preset: Preset | None = None, *, reward_stage: str = "reward",
                   gold: bool = False, iterations: int | None = None, eval_every: int | None = None,
                   progress: bool = False, callback: Callable | None = None) -> Run:
    """One PPO run from the SFT policy against the reward model of ``reward_stage`` (with ``gold``,
    against the world's gold reward itself; ``reward_stage``'s model then only gives the proxy figures).

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
    # The run takes the `ppo` stage's recipe: a measurement made with it is out of date once that moves.
    pipeline.read_key("ppo", preset)
    run = run_ppo(preset, pipeline.ensure("sft", preset, progress=progress),
                  pipeline.ensure(reward_stage, preset, progress=progress), config, gold=gold, progress=progress,
                  callback=callback)
    row = {"eps": config.eps, "beta": config.beta, "rank": config.lora_rank, "lr": config.effective_lr,
           "reward_model": "gold reward" if gold else reward_stage, **{k: getattr(run, k) for k in PPO_RESULTS}}
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
    pipeline.read_key("dpo", preset)  # the `dpo` stage's recipe, as in ppo_experiment
    run = run_dpo(preset, pipeline.ensure("sft", preset, progress=progress), config, pairs=pairs, progress=progress,
                  callback=callback)
    row = {"beta": config.beta, "rank": config.lora_rank, "lr": config.effective_lr, "pairs": data,
           **{k: getattr(run, k) for k in ("win_rate", "gold_reward", "sft_gold_reward", "kl")},
           **{k: run.extra[k] for k in DPO_EXTRA}, "train_seconds": run.train_seconds,
           "trainable_parameters": run.trainable_parameters}
    return Run(row=row, history=run.history, outputs={**run.outputs, "run": run})


DPO_EXTRA = ("implicit_accuracy", "chosen_logratio", "rejected_logratio")  # DPO's own numbers in its row


# ------------------------------------------------------------------- the figures the labs compare

def overoptimisation_figures(evaluations: list[dict], best_of_n=None) -> dict:
    """Lab 05's over-optimisation run in figures.

    ``evaluations``: the run's held-out judgements (``run.evaluations``: the SFT policy at step 0,
    then every ``eval_every`` iterations and the last), each with ``step``, ``heldout_gold``,
    ``heldout_proxy`` and ``heldout_kl``. ``best_of_n``: :func:`labkit.evaluate.best_of_n`'s table on
    the same reward model (its largest n is reported), or None. Returns the gold reward at the
    start, at its peak (the first, if it peaks twice) with the KL and iteration there, and at the end
    with the KL there; the proxy reward at the start and the end; and best-of-n's gold and proxy.
    """
    start, last = evaluations[0], evaluations[-1]
    peak = max(evaluations, key=lambda e: e["heldout_gold"])  # max keeps the first of equal values
    found = {"start_gold": start["heldout_gold"], "peak_gold": peak["heldout_gold"], "peak_kl": peak["heldout_kl"],
             "peak_iteration": int(peak["step"]), "final_gold": last["heldout_gold"], "final_kl": last["heldout_kl"],
             "start_proxy": start["heldout_proxy"], "final_proxy": last["heldout_proxy"]}
    if best_of_n is not None:
        top = best_of_n.iloc[-1]
        found.update(best_of_n_gold=float(top["gold"]), best_of_n_proxy=float(top["proxy"]))
    return {k: float(v) if k != "peak_iteration" else v for k, v in found.items()}


MEMORY_FIGURES = ("added_MB", "peak_MB", "state_MB", "trainable_parameters", "parameters_in_memory")


def memory_figures(rows: list[dict]) -> dict:
    """Lab 05's memory comparison (rows of :func:`labkit.bench.ppo_memory`) in figures: ``full``
    (rank 0) and ``lora`` (the other rank), each with :data:`MEMORY_FIGURES`."""
    return {("full" if row["rank"] == 0 else "lora"): {k: row[k] for k in MEMORY_FIGURES} for row in rows}


DPO_FIGURES = ("win_rate", "gold_reward", "kl", "implicit_accuracy", "chosen_logratio", "rejected_logratio")


def dpo_figures(row: dict) -> dict:
    """A DPO run's row (:func:`dpo_experiment`, or a DPO panel run) in figures: :data:`DPO_FIGURES`."""
    return {k: float(row[k]) for k in DPO_FIGURES}


def onpolicy_figures(world_pairs: list[dict], own_pairs: list[dict], row: dict) -> dict:
    """Lab 06's off-policy vs on-policy comparison in figures: the share of each pair set's labels that
    agree with the gold reward (:func:`labkit.train.dpo.label_agreement`), and the on-policy run's
    :func:`dpo_figures` (the world pairs' run is the ``dpo`` stage)."""
    from labkit.train.dpo import label_agreement

    return {"world_label_accuracy": float(label_agreement(world_pairs)),
            "onpolicy_label_accuracy": float(label_agreement(own_pairs)), **dpo_figures(row)}


# ------------------------------------------------------------------------ the measurements
# Each runs what its lab's cell runs, with the same settings; ``python -m labkit results`` stores the
# figures under demos.<name> and the labs print a learner's run beside them.

@reference.measurement("lab05_overoptimisation", lab="05", seconds=260,
                       across_machines={"start_gold": 0.3, "start_proxy": 0.3, "peak_gold": 0.5,
                                        "best_of_n_gold": 0.3, "best_of_n_proxy": 0.3})
def lab05_overoptimisation(preset: Preset | str) -> dict:
    """Lab 05, section 7: PPO against the ``reward_naive`` model at β = ``ppo_demos.overopt_beta`` for
    ``ppo_demos.overopt_iterations`` iterations at ``ppo_demos.overopt_lr``, judged on the held-out
    prompts every ``overopt_eval_every``; beside it best-of-n (n up to ``ppo_demos.best_of_n``) from the SFT policy
    on the same reward model. :func:`overoptimisation_figures` of the two."""
    from labkit.evaluate import best_of_n
    from labkit.world import preferences as prefs

    preset = resolve_preset(preset)
    demos = preset.ppo_demos
    run = ppo_experiment(beta=demos.overopt_beta, lr=demos.overopt_lr, preset=preset, reward_stage="reward_naive",
                         iterations=demos.overopt_iterations, eval_every=demos.overopt_eval_every)
    sft_policy, tokenizer, _ = pipeline.load("sft", preset)
    bon = best_of_n(sft_policy, tokenizer, run.outputs["reward_model"], prefs.alignment_prompts("heldout"),
                    max_n=demos.best_of_n, reward_tokenizer=run.outputs["reward_tokenizer"], seed=preset.seed,
                    max_new_tokens=preset.sft.max_new_tokens, progress=False)
    return overoptimisation_figures(run.outputs["run"].evaluations, bon)


@reference.measurement("lab05_overopt_penalty", lab="05", seconds=210,
                       across_machines={"start_gold": 0.3, "start_proxy": 0.3, "peak_gold": 0.5, "final_gold": 0.9})
def lab05_overopt_penalty(preset: Preset | str) -> dict:
    """Lab 05, section 7, the same run with a KL penalty: PPO against the ``reward_naive`` model for
    ``ppo_demos.overopt_iterations`` iterations at ``ppo_demos.overopt_lr`` and the ``ppo`` stage's β
    (``preset.ppo.beta``), judged as :func:`lab05_overoptimisation`'s run is.
    :func:`overoptimisation_figures` of it."""
    preset = resolve_preset(preset)
    demos = preset.ppo_demos
    run = ppo_experiment(beta=preset.ppo.beta, lr=demos.overopt_lr, preset=preset, reward_stage="reward_naive",
                         iterations=demos.overopt_iterations, eval_every=demos.overopt_eval_every)
    return overoptimisation_figures(run.outputs["run"].evaluations)


# Lab 05's run panel, measured once as its starting table: ε at β = 0 (the clip alone holds the policy),
# then β at the panel's largest ε (the KL penalty does the holding); (ε, β) pairs
CLIP_VS_PENALTY = ((0.05, 0.0), (0.2, 0.0), (0.5, 0.0), (0.5, 0.1), (0.5, 0.5))
CLIP_VS_PENALTY_FIGURES = ("eps", "beta", "win_rate", "gold_reward", "kl", "proxy_reward")


def clip_vs_penalty_key(eps: float, beta: float) -> str:
    """A run's key in the figures: ``eps_0p05_beta_0`` (no dots: a figure's name is dotted)."""
    return f"eps_{eps:g}_beta_{beta:g}".replace(".", "p")


def clip_vs_penalty_figures(rows: list[dict]) -> dict:
    """PPO runs' rows (:func:`ppo_experiment`'s) as figures, one entry per (ε, β): :data:`CLIP_VS_PENALTY_FIGURES`."""
    return {clip_vs_penalty_key(r["eps"], r["beta"]): {k: float(r[k]) for k in CLIP_VS_PENALTY_FIGURES} for r in rows}


def clip_vs_penalty_table(preset: str = "cpu") -> pd.DataFrame | None:
    """The reference run's :data:`CLIP_VS_PENALTY` runs (``demos.lab05_clip_vs_penalty`` of
    ``results/<preset>.json``) as a table, one row per run; None where it was not measured."""
    measured = reference.figure("demos.lab05_clip_vs_penalty", preset)
    if not measured:
        return None
    return pd.DataFrame([measured[clip_vs_penalty_key(e, b)] for e, b in CLIP_VS_PENALTY
                         if clip_vs_penalty_key(e, b) in measured])


@reference.measurement("lab05_clip_vs_penalty", lab="05", seconds=330,
                       across_machines={"eps": 0, "beta": 0, "win_rate": 0.15, "gold_reward": 0.9, "kl": 4.0,
                                        "proxy_reward": 0.9})
def lab05_clip_vs_penalty(preset: Preset | str) -> dict:
    """Lab 05, section 6: the run panel's starting table, PPO from the SFT policy at each (ε, β) of
    :data:`CLIP_VS_PENALTY` with the stage's other settings (:func:`ppo_experiment`)."""
    preset = resolve_preset(preset)
    return clip_vs_penalty_figures([ppo_experiment(eps=eps, beta=beta, preset=preset).row
                                    for eps, beta in CLIP_VS_PENALTY])


# What lab 05's ceiling run reports: PPO with the stage's recipe, scored by the gold reward
GOLD_REWARD_FIGURES = ("win_rate", "gold_reward", "kl", "proxy_reward")


def gold_reward_figures(row: dict) -> dict:
    """A PPO run's row (:func:`ppo_experiment`'s) as lab 05's ceiling figures, :data:`GOLD_REWARD_FIGURES`."""
    return {k: float(row[k]) for k in GOLD_REWARD_FIGURES}


@reference.measurement("lab05_gold_reward", lab="05", seconds=80,
                       across_machines={"win_rate": 0.12, "gold_reward": 0.9, "kl": 3.0, "proxy_reward": 0.9})
def lab05_gold_reward(preset: Preset | str) -> dict:
    """Lab 05, section 7, the ceiling: the ``ppo`` stage's recipe unchanged, scored by the gold reward
    instead of the reward model (a perfect reward model), judged as the stage is. :func:`gold_reward_figures`."""
    preset = resolve_preset(preset)
    return gold_reward_figures(ppo_experiment(preset=preset, gold=True).row)


@reference.measurement("lab05_memory", lab="05", seconds=40,
                       across_machines={"trainable_parameters": 0, "parameters_in_memory": 0})
def lab05_memory(preset: Preset | str) -> dict:
    """Lab 05, section 8: one PPO iteration with full fine-tuning and with LoRA of rank
    ``ppo_demos.memory_rank``, each in a fresh process (:func:`labkit.bench.ppo_memory`)."""
    from labkit import bench
    from labkit.stages import STAGES

    preset = resolve_preset(preset)
    for need in STAGES["ppo"].needs:  # trained here with a progress bar, if missing; the fresh processes load them
        pipeline.ensure(need, preset)
    return memory_figures(bench.ppo_memory(preset.name, ranks=(0, preset.ppo_demos.memory_rank)))


@reference.measurement("lab06_small_beta", lab="06", seconds=65,
                       across_machines={"win_rate": 0.12, "*accuracy*": 0.05, "gold_reward": 0.4})
def lab06_small_beta(preset: Preset | str) -> dict:
    """Lab 06, section 7: the DPO panel's first run, β = ``dpo_demos.panel_beta`` with the panel's other
    sliders at the stage's settings (its LoRA rank and learning rate)."""
    preset = resolve_preset(preset)
    return dpo_figures(dpo_experiment(preset.dpo_demos.panel_beta, preset.dpo.lora_rank, preset.dpo.effective_lr,
                                      preset).row)


@reference.measurement("lab06_onpolicy", lab="06", seconds=85,
                       across_machines={"world_label_accuracy": 1e-9, "onpolicy_label_accuracy": 0.03,
                                        "win_rate": 0.12, "implicit_accuracy": 0.05, "gold_reward": 0.4})
def lab06_onpolicy(preset: Preset | str) -> dict:
    """Lab 06, section 8: DPO with the stage's settings on ``dpo.train_pairs`` pairs of the SFT policy's own
    answers labelled by the ``reward`` model (:func:`onpolicy_pairs`), beside the world's pairs."""
    from labkit.world import preferences as prefs

    preset = resolve_preset(preset)
    n = preset.dpo.train_pairs
    world_pairs = prefs.preference_pairs("train", n, seed=preset.world_seed)
    own_pairs = onpolicy_pairs(preset, n)
    run = dpo_experiment(preset=preset, pairs=own_pairs, data="on-policy (reward-model labels)")
    return onpolicy_figures(world_pairs, own_pairs, run.row)
