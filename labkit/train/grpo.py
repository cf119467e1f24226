"""GRPO with TRL's ``GRPOTrainer``: sample a group of answers, score them by rule, no critic.

For each prompt the policy samples G answers; each answer's advantage is its reward minus the
group's mean, divided by the group's standard deviation (:func:`labkit.losses.grpo_advantages`).
Every token of an answer gets that advantage in PPO's clipped objective (ratio clipped to
[1 − ε, 1 + ε]), optionally with a KL penalty β toward the starting policy. The group's mean is the
baseline a PPO critic would have to learn, so there is no value model to train or to hold in memory.

A group whose answers all get the same reward (all right, or all wrong) has zero advantage
everywhere: it teaches nothing. The history logs that share per step (``zero_std_share``), beside
the reward's mean and spread, the answer length and, with β > 0, the KL to the start. With β = 0
the update leaves those answers out: they add nothing to the gradient, so computing them is waste
(:class:`InformativeGRPOTrainer`).

The rewards are plain functions (:mod:`labkit.rewards`); :func:`checked_reward` wraps each so a
function that raises or returns the wrong number of scores stops training with a message that
names it.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import datasets
from trl import GRPOConfig, GRPOTrainer

from labkit import runtime
from labkit.lora import lora_config
from labkit.models import stop_token_ids
from labkit.presets import GRPOStageConfig
from labkit.train.common import PolicyResult, common_args, finish_policy, fit, trainer_dir

# TRL's logged statistics (one value per logged step) -> the names in our history
GRPO_LOG_KEYS = {"reward": "reward", "reward_std": "reward_std", "frac_reward_zero_std": "zero_std_share",
                 "completions/mean_length": "length", "completions/clipped_ratio": "truncated_share",
                 "kl": "kl", "entropy": "entropy", "clip_ratio/region_mean": "clip_fraction"}


class InformativeGRPOTrainer(GRPOTrainer):
    """TRL's ``GRPOTrainer``, except that the update skips the answers whose advantage is 0.

    An answer with advantage 0 adds exactly nothing to the gradient when its tokens' losses are summed
    and divided by the whole batch's answer tokens (``loss_type="dapo"``, TRL's default) and nothing
    else pulls on it (β = 0, no entropy bonus): its per-token loss is −min(ratio·0, clipped·0) = 0.
    Such answers fill the groups that were all right or all wrong, often half the batch late in a run.
    Dropping them before the forward and backward passes (and the padding columns no kept answer
    needs) gives the same step for less arithmetic; the divisor stays the whole batch's token count.
    The sampled answers, their rewards and the logged reward statistics are the same as TRL's; the logged
    entropy and clipped share are then those of the answers kept.
    In any other setting, and with several processes, the trainer is TRL's own.
    """

    def _skips_silent_answers(self) -> bool:
        args = self.args
        return (self.model.training and args.loss_type == "dapo" and self.beta == 0.0 and args.entropy_coef == 0.0
                and args.steps_per_generation == 1 and self.top_entropy_quantile == 1.0 and not self.use_vllm
                # one process: TRL gathers per-answer statistics across processes, which needs equal batches
                and self.accelerator.num_processes == 1)

    def _generate_and_score_completions(self, inputs):
        batch = super()._generate_and_score_completions(inputs)
        if not self._skips_silent_answers():
            return batch
        return informative_rows(batch)


def informative_rows(batch: dict) -> dict:
    """``batch`` (TRL's generated batch) without the answers whose advantage is 0, and without the
    completion columns that are padding in every answer kept; at least one answer stays."""
    advantages = batch["advantages"]
    keep = advantages.reshape(len(advantages), -1).ne(0).any(dim=1)
    if not keep.any():
        keep[0] = True  # an all-silent batch: one answer, whose gradient is 0, keeps the step well-formed
    rows = len(advantages)
    out = {key: value[keep] if hasattr(value, "shape") and value.dim() and value.shape[0] == rows else value
           for key, value in batch.items()}
    width = int(out["completion_mask"].sum(dim=0).nonzero().max()) + 1 if out["completion_mask"].any() else 1
    for key in ("completion_ids", "completion_mask", "old_per_token_logps", "ref_per_token_logps",
                "sampling_per_token_logps", "tool_mask"):
        if key in out and hasattr(out[key], "dim") and out[key].dim() == 2:
            out[key] = out[key][:, :width]
    return out


@dataclass
class GRPOResult(PolicyResult):
    """A GRPO run: the :class:`TrainResult` fields, the trained policy (adapters merged) and its size."""


def checked_reward(fn: Callable) -> Callable:
    """``fn`` wrapped so that a bad reward stops training with a clear message naming ``fn``.

    TRL calls a reward function with ``prompts``, ``completions`` and the dataset's other columns
    and expects one number (or ``None``) per completion. The wrapper keeps ``fn``'s name (TRL logs
    each reward as ``rewards/<name>/mean``).
    """
    name = getattr(fn, "__name__", type(fn).__name__)

    @functools.wraps(fn)
    def reward(prompts, completions, **columns):
        try:
            scores = fn(prompts=prompts, completions=completions, **columns)
        except Exception as error:
            raise RuntimeError(f"reward function {name!r} raised {type(error).__name__}: {error}. It is called "
                               "as fn(prompts, completions, **columns) with one completion per sampled answer "
                               f"(columns here: {sorted(columns)}); fix it or drop it from reward_funcs") from error
        try:
            scores = list(scores)
        except TypeError:
            raise ValueError(f"reward function {name!r} returned {type(scores).__name__}; it must return a list "
                             "with one number per completion") from None
        if len(scores) != len(completions):
            raise ValueError(f"reward function {name!r} returned {len(scores)} scores for {len(completions)} "
                             "completions; it must return exactly one number per completion")
        for i, score in enumerate(scores):
            if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))
                                      or math.isnan(float(score))):
                raise ValueError(f"reward function {name!r} gave completion {i} the score {score!r}; scores "
                                 "must be numbers (float), or None to leave a completion unscored")
        return [None if s is None else float(s) for s in scores]

    return reward


def check_group_size(group_size: int, prompts_per_step: int = 1) -> None:
    """A ``ValueError`` unless ``group_size`` is an integer ≥ 2 (GRPO compares answers within a group)."""
    if isinstance(group_size, bool) or int(group_size) != group_size or group_size < 2:
        raise ValueError(f"group size G must be an integer >= 2, got {group_size!r}: GRPO's advantage is an "
                         "answer's reward minus its group's mean, so a group of one answer always has "
                         "advantage 0 and teaches nothing (try G = 4 to 16)")
    if isinstance(prompts_per_step, bool) or int(prompts_per_step) != prompts_per_step or prompts_per_step < 1:
        raise ValueError(f"prompts per step must be an integer >= 1, got {prompts_per_step!r}")


def prompts_dataset(rows: list[dict]) -> datasets.Dataset:
    """The columns GRPOTrainer reads: ``prompt``, plus every plain column of the rows (``answer`` as a
    string; e.g. ``place`` and ``count`` of the preference prompts), which reach the reward functions."""
    plain = (str, int, float, type(None))
    columns = ["prompt"] + [k for k in rows[0] if k not in ("prompt", "messages")
                            and all(isinstance(r.get(k), plain) for r in rows)]
    return datasets.Dataset.from_list([{k: str(r[k]) if k == "answer" and r.get(k) is not None else r.get(k)
                                        for k in columns} for r in rows])


def grpo_config(config: GRPOStageConfig, output_dir: str, seed: int = 0,
                reward_weights: list[float] | None = None) -> GRPOConfig:
    """The TRL ``GRPOConfig`` for our stage config: G answers per prompt, ε, β, μ updates per batch.

    ``reward_weights`` weigh the reward functions in the sum (default 1 each); a weight of 0 logs a
    reward without training on it."""
    check_group_size(config.group_size, config.prompts_per_step)
    args = common_args(output_dir=output_dir, steps=config.steps,
                       batch_size=config.group_size * config.prompts_per_step,
                       lr=config.effective_lr, warmup_steps=config.warmup_steps, seed=seed)
    args["logging_steps"] = max(1, config.steps // 25)
    return GRPOConfig(
        num_generations=config.group_size,          # G answers sampled per prompt
        max_completion_length=config.max_new_tokens,
        temperature=config.temperature,             # sampling temperature (1 = the policy as it is)
        epsilon=config.eps,                         # PPO clip range ε on the per-token ratio
        beta=config.beta,                           # KL penalty toward the starting policy (0: none, no reference)
        num_iterations=config.iterations,           # μ updates per sampled batch (at 1 the ratio is 1: ε never binds)
        loss_type=config.loss_type,
        scale_rewards="group",                      # (r − group mean) / group std, as in the GRPO paper
        reward_weights=reward_weights,
        **args,
    )


def train_grpo(policy, tokenizer, rows: list[dict], reward_funcs: list[Callable], config: GRPOStageConfig, *,
               reward_weights: list[float] | None = None, seed: int = 0, progress: bool = True,
               callback: Callable | None = None, eval_fn: Callable | None = None, eval_every: int = 0) -> GRPOResult:
    """Train ``policy`` with GRPO on the prompts in ``rows`` (``prompt`` messages and ``answer``).

    ``rows`` need a ``prompt``; their other plain columns reach the reward functions (the correctness
    reward needs ``answer``). ``reward_funcs`` are scored and summed per answer (e.g.
    ``[correctness_reward]``, or :func:`labkit.evaluate.reward_model_reward`), weighted by
    ``reward_weights`` if given (a weight of 0 only logs that reward, e.g. correctness while
    training on length). Full
    fine-tuning trains ``policy`` in place; with ``config.lora_rank`` ≥ 1 TRL wraps it in adapters
    and the returned policy has them merged in. With β > 0 and full fine-tuning TRL loads the
    reference from the policy's checkpoint directory (``policy.config._name_or_path``); with LoRA
    it switches the adapters off instead. ``callback(history)`` is called at every logged step.
    With ``eval_fn``, ``eval_fn(model) -> dict`` judges the policy before training and every ``eval_every``
    steps (rows in ``evaluations``, their time in ``eval_seconds``).
    """
    check_group_size(config.group_size, config.prompts_per_step)
    if not reward_funcs:
        raise ValueError("no reward functions given: GRPO needs at least one, e.g. [labkit.rewards.correctness_reward]")
    from labkit.world.problems import check_problem_row, check_problem_rows

    if any(getattr(f, "__name__", "") == "correctness_reward" for f in reward_funcs):
        check_problem_rows(rows)  # the correctness reward needs each problem's answer
    elif not rows:
        raise ValueError("no prompts given: GRPO samples its answers to prompts")
    else:
        for number, row in enumerate(rows, start=1):
            if not row.get("prompt"):
                check_problem_row(row, f"prompt row {number}")
    if config.beta > 0 and not config.lora_rank:
        source = getattr(policy.config, "_name_or_path", "")
        if not source or not Path(source).is_dir():
            raise ValueError("GRPO with β > 0 and full fine-tuning needs the starting policy saved on disk (TRL loads "
                             f"the reference from policy.config._name_or_path, here {source!r}): load the policy with "
                             "labkit.checkpoint.load_checkpoint, or use β = 0 or LoRA (lora_rank >= 1)")
    if reward_weights is not None and len(reward_weights) != len(reward_funcs):
        raise ValueError(f"{len(reward_weights)} reward weights for {len(reward_funcs)} reward functions: give one "
                         "weight per function")
    funcs = [checked_reward(f) for f in reward_funcs]
    log_keys = {**GRPO_LOG_KEYS, **{f"rewards/{f.__name__}/mean": f.__name__ for f in funcs}}
    data = prompts_dataset(rows)  # TRL draws prompts_per_step of them per step, reshuffled each pass
    # TRL stops an answer on the model's generation_config.eos_token_id (and the tokenizer's): make those the
    # tokens labkit's sampling stops on, the chat template's end of turn among them (a hub model's may lack it).
    stops = policy.generation_config.eos_token_id
    stops = [stops] if isinstance(stops, int) else list(stops or [])
    policy.generation_config.eos_token_id = stops + [i for i in stop_token_ids(tokenizer) if i not in stops]

    runtime.seed_everything(seed)  # before the trainer is built: with LoRA, building it draws the adapters' weights
    with trainer_dir() as out:
        trainer = InformativeGRPOTrainer(model=policy, reward_funcs=funcs, args=grpo_config(config, out, seed, reward_weights),
                              train_dataset=data, processing_class=tokenizer,
                              peft_config=lora_config(config.lora_rank) if config.lora_rank else None)
        result = fit(trainer, policy, progress=progress, callback=callback, desc="GRPO", log_keys=log_keys,
                     eval_fn=eval_fn, eval_every=eval_every)
    return finish_policy(trainer, config.lora_rank, result, GRPOResult)
