"""Lab 01's small runs: fresh pretraining runs on part of the corpus (nothing cached), and the
shortcut classifier.

The demonstrations whose figures the course quotes are declared here as measurements
(:func:`labkit.reference.measurement`): the memorisation run, the shortcut classifiers and the
size sweep. Each runs what the lab runs and returns its figures through the same ``*_figures``
function the lab calls to print them beside the reference.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from tqdm.auto import tqdm

from labkit import reference, runtime
from labkit.models import build_model, config_from_size, count_parameters
from labkit.pipeline import pretrain_data
from labkit.train.pretrain import CURVE_ROWS, pretrain


def quick_run(preset, *, n_train_docs: int | None = None, d_model: int | None = None,
              steps: int | None = None, eval_every: int | None = None, seed: int | None = None,
              optimizer: str | None = None, muon_lr: float | None = None, curve_rows: int | None = None,
              callback: Callable[[list[dict]], None] | None = None, progress: bool = True):
    """A self-contained pretraining run for a lab experiment (memorisation, size sweep, sliders).

    Starts from ``preset`` and overrides the corpus size, the model width (heads and MLP scale with
    it), the number of steps and the optimiser (``"adamw"`` or ``"muon"``, at ``muon_lr``). Each point of
    its curve reads the whole validation set unless ``curve_rows`` says how many of its rows
    (:func:`labkit.train.pretrain.pretrain`; the last point reads all of them). Returns ``(model,
    tokenizer, result, stats)``; nothing is cached.
    """
    size = preset.model
    if d_model is not None:
        heads = max(1, min(size.n_heads, d_model // 16))
        size = dataclasses.replace(size, d_model=d_model, n_heads=heads, d_ff=3 * d_model)
    cfg = preset.pretrain
    if steps is not None:
        cfg = dataclasses.replace(cfg, steps=steps, warmup=min(cfg.warmup, max(1, steps // 10)),
                                  eval_every=eval_every or max(1, steps // 15))
    if optimizer is not None:
        cfg = dataclasses.replace(cfg, optimizer=optimizer)
    if muon_lr is not None:
        cfg = dataclasses.replace(cfg, muon_lr=muon_lr)
    data = pretrain_data(preset, n_train=n_train_docs)
    seed = preset.seed if seed is None else seed
    model = build_model(config_from_size(size, len(data.tokenizer), data.tokenizer), seed=seed)
    model.to(runtime.device())
    result = pretrain(model, data.train, data.val, cfg, seed=seed, callback=callback, progress=progress,
                      curve_rows=curve_rows)
    result.parameters = count_parameters(model)
    return model, data.tokenizer, result, data.stats


# ------------------------------------------------------------------------ two optimisers

PLATEAU_GAP = 0.95  # the plateau counts as over at the first evaluation with 95 % of the gap closed
MUON_LR = 0.01      # Muon's peak rate in the comparison: the best of 0.01, 0.02 and 0.04 on the cpu preset


def optimiser_comparison(preset, *, progress: bool = True) -> tuple[dict[str, list[dict]], dict]:
    """Lab 01, section 3: the pretraining stage's run beside the same run with the other optimiser
    (same model, data, seed, schedule and steps). The stage's history comes from the cache
    (:func:`labkit.pipeline.metrics` trains it if missing); the other run trains here. Returns
    ``({optimiser: history}, corpus stats)``, the stage's optimiser first."""
    from labkit import pipeline

    ours = preset.pretrain.optimizer
    other = "adamw" if ours == "muon" else "muon"
    stage = pipeline.metrics("pretrain", preset)
    _, _, run, stats = quick_run(preset, optimizer=other, muon_lr=MUON_LR, curve_rows=CURVE_ROWS, progress=progress)
    return {ours: stage["history"], other: run.history}, stats


def optimiser_figures(runs: dict[str, list[dict]], stats: dict) -> dict:
    """Each run's final validation loss and gap closed, and the step its plateau ended (the first
    evaluation with :data:`PLATEAU_GAP` of the gap closed; None if it never got there)."""
    from labkit.stages.pretrain import gap_closed

    figures = {}
    for name, history in runs.items():
        ended = next((h["step"] for h in history if gap_closed(h["val_loss"], stats) >= PLATEAU_GAP), None)
        figures[name] = {"val_loss": history[-1]["val_loss"], "gap_closed": gap_closed(history[-1]["val_loss"], stats),
                         "plateau_end_step": ended, "steps": history[-1]["step"]}
    return figures


@reference.measurement("lab01_optimisers", lab="01", seconds=330,
                       across_machines={"val_loss": 0.1, "gap_closed": 0.03, "plateau_end_step": 300, "steps": 0})
def lab01_optimisers(preset) -> dict:
    """Lab 01, section 3: the stage's optimiser against the other one, same budget."""
    return optimiser_figures(*optimiser_comparison(preset, progress=False))


