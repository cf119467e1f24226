"""Two notebooks, one cache: one writer per checkpoint, checkpoints verified before they are trusted, a
clear way out of every bad state, and failures before training rather than after it.

Each test is one row of what a careless but realistic user was seen doing (the issue's table); the
concurrent ones start real processes.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from labkit import checkpoint, cli, pipeline
from labkit.presets import get_preset

ROOT = Path(__file__).resolve().parent.parent
SMOKE = get_preset("smoke")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh, private LABKIT_HOME."""
    path = tmp_path / "home"
    monkeypatch.setenv("LABKIT_HOME", str(path))
    return path


def _no_training(monkeypatch, *stages):
    """Make ``stages`` fail if anything tries to train them (to prove a check came first)."""
    def refuse(*args, **kwargs):
        raise AssertionError("trained, but should have stopped before training")

    for stage in stages:
        monkeypatch.setitem(pipeline.STAGES, stage, dataclasses.replace(pipeline.STAGES[stage], train=refuse))


def _dead_pid() -> int:
    """The id of a process that has ended (and been reaped): no process has it now."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


def _pipeline_process(home: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "LABKIT_HOME": str(home), "OMP_NUM_THREADS": "1", "LABKIT_PRESET": "smoke"}
    return subprocess.Popen([sys.executable, "-m", "labkit", "pipeline", "--preset", "smoke", "--quiet", *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ------------------------------------------------------------------------------- two processes, one cache

def test_two_pipelines_on_one_fresh_home_both_succeed_and_every_checkpoint_loads(tmp_path):
    """Row 1: two identical pipelines started together on an empty cache (two trials here;
    ``tests/cache_trials.py`` runs more). One trains each stage; the other waits, then uses it."""
    for trial in range(2):
        home = tmp_path / f"home-{trial}"
        runs = [_pipeline_process(home, "--stages", "pretrain,sft") for _ in range(2)]
        outs = [run.communicate(timeout=600) for run in runs]
        for run, (out, err) in zip(runs, outs):
            assert run.returncode == 0, err[-3000:]
        for stage in ("pretrain", "sft"):
            (path,) = (home / "smoke").glob(f"{stage}-*")
            assert checkpoint.problems(path) == []
            checkpoint.load_checkpoint(path, device="cpu")
        leftovers = [p.name for p in (home / "smoke").iterdir() if p.name.startswith(".")]
        assert leftovers == [], leftovers


def _save_at_once(path: str, start: float, seed: int) -> None:
    from labkit import checkpoint as ckpt
    from labkit import models
    from labkit import tokenizer as T

    tok = T.train_tokenizer(["mia the baker lived near the mill ."])
    model = models.build_model(models.tiny_llama_config(len(tok), 16, 1, 2, 24, 32, tokenizer=tok), seed=seed)
    time.sleep(max(0.0, start - time.time()))
    ckpt.save_checkpoint(path, model, tok, {"seed": seed})


def test_two_processes_saving_one_checkpoint_at_once_leave_a_whole_one(tmp_path):
    """Row 2: two processes call save_checkpoint on one path at the same moment: one writes, then the
    other; what is left is complete and loads."""
    context = multiprocessing.get_context("spawn")
    for trial in range(3):
        path = tmp_path / f"sft-{trial}"
        start = time.time() + 8  # both start writing at once, after the spawn
        workers = [context.Process(target=_save_at_once, args=(str(path), start, seed)) for seed in (0, 1)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
            assert w.exitcode == 0
        assert checkpoint.problems(path) == []
        _, _, meta = checkpoint.load_checkpoint(path, device="cpu")
        assert meta["seed"] in (0, 1)
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(f".sft-{trial}")) == []


def test_a_save_never_removes_the_work_folder_of_a_live_writer(tmp_path):
    """The old ``_recover`` deleted every ``.NAME.tmp-*`` folder, also one another live process was
    writing. Now only those of processes that have ended go."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".sft.tmp-{sleeper.pid}-abcd1234"
        live.mkdir()
        dead = tmp_path / f".sft.tmp-{_dead_pid()}-abcd1234"
        dead.mkdir()
        checkpoint.recover(tmp_path / "sft")
        assert live.is_dir() and not dead.exists()
    finally:
        sleeper.kill()


def test_a_second_writer_waits_for_the_first(tmp_path):
    path, order = tmp_path / "sft", []

    def second():
        with checkpoint.writer_lock(path, on_wait=lambda: order.append("waiting")):
            order.append("second writes")

    with checkpoint.writer_lock(path):
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(0.3)
        order.append("first done")
    waiter.join(10)
    assert order == ["waiting", "first done", "second writes"]
    assert list(tmp_path.iterdir()) == []  # the lock file goes with the last holder


