"""``python -m labkit results``: the reference results, measured, and the pages rendered from them.

    python -m labkit results --preset cpu              # train (or reuse) what the course quotes -> results/cpu.json
    python -m labkit results --preset cpu --seeds 0,1,2  # the pipeline once per seed -> results/cpu-seeds.json
    python -m labkit results --only lab05_overoptimisation  # measure some demonstrations again, keep the rest
    python -m labkit results render                    # rewrite the README's marked blocks and docs/results.md
    python -m labkit results check                     # fail if they differ from a render of results/, or if
                                                       # results/ measured stages the presets have changed since

``results/<preset>.json`` holds every figure the README, ``docs/results.md`` and the labs quote:
``stages`` is the pipeline's report (the same keys as ``python -m labkit pipeline --report``),
``demos`` the labs' demonstrations (:data:`labkit.reference.MEASUREMENTS`, declared beside each
experiment), with the machine, the library versions, the seed, the date and each part's seconds; ``keys`` holds
the cache key of every stage, and of the stages each demonstration read, so that ``results check``
finds a figure measured from a stage whose recipe has changed since (:func:`outdated`).

Pages are rendered from templates in ``docs/templates/``: ``{{ stages.ppo.win_rate }}`` is a figure
written as :func:`labkit.reference.fmt` writes it, ``{{ stages.ppo.kl | f1 }}`` with a named format,
``{{ seeds: stages.ppo.win_rate }}`` the range over the seeds (``88.0–90.4 %``), ``{{ seed1:
stages.pretrain.val_loss }}`` one seed's value, ``{{ gpu: stages.sft.exact_match }}`` another
preset's. In the README, ``<!-- results:NAME -->`` … ``<!-- /results:NAME -->`` holds the render of
``docs/templates/NAME.md``; ``docs/results.md`` is rendered whole from ``docs/templates/results.md``.
A figure that is not in the results stops the render with its name: nothing is left half-filled.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

from labkit import reference, runtime
from labkit.presets import Preset, resolve_preset

# every module that declares measurements (importing it registers them)
MEASURING_MODULES = ("labkit.experiments.pretraining", "labkit.experiments.instruction", "labkit.experiments.reward",
                     "labkit.experiments.alignment", "labkit.experiments.grpo", "labkit.experiments.showdown",
                     "labkit.bench")


def measurements() -> dict[str, reference.Measurement]:
    """Every declared demonstration, in the labs' order."""
    import importlib

    for module in MEASURING_MODULES:
        importlib.import_module(module)
    return dict(sorted(reference.MEASUREMENTS.items(), key=lambda item: item[1].lab))


# ------------------------------------------------------------------------------- where it ran

def machine() -> dict:
    """The machine: CPU model, the vector instructions that change float sums, cores, threads, device."""
    import torch

    flags: set[str] = set()
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for text in info:
                if text.startswith("model name"):
                    name = text.split(":", 1)[1].strip()
                elif text.startswith("flags"):
                    flags = set(text.split(":", 1)[1].split())
    except OSError:
        pass
    device = runtime.device()
    return {"cpu": name, "vector": sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "amx_tile")),
            "kernels": runtime.cpu_kernels(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else name}


def kernels(machine: dict) -> str:
    """The CPU kernels a results file's floats came from: its ``kernels``, or for a file written before
    labkit pinned them (:func:`labkit.runtime.pin_cpu_kernels`), the widest its vector units offered."""
    if machine.get("kernels"):
        return machine["kernels"]
    vector = machine.get("vector") or []
    return "AVX512" if "avx512f" in vector else "AVX2" if "avx2" in vector else "DEFAULT"


