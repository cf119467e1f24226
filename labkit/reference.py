"""The course's reference results, and a learner's run beside them.

Every measured figure labkit quotes comes from a run, written by ``python -m labkit results`` into
``results/<preset>.json`` (see :mod:`labkit.results`). This module reads those files and shows a
figure of yours beside the reference::

    from labkit import reference
    reference.show([("stages.ppo.win_rate", my_run.win_rate)])
    # win rate · your run: 88.0 % · reference (cpu, seed 0): 89.2 % · seeds 0–2: 88.0–90.4 %

A figure has a dotted name: ``stages.<stage>.<report key>`` for what a pipeline stage reports (the
same keys as ``python -m labkit pipeline --report``), ``demos.<demonstration>.<figure>`` for what a
lab's demonstration measures. The demonstrations are declared where they live, in
:mod:`labkit.experiments` (and :mod:`labkit.bench`), with :func:`measurement`; ``python -m labkit
results`` runs them all.

How a figure is written depends on its last key (:data:`FORMATS`: ``win_rate`` as ``89.2 %``,
``gold_reward`` as ``1.76``); :func:`fmt` writes a value the way the README and the labs do.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable

from labkit import runtime

# ------------------------------------------------------------------------------- where they live


def results_dir() -> Path:
    """``results/`` in the repository: the committed reference results."""
    return runtime.repo_root() / "results"


_loaded: dict[Path, dict | None] = {}


def load(preset: str = "cpu", *, seeds: bool = False, folder: Path | None = None) -> dict | None:
    """The reference results of ``preset`` (``results/cpu.json``), or its seeds file
    (``results/cpu-seeds.json``) with ``seeds=True``; None where it has not been measured."""
    path = (folder or results_dir()) / (f"{preset}-seeds.json" if seeds else f"{preset}.json")
    if path not in _loaded:
        try:
            _loaded[path] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            _loaded[path] = None
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}); restore it with `git checkout {path.name}` "
                             "or write it again with `python -m labkit results`") from error
    return _loaded[path]


def lookup(tree: dict | None, name: str) -> Any:
    """The value at the dotted ``name`` in ``tree`` (``stages.ppo.win_rate``), or None where absent."""
    node: Any = tree
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _recorded(tree: dict | None, name: str) -> bool:
    """Whether ``tree`` holds the dotted ``name``, even as None (JSON null)."""
    parent, _, key = name.rpartition(".")
    node = lookup(tree, parent) if parent else tree
    return isinstance(node, dict) and key in node


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Every leaf of ``tree`` under its dotted name."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def figure(name: str, preset: str = "cpu") -> Any:
    """The reference value of the figure ``name`` for ``preset``, or None where it was not measured."""
    return lookup(load(preset), name)


def seed_values(name: str, preset: str = "cpu") -> dict[str, Any]:
    """The figure ``name`` in each seed's run (``{"0": 0.892, "1": 0.880, ...}``); empty where not measured."""
    seeds = (load(preset, seeds=True) or {}).get("seeds", {})
    values = {seed: lookup(report, name) for seed, report in seeds.items()}
    return {seed: value for seed, value in values.items() if value is not None}


def seed_range(name: str, preset: str = "cpu") -> tuple[Any, Any] | None:
    """(lowest, highest) of ``name`` over the measured seeds, or None where fewer than two were measured."""
    values = [v for v in seed_values(name, preset).values() if isinstance(v, (int, float))]
    return (min(values), max(values)) if len(values) >= 2 else None


# ----------------------------------------------------------------------------------- formatting

MINUS = "\u2212"


def _signless(text: str) -> str:
    return text.replace("-", MINUS) if text.startswith("-") else text


def _pct(digits: int) -> Callable[[float], str]:
    return lambda v: _signless(f"{100 * v:.{digits}f} %")


def _fixed(digits: int, sign: bool = False) -> Callable[[float], str]:
    return lambda v: _signless(f"{v:{'+' if sign else ''}.{digits}f}")


def _seconds(v: float) -> str:
    """``52 s``, ``5 min 46 s``."""
    v = round(v)
    return f"{v} s" if v < 60 else f"{v // 60} min {v % 60:02d} s"


FILTERS: dict[str, Callable[[Any], str]] = {
    "pct": _pct(1), "pct0": _pct(0), "pct2": _pct(2),
    "f0": _fixed(0), "f1": _fixed(1), "f2": _fixed(2), "f3": _fixed(3), "f4": _fixed(4),
    "sf1": _fixed(1, True), "sf2": _fixed(2, True), "sf3": _fixed(3, True),
    "int": lambda v: f"{round(v):,}", "s": _seconds, "secs": lambda v: f"{v:.0f} s",
    "mb": lambda v: f"{v:,.0f} MB", "x": lambda v: f"{v:.2f}×", "str": str, "date": lambda v: str(v)[:10],
    "points": lambda v: _signless(f"{100 * v:+.1f} points"),
    "tflop": lambda v: f"{v / 1e12:,.1f} TFLOP", "gflops": lambda v: f"{v / 1e9:,.1f} GFLOP/s",
}

