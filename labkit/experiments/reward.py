"""Lab 04's reward-model runs: the same stage recipe on fewer training pairs, and the trained
reward model's calibration and length bias.

The demonstrations whose figures the course quotes are declared here as measurements
(:func:`labkit.reference.measurement`). Each runs what the lab runs and returns its figures through
the same ``*_figures`` function the lab calls to print them beside the reference.
"""
from __future__ import annotations

from labkit import checkpoint, pipeline, reference
from labkit.experiments import Run
from labkit.presets import get_preset
from labkit.stages.reward import fit_reward_model


def reward_experiment(n_pairs: int, preset=None, progress: bool = False) -> Run:
    """Lab 04's data-size sweep: held-out accuracy and ceiling of a reward model trained on ``n_pairs``."""
    preset = preset or get_preset()
    fit = fit_reward_model(preset, pipeline.ensure("sft", preset, progress=progress), n_pairs, progress=progress)
    return Run(row={"training pairs": n_pairs, "accuracy": fit["accuracy"], "bayes_ceiling": fit["bayes_ceiling"],
                    "seconds": fit["result"].seconds}, history=fit["result"].history)


def pair_count_figures(rows: list[dict]) -> dict:
    """Each run of the data-size sweep (``pairs_250`` …): held-out accuracy and training seconds.
    ``rows``: :func:`reward_experiment`'s rows."""
    return {f"pairs_{row['training pairs']}": {"accuracy": row["accuracy"], "train_seconds": row["seconds"]}
            for row in rows}


@reference.measurement("lab04_pair_counts", lab="04", seconds=70, across_machines={"accuracy": 0.05})
def lab04_pair_counts(preset) -> dict:
    """Lab 04, section 7: a reward model trained on each of ``preset.reward_demos.pair_counts``."""
    return pair_count_figures([reward_experiment(n, preset).row for n in preset.reward_demos.pair_counts])


def calibration_figures(table) -> dict:
    """The calibration table (:func:`labkit.train.reward.calibration_table`) in numbers.

    ``calibration_error``: the expected calibration error against the **gold** probability, the mean
    over bins of |predicted − gold| weighted by the pairs in each bin (no label noise enters it);
    ``bins``: each bin's mean prediction, share of labels, gold probability and pairs."""
    error = ((table["predicted"] - table["gold"]).abs() * table["pairs"]).sum() / table["pairs"].sum()
    return {"calibration_error": float(error),
            "bins": [{"predicted": float(r.predicted), "labels": float(r.labels), "gold": float(r.gold),
                      "pairs": int(r.pairs)} for r in table.itertuples()]}


@reference.measurement("lab04_calibration", lab="04", seconds=15, across_machines={"calibration_error": 0.015})
def lab04_calibration(preset) -> dict:
    """Lab 04, section 6: the ``reward`` stage's calibration on the held-out test pairs."""
    from labkit.train import reward as rm
    from labkit.world import preferences as prefs

    model, tokenizer, _ = checkpoint.load_checkpoint(pipeline.ensure("reward", preset, progress=False))
    return calibration_figures(rm.calibration_table(model, tokenizer,
                                                    prefs.preference_pairs("test", preset.reward.eval_pairs)))


@reference.measurement("lab04_length_bias", lab="04", seconds=10, across_machines={"longer_preferred_share": 0.05})
def lab04_length_bias(preset) -> dict:
    """Lab 04, section 8: the share of equal-gold-reward pairs in which the ``reward`` stage's model
    scores the longer answer higher (``reward_demos.probe_pairs`` of them; 0.5 = no bias)."""
    from labkit.train import reward as rm
    from labkit.world import preferences as prefs

    model, tokenizer, _ = checkpoint.load_checkpoint(pipeline.ensure("reward", preset, progress=False))
    return {"longer_preferred_share": rm.length_bias(model, tokenizer,
                                                    prefs.equal_reward_pairs(preset.reward_demos.probe_pairs))}