def versions() -> dict:
    import importlib.metadata as md

    found = {"python": platform.python_version()}
    for package in ("torch", "transformers", "trl", "peft", "accelerate", "datasets"):
        try:
            found[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return found


def same_setup(a: dict | None, b: dict | None) -> bool:
    """Whether two results files were measured where every float comes out the same: the same CPU model,
    CPU kernels (AVX2 on an AVX-512 CPU too, since labkit pins them), threads and device, and the same
    versions of the libraries that train."""
    machine_keys, version_keys = ("cpu", "threads", "device_name"), ("torch", "transformers", "trl", "peft")
    if not (a and b):
        return False
    return (all(a["machine"].get(k) == b["machine"].get(k) for k in machine_keys)
            and kernels(a["machine"]) == kernels(b["machine"])
            and all(a["versions"].get(k) == b["versions"].get(k) for k in version_keys))


# ---------------------------------------------------------------------------------- measuring

def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _say(text: str) -> None:
    print(f"[results] {text}", file=sys.stderr, flush=True)


def collect(preset: Preset | str = "cpu", *, out: Path | None = None, only: list[str] | None = None,
            progress: bool = True, fresh: bool = False) -> dict:
    """Train (or reuse from the cache) the pipeline and run the demonstrations; write them to ``out``.

    ``out`` (default ``results/<preset>.json``) is rewritten after each demonstration, so an
    interruption keeps what was measured. ``only``: these demonstrations are measured (again) and the
    others kept from ``out`` where it exists (it must then hold the same preset and seed). ``fresh``:
    train every stage again even if cached, so that the stages' seconds are this run's (on one setup
    the weights come out the same)."""
    from labkit import pipeline

    preset = resolve_preset(preset)
    out = Path(out or reference.results_dir() / f"{preset.name}.json")
    table = measurements()
    names = list(table) if only is None else only
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"no demonstration called {', '.join(unknown)}; there are: {', '.join(table)}")
    kept: dict = {}
    if only is not None and out.exists():
        kept = json.loads(out.read_text(encoding="utf-8"))
        if (kept.get("preset"), kept.get("seed")) != (preset.name, preset.seed):
            raise ValueError(f"{out} holds preset {kept.get('preset')!r} seed {kept.get('seed')}, not "
                             f"{preset.name!r} seed {preset.seed}: write it whole (without --only), or choose --out")
    start = time.perf_counter()
    planned = sum(table[n].seconds for n in names)
    _say(f"preset {preset.name}, seed {preset.seed} -> {out}: the pipeline (cached stages are reused), then "
         f"{len(names)} demonstration(s), about {planned / 60:.0f} min on 2 cores")
    report = pipeline.run(list(pipeline.STAGES), preset, progress=progress, fresh=fresh)
    result = {"preset": preset.name, "seed": preset.seed, "date": _now(), "machine": machine(),
              "versions": versions(), "command": "python -m labkit results --preset " + preset.name,
              "stages": report["stages"], "demos": dict(kept.get("demos", {})),
              "keys": {"stages": stage_keys(preset), "demos": dict(kept.get("keys", {}).get("demos", {}))},
              "seconds": {"pipeline": pipeline_seconds(report), "demos": dict(kept.get("seconds", {}).get("demos", {}))}}
    for name in names:
        _say(f"{name} ({table[name].lab}, about {table[name].seconds:.0f} s)")
        began = time.perf_counter()
        with pipeline.reading(preset) as read:
            figures = table[name].run(preset)
        result["demos"][name] = _plain(figures)
        result["keys"]["demos"][name] = dict(sorted(read.items()))
        result["seconds"]["demos"][name] = round(time.perf_counter() - began, 1)
        _write(out, result)
        _say(f"  done in {result['seconds']['demos'][name]:.0f} s")
    result["seconds"]["total"] = round(time.perf_counter() - start, 1)
    result["demos"] = {n: result["demos"][n] for n in table if n in result["demos"]}  # the labs' order
    result["keys"]["demos"] = {n: result["keys"]["demos"][n] for n in table if n in result["keys"]["demos"]}
    result["compute"] = compute(result)
    _write(out, result)
    return result


def stage_keys(preset: Preset) -> dict[str, str]:
    """Every stage's cache key under ``preset`` (:func:`labkit.pipeline.stage_key`): what a results file
    was measured from."""
    from labkit import pipeline

    return {stage: pipeline.stage_key(stage, preset) for stage in pipeline.STAGES}