# the default filter of a figure, by its last key (fnmatch patterns, first match wins)
FORMATS: list[tuple[str, str]] = [
    ("*flops_per_s", "gflops"), ("*flops*", "tflop"), ("utilisation", "pct"),
    ("seconds_per_step*", "f2"), ("*_seconds_per_step", "f2"), ("*seconds*", "s"), ("*_MB", "mb"), ("*parameters*", "int"), ("*tokens_per_s*", "int"),
    ("steps", "int"), ("*iteration", "int"), ("*_step", "int"), ("iterations", "int"), ("*_examples", "int"), ("*_pairs", "int"), ("*_problems", "int"), ("tokens_seen", "int"), ("answers_sampled", "int"), ("rounds", "int"), ("pairs_per_round", "int"), ("samples_per_prompt", "int"),
    ("questions", "int"), ("*_missed", "int"), ("missed_by_*", "int"),
    ("win_rate", "pct"), ("win_low", "pct"), ("win_high", "pct"), ("*accuracy*", "pct"), ("exact_match", "pct"), ("*exact_match", "pct"),
    ("json_valid", "pct"), ("*_json_valid", "pct"), ("*ceiling*", "pct"), ("share_*", "pct"), ("gap_closed", "pct"),
    ("*_share", "pct0"), ("*_rate", "pct"),
    ("*logratio*", "sf2"), ("*loss*", "f3"), ("*entropy*", "f3"), ("true_nll", "f3"),
    ("*", "f2"),
]


def default_filter(name: str) -> str:
    """The filter a figure is written with when none is named: by its last key (see :data:`FORMATS`)."""
    if "seconds" in name.split(".")[:-1]:  # seconds.pipeline, seconds.demos.lab08_race
        return "s"
    key = name.rsplit(".", 1)[-1]
    return next(f for pattern, f in FORMATS if fnmatch.fnmatchcase(key, pattern))


# Figures that are the step at which something happened (a plateau ended, answers reached the token
# limit); None there means it never did, within the run.
EVENT_STEPS = {"plateau_end_step", "limit_step", "lowest_val_step"}


def _is_event_step(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in EVENT_STEPS


def fmt(value: Any, name: str = "", how: str | None = None) -> str:
    """``value`` written as the README and labs write the figure ``name`` (or with the filter ``how``)."""
    if value is None:
        return "never" if _is_event_step(name) else "—"
    if isinstance(value, str):
        return FILTERS["date"](value) if how == "date" else value
    if isinstance(value, float) and math.isnan(value):
        return str(value)
    how = how or default_filter(name)
    if how not in FILTERS:
        raise ValueError(f"unknown format {how!r} for {name or 'a figure'}; formats: {', '.join(FILTERS)}")
    return FILTERS[how](value)


def fmt_range(low: Any, high: Any, name: str = "", how: str | None = None) -> str:
    """``88.0–90.4 %``: a range written once with its unit."""
    a, b = fmt(low, name, how), fmt(high, name, how)
    dash = " to " if b.startswith(MINUS) else "–"  # "−0.77 to −0.62", not "−0.77–−0.62"
    for unit in (" %", " s", " MB", " points"):
        if a.endswith(unit) and b.endswith(unit):
            return f"{a[: -len(unit)]}{dash}{b}"
    return f"{a}{dash}{b}"


# ------------------------------------------------------------------------- your run beside it

def describe(name: str) -> str:
    """A figure's label: its table header where :data:`labkit.plots.COLUMNS`-style names are known."""
    key = name.rsplit(".", 1)[-1]
    return LABELS.get(key, key.replace("_", " "))


LABELS = {"win_rate": "win rate against SFT", "gold_reward": "gold reward", "kl": "KL to SFT",
          "sft_gold_reward": "SFT policy's gold reward", "val_loss": "validation loss",
          "exact_match": "exact match", "accuracy": "accuracy", "policy_accuracy": "accuracy on policy-like answers",
          "train_seconds": "training time", "seconds": "time", "peak_MB": "peak memory"}


def line(name: str, yours: Any = None, *, label: str | None = None, how: str | None = None,
         preset: str = "cpu") -> str:
    """One line: ``label · your run: … · reference (cpu, seed 0): … · seeds 0–2: …``.

    ``yours`` None leaves "your run" out (a figure this notebook did not measure), except for the
    step figures of :data:`EVENT_STEPS`, where None means the event never came and reads "never". A
    reference that was not measured says so rather than showing a number."""
    parts = [label or describe(name)]
    event = _is_event_step(name)  # None: it never happened (:data:`EVENT_STEPS`), not "not measured"
    if yours is not None or event:
        parts.append(f"your run: {fmt(yours, name, how)}")
    ref = figure(name, preset)
    data = load(preset)
    seed = (data or {}).get("seed", 0)
    recorded = ref is not None or (event and _recorded(data, name))
    parts.append(f"reference ({preset}, seed {seed}): {fmt(ref, name, how)}" if recorded
                 else f"reference ({preset}): not measured yet")
    values = seed_values(name, preset)
    span = seed_range(name, preset)
    if span is not None:
        parts.append(f"seeds {_seed_list(values)}: {fmt_range(*span, name, how)}")
    return " · ".join(parts)


def _seed_list(values: dict) -> str:
    seeds = sorted(int(s) for s in values)
    if seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds))


