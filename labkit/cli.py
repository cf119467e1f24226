"""``python -m labkit ...``: the headless side of the workbook.

    python -m labkit pipeline --preset cpu --stages pretrain,sft --report runs/report.json
    python -m labkit data build            # (re)write datasets/ from the generator
    python -m labkit data check            # verify datasets/ equals the generator's output
    python -m labkit bench                 # every stage: seconds per step, samples (or tokens) per second, peak
                                           # memory, each in a fresh process; with our loop vs a bare PyTorch
                                           # loop, PPO vs GRPO at equal batch, LoRA vs full memory, in one JSON
                                           # (runs/bench-cpu.json)
    python -m labkit bench grpo            # one stage and its comparison (grpo: PPO vs GRPO at equal batch)
    python -m labkit notebooks checked     # store the outputs of the cells nbval compares
    python -m labkit notebooks colab OWNER/NAME   # the course's GitHub repository, in every Colab cell
    python -m labkit results --preset cpu  # measure every figure the course quotes -> results/cpu.json
    python -m labkit results --preset cpu --seeds 0,1,2   # the pipeline per seed -> results/cpu-seeds.json
    python -m labkit results render        # rewrite the README's measured blocks and docs/results.md from results/
    python -m labkit trial reward --set reward.epochs=1 --seeds 0,1,2   # one stage, preset vs changed, per seed
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def _pipeline(args) -> int:
    from labkit import pipeline, runtime
    from labkit.presets import default_note, get_preset

    preset = get_preset(args.preset)
    if args.preset is None and (note := default_note(preset)) and runtime.is_main_process():
        print(f"labkit: {note}", file=sys.stderr)  # a GPU, and no preset chosen: say why it is `cpu`, once
    stages = [s.strip() for s in (args.stages if args.stages is not None else ",".join(pipeline.STAGES)).split(",")
              if s.strip()]
    if not stages:
        raise ValueError(f"--stages {args.stages!r} names no stage: give one or more of {', '.join(pipeline.STAGES)}, "
                         "separated by commas (or leave --stages out for every stage)")
    if note := runtime.lone_process_note():  # `accelerate launch` started one process, not the N asked for
        print(note, file=sys.stderr)
    # Under `accelerate launch --num_processes N` all N processes run this; they train together,
    # and only the main one prints and writes the report (its "processes" key says how many trained).
    report = pipeline.run(stages, preset, args.report, progress=not args.quiet, fresh=args.fresh)
    if not runtime.is_main_process():
        return 0
    print(json.dumps(report, indent=2))
    if args.report:
        print(f"\nreport written to {args.report} and {Path(args.report).with_suffix('.md')}",
              file=sys.stderr)
    return 0


def _data(args) -> int:
    from labkit import data

    if args.action == "build":
        for path in data.build_datasets(args.out):
            print(path)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.relative_to(tmp): p.read_bytes() for p in map(Path, data.build_datasets(tmp))}
    stale = [str(rel) for rel, content in fresh.items()
             if not (Path(args.out) / rel).exists() or (Path(args.out) / rel).read_bytes() != content]
    if stale:
        print("out of date (run `python -m labkit data build`): " + ", ".join(stale), file=sys.stderr)
        return 1
    print(f"{len(fresh)} files in {args.out} match the generator")
    return 0


def _bench(args) -> int:
    from labkit import bench

    result = bench.bench(args.preset, [args.what] if args.what else None, steps=args.steps)
    out = Path(args.out or f"runs/bench-{result['preset']}{'-' + args.what if args.what else ''}.json")
    text = json.dumps(result, indent=2, allow_nan=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(text)
    print("\n" + bench.summary(result), file=sys.stderr)
    print(f"\nbench written to {out}", file=sys.stderr)
    return 0


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds {text!r}: give whole numbers separated by commas, e.g. --seeds 0,1,2") from None
    if not seeds:
        raise ValueError("--seeds names no seed: e.g. --seeds 0,1,2")
    return seeds


def _trial(args) -> int:
    from labkit import trial
    from labkit.presets import resolve_preset

    preset = resolve_preset(args.preset or "cpu")
    if not args.settings:
        raise ValueError("a trial needs at least one changed setting, e.g. --set reward.epochs=1")
    changes = trial.parse_settings(args.settings, preset)
    rows = trial.run_trial(args.stage, preset, changes, _seed_list(args.seeds), progress=not args.quiet,
                           out=args.out)
    print(f"{args.stage}, preset {preset.name} -> with {' '.join(args.settings)}")
    print(trial.table(rows))
    return 0


def _results(args) -> int:
    from labkit import results

    if args.action == "render":
        written = results.render()
        for path in written:
            print(f"rendered {path}")
        print(f"{len(written)} page(s) rewritten" if written else "every page already matches results/")
        return 0
    if args.action == "check":
        old, moved = results.stale(), results.outdated("cpu")
        if old:
            print("differ from a render of results/ (run `python -m labkit results render`): "
                  + ", ".join(map(str, old)), file=sys.stderr)
        if moved:
            print("results/ measured from stages the cpu preset no longer gives; measure again:\n  "
                  + "\n  ".join(moved), file=sys.stderr)
        if old or moved:
            return 1
        print("README.md and docs/ match results/, and results/ match the cpu preset's stages")
        return 0
    preset = args.preset or "cpu"
    if args.seeds:
        results.collect_seeds(preset, _seed_list(args.seeds), out=args.out, progress=not args.quiet)
        return 0
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    done = results.collect(preset, out=args.out, only=only, progress=not args.quiet, fresh=args.fresh)
    print(f"{len(done['demos'])} demonstration(s) and {len(done['stages'])} stage(s) written; now run "
          "`python -m labkit results render`", file=sys.stderr)
    return 0


CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"


def is_checked(cell) -> bool:
    """True for a code cell whose output nbval compares (a line that is exactly the marker)."""
    return cell.cell_type == "code" and any(line.strip() == CHECK_MARKER for line in cell.source.splitlines())


def _notebooks(args) -> int:
    """Run each notebook top to bottom under the smoke preset, then keep only the checked cells' outputs.

    Those outputs (worked figures, exact tables) are what ``pytest --nbval-lax`` compares, so a
    change that moves a figure fails the tests. Every other cell is saved without output.
    """
    import os

    import nbformat
    from nbclient import NotebookClient

    from labkit import runtime

    if args.action == "colab":
        from labkit import colab

        if len(args.paths) != 1:
            raise ValueError("say which GitHub repository the course lives in: "
                             "python -m labkit notebooks colab OWNER/NAME")
        for path in colab.set_repository(args.paths[0], runtime.repo_root()):
            print(f"{path}: Colab repository set to {args.paths[0]}")
        return 0
    os.environ["LABKIT_PRESET"] = "smoke"  # the kernel inherits it, as under `make test`
    paths = [Path(p) for p in args.paths] or sorted((runtime.repo_root() / "labs").glob("*.ipynb"))
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        metadata = dict(nb.metadata)  # the kernel would add its language details: keep the file's own
        NotebookClient(nb, timeout=900, kernel_name="python3", record_timing=False,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        kept = 0
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            if is_checked(cell):
                kept += 1
            else:
                cell.outputs, cell.execution_count = [], None
        nb.metadata = nbformat.from_dict({k: v for k, v in metadata.items() if k != "widgets"})
        nbformat.write(nb, path)
        print(f"{path}: outputs kept in {kept} checked cell(s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    from labkit.data import DATASETS_DIR
    from labkit.presets import PRESETS

    parser = argparse.ArgumentParser(prog="python -m labkit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pipeline", help="train stages headless and write a metrics report")
    p.add_argument("--preset", default=None, help=f"one of {', '.join(PRESETS)} (default: $LABKIT_PRESET, else cpu, "
                                                  "for now on a GPU too)")
    p.add_argument("--stages", default=None,
                   help="comma-separated stages, e.g. pretrain,sft (default: every stage)")
    p.add_argument("--report", default=None, help="where to write the JSON report (a .md table goes beside it)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--fresh", action="store_true",
                   help="train the stages (and what they need) again even if cached; old checkpoints are replaced "
                        "only when the new ones are complete")
    p.set_defaults(func=_pipeline)

    d = sub.add_parser("data", help="build or check the generated files in datasets/")
    d.add_argument("action", choices=["build", "check"])
    d.add_argument("--out", default=str(DATASETS_DIR), help="datasets folder (default: the repo's)")
    d.set_defaults(func=_data)

    b = sub.add_parser("bench", help="time and memory of every stage's training, and comparisons, as JSON "
                                     "(not part of the tests)")
    b.add_argument("what", nargs="?", default=None, metavar="STAGE",
                   help="one stage: pretrain (+ our loop vs a bare PyTorch loop), sft, reward, reward_naive, "
                        "ppo (+ LoRA vs full), dpo (+ LoRA vs full), sft_math, grpo (+ PPO vs GRPO at equal "
                        "batch); default: every one of those and every comparison (dpo_online has no slice: its rounds are "
                        "ppo's sampling and dpo's steps)")
    b.add_argument("--preset", default="cpu", help=f"one of {', '.join(PRESETS)}: its model, data and batches "
                                                   "(default: cpu)")
    b.add_argument("--steps", type=int, default=None,
                   help="optimiser steps (PPO iterations) of each stage and comparison, the first one untimed in "
                        "the rates (default 5; 30 for each pretraining loop of our loop vs bare)")
    b.add_argument("--out", default=None,
                   help="where to write the JSON (default: runs/bench-<preset>.json, or "
                        "runs/bench-<preset>-<stage>.json for one stage)")
    b.set_defaults(func=_bench)

    n = sub.add_parser("notebooks", help="store the outputs of the cells nbval checks (# NBVAL_CHECK_OUTPUT), "
                                         "or write the course's repository into the Colab cells and links")
    n.add_argument("action", choices=["checked", "colab"],
                   help="checked: run the labs and keep the checked cells' outputs; "
                        "colab OWNER/NAME: write that GitHub repository into every lab's Colab cell and the README")
    n.add_argument("paths", nargs="*", help="checked: notebooks (default: every lab in labs/); colab: OWNER/NAME")
    n.set_defaults(func=_notebooks)

    r = sub.add_parser("results", help="measure every figure the course quotes (results/<preset>.json), or render "
                                       "the README and docs/results.md from it")
    r.add_argument("action", nargs="?", choices=["measure", "render", "check"], default="measure",
                   help="measure (default): train or reuse, then write results/<preset>.json; render: rewrite the "
                        "README's marked blocks and docs/results.md; check: fail if they differ from a render, or if "
                        "results/ measured stages the cpu preset has changed since")
    r.add_argument("--preset", default=None, help=f"one of {', '.join(PRESETS)} (default: cpu)")
    r.add_argument("--seeds", default=None, help="e.g. 0,1,2: the pipeline once per seed -> results/<preset>-seeds.json")
    r.add_argument("--only", default=None, help="comma-separated demonstrations to measure again (the rest are kept)")
    r.add_argument("--out", default=None, type=Path, help="where to write (default: results/<preset>.json)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--fresh", action="store_true",
                   help="train every stage again even if cached, so that the stage times are this run's")
    r.set_defaults(func=_results)

    t = sub.add_parser("trial", help="train one stage with changed settings beside the preset's own, seed by seed, "
                                     "and print a table (preset -> trial)")
    t.add_argument("stage", help="the stage to train, e.g. reward (what it needs is trained too, when missing)")
    t.add_argument("--set", dest="settings", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="a changed setting, e.g. --set reward.epochs=1 (repeat for several; values are read as JSON)")
    t.add_argument("--preset", default=None, help=f"one of {', '.join(PRESETS)} (default: cpu)")
    t.add_argument("--seeds", default="0", help="e.g. 0,1,2 (default 0): each seed has its own pretrained model")
    t.add_argument("--out", default=None, type=Path, help="also append every row, as JSON lines, to this file")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=_trial)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"\n{_interrupted()}", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as err:  # FileNotFoundError, a full disk, a broken checkpoint, …
        notes = "".join(f"\n{note}" for note in getattr(err, "__notes__", []))  # e.g. which stage failed
        print(f"error: {err}{notes}", file=sys.stderr)
        return 2


def _interrupted() -> str:
    """One line for Ctrl-C: what was interrupted, and that a rerun continues from the finished stages."""
    pipeline = sys.modules.get("labkit.pipeline")
    stage = pipeline.interrupted[-1] if pipeline is not None and pipeline.interrupted else None
    if stage is None:
        return "interrupted (Ctrl-C). Nothing was being trained; run the command again to go on."
    return (f"interrupted (Ctrl-C) while training the {stage!r} stage: nothing was saved for it. The stages that "
            "finished keep their checkpoints; run the same command again to continue from them.")
