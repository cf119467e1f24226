"""What a stage is, and the one registry of them.

A stage module (``labkit/stages/<name>.py``) prepares its data, holds its recipe, and ends with one
:func:`register` call per stage it declares. The :class:`Stage` entry says everything the rest of
labkit needs from it, so no other module has to know the stage by name:

* the pipeline (:mod:`labkit.pipeline`): what it needs, what its checkpoint depends on, what it
  reports, and ``train``, the function that trains it;
* the bench (:mod:`labkit.bench`): ``bench``, a short slice of its training to time and measure,
  whether it takes a LoRA rank, and which side-by-side comparisons it opens;
* lab 08's race (:mod:`labkit.experiments.showdown`): its ``contenders``, each a label and how to run it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple


class StageOutput(NamedTuple):
    """What a stage's ``train`` returns: the trained model and tokenizer, its metrics and history."""
    model: object
    tokenizer: object
    metrics: dict
    history: list


# ------------------------------------------------------------------------------- lab 08's race

@dataclass
class RaceInputs:
    """What every contender of lab 08's race starts from: the SFT policy and the reward model.

    The checkpoints are loaded on first use and then shared, so a contender that judges with the
    SFT policy and the reward model does not load them twice.
    """
    preset: object
    sft_dir: Path
    reward_dir: Path

    def _loaded(self, which: str):
        """``(model, tokenizer, metadata)`` of the ``"sft"`` or ``"reward"`` checkpoint, loaded once."""
        from labkit import checkpoint, runtime

        cache = self.__dict__.setdefault("_models", {})
        if which not in cache:
            cache[which] = checkpoint.load_checkpoint(getattr(self, f"{which}_dir"), device=runtime.device())
        return cache[which]

    @property
    def reference(self):
        """The SFT policy: every method is judged against its answers."""
        return self._loaded("sft")[0]

    @property
    def tokenizer(self):
        return self._loaded("sft")[1]

    @property
    def reward_model(self):
        return self._loaded("reward")[0]

    @property
    def reward_tokenizer(self):
        return self._loaded("reward")[1]

    def eval_every(self, steps: int) -> int:
        """Steps between held-out evaluations for a curve of ``preset.showdown.curve_points`` points."""
        return max(1, steps // self.preset.showdown.curve_points)


@dataclass(frozen=True)
class Contender:
    """One entry of lab 08's race: a label, and ``run(inputs, rank) -> PolicyRun`` (:class:`labkit.evaluate.PolicyRun`)."""
    label: str
    run: Callable[[RaceInputs, int], object]
    lora: bool = False    # trains LoRA adapters of rank ``preset.showdown.lora_rank`` (else rank 0)
    greedy: bool = True   # the method has a greedy answer of its own (best-of-n, a way of sampling, has not)


# ------------------------------------------------------------------------------- the stage

@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline, declared once, in its own module."""
    name: str
    needs: tuple[str, ...]         # prerequisite stages, built first; their checkpoints come in `inputs`
    fields: tuple[str, ...]        # Preset fields the checkpoint depends on (besides its needs' keys)
    report: tuple[str, ...]        # metrics copied into the headless pipeline report
    train: Callable[..., StageOutput]  # train(preset, inputs, progress, callback) -> StageOutput
    # bench(preset, inputs, steps, rank, *options) -> row: `steps` optimiser steps of the stage's own
    # trainer, timed and measured (see labkit.measure); `inputs` are its needs' checkpoints
    bench: Callable[..., dict] | None = None
    lora_rank: Callable[[object], int] | None = None  # the LoRA rank it trains with (0 = full); None: no LoRA option
    comparisons: tuple[str, ...] = ()  # the bench's side-by-side comparisons measuring it opens
    contenders: tuple[Contender, ...] = ()  # its entries in lab 08's race
    # bump when a change to this stage alone (how it trains or judges) should invalidate its cached
    # checkpoints; pipeline.CODE_VERSION invalidates every stage's
    version: int = 0
    # "section.name" settings inside `fields` that this stage's checkpoint does not depend on: left out
    # of its key, so changing them retrains the stages that use them and not this one
    ignores: tuple[str, ...] = ()

    def rank(self, preset) -> int:
        """The LoRA rank this stage trains with under ``preset`` (0: full fine-tuning, or no LoRA option)."""
        return self.lora_rank(preset) if self.lora_rank else 0


STAGES: dict[str, Stage] = {}  # name -> Stage, prerequisites before the stages that need them

# Every stage reports the compute it spent, counted while it trained (labkit.flops; the pipeline adds them).
COUNTED = ("flops", "flops_training", "flops_inference")


def register(stage: Stage) -> Stage:
    """Add ``stage`` to the registry (after its needs); registering a name again replaces that stage."""
    missing = [need for need in stage.needs if need not in STAGES]
    if missing:
        raise ValueError(f"stage {stage.name!r} needs {', '.join(map(repr, missing))}, which no module has "
                         f"registered yet. Registered: {', '.join(STAGES) or 'none'}")
    missing_counts = tuple(key for key in COUNTED if key not in stage.report)
    if missing_counts:
        stage = dataclasses.replace(stage, report=(*stage.report, *missing_counts))
    STAGES[stage.name] = stage
    return stage


def contenders() -> dict[str, tuple[Stage, Contender]]:
    """Lab 08's race entries of every stage, in the stages' order: label -> (stage, contender)."""
    return {c.label: (stage, c) for stage in STAGES.values() for c in stage.contenders}
