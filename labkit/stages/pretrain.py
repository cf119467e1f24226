"""Stage ``pretrain``: the tiny model learns to speak, from scratch, on the world's stories (lab 01).

Its data (:func:`pretrain_data`: the corpus, a tokenizer trained on it, packed rows and the corpus's
true entropy), its recipe (:func:`train_pretrain_stage`; under the ``hub`` preset a real model is
measured on our corpus instead) and its bench slice (:func:`bench_pretrain_slice`).
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from labkit import measure, runtime, world
from labkit.metrics import nats_per_word
from labkit.models import build_model, config_from_size, count_parameters, load_causal_lm
from labkit.presets import Preset, get_preset
from labkit.stages.base import Stage, StageOutput, register
from labkit.tokenizer import train_tokenizer
from labkit.train.pretrain import Packed, pack_documents, pretrain


@dataclass
class PretrainData:
    """The tokenizer, packed train/validation rows and the corpus statistics for one preset."""
    tokenizer: object
    train: Packed
    val: Packed
    stats: dict  # entropy_floor, true_nll, unigram_entropy (nats/token), tokens, documents


def encode_docs(tokenizer, docs: list[world.Doc]) -> list[list[int]]:
    """Token ids of each document: ``<s>`` + its words + ``</s>``."""
    ids = tokenizer([d.text for d in docs])["input_ids"]
    return [row + [tokenizer.eos_token_id] for row in ids]


def pretrain_data(preset: Preset | None = None, n_train: int | None = None) -> PretrainData:
    """Generate the corpus for ``preset``, train the tokenizer on it and pack it into rows.

    Cached in memory for the session (a few recent calls), so lab experiments that train several
    small models on the same corpus don't regenerate it each time.
    """
    preset = preset or get_preset()
    return dataclasses.replace(_pretrain_data(preset, n_train or preset.n_train_docs))


@functools.lru_cache(maxsize=4)
def _pretrain_data(preset: Preset, n_train: int) -> PretrainData:
    train_docs = world.corpus("train", n_train, preset.world_seed)
    val_docs = world.corpus("validation", preset.n_val_docs, preset.world_seed)
    tokenizer = train_tokenizer((d.text for d in train_docs), extra_words=world.vocabulary())
    pad = tokenizer.pad_token_id
    return PretrainData(
        tokenizer=tokenizer,
        train=pack_documents(encode_docs(tokenizer, train_docs), preset.model.max_len, pad),
        val=pack_documents(encode_docs(tokenizer, val_docs), preset.model.max_len, pad),
        stats=world.entropy_stats(val_docs, train_docs),
    )


def gap_closed(val_loss: float, stats: dict) -> float:
    """Share of the distance from the unigram entropy down to the floor that a model has covered."""
    return (stats["unigram_entropy"] - val_loss) / (stats["unigram_entropy"] - stats["entropy_floor"])


def _train_pretrain(preset: Preset, progress: bool, callback: Callable | None):
    data = pretrain_data(preset)
    runtime.seed_everything(preset.seed)
    config = config_from_size(preset.model, len(data.tokenizer), data.tokenizer)
    model = build_model(config, seed=preset.seed).to(runtime.device())
    result = pretrain(model, data.train, data.val, preset.pretrain, seed=preset.seed,
                      callback=callback, progress=progress)
    metrics = {
        "val_loss": result.val_loss,
        "train_loss": result.train_loss,
        "entropy_floor": data.stats["entropy_floor"],
        "unigram_entropy": data.stats["unigram_entropy"],
        "true_nll": data.stats["true_nll"],
        "gap_closed": gap_closed(result.val_loss, data.stats),
        "train_seconds": result.seconds,
        "tokens_seen": result.tokens_seen,
        "parameters": count_parameters(model),
    }
    return StageOutput(model, data.tokenizer, metrics, result.history)


def _hub_pretrain(preset: Preset, progress: bool, callback: Callable | None):
    """``hub`` preset: the 'pretrained model' is a real one from the Hub, measured on our corpus."""
    runtime.require_hub(preset.hub_model)
    model, tokenizer = load_causal_lm(preset.hub_model)
    val_docs = world.corpus("validation", preset.n_val_docs, preset.world_seed)
    stats = world.entropy_stats(val_docs, world.corpus("train", 2000, preset.world_seed))
    val_loss = nats_per_word(model, tokenizer, [d.text for d in val_docs])
    metrics = {"val_loss": val_loss, "entropy_floor": stats["entropy_floor"],
               "unigram_entropy": stats["unigram_entropy"], "gap_closed": gap_closed(val_loss, stats),
               "parameters": count_parameters(model), "model": str(preset.hub_model),
               "unit": "nats per word (sub-word losses summed per word)"}
    return StageOutput(model, tokenizer, metrics, [])


def train_pretrain_stage(preset: Preset, inputs: dict[str, Path], progress: bool, callback: Callable | None):
    """Pretrain the tiny model from scratch (or, under ``hub``, measure a real model on our corpus)."""
    if preset.hub_model:
        return _hub_pretrain(preset, progress, callback)
    return _train_pretrain(preset, progress, callback)


# ------------------------------------------------------------------------------- the bench

def pretrain_rows(preset: Preset, steps: int) -> tuple[PretrainData, int, Packed]:
    """Enough of the preset's corpus for ``steps`` pretraining steps (+ 2 warm-up steps), without
    generating all of it: ``(data, rows_per_step, tiny_val)``, ``tiny_val`` 8 validation rows."""
    max_len = preset.model.max_len
    rows_per_step = max(1, preset.pretrain.batch_tokens // max_len)
    n_docs = min(preset.n_train_docs, max(500, 2 * (steps + 2) * rows_per_step * max_len // 50))
    data = pretrain_data(preset, n_train=n_docs)
    need = (steps + 2) * rows_per_step
    if len(data.train.input_ids) < need:
        reps = -(-need // len(data.train.input_ids))
        data.train = Packed(data.train.input_ids.repeat(reps, 1), data.train.labels.repeat(reps, 1))
    return data, rows_per_step, Packed(data.val.input_ids[:8], data.val.labels[:8])


def bench_pretrain_slice(preset: Preset, inputs: dict[str, Path], steps: int, rank: int = 0) -> dict:
    """``steps`` steps of :func:`labkit.train.pretrain.pretrain` on a fresh model of the preset's size.

    The loop evaluates on 8 rows after every step so that each step's time is logged; those
    evaluations are left out of its clock (as in the stage).
    """
    device = runtime.device()
    data, rows_per_step, tiny_val = pretrain_rows(preset, steps)
    config = config_from_size(preset.model, len(data.tokenizer), data.tokenizer)
    cfg = dataclasses.replace(preset.pretrain, steps=steps, eval_every=1, warmup=min(preset.pretrain.warmup, steps))
    before = measure.memory_start(device)
    model = build_model(config, seed=preset.seed).to(device)
    result = pretrain(model, data.train, tiny_val, cfg, seed=preset.seed, progress=False, train_eval_rows=8)
    clock = measure.StepClock([(point["step"], point["seconds"]) for point in result.history])
    n = sum(p.numel() for p in model.parameters())
    return {**measure.memory_row(device, before, n, n),
            **measure.timing_row(result.seconds, steps, clock, rows_per_step,
                                 f"packed row of {preset.model.max_len} tokens", result.tokens_seen / steps)}


register(Stage(
    "pretrain", needs=(),
    fields=("name", "world_seed", "n_train_docs", "n_val_docs", "model", "pretrain", "seed", "hub_model"),
    report=("seconds", "val_loss", "entropy_floor", "unigram_entropy", "train_loss", "gap_closed",
            "true_nll", "train_seconds", "tokens_seen", "parameters", "model", "unit"),
    train=train_pretrain_stage, bench=bench_pretrain_slice, comparisons=("pretrain_vs_bare",)))