def outdated(preset: str = "cpu", folder: Path | None = None) -> list[str]:
    """What the committed results of ``preset`` measured from stages that the preset no longer gives:
    a stage whose key has moved (its settings, its code version or a stage it needs changed since), a
    demonstration that read such a stage, and a file or demonstration with no record of its keys. Each
    entry says the command that measures it again. Empty where no results file exists."""
    folder = Path(folder or reference.results_dir())
    found: list[str] = []
    base = resolve_preset(preset)
    one = folder / f"{preset}.json"
    if one.exists():
        data = json.loads(one.read_text(encoding="utf-8"))
        now = stage_keys(base.replace(seed=data["seed"]))
        keys = data.get("keys") or {}
        if "stages" not in keys:
            found.append(f"{one.name} records no stage keys: python -m labkit results --preset {preset}")
        found += [f"{one.name}: stage {s!r} was measured at key {k}, the preset now gives {now.get(s)}: "
                  f"python -m labkit results --preset {preset}" for s, k in keys.get("stages", {}).items() if now.get(s) != k]
        for name in data.get("demos", {}):
            read = keys.get("demos", {}).get(name)
            moved = [f"{s} {k} -> {now.get(s)}" for s, k in (read or {}).items() if now.get(s) != k]
            if read is None or moved:
                why = "records no stage keys" if read is None else "read stages the preset has changed since (" + "; ".join(moved) + ")"
                found.append(f"{one.name}: demonstration {name} {why}: python -m labkit results --preset {preset} --only {name}")
    seeds = folder / f"{preset}-seeds.json"
    if seeds.exists():
        data = json.loads(seeds.read_text(encoding="utf-8"))
        for seed, report in data["seeds"].items():
            now = stage_keys(base.replace(seed=int(seed)))
            moved = [s for s, k in (report.get("keys") or {}).items() if now.get(s) != k]
            if "keys" not in report or moved:
                why = "records no stage keys" if "keys" not in report else "stages " + ", ".join(moved) + " have new keys"
                found.append(f"{seeds.name}: seed {seed} {why}: python -m labkit results --preset {preset} "
                             f"--seeds {','.join(data['seeds'])}")
    return found


def compute(result: dict) -> dict:
    """The pipeline's counted compute (:func:`labkit.flops.compute_table`): each stage's operations and
    utilisation of the matrix-product peak that the bench measured in the same run, and the ratio to
    the baseline recipes (``results/baseline/<preset>.json``) where that file exists."""
    from labkit import flops

    peak = ((result["demos"].get("bench") or {}).get("matmul_peak") or {}).get("flops_per_s")
    base = reference.results_dir() / "baseline" / f"{result['preset']}.json"
    baseline = json.loads(base.read_text(encoding="utf-8"))["stages"] if base.exists() else None
    return _plain(flops.compute_table(result["stages"], peak, baseline))


def pipeline_seconds(report: dict) -> float:
    """What training the whole pipeline from an empty cache took: the stages' own times, whenever they trained."""
    return round(sum(m.get("seconds", 0) for m in report["stages"].values()), 1)


def _plain(value):
    """Figures as JSON: numpy and torch scalars as numbers, tuples as lists, NaN as None."""
    import math

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def collect_seeds(preset: Preset | str, seeds: list[int], *, out: Path | None = None, progress: bool = True) -> dict:
    """The whole pipeline once per seed (each with its own pretrained model), as ``results/<preset>-seeds.json``:
    ``{"seeds": {"0": <report>, ...}, "ranges": {"stages.ppo.win_rate": [low, high], ...}}``."""
    from labkit import pipeline

    preset = resolve_preset(preset)
    out = Path(out or reference.results_dir() / f"{preset.name}-seeds.json")
    result = {"preset": preset.name, "date": _now(), "machine": machine(), "versions": versions(),
              "command": f"python -m labkit results --preset {preset.name} --seeds {','.join(map(str, seeds))}",
              "seeds": {}}
    for seed in seeds:
        _say(f"seed {seed}: the whole pipeline (cached stages are reused)")
        report = pipeline.run(list(pipeline.STAGES), preset.replace(seed=seed), progress=progress)
        result["seeds"][str(seed)] = {k: report[k] for k in ("preset", "device", "processes", "stages")}
        result["seeds"][str(seed)]["keys"] = stage_keys(preset.replace(seed=seed))
        result["ranges"] = ranges(result["seeds"])
        _write(out, result)
    return result


