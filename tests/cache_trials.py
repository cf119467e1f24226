"""Two identical pipelines on one fresh cache, many times: do both succeed and does every checkpoint load?

    python tests/cache_trials.py --trials 20 [--stages pretrain,sft,reward,ppo,dpo,sft_math,grpo]

Each trial makes an empty LABKIT_HOME, starts two ``python -m labkit pipeline --preset smoke`` at the same
moment, waits for both, then checks every checkpoint with :func:`labkit.checkpoint.problems` and loads
it. Prints one line per trial and a summary; exits 1 if any trial failed. (The fast tier runs two
trials of a shorter pipeline: ``tests/test_cache_safety.py``.)
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def trial(home: Path, stages: str) -> tuple[bool, str]:
    env = {**os.environ, "LABKIT_HOME": str(home), "LABKIT_PRESET": "smoke"}
    command = [sys.executable, "-m", "labkit", "pipeline", "--preset", "smoke", "--quiet", "--stages", stages]
    runs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    errors = [run.communicate(timeout=1800)[1] for run in runs]
    failed = [f"process {i} exit {run.returncode}: {err.strip().splitlines()[-1:]}"
              for i, (run, err) in enumerate(zip(runs, errors)) if run.returncode]
    waited = sum("waiting for another process" in err for err in errors)
    from labkit import checkpoint

    for folder in sorted((home / "smoke").iterdir()):
        if folder.name.startswith("."):
            failed.append(f"left behind: {folder.name}")
        elif folder.is_dir():
            if found := checkpoint.problems(folder):
                failed.append(f"{folder.name}: {found}")
            else:
                checkpoint.load_checkpoint(folder, device="cpu")
    return not failed, f"{'ok' if not failed else 'FAILED'} ({waited} of 2 waited for the other) {'; '.join(failed)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--stages", default="pretrain,sft,reward,reward_naive,ppo,dpo,sft_math,grpo")
    args = parser.parse_args()
    passed, start = 0, time.perf_counter()
    for i in range(args.trials):
        with tempfile.TemporaryDirectory(prefix="labkit-trial-") as home:
            began = time.perf_counter()
            ok, line = trial(Path(home), args.stages)
            passed += ok
            print(f"trial {i + 1:2}: {line} ({time.perf_counter() - began:.0f} s)", flush=True)
    print(f"{passed} of {args.trials} trials: both processes succeeded and every checkpoint loads "
          f"({time.perf_counter() - start:.0f} s)")
    return 0 if passed == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
