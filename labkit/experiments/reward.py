"""Lab 04's reward-model runs: the same stage recipe on fewer training pairs."""
from __future__ import annotations

from labkit import pipeline
from labkit.experiments import Run
from labkit.presets import get_preset
from labkit.stages.reward import fit_reward_model


def reward_experiment(n_pairs: int, preset=None, progress: bool = False) -> Run:
    """Lab 04's data-size sweep: held-out accuracy and ceiling of a reward model trained on ``n_pairs``."""
    preset = preset or get_preset()
    fit = fit_reward_model(preset, pipeline.ensure("sft", preset, progress=progress), n_pairs, progress=progress)
    return Run(row={"training pairs": n_pairs, "accuracy": fit["accuracy"], "bayes_ceiling": fit["bayes_ceiling"],
                    "seconds": fit["result"].seconds}, history=fit["result"].history)