# ------------------------------------------------------------------------------- broken checkpoints

@pytest.fixture(scope="module")
def cached_home(tmp_path_factory):
    """A smoke home with pretrain and sft trained once for this module."""
    path = tmp_path_factory.mktemp("cached-home")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LABKIT_HOME", str(path))
        pipeline.run(["sft"], SMOKE, progress=False)
    return path


@pytest.fixture
def trained(cached_home, home):
    """A copy of the module's trained home as this test's home: the sft checkpoint's folder in it."""
    import shutil

    shutil.copytree(cached_home, home)
    return pipeline.stage_dir("sft", SMOKE)


def test_a_truncated_model_file_is_named_and_the_stage_trains_again(trained, capsys):
    """Row 3: a cut-short model.safetensors used to give a 38-line SafetensorError naming no file, and
    `--stages sft` reported the broken stage as fine."""
    weights = trained / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert checkpoint.is_broken(trained)
    with pytest.raises(checkpoint.BrokenCheckpointError) as error:
        checkpoint.load_checkpoint(trained, stage="sft")
    message = str(error.value)
    assert "model.safetensors" in message and str(trained) in message and "--fresh --stages sft" in message
    assert "\n" not in message
    report = pipeline.run(["sft"], SMOKE, progress=False)  # retrains it, and says so
    assert "checkpoint at" in capsys.readouterr().err and checkpoint.problems(trained) == []
    assert report["stages"]["sft"]["exact_match"] >= 0
    checkpoint.load_checkpoint(trained, device="cpu")


@pytest.mark.parametrize("damage, named", [
    (lambda path: (path / "tokenizer.json").unlink(), "tokenizer.json is missing"),
    (lambda path: (path / "labkit.json").write_text("garbage"), "labkit.json cannot be read"),
    (lambda path: (path / "labkit.json").unlink(), "labkit.json is missing"),
])
def test_a_damaged_checkpoint_is_named_then_replaced_on_the_next_run(trained, capsys, damage, named):
    """Row 4: a deleted tokenizer file, a garbage or deleted labkit.json. Each is named with its file,
    and the next run trains the stage again and replaces the folder (it used to raise FileExistsError
    on every rerun)."""
    damage(trained)
    assert named in "; ".join(checkpoint.problems(trained))
    pipeline.ensure("sft", SMOKE, progress=False)
    assert named in capsys.readouterr().err and checkpoint.problems(trained) == []
    pipeline.load("sft", SMOKE)


def test_an_interrupted_fresh_save_puts_the_previous_checkpoint_back_instead_of_retraining(trained, monkeypatch):
    """Row 7: a `--fresh` save killed between its two renames left the old checkpoint aside in
    `.NAME.old-*`, and the next run retrained. Now it is put back."""
    aside = trained.parent / f".{trained.name}.old-{_dead_pid()}-0badc0de"
    os.replace(trained, aside)
    _no_training(monkeypatch, "sft")
    assert pipeline.ensure("sft", SMOKE, progress=False) == trained
    assert checkpoint.problems(trained) == [] and not aside.exists()


# ------------------------------------------------------------------------------- fail before training

def test_a_read_only_home_fails_before_training(home, monkeypatch):
    """Row 5: a read-only home (or full disk) used to fail only after the stage had trained."""
    _no_training(monkeypatch, "pretrain")
    (home / "smoke").mkdir(parents=True)
    os.chmod(home / "smoke", 0o500)
    try:
        if os.access(home / "smoke", os.W_OK):
            pytest.skip("running as a user who may write a read-only folder (root)")
        with pytest.raises(OSError, match="not writable"):
            pipeline.run(["pretrain"], SMOKE, progress=False)
    finally:
        os.chmod(home / "smoke", 0o700)


def test_a_folder_that_cannot_be_written_is_named_before_training(home, monkeypatch):
    """Row 5 on any user (root too): a disk that refuses the write check."""
    _no_training(monkeypatch, "pretrain")
    import errno
    import tempfile

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", full)
    with pytest.raises(OSError, match=r"is not writable \(the disk is full\)") as error:
        pipeline.run(["pretrain"], SMOKE, progress=False)
    assert str(home / "smoke") in str(error.value)


def test_a_home_under_a_regular_file_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "file" / "home"))
    _no_training(monkeypatch, "pretrain")
    with pytest.raises(NotADirectoryError, match="a part of that path is a file. Set LABKIT_HOME"):
        pipeline.run(["pretrain"], SMOKE, progress=False)


