"""``python -m labkit ...``: the headless side of the workbook.

    python -m labkit pipeline --preset cpu --stages pretrain,sft --report runs/report.json
    python -m labkit data build            # (re)write datasets/ from the generator
    python -m labkit data check            # verify datasets/ equals the generator's output
    python -m labkit bench pretrain        # tokens/s of our loop vs a bare PyTorch loop
    python -m labkit bench ppo             # PPO rollout tokens/s, seconds per iteration, memory full vs LoRA
    python -m labkit bench grpo            # GRPO vs PPO at the same answers per step: seconds per step, memory
    python -m labkit notebooks checked     # store the outputs of the cells nbval compares
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def _pipeline(args) -> int:
    from labkit import pipeline
    from labkit.presets import get_preset

    preset = get_preset(args.preset)
    stages = [s.strip() for s in (args.stages or ",".join(pipeline.STAGES)).split(",") if s.strip()]
    report = pipeline.run(stages, preset, args.report, progress=not args.quiet, fresh=args.fresh)
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

    if args.what == "ppo":
        result = {"speed": [bench.bench_ppo(args.preset, iterations=args.steps or 5, rank=r) for r in (0, 8)],
                  "memory": bench.ppo_memory(args.preset)}
    elif args.what == "grpo":
        result = bench.bench_grpo(args.preset, steps=args.steps or 5)
    else:
        result = bench.bench_pretrain(args.preset, steps=args.steps or 30)
    print(json.dumps(result, indent=2))
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
    p.add_argument("--preset", default=None, help=f"one of {', '.join(PRESETS)} (default: $LABKIT_PRESET, else gpu/cpu)")
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

    b = sub.add_parser("bench", help="speed benchmarks (not part of the tests)")
    b.add_argument("what", choices=["pretrain", "ppo", "grpo"])
    b.add_argument("--preset", default="cpu", help="preset whose model and data are used")
    b.add_argument("--steps", type=int, default=None,
                   help="steps timed for each loop (pretrain, default 30), PPO iterations (ppo, default 5) "
                        "or GRPO steps and PPO iterations each (grpo, default 5)")
    b.set_defaults(func=_bench)

    n = sub.add_parser("notebooks", help="store the outputs of the cells nbval checks (# NBVAL_CHECK_OUTPUT)")
    n.add_argument("action", choices=["checked"])
    n.add_argument("paths", nargs="*", help="notebooks (default: every lab in labs/)")
    n.set_defaults(func=_notebooks)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        notes = "".join(f"\n{note}" for note in getattr(err, "__notes__", []))  # e.g. which stage failed
        print(f"error: {err}{notes}", file=sys.stderr)
        return 2
