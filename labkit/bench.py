"""Benchmarks: how fast each stage trains and how much memory it takes, and side-by-side comparisons.

``python -m labkit bench`` (:func:`bench`) runs a short slice of every stage's training (a few
steps of the stage's own trainer, with the preset's model, data and batch), each in a fresh Python
process so that its peak memory is its own (each stage declares its slice: ``Stage.bench``, in its
module under :mod:`labkit.stages`), and the comparisons its stages open in the same run: our pretraining
loop against a bare PyTorch loop, PPO against GRPO at the same answers per step, and LoRA against
full fine-tuning. Timing goals live here, not in the tests (a busy CI machine would make a timed
test flaky).
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time

import torch

from labkit import flops, reference, runtime
from labkit.measure import in_fresh_process, sig
from labkit.models import build_model, config_from_size
from labkit.presets import get_preset, resolve_preset
from labkit.stages import STAGES
from labkit.stages.grpo import models_held as grpo_holds
from labkit.stages.ppo import models_held as ppo_holds
from labkit.stages.pretrain import pretrain_rows
from labkit.train.pretrain import IGNORE, Packed, pretrain


def _bare_loop(model, data: Packed, rows_per_step: int, steps: int, lr: float) -> tuple[int, float]:
    """The textbook loop: forward with labels, backward, step. Returns (tokens, seconds)."""
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    tokens = 0
    start = time.perf_counter()
    for step in range(steps):
        sl = slice(step * rows_per_step, (step + 1) * rows_per_step)
        ids, lab = data.input_ids[sl].to(device), data.labels[sl].to(device)
        loss = model(input_ids=ids, labels=lab).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += int((lab[:, 1:] != IGNORE).sum())
    if device.type == "cuda":
        torch.cuda.synchronize()
    return tokens, time.perf_counter() - start



def bench_pretrain(preset_name: str = "cpu", steps: int = 30) -> dict:
    """Tokens/s of :func:`labkit.train.pretrain.pretrain` vs a bare PyTorch loop, same model and data.

    Both start from identical weights and see the same number of rows per step; each gets two
    untimed warm-up steps. The ratio ours/bare shows what our extras (schedule, clipping, progress
    bar, logging, and Muon's orthogonalisation where the preset pretrains with it; the bare loop
    is AdamW alone) cost.
    """
    preset = get_preset(preset_name)
    data, rows_per_step, tiny_val = pretrain_rows(preset, steps)
    config = config_from_size(preset.model, len(data.tokenizer), data.tokenizer)
    device = runtime.device()

    bare_model = build_model(config, seed=0).to(device)
    _bare_loop(bare_model, data.train, rows_per_step, 2, preset.pretrain.lr)   # warm-up
    bare_tokens, bare_seconds = _bare_loop(bare_model, data.train, rows_per_step, steps, preset.pretrain.lr)

    ours_model = build_model(config, seed=0).to(device)
    warm = dataclasses.replace(preset.pretrain, steps=2, eval_every=2, warmup=0)
    pretrain(ours_model, data.train, tiny_val, warm, progress=False)
    cfg = dataclasses.replace(preset.pretrain, steps=steps, eval_every=steps, warmup=min(preset.pretrain.warmup, steps))
    result = pretrain(ours_model, data.train, tiny_val, cfg, progress=True)

    ours = result.tokens_seen / result.seconds
    bare = bare_tokens / bare_seconds
    return {
        "preset": preset.name, "device": str(device), "threads": torch.get_num_threads(),
        "steps": steps, "tokens_per_step": bare_tokens // steps,
        "ours_tokens_per_s": round(ours, 1), "bare_tokens_per_s": round(bare, 1),
        "ratio_ours_over_bare": round(ours / bare, 3),
    }




# ------------------------------------------------------------------------------- every stage

def _stage(name: str):
    if name not in STAGES:
        raise ValueError(f"Unknown stage {name!r} for bench. Stages: {', '.join(STAGES)} (or none: every stage)")
    return STAGES[name]


def stage_step(preset_name: str, stage: str, steps: int, rank: int | None = None, *options) -> dict:
    """Run in a fresh process: ``steps`` optimiser steps of ``stage``'s own trainer; its time and memory.

    A short, representative slice of the stage's training (its module's ``Stage.bench``): the
    preset's model, data and batch, the stage's trainer and settings (``rank``: a LoRA rank for a
    stage that takes one; default the stage's own; ``options``: more arguments its slice takes),
    its inputs loaded from the cache (:func:`labkit.pipeline.ensure` builds any that are missing;
    nothing is written into a stage's checkpoint), no evaluation. Data are made before the peak
    memory is reset; loading the models and training come after, so ``peak_MB`` and ``added_MB``
    are theirs: ``peak_MB`` the highest the process reached, ``added_MB`` what loading and training
    added to Python, torch and transformers alone (``before_MB``). On a GPU: the most GPU memory
    allocated. ``state_MB`` is computed: every weight in memory plus a gradient and AdamW's two
    moments per trainable one (4 bytes each).
    """
    from labkit import pipeline

    preset = get_preset(preset_name)
    entry = _stage(stage)
    rank = entry.rank(preset) if rank is None else int(rank)
    if rank and entry.lora_rank is None:
        with_lora = ", ".join(name for name, s in STAGES.items() if s.lora_rank is not None)
        raise ValueError(f"the {stage!r} stage has no LoRA option; rank must be 0 (LoRA stages: {with_lora})")
    if entry.bench is None:
        raise ValueError(f"the {stage!r} stage declares no bench slice (Stage.bench in its module)")
    inputs = {need: pipeline.ensure(need, preset, progress=False) for need in entry.needs}
    with flops.counting() as count:
        row = entry.bench(preset, inputs, int(steps), rank, *options)
    seconds = row.get("seconds")
    return {"rank": rank, **row, "flops": count.total, "flops_training": count.training,
            "flops_per_s": sig(count.total / seconds) if seconds else None}


def stage_measurement(preset, stage: str, steps: int, rank: int | None = None, *options) -> tuple:
    """The fresh-process call that measures ``stage``: ``(function name, *arguments)`` for :func:`in_fresh_process`.

    The rank is resolved here (the stage's own when None), so a comparison asking for the row a
    stage has already measured finds it (see :class:`FreshRuns`).
    """
    rank = _stage(stage).rank(preset) if rank is None else int(rank)
    return ("stage_step", preset.name, stage, int(steps), rank, *options)


MEMORY_FIELDS = ("rank", "measure", "before_MB", "peak_MB", "added_MB", "trainable_parameters",
                 "parameters_in_memory", "state_MB")


def ppo_memory(preset_name: str = "cpu", ranks: tuple[int, ...] = (0, 8)) -> list[dict]:
    """Lab 05's memory comparison: one PPO iteration at each LoRA rank (0 = full fine-tuning), each in a
    fresh Python process (so peaks don't mix); the memory fields of :func:`stage_step`."""
    return [{k: row[k] for k in MEMORY_FIELDS} for row in
            (in_fresh_process("stage_step", preset_name, "ppo", 1, int(rank)) for rank in ranks)]


# ------------------------------------------------------------------------------- GRPO vs PPO

def ppo_batch_like_grpo(preset) -> tuple[int, int]:
    """PPO's (prompts, samples per prompt) giving as many answers per step as the preset's GRPO.

    PPO keeps its own samples per prompt where they divide GRPO's answers (the cpu preset: 128 =
    32 prompts x 4), else takes GRPO's shape (prompts_per_step x group_size).
    """
    answers = preset.grpo.group_size * preset.grpo.prompts_per_step
    samples = preset.ppo.samples_per_prompt
    if answers % samples:
        samples = preset.grpo.group_size
    return answers // samples, samples



def bench_grpo(preset_name: str = "cpu", steps: int = 5, rank: int = 0, *, measure=None) -> dict:
    """GRPO against PPO at the same batch: seconds per step and peak memory, each in a fresh process.

    "The same batch" is the same number of sampled answers per step: PPO's prompts x samples equals
    GRPO's prompts_per_step x group_size (:func:`ppo_batch_like_grpo`; the cpu preset: PPO 32 x 4 =
    128 = GRPO 16 prompts x 8), PPO's other settings kept. The two still differ in what a step is:
    GRPO samples once and takes one gradient step; PPO also scores with a reward model, runs the
    reference and takes ppo_epochs x minibatches gradient steps (``updates_per_step``); and PPO's
    answers are shorter (``max_new_tokens``), hence ``tokens_per_step``. Both start from their
    stage's inputs (``sft_math`` for GRPO; ``sft`` and ``reward`` for PPO), built here first if
    missing. ``rank`` 0 = full fine-tuning for both, else LoRA of that rank for both. Returns one
    dict per method (each stage's :func:`stage_step` row, with ``holds``: what it keeps in memory) and ``ppo_over_grpo``, PPO's numbers divided by GRPO's. ``measure``: what
    runs a measurement in a fresh process (default :func:`in_fresh_process`; :func:`bench` passes
    one that reuses the rows its stages measured).
    """
    from labkit import pipeline

    measure = measure or in_fresh_process

    preset = get_preset(preset_name)
    grpo_answers = preset.grpo.group_size * preset.grpo.prompts_per_step
    prompts, samples = ppo_batch_like_grpo(preset)
    for stage in ("sft_math", "reward"):     # build inputs here, so the children only load them
        pipeline.ensure(stage, preset, progress=True)
    ppo_shape = () if (prompts, samples) == (preset.ppo.prompts_per_batch, preset.ppo.samples_per_prompt) else (
        prompts, samples)  # the stage's own batch when it matches GRPO's: the ppo stage's row, reused
    grpo = measure(*stage_measurement(preset, "grpo", steps, rank))
    ppo = measure(*stage_measurement(preset, "ppo", steps, rank, *ppo_shape))
    grpo["holds"] = grpo_holds(rank, preset.grpo.beta)
    ppo["holds"] = ppo_holds(rank)

    def ratio(key):
        return sig(ppo[key] / grpo[key], 3) if ppo.get(key) and grpo.get(key) else None

    return {"preset": preset.name, "device": str(runtime.device()), "threads": torch.get_num_threads(),
            "lora_rank": rank, "steps": steps, "answers_per_step": grpo_answers, "grpo": grpo, "ppo": ppo,
            "ppo_over_grpo": {key: ratio(key) for key in ("seconds_per_step", "seconds_per_step_after_first",
                                                          "peak_MB", "added_MB", "parameters_in_memory",
                                                          "state_MB", "tokens_per_step")}}


# ------------------------------------------------------------------------------- every stage


class FreshRuns:
    """Runs measurements in fresh processes (:func:`in_fresh_process`), each one once per bench run.

    A comparison asking for a row a stage has measured (the same function and arguments) gets a copy
    of it. Each row gains ``process_seconds``: the child's whole wall time (interpreter start,
    imports, data, loading and training).
    """

    def __init__(self, progress: bool = True):
        self.rows: dict[tuple, dict] = {}
        self.progress = progress

    def __call__(self, function: str, *args) -> dict:
        import copy

        key = (function, *args)
        if key not in self.rows:
            start = time.perf_counter()
            row = in_fresh_process(function, *args)
            row["process_seconds"] = sig(time.perf_counter() - start, 3)
            self.rows[key] = row
            if self.progress:
                print(f"bench: {function}{tuple(args)!r} took {row['process_seconds']} s in a fresh process",
                      file=sys.stderr, flush=True)
        return copy.deepcopy(self.rows[key])


def _ratio(numerator: dict, denominator: dict, key: str) -> float | None:
    top, bottom = numerator.get(key), denominator.get(key)
    return sig(top / bottom, 3) if top is not None and bottom else None


def lora_vs_full(preset, stage: str, steps: int, measure) -> dict:
    """``stage`` (ppo or dpo) with full fine-tuning and with LoRA, side by side; ``ratio``: LoRA's
    ``added_MB`` over full fine-tuning's. The rank is the stage's own, or where that is 0 the rank of
    lab 05's memory comparison (``ppo_demos.memory_rank``)."""
    rank = STAGES[stage].rank(preset) or preset.ppo_demos.memory_rank
    full = measure(*stage_measurement(preset, stage, steps, rank=0))
    lora = measure(*stage_measurement(preset, stage, steps, rank=rank))
    return {"rank": rank, "ratio": _ratio(lora, full, "added_MB"),
            "ratio_is": "LoRA's added_MB / full fine-tuning's: the memory loading the models and training added",
            **{f"{key}_ratio": _ratio(lora, full, key) for key in ("peak_MB", "state_MB", "trainable_parameters",
                                                                    "parameters_in_memory",
                                                                    "seconds_per_step_after_first")},
            "full": full, "lora": lora}


def _without(row: dict, *keys: str) -> dict:
    return {k: v for k, v in row.items() if k not in keys}


def pretrain_vs_bare(preset, steps: int) -> dict:
    """:func:`bench_pretrain` (in this process: it measures speed only); ``ratio``: ours over bare, tokens/s."""
    row = bench_pretrain(preset.name, steps)
    return {"ratio": row["ratio_ours_over_bare"],
            "ratio_is": "tokens/s of labkit's pretraining loop / a bare PyTorch loop's (same model, data, rows per step)",
            **_without(row, "preset", "device")}


def ppo_vs_grpo(preset, steps: int, measure) -> dict:
    """:func:`bench_grpo` at the GRPO stage's LoRA rank; ``ratio``: PPO's seconds per step over GRPO's."""
    row = bench_grpo(preset.name, steps, STAGES["grpo"].rank(preset), measure=measure)
    key = "seconds_per_step_after_first" if row["ppo_over_grpo"]["seconds_per_step_after_first"] else "seconds_per_step"
    return {"ratio": row["ppo_over_grpo"][key],
            "ratio_is": f"PPO's {key} / GRPO's, at {row['answers_per_step']} sampled answers per step for both",
            **_without(row, "preset", "device", "threads")}


def _cpu_name() -> str:
    import platform

    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(preset) -> dict:
    """Where a bench ran: preset, device, versions, threads, CPU count and the date (UTC)."""
    import datetime
    import os
    import platform

    import transformers
    import trl

    device = runtime.device()
    return {"preset": preset.name, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
            "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _finite(value):
    """``value`` with every NaN or infinite float replaced by None (strict JSON has neither)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


STEPS = 5            # default steps of each stage slice and comparison
PRETRAIN_STEPS = 30  # default steps of each loop in pretrain_vs_bare (short steps: more of them)

# The side-by-side comparisons a stage can open (``Stage.comparisons``): name -> (run, stages whose
# checkpoints it loads besides the opening stages' needs). run(preset, opened_by, steps, measure),
# ``steps`` None for each comparison's default.
COMPARISONS = {
    "pretrain_vs_bare": (lambda preset, opened, steps, measure: pretrain_vs_bare(preset, steps or PRETRAIN_STEPS), ()),
    "ppo_vs_grpo": (lambda preset, opened, steps, measure: ppo_vs_grpo(preset, steps or STEPS, measure),
                    ("sft_math", "reward")),
    "lora_vs_full": (lambda preset, opened, steps, measure: {stage: lora_vs_full(preset, stage, steps or STEPS, measure)
                                                             for stage in opened}, ()),
}


def benched() -> list[str]:
    """The stages the bench measures by default: those that declare a slice (``Stage.bench``), in order."""
    return [name for name, stage in STAGES.items() if stage.bench is not None]


def bench(preset_name: str = "cpu", stages: list[str] | None = None, steps: int | None = None, *,
          progress: bool = True) -> dict:
    """``python -m labkit bench``: every stage that declares a slice (or ``stages``) measured, and the
    comparisons, in one run. (``dpo_online`` declares none: one of its rounds is the ``ppo`` stage's
    sampling and the ``dpo`` stage's steps, both measured here.)

    ``stages[name]`` is :func:`stage_step`'s row for each stage, measured in its own fresh process:
    ``seconds_per_step`` (and ``_after_first``), ``samples_per_s`` (``sample`` names the unit) and
    ``tokens_per_s`` where the trainer counts tokens, ``peak_MB`` / ``added_MB`` / ``peak_rss_MB``
    (and ``cuda_max_allocated_MB`` on a GPU), ``trainable_parameters``. ``comparisons`` holds those
    the stages asked for open (``Stage.comparisons``; see :data:`COMPARISONS`): in the course,
    ``pretrain_vs_bare`` (pretrain), ``lora_vs_full`` (ppo, dpo) and ``ppo_vs_grpo`` (grpo), each
    with a ``ratio`` and ``ratio_is`` saying what it divides. ``steps`` (default :data:`STEPS`;
    :data:`PRETRAIN_STEPS` for the pretraining loops) is the same for every measurement. Missing
    inputs are trained first (:func:`labkit.pipeline.ensure`), outside the measurements.
    """
    from labkit import pipeline

    preset = resolve_preset(preset_name)
    stages = benched() if stages is None else list(stages)
    for stage in stages:
        _stage(stage)
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    each = steps or STEPS
    start = time.perf_counter()
    report = {**environment(preset), "steps": each, "stages": {}, "comparisons": {}}
    opened = {name: [stage for stage in stages if name in STAGES[stage].comparisons] for name in COMPARISONS}
    unknown = {name for stage in stages for name in STAGES[stage].comparisons} - set(COMPARISONS)
    if unknown:
        raise ValueError(f"no bench comparison called {', '.join(sorted(unknown))}; comparisons: {', '.join(COMPARISONS)}")
    needs = {need for stage in stages for need in STAGES[stage].needs}
    needs |= {need for name, by in opened.items() if by for need in COMPARISONS[name][1]}
    for stage in (s for s in STAGES if s in needs):   # build the inputs here, so the children only load them
        pipeline.ensure(stage, preset, progress=progress)
    measure = FreshRuns(progress)
    report["matmul_peak"] = flops.matmul_peak(device=runtime.device())
    for stage in stages:
        row = measure(*stage_measurement(preset, stage, each))
        report["stages"][stage] = {"stage": stage, **row, "utilisation": utilisation(row, report["matmul_peak"])}
    for name, by in opened.items():
        if by:
            report["comparisons"][name] = COMPARISONS[name][0](preset, by, steps, measure)
    report["pipeline_compute"] = pipeline_compute(preset.name)
    report["fresh_processes"] = len(measure.rows)
    report["seconds"] = sig(time.perf_counter() - start, 3)
    return _finite(report)


def utilisation(row: dict, peak: dict) -> float | None:
    """A measurement's counted operations per second as a share of the machine's matrix-product peak."""
    rate = row.get("flops_per_s")
    return sig(rate / peak["flops_per_s"], 3) if rate and peak.get("flops_per_s") else None


def pipeline_compute(preset_name: str) -> dict | None:
    """The whole pipeline's counted operations as the reference results (``results/<preset>.json``)
    recorded them: per stage and summed, beside the baseline recipes' (``results/baseline/``) with
    their ratio (:func:`labkit.results.compute`). None where the reference carries no counts."""
    path = reference.results_dir() / f"{preset_name}.json"
    return json.loads(path.read_text()).get("compute") if path.exists() else None


def summary(report: dict) -> str:
    """A few lines for the terminal: the peak, each stage's counted rate and utilisation, and the
    whole pipeline's compute beside the baseline's."""
    peak = report.get("matmul_peak")
    lines = [f"matrix-product peak: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s ({peak['dtype']} {peak['size']}×{peak['size']}, "
             f"{peak['threads']} threads, {peak['device']})" if peak else "matrix-product peak: not measured"]
    for stage, row in report.get("stages", {}).items():
        rate = row.get("flops_per_s")
        share = f"{row['utilisation']:.1%} of the peak" if row.get("utilisation") is not None else "utilisation unknown"
        lines.append(f"  {stage:<13} {rate / 1e9 if rate else float('nan'):7.1f} GFLOP/s counted  {share}")
    compute = report.get("pipeline_compute")
    if compute and compute.get("baseline_flops"):
        lines.append(f"whole pipeline (reference results): {compute['flops'] / 1e12:.1f} TFLOP, baseline recipes "
                     f"{compute['baseline_flops'] / 1e12:.1f} TFLOP: ratio {compute['ratio']:.2f}")
    else:
        lines.append("whole pipeline: no counted reference results to compare (results/<preset>.json and "
                     "results/baseline/<preset>.json)")
    return "\n".join(lines)


@reference.measurement("bench", lab="README", seconds=110,
                       across_machines={"trainable_parameters": 0, "parameters_in_memory": 0, "flops*": 1e12})
def bench_figures(preset) -> dict:
    """``python -m labkit bench`` at ``preset``, for the README's benchmark figures: its stages and
    comparisons (where it ran is in the results' own ``machine``)."""
    report = bench(preset, progress=False)
    return {key: report[key] for key in ("steps", "matmul_peak", "stages", "comparisons", "fresh_processes", "seconds")}
