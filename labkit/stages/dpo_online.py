"""Stage ``dpo_online``: DPO on the policy's own answers, labelled by the annotator, round after round (lab 06).

The ``dpo`` stage learns from a fixed set of comparisons of the demonstrators' answers; lab 06's
on-policy run learns once from the SFT policy's own answers, labelled by the reward model. Here the
sampling is repeated: every round the *current* policy answers the training prompts, the world's
annotator compares pairs of those answers (as many comparisons in all as the ``dpo`` stage learns
from), and DPO takes one pass over them (:func:`labkit.train.dpo.train_online_dpo`). Its recipe is
:func:`run_online_dpo`; the batch is the ``dpo`` stage's; β, the rounds and their sizes, the
reference and the learning rate ``preset.dpo_online``'s.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from labkit import checkpoint, runtime
from labkit.evaluate import PolicyRun, evaluate_policy, heldout_judge
from labkit.presets import Preset
from labkit.stages.base import Stage, StageOutput, register
from labkit.train.dpo import train_online_dpo
from labkit.world import preferences as prefs


def run_online_dpo(preset: Preset, sft_dir: Path, config=None, *, progress: bool = False,
                   callback: Callable | None = None) -> PolicyRun:
    """Online DPO from the SFT checkpoint, the world's annotator labelling each round's pairs.

    ``config`` (default ``preset.dpo_online``) sets the rounds, pairs per round and answers sampled
    per prompt, β, each round's reference and (if set) the learning rate; the other DPO settings are
    ``preset.dpo``'s. The policy is judged on the held-out prompts
    before the first round and after each (gold, KL and win rate against the SFT policy, in the
    report's ``evaluations``), and at the end as the ``dpo`` stage judges its policy. Returns a
    :class:`~labkit.evaluate.PolicyRun` whose ``outputs`` also hold the ``reference``.
    """
    config = config or preset.dpo_online
    dpo = dataclasses.replace(preset.dpo, train_pairs=config.pairs_per_round, epochs=1.0, beta=config.beta,
                              lr=preset.dpo.lr if config.lr is None else config.lr)
    device = runtime.device()
    policy, tokenizer, _ = checkpoint.load_checkpoint(sft_dir, device=device)
    reference, _, _ = checkpoint.load_checkpoint(sft_dir, device=device)
    reference.eval().requires_grad_(False)
    judge = heldout_judge(preset, tokenizer, reference, None, None, samples_per_prompt=dpo.eval_samples)
    result = train_online_dpo(policy, tokenizer, prefs.alignment_prompts("train"), dpo, rounds=config.rounds,
                              samples_per_prompt=config.samples_per_prompt, reference=reference, seed=preset.seed,
                              max_new_tokens=preset.sft.max_new_tokens, progress=progress, callback=callback,
                              eval_fn=judge, moving_reference=config.reference == "previous")
    heldout = prefs.alignment_prompts("heldout")
    final = evaluate_policy(result.policy, tokenizer, heldout, reference, samples_per_prompt=dpo.eval_samples,
                            seed=preset.seed, max_new_tokens=preset.sft.max_new_tokens, name="online DPO",
                            progress=progress)
    labels = result.label_accuracy
    extra = {"rounds": config.rounds, "pairs_per_round": config.pairs_per_round,
             "samples_per_prompt": config.samples_per_prompt, "train_pairs": config.train_pairs,
             "steps": result.steps, "beta": dpo.beta, "lora_rank": dpo.lora_rank,
             "first_label_accuracy": labels[0], "last_label_accuracy": labels[-1],
             "label_accuracy": sum(labels) / len(labels), "evaluations": result.evaluations}
    answers = config.rounds * len(prefs.alignment_prompts("train")) * config.samples_per_prompt
    return PolicyRun.judged("online DPO", final, heldout, result, extra=extra, answers_sampled=answers,
                            outputs={"tokenizer": tokenizer, "reference": reference})


def train_online_dpo_stage(preset: Preset, inputs: dict[str, Path], progress: bool, callback: Callable | None):
    """Align the SFT policy with online DPO, the annotator labelling its own answers; judge it by the gold reward."""
    run = run_online_dpo(preset, inputs["sft"], progress=progress, callback=callback)
    return StageOutput(run.outputs["policy"], run.outputs["tokenizer"], run.report(), run.history)


register(Stage(
    "dpo_online", needs=("sft",), fields=("name", "world_seed", "dpo", "dpo_online", "seed"),
    report=("seconds", *PolicyRun.NUMBERS, "rounds", "pairs_per_round", "samples_per_prompt", "train_pairs",
            "steps", "beta", "lora_rank", "first_label_accuracy", "last_label_accuracy", "label_accuracy"),
    train=train_online_dpo_stage))