def test_a_full_disk_while_saving_names_the_checkpoint_and_what_to_do(home, monkeypatch):
    import errno

    from labkit.models import build_model, tiny_llama_config
    from labkit.tokenizer import train_tokenizer

    tok = train_tokenizer(["mia the baker ."])
    model = build_model(tiny_llama_config(len(tok), 16, 1, 2, 24, 32, tokenizer=tok), seed=0)

    def full(directory, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(model, "save_pretrained", full)
    with pytest.raises(OSError, match="the disk is full. Free some space") as error:
        checkpoint.save_checkpoint(home / "sft", model, tok)
    assert str(home / "sft") in str(error.value) and not (home / "sft").exists()


@pytest.mark.parametrize("report, message", [("x.md", "must end in .json"), ("folder", "is a folder")])
def test_a_report_path_that_cannot_be_the_report_is_refused_before_training(home, tmp_path, monkeypatch, report,
                                                                            message):
    """Rows 5-6: `--report x.md` silently overwrote the JSON with markdown; a folder failed after training."""
    (tmp_path / "folder.json").mkdir()
    path = tmp_path / ("folder.json" if report == "folder" else report)
    _no_training(monkeypatch, "pretrain")
    with pytest.raises(ValueError, match=message):
        pipeline.run(["pretrain"], SMOKE, path, progress=False)


def test_the_report_is_written_whole_or_not_at_all(home, tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    path.write_text('{"old": true}\n')
    pipeline.run(["pretrain"], SMOKE, progress=False)  # cached from here on
    real = Path.write_text

    def cut_short(self, text, *args, **kwargs):
        real(self, text[:10], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", cut_short)
    with pytest.raises(OSError, match="cannot write"):
        pipeline.run(["pretrain"], SMOKE, path, progress=False)
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"old": True}  # the previous report, untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_stages_that_name_no_stage_are_an_error(home, capsys):
    """Row 6: `--stages ,,,` used to exit 0 with an empty report."""
    assert cli.main(["pipeline", "--preset", "smoke", "--stages", ",,,"]) == 2
    assert "names no stage" in capsys.readouterr().err


def test_ctrl_c_during_a_stage_prints_one_line_saying_a_rerun_continues(home, monkeypatch, capsys):
    """Row 8: Ctrl-C showed a 37-66-line KeyboardInterrupt traceback and no word that a rerun continues."""
    pipeline.run(["pretrain"], SMOKE, progress=False)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setitem(pipeline.STAGES, "sft", dataclasses.replace(pipeline.STAGES["sft"], train=interrupted))
    assert cli.main(["pipeline", "--preset", "smoke", "--stages", "sft", "--quiet"]) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'sft'" in err and "run the same command again" in err
    assert "Traceback" not in err


# ------------------------------------------------------------------------------- a run panel, one run at a time

def test_a_run_panel_refuses_a_second_train_while_one_runs():
    """Row 10: two Train calls on one panel at once crashed PPO and DPO and mislabelled GRPO's runs."""
    import ipywidgets as W

    from labkit.experiments import Run
    from labkit.widgets import RunPanel

    started, release = threading.Event(), threading.Event()

    def run(settings, on_history):
        started.set()
        release.wait(10)
        return Run(row={"x": settings["x"]})

    panel = RunPanel("demo", {"x": W.FloatSlider(value=0.1, min=0.0, max=1.0, description="x")}, run)
    first = threading.Thread(target=panel.train_once)
    first.start()
    assert started.wait(10)
    with pytest.raises(RuntimeError, match="a run is training already"):
        panel.train_once(x=0.5)
    release.set()
    first.join(10)
    assert len(panel.runs) == 1 and panel.train_once(x=0.5)["x"] == 0.5  # free again once it ended


def test_training_beside_another_labkit_process_says_once_that_both_slow_down(home, capsys, monkeypatch):
    """Row 11: two trainings on one 2-core machine each ran far more than 2x slower, and nothing said so."""
    monkeypatch.setattr(pipeline, "_warned_sharing", False)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        markers = home / ".training"
        markers.mkdir(parents=True)
        (markers / str(other.pid)).write_text("sft (preset cpu)")
        pipeline.ensure("pretrain", SMOKE, progress=False)
        err = capsys.readouterr().err
        assert f"process {other.pid}: sft (preset cpu)" in err and "several times slower" in err
        pipeline.ensure("pretrain", SMOKE.replace(seed=5), progress=False)  # said once per process
        assert "several times slower" not in capsys.readouterr().err
    finally:
        other.kill()
    assert [p.name for p in (home / ".training").iterdir()] == [str(other.pid)]  # ours is gone
