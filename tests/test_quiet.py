"""Quiet by default: a stage run writes labkit's own progress bars to stderr and nothing else.

Runs in a fresh Python process (pytest's own warning filters would hide what a learner sees) with
Python's default warning filters, a fresh cache, and the smoke preset: pretraining, SFT, the reward
model, PPO (accelerate), DPO and GRPO (TRL) and LoRA runs (peft wraps the model, which used to raise FutureWarnings).
"""
import os
import re
import subprocess
import sys

from labkit import runtime

# How labkit's own tqdm bars begin (e.g. "SFT", "SFT answers (heldout prompts)", "reward model").
LABKIT_BARS = ("pretraining", "SFT", "reward model", "classifier", "policy", "reference", "best-of-n", "PPO",
               "DPO", "GRPO")

SCRIPT = """
import labkit
from labkit import pipeline
from labkit.presets import get_preset
from labkit.experiments.instruction import lora_experiment

pipeline.run(["pretrain", "sft", "reward", "ppo", "dpo", "sft_math", "grpo"], "smoke")
lora_experiment(2, get_preset("smoke"), progress=True)
from labkit.experiments.alignment import ppo_experiment
ppo_experiment(rank=2, preset=get_preset("smoke"), progress=True)  # PPO with peft LoRA adapters
from labkit.experiments.alignment import dpo_experiment
dpo_experiment(rank=2, preset=get_preset("smoke"), progress=True)  # DPO: TRL wraps the model in LoRA adapters
print("done")
"""


def _bars_and_other_lines(stderr: str) -> tuple[set[str], list[str]]:
    """Progress-bar descriptions (``desc: 40%|...``) and every other non-empty stderr line."""
    bars, other = set(), []
    for line in re.split(r"[\r\n]+", stderr):
        if not line.strip():
            continue
        bar = re.match(r"^(.*?):\s+\d+%\|", line)
        if bar:
            bars.add(bar.group(1).strip())
        else:
            other.append(line)
    return bars, other


def test_a_stage_run_prints_no_third_party_warning_or_progress_bar(tmp_path):
    env = {**os.environ, "LABKIT_HOME": str(tmp_path), "LABKIT_PRESET": "smoke", "PYTHONWARNINGS": "default"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                         cwd=runtime.repo_root(), timeout=300)
    assert out.returncode == 0 and "done" in out.stdout, out.stderr[-3000:]
    bars, other = _bars_and_other_lines(out.stderr)
    assert not other, "stderr has lines that are not labkit's progress bars:\n" + "\n".join(other[:20])
    third_party = sorted(b for b in bars if not b.startswith(LABKIT_BARS))
    assert not third_party, f"third-party progress bars: {third_party}"
    assert {"pretraining", "SFT", "reward model", "PPO", "DPO", "GRPO"} <= bars, "labkit's own progress bars must stay"


def test_the_bar_parser_tells_labkit_bars_from_others():
    stderr = ("SFT:  50%|#####     | 1/2 [00:00<00:00]\rSFT: 100%|##########| 2/2\n"
              "Loading weights: 100%|##########| 11/11\n/x.py:1: FutureWarning: old\n  warnings.warn(\n")
    bars, other = _bars_and_other_lines(stderr)
    assert bars == {"SFT", "Loading weights"}
    assert other == ["/x.py:1: FutureWarning: old", "  warnings.warn("]
