import json
import os
import subprocess
import sys

from labkit import runtime


def _run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "labkit", *args], capture_output=True, text=True,
                          cwd=runtime.repo_root(), env={**os.environ, **(env or {})}, timeout=300)


def test_pipeline_command_writes_the_report(tmp_path):
    out = _run("pipeline", "--preset", "smoke", "--stages", "pretrain", "--report",
               str(tmp_path / "r.json"), "--quiet")
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["preset"] == "smoke"
    stage = report["stages"]["pretrain"]
    assert {"seconds", "val_loss", "entropy_floor", "unigram_entropy"} <= set(stage)
    assert 0 < stage["entropy_floor"] < stage["unigram_entropy"]


def test_wrong_preset_fails_with_the_valid_names():
    out = _run("pipeline", "--preset", "laptop")
    assert out.returncode == 2
    assert "Unknown preset 'laptop'" in out.stderr and "smoke, cpu, gpu, hub" in out.stderr


def test_unknown_stage_fails_clearly():
    out = _run("pipeline", "--preset", "smoke", "--stages", "pretrain,sfft")
    assert out.returncode == 2
    assert "Unknown stage 'sfft'" in out.stderr and "pretrain, sft" in out.stderr


def test_committed_datasets_equal_the_generator():
    out = _run("data", "check")
    assert out.returncode == 0, out.stderr
    assert "match the generator" in out.stdout


def test_pipeline_fresh_flag_retrains_a_cached_stage(tmp_path):
    env = {"LABKIT_HOME": str(tmp_path / "home")}
    args = ("pipeline", "--preset", "smoke", "--stages", "pretrain", "--quiet", "--report", str(tmp_path / "r.json"))
    assert _run(*args, env=env).returncode == 0
    first = json.loads((tmp_path / "r.json").read_text())["stages"]["pretrain"]["seconds"]
    assert _run(*args, env=env).returncode == 0  # cached: the same checkpoint and report
    assert json.loads((tmp_path / "r.json").read_text())["stages"]["pretrain"]["seconds"] == first
    out = _run(*args, "--fresh", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "r.json").read_text())["stages"]["pretrain"]["seconds"] != first  # trained again