# ------------------------------------------------------------------------------- memorisation

def memorisation_figures(run) -> dict:
    """The memorisation run in numbers (nats/token): its final training loss, its lowest validation
    loss and the step it was reached at, and its final validation loss."""
    best = min(run.history, key=lambda h: h["val_loss"])
    return {"final_train_loss": run.train_loss, "lowest_val_loss": best["val_loss"],
            "lowest_val_step": best["step"], "final_val_loss": run.val_loss}


@reference.measurement("lab01_memorisation", lab="01", seconds=80,
                       across_machines={"final_train_loss": 0.05, "lowest_val_loss": 0.15, "final_val_loss": 0.4})
def lab01_memorisation(preset) -> dict:
    """Lab 01, section 7: a fresh model, many steps on the preset's tiny corpus (``pretrain_demos``)."""
    demos = preset.pretrain_demos
    _, _, run, _ = quick_run(preset, n_train_docs=demos.memorise_docs, steps=demos.memorise_steps, progress=False)
    return memorisation_figures(run)


# --------------------------------------------------------------------------- shortcut learning

SHORTCUT_EVALUATED_ON = ("train", "test", "probe")  # the splits each shortcut classifier is scored on


def shortcut_splits(preset) -> dict[str, list[dict]]:
    """The four splits of :mod:`labkit.world.shortcut`, ``pretrain_demos.shortcut_examples`` each."""
    from labkit.world import shortcut

    n = preset.pretrain_demos.shortcut_examples
    return {name: shortcut.shortcut_split(name, n, preset.world_seed) for name in shortcut.SPLITS}


def shortcut_classifier(splits: dict[str, list[dict]], trained_on: str, preset, *, progress: bool = True):
    """Lab 01, section 8: :func:`labkit.train.classify.train_classifier` on the split ``trained_on``
    (``"train"``, where the format word is a shortcut, or ``"balanced"``), scored on
    :data:`SHORTCUT_EVALUATED_ON`."""
    from labkit.train import classify

    return classify.train_classifier(splits[trained_on], steps=preset.pretrain_demos.shortcut_steps,
                                     eval_sets={name: splits[name] for name in SHORTCUT_EVALUATED_ON},
                                     seed=preset.seed, progress=progress)


def shortcut_figures(with_shortcut, balanced) -> dict:
    """Each classifier's final accuracy on each split: ``with_shortcut`` trained on ``train``,
    ``balanced`` on ``balanced``."""
    return {trained_on: {f"{name}_accuracy": run.final[name] for name in SHORTCUT_EVALUATED_ON}
            for trained_on, run in (("with_shortcut", with_shortcut), ("balanced", balanced))}


@reference.measurement("lab01_shortcut", lab="01", seconds=40, across_machines={"*accuracy*": 0.1})
def lab01_shortcut(preset) -> dict:
    """Lab 01, section 8: the classifier trained with the shortcut, then on balanced data."""
    splits = shortcut_splits(preset)
    return shortcut_figures(shortcut_classifier(splits, "train", preset, progress=False),
                            shortcut_classifier(splits, "balanced", preset, progress=False))


# ------------------------------------------------------------------------------ the size sweep

def size_sweep(preset, *, progress: bool = True):
    """Lab 01, section 9: one :func:`quick_run` per width in ``pretrain_demos.sweep_widths``, each
    ``sweep_steps`` steps on the preset's corpus. A table indexed by ``d_model``: parameters, final
    train and validation loss, the gap closed and the training seconds."""
    import pandas as pd

    from labkit.stages.pretrain import gap_closed

    demos = preset.pretrain_demos
    rows = []
    for width in tqdm(demos.sweep_widths, desc="size sweep", disable=not progress):
        _, _, run, stats = quick_run(preset, d_model=width, steps=demos.sweep_steps, curve_rows=CURVE_ROWS,
                                     progress=False)
        rows.append({"d_model": width, "parameters": run.parameters, "train_loss": run.train_loss,
                     "val_loss": run.val_loss, "gap_closed": gap_closed(run.val_loss, stats),
                     "seconds": run.seconds})
    return pd.DataFrame(rows).set_index("d_model")


def size_sweep_figures(sweep) -> dict:
    """The sweep's table as figures, one group per width: ``d_model_64.val_loss`` …"""
    return {f"d_model_{width}": {key: row[key] for key in ("parameters", "train_loss", "val_loss", "gap_closed",
                                                             "seconds")}
            for width, row in sweep.to_dict("index").items()}


@reference.measurement("lab01_size_sweep", lab="01", seconds=100,
                       across_machines={"parameters": 0, "*loss": 0.1, "gap_closed": 0.03})
def lab01_size_sweep(preset) -> dict:
    """Lab 01, section 9: the size sweep."""
    return size_sweep_figures(size_sweep(preset, progress=False))
