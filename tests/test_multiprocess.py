"""Data-parallel training: two CPU processes (gloo) train like one process at the same global batch.

The processes are started the way a learner starts them, with ``accelerate launch`` (as
``python -m accelerate.commands.launch``). On a machine without GPUs, ``accelerate launch
--num_processes 2 --cpu`` starts ONE process (its simple launcher needs MPI for more); the
``--multi_gpu`` launcher (torchrun underneath) starts both, and labkit joins them with gloo because
the device is the CPU (``LABKIT_DEVICE=cpu`` makes that so on a machine with GPUs too).

This file is also the script each launched process runs (``python tests/test_multiprocess.py
pretrain OUT``): see :func:`_child`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

pytestmark = pytest.mark.usefixtures("one_thread")  # as each launched process (fast on a busy 2-core machine)

STEPS = 4  # pretraining steps compared (smoke: 8 rows of 256 tokens per step, 4 per process)


def _setup():
    """The smoke preset's model (seed 0), data and a config of ``STEPS`` steps, evaluated once at the end."""
    from labkit import pipeline, runtime
    from labkit.models import build_model, config_from_size
    from labkit.presets import get_preset

    preset = get_preset("smoke")
    data = pipeline.pretrain_data(preset)
    cfg = dataclasses.replace(preset.pretrain, steps=STEPS, eval_every=STEPS)
    model = build_model(config_from_size(preset.model, len(data.tokenizer), data.tokenizer), seed=0)
    return model.to(runtime.device()), data, cfg


def _recording_clip(norms: list):
    """``Accelerator.clip_grad_norm_`` that also records each step's gradient norm (before clipping)."""
    clip = Accelerator.clip_grad_norm_

    def recording(self, parameters, max_norm, norm_type=2):
        total = clip(self, parameters, max_norm, norm_type)
        norms.append(float(total))
        return total
    return recording


@torch.no_grad()
def _precise_loss(model, data) -> float:
    """Mean next-token loss over ``data``, summed in float64. (``evaluate`` adds float32 batch sums;
    their rounding gave 1 and 2 processes the very same validation loss, hiding what is compared here.)"""
    from labkit.train.pretrain import IGNORE, token_losses

    model.eval()
    device = next(model.parameters()).device
    losses = token_losses(model, data.input_ids.to(device), data.labels.to(device)).double()
    return float(losses.sum() / (data.labels[:, 1:] != IGNORE).sum())


def _run_pretrain() -> dict:
    """Train ``STEPS`` steps in this process (alone, or as one of the launched ones); what is compared."""
    from labkit import runtime
    from labkit.train import pretrain as loop

    model, data, cfg = _setup()
    norms: list[float] = []
    original, Accelerator.clip_grad_norm_ = Accelerator.clip_grad_norm_, _recording_clip(norms)
    try:
        result = loop.pretrain(model, data.train, data.val, cfg, seed=0, progress=False)
    finally:
        Accelerator.clip_grad_norm_ = original
    return {"processes": runtime.processes(), "tokens": result.tokens_seen, "grad_norms": norms,
            "loss": _precise_loss(model, data.val), "model": model}


