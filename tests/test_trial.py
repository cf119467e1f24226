"""``python -m labkit trial``: a stage with changed settings beside the preset's own, seed by seed."""
import json
import os
import subprocess
import sys

import pytest

from labkit import checkpoint, pipeline, runtime, trial
from labkit.presets import get_preset


def test_settings_are_read_as_their_declared_types():
    smoke = get_preset("smoke")
    changes = trial.parse_settings(["sft.epochs=2", "sft.lr=1e-3", "dpo_online.lr=null", "n_train_docs=300",
                                    "reward.pooling=sum",
                                    'sft.category_weights=[["classify", 1.0], ["closed_qa", 2]]'], smoke)
    assert changes == {"sft": {"epochs": 2.0, "lr": 1e-3, "category_weights": (("classify", 1.0), ("closed_qa", 2))},
                       "dpo_online": {"lr": None}, "n_train_docs": 300, "reward": {"pooling": "sum"}}
    assert isinstance(changes["sft"]["epochs"], float)  # 2 given for a float setting stays a float
    tried = trial.changed_preset(smoke, changes)
    assert (tried.sft.epochs, tried.sft.lr, tried.n_train_docs, tried.reward.pooling) == (2.0, 1e-3, 300, "sum")
    assert tried.sft.batch_size == smoke.sft.batch_size and smoke.sft.epochs == 1  # the rest, and the preset, unchanged


@pytest.mark.parametrize("setting, says", [
    ("sft.lrr=1", "sft has no setting 'lrr'; its settings: train_examples"),
    ("bogus.x=1", "the preset has no section 'bogus'; sections: model, pretrain"),
    ("sft.epochs=abc", "that setting takes float; 'abc' is not one"),
    ("sft.batch_size=1.5", "that setting takes int; 1.5 is not one"),
    ("sft.lr", "write section.field=value"),
    ("seed=3", "'seed' is not a setting a trial can change"),
    ("sft=3", "'sft' is not a setting a trial can change"),
])
def test_a_wrong_setting_says_what_was_wrong(setting, says):
    with pytest.raises(ValueError, match="--set") as error:
        trial.parse_settings([setting], get_preset("smoke"))
    assert says in str(error.value)


def test_a_value_the_config_refuses_is_refused_when_the_preset_is_built():
    changes = trial.parse_settings(["reward.pooling=mean"], get_preset("smoke"))
    with pytest.raises(ValueError, match="pooling must be one of"):
        trial.changed_preset(get_preset("smoke"), changes)


def test_a_trial_trains_both_and_replaces_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))
    smoke = get_preset("smoke")
    changes = trial.parse_settings(["pretrain.steps=6"], smoke)
    rows = trial.run_trial("pretrain", smoke, changes, [0, 1], out=tmp_path / "rows.jsonl")
    assert [r["seed"] for r in rows] == [0, 1]
    for row in rows:
        base, tried = smoke.replace(seed=row["seed"]), trial.changed_preset(smoke.replace(seed=row["seed"]), changes)
        assert row["keys"] == [pipeline.stage_key("pretrain", base), pipeline.stage_key("pretrain", tried)]
        assert row["keys"][0] != row["keys"][1]
        for which, preset in (("preset", base), ("trial", tried)):  # each side is its own cached checkpoint
            saved = pipeline.metrics("pretrain", preset)
            assert checkpoint.is_complete(pipeline.stage_dir("pretrain", preset))
            assert row[which]["val_loss"] == saved["metrics"]["val_loss"]
            assert row[which]["tokens_seen"] == saved["metrics"]["tokens_seen"]
        assert row["trial"]["tokens_seen"] < row["preset"]["tokens_seen"]  # 6 steps against the preset's 12
    assert rows[0]["preset"]["val_loss"] != rows[0]["trial"]["val_loss"]  # half the steps: another model
    assert rows[0]["preset"]["val_loss"] != rows[1]["preset"]["val_loss"]  # each seed its own model
    assert [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()] == rows
    lines = trial.table(rows).splitlines()
    assert lines[0] == "| figure | seed 0 | seed 1 |"
    loss = next(line for line in lines if line.startswith("| val_loss |"))
    assert loss.count("→") == 2


def test_a_change_the_stage_does_not_use_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))
    smoke = get_preset("smoke")
    with pytest.raises(ValueError, match="leave the 'pretrain' stage as the preset has it"):
        trial.run_trial("pretrain", smoke, trial.parse_settings(["ppo.beta=0.5"], smoke), [0])
    assert not list(tmp_path.iterdir())  # refused before anything was trained
    with pytest.raises(ValueError, match="Unknown stage 'sfft'"):
        trial.run_trial("sfft", smoke, {}, [0])


def _run(*args, home):
    return subprocess.run([sys.executable, "-m", "labkit", *args], capture_output=True, text=True,
                          cwd=runtime.repo_root(), env={**os.environ, "LABKIT_HOME": str(home)}, timeout=300)


def test_trial_command_prints_the_table(tmp_path):
    out = _run("trial", "pretrain", "--preset", "smoke", "--set", "pretrain.steps=6", "--quiet", home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "pretrain, preset smoke -> with pretrain.steps=6" in out.stdout
    assert "| figure | seed 0 |" in out.stdout and "| val_loss | " in out.stdout
    assert "| flops | " in out.stdout
    missing = _run("trial", "pretrain", "--preset", "smoke", home=tmp_path)
    assert missing.returncode == 2 and "needs at least one changed setting" in missing.stderr
    wrong = _run("trial", "pretrain", "--preset", "smoke", "--set", "pretrain.stepz=6", home=tmp_path)
    assert wrong.returncode == 2 and "pretrain has no setting 'stepz'" in wrong.stderr