def ranges(seeds: dict) -> dict:
    """For every numeric figure that each seed's report has: [lowest, highest]."""
    flat = [reference.flatten(report) for report in seeds.values()]
    common = set.intersection(*(set(f) for f in flat)) if flat else set()
    return {name: [min(f[name] for f in flat), max(f[name] for f in flat)] for name in sorted(common)
            if all(isinstance(f[name], (int, float)) and not isinstance(f[name], bool) for f in flat)}


# ----------------------------------------------------------------------------------- rendering

TEMPLATES = Path("docs") / "templates"
PLACEHOLDER = re.compile(r"\{\{\s*(?:(\w+)\s*:\s*)?([\w.\-]+)\s*(?:\|\s*(\w+)\s*)?\}\}")
BLOCK = re.compile(r"(<!-- results:(\w[\w-]*) -->\n)(.*?)(<!-- /results:\2 -->)", re.S)
GENERATED = ("<!-- Generated by `python -m labkit results render` from docs/templates/{name} and results/*.json: "
             "edit those, not this file. -->\n")


class Figures:
    """The reference results a template reads: ``cpu`` (default), other presets, seeds."""

    def __init__(self, folder: Path | None = None, default: str = "cpu"):
        self.folder = folder or reference.results_dir()
        self.default = default
        self._cache: dict[str, dict | None] = {}

    def _file(self, name: str) -> dict | None:
        if name not in self._cache:
            path = self.folder / f"{name}.json"
            self._cache[name] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
        return self._cache[name]

    def value(self, source: str | None, name: str):
        if source in (None, self.default):
            data, where = self._file(self.default), f"{self.default}.json"
        elif source.startswith("seed") and source[4:].isdigit():
            data = (self._file(f"{self.default}-seeds") or {}).get("seeds", {}).get(source[4:])
            where = f"{self.default}-seeds.json, seed {source[4:]}"
        else:
            data, where = self._file(source), f"{source}.json"
        found = reference.lookup(data, name)
        if found is None:
            raise KeyError(f"{name} is not in results/{where}: measure it (python -m labkit results) or fix the template")
        return found

    def span(self, name: str):
        data = self._file(f"{self.default}-seeds") or {}
        found = data.get("ranges", {}).get(name)
        if found is None:
            raise KeyError(f"{name} has no range in results/{self.default}-seeds.json: run python -m labkit results "
                           f"--seeds 0,1,2, or fix the template")
        return found


def render_text(text: str, figures: Figures, where: str = "template") -> str:
    """``text`` with every ``{{ … }}`` replaced by its figure."""
    def fill(match: re.Match) -> str:
        source, name, how = match.groups()
        try:
            if source == "seeds":
                return reference.fmt_range(*figures.span(name), name, how)
            return reference.fmt(figures.value(source, name), name, how)
        except (KeyError, ValueError) as error:
            raise ValueError(f"{where}: {{{{ {match.group(0)[2:-2].strip()} }}}}: {error.args[0]}") from None
    return PLACEHOLDER.sub(fill, text)


def render_readme(text: str, root: Path, figures: Figures) -> str:
    """The README with each marked block replaced by the render of its template."""
    def block(match: re.Match) -> str:
        name = match.group(2)
        template = root / TEMPLATES / f"{name}.md"
        if not template.exists():
            raise ValueError(f"README.md has a block <!-- results:{name} --> but no template {template}")
        body = render_text(template.read_text(encoding="utf-8"), figures, str(template.relative_to(root)))
        return match.group(1) + body.rstrip("\n") + "\n" + match.group(4)
    return BLOCK.sub(block, text)