def _child(what: str, out: str) -> None:
    """What each launched process runs (``what`` = ``pretrain``); the main process writes the numbers to ``out``."""
    from labkit import runtime

    assert what == "pretrain", what
    run = _run_pretrain()
    if runtime.is_main_process():
        run.pop("model")
        (Path(out) / "run.json").write_text(json.dumps(run))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(*args: str, home: Path) -> subprocess.CompletedProcess:
    """``accelerate launch`` two CPU processes (one thread each) running ``args``; a private LABKIT_HOME."""
    from labkit import runtime

    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), *args]
    env = {**os.environ, "LABKIT_DEVICE": "cpu", "LABKIT_HOME": str(home), "LABKIT_PRESET": "smoke",
           "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, cwd=runtime.repo_root(), env=env, timeout=240)


def test_two_processes_train_like_one_at_the_same_global_batch(tmp_path):
    """Two processes, each with half of every step's rows, against one process with all of them.

    Measured here (2-core CPU, one thread per process, 4 steps): the per-step gradient norms agree
    to 9e-8 relative and the validation loss after 4 steps (summed in float64) to 7e-10 nats/token.
    Those differences are float32 rounding in another order: each process sums the gradient over
    half the rows and gloo adds the halves. The tolerances, 1e-5 relative on the gradient norms and
    1e-6 nats/token on the loss, leave room for other CPUs' kernels and still fail each broken
    loop we tried (measured, same setup):

    - each process a mean over its own tokens (a mean of means, not the step's token mean):
      loss off by 8e-5, gradient norms by 1e-3;
    - the loss not multiplied by N (DDP's average halves the gradient): norms off by 50 %, loss by 2e-6;
    - gradients not averaged (the model not wrapped in DDP): loss off by 2e-2, norms by 13 %;
    - each process a whole batch of its own (global batch doubled): 14,135 tokens instead of 7,012,
      loss off by 1e-2; both processes on the same half: 7,046 tokens, loss off by 2e-2;
    - each process the whole step's rows (duplicated work): the same gradient exactly, so only the
      token count (14,024, compared exactly) shows it.

    The weights themselves are not compared: AdamW's first steps move a weight by about ±lr whatever
    the size of its gradient, so a gradient of nearly 0 whose sign rounding flips moves it by 2·lr.
    """
    script = str(Path(__file__).resolve())
    two = _launch(script, "pretrain", str(tmp_path), home=tmp_path / "home")
    assert two.returncode == 0, two.stderr[-3000:]
    alone = _run_pretrain()
    both = json.loads((tmp_path / "run.json").read_text())

    assert alone["processes"] == 1 and both["processes"] == 2
    assert both["tokens"] == alone["tokens"]                     # the same global batch, every step
    assert len(both["grad_norms"]) == len(alone["grad_norms"]) == STEPS
    assert both["grad_norms"] == pytest.approx(alone["grad_norms"], rel=1e-5)
    assert both["loss"] == pytest.approx(alone["loss"], abs=1e-6)


def test_pipeline_with_two_processes_trains_sft_and_ppo_and_reports_it(tmp_path):
    """``accelerate launch`` on the headless pipeline: every process trains, one writes and prints."""
    from labkit import pipeline
    from labkit.presets import get_preset

    home = tmp_path / "home"
    # With progress bars (not --quiet): only the main process shows them, and every process must
    # still take part in each collective operation (a loop that reduced only for its bar hung here).
    out = _launch("-m", "labkit", "pipeline", "--preset", "smoke", "--stages", "pretrain,sft,ppo",
                  "--report", str(tmp_path / "report.json"), home=home)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["processes"] == 2
    assert set(report["stages"]) == {"pretrain", "sft", "ppo"}
    smoke = get_preset("smoke")
    assert report["stages"]["ppo"]["iterations"] == smoke.ppo.iterations
    assert json.loads(out.stdout) == report  # printed once, by the main process only
    for stage in ("pretrain", "sft", "reward", "ppo"):
        [path] = (home / "smoke").glob(f"{stage}-*")
        assert json.loads((path / "labkit.json").read_text())["processes"] == 2
        assert path.name != pipeline.stage_dir(stage, smoke).name  # one process keeps its own checkpoints


def test_one_process_reports_processes_1_and_n_processes_get_their_own_cache_keys(monkeypatch):
    from labkit import pipeline, runtime
    from labkit.presets import get_preset

    assert not runtime.launched() and runtime.processes() == 1 and runtime.is_main_process()
    report = pipeline.run(["pretrain"], "smoke", progress=False)
    assert report["processes"] == 1
    smoke = get_preset("smoke")
    alone = {stage: pipeline.stage_key(stage, smoke) for stage in pipeline.STAGES}
    monkeypatch.setattr(runtime, "processes", lambda: 2)
    assert all(pipeline.stage_key(stage, smoke) != key for stage, key in alone.items())


def test_a_launch_that_started_one_process_says_how_to_start_several(monkeypatch):
    from labkit import runtime

    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "ACCELERATE_USE_CPU",
                 "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    assert runtime.lone_process_note() is None
    # what `accelerate launch --num_processes 2` sets when its simple launcher starts one process
    monkeypatch.setenv("ACCELERATE_USE_CPU", "False")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    assert "--multi_gpu --num_processes N" in runtime.lone_process_note()


if __name__ == "__main__":
    _child(*sys.argv[1:])
