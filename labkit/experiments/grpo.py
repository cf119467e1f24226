"""Lab 07's GRPO runs: the run panel's single runs, reward hacking by length, and where groups carry a signal;
and GRPO against lab 04's reward model (:func:`grpo_on_reward_model`), for the race with PPO.

Lab 07's runs start from the cached ``sft_math`` policy (the SFT policy after learning the word
problems from demonstrators who mostly skip the working) and call :func:`labkit.stages.grpo.run_grpo`,
the ``grpo`` stage's recipe, with some settings changed.

The demonstrations whose figures lab 07 quotes are declared here as measurements
(:func:`labkit.reference.measurement`): where groups carry a signal (:func:`signal_check`), the
``grpo`` stage's training curve, the run panel's G = 2 run and reward hacking by length. Each runs
what the lab runs and returns its figures through the same ``*_figures`` function the lab calls to
print them beside the reference.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import pandas as pd
import torch

from labkit import checkpoint, pipeline, reference
from labkit.experiments import Run
from labkit.losses import grpo_advantages
from labkit.presets import Preset, get_preset
from labkit.rewards import correctness_reward, extract_final_answer, length_reward
from labkit.stages.grpo import on_reward_model_config, run_grpo, run_grpo_on_reward_model
from labkit.stages.sft_math import problem_rows

REWARDS = {"correctness": ([correctness_reward], None),
           # the length reward alone; correctness is computed and logged (weight 0) to watch it not rise
           "length": ([length_reward, correctness_reward], [1.0, 0.0])}


def grpo_experiment(group_size: int | None = None, eps: float | None = None, beta: float | None = None,
                    rank: int | None = None, lr: float | None = None, preset: Preset | None = None, *,
                    iterations: int | None = None, reward: str = "correctness", steps: int | None = None,
                    progress: bool = False, callback: Callable | None = None) -> Run:
    """One GRPO run from the ``sft_math`` policy, as the ``grpo`` stage does it with some settings changed.

    ``group_size`` (G), ``eps`` (clip range), ``beta`` (KL penalty), ``rank`` (0 = full fine-tuning,
    else LoRA rank), ``lr`` (for full fine-tuning and LoRA alike), ``iterations`` (μ, updates per
    sampled batch) and ``steps`` replace the preset's
    GRPO settings; ``None`` keeps them. ``reward`` is ``"correctness"`` (the exact final answer)
    or ``"length"`` (answer length alone, the hackable one; correctness is still logged). The row
    holds the settings and the held-out results before and after; outputs hold both evaluations,
    the trained policy and the metrics.
    """
    if reward not in REWARDS:
        raise ValueError(f"Unknown reward {reward!r}; choose from {', '.join(REWARDS)}")
    preset = preset or get_preset()
    changes = {"group_size": group_size, "eps": eps, "beta": beta, "lora_rank": rank, "steps": steps,
               "iterations": iterations}
    if lr is not None:
        changes.update(lr=lr, lora_lr=lr)
    config = dataclasses.replace(preset.grpo, **{k: v for k, v in changes.items() if v is not None})
    funcs, weights = REWARDS[reward]
    run = run_grpo(preset, pipeline.ensure("sft_math", preset, progress=progress), config, reward_funcs=funcs,
                   reward_weights=weights, progress=progress, callback=callback)
    return Run(row=_row(reward, config, run["metrics"], run["result"].history), history=run["result"].history,
               outputs={"before": run["before"], "after": run["after"], "policy": run["result"].policy,
                        "tokenizer": run["tokenizer"], "metrics": run["metrics"]})


GRPO_RESULTS = ("accuracy", "sft_accuracy", "sampled_accuracy", "sft_sampled_accuracy", "worked_share", "length",
                "zero_std_share")  # the grpo stage's report keys a run's row shows (plots.COLUMNS: their headers)


def _row(reward: str, config, m: dict, history: list[dict]) -> dict:
    """A run's table row: its settings, its held-out results before and after (the stage's report keys),
    and the share of tokens whose ratio the clip caught (mean over logged steps; 0 when μ = 1)."""
    clipped = [h["clip_fraction"] for h in history if h.get("clip_fraction") is not None]
    return {"reward": reward, "group_size": config.group_size, "eps": config.eps, "beta": config.beta,
            "iterations": config.iterations, "rank": config.lora_rank, "lr": config.effective_lr,
            **{k: m[k] for k in GRPO_RESULTS}, "clip_fraction": sum(clipped) / len(clipped) if clipped else None,
            "train_seconds": m["train_seconds"], "seconds_per_step": m["seconds_per_step"],
            "trainable_parameters": m["trainable_parameters"]}


def stage_run(preset: Preset | None = None, *, progress: bool = False) -> Run:
    """The ``grpo`` stage's run (trained once and cached) as a :class:`Run`, beside the lab's own runs."""
    import json

    preset = preset or get_preset()
    meta = json.loads((pipeline.ensure("grpo", preset, progress=progress) / "labkit.json").read_text())
    return Run(row=_row("correctness", preset.grpo, meta["metrics"], meta["history"]), history=meta["history"],
               outputs={"metrics": meta["metrics"]})


def length_hacking(preset: Preset | None = None, *, progress: bool = False) -> dict[str, Run]:
    """Two GRPO runs with the stage's settings: one rewarded for the right answer (the ``grpo`` stage's
    run), one for length alone (trained here, for ``grpo_demos.hacking_steps`` steps instead of the
    stage's; correctness is logged beside it, unrewarded).

    Returns ``{"correctness": Run, "length": Run}``. Under the length reward answers grow toward the
    length limit while held-out accuracy falls.
    """
    preset = preset or get_preset()
    return {"correctness": stage_run(preset, progress=progress),
            "length": grpo_experiment(preset=preset, reward="length", steps=preset.grpo_demos.hacking_steps,
                                      progress=progress)}


# ------------------------------------------------------------------------------- where is the signal?

def _groups(policy, tokenizer, rows: list[dict], answers: list[str], group_size: int, seed: int,
            max_new_tokens: int) -> dict:
    """Sample ``group_size`` answers per row; score them by the exact answer; GRPO's view of them."""
    from labkit.evaluate import sample_answers

    samples = sample_answers(policy, tokenizer, rows, n=group_size, seed=seed, max_new_tokens=max_new_tokens)
    expected = [a for a in answers for _ in range(group_size)]
    rewards = torch.tensor(correctness_reward(None, samples.answers, answer=expected))
    groups = rewards.view(-1, group_size)
    advantages = grpo_advantages(rewards, group_size)
    return {"accuracy": float(rewards.mean()), "zero_variance_share": float((groups.std(dim=1) == 0).float().mean()),
            "all_right": float((groups.min(dim=1).values == 1).float().mean()),
            "all_wrong": float((groups.max(dim=1).values == 0).float().mean()),
            "mean_abs_advantage": float(advantages.abs().mean()), "samples": samples, "rewards": rewards}


# signal_check's rows: the table's name of each kind of problem -> its key in the lab's figures
SIGNAL_KINDS = {"one-step arithmetic, start 2-9 (SFT policy)": "one_step",
                "one-step arithmetic, start 10-19 (SFT policy)": "shifted",
                "word problems, 2-3 steps (sft_math policy)": "word_problems"}


def signal_check(preset: Preset | None = None, *, group_size: int | None = None, n_prompts: int = 64,
                 progress: bool = False) -> pd.DataFrame:
    """How often a group of G sampled answers carries a learning signal, on three kinds of problem.

    - lab 02's one-step ``arithmetic`` (start 2 to 9), which the SFT policy learned: all right;
    - the same one-step problems started at 10 to 19 (a domain shift): the SFT policy is all wrong;
    - the word problems, from the ``sft_math`` policy: some right, some wrong.

    GRPO's advantage is zero for every answer of a group whose rewards are all equal, so only the
    mixed groups teach. One row per kind: accuracy, the share of zero-variance groups (all right or
    all wrong) and the mean |advantage|.
    """
    from labkit.world.tasks import shifted_arithmetic, task_split

    preset = preset or get_preset()
    group_size = group_size or preset.grpo.group_size
    sft_policy, sft_tokenizer, _ = checkpoint.load_checkpoint(pipeline.ensure("sft", preset, progress=progress))
    math_policy, math_tokenizer, _ = checkpoint.load_checkpoint(pipeline.ensure("sft_math", preset, progress=progress))

    def as_prompts(rows):
        prompts = [{"prompt": [m for m in r["messages"] if m["role"] == "user"]} for r in rows]
        return prompts, [extract_final_answer(r["answer"]) for r in rows]

    one_step = as_prompts(task_split("test", n_prompts, seed=preset.world_seed, categories=("arithmetic",)))
    shifted = as_prompts(shifted_arithmetic("test", n_prompts, seed=preset.world_seed))
    words = problem_rows(preset, "test", n_prompts)
    one_step_name, shifted_name, words_name = SIGNAL_KINDS
    cases = [(one_step_name, sft_policy, sft_tokenizer, *one_step),
             (shifted_name, sft_policy, sft_tokenizer, *shifted),
             (words_name, math_policy, math_tokenizer, words, [r["answer"] for r in words])]
    table = []
    for name, policy, tokenizer, rows, answers in cases:
        found = _groups(policy, tokenizer, rows, answers, group_size, preset.seed, preset.sft_math.max_new_tokens)
        table.append({"problems": name, "G": group_size, "accuracy": found["accuracy"],
                      "zero-variance groups": found["zero_variance_share"], "all right": found["all_right"],
                      "all wrong": found["all_wrong"], "mean |advantage|": found["mean_abs_advantage"]})
    return pd.DataFrame(table).set_index("problems")


# ------------------------------------------------------------------------------- the figures lab 07 quotes

def signal_figures(table: pd.DataFrame) -> dict:
    """:func:`signal_check`'s table as figures, one entry per kind of problem (:data:`SIGNAL_KINDS`):
    ``accuracy`` (share of right answers), the shares of groups all right, all wrong and either
    (``zero_variance_share``), and the mean |advantage|."""
    return {SIGNAL_KINDS[kind]: {"accuracy": float(row["accuracy"]), "all_right_share": float(row["all right"]),
                                 "all_wrong_share": float(row["all wrong"]),
                                 "zero_variance_share": float(row["zero-variance groups"]),
                                 "mean_abs_advantage": float(row["mean |advantage|"])}
            for kind, row in table.iterrows()}


@reference.measurement("lab07_signal_check", lab="07", seconds=60,
                       across_machines={"accuracy": 0.08, "*_share": 0.12, "mean_abs_advantage": 0.15})
def signal_check_measured(preset) -> dict:
    """Lab 07, section 4: :func:`signal_check` as the lab runs it (G of the preset, 64 problems per kind)."""
    return signal_figures(signal_check(preset))


CURVE_POINTS = 3  # logged steps averaged at each end of a training curve
# a GRPO history's logged statistics (labkit.train.grpo.GRPO_LOG_KEYS) -> the names of their figures
CURVE_FIGURES = {"reward": "reward", "reward_std": "reward_std", "zero_std_share": "zero_std_share",
                 "length": "tokens", "correctness_reward": "right_share"}


def curve_figures(history: list[dict], points: int = CURVE_POINTS) -> dict:
    """Where a GRPO run's training curves (:func:`labkit.plots.grpo_curves`) start and end.

    ``start`` and ``end``: the mean over the first and the last ``points`` logged steps of the
    sampled answers' mean reward, its spread within groups (``reward_std``), the share of groups
    whose answers all scored alike (``zero_std_share``), the answer length in tokens (``tokens``)
    and, where it is logged, the share of right answers (``right_share``, the correctness reward's
    mean: logged even when it is not rewarded)."""
    figures: dict = {"start": {}, "end": {}}
    for key, name in CURVE_FIGURES.items():
        values = [h[key] for h in history if h.get(key) is not None]
        if values:
            k = min(points, len(values))
            figures["start"][name] = sum(values[:k]) / k
            figures["end"][name] = sum(values[-k:]) / k
    return figures


@reference.measurement("lab07_grpo_curves", lab="07", seconds=1,
                       across_machines={"reward": 0.1, "reward_std": 0.1, "*_share": 0.1, "tokens": 3.0})
def grpo_curves_measured(preset) -> dict:
    """Lab 07, section 5: where the ``grpo`` stage's training curves start and end (read from the
    cached stage: :func:`curve_figures` of its history)."""
    return curve_figures(pipeline.metrics("grpo", preset)["history"])


def run_figures(row: dict) -> dict:
    """A GRPO run's held-out results (the stage's report keys, :data:`GRPO_RESULTS`) and its training
    seconds, from its table row (:func:`grpo_experiment`'s, or the run panel's ``train_once``)."""
    return {k: row[k] for k in (*GRPO_RESULTS, "train_seconds") if row.get(k) is not None}


SMALL_GROUP = 2  # the G of the run panel's first run in lab 07


@reference.measurement("lab07_small_group", lab="07", seconds=40,
                       across_machines={"*accuracy": 0.1, "*_share": 0.12, "length": 3.0})
def small_group(preset) -> dict:
    """Lab 07, section 6: the run panel's first run, G = :data:`SMALL_GROUP` and the sliders' other
    values (the preset's ε, β and μ), as ``panel.train_once(group_size=2)`` trains it."""
    g = preset.grpo
    return run_figures(grpo_experiment(SMALL_GROUP, g.eps, g.beta, preset=preset, iterations=g.iterations).row)


HACKING_LIMIT = 0.9  # an answer length this share of max_new_tokens counts as "at the limit"


def hacking_figures(runs: dict[str, Run], max_new_tokens: int) -> dict:
    """:func:`length_hacking`'s two runs as figures, one entry per reward (``length``, ``correctness``).

    Held out (greedy): ``accuracy``, ``length`` (words per answer), ``worked_share`` (an ``=``
    written), ``right_working_share`` (the solution's steps, all right) and the SFT policy's
    (``sft_``) beside them. In training: :func:`curve_figures`' ``start`` and ``end``, and
    ``limit_step``, the first logged step whose answers averaged at least :data:`HACKING_LIMIT` of
    ``max_new_tokens`` tokens (left out where the run never got there)."""
    figures = {}
    for reward, run in runs.items():
        m = run.outputs["metrics"]
        found = {k: m[k] for k in ("accuracy", "sft_accuracy", "length", "sft_length", "worked_share",
                                   "sft_worked_share", "right_working_share", "sft_right_working_share")}
        found.update(curve_figures(run.history))
        at_limit = [h["step"] for h in run.history if (h.get("length") or 0) >= HACKING_LIMIT * max_new_tokens]
        if at_limit:
            found["limit_step"] = at_limit[0]
        figures[reward] = found
    return figures


@reference.measurement("lab07_length_hacking", lab="07", seconds=130,
                       across_machines={"*accuracy": 0.1, "*worked_share": 0.12, "*length": 3.0, "tokens": 3.0,
                                        "right_share": 0.1, "*right_working_share": 0.12})
def length_hacking_measured(preset) -> dict:
    """Lab 07, section 7: :func:`length_hacking` (the length-rewarded run; the correctness run is the
    cached ``grpo`` stage), as the lab and ``tests/test_slow.py`` run it."""
    return hacking_figures(length_hacking(preset), preset.grpo.max_new_tokens)


# ------------------------------------------------------------------------------- GRPO on a learned reward

def grpo_on_reward_model(preset: Preset | None = None, *, rank: int | None = None, beta: float | None = None,
                         steps: int | None = None, reward_stage: str = "reward", progress: bool = False,
                         callback: Callable | None = None, eval_every: int = 0) -> Run:
    """GRPO from the SFT policy against the reward model of ``reward_stage``, on PPO's training prompts.

    A reward model is just another reward function to GRPO (:func:`labkit.evaluate.reward_model_reward`),
    so this is the race lab 08 runs against PPO: same SFT policy, same reward model, same prompts,
    judged the same way (held-out prompts, gold reward, win rate and KL vs the SFT policy). The gold
    reward is logged beside the proxy at weight 0. Answers are as long as PPO's and the SFT stage's
    evaluation allow (``preset.sft.max_new_tokens``); ``rank``, ``beta`` and ``steps`` replace the
    preset's GRPO settings. With ``eval_every`` ≥ 1 the policy is judged on the held-out prompts every
    that many steps while it trains (:func:`labkit.evaluate.heldout_judge`, as PPO's loop does).
    """
    from labkit.experiments.alignment import PPO_RESULTS

    preset = preset or get_preset()
    config = on_reward_model_config(preset, lora_rank=rank, beta=beta, steps=steps)
    run = run_grpo_on_reward_model(preset, pipeline.ensure("sft", preset, progress=progress),
                                   pipeline.ensure(reward_stage, preset, progress=progress), config,
                                   progress=progress, callback=callback, eval_every=eval_every)
    row = {"method": "GRPO on the reward model", "group_size": config.group_size, "beta": config.beta,
           "rank": config.lora_rank, **{k: getattr(run, k) for k in PPO_RESULTS}}
    return Run(row=row, history=run.history, outputs={**run.outputs, "run": run})
