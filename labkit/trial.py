"""``python -m labkit trial``: one stage trained with changed settings, beside the preset's own, seed by seed.

    python -m labkit trial reward --set reward.epochs=1 --seeds 0,1,2
    python -m labkit trial sft --set sft.lr=1e-3 --set sft.warmup_steps=100 --preset cpu

A recipe counts only if it holds on every seed, each with its own pretrained model (a small model's
trajectory amplifies tiny differences), so a trial trains the stage for each seed twice: as the
preset has it and with the changes (``section.field=value``, the value read as JSON where it parses:
``1e-3``, ``true``, ``[["classify", 1.0], ...]``; as text otherwise). Both go through the stage
cache: a changed setting is a different key, so nothing the labs use is replaced, and a second
trial reuses what the first one trained (what the stage needs is trained too, when missing). The
table shows each of the stage's reported figures as ``preset → trial`` per seed; ``--out`` keeps
every row as JSON lines.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from labkit import pipeline, reference
from labkit.presets import Preset, resolve_preset
from labkit.stages import STAGES

_TOP_LEVEL_FIXED = {"name", "seed"}  # a trial varies settings; the seeds are --seeds, the preset is --preset


def parse_settings(assignments: list[str], preset: Preset) -> dict[str, dict | object]:
    """``["reward.epochs=1", "n_train_docs=5000"]`` as ``{"reward": {"epochs": 1.0}, "n_train_docs": 5000}``,
    each checked against ``preset`` (the section and the field exist; the value has the field's kind)."""
    changes: dict[str, dict | object] = {}
    for text in assignments:
        name, sep, raw = text.partition("=")
        name = name.strip()
        if not sep or not name or not raw.strip():
            raise ValueError(f"--set {text!r}: write section.field=value, e.g. --set reward.epochs=1")
        value = _read_value(raw.strip())
        section, dot, field = name.partition(".")
        if not dot:
            if section in _TOP_LEVEL_FIXED or not hasattr(preset, section) or _is_section(preset, section):
                raise ValueError(f"--set {text!r}: {section!r} is not a setting a trial can change; "
                                 f"settings: {', '.join(_settings_list(preset))}")
            changes[section] = _as_kind(value, _declared(preset, section), text)
            continue
        if not _is_section(preset, section):
            raise ValueError(f"--set {text!r}: the preset has no section {section!r}; sections: "
                             f"{', '.join(f.name for f in dataclasses.fields(preset) if _is_section(preset, f.name))}")
        config = getattr(preset, section)
        names = [f.name for f in dataclasses.fields(config)]
        if field not in names:
            raise ValueError(f"--set {text!r}: {section} has no setting {field!r}; its settings: {', '.join(names)}")
        changes.setdefault(section, {})[field] = _as_kind(value, _declared(config, field), text)
    return changes


def changed_preset(preset: Preset, changes: dict) -> Preset:
    """``preset`` with :func:`parse_settings`' changes (each section's config is checked as it is built)."""
    replaced = {}
    for section, value in changes.items():
        replaced[section] = dataclasses.replace(getattr(preset, section), **value) if isinstance(value, dict) else value
    return preset.replace(**replaced)


def run_trial(stage: str, preset: Preset | str, changes: dict, seeds: list[int], *, progress: bool = False,
              out: Path | None = None) -> list[dict]:
    """Train ``stage`` for each seed as ``preset`` has it and with ``changes``; return one row per seed:
    ``{"seed", "preset": figures, "trial": figures, "keys": [preset's, trial's]}`` (the stage's reported
    numbers). One run at a time, the preset's first: never two trainings at once."""
    if stage not in STAGES:
        raise ValueError(f"Unknown stage {stage!r}. Stages available: {', '.join(STAGES)}")
    if not seeds:
        raise ValueError("a trial needs at least one seed, e.g. --seeds 0,1,2")
    preset = resolve_preset(preset)
    rows = []
    for seed in seeds:
        base = preset.replace(seed=seed)
        tried = changed_preset(base, changes)
        keys = [pipeline.stage_key(stage, base), pipeline.stage_key(stage, tried)]
        if keys[0] == keys[1]:
            raise ValueError(f"the changes {changes} leave the {stage!r} stage as the preset has it (same key "
                             f"{keys[0]}): change a setting that stage uses")
        row = {"stage": stage, "preset_name": preset.name, "seed": seed, "changes": changes, "keys": keys,
               "preset": _figures(stage, base, progress), "trial": _figures(stage, tried, progress)}
        rows.append(row)
        if out is not None:
            with Path(out).open("a") as f:
                f.write(json.dumps(row) + "\n")
    return rows


def table(rows: list[dict]) -> str:
    """A markdown table: one line per figure, one column per seed, ``preset → trial``."""
    names = [n for n in rows[0]["preset"] if all(n in r["preset"] and n in r["trial"] for r in rows)]
    lines = ["| figure | " + " | ".join(f"seed {r['seed']}" for r in rows) + " |",
             "|---|" + "---|" * len(rows)]
    for name in names:
        cells = [f"{_fmt(r['preset'][name], name)} → {_fmt(r['trial'][name], name)}" for r in rows]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _figures(stage: str, preset: Preset, progress: bool) -> dict:
    """The stage's reported numbers (its ``report`` fields, nested ones under dotted names) and its compute."""
    pipeline.ensure(stage, preset, progress=progress)
    metrics = pipeline.metrics(stage, preset)["metrics"]
    reported = {name: metrics[name] for name in (*STAGES[stage].report, "flops") if name in metrics}
    return {name: value for name, value in reference.flatten(reported).items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def _fmt(value, name: str) -> str:
    try:
        return reference.fmt(value, name)
    except (ValueError, TypeError):
        return f"{value:.4g}" if isinstance(value, float) else str(value)


def _read_value(raw: str):
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _as_kind(value, declared: str, text: str):
    """``value`` as the setting's declared type (``declared``, its annotation): an int given for a float
    kept as a float, JSON lists as tuples (the presets' tuples of pairs too), null only where the
    setting may be None; anything else is an error that says what the setting takes."""
    kinds = {part.strip() for part in str(declared).split("|")}
    if value is None and "None" in kinds:
        return None
    if any(k.startswith("tuple") for k in kinds) and isinstance(value, list):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    if "bool" in kinds and isinstance(value, bool):
        return value
    if not isinstance(value, bool):
        if "float" in kinds and isinstance(value, (int, float)):
            return float(value)
        if "int" in kinds and isinstance(value, int):
            return value
        if "str" in kinds and isinstance(value, str):
            return value
    raise ValueError(f"--set {text!r}: that setting takes {declared}; {value!r} is not one")


def _declared(config, name: str) -> str:
    """The annotation of ``config``'s field ``name``, as text (``"float"``, ``"float | None"``, …)."""
    return str(next(f.type for f in dataclasses.fields(config) if f.name == name))


def _is_section(preset: Preset, name: str) -> bool:
    return dataclasses.is_dataclass(getattr(preset, name, None))


def _settings_list(preset: Preset) -> list[str]:
    return [f.name + (".…" if _is_section(preset, f.name) else "") for f in dataclasses.fields(preset)
            if f.name not in _TOP_LEVEL_FIXED]