def show(figures: Iterable[tuple], preset: str = "cpu") -> None:
    """Print one :func:`line` per figure: each item is ``(name, yours)`` or ``(name, yours, label)``
    or ``(name, yours, label, how)``. With a preset other than the reference's, a first line says
    so: the reference figures are the ``cpu`` preset's, not comparable number for number."""
    from labkit.presets import get_preset

    active = get_preset().name
    if active != preset:
        print(f"(this notebook runs the {active!r} preset; the reference is the {preset!r} preset's run, "
              "so expect other numbers)")
    for item in figures:
        name, yours, *rest = item
        print(line(name, yours, label=rest[0] if rest else None, how=rest[1] if len(rest) > 1 else None,
                   preset=preset))


def show_stage(stage: str, keys: Iterable[str], metrics: dict, labels: dict | None = None) -> None:
    """:func:`show` for a stage's report keys: ``metrics`` is the stage's metrics in this notebook's run."""
    labels = labels or {}
    show([(f"stages.{stage}.{k}", metrics.get(k), labels.get(k, describe(k))) for k in keys])


# --------------------------------------------------------------------------------- measurements

@dataclasses.dataclass(frozen=True)
class Measurement:
    """A lab's demonstration whose figures the course quotes.

    ``run(preset)`` trains what the lab trains (using the stage cache) and returns its figures, a
    dict of numbers (nested dicts allowed); they are stored under ``demos.<name>``.
    ``across_machines``: how far each figure may move on another CPU (fnmatch pattern of the
    figure's key -> absolute tolerance; a figure matched by none is compared on the same machine
    only). On the machine that measured the reference, figures must repeat within
    :data:`SAME_MACHINE` (timings and memory within :data:`TIMING_FACTOR`).
    """
    name: str
    run: Callable
    lab: str
    across_machines: dict[str, float]
    seconds: float  # about how long it takes on 2 cores (cpu preset), for the command's plan


MEASUREMENTS: dict[str, Measurement] = {}
SAME_MACHINE = 1e-6      # deterministic figures on the machine that measured them
TIMING_FACTOR = 2.5      # a timing or a memory peak may be this factor off (load, another machine)


def measurement(name: str, *, lab: str, seconds: float, across_machines: dict[str, float] | None = None):
    """Declare ``fn(preset) -> dict`` as the demonstration ``name`` (see :class:`Measurement`)."""
    if "." in name:
        raise ValueError(f"a measurement's name has no dots (it is one key of the results): {name!r}")

    def register(fn: Callable) -> Callable:
        MEASUREMENTS[name] = Measurement(name, fn, lab, dict(across_machines or {}), seconds)
        return fn
    return register


def is_timing(name: str) -> bool:
    """Seconds, rates and memory: these vary with the machine's load, never compared tightly."""
    key = name.rsplit(".", 1)[-1]
    return any(fnmatch.fnmatchcase(key, p) for p in ("*seconds*", "*_MB", "*per_s*", "seconds_per_step*", "ratio", "*_ratio", "ratio_*",
                                                         "utilisation"))


def compare(measured: dict, reference_tree: dict, *, same_machine: bool,
            tolerances: dict[str, dict[str, float]] | None = None) -> list[str]:
    """Every figure of ``measured`` (a flattened dict) that is not where ``reference_tree`` has it.

    ``tolerances``: for each prefix (``stages.ppo``, ``demos.lab05_overoptimisation``) the figures'
    tolerances across machines (see :class:`Measurement`). Returns one sentence per disagreement."""
    problems = []
    for name, value in sorted(measured.items()):
        ref = lookup(reference_tree, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not isinstance(ref, (int, float)):
            continue
        if is_timing(name):
            if ref > 0 and value > 0 and not (ref / TIMING_FACTOR <= value <= ref * TIMING_FACTOR):
                problems.append(f"{name}: {value:.4g}, reference {ref:.4g} (more than {TIMING_FACTOR}× apart)")
            continue
        if same_machine:
            tol = SAME_MACHINE * max(1.0, abs(ref))
        else:
            key = name.rsplit(".", 1)[-1]
            table = max(((p, t) for p, t in (tolerances or {}).items() if name.startswith(p + ".")),
                        key=lambda pt: len(pt[0]), default=("", {}))[1]  # the longest prefix that matches
            tol = next((t for pattern, t in table.items() if fnmatch.fnmatchcase(key, pattern)), None)
            if tol is None:
                continue
        if abs(value - ref) > tol:
            problems.append(f"{name}: {value:.6g}, reference {ref:.6g} (tolerance {tol:g})")
    return problems