def rendered(root: Path | None = None, folder: Path | None = None) -> dict[Path, str]:
    """What ``results render`` writes: README.md, docs/results.md and the dataset cards that quote
    measured figures, as text, by path."""
    root = root or runtime.repo_root()
    figures = Figures(folder or root / "results")
    pages = {root / "README.md": render_readme((root / "README.md").read_text(encoding="utf-8"), root, figures)}
    for template in sorted((root / TEMPLATES).glob("*.md")):
        if template.name.startswith("page-") or template.name == "results.md":
            target = root / "docs" / template.name.removeprefix("page-")
            pages[target] = GENERATED.format(name=template.name) + render_text(
                template.read_text(encoding="utf-8"), figures, str(template.relative_to(root)))
    if folder is None:  # the cards read the committed results
        from labkit import data

        pages.update({root / "datasets" / path: text for path, text in data.measured_cards().items()})
    return pages


def render(root: Path | None = None) -> list[Path]:
    """Rewrite the pages whose render differs; the paths written."""
    written = []
    for path, text in rendered(root).items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def stale(root: Path | None = None) -> list[Path]:
    """Pages that differ from a render of the committed results."""
    return [p for p, text in rendered(root).items() if not p.exists() or p.read_text(encoding="utf-8") != text]


# ---------------------------------------------------------------------------- checking a rerun

# How far each stage figure may move on another machine (another CPU's float sums, other library
# versions), by report key: exact for what only the data decides (the floor, the Bayes ceiling, the
# counts), wide for what training decides. Measured spread: on an AVX-512 machine against our AVX2
# one, the ppo stage's win rate moved by 7.6 points and its gold reward by 0.55; the other stages
# moved less. A key listed nowhere is compared on the reference's own setup only.
STAGE_ACROSS_MACHINES = {
    "entropy_floor": 1e-9, "unigram_entropy": 1e-9, "true_nll": 1e-9, "bayes_ceiling": 1e-9,
    "gold_reward_accuracy": 1e-9, "length_only_accuracy": 1e-9, "keyword_only_accuracy": 1e-9,
    "best_gold_reward": 1e-9, "demonstrator_gold_reward": 1e-9, "parameters": 0, "trainable_parameters": 0,
    "*_examples": 0, "*_pairs": 0, "*_problems": 0, "steps": 0, "tokens_seen": 0, "answers_sampled": 0,
    "val_loss": 0.08, "train_loss": 0.08, "gap_closed": 0.03,
    "exact_match": 0.06, "base_exact_match": 0.03, "json_valid": 0.05,
    "accuracy": 0.12, "policy_accuracy": 0.05, "share_of_ceiling": 0.06, "policy_bayes_ceiling": 0.03,
    "win_rate": 0.12, "gold_reward": 0.9, "sft_gold_reward": 0.3, "helpfulness": 0.9, "safety": 0.5, "kl": 3.0,
    "implicit_accuracy": 0.05, "chosen_logratio": 1.5, "rejected_logratio": 2.5,
    "sampled_accuracy": 0.12, "sft_accuracy": 0.08, "base_accuracy": 0.05, "worked_share": 0.25,
    "right_working_share": 0.25, "*label_accuracy": 0.1, "rounds": 0, "pairs_per_round": 0, "samples_per_prompt": 0,
    "flops*": 1e12,  # counted operations: sampled answers' lengths move them a little between machines
}


def disagreements(new: dict, old: dict) -> list[str]:
    """Every figure of the results ``new`` that is not where the reference ``old`` has it: tightly where
    both were measured on the same setup (:func:`same_setup`), else within the tolerances the stages
    (:data:`STAGE_ACROSS_MACHINES`) and the demonstrations (their ``across_machines``) state."""
    flat = reference.flatten({"stages": new.get("stages", {}), "demos": new.get("demos", {})})
    tolerances = {"stages": STAGE_ACROSS_MACHINES}
    tolerances.update({f"demos.{n}": m.across_machines for n, m in measurements().items()})
    return reference.compare(flat, old, same_machine=same_setup(new, old), tolerances=tolerances)
