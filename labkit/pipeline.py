"""The stage cache: ``ensure("sft")`` returns a trained checkpoint, training it if needed.

Every lab asks for what it needs and gets it from ``LABKIT_HOME``, keyed by preset and config, so
notebooks run in any order after a kernel restart. A missing stage is built with a progress bar
(prerequisites first); checkpoints are written atomically (see :mod:`labkit.checkpoint`). The
stages themselves are declared in :mod:`labkit.stages`, one module each; this module only orchestrates
them, looking each up in the registry: order, cache keys, checkpoints and the headless report.

Under ``accelerate launch --num_processes N`` every process runs this same code: all N train each
stage together (data parallel), the main process alone writes checkpoints and the report, and the
others wait for it at a barrier, then read what it wrote.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

from labkit import checkpoint, flops, runtime
from labkit.presets import Preset, get_preset, resolve_preset
from labkit.stages import STAGES
# the labs' entry points to two stages' data, here beside ensure() and load()
from labkit.stages.pretrain import gap_closed, pretrain_data  # noqa: F401
from labkit.stages.sft import sft_rows  # noqa: F401

CODE_VERSION = 3  # bump when a change to training code should invalidate cached checkpoints


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"Unknown stage {stage!r}. Stages available: {', '.join(STAGES)}")


# Settings added after checkpoints were cached, with the value that means "as before": at that value
# they stay out of the key, so adding one retrains nothing a learner has cached.
LATER_SETTINGS = {("pretrain", "muon_weight_decay"): 0.0, ("sft", "micro_batches"): 1, ("reward", "micro_batches"): 1,
                  ("dpo", "micro_batches"): 1, ("reward", "pooling"): "last",
                  ("dpo_online", "reference"): "sft", ("dpo_online", "lr"): None, ("reward", "policy_edits"): 0.0,
                  ("reward", "policy_additions"): 0.0, ("sft", "optimizer"): "adamw", ("sft", "muon_lr"): 0.01}


def stage_key(stage: str, preset: Preset) -> str:
    """A short hash of everything that determines the stage's checkpoint (preset, code version, and
    the number of data-parallel processes when there are several)."""
    settings = dataclasses.asdict(preset)
    for (section, name), before in LATER_SETTINGS.items():
        if settings[section][name] == before:
            del settings[section][name]
    for setting in STAGES[stage].ignores:
        section, name = setting.split(".")
        settings[section].pop(name, None)
    fields = {"stage": stage, "preset": {name: settings[name] for name in STAGES[stage].fields},
              "code": CODE_VERSION, "needs": [stage_key(s, preset) for s in STAGES[stage].needs]}
    if STAGES[stage].version:  # 0 leaves the keys of stages that never changed alone
        fields["version"] = STAGES[stage].version
    if runtime.processes() > 1:  # N processes give other numbers than one (float sums, sampling); one keeps its keys
        fields["processes"] = runtime.processes()
    blob = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


_READS: list[tuple[Preset, dict]] = []  # the open records of :func:`reading`


@contextlib.contextmanager
def reading(preset: Preset):
    """Record the stages whose checkpoints are looked up inside the block under ``preset``: yields a dict,
    filled as it runs, of ``{stage: key}``. ``python -m labkit results`` keeps it beside each demonstration,
    so that a figure measured from a stage that the preset has since changed is found (:func:`labkit.results.outdated`).
    Look-ups under another preset (a demonstration's variant of a stage) are not recorded."""
    found: dict[str, str] = {}
    _READS.append((preset, found))
    try:
        yield found
    finally:
        _READS[:] = [r for r in _READS if r[1] is not found]


def read_key(stage: str, preset: Preset) -> str:
    """:func:`stage_key`, recorded in the open records of :func:`reading` as a read of ``stage``: for a
    result cached under a stage's key rather than in its checkpoint (lab 08's race)."""
    key = stage_key(stage, preset)
    for watched, found in _READS:
        if watched == preset:
            found[stage] = key
    return key


def stage_dir(stage: str, preset: Preset | None = None) -> Path:
    """Where the checkpoint of ``stage`` for ``preset`` lives (it may not exist yet)."""
    _check_stage(stage)
    preset = preset or get_preset()
    return runtime.home() / preset.name / f"{stage}-{read_key(stage, preset)}"


def ensure(stage: str, preset: Preset | str | None = None, *, progress: bool = True,
           callback: Callable | None = None, rebuild: set[str] | None = None) -> Path:
    """Return the checkpoint directory of ``stage``, training it (and what it needs) if missing.

    ``callback(history)`` receives the live training history when the stage is trained here.
    ``rebuild``: stages to train again even if cached (each once: a stage is removed from the set
    when it has been rebuilt); the new checkpoint replaces the old one only when complete. If a
    stage fails, the error says which stage, and the stages that finished keep their checkpoints.

    With several processes (``accelerate launch``) every process trains, the main process saves the
    checkpoint, and all meet at a barrier before any of them goes on to use it.

    One process writes a checkpoint at a time: another that needs the same stage (a second notebook,
    a pipeline in a terminal) waits for it, then uses its checkpoint (:func:`labkit.checkpoint.writer_lock`;
    only the main process of an ``accelerate launch`` takes the lock, so start such a launch when no
    other process is training the same stages in the same ``LABKIT_HOME``). A checkpoint that fails
    :func:`labkit.checkpoint.problems` is named and trained again.
    """
    _check_stage(stage)
    preset = resolve_preset(preset)
    path = stage_dir(stage, preset)
    wanted = bool(rebuild and stage in rebuild)
    if checkpoint.is_complete(path) and not wanted:
        return path
    inputs = {need: ensure(need, preset, progress=progress, rebuild=rebuild) for need in STAGES[stage].needs}
    runtime.check_writable(path.parent)  # before minutes of training, not after
    one_writer = checkpoint.writer_lock(path, on_wait=lambda: _say(
        f"labkit: waiting for another process training {stage!r} (preset {preset.name}); "
        "it will then use that checkpoint.")) if runtime.is_main_process() else contextlib.nullcontext()
    with one_writer:
        if runtime.is_main_process():
            checkpoint.recover(path)  # holding the lock: an interrupted --fresh save is put back, leftovers go
        found = checkpoint.problems(path)
        if not found and not wanted:
            return path  # another process trained it while this one waited (or a save was recovered)
        if found != ["absent"] and not wanted:
            _say(f"labkit: the cached {stage!r} checkpoint at {path} is broken ({'; '.join(found)}); "
                 "training it again.")
        start = time.perf_counter()
        with _training(stage, preset), flops.counting() as count:
            try:
                model, tokenizer, metrics, history = STAGES[stage].train(
                    preset, inputs, progress and runtime.is_main_process(), callback)
            except (Exception, KeyboardInterrupt) as error:
                if hasattr(error, "add_note"):  # Python >= 3.11: the original error, with where it happened
                    what = "was interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
                    error.add_note(f"labkit: the {stage!r} stage {what} (preset {preset.name}). Nothing was saved "
                                   f"for it; the stages that finished keep their checkpoints in {path.parent}, and "
                                   "a rerun continues from them.")
                raise
        metrics["seconds"] = time.perf_counter() - start
        metrics.update(flops.summed_over_processes(count.as_report()))
        if runtime.is_main_process():  # one writer; every process trained the same model
            checkpoint.save_checkpoint(path, model, tokenizer, metadata={
                "stage": stage, "preset": preset.name, "key": stage_key(stage, preset),
                "processes": runtime.processes(), "config": dataclasses.asdict(preset), "metrics": metrics,
                "history": history})
    runtime.wait_for_everyone()  # the others wait until the checkpoint is on disk
    if rebuild:
        rebuild.discard(stage)
    return path


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# What this process is training now, and what Ctrl-C interrupted (the command line names it).
training_now: list[str] = []
interrupted: list[str] = []


@contextlib.contextmanager
def _training(stage: str, preset: Preset):
    """Mark ``stage`` as training in this process (for the command line's message on Ctrl-C), and say once
    if another labkit process trains on this machine at the same time: both then run much slower."""
    marker = runtime.home() / ".training" / f"{os.getpid()}"
    # (the processes of one `accelerate launch` train together on purpose: no warning among them)
    others = _other_trainings(marker.parent) if runtime.processes() == 1 else []
    global _warned_sharing
    if others and not _warned_sharing:
        _warned_sharing = True
        _say(f"labkit: another labkit process is training on this machine too ({', '.join(others)}). Each will run "
             "several times slower than alone (they share the CPU cores); for a fair timing, run one at a time. To run "
             "two at once, start both with OMP_WAIT_POLICY=passive, so that neither spins while waiting for the cores: "
             "then each loses far less (it costs a run alone a little, so it is not the default).")
    training_now.append(stage)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{stage} (preset {preset.name})")
    except OSError:
        pass
    try:
        yield
    except KeyboardInterrupt:
        interrupted.append(stage)  # for the command line's one-line message
        raise
    finally:
        training_now.remove(stage)
        if not training_now:
            with contextlib.suppress(OSError):
                marker.unlink()


_warned_sharing = False


def _other_trainings(folder: Path) -> list[str]:
    """What other live labkit processes say they are training (their markers in ``folder``)."""
    found = []
    for marker in folder.glob("*") if folder.is_dir() else []:
        try:
            pid = int(marker.name)
        except ValueError:
            continue
        if pid != os.getpid() and checkpoint.pid_alive(pid):
            with contextlib.suppress(OSError):
                found.append(f"process {pid}: {marker.read_text()}")
        elif pid != os.getpid():
            with contextlib.suppress(OSError):
                marker.unlink()  # left by a process that has ended
    return found


def load(stage: str, preset: Preset | str | None = None, *, build: bool = True):
    """``(model, tokenizer, metadata)`` of ``stage``; trains it first unless ``build=False``."""
    _check_stage(stage)
    preset = resolve_preset(preset)
    path = ensure(stage, preset) if build else stage_dir(stage, preset)
    return checkpoint.load_checkpoint(path, device=runtime.device(), stage=stage)


def metrics(stage: str, preset: Preset | str | None = None) -> dict:
    """The saved metrics and history of a stage (training it if needed), without loading weights."""
    path = ensure(stage, preset)
    return json.loads((path / "labkit.json").read_text())


def ensure_with_curve(stage: str, draw: Callable, preset: Preset | str | None = None) -> dict:
    """Train ``stage`` with its curve drawn live, or, when it is cached, draw the curve saved with it.

    ``draw(history)`` gets the growing training history while the stage trains here (see :func:`ensure`),
    or the whole saved history once if the checkpoint was already there, so a lab's figure looks
    the same either way. Returns the stage's saved metadata (``metrics``, ``history``, …), as :func:`metrics`.
    """
    calls = []

    def counted(history):
        calls.append(len(history))
        draw(history)

    ensure(stage, preset, callback=counted)
    saved = metrics(stage, preset)
    if not calls:  # cached: nothing was drawn while training
        draw(saved["history"])
    return saved


def run(stages: list[str], preset: Preset | str | None = None, report_path: str | Path | None = None,
        progress: bool = True, fresh: bool = False) -> dict:
    """Run ``stages`` headless (building prerequisites) and return / write the metrics report.

    Writes ``report_path`` (JSON) and a markdown table beside it (same name, ``.md``). Cached stages
    are reused; ``fresh=True`` trains ``stages`` and everything they need again, once each.
    ``processes`` in the report: how many data-parallel processes trained (see :func:`ensure`); with
    several, only the main process writes the files. ``seconds``: the whole run's wall time (cached
    stages take none).
    """
    if not stages:
        raise ValueError(f"no stage to run: name at least one of {', '.join(STAGES)}")
    for stage in stages:
        _check_stage(stage)
    preset = resolve_preset(preset)
    if report_path is not None:
        report_path = _check_report_path(Path(report_path))
    runtime.check_writable(runtime.home() / preset.name)  # fail now, not after the first stage has trained
    start = time.perf_counter()
    report = {"preset": preset.name, "device": str(runtime.device()), "processes": runtime.processes(), "stages": {}}
    rebuild = _with_needs(stages) if fresh else None
    for stage in stages:
        meta = json.loads((ensure(stage, preset, progress=progress, rebuild=rebuild) / "labkit.json").read_text())
        report["stages"][stage] = {k: meta["metrics"][k] for k in STAGES[stage].report if k in meta["metrics"]}
    report["seconds"] = time.perf_counter() - start
    if report_path is not None and runtime.is_main_process():
        _write_atomically(report_path, json.dumps(report, indent=2) + "\n")
        _write_atomically(report_path.with_suffix(".md"), markdown_report(report))
    return report


def _check_report_path(path: Path) -> Path:
    """The report's path, refused before anything trains if it cannot be written: the report is JSON (its
    markdown table goes beside it, ``.md``), so the path ends in ``.json`` and is no folder."""
    if path.suffix.lower() != ".json":
        raise ValueError(f"the report {path} must end in .json: it is written as JSON, and a markdown table "
                         f"goes beside it ({path.with_suffix('.md').name}). Try --report {path.with_suffix('.json')}")
    if path.is_dir():
        raise ValueError(f"the report {path} is a folder; give a file name, e.g. --report {path / 'report.json'}")
    runtime.check_writable(path.parent, "the report's folder")
    return path


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` in full or not at all (a temporary file beside it, then renamed)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OSError(error.errno, f"cannot write {path}: {error.strerror}. Free some space or choose another "
                                   "--report path.") from error


def _with_needs(stages: list[str]) -> set[str]:
    """``stages`` and every stage they need, directly or not."""
    found: set[str] = set()
    todo = list(stages)
    while todo:
        stage = todo.pop()
        if stage not in found:
            found.add(stage)
            todo.extend(STAGES[stage].needs)
    return found


def markdown_report(report: dict) -> str:
    """The report as a markdown table: one row per stage and metric (nested keys joined by dots)."""
    processes = report.get("processes", 1)
    where = report["device"] + (f" × {processes} processes" if processes > 1 else "")
    lines = [f"# labkit pipeline report — preset `{report['preset']}` on {where}", "",
             "| stage | metric | value |", "|---|---|---|"]

    def flat(values: dict, prefix: str = ""):
        for key, value in values.items():
            if isinstance(value, dict):
                yield from flat(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    for stage, values in report["stages"].items():
        for key, value in flat(values):
            shown = f"{value:.4f}" if isinstance(value, float) else (
                f"{value:,}" if isinstance(value, int) else str(value))
            lines.append(f"| {stage} | {key} | {shown} |")
    return "\n".join(lines) + "\n"
