"""Lab 01's small pretraining runs: a fresh model on part of the corpus, nothing cached."""
from __future__ import annotations

import dataclasses
from typing import Callable

from labkit import runtime
from labkit.models import build_model, config_from_size, count_parameters
from labkit.pipeline import pretrain_data
from labkit.train.pretrain import pretrain


def quick_run(preset, *, n_train_docs: int | None = None, d_model: int | None = None,
              steps: int | None = None, eval_every: int | None = None, seed: int | None = None,
              callback: Callable[[list[dict]], None] | None = None, progress: bool = True):
    """A self-contained pretraining run for a lab experiment (memorisation, size sweep, sliders).

    Starts from ``preset`` and overrides the corpus size, the model width (heads and MLP scale with
    it) and the number of steps. Returns ``(model, tokenizer, result, stats)``; nothing is cached.
    """
    size = preset.model
    if d_model is not None:
        heads = max(1, min(size.n_heads, d_model // 16))
        size = dataclasses.replace(size, d_model=d_model, n_heads=heads, d_ff=3 * d_model)
    cfg = preset.pretrain
    if steps is not None:
        cfg = dataclasses.replace(cfg, steps=steps, warmup=min(cfg.warmup, max(1, steps // 10)),
                                  eval_every=eval_every or max(1, steps // 15))
    data = pretrain_data(preset, n_train=n_train_docs)
    seed = preset.seed if seed is None else seed
    model = build_model(config_from_size(size, len(data.tokenizer), data.tokenizer), seed=seed)
    model.to(runtime.device())
    result = pretrain(model, data.train, data.val, cfg, seed=seed, callback=callback, progress=progress)
    result.parameters = count_parameters(model)
    return model, data.tokenizer, result, data.stats
